/* TLS credentials objects (tls-creds-x509, tls-creds-psk), loaded with GnuTLS.
 *
 * The files are read and checked once, when the object is created, so that
 * a mistake is reported by object-add / --object and not by the first
 * client.  Server credentials run the server side of TLS sessions for the
 * NBD server; client credentials only describe where their files are (the
 * NBD target node hands them to libnbd). */
#pragma once

#include <stdbool.h>
#include <glib.h>
#include <gnutls/gnutls.h>

typedef struct TlsCreds TlsCreds;

/* What a tls-creds-x509 or tls-creds-psk object is made from (QEMU's
 * properties; the QMP layer fills it, applying QEMU's defaults). */
typedef struct TlsCredsConfig {
    const char *dir;       /* NULL: QEMU's "Missing 'dir' property value" */
    bool server;           /* endpoint=server (QEMU's default is client) */
    bool verify_peer;      /* QEMU's default: true */
    bool sanity_check;     /* x509 only; QEMU's default: true */
    const char *priority;  /* GnuTLS priority string; NULL: QEMU's default */
    const char *username;  /* PSK client only; NULL: "qemu" */
} TlsCredsConfig;

/* Loads X.509 credentials from dir (ca-cert.pem, {server,client}-{cert,key}.pem). */
TlsCreds *tls_creds_new_x509(const TlsCredsConfig *cfg, GError **errp);
/* Loads PSK credentials from dir/keys.psk (username:hexkey lines). */
TlsCreds *tls_creds_new_psk(const TlsCredsConfig *cfg, GError **errp);
/* Frees credentials (no session may still use them). */
void tls_creds_free(TlsCreds *creds);

/* True for endpoint=server. */
bool tls_creds_is_server(const TlsCreds *creds);
/* True for tls-creds-psk, false for tls-creds-x509. */
bool tls_creds_is_psk(const TlsCreds *creds);
/* Whether the peer's credentials are checked (verify-peer). */
bool tls_creds_verify_peer(const TlsCreds *creds);
/* The credentials directory. */
const char *tls_creds_dir(const TlsCreds *creds);
/* PSK only: the path of keys.psk. */
const char *tls_creds_psk_file(const TlsCreds *creds);
/* PSK client only: the username presented to the server. */
const char *tls_creds_username(const TlsCreds *creds);

/* Runs the server side of a TLS handshake on fd (blocking, bounded by a
 * timeout); the session, or NULL and an error naming the cause. */
gnutls_session_t tls_creds_server_handshake(TlsCreds *creds, int fd, GError **errp);
/* The peer's identity: its certificate's distinguished name in QEMU's order
 * (C=GB,O=Example,CN=client1) or its PSK username; NULL if it has none. */
char *tls_session_peer_identity(gnutls_session_t session);
