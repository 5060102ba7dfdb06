/* secret (see secret.h). */
#include "objects/secret.h"

#include <gio/gio.h>
#include <string.h>

struct Secret {
    guchar *bytes;
    gsize len;
};

/* QEMU's qbase64_decode refuses anything but the base64 alphabet and
 * newlines (a key file usually ends with one). */
static bool base64_valid(const char *text)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n";
    return strspn(text, alphabet) == strlen(text);
}

Secret *secret_new(const char *data, const char *file, bool base64, GError **errp)
{
    if (data && file) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "'file' and 'data' are mutually exclusive");
        return NULL;
    }
    if (!data && !file) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Either 'file' or 'data' must be provided");
        return NULL;
    }
    g_autofree char *contents = NULL;
    gsize len = data ? strlen(data) : 0;
    if (file) {
        GError *err = NULL;
        if (!g_file_get_contents(file, &contents, &len, &err)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_FAILED, "Unable to read %s: %s", file, err->message);
            g_error_free(err);
            return NULL;
        }
    }
    const char *text = data ? data : contents;
    Secret *s = g_new0(Secret, 1);
    if (base64) {
        if (memchr(text, '\0', len) || !base64_valid(text)) {
            g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "Base64 data contains invalid characters");
            g_free(s);
            return NULL;
        }
        s->bytes = g_base64_decode(text, &s->len);
    } else {
        s->bytes = g_memdup2(text, len);
        s->len = len;
    }
    if (contents)
        memset(contents, 0, len);
    return s;
}

void secret_free(Secret *s)
{
    if (!s)
        return;
    if (s->bytes)
        memset(s->bytes, 0, s->len);
    g_free(s->bytes);
    g_free(s);
}

char *secret_to_base64(const Secret *s)
{
    return g_base64_encode(s->bytes, s->len);
}
