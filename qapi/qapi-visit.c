/* Builtin visitors and errors for the generated QAPI code (see qapi-visit.h).
 * Messages are QEMU 7.2's qobject-input-visitor texts, so that clients
 * matching on them see the same strings. */
#include "qapi/qapi-visit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(qmp-error-quark, qmp_error)

const char *qmp_error_class_name(const GError *err)
{
    static const char *const names[] = {
        "GenericError", "CommandNotFound", "DeviceNotActive", "DeviceNotFound", "KVMMissingCap",
    };
    if (err->domain == QMP_ERROR && err->code >= 0 && (size_t)err->code < G_N_ELEMENTS(names))
        return names[err->code];
    return "GenericError";
}

QapiQType qapi_qtype_of(JsonNode *node)
{
    switch (JSON_NODE_TYPE(node)) {
    case JSON_NODE_OBJECT: return QAPI_QTYPE_QDICT;
    case JSON_NODE_ARRAY: return QAPI_QTYPE_QLIST;
    case JSON_NODE_NULL: return QAPI_QTYPE_QNULL;
    case JSON_NODE_VALUE:
        switch (json_node_get_value_type(node)) {
        case G_TYPE_STRING: return QAPI_QTYPE_QSTRING;
        case G_TYPE_BOOLEAN: return QAPI_QTYPE_QBOOL;
        default: return QAPI_QTYPE_QNUM;
        }
    }
    return QAPI_QTYPE_NONE;
}

char *qapi_path(const char *path, const char *name)
{
    return path[0] ? g_strdup_printf("%s.%s", path, name) : g_strdup(name);
}

const char *qapi_path_leaf(const char *path)
{
    size_t len = strlen(path);
    if (len == 0 || path[len - 1] == ']')
        return "null";
    const char *dot = strrchr(path, '.');
    return dot ? dot + 1 : path;
}

void qapi_error_missing(const char *path, const char *name, GError **errp)
{
    g_autofree char *full = qapi_path(path, name);
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is missing", full);
}

void qapi_error_type(const char *path, const char *what, GError **errp)
{
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Invalid parameter type for '%s', expected: %s",
                path[0] ? path : "null", what);
}

static void error_value(const char *path, const char *what, GError **errp)
{
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' expects %s", path, what);
}

bool qapi_check_all_used(const char *path, JsonObject *obj, GHashTable *used, GError **errp)
{
    GList *members = json_object_get_members(obj);
    bool ok = true;
    for (GList *l = members; l; l = l->next) {
        if (!g_hash_table_contains(used, l->data)) {
            g_autofree char *full = qapi_path(path, l->data);
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' is unexpected", full);
            ok = false;
            break;
        }
    }
    g_list_free(members);
    return ok;
}

bool qapi_check_no_args(JsonObject *args, GError **errp)
{
    if (!args || json_object_get_size(args) == 0)
        return true;
    g_autoptr(GHashTable) used = g_hash_table_new(g_str_hash, g_str_equal);
    return qapi_check_all_used("", args, used, errp);
}

static bool holds(JsonNode *node, GType type)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

/* A keyval string, when the command line gave one. */
static const char *keyval_string(QapiIn *in, JsonNode *node)
{
    return in && in->keyval && holds(node, G_TYPE_STRING) ? json_node_get_string(node) : NULL;
}

int qapi_in_enum(QapiIn *in, const char *path, JsonNode *node, const char *const table[], GError **errp)
{
    if (!holds(node, G_TYPE_STRING)) {
        qapi_error_type(path, "string", errp);
        return -1;
    }
    const char *value = json_node_get_string(node);
    for (int i = 0; table[i]; i++)
        if (strcmp(table[i], value) == 0)
            return i;
    /* QEMU names only the member ("null" for a list element), not its path. */
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Parameter '%s' does not accept value '%s'",
                qapi_path_leaf(path), value);
    return -1;
}

bool qapi_in_str(QapiIn *in, const char *path, JsonNode *node, char **out, GError **errp)
{
    if (!holds(node, G_TYPE_STRING)) {
        qapi_error_type(path, "string", errp);
        return false;
    }
    *out = g_strdup(json_node_get_string(node));
    return true;
}

