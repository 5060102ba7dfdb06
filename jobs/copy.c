/* The chunked copy engine (see jobs/copy.h).
 *
 * Which clusters are in flight is the range lock's business: a copy
 * (background chunk or copy-before-write) clears its clusters' `todo` bits
 * and locks their range exclusively in one step under the engine's lock
 * (range_lock_try_acquire, which never waits), so a cluster is always
 * either still to copy, in a locked range being copied, or on the target.
 * Copy-before-write waits outside the engine's lock: for a copy in flight
 * over its clusters by waiting on the range lock, then looks again (a
 * failed copy puts its clusters back). */
#include "jobs/copy.h"
#include "jobs/worker-pool.h"
#include "bitmaps/hbitmap.h"
#include "block/range-lock.h"

#include <errno.h>
#include <string.h>

struct CopyEngine {
    CopyConfig cfg;
    unsigned cluster_bits;
    uint64_t nclusters;
    GMutex lock;
    GCond cond;          /* a background chunk finished */
    HBitmap *todo;       /* clusters still to copy */
    RangeLock *ranges;   /* the clusters being copied, by byte range */
    unsigned inflight;   /* background chunks in the pool */
    unsigned cbw_inflight; /* copy-before-write copies running */
    int error;           /* first background error (-errno), 0 if none */
    bool error_is_read;
    WorkerGroup *workers;
    /* The background pass asks the source for its extents in large windows
     * (a per-chunk query can cost more than the copy: SEEK_DATA on tmpfs
     * scans the whole file).  Only the job thread touches it.  Stale
     * answers are harmless: a region the guest changes after the query is
     * claimed by copy-before-write before the write lands. */
    BlockExtents *status_cache;
};

#define STATUS_WINDOW (1ull << 30)

typedef struct CopyTask {
    CopyEngine *e;
    uint64_t first, count; /* clusters */
    RangeLockEntry *range; /* their range, locked */
    GArray *extents;       /* BlockExtent covering the chunk, or NULL: ask the source */
} CopyTask;

static uint64_t cluster_offset(CopyEngine *e, uint64_t c) { return c << e->cluster_bits; }

/* Bytes of clusters [first, first+count), clipped at the end of the source. */
static uint64_t clusters_bytes(CopyEngine *e, uint64_t first, uint64_t count)
{
    uint64_t start = cluster_offset(e, first);
    uint64_t end = MIN(cluster_offset(e, first + count), node_size(e->cfg.source));
    return end - start;
}

bool copy_buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    if (len == 0)
        return true;
    return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0;
}

/* Starts a write to the target: through its user when the job has one. */
static BlockNode *target_begin(const CopyConfig *c)
{
    return c->target_user ? block_user_begin(c->target_user) : c->target;
}

/* Ends a write started with target_begin; returns r. */
static int target_end(const CopyConfig *c, int r)
{
    return c->target_user ? block_user_end(c->target_user, r) : r;
}

/* Writes zeroes to the target (nothing if it is known zero). */
static int write_zeroes(const CopyConfig *c, uint64_t offset, uint64_t len)
{
    if (c->target_is_zero)
        return 0;
    while (len > 0) {
        uint32_t n = (uint32_t)MIN(len, 1u << 30);
        int r = target_end(c, node_zero(target_begin(c), n, offset, BLOCK_FLAG_MAY_TRIM));
        if (r < 0)
            return r;
        offset += n;
        len -= n;
    }
    return 0;
}

/* Copies [offset, offset+len) of data; *is_read tells which side failed. */
static int copy_data(const CopyConfig *c, uint64_t offset, uint64_t len, void *buf, bool *is_read)
{
    int r = node_pread(c->source, buf, (uint32_t)len, offset);
    if (r < 0) {
        *is_read = true;
        return r;
    }
    *is_read = false;
    if (copy_buffer_is_zero(buf, len))
        return write_zeroes(c, offset, len);
    if (c->compress)
        return target_end(c, node_pwrite_compressed(target_begin(c), buf, (uint32_t)len, offset));
    return target_end(c, node_pwrite(target_begin(c), buf, (uint32_t)len, offset, 0));
}

/* sync=top asks what the source's own layer holds: what it leaves to a
 * backing node shows as a hole and is not copied. */
static uint32_t status_flags(const CopyConfig *c)
{
    return c->skip_unallocated ? BLOCK_FLAG_ALLOCATION : 0;
}

/* Zero runs shorter than this are copied with the data around them, as
 * QEMU's mirror copies a whole granule by one method: a 64 KiB region
 * holding 4 KiB of data is then one write, not a write and a zero request
 * one after the other (two round trips to a remote target). */
