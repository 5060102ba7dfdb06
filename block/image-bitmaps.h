/* Dirty bitmaps stored inside an image (qcow2's bitmaps extension): the
 * node-level calls through which bitmaps/ reaches a format driver that
 * can store them (BlockDriver.bitmaps_*), and StoredBitmap, the record
 * that the image drivers and the raw sidecar (bitmaps/bitmap-store.c)
 * both load and store.
 *
 * The bitmap layer owns the bits; a driver only reads them to store them
 * and fills new ones at a load.  The rule the drivers help keep: no write
 * is acknowledged before its dirty bits are durable.  So a store makes a
 * complete set of bitmaps durable in one atomic step (the old set stays
 * valid until then), and bitmaps_write/bitmaps_sync update the stored words
 * of one bitmap in place between two stores (bits are only ever set there,
 * so any prefix of those writes still leaves a superset of what was
 * acknowledged).  docs/bitmaps.md describes the qcow2 layout. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "bitmaps/hbitmap.h"

typedef struct BlockNode BlockNode;

/* One bitmap as stored: what a load returns and what a store takes. */
typedef struct StoredBitmap {
    char *name;
    uint32_t granularity;
    uint64_t node_size;
    bool enabled;
    bool inconsistent;   /* content untrusted; `bits` is NULL */
    /* Store only: bits were cleared since the last store (a clear, a
     * rollback, a job's replacement), so the stored words may hold bits
     * that must go: they are written to new clusters, not in place. */
    bool reset;
    HBitmap *bits;       /* load: owned by the caller afterwards; store: borrowed */
    HBitmap *durable;    /* store only (may be NULL): set to bits once written */
    /* Filled in by a store: where the words live until the next store
     * (the sidecar: their file offset; an image: the driver's handle for
     * bitmaps_write), or 0 when they cannot be updated in place (the
     * bitmap is then not kept crash-safe: an image marks it in use). */
    uint64_t data_offset;
} StoredBitmap;

/* Frees a StoredBitmap (and the bits it owns). */
void stored_bitmap_free(StoredBitmap *sb);

/* True if the node's driver stores bitmaps in the image (qcow2). */
bool node_bitmaps_supported(BlockNode *node);
/* QEMU's checks before a new persistent bitmap (qcow2_co_can_store_new_dirty_bitmap):
 * false with the reason alone in *errp (the caller adds "Can't make bitmap
 * 'X' persistent in 'NODE': ").  `names` are the node's persistent bitmaps. */
bool node_bitmaps_can_add(BlockNode *node, const char *name, uint32_t granularity,
                          const char *const *names, guint n, GError **errp);
/* The bitmaps stored in the image (StoredBitmap *, appended to `out`, bits
 * owned by the caller): in-use bitmaps that blockd did not keep crash-safe
 * come back inconsistent.  Problems with one bitmap are logged and make it
 * inconsistent; false only if none can be read. */
bool node_bitmaps_load(BlockNode *node, GPtrArray *out, GError **errp);
/* Makes `entries` (StoredBitmap *) the image's complete set of bitmaps in
 * one atomic step (`clean`: the final, exact store of a clean close) and
 * fills in each entry's data_offset. */
bool node_bitmaps_store(BlockNode *node, GPtrArray *entries, bool clean, GError **errp);
/* Writes words [first_word, first_word + nwords) of the bitmap whose
 * handle is `loc` (little-endian, as hbitmap_serialize_words makes them)
 * in place; not durable until node_bitmaps_sync.  0 or -errno. */
int node_bitmaps_write(BlockNode *node, uint64_t loc, uint64_t first_word, uint64_t nwords, const void *buf);
/* Makes every node_bitmaps_write so far durable.  0 or -errno. */
int node_bitmaps_sync(BlockNode *node);
