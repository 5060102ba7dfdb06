/* Extent lists: the answer to a block-status query.
 *
 * The rules are nbdkit's (struct nbdkit_extents), so the plugin host can hand
 * a BlockExtents to a plugin as its `struct nbdkit_extents *` unchanged. */
#pragma once

#include <stdint.h>
#include <stddef.h>

#define BLOCK_EXTENT_HOLE (1u << 0) /* same value as NBD_STATE_HOLE */
#define BLOCK_EXTENT_ZERO (1u << 1) /* same value as NBD_STATE_ZERO */

/* Maximum number of extents one list stores; later ones are dropped. */
#define BLOCK_EXTENTS_MAX (1u << 20)

typedef struct BlockExtent {
    uint64_t offset;
    uint64_t length;
    uint32_t type;
} BlockExtent;

typedef struct BlockExtents BlockExtents;

/* A new empty list for [start, end); NULL with errno=ERANGE on a bad range. */
BlockExtents *extents_new(uint64_t start, uint64_t end);
/* Frees the list; NULL is allowed. */
void extents_free(BlockExtents *e);
/* Appends an extent with nbdkit's rules (contiguous, clipped, merged); 0 or -errno. */
int extents_add(BlockExtents *e, uint64_t offset, uint64_t length, uint32_t type);
/* Number of extents stored. */
size_t extents_count(const BlockExtents *e);
/* The i-th extent (i < extents_count). */
BlockExtent extents_get(const BlockExtents *e, size_t i);
/* Start and end of the range the list describes. */
uint64_t extents_start(const BlockExtents *e);
uint64_t extents_end(const BlockExtents *e);
/* Offset just past the last extent added (start when empty). */
uint64_t extents_next_offset(const BlockExtents *e);
