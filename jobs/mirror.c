/* The mirror job (see jobs/mirror.h): QEMU's block/mirror.c on top of the
 * node write hooks and a hierarchical bitmap of dirty granules.  As in
 * QEMU, the first pass is the dirty loop itself: the job starts by marking
 * every region the source holds dirty (from its block status), so one
 * mechanism, with its range locks, copies everything and write-blocking
 * mode is in force from the first byte.
 *
 * Why the job is correct under concurrent writes:
 * - A guest write marks its granules dirty in an after-write hook, i.e.
 *   once its data is on the source.  A copy clears the bits of its region
 *   before it reads the source, so a copy that read old data is always
 *   followed by a mark and a later copy.
 * - Copies of the dirty loop lock their region exclusively in the job's
 *   range lock (block/range-lock.h) from the clear until the target write
 *   is done, so two copies of one region (the second after a re-dirtying
 *   write) never reach the target out of order.
 * - In write-blocking mode a guest write locks its region exclusively in a
 *   before-write hook (waiting for copies in flight there) and, from the
 *   after-write hook, writes the same data to the target before releasing
 *   it and before the write is acknowledged (the NBD server may answer a
 *   batch of writes once their write-throughs completed on the target
 *   driver's thread: block/io-defer.h); the granules it covered whole are
 *   then clean, a failed target write marks the region dirty.
 * - The initial marking only ever sets bits, so a guest write that raced
 *   with it costs at most one extra copy.
 * - The final sync (pivot, or soft cancel after READY) runs on the job's
 *   thread with the source drained (block/user.h: every export and other
 *   user above it is held) and, waited for first, no write-through in
 *   flight (one may complete after its guest request ended); the source
 *   stays drained until prepare has pivoted its users to the target
 *   (node_replace), as QEMU keeps it drained from the end of mirror_run to
 *   mirror_exit_common: nothing is written in between. */
#include "jobs/mirror.h"
#include "block/error.h"
#include "jobs/copy.h"
#include "jobs/worker-pool.h"
#include "bitmaps/hbitmap.h"
#include "block/node.h"
#include "block/range-lock.h"
#include "block/user.h"

#include <errno.h>

#define MIRROR_DEFAULT_GRANULARITY (64 * 1024)
#define MIRROR_DEFAULT_BUF_SIZE (16 << 20)
/* Bytes per copy: buf-size / MIRROR_MAX_WORKERS, at least this (QEMU's
 * MAX_IO_BYTES), at most buf-size: 16 copies in flight then fill the
 * buffer, and the target's connections (multi-conn) all get work.  Measured
 * (2 GiB to READY into nbdkit memory, 3-5 alternating rounds): 1 MiB copies
 * took 2-10 % less time than 4 MiB ones. */
#define MIRROR_MIN_CHUNK (1u << 20)
#define MIRROR_MAX_WORKERS 16u /* copies in flight at most (QEMU's MAX_IN_FLIGHT) */
/* Once READY, and until job-complete asks to converge, one copy at a time
 * (still up to a chunk of contiguous dirty granules): a guest writing all
 * the time keeps the job copying all the time, and on a small machine its
 * copies compete with the guest for the CPU.  Parallel copies there buy
 * little bandwidth for more CPU per byte (a wake-up per copy on the pool,
 * the target's I/O thread and the target server).  Measured on 2 cores,
 * random 4 KiB guest writes at QD16 over 2 GiB, nbdkit memory target
 * (tests/bench/bench-mirror.py): the guest kept 84-87 % of its IOPS with
 * one copy in flight, 47-65 % with 16; the backlog there is the whole disk
 * whatever the job does (each 4 KiB write dirties a 64 KiB granule).
 * QEMU's mirror shares one thread with the guest's requests, which has a
 * similar effect.
 * Parallel copies come back while READY only when they cost no CPU: the
 * backlog is over buf-size and the target is slow to answer (a distant
 * server), that is each of the last MIRROR_LATENCY_WINDOW copies that
 * ran alone took over MIRROR_SLOW_COPY_US plus MIRROR_SLOW_COPY_US_PER_MIB
 * per MiB (a copy to a local server takes well under that even on a busy machine,
 * and a slow one: every copy pays the round trip).  job-complete converges
 * with every copy in flight, before the drained final copy. */
#define MIRROR_READY_WORKERS 1u
#define MIRROR_LATENCY_WINDOW 16u
#define MIRROR_SLOW_COPY_US 2000
#define MIRROR_SLOW_COPY_US_PER_MIB 1000
#define MIRROR_STATUS_WINDOW (1ull << 30) /* bytes of block status per query at start */

