/* TLS credentials objects (see tls-creds.h).  File names, defaults and
 * priorities follow QEMU's crypto/tlscreds*.c so the same directories work
 * for QEMU, libnbd and blockd. */
#include "objects/tls-creds.h"

#include <gio/gio.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <gnutls/x509.h>

#define X509_PRIORITY_DEFAULT "NORMAL"
#define PSK_PRIORITY_DEFAULT  "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"
#define PSK_USERNAME_DEFAULT  "qemu"
/* A client that stalls in the handshake gives up its connection slot after this. */
#define HANDSHAKE_TIMEOUT_MS  (30 * 1000)

struct TlsCreds {
    bool psk;
    bool server;
    bool verify_peer;
    char *dir;
    char *psk_file;                  /* PSK: dir/keys.psk */
    char *username;                  /* PSK client */
    gnutls_priority_t priority;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    GHashTable *psk_keys;            /* PSK server: username -> GBytes key */
    gnutls_psk_client_credentials_t psk_client;
};

G_GNUC_PRINTF(2, 3)
static void set_error(GError **errp, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(errp, G_IO_ERROR, G_IO_ERROR_FAILED, msg);
}

/* dir/name if it is readable; NULL (no error) if absent and optional. */
static bool credential_path(const char *dir, const char *name, bool required, char **path,
                            GError **errp)
{
    g_autofree char *p = g_build_filename(dir, name, NULL);
    if (access(p, R_OK) == 0) {
        /* access() says yes to root for any file: really open it. */
        FILE *f = fopen(p, "r");
        if (f) {
            fclose(f);
            *path = g_steal_pointer(&p);
            return true;
        }
    }
    if (errno == ENOENT && !required) {
        *path = NULL;
        return true;
    }
    set_error(errp, "Unable to access credentials %s: %s", p, g_strerror(errno));
    return false;
}

static bool set_priority(TlsCreds *c, const char *priority, GError **errp)
{
    const char *err_pos = NULL;
    int r = gnutls_priority_init(&c->priority, priority, &err_pos);
    if (r < 0) {
        c->priority = NULL;
        set_error(errp, "Unable to set TLS session priority %s: %s", priority, gnutls_strerror(r));
        return false;
    }
    return true;
}

void tls_creds_free(TlsCreds *c)
{
    if (!c)
        return;
    if (c->priority)
        gnutls_priority_deinit(c->priority);
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    if (c->psk_server)
        gnutls_psk_free_server_credentials(c->psk_server);
    if (c->psk_client)
        gnutls_psk_free_client_credentials(c->psk_client);
    if (c->psk_keys)
        g_hash_table_unref(c->psk_keys);
    g_free(c->dir);
    g_free(c->psk_file);
    g_free(c->username);
    g_free(c);
}

/* ---- X.509 ---- */

/* Reads every certificate of a PEM file. */
static bool load_certificates(const char *path, gnutls_x509_crt_t **certs, unsigned *n,
                              GError **errp)
{
    g_autofree char *data = NULL;
    gsize len;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &data, &len, &err)) {
        set_error(errp, "Unable to read %s: %s", path, err->message);
        return false;
    }
    gnutls_datum_t datum = { .data = (unsigned char *)data, .size = (unsigned)len };
    int r = gnutls_x509_crt_list_import2(certs, n, &datum, GNUTLS_X509_FMT_PEM, 0);
    if (r < 0) {
        set_error(errp, "Unable to import certificate %s: %s", path, gnutls_strerror(r));
        return false;
    }
    if (*n == 0) {
        set_error(errp, "No certificate found in %s", path);
        return false;
    }
    return true;
}

static void free_certificates(gnutls_x509_crt_t *certs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(certs[i]);
    gnutls_free(certs);
}

static bool check_times(gnutls_x509_crt_t cert, const char *path, GError **errp)
{
    time_t now = time(NULL);
    if (gnutls_x509_crt_get_expiration_time(cert) < now) {
        set_error(errp, "The certificate %s has expired", path);
        return false;
    }
    if (gnutls_x509_crt_get_activation_time(cert) > now) {
        set_error(errp, "The certificate %s is not yet active", path);
        return false;
    }
    return true;
}

