/* Backing file names that are not paths (see backing-name.h).
 *
 * QEMU records whatever name it was given or computed: `qemu-img create -b
 * rbd:pool/base:conf=...`, a json: name for a node it cannot name by a path
 * (an rbd base after a commit or stream: block/json-filename.c writes the
 * same), or an NBD URI.  QEMU flattens a json: name's options and crumples
 * them again, so {"file.driver": "rbd"} and {"file": {"driver": "rbd"}}
 * mean the same; the format recorded next to the name is the node's driver,
 * and when it is a format over the name's protocol driver, the name's
 * options become its `file`. */
#include "block/backing-name.h"

#include <string.h>
#include <gio/gio.h>
#include "block/error.h"
#include "block/nbd-uri.h"
#include "qapi/qapi-visit.h"

#define RBD_PREFIX "rbd:"
#define JSON_PREFIX "json:"

bool backing_name_is_path(const char *name)
{
    return !g_str_has_prefix(name, JSON_PREFIX) && !g_str_has_prefix(name, RBD_PREFIX) && !strstr(name, "://") &&
           !nbd_uri_is(name);
}

/* block_fail for the functions here, which return a pointer. */
#define fail(errp, ...) (block_fail(errp, __VA_ARGS__), NULL)

/* ---- json: ---- */

/* QEMU's qdict_flatten: nested objects become dotted keys ("file":
 * {"driver": ...} is "file.driver"); false if a key comes twice. */
static bool flatten(JsonObject *in, const char *prefix, GHashTable *flat, GError **errp)
{
    g_autoptr(GList) members = json_object_get_members(in);
    for (GList *l = members; l; l = l->next) {
        JsonNode *value = json_object_get_member(in, l->data);
        g_autofree char *key = prefix ? g_strdup_printf("%s.%s", prefix, (const char *)l->data) : g_strdup(l->data);
        if (JSON_NODE_HOLDS_OBJECT(value)) {
            if (!flatten(json_node_get_object(value), key, flat, errp))
                return false;
        } else if (g_hash_table_contains(flat, key)) {
            return block_fail(errp, "Key '%s' is given twice", key);
        } else {
            g_hash_table_insert(flat, g_steal_pointer(&key), value);
        }
    }
    return true;
}

/* QEMU's qdict_crumple of flattened options: "a.b": v becomes "a": {"b": v}. */
static JsonObject *crumple(GHashTable *flat, GError **errp)
{
    g_autoptr(JsonObject) out = json_object_new();
    g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(flat), (GCompareFunc)strcmp);
    for (GList *l = keys; l; l = l->next) {
        const char *key = l->data;
        if (!*key || *key == '.' || g_str_has_suffix(key, ".") || strstr(key, ".."))
            return fail(errp, "Invalid key '%s'", key);
        g_auto(GStrv) parts = g_strsplit(key, ".", -1);
        JsonObject *at = out;
        guint n = g_strv_length(parts);
        for (guint i = 0; i + 1 < n; i++) {
            JsonNode *sub = json_object_get_member(at, parts[i]);
            if (sub && !JSON_NODE_HOLDS_OBJECT(sub))
                return fail(errp, "Key '%s' is given both as a value and as an object", parts[i]);
            if (!sub)
                json_object_set_object_member(at, parts[i], json_object_new());
            at = json_object_get_object_member(at, parts[i]);
        }
        if (json_object_has_member(at, parts[n - 1]))
            return fail(errp, "Key '%s' is given both as a value and as an object", key);
        json_object_set_member(at, parts[n - 1], json_node_copy(g_hash_table_lookup(flat, key)));
    }
    return g_steal_pointer(&out);
}

static JsonObject *json_name_options(const char *name, GError **errp)
{
    g_autoptr(JsonParser) parser = json_parser_new();
    g_autoptr(GError) err = NULL;
    if (!json_parser_load_from_data(parser, name + strlen(JSON_PREFIX), -1, &err))
        return fail(errp, "Could not parse the JSON options of '%s': %s", name, err->message);
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root))
        return fail(errp, "Could not parse the JSON options of '%s': not an object", name);
    g_autoptr(GHashTable) flat = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    JsonObject *opts = flatten(json_node_get_object(root), NULL, flat, &err) ? crumple(flat, &err) : NULL;
    if (!opts)
        return fail(errp, "Invalid options in '%s': %s", name, err->message);
    return opts;
}

/* ---- rbd: (QEMU's qemu_rbd_parse_filename) ---- */

/* Splits *p at the first `delim` not escaped by a backslash: returns the
 * token, *p moves past the delimiter (NULL when there is none). */