bool qapi_in_bool(QapiIn *in, const char *path, JsonNode *node, bool *out, GError **errp)
{
    const char *s = keyval_string(in, node);
    if (s) {
        if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "true")) {
            *out = true;
        } else if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "false")) {
            *out = false;
        } else {
            error_value(path, "'on' or 'off'", errp);
            return false;
        }
        return true;
    }
    if (!holds(node, G_TYPE_BOOLEAN)) {
        qapi_error_type(path, "boolean", errp);
        return false;
    }
    *out = json_node_get_boolean(node);
    return true;
}

bool qapi_in_number(QapiIn *in, const char *path, JsonNode *node, double *out, GError **errp)
{
    const char *s = keyval_string(in, node);
    if (s) {
        char *end;
        errno = 0;
        *out = g_ascii_strtod(s, &end);
        if (errno || end == s || *end) {
            error_value(path, "number", errp);
            return false;
        }
        return true;
    }
    if (holds(node, G_TYPE_DOUBLE)) {
        *out = json_node_get_double(node);
        return true;
    }
    if (holds(node, G_TYPE_INT64)) {
        *out = (double)json_node_get_int(node);
        return true;
    }
    qapi_error_type(path, "number", errp);
    return false;
}

bool qapi_in_any(QapiIn *in, const char *path, JsonNode *node, JsonNode **out, GError **errp)
{
    *out = json_node_copy(node);
    return true;
}

bool qapi_in_null(QapiIn *in, const char *path, JsonNode *node, bool *out, GError **errp)
{
    if (!JSON_NODE_HOLDS_NULL(node)) {
        qapi_error_type(path, "null", errp);
        return false;
    }
    *out = true;
    return true;
}

/* Parses a size with an optional k/M/G/T/P/E suffix (powers of 1024), as QEMU's keyval does. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!g_ascii_isdigit(s[0]))
        return false;
    errno = 0;
    guint64 v = g_ascii_strtoull(s, &end, 10);
    if (errno)
        return false;
    static const char suffixes[] = "bkmgtpe";
    if (*end) {
        const char *p = strchr(suffixes, g_ascii_tolower(*end));
        if (!p || end[1])
            return false;
        for (int shift = (int)(p - suffixes); shift > 0; shift--) {
            if (v > UINT64_MAX / 1024)
                return false;
            v *= 1024;
        }
    }
    *out = v;
    return true;
}

/* A signed integer (JSON integer, or keyval text); `what` names it in errors. */
static bool in_signed(QapiIn *in, const char *path, JsonNode *node, int64_t min, int64_t max,
                      const char *what, int64_t *out, GError **errp)
{
    int64_t v;
    const char *s = keyval_string(in, node);
    if (s) {
        uint64_t size;
        char *end;
        errno = 0;
        v = g_ascii_strtoll(s, &end, 0); /* base 0 as QEMU's keyval: 0x10 is 16 */
        if (errno || end == s || *end) {
            if (!parse_size(s, &size) || size > INT64_MAX) {
                error_value(path, "integer", errp);
                return false;
            }
            v = (int64_t)size;
        }
    } else if (holds(node, G_TYPE_INT64)) {
        v = json_node_get_int(node);
    } else {
        qapi_error_type(path, "integer", errp);
        return false;
    }
    if (v < min || v > max) {
        error_value(path, what, errp);
        return false;
    }
    *out = v;
    return true;
}

/* An unsigned integer: negative JSON values wrap, as QEMU accepts them for uint64. */
static bool in_unsigned(QapiIn *in, const char *path, JsonNode *node, uint64_t max,
                        const char *what, const char *type_what, uint64_t *out, GError **errp)
{
    uint64_t v;
    const char *s = keyval_string(in, node);
    if (s) {
        if (!parse_size(s, &v)) {
            error_value(path, strcmp(type_what, "size") == 0 ? "size" : "integer", errp);
            return false;
        }
    } else if (holds(node, G_TYPE_INT64)) {
        v = (uint64_t)json_node_get_int(node);
    } else {
        error_value(path, "uint64", errp);
        return false;
    }
    if (v > max) {
        error_value(path, what, errp);
        return false;
    }
    *out = v;
    return true;
}

