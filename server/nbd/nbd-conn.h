/* One NBD client connection: state shared by the handshake, the
 * transmission phase and the server that owns the connection.
 * Internal to server/nbd/. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <glib.h>
#include "server/export.h"
#include "server/nbd/nbd-io.h"
#include "server/nbd/nbd-server.h"
#include "objects/authz-simple.h"
#include "objects/tls-creds.h"

typedef struct NbdConn {
    NbdServer *srv;
    NbdIo io;
    GThread *thread;
    bool done;                   /* thread finished and fd closed (under the server lock) */
    bool refused;                /* over max-connections: only told why */
    gint64 handshake_deadline;   /* monotonic us; 0 once past the handshake (server lock) */
    bool timed_out;              /* the watchdog cut the handshake (server lock) */
    char *peer;                  /* the client's address, for the log */
    char *refusal;               /* why the handshake last failed (logged if it never succeeds) */

    /* Negotiated during the handshake. */
    bool fixed_newstyle;
    bool no_zeroes;
    bool structured;             /* structured replies (implied by extended headers) */
    bool extended;               /* extended headers */
    Export *meta_export;         /* export named by the last SET_META_CONTEXT (ref) */
    GPtrArray *meta_selected;    /* ExportMetaContext * selected there; id = index + 1 */

    /* Fixed at GO / EXPORT_NAME for the whole transmission phase. */
    Export *exp;                 /* ref */
    ExportClient *exp_client;    /* registration in exp, so deletion can drop us */
    uint64_t size;
    uint16_t eflags;
    uint32_t min_block, preferred_block, max_payload;
} NbdConn;

/* Records why the handshake is failing; the connection logs the last
 * reason once if it ends without reaching transmission. */
void nbd_conn_note_refusal(NbdConn *conn, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* Runs the handshake; true when transmission should start (conn->exp is set). */
bool nbd_handshake(NbdConn *conn);
/* A handshake that answers every option with NBD_REP_ERR_POLICY and `why`
 * (a client over max-connections), then closes. */
void nbd_handshake_refuse(NbdConn *conn, const char *why);
/* Serves requests until the client disconnects (or the socket is shut down). */
void nbd_transmission(NbdConn *conn);
/* Drops negotiated state and references (at the end of a connection). */
void nbd_conn_clear(NbdConn *conn);
/* True once nbd_server_free has started. */
bool nbd_server_shutting_down(NbdServer *srv);
/* The server's TLS credentials (NULL: no TLS); with them TLS is required. */
TlsCreds *nbd_server_tls_creds(NbdServer *srv);
/* The server's tls-authz authorizer, or NULL. */
AuthzSimple *nbd_server_tls_authz(NbdServer *srv);
