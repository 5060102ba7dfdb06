/* QMP NBD server and export commands: nbd-server-start/stop, block-export-add/
 * del, query-block-exports, and the legacy nbd-server-add/remove.
 * Thin: they call server/nbd-control.h and server/export.h. */
#include "server/qmp/commands.h"
#include "server/export.h"
#include "bitmaps/dirty-bitmap.h"
#include "server/nbd-control.h"
#include "qapi/qapi-commands.h"

/* Resolves the export's `bitmaps` with QEMU's messages and checks; a
 * plain name is a bitmap of the exported node. */
static bool resolve_bitmaps(BlockExportOptions *o, GPtrArray *out, GError **errp)
{
    BlockNode *node = node_find(o->node_name);
    if (!node)
        return true; /* export_add reports the missing node */
    for (BlockDirtyBitmapOrStrList *l = o->u.nbd.bitmaps; l; l = l->next) {
        DirtyBitmap *bm;
        if (l->value->type == QAPI_QTYPE_QSTRING) {
            bm = dirty_bitmap_find(node, l->value->u.local);
            if (!bm) {
                g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Bitmap '%s' is not found",
                            l->value->u.local);
                return false;
            }
        } else {
            bm = dirty_bitmap_lookup(l->value->u.external->node, l->value->u.external->name, NULL, errp);
            if (!bm)
                return false;
        }
        if (!export_check_bitmap(bm, o->node_name, o->has_writable && o->writable, errp))
            return false;
        g_ptr_array_add(out, bm);
    }
    return true;
}

bool qmp_block_export_add_options(BlockExportOptions *o, GError **errp)
{
    g_autoptr(GPtrArray) bitmaps = g_ptr_array_new();
    if (o->u.nbd.has_bitmaps && !resolve_bitmaps(o, bitmaps, errp))
        return false;
    ExportConfig cfg = {
        .id = o->id,
        .node_name = o->node_name,
        .name = o->u.nbd.has_name ? o->u.nbd.name : NULL,
        .description = o->u.nbd.has_description ? o->u.nbd.description : NULL,
        .writable = o->has_writable && o->writable,
        .bitmaps = (DirtyBitmap *const *)bitmaps->pdata,
        .nbitmaps = bitmaps->len,
        .allocation_depth = o->u.nbd.has_allocation_depth && o->u.nbd.allocation_depth,
    };
    return export_add(&cfg, errp) != NULL;
}

static bool require_server(GError **errp)
{
    if (nbd_control_running())
        return true;
    g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "NBD server not running");
    return false;
}

bool qmp_block_export_add(QmpSession *session, BlockExportOptions *args, GError **errp)
{
    return require_server(errp) && qmp_block_export_add_options(args, errp);
}

/* Main loop: announces that an export is really gone. */
static gboolean send_export_deleted(gpointer opaque)
{
    q_obj_BLOCK_EXPORT_DELETED_arg data = { .id = opaque };
    qapi_event_send_block_export_deleted(&data);
    return G_SOURCE_REMOVE;
}

/* Any thread (the last client's, usually): hands the event to the main loop. */
static void on_export_deleted(const char *id, void *opaque)
{
    g_main_context_invoke_full(NULL, G_PRIORITY_DEFAULT, send_export_deleted, g_strdup(id), g_free);
}

/* Deletes an export as QEMU: `safe` refuses while clients are connected,
 * `hard` disconnects them; BLOCK_EXPORT_DELETED follows once it is gone. */
static bool delete_export(const char *id, bool has_mode, BlockExportRemoveMode mode, GError **errp)
{
    return export_delete(id, has_mode ? mode : BLOCK_EXPORT_REMOVE_MODE_SAFE, on_export_deleted, NULL, errp);
}

bool qmp_block_export_del(QmpSession *session, q_obj_block_export_del_arg *args, GError **errp)
{
    return delete_export(args->id, args->has_mode, args->mode, errp);
}

bool qmp_query_block_exports(QmpSession *session, BlockExportInfoList **ret, GError **errp)
{
    /* QEMU lists the newest export first: prepend in creation order. */
    g_autoptr(GPtrArray) exports = export_status_list();
    BlockExportInfoList *head = NULL;
    for (guint i = 0; i < exports->len; i++) {
        ExportStatus *st = exports->pdata[i];
        BlockExportInfoList *e = g_new0(BlockExportInfoList, 1);
        e->value = g_new0(BlockExportInfo, 1);
        e->value->id = g_strdup(st->id);
        e->value->type = BLOCK_EXPORT_TYPE_NBD;
        e->value->node_name = g_strdup(st->node_name);
        e->value->shutting_down = st->shutting_down;
        e->next = head;
        head = e;
    }
    *ret = head;
    return true;
}

/* The flat address of the command line from QMP's legacy {type, data} form. */
static SocketAddress *address_from_legacy(const SocketAddressLegacy *l)
{
    SocketAddress *a = g_new0(SocketAddress, 1);
    a->type = (SocketAddressType)l->type;
    switch (l->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        a->u.q_unix.path = g_strdup(l->u.q_unix.data->path);
        break;
    case SOCKET_ADDRESS_TYPE_INET:
        a->u.inet.host = g_strdup(l->u.inet.data->host);
        a->u.inet.port = g_strdup(l->u.inet.data->port);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        a->u.fd.str = g_strdup(l->u.fd.data->str);
        break;
    default:
        break;
    }
    return a;
}

bool qmp_nbd_server_start(QmpSession *session, q_obj_nbd_server_start_arg *args, GError **errp)
{
    g_autoptr(SocketAddress) addr = address_from_legacy(args->addr);
    NbdServerSettings set = {
        .max_connections = args->has_max_connections ? args->max_connections : 0,
        .handshake_max_seconds = args->has_handshake_max_seconds ? args->handshake_max_seconds
                                                                 : NBD_DEFAULT_HANDSHAKE_MAX_SECONDS,
        .tls_creds = args->has_tls_creds ? args->tls_creds : NULL,
        .tls_authz = args->has_tls_authz ? args->tls_authz : NULL,
    };
    return nbd_control_start(addr, &set, errp);
}

bool qmp_nbd_server_stop(QmpSession *session, GError **errp)
{
    if (!require_server(errp))
        return false;
    /* As QEMU: stopping the server closes every NBD export. */
    g_autoptr(GPtrArray) exports = export_list();
    for (guint i = 0; i < exports->len; i++)
        delete_export(export_id(exports->pdata[i]), true, BLOCK_EXPORT_REMOVE_MODE_HARD, NULL);
    return nbd_control_stop(errp);
}

bool qmp_nbd_server_add(QmpSession *session, q_obj_nbd_server_add_arg *args, GError **errp)
{
    if (!require_server(errp))
        return false;
    const char *name = args->has_name ? args->name : args->device;
    BlockExportOptions o = {
        .type = BLOCK_EXPORT_TYPE_NBD,
        .id = (char *)name,
        .node_name = args->device,
        .has_writable = args->has_writable,
        .writable = args->writable,
        .u.nbd = { .has_name = true, .name = (char *)name,
                   .has_description = args->has_description, .description = args->description },
    };
    return qmp_block_export_add_options(&o, errp);
}

bool qmp_nbd_server_remove(QmpSession *session, q_obj_nbd_server_remove_arg *args, GError **errp)
{
    return delete_export(args->name, args->has_mode, args->mode, errp);
}
