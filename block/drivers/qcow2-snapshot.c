/* qcow2 internal snapshots: the snapshot table (QEMU's format,
 * docs/interop/qcow2.txt "Snapshot table") and the three operations on
 * it: create, delete and revert.
 *
 * Atomic commit.  Each operation changes refcounts of many clusters and
 * the OFLAG_COPIED flags of the active image's entries, which qemu-img
 * check wants to agree (COPIED exactly when the refcount is 1).  No order
 * of in-place writes keeps them agreeing at every step, so nothing in use
 * is written in place: the operation writes new copies of everything it
 * changes into clusters past the end of everything in use (their refcount
 * is 0 until the commit, so a crash before it leaves them unreferenced and
 * free) -- the active L1 table, the active L2 tables whose flags change,
 * the snapshot table, the refcount blocks whose counts change and the
 * refcount table -- flushes, and then switches to them with one write of
 * the header bytes 36..71 (L1 size and offset, refcount table offset and
 * size, snapshot count and table offset), and flushes again.  A crash
 * leaves the old image or the new one, each consistent; the clusters only
 * the old one used are free in the new one (their refcount blocks are new).
 *
 * Refcounts count images: a data cluster reachable from the active L1 and
 * from two snapshots' L1 tables has refcount 3, whether or not they share
 * L2 tables (QEMU's qcow2_update_snapshot_refcount).  A new snapshot gets a
 * copy of the active L1 table pointing at the active L2 tables, which then
 * belong to it; the active image gets copies of those tables with COPIED
 * cleared.  Guest writes then copy shared data clusters and tables on
 * write (qcow2-io.c, qcow2-cluster.c). */
#include "block/drivers/qcow2-internal.h"
#include "block/snapshot.h"

#include <errno.h>
#include <inttypes.h>

#define SNAP_HDR 40                 /* fixed part of a table entry */
#define SNAP_EXTRA 24               /* vm_state_size_large, disk_size, icount */
#define MAX_SNAPSHOTS 65536         /* QEMU's QCOW_MAX_SNAPSHOTS */
#define MAX_SNAPSHOT_EXTRA 1024     /* QEMU's QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define MAX_SNAPSHOTS_SIZE (MAX_SNAPSHOTS * 1024) /* QEMU's QCOW_MAX_SNAPSHOTS_SIZE */

/* ---- the table ---- */

static void snapshot_clear(Qcow2Snapshot *sn)
{
    g_free(sn->id);
    g_free(sn->name);
    g_free(sn->extra_unknown);
    memset(sn, 0, sizeof *sn);
}

void qcow2_free_snapshots(Qcow2 *s)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        snapshot_clear(&s->snapshots[i]);
    g_free(s->snapshots);
    s->snapshots = NULL;
    s->nb_snapshots = 0;
}

