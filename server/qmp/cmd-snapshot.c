/* QMP internal snapshots: blockdev-snapshot-internal-sync (also as a
 * transaction action), blockdev-snapshot-delete-internal-sync, and QEMU
 * 6.0's snapshot-save/-load/-delete jobs (jobs/snapshot.c does the work).
 * Checks and messages are QEMU 7.2's (blockdev.c, migration/savevm.c). */
#include "server/qmp/commands.h"
#include "server/qmp/transaction.h"
#include "block/node.h"
#include "block/snapshot.h"
#include "jobs/snapshot.h"
#include "qapi/qapi-commands.h"

#include <errno.h>
#include <string.h>

/* QEMU's qmp_get_root_bs. */
static BlockNode *root_node(const char *name, GError **errp)
{
    BlockNode *node = node_find(name);
    if (!node) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Cannot find device='%s' nor node-name='%s'", name, name);
        return NULL;
    }
    if (node_has_parent(node)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Need a root block node");
        return NULL;
    }
    return node;
}

/* The wall clock as QEMU's snapshot commands record it; with no VM, the
 * "VM clock" is the host clock too (as in qemu-storage-daemon). */
static void fill_times(BlockSnapshot *sn)
{
    gint64 now = g_get_real_time();
    sn->date_sec = (uint32_t)(now / G_USEC_PER_SEC);
    sn->date_nsec = (uint32_t)(now % G_USEC_PER_SEC) * 1000;
    sn->vm_clock_nsec = (uint64_t)now * 1000;
    sn->icount = -1;
}

/* --- blockdev-snapshot-internal-sync --- */

typedef struct InternalState {
    BlockNode *node;
    char *id, *name; /* the snapshot taken, for abort */
} InternalState;

/* QEMU's internal_snapshot_action: checks, then takes the snapshot. */
static bool internal_snapshot(BlockdevSnapshotInternal *a, InternalState *st, GError **errp)
{
    BlockNode *node = root_node(a->device, errp);
    if (!node || !node_check_ops(node, errp))
        return false;
    if (node_read_only(node)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Device '%s' is read only", a->device);
        return false;
    }
    if (!node_snapshot_supported(node)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Block format '%s' used by device '%s' does not support internal snapshots",
                    node_driver_name(node), a->device);
        return false;
    }
    if (!*a->name) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Name is empty");
        return false;
    }
    BlockSnapshot old;
    if (node_snapshot_find(node, NULL, a->name, &old)) {
        block_snapshot_clear(&old);
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Snapshot with name '%s' already exists on device '%s'",
                    a->name, a->device);
        return false;
    }
    BlockSnapshot sn = { .name = a->name };
    fill_times(&sn);
    int r = node_snapshot_create(node, &sn);
    if (r < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to create snapshot '%s' on device '%s': %s",
                    a->name, a->device, g_strerror(-r));
        return false;
    }
    if (st) {
        /* The new one is the last with this name. */
        GArray *list = node_snapshot_list(node);
        for (guint i = 0; list && i < list->len; i++) {
            BlockSnapshot *x = &g_array_index(list, BlockSnapshot, i);
            if (strcmp(x->name, a->name) == 0) {
                g_free(st->id);
                st->id = g_strdup(x->id);
            }
        }
        if (list)
            block_snapshot_list_free(list);
        st->node = node_ref(node);
        st->name = g_strdup(a->name);
    }
    return true;
}

bool qmp_blockdev_snapshot_internal_sync(QmpSession *session, BlockdevSnapshotInternal *args, GError **errp)
{
    return internal_snapshot(args, NULL, errp);
}

static bool internal_prepare(TransactionContext *ctx, TransactionAction *action, void **state, GError **errp)
{
    InternalState *st = g_new0(InternalState, 1);
    *state = st;
    if (internal_snapshot(action->u.blockdev_snapshot_internal_sync.data, st, errp))
        return true;
    g_free(st->id);
    g_free(st->name);
    g_free(st);
    *state = NULL;
    return false;
}

static void internal_commit(void *state) {}