typedef struct Mirror {
    Job *job;
    BlockNode *source, *target;
    NodePermClaim *source_claim; /* QEMU's mirror job's (the target's: target_user) */
    MirrorCopyMode copy_mode;
    unsigned gran_bits;
    uint64_t ngranules;
    uint64_t chunk;    /* bytes per copy of the dirty loop */
    uint64_t buf_size; /* bytes in flight at most */
    BlockdevOnError on_source_error, on_target_error;
    MirrorSyncMode sync;
    bool target_is_zero; /* zero regions of the source need not be copied at first */
    /* Active commit: the layers above the target whose allocations the
     * first pass copies (the source, then the intermediate nodes, each
     * with a reference), and the intermediate nodes are op-blocked. */
    GPtrArray *layers;
    bool grow_target;    /* active commit into a smaller base: grown first (QEMU's mirror_run) */
    CopyConfig copy;     /* how one region is copied (zeroes always written) */

    GMutex lock;
    GCond cond;        /* bits set, a copy finished, a kick; a range unlocked while busy_wait */
    HBitmap *dirty;    /* granules to copy; under lock */
    /* Copies in flight (anonymous) and write-blocking guest writes (their
     * thread) hold their regions exclusively here. */
    RangeLock *ranges;
    gint busy_wait;    /* the dirty loop waits because a region was locked */
    unsigned inflight;
    uint64_t inflight_bytes;
    int error;         /* first copy error not yet handled (-errno) */
    bool error_is_read;

    uint64_t copied;           /* bytes copied so far (atomic) */
    /* Copies that ran alone once READY and were slow, in a row (see
     * MIRROR_SLOW_COPY_US; under lock): the target is slow from
     * MIRROR_LATENCY_WINDOW on. */
    unsigned slow_streak;
    uint64_t submitted;        /* copies submitted so far (under lock) */

    gint ready;           /* reached READY once */
    gint should_complete; /* job-complete was called */
    bool pivot;           /* run ended for job-complete: prepare pivots */
    bool drained;         /* the source is drained (from the final sync to prepare) */

    WorkerGroup *workers;
    NodeWriteHook *before_hook, *after_hook;
    BlockUser *target_user; /* the job writes the target through it (QEMU: the job's BlockBackend) */
    bool cleaned;
    /* Write-throughs whose completion (on the target driver's thread) has
     * not returned yet: their last step reads m after releasing the range
     * the final sync waits for, so the job is freed only once this is 0. */
    gint async_done_pending;
} Mirror;

typedef struct MirrorOp {
    Mirror *m;
    uint64_t offset, len;
    RangeLockEntry *range; /* the region, locked */
    /* Submitted with no other copy in flight, as copy number `seq`: if no
     * other was submitted by its end, it ran alone and its time tells the
     * target's latency, not the CPU's contention between copies. */
    bool alone;
    uint64_t seq;
} MirrorOp;

/* The ranges the current thread's write-blocking writes locked in the
 * before-write hook, for their after-write hook (a write of this thread
 * could run inside another's hooks, so a few).  The ranges are anonymous
 * (not the thread's): one may stay locked after the hook returned, until
 * its write-through completes on another thread (block/io-defer.h), and a
 * later write of the same thread to the region must wait for that. */
#define WB_HELD_MAX 4
typedef struct WbHeld {
    Mirror *m;
    RangeLockEntry *range;
    uint64_t offset, count;
} WbHeld;
static __thread WbHeld wb_held[WB_HELD_MAX];


/* --- dirty granules and range locks (all under m->lock) --- */

static void dirty_mark_locked(Mirror *m, uint64_t offset, uint64_t len)
{
    if (len == 0 || m->ngranules == 0)
        return;
    uint64_t first = offset >> m->gran_bits;
    uint64_t last = MIN((offset + len - 1) >> m->gran_bits, m->ngranules - 1);
    if (first <= last)
        hbitmap_set(m->dirty, first, last - first + 1);
}

/* The granules wholly inside [offset, offset+len): [*first, *end). */
static void covered_granules(Mirror *m, uint64_t offset, uint64_t len, uint64_t *first, uint64_t *end)
{
    uint64_t gran = 1ull << m->gran_bits;
    uint64_t stop = offset + len;
    *first = (offset + gran - 1) >> m->gran_bits;
    /* The last granule may be short: it is covered if the write reaches the end. */
    *end = stop >= node_size(m->source) ? m->ngranules : stop >> m->gran_bits;
}

static bool covers_granule(Mirror *m, uint64_t offset, uint64_t len)
{
    uint64_t first, end;
    covered_granules(m, offset, len, &first, &end);
    return first < end;
}

/* The granules wholly inside [offset, offset+len) are clean (the region
 * just reached the target under its range lock). */
static void dirty_clear_covered_locked(Mirror *m, uint64_t offset, uint64_t len)
{
    uint64_t first, end;
    covered_granules(m, offset, len, &first, &end);
    if (first < end)
        hbitmap_reset(m->dirty, first, end - first);
}

/* Bytes still to copy: dirty granules (clipped at the end) plus copies in flight. */
static uint64_t remaining_locked(Mirror *m)
{
    uint64_t n = hbitmap_count(m->dirty);
    uint64_t bytes = n << m->gran_bits;
    if (n && hbitmap_get(m->dirty, m->ngranules - 1))
        bytes -= (m->ngranules << m->gran_bits) - node_size(m->source);
    return bytes + m->inflight_bytes;
}

/* --- guest writes --- */

/* write-blocking: waits until no copy of the region is in flight, and
 * keeps copies out until the after-write hook put the data on the target. */
