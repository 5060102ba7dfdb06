/* The hierarchical bitmap against a naive one-byte-per-bit reference. */
#include "bitmaps/hbitmap.h"

#include <glib.h>
#include <string.h>

typedef struct Reference {
    uint64_t n;
    uint8_t *bits;
} Reference;

static int64_t ref_next(const Reference *r, uint64_t start, uint64_t end, uint8_t value)
{
    for (uint64_t i = start; i < end && i < r->n; i++)
        if (r->bits[i] == value)
            return (int64_t)i;
    return -1;
}

static uint64_t ref_count(const Reference *r)
{
    uint64_t c = 0;
    for (uint64_t i = 0; i < r->n; i++)
        c += r->bits[i];
    return c;
}

/* Compares everything observable: count, every bit, and searches from random points. */
static void check_equal(const HBitmap *hb, const Reference *r, GRand *rng)
{
    g_assert_cmpuint(hbitmap_count(hb), ==, ref_count(r));
    for (uint64_t i = 0; i < r->n; i++)
        g_assert_cmpint(hbitmap_get(hb, i), ==, r->bits[i]);
    for (int k = 0; k < 20; k++) {
        uint64_t s = r->n ? (uint64_t)g_rand_int_range(rng, 0, (gint32)r->n) : 0;
        uint64_t e = s + (uint64_t)g_rand_int_range(rng, 0, (gint32)r->n + 1);
        g_assert_cmpint(hbitmap_next_set(hb, s, e), ==, ref_next(r, s, e, 1));
        g_assert_cmpint(hbitmap_next_clear(hb, s, e), ==, ref_next(r, s, e, 0));
    }
    /* Walking all dirty runs gives exactly the reference's runs. */
    uint64_t pos = 0;
    while (pos < r->n) {
        int64_t d = hbitmap_next_set(hb, pos, r->n);
        g_assert_cmpint(d, ==, ref_next(r, pos, r->n, 1));
        if (d < 0)
            break;
        int64_t c = hbitmap_next_clear(hb, (uint64_t)d, r->n);
        g_assert_cmpint(c, ==, ref_next(r, (uint64_t)d, r->n, 0));
        pos = c < 0 ? r->n : (uint64_t)c;
    }
}

static void random_ops(uint64_t n, int ops, guint32 seed)
{
    GRand *rng = g_rand_new_with_seed(seed);
    HBitmap *hb = hbitmap_new(n);
    Reference r = { n, g_malloc0(n ? n : 1) };
    for (int op = 0; op < ops; op++) {
        uint64_t start = (uint64_t)g_rand_int_range(rng, 0, (gint32)n);
        /* Mostly short ranges, sometimes long ones crossing many words. */
        uint64_t maxlen = g_rand_int_range(rng, 0, 4) == 0 ? n - start : MIN(n - start, 200);
        uint64_t len = (uint64_t)g_rand_int_range(rng, 0, (gint32)maxlen + 1);
        switch (g_rand_int_range(rng, 0, 10)) {
        case 0 ... 5: {
            uint64_t before = 0;
            for (uint64_t i = start; i < start + len; i++)
                before += !r.bits[i];
            g_assert_cmpuint(hbitmap_set(hb, start, len), ==, before);
            memset(r.bits + start, 1, len);
            break;
        }
        case 6 ... 8:
            hbitmap_reset(hb, start, len);
            memset(r.bits + start, 0, len);
            break;
        default:
            g_assert_cmpint(hbitmap_all_set(hb, start, len), ==,
                            ref_next(&r, start, start + len, 0) < 0);
            break;
        }
        if (op % 50 == 0)
            check_equal(hb, &r, rng);
    }
    check_equal(hb, &r, rng);

    /* Serialisation round trip and copy. */
    g_autofree uint8_t *buf = g_malloc(hbitmap_serialized_size(hb) + 1);
    hbitmap_serialize(hb, buf);
    HBitmap *back = hbitmap_new(n);
    g_assert_true(hbitmap_deserialize(back, buf));
    check_equal(back, &r, rng);
    HBitmap *copy = hbitmap_copy(hb);
    check_equal(copy, &r, rng);

    /* Merge: copy | random other == reference | other. */
    HBitmap *other = hbitmap_new(n);
    for (int k = 0; k < 30; k++) {
        uint64_t s = (uint64_t)g_rand_int_range(rng, 0, (gint32)n);
        uint64_t l = (uint64_t)g_rand_int_range(rng, 0, (gint32)MIN(n - s, 300) + 1);
        hbitmap_set(other, s, l);
        memset(r.bits + s, 1, l);
    }
    hbitmap_merge(copy, other);
    check_equal(copy, &r, rng);

    hbitmap_reset_all(copy);
    memset(r.bits, 0, n);
    check_equal(copy, &r, rng);

    hbitmap_free(other);
    hbitmap_free(copy);
    hbitmap_free(back);
    hbitmap_free(hb);
    g_free(r.bits);
    g_rand_free(rng);
}

