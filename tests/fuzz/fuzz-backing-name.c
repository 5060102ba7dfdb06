/* Fuzz target "backing-name": backing file names as an image header holds
 * them (block/backing-name.c): json: names flattened and crumpled, legacy
 * rbd: names with their escapes, NBD URIs, and the recorded format.
 * Nothing is opened.
 *
 * Input: a format selector byte, then the name (up to the first NUL).
 * Checks: a name is a path or not, never both ways; options and an error
 * are exclusive; accepted options convert back to JSON that parses again
 * to the same value, and name the recorded format's driver. */
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "block/backing-name.h"
#include "qapi/qapi-visit.h"

static const char *const formats[] = { NULL, "raw", "qcow2", "rbd", "nbd", "file" };

static int backing_name_one(const uint8_t *data, size_t size)
{
    if (size < 1)
        return -1;
    const char *fmt = formats[data[0] % G_N_ELEMENTS(formats)];
    g_autofree char *name = g_strndup((const char *)data + 1, size - 1);
    if (backing_name_is_path(name))
        return 0;
    GError *err = NULL;
    BlockdevOptions *o = backing_name_options(name, fmt, &err);
    if (!o) {
        g_assert_nonnull(err);
        g_assert_nonnull(err->message);
        g_error_free(err);
        return 0;
    }
    g_assert_null(err);
    if (fmt)
        g_assert_cmpstr(BlockdevDriver_str[o->driver], ==, fmt);
    JsonNode *out = qapi_out_BlockdevOptions(o);
    QapiIn in = { 0 };
    BlockdevOptions *again = NULL;
    if (!qapi_in_BlockdevOptions(&in, "", out, &again, &err))
        g_error("options of '%s' do not parse again: %s", name, err->message);
    JsonNode *out2 = qapi_out_BlockdevOptions(again);
    g_assert_true(json_node_equal(out, out2));
    json_node_unref(out);
    json_node_unref(out2);
    qapi_free_BlockdevOptions(o);
    qapi_free_BlockdevOptions(again);
    return 0;
}

const FuzzTarget fuzz_target_backing_name = {
    .name = "backing-name",
    .one = backing_name_one,
};