#define SIGNED_VISITOR(NAME, CTYPE, MIN, MAX, WHAT)                                                \
    bool qapi_in_##NAME(QapiIn *in, const char *path, JsonNode *node, CTYPE *out, GError **errp) \
    {                                                                                              \
        int64_t v;                                                                                 \
        if (!in_signed(in, path, node, MIN, MAX, WHAT, &v, errp))                                 \
            return false;                                                                          \
        *out = (CTYPE)v;                                                                           \
        return true;                                                                               \
    }                                                                                              \
    JsonNode *qapi_out_##NAME(CTYPE v)                                                             \
    {                                                                                              \
        JsonNode *n = json_node_alloc();                                                           \
        json_node_init_int(n, (gint64)v);                                                          \
        return n;                                                                                  \
    }

#define UNSIGNED_VISITOR(NAME, CTYPE, MAX, WHAT)                                                   \
    bool qapi_in_##NAME(QapiIn *in, const char *path, JsonNode *node, CTYPE *out, GError **errp) \
    {                                                                                              \
        uint64_t v;                                                                                \
        if (!in_unsigned(in, path, node, MAX, WHAT, #NAME, &v, errp))                             \
            return false;                                                                          \
        *out = (CTYPE)v;                                                                           \
        return true;                                                                               \
    }                                                                                              \
    JsonNode *qapi_out_##NAME(CTYPE v)                                                             \
    {                                                                                              \
        JsonNode *n = json_node_alloc();                                                           \
        json_node_init_int(n, (gint64)v);                                                          \
        return n;                                                                                  \
    }

SIGNED_VISITOR(int, int64_t, INT64_MIN, INT64_MAX, "int64_t")
SIGNED_VISITOR(int8, int8_t, INT8_MIN, INT8_MAX, "int8_t")
SIGNED_VISITOR(int16, int16_t, INT16_MIN, INT16_MAX, "int16_t")
SIGNED_VISITOR(int32, int32_t, INT32_MIN, INT32_MAX, "int32_t")
SIGNED_VISITOR(int64, int64_t, INT64_MIN, INT64_MAX, "int64_t")
UNSIGNED_VISITOR(uint8, uint8_t, UINT8_MAX, "uint8_t")
UNSIGNED_VISITOR(uint16, uint16_t, UINT16_MAX, "uint16_t")
UNSIGNED_VISITOR(uint32, uint32_t, UINT32_MAX, "uint32_t")
UNSIGNED_VISITOR(uint64, uint64_t, UINT64_MAX, "uint64")
UNSIGNED_VISITOR(size, uint64_t, UINT64_MAX, "size")

JsonNode *qapi_out_str(const char *v)
{
    JsonNode *n = json_node_alloc();
    json_node_init_string(n, v ? v : "");
    return n;
}

JsonNode *qapi_out_bool(bool v)
{
    JsonNode *n = json_node_alloc();
    json_node_init_boolean(n, v);
    return n;
}

JsonNode *qapi_out_number(double v)
{
    JsonNode *n = json_node_alloc();
    json_node_init_double(n, v);
    return n;
}

JsonNode *qapi_out_any(const JsonNode *v)
{
    return v ? json_node_copy((JsonNode *)v) : json_node_init_null(json_node_alloc());
}

JsonNode *qapi_out_null(bool v)
{
    return json_node_init_null(json_node_alloc());
}

JsonNode *qapi_node_take_object(JsonObject *obj)
{
    JsonNode *n = json_node_init_object(json_node_alloc(), obj);
    json_object_unref(obj);
    return n;
}

JsonNode *qapi_node_take_array(JsonArray *arr)
{
    JsonNode *n = json_node_init_array(json_node_alloc(), arr);
    json_array_unref(arr);
    return n;
}
