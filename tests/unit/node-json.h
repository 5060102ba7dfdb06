/* Tests' shortcut to nodes from JSON options: parsed by the generated
 * parser as blockdev-add's arguments are, then node_create. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>
#include "block/node.h"
#include "qapi/qapi-types.h"

/* A node from `options` (QMP JSON, or command-line strings with `keyval`), or NULL with *errp set. */
static inline BlockNode *test_node_create(JsonObject *options, bool keyval, GError **errp)
{
    QapiIn in = { .keyval = keyval };
    JsonNode *json = json_node_init_object(json_node_alloc(), options);
    BlockdevOptions *o = NULL;
    BlockNode *node = qapi_in_BlockdevOptions(&in, "", json, &o, errp) ? node_create(o, errp) : NULL;
    qapi_free_BlockdevOptions(o);
    json_node_unref(json);
    return node;
}

/* A node from JSON text; NULL with *errp set. */
static inline BlockNode *test_node_create_text(const char *text, GError **errp)
{
    g_autoptr(JsonParser) p = json_parser_new();
    if (!json_parser_load_from_data(p, text, -1, errp))
        return NULL;
    return test_node_create(json_node_get_object(json_parser_get_root(p)), false, errp);
}
