/* The commit job (see jobs/commit.h).  The intermediate commit is QEMU's
 * block/commit.c: one pass over the image, copying each run that some
 * layer from top down to above base holds (block/chain.h's
 * chain_is_allocated_above) from top into base, read through top so that
 * the upper layers win.  Nothing writes those layers meanwhile: clients
 * write to the overlay above top, and base, written only by the job,
 * changes nothing they read (every region the job writes is covered by a
 * layer above base).  At the end base is flushed and only then does the
 * overlay's header name it (chain_relink), so a crash in between leaves a
 * valid chain with the same content.  The active commit is the mirror job
 * (jobs/mirror.c with active_commit). */
#include "jobs/commit.h"
#include "block/error.h"
#include "jobs/mirror.h"
#include "jobs/open-writable.h"
#include "block/chain.h"
#include "block/node.h"
#include "block/user.h"

#include <errno.h>
#include <gio/gio.h>

#define COMMIT_BUFFER_SIZE (512 * 1024) /* QEMU's: bytes per copy */
#define COMMIT_RATE_UNIT (64 * 1024)    /* the smallest copy under a speed limit */
#define COMMIT_BLOCKER "block device is in use by block job: commit"

typedef struct Commit {
    Job *job;
    BlockNode *root, *top, *base, *above; /* references */
    GPtrArray *blocked;          /* op-blocked for the job's life: root, top .. base */
    /* The job reads top (and through it the layers) and writes base
     * through users of its own (QEMU: the job's BlockBackends). */
    BlockUser *top_user, *base_user;
    /* A write to a layer that leaves the chain (top down to above base)
     * would be lost: the hooks on them refuse writes while the job runs. */
    GPtrArray *layers;           /* BlockNode * (references) */
    GPtrArray *layer_hooks;      /* NodeWriteHook *, one per layer */
    char *backing_file;          /* NULL: base's file name */
    BlockdevOnError on_error;
    bool base_reopened;          /* base was read-only: read-write for the job's life */
    bool cleaned;
} Commit;

/* QEMU lets a client write to a layer an intermediate commit is about to
 * drop, and drops the write with it; blockd refuses such writes instead,
 * so nothing acknowledged is lost. */
static int refuse_layer_write(BlockNode *node, uint64_t offset, uint64_t count, NodeWriteKind kind, void *opaque)
{
    return -EPERM;
}

/* Names a writer of `node` (a parent node or a user claiming write), or NULL. */
static char *writer_of(BlockNode *node)
{
    g_autoptr(GPtrArray) claims = node_perm_claims_of(node);
    for (guint i = 0; i < claims->len; i++) {
        NodeClaimInfo *c = claims->pdata[i];
        if (c->perm & BLOCK_PERM_WRITE)
            return c->parent ? g_strdup_printf("node '%s'", node_name(c->parent)) : g_strdup("a user (an export?)");
    }
    return NULL;
}

/* No layer from `from` down to above `base` may have a writer (checked
 * before the job adds its own users): its writes would leave the chain
 * with it. */
static bool check_no_writers(BlockNode *from, BlockNode *base, GError **errp)
{
    for (BlockNode *n = from; n != base; n = chain_backing(n)) {
        g_autofree char *writer = writer_of(n);
        if (writer) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY,
                        "Node '%s' is written by %s: a commit would lose those writes", node_name(n), writer);
            return false;
        }
    }
    return true;
}

static void remove_layer_hooks(Commit *c)
{
    for (guint i = 0; i < c->layer_hooks->len; i++)
        node_remove_before_write_hook(c->layers->pdata[i], c->layer_hooks->pdata[i]);
    g_ptr_array_set_size(c->layer_hooks, 0);
}

static int commit_run(Job *job, GError **errp)
{
    Commit *c = job_opaque(job);
    uint64_t len = node_size(c->top);
    g_autofree uint8_t *buf = g_malloc(COMMIT_BUFFER_SIZE);
    job_progress_set_total(job, len);
    /* A smaller base grows first (QEMU's commit_run); what the layers above
     * read past its old end stays zero. */
    if (node_size(c->base) < len && !node_truncate(c->base, len, errp))
        return -EIO;
    uint64_t n = 0;
    for (uint64_t offset = 0; offset < len; offset += n) {
        n = 0;
        if (!job_pause_point(job))
            return -ECANCELED;
        uint64_t want = MIN(len - offset, MIN(COMMIT_BUFFER_SIZE, job_rate_chunk(job, COMMIT_RATE_UNIT)));
        bool is_read = true;
        int r = chain_is_allocated_above(c->top, c->base, offset, want, &n);
        bool copy = r > 0;
        if (copy) {
            BlockNode *top = block_user_begin(c->top_user);
            r = block_user_end(c->top_user, node_pread(top, buf, (uint32_t)n, offset));
            if (r == 0) {
                BlockNode *base = block_user_begin(c->base_user);
                r = block_user_end(c->base_user, node_pwrite(base, buf, (uint32_t)n, offset, 0));
                if (r < 0)
                    is_read = false;
            }
        }
        if (r < 0) {
            /* As QEMU: report fails the job; ignore and stop retry the
             * same region (stop after the resume). */
            BlockErrorAction a = job_handle_error(job, c->on_error, is_read, -r);
            if (a == BLOCK_ERROR_ACTION_REPORT) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", g_strerror(-r));
                return r;
            }
            if (a == BLOCK_ERROR_ACTION_IGNORE)
                job_sleep_ms(job, 10); /* without spinning */
            n = 0;
            continue;
        }
        job_progress_add(job, n);
        if (copy)
            job_rate_limit(job, n);
    }
    return 0;
}

