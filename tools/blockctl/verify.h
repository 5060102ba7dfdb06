/* restore --verify: two images compared byte for byte. */
#pragma once

#include <stdbool.h>
#include <glib.h>

/* Compares images `a` and `b` (files or NBD URIs) byte for byte, drawing a
 * progress line; true if they are equal, else false with *errp naming the
 * first differing offset (or the sizes, or what could not be read). */
bool verify_same(const char *a, const char *b, GError **errp);
