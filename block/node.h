/* The node graph and the single I/O entry point (DESIGN seam 2).
 *
 * Every reader and writer (NBD exports, jobs, QMP) touches data only through
 * the node_* functions below.  They are synchronous and thread-safe.  Data
 * functions take byte ranges that the caller has already validated against
 * node_size() (they assert it) and return 0 or a negative errno.
 * Generic fallbacks live here, once: FUA by flush, zero by writing zero
 * buffers, cache by reading, no extents means all data. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>
#include "block/driver.h"
#include "block/extents.h"
#include "block/node-perm.h"

typedef struct BlockNode BlockNode;

/* What a node can do, computed once when it is opened. */
typedef struct NodeCaps {
    bool can_write;
    bool can_flush;
    bool can_trim;
    bool can_zero;        /* write-zeroes accepted (native or emulated) */
    bool can_fast_zero;   /* FAST_ZERO flag honoured */
    int fua;              /* BLOCK_SUPPORT_* */
    int cache;            /* BLOCK_SUPPORT_* */
    bool can_extents;     /* driver reports real extents */
    bool can_multi_conn;  /* writes from any user are visible to all after flush */
    bool is_rotational;
    uint32_t block_min, block_preferred, block_max; /* all 0: no constraints */
} NodeCaps;

/* Creates a node from parsed options (blockdev-add's BlockdevOptions, with
 * node-name set) and adds it to the graph (node_find can see it) with one
 * reference held by the graph; the caller keeps `options`. */
BlockNode *node_create(const BlockdevOptions *options, GError **errp);
/* Removes a node from the graph; fails if it is in use (children, exports). */
bool node_delete(const char *name, GError **errp);
/* Finds a node by name; the result is borrowed from the graph. */
BlockNode *node_find(const char *name);
/* Lists all nodes in creation order (borrowed pointers; free the array). */
GPtrArray *node_list(void);
/* Closes and frees every node (at exit), parents before children. */
void node_graph_shutdown(void);

/* Takes a reference on a node (users such as exports and parents do). */
BlockNode *node_ref(BlockNode *node);
/* Drops a reference; the last one closes the driver. */
void node_unref(BlockNode *node);
/* Number of users other than the graph itself. */
unsigned node_users(BlockNode *node);
/* Records `child` as a child of `parent` in `role` (takes a reference on
 * child) and applies the parent's claim on it (block/node-perm.h): false
 * with QEMU's error, and nothing recorded, if image locks forbid it.
 * Drivers call it in open, before touching the child's data. */
bool node_add_child(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp);
/* Makes `backing` (NULL: none) the backing node of `node`, a format whose
 * driver has set_backing, in place of the one it has (blockdev-snapshot,
 * block/chain.c's relink): the new edge with its claim, then the driver,
 * then the old edge and its claim go (the old node stays in the graph).
 * The image is not rewritten (node_change_backing_file).  The caller
 * drains `node` when it had a backing node.  False, changing nothing, if
 * the claim is refused. */
bool node_set_backing(BlockNode *node, BlockNode *backing, GError **errp);
/* Undoes node_set_backing (no request may be using the backing node through `node`). */
void node_drop_backing(BlockNode *node, BlockNode *backing);
/* Like node_add_child for a node the parent created itself (an implicit
 * file or backing node): when the parent closes, the child also leaves the
 * graph unless someone else still uses it. */
bool node_add_implicit_child(BlockNode *parent, BlockNode *child, NodeChildRole role, GError **errp);
/* Op blockers (QEMU's bdrv_op_block_all): a job that uses a node
 * exclusively blocks it with a reason ("block device is in use by block
 * job: backup"); fails with QEMU's "Node 'x' is busy: REASON" if it is
 * blocked already.  node_delete refuses blocked nodes. */
bool node_block_ops(BlockNode *node, const char *reason, GError **errp);
/* True if no job blocks the node; else false with QEMU's "is busy" error. */
bool node_check_ops(BlockNode *node, GError **errp);
/* Removes the blocker set with node_block_ops. */
void node_unblock_ops(BlockNode *node);
/* Adds (or removes) a job's write filter above the node: a backup's
 * copy-before-write, which QEMU inserts as a filter node, so the node is no
 * longer a root (node_has_parent), as in QEMU. */
void node_job_filter(BlockNode *node, bool add);
/* True if some node of the graph has `node` as a child, or a job filters it (it is not a root). */
bool node_has_parent(BlockNode *node);
/* `node` and every node above it (parents, their parents, ...), each with a
 * reference (free with g_ptr_array_unref). */
