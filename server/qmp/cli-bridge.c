/* The command-line options as front ends of the QMP code paths (commands.h):
 * the same generated parsers, in keyval mode, then the same functions. */
#include "server/qmp/commands.h"
#include "server/nbd-control.h"

static JsonNode *wrap(JsonObject *opts)
{
    return json_node_init_object(json_node_alloc(), opts);
}

bool qmp_cli_blockdev(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = true };
    g_autoptr(BlockdevOptions) o = NULL;
    JsonNode *node = wrap(opts);
    bool ok = qapi_in_BlockdevOptions(&in, "", node, &o, errp) && qmp_blockdev_add_options(o, errp);
    json_node_unref(node);
    return ok;
}

bool qmp_cli_export(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = true };
    g_autoptr(BlockExportOptions) o = NULL;
    JsonNode *node = wrap(opts);
    bool ok = qapi_in_BlockExportOptions(&in, "", node, &o, errp) &&
              qmp_block_export_add_options(o, errp);
    json_node_unref(node);
    return ok;
}

bool qmp_cli_nbd_server(JsonObject *opts, GError **errp)
{
    QapiIn in = { .keyval = true };
    g_autoptr(NbdServerOptions) o = NULL;
    JsonNode *node = wrap(opts);
    bool ok = qapi_in_NbdServerOptions(&in, "", node, &o, errp);
    if (ok) {
        NbdServerSettings set = {
            .max_connections = o->has_max_connections ? o->max_connections : 0,
            .handshake_max_seconds = o->has_handshake_max_seconds ? o->handshake_max_seconds
                                                                  : NBD_DEFAULT_HANDSHAKE_MAX_SECONDS,
            .tls_creds = o->has_tls_creds ? o->tls_creds : NULL,
            .tls_authz = o->has_tls_authz ? o->tls_authz : NULL,
        };
        ok = nbd_control_add_listener(o->addr, &set, errp);
    }
    json_node_unref(node);
    return ok;
}
