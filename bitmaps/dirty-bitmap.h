/* Named dirty bitmaps on a node (DESIGN seam 5).
 *
 * A dirty bitmap records, one bit per `granularity` bytes, which regions of
 * its node were written since it was created or cleared.  While it is
 * enabled ("recording") every node_pwrite/node_zero/node_trim sets its range
 * before the data write is issued (a before-write hook on the node).
 * States follow QEMU 7.2: busy (owned by an export or a job), inconsistent
 * (persistent bitmap whose stored content cannot be trusted), readonly
 * (persistent bitmap of a read-only image).  Error messages are QEMU's.
 *
 * Management calls (create, remove, clear, merge, state changes) are made
 * from one thread at a time (the main loop); the write path and readers
 * (NBD block status, jobs) may run on any thread.
 *
 * The rule for persistent bitmaps: no write is acknowledged before its
 * dirty bits are durable in every persistent bitmap that records it.
 * Writes mark before the data is written (so data never lands outside a
 * stored bitmap) and again after (so a clear, enable or add that ran while
 * the write was in flight cannot miss it).  Every management change runs
 * with the writers' marking excluded and the sidecar's group commit stopped,
 * and rewrites the sidecar before writers go on. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"
#include "bitmaps/hbitmap.h"

typedef struct DirtyBitmap DirtyBitmap;

/* Checks for dirty_bitmap_check(), in QEMU's order: busy, readonly, inconsistent. */
#define DIRTY_BITMAP_ALLOW_RO   (1u << 0) /* the operation does not modify the bits */
#define DIRTY_BITMAP_DEFAULT    0u

/* The default granularity of a new bitmap on `node` (64 KiB without clusters). */
uint32_t dirty_bitmap_default_granularity(BlockNode *node);
/* Adds a bitmap (block-dirty-bitmap-add rules and messages). */
DirtyBitmap *dirty_bitmap_create(BlockNode *node, const char *name, uint32_t granularity,
                                 bool persistent, bool disabled, GError **errp);
/* The bitmap `name` of `node`, or NULL. */
DirtyBitmap *dirty_bitmap_find(BlockNode *node, const char *name);
/* Finds node and bitmap by name with QEMU's "not found" messages; *node_out may be NULL. */
DirtyBitmap *dirty_bitmap_lookup(const char *node_name, const char *name, BlockNode **node_out,
                                 GError **errp);
/* Fails with QEMU's message if the bitmap is busy, readonly (unless allowed) or inconsistent. */
bool dirty_bitmap_check(DirtyBitmap *bm, unsigned flags, GError **errp);
/* The node's bitmaps, newest first (borrowed pointers; free the array). */
GPtrArray *dirty_bitmap_list(BlockNode *node);

/* Removes the bitmap (and its stored copy); fails if busy or readonly. */
bool dirty_bitmap_remove(DirtyBitmap *bm, GError **errp);
/* Clears every bit; with `backup`, first hands the old bits to the caller
 * (for dirty_bitmap_restore on rollback).  Assumes dirty_bitmap_check passed. */
void dirty_bitmap_clear(DirtyBitmap *bm, HBitmap **backup);
/* Puts back bits saved by dirty_bitmap_clear/merge (takes ownership of
 * `saved`): with keep_new_writes the result is saved | current bits (undoing
 * a clear keeps writes made since), otherwise exactly `saved` (undoing a merge). */
void dirty_bitmap_restore(DirtyBitmap *bm, HBitmap *saved, bool keep_new_writes);
/* Replaces the bits with those `make` returns (ownership passes), calling
 * it while writers cannot mark: a write that any earlier hook recorded in
 * what `make` reads is in the result, and any later one marks the bitmap
 * again after its data landed (a backup handing over its successor). */
void dirty_bitmap_replace(DirtyBitmap *bm, HBitmap *(*make)(void *opaque), void *opaque);
/* Starts or stops recording. */
void dirty_bitmap_set_enabled(DirtyBitmap *bm, bool enabled);
/* ORs each source into target (sizes must match; granularities may differ);
 * atomic: on error the target is unchanged.  `backup` as for clear. */
bool dirty_bitmap_merge(DirtyBitmap *target, GPtrArray *sources, HBitmap **backup, GError **errp);

/* Marks the bitmap owned (an export, a job, a pending transaction) or releases it. */
void dirty_bitmap_set_busy(DirtyBitmap *bm, bool busy);

/* Accessors. */
const char *dirty_bitmap_name(DirtyBitmap *bm);
BlockNode *dirty_bitmap_node(DirtyBitmap *bm);
uint32_t dirty_bitmap_granularity(DirtyBitmap *bm);
/* Bytes covered: the node's size when the bitmap was made. */
uint64_t dirty_bitmap_size(DirtyBitmap *bm);
/* Dirty bytes (dirty granules x granularity, capped at the size); 0 when inconsistent. */
uint64_t dirty_bitmap_count(DirtyBitmap *bm);
bool dirty_bitmap_recording(DirtyBitmap *bm);
bool dirty_bitmap_busy(DirtyBitmap *bm);
bool dirty_bitmap_persistent(DirtyBitmap *bm);
bool dirty_bitmap_inconsistent(DirtyBitmap *bm);
bool dirty_bitmap_readonly(DirtyBitmap *bm);
/* SHA-256 (hex) of the serialised bits: QEMU's x-debug-block-dirty-bitmap-sha256
 * (its serialisation is the same little-endian 64-bit words). */
char *dirty_bitmap_sha256(DirtyBitmap *bm);
/* Bytes of memory the bits use. */
size_t dirty_bitmap_memory(DirtyBitmap *bm);

/* Marks [offset, offset+len) dirty in memory (jobs handing bits back);
 * dirty_bitmap_sync then makes such marks durable. */
void dirty_bitmap_set_range(DirtyBitmap *bm, uint64_t offset, uint64_t len);
/* Stores a persistent bitmap's current bits (a whole rewrite); true if not persistent. */
bool dirty_bitmap_sync(DirtyBitmap *bm, GError **errp);
/* The start of the first dirty granule in [offset, end) (byte offset, clamped
 * to offset), or -1. */
int64_t dirty_bitmap_next_dirty(DirtyBitmap *bm, uint64_t offset, uint64_t end);
/* Likewise for the first clean granule. */
int64_t dirty_bitmap_next_clean(DirtyBitmap *bm, uint64_t offset, uint64_t end);

/* Loads the node's persistent bitmaps (sidecar of a file node) after it was
 * opened; problems are reported on stderr and mark bitmaps inconsistent. */
void dirty_bitmap_load_persistent(BlockNode *node);
/* The same for a node a client added and for the images of its backing
 * chain that store bitmaps themselves (QEMU loads every qcow2 node's at
 * open); a sidecar is loaded for `node` alone. */
void dirty_bitmap_load_persistent_chain(BlockNode *node);
