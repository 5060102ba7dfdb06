/* What management does to images beyond I/O: block_resize (node_truncate),
 * change-backing-file (node_change_backing_file) and blockdev-create
 * (block_image_create).  The drivers do the format's part through their
 * truncate, change_backing_file and create callbacks (block/driver.h);
 * this file holds what QEMU's block layer checks before calling them
 * (bdrv_co_truncate, bdrv_change_backing_file, qmp_blockdev_create). */
#include "block/node-internal.h"
#include "block/user.h"

#include <gio/gio.h>

/* Parents that pass the node through whole (raw without a window, whose
 * length QEMU asks the child for) take its new size too.  Their resize
 * notifiers do not run: QEMU resizes the dirty bitmaps of the truncated
 * node only, a raw node's keep covering its old size. */
static void parents_follow(BlockNode *node, int depth)
{
    g_autoptr(GPtrArray) claims = node_perm_claims_of(node);
    for (guint i = 0; i < claims->len && depth < 64; i++) {
        const NodeClaimInfo *c = claims->pdata[i];
        if (!c->parent || c->role != NODE_CHILD_FILTERED || !c->parent->drv->get_size)
            continue;
        int64_t psize = c->parent->drv->get_size(c->parent->opaque);
        if (psize >= 0 && (uint64_t)psize != node_size(c->parent)) {
            __atomic_store_n(&c->parent->size, (uint64_t)psize, __ATOMIC_RELEASE);
            parents_follow(c->parent, depth + 1);
        }
    }
}

bool node_truncate(BlockNode *node, uint64_t size, GError **errp)
{
    /* QEMU's bdrv_co_truncate, in its order. */
    if (size > INT64_MAX) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Image size cannot be negative");
        return false;
    }
    if (node->read_only) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY, "Image is read-only");
        return false;
    }
    if (!node->drv->truncate) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Image format driver does not support resize");
        return false;
    }
    /* No request of any user above may be in flight while the size moves
     * (QEMU's qmp_block_resize drains the node the same way). */
    node_drain_begin(node);
    bool ok = node->drv->truncate(node->opaque, size, errp);
    if (ok) {
        /* The driver's own idea of its size is what node_size() reports. */
        g_assert(!node->drv->get_size || node->drv->get_size(node->opaque) == (int64_t)size);
        __atomic_store_n(&node->size, size, __ATOMIC_RELEASE);
        for (guint i = 0; i < node->resize_notifiers->len; i++) {
            NodeNotifier *n = node->resize_notifiers->pdata[i];
            n->fn(node, n->opaque);
        }
        parents_follow(node, 0);
    }
    node_drain_end(node);
    return ok;
}

void node_add_resize_notifier(BlockNode *node, void (*fn)(BlockNode *node, void *opaque), void *opaque)
{
    NodeNotifier *n = g_new0(NodeNotifier, 1);
    n->fn = fn;
    n->opaque = opaque;
    g_ptr_array_add(node->resize_notifiers, n);
}

bool node_change_backing_file(BlockNode *node, const char *backing_file, const char *backing_format,
                              GError **errp)
{
    if (!node->drv->change_backing_file) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Operation not supported");
        return false;
    }
    /* A read-only image is the driver's business (QEMU reopens it read-write). */
    return node->drv->change_backing_file(node->opaque, backing_file, backing_format, errp);
}

bool block_image_create_supported(BlockdevDriver driver, GError **errp)
{
    const BlockDriver *drv = block_driver_find(BlockdevDriver_str[driver]);
    if (!drv) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "Block driver '%s' not found or not supported",
                    BlockdevDriver_str[driver]);
        return false;
    }
    if (!drv->create) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Driver does not support blockdev-create");
        return false;
    }
    return true;
}

bool block_image_create(const BlockdevCreateOptions *options, GError **errp)
{
    if (!block_image_create_supported(options->driver, errp))
        return false;
    const BlockDriver *drv = block_driver_find(BlockdevDriver_str[options->driver]);
    g_assert(drv->type == options->driver);
    return drv->create(options, errp);
}
