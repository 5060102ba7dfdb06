/* Users of nodes: QEMU's BlockBackend idea without its sprawl.
 *
 * Everything that is not a node but does I/O on one (an NBD export, and
 * later jobs and the QMP layer) attaches to the node through a BlockUser.
 * The user counts its requests in flight, so the graph can drain a node
 * (wait until no request of any user above it is in flight and hold new
 * ones), and it can be moved to another node (node_replace) while drained,
 * which is how a mirror pivots every export of its source at once.
 *
 * Request path: block_user_begin() returns the node to use and counts the
 * request; block_user_end() ends it.  Both are lock-free unless a drain is
 * in progress, so the NBD data path pays two atomic operations.
 *
 * Locks (docs/architecture.md "Locking"): users_lock (this file's registry of
 * users and drains) is taken before the graph lock of block/node.c and
 * before a user's own lock; nothing here is called with a node's hooks lock
 * held.  A thread must not drain a node while it has a request in flight on
 * a user above it (it would wait for itself). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "block/node.h"

typedef struct BlockUser BlockUser;

/* Attaches a new user to `node` (takes a reference on it) with the
 * permissions it needs (`perm`) and lets others have (`shared`), claimed on
 * the node (block/node-perm.h: NULL with QEMU's error when another
 * process's image locks forbid it); `desc` names the user in messages
 * ("block export 'e0'").  If a drain of the node, or of a node below it,
 * is in progress the user starts drained too. */
BlockUser *block_user_new(BlockNode *node, const char *desc, uint64_t perm, uint64_t shared,
                          GError **errp);
/* Names the user's claim for x-debug-query-block-graph (see
 * node_perm_claim_describe); the description moves with the user. */
void block_user_describe(BlockUser *user, const char *owner_kind, const char *owner_name, const char *edge);
/* Changes the permissions the user needs and shares (see
 * node_perm_claim_update); false, changing nothing, if refused. */
bool block_user_set_perm(BlockUser *user, uint64_t perm, uint64_t shared, GError **errp);
/* Detaches the user (no request of it may be in flight) and frees it. */
void block_user_free(BlockUser *user);
/* The node the user is attached to now (borrowed; the graph keeps it alive
 * while the user holds it, and node_replace may change it). */
BlockNode *block_user_node(BlockUser *user);
/* The user's description. */
const char *block_user_desc(BlockUser *user);

/* Starts a request: waits while the user is drained, counts the request and
 * returns the node to issue it on (stable until block_user_end). */
BlockNode *block_user_begin(BlockUser *user);
/* Ends a request started with block_user_begin; returns r unchanged. */
int block_user_end(BlockUser *user, int r);

/* Drains `node`: holds new requests of every user of the node and of every
 * node above it (its parents, their parents, ...) and waits until none of
 * theirs is in flight.  Drains nest; each begin needs one end. */
void node_drain_begin(BlockNode *node);
/* Ends the most recent drain of `node` begun with node_drain_begin. */
void node_drain_end(BlockNode *node);

/* Moves every user and every parent edge of `old_node` to `new_node` (same
 * size) atomically, with both drained for the move: requests in flight
 * finish on the old node, the held ones and every later one go to the new
 * node; each user's claim and each parent's edge moves with it (claimed on
 * the new node first).  Parents that are new_node or below it keep their
 * edge (a snapshot overlay keeps the old node as its backing).  Fails,
 * changing nothing, if the sizes differ, a claim is refused, a parent's
 * driver cannot change its child, or a writable parent would get a
 * read-only child. */
bool node_replace(BlockNode *old_node, BlockNode *new_node, GError **errp);
/* Number of users attached to `node` (for messages and tests). */
unsigned node_user_count(BlockNode *node);
