/* QEMU's json: pseudo file names (block/json-filename.h).
 *
 * QEMU builds them in bdrv_refresh_filename from the node's "strong"
 * options in a QDict and prints that with qobject_to_json.  A QDict keeps
 * its entries in 512 hash buckets (tdb_hash of the key), each a list that
 * new entries join at the head, and iterates bucket by bucket; the name
 * is only recognisable (by QEMU, by a management tool comparing names) if
 * the keys come out in the same order, so that order is reproduced here. */
#include "block/json-filename.h"

#include <string.h>

#define QDICT_BUCKET_MAX 512 /* QEMU's qdict.h */

/* QEMU's tdb_hash (qobject/qdict.c). */
static unsigned bucket_of(const char *key)
{
    unsigned value = 0x238F13AFu * (unsigned)strlen(key);
    for (unsigned i = 0; key[i]; i++)
        value += (unsigned)(unsigned char)key[i] << (i * 5 % 24);
    return (1103515243u * value + 12345u) % QDICT_BUCKET_MAX;
}

typedef struct Member {
    const char *name;
    unsigned bucket, index;
} Member;

static int member_cmp(const void *a, const void *b)
{
    const Member *x = a, *y = b;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return x->index > y->index ? -1 : x->index < y->index; /* later first */
}

static void append_node(GString *out, JsonNode *node);

static void append_object(GString *out, JsonObject *obj)
{
    g_autoptr(GList) names = json_object_get_members(obj); /* insertion order */
    guint n = g_list_length(names), i = 0;
    g_autofree Member *members = g_new(Member, n ? n : 1);
    for (GList *l = names; l; l = l->next, i++)
        members[i] = (Member){ l->data, bucket_of(l->data), i };
    qsort(members, n, sizeof *members, member_cmp);
    g_string_append_c(out, '{');
    for (i = 0; i < n; i++) {
        g_autoptr(JsonNode) key = json_node_init_string(json_node_alloc(), members[i].name);
        g_autofree char *k = json_to_string(key, FALSE);
        g_string_append_printf(out, "%s%s: ", i ? ", " : "", k);
        append_node(out, json_object_get_member(obj, members[i].name));
    }
    g_string_append_c(out, '}');
}

static void append_node(GString *out, JsonNode *node)
{
    if (JSON_NODE_HOLDS_OBJECT(node)) {
        append_object(out, json_node_get_object(node));
    } else if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *a = json_node_get_array(node);
        g_string_append_c(out, '[');
        for (guint i = 0; i < json_array_get_length(a); i++) {
            if (i)
                g_string_append(out, ", ");
            append_node(out, json_array_get_element(a, i));
        }
        g_string_append_c(out, ']');
    } else {
        g_autofree char *s = json_to_string(node, FALSE);
        g_string_append(out, s);
    }
}

char *block_json_filename(JsonObject *options)
{
    GString *out = g_string_new("json:");
    append_object(out, options);
    return g_string_free(out, FALSE);
}
