/* The `transaction` command's action table (server/qmp/cmd-transaction.c).
 *
 * Each action kind supplies prepare/commit/abort/clean.  prepare does the
 * action's work in a way that abort can undo (and may fail); commit makes
 * it final; clean frees the state and runs last in both cases.  A new
 * action (blockdev-backup, ...) adds a TransactionActionKind member in
 * qapi/transaction.json and one entry to the table in cmd-transaction.c. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "qapi/qapi-types.h"

/* Shared by the actions of one transaction. */
typedef struct TransactionContext {
    ActionCompletionMode completion_mode;
    /* completion-mode=grouped: the JobTxn (jobs/job.h) the backup actions
     * share; the first backup action creates it and drops it in its clean. */
    void *job_txn;
} TransactionContext;

typedef struct TransactionActionOps {
    TransactionActionKind kind;
    bool supports_grouped;   /* starts jobs that completion-mode=grouped can group */
    bool (*prepare)(TransactionContext *ctx, TransactionAction *action, void **state, GError **errp);
    void (*commit)(void *state);
    void (*abort)(void *state);
    void (*clean)(void *state);
} TransactionActionOps;

/* The bitmap actions (server/qmp/cmd-bitmap.c). */
extern const TransactionActionOps bitmap_add_action;
extern const TransactionActionOps bitmap_remove_action;
extern const TransactionActionOps bitmap_clear_action;
extern const TransactionActionOps bitmap_enable_action;
extern const TransactionActionOps bitmap_disable_action;
extern const TransactionActionOps bitmap_merge_action;
/* The backup actions (server/qmp/cmd-job-backup.c). */
extern const TransactionActionOps blockdev_backup_action;
extern const TransactionActionOps drive_backup_action;
/* The external snapshot actions (server/qmp/cmd-snapshot-external.c). */
extern const TransactionActionOps blockdev_snapshot_action;
extern const TransactionActionOps blockdev_snapshot_sync_action;
/* The internal snapshot action (server/qmp/cmd-snapshot.c). */
extern const TransactionActionOps internal_snapshot_action;