#define COPY_MIN_ZERO_RUN (64 * 1024)

typedef enum SegKind { SEG_SKIP, SEG_ZERO, SEG_DATA } SegKind;

typedef struct Seg {
    SegKind kind;
    uint64_t start, end;
} Seg;

/* Appends [start, end) of `kind`, merging it into the last segment when
 * that one has the same kind. */
static void seg_add(GArray *segs, SegKind kind, uint64_t start, uint64_t end)
{
    if (end <= start)
        return;
    if (segs->len) {
        Seg *last = &g_array_index(segs, Seg, segs->len - 1);
        if (last->kind == kind && last->end == start) {
            last->end = end;
            return;
        }
    }
    Seg s = { kind, start, end };
    g_array_append_val(segs, s);
}

int copy_region(const CopyConfig *c, uint64_t offset, uint64_t len, GArray *known, bool *is_read)
{
    g_autofree void *buf = g_malloc(len);
    *is_read = false;
    if (!node_caps(c->source)->can_extents || c->compress)
        return copy_data(c, offset, len, buf, is_read);
    g_autoptr(GArray) ext = known ? g_array_ref(known) : g_array_new(FALSE, FALSE, sizeof(BlockExtent));
    if (!known) {
        BlockExtents *list = extents_new(offset, offset + len);
        int r = node_block_status(c->source, (uint32_t)len, offset, status_flags(c), list);
        for (size_t i = 0; r == 0 && i < extents_count(list); i++) {
            BlockExtent x = extents_get(list, i);
            g_array_append_val(ext, x);
        }
        extents_free(list);
    }
    /* The region as runs of one method each (what the extents do not
     * cover is read), then short zero runs folded into data. */
    g_autoptr(GArray) raw = g_array_new(FALSE, FALSE, sizeof(Seg));
    uint64_t pos = offset, end = offset + len;
    for (guint i = 0; i < ext->len && pos < end; i++) {
        BlockExtent x = g_array_index(ext, BlockExtent, i);
        uint64_t xend = MIN(x.offset + x.length, end);
        if (xend <= pos)
            continue;
        SegKind kind = (x.type & BLOCK_EXTENT_HOLE) && c->skip_unallocated ? SEG_SKIP
                     : (x.type & BLOCK_EXTENT_ZERO) ? SEG_ZERO : SEG_DATA;
        seg_add(raw, kind, pos, xend);
        pos = xend;
    }
    seg_add(raw, SEG_DATA, pos, end);
    g_autoptr(GArray) segs = g_array_new(FALSE, FALSE, sizeof(Seg));
    for (guint i = 0; i < raw->len; i++) {
        Seg s = g_array_index(raw, Seg, i);
        if (s.kind == SEG_ZERO && s.end - s.start < COPY_MIN_ZERO_RUN)
            s.kind = SEG_DATA;
        seg_add(segs, s.kind, s.start, s.end);
    }
    int r = 0;
    for (guint i = 0; i < segs->len && r == 0; i++) {
        Seg s = g_array_index(segs, Seg, i);
        if (s.kind == SEG_ZERO)
            r = write_zeroes(c, s.start, s.end - s.start);
        else if (s.kind == SEG_DATA)
            r = copy_data(c, s.start, s.end - s.start, (char *)buf + (s.start - offset), is_read);
    }
    return r;
}

/* Ends a claimed run: back to do on failure (before its range is
 * unlocked, so a copy-before-write waiting for it finds it to do).  Locked. */
static void release_locked(CopyEngine *e, uint64_t first, uint64_t count, RangeLockEntry *range, int r)
{
    if (r < 0)
        hbitmap_set(e->todo, first, count);
    range_lock_release(e->ranges, range);
}

static void worker(void *data)
{
    CopyTask *t = data;
    CopyEngine *e = t->e;
    bool is_read = false;
    uint64_t bytes = clusters_bytes(e, t->first, t->count);
    int r = copy_region(&e->cfg, cluster_offset(e, t->first), bytes, t->extents, &is_read);
    if (r == 0 && e->cfg.job)
        job_progress_add(e->cfg.job, bytes);
    g_mutex_lock(&e->lock);
    release_locked(e, t->first, t->count, t->range, r);
    if (r < 0 && e->error == 0) {
        e->error = r;
        e->error_is_read = is_read;
    }
    e->inflight--;
    g_cond_broadcast(&e->cond);
    g_mutex_unlock(&e->lock);
    if (t->extents)
        g_array_unref(t->extents);
    g_free(t);
}

