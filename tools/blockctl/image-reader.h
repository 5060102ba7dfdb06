/* Reading an image's bytes as they are stored: a local file (pread) or an
 * NBD export (libnbd); for format probing and for restore's verify. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>

typedef struct ImageReader ImageReader;

/* Opens `name`, an NBD URI or a file name, for reading; NULL with *errp set on failure. */
ImageReader *image_reader_open(const char *name, GError **errp);
/* The size in bytes. */
uint64_t image_reader_size(ImageReader *r);
/* Reads `len` bytes at `offset` (within the size); false with *errp set on an error. */
bool image_reader_pread(ImageReader *r, void *buf, size_t len, uint64_t offset, GError **errp);
/* Closes and frees `r`. */
void image_reader_close(ImageReader *r);
/* "qcow2" if the image starts with qcow2's magic, else "raw"; NULL with *errp set if it cannot be read. */
const char *image_reader_probe(ImageReader *r, GError **errp);
