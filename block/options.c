/* Option values that the schema's types do not check (see block/options.h). */
#include "block/options.h"

#include <errno.h>
#include <string.h>
#include <gio/gio.h>

bool block_option_size(const char *name, int64_t value, uint64_t *out, GError **errp)
{
    if (value < 0) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Parameter '%s' expects a non-negative number below 2^64 "
                    "(optional suffix k, M, G, T, P or E)", name);
        return false;
    }
    *out = (uint64_t)value;
    return true;
}

bool block_parse_size(const char *str, uint64_t *out)
{
    if (!str || !g_ascii_isdigit(str[0]))
        return false;
    errno = 0;
    char *end;
    guint64 value = g_ascii_strtoull(str, &end, 10);
    if (errno != 0)
        return false;
    unsigned shift = 0;
    if (*end) {
        const char *suffixes = "kmgtpe";
        const char *p = strchr(suffixes, g_ascii_tolower(*end));
        if (strcmp(end, "b") == 0 || strcmp(end, "B") == 0)
            shift = 0;
        else if (p && end[1] == '\0')
            shift = 10 * (unsigned)(p - suffixes + 1);
        else
            return false;
    }
    if (shift && value > (UINT64_MAX >> shift))
        return false;
    *out = value << shift;
    return true;
}
