/* Unit tests of the option values the schema does not check (block/options.h). */
#include "block/options.h"

static void test_sizes(void)
{
    uint64_t v;
    g_assert_true(block_parse_size("1G", &v));
    g_assert_cmpuint(v, ==, 1ull << 30);
    g_assert_true(block_parse_size("512", &v));
    g_assert_cmpuint(v, ==, 512);
    g_assert_true(block_parse_size("64k", &v));
    g_assert_cmpuint(v, ==, 65536);
    g_assert_true(block_parse_size("2T", &v));
    g_assert_cmpuint(v, ==, 2ull << 40);
    g_assert_false(block_parse_size("12Q", &v));
    g_assert_false(block_parse_size("-1", &v));
    g_assert_false(block_parse_size("1GiB", &v));
    g_assert_false(block_parse_size("", &v));
    g_assert_false(block_parse_size("99999999999999999999", &v));
    g_assert_false(block_parse_size("16384P", &v));
}

static void test_int_sizes(void)
{
    uint64_t v = 1;
    GError *err = NULL;
    g_assert_true(block_option_size("offset", 0, &v, &err));
    g_assert_cmpuint(v, ==, 0);
    g_assert_true(block_option_size("offset", INT64_MAX, &v, &err));
    g_assert_cmpuint(v, ==, INT64_MAX);
    g_assert_false(block_option_size("l2-cache-size", -1, &v, &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'l2-cache-size' expects a non-negative number below 2^64 "
                                      "(optional suffix k, M, G, T, P or E)");
    g_assert_cmpuint(v, ==, INT64_MAX);
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/options/sizes", test_sizes);
    g_test_add_func("/options/int-sizes", test_int_sizes);
    return g_test_run();
}
