/* The qcow2 data path: the driver's read, write, write-zeroes, trim, flush
 * and block status callbacks.  They map guest ranges through
 * qcow2-cluster.c, allocate through qcow2-refcount.c and move the data
 * themselves (see "Threads" in qcow2.c for what runs under s->lock). */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>
#include <gio/gio.h>

/* ---- reading ---- */

/* Reads guest bytes that this layer does not hold: from the backing node
 * where it has them, zeroes elsewhere. */
static int read_backing(Qcow2 *s, void *buf, uint64_t len, uint64_t off)
{
    return qcow2_read_zero_padded(s->backing, buf, len, off);
}

/* Decompresses a compressed cluster (raw deflate) into out (cs bytes). */
static int read_compressed(Qcow2 *s, uint64_t e, uint8_t *out)
{
    uint64_t off, len;
    compressed_range(s, e, &off, &len);
    uint64_t fsize = node_size(s->file);
    if (off >= fsize)
        return -EIO;
    len = MIN(len, fsize - off);
    g_autofree uint8_t *in = g_malloc(len);
    int r = file_read(s, in, len, off);
    if (r < 0)
        return r;
    g_autoptr(GZlibDecompressor) z = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_RAW);
    gsize in_done = 0, out_done = 0;
    while (out_done < s->cs) {
        gsize rd = 0, wr = 0;
        g_autoptr(GError) err = NULL;
        GConverterResult res = g_converter_convert(G_CONVERTER(z), in + in_done, len - in_done,
                                                   out + out_done, s->cs - out_done,
                                                   G_CONVERTER_INPUT_AT_END, &rd, &wr, &err);
        in_done += rd;
        out_done += wr;
        if (res == G_CONVERTER_ERROR || res == G_CONVERTER_FINISHED || (rd == 0 && wr == 0))
            break;
    }
    if (out_done < s->cs)
        return -EIO; /* the compressed data does not make a whole cluster */
    return 0;
}

static int do_pread(Qcow2 *s, void *buf, uint32_t count, uint64_t offset)
{
    uint64_t entries[LOOKUP_BATCH];
    g_autofree uint8_t *cbuf = NULL;
    while (count > 0) {
        uint64_t c0;
        int64_t got = qcow2_lookup_entries(s, offset, count, entries, &c0);
        if (got < 0)
            return (int)got;
        uint64_t n = (uint64_t)got;
        int r = 0;
        uint64_t i = 0;
        while (i < n && count > 0) {
            uint64_t in = offset & (s->cs - 1);
            ClusterType t = classify(s, entries[i]);
            /* A run of clusters of the same kind (contiguous on the host for data). */
            uint64_t k = 1;
            while (i + k < n && classify(s, entries[i + k]) == t &&
                   (t != CT_NORMAL || (entries[i + k] & L2E_OFFSET_MASK) ==
                                          (entries[i] & L2E_OFFSET_MASK) + k * s->cs) &&
                   t != CT_COMPRESSED)
                k++;
            uint64_t len = MIN((uint64_t)count, k * s->cs - in);
            switch (t) {
            case CT_NORMAL:
                node_debug_event(s->file, BLKDBG_READ_AIO);
                r = file_read(s, buf, len, (entries[i] & L2E_OFFSET_MASK) + in);
                break;
            case CT_ZERO_PLAIN:
            case CT_ZERO_ALLOC:
                memset(buf, 0, len);
                break;
            case CT_UNALLOC:
                if (s->backing)
                    node_debug_event(s->file, BLKDBG_READ_BACKING_AIO);
                r = read_backing(s, buf, len, offset);
                break;
            case CT_COMPRESSED:
                if (!cbuf)
                    cbuf = g_malloc(s->cs);
                node_debug_event(s->file, BLKDBG_READ_COMPRESSED);
                r = read_compressed(s, entries[i], cbuf);
                if (r == 0)
                    memcpy(buf, cbuf + in, len);
                break;
            }
            if (r < 0)
                return r;
            buf = (char *)buf + len;
            offset += len;
            count -= (uint32_t)len;
            i += k;
        }
    }
    return 0;
}

