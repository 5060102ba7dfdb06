/* On-disk persistence of dirty bitmaps in a sidecar file next to a raw image
 * (format: docs/bitmaps.md, "Persistence").
 *
 * Crash safety: before a data write to a not-yet-durable granule is issued,
 * the writer enqueues the bitmap words it changed and waits; one of the
 * waiters writes every queued word and calls fdatasync once for all of them
 * (group commit), then marks those granules durable.  Metadata changes
 * (add, remove, clear, merge, enable, disable) rewrite the whole file
 * atomically (temporary file, fsync, rename). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "bitmaps/hbitmap.h"

typedef struct BitmapStore BitmapStore;

/* One bitmap as stored: what a load returns and what a rewrite takes. */
typedef struct StoredBitmap {
    char *name;
    uint32_t granularity;
    uint64_t node_size;
    bool enabled;
    bool inconsistent;   /* content untrusted; `bits` is NULL */
    HBitmap *bits;       /* load: owned by the caller afterwards; rewrite: borrowed */
    HBitmap *durable;    /* rewrite only (may be NULL): set to bits once written */
    uint64_t data_offset; /* filled in by a rewrite: where the words live */
} StoredBitmap;

/* The sidecar path for an image file: IMAGE.bitmaps (new string). */
char *bitmap_store_path_for(const char *image);
/* Opens the sidecar at `path` if it exists (*loaded gets StoredBitmap *, whose
 * bits the caller owns); problems are printed to stderr and make the affected
 * bitmaps inconsistent.  Returns NULL when there is no usable file. */
BitmapStore *bitmap_store_open(const char *path, bool read_only, uint64_t node_size,
                               GPtrArray **loaded);
/* A store for a new sidecar at `path` (created by the first rewrite). */
BitmapStore *bitmap_store_new(const char *path);
/* Frees a StoredBitmap returned by bitmap_store_open (and its bits). */
void stored_bitmap_free(StoredBitmap *sb);

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
 * list deletes the file. */
bool bitmap_store_rewrite(BitmapStore *st, GPtrArray *entries, bool clean, GError **errp);
/* Frees the store (does not write). */
void bitmap_store_free(BitmapStore *st);
