/* driver=qcow2: QEMU's copy-on-write image format over a `file` child,
 * with an optional backing node (docs/interop/qcow2.txt in QEMU is the spec).
 *
 * Supported: versions 2 and 3, cluster sizes 512 B .. 2 MiB, refcount
 * widths 1..64 bits, zero clusters (v3), compressed clusters (deflate; read,
 * and re-allocated on write), backing chains (qcow2 or raw), write-zeroes
 * and trim, block status.  Refused: encryption, external data files,
 * extended L2 entries, zstd compression, unknown incompatible features, the
 * dirty bit; the corrupt bit and internal snapshots allow read-only opens.
 *
 * Allocation.  New clusters always come from the end of the file; freed
 * clusters are not reused (their refcount drops to 0 and the file range is
 * punched).  Refcounts are raised for a chunk of clusters at a time (the
 * reservation) and flushed before any L2 or L1 entry points into the chunk,
 * so a crash can leak clusters but never leaves a referenced cluster with a
 * refcount of 0.  A freed cluster's refcount is dropped only after the next
 * flush made the L2 update that unreferenced it durable.  Data is written
 * before the L2 entry that makes it visible; new clusters lie past the old
 * end of the file and read as zeroes until written.
 *
 * Threads.  One mutex guards the metadata (L1, L2 cache, refcounts,
 * reservation).  Reads look up the mapping under it and read data outside
 * it; overwrites of allocated clusters also write outside it (clusters are
 * never reused, so a stale mapping only ever names a cluster that held this
 * guest data).  Writes that allocate run under the mutex. */
#include "block/drivers/qcow2.h"
#include "block/driver.h"
#include "block/node.h"
#include "block/child-ref.h"
#include "block/options.h"
#include "block/debug-event.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>

#define QCOW2_MAGIC 0x514649fbu
#define MIN_CLUSTER_BITS 9
#define MAX_CLUSTER_BITS 21

#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define RT_OFFSET_MASK 0xfffffffffffffe00ULL
#define OFLAG_COPIED (1ULL << 63)
#define OFLAG_COMPRESSED (1ULL << 62)
#define OFLAG_ZERO 1ULL

#define INCOMPAT_DIRTY (1ULL << 0)
#define INCOMPAT_CORRUPT (1ULL << 1)
#define INCOMPAT_DATA_FILE (1ULL << 2)
#define INCOMPAT_COMPRESSION (1ULL << 3)
#define INCOMPAT_EXTL2 (1ULL << 4)

#define EXT_END 0
#define EXT_BACKING_FORMAT 0xe2792acau
#define EXT_FEATURE_TABLE 0x6803f857u
#define EXT_BITMAPS 0x23852875u
#define EXT_CRYPTO 0x0537be77u
#define EXT_DATA_FILE 0x44415441u

#define HDR_V2_LENGTH 72
#define HDR_V3_LENGTH 104
#define MAX_L1_BYTES (32u << 20)       /* QEMU's limits */
#define MAX_REFTABLE_BYTES (8u << 20)
#define MAX_BACKING_NAME 1023
#define MAX_RUN_BYTES (32u << 20)      /* clusters handled per step */
#define LOOKUP_BATCH 512               /* L2 entries copied per lock hold */

typedef enum ClusterType { CT_UNALLOC, CT_ZERO_PLAIN, CT_ZERO_ALLOC, CT_NORMAL, CT_COMPRESSED } ClusterType;

typedef struct L2Table {
    uint64_t offset;   /* key */
    uint64_t *e;       /* host byte order */
    uint64_t used;     /* clock of the last use */
} L2Table;

typedef struct FreeRange {
    uint64_t offset, length;
} FreeRange;

typedef struct Qcow2 {
    BlockNode *file, *backing;
    GMutex lock;
    bool read_only;
    BlockFlushGen flush_gen; /* for flush_to_disk events (a blkdebug file counts them) */
    bool broken;                 /* metadata I/O failed midway: no more writes */
    bool file_can_trim;

    uint32_t version, cluster_bits, cs, header_length, refcount_order;
    uint64_t size;
    uint64_t incompat, compat, autoclear;
    uint32_t l2_entries;         /* per L2 table */
    uint64_t rb_entries;         /* per refcount block */
    uint32_t csize_shift;
    uint64_t csize_mask, coffset_mask;

    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t *l1;                /* host byte order */

    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t rt_entries;
    uint64_t *rt;                /* host byte order */
    GHashTable *rblocks;         /* block index (gint64 *) -> cluster bytes, on-disk format */

    GHashTable *l2;              /* offset -> L2Table */
    guint l2_max;
    uint64_t l2_clock;

    uint64_t end;                /* first cluster index past everything allocated */
    uint64_t res_start, res_end; /* reserved clusters: refcount 1, unused */
    uint64_t reserve_chunk;
    GArray *pending_free;        /* FreeRange, dropped after the next flush */

    char *backing_name, *backing_full, *backing_fmt;
} Qcow2;

/* ---- byte order ---- */

static uint64_t be64_at(const void *p) { uint64_t v; memcpy(&v, p, 8); return GUINT64_FROM_BE(v); }
static uint32_t be32_at(const void *p) { uint32_t v; memcpy(&v, p, 4); return GUINT32_FROM_BE(v); }
static uint16_t be16_at(const void *p) { uint16_t v; memcpy(&v, p, 2); return GUINT16_FROM_BE(v); }
static void put_be64(void *p, uint64_t v) { v = GUINT64_TO_BE(v); memcpy(p, &v, 8); }
static void put_be32(void *p, uint32_t v) { v = GUINT32_TO_BE(v); memcpy(p, &v, 4); }
static void put_be16(void *p, uint16_t v) { v = GUINT16_TO_BE(v); memcpy(p, &v, 2); }

#define DIV_UP(a, b) (((a) + (b) - 1) / (b))

/* ---- file I/O ---- */

/* Reads from `node` (may be NULL: nothing); bytes past its end read as zeroes. */
static int read_zero_padded(BlockNode *node, void *buf, uint64_t len, uint64_t off)
{
    uint64_t size = node ? node_size(node) : 0;
    uint64_t avail = off >= size ? 0 : MIN(len, size - off);
    if (avail < len)
        memset((char *)buf + avail, 0, len - avail);
    while (avail > 0) {
        uint32_t n = (uint32_t)MIN(avail, (uint64_t)1 << 30);
        int r = node_pread(node, buf, n, off);
        if (r < 0)
            return r;
        buf = (char *)buf + n;
        off += n;
        avail -= n;
    }
    return 0;
}

/* Reads from the file; bytes past its end read as zeroes. */
static int file_read(Qcow2 *s, void *buf, uint64_t len, uint64_t off)
{
    return read_zero_padded(s->file, buf, len, off);
}

