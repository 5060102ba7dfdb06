/* Where a job writes (a node, a new node for an NBD URI, a new local image
 * file) and the undo actions for what blockctl made for it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "tools/blockctl/qmp-client.h"

/* True if `to` names a local file: not an NBD URI, and with a '/' (node names have none). */
bool target_is_file(const char *to);
/* `path` made absolute against the current directory (links are not resolved): the daemon has another one. */
char *target_absolute(const char *path);
/* Adds a driver=nbd node PREFIX-target-PID for the NBD `uri` and registers its deletion (cleanup.h) in *undo; dies on an error. */
char *target_add_nbd_node(QmpClient *c, const char *uri, const char *prefix, unsigned *undo);
/* Registers a cleanup that deletes node `name` (blockdev-del). */
unsigned target_undo_node(const char *name);
/* The format of the image file `path` by its magic, "qcow2" or "raw"; dies if it cannot be read. */
const char *target_probe_file(const char *path);
/* Creates the new (O_EXCL) raw or qcow2 image `path` of `size` bytes over `backing` (qcow2, may be NULL), removal registered in *undo. */
void target_create_file(const char *path, const char *format, uint64_t size, const char *backing, unsigned *undo);
