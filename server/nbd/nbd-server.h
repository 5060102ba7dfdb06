/* The NBD server: listening sockets and client connections.
 *
 * Accepting runs on the GLib main loop; each connection gets a receive
 * thread and its requests run on a worker pool.  Exports are looked up
 * through server/export.h at handshake time. */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include "objects/authz-simple.h"
#include "objects/tls-creds.h"

typedef struct NbdServer NbdServer;

/* A server with no listeners.  Over max_connections (0: unlimited) clients
 * are told so in the handshake and closed; a client still in the handshake
 * after handshake_max_seconds (0: no limit) is disconnected. */
NbdServer *nbd_server_new(unsigned max_connections, unsigned handshake_max_seconds);
/* Requires TLS with `creds` (server endpoint) from now on, checking client
 * identities with `authz` if not NULL.  The server keeps both acquisitions
 * (objects/objects.h) and releases them when freed. */
void nbd_server_set_tls(NbdServer *srv, TlsCreds *creds, AuthzSimple *authz);
/* True when the server requires TLS. */
bool nbd_server_tls_required(NbdServer *srv);
/* Listens on a Unix socket at `path` (an existing socket file is replaced). */
bool nbd_server_listen_unix(NbdServer *srv, const char *path, GError **errp);
/* Listens on host:port (TCP); port "0" picks a free one. */
bool nbd_server_listen_inet(NbdServer *srv, const char *host, const char *port, GError **errp);
/* Accepts on an already listening socket (systemd socket activation). */
bool nbd_server_listen_fd(NbdServer *srv, int fd, GError **errp);
/* The path of the first Unix-socket listener, or NULL. */
const char *nbd_server_unix_path(NbdServer *srv);
/* The port of the first TCP listener, or 0. */
unsigned nbd_server_port(NbdServer *srv);
/* The NBD URIs clients can use for `export_name`, one per listener. */
GPtrArray *nbd_server_uris(NbdServer *srv, const char *export_name);
/* Stops listening, disconnects every client, waits for their threads, frees. */
void nbd_server_free(NbdServer *srv);