int qcow2_read_fd(void *o, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    Qcow2 *s = o;
    uint64_t entries[LOOKUP_BATCH], c0;
    const uint64_t in = offset & (s->cs - 1), n = DIV_UP(in + count, s->cs);
    if (s->broken || n > LOOKUP_BATCH)
        return -ENOTSUP;
    g_rw_lock_reader_lock(&s->io_lock);
    int64_t got = qcow2_lookup_entries(s, offset, count, entries, &c0);
    g_rw_lock_reader_unlock(&s->io_lock);
    if (got < (int64_t)n)
        return -ENOTSUP;
    /* Only one run of data clusters, contiguous in the file.  The bytes are
     * sent after this returns: a write racing with this read may land
     * before or after, as with any read; clusters a discard or a snapshot
     * operation frees meanwhile are never handed out again (allocation only
     * appends), so they still hold what they held. */
    const uint64_t host = entries[0] & L2E_OFFSET_MASK;
    for (uint64_t i = 0; i < n; i++)
        if (classify(s, entries[i]) != CT_NORMAL || (entries[i] & L2E_OFFSET_MASK) != host + i * s->cs)
            return -ENOTSUP;
    node_debug_event(s->file, BLKDBG_READ_AIO);
    return node_read_fd(s->file, count, host + in, fd, fd_offset);
}

int qcow2_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    g_rw_lock_reader_lock(&s->io_lock);
    int r = do_pread(s, buf, count, offset);
    g_rw_lock_reader_unlock(&s->io_lock);
    return r;
}

/* ---- writing ---- */

/* The current content of guest cluster c (entry e) into out (cs bytes). */
static int old_content(Qcow2 *s, uint64_t c, uint64_t e, uint8_t *out)
{
    switch (classify(s, e)) {
    case CT_NORMAL:
        return file_read(s, out, s->cs, e & L2E_OFFSET_MASK);
    case CT_COMPRESSED:
        return read_compressed(s, e, out);
    case CT_UNALLOC:
        return read_backing(s, out, s->cs, c * s->cs);
    default:
        memset(out, 0, s->cs);
        return 0;
    }
}

/* Whether guest cluster c (entry e) holds data of its own or its backing
 * node's, which a partial write into a new cluster copies along. */
static bool holds_data(Qcow2 *s, uint64_t c, uint64_t e)
{
    ClusterType t = classify(s, e);
    return t == CT_NORMAL || t == CT_COMPRESSED ||
           (t == CT_UNALLOC && s->backing && c * s->cs < node_size(s->backing));
}

bool qcow2_wait_allocs(Qcow2 *s, uint64_t c0, uint64_t n)
{
    bool waited = false;
    for (guint i = 0; i < s->allocs->len;) {
        const Qcow2Alloc *a = &g_array_index(s->allocs, Qcow2Alloc, i);
        if (a->c0 < c0 + n && c0 < a->c0 + a->n) {
            g_cond_wait(&s->alloc_cond, &s->lock);
            waited = true;
            i = 0; /* the array changed */
        } else {
            i++;
        }
    }
    return waited;
}

static void alloc_begin(Qcow2 *s, uint64_t c0, uint64_t n)
{
    Qcow2Alloc a = { c0, n };
    g_array_append_val(s->allocs, a);
}

static void alloc_end(Qcow2 *s, uint64_t c0)
{
    for (guint i = 0; i < s->allocs->len; i++)
        if (g_array_index(s->allocs, Qcow2Alloc, i).c0 == c0) {
            g_array_remove_index_fast(s->allocs, i);
            g_cond_broadcast(&s->alloc_cond);
            return;
        }
    g_assert_not_reached();
}

/* Writes a prefix of [offset, offset+count): an in-place run, or one run
 * of clusters that need new allocations.  *done says how much.
 *
 * An allocating run takes its new clusters and reads what a partial write
 * keeps under s->lock, then writes the data without it -- so writes to
 * different new clusters (a sequential copy into a new image) overlap in
 * the kernel instead of queueing on the lock -- and sets the L2 entries
 * under it again.  Meanwhile the run is registered in s->allocs: another
 * request for those clusters would see them unallocated and allocate them
 * twice, so it waits (qcow2_wait_allocs) and looks again. */
