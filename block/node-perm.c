/* Permissions on nodes (see node-perm.h).
 *
 * A change (a claim added, dropped, or a parent's read-only flag changed)
 * is one transaction, as in QEMU: the new state of every node below the
 * changed one is proposed first (new_perm/new_shared of the nodes and
 * their claims), then every driver that cares checks it -- a file node
 * takes the image locks it will need and tests the others' -- and only if
 * all agree does everyone keep it; otherwise everyone rolls back.
 * One global lock serialises transactions: they are rare (graph changes,
 * exports coming and going) and short. */
#include "block/node-perm.h"
#include "block/node-internal.h"

#include <string.h>
#include <gio/gio.h>

struct NodePermClaim {
    BlockNode *node;              /* the node claimed */
    BlockNode *parent;            /* the parent node claiming, or NULL for a user */
    NodeChildRole role;           /* parents only */
    uint64_t perm, shared;        /* in force */
    uint64_t new_perm, new_shared;/* proposed during a transaction */
    char *owner_kind, *owner_name, *edge; /* users: who holds it (node_perm_claim_describe) */
    char *desc;                   /* users: who holds it, in conflict messages */
    bool filter;                  /* a job's filter: every in-process writer passes it */
};

static void claim_free(NodePermClaim *c)
{
    g_free(c->owner_kind);
    g_free(c->owner_name);
    g_free(c->edge);
    g_free(c->desc);
    g_free(c);
}

static GRecMutex perm_lock;

const char *block_perm_name(uint64_t bit)
{
    switch (bit) {
    case BLOCK_PERM_CONSISTENT_READ: return "consistent read";
    case BLOCK_PERM_WRITE: return "write";
    case BLOCK_PERM_WRITE_UNCHANGED: return "write unchanged";
    case BLOCK_PERM_RESIZE: return "resize";
    default: return "unknown";
    }
}

const char *node_perm_edge_name(BlockNode *parent, NodeChildRole role)
{
    switch (role) {
    case NODE_CHILD_COW:
        return "backing";
    case NODE_CHILD_FILTERED:
        return strcmp(parent->drv->name, "blkdebug") == 0 ? "image" : "file";
    default:
        return "file";
    }
}

/* QEMU's bdrv_perm_names: "consistent read, write". */
static char *perm_names(uint64_t perm)
{
    GString *s = g_string_new(NULL);
    for (uint64_t bit = 1; bit <= BLOCK_PERM_ALL; bit <<= 1) {
        if (perm & bit)
            g_string_append_printf(s, "%s%s", s->len ? ", " : "", block_perm_name(bit));
    }
    return g_string_free(s, FALSE);
}

/* QEMU's bdrv_child_user_desc: who holds claim `c`. */
static char *claim_holder(const NodePermClaim *c)
{
    if (c->parent)
        return g_strdup_printf("node '%s'", c->parent->name);
    return g_strdup(c->desc ? c->desc : "an unnamed block device");
}

static const char *claim_edge(const NodePermClaim *c)
{
    if (c->parent)
        return node_perm_edge_name(c->parent, c->role);
    return c->edge ? c->edge : "root";
}

/* QEMU's bdrv_parent_perms_conflict over the proposals of `node`'s claims,
 * newest first as QEMU walks a node's parents: false, with QEMU's message,
 * if one claim needs what another does not share.  A filter's claim
 * restricts only other processes (through the image locks): inside blockd
 * every write passes the job's write hooks, which is what the filter node
 * does in QEMU. */
static bool claims_compatible(BlockNode *node, GError **errp)
{
    for (guint i = node->claims->len; i-- > 0;) {
        NodePermClaim *a = node->claims->pdata[i];
        if (a->filter)
            continue;
        for (guint j = node->claims->len; j-- > 0;) {
            NodePermClaim *b = node->claims->pdata[j];
            uint64_t conflict = b->new_perm & ~a->new_shared;
            if (a == b || !conflict)
                continue;
            g_autofree char *perms = perm_names(conflict);
            g_autofree char *a_user = claim_holder(a);
            g_autofree char *b_user = claim_holder(b);
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "Permission conflict on node '%s': permissions '%s' are both required by %s "
                        "(uses node '%s' as '%s' child) and unshared by %s (uses node '%s' as '%s' child).",
                        node->name, perms, b_user, node->name, claim_edge(b), a_user, node->name,
                        claim_edge(a));
            return false;
        }
    }
    return true;
}