/* Writes to the file, growing it (to a cluster boundary) when needed. */
static int file_write(Qcow2 *s, const void *buf, uint64_t len, uint64_t off)
{
    /* Metadata can name any offset; one no file can have is corruption. */
    if (off > INT64_MAX || len > INT64_MAX - off)
        return -EIO;
    if (off + len > node_size(s->file)) {
        int r = node_grow(s->file, DIV_UP(off + len, s->cs) * s->cs);
        if (r < 0)
            return r == -ENOTSUP ? -ENOSPC : r; /* a fixed-size child (NBD, device) is full */
    }
    while (len > 0) {
        uint32_t n = (uint32_t)MIN(len, (uint64_t)1 << 30);
        int r = node_pwrite(s->file, buf, n, off, 0);
        if (r < 0)
            return r;
        buf = (const char *)buf + n;
        off += n;
        len -= n;
    }
    return 0;
}

static int write_be64(Qcow2 *s, uint64_t v, uint64_t off)
{
    uint8_t b[8];
    put_be64(b, v);
    return file_write(s, b, 8, off);
}

/* ---- refcounts ---- */

static uint64_t rc_get(const Qcow2 *s, const uint8_t *b, uint64_t i)
{
    switch (s->refcount_order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << s->refcount_order, per = 8 / bits;
        return (b[i / per] >> ((i % per) * bits)) & ((1u << bits) - 1);
    }
    case 3: return b[i];
    case 4: return be16_at(b + 2 * i);
    case 5: return be32_at(b + 4 * i);
    default: return be64_at(b + 8 * i);
    }
}

static void rc_set(const Qcow2 *s, uint8_t *b, uint64_t i, uint64_t v)
{
    switch (s->refcount_order) {
    case 0: case 1: case 2: {
        unsigned bits = 1u << s->refcount_order, per = 8 / bits, shift = (unsigned)(i % per) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        b[i / per] = (uint8_t)((b[i / per] & ~mask) | ((v << shift) & mask));
        break;
    }
    case 3: b[i] = (uint8_t)v; break;
    case 4: put_be16(b + 2 * i, (uint16_t)v); break;
    case 5: put_be32(b + 4 * i, (uint32_t)v); break;
    default: put_be64(b + 8 * i, v); break;
    }
}

static uint64_t rc_max(const Qcow2 *s)
{
    return s->refcount_order == 6 ? UINT64_MAX : (UINT64_C(1) << (1u << s->refcount_order)) - 1;
}

/* Byte range of entries [i, i+n) within a block. */
static void rc_bytes(const Qcow2 *s, uint64_t i, uint64_t n, uint64_t *first, uint64_t *len)
{
    uint64_t bits = UINT64_C(1) << s->refcount_order;
    *first = i * bits / 8;
    *len = DIV_UP((i + n) * bits, 8) - *first;
}

/* The cached refcount block `bi`, loading it; NULL with *r = 0 if none is allocated. */
static uint8_t *rblock(Qcow2 *s, uint64_t bi, int *r)
{
    *r = 0;
    if (bi >= s->rt_entries || !(s->rt[bi] & RT_OFFSET_MASK))
        return NULL;
    gint64 key = (gint64)bi;
    uint8_t *b = g_hash_table_lookup(s->rblocks, &key);
    if (b)
        return b;
    b = g_malloc(s->cs);
    if ((*r = file_read(s, b, s->cs, s->rt[bi] & RT_OFFSET_MASK)) < 0) {
        g_free(b);
        return NULL;
    }
    g_hash_table_insert(s->rblocks, g_memdup2(&key, sizeof key), b);
    return b;
}

static int refcount_of(Qcow2 *s, uint64_t cluster, uint64_t *out)
{
    int r;
    uint8_t *b = rblock(s, cluster / s->rb_entries, &r);
    *out = b ? rc_get(s, b, cluster % s->rb_entries) : 0;
    return r;
}

/* Adds delta to the refcounts of clusters [c0, c0+n).  Blocks found in
 * `fresh` (index -> buffer, not yet on disk) are changed in memory only;
 * others are written through. */
static int rc_modify(Qcow2 *s, uint64_t c0, uint64_t n, int delta, GHashTable *fresh)
{
    while (n > 0) {
        uint64_t bi = c0 / s->rb_entries, i = c0 % s->rb_entries;
        uint64_t k = MIN(n, s->rb_entries - i);
        gint64 key = (gint64)bi;
        uint8_t *b = fresh ? g_hash_table_lookup(fresh, &key) : NULL;
        bool in_memory = b != NULL;
        int r = 0;
        if (!b && !(b = rblock(s, bi, &r)))
            return r < 0 ? r : -EIO; /* a refcount change for a cluster without block */
        for (uint64_t j = i; j < i + k; j++) {
            uint64_t v = rc_get(s, b, j);
            if ((delta < 0 && v == 0) || (delta > 0 && v == rc_max(s)))
                return -EIO;
            rc_set(s, b, j, delta < 0 ? v - 1 : v + 1);
        }
        if (!in_memory) {
            uint64_t first, len;
            rc_bytes(s, i, k, &first, &len);
            if ((r = file_write(s, b + first, len, (s->rt[bi] & RT_OFFSET_MASK) + first)) < 0)
                return r;
        }
        c0 += k;
        n -= k;
    }
    return 0;
}

/* Gives `n` clusters at the end of the file a refcount of 1 (they become the
 * reservation), adding refcount blocks and growing the refcount table as
 * needed, and flushes.  Layout: [reserved n][new blocks][new table]. */
/* The last cluster in [from, to) with a non-zero refcount, or UINT64_MAX. */
static int last_in_use(Qcow2 *s, uint64_t from, uint64_t to, uint64_t *last)
{
    *last = UINT64_MAX;
    for (uint64_t c = from; c < to;) {
        uint64_t bi = c / s->rb_entries, stop = MIN(to, (bi + 1) * s->rb_entries);
        int r;
        uint8_t *b = rblock(s, bi, &r);
        if (r < 0)
            return r;
        for (; b && c < stop; c++)
            if (rc_get(s, b, c % s->rb_entries))
                *last = c;
        c = stop;
    }
    return 0;
}