static int write_step(Qcow2 *s, const void *buf, uint64_t count, uint64_t offset, uint64_t *done)
{
    const uint64_t cs = s->cs, in = offset & (cs - 1), c0 = offset >> s->cluster_bits;
    const uint64_t nmax = MIN(DIV_UP(in + count, cs), (uint64_t)MAX_RUN_BYTES / cs + 1);
    uint64_t e0;
    g_autofree uint8_t *bounce = NULL;
    g_mutex_lock(&s->lock);
retry:;
    int r = s->broken ? -EIO : qcow2_get_entry(s, c0, &e0);
    if (r < 0)
        goto out;
    ClusterType t0 = classify(s, e0);
    uint64_t k = 1, e;
    if (in_place(e0, t0)) {
        uint64_t host = e0 & L2E_OFFSET_MASK;
        while (k < nmax && (r = qcow2_get_entry(s, c0 + k, &e)) == 0 && in_place(e, classify(s, e)) &&
               (e & L2E_OFFSET_MASK) == host + k * cs)
            k++;
        if (r < 0)
            goto out;
        g_mutex_unlock(&s->lock);
        *done = MIN(count, k * cs - in);
        node_debug_event(s->file, BLKDBG_WRITE_AIO);
        return qcow2_file_write(s, buf, *done, host + in);
    }
    while (k < nmax && (r = qcow2_get_entry(s, c0 + k, &e)) == 0 && !in_place(e, classify(s, e)))
        k++;
    if (r < 0)
        goto out;
    if (qcow2_wait_allocs(s, c0, k))
        goto retry;
    uint64_t len = MIN(count, k * cs - in);
    uint64_t tail = (in + len) & (cs - 1); /* bytes used in the last cluster, 0 = whole */
    uint64_t host;
    if ((r = qcow2_alloc_clusters(s, k, &host)) < 0)
        goto out;
    const void *data = buf;
    bool keeps_old = false; /* the new clusters carry data the image already held */
    if (in || tail) {
        bounce = g_malloc(k * cs);
        if (in) {
            keeps_old = holds_data(s, c0, e0);
            if ((r = old_content(s, c0, e0, bounce)) < 0)
                goto out;
        }
        if (tail && (k > 1 || !in)) {
            uint64_t el;
            if ((r = qcow2_get_entry(s, c0 + k - 1, &el)) < 0 ||
                (r = old_content(s, c0 + k - 1, el, bounce + (k - 1) * cs)) < 0)
                goto out;
            keeps_old = keeps_old || holds_data(s, c0 + k - 1, el);
        }
        memcpy(bounce + in, buf, len);
        data = bounce;
    }
    /* Data first, then the L2 entries that make it visible.  A copy that
     * carries data written (and perhaps flushed) before -- a cluster a
     * snapshot shares, a compressed one, the backing file's -- is flushed
     * before the entry points at it, so a power loss cannot leave the
     * entry pointing at a cluster that never got that data. */
    g_assert(qcow2_clusters_allocated(s, host, k));
    alloc_begin(s, c0, k);
    g_mutex_unlock(&s->lock);
    node_debug_event(s->file, BLKDBG_WRITE_AIO);
    r = qcow2_file_write(s, data, k * cs, host);
    if (r == 0 && keeps_old)
        r = node_flush(s->file);
    g_mutex_lock(&s->lock);
    /* A failed write leaks the new clusters (qemu-img check: leaks only). */
    if (r == 0)
        r = qcow2_set_entries(s, c0, k, host, OFLAG_COPIED);
    alloc_end(s, c0);
    if (r < 0)
        goto out;
    *done = len;
out:
    g_mutex_unlock(&s->lock);
    return r;
}

/* Writes under io_lock (held for reading by the caller). */
static int do_pwrite(Qcow2 *s, const void *buf, uint32_t count, uint64_t offset)
{
    while (count > 0) {
        uint64_t done = 0;
        int r = write_step(s, buf, count, offset, &done);
        if (r < 0)
            return r;
        buf = (const char *)buf + done;
        offset += done;
        count -= (uint32_t)done;
    }
    return 0;
}

