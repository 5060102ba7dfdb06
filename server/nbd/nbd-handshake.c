/* Fixed newstyle handshake and option haggling (reference §2-§4).
 *
 * Runs on the connection's thread with blocking I/O.  Option data is parsed
 * by the pure functions of nbd-wire.c; this file decides the replies. */
#define G_LOG_DOMAIN "blockd-nbd"
#include "server/nbd/nbd-conn.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include "server/nbd/nbd-wire.h"
#include "objects/objects.h"

typedef enum {
    OPT_CONTINUE,   /* keep haggling */
    OPT_TRANSMIT,   /* haggling is over: enter transmission */
    OPT_CLOSE,      /* close the connection */
} OptResult;

static bool send_reply(NbdConn *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
    uint8_t hdr[20];
    nbd_put64(hdr, NBD_REP_MAGIC);
    nbd_put32(hdr + 8, opt);
    nbd_put32(hdr + 12, type);
    nbd_put32(hdr + 16, (uint32_t)len);
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)data, .iov_len = len },
    };
    return nbd_io_writev(&c->io, iov, len ? 2 : 1, false) == 0;
}

void nbd_conn_note_refusal(NbdConn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(c->refusal);
    c->refusal = g_strdup_vprintf(fmt, ap);
    va_end(ap);
}

/* An error reply with a message (clients log it; so do we, should the
 * client give up after it). */
G_GNUC_PRINTF(4, 5)
static OptResult send_error(NbdConn *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    if (type != NBD_REP_ERR_SHUTDOWN)
        nbd_conn_note_refusal(c, "%s", msg);
    size_t len = strnlen(msg, NBD_MAX_STRING);
    return send_reply(c, opt, type, msg, len) ? OPT_CONTINUE : OPT_CLOSE;
}

static OptResult send_ack(NbdConn *c, uint32_t opt)
{
    return send_reply(c, opt, NBD_REP_ACK, NULL, 0) ? OPT_CONTINUE : OPT_CLOSE;
}

static void clear_meta_selection(NbdConn *c)
{
    g_clear_pointer(&c->meta_selected, g_ptr_array_unref);
    g_clear_pointer(&c->meta_export, export_unref);
}

void nbd_conn_clear(NbdConn *c)
{
    clear_meta_selection(c);
    g_clear_pointer(&c->refusal, g_free);
    if (c->exp_client) {
        export_client_unregister(c->exp, c->exp_client);
        c->exp_client = NULL;
    }
    g_clear_pointer(&c->exp, export_unref);
}

/* Called by a hard block-export-del (under the export lock): the transmission
 * loop then sees EOF and the connection ends. */
static void disconnect_client(void *opaque)
{
    NbdConn *c = opaque;
    nbd_io_shutdown(&c->io, SHUT_RDWR);
}

