/* QMP blockdev-backup and drive-backup, and their `transaction` actions.
 * Thin: the arguments become BackupOptions for jobs/backup.h; drive-backup
 * first opens (or creates) its raw target file as a node of its own. */
#include "server/qmp/commands.h"
#include "server/qmp/transaction.h"
#include "jobs/backup.h"
#include "block/node.h"
#include "server/qmp/drive-target.h"
#include "qapi/qapi-commands.h"

#include <string.h>

/* The members BlockdevBackup and DriveBackup share (QEMU's BackupCommon). */
#define BACKUP_COMMON_TO_OPTIONS(a, o)                                                   \
    do {                                                                                 \
        (o)->job_id = (a)->has_job_id ? (a)->job_id : (a)->device; /* see docs/qmp.md */ \
        (o)->device = (a)->device;                                                       \
        (o)->sync = (a)->sync;                                                           \
        (o)->bitmap = (a)->has_bitmap ? (a)->bitmap : NULL;                              \
        (o)->has_bitmap_mode = (a)->has_bitmap_mode;                                     \
        (o)->bitmap_mode = (a)->bitmap_mode;                                             \
        (o)->speed = (a)->has_speed ? (a)->speed : 0;                                    \
        (o)->on_source_error = (a)->has_on_source_error ? (a)->on_source_error           \
                                                        : BLOCKDEV_ON_ERROR_REPORT;      \
        (o)->on_target_error = (a)->has_on_target_error ? (a)->on_target_error           \
                                                        : BLOCKDEV_ON_ERROR_REPORT;      \
        (o)->auto_finalize = !(a)->has_auto_finalize || (a)->auto_finalize;              \
        (o)->auto_dismiss = !(a)->has_auto_dismiss || (a)->auto_dismiss;                 \
    } while (0)

/* x-perf (and compress, which backup_job_create checks against the target), with QEMU's messages. */
static bool backup_perf(bool compress, bool has_perf, BackupPerf *perf, const char *target,
                        BackupOptions *o, GError **errp)
{
    o->compress = compress;
    if (!has_perf)
        return true;
    if (perf->has_max_workers && (perf->max_workers < 1 || perf->max_workers > 1024)) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "max-workers must be between 1 and %d", 1024);
        return false;
    }
    if (perf->has_max_chunk && perf->max_chunk < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "max-chunk must be zero (which means no limit) or positive");
        return false;
    }
    o->max_workers = perf->has_max_workers ? (unsigned)perf->max_workers : 0;
    o->max_chunk = perf->has_max_chunk ? (uint64_t)MIN(perf->max_chunk, 64 << 20) : 0;
    return true;
}

static Job *start_blockdev_backup(BlockdevBackup *a, JobTxn *txn, GError **errp)
{
    BackupOptions o = { .target = a->target, .txn = txn };
    BACKUP_COMMON_TO_OPTIONS(a, &o);
    if (!backup_perf(a->has_compress && a->compress, a->has_x_perf, a->x_perf, a->target, &o, errp))
        return NULL;
    return backup_job_create(&o, errp);
}

/* QEMU's do_drive_backup: sync=top images sit on the source's backing,
 * sync=none ones on the source. */
static DriveTargetBase drive_target_base(MirrorSyncMode sync)
{
    return sync == MIRROR_SYNC_MODE_TOP    ? DRIVE_TARGET_SOURCE_BACKING
           : sync == MIRROR_SYNC_MODE_NONE ? DRIVE_TARGET_SOURCE
                                           : DRIVE_TARGET_NO_BASE;
}

static Job *start_drive_backup(DriveBackup *a, JobTxn *txn, GError **errp)
{
    BlockNode *source = node_find(a->device);
    if (!source) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", a->device, a->device);
        return NULL;
    }
    BackupOptions o = { .txn = txn, .delete_target_at_end = true };
    BACKUP_COMMON_TO_OPTIONS(a, &o);
    if (!backup_perf(a->has_compress && a->compress, a->has_x_perf, a->x_perf, a->target, &o, errp))
        return NULL;
    BlockNode *target = qmp_open_drive_target("drive-backup", a->target, a->has_format ? a->format : NULL,
                                               a->has_mode && a->mode == NEW_IMAGE_MODE_EXISTING,
                                               NULL, source, drive_target_base(a->sync), errp);
    if (!target)
        return NULL;
    g_autofree char *target_name = g_strdup(node_name(target));
    o.target = target_name;
    Job *job = backup_job_create(&o, errp);
    if (!job)
        node_delete(target_name, NULL);
    return job;
}

bool qmp_blockdev_backup(QmpSession *s, BlockdevBackup *args, GError **errp)
{
    Job *job = start_blockdev_backup(args, NULL, errp);
    if (job)
        job_start(job);
    return job != NULL;
}

bool qmp_drive_backup(QmpSession *s, DriveBackup *args, GError **errp)
{
    Job *job = start_drive_backup(args, NULL, errp);
    if (job)
        job_start(job);
    return job != NULL;
}

/* --- transaction actions: prepare creates the job (the point in time),
 * commit starts it, abort fails it (created -> null). --- */

typedef struct BackupActionState {
    Job *job;
    JobTxn *created_txn; /* the grouped JobTxn this action created, if any */
} BackupActionState;

static JobTxn *action_txn(TransactionContext *ctx, BackupActionState *st)
{
    if (ctx->completion_mode != ACTION_COMPLETION_MODE_GROUPED)
        return NULL;
    if (!ctx->job_txn)
        ctx->job_txn = st->created_txn = job_txn_new();
    return ctx->job_txn;
}

/* A failed prepare gets no clean: free its state here.  Returns false. */
static bool prepare_failed(TransactionContext *ctx, void **state)
{
    BackupActionState *st = *state;
    if (st->created_txn) {
        job_txn_unref(st->created_txn);
        ctx->job_txn = NULL;
    }
    g_free(st);
    *state = NULL;
    return false;
}

static bool blockdev_backup_prepare(TransactionContext *ctx, TransactionAction *action, void **state,
                                    GError **errp)
{
    BackupActionState *st = g_new0(BackupActionState, 1);
    *state = st;
    st->job = start_blockdev_backup(action->u.blockdev_backup.data, action_txn(ctx, st), errp);
    return st->job || prepare_failed(ctx, state);
}

static bool drive_backup_prepare(TransactionContext *ctx, TransactionAction *action, void **state,
                                 GError **errp)
{
    BackupActionState *st = g_new0(BackupActionState, 1);
    *state = st;
    st->job = start_drive_backup(action->u.drive_backup.data, action_txn(ctx, st), errp);
    return st->job || prepare_failed(ctx, state);
}

static void backup_action_commit(void *state)
{
    BackupActionState *st = state;
    job_start(st->job);
}

static void backup_action_abort(void *state)
{
    BackupActionState *st = state;
    if (st->job)
        job_early_fail(st->job);
    st->job = NULL;
}

static void backup_action_clean(void *state)
{
    BackupActionState *st = state;
    if (st->created_txn)
        job_txn_unref(st->created_txn);
    g_free(st);
}

const TransactionActionOps blockdev_backup_action = {
    TRANSACTION_ACTION_KIND_BLOCKDEV_BACKUP, true, blockdev_backup_prepare,
    backup_action_commit, backup_action_abort, backup_action_clean,
};

const TransactionActionOps drive_backup_action = {
    TRANSACTION_ACTION_KIND_DRIVE_BACKUP, true, drive_backup_prepare,
    backup_action_commit, backup_action_abort, backup_action_clean,
};
