/* Child references of format nodes (see child-ref.h). */
#include "block/child-ref.h"

#include <string.h>

/* "<base><suffix>" when free and a valid length (QEMU's node names have at
 * most 31 characters), else a generated free name. */
static char *implicit_name(const char *base, const char *suffix)
{
    static gint counter;
    char *name = g_strconcat(base, suffix, NULL);
    while (strlen(name) > 31 || node_find(name)) {
        g_free(name);
        name = g_strdup_printf("implicit%d", g_atomic_int_add(&counter, 1));
    }
    return name;
}

BlockNode *node_create_implicit(BlockNode *parent, JsonObject *nested, const char *suffix, bool read_only,
                                GError **errp)
{
    g_autoptr(JsonObject) copy = json_object_new();
    GList *members = json_object_get_members(nested);
    for (GList *l = members; l; l = l->next)
        json_object_set_member(copy, l->data, json_node_copy(json_object_get_member(nested, l->data)));
    g_list_free(members);
    if (!json_object_has_member(copy, "node-name")) {
        g_autofree char *name = implicit_name(node_name(parent), suffix);
        json_object_set_string_member(copy, "node-name", name);
    }
    if (read_only && !json_object_has_member(copy, "read-only"))
        json_object_set_boolean_member(copy, "read-only", true);
    return node_create(copy, errp);
}

BlockNode *node_open_child_ref(BlockNode *parent, BlockOptions *opts, const char *key, const char *suffix,
                               bool *created, GError **errp)
{
    *created = false;
    JsonObject *nested = block_options_get_object(opts, key);
    if (nested) {
        /* QEMU's defaults: children inherit read-only, backing files are
         * read-only (opened O_RDONLY) unless their options say otherwise. */
        bool read_only = node_read_only(parent) || strcmp(key, "backing") == 0;
        BlockNode *n = node_create_implicit(parent, nested, suffix, read_only, errp);
        *created = n != NULL;
        return n;
    }
    return node_find_ref(opts, key, true, errp);
}

BlockNode *node_find_ref(BlockOptions *opts, const char *key, bool required, GError **errp)
{
    const char *name = block_options_get_str(opts, key, required, errp);
    if (!name)
        return NULL;
    BlockNode *node = node_find(name);
    if (!node)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "Cannot find device='%s' nor node-name='%s'", name, name);
    return node;
}