static char *next_token(char **p, char delim)
{
    char *start = *p;
    for (char *s = start; *s; s++) {
        if (*s == '\\' && s[1]) {
            s++;
        } else if (*s == delim) {
            *s = '\0';
            *p = s + 1;
            return start;
        }
    }
    *p = NULL;
    return start;
}

/* True if `s` has `c` not escaped by a backslash. */
static bool has_unescaped(const char *s, char c)
{
    for (; *s; s++) {
        if (*s == '\\' && s[1])
            s++;
        else if (*s == c)
            return true;
    }
    return false;
}

/* Drops the escaping backslashes in place. */
static char *unescape(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        if (*r == '\\' && r[1])
            r++;
        *w++ = *r;
    }
    *w = '\0';
    return s;
}

static JsonObject *rbd_name_options(const char *name, GError **errp)
{
    g_autofree char *buf = g_strdup(name + strlen(RBD_PREFIX));
    char *p = buf;
    char *pool = next_token(&p, '/');
    if (!p)
        return fail(errp, "Invalid rbd file name '%s': Pool name is required", name);
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "driver", "rbd");
    json_object_set_string_member(o, "pool", unescape(pool));
    char *image;
    char *snapshot = NULL;
    if (has_unescaped(p, '@')) {
        image = next_token(&p, '@');
        snapshot = unescape(next_token(&p, ':'));
    } else {
        image = next_token(&p, ':');
    }
    if (has_unescaped(image, '/')) {
        char *ns = next_token(&image, '/');
        json_object_set_string_member(o, "namespace", unescape(ns));
    } else {
        json_object_set_string_member(o, "namespace", "");
    }
    json_object_set_string_member(o, "image", unescape(image));
    if (snapshot)
        json_object_set_string_member(o, "snapshot", snapshot);
    while (p) {
        char *key = unescape(next_token(&p, '='));
        if (!p)
            return fail(errp, "Invalid rbd file name '%s': conf option %s has no value", name, key);
        char *value = unescape(next_token(&p, ':'));
        if (strcmp(key, "conf") == 0)
            json_object_set_string_member(o, "conf", value);
        else if (strcmp(key, "id") == 0)
            json_object_set_string_member(o, "user", value);
        else
            return fail(errp, "rbd file name '%s': option '%s' is not supported by blockd (only conf and id); "
                        "set it in the Ceph configuration file, or add the backing node with blockdev-add",
                        name, key);
    }
    return g_steal_pointer(&o);
}

/* ---- the backing node ---- */

static bool is_format(const char *driver)
{
    return strcmp(driver, "raw") == 0 || strcmp(driver, "qcow2") == 0;
}

BlockdevOptions *backing_name_options(const char *name, const char *fmt, GError **errp)
{
    g_assert(!backing_name_is_path(name));
    g_autoptr(JsonObject) o = NULL;
    if (g_str_has_prefix(name, JSON_PREFIX))
        o = json_name_options(name, errp);
    else if (g_str_has_prefix(name, RBD_PREFIX))
        o = rbd_name_options(name, errp);
    else if (nbd_uri_is(name))
        o = nbd_uri_to_options(name, errp);
    else
        return fail(errp, "unsupported backing file name '%s' (blockd opens paths, json:, rbd: and NBD URIs)",
                    name);
    if (!o)
        return NULL;
    JsonNode *d = json_object_get_member(o, "driver");
    const char *driver = d && json_node_get_value_type(d) == G_TYPE_STRING ? json_node_get_string(d) : NULL;
    if (!driver)
        return fail(errp, "backing file name '%s' names no driver", name);
    if (!fmt && !is_format(driver))
        return fail(errp, "backing file '%s' has no recorded format, and blockd probes only files "
                    "(record one: qemu-img rebase -u -b NAME -F FORMAT IMAGE)", name);
    if (fmt && strcmp(fmt, driver) != 0) {
        if (!is_format(fmt) || is_format(driver))
            return fail(errp, "backing file '%s' is driver '%s' but the image records backing format '%s'",
                        name, driver, fmt);
        /* A format over the named protocol node. */
        g_autoptr(JsonObject) wrap = json_object_new();
        json_object_set_string_member(wrap, "driver", fmt);
        json_object_set_object_member(wrap, "file", g_steal_pointer(&o));
        o = g_steal_pointer(&wrap);
    }
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
    QapiIn in = { 0 };
    BlockdevOptions *opts = NULL;
    g_autoptr(GError) err = NULL;
    if (!qapi_in_BlockdevOptions(&in, "", node, &opts, &err))
        return fail(errp, "backing file '%s': %s", name, err->message);
    return opts;
}
