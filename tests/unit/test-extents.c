/* Unit tests for extent lists (nbdkit's rules). */
#include <errno.h>
#include "block/extents.h"
#include <glib.h>

static void check(BlockExtents *e, size_t i, uint64_t off, uint64_t len, uint32_t type)
{
    BlockExtent x = extents_get(e, i);
    g_assert_cmpuint(x.offset, ==, off);
    g_assert_cmpuint(x.length, ==, len);
    g_assert_cmpuint(x.type, ==, type);
}

static void test_basic_merge(void)
{
    BlockExtents *e = extents_new(0, 1000);
    g_assert_cmpint(extents_add(e, 0, 100, 0), ==, 0);
    g_assert_cmpint(extents_add(e, 100, 100, 0), ==, 0); /* merged */
    g_assert_cmpint(extents_add(e, 200, 50, 3), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 2);
    check(e, 0, 0, 200, 0);
    check(e, 1, 200, 50, 3);
    g_assert_cmpuint(extents_next_offset(e), ==, 250);
    extents_free(e);
}

static void test_gap_and_start(void)
{
    BlockExtents *e = extents_new(100, 1000);
    g_assert_cmpint(extents_add(e, 0, 50, 3), ==, 0);      /* before start: ignored */
    g_assert_cmpuint(extents_count(e), ==, 0);
    g_assert_cmpint(extents_add(e, 50, 100, 3), ==, 0);    /* straddles: trimmed */
    check(e, 0, 100, 50, 3);
    g_assert_cmpint(extents_add(e, 200, 10, 0), ==, -ERANGE); /* gap */
    extents_free(e);

    e = extents_new(100, 1000);
    g_assert_cmpint(extents_add(e, 150, 10, 0), ==, -ERANGE); /* first must cover start */
    extents_free(e);
}

static void test_clip_end_and_zero_length(void)
{
    BlockExtents *e = extents_new(0, 100);
    g_assert_cmpint(extents_add(e, 0, 0, 1), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 0);
    g_assert_cmpint(extents_add(e, 0, 150, 2), ==, 0);
    check(e, 0, 0, 100, 2);
    g_assert_cmpint(extents_add(e, 150, 10, 0), ==, 0); /* beyond end: ignored */
    g_assert_cmpuint(extents_count(e), ==, 1);
    extents_free(e);
}

static void test_bad_range(void)
{
    errno = 0;
    g_assert_null(extents_new(10, 5));
    g_assert_cmpint(errno, ==, ERANGE);
    g_assert_null(extents_new(0, (uint64_t)INT64_MAX + 1));
    BlockExtents *e = extents_new(7, 7);
    g_assert_nonnull(e);
    extents_free(e);
    extents_free(NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/extents/merge", test_basic_merge);
    g_test_add_func("/extents/gap-and-start", test_gap_and_start);
    g_test_add_func("/extents/clip-end", test_clip_end_and_zero_length);
    g_test_add_func("/extents/bad-range", test_bad_range);
    return g_test_run();
}
