/* The qcow2 format driver (block/drivers/qcow2*.c; qcow2-internal.h is its
 * private part) and image creation. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

/* Sets a G_IO_ERROR error of `code` with a printf-style message (the qcow2 files' shared helper). */
void qcow2_set_error(GError **errp, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* The format of the image file `path` by its first bytes: "qcow2" for
 * qcow2's magic, else "raw" (QEMU's probe for these two); NULL with *err
 * set to the errno when it cannot be read. */
const char *qcow2_probe_format(const char *path, int *err);

/* What a new image looks like (blockdev-create's qcow2 options); zeroes
 * mean the defaults: v3, 64 KiB clusters, 16-bit refcounts. */
typedef struct Qcow2CreateParams {
    uint64_t size;
    const char *backing_file, *backing_format; /* NULL: none */
    uint32_t cluster_size, version, refcount_bits;
    bool lazy_refcounts;
} Qcow2CreateParams;

/* The metadata of a new empty image (header, refcount table and blocks, L1
 * table), *len bytes to write from offset 0 of the image file; NULL with
 * *errp set if the size or backing name do not fit.  The caller checked
 * version, refcount width and lazy refcounts together (QEMU's rules). */
uint8_t *qcow2_create_metadata(const Qcow2CreateParams *p, size_t *len, GError **errp);

/* Creates (or truncates) `path` as an empty qcow2 v3 image of `size` bytes
 * with 16-bit refcounts.  `backing_file` (may be NULL) is recorded as is,
 * with `backing_format` ("raw", "qcow2"; NULL records none) in a header
 * extension.  cluster_size 0 means 64 KiB; otherwise a power of two from
 * 512 bytes to 2 MiB.  Plain POSIX I/O; the result passes qemu-img check. */
bool qcow2_create_image(const char *path, uint64_t size, const char *backing_file,
                        const char *backing_format, uint32_t cluster_size, GError **errp);