static int reserve(Qcow2 *s, uint64_t n)
{
    uint64_t start = s->end;
    const uint64_t rbe = s->rb_entries;
    uint64_t B = 0, T = 0, end = 0, lo = 0, hi = 0, missing = 0;
    for (int iter = 0;; iter++) {
        if (iter > 64)
            return -EIO;
        /* Clusters past the file's end should be free; skip any that are not. */
        uint64_t used;
        int r = last_in_use(s, start, start + n + B + T, &used);
        if (r < 0)
            return r;
        if (used != UINT64_MAX) {
            start = used + 1;
            B = T = 0;
            continue;
        }
        end = start + n + B + T;
        lo = start / rbe;
        hi = (end - 1) / rbe;
        missing = 0;
        for (uint64_t i = lo; i <= hi; i++)
            if (i >= s->rt_entries || !(s->rt[i] & RT_OFFSET_MASK))
                missing++;
        uint64_t newT = 0;
        if (hi >= s->rt_entries)
            newT = DIV_UP(MAX(hi + 1, s->rt_entries * 2) * 8, s->cs);
        if (missing <= B && newT <= T)
            break;
        B = MAX(B, missing);
        T = MAX(T, newT);
    }
    if (T * s->cs > MAX_REFTABLE_BYTES)
        return -EFBIG;
    s->end = start;
    int r = node_grow(s->file, end * s->cs);
    if (r < 0)
        return r == -ENOTSUP ? -ENOSPC : r; /* a fixed-size child is full */

    uint64_t new_entries = T ? T * s->cs / 8 : s->rt_entries;
    uint64_t *rt = g_new0(uint64_t, new_entries);
    memcpy(rt, s->rt, s->rt_entries * 8);
    g_autoptr(GHashTable) fresh = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    uint64_t j = 0;
    for (uint64_t i = lo; i <= hi; i++) {
        if (i < s->rt_entries && (s->rt[i] & RT_OFFSET_MASK))
            continue;
        rt[i] = (start + n + j++) * s->cs;
        gint64 key = (gint64)i;
        g_hash_table_insert(fresh, g_memdup2(&key, sizeof key), g_malloc0(s->cs));
    }
    /* Refcounts of the reservation, the new blocks and the new table. */
    if ((r = rc_modify(s, start, n, 1, fresh)) < 0 ||
        (r = rc_modify(s, start + n, missing, 1, fresh)) < 0 ||
        (T && (r = rc_modify(s, start + n + B, T, 1, fresh)) < 0))
        goto fail;
    /* (Existing blocks were found through s->rt, the old table: they did not move.) */
    GHashTableIter it;
    gpointer key, value;
    g_hash_table_iter_init(&it, fresh);
    while (g_hash_table_iter_next(&it, &key, &value))
        if ((r = file_write(s, value, s->cs, rt[*(gint64 *)key])) < 0)
            goto fail;
    if (T) {
        g_autofree uint8_t *table = g_malloc0(T * s->cs);
        for (uint64_t i = 0; i < new_entries; i++)
            put_be64(table + 8 * i, rt[i]);
        uint64_t toff = (start + n + B) * s->cs;
        if ((r = file_write(s, table, T * s->cs, toff)) < 0 || (r = node_flush(s->file)) < 0)
            goto fail;
        uint8_t hdr[12];
        put_be64(hdr, toff);
        put_be32(hdr + 8, (uint32_t)T);
        if ((r = file_write(s, hdr, sizeof hdr, 48)) < 0)
            goto fail;
        FreeRange old = { s->rt_offset, (uint64_t)s->rt_clusters * s->cs };
        g_array_append_val(s->pending_free, old);
        s->rt_offset = toff;
        s->rt_clusters = (uint32_t)T;
    } else {
        for (uint64_t i = lo; i <= hi; i++)
            if (rt[i] != s->rt[i] && (r = write_be64(s, rt[i], s->rt_offset + 8 * i)) < 0)
                goto fail;
    }
    g_free(s->rt);
    s->rt = rt;
    s->rt_entries = new_entries;
    g_hash_table_iter_init(&it, fresh);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        g_hash_table_iter_steal(&it);
        g_hash_table_insert(s->rblocks, key, value);
    }
    s->end = end;
    s->res_start = start;
    s->res_end = start + n;
    return node_flush(s->file);

fail:
    g_free(rt);
    s->broken = true;
    return r;
}

/* Returns the unused rest of the reservation (refcounts back to 0). */
static int release_reservation(Qcow2 *s)
{
    uint64_t n = s->res_end - s->res_start;
    if (n == 0)
        return 0;
    int r = rc_modify(s, s->res_start, n, -1, NULL);
    if (r < 0) {
        s->broken = true;
        return r;
    }
    if (s->res_end == s->end)
        s->end = s->res_start; /* never handed out: the next reservation reuses them */
    s->res_start = s->res_end = 0;
    return 0;
}

/* n contiguous new clusters with refcount 1; their offset in *off. */
static int alloc_clusters(Qcow2 *s, uint64_t n, uint64_t *off)
{
    if (s->res_end - s->res_start < n) {
        int r = release_reservation(s);
        if (r == 0)
            r = reserve(s, MAX(n, s->reserve_chunk));
        if (r < 0)
            return r;
    }
    *off = s->res_start * s->cs;
    s->res_start += n;
    return 0;
}

/* Drops a reference to the clusters overlapping [off, off+len) once the
 * next flush has made their unlinking durable. */
static void free_later(Qcow2 *s, uint64_t off, uint64_t len)
{
    FreeRange f = { off, len };
    g_array_append_val(s->pending_free, f);
}

static int apply_pending_frees(Qcow2 *s)
{
    int r = 0;
    for (guint i = 0; i < s->pending_free->len && r == 0; i++) {
        FreeRange *f = &g_array_index(s->pending_free, FreeRange, i);
        uint64_t c0 = f->offset / s->cs, c1 = DIV_UP(f->offset + f->length, s->cs);
        r = rc_modify(s, c0, c1 - c0, -1, NULL);
        for (uint64_t c = c0; r == 0 && c < c1 && s->file_can_trim; c++) {
            uint64_t v;
            if ((r = refcount_of(s, c, &v)) == 0 && v == 0 && (c + 1) * s->cs <= node_size(s->file))
                node_trim(s->file, s->cs, c * s->cs, 0); /* a hint: errors do not matter */
        }
    }
    g_array_set_size(s->pending_free, 0);
    if (r < 0)
        s->broken = true;
    return r;
}

/* ---- L1 / L2 ---- */

static void l2_evict(Qcow2 *s)
{
    while (g_hash_table_size(s->l2) > s->l2_max) {
        GHashTableIter it;
        gpointer k, v;
        L2Table *oldest = NULL;
        g_hash_table_iter_init(&it, s->l2);
        while (g_hash_table_iter_next(&it, &k, &v))
            if (!oldest || ((L2Table *)v)->used < oldest->used)
                oldest = v;
        g_hash_table_remove(s->l2, &oldest->offset);
    }
}

static void l2_table_free(gpointer p)
{
    L2Table *t = p;
    g_free(t->e);
    g_free(t);
}

