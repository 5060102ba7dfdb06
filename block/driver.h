/* The node <-> driver seam: a table of callbacks shaped like
 * struct nbdkit_plugin, so that the nbdkit plugin host is a thin adapter.
 *
 * Every callback gets the driver instance's opaque pointer.  Data callbacks
 * return 0 on success or a negative errno.  The node layer has already
 * validated ranges and flags and serialises nothing: a driver that is not
 * thread-safe must lock itself (the plugin host enforces nbdkit thread
 * models this way).  Optional callbacks may be NULL; node.c supplies the
 * generic fallbacks (FUA by flush, zero by write, cache by read, no extents
 * means all data). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/extents.h"
#include "qapi/qapi-types.h"

/* Flag bits passed to data callbacks: identical to NBDKIT_FLAG_*. */
#define BLOCK_FLAG_MAY_TRIM  (1u << 0)
#define BLOCK_FLAG_FUA       (1u << 1)
#define BLOCK_FLAG_REQ_ONE   (1u << 2)
#define BLOCK_FLAG_FAST_ZERO (1u << 3)
/* blockd's own extents flag (never passed to plugins): describe what this
 * layer holds, as QEMU's allocation status does -- HOLE alone for what it
 * leaves to its backing node, ZERO alone for zeroes it holds itself.
 * Drivers without a backing node may ignore it.  sync=top jobs use it. */
#define BLOCK_FLAG_ALLOCATION (1u << 8)

/* Levels for can_fua / can_cache: identical to NBDKIT_FUA_* / NBDKIT_CACHE_*. */
#define BLOCK_SUPPORT_NONE    0
#define BLOCK_SUPPORT_EMULATE 1
#define BLOCK_SUPPORT_NATIVE  2

typedef struct BlockNode BlockNode;
struct BlockImageInfo;
struct BlockSnapshotOps;

/* A driver's open callback, typed by its member of BlockdevOptions' union
 * (qapi/block-core.json), the member named like the driver.  The options
 * arrive parsed and type-checked by the generated parser; the driver
 * checks what the schema cannot say (ranges, combinations) with QEMU's
 * messages.  It returns an instance, or NULL with *errp set.  `self` is
 * the node being created: drivers that have children add them with
 * node_add_child().  `cache` (file and rbd only) is the base member cache,
 * NULL when not given; other drivers refuse it. */
typedef union BlockDriverOpen {
    void *(*blkdebug)(BlockNode *self, const BlockdevOptionsBlkdebug *opts, bool read_only, GError **errp);
    void *(*file)(BlockNode *self, const BlockdevOptionsFile *opts, const BlockdevCacheOptions *cache,
                  bool read_only, GError **errp);
    void *(*memory)(BlockNode *self, const BlockdevOptionsMemory *opts, bool read_only, GError **errp);
    void *(*nbd)(BlockNode *self, const BlockdevOptionsNbd *opts, bool read_only, GError **errp);
    void *(*nbdkit)(BlockNode *self, const BlockdevOptionsNbdkit *opts, bool read_only, GError **errp);
    void *(*null_co)(BlockNode *self, const BlockdevOptionsNull *opts, bool read_only, GError **errp);
    void *(*overlay)(BlockNode *self, const BlockdevOptionsOverlay *opts, bool read_only, GError **errp);
    void *(*qcow2)(BlockNode *self, const BlockdevOptionsQcow2 *opts, bool read_only, GError **errp);
    void *(*raw)(BlockNode *self, const BlockdevOptionsRaw *opts, bool read_only, GError **errp);
    void *(*rbd)(BlockNode *self, const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache,
                 bool read_only, GError **errp);
} BlockDriverOpen;

