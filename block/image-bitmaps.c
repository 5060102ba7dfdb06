/* Node-level calls for dirty bitmaps stored in an image (see
 * block/image-bitmaps.h): each passes the node's driver instance to its
 * BlockDriver.bitmaps_* callback. */
#include "block/image-bitmaps.h"
#include "block/node-internal.h"

#include <errno.h>
#include <gio/gio.h>

void stored_bitmap_free(StoredBitmap *sb)
{
    if (!sb)
        return;
    g_free(sb->name);
    hbitmap_free(sb->bits);
    g_free(sb);
}

bool node_bitmaps_supported(BlockNode *node)
{
    return node->drv->bitmaps_store != NULL;
}

bool node_bitmaps_can_add(BlockNode *node, const char *name, uint32_t granularity,
                          const char *const *names, guint n, GError **errp)
{
    g_assert(node_bitmaps_supported(node));
    return node->drv->bitmaps_can_add(node->opaque, name, granularity, names, n, errp);
}

bool node_bitmaps_load(BlockNode *node, GPtrArray *out, GError **errp)
{
    g_assert(node_bitmaps_supported(node));
    return node->drv->bitmaps_load(node->opaque, out, errp);
}

bool node_bitmaps_store(BlockNode *node, GPtrArray *entries, bool clean, GError **errp)
{
    g_assert(node_bitmaps_supported(node));
    return node->drv->bitmaps_store(node->opaque, entries, clean, errp);
}

int node_bitmaps_write(BlockNode *node, uint64_t loc, uint64_t first_word, uint64_t nwords, const void *buf)
{
    g_assert(node_bitmaps_supported(node));
    return node->drv->bitmaps_write(node->opaque, loc, first_word, nwords, buf);
}

int node_bitmaps_sync(BlockNode *node)
{
    g_assert(node_bitmaps_supported(node));
    return node->drv->bitmaps_sync(node->opaque);
}
