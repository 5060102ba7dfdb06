/* block/json-filename.c: QEMU's json: pseudo file names, in QDict order.
 * The expected strings are what qemu-storage-daemon 7.2 prints for the
 * same options (query-named-block-nodes "file"). */
#include "block/json-filename.h"

#include <glib.h>

static JsonObject *object_of(const char *json)
{
    g_autoptr(JsonNode) n = json_from_string(json, NULL);
    g_assert_nonnull(n);
    return json_object_ref(json_node_get_object(n));
}

/* An rbd node as QSD shows it: driver first in, then pool, image, conf. */
static void test_rbd(void)
{
    g_autoptr(JsonObject) o = object_of("{\"driver\": \"rbd\", \"pool\": \"rbd\", \"image\": \"x\","
                                        " \"conf\": \"/tmp/c/ceph.conf\"}");
    g_autofree char *name = block_json_filename(o);
    g_assert_cmpstr(name, ==,
                    "json:{\"pool\": \"rbd\", \"image\": \"x\", \"conf\": \"/tmp/c/ceph.conf\", \"driver\": \"rbd\"}");
}

/* Keys of one hash bucket ("key-secret" and "auth-client-required" share
 * bucket 498) come out last-inserted first; nested objects and arrays are
 * ordered and spaced the same way; strings are escaped. */
static void test_bucket_and_nesting(void)
{
    g_autoptr(JsonObject) o = object_of("{\"key-secret\": \"s\", \"auth-client-required\": [\"cephx\"],"
                                        " \"server\": [{\"port\": \"6789\", \"host\": \"a\\\"b\"}]}");
    g_autofree char *name = block_json_filename(o);
    g_assert_cmpstr(name, ==,
                    "json:{\"server\": [{\"port\": \"6789\", \"host\": \"a\\\"b\"}], "
                    "\"auth-client-required\": [\"cephx\"], \"key-secret\": \"s\"}");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/json-filename/rbd", test_rbd);
    g_test_add_func("/json-filename/bucket-and-nesting", test_bucket_and_nesting);
    return g_test_run();
}
