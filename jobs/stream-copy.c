/* The stream copier (see stream.h): copy-on-read of the regions a node
 * still reads from the layers above a base, serialised with client writes
 * to the node by a range lock of its own. */
#include "jobs/stream.h"
#include "jobs/copy.h"
#include "jobs/open-writable.h"
#include "block/node-perm.h"
#include "block/range-lock.h"
#include "block/user.h"

#include <errno.h>
#include <string.h>
#include <gio/gio.h>

#define STREAM_BLOCKER "block device is in use by block job: stream"

struct StreamCopier {
    BlockNode *top, *base;      /* references; base may be NULL */
    GPtrArray *layers;          /* the nodes between them (references), blocked and claimed */
    GPtrArray *claims;          /* NodePermClaim *: on top, then on each layer */
    RangeLock *ranges;          /* copies exclusive, client writes to top shared */
    NodeWriteHook *before, *after;
    uint64_t cluster;           /* top's cluster size: copies lock whole clusters */
    uint8_t *buf;
    uint64_t buf_size;
    bool detached;
    bool reopened;              /* top was read-only: opened read-write for the job */
};

/* The copier whose own writes to top this thread is issuing: they pass
 * its hooks without taking a range (they hold the exclusive one). */
static __thread StreamCopier *copying;

static int copier_before_write(BlockNode *node, uint64_t offset, uint64_t count, NodeWriteKind kind, void *opaque)
{
    StreamCopier *c = opaque;
    if (copying != c && count > 0)
        range_lock_acquire(c->ranges, offset, count, RANGE_LOCK_SHARED, g_thread_self());
    return 0;
}

static void copier_after_write(BlockNode *node, const void *buf, uint64_t offset, uint64_t count,
                               NodeWriteKind kind, int result, void *opaque)
{
    StreamCopier *c = opaque;
    if (copying == c || count == 0)
        return;
    /* NULL for a write that was in flight when the hooks were added, or one
     * an earlier hook failed before ours ran. */
    RangeLockEntry *e = range_lock_find(c->ranges, offset, count, g_thread_self());
    if (e)
        range_lock_release(c->ranges, e);
}

/* QEMU's stream_start claims: the job reads top and writes what it
 * already reads (copy-on-read), letting others do anything but resize it;
 * no one else may write or resize the layers that will disappear (the job
 * reads each block of them once). */
static bool claim_all(StreamCopier *c, const char *owner, GError **errp)
{
    g_autofree char *desc = g_strdup_printf("stream job '%s'", owner);
    NodePermOwner main_owner = { "block-job", owner, "main node", desc, .filter = true };
    NodePermClaim *cl = node_perm_claim_as(c->top, BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE_UNCHANGED,
                                           BLOCK_PERM_ALL & ~BLOCK_PERM_RESIZE, &main_owner, errp);
    if (!cl)
        return false;
    g_ptr_array_add(c->claims, cl);
    NodePermOwner layer_owner = { "block-job", owner, "intermediate node", desc, .filter = false };
    for (guint i = 0; i < c->layers->len; i++) {
        cl = node_perm_claim_as(c->layers->pdata[i], 0, BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE_UNCHANGED,
                                &layer_owner, errp);
        if (!cl)
            return false;
        g_ptr_array_add(c->claims, cl);
    }
    return true;
}

StreamCopier *stream_copier_new(const ChainStreamRange *range, const char *owner, GError **errp)
{
    g_assert(range->top && range->top != range->base && (!range->base || chain_contains(range->top, range->base)));
    /* QEMU's stream_start: a read-only top is written for the job's life. */
    bool reopen;
    if (!job_open_writable(range->top, &reopen, errp))
        return NULL;
    StreamCopier *c = g_new0(StreamCopier, 1);
    c->reopened = reopen;
    c->top = node_ref(range->top);
    c->base = range->base ? node_ref(range->base) : NULL;
    c->layers = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    for (BlockNode *n = chain_backing(c->top); n && n != c->base; n = chain_backing(n))
        g_ptr_array_add(c->layers, node_ref(n));
    c->claims = g_ptr_array_new_with_free_func((GDestroyNotify)node_perm_release);
    if (!claim_all(c, owner, errp)) {
        c->detached = true;
        stream_copier_free(c);
        return NULL;
    }
    /* The resolution checked the op blockers of all these just now, on this thread. */
    node_block_ops(c->top, STREAM_BLOCKER, NULL);
    for (guint i = 0; i < c->layers->len; i++)
        node_block_ops(c->layers->pdata[i], STREAM_BLOCKER, NULL);
    c->ranges = range_lock_new();
    c->cluster = MAX(node_caps(c->top)->block_preferred, 512);
    c->before = node_add_before_write_hook(c->top, NODE_HOOK_ORDER_JOB, copier_before_write, c);
    c->after = node_add_after_write_hook(c->top, NODE_HOOK_ORDER_JOB, copier_after_write, c);
    /* A write issued before the hooks could land after a copy of its
     * region read the old data: let those finish first. */
    node_drain_begin(c->top);
    node_drain_end(c->top);
    return c;
}