static int mirror_before_write(BlockNode *node, uint64_t offset, uint64_t count,
                               NodeWriteKind kind, void *opaque)
{
    Mirror *m = opaque;
    if (m->copy_mode != MIRROR_COPY_MODE_WRITE_BLOCKING || kind == NODE_WRITE_TRIM)
        return 0;
    for (unsigned i = 0; i < WB_HELD_MAX; i++) {
        if (!wb_held[i].range) {
            RangeLockEntry *range = range_lock_acquire(m->ranges, offset, count, RANGE_LOCK_EXCLUSIVE, NULL);
            wb_held[i] = (WbHeld){ m, range, offset, count };
            return 0;
        }
    }
    g_assert_not_reached(); /* writes nested deeper than any graph */
    return -EIO;
}

/* The range this thread's write to [offset, offset+count) locked in the
 * before-write hook, or NULL. */
static RangeLockEntry *held_range(Mirror *m, uint64_t offset, uint64_t count)
{
    if (m->copy_mode != MIRROR_COPY_MODE_WRITE_BLOCKING)
        return NULL;
    /* The innermost write first. */
    for (unsigned i = WB_HELD_MAX; i-- > 0;) {
        WbHeld *h = &wb_held[i];
        if (h->range && h->m == m && h->offset == offset && h->count == count) {
            RangeLockEntry *range = h->range;
            *h = (WbHeld){ 0 };
            return range;
        }
    }
    return NULL; /* the write ran only the after-write hook (added first) */
}

/* Ends a guest write's write-through (or, with range NULL, its
 * tracking): the granules it covered whole are clean, or its region dirty
 * if the write or the write-through failed; then its range is unlocked. */
static void write_through_done(Mirror *m, RangeLockEntry *range, uint64_t offset, uint64_t count, int r)
{
    /* No wake-up for a mark: as QEMU, an idle READY job looks again every
     * 100 ms, so bursts of small writes are copied in batches.  A write
     * through that covers no granule whole leaves the bitmap alone. */
    if (r != 0 || covers_granule(m, offset, count)) {
        g_mutex_lock(&m->lock);
        if (r != 0)
            dirty_mark_locked(m, offset, count);
        else
            dirty_clear_covered_locked(m, offset, count);
        g_mutex_unlock(&m->lock);
    }
    if (range) {
        range_lock_release(m->ranges, range);
        /* The dirty loop found a region locked and waits: let it look again. */
        if (g_atomic_int_get(&m->busy_wait)) {
            g_mutex_lock(&m->lock);
            g_cond_broadcast(&m->cond);
            g_mutex_unlock(&m->lock);
        }
    }
}

typedef struct WriteThrough {
    Mirror *m;
    RangeLockEntry *range;
    uint64_t offset, count;
} WriteThrough;

/* The target write of a write-through finished (possibly on the target
 * driver's thread, if the NBD server defers its reply: block/io-defer.h). */
static void write_through_target_done(void *opaque, int r)
{
    WriteThrough *wt = opaque;
    Mirror *m = wt->m;
    block_user_end(m->target_user, 0);
    write_through_done(m, wt->range, wt->offset, wt->count, r);
    g_free(wt);
    g_atomic_int_add(&m->async_done_pending, -1); /* the last touch of m */
}

/* The data is on the source: copy it to the target now (write-blocking,
 * when the before-write hook locked the range) or mark it dirty. */
static void mirror_after_write(BlockNode *node, const void *buf, uint64_t offset, uint64_t count,
                               NodeWriteKind kind, int result, void *opaque)
{
    Mirror *m = opaque;
    RangeLockEntry *range = held_range(m, offset, count);
    if (!range || result != 0 || kind == NODE_WRITE_TRIM) {
        write_through_done(m, range, offset, count, -1);
        return;
    }
    BlockNode *target = block_user_begin(m->target_user);
    if (kind == NODE_WRITE_ZERO) {
        int r = node_zero(target, (uint32_t)count, offset, BLOCK_FLAG_MAY_TRIM);
        block_user_end(m->target_user, 0);
        write_through_done(m, range, offset, count, r);
        return;
    }
    /* The range stays locked and the target's user busy until the write
     * is done, which may be after this returns. */
    WriteThrough *wt = g_new(WriteThrough, 1);
    *wt = (WriteThrough){ m, range, offset, count };
    g_atomic_int_inc(&m->async_done_pending);
    node_pwrite_async(target, buf, (uint32_t)count, offset, 0, write_through_target_done, wt);
}

/* --- copies --- */

typedef enum ClaimResult { CLAIM_NONE, CLAIM_BUSY, CLAIM_OK } ClaimResult;

/* Claims the next dirty run at or after *cursor (wrapping once), up to
 * `max` bytes (at least one granule): clears its bits and locks its range.
 * BUSY: the run overlaps a locked range (a copy or a write-blocking write in
 * flight, or one waiting), which op's offset and len then give. */