bool qcow2_read_snapshots(Qcow2 *s, uint32_t nb, uint64_t offset, GError **errp)
{
    s->snapshots_offset = offset;
    s->snapshots_size = 0;
    if (nb == 0)
        return true;
    if (nb > MAX_SNAPSHOTS) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Snapshot table too large");
        return false;
    }
    if (offset & (s->cs - 1) || offset == 0 || offset > INT64_MAX) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Snapshot table offset invalid");
        return false;
    }
    /* As QEMU's qcow2_validate_table: the entries' fixed parts at least lie in the file. */
    uint64_t fsize = node_size(s->file);
    if (offset > fsize || (uint64_t)nb * SNAP_HDR > fsize - offset) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Snapshot table too large");
        return false;
    }
    s->snapshots = g_new0(Qcow2Snapshot, nb);
    uint64_t off = offset;
    for (uint32_t i = 0; i < nb; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        s->nb_snapshots = i + 1; /* what qcow2_free_snapshots frees on failure */
        uint8_t h[SNAP_HDR], extra[SNAP_EXTRA] = { 0 };
        off = (off + 7) & ~UINT64_C(7);
        if (off - offset > MAX_SNAPSHOTS_SIZE || off >= fsize) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Snapshot table is too big");
            goto fail;
        }
        if (file_read(s, h, sizeof h, off) < 0)
            goto io_fail;
        off += sizeof h;
        sn->l1_offset = be64_at(h);
        sn->l1_size = be32_at(h + 8);
        uint16_t id_len = be16_at(h + 12), name_len = be16_at(h + 14);
        sn->date_sec = be32_at(h + 16);
        sn->date_nsec = be32_at(h + 20);
        sn->vm_clock_nsec = be64_at(h + 24);
        sn->vm_state_size = be32_at(h + 32);
        sn->extra_size = be32_at(h + 36);
        if (sn->extra_size > MAX_SNAPSHOT_EXTRA) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Too much extra metadata in snapshot table entry %u", i);
            goto fail;
        }
        uint32_t known = MIN(sn->extra_size, (uint32_t)SNAP_EXTRA);
        if (file_read(s, extra, known, off) < 0)
            goto io_fail;
        off += known;
        if (sn->extra_size > SNAP_EXTRA) {
            sn->extra_unknown = g_malloc(sn->extra_size - SNAP_EXTRA);
            if (file_read(s, sn->extra_unknown, sn->extra_size - SNAP_EXTRA, off) < 0)
                goto io_fail;
            off += sn->extra_size - SNAP_EXTRA;
        }
        if (sn->extra_size >= 8)
            sn->vm_state_size = be64_at(extra);
        sn->disk_size = sn->extra_size >= 16 ? be64_at(extra + 8) : s->size;
        sn->icount = sn->extra_size >= 24 ? be64_at(extra + 16) : UINT64_MAX;
        sn->id = g_malloc0(id_len + 1u);
        sn->name = g_malloc0(name_len + 1u);
        if (file_read(s, sn->id, id_len, off) < 0 || file_read(s, sn->name, name_len, off + id_len) < 0)
            goto io_fail;
        off += id_len + name_len;
        if ((sn->l1_offset & (s->cs - 1)) || (uint64_t)sn->l1_size * 8 > MAX_L1_BYTES) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Snapshot L1 table offset invalid");
            goto fail;
        }
    }
    s->snapshots_size = off - offset;
    return true;

io_fail:
    qcow2_set_error(errp, G_IO_ERROR_FAILED, "Failed to read snapshot table");
fail:
    qcow2_free_snapshots(s);
    return false;
}

/* The on-disk table for `snaps` (QEMU's layout: entries 8-aligned, 24 bytes
 * of known extra data, unknown extra data kept). */
static uint8_t *serialize_table(Qcow2 *s, const Qcow2Snapshot *snaps, uint32_t nb, uint64_t *size)
{
    uint64_t len = 0;
    for (uint32_t i = 0; i < nb; i++) {
        len = (len + 7) & ~UINT64_C(7);
        len += SNAP_HDR + MAX(snaps[i].extra_size, (uint32_t)SNAP_EXTRA) + strlen(snaps[i].id) +
               strlen(snaps[i].name);
    }
    uint8_t *buf = g_malloc0(MAX(len, (uint64_t)1));
    uint64_t off = 0;
    for (uint32_t i = 0; i < nb; i++) {
        const Qcow2Snapshot *sn = &snaps[i];
        off = (off + 7) & ~UINT64_C(7);
        uint8_t *h = buf + off;
        uint32_t extra = MAX(sn->extra_size, (uint32_t)SNAP_EXTRA);
        size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
        put_be64(h, sn->l1_offset);
        put_be32(h + 8, sn->l1_size);
        put_be16(h + 12, (uint16_t)id_len);
        put_be16(h + 14, (uint16_t)name_len);
        put_be32(h + 16, sn->date_sec);
        put_be32(h + 20, sn->date_nsec);
        put_be64(h + 24, sn->vm_clock_nsec);
        /* Too large for 32 bits: older readers see a disk-only snapshot. */
        put_be32(h + 32, sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size : 0);
        put_be32(h + 36, extra);
        put_be64(h + 40, sn->vm_state_size);
        put_be64(h + 48, sn->disk_size);
        put_be64(h + 56, sn->icount);
        if (extra > SNAP_EXTRA)
            memcpy(h + 64, sn->extra_unknown, extra - SNAP_EXTRA);
        memcpy(h + SNAP_HDR + extra, sn->id, id_len);
        memcpy(h + SNAP_HDR + extra + id_len, sn->name, name_len);
        off += SNAP_HDR + extra + id_len + name_len;
    }
    *size = len;
    return buf;
}

