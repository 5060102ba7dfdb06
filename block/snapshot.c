/* Internal snapshots of a node: the driver's BlockSnapshotOps, reached by
 * node (see snapshot.h). */
#include "block/snapshot.h"
#include "block/node-internal.h"
#include "block/driver.h"

#include <errno.h>
#include <string.h>

static const BlockSnapshotOps *ops(BlockNode *node)
{
    return node && node->drv ? node->drv->snapshot : NULL;
}

bool node_snapshot_supported(BlockNode *node)
{
    return ops(node) != NULL;
}

GArray *node_snapshot_list(BlockNode *node)
{
    return ops(node) ? ops(node)->list(node->opaque) : NULL;
}

bool node_snapshot_find(BlockNode *node, const char *id, const char *name, BlockSnapshot *out)
{
    memset(out, 0, sizeof *out);
    GArray *list = node_snapshot_list(node);
    bool found = false;
    for (guint i = 0; list && i < list->len && !found; i++) {
        BlockSnapshot *sn = &g_array_index(list, BlockSnapshot, i);
        if ((!id || strcmp(sn->id, id) == 0) && (!name || strcmp(sn->name, name) == 0)) {
            *out = *sn;
            out->id = g_strdup(sn->id);
            out->name = g_strdup(sn->name);
            found = true;
        }
    }
    if (list)
        block_snapshot_list_free(list);
    return found;
}

int node_snapshot_create(BlockNode *node, const BlockSnapshot *sn)
{
    return ops(node) ? ops(node)->create(node->opaque, sn) : -ENOTSUP;
}

int node_snapshot_delete(BlockNode *node, const char *id, const char *name)
{
    return ops(node) ? ops(node)->delete(node->opaque, id, name) : -ENOTSUP;
}

int node_snapshot_revert(BlockNode *node, const char *id_or_name)
{
    return ops(node) ? ops(node)->revert(node->opaque, id_or_name) : -ENOTSUP;
}

void block_snapshot_clear(BlockSnapshot *sn)
{
    g_free(sn->id);
    g_free(sn->name);
    sn->id = sn->name = NULL;
}

void block_snapshot_list_free(GArray *list)
{
    for (guint i = 0; i < list->len; i++)
        block_snapshot_clear(&g_array_index(list, BlockSnapshot, i));
    g_array_free(list, TRUE);
}