static ClaimResult claim_locked(Mirror *m, uint64_t *cursor, uint64_t max, MirrorOp *op)
{
    int64_t f = hbitmap_next_set(m->dirty, *cursor, m->ngranules);
    if (f < 0 && *cursor > 0)
        f = hbitmap_next_set(m->dirty, 0, m->ngranules);
    if (f < 0)
        return CLAIM_NONE;
    uint64_t limit = MIN(m->ngranules, (uint64_t)f + MAX(max >> m->gran_bits, 1));
    int64_t e = hbitmap_next_clear(m->dirty, (uint64_t)f, limit);
    uint64_t n = (e < 0 ? limit : (uint64_t)e) - (uint64_t)f;
    uint64_t start = (uint64_t)f << m->gran_bits;
    uint64_t end = MIN(((uint64_t)f + n) << m->gran_bits, node_size(m->source));
    *cursor = (uint64_t)f + n < m->ngranules ? (uint64_t)f + n : 0;
    op->m = m;
    op->range = range_lock_try_acquire(m->ranges, start, end - start, RANGE_LOCK_EXCLUSIVE, NULL,
                                       &op->offset, &op->len);
    if (!op->range)
        return CLAIM_BUSY;
    hbitmap_reset(m->dirty, (uint64_t)f, n);
    op->offset = start;
    op->len = end - start;
    return CLAIM_OK;
}

/* Ends a claimed copy: on failure its region is dirty again. */
static void finish_op(Mirror *m, MirrorOp *op, int r, bool is_read)
{
    if (r == 0) {
        __atomic_add_fetch(&m->copied, op->len, __ATOMIC_RELAXED);
        job_progress_add(m->job, op->len);
    }
    g_mutex_lock(&m->lock);
    if (r < 0) {
        dirty_mark_locked(m, op->offset, op->len);
        if (m->error == 0) {
            m->error = r;
            m->error_is_read = is_read;
        }
    }
    range_lock_release(m->ranges, op->range);
    op->range = NULL;
    g_mutex_unlock(&m->lock);
}

/* Counts a successful copy of `len` bytes that ran alone once READY and
 * took `us`: a slow one lengthens the streak, a quick one ends it.  Locked. */
static void note_copy_latency_locked(Mirror *m, uint64_t len, gint64 us)
{
    gint64 slow = MIRROR_SLOW_COPY_US + (gint64)((len * MIRROR_SLOW_COPY_US_PER_MIB) >> 20);
    m->slow_streak = us >= slow ? MIN(m->slow_streak + 1, MIRROR_LATENCY_WINDOW) : 0;
}

static void mirror_worker(void *data)
{
    MirrorOp *op = data;
    Mirror *m = op->m;
    bool is_read = false;
    gint64 start = g_get_monotonic_time();
    int r = copy_region(&m->copy, op->offset, op->len, NULL, &is_read);
    gint64 took = g_get_monotonic_time() - start;
    finish_op(m, op, r, is_read);
    g_mutex_lock(&m->lock);
    if (r == 0 && op->alone && op->seq == m->submitted && g_atomic_int_get(&m->ready))
        note_copy_latency_locked(m, op->len, took);
    m->inflight--;
    m->inflight_bytes -= op->len;
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
    g_free(op);
}

/* Progress: len = copied so far + still to copy (QEMU's set_remaining). */
static void update_progress(Mirror *m)
{
    g_mutex_lock(&m->lock);
    uint64_t left = remaining_locked(m);
    g_mutex_unlock(&m->lock);
    job_progress_set_total(m->job, __atomic_load_n(&m->copied, __ATOMIC_RELAXED) + left);
}

/* Applies the error policy; returns the error for `report`, else 0. */
static int handle_error(Mirror *m, int r, bool is_read)
{
    BlockdevOnError policy = is_read ? m->on_source_error : m->on_target_error;
    BlockErrorAction a = job_handle_error(m->job, policy, is_read, -r);
    if (a == BLOCK_ERROR_ACTION_REPORT)
        return r;
    if (a == BLOCK_ERROR_ACTION_IGNORE)
        job_sleep_ms(m->job, 10); /* the region stays dirty: retried without spinning */
    return 0;
}

/* Marks dirty what `layer` itself holds in [pos, end), as far as one
 * block status answer reaches; returns where that is (end when the layer
 * cannot tell: then all of it is marked). */
static uint64_t mark_allocated(Mirror *m, BlockNode *layer, uint64_t pos, uint64_t end)
{
    BlockExtents *ext = node_caps(layer)->can_extents ? extents_new(pos, end) : NULL;
    uint64_t reached = end;
    bool known = ext && node_block_status(layer, (uint32_t)(end - pos), pos, BLOCK_FLAG_ALLOCATION, ext) == 0 &&
                 extents_count(ext) > 0;
    g_mutex_lock(&m->lock);
    if (!known) {
        dirty_mark_locked(m, pos, end - pos);
    } else {
        for (size_t i = 0; i < extents_count(ext); i++) {
            BlockExtent x = extents_get(ext, i);
            reached = MIN(end, x.offset + x.length);
            if (!(x.type & BLOCK_EXTENT_HOLE))
                dirty_mark_locked(m, x.offset, reached - x.offset);
        }
    }
    g_mutex_unlock(&m->lock);
    extents_free(ext);
    return reached > pos ? reached : end;
}

