/* block/backing-name.c: backing file names that are not paths, as the
 * options of the node to open.  The rbd: cases follow QEMU's
 * qemu_rbd_parse_filename (escapes, namespace, snapshot, conf and id). */
#include "block/backing-name.h"

#include <glib.h>
#include <gio/gio.h>
#include "qapi/qapi-visit.h"

/* The options `name` with format `fmt` gives, as JSON, equal to `expected`. */
static void check_options(const char *name, const char *fmt, const char *expected)
{
    g_autoptr(GError) err = NULL;
    BlockdevOptions *o = backing_name_options(name, fmt, &err);
    g_assert_no_error(err);
    g_assert_nonnull(o);
    g_autoptr(JsonNode) got = qapi_out_BlockdevOptions(o);
    g_autoptr(JsonNode) want = json_from_string(expected, NULL);
    g_assert_nonnull(want);
    if (!json_node_equal(got, want)) {
        g_autofree char *s = json_to_string(got, FALSE);
        g_test_message("%s -> %s, expected %s", name, s, expected);
        g_test_fail();
    }
    qapi_free_BlockdevOptions(o);
}

/* `name` with `fmt` fails with a message containing `text`. */
static void check_error(const char *name, const char *fmt, const char *text)
{
    g_autoptr(GError) err = NULL;
    g_assert_null(backing_name_options(name, fmt, &err));
    g_assert_nonnull(err);
    if (!strstr(err->message, text)) {
        g_test_message("%s: '%s' lacks '%s'", name, err->message, text);
        g_test_fail();
    }
}

static void test_is_path(void)
{
    g_assert_true(backing_name_is_path("base.qcow2"));
    g_assert_true(backing_name_is_path("/var/lib/images/base.raw"));
    g_assert_true(backing_name_is_path("dir:with:colons/base"));
    g_assert_false(backing_name_is_path("json:{\"driver\": \"rbd\"}"));
    g_assert_false(backing_name_is_path("rbd:pool/image"));
    g_assert_false(backing_name_is_path("nbd+unix:///?socket=/run/s"));
    g_assert_false(backing_name_is_path("nbd://example.com/x"));
    g_assert_false(backing_name_is_path("https://example.com/base.img"));
}

/* QEMU's legacy rbd: names: pool, namespace/image, @snapshot, conf and id,
 * backslash escapes; the recorded format wraps the protocol node. */
static void test_rbd(void)
{
    check_options("rbd:rbd/base", "rbd",
                  "{\"driver\": \"rbd\", \"pool\": \"rbd\", \"namespace\": \"\", \"image\": \"base\"}");
    check_options("rbd:pool/ns/img@snap1:conf=/etc/ceph/a\\:b.conf:id=admin", "raw",
                  "{\"driver\": \"raw\", \"file\": {\"driver\": \"rbd\", \"pool\": \"pool\", \"namespace\": \"ns\","
                  " \"image\": \"img\", \"conf\": \"/etc/ceph/a:b.conf\", \"snapshot\": \"snap1\","
                  " \"user\": \"admin\"}}");
    check_options("rbd:p\\/q/i\\@j", "rbd",
                  "{\"driver\": \"rbd\", \"pool\": \"p/q\", \"namespace\": \"\", \"image\": \"i@j\"}");
    check_error("rbd:image-without-pool", "raw", "Pool name is required");
    check_error("rbd:p/i:conf", "raw", "conf option conf has no value");
    check_error("rbd:p/i:mon_host=1.2.3.4", "raw", "option 'mon_host' is not supported");
}

/* json: names, nested or flattened (QEMU flattens and crumples them). */
static void test_json(void)
{
    const char *nested = "{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", \"path\": \"/run/s\"}}";
    check_options("json:{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", \"path\": \"/run/s\"}}", "nbd",
                  nested);
    check_options("json:{\"server.path\": \"/run/s\", \"driver\": \"nbd\", \"server.type\": \"unix\"}", "nbd",
                  nested);
    check_options("json:{\"driver\": \"raw\", \"file.driver\": \"nbd\", \"file\": {\"server.type\": \"unix\"},"
                  " \"file.server.path\": \"/run/s\"}", "raw",
                  "{\"driver\": \"raw\", \"file\": {\"driver\": \"nbd\", \"server\": {\"type\": \"unix\","
                  " \"path\": \"/run/s\"}}}");
    /* A protocol name under a recorded format becomes that format's file. */
    check_options("json:{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", \"path\": \"/run/s\"}}", "qcow2",
                  "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"nbd\", \"server\": {\"type\": \"unix\","
                  " \"path\": \"/run/s\"}}}");
    /* A format name needs no recorded format. */
    check_options("json:{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"/b\"}}", NULL,
                  "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"/b\"}}");
    check_error("json:{\"driver\": ", "raw", "Could not parse the JSON options");
    check_error("json:[1]", "raw", "not an object");
    check_error("json:{\"file\": \"x\", \"file.driver\": \"nbd\", \"driver\": \"raw\"}", "raw",
                "both as a value and as an object");
    check_error("json:{\"server\": {}}", "nbd", "names no driver");
    check_error("json:{\"driver\": {\"a\": 1}}", "nbd", "names no driver");
    check_error("json:{\"\": \"rbd\", \"driver\": \"rbd\"}", "rbd", "Invalid key ''");
    check_error("json:{\"server..path\": \"/s\", \"driver\": \"nbd\"}", "nbd", "Invalid key 'server..path'");
    check_error("json:{\"driver\": \"nbd\", \"server\": {\"type\": \"unix\", \"path\": \"/s\"}}", NULL,
                "has no recorded format");
    check_error("json:{\"driver\": \"raw\", \"file\": {\"driver\": \"file\", \"filename\": \"/b\"}}", "qcow2",
                "is driver 'raw' but the image records backing format 'qcow2'");
    check_error("json:{\"driver\": \"nbd\", \"bogus\": 1}", "nbd", "bogus");
}

/* NBD URIs: the same options blockd's drive targets use. */
static void test_nbd_uri(void)
{
    check_options("nbd+unix:///exp?socket=/run/s", "raw",
                  "{\"driver\": \"raw\", \"file\": {\"driver\": \"nbd\", \"server\": {\"type\": \"unix\","
                  " \"path\": \"/run/s\"}, \"export\": \"exp\"}}");
    check_error("nbds://h/x", "raw", "TLS needs credentials");
    check_error("https://example.com/base.img", "raw", "unsupported backing file name");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/backing-name/is-path", test_is_path);
    g_test_add_func("/backing-name/rbd", test_rbd);
    g_test_add_func("/backing-name/json", test_json);
    g_test_add_func("/backing-name/nbd-uri", test_nbd_uri);
    return g_test_run();
}
