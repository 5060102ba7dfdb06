/* The qcow2 L2 table cache: tables by their host offset (s->l2, one entry
 * per offset), the least recently used evicted beyond s->l2_max.  Tables
 * are written through (qcow2-cluster.c writes the entries it changes to
 * the file and to the cached copy), so eviction only drops memory. */
#include "block/drivers/qcow2-internal.h"

#include <errno.h>

/* Adds a table; the cache holds at most one per offset (keyed by &t->offset:
 * a second one would replace the first's value but keep its freed key). */
static void l2_insert(Qcow2 *s, L2Table *t)
{
    g_assert(!g_hash_table_contains(s->l2, &t->offset));
    g_hash_table_insert(s->l2, &t->offset, t);
}

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

/* The L2 table at `off` (cached). */
int qcow2_l2_load(Qcow2 *s, uint64_t off, L2Table **out)
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
        l2_insert(s, t);
        t->used = ++s->l2_clock;
        l2_evict(s);
        t = g_hash_table_lookup(s->l2, &off);
        if (!t) /* cannot happen: the newest is never the oldest */
            return -EIO;
    }
    g_assert(t->offset == off);
    t->used = ++s->l2_clock;
    *out = t;
    return 0;
}

bool qcow2_l2_cached(Qcow2 *s, uint64_t off)
{
    return g_hash_table_contains(s->l2, &off);
}

int qcow2_l2_new(Qcow2 *s, uint64_t off, L2Table **out)
{
    g_assert((off & (s->cs - 1)) == 0);
    L2Table *t = g_new0(L2Table, 1);
    t->offset = off;
    t->e = g_new0(uint64_t, s->l2_entries);
    t->used = ++s->l2_clock;
    l2_insert(s, t);
    l2_evict(s);
    return qcow2_l2_load(s, off, out);
}