/* Active commit's first pass (QEMU's mirror_dirty_init with a base): what
 * is allocated above the base, i.e. in any of the layers, a window at a
 * time so a pause or cancel is seen meanwhile. */
static int commit_dirty_init(Mirror *m, Job *job)
{
    uint64_t size = node_size(m->source);
    for (uint64_t pos = 0; pos < size;) {
        if (!job_pause_point(job))
            return -ECANCELED;
        uint64_t end = pos + MIN(size - pos, MIRROR_STATUS_WINDOW);
        for (guint i = 0; i < m->layers->len; i++)
            for (uint64_t at = pos; at < end;)
                at = mark_allocated(m, m->layers->pdata[i], at, end);
        pos = end;
    }
    update_progress(m);
    return 0;
}

/* Marks dirty what the first pass must copy: everything for sync=full
 * (except zero regions when the target reads as zeroes), what the source
 * itself holds for sync=top.  Asks the block status a window at a time so
 * a pause or cancel is seen meanwhile. */
static int mirror_dirty_init(Mirror *m, Job *job)
{
    if (m->layers)
        return commit_dirty_init(m, job);
    uint64_t size = node_size(m->source);
    bool ask = node_caps(m->source)->can_extents &&
               (m->sync == MIRROR_SYNC_MODE_TOP || m->target_is_zero);
    uint32_t flags = m->sync == MIRROR_SYNC_MODE_TOP ? BLOCK_FLAG_ALLOCATION : 0;
    for (uint64_t pos = 0; pos < size;) {
        if (!job_pause_point(job))
            return -ECANCELED;
        uint64_t n = MIN(size - pos, MIRROR_STATUS_WINDOW);
        BlockExtents *ext = ask ? extents_new(pos, pos + n) : NULL;
        if (!ext || node_block_status(m->source, (uint32_t)n, pos, flags, ext) < 0 ||
            extents_count(ext) == 0) {
            /* No answer: copy the window whole (zeroes are still detected). */
            g_mutex_lock(&m->lock);
            dirty_mark_locked(m, pos, n);
            g_mutex_unlock(&m->lock);
            extents_free(ext);
            pos += n;
            continue;
        }
        uint64_t next = pos;
        g_mutex_lock(&m->lock);
        for (size_t i = 0; i < extents_count(ext); i++) {
            BlockExtent x = extents_get(ext, i);
            bool skip = (m->sync == MIRROR_SYNC_MODE_TOP && (x.type & BLOCK_EXTENT_HOLE)) ||
                        (m->target_is_zero && (x.type & BLOCK_EXTENT_ZERO));
            if (!skip)
                dirty_mark_locked(m, x.offset, x.length);
            next = x.offset + x.length;
        }
        g_mutex_unlock(&m->lock);
        extents_free(ext);
        pos = next > pos ? next : pos + n;
    }
    update_progress(m);
    return 0;
}

/* Waits (bounded) for something to change.  Locked. */
static void wait_locked(Mirror *m, unsigned ms)
{
    g_cond_wait_until(&m->cond, &m->lock, g_get_monotonic_time() + ms * G_TIME_SPAN_MILLISECOND);
}

/* The dirty loop: copies dirty regions until cancelled or, once in sync
 * (READY), completed or soft-cancelled. */
static int mirror_dirty_loop(Mirror *m, Job *job)
{
    uint64_t cursor = 0;
    for (;;) {
        update_progress(m);
        bool cancelled = job_is_cancelled(job);
        /* A soft cancel (after READY) converges first, as job-complete
         * does and as QEMU's mirror does; then the final sync, drained. */
        bool soft_cancel = !cancelled && job_cancel_requested(job);
        bool pause = job_pause_requested(job);
        bool complete = g_atomic_int_get(&m->should_complete) || soft_cancel;
        /* Under a speed limit no copy is larger than it lets through
         * smoothly (jobs/rate-limit.h); read before m->lock (job lock first). */
        uint64_t chunk = MIN(m->chunk, MAX(job_rate_chunk(job, 1ull << m->gran_bits), 1ull << m->gran_bits));
        g_mutex_lock(&m->lock);
        if (cancelled || pause || m->error) {
            while (m->inflight > 0)
                g_cond_wait(&m->cond, &m->lock);
            int err = m->error;
            bool is_read = m->error_is_read;
            m->error = 0;
            g_mutex_unlock(&m->lock);
            if (cancelled)
                return -ECANCELED;
            if (err && (err = handle_error(m, err, is_read)) < 0)
                return err;
            job_pause_point(job);
            continue;
        }
        /* As QEMU: up to MIRROR_MAX_WORKERS copies and buf-size bytes in
         * flight, so scattered small regions are copied in parallel (a
         * high-latency target still keeps up with guest writes); once
         * READY one, unless the target is slow (MIRROR_READY_WORKERS). */
        MirrorOp op;
        ClaimResult c = CLAIM_BUSY;
        bool claimed = false;
        uint64_t room = m->buf_size > m->inflight_bytes ? m->buf_size - m->inflight_bytes : 0;
        bool parallel = !g_atomic_int_get(&m->ready) || complete ||
                        (m->slow_streak >= MIRROR_LATENCY_WINDOW && remaining_locked(m) > m->buf_size);
        unsigned max_workers = parallel ? MIRROR_MAX_WORKERS : MIRROR_READY_WORKERS;
        if (m->inflight == 0 || (m->inflight < max_workers && room >= (1ull << m->gran_bits))) {
            /* Set before the claim: a write through that unlocks the
             * region after the claim found it locked then wakes us. */
            g_atomic_int_set(&m->busy_wait, 1);
            c = claim_locked(m, &cursor, m->inflight == 0 ? chunk : MIN(chunk, room), &op);
            claimed = true;
            if (c != CLAIM_BUSY)
                g_atomic_int_set(&m->busy_wait, 0);
        }
        if (c == CLAIM_OK) {
            op.alone = m->inflight == 0;
            op.seq = ++m->submitted;
            m->inflight++;
            m->inflight_bytes += op.len;
            g_mutex_unlock(&m->lock);
            worker_group_submit(m->workers, mirror_worker, g_memdup2(&op, sizeof(op)));
            job_rate_limit(job, op.len);
            continue;
        }
        if (c == CLAIM_NONE && m->inflight == 0) {
            g_mutex_unlock(&m->lock);
            if (!g_atomic_int_get(&m->ready)) {
                g_atomic_int_set(&m->ready, 1);
                update_progress(m);
                job_transition_to_ready(job);
            }
            if (complete)
                return 0;
            g_mutex_lock(&m->lock);
            if (hbitmap_count(m->dirty) == 0)
                wait_locked(m, 100);
            g_mutex_unlock(&m->lock);
            continue;
        }
        wait_locked(m, 20);
        if (claimed)
            g_atomic_int_set(&m->busy_wait, 0);
        g_mutex_unlock(&m->lock);
    }
}

