/* The rbd driver's image handle (block/drivers/rbd.c is the data path,
 * rbd-connect.c opens and closes it). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include "qapi/qapi-types.h"

typedef struct RbdImage {
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t image;
    char *spec;            /* pool/[namespace/]image[@snapshot], for messages */
    char *json_name;       /* QEMU's file name of the node: json:{...} of its strong options */
    char *name;            /* the image's name in its pool, for a reopen */
    bool snapshot;         /* opened at a snapshot (always read-only) */
    uint64_t size;
    uint64_t object_size;
    bool read_only;
    bool fast_diff;        /* the image has an object map with fast-diff */
    GMutex log_lock;       /* the failure log's rate limit */
    gint64 last_log;
    unsigned unlogged;
} RbdImage;

/* Connects to the cluster and opens the image the node options name
 * (QEMU's error texts); a writable open takes the image's exclusive lock
 * and fails if another live client holds it. */
RbdImage *rbd_image_open(const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache, bool read_only,
                         GError **errp);
/* blockdev-create driver=rbd: creates the image `location` names with
 * the given size and object size (QEMU's qemu_rbd_do_create and texts). */
bool rbd_image_create(const BlockdevCreateOptions *options, GError **errp);
/* node_reopen_read_only: the image opened again on the same connection in
 * the new mode; going read-write takes the exclusive lock as a writable
 * open does (and fails, changing nothing, if another client holds it),
 * going read-only releases it when the old handle closes.  QEMU's text
 * for a snapshot, which stays read-only. */
bool rbd_image_reopen(RbdImage *s, bool read_only, GError **errp);
/* Closes the image (flushing it, releasing the lock) and the connection. */
void rbd_image_close(RbdImage *s);
