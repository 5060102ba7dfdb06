/* The generated input visitors: typed results for good arguments, QEMU's
 * messages for bad ones, keyval (command-line) conversions, and the output
 * visitors round-tripping.  Runs under ASan, so leaks on error paths show. */
#include "qapi/qapi-types.h"

static JsonNode *parse(const char *json)
{
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
    return json_node_copy(json_parser_get_root(p));
}

/* Parses `json` as BlockdevOptions; returns the error message or NULL. */
static char *blockdev_error(const char *json, bool keyval)
{
    QapiIn in = { .keyval = keyval };
    BlockdevOptions *o = NULL;
    GError *err = NULL;
    JsonNode *n = parse(json);
    bool ok = qapi_in_BlockdevOptions(&in, "", n, &o, &err);
    json_node_unref(n);
    g_assert_true(ok == (err == NULL));
    g_assert_true(ok == (o != NULL));
    qapi_free_BlockdevOptions(o);
    char *msg = err ? g_strdup(err->message) : NULL;
    g_clear_error(&err);
    return msg;
}

static void test_blockdev_good(void)
{
    QapiIn in = { 0 };
    g_autoptr(BlockdevOptions) o = NULL;
    JsonNode *n = parse("{\"driver\": \"raw\", \"node-name\": \"r0\", \"offset\": 512,"
                        " \"file\": {\"driver\": \"file\", \"filename\": \"/x\", \"aio\": \"native\"}}");
    g_assert_true(qapi_in_BlockdevOptions(&in, "", n, &o, NULL));
    json_node_unref(n);
    g_assert_cmpint(o->driver, ==, BLOCKDEV_DRIVER_RAW);
    g_assert_true(o->has_node_name);
    g_assert_cmpstr(o->node_name, ==, "r0");
    g_assert_false(o->has_read_only);
    g_assert_true(o->u.raw.has_offset);
    g_assert_cmpint(o->u.raw.offset, ==, 512);
    g_assert_false(o->u.raw.has_size);
    g_assert_cmpint(o->u.raw.file->type, ==, QAPI_QTYPE_QDICT);
    BlockdevOptions *child = o->u.raw.file->u.definition;
    g_assert_cmpint(child->driver, ==, BLOCKDEV_DRIVER_FILE);
    g_assert_cmpstr(child->u.file.filename, ==, "/x");
    g_assert_cmpint(child->u.file.aio, ==, BLOCKDEV_AIO_OPTIONS_NATIVE);

    /* Output visitor: the same JSON comes back. */
    JsonNode *out = qapi_out_BlockdevOptions(o);
    JsonObject *obj = json_node_get_object(out);
    g_assert_cmpstr(json_object_get_string_member(obj, "driver"), ==, "raw");
    g_assert_cmpint(json_object_get_int_member(obj, "offset"), ==, 512);
    g_assert_false(json_object_has_member(obj, "size"));
    JsonObject *file = json_object_get_object_member(obj, "file");
    g_assert_cmpstr(json_object_get_string_member(file, "aio"), ==, "native");
    json_node_unref(out);
}

static void test_blockdev_reference(void)
{
    QapiIn in = { 0 };
    g_autoptr(BlockdevOptions) o = NULL;
    JsonNode *n = parse("{\"driver\": \"raw\", \"node-name\": \"r0\", \"file\": \"f0\"}");
    g_assert_true(qapi_in_BlockdevOptions(&in, "", n, &o, NULL));
    json_node_unref(n);
    g_assert_cmpint(o->u.raw.file->type, ==, QAPI_QTYPE_QSTRING);
    g_assert_cmpstr(o->u.raw.file->u.reference, ==, "f0");
}

