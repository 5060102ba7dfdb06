/* The shared chunked copy engine (DESIGN seam 6) behind backup.
 *
 * It keeps, one bit per cluster, which regions of the source still have to
 * reach the target.  A background pass (on the job's thread) claims runs
 * of such clusters and hands them to the copy jobs' shared worker pool
 * (jobs/worker-pool.h), several chunks in flight; copy-before-write (on a
 * guest writer's thread) claims the clusters a write is about to change,
 * copies them first and waits for any the background pass has in flight.
 * A claimed cluster's range is locked in the engine's range lock
 * (block/range-lock.h) until its copy ends, which is what copy-before-write
 * waits for.  A claimed cluster is copied exactly once; a failed copy puts
 * its clusters back.  Regions that are holes or
 * zero in the source are written as zeroes (or skipped when the target is
 * known to read as zeroes), never read byte by byte.
 *
 * The engine never calls locking job functions while holding its own lock
 * (only the lock-free progress counters). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "block/node.h"
#include "jobs/job.h"
#include "block/user.h"

typedef struct CopyEngine CopyEngine;

typedef struct CopyConfig {
    BlockNode *source, *target;
    /* If set, target writes go through it (counted, held while the target
     * is drained); it must be attached to `target`. */
    BlockUser *target_user;
    uint64_t cluster_size;   /* power of two */
    unsigned max_workers;    /* chunks in flight */
    uint64_t max_chunk;      /* bytes per chunk (multiple of cluster_size) */
    bool skip_unallocated;   /* sync=top: holes of the source are not copied */
    bool target_is_zero;     /* zero regions need not be written */
    bool compress;           /* data goes to the target compressed (node_pwrite_compressed):
                              * regions are whole clusters of the target, copied as one data run */
    Job *job;                /* progress is reported to it (may be NULL) */
} CopyConfig;

/* True if the `len` bytes at `buf` are all zero. */
bool copy_buffer_is_zero(const void *buf, size_t len);

/* True if every byte of `node` reads as zero (by its extents), so zeroes
 * need not be written to it as a copy target. */
bool copy_node_reads_zero(BlockNode *node);

/* Copies [offset, offset+len) from cfg->source to cfg->target, by the
 * source's block status (or `known`, BlockExtent items covering the range,
 * when not NULL): zero regions of 64 KiB or more become zero requests
 * (none when the target is known zero), shorter ones are copied with the
 * data around them (one write), holes are skipped for skip_unallocated,
 * data that reads as zeroes is written as zeroes.  0 or -errno, *is_read telling whether
 * reading the source failed.  Only source, target, skip_unallocated and
 * target_is_zero of cfg are used. */
int copy_region(const CopyConfig *cfg, uint64_t offset, uint64_t len, GArray *known, bool *is_read);

/* A new engine with nothing to copy. */
CopyEngine *copy_engine_new(const CopyConfig *cfg);
/* Frees the engine (no copy may be running). */
void copy_engine_free(CopyEngine *e);
/* Marks [offset, offset+len) to be copied (rounded out to clusters). */
void copy_engine_set_range(CopyEngine *e, uint64_t offset, uint64_t len);
/* Bytes still to copy (clusters x cluster size, capped at the source size). */
uint64_t copy_engine_remaining(CopyEngine *e);
/* The next region still to copy at or after `offset`: its start, and *len; -1 if none. */
int64_t copy_engine_next_remaining(CopyEngine *e, uint64_t offset, uint64_t *len);

/* The background pass: copies every marked cluster.  Returns 0 when all is
 * copied, -EAGAIN when the job is cancelled or a pause was requested (after
 * the chunks in flight finished), or the first error (-errno, *is_read says
 * whether reading the source failed) after the others in flight finished.
 * Rate limiting is applied per chunk through the job. */
int copy_engine_run(CopyEngine *e, Job *job, bool *is_read);
/* Copy-before-write for a guest write to [offset, offset+len): returns once
 * every cluster it touches is on the target; 0 or -errno. */
int copy_engine_copy_before_write(CopyEngine *e, uint64_t offset, uint64_t len);