typedef struct BlockDriver {
    const char *name;
    BlockdevDriver type;   /* the BlockdevOptions branch: which `open` is set */
    /* A format with a backing node (QEMU's supports_backing): its extents
     * honour BLOCK_FLAG_ALLOCATION, so a HOLE there means "not allocated in
     * this layer" -- left to the backing node, or absent without one. */
    bool supports_backing;

    BlockDriverOpen open;
    void (*close)(void *opaque);

    /* Metadata, asked once at open time; the node caches the results.
     * Return -errno on failure (open fails). */
    int64_t (*get_size)(void *opaque);
    int (*can_write)(void *opaque);      /* bool */
    int (*can_flush)(void *opaque);      /* bool */
    int (*can_trim)(void *opaque);       /* bool */
    int (*can_zero)(void *opaque);       /* bool: native zero callback usable */
    int (*can_fast_zero)(void *opaque);  /* bool */
    int (*can_fua)(void *opaque);        /* BLOCK_SUPPORT_* */
    int (*can_cache)(void *opaque);      /* BLOCK_SUPPORT_* */
    int (*can_extents)(void *opaque);    /* bool */
    int (*can_multi_conn)(void *opaque); /* bool: one flush covers all writers */
    int (*is_rotational)(void *opaque);  /* bool */
    /* Block size constraints; all zero means "no information". */
    int (*block_size)(void *opaque, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum);

    /* Data path. */
    int (*pread)(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags);
    int (*pwrite)(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags);
    int (*flush)(void *opaque, uint32_t flags);
    int (*trim)(void *opaque, uint32_t count, uint64_t offset, uint32_t flags);
    int (*zero)(void *opaque, uint32_t count, uint64_t offset, uint32_t flags);
    int (*extents)(void *opaque, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents);
    int (*cache)(void *opaque, uint32_t count, uint64_t offset, uint32_t flags);
    /* Optional: starts a write like pwrite and returns 0 at once; done(
     * done_opaque, result) is then called exactly once, on any thread
     * (also before this returns), and must not block.  -errno (done not
     * called) if it could not be started. */
    int (*pwrite_async)(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                        void (*done)(void *done_opaque, int r), void *done_opaque);
    /* Optional: the same for a read; buf is filled when done is called. */
    int (*pread_async)(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                       void (*done)(void *done_opaque, int r), void *done_opaque);
    /* Optional, beside those: false when a read (write) would complete
     * synchronously anyway (a filter whose child has no asynchronous
     * path), so the node layer calls pread (pwrite) at once; absent: true. */
    bool (*async_possible)(void *opaque, bool write);

    /* Optional zero-copy read: if the bytes [offset, offset+count) live in
     * a file descriptor, return 0 and set *fd and *fd_offset so the caller
     * can sendfile()/splice() them; return -ENOTSUP otherwise. */
    int (*read_fd)(void *opaque, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset);

    /* Optional: makes the node at least `size` bytes long (a format driver
     * appending clusters to its file); 0 or -errno.  The node layer then
     * accepts I/O up to the new size. */
    int (*grow)(void *opaque, uint64_t size);

    /* Optional (block_resize): makes the node exactly `size` bytes long,
     * growing or shrinking it; the node layer has checked that the node is
     * writable, holds the resize permission and has drained its I/O.
     * False with QEMU's error text. */
    bool (*truncate)(void *opaque, uint64_t size, GError **errp);

    /* Optional (blockdev-create): makes a new image as the driver's branch
     * of `options` says (options->driver is this driver's type), on the
     * calling job's thread.  False with QEMU's error text. */
    bool (*create)(const BlockdevCreateOptions *options, GError **errp);

    /* Optional (change-backing-file, and stream and commit when they
     * rewrite a chain): records `backing_file` (NULL: none) and its format
     * (NULL: none) as the image's backing file in its own metadata; the
     * backing node in use does not change.  Also called on read-only
     * nodes (QEMU reopens them read-write for it).  False with *errp set. */
    bool (*change_backing_file)(void *opaque, const char *backing_file, const char *backing_format,
                                GError **errp);

    /* Optional (node_reopen_read_only, QEMU's bdrv_reopen_set_read_only):
     * switches the instance to read-only or read-write.  The node layer has
     * drained the node and, going read-write, reopened its file (or
     * filtered) child read-write first; it recomputes the capabilities and
     * permissions after.  Going read-only a format makes its metadata
     * durable first.  False, with *errp set and nothing changed, if the
     * driver cannot.  Without it the node cannot be reopened. */
    bool (*reopen)(void *opaque, bool read_only, GError **errp);

    /* Optional: what query-named-block-nodes shows of an image format
     * (backing file, cluster size).  Strings stay owned by the driver. */
    void (*image_info)(void *opaque, struct BlockImageInfo *info);

    /* Optional: from now on use `new_child` wherever `old_child` was used
     * (swap the pointer; the node layer has drained both, moved the edge
     * and its permissions, and checked sizes).  Without it the node's
     * children cannot be replaced (node_replace refuses). */
    void (*replace_child)(void *opaque, BlockNode *old_child, BlockNode *new_child);

    /* Optional: internal snapshots (block/snapshot.h). */
    const struct BlockSnapshotOps *snapshot;

    /* Optional: writes one whole cluster compressed at `offset` (aligned
     * to the cluster size the driver reports as preferred block size, or
     * the image's end); 0 or -errno.  Backups with compress=true. */
    int (*pwrite_compressed)(void *opaque, const void *buf, uint32_t count, uint64_t offset);

    /* Optional (formats with a backing chain): `backing` becomes the
     * backing node in place of the one the image has now (none when opened
     * with backing null; NULL drops it).  The node layer has added (or will
     * remove) the edges and drained the node; the image's header is not
     * rewritten (QEMU's bdrv_set_backing_hd; change_backing_file does that). */
    void (*set_backing)(void *opaque, BlockNode *backing);


    /* Optional: a parent reports a debug event on its
     * way through this node's I/O path; only blkdebug reacts. */
    void (*debug_event)(void *opaque, BlkdebugEvent event);

    /* Optional, all or none: dirty bitmaps stored in the image itself
     * (qcow2's bitmaps extension); the node-level calls and their contract
     * are in block/image-bitmaps.h (node_bitmaps_*).  `names` are the
     * node's persistent bitmaps, entries and `out` hold StoredBitmap *. */
    bool (*bitmaps_can_add)(void *opaque, const char *name, uint32_t granularity,
                            const char *const *names, guint n, GError **errp);
    bool (*bitmaps_load)(void *opaque, GPtrArray *out, GError **errp);
    bool (*bitmaps_store)(void *opaque, GPtrArray *entries, bool clean, GError **errp);
    int (*bitmaps_write)(void *opaque, uint64_t loc, uint64_t first_word, uint64_t nwords, const void *buf);
    int (*bitmaps_sync)(void *opaque);

    /* Optional: what the node's claims add up to (block/node-perm.h) is
     * about to become (perm, shared).  check_perm makes sure that can be
     * had (the file driver takes and tests its image locks), false with
     * *errp set if not; exactly one of set_perm (keep the new state, drop
     * what is no longer needed) and abort_perm (back to the old) follows. */
    bool (*check_perm)(void *opaque, uint64_t perm, uint64_t shared, GError **errp);
    void (*set_perm)(void *opaque, uint64_t perm, uint64_t shared);
    void (*abort_perm)(void *opaque);
} BlockDriver;

