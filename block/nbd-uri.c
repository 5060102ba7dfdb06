/* NBD URIs as nbd node options (see nbd-uri.h). */
#include "block/nbd-uri.h"

#include <gio/gio.h>
#include <string.h>

bool nbd_uri_is(const char *s)
{
    return g_str_has_prefix(s, "nbd:") || g_str_has_prefix(s, "nbd+") || g_str_has_prefix(s, "nbds:") ||
           g_str_has_prefix(s, "nbds+");
}

static JsonObject *fail(GError **errp, JsonObject *server, const char *fmt, const char *uri)
{
    json_object_unref(server);
    g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, fmt, uri);
    return NULL;
}

JsonObject *nbd_uri_to_options(const char *uri, GError **errp)
{
    g_autoptr(GError) err = NULL;
    g_autoptr(GUri) u = g_uri_parse(uri, G_URI_FLAGS_ENCODED_QUERY, &err);
    if (!u) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Invalid NBD URI '%s': %s", uri,
                    err->message);
        return NULL;
    }
    const char *scheme = g_uri_get_scheme(u);
    const char *host = g_uri_get_host(u);
    JsonObject *server = json_object_new();
    if (g_str_has_prefix(scheme, "nbds"))
        return fail(errp, server, "NBD URI '%s': TLS needs credentials; add the target with blockdev-add "
                    "and tls-creds, then use blockdev-backup/blockdev-mirror", uri);
    if (strcmp(scheme, "nbd+unix") == 0) {
        const char *query = g_uri_get_query(u);
        g_autoptr(GHashTable) params = query ? g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL)
                                             : NULL;
        const char *sock = params ? g_hash_table_lookup(params, "socket") : NULL;
        if (!sock || (host && *host))
            return fail(errp, server, "NBD URI '%s': nbd+unix needs ?socket=PATH and no host", uri);
        json_object_set_string_member(server, "type", "unix");
        json_object_set_string_member(server, "path", sock);
    } else if (strcmp(scheme, "nbd") == 0 || strcmp(scheme, "nbd+tcp") == 0) {
        if (!host || !*host)
            return fail(errp, server, "NBD URI '%s' has no host", uri);
        g_autofree char *port = g_strdup_printf("%d", g_uri_get_port(u) > 0 ? g_uri_get_port(u) : 10809);
        json_object_set_string_member(server, "type", "inet");
        json_object_set_string_member(server, "host", host);
        json_object_set_string_member(server, "port", port);
    } else {
        return fail(errp, server, "NBD URI '%s': unknown scheme", uri);
    }
    JsonObject *opts = json_object_new();
    json_object_set_string_member(opts, "driver", "nbd");
    json_object_set_object_member(opts, "server", server);
    const char *path = g_uri_get_path(u);
    while (path && *path == '/')
        path++;
    if (path && *path) {
        g_autofree char *export = g_uri_unescape_string(path, NULL);
        json_object_set_string_member(opts, "export", export ? export : path);
    }
    return opts;
}
