/* Unit tests for typed node options. */
#include "block/options.h"

static JsonObject *obj_from(const char *json)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

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

static void test_getters_and_leftovers(void)
{
    JsonObject *o = obj_from("{\"size\": \"1M\", \"ro\": \"on\", \"n\": 7, \"name\": \"x\", \"extra\": \"1\"}");
    BlockOptions *opts = block_options_new(o, "");
    GError *err = NULL;
    uint64_t size = 0, n = 0;
    bool ro = false;
    g_assert_true(block_options_get_size(opts, "size", true, &size, &err));
    g_assert_cmpuint(size, ==, 1 << 20);
    g_assert_true(block_options_get_bool(opts, "ro", &ro, &err));
    g_assert_true(ro);
    g_assert_true(block_options_get_uint(opts, "n", 10, &n, &err));
    g_assert_cmpuint(n, ==, 7);
    g_assert_cmpstr(block_options_get_str(opts, "name", true, &err), ==, "x");
    g_assert_false(block_options_check_all_used(opts, &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'extra' is unexpected");
    g_clear_error(&err);
    g_assert_null(block_options_get_str(opts, "missing", true, &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'missing' is missing");
    g_clear_error(&err);
    block_options_free(opts);
    json_object_unref(o);
}

static void test_bad_values(void)
{
    JsonObject *o = obj_from("{\"size\": \"12Q\", \"ro\": \"maybe\", \"n\": \"11\"}");
    BlockOptions *opts = block_options_new(o, "file.");
    GError *err = NULL;
    uint64_t v = 0;
    bool b = false;
    g_assert_false(block_options_get_size(opts, "size", true, &v, &err));
    g_assert_nonnull(strstr(err->message, "'file.size'"));
    g_clear_error(&err);
    g_assert_false(block_options_get_bool(opts, "ro", &b, &err));
    g_assert_nonnull(strstr(err->message, "'file.ro' expects 'on' or 'off'"));
    g_clear_error(&err);
    g_assert_false(block_options_get_uint(opts, "n", 10, &v, &err));
    g_clear_error(&err);
    block_options_free(opts);
    json_object_unref(o);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/options/sizes", test_sizes);
    g_test_add_func("/options/getters", test_getters_and_leftovers);
    g_test_add_func("/options/bad-values", test_bad_values);
    return g_test_run();
}