int qcow2_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    block_flush_gen_write(&s->flush_gen);
    g_rw_lock_reader_lock(&s->io_lock);
    int r = do_pwrite(s, buf, count, offset);
    g_rw_lock_reader_unlock(&s->io_lock);
    return r;
}

/* ---- zero, trim, flush ---- */

/* Zeroes to write from (read-only). */
static const uint8_t *zero_cluster(Qcow2 *s)
{
    static uint8_t *buf;
    static gsize size;
    /* One per process, big enough for the largest cluster (2 MiB). */
    if (g_once_init_enter(&size)) {
        buf = g_malloc0((gsize)1 << MAX_CLUSTER_BITS);
        g_once_init_leave(&size, (gsize)1 << MAX_CLUSTER_BITS);
    }
    return buf;
}

int qcow2_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    block_flush_gen_write(&s->flush_gen);
    const uint64_t cs = s->cs;
    const bool fast = flags & BLOCK_FLAG_FAST_ZERO, may_trim = flags & BLOCK_FLAG_MAY_TRIM;
    uint64_t end = offset + count;
    /* Whole clusters [a, b); the image's last partial cluster counts as whole. */
    uint64_t a = DIV_UP(offset, cs), b = end == s->size ? DIV_UP(end, cs) : end / cs;
    /* Partial pieces: [offset, a*cs) and [b*cs, end) when not empty. */
    uint64_t head_len = a > b ? count : MIN(a * cs, end) - offset;
    uint64_t tail_off = a > b ? end : MIN(MAX(b * cs, offset), end);
    uint64_t tail_len = end - tail_off;
    if (a > b)
        a = b; /* all inside one cluster */
    bool head_write = false, tail_write = false;
    int r = 0;

    g_rw_lock_reader_lock(&s->io_lock);
    g_mutex_lock(&s->lock);
    if (s->broken) {
        r = -EIO;
        goto out;
    }
    uint64_t e;
    if (head_len && (r = qcow2_get_entry(s, offset / cs, &e)) == 0)
        head_write = !qcow2_reads_zero_cheaply(s, e, offset);
    if (r == 0 && tail_len && (r = qcow2_get_entry(s, tail_off / cs, &e)) == 0)
        tail_write = !qcow2_reads_zero_cheaply(s, e, tail_off);
    if (r < 0)
        goto out;
    if (fast && (head_write || tail_write)) {
        r = -ENOTSUP;
        goto out;
    }
    if (s->version < 3) {
        /* No zero flag: unallocated reads as zeroes only without a backing. */
        for (uint64_t c = a; c < b && r == 0; c++)
            if ((r = qcow2_get_entry(s, c, &e)) == 0 && !qcow2_reads_zero_cheaply(s, e, c * cs) && s->backing)
                r = -ENOTSUP; /* the node layer writes zeroes */
    }
    if (r == 0 && a < b)
        qcow2_wait_allocs(s, a, b - a); /* entries looked at above are not in [a, b) */
    if (r == 0)
        r = qcow2_zero_clusters(s, a, b, may_trim);
out:
    g_mutex_unlock(&s->lock);
    if (r == 0 && head_write)
        r = do_pwrite(s, zero_cluster(s), (uint32_t)head_len, offset);
    if (r == 0 && tail_write)
        r = do_pwrite(s, zero_cluster(s), (uint32_t)tail_len, tail_off);
    g_rw_lock_reader_unlock(&s->io_lock);
    return r;
}

int qcow2_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    const uint64_t cs = s->cs, end = offset + count;
    uint64_t a = DIV_UP(offset, cs), b = end == s->size ? DIV_UP(end, cs) : end / cs;
    int r = 0;
    if (s->version < 3 && s->backing)
        return 0; /* a hint; deallocating would expose the backing data */
    block_flush_gen_write(&s->flush_gen);
    g_rw_lock_reader_lock(&s->io_lock);
    g_mutex_lock(&s->lock);
    if (a < b)
        qcow2_wait_allocs(s, a, b - a);
    if (s->broken)
        r = -EIO;
    else
        r = qcow2_discard_clusters(s, a, b);
    g_mutex_unlock(&s->lock);
    g_rw_lock_reader_unlock(&s->io_lock);
    return r;
}