/* Whether the client has closed its end (it is about to be torn down). */
static bool client_peer_gone(void *opaque)
{
    NbdConn *c = opaque;
    struct pollfd pfd = { .fd = c->io.fd, .events = POLLRDHUP };
    return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Fixes the transmission parameters for `exp` (same answer for INFO and GO). */
static void describe_export(NbdConn *c, Export *exp, uint16_t *eflags, uint32_t *min,
                            uint32_t *pref, uint32_t *max)
{
    const NodeCaps *caps = export_caps(exp);
    *eflags = nbd_compute_eflags(caps, export_read_only(exp), c->structured);
    nbd_compute_block_sizes(caps, min, pref, max);
}

/* Takes ownership of `exp` and leaves haggling for it. */
static void enter_transmission(NbdConn *c, Export *exp)
{
    c->exp = exp;
    c->exp_client = export_client_register(exp, disconnect_client, client_peer_gone, c);
    c->size = export_size(exp);
    describe_export(c, exp, &c->eflags, &c->min_block, &c->preferred_block, &c->max_payload);
    /* A selection made for another export is void (§3.5). */
    if (c->meta_export != exp)
        clear_meta_selection(c);
}

static OptResult opt_export_name(NbdConn *c, const uint8_t *data, uint32_t len)
{
    /* No error reply exists for EXPORT_NAME: every failure disconnects. */
    if (c->extended || len > NBD_MAX_STRING || (len && memchr(data, 0, len))) {
        nbd_conn_note_refusal(c, c->extended ? "NBD_OPT_EXPORT_NAME after extended headers"
                                             : "malformed NBD_OPT_EXPORT_NAME");
        return OPT_CLOSE;
    }
    g_autofree char *name = g_strndup((const char *)data, len);
    Export *exp = export_lookup(name);
    if (!exp) {
        nbd_conn_note_refusal(c, "export '%s' not found", name);
        return OPT_CLOSE;
    }
    enter_transmission(c, exp);
    uint8_t reply[8 + 2 + 124] = { 0 };
    nbd_put64(reply, c->size);
    nbd_put16(reply + 8, c->eflags);
    size_t n = c->no_zeroes ? 10 : sizeof(reply);
    return nbd_io_write(&c->io, reply, n, false) == 0 ? OPT_TRANSMIT : OPT_CLOSE;
}

static OptResult opt_list(NbdConn *c, uint32_t opt, uint32_t len)
{
    if (len)
        return send_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
    g_autoptr(GPtrArray) exports = export_list();
    for (unsigned i = 0; i < exports->len; i++) {
        Export *exp = exports->pdata[i];
        const char *name = export_name(exp);
        const char *desc = export_description(exp);
        size_t name_len = strlen(name);
        size_t desc_len = desc ? strnlen(desc, NBD_MAX_STRING) : 0;
        g_autofree uint8_t *buf = g_malloc(4 + name_len + desc_len);
        nbd_put32(buf, (uint32_t)name_len);
        memcpy(buf + 4, name, name_len);
        if (desc_len)
            memcpy(buf + 4 + name_len, desc, desc_len);
        if (!send_reply(c, opt, NBD_REP_SERVER, buf, 4 + name_len + desc_len))
            return OPT_CLOSE;
    }
    return send_ack(c, opt);
}

static bool send_info(NbdConn *c, uint32_t opt, uint16_t type, const void *data, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(2 + len);
    nbd_put16(buf, type);
    if (len)
        memcpy(buf + 2, data, len);
    return send_reply(c, opt, NBD_REP_INFO, buf, 2 + len);
}

static OptResult opt_info_or_go(NbdConn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    NbdOptInfoRequest req;
    const char *why;
    if (!nbd_parse_opt_info(data, len, &req, &why))
        return send_error(c, opt, NBD_REP_ERR_INVALID, "%s", why);
    Export *exp = export_lookup(req.name);
    if (!exp) {
        OptResult r = send_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%s' not found", req.name);
        nbd_opt_info_request_clear(&req);
        return r;
    }

    uint16_t eflags;
    uint32_t min, pref, max;
    describe_export(c, exp, &eflags, &min, &pref, &max);
    uint8_t info[12];
    nbd_put64(info, export_size(exp));
    nbd_put16(info + 8, eflags);
    bool ok = send_info(c, opt, NBD_INFO_EXPORT, info, 10);
    if (ok && req.want_name) {
        const char *name = export_name(exp);
        ok = send_info(c, opt, NBD_INFO_NAME, name, strnlen(name, NBD_MAX_STRING));
    }
    const char *desc = export_description(exp);
    if (ok && req.want_description && desc)
        ok = send_info(c, opt, NBD_INFO_DESCRIPTION, desc, strnlen(desc, NBD_MAX_STRING));
    if (ok && req.want_block_size) {
        nbd_put32(info, min);
        nbd_put32(info + 4, pref);
        nbd_put32(info + 8, max);
        ok = send_info(c, opt, NBD_INFO_BLOCK_SIZE, info, 12);
    }
    nbd_opt_info_request_clear(&req);
    if (ok)
        ok = send_ack(c, opt) == OPT_CONTINUE;
    if (!ok) {
        export_unref(exp);
        return OPT_CLOSE;
    }
    if (opt == NBD_OPT_INFO) {
        export_unref(exp);
        return OPT_CONTINUE;
    }
    enter_transmission(c, exp);
    return OPT_TRANSMIT;
}

static OptResult opt_no_data_flag(NbdConn *c, uint32_t opt, uint32_t len)
{
    if (len)
        return send_error(c, opt, NBD_REP_ERR_INVALID, "option takes no data");
    if (opt == NBD_OPT_STRUCTURED_REPLY) {
        if (c->extended)
            return send_error(c, opt, NBD_REP_ERR_EXT_HEADER_REQD, "extended headers already negotiated");
        if (c->structured)
            return send_error(c, opt, NBD_REP_ERR_INVALID, "structured replies already negotiated");
        c->structured = true;
    } else {
        if (c->extended)
            return send_error(c, opt, NBD_REP_ERR_INVALID, "extended headers already negotiated");
        c->extended = true;
        c->structured = true;
    }
    return send_ack(c, opt);
}

static bool send_meta_context(NbdConn *c, uint32_t opt, uint32_t id, const char *name)
{
    size_t len = strnlen(name, NBD_MAX_STRING);
    g_autofree uint8_t *buf = g_malloc(4 + len);
    nbd_put32(buf, id);
    memcpy(buf + 4, name, len);
    return send_reply(c, opt, NBD_REP_META_CONTEXT, buf, 4 + len);
}

static OptResult opt_meta_context(NbdConn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    if (!list) {
        /* SET replaces the selection even when it fails. */
        clear_meta_selection(c);
        if (!c->structured)
            return send_error(c, opt, NBD_REP_ERR_INVALID, "structured replies not negotiated");
    }
    NbdOptMetaRequest req;
    const char *why;
    if (!nbd_parse_opt_meta_context(data, len, &req, &why))
        return send_error(c, opt, NBD_REP_ERR_INVALID, "%s", why);
    Export *exp = export_lookup(req.name);
    if (!exp) {
        OptResult r = send_error(c, opt, NBD_REP_ERR_UNKNOWN, "export '%s' not found", req.name);
        nbd_opt_meta_request_clear(&req);
        return r;
    }

    GPtrArray *contexts = export_meta_contexts(exp);
    GPtrArray *selected = g_ptr_array_new();
    bool ok = true;
    for (unsigned i = 0; ok && contexts && i < contexts->len; i++) {
        ExportMetaContext *ctx = contexts->pdata[i];
        bool match = list && req.queries->len == 0;
        for (unsigned q = 0; !match && q < req.queries->len; q++)
            match = nbd_meta_query_matches(req.queries->pdata[q], ctx->name, list);
        if (!match)
            continue;
        if (list) {
            ok = send_meta_context(c, opt, 0, ctx->name);
        } else {
            g_ptr_array_add(selected, ctx);
            ok = send_meta_context(c, opt, selected->len, ctx->name);
        }
    }
    nbd_opt_meta_request_clear(&req);
    if (ok)
        ok = send_ack(c, opt) == OPT_CONTINUE;
    if (!ok || list) {
        g_ptr_array_unref(selected);
        export_unref(exp);
        return ok ? OPT_CONTINUE : OPT_CLOSE;
    }
    c->meta_selected = selected;
    c->meta_export = exp;
    return OPT_CONTINUE;
}

/* STARTTLS (§3.4): ACK in clear, handshake, tls-authz, then a fresh start. */
static OptResult opt_starttls(NbdConn *c, uint32_t opt, uint32_t len)
{
    TlsCreds *creds = nbd_server_tls_creds(c->srv);
    if (!creds)
        return send_error(c, opt, NBD_REP_ERR_POLICY, "TLS is not configured on this server");
    if (nbd_io_tls_active(&c->io))
        return send_error(c, opt, NBD_REP_ERR_INVALID, "TLS is already active");
    if (len)
        return send_error(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
    if (send_ack(c, opt) != OPT_CONTINUE)
        return OPT_CLOSE;
    g_autoptr(GError) err = NULL;
    if (!nbd_io_starttls(&c->io, creds, &err)) {
        /* Only this connection ends; the log says why for the administrator. */
        nbd_conn_note_refusal(c, "TLS handshake failed: %s", err->message);
        return OPT_CLOSE;
    }
    g_autofree char *identity = nbd_io_tls_peer_identity(&c->io);
    AuthzSimple *authz = nbd_server_tls_authz(c->srv);
    if (authz && !authz_simple_is_allowed(authz, identity)) {
        nbd_conn_note_refusal(c, "TLS identity '%s' not allowed by tls-authz '%s'",
                              identity ? identity : "(no identity)", object_id_of(authz));
        return OPT_CLOSE;
    }
    g_debug("client %s: TLS established with '%s'", c->peer ? c->peer : "", identity ? identity : "(anonymous)");
    /* Nothing negotiated in clear text survives (it was not authenticated). */
    c->structured = false;
    c->extended = false;
    clear_meta_selection(c);
    return OPT_CONTINUE;
}

/* With TLS required and not yet active, only STARTTLS and ABORT are
 * processed (§4, FORCEDTLS): nothing about the exports leaks in clear. */
static OptResult handle_option_before_tls(NbdConn *c, uint32_t opt, uint32_t len)
{
    switch (opt) {
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, opt, len);
    case NBD_OPT_ABORT:
        send_ack(c, opt);
        return OPT_CLOSE;
    case NBD_OPT_EXPORT_NAME:
        /* No error reply exists for EXPORT_NAME. */
        nbd_conn_note_refusal(c, "TLS is required: NBD_OPT_EXPORT_NAME without STARTTLS");
        return OPT_CLOSE;
    default:
        return send_error(c, opt, NBD_REP_ERR_TLS_REQD,
                          "TLS is required: negotiate NBD_OPT_STARTTLS first");
    }
}

static OptResult handle_option(NbdConn *c, uint32_t opt, const uint8_t *data, uint32_t len)
{
    if (!c->fixed_newstyle && opt != NBD_OPT_EXPORT_NAME)
        return send_error(c, opt, NBD_REP_ERR_INVALID, "client did not negotiate fixed newstyle");
    if (nbd_server_shutting_down(c->srv) && opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME)
            return OPT_CLOSE;
        return send_error(c, opt, NBD_REP_ERR_SHUTDOWN, "server is shutting down");
    }
    if (nbd_server_tls_creds(c->srv) && !nbd_io_tls_active(&c->io))
        return handle_option_before_tls(c, opt, len);
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        /* The client may already be gone: a failed ACK is not an error. */
        send_ack(c, opt);
        return OPT_CLOSE;
    case NBD_OPT_LIST:
        return opt_list(c, opt, len);
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, opt, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_or_go(c, opt, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
    case NBD_OPT_EXTENDED_HEADERS:
        return opt_no_data_flag(c, opt, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return opt_meta_context(c, opt, data, len);
    default:
        return send_error(c, opt, NBD_REP_ERR_UNSUP, "option %" PRIu32 " not supported", opt);
    }
}

/* The server's greeting and the client's flags; false: close. */
static bool exchange_flags(NbdConn *c)
{
    uint8_t greeting[18];
    nbd_put64(greeting, NBD_MAGIC);
    nbd_put64(greeting + 8, NBD_IHAVEOPT);
    nbd_put16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (nbd_io_write(&c->io, greeting, sizeof(greeting), false) < 0)
        return false;

    uint8_t cflags_buf[4];
    if (nbd_io_read_exact(&c->io, cflags_buf, 4) < 0)
        return false;
    uint32_t cflags = nbd_get32(cflags_buf);
    if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        nbd_conn_note_refusal(c, "unknown client flags 0x%" PRIx32, cflags);
        return false;
    }
    c->fixed_newstyle = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;
    return true;
}

