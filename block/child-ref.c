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

BlockNode *node_find_reference(const char *name, GError **errp)
{
    BlockNode *node = node_find(name);
    if (!node)
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                    "Cannot find device='%s' nor node-name='%s'", name, name);
    return node;
}

BlockNode *node_create_child(BlockNode *parent, const BlockdevOptions *nested, const char *suffix, bool read_only,
                             GError **errp)
{
    /* A shallow copy: the defaults replace base members, the rest is shared. */
    BlockdevOptions o = *nested;
    g_autofree char *name = NULL;
    if (!o.has_node_name) {
        name = implicit_name(node_name(parent), suffix);
        o.has_node_name = true;
        o.node_name = name;
    }
    if (read_only && !o.has_read_only) {
        o.has_read_only = true;
        o.read_only = true;
    }
    return node_create(&o, errp);
}

BlockNode *node_create_anonymous(const BlockdevOptions *nested, const char *base, GError **errp)
{
    BlockdevOptions o = *nested;
    g_autofree char *name = NULL;
    if (!o.has_node_name) {
        name = implicit_name(base, "");
        o.has_node_name = true;
        o.node_name = name;
    }
    return node_create(&o, errp);
}

BlockNode *node_open_child(BlockNode *parent, const BlockdevRef *ref, const char *suffix, bool *created,
                           GError **errp)
{
    *created = false;
    if (ref->type == QAPI_QTYPE_QSTRING)
        return node_find_reference(ref->u.reference, errp);
    /* QEMU's default: children inherit read-only. */
    BlockNode *n = node_create_child(parent, ref->u.definition, suffix, node_read_only(parent), errp);
    *created = n != NULL;
    return n;
}