/* The L2 table at `off` (cached). */
static int l2_load(Qcow2 *s, uint64_t off, L2Table **out)
{
    L2Table *t = g_hash_table_lookup(s->l2, &off);
    if (!t) {
        g_autofree uint8_t *raw = g_malloc(s->cs);
        node_debug_event(s->file, BLKDBG_L2_LOAD);
        int r = file_read(s, raw, s->cs, off);
        if (r < 0)
            return r;
        t = g_new0(L2Table, 1);
        t->offset = off;
        t->e = g_new(uint64_t, s->l2_entries);
        for (uint32_t i = 0; i < s->l2_entries; i++)
            t->e[i] = be64_at(raw + 8 * i);
        g_hash_table_insert(s->l2, &t->offset, t);
        t->used = ++s->l2_clock;
        l2_evict(s);
        t = g_hash_table_lookup(s->l2, &off);
        if (!t) /* cannot happen: the newest is never the oldest */
            return -EIO;
    }
    t->used = ++s->l2_clock;
    *out = t;
    return 0;
}

/* The L2 entry of guest cluster c (0 when its table is unallocated). */
static int get_entry(Qcow2 *s, uint64_t c, uint64_t *e)
{
    uint64_t l1i = c / s->l2_entries;
    *e = 0;
    if (l1i >= s->l1_size)
        return 0;
    uint64_t l2off = s->l1[l1i] & L1E_OFFSET_MASK;
    if (!l2off)
        return 0;
    L2Table *t;
    int r = l2_load(s, l2off, &t);
    if (r == 0)
        *e = t->e[c % s->l2_entries];
    return r;
}

static ClusterType classify(const Qcow2 *s, uint64_t e)
{
    if (e & OFLAG_COMPRESSED)
        return CT_COMPRESSED;
    if (s->version >= 3 && (e & OFLAG_ZERO))
        return (e & L2E_OFFSET_MASK) ? CT_ZERO_ALLOC : CT_ZERO_PLAIN;
    return (e & L2E_OFFSET_MASK) ? CT_NORMAL : CT_UNALLOC;
}

static void compressed_range(const Qcow2 *s, uint64_t e, uint64_t *off, uint64_t *len)
{
    *off = e & s->coffset_mask;
    uint64_t sectors = ((e >> s->csize_shift) & s->csize_mask) + 1;
    *len = sectors * 512 - (*off & 511);
}

/* The table for L1 index l1i, allocating an empty one if needed. */
static int l2_for_write(Qcow2 *s, uint64_t l1i, L2Table **out)
{
    if (l1i >= s->l1_size)
        return -EIO;
    uint64_t l1e = s->l1[l1i];
    if (l1e & L1E_OFFSET_MASK) {
        if (!(l1e & OFLAG_COPIED)) {
            /* Only snapshots share tables (refused at open); a missing flag
             * on a table referenced once is just repaired. */
            uint64_t rc;
            int r = refcount_of(s, (l1e & L1E_OFFSET_MASK) >> s->cluster_bits, &rc);
            if (r < 0)
                return r;
            if (rc != 1)
                return -EIO;
            l1e |= OFLAG_COPIED;
            if ((r = write_be64(s, l1e, s->l1_offset + 8 * l1i)) < 0)
                return r;
            s->l1[l1i] = l1e;
        }
        return l2_load(s, l1e & L1E_OFFSET_MASK, out);
    }
    uint64_t off;
    int r = alloc_clusters(s, 1, &off);
    if (r < 0)
        return r;
    g_autofree void *zero = g_malloc0(s->cs);
    if ((r = file_write(s, zero, s->cs, off)) < 0 ||
        (r = write_be64(s, off | OFLAG_COPIED, s->l1_offset + 8 * l1i)) < 0) {
        s->broken = true;
        return r;
    }
    s->l1[l1i] = off | OFLAG_COPIED;
    L2Table *t = g_new0(L2Table, 1);
    t->offset = off;
    t->e = g_new0(uint64_t, s->l2_entries);
    t->used = ++s->l2_clock;
    g_hash_table_insert(s->l2, &t->offset, t);
    l2_evict(s);
    return l2_load(s, off, out);
}

/* Sets the L2 entries of guest clusters [c0, c0+n): entry i is
 * (host ? host + i*cs : 0) | flags.  Old allocations are freed later. */
static int set_entries(Qcow2 *s, uint64_t c0, uint64_t n, uint64_t host, uint64_t flags)
{
    while (n > 0) {
        uint64_t l1i = c0 / s->l2_entries, i = c0 % s->l2_entries;
        uint64_t k = MIN(n, s->l2_entries - i);
        L2Table *t;
        int r = l2_for_write(s, l1i, &t);
        if (r < 0)
            return r;
        g_autofree uint8_t *raw = g_malloc(k * 8);
        for (uint64_t j = 0; j < k; j++) {
            uint64_t old = t->e[i + j];
            uint64_t e = (host ? host + j * s->cs : 0) | flags;
            switch (classify(s, old)) {
            case CT_COMPRESSED: {
                uint64_t off, len;
                compressed_range(s, old, &off, &len);
                free_later(s, off, len);
                break;
            }
            case CT_NORMAL:
            case CT_ZERO_ALLOC:
                if ((old & L2E_OFFSET_MASK) != (e & L2E_OFFSET_MASK))
                    free_later(s, old & L2E_OFFSET_MASK, s->cs);
                break;
            default:
                break;
            }
            put_be64(raw + 8 * j, e);
        }
        if ((r = file_write(s, raw, k * 8, t->offset + 8 * i)) < 0) {
            s->broken = true;
            return r;
        }
        for (uint64_t j = 0; j < k; j++)
            t->e[i + j] = be64_at(raw + 8 * j);
        if (host)
            host += k * s->cs;
        c0 += k;
        n -= k;
    }
    return 0;
}

/* ---- reading ---- */

/* Reads guest bytes that this layer does not hold: from the backing node
 * where it has them, zeroes elsewhere. */