/* Reads an option header; false: close (bad magic, or data longer than any
 * option may be). */
static bool read_option_header(NbdConn *c, uint32_t *opt, uint32_t *len)
{
    uint8_t hdr[16];
    if (nbd_io_read_exact(&c->io, hdr, sizeof(hdr)) < 0)
        return false;
    if (nbd_get64(hdr) != NBD_IHAVEOPT) {
        nbd_conn_note_refusal(c, "bad option magic");
        return false;
    }
    *opt = nbd_get32(hdr + 8);
    *len = nbd_get32(hdr + 12);
    if (*len > NBD_MAX_OPTION_LENGTH) {
        nbd_conn_note_refusal(c, "option %" PRIu32 " data too long (%" PRIu32 " bytes)", *opt, *len);
        return false;
    }
    return true;
}

void nbd_handshake_refuse(NbdConn *c, const char *why)
{
    if (!exchange_flags(c))
        return;
    for (unsigned count = 0; count < 16; count++) {
        uint32_t opt, len;
        if (!read_option_header(c, &opt, &len) || nbd_io_discard(&c->io, len) < 0)
            return;
        if (opt == NBD_OPT_ABORT) {
            send_ack(c, opt);
            return;
        }
        /* EXPORT_NAME has no error reply: closing is all it can be told. */
        if (opt == NBD_OPT_EXPORT_NAME || !c->fixed_newstyle ||
            send_error(c, opt, NBD_REP_ERR_POLICY, "%s", why) != OPT_CONTINUE)
            return;
    }
}