void stream_copier_detach(StreamCopier *c)
{
    if (c->detached)
        return;
    c->detached = true;
    g_assert(c->before && c->after);
    /* Writes that took a range keep it until their after-write hook:
     * let those in flight finish before that hook goes. */
    node_remove_before_write_hook(c->top, c->before);
    node_drain_begin(c->top);
    node_drain_end(c->top);
    node_remove_before_write_hook(c->top, c->after);
    g_assert(range_lock_held_count(c->ranges) == 0);
    node_unblock_ops(c->top);
    for (guint i = 0; i < c->layers->len; i++)
        node_unblock_ops(c->layers->pdata[i]);
    g_ptr_array_set_size(c->claims, 0);
    /* The relink closes layers only when no one else holds them. */
    g_ptr_array_set_size(c->layers, 0);
}

/* Back to read-only if the copier reopened top (after detach). */
static void restore_mode(StreamCopier *c)
{
    g_assert(c->detached);
    if (c->reopened) {
        c->reopened = false;
        node_restore_read_only(c->top, "stream");
    }
}

void stream_copier_free(StreamCopier *c)
{
    if (!c)
        return;
    stream_copier_detach(c);
    restore_mode(c);
    g_ptr_array_unref(c->claims);
    g_ptr_array_unref(c->layers);
    if (c->ranges)
        range_lock_free(c->ranges);
    node_unref(c->top);
    if (c->base)
        node_unref(c->base);
    g_free(c->buf);
    g_free(c);
}

BlockNode *stream_copier_top(StreamCopier *c) { return c->top; }
BlockNode *stream_copier_base(StreamCopier *c) { return c->base; }

/* How far from offset top holds data of its own (*own true) or leaves it to its backing (false). */
static int top_allocation(StreamCopier *c, uint64_t offset, uint64_t len, bool *own, uint64_t *n)
{
    BlockExtents *ext = extents_new(offset, offset + len);
    if (!ext)
        return -ERANGE;
    int r = node_block_status(c->top, (uint32_t)len, offset, BLOCK_FLAG_ALLOCATION | BLOCK_FLAG_REQ_ONE, ext);
    if (r == 0 && extents_count(ext) == 0)
        r = -EIO;
    if (r == 0) {
        BlockExtent e = extents_get(ext, 0);
        *own = !(e.type & BLOCK_EXTENT_HOLE);
        *n = MIN(e.offset + e.length, offset + len) - offset;
    }
    extents_free(ext);
    return r;
}

/* Copies [offset, offset+len) where top still has nothing of its own,
 * under an exclusive range over the clusters it touches. */
static int copy_locked(StreamCopier *c, uint64_t offset, uint64_t len, uint64_t *copied)
{
    uint64_t size = node_size(c->top);
    uint64_t lo = offset / c->cluster * c->cluster;
    uint64_t hi = MIN((offset + len + c->cluster - 1) / c->cluster * c->cluster, size);
    RangeLockEntry *e = range_lock_acquire(c->ranges, lo, hi - lo, RANGE_LOCK_EXCLUSIVE, c);
    int r = 0;
    copying = c;
    /* Client writes that landed before the lock made parts of it top's own. */
    for (uint64_t pos = offset; r == 0 && pos < offset + len;) {
        bool own = true;
        uint64_t n = 0;
        r = top_allocation(c, pos, offset + len - pos, &own, &n);
        if (r == 0 && !own) {
            /* Reading top reads the layer that holds the region. */
            r = node_pread(c->top, c->buf, (uint32_t)n, pos);
            /* Zeroes become zero clusters, as QEMU's copy-on-read writes
             * them (without MAY_TRIM: they must not fall through to the
             * backing node again). */
            if (r == 0 && copy_buffer_is_zero(c->buf, n))
                r = node_zero(c->top, (uint32_t)n, pos, 0);
            else if (r == 0)
                r = node_pwrite(c->top, c->buf, (uint32_t)n, pos, 0);
            if (r == 0)
                *copied += n;
        }
        pos += n;
    }
    copying = NULL;
    range_lock_release(c->ranges, e);
    return r;
}

int stream_copier_step(StreamCopier *c, uint64_t offset, uint64_t max, uint64_t *done, uint64_t *copied)
{
    g_assert(!c->detached && max > 0);
    uint64_t size = node_size(c->top);
    *done = *copied = 0;
    if (offset >= size)
        return 0;
    max = MIN(MIN(max, size - offset), (uint64_t)1 << 30);
    BlockNode *below = chain_backing(c->top);
    if (below == c->base) {
        *done = size - offset;   /* no layer between them: nothing to copy */
        return 0;
    }
    /* QEMU's stream_run: top's own data needs nothing; a hole of top is
     * copied where a layer above base holds it. */
    bool own;
    uint64_t n;
    int r = top_allocation(c, offset, max, &own, &n);
    if (r < 0)
        return r;
    if (own) {
        *done = n;
        return 0;
    }
    int allocated = chain_is_allocated_above(below, c->base, offset, n, &n);
    if (allocated < 0)
        return allocated;
    if (n == 0)
        n = size - offset;
    if (allocated) {
        if (c->buf_size < n) {
            g_free(c->buf);
            c->buf = g_malloc(n);
            c->buf_size = n;
        }
        r = copy_locked(c, offset, n, copied);
    }
    *done = n;
    return r;
}

bool stream_copier_relink(StreamCopier *c, const char *backing_file, GError **errp)
{
    g_assert(c->detached);
    return chain_relink(c->top, c->base, backing_file, errp);
}