static int read_backing(Qcow2 *s, void *buf, uint64_t len, uint64_t off)
{
    return read_zero_padded(s->backing, buf, len, off);
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

/* The L2 entries of the clusters from the one holding `offset` on, as
 * many as [offset, offset+count) spans (at most LOOKUP_BATCH): their number,
 * or -errno.  *first is the first cluster's index. */
static int64_t lookup_entries(Qcow2 *s, uint64_t offset, uint32_t count, uint64_t *entries, uint64_t *first)
{
    uint64_t c0 = offset >> s->cluster_bits;
    uint64_t last = (offset + count - 1) >> s->cluster_bits;
    uint64_t n = MIN(last - c0 + 1, (uint64_t)LOOKUP_BATCH);
    int r = 0;
    g_mutex_lock(&s->lock);
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = get_entry(s, c0 + i, &entries[i]);
    g_mutex_unlock(&s->lock);
    *first = c0;
    return r < 0 ? r : (int64_t)n;
}

static int qcow2_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    uint64_t entries[LOOKUP_BATCH];
    g_autofree uint8_t *cbuf = NULL;
    while (count > 0) {
        uint64_t c0;
        int64_t got = lookup_entries(s, offset, count, entries, &c0);
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

static bool in_place(uint64_t e, ClusterType t)
{
    return t == CT_NORMAL && (e & OFLAG_COPIED);
}

/* Writes a prefix of [offset, offset+count): an in-place run, or one run
 * of clusters that need new allocations.  *done says how much. */
static int write_step(Qcow2 *s, const void *buf, uint64_t count, uint64_t offset, uint64_t *done)
{
    const uint64_t cs = s->cs, in = offset & (cs - 1), c0 = offset >> s->cluster_bits;
    const uint64_t nmax = MIN(DIV_UP(in + count, cs), (uint64_t)MAX_RUN_BYTES / cs + 1);
    uint64_t e0;
    g_autofree uint8_t *bounce = NULL;
    g_mutex_lock(&s->lock);
    int r = s->broken ? -EIO : get_entry(s, c0, &e0);
    if (r < 0)
        goto out;
    ClusterType t0 = classify(s, e0);
    uint64_t k = 1, e;
    if (in_place(e0, t0)) {
        uint64_t host = e0 & L2E_OFFSET_MASK;
        while (k < nmax && (r = get_entry(s, c0 + k, &e)) == 0 && in_place(e, classify(s, e)) &&
               (e & L2E_OFFSET_MASK) == host + k * cs)
            k++;
        if (r < 0)
            goto out;
        g_mutex_unlock(&s->lock);
        *done = MIN(count, k * cs - in);
        node_debug_event(s->file, BLKDBG_WRITE_AIO);
        return file_write(s, buf, *done, host + in);
    }
    while (k < nmax && (r = get_entry(s, c0 + k, &e)) == 0 && !in_place(e, classify(s, e)))
        k++;
    if (r < 0)
        goto out;
    uint64_t len = MIN(count, k * cs - in);
    uint64_t tail = (in + len) & (cs - 1); /* bytes used in the last cluster, 0 = whole */
    uint64_t host;
    if ((r = alloc_clusters(s, k, &host)) < 0)
        goto out;
    const void *data = buf;
    if (in || tail) {
        bounce = g_malloc(k * cs);
        if (in && (r = old_content(s, c0, e0, bounce)) < 0)
            goto out;
        if (tail && (k > 1 || !in)) {
            uint64_t el;
            if ((r = get_entry(s, c0 + k - 1, &el)) < 0 ||
                (r = old_content(s, c0 + k - 1, el, bounce + (k - 1) * cs)) < 0)
                goto out;
        }
        memcpy(bounce + in, buf, len);
        data = bounce;
    }
    /* Data first, then the L2 entries that make it visible. */
    node_debug_event(s->file, BLKDBG_WRITE_AIO);
    if ((r = file_write(s, data, k * cs, host)) < 0 ||
        (r = set_entries(s, c0, k, host, OFLAG_COPIED)) < 0)
        goto out;
    *done = len;
out:
    g_mutex_unlock(&s->lock);
    return r;
}

static int qcow2_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    block_flush_gen_write(&s->flush_gen);
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

/* ---- zero, trim ---- */

/* True if the guest range [off, off+len) inside cluster c (entry e) reads as zeroes. */
static bool reads_zero_cheaply(Qcow2 *s, uint64_t e, uint64_t off)
{
    ClusterType t = classify(s, e);
    if (t == CT_ZERO_PLAIN || t == CT_ZERO_ALLOC)
        return true;
    return t == CT_UNALLOC && (!s->backing || off >= node_size(s->backing));
}

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

typedef enum ZeroAction { ZA_SKIP, ZA_KEEP, ZA_PLAIN } ZeroAction;

/* What write-zeroes does to whole cluster c: nothing, keep its allocation
 * with the zero flag, or a plain entry (zero flag on v3, unallocated on v2
 * without backing, which the caller checked).  Its entry in *e. */
static ZeroAction zero_action(Qcow2 *s, uint64_t c, bool may_trim, uint64_t *e, int *r)
{
    if ((*r = get_entry(s, c, e)) < 0)
        return ZA_SKIP;
    ClusterType t = classify(s, *e);
    if (t == CT_ZERO_PLAIN || (t == CT_ZERO_ALLOC && !may_trim) ||
        (t == CT_UNALLOC && reads_zero_cheaply(s, *e, c * s->cs)))
        return ZA_SKIP;
    if (s->version >= 3 && !may_trim && in_place(*e, t))
        return ZA_KEEP;
    return ZA_PLAIN;
}

static int qcow2_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags)
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

    g_mutex_lock(&s->lock);
    if (s->broken) {
        r = -EIO;
        goto out;
    }
    uint64_t e;
    if (head_len && (r = get_entry(s, offset / cs, &e)) == 0)
        head_write = !reads_zero_cheaply(s, e, offset);
    if (r == 0 && tail_len && (r = get_entry(s, tail_off / cs, &e)) == 0)
        tail_write = !reads_zero_cheaply(s, e, tail_off);
    if (r < 0)
        goto out;
    if (fast && (head_write || tail_write)) {
        r = -ENOTSUP;
        goto out;
    }
    if (s->version < 3) {
        /* No zero flag: unallocated reads as zeroes only without a backing. */
        for (uint64_t c = a; c < b && r == 0; c++)
            if ((r = get_entry(s, c, &e)) == 0 && !reads_zero_cheaply(s, e, c * cs) && s->backing)
                r = -ENOTSUP; /* the node layer writes zeroes */
    }
    for (uint64_t c = a; c < b && r == 0;) {
        uint64_t e1, k = 1;
        ZeroAction act = zero_action(s, c, may_trim, &e, &r);
        /* Runs: plain entries, or kept clusters contiguous on the host. */
        while (r == 0 && act != ZA_SKIP && c + k < b && zero_action(s, c + k, may_trim, &e1, &r) == act &&
               (act == ZA_PLAIN || (e1 & L2E_OFFSET_MASK) == (e & L2E_OFFSET_MASK) + k * cs))
            k++;
        if (r < 0)
            break;
        if (act == ZA_KEEP)
            r = set_entries(s, c, k, e & L2E_OFFSET_MASK, OFLAG_COPIED | OFLAG_ZERO);
        else if (act == ZA_PLAIN)
            r = set_entries(s, c, k, 0, s->version >= 3 ? OFLAG_ZERO : 0);
        c += k;
    }
out:
    g_mutex_unlock(&s->lock);
    if (r == 0 && head_write)
        r = qcow2_pwrite(s, zero_cluster(s), (uint32_t)head_len, offset, 0);
    if (r == 0 && tail_write)
        r = qcow2_pwrite(s, zero_cluster(s), (uint32_t)tail_len, tail_off, 0);
    return r;
}

