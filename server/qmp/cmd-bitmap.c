/* QMP dirty-bitmap commands (block-dirty-bitmap-*, x-debug-block-dirty-bitmap-sha256)
 * and their transaction actions.  Thin: bitmaps/dirty-bitmap.h does the work;
 * this file resolves names with QEMU's messages and orders the checks as QEMU does. */
#include "server/qmp/commands.h"
#include "server/qmp/transaction.h"
#include "bitmaps/dirty-bitmap.h"
#include "qapi/qapi-commands.h"

#include <string.h>

/* block-dirty-bitmap-add: QEMU checks the name, then the node, then the rest. */
static DirtyBitmap *bitmap_add(BlockDirtyBitmapAdd *a, GError **errp)
{
    if (a->name[0] == '\0') {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Bitmap name cannot be empty");
        return NULL;
    }
    BlockNode *node = node_find(a->node);
    if (!node) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "Cannot find device='%s' nor node-name='%s'", a->node, a->node);
        return NULL;
    }
    uint32_t granularity = a->has_granularity ? a->granularity : dirty_bitmap_default_granularity(node);
    return dirty_bitmap_create(node, a->name, granularity, a->has_persistent && a->persistent,
                               a->has_disabled && a->disabled, errp);
}

bool qmp_block_dirty_bitmap_add(QmpSession *session, BlockDirtyBitmapAdd *args, GError **errp)
{
    return bitmap_add(args, errp) != NULL;
}

bool qmp_block_dirty_bitmap_remove(QmpSession *session, BlockDirtyBitmap *args, GError **errp)
{
    DirtyBitmap *bm = dirty_bitmap_lookup(args->node, args->name, NULL, errp);
    return bm && dirty_bitmap_remove(bm, errp);
}

bool qmp_block_dirty_bitmap_clear(QmpSession *session, BlockDirtyBitmap *args, GError **errp)
{
    DirtyBitmap *bm = dirty_bitmap_lookup(args->node, args->name, NULL, errp);
    if (!bm || !dirty_bitmap_check(bm, DIRTY_BITMAP_DEFAULT, errp))
        return false;
    dirty_bitmap_clear(bm, NULL);
    return true;
}

static bool set_enabled(BlockDirtyBitmap *args, bool enabled, GError **errp)
{
    DirtyBitmap *bm = dirty_bitmap_lookup(args->node, args->name, NULL, errp);
    if (!bm || !dirty_bitmap_check(bm, DIRTY_BITMAP_ALLOW_RO, errp))
        return false;
    dirty_bitmap_set_enabled(bm, enabled);
    return true;
}

bool qmp_block_dirty_bitmap_enable(QmpSession *session, BlockDirtyBitmap *args, GError **errp)
{
    return set_enabled(args, true, errp);
}

bool qmp_block_dirty_bitmap_disable(QmpSession *session, BlockDirtyBitmap *args, GError **errp)
{
    return set_enabled(args, false, errp);
}

/* Resolves target and sources and merges; *backup (if given) gets the old bits. */
static DirtyBitmap *bitmap_merge(BlockDirtyBitmapMerge *m, HBitmap **backup, GError **errp)
{
    BlockNode *node = NULL;
    DirtyBitmap *target = dirty_bitmap_lookup(m->node, m->target, &node, errp);
    if (!target)
        return NULL;
    g_autoptr(GPtrArray) sources = g_ptr_array_new();
    for (BlockDirtyBitmapOrStrList *l = m->bitmaps; l; l = l->next) {
        DirtyBitmap *src;
        if (l->value->type == QAPI_QTYPE_QSTRING) {
            src = dirty_bitmap_find(node, l->value->u.local);
            if (!src) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Dirty bitmap '%s' not found",
                            l->value->u.local);
                return NULL;
            }
        } else {
            src = dirty_bitmap_lookup(l->value->u.external->node, l->value->u.external->name, NULL, errp);
            if (!src)
                return NULL;
        }
        g_ptr_array_add(sources, src);
    }
    /* An empty list is a no-op (QEMU 7.2 crashes on it). */
    if (sources->len == 0) {
        if (backup)
            *backup = NULL;
        return target;
    }
    return dirty_bitmap_merge(target, sources, backup, errp) ? target : NULL;
}

bool qmp_block_dirty_bitmap_merge(QmpSession *session, BlockDirtyBitmapMerge *args, GError **errp)
{
    return bitmap_merge(args, NULL, errp) != NULL;
}

bool qmp_x_debug_block_dirty_bitmap_sha256(QmpSession *session, BlockDirtyBitmap *args,
                                           BlockDirtyBitmapSha256 **ret, GError **errp)
{
    DirtyBitmap *bm = dirty_bitmap_lookup(args->node, args->name, NULL, errp);
    if (!bm)
        return false;
    *ret = g_new0(BlockDirtyBitmapSha256, 1);
    (*ret)->sha256 = dirty_bitmap_sha256(bm);
    return true;
}

/* ------------------------------------------------------------ transaction actions */

typedef struct BitmapActionState {
    DirtyBitmap *bm;
    HBitmap *backup;       /* clear/merge: the bits before */
    bool was_enabled;      /* enable/disable */
    bool committed;
} BitmapActionState;

