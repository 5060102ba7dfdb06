/* qcow2 guest clusters: the L1/L2 mapping from guest clusters to host
 * clusters, its lookups and updates (new L2 tables come from
 * qcow2-refcount.c, are cached by qcow2-cache.c), and write-zeroes and
 * discard of whole clusters, which only rewrite entries. */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>

/* The L2 entry of guest cluster c (0 when its table is unallocated). */
int qcow2_get_entry(Qcow2 *s, uint64_t c, uint64_t *e)
{
    uint64_t l1i = c / s->l2_entries;
    *e = 0;
    /* Requests stay inside the disk, which parse_header checked the L1 table covers. */
    g_assert(l1i < s->l1_size);
    uint64_t l2off = s->l1[l1i] & L1E_OFFSET_MASK;
    if (!l2off)
        return 0;
    L2Table *t;
    int r = qcow2_l2_load(s, l2off, &t);
    if (r == 0)
        *e = t->e[c % s->l2_entries];
    return r;
}

/* The L2 entries of the clusters from the one holding `offset` on, as
 * many as [offset, offset+count) spans (at most LOOKUP_BATCH): their number,
 * or -errno.  *first is the first cluster's index. */
int64_t qcow2_lookup_entries(Qcow2 *s, uint64_t offset, uint32_t count, uint64_t *entries, uint64_t *first)
{
    uint64_t c0 = offset >> s->cluster_bits;
    uint64_t last = (offset + count - 1) >> s->cluster_bits;
    uint64_t n = MIN(last - c0 + 1, (uint64_t)LOOKUP_BATCH);
    int r = 0;
    g_mutex_lock(&s->lock);
    for (uint64_t i = 0; i < n && r == 0; i++)
        r = qcow2_get_entry(s, c0 + i, &entries[i]);
    g_mutex_unlock(&s->lock);
    *first = c0;
    return r < 0 ? r : (int64_t)n;
}

/* Copy-on-write of the L2 table for L1 index l1i that a snapshot shares
 * (refcount > 1): the copy is written and flushed before the L1 entry
 * points at it, and the old table loses the active image's reference
 * after the next flush, so a crash at any point leaks at most the copy
 * or one reference.  The entries are copied as they are: the data
 * clusters' refcounts count images, not tables, and do not change. */
static int l2_copy_on_write(Qcow2 *s, uint64_t l1i, L2Table **out)
{
    uint64_t old_off = s->l1[l1i] & L1E_OFFSET_MASK, off;
    L2Table *old;
    int r = qcow2_l2_load(s, old_off, &old);
    if (r < 0)
        return r;
    g_autofree uint64_t *e = g_memdup2(old->e, (gsize)s->l2_entries * 8);
    if ((r = qcow2_alloc_clusters(s, 1, &off)) < 0)
        return r;
    if (qcow2_l2_cached(s, off))
        return -EIO; /* corrupt refcounts called a table's cluster free (see below) */
    g_assert(qcow2_clusters_allocated(s, off, 1));
    g_autofree uint8_t *raw = g_malloc(s->cs);
    for (uint32_t i = 0; i < s->l2_entries; i++)
        put_be64(raw + 8 * i, e[i]);
    node_debug_event(s->file, BLKDBG_L2_ALLOC_COW_READ);
    if ((r = qcow2_file_write(s, raw, s->cs, off)) < 0 || (r = node_flush(s->file)) < 0 ||
        (r = write_be64(s, off | OFLAG_COPIED, s->l1_offset + 8 * l1i)) < 0) {
        s->broken = true;
        return r;
    }
    s->l1[l1i] = off | OFLAG_COPIED;
    qcow2_free_later(s, old_off, s->cs);
    L2Table *t;
    if ((r = qcow2_l2_new(s, off, &t)) < 0)
        return r;
    memcpy(t->e, e, (gsize)s->l2_entries * 8);
    *out = t;
    return 0;
}

/* The table for L1 index l1i, allocating an empty one if needed. */
static int l2_for_write(Qcow2 *s, uint64_t l1i, L2Table **out)
{
    g_assert(l1i < s->l1_size); /* as in qcow2_get_entry */
    uint64_t l1e = s->l1[l1i];
    if (l1e & L1E_OFFSET_MASK) {
        if (!(l1e & OFLAG_COPIED)) {
            /* A table shared with a snapshot is copied first; a missing
             * flag on a table referenced once is just repaired. */
            uint64_t rc;
            int r = qcow2_refcount_of(s, (l1e & L1E_OFFSET_MASK) >> s->cluster_bits, &rc);
            if (r < 0)
                return r;
            if (rc == 0)
                return -EIO;
            if (rc > 1)
                return l2_copy_on_write(s, l1i, out);
            l1e |= OFLAG_COPIED;
            if ((r = write_be64(s, l1e, s->l1_offset + 8 * l1i)) < 0)
                return r;
            s->l1[l1i] = l1e;
        }
        return qcow2_l2_load(s, l1e & L1E_OFFSET_MASK, out);
    }
    uint64_t off;
    int r = qcow2_alloc_clusters(s, 1, &off);
    if (r < 0)
        return r;
    /* Another L1 entry of a corrupt image may name this cluster, which its
     * refcounts call free: a second table there would share its disk
     * cluster and replace it in the cache while its key is in use. */
    if (qcow2_l2_cached(s, off))
        return -EIO;
    g_assert(qcow2_clusters_allocated(s, off, 1)); /* what the L1 entry will point at */
    g_autofree void *zero = g_malloc0(s->cs);
    if ((r = qcow2_file_write(s, zero, s->cs, off)) < 0 ||
        (r = write_be64(s, off | OFLAG_COPIED, s->l1_offset + 8 * l1i)) < 0) {
        s->broken = true;
        return r;
    }
    s->l1[l1i] = off | OFLAG_COPIED;
    return qcow2_l2_new(s, off, out);
}

