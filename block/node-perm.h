/* Permissions on nodes, QEMU's model (block.c's bdrv_child_perm and
 * friends): every user (an export, a job) and every parent node claims
 * what it does on a node (`perm`) and what it lets others do (`shared`).
 * A node's claims add up (perm: union, shared: intersection) and pass down
 * to its children according to the child's role.  A claim that needs what
 * another claim on the same node does not share is refused with QEMU's
 * "Permission conflict on node ..." message; what the claims add up to on
 * a file node is published to other processes as QEMU's image locks
 * (block/file-lock.h), so QEMU tools and daemons and other blockd
 * processes see and respect blockd's use of an image, and blockd theirs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

typedef struct BlockNode BlockNode;

/* QEMU's BLK_PERM_* bits, in QEMU's order (since QEMU 6.2; graph-mod, bit
 * 4, is gone).  The order fixes the lock bytes: 100+i and 200+i. */
#define BLOCK_PERM_CONSISTENT_READ (1u << 0)
#define BLOCK_PERM_WRITE           (1u << 1)
#define BLOCK_PERM_WRITE_UNCHANGED (1u << 2)
#define BLOCK_PERM_RESIZE          (1u << 3)
#define BLOCK_PERM_COUNT           4
#define BLOCK_PERM_ALL             ((1u << BLOCK_PERM_COUNT) - 1)

/* How a parent uses a child (QEMU's BdrvChildRole, the combinations
 * blockd's drivers have); it decides what the parent's claims become on
 * the child. */
typedef enum NodeChildRole {
    NODE_CHILD_FILTERED, /* raw (whole file), blkdebug: passed through */
    NODE_CHILD_DATA,     /* raw with offset/size: no one may resize */
    NODE_CHILD_STORAGE,  /* a format's image file: metadata and data */
    NODE_CHILD_COW,      /* a backing node: read, when the parent reads */
} NodeChildRole;

typedef struct NodePermClaim NodePermClaim;

/* Who holds a claim: names for x-debug-query-block-graph (kind
 * "block-backend" or "block-job", name, edge) and for conflict messages
 * (desc; NULL: QEMU's "an unnamed block device").  `filter`: the holder is
 * a job that sees every write through the node's write hooks, as QEMU's
 * filter nodes do, so what it does not share binds only other processes. */
typedef struct NodePermOwner {
    const char *kind, *name, *edge, *desc;
    bool filter;
} NodePermOwner;

/* A user's claim on `node` (and, through it, on its children); NULL with
 * QEMU's error if it conflicts with another claim on a node it reaches
 * ("Permission conflict on node ...") or another process's image locks
 * forbid it ("Failed to get \"write\" lock" ...).  Thread-safe. */
NodePermClaim *node_perm_claim(BlockNode *node, uint64_t perm, uint64_t shared, GError **errp);
/* node_perm_claim, with its holder known from the start (NULL: unnamed). */
NodePermClaim *node_perm_claim_as(BlockNode *node, uint64_t perm, uint64_t shared,
                                  const NodePermOwner *owner, GError **errp);
/* Changes what a user's claim needs and shares; false, changing nothing,
 * with the same errors as node_perm_claim.  Thread-safe. */
bool node_perm_claim_update(NodePermClaim *claim, uint64_t perm, uint64_t shared, GError **errp);
/* Drops a user's claim (NULL is a no-op); never fails.  Thread-safe. */
void node_perm_release(NodePermClaim *claim);
/* Says who holds a user's claim, for x-debug-query-block-graph: the owner's
 * kind ("block-backend", "block-job"), its name ("" for an export, the job
 * id) and the edge's name ("root", "target", ...).  Copies the strings. */
void node_perm_claim_describe(NodePermClaim *claim, const char *owner_kind, const char *owner_name,
                              const char *edge);

/* One claim on a node, as node_perm_claims_of reports it. */
typedef struct NodeClaimInfo {
    BlockNode *parent;        /* the claiming parent node (a reference), or NULL */
    NodeChildRole role;       /* parents only */
    char *owner_kind, *owner_name, *edge; /* users: as described, or NULL */
    uint64_t perm, shared;    /* in force */
} NodeClaimInfo;
/* The claims on `node` now (NodeClaimInfo *; free with g_ptr_array_unref). */
GPtrArray *node_perm_claims_of(BlockNode *node);

/* QEMU's name of the edge from `parent` to a child in `role` ("file", "backing", "image"). */
const char *node_perm_edge_name(BlockNode *parent, NodeChildRole role);
/* QEMU's name of one permission bit ("consistent read", "write", ...). */
const char *block_perm_name(uint64_t bit);