static BitmapActionState *state_new(DirtyBitmap *bm)
{
    BitmapActionState *s = g_new0(BitmapActionState, 1);
    s->bm = bm;
    return s;
}

static void state_clean(void *opaque)
{
    BitmapActionState *s = opaque;
    hbitmap_free(s->backup);
    g_free(s);
}

static void nothing(void *opaque) {}

/* add: created in prepare, removed again on abort. */
static bool add_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    DirtyBitmap *bm = bitmap_add(a->u.block_dirty_bitmap_add.data, errp);
    *state = bm ? state_new(bm) : NULL;
    return bm != NULL;
}

static void add_abort(void *opaque)
{
    BitmapActionState *s = opaque;
    dirty_bitmap_remove(s->bm, NULL);
}

/* remove: held busy until commit, so an abort leaves it untouched. */
static bool remove_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    BlockDirtyBitmap *b = a->u.block_dirty_bitmap_remove.data;
    DirtyBitmap *bm = dirty_bitmap_lookup(b->node, b->name, NULL, errp);
    if (!bm)
        return false;
    /* The checks of a real remove: busy, then readonly. */
    if (dirty_bitmap_busy(bm) || dirty_bitmap_readonly(bm)) {
        dirty_bitmap_check(bm, DIRTY_BITMAP_DEFAULT, errp);
        return false;
    }
    dirty_bitmap_set_busy(bm, true);
    *state = state_new(bm);
    return true;
}

static void remove_commit(void *opaque)
{
    BitmapActionState *s = opaque;
    dirty_bitmap_set_busy(s->bm, false);
    dirty_bitmap_remove(s->bm, NULL);
}

static void remove_abort(void *opaque)
{
    BitmapActionState *s = opaque;
    dirty_bitmap_set_busy(s->bm, false);
}

/* clear: old bits kept aside until commit. */
static bool clear_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    BlockDirtyBitmap *b = a->u.block_dirty_bitmap_clear.data;
    DirtyBitmap *bm = dirty_bitmap_lookup(b->node, b->name, NULL, errp);
    if (!bm || !dirty_bitmap_check(bm, DIRTY_BITMAP_DEFAULT, errp))
        return false;
    BitmapActionState *s = state_new(bm);
    dirty_bitmap_clear(bm, &s->backup);
    *state = s;
    return true;
}

static void clear_abort(void *opaque)
{
    BitmapActionState *s = opaque;
    dirty_bitmap_restore(s->bm, s->backup, true);
    s->backup = NULL;
}

static bool set_enabled_prepare(TransactionAction *a, BlockDirtyBitmap *b, bool enabled, void **state,
                                GError **errp)
{
    DirtyBitmap *bm = dirty_bitmap_lookup(b->node, b->name, NULL, errp);
    if (!bm || !dirty_bitmap_check(bm, DIRTY_BITMAP_ALLOW_RO, errp))
        return false;
    BitmapActionState *s = state_new(bm);
    s->was_enabled = dirty_bitmap_recording(bm);
    dirty_bitmap_set_enabled(bm, enabled);
    *state = s;
    return true;
}

static bool enable_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    return set_enabled_prepare(a, a->u.block_dirty_bitmap_enable.data, true, state, errp);
}

static bool disable_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    return set_enabled_prepare(a, a->u.block_dirty_bitmap_disable.data, false, state, errp);
}

static void set_enabled_abort(void *opaque)
{
    BitmapActionState *s = opaque;
    dirty_bitmap_set_enabled(s->bm, s->was_enabled);
}

/* merge: done in prepare; the old bits are put back exactly on abort. */
static bool merge_prepare(TransactionContext *ctx, TransactionAction *a, void **state, GError **errp)
{
    HBitmap *backup = NULL;
    DirtyBitmap *bm = bitmap_merge(a->u.block_dirty_bitmap_merge.data, &backup, errp);
    if (!bm)
        return false;
    BitmapActionState *s = state_new(bm);
    s->backup = backup;
    *state = s;
    return true;
}

static void merge_abort(void *opaque)
{
    BitmapActionState *s = opaque;
    if (s->backup)
        dirty_bitmap_restore(s->bm, s->backup, false);
    s->backup = NULL;
}

const TransactionActionOps bitmap_add_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ADD, false, add_prepare, nothing, add_abort, state_clean,
};
const TransactionActionOps bitmap_remove_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_REMOVE, false, remove_prepare, remove_commit, remove_abort,
    state_clean,
};
const TransactionActionOps bitmap_clear_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_CLEAR, false, clear_prepare, nothing, clear_abort, state_clean,
};
const TransactionActionOps bitmap_enable_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_ENABLE, false, enable_prepare, nothing, set_enabled_abort,
    state_clean,
};
const TransactionActionOps bitmap_disable_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_DISABLE, false, disable_prepare, nothing, set_enabled_abort,
    state_clean,
};
const TransactionActionOps bitmap_merge_action = {
    TRANSACTION_ACTION_KIND_BLOCK_DIRTY_BITMAP_MERGE, false, merge_prepare, nothing, merge_abort, state_clean,
};