/* With the source drained: copies every dirty region; 0 or -errno. */
static int mirror_final_sync(Mirror *m)
{
    uint64_t cursor = 0;
    for (;;) {
        MirrorOp op;
        g_mutex_lock(&m->lock);
        ClaimResult c = claim_locked(m, &cursor, m->chunk, &op);
        while (c == CLAIM_BUSY) { /* a write from outside the exports */
            g_mutex_unlock(&m->lock);
            range_lock_wait(m->ranges, op.offset, op.len, RANGE_LOCK_EXCLUSIVE, NULL);
            g_mutex_lock(&m->lock);
            c = claim_locked(m, &cursor, m->chunk, &op);
        }
        g_mutex_unlock(&m->lock);
        if (c == CLAIM_NONE)
            return 0;
        bool is_read = false;
        int r = copy_region(&m->copy, op.offset, op.len, NULL, &is_read);
        finish_op(m, &op, r, is_read);
        if (r < 0)
            return r;
    }
}

/* Ends the drain taken for the final sync, if it is still held. */
static void mirror_undrain(Mirror *m)
{
    if (m->drained) {
        m->drained = false;
        node_drain_end(m->source);
    }
}

static int mirror_run(Job *job, GError **errp)
{
    Mirror *m = job_opaque(job);
    if (m->grow_target && !node_truncate(m->target, node_size(m->source), errp))
        return -EIO;
    if (m->sync != MIRROR_SYNC_MODE_NONE) {
        int r = mirror_dirty_init(m, job);
        if (r < 0)
            return r;
    }
    int r = mirror_dirty_loop(m, job);
    if (r < 0)
        return r;
    /* In sync, and completed or soft-cancelled: the final sync, here on the
     * job's thread, with the source drained until prepare. */
    m->pivot = g_atomic_int_get(&m->should_complete);
    node_drain_begin(m->source);
    m->drained = true;
    /* The drain waited for the guests' requests, not for write-throughs
     * they left to complete on the target's thread (block/io-defer.h):
     * wait for those too, so one that failed has marked its region dirty
     * before the final sync looks. */
    range_lock_wait(m->ranges, 0, node_size(m->source), RANGE_LOCK_EXCLUSIVE, NULL);
    r = mirror_final_sync(m);
    update_progress(m);
    if (r < 0) {
        mirror_undrain(m);
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", g_strerror(-r));
    }
    return r;
}

/* Finalisation: with job-complete the pivot, then the source's users go on. */
static int mirror_prepare(Job *job)
{
    Mirror *m = job_opaque(job);
    g_autoptr(GError) err = NULL;
    int r = 0;
    /* As QEMU drops the job's target BlockBackend first: the target's new
     * users read it, which the job's writer did not share. */
    if (m->pivot)
        block_user_set_perm(m->target_user, 0, BLOCK_PERM_ALL, NULL);
    /* QEMU's mirror_exit_common: the target takes the source's mode (an
     * active commit's base stays read-write under a read-write top). */
    if (m->pivot && node_read_only(m->source) != node_read_only(m->target) &&
        !node_reopen_read_only(m->target, node_read_only(m->source), &err)) {
        g_warning("mirror '%s': %s", job_id(job), err->message);
        g_clear_error(&err);
    }
    if (m->pivot && !node_replace(m->source, m->target, &err)) {
        g_warning("mirror '%s': cannot pivot: %s", job_id(job), err->message);
        r = -EIO;
    }
    mirror_undrain(m);
    return r;
}

