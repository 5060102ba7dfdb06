/* Reopening a node read-only or read-write in place (see node_reopen_read_only
 * in node.h): QEMU's bdrv_reopen_set_read_only, which block-commit and
 * block-stream use on a read-only base or top for the job's lifetime.
 *
 * As in QEMU's reopen queue, the children a node opened itself through a
 * file or filter edge follow it (they inherit read-only); backing nodes and
 * children named by reference keep their own mode.  The drivers switch
 * their own state (the file driver moves to a new descriptor with the image
 * locks carried over, qcow2 settles its metadata); the permission
 * transaction then decides: a refused claim or another process's image lock
 * undoes everything. */
#include "block/node-internal.h"
#include "block/user.h"

#include <gio/gio.h>

/* Switches one node's driver and flags (not its children). */
static bool switch_node(BlockNode *node, bool read_only, GError **errp)
{
    if (!node->drv->reopen) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "Block format '%s' used by node '%s' does not support reopening files", node->drv->name,
                    node->name);
        return false;
    }
    if (!node->drv->reopen(node->opaque, read_only, errp))
        return false;
    node->read_only = read_only;
    memset(&node->caps, 0, sizeof node->caps);
    /* The same instance answered these at open: they cannot fail now. */
    int r = node_compute_caps(node);
    g_assert(r == 0);
    if (node->trim_off)
        node->caps.can_trim = false;
    return true;
}

/* Tells the reopen notifiers (dirty bitmaps) that the node goes read-only
 * (before) or went read-write (after); on a failure, those already told
 * are told the opposite (best effort). */
static bool notify(BlockNode *node, bool read_only, GError **errp)
{
    for (guint i = 0; i < node->reopen_notifiers->len; i++) {
        NodeReopenNotifier *n = node->reopen_notifiers->pdata[i];
        if (!n->fn(node, read_only, n->opaque, errp)) {
            while (i-- > 0) {
                n = node->reopen_notifiers->pdata[i];
                n->fn(node, !read_only, n->opaque, NULL);
            }
            return false;
        }
    }
    return true;
}

void node_add_reopen_notifier(BlockNode *node, NodeReopenFn fn, void *opaque)
{
    NodeReopenNotifier *n = g_new0(NodeReopenNotifier, 1);
    n->fn = fn;
    n->opaque = opaque;
    g_ptr_array_add(node->reopen_notifiers, n);
}

/* Read-only: the notifiers while the node can still write, then the node
 * (its metadata settles, its write claims on the children go), then the
 * children it opened, unless someone else still writes them. */
static bool to_read_only(BlockNode *node, GError **errp)
{
    if (!notify(node, true, errp))
        return false;
    if (!switch_node(node, true, errp)) {
        notify(node, false, NULL);
        return false;
    }
    node_perm_refresh(node);
    g_autoptr(GPtrArray) kids = node_perm_data_children(node);
    for (guint i = 0; i < kids->len; i++) {
        BlockNode *kid = kids->pdata[i];
        if (node_is_implicit_child(node, kid) && !(kid->perm & BLOCK_PERM_WRITE))
            node_reopen_read_only(kid, true, NULL);   /* best effort, as QEMU's restore */
    }
    return true;
}

/* Read-write: the children the node opened first, then the node, then the
 * permission check; a failure anywhere undoes what was done. */
static bool to_read_write(BlockNode *node, GError **errp)
{
    g_autoptr(GPtrArray) kids = node_perm_data_children(node);
    g_autoptr(GPtrArray) switched = g_ptr_array_new();
    bool ok = true;
    for (guint i = 0; ok && i < kids->len; i++) {
        BlockNode *kid = kids->pdata[i];
        if (!kid->read_only || !node_is_implicit_child(node, kid))
            continue;
        ok = node_reopen_read_only(kid, false, errp);
        if (ok)
            g_ptr_array_add(switched, kid);
    }
    /* A child named by reference keeps its mode (QEMU does not reopen it
     * either) and then cannot take the writes: QEMU's permission error. */
    for (guint i = 0; ok && i < kids->len; i++) {
        if (((BlockNode *)kids->pdata[i])->read_only) {
            g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Block node is read-only");
            ok = false;
        }
    }
    bool node_switched = false;
    if (ok)
        ok = node_switched = switch_node(node, false, errp);
    if (ok && node->read_only) {
        /* The driver cannot write after all (the plugin says so). */
        g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Block node is read-only");
        ok = false;
    }
    if (ok && !node_perm_refresh_checked(node, errp))
        ok = false;
    bool claimed = ok;
    if (ok && !notify(node, false, errp))
        ok = false;
    if (!ok) {
        if (node_switched && !switch_node(node, true, NULL))
            g_warning("node '%s': could not switch back to read-only", node->name);
        if (claimed)
            node_perm_refresh(node); /* the write claims on the children go */
        for (guint i = switched->len; i-- > 0;)
            node_reopen_read_only(switched->pdata[i], true, NULL);
    }
    return ok;
}

bool node_reopen_read_only(BlockNode *node, bool read_only, GError **errp)
{
    g_assert(node && node->opaque);
    if (node->read_only == read_only)
        return true;
    /* No request may see the node half switched. */
    node_drain_begin(node);
    bool ok = read_only ? to_read_only(node, errp) : to_read_write(node, errp);
    node_drain_end(node);
    return ok;
}

void node_restore_read_only(BlockNode *node, const char *who)
{
    g_autoptr(GError) err = NULL;
    if (!node_reopen_read_only(node, true, &err))
        g_warning("%s: node '%s' stays read-write: %s", who, node->name, err->message);
}