bool copy_node_reads_zero(BlockNode *node)
{
    if (!node_caps(node)->can_extents)
        return false;
    uint64_t size = node_size(node), pos = 0;
    while (pos < size) {
        uint32_t n = (uint32_t)MIN(size - pos, 1u << 30);
        BlockExtents *ext = extents_new(pos, pos + n);
        int r = node_block_status(node, n, pos, 0, ext);
        uint64_t next = pos;
        bool zero = r == 0;
        for (size_t i = 0; zero && i < extents_count(ext); i++) {
            BlockExtent x = extents_get(ext, i);
            zero = (x.type & BLOCK_EXTENT_ZERO) != 0;
            next = x.offset + x.length;
        }
        extents_free(ext);
        if (!zero || next <= pos)
            return false;
        pos = next;
    }
    return true;
}

CopyEngine *copy_engine_new(const CopyConfig *cfg)
{
    CopyEngine *e = g_new0(CopyEngine, 1);
    e->cfg = *cfg;
    g_assert(cfg->cluster_size && (cfg->cluster_size & (cfg->cluster_size - 1)) == 0);
    e->cluster_bits = (unsigned)__builtin_ctzll(cfg->cluster_size);
    if (e->cfg.max_workers == 0)
        e->cfg.max_workers = 16;
    if (e->cfg.max_chunk < cfg->cluster_size)
        e->cfg.max_chunk = MAX(cfg->cluster_size, 1u << 20);
    e->cfg.max_chunk &= ~(cfg->cluster_size - 1);
    e->nclusters = (node_size(cfg->source) + cfg->cluster_size - 1) >> e->cluster_bits;
    e->todo = hbitmap_new(e->nclusters);
    e->ranges = range_lock_new();
    g_mutex_init(&e->lock);
    g_cond_init(&e->cond);
    e->workers = worker_group_new(e->cfg.max_workers);
    return e;
}

void copy_engine_free(CopyEngine *e)
{
    if (!e)
        return;
    worker_group_free(e->workers);
    hbitmap_free(e->todo);
    range_lock_free(e->ranges);
    extents_free(e->status_cache);
    g_mutex_clear(&e->lock);
    g_cond_clear(&e->cond);
    g_free(e);
}

void copy_engine_set_range(CopyEngine *e, uint64_t offset, uint64_t len)
{
    if (len == 0 || offset >= node_size(e->cfg.source))
        return;
    uint64_t first = offset >> e->cluster_bits;
    uint64_t last = MIN((offset + len - 1) >> e->cluster_bits, e->nclusters - 1);
    g_mutex_lock(&e->lock);
    hbitmap_set(e->todo, first, last - first + 1);
    g_mutex_unlock(&e->lock);
}

uint64_t copy_engine_remaining(CopyEngine *e)
{
    g_mutex_lock(&e->lock);
    uint64_t n = hbitmap_count(e->todo);
    bool last = e->nclusters && hbitmap_get(e->todo, e->nclusters - 1);
    g_mutex_unlock(&e->lock);
    uint64_t bytes = n << e->cluster_bits;
    if (last)
        bytes -= (e->nclusters << e->cluster_bits) - node_size(e->cfg.source);
    return bytes;
}

int64_t copy_engine_next_remaining(CopyEngine *e, uint64_t offset, uint64_t *len)
{
    g_mutex_lock(&e->lock);
    int64_t first = hbitmap_next_set(e->todo, offset >> e->cluster_bits, e->nclusters);
    int64_t end = first < 0 ? -1 : hbitmap_next_clear(e->todo, (uint64_t)first, e->nclusters);
    g_mutex_unlock(&e->lock);
    if (first < 0)
        return -1;
    if (end < 0)
        end = (int64_t)e->nclusters;
    *len = clusters_bytes(e, (uint64_t)first, (uint64_t)(end - first));
    return (int64_t)cluster_offset(e, (uint64_t)first);
}

/* The byte range a run of clusters is locked by (whole clusters). */
static void run_range(CopyEngine *e, uint64_t first, uint64_t count, uint64_t *offset, uint64_t *len)
{
    *offset = cluster_offset(e, first);
    *len = cluster_offset(e, count);
}

/* A range that kept clusters still to copy from being claimed. */
typedef struct Busy {
    bool found;
    uint64_t offset, len;
} Busy;

