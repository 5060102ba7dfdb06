/* The QMP/CLI-managed NBD server (see nbd-control.h). */
#include "server/nbd-control.h"
#include "server/qmp/qapi-runtime.h"

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

bool nbd_control_add_listener(const SocketAddress *addr, uint32_t max_connections, GError **errp)
{
    bool created = !server;
    if (created)
        server = nbd_server_new(max_connections);
    if (listen_on(addr, errp))
        return true;
    if (created) {
        nbd_server_free(server);
        server = NULL;
    }
    return false;
}

bool nbd_control_start(const SocketAddress *addr, uint32_t max_connections, GError **errp)
{
    if (server) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "NBD server already running");
        return false;
    }
    return nbd_control_add_listener(addr, max_connections, errp);
}

bool nbd_control_listen_fd(int fd, GError **errp)
{
    if (!server)
        server = nbd_server_new(0);
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
}
