/* Unit tests for the key=value option parser. */
#include "server/keyval.h"

static JsonObject *parse_ok(const char *s)
{
    GError *err = NULL;
    JsonObject *o = keyval_parse(s, &err);
    g_assert_no_error(err);
    g_assert_nonnull(o);
    return o;
}

static void parse_fails(const char *s, const char *needle)
{
    GError *err = NULL;
    JsonObject *o = keyval_parse(s, &err);
    g_assert_null(o);
    g_assert_nonnull(err);
    g_assert_nonnull(strstr(err->message, needle));
    g_error_free(err);
}

static void test_flat(void)
{
    JsonObject *o = parse_ok("driver=file,node-name=f0,filename=/tmp/x.img");
    g_assert_cmpstr(json_object_get_string_member(o, "driver"), ==, "file");
    g_assert_cmpstr(json_object_get_string_member(o, "node-name"), ==, "f0");
    g_assert_cmpstr(json_object_get_string_member(o, "filename"), ==, "/tmp/x.img");
    g_assert_cmpuint(json_object_get_size(o), ==, 3);
    json_object_unref(o);
}

static void test_dotted(void)
{
    JsonObject *o = parse_ok("addr.type=unix,addr.path=/tmp/s,max-connections=4");
    JsonObject *addr = json_object_get_object_member(o, "addr");
    g_assert_nonnull(addr);
    g_assert_cmpstr(json_object_get_string_member(addr, "type"), ==, "unix");
    g_assert_cmpstr(json_object_get_string_member(addr, "path"), ==, "/tmp/s");
    g_assert_cmpstr(json_object_get_string_member(o, "max-connections"), ==, "4");
    json_object_unref(o);
}

static void test_escaped_comma(void)
{
    JsonObject *o = parse_ok("description=a,,b,,c,id=e");
    g_assert_cmpstr(json_object_get_string_member(o, "description"), ==, "a,b,c");
    g_assert_cmpstr(json_object_get_string_member(o, "id"), ==, "e");
    json_object_unref(o);
}

static void test_empty_value(void)
{
    JsonObject *o = parse_ok("name=,id=x");
    g_assert_cmpstr(json_object_get_string_member(o, "name"), ==, "");
    json_object_unref(o);
}

static void test_json(void)
{
    JsonObject *o = parse_ok("{\"driver\": \"memory\", \"size\": 1048576}");
    g_assert_cmpint(json_object_get_int_member(o, "size"), ==, 1048576);
    json_object_unref(o);
    parse_fails("{\"driver\": ", "");
    parse_fails("[1]", "Expected '='");
}

static void test_errors(void)
{
    parse_fails("driver", "Expected '=' after parameter 'driver'");
    parse_fails("=x", "Expected parameter");
    parse_fails("a=1,a=2", "Parameter 'a' appears more than once");
    parse_fails("a=1,a.b=2", "Parameter 'a.b' used inconsistently");
    parse_fails("a.b=1,a=2", "Parameter 'a' used inconsistently");
    parse_fails("a..b=1", "Invalid parameter 'a..b'");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/keyval/flat", test_flat);
    g_test_add_func("/keyval/dotted", test_dotted);
    g_test_add_func("/keyval/escaped-comma", test_escaped_comma);
    g_test_add_func("/keyval/empty-value", test_empty_value);
    g_test_add_func("/keyval/json", test_json);
    g_test_add_func("/keyval/errors", test_errors);
    return g_test_run();
}
