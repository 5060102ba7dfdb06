/* qemu-storage-daemon style key=value lists (see server/keyval.h). */
#include "server/keyval.h"

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
            if (member) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            JSON_NODE_HOLDS_OBJECT(member) ? "Parameter '%s' used inconsistently"
                                                           : "Parameter '%s' appears more than once",
                            key);
                return false;
            }
            json_object_set_string_member(obj, parts[i], value);
        } else {
            if (!member) {
                json_object_set_object_member(obj, parts[i], json_object_new());
                member = json_object_get_member(obj, parts[i]);
            } else if (!JSON_NODE_HOLDS_OBJECT(member)) {
                g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "Parameter '%s' used inconsistently", key);
                return false;
            }
            obj = json_node_get_object(member);
        }
    }
    return true;
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
    if (str[0] == '{')
        return parse_json(str, errp);
    JsonObject *root = json_object_new();
    const char *p = str;
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
    return root;
fail:
    json_object_unref(root);
    return NULL;
}
