/* Debug events: points in a node's I/O path that it reports to a child
 * (QEMU's BlkdebugEvent, same names and order as the qapi enum).  Only a
 * blkdebug child reacts to them; node_debug_event() is a no-op for every
 * other driver.  docs/running.md lists which events blockd raises. */
#pragma once

#include <stdbool.h>

typedef enum BlockDebugEvent {
    BLKDBG_L1_UPDATE,
    BLKDBG_L1_GROW_ALLOC_TABLE,
    BLKDBG_L1_GROW_WRITE_TABLE,
    BLKDBG_L1_GROW_ACTIVATE_TABLE,
    BLKDBG_L2_LOAD,
    BLKDBG_L2_UPDATE,
    BLKDBG_L2_UPDATE_COMPRESSED,
    BLKDBG_L2_ALLOC_COW_READ,
    BLKDBG_L2_ALLOC_WRITE,
    BLKDBG_READ_AIO,
    BLKDBG_READ_BACKING_AIO,
    BLKDBG_READ_COMPRESSED,
    BLKDBG_WRITE_AIO,
    BLKDBG_WRITE_COMPRESSED,
    BLKDBG_VMSTATE_LOAD,
    BLKDBG_VMSTATE_SAVE,
    BLKDBG_COW_READ,
    BLKDBG_COW_WRITE,
    BLKDBG_REFTABLE_LOAD,
    BLKDBG_REFTABLE_GROW,
    BLKDBG_REFTABLE_UPDATE,
    BLKDBG_REFBLOCK_LOAD,
    BLKDBG_REFBLOCK_UPDATE,
    BLKDBG_REFBLOCK_UPDATE_PART,
    BLKDBG_REFBLOCK_ALLOC,
    BLKDBG_REFBLOCK_ALLOC_HOOKUP,
    BLKDBG_REFBLOCK_ALLOC_WRITE,
    BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE,
    BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_CLUSTER_ALLOC,
    BLKDBG_CLUSTER_ALLOC_BYTES,
    BLKDBG_CLUSTER_FREE,
    BLKDBG_FLUSH_TO_OS,
    BLKDBG_FLUSH_TO_DISK,
    BLKDBG_PWRITEV_RMW_HEAD,
    BLKDBG_PWRITEV_RMW_AFTER_HEAD,
    BLKDBG_PWRITEV_RMW_TAIL,
    BLKDBG_PWRITEV_RMW_AFTER_TAIL,
    BLKDBG_PWRITEV,
    BLKDBG_PWRITEV_ZERO,
    BLKDBG_PWRITEV_DONE,
    BLKDBG_EMPTY_IMAGE_PREPARE,
    BLKDBG_L1_SHRINK_WRITE_TABLE,
    BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS,
    BLKDBG_COR_WRITE,
    BLKDBG_CLUSTER_ALLOC_SPACE,
    BLKDBG_NONE,
    BLKDBG__MAX,
} BlockDebugEvent;

/* The event's name ("read_aio"), or NULL when out of range. */
const char *block_debug_event_name(BlockDebugEvent event);
/* The event named `name`, or -1. */
int block_debug_event_from_name(const char *name);

/* Tracks writes since the last successful flush, so that a node raises
 * flush_to_disk (and blkdebug checks flush rules) only when a flush has
 * something to do, as QEMU's bdrv_co_flush does. */
typedef struct BlockFlushGen {
    unsigned write_gen;   /* bumped by every write, zero and trim */
    unsigned flushed_gen; /* write_gen when the last flush succeeded */
} BlockFlushGen;

static inline void block_flush_gen_write(BlockFlushGen *g)
{
    __atomic_add_fetch(&g->write_gen, 1, __ATOMIC_RELAXED);
}

/* The write generation a flush starting now covers; *needed is false when
 * nothing was written since the last successful flush. */
static inline unsigned block_flush_gen_begin(BlockFlushGen *g, bool *needed)
{
    unsigned gen = __atomic_load_n(&g->write_gen, __ATOMIC_RELAXED);
    *needed = gen != __atomic_load_n(&g->flushed_gen, __ATOMIC_RELAXED);
    return gen;
}

/* Records a successful flush covering writes up to `gen`. */
static inline void block_flush_gen_done(BlockFlushGen *g, unsigned gen)
{
    __atomic_store_n(&g->flushed_gen, gen, __ATOMIC_RELAXED);
}