bool nbd_handshake(NbdConn *c)
{
    if (!exchange_flags(c))
        return false;

    /* Bound the haggling so a client cannot keep a connection busy forever. */
    /* Not kept: holding references would keep deleted exports alive. */
    GPtrArray *exports = export_list();
    unsigned max_options = 64 + 32 * exports->len;
    g_ptr_array_unref(exports);

    for (unsigned count = 0;; count++) {
        uint32_t opt, len;
        if (!read_option_header(c, &opt, &len))
            return false;
        if (count >= max_options) {
            nbd_conn_note_refusal(c, "too many options (%u)", count);
            return false;
        }
        /* No option needs more than NBD_MAX_OPTION_BUFFER: larger data is
         * read and dropped, never held (a client trickling 8 MiB options
         * on many connections must not pin memory). */
        if (len > NBD_MAX_OPTION_BUFFER) {
            if (opt == NBD_OPT_EXPORT_NAME) {
                nbd_conn_note_refusal(c, "NBD_OPT_EXPORT_NAME too long (%" PRIu32 " bytes)", len);
                return false;
            }
            if (nbd_io_discard(&c->io, len) < 0)
                return false;
            if (send_error(c, opt, NBD_REP_ERR_TOO_BIG, "option data too long (%" PRIu32 " bytes, at most %u)",
                           len, NBD_MAX_OPTION_BUFFER) != OPT_CONTINUE)
                return false;
            continue;
        }
        g_autofree uint8_t *data = g_malloc(len);
        if (nbd_io_read_exact(&c->io, data, len) < 0)
            return false;
        switch (handle_option(c, opt, data, len)) {
        case OPT_CONTINUE:
            break;
        case OPT_TRANSMIT:
            /* Belt and braces (§4): never serve data in clear on a TLS server. */
            return !nbd_server_tls_creds(c->srv) || nbd_io_tls_active(&c->io);
        case OPT_CLOSE:
            return false;
        }
    }
}
