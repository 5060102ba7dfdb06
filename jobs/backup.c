/* The backup job (see jobs/backup.h): QEMU's block/backup.c and
 * block/copy-before-write.c on top of the shared copy engine. */
#include "jobs/backup.h"
#include "jobs/copy.h"
#include "jobs/node-claims.h"
#include "bitmaps/dirty-bitmap.h"
#include "block/node.h"

#include <errno.h>
#include <string.h>

const char *const backup_sync_names[BACKUP_SYNC__MAX] = {
    "top", "full", "none", "incremental", "bitmap",
};
const char *const backup_bitmap_mode_names[BACKUP_BITMAP__MAX] = {
    "on-success", "never", "always",
};

#define BACKUP_CLUSTER_SIZE (64 * 1024)
#define BACKUP_DEFAULT_WORKERS 16
#define BACKUP_DEFAULT_CHUNK (4u << 20)

typedef struct Backup {
    BlockNode *source, *target;
    BackupSync sync;
    DirtyBitmap *bitmap;       /* NULL: none */
    BackupBitmapMode bitmap_mode;
    HBitmap *bitmap_snapshot;  /* the bitmap's bits at the start (granule units) */
    JobOnError on_source_error, on_target_error;
    CopyEngine *engine;
    NodeWriteHook *hook;
    bool delete_target;
    bool cleaned;
} Backup;

/* The copy-before-write hook: old data reaches the target before the write lands. */
static int backup_before_write(BlockNode *node, uint64_t offset, uint64_t count,
                               NodeWriteKind kind, void *opaque)
{
    Backup *b = opaque;
    return copy_engine_copy_before_write(b->engine, offset, count);
}

/* Calls fn for every run of set bits of a bitmap snapshot, in bytes. */
static void snapshot_for_each(HBitmap *bits, uint64_t granularity,
                              void (*fn)(void *opaque, uint64_t offset, uint64_t len), void *opaque)
{
    uint64_t n = hbitmap_size(bits);
    int64_t start = hbitmap_next_set(bits, 0, n);
    while (start >= 0) {
        int64_t end = hbitmap_next_clear(bits, (uint64_t)start, n);
        if (end < 0)
            end = (int64_t)n;
        fn(opaque, (uint64_t)start * granularity, (uint64_t)(end - start) * granularity);
        start = (uint64_t)end < n ? hbitmap_next_set(bits, (uint64_t)end, n) : -1;
    }
}

static void engine_set(void *opaque, uint64_t offset, uint64_t len)
{
    copy_engine_set_range(opaque, offset, len);
}

static void bitmap_set(void *opaque, uint64_t offset, uint64_t len)
{
    dirty_bitmap_set_range(opaque, offset, len);
}

static int backup_run(Job *job, GError **errp)
{
    Backup *b = job_opaque(job);
    if (b->sync == BACKUP_SYNC_NONE) {
        /* Only copy-before-write: the job lives until it is cancelled. */
        for (;;) {
            if (!job_pause_point(job))
                return -ECANCELED;
            job_sleep_ms(job, 1000);
        }
    }
    for (;;) {
        bool is_read = false;
        int r = copy_engine_run(b->engine, job, &is_read);
        if (r == 0)
            return job_is_cancelled(job) ? -ECANCELED : 0;
        if (r != -EAGAIN) {
            JobOnError policy = is_read ? b->on_source_error : b->on_target_error;
            JobErrorAction a = job_handle_error(job, policy, is_read, -r);
            if (a == JOB_ERROR_ACTION_REPORT)
                return r;
            if (a == JOB_ERROR_ACTION_IGNORE)
                job_sleep_ms(job, 10); /* retry, as QEMU does, without spinning */
        }
        if (!job_pause_point(job))
            return -ECANCELED;
    }
}