/* ---- the atomic commit ---- */

typedef struct Commit {
    Qcow2 *s;
    uint64_t next;        /* next new cluster (index) */
    GHashTable *blocks;   /* block index -> new content (on-disk format) */
    GHashTable *moved;    /* block index -> its new cluster index (set once relocated) */
    GArray *freed;        /* cluster indexes whose refcount drops to 0 */
    uint64_t *l1;         /* the new active L1 table (host byte order) */
    uint32_t l1_size;
} Commit;

static void commit_clear(Commit *c)
{
    if (c->blocks)
        g_hash_table_destroy(c->blocks);
    if (c->moved)
        g_hash_table_destroy(c->moved);
    if (c->freed)
        g_array_free(c->freed, TRUE);
    g_free(c->l1);
}

/* The new content of refcount block bi (a copy of the current one, or zeroes). */
static uint8_t *commit_block(Commit *c, uint64_t bi)
{
    gint64 key = (gint64)bi;
    uint8_t *b = g_hash_table_lookup(c->blocks, &key);
    if (!b) {
        const uint8_t *cur = bi < c->s->rt_entries ? qcow2_refblock_cached(c->s, bi) : NULL;
        b = cur ? g_memdup2(cur, c->s->cs) : g_malloc0(c->s->cs);
        g_hash_table_insert(c->blocks, g_memdup2(&key, sizeof key), b);
    }
    return b;
}

/* Refcount of cluster `cl` as the commit leaves it. */
static uint64_t commit_refcount(Commit *c, uint64_t cl)
{
    Qcow2 *s = c->s;
    uint64_t bi = cl / s->rb_entries;
    gint64 key = (gint64)bi;
    const uint8_t *b = g_hash_table_lookup(c->blocks, &key);
    if (!b && bi < s->rt_entries)
        b = qcow2_refblock_cached(s, bi);
    return b ? qcow2_rc_get(s, b, cl % s->rb_entries) : 0;
}

/* Adds delta to the refcounts of clusters [cl, cl+n) in the new blocks. */
static int commit_add(Commit *c, uint64_t cl, uint64_t n, int delta)
{
    Qcow2 *s = c->s;
    for (uint64_t i = cl; i < cl + n; i++) {
        uint8_t *b = commit_block(c, i / s->rb_entries);
        uint64_t v = qcow2_rc_get(s, b, i % s->rb_entries);
        if (delta < 0 && v == 0)
            return -EIO; /* dropping a reference nobody counted: corrupt refcounts */
        if (delta > 0 && v == qcow2_rc_max(s))
            return -EFBIG;
        qcow2_rc_set(s, b, i % s->rb_entries, delta < 0 ? v - 1 : v + 1);
        if (v == 1 && delta < 0)
            g_array_append_val(c->freed, i);
    }
    return 0;
}

/* n new clusters past everything in use (refcount 1 in the new blocks). */
static int commit_alloc(Commit *c, uint64_t n, uint64_t *cl)
{
    *cl = c->next;
    c->next += n;
    return commit_add(c, *cl, n, 1);
}

/* Writes `len` bytes into new clusters; their offset in *off. */
static int commit_write_new(Commit *c, const void *buf, uint64_t len, uint64_t *off)
{
    uint64_t cl;
    int r = commit_alloc(c, MAX(DIV_UP(len, c->s->cs), (uint64_t)1), &cl);
    if (r < 0)
        return r;
    *off = cl * c->s->cs;
    return qcow2_file_write(c->s, buf, len, *off);
}

/* Reads an L1 table from the file (l1_size entries). */
static int read_l1(Qcow2 *s, uint64_t off, uint32_t size, uint64_t **out)
{
    g_autofree uint8_t *raw = g_malloc(MAX((uint64_t)size * 8, (uint64_t)8));
    int r = file_read(s, raw, (uint64_t)size * 8, off);
    if (r < 0)
        return r;
    uint64_t *l1 = g_new0(uint64_t, MAX(size, 1u));
    for (uint32_t i = 0; i < size; i++)
        l1[i] = be64_at(raw + 8 * i);
    *out = l1;
    return 0;
}