/* Claims up to max clusters of the first run of `todo` bits in [from,
 * limit) that can be locked now: clears their bits and locks their range
 * exclusively for `owner` (NULL: a background chunk).  Parts of runs that
 * conflict with a range held or waited for are passed over; the first such
 * range goes to *busy (when not NULL).  Locked. */
static RangeLockEntry *claim_locked(CopyEngine *e, uint64_t from, uint64_t limit, uint64_t max,
                                    const void *owner, uint64_t *first, uint64_t *count, Busy *busy)
{
    while (from < limit) {
        int64_t f = hbitmap_next_set(e->todo, from, limit);
        if (f < 0)
            return NULL;
        int64_t end = hbitmap_next_clear(e->todo, (uint64_t)f, MIN(limit, (uint64_t)f + max));
        uint64_t n = (end < 0 ? MIN(limit, (uint64_t)f + max) : (uint64_t)end) - (uint64_t)f;
        uint64_t off, len, boff = 0, blen = 0;
        run_range(e, (uint64_t)f, n, &off, &len);
        RangeLockEntry *r = range_lock_try_acquire(e->ranges, off, len, RANGE_LOCK_EXCLUSIVE, owner, &boff, &blen);
        if (!r && boff > off) {
            /* The part before the conflicting range is free. */
            n = (boff - off) >> e->cluster_bits;
            if (n > 0) {
                run_range(e, (uint64_t)f, n, &off, &len);
                r = range_lock_try_acquire(e->ranges, off, len, RANGE_LOCK_EXCLUSIVE, owner, NULL, NULL);
            }
        }
        if (r) {
            hbitmap_reset(e->todo, (uint64_t)f, n);
            *first = (uint64_t)f;
            *count = n;
            return r;
        }
        if (busy && !busy->found)
            *busy = (Busy){ true, boff, blen };
        /* Go on after the conflicting range. */
        uint64_t next = (boff + blen + e->cfg.cluster_size - 1) >> e->cluster_bits;
        from = MAX(next, (uint64_t)f + 1);
    }
    return NULL;
}

/* Waits for the pool to drain; returns the recorded error (cleared).  Locked. */
static int drain_locked(CopyEngine *e, bool *is_read)
{
    while (e->inflight > 0)
        g_cond_wait(&e->cond, &e->lock);
    int r = e->error;
    *is_read = e->error_is_read;
    e->error = 0;
    return r;
}

/* The source's extents over [offset, offset+len) from the window cache
 * (refreshed when it does not cover the range); NULL if unknown. */
static GArray *cached_extents(CopyEngine *e, uint64_t offset, uint64_t len)
{
    if (!node_caps(e->cfg.source)->can_extents)
        return NULL;
    BlockExtents *c = e->status_cache;
    if (!c || offset < extents_start(c) || offset + len > extents_next_offset(c)) {
        extents_free(e->status_cache);
        uint64_t n = MIN(node_size(e->cfg.source) - offset, STATUS_WINDOW);
        c = e->status_cache = extents_new(offset, offset + n);
        if (node_block_status(e->cfg.source, (uint32_t)n, offset, status_flags(&e->cfg), c) < 0 ||
            offset + len > extents_next_offset(c)) {
            extents_free(c);
            e->status_cache = NULL;
            return NULL;
        }
    }
    GArray *out = g_array_new(FALSE, FALSE, sizeof(BlockExtent));
    for (size_t i = 0; i < extents_count(c); i++) {
        BlockExtent x = extents_get(c, i);
        if (x.offset + x.length <= offset)
            continue;
        if (x.offset >= offset + len)
            break;
        g_array_append_val(out, x);
    }
    return out;
}