/* QEMU's sanity-check: both certificates are current and ours is signed by the CA. */
static bool sanity_check(const char *ca_path, const char *cert_path, GError **errp)
{
    gnutls_x509_crt_t *cas = NULL, *certs = NULL;
    unsigned n_cas = 0, n_certs = 0;
    bool ok = load_certificates(ca_path, &cas, &n_cas, errp);
    for (unsigned i = 0; ok && i < n_cas; i++)
        ok = check_times(cas[i], ca_path, errp);
    if (ok && cert_path) {
        ok = load_certificates(cert_path, &certs, &n_certs, errp) &&
             check_times(certs[0], cert_path, errp);
        unsigned status = 0;
        if (ok && (gnutls_x509_crt_list_verify(certs, n_certs, cas, n_cas, NULL, 0, 0, &status) < 0 ||
                   status != 0)) {
            set_error(errp, "The certificate %s is not signed by the CA in %s", cert_path, ca_path);
            ok = false;
        }
    }
    free_certificates(cas, n_cas);
    free_certificates(certs, n_certs);
    return ok;
}

TlsCreds *tls_creds_new_x509(const TlsCredsConfig *p, GError **errp)
{
    if (!p->dir) {
        set_error(errp, "Missing 'dir' property value");
        return NULL;
    }
    TlsCreds *c = g_new0(TlsCreds, 1);
    c->server = p->server;
    c->verify_peer = p->verify_peer;
    c->dir = g_strdup(p->dir);
    const char *cert_name = c->server ? "server-cert.pem" : "client-cert.pem";
    const char *key_name = c->server ? "server-key.pem" : "client-key.pem";
    g_autofree char *ca = NULL, *crl = NULL, *cert = NULL, *key = NULL;
    int r;
    /* A client without a certificate of its own is fine (QEMU's rule). */
    if (!credential_path(c->dir, "ca-cert.pem", true, &ca, errp) ||
        !credential_path(c->dir, "ca-crl.pem", false, &crl, errp) ||
        !credential_path(c->dir, cert_name, c->server, &cert, errp) ||
        !credential_path(c->dir, key_name, c->server || cert, &key, errp))
        goto fail;
    if (p->sanity_check && !sanity_check(ca, cert, errp))
        goto fail;
    if (!set_priority(c, p->priority ? p->priority : X509_PRIORITY_DEFAULT, errp))
        goto fail;
    gnutls_certificate_allocate_credentials(&c->x509);
    if ((r = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM)) < 0) {
        set_error(errp, "Cannot load CA certificate %s: %s", ca, gnutls_strerror(r));
        goto fail;
    }
    if (crl && (r = gnutls_certificate_set_x509_crl_file(c->x509, crl, GNUTLS_X509_FMT_PEM)) < 0) {
        set_error(errp, "Cannot load CRL %s: %s", crl, gnutls_strerror(r));
        goto fail;
    }
    if (cert && (r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM)) < 0) {
        set_error(errp, "Cannot load certificate %s and key %s: %s", cert, key, gnutls_strerror(r));
        goto fail;
    }
    if (c->server)
        gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);
    return c;
fail:
    tls_creds_free(c);
    return NULL;
}

/* ---- PSK ---- */

/* The key of `username` in a keys.psk file, as hex. */
static char *lookup_psk(const char *path, const char *username, GError **errp)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &data, NULL, &err)) {
        set_error(errp, "Unable to read %s: %s", path, err->message);
        return NULL;
    }
    g_auto(GStrv) lines = g_strsplit(data, "\n", -1);
    size_t ulen = strlen(username);
    for (char **l = lines; *l; l++) {
        if (strncmp(*l, username, ulen) == 0 && (*l)[ulen] == ':')
            return g_strchomp(g_strdup(*l + ulen + 1));
    }
    set_error(errp, "Username %s not found in PSK file %s", username, path);
    return NULL;
}