/* A copy of the L2 table at `off`. */
static int read_l2(Qcow2 *s, uint64_t off, uint64_t **out)
{
    L2Table *t;
    int r = qcow2_l2_load(s, off, &t);
    if (r == 0)
        *out = g_memdup2(t->e, (gsize)s->l2_entries * 8);
    return r;
}

/* Adds delta to the refcount of every cluster the image with this L1 table
 * references: its L2 tables and their data clusters (QEMU's
 * qcow2_update_snapshot_refcount). */
static int commit_walk(Commit *c, const uint64_t *l1, uint32_t l1_size, int delta)
{
    Qcow2 *s = c->s;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t t = l1[i] & L1E_OFFSET_MASK;
        if (!t)
            continue;
        g_autofree uint64_t *e = NULL;
        int r = read_l2(s, t, &e);
        if (r < 0 || (r = commit_add(c, t >> s->cluster_bits, 1, delta)) < 0)
            return r;
        for (uint32_t j = 0; j < s->l2_entries; j++) {
            switch (classify(s, e[j])) {
            case CT_NORMAL:
            case CT_ZERO_ALLOC:
                r = commit_add(c, (e[j] & L2E_OFFSET_MASK) >> s->cluster_bits, 1, delta);
                break;
            case CT_COMPRESSED: {
                uint64_t off, len;
                compressed_range(s, e[j], &off, &len);
                r = commit_add(c, off >> s->cluster_bits,
                               DIV_UP(off + len, s->cs) - (off >> s->cluster_bits), delta);
                break;
            }
            default:
                break;
            }
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* Sets the new active L1 table's entries (c->l1, pointing at the tables the
 * active image is to use) and their tables' OFLAG_COPIED flags from the
 * refcounts the commit leaves: a table whose entries' flags would change
 * is copied (the copy is the active image's, the original keeps its other
 * references). */
static int commit_fix_active(Commit *c)
{
    Qcow2 *s = c->s;
    for (uint32_t i = 0; i < c->l1_size; i++) {
        uint64_t t = c->l1[i] & L1E_OFFSET_MASK;
        if (!t) {
            c->l1[i] = 0;
            continue;
        }
        g_autofree uint64_t *e = NULL;
        int r = read_l2(s, t, &e);
        if (r < 0)
            return r;
        bool change = false;
        for (uint32_t j = 0; j < s->l2_entries; j++) {
            ClusterType ty = classify(s, e[j]);
            if (ty != CT_NORMAL && ty != CT_ZERO_ALLOC)
                continue;
            bool copied = commit_refcount(c, (e[j] & L2E_OFFSET_MASK) >> s->cluster_bits) == 1;
            if (copied != !!(e[j] & OFLAG_COPIED)) {
                e[j] = copied ? e[j] | OFLAG_COPIED : e[j] & ~OFLAG_COPIED;
                change = true;
            }
        }
        if (change) {
            g_autofree uint8_t *raw = g_malloc(s->cs);
            for (uint32_t j = 0; j < s->l2_entries; j++)
                put_be64(raw + 8 * j, e[j]);
            uint64_t off;
            if ((r = commit_write_new(c, raw, s->cs, &off)) < 0 ||
                (r = commit_add(c, t >> s->cluster_bits, 1, -1)) < 0)
                return r;
            t = off;
        }
        c->l1[i] = t | (commit_refcount(c, t >> s->cluster_bits) == 1 ? OFLAG_COPIED : 0);
    }
    return 0;
}

static gint cmp_u64(gconstpointer a, gconstpointer b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Starts a commit: makes the refcounts on disk exact (no reservation, no
 * deferred frees) and finds where new clusters may go. */
static int commit_begin(Qcow2 *s, Commit *c)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->blocks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    c->moved = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    c->freed = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    int r;
    if (s->broken)
        return -EIO;
    if ((r = node_flush(s->file)) < 0 || (r = qcow2_apply_pending_frees(s)) < 0 ||
        (r = qcow2_release_reservation(s)) < 0 || (r = qcow2_refcount_load_all(s)) < 0)
        return r;
    /* New clusters go past the last one in use and past the file's end. */
    uint64_t last = 0;
    for (uint64_t bi = 0; bi < s->rt_entries; bi++) {
        const uint8_t *b = qcow2_refblock_cached(s, bi);
        for (uint64_t i = 0; b && i < s->rb_entries; i++)
            if (qcow2_rc_get(s, b, i))
                last = bi * s->rb_entries + i + 1;
    }
    c->next = MAX(last, MAX(s->end, DIV_UP(node_size(s->file), s->cs)));
    c->l1_size = s->l1_size;
    return 0;
}

/* Relocates every changed refcount block and writes a new refcount table,
 * then switches the header to the new L1 table, refcount table and
 * snapshot table in one write.  On success the in-memory state follows. */
static int commit_finish(Commit *c, Qcow2Snapshot *snaps, uint32_t nb)
{
    Qcow2 *s = c->s;
    int r;
    uint64_t l1_off, st_off = 0, st_size = 0;
    /* The new active L1 table and snapshot table. */
    {
        g_autofree uint8_t *raw = g_malloc0(MAX((uint64_t)c->l1_size * 8, (uint64_t)8));
        for (uint32_t i = 0; i < c->l1_size; i++)
            put_be64(raw + 8 * i, c->l1[i]);
        if ((r = commit_write_new(c, raw, (uint64_t)c->l1_size * 8, &l1_off)) < 0)
            return r;
        if (nb) {
            g_autofree uint8_t *table = serialize_table(s, snaps, nb, &st_size);
            if (st_size > MAX_SNAPSHOTS_SIZE)
                return -EFBIG;
            if ((r = commit_write_new(c, table, st_size, &st_off)) < 0)
                return r;
        }
    }
    /* The old ones are no longer referenced. */
    if ((r = commit_add(c, s->l1_offset >> s->cluster_bits, DIV_UP((uint64_t)s->l1_size * 8, s->cs), -1)) < 0)
        return r;
    if (s->nb_snapshots && s->snapshots_size &&
        (r = commit_add(c, s->snapshots_offset >> s->cluster_bits,
                        DIV_UP(s->snapshots_offset + s->snapshots_size, s->cs) -
                            (s->snapshots_offset >> s->cluster_bits), -1)) < 0)
        return r;
    if ((r = commit_add(c, s->rt_offset >> s->cluster_bits, s->rt_clusters, -1)) < 0)
        return r;
    /* Relocate changed blocks until no new block changes; then the table,
     * again if its clusters changed a block it does not cover. */
    uint64_t rt_cl = 0, rt_n = 0, rt_entries = 0;
    for (int round = 0;; round++) {
        if (round > 64)
            return -EIO;
        bool again = true;
        while (again) {
            again = false;
            g_autoptr(GArray) todo = g_array_new(FALSE, FALSE, sizeof(uint64_t));
            GHashTableIter it;
            gpointer k, v;
            g_hash_table_iter_init(&it, c->blocks);
            while (g_hash_table_iter_next(&it, &k, &v))
                if (!g_hash_table_contains(c->moved, k)) {
                    uint64_t bi = (uint64_t)*(gint64 *)k;
                    g_array_append_val(todo, bi);
                }
            g_array_sort(todo, cmp_u64);
            for (guint i = 0; i < todo->len; i++) {
                uint64_t bi = g_array_index(todo, uint64_t, i), cl;
                if ((r = commit_alloc(c, 1, &cl)) < 0)
                    return r;
                if (bi < s->rt_entries && (s->rt[bi] & RT_OFFSET_MASK) &&
                    (r = commit_add(c, (s->rt[bi] & RT_OFFSET_MASK) >> s->cluster_bits, 1, -1)) < 0)
                    return r;
                gint64 key = (gint64)bi, val = (gint64)cl;
                g_hash_table_insert(c->moved, g_memdup2(&key, sizeof key), g_memdup2(&val, sizeof val));
                again = true;
            }
        }
        uint64_t max_bi = s->rt_entries ? s->rt_entries - 1 : 0;
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, c->blocks);
        while (g_hash_table_iter_next(&it, &k, &v))
            max_bi = MAX(max_bi, (uint64_t)*(gint64 *)k);
        uint64_t need = DIV_UP((max_bi + 1) * 8, s->cs);
        if (rt_n && need <= rt_n && g_hash_table_size(c->moved) == g_hash_table_size(c->blocks))
            break;
        if (rt_n && (r = commit_add(c, rt_cl, rt_n, -1)) < 0) /* too small: never used */
            return r;
        rt_n = MAX(need, (uint64_t)s->rt_clusters);
        if (rt_n * s->cs > MAX_REFTABLE_BYTES)
            return -EFBIG;
        if ((r = commit_alloc(c, rt_n, &rt_cl)) < 0)
            return r;
    }
    rt_entries = rt_n * s->cs / 8;
    g_assert(rt_entries >= s->rt_entries);
    uint64_t *rt = g_new0(uint64_t, rt_entries);
    memcpy(rt, s->rt, s->rt_entries * 8);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, c->moved);
    while (g_hash_table_iter_next(&it, &k, &v))
        rt[*(gint64 *)k] = (uint64_t)*(gint64 *)v * s->cs;
    /* Write the blocks and the table, flush, switch, flush. */
    g_hash_table_iter_init(&it, c->blocks);
    while (g_hash_table_iter_next(&it, &k, &v))
        if ((r = qcow2_file_write(s, v, s->cs, rt[*(gint64 *)k])) < 0)
            goto fail;
    {
        g_autofree uint8_t *raw = g_malloc0(rt_n * s->cs);
        for (uint64_t i = 0; i < rt_entries; i++)
            put_be64(raw + 8 * i, rt[i]);
        if ((r = qcow2_file_write(s, raw, rt_n * s->cs, rt_cl * s->cs)) < 0)
            goto fail;
    }
    if ((r = node_flush(s->file)) < 0)
        goto fail;
    uint8_t hdr[36];
    put_be32(hdr, c->l1_size);
    put_be64(hdr + 4, l1_off);
    put_be64(hdr + 12, rt_cl * s->cs);
    put_be32(hdr + 20, (uint32_t)rt_n);
    put_be32(hdr + 24, nb);
    put_be64(hdr + 28, st_off);
    if ((r = qcow2_file_write(s, hdr, sizeof hdr, 36)) < 0) {
        s->broken = true; /* the header may or may not have changed */
        goto fail;
    }
    r = node_flush(s->file);
    /* The new state, in memory. */
    g_free(s->rt);
    s->rt = rt;
    s->rt_entries = rt_entries;
    s->rt_offset = rt_cl * s->cs;
    s->rt_clusters = (uint32_t)rt_n;
    g_hash_table_iter_init(&it, c->blocks);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        g_hash_table_iter_steal(&it);
        g_hash_table_replace(s->rblocks, k, v);
    }
    g_free(s->l1);
    s->l1 = c->l1;
    c->l1 = NULL;
    s->l1_offset = l1_off;
    s->l1_size = c->l1_size;
    qcow2_free_snapshots(s);
    s->snapshots = snaps;
    s->nb_snapshots = nb;
    s->snapshots_offset = st_off;
    s->snapshots_size = st_size;
    s->end = MAX(s->end, c->next);
    /* Tables may have moved or been freed: the cache starts afresh. */
    g_hash_table_remove_all(s->l2);
    if (r == 0 && s->file_can_trim) {
        for (guint i = 0; i < c->freed->len; i++) {
            uint64_t cl = g_array_index(c->freed, uint64_t, i);
            if (commit_refcount(c, cl) == 0 && (cl + 1) * s->cs <= node_size(s->file))
                node_trim(s->file, s->cs, cl * s->cs, 0); /* a hint */
        }
    }
    if (r < 0)
        s->broken = true;
    return r;

