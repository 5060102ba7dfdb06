/* Debug events: points in a node's I/O path that it reports to a child,
 * QEMU's BlkdebugEvent (qapi/block-core.json: BLKDBG_READ_AIO, ...).  Only
 * a blkdebug child reacts to them; node_debug_event() is a no-op for every
 * other driver.  docs/running.md lists which events blockd raises. */
#pragma once

#include <stdbool.h>
#include "qapi/qapi-types.h"

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