/* What a parent with claims (perm, shared) claims on a child in `role`:
 * QEMU 7.2's bdrv_default_perms (and raw_child_perm for DATA). */
static void child_perm(NodeChildRole role, bool writable, uint64_t perm, uint64_t shared,
                       uint64_t *nperm, uint64_t *nshared)
{
    switch (role) {
    case NODE_CHILD_FILTERED:
        break;
    case NODE_CHILD_DATA:
        /* Resizing the file would change the guest-visible size. */
        shared &= ~BLOCK_PERM_RESIZE;
        break;
    case NODE_CHILD_STORAGE:
        /* A writable format updates metadata (and grows the file) whether
         * or not anyone writes through it, always reads it, and no one
         * else may write or resize it under its feet. */
        if (writable)
            perm |= BLOCK_PERM_WRITE | BLOCK_PERM_RESIZE;
        perm |= BLOCK_PERM_CONSISTENT_READ;
        shared &= ~(BLOCK_PERM_WRITE | BLOCK_PERM_RESIZE);
        if (perm & BLOCK_PERM_WRITE_UNCHANGED)
            perm |= BLOCK_PERM_WRITE;
        if (perm & BLOCK_PERM_WRITE)
            perm |= BLOCK_PERM_RESIZE;
        break;
    case NODE_CHILD_COW:
        /* Read only when the parent reads; changes are fine if the parent
         * can live with changing data. */
        perm &= BLOCK_PERM_CONSISTENT_READ;
        shared = (shared & BLOCK_PERM_WRITE ? BLOCK_PERM_WRITE | BLOCK_PERM_RESIZE : 0) |
                 BLOCK_PERM_CONSISTENT_READ | BLOCK_PERM_WRITE_UNCHANGED;
        break;
    }
    *nperm = perm;
    *nshared = shared;
}

/* Proposes the state of `node` from its claims' proposals, then that of
 * its claims on its children and of the children, recursively; every node
 * reached is added to `reached` once.  A node reached twice (two paths to
 * it) is recomputed, so the last visit sees every proposal. */
static void propose(BlockNode *node, GPtrArray *reached)
{
    uint64_t perm = 0, shared = BLOCK_PERM_ALL;
    for (guint i = 0; i < node->claims->len; i++) {
        NodePermClaim *c = node->claims->pdata[i];
        perm |= c->new_perm;
        shared &= c->new_shared;
    }
    node->new_perm = perm;
    node->new_shared = shared;
    if (!g_ptr_array_find(reached, node, NULL))
        g_ptr_array_add(reached, node);
    for (guint i = 0; i < node->edges->len; i++) {
        NodePermClaim *e = node->edges->pdata[i];
        child_perm(e->role, !node->read_only, perm, shared, &e->new_perm, &e->new_shared);
        propose(e->node, reached);
    }
}

static bool changes(BlockNode *n)
{
    return n->opaque && (n->new_perm != n->perm || n->new_shared != n->shared);
}

/* Checks the proposals of the nodes in `reached` with their drivers; then
 * everyone keeps them, or everyone rolls back if one refused. */
static bool apply(GPtrArray *reached, GError **errp)
{
    guint checked = 0;
    bool ok = true;
    for (guint i = 0; ok && i < reached->len; i++)
        ok = claims_compatible(reached->pdata[i], errp);
    for (; ok && checked < reached->len; checked++) {
        BlockNode *n = reached->pdata[checked];
        if (changes(n) && n->drv->check_perm && !n->drv->check_perm(n->opaque, n->new_perm, n->new_shared, errp)) {
            ok = false;         /* the refusing driver has rolled itself back */
            break;
        }
    }
    for (guint i = 0; i < reached->len; i++) {
        BlockNode *n = reached->pdata[i];
        if (ok && changes(n) && n->drv->set_perm)
            n->drv->set_perm(n->opaque, n->new_perm, n->new_shared);
        else if (!ok && i < checked && changes(n) && n->drv->abort_perm)
            n->drv->abort_perm(n->opaque);
        if (ok) {
            n->perm = n->new_perm;
            n->shared = n->new_shared;
        }
        for (guint j = 0; j < n->claims->len; j++) {
            NodePermClaim *c = n->claims->pdata[j];
            if (ok) {
                c->perm = c->new_perm;
                c->shared = c->new_shared;
            } else {
                c->new_perm = c->perm;
                c->new_shared = c->shared;
            }
        }
    }
    return ok;
}