fail:
    g_free(rt);
    return r;
}

/* ---- the operations (BlockSnapshotOps) ---- */

static int find_snapshot(Qcow2 *s, const char *id, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if ((!id || strcmp(s->snapshots[i].id, id) == 0) && (!name || strcmp(s->snapshots[i].name, name) == 0))
            return (int)i;
    return -1;
}

static void lock_all(Qcow2 *s)
{
    g_rw_lock_writer_lock(&s->io_lock);
    g_mutex_lock(&s->lock);
}

static void unlock_all(Qcow2 *s)
{
    g_mutex_unlock(&s->lock);
    g_rw_lock_writer_unlock(&s->io_lock);
}

static GArray *qcow2_snapshot_list(void *o)
{
    Qcow2 *s = o;
    GArray *out = g_array_new(FALSE, TRUE, sizeof(BlockSnapshot));
    g_mutex_lock(&s->lock);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const Qcow2Snapshot *q = &s->snapshots[i];
        BlockSnapshot sn = {
            .id = g_strdup(q->id), .name = g_strdup(q->name),
            .date_sec = q->date_sec, .date_nsec = q->date_nsec,
            .vm_clock_nsec = q->vm_clock_nsec, .vm_state_size = q->vm_state_size,
            .disk_size = q->disk_size, .icount = (int64_t)q->icount,
        };
        g_array_append_val(out, sn);
    }
    g_mutex_unlock(&s->lock);
    return out;
}