GPtrArray *node_ancestors(BlockNode *node);

/* The node's unique name. */
const char *node_name(BlockNode *node);
/* The name of the node's driver. */
const char *node_driver_name(BlockNode *node);
/* Size in bytes. */
uint64_t node_size(BlockNode *node);
/* True if opened read-only (or the driver cannot write). */
bool node_read_only(BlockNode *node);
/* QEMU's bdrv_reopen_set_read_only: switches a node between read-only and
 * read-write in place (block jobs writing a read-only base, and back).
 * Going read-write, the children the node opened itself through file or
 * filter edges go first (backing nodes never); then the driver; then the
 * permissions are rechecked (QEMU's texts for a conflicting claim or
 * another process's image lock).  Any failure rolls everything back: the
 * node stays read-only and usable.  Going read-only drops the write
 * claims on the children and reopens them read-only too.  A no-op if the
 * node already is so.  Call it with no request in flight on this thread
 * (the node is drained meanwhile). */
bool node_reopen_read_only(BlockNode *node, bool read_only, GError **errp);
/* Called by node_reopen_read_only on the reopening thread with the node
 * drained: with read_only, just before the node goes read-only (it can
 * still write: dirty bitmaps store themselves clean); otherwise just after
 * it went read-write.  false (with errp) undoes the reopen. */
typedef bool (*NodeReopenFn)(BlockNode *node, bool read_only, void *opaque, GError **errp);
/* Adds a reopen notifier; it lives as long as the node. */
void node_add_reopen_notifier(BlockNode *node, NodeReopenFn fn, void *opaque);
/* Back to read-only after a job that reopened the node read-write (QEMU's
 * commit_clean, stream_clean): a failure is logged with `who` (the job),
 * not returned, as QEMU ignores it there. */
void node_restore_read_only(BlockNode *node, const char *who);
/* The capabilities computed at open. */
const NodeCaps *node_caps(BlockNode *node);

/* Before-write hooks (DESIGN "the write path"): called by node_pwrite,
 * node_zero and node_trim with the range about to change, before the
 * driver is called; a negative errno fails the write without issuing it.
 * Hooks run in ascending `order` (jobs' copy-before-write first, then dirty
 * bitmap marking at NODE_HOOK_ORDER_DIRTY_BITMAP), on the writer's thread,
 * possibly concurrently with each other. */
typedef enum NodeWriteKind { NODE_WRITE_DATA, NODE_WRITE_ZERO, NODE_WRITE_TRIM } NodeWriteKind;
typedef int (*NodeBeforeWriteFn)(BlockNode *node, uint64_t offset, uint64_t count,
                                 NodeWriteKind kind, void *opaque);
typedef struct NodeWriteHook NodeWriteHook;
#define NODE_HOOK_ORDER_JOB 0
#define NODE_HOOK_ORDER_DIRTY_BITMAP 100
/* Adds a hook; it sees every write issued after this returns. */
NodeWriteHook *node_add_before_write_hook(BlockNode *node, int order, NodeBeforeWriteFn fn, void *opaque);
/* Removes a hook (before- or after-write); waits for running calls of it to return. */
void node_remove_before_write_hook(BlockNode *node, NodeWriteHook *hook);
/* After-write hooks: called by node_pwrite, node_zero and node_trim once the
 * driver returned (result 0 or -errno; also when a before-write hook failed
 * the write), on the writer's thread, with the data written (NULL for zero
 * and trim).  They cannot change the result.  A mirror marks regions dirty
 * here: a mark made after the data landed cannot be consumed by a copy that
 * read the old data. */
typedef void (*NodeAfterWriteFn)(BlockNode *node, const void *buf, uint64_t offset, uint64_t count,
                                 NodeWriteKind kind, int result, void *opaque);
/* Adds an after-write hook (remove it with node_remove_before_write_hook);
 * after-write hooks also run in ascending `order` (a job's before the
 * dirty bitmaps' second mark, so a backup's successor records a write
 * before the bitmap it may replace re-marks it). */
NodeWriteHook *node_add_after_write_hook(BlockNode *node, int order, NodeAfterWriteFn fn, void *opaque);
/* Calls fn once when the node closes (its last reference), before the driver closes. */
void node_add_close_notifier(BlockNode *node, void (*fn)(BlockNode *node, void *opaque), void *opaque);
/* The image file name given in the node's own `filename` option, or NULL. */
const char *node_filename(BlockNode *node);

