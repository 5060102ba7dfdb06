/* External snapshots (see external-snapshot.h). */
#include "block/external-snapshot.h"
#include "block/driver.h"
#include "block/node-internal.h"
#include "block/user.h"

#include <gio/gio.h>

static bool fail(GError **errp, const char *msg)
{
    g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_FAILED, msg);
    return false;
}

/* QEMU's op blocker on a backing node: "node is used as backing hd of 'X'". */
static bool check_not_backing(BlockNode *node, GError **errp)
{
    g_autoptr(GPtrArray) above = node_ancestors(node);
    for (guint i = 1; i < above->len; i++) {
        BlockNode *p = above->pdata[i];
        BlockImageInfo info;
        if (node_image_info(p, &info) && info.backing == node) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_BUSY, "Node '%s' is busy: node is used as backing hd of '%s'",
                        node_name(node), node_name(p));
            return false;
        }
    }
    return true;
}

bool node_snapshot_append(BlockNode *node, BlockNode *overlay, GError **errp)
{
    /* QEMU's external_snapshot_prepare, in its order: the node first ... */
    if (!check_not_backing(node, errp) || !node_check_ops(node, errp))
        return false;
    if (!node_read_only(node) && node_flush(node) < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Write to node '%s' failed", node_name(node));
        return false;
    }
    /* ... then the overlay. */
    if (overlay == node || node_user_count(overlay) > 0 || node_has_parent(overlay))
        return fail(errp, "The overlay is already in use");
    if (!node_check_ops(overlay, errp))
        return false;
    BlockImageInfo info;
    if (node_image_info(overlay, &info) && info.backing)
        return fail(errp, "The overlay already has a backing image");
    if (!overlay->drv->supports_backing || !overlay->drv->set_backing)
        return fail(errp, "The overlay does not support backing images");
    /* QEMU lets sizes differ; blockd's users would see a different size
     * without being told, so it asks for the same size. */
    if (node_size(overlay) != node_size(node)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "The overlay '%s' (%" G_GUINT64_FORMAT " bytes) must have the size of node '%s' (%"
                    G_GUINT64_FORMAT " bytes)", node_name(overlay), (guint64)node_size(overlay),
                    node_name(node), (guint64)node_size(node));
        return false;
    }
    if (!node_set_backing(overlay, node, errp))
        return false;
    if (!node_replace(node, overlay, errp)) {
        node_drop_backing(overlay, node);
        return false;
    }
    return true;
}

void node_snapshot_undo(BlockNode *node, BlockNode *overlay)
{
    g_autoptr(GError) err = NULL;
    /* Giving the users back asks for nothing new: it cannot be refused. */
    if (!node_replace(overlay, node, &err))
        g_error("undoing the snapshot of '%s': %s", node_name(node), err->message);
    node_drop_backing(overlay, node);
}