/* A copy of the snapshot list with room for one more. */
static Qcow2Snapshot *copy_list(Qcow2 *s, uint32_t skip)
{
    Qcow2Snapshot *list = g_new0(Qcow2Snapshot, s->nb_snapshots + 1);
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (i == skip)
            continue;
        list[n] = s->snapshots[i];
        list[n].id = g_strdup(s->snapshots[i].id);
        list[n].name = g_strdup(s->snapshots[i].name);
        list[n].extra_unknown = s->snapshots[i].extra_size > SNAP_EXTRA
                                    ? g_memdup2(s->snapshots[i].extra_unknown, s->snapshots[i].extra_size - SNAP_EXTRA)
                                    : NULL;
        n++;
    }
    return list;
}

static void free_list(Qcow2Snapshot *list, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        snapshot_clear(&list[i]);
    g_free(list);
}

static int qcow2_snapshot_create(void *o, const BlockSnapshot *info)
{
    Qcow2 *s = o;
    if (s->read_only)
        return -EACCES;
    lock_all(s);
    int r = 0;
    Commit c;
    Qcow2Snapshot *list = NULL;
    g_autofree uint8_t *raw = NULL;
    uint32_t nb = s->nb_snapshots + 1;
    char idbuf[24];
    const char *id = info->id;
    if (!id || !*id) {
        unsigned long max = 0;
        for (uint32_t i = 0; i < s->nb_snapshots; i++)
            max = MAX(max, strtoul(s->snapshots[i].id, NULL, 10));
        g_snprintf(idbuf, sizeof idbuf, "%lu", max + 1);
        id = idbuf;
    }
    if (find_snapshot(s, id, NULL) >= 0) {
        unlock_all(s);
        return -EEXIST;
    }
    if (s->nb_snapshots >= MAX_SNAPSHOTS || strlen(id) > UINT16_MAX || strlen(info->name) > UINT16_MAX ||
        s->refcount_order == 0) {
        unlock_all(s);
        return -EFBIG;
    }
    if ((r = commit_begin(s, &c)) < 0)
        goto out;
    /* The snapshot's L1 table: the active one (flags are the active image's business). */
    raw = g_malloc0(MAX((uint64_t)s->l1_size * 8, (uint64_t)8));
    for (uint32_t i = 0; i < s->l1_size; i++)
        put_be64(raw + 8 * i, s->l1[i] & ~OFLAG_COPIED);
    uint64_t sn_l1;
    if ((r = commit_write_new(&c, raw, (uint64_t)s->l1_size * 8, &sn_l1)) < 0 ||
        (r = commit_walk(&c, s->l1, s->l1_size, 1)) < 0)
        goto out;
    c.l1 = g_memdup2(s->l1, (gsize)MAX(s->l1_size, 1u) * 8);
    if ((r = commit_fix_active(&c)) < 0)
        goto out;
    list = copy_list(s, UINT32_MAX);
    Qcow2Snapshot *sn = &list[nb - 1];
    sn->l1_offset = sn_l1;
    sn->l1_size = s->l1_size;
    sn->id = g_strdup(id);
    sn->name = g_strdup(info->name);
    sn->date_sec = info->date_sec;
    sn->date_nsec = info->date_nsec;
    sn->vm_clock_nsec = info->vm_clock_nsec;
    sn->vm_state_size = 0; /* blockd saves no VM state (docs/snapshots.md) */
    sn->disk_size = s->size;
    sn->icount = (uint64_t)info->icount;
    sn->extra_size = SNAP_EXTRA;
    if ((r = commit_finish(&c, list, nb)) == 0)
        list = NULL;
out:
    if (list)
        free_list(list, nb);
    commit_clear(&c);
    unlock_all(s);
    return r;
}