/* One transaction from `node` down. */
static bool update(BlockNode *node, GError **errp)
{
    g_autoptr(GPtrArray) reached = g_ptr_array_new();
    propose(node, reached);
    return apply(reached, errp);
}

/* Loosening never needs a new lock, so it cannot fail; say so if it does. */
static void update_loosening(BlockNode *node)
{
    GError *err = NULL;
    if (!update(node, &err)) {
        g_warning("releasing permissions on node '%s': %s", node->name, err->message);
        g_error_free(err);
    }
}

static NodePermClaim *claim_new(BlockNode *node, BlockNode *parent, NodeChildRole role,
                                uint64_t perm, uint64_t shared)
{
    NodePermClaim *c = g_new0(NodePermClaim, 1);
    c->node = node;
    c->parent = parent;
    c->role = role;
    c->shared = BLOCK_PERM_ALL;
    c->new_perm = perm;
    c->new_shared = shared;
    g_ptr_array_add(node->claims, c);
    return c;
}

NodePermClaim *node_perm_claim(BlockNode *node, uint64_t perm, uint64_t shared, GError **errp)
{
    return node_perm_claim_as(node, perm, shared, NULL, errp);
}

NodePermClaim *node_perm_claim_as(BlockNode *node, uint64_t perm, uint64_t shared,
                                  const NodePermOwner *owner, GError **errp)
{
    g_rec_mutex_lock(&perm_lock);
    NodePermClaim *c = claim_new(node, NULL, 0, perm & BLOCK_PERM_ALL, shared & BLOCK_PERM_ALL);
    if (owner) {
        c->owner_kind = g_strdup(owner->kind);
        c->owner_name = g_strdup(owner->name);
        c->edge = g_strdup(owner->edge);
        c->desc = g_strdup(owner->desc);
        c->filter = owner->filter;
    }
    if (!update(node, errp)) {
        g_ptr_array_remove(node->claims, c);
        claim_free(c);
        c = NULL;
    }
    g_rec_mutex_unlock(&perm_lock);
    return c;
}

bool node_perm_claim_update(NodePermClaim *claim, uint64_t perm, uint64_t shared, GError **errp)
{
    g_rec_mutex_lock(&perm_lock);
    claim->new_perm = perm & BLOCK_PERM_ALL;
    claim->new_shared = shared & BLOCK_PERM_ALL;
    bool ok = update(claim->node, errp);   /* on failure apply() restores new_* */
    g_rec_mutex_unlock(&perm_lock);
    return ok;
}

void node_perm_release(NodePermClaim *claim)
{
    if (!claim)
        return;
    g_rec_mutex_lock(&perm_lock);
    g_ptr_array_remove(claim->node->claims, claim);
    update_loosening(claim->node);
    g_rec_mutex_unlock(&perm_lock);
    claim_free(claim);
}

bool node_perm_attach(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp)
{
    g_rec_mutex_lock(&perm_lock);
    NodePermClaim *c = claim_new(child, parent, role, 0, BLOCK_PERM_ALL);
    g_ptr_array_add(parent->edges, c);
    bool ok = update(parent, errp);
    if (!ok) {
        g_ptr_array_remove(parent->edges, c);
        g_ptr_array_remove(child->claims, c);
        claim_free(c);
    }
    g_rec_mutex_unlock(&perm_lock);
    return ok;
}

bool node_perm_move_edges(BlockNode *parent, BlockNode *old_child, BlockNode *new_child, GError **errp)
{
    g_rec_mutex_lock(&perm_lock);
    g_autoptr(GPtrArray) moved = g_ptr_array_new();
    for (guint i = 0; i < parent->edges->len; i++) {
        NodePermClaim *c = parent->edges->pdata[i];
        if (c->node != old_child)
            continue;
        g_ptr_array_remove(old_child->claims, c);
        g_ptr_array_add(new_child->claims, c);
        c->node = new_child;
        g_ptr_array_add(moved, c);
    }
    bool ok = update(parent, errp);
    for (guint i = 0; i < moved->len; i++) {
        NodePermClaim *c = moved->pdata[i];
        if (ok)
            continue;
        g_ptr_array_remove(new_child->claims, c);
        g_ptr_array_add(old_child->claims, c);
        c->node = old_child;
    }
    /* Success: the old child lost claims; failure: nothing was applied. */
    if (ok && moved->len)
        update_loosening(old_child);
    g_rec_mutex_unlock(&perm_lock);
    return ok;
}

