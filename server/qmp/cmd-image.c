/* QMP image commands: blockdev-create (a create job), block_resize,
 * change-backing-file and query-block.  Thin: the checks QEMU's blockdev.c
 * makes before calling the block layer, in its order and with its texts;
 * block/image-ops.c and the drivers do the work. */
#include "server/qmp/commands.h"
#include "block/node.h"
#include "jobs/create.h"
#include "qapi/qapi-commands.h"

#include <string.h>

static bool generic(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static bool generic(GError **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, QMP_ERROR, QMP_ERROR_GENERIC, msg);
    return false;
}

bool qmp_blockdev_create(QmpSession *session, q_obj_blockdev_create_arg *args, GError **errp)
{
    return create_job_start(args->job_id, args->options, errp) != NULL;
}

/* Whether a parent uses the node as its backing node: QEMU then blocks
 * resizing it (the backing_blocker of bdrv_set_backing_hd). */
static bool is_backing_node(BlockNode *node)
{
    g_autoptr(GPtrArray) claims = node_perm_claims_of(node);
    for (guint i = 0; i < claims->len; i++) {
        const NodeClaimInfo *c = claims->pdata[i];
        if (c->parent && c->role == NODE_CHILD_COW)
            return true;
    }
    return false;
}

bool qmp_block_resize(QmpSession *session, q_obj_block_resize_arg *args, GError **errp)
{
    /* qemu-storage-daemon has no named devices: only node-name finds a node. */
    const char *device = args->has_device ? args->device : NULL;
    const char *node_name = args->has_node_name ? args->node_name : NULL;
    BlockNode *node = node_name ? node_find(node_name) : NULL;
    if (!node)
        return generic(errp, "Cannot find device='%s' nor node-name='%s'", device ? device : "",
                       node_name ? node_name : "");
    /* QEMU's QERR_DEVICE_IN_USE names the device argument, "(null)" without one. */
    if (!node_check_ops(node, NULL) || is_backing_node(node))
        return generic(errp, "Device '%s' is in use", device ? device : "(null)");
    if (args->size < 0)
        return generic(errp, "Parameter 'size' expects a >0 size");
    /* As QEMU's temporary BlockBackend: resize, sharing everything. */
    NodePermClaim *claim = node_perm_claim(node, BLOCK_PERM_RESIZE, BLOCK_PERM_ALL, errp);
    if (!claim)
        return false;
    bool ok = node_truncate(node, (uint64_t)args->size, errp);
    node_perm_release(claim);
    return ok;
}

/* Whether `image` is `top` or in its backing chain. */
static bool chain_contains(BlockNode *top, BlockNode *image)
{
    BlockImageInfo info;
    for (int depth = 0; top && depth < 1000; depth++) {
        if (top == image)
            return true;
        top = node_image_info(top, &info) ? info.backing : NULL;
    }
    return false;
}

bool qmp_change_backing_file(QmpSession *session, q_obj_change_backing_file_arg *args, GError **errp)
{
    /* QEMU's qmp_change_backing_file, in its order. */
    BlockNode *top = node_find(args->device);
    if (!top)
        return generic(errp, "Cannot find device='%s' nor node-name='%s'", args->device, args->device);
    /* QEMU's bdrv_is_root_node: no parent but BlockBackends (exports); a
     * job's use makes a node a non-root as a parent node's does. */
    if (node_has_parent(top) || !node_check_ops(top, NULL))
        return generic(errp, "Need a root block node");
    BlockNode *image = node_find(args->image_node_name);
    if (!image)
        return generic(errp, "Cannot find device='' nor node-name='%s'", args->image_node_name);
    BlockImageInfo info;
    if (!node_image_info(image, &info) || !info.backing)
        return generic(errp, "not allowing backing file change on an image without a backing file");
    if (!node_check_ops(top, errp))
        return false;
    if (!chain_contains(top, image))
        return generic(errp, "'%s' and image file are not in the same chain", args->device);
    /* QEMU records the image's own format as the backing format. */
    g_autoptr(GError) err = NULL;
    if (!node_change_backing_file(image, args->backing_file, node_driver_name(image), &err)) {
        if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_READ_ONLY))
            return generic(errp, "%s", err->message);
        return generic(errp, "Could not change backing file to '%s': %s", args->backing_file, err->message);
    }
    return true;
}

/* QEMU lists named BlockBackends (devices) here.  blockd's users of nodes
 * (exports, jobs) are anonymous, as qemu-storage-daemon's are, so there is
 * never one to list: the same empty list (docs/qmp.md says why nodes are
 * not shown here instead). */
bool qmp_query_block(QmpSession *session, BlockInfoList **ret, GError **errp)
{
    *ret = NULL;
    return true;
}