/* Drops the source claim and the target's user (the target's claim). */
static void release_claims(Mirror *m)
{
    node_perm_release(m->source_claim);
    m->source_claim = NULL;
    block_user_free(g_steal_pointer(&m->target_user));
}

static void mirror_clean(Job *job)
{
    Mirror *m = job_opaque(job);
    if (m->cleaned)
        return;
    m->cleaned = true;
    mirror_undrain(m);
    node_remove_before_write_hook(m->source, m->before_hook);
    /* Writes that locked their region in the removed hook unlock it in
     * the after-write hook: wait for them before removing that. */
    range_lock_wait(m->ranges, 0, node_size(m->source), RANGE_LOCK_EXCLUSIVE, NULL);
    node_remove_before_write_hook(m->source, m->after_hook);
    node_flush(m->target);
    node_unblock_ops(m->source);
    node_unblock_ops(m->target);
    for (guint i = 1; m->layers && i < m->layers->len; i++)
        node_unblock_ops(m->layers->pdata[i]);
    release_claims(m);
}

static void mirror_free(Job *job)
{
    Mirror *m = job_opaque(job);
    /* Their ranges are released, so they are returning now: a moment. */
    while (g_atomic_int_get(&m->async_done_pending) > 0)
        g_usleep(50);
    worker_group_free(m->workers);
    hbitmap_free(m->dirty);
    range_lock_free(m->ranges);
    g_mutex_clear(&m->lock);
    g_cond_clear(&m->cond);
    release_claims(m);
    g_clear_pointer(&m->layers, g_ptr_array_unref);
    node_unref(m->target);
    node_unref(m->source);
    g_free(m);
}

static void mirror_kick(Job *job)
{
    Mirror *m = job_opaque(job);
    g_mutex_lock(&m->lock);
    g_cond_broadcast(&m->cond);
    g_mutex_unlock(&m->lock);
}

/* QEMU: before READY every cancel is forced; after, only force is. */
static bool mirror_cancel(Job *job, bool force)
{
    Mirror *m = job_opaque(job);
    return force || !g_atomic_int_get(&m->ready);
}

static bool mirror_complete(Job *job, GError **errp)
{
    Mirror *m = job_opaque(job);
    g_atomic_int_set(&m->should_complete, 1);
    mirror_kick(job);
    return true;
}

/* Active commit is this job with another type, as in QEMU. */
#define MIRROR_DRIVER(job_type)          \
    {                                    \
        .type = (job_type),              \
        .is_block_job = true,            \
        .run = mirror_run,               \
        .prepare = mirror_prepare,       \
        .clean = mirror_clean,           \
        .free = mirror_free,             \
        .kick = mirror_kick,             \
        .cancel = mirror_cancel,         \
        .complete = mirror_complete,     \
    }
static const JobDriver mirror_driver = MIRROR_DRIVER(JOB_TYPE_MIRROR);
static const JobDriver active_commit_driver = MIRROR_DRIVER(JOB_TYPE_COMMIT);

static bool lookup(const char *name, BlockNode **out, GError **errp)
{
    *out = name ? node_find(name) : NULL;
    return *out || block_fail(errp, "Cannot find device='%s' nor node-name='%s'",
                        name ? name : "", name ? name : "");
}

/* QEMU's blockdev_mirror_common / mirror_start_job checks, in their order. */
static bool mirror_validate(const MirrorOptions *o, BlockNode **src, BlockNode **tgt, GError **errp)
{
    if (!lookup(o->device, src, errp) || !lookup(o->target, tgt, errp))
        return false;
    if (o->granularity && (o->granularity < 512 || o->granularity > (64u << 20)))
        return block_fail(errp, "Parameter 'granularity' expects a value in range [512B, 64MB]");
    if (o->granularity & (o->granularity - 1))
        return block_fail(errp, "Parameter 'granularity' expects a power of 2");
    if (o->sync == MIRROR_SYNC_MODE_INCREMENTAL || o->sync == MIRROR_SYNC_MODE_BITMAP)
        return block_fail(errp, "Sync mode '%s' not supported", MirrorSyncMode_str[o->sync]);
    if (node_has_parent(*src) || !node_check_ops(*src, NULL))
        return block_fail(errp, "Need a root block node");
    if (o->buf_size < 0)
        return block_fail(errp, "Invalid parameter 'buf-size'");
    if (*src == *tgt)
        return block_fail(errp, "Can't mirror node into itself");
    if (!node_check_ops(*tgt, errp))
        return false;
    if (node_read_only(*tgt))
        return block_fail(errp, "Node '%s' is read-only", node_name(*tgt));
    /* An active commit grows a smaller base, as QEMU does. */
    if (node_size(*tgt) != node_size(*src) && !(o->active_commit && node_size(*tgt) < node_size(*src)))
        return block_fail(errp, "Source and target image have different sizes");
    if (o->speed < 0)
        return block_fail(errp, "Parameter 'speed' expects a non-negative value");
    return true;
}

