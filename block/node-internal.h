/* Private to block/: the node record, shared by node.c (the graph and the
 * I/O entry points) and node-perm.c (permissions and image locks). */
#pragma once

#include "block/node.h"

struct BlockNode {
    char *name;
    const BlockDriver *drv;
    void *opaque;
    uint64_t size;
    bool read_only;
    bool native_zero;     /* driver's zero callback may be used */
    bool trim_off;        /* discard=ignore: caps.can_trim stays false across reopens */
    NodeCaps caps;
    gint refcount;
    GPtrArray *children;  /* BlockNode *, each holding a reference */
    GPtrArray *implicit;  /* names of children this node created itself */
    char *filename;       /* the `filename` option, if any */
    char *blocker;        /* why a job uses the node exclusively, or NULL; under graph_lock */
    int job_filters;      /* jobs filtering writes above the node (backup); under graph_lock */
    /* Before-write hooks, sorted by order; writers hold hooks_lock for
     * reading while they run them, so removal waits for running calls.
     * nhooks lets writers skip the lock when there are none. */
    GRWLock hooks_lock;
    GPtrArray *hooks;     /* NodeWriteHook * */
    gint nhooks;
    GPtrArray *close_notifiers; /* NodeNotifier * */
    GPtrArray *resize_notifiers; /* NodeNotifier * */
    GPtrArray *reopen_notifiers; /* NodeReopenNotifier * */
    /* Permissions (node-perm.c, under its lock). */
    GPtrArray *claims;    /* NodePermClaim * held on this node by users and parents */
    GPtrArray *edges;     /* NodePermClaim * this node holds on its children */
    uint64_t perm, shared;         /* what the claims add up to, in force */
    uint64_t new_perm, new_shared; /* the same during an update */
};

/* A callback on a node event (close, resize). */
typedef struct NodeNotifier {
    void (*fn)(BlockNode *node, void *opaque);
    void *opaque;
} NodeNotifier;

typedef struct NodeReopenNotifier {
    NodeReopenFn fn;
    void *opaque;
} NodeReopenNotifier;

/* Gives `parent` a claim on its new child `child` in `role` and applies it
 * (the child's driver takes image locks); false with QEMU's error when
 * another process's locks forbid it.  node_add_child calls it. */
bool node_perm_attach(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp);
/* Moves `parent`'s claims on `old_child` to `new_child` in one transaction;
 * false, changing nothing, with QEMU's error if refused. */
bool node_perm_move_edges(BlockNode *parent, BlockNode *old_child, BlockNode *new_child, GError **errp);
/* Moves every parent edge of `old_node` to `new_node` (both drained by the
 * caller), skipping parents that are new_node or below it; false, changing
 * nothing, if a parent's driver cannot change its child or a permission is
 * refused.  block/user.c's node_replace calls it. */
bool node_replace_parent_edges(BlockNode *old_node, BlockNode *new_node, GError **errp);
/* Drops the claims `parent` holds on `child` (the edge goes away). */
void node_perm_detach(BlockNode *parent, BlockNode *child);
/* Drops every claim `parent` holds on its children (it is closing). */
void node_perm_detach_all(BlockNode *parent);
/* Recomputes what `node` claims on its children, after its read-only flag
 * changed; only ever loosens, so it cannot fail. */
void node_perm_refresh(BlockNode *node);
/* Recomputes what `node` claims on its children after its read-only flag
 * changed to read-write (node-reopen.c): false, changing nothing, with
 * QEMU's error if a claim or another process's image lock forbids it. */
bool node_perm_refresh_checked(BlockNode *node, GError **errp);
/* The children `node` reaches through edges other than a backing edge
 * (its file, a filter's child), each with a reference; free with
 * g_ptr_array_unref. */
GPtrArray *node_perm_data_children(BlockNode *node);
/* Fills node->caps (and node->size) from the driver; -errno if a callback
 * fails.  A driver that cannot write makes the node read-only. */
int node_compute_caps(BlockNode *node);
/* Sets up the node's permission records: no claims, nothing held. */
void node_perm_init(BlockNode *node);
/* Frees the node's permission records (it holds and bears no claims). */
void node_perm_clear(BlockNode *node);
/* True if `parent` opened `child` itself (node_add_implicit_child). */
bool node_is_implicit_child(BlockNode *parent, BlockNode *child);
/* Makes `to` the node that opened `child` instead of `from` (a chain's
 * relink keeps a node whose opener leaves), if `from` had opened it. */
void node_adopt_implicit_child(BlockNode *from, BlockNode *to, BlockNode *child);
/* If `parent` opened `child` itself, forgets that and removes child from
 * the graph unless it is still in use; true if it was removed. */
bool node_release_implicit_child(BlockNode *parent, BlockNode *child);
