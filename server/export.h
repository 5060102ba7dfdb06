/* The NBD server <-> export seam (DESIGN seam 1).
 *
 * The protocol code sees an export as a name, a size, capabilities, block
 * size constraints, meta contexts and I/O calls; never nodes or plugins.
 * Requests are validated once, by the protocol code, before they get here.
 * All functions are thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/extents.h"
#include "block/node.h"
#include "qapi/qapi-types.h"

typedef struct Export Export;

/* One block-status context an export offers (e.g. "base:allocation"). */
typedef struct ExportMetaContext {
    char *name;
    /* Appends extents from `offset` (at least one; may stop early) to `out`,
     * which was made with extents_new(offset, export size); 0 or -errno. */
    int (*block_status)(Export *exp, const struct ExportMetaContext *ctx, uint64_t length,
                        uint64_t offset, uint32_t flags, BlockExtents *out);
    void *opaque;
} ExportMetaContext;

/* Options of a new export, as given by --export or block-export-add. */
typedef struct ExportConfig {
    const char *id;          /* unique export id */
    const char *node_name;   /* node to serve */
    const char *name;        /* NBD export name; NULL = node_name */
    const char *description; /* may be NULL */
    bool writable;
    /* Dirty bitmaps offered as qemu:dirty-bitmap:NAME, already checked by the
     * caller (export_check_bitmap); each is busy while the export exists. */
    struct DirtyBitmap *const *bitmaps;
    size_t nbitmaps;
    bool allocation_depth;   /* offer qemu:allocation-depth */
} ExportConfig;

/* QEMU's checks for exporting bitmap `bm` of the export's node: busy or
 * inconsistent, and an enabled bitmap on a read-only export of a writable node. */
bool export_check_bitmap(struct DirtyBitmap *bm, const char *node_name, bool writable, GError **errp);

/* Creates and registers an export; fails on duplicate id/name or a missing node. */
Export *export_add(const ExportConfig *cfg, GError **errp);
/* Called once, from any thread, when a deleted export's last reference is gone. */
typedef void (*ExportDeletedFn)(const char *id, void *opaque);

/* Deletes the export `id` as QEMU's block-export-del: its NBD name is freed at
 * once, its id stays listed (shutting down) until the last reference drops,
 * then `on_deleted` (may be NULL) runs.  `mode` safe refuses while a client
 * is in transmission; hard disconnects the clients and waits briefly for
 * them to leave, so the export is usually gone on return. */
bool export_delete(const char *id, BlockExportRemoveMode mode, ExportDeletedFn on_deleted,
                   void *opaque, GError **errp);
/* export_delete(id, BLOCK_EXPORT_REMOVE_MODE_HARD) without a callback. */
bool export_remove(const char *id, GError **errp);
/* Drops every export (at shutdown). */
void export_remove_all(void);

/* A connection in transmission, registered so deletion can count and drop it. */
typedef struct ExportClient ExportClient;
/* Registers a client; `disconnect(opaque)` must make it leave soon (it is called
 * under an internal lock, from any thread, and at once if the export is
 * already shutting down); `peer_gone(opaque)` tells whether the other end has
 * hung up (the client is leaving: a safe delete waits for it).  Both must not
 * block.  Free with export_client_unregister. */
ExportClient *export_client_register(Export *exp, void (*disconnect)(void *opaque),
                                     bool (*peer_gone)(void *opaque), void *opaque);
/* Unregisters a client (before the connection drops its export reference). */
void export_client_unregister(Export *exp, ExportClient *client);

/* One row of query-block-exports. */
typedef struct ExportStatus {
    char *id;
    char *node_name;
    bool shutting_down;
} ExportStatus;
/* Every export including those shutting down, in creation order (ExportStatus *; free with g_ptr_array_unref). */
GPtrArray *export_status_list(void);

/* The export a client names ("" falls back to the first export); exports shutting down are not found. New reference or NULL. */
Export *export_lookup(const char *name);
/* All exports not shutting down, in creation order, each with a new reference (free with g_ptr_array_unref). */
GPtrArray *export_list(void);
/* Takes a reference. */
Export *export_ref(Export *exp);
/* Drops a reference. */
void export_unref(Export *exp);

/* The export's id. */
const char *export_id(Export *exp);
/* The name of the node the export serves. */
const char *export_node_name(Export *exp);
/* The NBD name. */
const char *export_name(Export *exp);
/* The description or NULL. */
const char *export_description(Export *exp);
/* Size in bytes. */
uint64_t export_size(Export *exp);
/* True unless the export is writable and its node can write. */
bool export_read_only(Export *exp);
/* Capabilities of the served node (write-side ones cleared when read-only). */
const NodeCaps *export_caps(Export *exp);
/* The contexts selectable on this export (borrowed; stable for the export's life). */
GPtrArray *export_meta_contexts(Export *exp);

/* I/O, forwarded to the node: 0 or -errno. Ranges are already validated. */
int export_pread(Export *exp, void *buf, uint32_t count, uint64_t offset);
int export_pwrite(Export *exp, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
int export_flush(Export *exp);
int export_trim(Export *exp, uint64_t count, uint64_t offset, uint32_t flags);
int export_zero(Export *exp, uint64_t count, uint64_t offset, uint32_t flags);
int export_cache(Export *exp, uint64_t count, uint64_t offset);
/* export_pread / export_pwrite for a caller with a deferral scope open
 * (block/io-defer.h): done(opaque, result) is called exactly once, maybe
 * later on another thread, where it must not block (node_pread_async);
 * the caller keeps the export and buf until then. */
void export_pread_async(Export *exp, void *buf, uint32_t count, uint64_t offset,
                        void (*done)(void *opaque, int r), void *opaque);
void export_pwrite_async(Export *exp, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                         void (*done)(void *opaque, int r), void *opaque);
/* Zero-copy read source: a descriptor the caller closes (see node_read_fd); -ENOTSUP when unavailable. */
int export_read_fd(Export *exp, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);
