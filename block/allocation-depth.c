/* qemu:allocation-depth over a node's backing chain (see allocation-depth.h).
 *
 * Each layer is asked for its own allocation (BLOCK_FLAG_ALLOCATION: a HOLE
 * is what it leaves to its backing node); the holes are asked of the layer
 * below, one deeper, down to a layer without backing, where they are
 * absent (0).  The work is one block-status call per layer per run of
 * holes, never per cluster. */
#include "block/allocation-depth.h"
#include "block/driver.h"
#include "block/node-internal.h"

#include <errno.h>

static int depth_of(BlockNode *node, BlockNode *base, uint32_t depth, uint64_t offset, uint64_t end,
                    uint32_t flags, BlockExtents *out);

/* The holes [offset, end) of `node`: the backing node's answer one deeper,
 * absent without one or when it is `base`.  Past the end of a shorter
 * backing node the zeroes read there count as allocated in it (QEMU's
 * bdrv_co_common_block_status_above). */
static int below(BlockNode *node, BlockNode *base, uint32_t depth, uint64_t offset, uint64_t end, uint32_t flags,
                 BlockExtents *out)
{
    BlockImageInfo info;
    BlockNode *backing = node_image_info(node, &info) ? info.backing : NULL;
    if (!backing || backing == base)
        return extents_add(out, offset, end - offset, 0);
    uint64_t covered = MIN(end, MAX(offset, node_size(backing)));
    if (covered > offset) {
        int r = depth_of(backing, base, depth + 1, offset, covered, flags, out);
        if (r < 0 || (flags & BLOCK_FLAG_REQ_ONE))
            return r;
    }
    return covered < end ? extents_add(out, covered, end - covered, depth + 1) : 0;
}

static int depth_of(BlockNode *node, BlockNode *base, uint32_t depth, uint64_t offset, uint64_t end,
                    uint32_t flags, BlockExtents *out)
{
    if (!node->drv->supports_backing)
        return extents_add(out, offset, end - offset, depth);
    while (offset < end) {
        BlockExtents *mine = extents_new(offset, end);
        if (!mine)
            return -ERANGE;
        uint32_t n = (uint32_t)MIN(end - offset, 1u << 30);
        int r = node_block_status(node, n, offset, BLOCK_FLAG_ALLOCATION | (flags & BLOCK_FLAG_REQ_ONE), mine);
        for (size_t i = 0; r == 0 && i < extents_count(mine); i++) {
            BlockExtent e = extents_get(mine, i);
            uint64_t e_end = MIN(e.offset + e.length, end);
            if (e.type & BLOCK_EXTENT_HOLE)
                r = below(node, base, depth, e.offset, e_end, flags, out);
            else
                r = extents_add(out, e.offset, e_end - e.offset, depth);
            if (flags & BLOCK_FLAG_REQ_ONE)
                break;
        }
        uint64_t next = extents_next_offset(mine);
        extents_free(mine);
        if (r < 0)
            return r;
        if ((flags & BLOCK_FLAG_REQ_ONE) || next <= offset || extents_count(out) >= BLOCK_EXTENTS_MAX)
            return 0;
        offset = next;
    }
    return 0;
}

int node_allocation_depth(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out)
{
    g_assert(count > 0 && offset + count <= node_size(node));
    return depth_of(node, NULL, 1, offset, offset + count, flags, out);
}

int node_allocation_depth_above(BlockNode *node, BlockNode *base, uint32_t count, uint64_t offset, uint32_t flags,
                                BlockExtents *out)
{
    g_assert(count > 0 && offset + count <= node_size(node) && node != base);
    return depth_of(node, base, 1, offset, offset + count, flags, out);
}
