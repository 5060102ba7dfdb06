/* qemu-storage-daemon style key=value lists (see server/keyval.h). */
#include "server/keyval.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

/* Reads up to an unescaped ',' (",," is a literal comma); advances *p past the separator. */
static char *read_value(const char **p)
{
    GString *s = g_string_new(NULL);
    const char *c = *p;
    while (*c) {
        if (c[0] == ',') {
            if (c[1] == ',') {
                g_string_append_c(s, ',');
                c += 2;
                continue;
            }
            c++;
            break;
        }
        g_string_append_c(s, *c++);
    }
    *p = c;
    return g_string_free(s, FALSE);
}

/* Stores value under the dotted key, creating intermediate objects. */
static bool store(JsonObject *root, const char *key, const char *value, GError **errp)
{
    g_auto(GStrv) parts = g_strsplit(key, ".", -1);
    JsonObject *obj = root;
    guint n = g_strv_length(parts);
    for (guint i = 0; i < n; i++) {
        if (parts[i][0] == '\0') {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Invalid parameter '%s'", key);
            return false;
        }
        JsonNode *member = json_object_get_member(obj, parts[i]);
        if (i == n - 1) {
            if (member && JSON_NODE_HOLDS_OBJECT(member)) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameters '%s.*' used inconsistently", key);
                return false;
            }
            if (member) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameter '%s' appears more than once", key);
                return false;
            }
            json_object_set_string_member(obj, parts[i], value);
        } else {
            if (!member) {
                json_object_set_object_member(obj, parts[i], json_object_new());
                member = json_object_get_member(obj, parts[i]);
            } else if (!JSON_NODE_HOLDS_OBJECT(member)) {
                /* QEMU names the prefix that is both a value and an object. */
                g_autoptr(GString) prefix = g_string_new(parts[0]);
                for (guint j = 1; j <= i; j++)
                    g_string_append_printf(prefix, ".%s", parts[j]);
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameters '%s.*' used inconsistently", prefix->str);
                return false;
            }
            obj = json_node_get_object(member);
        }
    }
    return true;
}

/* A list index: the key is all decimal digits (capped at INT_MAX, as QEMU); else -1. */
static int key_to_index(const char *key)
{
    if (key[0] < '0' || key[0] > '9')
        return -1;
    gint64 index = 0;
    for (const char *c = key; *c; c++) {
        if (*c < '0' || *c > '9')
            return -1;
        index = MIN(index * 10 + (*c - '0'), (gint64)INT_MAX);
    }
    return (int)index;
}

/* Turns an object whose keys are all list indexes into an array, as QEMU:
 * indexes must run from 0 without gaps, up to the largest one given. */
static JsonArray *object_to_array(JsonObject *obj, const char *path, GError **errp)
{
    guint size = json_object_get_size(obj);
    g_autofree JsonNode **elt = g_new0(JsonNode *, size + 1);
    int max_index = -1;
    g_autoptr(GList) keys = json_object_get_members(obj);
    for (GList *l = keys; l; l = l->next) {
        int index = key_to_index(l->data);
        max_index = MAX(max_index, index);
        /* An index past the end leaves a hole reported below. */
        if ((guint)index < size)
            elt[index] = json_object_get_member(obj, l->data);
    }
    JsonArray *array = json_array_new();
    guint n = (guint)MIN((gint64)size + 1, (gint64)max_index + 1);
    for (guint i = 0; i < n; i++) {
        if (!elt[i]) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "Parameter '%s%u' missing", path, i);
            json_array_unref(array);
            return NULL;
        }
        json_array_add_element(array, json_node_copy(elt[i]));
    }
    return array;
}

/* QEMU's keyval_listify: replaces, recursively, every object below `obj`
 * whose keys are all list indexes ("a.0=x,a.1=y") by an array.  `path` is the
 * key of `obj` with a trailing '.' ("" for the root, never a list itself).
 * Sets *array when `obj` itself must become one. */
static bool listify(JsonObject *obj, GString *path, JsonArray **array, GError **errp)
{
    /* Copied: replacing a member frees its key. */
    g_autoptr(GPtrArray) keys = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GList) members = json_object_get_members(obj);
    for (GList *l = members; l; l = l->next)
        g_ptr_array_add(keys, g_strdup(l->data));
    bool has_index = false, has_member = false;
    for (guint i = 0; i < keys->len; i++) {
        const char *key = keys->pdata[i];
        if (key_to_index(key) >= 0)
            has_index = true;
        else
            has_member = true;
        JsonNode *member = json_object_get_member(obj, key);
        if (!JSON_NODE_HOLDS_OBJECT(member))
            continue;
        gsize len = path->len;
        g_string_append_printf(path, "%s.", key);
        JsonArray *child_array = NULL;
        bool ok = listify(json_node_get_object(member), path, &child_array, errp);
        g_string_truncate(path, len);
        if (!ok)
            return false;
        if (child_array)
            json_object_set_array_member(obj, key, child_array);
    }
    if (has_index && has_member) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameters '%s*' used inconsistently", path->str);
        return false;
    }
    if (has_index && path->len > 0) {
        *array = object_to_array(obj, path->str, errp);
        return *array != NULL;
    }
    return true;
}

/* Lists in the top-level object's members (the root is never a list). */
static bool listify_root(JsonObject *root, GError **errp)
{
    g_autoptr(GString) path = g_string_new("");
    JsonArray *unused = NULL;
    return listify(root, path, &unused, errp);
}

static JsonObject *parse_json(const char *str, GError **errp)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    if (!json_parser_load_from_data(parser, str, -1, errp))
        return NULL;
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "JSON option must be an object");
        return NULL;
    }
    return json_object_ref(json_node_get_object(root));
}

JsonObject *keyval_parse(const char *str, GError **errp)
{
    return keyval_parse_implied(str, NULL, errp);
}

JsonObject *keyval_parse_implied(const char *str, const char *implied_key, GError **errp)
{
    if (str[0] == '{')
        return parse_json(str, errp);
    JsonObject *root = json_object_new();
    const char *p = str;
    if (implied_key && *p && p[strcspn(p, "=,")] != '=') {
        /* The first element is a bare value (",," escapes a comma in it). */
        g_autofree char *value = read_value(&p);
        if (!store(root, implied_key, value, errp))
            goto fail;
    }
    while (*p) {
        const char *eq = p;
        while (*eq && *eq != '=' && *eq != ',')
            eq++;
        g_autofree char *key = g_strndup(p, (gsize)(eq - p));
        if (*eq != '=') {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        key[0] ? "Expected '=' after parameter '%s'" : "Invalid parameter '%s'", key);
            goto fail;
        }
        if (key[0] == '\0') {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Expected parameter before '='");
            goto fail;
        }
        p = eq + 1;
        g_autofree char *value = read_value(&p);
        if (!store(root, key, value, errp))
            goto fail;
    }
    if (!listify_root(root, errp))
        goto fail;
    return root;
fail:
    json_object_unref(root);
    return NULL;
}
