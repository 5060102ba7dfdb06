/* qcow2 refcounts and cluster allocation: the refcount table and its
 * blocks (cached, never evicted), the reservation new clusters come from,
 * and frees deferred until a flush made the unlinking durable (see
 * "Allocation" in qcow2.c). */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>

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

static uint64_t rc_max(const Qcow2 *s)
{
    return s->refcount_order == 6 ? UINT64_MAX : (UINT64_C(1) << (1u << s->refcount_order)) - 1;
}

static void rc_set(const Qcow2 *s, uint8_t *b, uint64_t i, uint64_t v)
{
    g_assert(v <= rc_max(s)); /* rc_modify refuses to go past 0 or the maximum */
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

int qcow2_refcount_of(Qcow2 *s, uint64_t cluster, uint64_t *out)
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
    g_assert(delta == 1 || delta == -1);
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
            if ((r = qcow2_file_write(s, b + first, len, (s->rt[bi] & RT_OFFSET_MASK) + first)) < 0)
                return r;
        }
        c0 += k;
        n -= k;
    }
    return 0;
}

/* Whether clusters [c0, c1) overlap the header cluster, the L1 table or the
 * refcount table. */
static bool overlaps_tables(const Qcow2 *s, uint64_t c0, uint64_t c1)
{
    uint64_t l1 = s->l1_offset >> s->cluster_bits, l1_end = l1 + DIV_UP((uint64_t)s->l1_size * 8, s->cs);
    uint64_t rt = s->rt_offset >> s->cluster_bits, rt_end = rt + s->rt_clusters;
    return c0 == 0 || (c0 < l1_end && l1 < c1) || (c0 < rt_end && rt < c1);
}

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

/* Gives `n` clusters at the end of the file a refcount of 1 (they become the
 * reservation), adding refcount blocks and growing the refcount table as
 * needed, and flushes.  Layout: [reserved n][new blocks][new table]. */
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
    /* Free clusters inside the image's own tables: corrupt refcounts. */
    if (overlaps_tables(s, start, end))
        return -EIO;
    s->end = start;
    int r = node_grow(s->file, end * s->cs);
    if (r < 0)
        return r == -ENOTSUP ? -ENOSPC : r; /* a fixed-size child is full */

    uint64_t new_entries = T ? T * s->cs / 8 : s->rt_entries;
    g_assert(new_entries >= s->rt_entries && hi < new_entries); /* the table covers every block */
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
    g_assert(j == missing && missing <= B); /* new blocks fill [start+n, start+n+missing) */
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
        if ((r = qcow2_file_write(s, value, s->cs, rt[*(gint64 *)key])) < 0)
            goto fail;
    if (T) {
        g_autofree uint8_t *table = g_malloc0(T * s->cs);
        for (uint64_t i = 0; i < new_entries; i++)
            put_be64(table + 8 * i, rt[i]);
        uint64_t toff = (start + n + B) * s->cs;
        if ((r = qcow2_file_write(s, table, T * s->cs, toff)) < 0 || (r = node_flush(s->file)) < 0)
            goto fail;
        uint8_t hdr[12];
        put_be64(hdr, toff);
        put_be32(hdr + 8, (uint32_t)T);
        if ((r = qcow2_file_write(s, hdr, sizeof hdr, 48)) < 0)
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
int qcow2_release_reservation(Qcow2 *s)
{
    g_assert(s->res_start <= s->res_end && s->res_end <= s->end);
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
int qcow2_alloc_clusters(Qcow2 *s, uint64_t n, uint64_t *off)
{
    if (s->res_end - s->res_start < n) {
        int r = qcow2_release_reservation(s);
        if (r == 0)
            r = reserve(s, MAX(n, s->reserve_chunk));
        if (r < 0)
            return r;
    }
    /* The reservation never covers the header, L1 or refcount table: reserve()
     * refuses a corrupt image's free clusters there. */
    g_assert(n > 0 && s->res_start + n <= s->res_end && s->res_end <= s->end);
    g_assert(!overlaps_tables(s, s->res_start, s->res_start + n));
    *off = s->res_start * s->cs;
    s->res_start += n;
    return 0;
}

/* Drops a reference to the clusters overlapping [off, off+len) once the
 * next flush has made their unlinking durable. */
void qcow2_free_later(Qcow2 *s, uint64_t off, uint64_t len)
{
    FreeRange f = { off, len };
    g_array_append_val(s->pending_free, f);
}

int qcow2_apply_pending_frees(Qcow2 *s)
{
    int r = 0;
    for (guint i = 0; i < s->pending_free->len && r == 0; i++) {
        FreeRange *f = &g_array_index(s->pending_free, FreeRange, i);
        uint64_t c0 = f->offset / s->cs, c1 = DIV_UP(f->offset + f->length, s->cs);
        /* Reserved clusters were free: only a corrupt image references them. */
        r = c0 < s->res_end && s->res_start < c1 ? -EIO : rc_modify(s, c0, c1 - c0, -1, NULL);
        for (uint64_t c = c0; r == 0 && c < c1 && s->file_can_trim; c++) {
            uint64_t v;
            if ((r = qcow2_refcount_of(s, c, &v)) == 0 && v == 0 && (c + 1) * s->cs <= node_size(s->file))
                node_trim(s->file, s->cs, c * s->cs, 0); /* a hint: errors do not matter */
        }
    }
    g_array_set_size(s->pending_free, 0);
    if (r < 0)
        s->broken = true;
    return r;
}

bool qcow2_clusters_allocated(Qcow2 *s, uint64_t off, uint64_t n)
{
    uint64_t c0 = off >> s->cluster_bits, c1 = c0 + n, fsize = node_size(s->file);
    if (n == 0 || (off & (s->cs - 1)) || n > fsize / s->cs || off > fsize - n * s->cs ||
        overlaps_tables(s, c0, c1))
        return false;
    /* The blocks of reserved clusters stay cached (rblocks never evicts):
     * no I/O here. */
    for (uint64_t c = c0; c < c1;) {
        gint64 key = (gint64)(c / s->rb_entries);
        const uint8_t *b = g_hash_table_lookup(s->rblocks, &key);
        uint64_t stop = MIN(c1, (c / s->rb_entries + 1) * s->rb_entries);
        for (; c < stop; c++)
            if (!b || rc_get(s, b, c % s->rb_entries) == 0)
                return false;
    }
    return true;
}

/* ---- for qcow2-snapshot.c ---- */

uint64_t qcow2_rc_get(const Qcow2 *s, const uint8_t *b, uint64_t i) { return rc_get(s, b, i); }
void qcow2_rc_set(const Qcow2 *s, uint8_t *b, uint64_t i, uint64_t v) { rc_set(s, b, i, v); }
uint64_t qcow2_rc_max(const Qcow2 *s) { return rc_max(s); }

int qcow2_refcount_add(Qcow2 *s, uint64_t c0, uint64_t n, int delta)
{
    int r = rc_modify(s, c0, n, delta, NULL);
    if (r < 0)
        s->broken = true;
    return r;
}

int qcow2_refcount_load_all(Qcow2 *s)
{
    for (uint64_t bi = 0; bi < s->rt_entries; bi++) {
        int r;
        if (!rblock(s, bi, &r) && r < 0)
            return r;
    }
    return 0;
}

uint8_t *qcow2_refblock_cached(Qcow2 *s, uint64_t bi)
{
    gint64 key = (gint64)bi;
    return g_hash_table_lookup(s->rblocks, &key);
}