/* Image details a format driver reports (all optional: NULL / 0). */
typedef struct BlockImageInfo {
    const char *filename;              /* the image file's name */
    const char *backing_filename;      /* as recorded in the image */
    const char *full_backing_filename; /* resolved against the image's directory */
    const char *backing_format;
    BlockNode *backing;                /* the backing node in use, or NULL */
    uint32_t cluster_size;
} BlockImageInfo;

/* Opens an instance of `drv` (whose type is options->driver) for node
 * `self` from its branch of `options`; NULL with *errp set. */
void *block_driver_open(const BlockDriver *drv, BlockNode *self, const BlockdevOptions *options, bool read_only,
                        GError **errp);
/* The reopen callback of a driver whose mode is its child's (raw,
 * blkdebug): nothing of its own changes; the node layer reopens the child. */
bool block_driver_reopen_passthrough(void *opaque, bool read_only, GError **errp);
/* Registers a driver under its name (called from block_drivers_init). */
void block_driver_register(const BlockDriver *drv);
/* The driver registered under `name`, or NULL. */
const BlockDriver *block_driver_find(const char *name);
/* Registers every built-in driver; safe to call more than once. */
void block_drivers_init(void);
/* The registered drivers' names, sorted (borrowed strings; free the array). */
GPtrArray *block_driver_names(void);