static int qcow2_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    Qcow2 *s = o;
    const uint64_t cs = s->cs, end = offset + count;
    uint64_t a = DIV_UP(offset, cs), b = end == s->size ? DIV_UP(end, cs) : end / cs;
    int r = 0;
    if (s->version < 3 && s->backing)
        return 0; /* a hint; deallocating would expose the backing data */
    block_flush_gen_write(&s->flush_gen);
    g_mutex_lock(&s->lock);
    if (s->broken)
        r = -EIO;
    for (uint64_t c = a; c < b && r == 0;) {
        uint64_t e, k = 0;
        ClusterType t;
        /* A run of clusters holding something: they become unallocated, or
         * with a backing file zero (as QEMU does: the backing must not show
         * through, so unallocated clusters get the zero flag too). */
        while (c + k < b && (r = get_entry(s, c + k, &e)) == 0 &&
               (t = classify(s, e)) != CT_ZERO_PLAIN && (t != CT_UNALLOC || s->backing))
            k++;
        if (r == 0 && k)
            r = set_entries(s, c, k, 0, s->backing ? OFLAG_ZERO : 0);
        c += k ? k : 1;
    }
    g_mutex_unlock(&s->lock);
    return r;
}

static int qcow2_flush(void *o, uint32_t flags)
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
        r = apply_pending_frees(s);
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

static int qcow2_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out)
{
    Qcow2 *s = o;
    uint64_t entries[LOOKUP_BATCH];
    uint64_t c0;
    int64_t got = lookup_entries(s, offset, count, entries, &c0);
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

/* ---- open ---- */

static void qcow2_free(Qcow2 *s)
{
    if (!s)
        return;
    g_free(s->l1);
    g_free(s->rt);
    if (s->rblocks)
        g_hash_table_destroy(s->rblocks);
    if (s->l2)
        g_hash_table_destroy(s->l2);
    if (s->pending_free)
        g_array_free(s->pending_free, TRUE);
    g_free(s->backing_name);
    g_free(s->backing_full);
    g_free(s->backing_fmt);
    g_mutex_clear(&s->lock);
    g_free(s);
}


/* Names of the unknown incompatible feature bits, from the image's feature table. */
static char *unknown_features(uint64_t bits, const uint8_t *table, uint32_t table_len)
{
    GString *str = g_string_new(NULL);
    for (unsigned bit = 0; bit < 64; bit++) {
        if (!(bits & (UINT64_C(1) << bit)))
            continue;
        const char *name = NULL;
        char buf[47];
        for (uint32_t i = 0; table && i + 48 <= table_len; i += 48) {
            if (table[i] == 0 && table[i + 1] == bit) {
                memcpy(buf, table + i + 2, 46);
                buf[46] = 0;
                name = buf;
            }
        }
        if (str->len)
            g_string_append(str, ", ");
        if (name)
            g_string_append(str, name);
        else
            g_string_append_printf(str, "Unknown incompatible feature: %u", bit);
    }
    return g_string_free(str, FALSE);
}

/* Parses and checks the header; fills s.  `hdr` holds cluster 0 (or less). */
static bool parse_header(Qcow2 *s, BlockNode *self, const uint8_t *h, uint64_t hlen, GError **errp)
{
    const char *me = node_name(self);
    if (hlen < HDR_V2_LENGTH || be32_at(h) != QCOW2_MAGIC) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Image is not in qcow2 format");
        return false;
    }
    s->version = be32_at(h + 4);
    if (s->version < 2 || s->version > 3) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Unsupported qcow2 version %u", s->version);
        return false;
    }
    s->cluster_bits = be32_at(h + 20);
    if (s->cluster_bits < MIN_CLUSTER_BITS || s->cluster_bits > MAX_CLUSTER_BITS) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Unsupported cluster size: 2^%u", s->cluster_bits);
        return false;
    }
    s->cs = 1u << s->cluster_bits;
    s->size = be64_at(h + 24);
    uint32_t crypt = be32_at(h + 32);
    if (crypt != 0) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' is encrypted (%s); encrypted qcow2 images are not supported",
                me, crypt == 1 ? "AES" : crypt == 2 ? "LUKS" : "unknown method");
        return false;
    }
    s->l1_size = be32_at(h + 36);
    s->l1_offset = be64_at(h + 40);
    s->rt_offset = be64_at(h + 48);
    s->rt_clusters = be32_at(h + 56);
    uint32_t nb_snapshots = be32_at(h + 60);
    if (s->version >= 3) {
        if (hlen < HDR_V3_LENGTH) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "qcow2 header too short");
            return false;
        }
        s->incompat = be64_at(h + 72);
        s->compat = be64_at(h + 80);
        s->autoclear = be64_at(h + 88);
        s->refcount_order = be32_at(h + 96);
        s->header_length = be32_at(h + 100);
        if (s->header_length < HDR_V3_LENGTH || s->header_length % 8 || s->header_length > s->cs ||
            s->header_length > hlen) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid qcow2 header length %u", s->header_length);
            return false;
        }
    } else {
        s->refcount_order = 4;
        s->header_length = HDR_V2_LENGTH;
    }
    if (s->refcount_order > 6) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid refcount order %u", s->refcount_order);
        return false;
    }

    /* Header extensions, up to the backing file name or the cluster end. */
    uint64_t backing_off = be64_at(h + 8);
    uint32_t backing_len = be32_at(h + 16);
    uint64_t ext_end = MIN(hlen, backing_off ? MIN(backing_off, (uint64_t)s->cs) : (uint64_t)s->cs);
    const uint8_t *features = NULL;
    uint32_t features_len = 0;
    bool bitmaps = false;
    for (uint64_t off = s->header_length; off + 8 <= ext_end;) {
        uint32_t type = be32_at(h + off), len = be32_at(h + off + 4);
        if (type == EXT_END)
            break;
        if (off + 8 + len > ext_end) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid qcow2 header extension 0x%08x", type);
            return false;
        }
        const uint8_t *data = h + off + 8;
        switch (type) {
        case EXT_BACKING_FORMAT:
            g_free(s->backing_fmt);
            s->backing_fmt = g_strndup((const char *)data, len);
            break;
        case EXT_FEATURE_TABLE:
            features = data;
            features_len = len;
            break;
        case EXT_BITMAPS:
            bitmaps = true;
            break;
        default:
            break; /* crypto and data file are refused through their bits */
        }
        off += 8 + ((uint64_t)len + 7) / 8 * 8;
    }

    uint64_t known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
    if (s->incompat & ~known) {
        g_autofree char *names = unknown_features(s->incompat & ~known, features, features_len);
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Unsupported qcow2 feature(s): %s", names);
        return false;
    }
    if (s->incompat & INCOMPAT_DATA_FILE) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Image '%s' uses an external data file; not supported", me);
        return false;
    }
    if (s->incompat & INCOMPAT_EXTL2) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' uses extended L2 entries (subclusters); not supported", me);
        return false;
    }
    if ((s->incompat & INCOMPAT_COMPRESSION) || (s->header_length > 104 && h[104] != 0)) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' uses compression type %u; only zlib (deflate) is supported", me,
                s->header_length > 104 ? h[104] : 0);
        return false;
    }
    if (s->incompat & INCOMPAT_DIRTY) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                "Image '%s' is dirty (its refcounts may be inconsistent); run 'qemu-img check -r all' on it",
                me);
        return false;
    }
    if ((s->incompat & INCOMPAT_CORRUPT) && !s->read_only) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                "Image '%s' is marked corrupt; it can only be opened read-only (repair: 'qemu-img check -r all')",
                me);
        return false;
    }
    if (nb_snapshots && !s->read_only) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' has internal snapshots; writing to it is not supported (open it with read-only=on)",
                me);
        return false;
    }
    (void)bitmaps; /* stale bitmaps are disowned by clearing autoclear bit 0 (see open) */

    if (backing_off) {
        if (backing_len > MAX_BACKING_NAME || backing_off > s->cs || backing_off + backing_len > hlen) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid backing file name in image '%s'", me);
            return false;
        }
        s->backing_name = g_strndup((const char *)h + backing_off, backing_len);
    }

    s->l2_entries = s->cs / 8;
    s->rb_entries = (uint64_t)s->cs * 8 >> s->refcount_order;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (UINT64_C(1) << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (UINT64_C(1) << s->csize_shift) - 1;
    uint64_t per_l1 = (uint64_t)s->l2_entries * s->cs;
    if ((uint64_t)s->l1_size * 8 > MAX_L1_BYTES || s->size > (uint64_t)s->l1_size * per_l1 ||
        (s->l1_offset & (s->cs - 1)) || (s->rt_offset & (s->cs - 1)) || !s->rt_offset ||
        (uint64_t)s->rt_clusters * s->cs > MAX_REFTABLE_BYTES || !s->rt_clusters) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Image '%s' has an invalid L1 or refcount table", me);
        return false;
    }
    return true;
}

