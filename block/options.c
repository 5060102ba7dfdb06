/* Typed access to node options (see block/options.h). */
#include "block/options.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct BlockOptions {
    JsonObject *obj;
    char *prefix;          /* "file." for nested options, "" at top */
    GHashTable *used;      /* keys read so far */
};

BlockOptions *block_options_new(JsonObject *obj, const char *prefix)
{
    BlockOptions *opts = g_new0(BlockOptions, 1);
    opts->obj = json_object_ref(obj);
    opts->prefix = g_strdup(prefix ? prefix : "");
    opts->used = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return opts;
}

void block_options_free(BlockOptions *opts)
{
    if (!opts)
        return;
    json_object_unref(opts->obj);
    g_hash_table_destroy(opts->used);
    g_free(opts->prefix);
    g_free(opts);
}

bool block_options_has(BlockOptions *opts, const char *key)
{
    return json_object_has_member(opts->obj, key);
}

void block_options_mark_used(BlockOptions *opts, const char *key)
{
    g_hash_table_add(opts->used, g_strdup(key));
}

bool block_options_is_null(BlockOptions *opts, const char *key)
{
    JsonNode *node = json_object_get_member(opts->obj, key);
    if (!node || !JSON_NODE_HOLDS_NULL(node))
        return false;
    block_options_mark_used(opts, key);
    return true;
}

/* The scalar value of `key`, or NULL when absent; marks the key used. */
static JsonNode *get_member(BlockOptions *opts, const char *key)
{
    JsonNode *node = json_object_get_member(opts->obj, key);
    if (node)
        block_options_mark_used(opts, key);
    return node;
}

static void set_type_error(BlockOptions *opts, const char *key, const char *what, GError **errp)
{
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "Invalid parameter type for '%s%s', expected: %s", opts->prefix, key, what);
}

const char *block_options_get_str(BlockOptions *opts, const char *key, bool required, GError **errp)
{
    JsonNode *node = get_member(opts, key);
    if (!node) {
        if (required)
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s%s' is missing", opts->prefix, key);
        return NULL;
    }
    if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING) {
        set_type_error(opts, key, "string", errp);
        return NULL;
    }
    return json_node_get_string(node);
}

bool block_options_get_bool(BlockOptions *opts, const char *key, bool *out, GError **errp)
{
    JsonNode *node = get_member(opts, key);
    if (!node)
        return true;
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_BOOLEAN) {
        *out = json_node_get_boolean(node);
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING) {
        const char *s = json_node_get_string(node);
        if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0 || strcmp(s, "yes") == 0) {
            *out = true;
            return true;
        }
        if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 || strcmp(s, "no") == 0) {
            *out = false;
            return true;
        }
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s%s' expects 'on' or 'off'", opts->prefix, key);
        return false;
    }
    set_type_error(opts, key, "boolean", errp);
    return false;
}

bool block_parse_size(const char *str, uint64_t *out)
{
    if (!str || !g_ascii_isdigit(str[0]))
        return false;
    errno = 0;
    char *end;
    guint64 value = g_ascii_strtoull(str, &end, 10);
    if (errno != 0)
        return false;
    unsigned shift = 0;
    if (*end) {
        const char *suffixes = "kmgtpe";
        const char *p = strchr(suffixes, g_ascii_tolower(*end));
        if (strcmp(end, "b") == 0 || strcmp(end, "B") == 0)
            shift = 0;
        else if (p && end[1] == '\0')
            shift = 10 * (unsigned)(p - suffixes + 1);
        else
            return false;
    }
    if (shift && value > (UINT64_MAX >> shift))
        return false;
    *out = value << shift;
    return true;
}

bool block_option_size(const char *name, int64_t value, uint64_t *out, GError **errp)
{
    if (value < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a non-negative number below 2^64 "
                    "(optional suffix k, M, G, T, P or E)", name);
        return false;
    }
    *out = (uint64_t)value;
    return true;
}

bool block_options_get_size(BlockOptions *opts, const char *key, bool required, uint64_t *out, GError **errp)
{
    JsonNode *node = get_member(opts, key);
    if (!node) {
        if (required) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s%s' is missing", opts->prefix, key);
            return false;
        }
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64) {
        gint64 v = json_node_get_int(node);
        if (v < 0)
            goto bad;
        *out = (uint64_t)v;
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING &&
        block_parse_size(json_node_get_string(node), out))
        return true;
bad:
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "Parameter '%s%s' expects a non-negative number below 2^64 "
                "(optional suffix k, M, G, T, P or E)", opts->prefix, key);
    return false;
}

bool block_options_get_uint(BlockOptions *opts, const char *key, uint64_t max, uint64_t *out, GError **errp)
{
    JsonNode *node = get_member(opts, key);
    if (!node)
        return true;
    uint64_t v = 0;
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64) {
        gint64 s = json_node_get_int(node);
        if (s < 0)
            goto bad;
        v = (uint64_t)s;
    } else if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING) {
        const char *s = json_node_get_string(node);
        char *end;
        errno = 0;
        if (!g_ascii_isdigit(s[0]))
            goto bad;
        v = g_ascii_strtoull(s, &end, 10);
        if (errno || *end)
            goto bad;
    } else {
        goto bad;
    }
    if (v > max)
        goto bad;
    *out = v;
    return true;
bad:
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "Parameter '%s%s' expects an integer from 0 to %" G_GUINT64_FORMAT,
                opts->prefix, key, (guint64)max);
    return false;
}

JsonObject *block_options_get_object(BlockOptions *opts, const char *key)
{
    JsonNode *node = json_object_get_member(opts->obj, key);
    if (!node || !JSON_NODE_HOLDS_OBJECT(node))
        return NULL;
    block_options_mark_used(opts, key);
    return json_node_get_object(node);
}

JsonArray *block_options_get_array(BlockOptions *opts, const char *key)
{
    JsonNode *node = json_object_get_member(opts->obj, key);
    if (!node || !JSON_NODE_HOLDS_ARRAY(node))
        return NULL;
    block_options_mark_used(opts, key);
    return json_node_get_array(node);
}

bool block_options_get_int(BlockOptions *opts, const char *key, int64_t *out, GError **errp)
{
    JsonNode *node = get_member(opts, key);
    if (!node)
        return true;
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64) {
        *out = json_node_get_int(node);
        return true;
    }
    if (JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_STRING) {
        const char *s = json_node_get_string(node);
        char *end;
        errno = 0;
        gint64 v = g_ascii_strtoll(s, &end, 0);
        if (!errno && end != s && !*end) {
            *out = v;
            return true;
        }
    }
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                "Parameter '%s%s' expects integer", opts->prefix, key);
    return false;
}

bool block_options_check_all_used(BlockOptions *opts, GError **errp)
{
    GList *members = json_object_get_members(opts->obj);
    bool ok = true;
    for (GList *l = members; l; l = l->next) {
        if (!g_hash_table_contains(opts->used, l->data)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s%s' is unexpected", opts->prefix, (const char *)l->data);
            ok = false;
            break;
        }
    }
    g_list_free(members);
    return ok;
}
