/* Option values that the schema's types do not check.
 *
 * Node options arrive parsed into the generated structs (qapi/qapi-types.h,
 * BlockdevOptions): names, types and keyval strings ("on", "1G") are the
 * generated parser's business.  What is left is QEMU's reading of some
 * 'int' members as sizes, and size strings for blockctl's own options. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

/* A size that the schema declares as 'int' (QEMU reads it as a size): false
 * with QEMU's "Parameter 'NAME' expects a non-negative number ..." if negative. */
bool block_option_size(const char *name, int64_t value, uint64_t *out, GError **errp);
/* Parses a size string with an optional k/M/G/T/P/E suffix (powers of 1024); false if invalid. */
bool block_parse_size(const char *str, uint64_t *out);