/* Sets the L2 entries of guest clusters [c0, c0+n): entry i is
 * (host ? host + i*cs : 0) | flags.  Old allocations are freed later. */
int qcow2_set_entries(Qcow2 *s, uint64_t c0, uint64_t n, uint64_t host, uint64_t flags)
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
                qcow2_free_later(s, off, len);
                break;
            }
            case CT_NORMAL:
            case CT_ZERO_ALLOC:
                if ((old & L2E_OFFSET_MASK) != (e & L2E_OFFSET_MASK))
                    qcow2_free_later(s, old & L2E_OFFSET_MASK, s->cs);
                break;
            default:
                break;
            }
            put_be64(raw + 8 * j, e);
        }
        if ((r = qcow2_file_write(s, raw, k * 8, t->offset + 8 * i)) < 0) {
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

/* True if guest bytes from `off` on, in a cluster with entry e, read as zeroes
 * without reading data: a zero cluster, or unallocated with nothing below. */
bool qcow2_reads_zero_cheaply(Qcow2 *s, uint64_t e, uint64_t off)
{
    ClusterType t = classify(s, e);
    if (t == CT_ZERO_PLAIN || t == CT_ZERO_ALLOC)
        return true;
    return t == CT_UNALLOC && (!s->backing || off >= node_size(s->backing));
}

typedef enum ZeroAction { ZA_SKIP, ZA_KEEP, ZA_PLAIN } ZeroAction;

/* What write-zeroes does to whole cluster c: nothing, keep its allocation
 * with the zero flag, or a plain entry (zero flag on v3, unallocated on v2
 * without backing, which the caller checked).  Its entry in *e. */
static ZeroAction zero_action(Qcow2 *s, uint64_t c, bool may_trim, uint64_t *e, int *r)
{
    if ((*r = qcow2_get_entry(s, c, e)) < 0)
        return ZA_SKIP;
    ClusterType t = classify(s, *e);
    if (t == CT_ZERO_PLAIN || (t == CT_ZERO_ALLOC && !may_trim) ||
        (t == CT_UNALLOC && qcow2_reads_zero_cheaply(s, *e, c * s->cs)))
        return ZA_SKIP;
    if (s->version >= 3 && !may_trim && in_place(*e, t))
        return ZA_KEEP;
    return ZA_PLAIN;
}

/* Write-zeroes of whole guest clusters [a, b): runs of entries that keep
 * their allocation with the zero flag, or become plain zero (v3) or
 * unallocated (v2; the caller checked that nothing shows through). */
int qcow2_zero_clusters(Qcow2 *s, uint64_t a, uint64_t b, bool may_trim)
{
    const uint64_t cs = s->cs;
    uint64_t e;
    int r = 0;
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
            r = qcow2_set_entries(s, c, k, e & L2E_OFFSET_MASK, OFLAG_COPIED | OFLAG_ZERO);
        else if (act == ZA_PLAIN)
            r = qcow2_set_entries(s, c, k, 0, s->version >= 3 ? OFLAG_ZERO : 0);
        c += k;
    }
    return r;
}

/* Discard of whole guest clusters [a, b): runs of clusters holding something
 * become unallocated, or zero over a backing node. */
int qcow2_discard_clusters(Qcow2 *s, uint64_t a, uint64_t b)
{
    int r = 0;
    for (uint64_t c = a; c < b && r == 0;) {
        uint64_t e, k = 0;
        ClusterType t;
        /* A run of clusters holding something: they become unallocated, or
         * with a backing file zero (as QEMU does: the backing must not show
         * through, so unallocated clusters get the zero flag too). */
        while (c + k < b && (r = qcow2_get_entry(s, c + k, &e)) == 0 &&
               (t = classify(s, e)) != CT_ZERO_PLAIN && (t != CT_UNALLOC || s->backing))
            k++;
        if (r == 0 && k)
            r = qcow2_set_entries(s, c, k, 0, s->backing ? OFLAG_ZERO : 0);
        c += k ? k : 1;
    }
    return r;
}
