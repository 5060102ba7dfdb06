/* The local or remote target image of drive-backup and drive-mirror. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"

/* Opens (`existing`) or creates with `size` bytes the image `path` as node
 * `node_name` (NULL: "COMMAND-N").  `path` is a file name or an NBD URI
 * (nbd://, nbd+tcp://, nbd+unix://; existing images only); `format` is
 * "raw", "qcow2" or NULL (existing: probed; new: raw).  Implicit file
 * nodes leave the graph with the image node. */
BlockNode *qmp_open_drive_target(const char *command, const char *path, const char *format,
                                 bool existing, const char *node_name, uint64_t size,
                                 GError **errp);