/* Reads count bytes at offset into buf. */
int node_pread(BlockNode *node, void *buf, uint32_t count, uint64_t offset);
/* Writes; BLOCK_FLAG_FUA makes the data durable before returning. */
int node_pwrite(BlockNode *node, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
/* Like node_pwrite for a caller that can take the result later: when the
 * calling thread has a deferral scope open (block/io-defer.h), the node has
 * no write hooks and its driver can write asynchronously, it may return
 * before the data is written, and the scope waits for it; otherwise it
 * writes at once.  Either way done(opaque, result) is called exactly once:
 * before this returns, or later on another thread, where it must not
 * block; the caller keeps the node (and buf) until then.  -ENOTCONN
 * there means the driver lost its connection before the answer: the write
 * may or may not have happened, and node_pwrite (which reconnects as the
 * node allows) is the way to retry it. */
void node_pwrite_async(BlockNode *node, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                       void (*done)(void *opaque, int r), void *opaque);
/* True if a read (write) of the node may complete asynchronously in a
 * deferral scope: its driver has an asynchronous path that is open. */
bool node_async_possible(BlockNode *node, bool write);
/* Like node_pread, the same way (when the driver can read asynchronously). */
void node_pread_async(BlockNode *node, void *buf, uint32_t count, uint64_t offset,
                      void (*done)(void *opaque, int r), void *opaque);
/* Makes every completed write durable. */
/* Whether the node's driver writes compressed clusters (qcow2). */
bool node_can_write_compressed(BlockNode *node);
/* Writes whole clusters compressed (offset and count aligned to the
 * driver's preferred block size, or ending at the node's end); -ENOTSUP
 * without support.  Runs the write hooks like node_pwrite. */
int node_pwrite_compressed(BlockNode *node, const void *buf, uint32_t count, uint64_t offset);
int node_flush(BlockNode *node);
/* Discards (a hint); FUA allowed. */
int node_trim(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags);
/* Writes zeroes; MAY_TRIM allows holes, FAST_ZERO fails with -ENOTSUP unless fast, FUA allowed. */
int node_zero(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags);
/* Prefetch hint. */
int node_cache(BlockNode *node, uint32_t count, uint64_t offset);
/* Appends extents starting at offset to `extents` (made with extents_new(offset, size)). */
int node_block_status(BlockNode *node, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents);
/* Zero-copy read: a new descriptor (the caller closes it) and the offset in
 * it holding [offset, offset+count), or -ENOTSUP. */
int node_read_fd(BlockNode *node, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);
/* Reports debug event `event` to `node`'s driver, as a
 * parent does on its way through `node`; a no-op unless it is blkdebug. */
void node_debug_event(BlockNode *node, BlkdebugEvent event);
/* Grows a writable node to at least `size` bytes (formats appending to their
 * file); 0 if it already is that large, -ENOTSUP if the driver cannot. */
int node_grow(BlockNode *node, uint64_t size);
/* block_resize: makes the node exactly `size` bytes long (its I/O drained
 * meanwhile); QEMU's errors for read-only nodes and drivers that cannot.
 * The caller holds a claim with the resize permission (node-perm.h), or
 * is a parent driver whose edge passes it down (raw, blkdebug).  Resize
 * notifiers run before the drain ends. */
bool node_truncate(BlockNode *node, uint64_t size, GError **errp);
/* Calls fn after every change of the node's size by node_truncate (dirty
 * bitmaps follow it), on the resizing thread with the node drained. */
void node_add_resize_notifier(BlockNode *node, void (*fn)(BlockNode *node, void *opaque), void *opaque);
/* Rewrites the backing file name (and format) recorded in the node's image
 * through its driver's change_backing_file (also for a read-only node: the
 * driver writes its header as QEMU's reopen for it would); false with
 * *errp set if the driver cannot. */
bool node_change_backing_file(BlockNode *node, const char *backing_file, const char *backing_format,
                              GError **errp);
/* blockdev-create: makes the image `options` describe with the driver it
 * names (on the calling thread: a job's).  False with QEMU's error. */
bool block_image_create(const BlockdevCreateOptions *options, GError **errp);
/* Whether blockdev-create can make images of this driver; false with QEMU's
 * "Driver does not support blockdev-create" otherwise. */
bool block_image_create_supported(BlockdevDriver driver, GError **errp);
/* Fills `info` with the driver's image details; false (info zeroed) if it has none. */
bool node_image_info(BlockNode *node, BlockImageInfo *info);