int qcow2_flush(void *o, uint32_t flags)
{
    Qcow2 *s = o;
    bool needed = false;
    unsigned gen = 0;
    /* The debug events of QEMU's bdrv_co_flush, for a blkdebug file. */
    if (!s->read_only) {
        node_debug_event(s->file, BLKDBG_FLUSH_TO_OS);
        gen = block_flush_gen_begin(&s->flush_gen, &needed);
        if (needed)
            node_debug_event(s->file, BLKDBG_FLUSH_TO_DISK);
    }
    g_mutex_lock(&s->lock);
    int r = node_flush(s->file);
    if (r == 0 && s->pending_free->len)
        r = qcow2_apply_pending_frees(s);
    g_mutex_unlock(&s->lock);
    if (r == 0 && needed)
        block_flush_gen_done(&s->flush_gen, gen);
    return r;
}

/* ---- block status ---- */

static int add_backing_extents(Qcow2 *s, uint64_t off, uint64_t len, uint32_t flags, BlockExtents *out)
{
    uint64_t bsize = s->backing ? node_size(s->backing) : 0;
    uint64_t avail = off >= bsize ? 0 : MIN(len, bsize - off);
    int r = 0;
    uint64_t pos = off;
    while (r == 0 && pos < off + avail) {
        uint32_t n = (uint32_t)MIN(off + avail - pos, (uint64_t)1 << 30);
        BlockExtents *tmp = extents_new(pos, pos + n);
        if (!tmp)
            return -errno;
        r = node_block_status(s->backing, n, pos, flags & ~BLOCK_FLAG_REQ_ONE, tmp);
        uint64_t reached = pos;
        for (size_t i = 0; r == 0 && i < extents_count(tmp); i++) {
            BlockExtent x = extents_get(tmp, i);
            r = extents_add(out, x.offset, x.length, x.type);
            reached = x.offset + x.length;
        }
        extents_free(tmp);
        if (r == 0 && reached <= pos)
            r = -EIO;
        pos = reached;
    }
    if (r == 0 && avail < len)
        r = extents_add(out, off + avail, len - avail, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
    return r;
}

static int do_extents(Qcow2 *s, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out)
{
    uint64_t entries[LOOKUP_BATCH];
    uint64_t c0;
    int64_t got = qcow2_lookup_entries(s, offset, count, entries, &c0);
    if (got < 0)
        return (int)got;
    uint64_t n = (uint64_t)got;
    int r = 0;
    uint64_t i = 0, end = MIN(offset + count, s->size);
    while (i < n && r == 0) {
        ClusterType t = classify(s, entries[i]);
        uint64_t k = 1;
        while (i + k < n && classify(s, entries[i + k]) == t)
            k++;
        uint64_t from = MAX((c0 + i) * s->cs, offset), to = MIN((c0 + i + k) * s->cs, end);
        bool data = t == CT_NORMAL || t == CT_COMPRESSED;
        if (t == CT_UNALLOC && (flags & BLOCK_FLAG_ALLOCATION))
            /* Left to the backing node (zeroes when there is none). */
            r = extents_add(out, from, to - from, BLOCK_EXTENT_HOLE | (s->backing ? 0 : BLOCK_EXTENT_ZERO));
        else if (t == CT_UNALLOC)
            r = add_backing_extents(s, from, to - from, flags, out);
        else if (flags & BLOCK_FLAG_ALLOCATION)
            r = extents_add(out, from, to - from, data ? 0 : BLOCK_EXTENT_ZERO); /* held here */
        else
            r = extents_add(out, from, to - from, data ? 0 : BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
        if (flags & BLOCK_FLAG_REQ_ONE)
            break;
        i += k;
    }
    return r;
}

int qcow2_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out)
{
    Qcow2 *s = o;
    /* Like reads, so the backing node cannot change under it (stream). */
    g_rw_lock_reader_lock(&s->io_lock);
    int r = do_extents(s, count, offset, flags, out);
    g_rw_lock_reader_unlock(&s->io_lock);
    return r;
}