/* Every username:hexkey line of a keys.psk file. */
static GHashTable *load_psk_file(const char *path, GError **errp)
{
    g_autofree char *data = NULL;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &data, NULL, &err)) {
        set_error(errp, "Unable to read %s: %s", path, err->message);
        return NULL;
    }
    GHashTable *keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                             (GDestroyNotify)g_bytes_unref);
    g_auto(GStrv) lines = g_strsplit(data, "\n", -1);
    for (unsigned n = 0; lines[n]; n++) {
        char *line = g_strstrip(lines[n]);
        char *colon = strchr(line, ':');
        size_t hexlen = colon ? strlen(colon + 1) : 0;
        if (!*line)
            continue;
        if (!colon || colon == line || hexlen == 0 || hexlen % 2) {
            set_error(errp, "%s line %u: expected username:hexkey", path, n + 1);
            g_hash_table_unref(keys);
            return NULL;
        }
        guint8 *key = g_malloc(hexlen / 2);
        for (size_t i = 0; i < hexlen / 2; i++) {
            int hi = g_ascii_xdigit_value(colon[1 + 2 * i]), lo = g_ascii_xdigit_value(colon[2 + 2 * i]);
            if (hi < 0 || lo < 0) {
                set_error(errp, "%s line %u: the key is not hexadecimal", path, n + 1);
                g_free(key);
                g_hash_table_unref(keys);
                return NULL;
            }
            key[i] = (guint8)(hi << 4 | lo);
        }
        g_hash_table_replace(keys, g_strndup(line, colon - line), g_bytes_new_take(key, hexlen / 2));
    }
    return keys;
}

/* What a PSK handshake learnt about the client, for the error message. */
typedef struct PskLookup {
    TlsCreds *creds;
    char *username;
    bool known;
} PskLookup;

static int psk_server_key(gnutls_session_t s, const gnutls_datum_t *username, gnutls_datum_t *key)
{
    PskLookup *lookup = gnutls_session_get_ptr(s);
    if (!lookup)
        return -1;  /* only asked during our handshake */
    g_free(lookup->username);
    lookup->username = g_strndup((const char *)username->data, username->size);
    GBytes *k = g_hash_table_lookup(lookup->creds->psk_keys, lookup->username);
    lookup->known = k != NULL;
    if (!k)
        return -1;
    gsize len;
    const void *bytes = g_bytes_get_data(k, &len);
    key->data = gnutls_malloc(len);
    if (!key->data)
        return -1;
    memcpy(key->data, bytes, len);
    key->size = (unsigned)len;
    return 0;
}

TlsCreds *tls_creds_new_psk(const TlsCredsConfig *p, GError **errp)
{
    if (!p->dir) {
        set_error(errp, "Missing 'dir' property value");
        return NULL;
    }
    TlsCreds *c = g_new0(TlsCreds, 1);
    c->psk = true;
    c->server = p->server;
    c->verify_peer = p->verify_peer;
    c->dir = g_strdup(p->dir);
    if (!credential_path(c->dir, "keys.psk", true, &c->psk_file, errp) ||
        !set_priority(c, p->priority ? p->priority : PSK_PRIORITY_DEFAULT, errp))
        goto fail;
    int r;
    if (c->server) {
        /* Keys are looked up by our own function so a failed handshake
         * can say whose key it was. */
        if (!(c->psk_keys = load_psk_file(c->psk_file, errp)))
            goto fail;
        gnutls_psk_allocate_server_credentials(&c->psk_server);
        gnutls_psk_set_server_credentials_function2(c->psk_server, psk_server_key);
        gnutls_psk_set_server_known_dh_params(c->psk_server, GNUTLS_SEC_PARAM_MEDIUM);
    } else {
        c->username = g_strdup(p->username ? p->username : PSK_USERNAME_DEFAULT);
        g_autofree char *hex = lookup_psk(c->psk_file, c->username, errp);
        if (!hex)
            goto fail;
        gnutls_datum_t key = { .data = (unsigned char *)hex, .size = (unsigned)strlen(hex) };
        gnutls_psk_allocate_client_credentials(&c->psk_client);
        if ((r = gnutls_psk_set_client_credentials(c->psk_client, c->username, &key,
                                                   GNUTLS_PSK_KEY_HEX)) < 0) {
            set_error(errp, "Cannot use the PSK of %s in %s: %s", c->username, c->psk_file,
                      gnutls_strerror(r));
            goto fail;
        }
    }
    return c;
fail:
    tls_creds_free(c);
    return NULL;
}