/* Hands the bitmap back (QEMU's successor rules, block-jobs.md 2.3). */
static void backup_bitmap_finish(Backup *b, bool success)
{
    if (!b->bitmap)
        return;
    uint64_t gran = dirty_bitmap_granularity(b->bitmap);
    switch (b->bitmap_mode) {
    case BACKUP_BITMAP_ON_SUCCESS:
        if (!success)
            snapshot_for_each(b->bitmap_snapshot, gran, bitmap_set, b->bitmap);
        break;
    case BACKUP_BITMAP_NEVER:
        snapshot_for_each(b->bitmap_snapshot, gran, bitmap_set, b->bitmap);
        break;
    case BACKUP_BITMAP_ALWAYS:
        if (!success) {
            uint64_t len, pos = 0;
            int64_t off;
            while ((off = copy_engine_next_remaining(b->engine, pos, &len)) >= 0) {
                dirty_bitmap_set_range(b->bitmap, (uint64_t)off, len);
                pos = (uint64_t)off + len;
            }
        }
        break;
    default:
        break;
    }
    /* Bits handed back must survive a crash like any write's. */
    g_autoptr(GError) err = NULL;
    if (!dirty_bitmap_sync(b->bitmap, &err))
        g_printerr("blockd: warning: %s\n", err->message);
    dirty_bitmap_set_busy(b->bitmap, false);
    b->bitmap = NULL;
}

static void backup_commit(Job *job)
{
    backup_bitmap_finish(job_opaque(job), true);
}

static void backup_abort(Job *job)
{
    backup_bitmap_finish(job_opaque(job), false);
}

static void backup_clean(Job *job)
{
    Backup *b = job_opaque(job);
    if (b->cleaned)
        return;
    b->cleaned = true;
    if (b->hook)
        node_remove_before_write_hook(b->source, b->hook);
    b->hook = NULL;
    node_flush(b->target);
    job_node_release(node_name(b->target));
    if (b->delete_target) {
        g_autofree char *name = g_strdup(node_name(b->target));
        node_unref(b->target);
        b->target = NULL;
        node_delete(name, NULL);
    }
}

static void backup_free(Job *job)
{
    Backup *b = job_opaque(job);
    copy_engine_free(b->engine);
    hbitmap_free(b->bitmap_snapshot);
    if (b->target)
        node_unref(b->target);
    node_unref(b->source);
    g_free(b);
}

static const JobDriver backup_driver = {
    .type = JOB_KIND_BACKUP,
    .is_block_job = true,
    .run = backup_run,
    .commit = backup_commit,
    .abort = backup_abort,
    .clean = backup_clean,
    .free = backup_free,
};

static bool lookup(const char *name, BlockNode **out, GError **errp)
{
    *out = name ? node_find(name) : NULL;
    if (*out)
        return true;
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "Cannot find device='%s' nor node-name='%s'", name ? name : "", name ? name : "");
    return false;
}

static bool fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_FAILED, msg);
    return false;
}