/* Success: base durable first, then the overlay above top names it and
 * the committed layers leave the chain (QEMU's commit_prepare). */
static int commit_prepare(Job *job)
{
    Commit *c = job_opaque(job);
    g_autoptr(GError) err = NULL;
    int r = node_flush(c->base);
    if (r < 0) {
        g_warning("commit '%s': flushing '%s': %s", job_id(job), node_name(c->base), g_strerror(-r));
        return r;
    }
    remove_layer_hooks(c);
    /* The job's own hold on the nodes ends before the graph changes: the
     * relink closes the layers the chain had opened from image headers
     * only when no one else holds them (QEMU drops them with the job's
     * last references). */
    for (guint i = 0; i < c->blocked->len; i++)
        node_unblock_ops(c->blocked->pdata[i]);
    g_ptr_array_set_size(c->blocked, 0);
    g_ptr_array_set_size(c->layers, 0);
    block_user_free(g_steal_pointer(&c->top_user));
    node_unref(g_steal_pointer(&c->top));
    if (!chain_relink(c->above, c->base, c->backing_file, &err)) {
        g_warning("commit '%s': %s", job_id(job), err->message);
        return -EIO;
    }
    return 0;
}

static void commit_clean(Job *job)
{
    Commit *c = job_opaque(job);
    if (c->cleaned)
        return;
    c->cleaned = true;
    for (guint i = 0; i < c->blocked->len; i++)
        node_unblock_ops(c->blocked->pdata[i]);
    g_ptr_array_set_size(c->blocked, 0);
    remove_layer_hooks(c);
    block_user_free(g_steal_pointer(&c->top_user));
    block_user_free(g_steal_pointer(&c->base_user));
    if (c->base_reopened) {
        c->base_reopened = false;
        node_restore_read_only(c->base, "commit");
    }
}

static void commit_free_state(Commit *c)
{
    block_user_free(c->top_user);
    block_user_free(c->base_user);
    g_ptr_array_unref(c->blocked);
    g_ptr_array_unref(c->layer_hooks);
    g_ptr_array_unref(c->layers);
    node_unref(c->root);
    node_unref(c->top);
    node_unref(c->base);
    node_unref(c->above);
    g_free(c->backing_file);
    g_free(c);
}

static void commit_free(Job *job)
{
    commit_free_state(job_opaque(job));
}

static const JobDriver commit_driver = {
    .type = JOB_TYPE_COMMIT,
    .is_block_job = true,
    .run = commit_run,
    .prepare = commit_prepare,
    .clean = commit_clean,
    .free = commit_free,
};

/* The nodes between top and base, top down (each borrowed). */
static GPtrArray *intermediate_nodes(BlockNode *top, BlockNode *base)
{
    GPtrArray *a = g_ptr_array_new();
    for (BlockNode *n = chain_backing(top); n && n != base; n = chain_backing(n))
        g_ptr_array_add(a, n);
    return a;
}

static Job *active_commit_create(const CommitOptions *o, const ChainCommitRange *r, GError **errp)
{
    g_autoptr(GPtrArray) intermediate = intermediate_nodes(r->top, r->base);
    MirrorOptions m = {
        .job_id = o->job_id,
        .device = node_name(r->top),
        .target = node_name(r->base),
        .sync = MIRROR_SYNC_MODE_TOP,
        .speed = o->speed,
        .on_source_error = o->on_error,
        .on_target_error = o->on_error,
        .copy_mode = MIRROR_COPY_MODE_BACKGROUND,
        .auto_finalize = o->auto_finalize,
        .auto_dismiss = o->auto_dismiss,
        .active_commit = true,
        .intermediate = intermediate,
    };
    return mirror_job_create(&m, errp);
}

/* The job's users of top and base (QEMU's commit_start makes them after
 * the job and the base's reopen); false with QEMU's error. */
