/* Errors of the block layer (block/error.h). */
#include "block/error.h"

#include <gio/gio.h>

bool block_fail(GError **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_FAILED, msg);
    return false;
}