/* QEMU's do_backup_common + backup_job_create checks, in their order. */
static bool backup_validate(BackupOptions *o, BlockNode **src, BlockNode **tgt,
                            DirtyBitmap **bm, GError **errp)
{
    if (!lookup(o->device, src, errp) || !lookup(o->target, tgt, errp))
        return false;
    if ((o->sync == BACKUP_SYNC_BITMAP || o->sync == BACKUP_SYNC_INCREMENTAL) && !o->bitmap)
        return fail(errp, "must provide a valid bitmap name for '%s' sync mode",
                    backup_sync_names[o->sync]);
    if (o->sync == BACKUP_SYNC_INCREMENTAL) {
        if (o->has_bitmap_mode && o->bitmap_mode != BACKUP_BITMAP_ON_SUCCESS)
            return fail(errp, "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
        o->has_bitmap_mode = true;
        o->bitmap_mode = BACKUP_BITMAP_ON_SUCCESS;
        o->sync = BACKUP_SYNC_BITMAP;
    }
    *bm = NULL;
    if (o->bitmap) {
        *bm = dirty_bitmap_find(*src, o->bitmap);
        if (!*bm)
            return fail(errp, "Bitmap '%s' could not be found", o->bitmap);
        if (!o->has_bitmap_mode)
            return fail(errp, "Bitmap sync mode must be given when providing a bitmap");
        if (!dirty_bitmap_check(*bm, DIRTY_BITMAP_ALLOW_RO, errp))
            return false;
        if (o->sync == BACKUP_SYNC_NONE)
            return fail(errp, "sync mode 'none' does not produce meaningful bitmap outputs");
        if (o->bitmap_mode == BACKUP_BITMAP_NEVER && o->sync != BACKUP_SYNC_BITMAP)
            return fail(errp, "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '%s'",
                        backup_sync_names[o->sync]);
    } else if (o->has_bitmap_mode) {
        return fail(errp, "Cannot specify bitmap sync mode without a bitmap");
    }
    if (*src == *tgt)
        return fail(errp, "Source and target cannot be the same");
    if (job_node_claimed(node_name(*tgt)))
        return fail(errp, "Node '%s' is busy: block device is in use by block job: backup",
                    node_name(*tgt));
    if (node_read_only(*tgt))
        return fail(errp, "Node '%s' is read-only", node_name(*tgt));
    if (node_size(*tgt) < node_size(*src))
        return fail(errp, "Target '%s' is smaller than the source (%" G_GUINT64_FORMAT
                    " < %" G_GUINT64_FORMAT " bytes)", node_name(*tgt),
                    (guint64)node_size(*tgt), (guint64)node_size(*src));
    if (*bm && o->bitmap_mode != BACKUP_BITMAP_NEVER &&
        !dirty_bitmap_check(*bm, DIRTY_BITMAP_DEFAULT, errp))
        return false;
    if (o->speed < 0)
        return fail(errp, "Parameter 'speed' expects a non-negative value");
    return true;
}

Job *backup_job_create(const BackupOptions *opts, GError **errp)
{
    BackupOptions o = *opts;
    BlockNode *src = NULL, *tgt = NULL;
    DirtyBitmap *bm = NULL;
    if (!backup_validate(&o, &src, &tgt, &bm, errp))
        return NULL;

    Backup *b = g_new0(Backup, 1);
    b->source = node_ref(src);
    b->target = node_ref(tgt);
    b->sync = o.sync;
    b->bitmap_mode = o.bitmap_mode;
    b->on_source_error = o.on_source_error;
    b->on_target_error = o.on_target_error;
    b->delete_target = o.delete_target_at_end;
    Job *job = job_create(o.job_id, &backup_driver, b, o.txn, o.auto_finalize, o.auto_dismiss, errp);
    if (!job) {
        node_unref(b->source);
        node_unref(b->target);
        g_free(b);
        return NULL;
    }
    job_set_speed(job, o.speed, NULL); /* validated above */
    job_node_claim(node_name(tgt));

    CopyConfig cfg = {
        .source = src,
        .target = tgt,
        .cluster_size = BACKUP_CLUSTER_SIZE,
        .max_workers = o.max_workers ? o.max_workers : BACKUP_DEFAULT_WORKERS,
        .max_chunk = o.max_chunk ? o.max_chunk : BACKUP_DEFAULT_CHUNK,
        .skip_unallocated = o.sync == BACKUP_SYNC_TOP,
        .target_is_zero = copy_node_reads_zero(tgt),
        .job = job,
    };
    b->engine = copy_engine_new(&cfg);

    /* The point in time: snapshot the bitmap and start copy-before-write
     * with no guest write in between that either could miss (both happen
     * on the main loop; the hook sees every write issued after it). */
    if (bm) {
        dirty_bitmap_clear(bm, &b->bitmap_snapshot);
        dirty_bitmap_set_busy(bm, true);
        b->bitmap = bm;
    }
    /* sync=none marks everything too: its background pass never runs, but
     * copy-before-write must copy every cluster on its first overwrite. */
    if (o.sync == BACKUP_SYNC_BITMAP)
        snapshot_for_each(b->bitmap_snapshot, dirty_bitmap_granularity(bm), engine_set, b->engine);
    else
        copy_engine_set_range(b->engine, 0, node_size(src));
    b->hook = node_add_before_write_hook(src, NODE_HOOK_ORDER_JOB, backup_before_write, b);
    job_progress_set_total(job, copy_engine_remaining(b->engine));
    return job;
}