Job *mirror_job_create(const MirrorOptions *opts, GError **errp)
{
    BlockNode *src = NULL, *tgt = NULL;
    if (!mirror_validate(opts, &src, &tgt, errp))
        return NULL;
    /* QEMU's mirror reads the source letting others do anything but resize
     * it, and writes the target letting no one else read, write or resize
     * it: its content is not consistent before the job ends. */
    const char *type = opts->active_commit ? "commit" : "mirror";
    g_autofree char *job_desc = g_strdup_printf("%s job '%s'", type, opts->job_id);
    NodePermOwner source_owner = { "block-job", opts->job_id, "source", job_desc, .filter = true };
    NodePermClaim *sc = node_perm_claim_as(src, BLOCK_PERM_CONSISTENT_READ, BLOCK_PERM_ALL & ~BLOCK_PERM_RESIZE,
                                           &source_owner, errp);
    /* The job writes the target through a user of its own (QEMU: the job's
     * BlockBackend), which holds that claim. */
    g_autofree char *desc = g_strdup_printf("block job '%s'", opts->job_id);
    /* An active commit's target is the chain's base, which the layers
     * above keep reading (QEMU's mirror_start_job when the target is a
     * backing node of the source). */
    uint64_t target_shared = BLOCK_PERM_WRITE_UNCHANGED;
    if (opts->active_commit)
        target_shared |= BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE;
    bool grow = node_size(tgt) < node_size(src);
    BlockUser *tu = sc ? block_user_new(tgt, desc, BLOCK_PERM_WRITE | (grow ? BLOCK_PERM_RESIZE : 0), target_shared,
                                        errp)
                       : NULL;
    if (!tu) {
        node_perm_release(sc);
        return NULL;
    }
    block_user_describe(tu, "block-backend", "", "root");
    Mirror *m = g_new0(Mirror, 1);
    m->source_claim = sc;
    m->target_user = tu;
    m->source = node_ref(src);
    m->target = node_ref(tgt);
    m->grow_target = grow;
    m->copy_mode = opts->copy_mode;
    m->on_source_error = opts->on_source_error;
    m->on_target_error = opts->on_target_error;
    m->sync = opts->sync;
    uint64_t gran = opts->granularity ? opts->granularity : MIRROR_DEFAULT_GRANULARITY;
    m->gran_bits = (unsigned)__builtin_ctzll(gran);
    m->ngranules = (node_size(src) + gran - 1) >> m->gran_bits;
    m->buf_size = opts->buf_size ? (uint64_t)opts->buf_size : MIRROR_DEFAULT_BUF_SIZE;
    m->chunk = MAX(gran, MIN(m->buf_size, MAX(m->buf_size / MIRROR_MAX_WORKERS, MIRROR_MIN_CHUNK)) & ~(gran - 1));
    m->dirty = hbitmap_new(m->ngranules);
    m->ranges = range_lock_new();
    g_mutex_init(&m->lock);
    g_cond_init(&m->cond);
    Job *job = job_create(opts->job_id, opts->active_commit ? &active_commit_driver : &mirror_driver, m, NULL,
                          opts->auto_finalize, opts->auto_dismiss, errp);
    if (!job) {
        hbitmap_free(m->dirty);
        range_lock_free(m->ranges);
        g_mutex_clear(&m->lock);
        g_cond_clear(&m->cond);
        release_claims(m);
        node_unref(m->source);
        node_unref(m->target);
        g_free(m);
        return NULL;
    }
    m->job = job;
    job_set_speed(job, opts->speed, NULL); /* validated above */
    g_autofree char *blocker = g_strdup_printf("block device is in use by block job: %s", type);
    node_block_ops(src, blocker, NULL); /* checked above */
    node_block_ops(tgt, blocker, NULL);
    if (opts->active_commit) {
        m->layers = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
        g_ptr_array_add(m->layers, node_ref(src));
        for (guint i = 0; opts->intermediate && i < opts->intermediate->len; i++) {
            BlockNode *n = opts->intermediate->pdata[i];
            node_block_ops(n, blocker, NULL); /* the caller checked them */
            g_ptr_array_add(m->layers, node_ref(n));
        }
    }

    m->workers = worker_group_new(MIRROR_MAX_WORKERS);
    m->target_is_zero = opts->sync != MIRROR_SYNC_MODE_NONE && copy_node_reads_zero(tgt);
    /* Copies of the dirty loop always write zeroes: the target changes. */
    m->copy = (CopyConfig){ .source = src, .target = tgt, .target_user = m->target_user };
    /* Every write issued from now on is tracked (or written through).  The
     * after-write hook goes first: a write reads the hook list once per
     * phase, and one that ran the before-write hook (which range-locks it
     * in write-blocking mode) must also run the after-write hook that
     * unlocks it; a write that runs only the after-write hook just marks
     * its region dirty. */
    m->after_hook = node_add_after_write_hook(src, NODE_HOOK_ORDER_JOB, mirror_after_write, m);
    m->before_hook = node_add_before_write_hook(src, NODE_HOOK_ORDER_JOB, mirror_before_write, m);
    return job;
}
