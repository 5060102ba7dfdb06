/* snapshot-save, snapshot-load, snapshot-delete as jobs (QEMU's
 * migration/savevm.c: save_snapshot, load_snapshot, delete_snapshot and
 * block/snapshot.c's bdrv_all_* helpers), with their checks, their order
 * and their messages.  The devices are named nodes, looked up when the
 * command runs (a missing one fails the job, as in QEMU); the work runs on
 * the job's thread.  auto-finalize on, auto-dismiss off, as QEMU's
 * JOB_MANUAL_DISMISS; progress is 0/1 then 1/1. */
#include "jobs/snapshot.h"
#include "bitmaps/dirty-bitmap.h"
#include "block/node.h"
#include "block/snapshot.h"

#include <errno.h>
#include <string.h>

typedef struct SnapshotJob {
    SnapshotJobKind kind;
    char *tag, *vmstate;
    char **names;
    GPtrArray *nodes;   /* BlockNode * (a reference each), NULL where not found */
} SnapshotJob;

static GError *fail(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static GError *fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    GError *e = g_error_new_valist(G_IO_ERROR, G_IO_ERROR_FAILED, fmt, ap);
    va_end(ap);
    return e;
}

/* bdrv_all_get_snapshot_devices + bdrv_all_can_snapshot. */
static bool all_can_snapshot(SnapshotJob *sj, GError **errp)
{
    for (guint i = 0; i < sj->nodes->len; i++)
        if (!sj->nodes->pdata[i]) {
            g_propagate_error(errp, fail("No block device node '%s'", sj->names[i]));
            return false;
        }
    for (guint i = 0; i < sj->nodes->len; i++) {
        BlockNode *n = sj->nodes->pdata[i];
        if (!node_snapshot_supported(n) || node_read_only(n)) {
            g_propagate_error(errp, fail("Device '%s' is writable but does not support snapshots", node_name(n)));
            return false;
        }
    }
    return true;
}

/* bdrv_all_has_snapshot: whether every device has a snapshot named tag. */
static bool all_have(SnapshotJob *sj)
{
    for (guint i = 0; i < sj->nodes->len; i++) {
        BlockSnapshot sn;
        if (!node_snapshot_find(sj->nodes->pdata[i], NULL, sj->tag, &sn))
            return false;
        block_snapshot_clear(&sn);
    }
    return true;
}

/* bdrv_all_find_vmstate_bs. */
static BlockNode *vmstate_node(SnapshotJob *sj, GError **errp)
{
    for (guint i = 0; i < sj->nodes->len; i++)
        if (strcmp(node_name(sj->nodes->pdata[i]), sj->vmstate) == 0)
            return sj->nodes->pdata[i];
    g_propagate_error(errp, fail("vmstate block device '%s' does not exist", sj->vmstate));
    return NULL;
}

static int save(SnapshotJob *sj, GError **errp)
{
    if (!all_can_snapshot(sj, errp))
        return -EINVAL;
    if (all_have(sj)) {
        g_propagate_error(errp, fail("Snapshot '%s' already exists in one or more devices", sj->tag));
        return -EEXIST;
    }
    if (!vmstate_node(sj, errp))
        return -ENOENT;
    /* One time for every device; no VM: an empty VM state, VM clock 0. */
    gint64 now = g_get_real_time();
    BlockSnapshot sn = {
        .name = sj->tag, .date_sec = (uint32_t)(now / G_USEC_PER_SEC),
        .date_nsec = (uint32_t)(now % G_USEC_PER_SEC) * 1000, .icount = -1,
    };
    for (guint i = 0; i < sj->nodes->len; i++) {
        int r = node_snapshot_create(sj->nodes->pdata[i], &sn);
        if (r < 0) {
            g_propagate_error(errp, fail("Error while creating snapshot on '%s'", node_name(sj->nodes->pdata[i])));
            return r;
        }
    }
    return 0;
}

