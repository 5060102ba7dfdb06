/* Errors of the block layer and the jobs above it, as QMP shows them. */
#pragma once

#include <stdbool.h>
#include <glib.h>

/* Sets *errp to a formatted GenericError (G_IO_ERROR_FAILED); returns false. */
bool block_fail(GError **errp, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
