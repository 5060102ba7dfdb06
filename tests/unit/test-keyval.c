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
    parse_fails("a=1,a.b=2", "Parameters 'a.*' used inconsistently");
    parse_fails("a.b=1,a=2", "Parameters 'a.*' used inconsistently");
    parse_fails("a.b=1,a.b.c.d=2", "Parameters 'a.b.*' used inconsistently");
    parse_fails("a..b=1", "Invalid parameter 'a..b'");
}

/* The JSON text of `s` parsed, for comparing whole structures. */
static char *parse_to_json(const char *s)
{
    JsonObject *o = parse_ok(s);
    JsonNode *root = json_node_alloc();
    json_node_init_object(root, o);
    char *text = json_to_string(root, FALSE);
    json_node_unref(root);
    json_object_unref(o);
    return text;
}

static void check_json(const char *s, const char *expected)
{
    g_autofree char *text = parse_to_json(s);
    g_assert_cmpstr(text, ==, expected);
}

static void test_lists(void)
{
    /* Numeric keys become arrays, ordered by index, not by appearance. */
    check_json("bitmaps.0=b0,bitmaps.1=b1", "{\"bitmaps\":[\"b0\",\"b1\"]}");
    check_json("a.1=y,a.0=x,a.2=z", "{\"a\":[\"x\",\"y\",\"z\"]}");
    check_json("a.10=k,a.0=0,a.1=1,a.2=2,a.3=3,a.4=4,a.5=5,a.6=6,a.7=7,a.8=8,a.9=9",
               "{\"a\":[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"k\"]}");
    /* Elements that are objects ({node, name}), and lists inside them. */
    check_json("type=nbd,bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.1=c",
               "{\"type\":\"nbd\",\"bitmaps\":[{\"node\":\"n\",\"name\":\"b\"},\"c\"]}");
    check_json("x.0.y.0=a,x.0.y.1=b", "{\"x\":[{\"y\":[\"a\",\"b\"]}]}");
    /* Non-numeric keys stay objects; keys with digits after letters are names. */
    check_json("a.b0=1,a.c=2", "{\"a\":{\"b0\":\"1\",\"c\":\"2\"}}");
    /* QEMU's messages for gaps and mixtures. */
    parse_fails("bitmaps.0=b0,bitmaps.2=b1", "Parameter 'bitmaps.1' missing");
    parse_fails("bitmaps.1=b0", "Parameter 'bitmaps.0' missing");
    parse_fails("bitmaps.01=b0", "Parameter 'bitmaps.0' missing");
    parse_fails("bitmaps.0=b0,bitmaps.x=b1", "Parameters 'bitmaps.*' used inconsistently");
    parse_fails("a.b.0=1,a.b.c=2", "Parameters 'a.b.*' used inconsistently");
    parse_fails("a.b.1=1", "Parameter 'a.b.0' missing");
    parse_fails("a.99999999999=1", "Parameter 'a.0' missing");
    /* The JSON form is not touched: an object with numeric keys stays one. */
    JsonObject *o = parse_ok("{\"a\": {\"0\": \"x\"}}");
    g_assert_nonnull(json_object_get_object_member(o, "a"));
    json_object_unref(o);
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
    g_test_add_func("/keyval/lists", test_lists);
    return g_test_run();
}