/* The image files whose backing files this thread is opening, innermost
 * first (on the stack of the nested opens): a chain that comes back to one
 * of them, an image naming itself for instance, would recurse forever. */
typedef struct OpeningImage {
    dev_t dev;
    ino_t ino;
    const struct OpeningImage *outer;
} OpeningImage;
static __thread const OpeningImage *opening_images;

/* Resolves and opens the backing file named in the image. */
static BlockNode *open_backing_from_header(Qcow2 *s, BlockNode *self, GError **errp)
{
    const char *name = s->backing_name;
    if (g_str_has_prefix(name, "json:") || strstr(name, "://")) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Could not open backing file: unsupported backing file name '%s'",
                name);
        return NULL;
    }
    if (g_path_is_absolute(name)) {
        s->backing_full = g_strdup(name);
    } else {
        const char *image = node_filename(s->file);
        if (!image) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT,
                    "Cannot use relative backing file name '%s' for '%s': the image has no file name",
                    name, node_name(self));
            return NULL;
        }
        g_autofree char *dir = g_path_get_dirname(image);
        s->backing_full = g_build_filename(dir, name, NULL);
    }
    const char *fmt = s->backing_fmt;
    if (!fmt) {
        int err = 0;
        fmt = qcow2_probe_format(s->backing_full, &err);
        if (!fmt) {
            qcow2_set_error(errp, g_io_error_from_errno(err), "Could not open backing file: Could not open '%s': %s",
                    s->backing_full, g_strerror(err));
            return NULL;
        }
    }
    if (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0 && strcmp(fmt, "file") != 0) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Could not open backing file '%s': unsupported backing format '%s'", s->backing_full, fmt);
        return NULL;
    }
    BlockdevOptions file = { .driver = BLOCKDEV_DRIVER_FILE, .u.file.filename = s->backing_full };
    BlockdevRef file_ref = { .type = QAPI_QTYPE_QDICT, .u.definition = &file };
    BlockdevOptions format = { .driver = strcmp(fmt, "qcow2") == 0 ? BLOCKDEV_DRIVER_QCOW2 : BLOCKDEV_DRIVER_RAW };
    if (format.driver == BLOCKDEV_DRIVER_QCOW2)
        format.u.qcow2.file = &file_ref;
    else
        format.u.raw.file = &file_ref;
    const BlockdevOptions *opts = strcmp(fmt, "file") == 0 ? &file : &format;
    OpeningImage me = { .outer = opening_images };
    struct stat st;
    const char *image = node_filename(s->file);
    if (image && stat(image, &st) == 0) {
        me.dev = st.st_dev;
        me.ino = st.st_ino;
    }
    if (stat(s->backing_full, &st) == 0) {
        for (const OpeningImage *o = &me; o; o = o->outer) {
            if (o->dev == st.st_dev && o->ino == st.st_ino) {
                qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                        "Could not open backing file '%s': it is already in the backing chain (a loop)",
                        s->backing_full);
                return NULL;
            }
        }
    }
    GError *err = NULL;
    opening_images = &me;
    BlockNode *b = node_create_child(self, opts, "-backing", true, &err);
    opening_images = me.outer;
    if (!b) {
        g_set_error(errp, err->domain, err->code, "Could not open backing file: %s", err->message);
        g_error_free(err);
    }
    return b;
}