/* As QEMU: a later action failed, the snapshot goes again. */
static void internal_abort(void *state)
{
    InternalState *st = state;
    if (st->node && st->id)
        node_snapshot_delete(st->node, st->id, st->name);
}

static void internal_clean(void *state)
{
    InternalState *st = state;
    if (st->node)
        node_unref(st->node);
    g_free(st->id);
    g_free(st->name);
    g_free(st);
}

const TransactionActionOps internal_snapshot_action = {
    TRANSACTION_ACTION_KIND_BLOCKDEV_SNAPSHOT_INTERNAL_SYNC, false, internal_prepare,
    internal_commit, internal_abort, internal_clean,
};

/* --- blockdev-snapshot-delete-internal-sync --- */

SnapshotInfo *qmp_snapshot_info(const BlockSnapshot *sn)
{
    SnapshotInfo *info = g_new0(SnapshotInfo, 1);
    info->id = g_strdup(sn->id);
    info->name = g_strdup(sn->name);
    info->vm_state_size = (int64_t)sn->vm_state_size;
    info->date_sec = sn->date_sec;
    info->date_nsec = sn->date_nsec;
    info->vm_clock_sec = (int64_t)(sn->vm_clock_nsec / 1000000000u);
    info->vm_clock_nsec = (int64_t)(sn->vm_clock_nsec % 1000000000u);
    info->has_icount = sn->icount != -1;
    info->icount = sn->icount;
    return info;
}

bool qmp_blockdev_snapshot_delete_internal_sync(QmpSession *session,
                                                q_obj_blockdev_snapshot_delete_internal_sync_arg *args,
                                                SnapshotInfo **ret, GError **errp)
{
    BlockNode *node = root_node(args->device, errp);
    if (!node)
        return false;
    const char *id = args->has_id ? args->id : NULL, *name = args->has_name ? args->name : NULL;
    if (!id && !name) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Name or id must be provided");
        return false;
    }
    if (!node_check_ops(node, errp))
        return false;
    if (!node_snapshot_supported(node)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to get a snapshot list: %s", g_strerror(ENOTSUP));
        return false;
    }
    BlockSnapshot sn;
    if (!node_snapshot_find(node, id, name, &sn)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Snapshot with id '%s' and name '%s' does not exist on device '%s'", id ? id : "null",
                    name ? name : "null", args->device);
        return false;
    }
    int r = node_read_only(node) ? -EPERM : node_snapshot_delete(node, id, name); /* QEMU: EPERM */
    if (r < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Failed to remove snapshot from snapshot list: %s",
                    g_strerror(-r));
        block_snapshot_clear(&sn);
        return false;
    }
    *ret = qmp_snapshot_info(&sn);
    block_snapshot_clear(&sn);
    return true;
}

/* --- snapshot-save, snapshot-load, snapshot-delete (jobs) --- */

static bool start_job(SnapshotJobKind kind, const char *job_id, const char *tag, const char *vmstate,
                      strList *devices, GError **errp)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    for (strList *l = devices; l; l = l->next)
        g_ptr_array_add(names, l->value);
    g_ptr_array_add(names, NULL);
    Job *job = snapshot_job_create(kind, job_id, tag, vmstate, (const char *const *)names->pdata, errp);
    if (job)
        job_start(job);
    return job != NULL;
}

bool qmp_snapshot_save(QmpSession *session, q_obj_snapshot_save_arg *args, GError **errp)
{
    return start_job(SNAPSHOT_JOB_SAVE, args->job_id, args->tag, args->vmstate, args->devices, errp);
}

bool qmp_snapshot_load(QmpSession *session, q_obj_snapshot_load_arg *args, GError **errp)
{
    return start_job(SNAPSHOT_JOB_LOAD, args->job_id, args->tag, args->vmstate, args->devices, errp);
}

bool qmp_snapshot_delete(QmpSession *session, q_obj_snapshot_delete_arg *args, GError **errp)
{
    return start_job(SNAPSHOT_JOB_DELETE, args->job_id, args->tag, NULL, args->devices, errp);
}
