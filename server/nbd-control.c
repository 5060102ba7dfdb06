/* The QMP/CLI-managed NBD server (see nbd-control.h). */
#include "server/nbd-control.h"
#include "server/qmp/qapi-runtime.h"
#include "objects/objects.h"

#include <stdlib.h>

static NbdServer *server;

bool nbd_control_running(void)
{
    return server != NULL;
}

NbdServer *nbd_control_server(void)
{
    return server;
}

static bool listen_on(const SocketAddress *addr, GError **errp)
{
    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        return nbd_server_listen_unix(server, addr->u.q_unix.path, errp);
    case SOCKET_ADDRESS_TYPE_INET:
        return nbd_server_listen_inet(server, addr->u.inet.host, addr->u.inet.port, errp);
    case SOCKET_ADDRESS_TYPE_FD: {
        gint64 fd;
        if (!g_ascii_string_to_signed(addr->u.fd.str, 10, 0, G_MAXINT, &fd, NULL)) {
            g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                        "Parameter 'addr.str' expects a file descriptor number, not '%s'",
                        addr->u.fd.str);
            return false;
        }
        return nbd_server_listen_fd(server, (int)fd, errp);
    }
    default:
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "Unsupported socket address type");
        return false;
    }
}

/* The ids of the running server's TLS objects (NULL: none). */
static char *server_tls_creds, *server_tls_authz;

/* A new server that requires TLS when tls_creds is set. */
static NbdServer *new_server(const NbdServerSettings *set, GError **errp)
{
    const char *tls_creds = set->tls_creds, *tls_authz = set->tls_authz;
    if (tls_authz && !tls_creds) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "'tls-authz' requires 'tls-creds'");
        return NULL;
    }
    TlsCreds *creds = NULL;
    AuthzSimple *authz = NULL;
    if (tls_creds && !(creds = object_acquire_tls_creds(tls_creds, true, errp)))
        return NULL;
    if (tls_authz && !(authz = object_acquire_authz(tls_authz, errp))) {
        object_release_tls_creds(creds);
        return NULL;
    }
    NbdServer *srv = nbd_server_new(set->max_connections, set->handshake_max_seconds);
    if (creds)
        nbd_server_set_tls(srv, creds, authz);
    server_tls_creds = g_strdup(tls_creds);
    server_tls_authz = g_strdup(tls_authz);
    return srv;
}

bool nbd_control_add_listener(const SocketAddress *addr, const NbdServerSettings *set, GError **errp)
{
    bool created = !server;
    if (created) {
        server = new_server(set, errp);
        if (!server)
            return false;
    } else if ((set->tls_creds && g_strcmp0(set->tls_creds, server_tls_creds) != 0) ||
               (set->tls_authz && g_strcmp0(set->tls_authz, server_tls_authz) != 0)) {
        /* One server, one TLS policy: a listener cannot weaken or change it. */
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC,
                    "the NBD server already runs with other TLS settings");
        return false;
    }
    if (listen_on(addr, errp))
        return true;
    if (created)
        nbd_control_shutdown();
    return false;
}

bool nbd_control_start(const SocketAddress *addr, const NbdServerSettings *set, GError **errp)
{
    if (server) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "NBD server already running");
        return false;
    }
    return nbd_control_add_listener(addr, set, errp);
}

bool nbd_control_listen_fd(int fd, GError **errp)
{
    if (!server)
        server = nbd_server_new(0, NBD_DEFAULT_HANDSHAKE_MAX_SECONDS);
    return nbd_server_listen_fd(server, fd, errp);
}

void nbd_control_adopt(NbdServer *srv)
{
    if (srv && !server)
        server = srv;
}

bool nbd_control_stop(GError **errp)
{
    if (!server) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "NBD server not running");
        return false;
    }
    nbd_control_shutdown();
    return true;
}

void nbd_control_shutdown(void)
{
    if (server)
        nbd_server_free(server);
    server = NULL;
    g_clear_pointer(&server_tls_creds, g_free);
    g_clear_pointer(&server_tls_authz, g_free);
}
