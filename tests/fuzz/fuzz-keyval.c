/* Fuzz target "keyval": the command-line option parser (server/keyval.c)
 * and what the command line does next with its result: the generated QAPI
 * parsers in keyval mode (strings for numbers, "on"/"off", "1G") for
 * --blockdev, --export, --nbd-server and --object.  Nothing is created.
 *
 * Input: the option text (up to the first NUL, as argv would carry it).
 * Checks: success and error are exclusive; whatever a parser accepts
 * converts back to JSON (the form blockdev-add hands to the node layer)
 * and that JSON parses again, in QMP mode, to the same value. */
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "qapi/qapi-types.h"
#include "server/keyval.h"

/* One schema type: keyval parse, output, QMP re-parse, compare. */
#define CHECK_TYPE(T, root)                                                     \
    do {                                                                        \
        QapiIn kv = { .keyval = true }, qmp = { .keyval = false };              \
        T *v = NULL, *again = NULL;                                             \
        GError *e = NULL;                                                       \
        if (!qapi_in_##T(&kv, "", root, &v, &e)) {                              \
            g_assert_nonnull(e);                                                \
            g_error_free(e);                                                    \
            break;                                                              \
        }                                                                       \
        g_assert_null(e);                                                       \
        JsonNode *out = qapi_out_##T(v);                                        \
        if (!qapi_in_##T(&qmp, "", out, &again, &e))                            \
            g_error("%s: output of an accepted value does not parse: %s", #T,   \
                    e->message);                                                \
        JsonNode *out2 = qapi_out_##T(again);                                   \
        if (!json_node_equal(out, out2)) {                                      \
            g_autofree char *a = json_to_string(out, FALSE);                    \
            g_autofree char *b = json_to_string(out2, FALSE);                   \
            g_error("%s: round trip changed %s into %s", #T, a, b);             \
        }                                                                       \
        json_node_unref(out);                                                   \
        json_node_unref(out2);                                                  \
        qapi_free_##T(v);                                                       \
        qapi_free_##T(again);                                                   \
    } while (0)

static int keyval_one(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_strndup((const char *)data, size);
    GError *err = NULL;
    JsonObject *obj = keyval_parse(text, &err);
    if (!obj) {
        g_assert_nonnull(err);
        g_assert_nonnull(err->message);
        g_error_free(err);
        return 0;
    }
    g_assert_null(err);
    JsonNode *root = json_node_init_object(json_node_alloc(), obj);
    CHECK_TYPE(BlockdevOptions, root);
    CHECK_TYPE(BlockExportOptions, root);
    CHECK_TYPE(NbdServerOptions, root);
    CHECK_TYPE(ObjectOptions, root);
    json_node_unref(root);
    json_object_unref(obj);
    return 0;
}

const FuzzTarget fuzz_target_keyval = {
    .name = "keyval",
    .one = keyval_one,
};