void node_perm_detach(BlockNode *parent, BlockNode *child)
{
    g_rec_mutex_lock(&perm_lock);
    for (guint i = parent->edges->len; i-- > 0;) {
        NodePermClaim *c = parent->edges->pdata[i];
        if (c->node != child)
            continue;
        g_ptr_array_remove_index(parent->edges, i);
        g_ptr_array_remove(child->claims, c);
        claim_free(c);
    }
    update_loosening(child);
    g_rec_mutex_unlock(&perm_lock);
}

void node_perm_detach_all(BlockNode *parent)
{
    g_rec_mutex_lock(&perm_lock);
    while (parent->edges->len > 0) {
        NodePermClaim *c = g_ptr_array_steal_index(parent->edges, parent->edges->len - 1);
        g_ptr_array_remove(c->node->claims, c);
        update_loosening(c->node);
        claim_free(c);
    }
    g_rec_mutex_unlock(&perm_lock);
}

void node_perm_refresh(BlockNode *node)
{
    g_rec_mutex_lock(&perm_lock);
    update_loosening(node);
    g_rec_mutex_unlock(&perm_lock);
}

bool node_perm_refresh_checked(BlockNode *node, GError **errp)
{
    g_rec_mutex_lock(&perm_lock);
    bool ok = update(node, errp);
    g_rec_mutex_unlock(&perm_lock);
    return ok;
}

GPtrArray *node_perm_data_children(BlockNode *node)
{
    GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)node_unref);
    g_rec_mutex_lock(&perm_lock);
    for (guint i = 0; i < node->edges->len; i++) {
        NodePermClaim *e = node->edges->pdata[i];
        if (e->role != NODE_CHILD_COW && !g_ptr_array_find(a, e->node, NULL))
            g_ptr_array_add(a, node_ref(e->node));
    }
    g_rec_mutex_unlock(&perm_lock);
    return a;
}

void node_perm_claim_describe(NodePermClaim *claim, const char *owner_kind, const char *owner_name,
                              const char *edge)
{
    g_rec_mutex_lock(&perm_lock);
    g_free(claim->owner_kind);
    g_free(claim->owner_name);
    g_free(claim->edge);
    claim->owner_kind = g_strdup(owner_kind);
    claim->owner_name = g_strdup(owner_name);
    claim->edge = g_strdup(edge);
    g_rec_mutex_unlock(&perm_lock);
}

static void info_free(NodeClaimInfo *i)
{
    if (i->parent)
        node_unref(i->parent);
    g_free(i->owner_kind);
    g_free(i->owner_name);
    g_free(i->edge);
    g_free(i);
}

GPtrArray *node_perm_claims_of(BlockNode *node)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)info_free);
    g_rec_mutex_lock(&perm_lock);
    for (guint i = 0; i < node->claims->len; i++) {
        NodePermClaim *c = node->claims->pdata[i];
        NodeClaimInfo *info = g_new0(NodeClaimInfo, 1);
        info->parent = c->parent ? node_ref(c->parent) : NULL;
        info->role = c->role;
        info->owner_kind = g_strdup(c->owner_kind);
        info->owner_name = g_strdup(c->owner_name);
        info->edge = g_strdup(c->edge);
        info->perm = c->perm;
        info->shared = c->shared;
        g_ptr_array_add(out, info);
    }
    g_rec_mutex_unlock(&perm_lock);
    return out;
}

void node_perm_init(BlockNode *node)
{
    node->claims = g_ptr_array_new();
    node->edges = g_ptr_array_new();
    node->shared = node->new_shared = BLOCK_PERM_ALL;
}

void node_perm_clear(BlockNode *node)
{
    /* Users release their claims and parents their edges before the last
     * reference goes; a leftover claim would point to freed memory. */
    g_warn_if_fail(node->claims->len == 0 && node->edges->len == 0);
    g_ptr_array_free(node->claims, TRUE);
    g_ptr_array_free(node->edges, TRUE);
}
