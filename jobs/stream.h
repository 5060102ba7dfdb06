/* block-stream (QEMU's block/stream.c): the data of the layers between a
 * node and a base is copied into the node, then the node's backing link
 * skips those layers (the image header too) and they are closed.
 *
 * The copy runs while clients keep writing to the node.  A region is
 * copied only where the node has nothing of its own, under an exclusive
 * range of the stream's range lock; a client write to the node holds a
 * shared range across the write, so a copy of old backing data never lands
 * over new data (QEMU serialises copy-on-read with guest writes the same
 * way).  Both the continuous job and the pulls in increments
 * (__io.blockd_block-stream-increment, jobs/stream-pull.c) copy with a
 * StreamCopier. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "block/chain.h"
#include "jobs/job.h"

typedef struct StreamOptions {
    const char *job_id;        /* NULL gives QEMU's "Invalid job ID ''" */
    const char *device;
    const char *base, *base_node, *bottom, *backing_file; /* NULL: absent */
    int64_t speed;
    BlockdevOnError on_error;
    const char *filter_node_name; /* accepted; blockd inserts no filter node */
    bool auto_finalize, auto_dismiss;
} StreamOptions;

/* Validates with QEMU's checks and messages (block/chain.h's resolution,
 * then the job's), blocks the chain's nodes and claims them; the job is
 * `created`, start it with job_start. */
Job *stream_job_create(const StreamOptions *opts, GError **errp);

/* ---- the copier (jobs/stream-copy.c) ---- */

typedef struct StreamCopier StreamCopier;

/* A copier into range->top of what the layers above range->base hold;
 * from now on client writes to top take their range in its lock.  A
 * read-only top is reopened read-write (until stream_copier_free; the
 * stream job reopens top itself, before its job exists, as QEMU does).
 * NULL (nothing set up) if that reopen or a claim is refused; `owner`
 * names the job for conflict messages and the block graph. */
StreamCopier *stream_copier_new(const ChainStreamRange *range, const char *owner, GError **errp);
/* Removes the write hooks and releases claims and op blockers (the chain
 * may then be relinked); idempotent. */
void stream_copier_detach(StreamCopier *c);
/* Detaches, puts top back read-only if the copier reopened it, and frees. */
void stream_copier_free(StreamCopier *c);
/* Looks at [offset, offset+max) and copies the first run there that needs
 * it, at most `max` bytes: *done is how far from offset the step got (a
 * run copied, or skipped because top or no layer above base holds it; 0
 * only at the end of the node) and *copied the bytes written to top.  0 or
 * -errno; a failed copy leaves *done at the run it tried (a job ignoring
 * the error goes on past it), a failed look at the allocation at 0. */
int stream_copier_step(StreamCopier *c, uint64_t offset, uint64_t max, uint64_t *done, uint64_t *copied);
/* The node copied into, the base kept below (NULL: none), and whether any
 * layer lies between them. */
BlockNode *stream_copier_top(StreamCopier *c);
BlockNode *stream_copier_base(StreamCopier *c);
/* Makes base top's backing node (recording `backing_file`, or base's file
 * name) and closes the layers that fell out; the copier must be detached. */
bool stream_copier_relink(StreamCopier *c, const char *backing_file, GError **errp);

/* ---- pulls in increments (jobs/stream-pull.c) ---- */

typedef struct StreamPullOptions {
    const char *id;            /* the completion event's `device` (default: device) */
    const char *device;
    const char *base, *base_node, *backing_file; /* NULL: absent */
    uint64_t cursor;           /* where this increment starts */
    uint64_t length;           /* bytes to copy at most (0: the default) */
} StreamPullOptions;

/* Default and largest `length` of one increment. */
#define STREAM_PULL_DEFAULT_LENGTH (4u << 20)
#define STREAM_PULL_MAX_LENGTH (64u << 20)

/* One increment of a pull (libvirt's non-continuous BlockPull): resolves
 * the chain as block-stream does, copies into device what it still reads
 * from the layers above base from `cursor` on, until `length` bytes were
 * copied or the end is reached, and sets *cursor_out to where it stopped
 * and *end to the node's size.  The increment that reaches the end
 * relinks the chain (as a stream job's completion) and emits
 * BLOCK_JOB_COMPLETED (type stream) once; on a chain with nothing between
 * device and base it changes nothing and emits nothing.  On failure the
 * chain stays as it was and the error says where the increment stopped. */
bool stream_pull_increment(const StreamPullOptions *o, uint64_t *cursor_out, uint64_t *end, GError **errp);
