/* QMP `transaction`: every action or none (QEMU 7.2 semantics).
 *
 * Actions are prepared in order; the first failure aborts the prepared
 * ones (newest first, so that an action depending on an earlier one is
 * undone before it) and is returned.  Otherwise all are committed.  Each
 * action's clean runs last either way.  The action table maps each
 * TransactionActionKind to its ops (server/qmp/transaction.h). */
#include "server/qmp/commands.h"
#include "server/qmp/transaction.h"
#include "qapi/qapi-commands.h"

static bool abort_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Transaction aborted using Abort action");
    return false;
}

static void nothing(void *state) {}

/* `abort` fails with its own message even in a grouped transaction. */
static const TransactionActionOps abort_action = {
    TRANSACTION_ACTION_KIND_ABORT, true, abort_prepare, nothing, nothing, nothing,
};

/* One entry per action kind; later issues add blockdev-backup etc. here. */
static const TransactionActionOps *const action_table[] = {
    &abort_action,
    &bitmap_add_action,
    &bitmap_remove_action,
    &bitmap_clear_action,
    &bitmap_enable_action,
    &bitmap_disable_action,
    &bitmap_merge_action,
    &blockdev_backup_action,
    &blockdev_snapshot_action,
    &blockdev_snapshot_sync_action,
    &drive_backup_action,
    &internal_snapshot_action,
};

static const TransactionActionOps *ops_for(TransactionActionKind kind)
{
    for (size_t i = 0; i < G_N_ELEMENTS(action_table); i++)
        if (action_table[i]->kind == kind)
            return action_table[i];
    return NULL;
}

typedef struct Prepared {
    const TransactionActionOps *ops;
    void *state;
} Prepared;

bool qmp_transaction(QmpSession *session, q_obj_transaction_arg *args, GError **errp)
{
    TransactionContext ctx = {
        .completion_mode = args->has_properties && args->properties->has_completion_mode
                           ? args->properties->completion_mode : ACTION_COMPLETION_MODE_INDIVIDUAL,
    };
    g_autoptr(GArray) prepared = g_array_new(FALSE, FALSE, sizeof(Prepared));
    bool ok = true;
    for (TransactionActionList *l = args->actions; l && ok; l = l->next) {
        TransactionAction *action = l->value;
        const TransactionActionOps *ops = ops_for(action->type);
        if (!ops) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Action '%s' is not supported",
                        TransactionActionKind_str[action->type]);
            ok = false;
            break;
        }
        if (ctx.completion_mode == ACTION_COMPLETION_MODE_GROUPED && !ops->supports_grouped) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Action '%s' does not support Transaction property completion-mode = %s",
                        TransactionActionKind_str[action->type],
                        ActionCompletionMode_str[ctx.completion_mode]);
            ok = false;
            break;
        }
        Prepared p = { ops, NULL };
        ok = ops->prepare(&ctx, action, &p.state, errp);
        if (ok)
            g_array_append_val(prepared, p);
    }
    if (ok) {
        for (guint i = 0; i < prepared->len; i++) {
            Prepared *p = &g_array_index(prepared, Prepared, i);
            p->ops->commit(p->state);
        }
    } else {
        for (guint i = prepared->len; i > 0; i--) {
            Prepared *p = &g_array_index(prepared, Prepared, i - 1);
            p->ops->abort(p->state);
        }
    }
    for (guint i = 0; i < prepared->len; i++) {
        Prepared *p = &g_array_index(prepared, Prepared, i);
        p->ops->clean(p->state);
    }
    return ok;
}
