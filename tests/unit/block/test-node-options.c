/* Nodes from their parsed options (BlockdevOptions): a struct built in C
 * opens a driver without any JSON; command-line strings (keyval) reach the
 * drivers as numbers; nested options make implicit children that inherit
 * read-only and leave with a failed parent; what the schema cannot check
 * fails with the drivers' texts (QEMU's). */
#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "block/node.h"
#include "tests/unit/node-json.h"

/* A node from keyval-style JSON text (every scalar a string), or NULL with *errp set. */
static BlockNode *create_keyval(const char *text, GError **errp)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, text, -1, NULL));
    return test_node_create(json_node_get_object(json_parser_get_root(p)), true, errp);
}

static void test_struct_in_c(void)
{
    /* null-co from a struct: its default size is QEMU's 1 GiB. */
    BlockdevOptions o = {
        .driver = BLOCKDEV_DRIVER_NULL_CO,
        .has_node_name = true,
        .node_name = (char *)"n",
        .has_read_only = true,
        .read_only = true,
    };
    g_autoptr(GError) err = NULL;
    BlockNode *n = node_create(&o, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node_size(n), ==, 1u << 30);
    g_assert_true(node_read_only(n));
    g_assert_cmpstr(node_driver_name(n), ==, "null-co");
    g_assert_true(node_delete("n", NULL));

    o.u.null_co.has_size = true;
    o.u.null_co.size = -1;
    g_assert_null(node_create(&o, &err));
    g_assert_cmpstr(err->message, ==,
                    "Parameter 'size' expects a non-negative number below 2^64 (optional suffix k, M, G, T, P or E)");
    g_assert_null(node_find("n"));
}

static void test_keyval_sizes(void)
{
    /* --blockdev driver=raw,node-name=r,file.driver=memory,file.size=1M,offset=64k,size=512k,read-only=on */
    g_autoptr(GError) err = NULL;
    BlockNode *r = create_keyval("{\"driver\": \"raw\", \"node-name\": \"r\", \"read-only\": \"on\","
                                 " \"offset\": \"64k\", \"size\": \"512k\","
                                 " \"file\": {\"driver\": \"memory\", \"size\": \"1M\"}}", &err);
    g_assert_no_error(err);
    g_assert_cmpuint(node_size(r), ==, 512 * 1024);
    BlockNode *file = node_find("r-file");   /* the implicit child's name */
    g_assert_nonnull(file);
    g_assert_cmpuint(node_size(file), ==, 1024 * 1024);
    g_assert_true(node_read_only(file));     /* inherited from the parent */
    g_assert_true(node_delete("r", NULL));
    g_assert_null(node_find("r-file"));      /* left with its parent */

    g_assert_null(create_keyval("{\"driver\": \"memory\", \"node-name\": \"m\", \"size\": \"1X\"}", &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'size' expects size");
}

static void test_driver_checks(void)
{
    g_autoptr(GError) err = NULL;
    /* The window does not fit: the implicit child goes with the failure. */
    g_assert_null(test_node_create_text("{\"driver\": \"raw\", \"node-name\": \"w\", \"offset\": 4096,"
                                        " \"file\": {\"driver\": \"memory\", \"size\": 1024}}", &err));
    g_assert_cmpstr(err->message, ==, "Offset (4096) cannot be greater than size of the containing file (1024)");
    g_assert_null(node_find("w-file"));
    g_clear_error(&err);

    /* Only file and rbd take cache; the others refuse it by name. */
    g_assert_null(test_node_create_text("{\"driver\": \"memory\", \"node-name\": \"c\", \"size\": 512,"
                                        " \"cache\": {\"direct\": false}}", &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'cache' is unexpected");
    g_assert_null(node_find("c"));
    g_clear_error(&err);

    /* A child by name must exist. */
    g_assert_null(test_node_create_text("{\"driver\": \"raw\", \"node-name\": \"x\", \"file\": \"nowhere\"}", &err));
    g_assert_cmpstr(err->message, ==, "Cannot find device='nowhere' nor node-name='nowhere'");
    g_clear_error(&err);

    /* nbd servers by file descriptor are not supported. */
    g_assert_null(test_node_create_text("{\"driver\": \"nbd\", \"node-name\": \"d\","
                                        " \"server\": {\"type\": \"fd\", \"str\": \"3\"}}", &err));
    g_assert_cmpstr(err->message, ==, "Parameter 'server.type' does not accept value 'fd'");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    g_test_add_func("/node-options/struct-in-c", test_struct_in_c);
    g_test_add_func("/node-options/keyval-sizes", test_keyval_sizes);
    g_test_add_func("/node-options/driver-checks", test_driver_checks);
    int rc = g_test_run();
    node_graph_shutdown();
    return rc;
}
