/* The local target image of drive-backup and drive-mirror. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"

/* Opens (existing) or creates with `size` bytes the raw image `path` as a file
 * node named `node_name` (NULL: "COMMAND-N"); only format "raw" (or none) is accepted. */
BlockNode *qmp_open_drive_target(const char *command, const char *path, const char *format,
                                 bool existing, const char *node_name, uint64_t size,
                                 GError **errp);
