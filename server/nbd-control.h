/* The one NBD server that QMP and the command line manage.
 *
 * --nbd-server and nbd-server-start both end up here, so "already running",
 * nbd-server-stop and the URIs printed at start-up all see the same server.
 * Main thread only. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "qapi/qapi-types.h"
#include "server/nbd/nbd-server.h"

/* True while the server runs. */
bool nbd_control_running(void);
/* The running server, or NULL. */
NbdServer *nbd_control_server(void);
/* What nbd-server-start and --nbd-server set besides the address.  TLS:
 * tls_creds names a tls-creds-* object (server endpoint) and tls_authz an
 * authz-simple object; either may be NULL. */
typedef struct NbdServerSettings {
    uint32_t max_connections;        /* 0: unlimited */
    uint32_t handshake_max_seconds;  /* 0: no limit */
    const char *tls_creds, *tls_authz;
} NbdServerSettings;

/* The handshake limit when none is given (QEMU's). */
#define NBD_DEFAULT_HANDSHAKE_MAX_SECONDS 10

/* Starts the server on `addr`; fails with "NBD server already running" if it runs. */
bool nbd_control_start(const SocketAddress *addr, const NbdServerSettings *set, GError **errp);
/* Adds a listener on `addr`, starting the server first if needed (several
 * --nbd-server); a running server must have the same TLS settings. */
bool nbd_control_add_listener(const SocketAddress *addr, const NbdServerSettings *set, GError **errp);
/* Serves an inherited listening socket (socket activation), starting the server if needed. */
bool nbd_control_listen_fd(int fd, GError **errp);
/* Stops listening and disconnects every client; "NBD server not running" if none runs. */
bool nbd_control_stop(GError **errp);
/* Takes over a server the caller started (main.c's start-up listeners); NULL is ignored. */
void nbd_control_adopt(NbdServer *srv);
/* Stops the server if it runs (at exit). */
void nbd_control_shutdown(void);