static bool commit_add_users(Commit *c, const char *id, GError **errp)
{
    g_autofree char *desc = g_strdup_printf("block job '%s'", id);
    c->top_user = block_user_new(c->top, desc, BLOCK_PERM_CONSISTENT_READ, BLOCK_PERM_ALL, errp);
    if (!c->top_user)
        return false;
    block_user_describe(c->top_user, "block-job", id, "top");
    /* QEMU's commit job writes base letting others only read it (the
     * chain above does) and write what does not change. */
    uint64_t perm = BLOCK_PERM_WRITE | BLOCK_PERM_CONSISTENT_READ;
    if (node_size(c->base) < node_size(c->top))
        perm |= BLOCK_PERM_RESIZE; /* the job grows it first, as QEMU's */
    c->base_user = block_user_new(c->base, desc, perm, BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE_UNCHANGED, errp);
    if (!c->base_user)
        return false;
    block_user_describe(c->base_user, "block-job", id, "base");
    return true;
}

/* The rest of intermediate_commit_create: the job, base writable, the users. */
static Job *intermediate_commit_start(const CommitOptions *o, const ChainCommitRange *r, BlockNode *above,
                                      GError **errp)
{
    Commit *c = g_new0(Commit, 1);
    c->root = node_ref(r->root);
    c->top = node_ref(r->top);
    c->base = node_ref(r->base);
    c->above = node_ref(above);
    c->blocked = g_ptr_array_new();
    c->layers = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    c->layer_hooks = g_ptr_array_new();
    c->backing_file = g_strdup(o->backing_file);
    c->on_error = o->on_error;
    Job *job = job_create(o->job_id, &commit_driver, c, NULL, o->auto_finalize, o->auto_dismiss, errp);
    if (!job) {
        commit_free_state(c);
        return NULL;
    }
    c->job = job;
    /* From here a failure ends the job at once (created, null), as in QEMU;
     * commit_clean restores base's mode. */
    bool ok = job_open_writable(c->base, &c->base_reopened, errp) &&
              commit_add_users(c, o->job_id ? o->job_id : "", errp);
    if (!ok) {
        job_early_fail(job);
        return NULL;
    }
    job_set_speed(job, o->speed, NULL); /* checked above */
    /* As QEMU's block_job_add_bdrv: the root ("main node"), every node
     * that leaves the chain and the base; the caller checked that none is
     * blocked.  So the root is no longer a root for other jobs either. */
    node_block_ops(c->root, COMMIT_BLOCKER, NULL);
    g_ptr_array_add(c->blocked, c->root);
    for (BlockNode *n = c->top;; n = chain_backing(n)) {
        node_block_ops(n, COMMIT_BLOCKER, NULL);
        g_ptr_array_add(c->blocked, n);
        if (n == c->base)
            break;
        g_ptr_array_add(c->layers, node_ref(n));
        g_ptr_array_add(c->layer_hooks,
                        node_add_before_write_hook(n, NODE_HOOK_ORDER_JOB, refuse_layer_write, c));
    }
    return job;
}

/* QEMU's commit_start: the job reads top, writes base, and holds every
 * node from the root down to base against other jobs and blockdev-del. */
static Job *intermediate_commit_create(const CommitOptions *o, const ChainCommitRange *r, GError **errp)
{
    BlockNode *above = chain_overlay(r->root, r->top);
    g_assert(above); /* top is below the root */
    if (!node_check_ops(above, errp))
        return NULL;
    if (o->speed < 0) {
        block_fail(errp, "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    /* The overlay above top may be read-only too: its header is rewritten
     * at the end as QEMU's bdrv_backing_update_filename does, reopened for
     * that moment only (node_change_backing_file). */
    if (!check_no_writers(r->top, r->base, errp))
        return NULL;
    return intermediate_commit_start(o, r, above, errp);
}

Job *commit_job_create(const CommitOptions *opts, GError **errp)
{
    ChainCommitRange r;
    if (!chain_resolve_commit(opts->device, opts->top, opts->top_node, opts->base, opts->base_node, &r, errp))
        return NULL;
    if (r.top == r.root) {
        if (opts->backing_file) {
            block_fail(errp, "'backing-file' specified, but 'top' is the active layer");
            return NULL;
        }
        /* The active layer is mirrored; the layers below it must not
         * change (QEMU lets them and loses the writes). */
        bool reopened;
        if ((chain_backing(r.top) != r.base && !check_no_writers(chain_backing(r.top), r.base, errp)) ||
            !job_open_writable(r.base, &reopened, errp))
            return NULL;
        /* QEMU leaves base read-write from here on, also after a cancel or
         * an error (mirror_exit_common; a pivot gives it top's mode). */
        Job *job = active_commit_create(opts, &r, errp);
        if (!job && reopened)
            node_restore_read_only(r.base, "commit");
        return job;
    }
    return intermediate_commit_create(opts, &r, errp);
}
