/* The local or remote target image of drive-backup and drive-mirror. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"

/* What a new qcow2 target sits on, by QEMU's rules for drive-backup and
 * drive-mirror: nothing for sync=full; the source's backing for sync=top;
 * the source itself for sync=none. */
typedef enum DriveTargetBase {
    DRIVE_TARGET_NO_BASE,
    DRIVE_TARGET_SOURCE_BACKING,
    DRIVE_TARGET_SOURCE,
} DriveTargetBase;

/* Opens (`existing`) or creates with the source's size the image `path` as
 * node `target_name` (NULL: "COMMAND-N").  `path` is a file name or an NBD
 * URI (nbd://, nbd+tcp://, nbd+unix://; existing images only); `format` is
 * "raw", "qcow2" or NULL (existing: probed; new: raw).  A new qcow2 image
 * records `base` (see DriveTargetBase) as its backing file, and with
 * DRIVE_TARGET_SOURCE uses the source node itself as its backing.
 * Implicit file nodes leave the graph with the image node. */
BlockNode *qmp_open_drive_target(const char *command, const char *path, const char *format,
                                 bool existing, const char *target_name, BlockNode *source,
                                 DriveTargetBase base, GError **errp);

/* blockdev-snapshot-sync's overlay: creates (unless `existing`) the qcow2
 * image `path` with `node`'s size, naming `node`'s image as its backing
 * file, and opens it as node `name` (format `format`) without a backing
 * node, for node_snapshot_append to give it the live one. */
BlockNode *qmp_open_snapshot_overlay(const char *path, const char *format, bool existing, const char *name,
                                     BlockNode *node, GError **errp);