static void test_random_small(void)
{
    for (guint32 seed = 1; seed <= 40; seed++)
        random_ops(1 + seed * 7, 400, seed);
}

static void test_random_sizes(void)
{
    static const uint64_t sizes[] = { 63, 64, 65, 4095, 4096, 4097, 262143, 262145 };
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++)
        random_ops(sizes[i], 600, (guint32)(100 + i));
}

static void test_sparse_huge(void)
{
    /* 1 TiB at 64 KiB granularity: 16 Mi bits.  Memory within 10 % of the bits. */
    uint64_t n = 1ull << 24;
    HBitmap *hb = hbitmap_new(n);
    g_assert_cmpuint(hbitmap_memory(hb), <=, (n / 8) * 110 / 100);
    uint64_t expect[5] = { 0, 12345, 7777777, n - 65, n - 1 };
    for (int i = 0; i < 5; i++)
        hbitmap_set(hb, expect[i], 1);
    uint64_t pos = 0;
    for (int i = 0; i < 5; i++) {
        int64_t d = hbitmap_next_set(hb, pos, n);
        g_assert_cmpint(d, ==, (int64_t)expect[i]);
        pos = (uint64_t)d + 1;
    }
    g_assert_cmpint(hbitmap_next_set(hb, pos, n), ==, -1);
    hbitmap_reset(hb, 0, n);
    g_assert_cmpuint(hbitmap_count(hb), ==, 0);
    g_assert_cmpint(hbitmap_next_set(hb, 0, n), ==, -1);
    hbitmap_set(hb, 0, n);
    g_assert_cmpuint(hbitmap_count(hb), ==, n);
    g_assert_cmpint(hbitmap_next_clear(hb, 0, n), ==, -1);
    hbitmap_free(hb);
}

static void test_padding_rejected(void)
{
    HBitmap *hb = hbitmap_new(10);
    uint8_t buf[8] = { 0, 0x08, 0, 0, 0, 0, 0, 0 }; /* bit 11: beyond the end */
    g_assert_false(hbitmap_deserialize(hb, buf));
    buf[1] = 0x02; /* bit 9 */
    g_assert_true(hbitmap_deserialize(hb, buf));
    g_assert_cmpuint(hbitmap_count(hb), ==, 1);
    g_assert_true(hbitmap_get(hb, 9));
    hbitmap_free(hb);
}

typedef struct SetterArgs {
    HBitmap *hb;
    uint64_t first;
} SetterArgs;

static gpointer setter_thread(gpointer data)
{
    SetterArgs *a = data;
    for (uint64_t i = a->first; i < hbitmap_size(a->hb); i += 4)
        hbitmap_set(a->hb, i, 1);
    return NULL;
}

static void test_concurrent_setters(void)
{
    /* Four threads set interleaved bits of the same words: no update is lost. */
    HBitmap *hb = hbitmap_new(1 << 20);
    SetterArgs args[4];
    GThread *threads[4];
    for (int t = 0; t < 4; t++) {
        args[t] = (SetterArgs){ hb, (uint64_t)t };
        threads[t] = g_thread_new("setter", setter_thread, &args[t]);
    }
    for (int t = 0; t < 4; t++)
        g_thread_join(threads[t]);
    g_assert_cmpuint(hbitmap_count(hb), ==, 1 << 20);
    g_assert_cmpint(hbitmap_next_clear(hb, 0, 1 << 20), ==, -1);
    hbitmap_free(hb);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/hbitmap/random-small", test_random_small);
    g_test_add_func("/hbitmap/random-sizes", test_random_sizes);
    g_test_add_func("/hbitmap/sparse-huge", test_sparse_huge);
    g_test_add_func("/hbitmap/padding-rejected", test_padding_rejected);
    g_test_add_func("/hbitmap/concurrent-setters", test_concurrent_setters);
    return g_test_run();
}