static int qcow2_snapshot_delete(void *o, const char *id, const char *name)
{
    Qcow2 *s = o;
    if (s->read_only)
        return -EACCES;
    lock_all(s);
    Commit c;
    int idx = find_snapshot(s, id, name), r;
    Qcow2Snapshot *list = NULL;
    uint32_t nb = s->nb_snapshots ? s->nb_snapshots - 1 : 0;
    if (idx < 0) {
        unlock_all(s);
        return -ENOENT;
    }
    const Qcow2Snapshot *sn = &s->snapshots[idx];
    g_autofree uint64_t *l1 = NULL;
    if ((r = commit_begin(s, &c)) < 0 || (r = read_l1(s, sn->l1_offset, sn->l1_size, &l1)) < 0 ||
        (r = commit_walk(&c, l1, sn->l1_size, -1)) < 0 ||
        (r = commit_add(&c, sn->l1_offset >> s->cluster_bits, DIV_UP((uint64_t)sn->l1_size * 8, s->cs), -1)) < 0)
        goto out;
    c.l1 = g_memdup2(s->l1, (gsize)MAX(s->l1_size, 1u) * 8);
    if ((r = commit_fix_active(&c)) < 0)
        goto out;
    list = copy_list(s, (uint32_t)idx);
    if ((r = commit_finish(&c, list, nb)) == 0)
        list = NULL;
out:
    if (list)
        free_list(list, nb);
    commit_clear(&c);
    unlock_all(s);
    return r;
}