static void *qcow2_open(BlockNode *self, const BlockdevOptionsQcow2 *opts, bool read_only, GError **errp)
{
    bool file_created = false, backing_created = false;
    g_autofree uint8_t *h = NULL;
    Qcow2 *s = g_new0(Qcow2, 1);
    g_mutex_init(&s->lock);
    s->read_only = read_only;
    uint64_t l2_cache = 0, cache = 0;
    if ((opts->has_l2_cache_size && !block_option_size("l2-cache-size", opts->l2_cache_size, &l2_cache, errp)) ||
        (opts->has_cache_size && !block_option_size("cache-size", opts->cache_size, &cache, errp)))
        goto fail;
    s->file = node_open_child(self, opts->file, "-file", &file_created, errp);
    if (!s->file)
        goto fail;
    if (!read_only && node_read_only(s->file)) {
        qcow2_set_error(errp, G_IO_ERROR_READ_ONLY, "Node '%s' is read-only; open '%s' with read-only=on",
                node_name(s->file), node_name(self));
        goto fail;
    }
    /* Claimed (image locks taken) before the first byte is read or written,
     * as QEMU attaches its file child.  From here on node_create's cleanup
     * drops the child, and the node_delete calls below are no-ops. */
    if (!(file_created ? node_add_implicit_child : node_add_child)(self, s->file, NODE_CHILD_STORAGE, errp))
        goto fail;
    s->file_can_trim = node_caps(s->file)->can_trim;

    /* Cluster 0 holds the header, its extensions and the backing file name. */
    uint64_t fsize = node_size(s->file);
    uint8_t first[HDR_V3_LENGTH + 8] = { 0 };
    if (file_read(s, first, sizeof first, 0) < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the qcow2 header of '%s'", node_name(self));
        goto fail;
    }
    uint32_t cbits = be32_at(first + 20);
    uint64_t hlen = MIN(fsize, be32_at(first) == QCOW2_MAGIC && cbits >= MIN_CLUSTER_BITS &&
                               cbits <= MAX_CLUSTER_BITS ? (uint64_t)1 << cbits : sizeof first);
    h = g_malloc0(MAX(hlen, (uint64_t)sizeof first));
    if (file_read(s, h, hlen, 0) < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the qcow2 header of '%s'", node_name(self));
        goto fail;
    }
    if (!parse_header(s, self, h, hlen, errp))
        goto fail;

    /* L1 and refcount tables. */
    s->l1 = g_new0(uint64_t, MAX(s->l1_size, 1u));
    s->rt_entries = (uint64_t)s->rt_clusters * s->cs / 8;
    s->rt = g_new0(uint64_t, s->rt_entries);
    {
        g_autofree uint8_t *raw = g_malloc(MAX((uint64_t)s->l1_size * 8, s->rt_entries * 8));
        if (file_read(s, raw, (uint64_t)s->l1_size * 8, s->l1_offset) < 0) {
            qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the L1 table of '%s'", node_name(self));
            goto fail;
        }
        for (uint32_t i = 0; i < s->l1_size; i++)
            s->l1[i] = be64_at(raw + 8 * i);
        if (file_read(s, raw, s->rt_entries * 8, s->rt_offset) < 0) {
            qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the refcount table of '%s'", node_name(self));
            goto fail;
        }
        for (uint64_t i = 0; i < s->rt_entries; i++)
            s->rt[i] = be64_at(raw + 8 * i);
    }
    s->rblocks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    s->l2 = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, l2_table_free);
    if (!l2_cache)
        l2_cache = cache ? cache : 1u << 20;
    s->l2_max = (guint)MIN(MAX(l2_cache / s->cs, (uint64_t)4), (uint64_t)65536);
    s->pending_free = g_array_new(FALSE, FALSE, sizeof(FreeRange));
    s->end = DIV_UP(fsize, s->cs);
    s->reserve_chunk = MIN(MAX((uint64_t)(4u << 20) / s->cs, (uint64_t)8), (uint64_t)1024);

    /* Backing: absent = the one the image names; null (or "") = none; else a node. */
    if (opts->has_backing && opts->backing->type == QAPI_QTYPE_QDICT) {
        /* QEMU's default: backing files are opened read-only. */
        s->backing = node_create_child(self, opts->backing->u.definition, "-backing", true, errp);
        if (!s->backing)
            goto fail;
        backing_created = true;
    } else if (opts->has_backing && opts->backing->type == QAPI_QTYPE_QSTRING) {
        if (*opts->backing->u.reference && !(s->backing = node_find_reference(opts->backing->u.reference, errp)))
            goto fail;
    } else if (opts->has_backing) {
        /* null: none */
    } else if (s->backing_name) {
        s->backing = open_backing_from_header(s, self, errp);
        if (!s->backing)
            goto fail;
        backing_created = true;
    }
    if (s->backing == self) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "A node cannot be its own backing node");
        goto fail;
    }
    if (s->backing &&
        !(backing_created ? node_add_implicit_child : node_add_child)(self, s->backing, NODE_CHILD_COW, errp))
        goto fail;

    /* Writing: disown what we do not maintain (QEMU clears unknown
     * autoclear bits; bit 0 = bitmaps, which then count as stale). */
    if (!read_only && s->version >= 3 && s->autoclear) {
        s->autoclear = 0;
        if (write_be64(s, 0, 88) < 0 || node_flush(s->file) < 0) {
            qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not update the qcow2 header of '%s'", node_name(self));
            goto fail;
        }
    }

    return s;

fail:
    if (backing_created && s->backing)
        node_delete(node_name(s->backing), NULL);
    if (file_created && s->file)
        node_delete(node_name(s->file), NULL);
    qcow2_free(s);
    return NULL;
}

static void qcow2_close(void *o)
{
    Qcow2 *s = o;
    if (!s->read_only && !s->broken) {
        g_mutex_lock(&s->lock);
        /* Make unlinking durable, then drop the freed and unused clusters. */
        if (node_flush(s->file) == 0 && apply_pending_frees(s) == 0 && release_reservation(s) == 0)
            node_flush(s->file);
        g_mutex_unlock(&s->lock);
    }
    qcow2_free(s);
}

static int64_t qcow2_get_size(void *o) { return (int64_t)((Qcow2 *)o)->size; }
static int qcow2_can_write(void *o) { return !((Qcow2 *)o)->read_only; }
static int qcow2_can_flush(void *o) { return 1; }
static int qcow2_can_trim(void *o) { return 1; }
static int qcow2_can_zero(void *o) { return 1; }
static int qcow2_can_fast_zero(void *o) { return 1; }
static int qcow2_can_extents(void *o) { return 1; }
static int qcow2_can_fua(void *o) { return BLOCK_SUPPORT_EMULATE; }
static int qcow2_can_multi_conn(void *o) { return node_caps(((Qcow2 *)o)->file)->can_multi_conn; }

static int qcow2_block_size(void *o, uint32_t *min, uint32_t *pref, uint32_t *max)
{
    *min = 1;
    *pref = ((Qcow2 *)o)->cs;
    *max = 0xffffffff;
    return 0;
}

static void qcow2_image_info(void *o, BlockImageInfo *info)
{
    Qcow2 *s = o;
    info->filename = node_filename(s->file);
    info->backing_filename = s->backing_name;
    info->full_backing_filename = s->backing_full ? s->backing_full : s->backing_name;
    info->backing_format = s->backing_fmt;
    info->backing = s->backing;
    info->cluster_size = s->cs;
}

const BlockDriver block_driver_qcow2 = {
    .name = "qcow2",
    .supports_backing = true,
    .type = BLOCKDEV_DRIVER_QCOW2,
    .open.qcow2 = qcow2_open,
    .close = qcow2_close,
    .get_size = qcow2_get_size,
    .can_write = qcow2_can_write,
    .can_flush = qcow2_can_flush,
    .can_trim = qcow2_can_trim,
    .can_zero = qcow2_can_zero,
    .can_fast_zero = qcow2_can_fast_zero,
    .can_fua = qcow2_can_fua,
    .can_extents = qcow2_can_extents,
    .can_multi_conn = qcow2_can_multi_conn,
    .block_size = qcow2_block_size,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .flush = qcow2_flush,
    .trim = qcow2_trim,
    .zero = qcow2_zero,
    .extents = qcow2_extents,
    .image_info = qcow2_image_info,
};