/* ---- accessors ---- */

bool tls_creds_is_server(const TlsCreds *c) { return c->server; }
bool tls_creds_is_psk(const TlsCreds *c) { return c->psk; }
bool tls_creds_verify_peer(const TlsCreds *c) { return c->verify_peer; }
const char *tls_creds_dir(const TlsCreds *c) { return c->dir; }
const char *tls_creds_psk_file(const TlsCreds *c) { return c->psk_file; }
const char *tls_creds_username(const TlsCreds *c) { return c->username; }

/* ---- sessions ---- */

/* Why a handshake failed, with the certificate verdict when there is one. */
static void set_handshake_error(gnutls_session_t s, int r, const PskLookup *psk, GError **errp)
{
    if (psk && psk->username && !psk->known) {
        set_error(errp, "unknown PSK username '%s'", psk->username);
        return;
    }
    if (psk && psk->username) {
        set_error(errp, "TLS handshake with PSK user '%s' failed (wrong key?): %s", psk->username,
                  gnutls_strerror(r));
        return;
    }
    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t out = { 0 };
        unsigned status = gnutls_session_get_verify_cert_status(s);
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
            set_error(errp, "client certificate rejected: %s", (const char *)out.data);
            gnutls_free(out.data);
            return;
        }
    }
    set_error(errp, "TLS handshake failed: %s", gnutls_strerror(r));
}

gnutls_session_t tls_creds_server_handshake(TlsCreds *c, int fd, GError **errp)
{
    g_return_val_if_fail(c->server, NULL);
    gnutls_session_t s;
    int r = gnutls_init(&s, GNUTLS_SERVER);
    if (r < 0) {
        set_error(errp, "Cannot start a TLS session: %s", gnutls_strerror(r));
        return NULL;
    }
    gnutls_priority_set(s, c->priority);
    PskLookup psk = { .creds = c };
    if (c->psk) {
        gnutls_session_set_ptr(s, &psk);
        gnutls_credentials_set(s, GNUTLS_CRD_PSK, c->psk_server);
    } else {
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->x509);
        if (c->verify_peer) {
            /* The handshake itself fails for a missing or untrusted certificate. */
            gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
            gnutls_session_set_verify_cert(s, NULL, 0);
        }
    }
    gnutls_transport_set_int(s, fd);
    gnutls_handshake_set_timeout(s, HANDSHAKE_TIMEOUT_MS);
    do {
        r = gnutls_handshake(s);
    } while (r < 0 && !gnutls_error_is_fatal(r));
    gnutls_session_set_ptr(s, NULL);
    if (r < 0)
        set_handshake_error(s, r, c->psk ? &psk : NULL, errp);
    g_free(psk.username);
    if (r < 0) {
        gnutls_deinit(s);
        return NULL;
    }
    return s;
}

char *tls_session_peer_identity(gnutls_session_t s)
{
    if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
        const char *user = gnutls_psk_server_get_username(s);
        return user ? g_strdup(user) : NULL;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);
    if (!certs || n == 0)
        return NULL;
    gnutls_x509_crt_t cert;
    if (gnutls_x509_crt_init(&cert) < 0)
        return NULL;
    char *identity = NULL;
    gnutls_datum_t dn = { 0 };
    /* get_dn2 keeps the certificate's own order, which is what QEMU matches. */
    if (gnutls_x509_crt_import(cert, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn2(cert, &dn) == 0) {
        identity = g_strndup((const char *)dn.data, dn.size);
        gnutls_free(dn.data);
    }
    gnutls_x509_crt_deinit(cert);
    return identity;
}
