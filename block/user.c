/* Users of nodes, drain and replace (see block/user.h).
 *
 * A user is drained while its `quiesce` count is above zero.  The count is
 * kept equal to the number of active drains whose set of nodes (the drained
 * node and everything above it, fixed when the drain began) contains the
 * user's node: drains add to it, node_replace recomputes it for the users it
 * moves, and a new user starts from it.
 *
 * Requests and drains meet without a lock on the fast path: a request
 * increments `inflight` and then reads `quiesce`; a drainer increments
 * `quiesce` and then waits for `inflight` to reach zero.  GLib's atomics are
 * sequentially consistent, so one of the two sees the other: either the
 * request backs off, or the drainer waits for it, and a request ending while
 * a drain waits wakes it under the user's lock. */
#include "block/user.h"
#include "block/node-perm.h"
#include "block/node-internal.h"

#include <errno.h>

struct BlockUser {
    gint refcount;           /* owner + a drainer waiting on it */
    BlockNode *node;         /* changed only while drained with nothing in flight */
    NodePermClaim *claim;    /* on node; moves with it */
    uint64_t perm, shared;
    char *owner_kind, *owner_name, *edge; /* the claim's description */
    char *desc;
    gint inflight;           /* requests between begin and end (atomic) */
    gint quiesce;            /* active drains over this user's node (atomic) */
    GMutex lock;             /* with cond: waits for inflight == 0 or quiesce == 0 */
    GCond cond;
};

typedef struct Drain {
    BlockNode *node;         /* the node drain_begin was called on */
    GPtrArray *nodes;        /* it and every node above it, when it began */
} Drain;

static GMutex users_lock;
static GPtrArray *users;     /* BlockUser *, attached ones; under users_lock */
static GPtrArray *drains;    /* Drain *, in the order they began; under users_lock */

static void init_locked(void)
{
    if (!users) {
        users = g_ptr_array_new();
        drains = g_ptr_array_new();
    }
}

static BlockUser *user_ref(BlockUser *u)
{
    g_atomic_int_inc(&u->refcount);
    return u;
}

static void user_unref(BlockUser *u)
{
    if (!g_atomic_int_dec_and_test(&u->refcount))
        return;
    g_assert(g_atomic_int_get(&u->inflight) == 0);
    g_mutex_clear(&u->lock);
    g_cond_clear(&u->cond);
    g_free(u->desc);
    g_free(u->owner_kind);
    g_free(u->owner_name);
    g_free(u->edge);
    g_free(u);
}

/* Active drains covering `node`. */
static gint drains_over_locked(BlockNode *node)
{
    gint n = 0;
    for (guint i = 0; i < drains->len; i++) {
        Drain *d = drains->pdata[i];
        if (g_ptr_array_find(d->nodes, node, NULL))
            n++;
    }
    return n;
}

/* Adds `delta` to the user's drain count; wakes its held requests at zero. */
static void quiesce_add(BlockUser *u, gint delta)
{
    g_mutex_lock(&u->lock);
    gint now = g_atomic_int_add(&u->quiesce, delta) + delta;
    g_assert(now >= 0);
    if (now == 0)
        g_cond_broadcast(&u->cond);
    g_mutex_unlock(&u->lock);
}

BlockUser *block_user_new(BlockNode *node, const char *desc, uint64_t perm, uint64_t shared,
                          GError **errp)
{
    NodePermClaim *claim = node_perm_claim(node, perm, shared, errp);
    if (!claim)
        return NULL;
    BlockUser *u = g_new0(BlockUser, 1);
    u->refcount = 1;
    u->claim = claim;
    u->perm = perm;
    u->shared = shared;
    u->node = node_ref(node);
    u->desc = g_strdup(desc);
    g_mutex_init(&u->lock);
    g_cond_init(&u->cond);
    g_mutex_lock(&users_lock);
    init_locked();
    u->quiesce = drains_over_locked(node);
    g_ptr_array_add(users, u);
    g_mutex_unlock(&users_lock);
    return u;
}

void block_user_free(BlockUser *u)
{
    if (!u)
        return;
    g_mutex_lock(&users_lock);
    g_ptr_array_remove(users, u);
    BlockNode *node = g_atomic_pointer_exchange(&u->node, NULL);
    NodePermClaim *claim = g_steal_pointer(&u->claim);
    g_mutex_unlock(&users_lock);
    node_perm_release(claim);
    node_unref(node);
    user_unref(u);
}

void block_user_describe(BlockUser *u, const char *owner_kind, const char *owner_name, const char *edge)
{
    g_mutex_lock(&users_lock);
    g_free(u->owner_kind);
    g_free(u->owner_name);
    g_free(u->edge);
    u->owner_kind = g_strdup(owner_kind);
    u->owner_name = g_strdup(owner_name);
    u->edge = g_strdup(edge);
    node_perm_claim_describe(u->claim, owner_kind, owner_name, edge);
    g_mutex_unlock(&users_lock);
}

bool block_user_set_perm(BlockUser *u, uint64_t perm, uint64_t shared, GError **errp)
{
    g_mutex_lock(&users_lock);
    bool ok = node_perm_claim_update(u->claim, perm, shared, errp);
    if (ok) {
        u->perm = perm;
        u->shared = shared;
    }
    g_mutex_unlock(&users_lock);
    return ok;
}

BlockNode *block_user_node(BlockUser *u)
{
    return g_atomic_pointer_get(&u->node);
}

const char *block_user_desc(BlockUser *u)
{
    return u->desc;
}

