/* On-disk persistence of dirty bitmaps: a sidecar file next to a raw
 * image (format: docs/bitmaps.md, "Persistence"), or the image itself when
 * its driver stores bitmaps (qcow2, through block/image-bitmaps.h).
 *
 * Crash safety: before a data write to a not-yet-durable granule is issued,
 * the writer enqueues the bitmap words it changed and waits; one of the
 * waiters writes every queued word in place and makes them durable at once
 * (fdatasync of the sidecar, a flush of the image's file; group commit),
 * then marks those granules durable.  Metadata changes (add, remove, clear,
 * merge, enable, disable) store the whole set atomically (the sidecar: a
 * temporary file, fsync, rename; an image: new clusters and one header
 * switch). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "bitmaps/hbitmap.h"
#include "block/image-bitmaps.h"

typedef struct BitmapStore BitmapStore;

/* The sidecar path for an image file: IMAGE.bitmaps (new string). */
char *bitmap_store_path_for(const char *image);
/* Opens the sidecar at `path` if it exists (*loaded gets StoredBitmap *, whose
 * bits the caller owns); problems are printed to stderr and make the affected
 * bitmaps inconsistent.  Returns NULL when there is no usable file. */
BitmapStore *bitmap_store_open(const char *path, bool read_only, uint64_t node_size,
                               GPtrArray **loaded);
/* A store for a new sidecar at `path` (created by the first rewrite). */
BitmapStore *bitmap_store_new(const char *path);
/* A store in the image of `node` (node_bitmaps_supported): *loaded gets
 * the bitmaps stored there (StoredBitmap *, bits owned by the caller).
 * NULL, with the reason in *errp, if they cannot be read. */
BitmapStore *bitmap_store_open_image(BlockNode *node, GPtrArray **loaded, GError **errp);
/* A store in the image of `node` that holds no bitmaps yet. */
BitmapStore *bitmap_store_new_image(BlockNode *node);

/* Queues words [first_word, last_word] of `bits` (stored at data_offset) for
 * the next durable write; returns a ticket for bitmap_store_wait. */
uint64_t bitmap_store_enqueue(BitmapStore *st, uint64_t data_offset, HBitmap *bits,
                              HBitmap *durable, uint64_t first_word, uint64_t last_word);
/* Returns once everything queued up to `ticket` is on stable storage; 0 or -errno. */
int bitmap_store_wait(BitmapStore *st, uint64_t ticket);

/* Waits for in-flight durable writes and blocks new ones (before a rewrite). */
void bitmap_store_quiesce(BitmapStore *st);
/* Drops queued runs of `bits` (a bitmap being removed); call while quiesced.
 * Their writers' tickets are still honoured by the next flush or rewrite. */
void bitmap_store_forget(BitmapStore *st, HBitmap *bits);
/* Lets durable writes run again. */
void bitmap_store_resume(BitmapStore *st);
/* Rewrites the whole file with `entries` (StoredBitmap *); `clean` records
 * checksums for a clean close.  Call between quiesce and resume.  An empty
 * list deletes the file.  An image store stores `entries` in the image
 * (`clean`: the exact, not-in-use form of a clean close). */
bool bitmap_store_rewrite(BitmapStore *st, GPtrArray *entries, bool clean, GError **errp);
/* Frees the store (does not write). */
void bitmap_store_free(BitmapStore *st);