static int load(SnapshotJob *sj, GError **errp)
{
    if (!all_can_snapshot(sj, errp))
        return -EINVAL;
    if (!all_have(sj)) {
        g_propagate_error(errp, fail("Snapshot '%s' does not exist in one or more devices", sj->tag));
        return -ENOENT;
    }
    BlockNode *vm = vmstate_node(sj, errp);
    if (!vm)
        return -ENOENT;
    BlockSnapshot sn;
    if (!node_snapshot_find(vm, NULL, sj->tag, &sn)) {
        g_propagate_error(errp, fail("Snapshot '%s' does not exist in one or more devices", sj->tag));
        return -ENOENT;
    }
    uint64_t vm_size = sn.vm_state_size;
    block_snapshot_clear(&sn);
    /* blockd's own snapshots (and qemu-img's) hold no VM state; one that
     * does was saved by a VM, and only a VM can load it.  Checked before
     * any device changes. */
    if (vm_size) {
        g_propagate_error(errp, fail("Snapshot '%s' on '%s' holds %" G_GUINT64_FORMAT " bytes of VM state saved "
                                     "by a virtual machine; only QEMU can load it (blockd holds no VM)",
                                     sj->tag, sj->vmstate, vm_size));
        return -ENOTSUP;
    }
    for (guint i = 0; i < sj->nodes->len; i++) {
        BlockNode *n = sj->nodes->pdata[i];
        /* bdrv_all_goto_snapshot: by name on each device. */
        BlockSnapshot s2;
        int r = -ENOENT;
        if (node_snapshot_find(n, NULL, sj->tag, &s2)) {
            /* A revert changes data behind every bitmap's back, so QEMU's
             * bdrv_snapshot_goto refuses a node that has any. */
            g_autoptr(GPtrArray) bitmaps = dirty_bitmap_list(n);
            bool busy = bitmaps->len > 0;
            r = busy ? -EBUSY : node_snapshot_revert(n, s2.id);
            block_snapshot_clear(&s2);
            if (busy) {
                g_propagate_error(errp, fail("Could not load snapshot '%s' on '%s': Device has active dirty bitmaps",
                                             sj->tag, node_name(n)));
                return r;
            }
        }
        if (r < 0) {
            g_propagate_error(errp, fail("Could not load snapshot '%s' on '%s': %s", sj->tag, node_name(n),
                                         g_strerror(-r)));
            return r;
        }
    }
    return 0;
}

static int delete(SnapshotJob *sj, GError **errp)
{
    if (!all_can_snapshot(sj, errp))
        return -EINVAL;
    for (guint i = 0; i < sj->nodes->len; i++) {
        BlockNode *n = sj->nodes->pdata[i];
        BlockSnapshot sn;
        if (!node_snapshot_find(n, NULL, sj->tag, &sn))
            continue;
        int r = node_snapshot_delete(n, sn.id, sn.name);
        block_snapshot_clear(&sn);
        if (r < 0) {
            g_propagate_error(errp, fail("Could not delete snapshot '%s' on '%s': %s", sj->tag, node_name(n),
                                         g_strerror(-r)));
            return r;
        }
    }
    return 0;
}

static int snapshot_run(Job *job, GError **errp)
{
    SnapshotJob *sj = job_opaque(job);
    job_progress_set_total(job, 1);
    int r = sj->kind == SNAPSHOT_JOB_SAVE ? save(sj, errp) : sj->kind == SNAPSHOT_JOB_LOAD ? load(sj, errp)
                                                                                        : delete(sj, errp);
    job_progress_add(job, 1);
    return r;
}

static void snapshot_free(Job *job)
{
    SnapshotJob *sj = job_opaque(job);
    for (guint i = 0; i < sj->nodes->len; i++)
        if (sj->nodes->pdata[i])
            node_unref(sj->nodes->pdata[i]);
    g_ptr_array_free(sj->nodes, TRUE);
    g_strfreev(sj->names);
    g_free(sj->tag);
    g_free(sj->vmstate);
    g_free(sj);
}

static const JobDriver drivers[] = {
    [SNAPSHOT_JOB_SAVE] = { .type = JOB_TYPE_SNAPSHOT_SAVE, .run = snapshot_run, .free = snapshot_free },
    [SNAPSHOT_JOB_LOAD] = { .type = JOB_TYPE_SNAPSHOT_LOAD, .run = snapshot_run, .free = snapshot_free },
    [SNAPSHOT_JOB_DELETE] = { .type = JOB_TYPE_SNAPSHOT_DELETE, .run = snapshot_run, .free = snapshot_free },
};

Job *snapshot_job_create(SnapshotJobKind kind, const char *job_id, const char *tag, const char *vmstate,
                         const char *const *devices, GError **errp)
{
    SnapshotJob *sj = g_new0(SnapshotJob, 1);
    sj->kind = kind;
    sj->tag = g_strdup(tag);
    sj->vmstate = g_strdup(vmstate);
    sj->names = g_strdupv((char **)devices);
    sj->nodes = g_ptr_array_new();
    for (const char *const *d = devices; *d; d++) {
        BlockNode *n = node_find(*d);
        g_ptr_array_add(sj->nodes, n ? node_ref(n) : NULL);
    }
    Job *job = job_create(job_id, &drivers[kind], sj, NULL, true, false, errp);
    if (!job) {
        for (guint i = 0; i < sj->nodes->len; i++)
            if (sj->nodes->pdata[i])
                node_unref(sj->nodes->pdata[i]);
        g_ptr_array_free(sj->nodes, TRUE);
        g_strfreev(sj->names);
        g_free(sj->tag);
        g_free(sj->vmstate);
        g_free(sj);
    }
    return job;
}
