/* qemu:allocation-depth (QEMU's bdrv_is_allocated_above, as qemu-nbd -A
 * reports it): for each byte of a node, in which layer of its backing
 * chain it is allocated -- 1 the node itself, 2 its backing node, and so
 * on -- or 0 if in none.  Nodes whose driver has no backing chain hold
 * every byte themselves (depth 1), as QEMU's protocol drivers do. */
#pragma once

#include <stdint.h>
#include "block/extents.h"
#include "block/node.h"

/* Appends to `out` the depths (as extent types) over [offset, offset+count)
 * of `node`; with BLOCK_FLAG_REQ_ONE in `flags`, at least one extent and
 * possibly no more.  0 or -errno (a layer's block status failed). */
int node_allocation_depth(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out);
/* Like node_allocation_depth, counting only the layers above `base` (a node
 * of node's chain, not node itself; NULL: all): what only base or the
 * layers below it hold is absent (0).  block/chain.h's is-allocated-above. */
int node_allocation_depth_above(BlockNode *node, BlockNode *base, uint32_t count, uint64_t offset, uint32_t flags,
                                BlockExtents *out);