int copy_engine_run(CopyEngine *e, Job *job, bool *is_read)
{
    uint64_t max_clusters = e->cfg.max_chunk >> e->cluster_bits;
    uint64_t cursor = 0;
    for (;;) {
        /* Job state is read outside the engine lock (lock order: job, then
         * engine); under a speed limit no chunk is larger than the limit
         * lets through smoothly (jobs/rate-limit.h). */
        bool stop = job && (job_is_cancelled(job) || job_pause_requested(job));
        uint64_t rate_clusters = job ? job_rate_chunk(job, 1ull << e->cluster_bits) >> e->cluster_bits : UINT64_MAX;
        uint64_t chunk_clusters = MAX(MIN(max_clusters, rate_clusters), 1);
        g_mutex_lock(&e->lock);
        if (stop || e->error) {
            int r = drain_locked(e, is_read);
            g_mutex_unlock(&e->lock);
            return r ? r : -EAGAIN;
        }
        if (e->inflight >= e->cfg.max_workers) {
            gint64 deadline = g_get_monotonic_time() + 50 * G_TIME_SPAN_MILLISECOND;
            g_cond_wait_until(&e->cond, &e->lock, deadline);
            g_mutex_unlock(&e->lock);
            continue;
        }
        uint64_t first, count;
        RangeLockEntry *range = claim_locked(e, cursor, e->nclusters, chunk_clusters, NULL, &first, &count, NULL);
        if (!range && cursor > 0) {
            cursor = 0; /* clusters put back by failed copies lie behind us */
            range = claim_locked(e, 0, e->nclusters, chunk_clusters, NULL, &first, &count, NULL);
        }
        if (!range) {
            if (e->inflight == 0 && e->cbw_inflight == 0 && hbitmap_count(e->todo) == 0) {
                int r = drain_locked(e, is_read);
                g_mutex_unlock(&e->lock);
                return r;
            }
            /* Copies in flight (ours or copy-before-write) may still fail;
             * clusters copy-before-write waits for are left to it. */
            gint64 deadline = g_get_monotonic_time() + 50 * G_TIME_SPAN_MILLISECOND;
            g_cond_wait_until(&e->cond, &e->lock, deadline);
            g_mutex_unlock(&e->lock);
            continue;
        }
        cursor = first + count;
        e->inflight++;
        g_mutex_unlock(&e->lock);
        CopyTask *t = g_new(CopyTask, 1);
        t->e = e;
        t->first = first;
        t->count = count;
        t->range = range;
        t->extents = cached_extents(e, cluster_offset(e, first), clusters_bytes(e, first, count));
        worker_group_submit(e->workers, worker, t);
        if (job)
            job_rate_limit(job, clusters_bytes(e, first, count));
    }
}

int copy_engine_copy_before_write(CopyEngine *e, uint64_t offset, uint64_t len)
{
    if (len == 0 || offset >= node_size(e->cfg.source))
        return 0;
    uint64_t first = offset >> e->cluster_bits;
    uint64_t limit = MIN(((offset + len - 1) >> e->cluster_bits) + 1, e->nclusters);
    uint64_t chunk_clusters = e->cfg.max_chunk >> e->cluster_bits;
    uint64_t off, bytes_all;
    run_range(e, first, limit - first, &off, &bytes_all);
    const void *self = g_thread_self();
    int r = 0;
    g_mutex_lock(&e->lock);
    for (;;) {
        uint64_t f, n;
        Busy busy = { 0 };
        RangeLockEntry *range = claim_locked(e, first, limit, chunk_clusters, self, &f, &n, &busy);
        if (range) {
            e->cbw_inflight++;
            g_mutex_unlock(&e->lock);
            bool is_read;
            uint64_t bytes = clusters_bytes(e, f, n);
            /* A guest is waiting: read the few clusters rather than ask the
             * source for extents (which can cost more); zeroes are still
             * detected in the buffer.  sync=top must know the holes. */
            if (e->cfg.skip_unallocated) {
                r = copy_region(&e->cfg, cluster_offset(e, f), bytes, NULL, &is_read);
            } else {
                g_autofree void *buf = g_malloc(bytes);
                r = copy_data(&e->cfg, cluster_offset(e, f), bytes, buf, &is_read);
            }
            if (r == 0 && e->cfg.job)
                job_progress_add(e->cfg.job, bytes);
            g_mutex_lock(&e->lock);
            release_locked(e, f, n, range, r);
            e->cbw_inflight--;
            g_cond_broadcast(&e->cond);
            if (r < 0)
                break;
            continue;
        }
        /* Nothing left to claim.  Clusters are claimed only under our
         * lock, so if no copy holds a range of ours now, every cluster of
         * the write is on the target. */
        if (!busy.found && !range_lock_busy(e->ranges, off, bytes_all, RANGE_LOCK_SHARED, self))
            break;
        g_mutex_unlock(&e->lock);
        if (busy.found) {
            /* Clusters to copy that another copy-before-write, queued
             * before us, waits over: wait until it is done there. */
            range_lock_wait(e->ranges, busy.offset, busy.len, RANGE_LOCK_EXCLUSIVE, self);
        } else {
            /* Wait for the copies in flight (and the waiters queued
             * before us), then look again: a failed copy puts its
             * clusters back. */
            range_lock_wait(e->ranges, off, bytes_all, RANGE_LOCK_SHARED, self);
        }
        g_mutex_lock(&e->lock);
    }
    g_mutex_unlock(&e->lock);
    return r;
}