static void test_blockdev_errors(void)
{
    static const struct { const char *json, *msg; } cases[] = {
        { "{\"node-name\": \"n\"}", "Parameter 'driver' is missing" },
        { "{\"driver\": \"nosuch\"}", "Parameter 'driver' does not accept value 'nosuch'" },
        { "{\"driver\": 5}", "Invalid parameter type for 'driver', expected: string" },
        { "{\"driver\": \"null-co\", \"bogus\": 1}", "Parameter 'bogus' is unexpected" },
        { "{\"driver\": \"null-co\", \"size\": \"x\"}", "Invalid parameter type for 'size', expected: integer" },
        { "{\"driver\": \"null-co\", \"size\": 1.5}", "Invalid parameter type for 'size', expected: integer" },
        { "{\"driver\": \"null-co\", \"size\": null}", "Invalid parameter type for 'size', expected: integer" },
        { "{\"driver\": \"null-co\", \"read-only\": \"on\"}",
          "Invalid parameter type for 'read-only', expected: boolean" },
        { "{\"driver\": \"file\", \"cache\": 5, \"filename\": \"f\"}",
          "Invalid parameter type for 'cache', expected: object" },
        { "{\"driver\": \"file\", \"filename\": \"f\", \"cache\": {\"x\": 1}}", "Parameter 'cache.x' is unexpected" },
        { "{\"driver\": \"file\"}", "Parameter 'filename' is missing" },
        { "{\"driver\": \"memory\", \"size\": \"1G\"}", "Parameter 'size' expects uint64" },
        { "{\"driver\": \"raw\", \"file\": 5}", "Invalid parameter type for 'file', expected: BlockdevRef" },
        { "{\"driver\": \"raw\", \"file\": {\"driver\": \"null-co\", \"size\": \"z\"}}",
          "Invalid parameter type for 'file.size', expected: integer" },
        { "{\"driver\": \"raw\", \"file\": {\"driver\": \"file\"}}", "Parameter 'file.filename' is missing" },
        { "[]", "Invalid parameter type for 'null', expected: object" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *msg = blockdev_error(cases[i].json, false);
        g_assert_cmpstr(msg, ==, cases[i].msg);
    }
}

static void test_keyval(void)
{
    /* The command line gives strings; keyval mode converts them like QEMU. */
    g_autofree char *ok = blockdev_error("{\"driver\": \"memory\", \"node-name\": \"m\", \"size\": \"1G\","
                                         " \"read-only\": \"on\"}", true);
    g_assert_null(ok);
    g_autofree char *b = blockdev_error("{\"driver\": \"null-co\", \"read-only\": \"maybe\"}", true);
    g_assert_cmpstr(b, ==, "Parameter 'read-only' expects 'on' or 'off'");
    g_autofree char *s = blockdev_error("{\"driver\": \"memory\", \"size\": \"lots\"}", true);
    g_assert_cmpstr(s, ==, "Parameter 'size' expects size");
    g_autofree char *i = blockdev_error("{\"driver\": \"null-co\", \"size\": \"ten\"}", true);
    g_assert_cmpstr(i, ==, "Parameter 'size' expects integer");

    QapiIn in = { .keyval = true };
    g_autoptr(BlockdevOptions) o = NULL;
    JsonNode *n = parse("{\"driver\": \"memory\", \"node-name\": \"m\", \"size\": \"64M\"}");
    g_assert_true(qapi_in_BlockdevOptions(&in, "", n, &o, NULL));
    json_node_unref(n);
    g_assert_cmpuint(o->u.memory.size, ==, 64u << 20);
}

static void test_nbd_server_start(void)
{
    static const struct { const char *json, *msg; } cases[] = {
        { "{\"addr\": {\"type\": \"unix\", \"path\": \"/s\"}}", "Parameter 'addr.data' is missing" },
        { "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}, \"max-connections\": \"x\"}",
          "Parameter 'max-connections' expects uint64" },
        { "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}, \"max-connections\": 4294967296}",
          "Parameter 'max-connections' expects uint32_t" },
        { "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}, \"max-connections\": -1}",
          "Parameter 'max-connections' expects uint32_t" },
        { "{\"addr\": {\"type\": \"vsock\"}}", "Parameter 'type' does not accept value 'vsock'" },
        { "{\"addr\": []}", "Invalid parameter type for 'addr', expected: object" },
        { "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\", \"x\": 1}}}",
          "Parameter 'addr.data.x' is unexpected" },
        { "{\"addr\": {\"type\": \"unix\", \"data\": {\"path\": \"/s\"}}, \"max-connections\": 7}", NULL },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        QapiIn in = { 0 };
        q_obj_nbd_server_start_arg *a = NULL;
        GError *err = NULL;
        JsonNode *n = parse(cases[i].json);
        bool ok = qapi_in_q_obj_nbd_server_start_arg(&in, "", n, &a, &err);
        json_node_unref(n);
        g_assert_cmpstr(err ? err->message : NULL, ==, cases[i].msg);
        if (ok) {
            g_assert_cmpint(a->addr->type, ==, SOCKET_ADDRESS_TYPE_UNIX);
            g_assert_cmpstr(a->addr->u.q_unix.data->path, ==, "/s");
            g_assert_true(a->has_max_connections);
            g_assert_cmpuint(a->max_connections, ==, 7);
        }
        qapi_free_q_obj_nbd_server_start_arg(a);
        g_clear_error(&err);
    }
}

static void test_lists_and_enums(void)
{
    QapiIn in = { 0 };
    q_obj_qmp_capabilities_arg *a = NULL;
    GError *err = NULL;
    JsonNode *n = parse("{\"enable\": [\"oob\", \"nope\"]}");
    g_assert_false(qapi_in_q_obj_qmp_capabilities_arg(&in, "", n, &a, &err));
    json_node_unref(n);
    g_assert_cmpstr(err->message, ==, "Parameter 'null' does not accept value 'nope'");
    g_clear_error(&err);
    n = parse("{\"enable\": [\"oob\"]}");
    g_assert_true(qapi_in_q_obj_qmp_capabilities_arg(&in, "", n, &a, &err));
    json_node_unref(n);
    g_assert_true(a->has_enable);
    g_assert_cmpint(a->enable->value, ==, QMP_CAPABILITY_OOB);
    g_assert_null(a->enable->next);
    qapi_free_q_obj_qmp_capabilities_arg(a);
    g_assert_true(qapi_check_no_args(NULL, NULL));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qapi/blockdev/good", test_blockdev_good);
    g_test_add_func("/qapi/blockdev/reference", test_blockdev_reference);
    g_test_add_func("/qapi/blockdev/errors", test_blockdev_errors);
    g_test_add_func("/qapi/blockdev/keyval", test_keyval);
    g_test_add_func("/qapi/nbd-server-start", test_nbd_server_start);
    g_test_add_func("/qapi/lists-and-enums", test_lists_and_enums);
    return g_test_run();
}
