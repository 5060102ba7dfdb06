/* Backing chains: the layers of a qcow2 overlay and the images below it, as
 * block-stream and block-commit see them (QEMU's bdrv_chain_contains,
 * bdrv_find_overlay, bdrv_find_backing_image, bdrv_is_allocated_above and
 * the link rewrite of stream_prepare / commit_prepare).
 *
 * "Chain of top" means top, its backing node, that node's backing node and
 * so on.  Functions returning nodes return borrowed pointers (the graph
 * holds them); callers that keep one across a graph change take a reference.
 * Resolution errors carry qemu-storage-daemon 7.2's texts. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"

/* The backing node of `node` (QEMU's bdrv_cow_bs), or NULL. */
BlockNode *chain_backing(BlockNode *node);
/* True if `node` is `top` or anywhere below it (QEMU's bdrv_chain_contains). */
bool chain_contains(BlockNode *top, BlockNode *node);
/* The node of top's chain whose backing node is `node` (QEMU's
 * bdrv_find_overlay), or NULL if `node` is top or not in the chain. */
BlockNode *chain_overlay(BlockNode *top, BlockNode *node);
/* The bottom-most node of top's chain (QEMU's bdrv_find_base); top itself without backing. */
BlockNode *chain_bottom(BlockNode *top);
/* The node of top's chain (below top) whose image is the file `filename`, as
 * an image above it names it or as a path relative to that image's
 * directory (QEMU's bdrv_find_backing_image), or NULL. */
BlockNode *chain_find_image(BlockNode *top, const char *filename);

/* The nodes block-stream acts on, resolved from its arguments. */
typedef struct ChainStreamRange {
    BlockNode *top;     /* `device` */
    BlockNode *base;    /* the first node kept below (NULL: the whole chain is pulled in) */
    BlockNode *bottom;  /* the lowest node copied from (the node right above base) */
} ChainStreamRange;
/* Resolves block-stream's device/base/base-node/bottom/backing-file with
 * QEMU's qmp_block_stream checks, messages and order (mutual exclusion,
 * lookups, chain membership, op blockers from device down to base, a
 * backing file for a full stream); each argument may be NULL (absent). */
bool chain_resolve_stream(const char *device, const char *base, const char *base_node, const char *bottom,
                          const char *backing_file, ChainStreamRange *out, GError **errp);

/* The nodes block-commit acts on, resolved from its arguments. */
typedef struct ChainCommitRange {
    BlockNode *root;    /* `device` */
    BlockNode *top;     /* the highest node whose data moves down */
    BlockNode *base;    /* the node receiving it */
} ChainCommitRange;
/* Resolves block-commit's device/top/top-node/base/base-node with QEMU's
 * qmp_block_commit checks, messages and order ("Device 'x' not found" as
 * DeviceNotFound; op blockers from top down to base; "cannot commit an
 * image into itself"); each argument may be NULL (absent). */
bool chain_resolve_commit(const char *device, const char *top, const char *top_node, const char *base,
                          const char *base_node, ChainCommitRange *out, GError **errp);

/* QEMU's bdrv_is_allocated_above: 1 if [offset, offset+*pnum) is allocated
 * in some layer from `top` down to, not including, `base` (NULL: the whole
 * chain), 0 if in none of them, -errno if a layer's block status failed.
 * *pnum (> 0 unless bytes is 0) is how far from offset the answer holds,
 * at most `bytes`.  One block-status call per layer and run, no per-cluster loop. */
int chain_is_allocated_above(BlockNode *top, BlockNode *base, uint64_t offset, uint64_t bytes, uint64_t *pnum);

/* Makes `new_backing` (NULL: none) the backing node of `above`, whose chain
 * contains it, and records it in above's image (the qcow2 header's backing
 * file name and format: `backing_file`, or new_backing's file name when
 * NULL; QEMU's bdrv_set_backing_hd + bdrv_change_backing_file), under a
 * drain of `above`.  The nodes that fell out of the chain and that the
 * chain had opened itself (from image headers) are closed unless something
 * else still uses them; nodes added with blockdev-add stay in the graph, as
 * in QEMU.  False, leaving graph and image as they were, if the new edge's
 * permissions are refused or the image cannot be rewritten. */
bool chain_relink(BlockNode *above, BlockNode *new_backing, const char *backing_file, GError **errp);