BlockNode *block_user_begin(BlockUser *u)
{
    for (;;) {
        g_atomic_int_inc(&u->inflight);
        if (g_atomic_int_get(&u->quiesce) == 0)
            break;
        /* Drained: back off (waking a drainer waiting for us), then wait. */
        block_user_end(u, 0);
        g_mutex_lock(&u->lock);
        while (g_atomic_int_get(&u->quiesce) > 0)
            g_cond_wait(&u->cond, &u->lock);
        g_mutex_unlock(&u->lock);
    }
    return g_atomic_pointer_get(&u->node);
}

int block_user_end(BlockUser *u, int r)
{
    if (g_atomic_int_dec_and_test(&u->inflight) && g_atomic_int_get(&u->quiesce) > 0) {
        g_mutex_lock(&u->lock);
        g_cond_broadcast(&u->cond);
        g_mutex_unlock(&u->lock);
    }
    return r;
}

/* Waits until no request of `u` is in flight (its drain count is above zero). */
static void wait_idle(BlockUser *u)
{
    g_mutex_lock(&u->lock);
    while (g_atomic_int_get(&u->inflight) > 0)
        g_cond_wait(&u->cond, &u->lock);
    g_mutex_unlock(&u->lock);
}

void node_drain_begin(BlockNode *node)
{
    Drain *d = g_new0(Drain, 1);
    d->node = node_ref(node);
    d->nodes = node_ancestors(node);
    g_autoptr(GPtrArray) held = g_ptr_array_new_with_free_func((GDestroyNotify)user_unref);
    g_mutex_lock(&users_lock);
    init_locked();
    g_ptr_array_add(drains, d);
    for (guint i = 0; i < users->len; i++) {
        BlockUser *u = users->pdata[i];
        if (g_ptr_array_find(d->nodes, u->node, NULL)) {
            quiesce_add(u, 1);
            g_ptr_array_add(held, user_ref(u));
        }
    }
    g_mutex_unlock(&users_lock);
    /* Outside users_lock: a request may be finishing on another thread. */
    for (guint i = 0; i < held->len; i++)
        wait_idle(held->pdata[i]);
}

void node_drain_end(BlockNode *node)
{
    g_mutex_lock(&users_lock);
    Drain *d = NULL;
    for (guint i = drains ? drains->len : 0; i > 0 && !d; i--) {
        Drain *cand = drains->pdata[i - 1];
        if (cand->node == node)
            d = g_ptr_array_steal_index(drains, i - 1);
    }
    g_assert(d); /* every end matches a begin */
    for (guint i = 0; i < users->len; i++) {
        BlockUser *u = users->pdata[i];
        if (g_ptr_array_find(d->nodes, u->node, NULL))
            quiesce_add(u, -1);
    }
    g_mutex_unlock(&users_lock);
    g_ptr_array_unref(d->nodes);
    node_unref(d->node);
    g_free(d);
}

bool node_replace(BlockNode *old_node, BlockNode *new_node, GError **errp)
{
    if (old_node == new_node)
        return true;
    if (node_size(new_node) != node_size(old_node)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Cannot replace node '%s' by '%s': their sizes differ",
                    node_name(old_node), node_name(new_node));
        return false;
    }
    node_drain_begin(old_node);
    node_drain_begin(new_node);
    g_autoptr(GPtrArray) dropped = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    g_autoptr(GPtrArray) old_claims = g_ptr_array_new_with_free_func((GDestroyNotify)node_perm_release);
    g_autoptr(GPtrArray) new_claims = g_ptr_array_new_with_free_func((GDestroyNotify)node_perm_release);
    g_mutex_lock(&users_lock);
    /* The claims on the new node first, so a refusal changes nothing. */
    for (guint i = 0; i < users->len; i++) {
        BlockUser *u = users->pdata[i];
        if (u->node != old_node)
            continue;
        NodePermOwner owner = { u->owner_kind, u->owner_name, u->edge, NULL, false };
        NodePermClaim *c = node_perm_claim_as(new_node, u->perm, u->shared, &owner, errp);
        if (!c) {
            g_mutex_unlock(&users_lock);
            node_drain_end(new_node);
            node_drain_end(old_node);
            return false;
        }
        g_ptr_array_add(new_claims, c);
    }
    /* Then the parent nodes' edges (their drivers swap their child). */
    if (!node_replace_parent_edges(old_node, new_node, errp)) {
        g_mutex_unlock(&users_lock);
        node_drain_end(new_node);
        node_drain_end(old_node);
        return false;
    }
    guint k = 0;
    for (guint i = 0; i < users->len; i++) {
        BlockUser *u = users->pdata[i];
        if (u->node != old_node)
            continue;
        /* Drained, so no request reads u->node now.  `inflight` may still
         * be 1 for an instant: a request that arrived after the drain
         * counts itself before it sees the drain and backs off (see
         * block_user_begin), without reading u->node; wait that out rather
         * than assert it away (TSan run of mirror-pivot-loop hit it). */
        wait_idle(u);
        g_ptr_array_add(dropped, u->node);
        g_ptr_array_add(old_claims, u->claim);
        u->claim = new_claims->pdata[k];
        new_claims->pdata[k++] = NULL;
        g_atomic_pointer_set(&u->node, node_ref(new_node));
        /* It now counts the drains over its new node, not the old one's. */
        gint delta = drains_over_locked(new_node) - g_atomic_int_get(&u->quiesce);
        if (delta)
            quiesce_add(u, delta);
    }
    g_mutex_unlock(&users_lock);
    node_drain_end(new_node);
    node_drain_end(old_node);
    return true;
}

unsigned node_user_count(BlockNode *node)
{
    unsigned n = 0;
    g_mutex_lock(&users_lock);
    init_locked();
    for (guint i = 0; i < users->len; i++)
        n += ((BlockUser *)users->pdata[i])->node == node;
    g_mutex_unlock(&users_lock);
    return n;
}