static int qcow2_snapshot_revert(void *o, const char *id_or_name)
{
    Qcow2 *s = o;
    if (s->read_only)
        return -EACCES;
    lock_all(s);
    Commit c;
    int idx = find_snapshot(s, id_or_name, NULL), r;
    Qcow2Snapshot *list = NULL;
    uint32_t nb = s->nb_snapshots;
    if (idx < 0)
        idx = find_snapshot(s, NULL, id_or_name);
    if (idx < 0) {
        unlock_all(s);
        return -ENOENT;
    }
    const Qcow2Snapshot *sn = &s->snapshots[idx];
    if (sn->disk_size != s->size) {
        unlock_all(s);
        return -ENOTSUP; /* QEMU's qcow2_snapshot_goto refuses a snapshot of another disk size with ENOTSUP too */
    }
    g_autofree uint64_t *l1 = NULL;
    if ((r = commit_begin(s, &c)) < 0 || (r = read_l1(s, sn->l1_offset, sn->l1_size, &l1)) < 0)
        goto out;
    /* Entries past the active table's size would be VM state (QEMU keeps it
     * past the disk's end): the active image does not take them. */
    c.l1 = g_new0(uint64_t, MAX(s->l1_size, 1u));
    for (uint32_t i = 0; i < MIN(s->l1_size, sn->l1_size); i++)
        c.l1[i] = l1[i] & ~OFLAG_COPIED;
    if ((r = commit_walk(&c, s->l1, s->l1_size, -1)) < 0 || (r = commit_walk(&c, c.l1, s->l1_size, 1)) < 0 ||
        (r = commit_fix_active(&c)) < 0)
        goto out;
    list = copy_list(s, UINT32_MAX);
    if ((r = commit_finish(&c, list, nb)) == 0)
        list = NULL;
out:
    if (list)
        free_list(list, nb + 1);
    commit_clear(&c);
    unlock_all(s);
    return r;
}

const BlockSnapshotOps qcow2_snapshot_ops = {
    .list = qcow2_snapshot_list,
    .create = qcow2_snapshot_create,
    .delete = qcow2_snapshot_delete,
    .revert = qcow2_snapshot_revert,
};
