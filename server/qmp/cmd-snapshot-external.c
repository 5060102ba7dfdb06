/* blockdev-snapshot and blockdev-snapshot-sync (QEMU 7.2), as commands and
 * as transaction actions: prepare puts the overlay on top (so later actions
 * of the same transaction, such as block-dirty-bitmap-add on the overlay,
 * see it), abort takes it off again; a -sync overlay made by the action
 * leaves the graph on abort (its image file stays, as in QEMU). */
#include "server/qmp/commands.h"
#include "server/qmp/drive-target.h"
#include "server/qmp/transaction.h"
#include "block/external-snapshot.h"
#include "qapi/qapi-commands.h"

#include <string.h>

typedef struct SnapshotState {
    BlockNode *node, *overlay;   /* references while prepared */
    bool created;                /* -sync: the overlay node is the action's */
} SnapshotState;

static bool lookup_error(GError **errp, const char *device, const char *node_name)
{
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Cannot find device='%s' nor node-name='%s'",
                device ? device : "", node_name ? node_name : "");
    return false;
}

static bool append(SnapshotState *st, BlockNode *node, BlockNode *overlay, bool created, GError **errp)
{
    if (!node_snapshot_append(node, overlay, errp))
        return false;
    st->node = node_ref(node);
    st->overlay = node_ref(overlay);
    st->created = created;
    return true;
}

static bool snapshot_prepare(SnapshotState *st, const BlockdevSnapshot *a, GError **errp)
{
    BlockNode *node = node_find(a->node);
    if (!node)
        return lookup_error(errp, a->node, a->node);
    BlockNode *overlay = node_find(a->overlay);
    if (!overlay)
        return lookup_error(errp, a->overlay, a->overlay);
    return append(st, node, overlay, false, errp);
}

/* QEMU's order: the node (by node-name; blockd has no named devices), the
 * new node's name, then the image is made and opened, then appended. */
static bool snapshot_sync_prepare(SnapshotState *st, const BlockdevSnapshotSync *a, GError **errp)
{
    const char *device = a->has_device ? a->device : NULL;
    const char *node_name = a->has_node_name ? a->node_name : NULL;
    BlockNode *node = node_name ? node_find(node_name) : NULL;
    if (!node)
        return lookup_error(errp, device, node_name);
    if (!a->has_snapshot_node_name) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "New overlay node-name missing");
        return false;
    }
    if (node_find(a->snapshot_node_name)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "New overlay node-name already in use");
        return false;
    }
    const char *format = a->has_format ? a->format : "qcow2";
    bool existing = a->has_mode && a->mode == NEW_IMAGE_MODE_EXISTING;
    BlockNode *overlay = qmp_open_snapshot_overlay(a->snapshot_file, format, existing, a->snapshot_node_name,
                                                   node, errp);
    if (!overlay)
        return false;
    if (!append(st, node, overlay, true, errp)) {
        node_delete(a->snapshot_node_name, NULL);
        return false;
    }
    return true;
}

static void snapshot_abort(void *state)
{
    SnapshotState *st = state;
    if (!st->overlay)
        return;
    node_snapshot_undo(st->node, st->overlay);
    if (st->created) {
        g_autofree char *name = g_strdup(node_name(st->overlay));
        g_clear_pointer(&st->overlay, node_unref);
        node_delete(name, NULL);
    }
}

static void snapshot_commit(void *state) {}

static void snapshot_clean(void *state)
{
    SnapshotState *st = state;
    node_unref(st->node);
    node_unref(st->overlay);
    g_free(st);
}

bool qmp_blockdev_snapshot(QmpSession *session, BlockdevSnapshot *args, GError **errp)
{
    SnapshotState st = { 0 };
    bool ok = snapshot_prepare(&st, args, errp);
    node_unref(st.node);
    node_unref(st.overlay);
    return ok;
}

bool qmp_blockdev_snapshot_sync(QmpSession *session, BlockdevSnapshotSync *args, GError **errp)
{
    SnapshotState st = { 0 };
    bool ok = snapshot_sync_prepare(&st, args, errp);
    node_unref(st.node);
    node_unref(st.overlay);
    return ok;
}

static bool snapshot_action_prepare(TransactionContext *ctx, TransactionAction *action, void **state,
                                    GError **errp)
{
    SnapshotState *st = g_new0(SnapshotState, 1);
    *state = st;
    return snapshot_prepare(st, action->u.blockdev_snapshot.data, errp);
}

static bool snapshot_sync_action_prepare(TransactionContext *ctx, TransactionAction *action, void **state,
                                         GError **errp)
{
    SnapshotState *st = g_new0(SnapshotState, 1);
    *state = st;
    return snapshot_sync_prepare(st, action->u.blockdev_snapshot_sync.data, errp);
}

const TransactionActionOps blockdev_snapshot_action = {
    TRANSACTION_ACTION_KIND_BLOCKDEV_SNAPSHOT, false,
    snapshot_action_prepare, snapshot_commit, snapshot_abort, snapshot_clean,
};

const TransactionActionOps blockdev_snapshot_sync_action = {
    TRANSACTION_ACTION_KIND_BLOCKDEV_SNAPSHOT_SYNC, false,
    snapshot_sync_action_prepare, snapshot_commit, snapshot_abort, snapshot_clean,
};
