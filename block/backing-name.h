/* Backing file names recorded in an image header that are not paths:
 * QEMU's "json:{...}" pseudo names, its legacy "rbd:pool/image:..." names
 * and NBD URIs, turned into the options of the node to open (what QEMU's
 * bdrv_open_backing_file does with them). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "qapi-types.h"

/* True if `name` is a path (relative to the image or absolute), not a json:, rbd: or URI name. */
bool backing_name_is_path(const char *name);
/* The options of the backing node named `name` (not a path) with the
 * header's backing format `fmt` (NULL if none recorded), or NULL with an
 * error that names it: bad JSON, an unknown rbd: option, a format that
 * contradicts the name's driver, or a protocol name without a format
 * (QEMU would probe it; blockd probes only files). */
BlockdevOptions *backing_name_options(const char *name, const char *fmt, GError **errp);
