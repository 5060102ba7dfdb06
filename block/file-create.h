/* Regular files as the file driver makes and resizes them (QEMU's
 * file-posix.c raw_co_create and raw_regular_truncate). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "qapi/qapi-types.h"

/* Makes the file `fd` exactly `size` bytes long, allocating what it adds
 * as `prealloc` says (off, falloc, full); QEMU's texts on failure. */
bool file_truncate_fd(int fd, uint64_t size, PreallocMode prealloc, GError **errp);
/* blockdev-create driver=file: creates or empties the file, under QEMU's
 * image locks (write and resize, resize not shared), and sizes it. */
bool file_image_create(const BlockdevCreateOptionsFile *opts, GError **errp);
