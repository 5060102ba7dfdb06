/* Per-connection socket I/O (see nbd-io.h). */
#define G_LOG_DOMAIN "blockd-nbd"
#include "server/nbd/nbd-io.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

/* The largest TLS record payload (RFC 8446 and 5246): GnuTLS sends at most one per call. */
#define TLS_RECORD_MAX 16384

void nbd_io_init(NbdIo *io, int fd)
{
    io->fd = fd;
    io->tls = NULL;
}

/* gnutls_record_recv: like recv(2), with TLS errors mapped to -EIO. */
static ssize_t tls_read_some(NbdIo *io, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = gnutls_record_recv(io->tls, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        /* A peer that closes without close_notify is just gone. */
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        g_debug("TLS receive: %s", gnutls_strerror((int)n));
        return -EIO;
    }
}

ssize_t nbd_io_read_some(NbdIo *io, void *buf, size_t len)
{
    if (io->tls)
        return tls_read_some(io, buf, len);
    for (;;) {
        ssize_t n = recv(io->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t nbd_io_read_nowait(NbdIo *io, void *buf, size_t len)
{
    if (io->tls)
        return -EAGAIN;
    for (;;) {
        ssize_t n = recv(io->fd, buf, len, MSG_DONTWAIT);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int nbd_io_read_exact(NbdIo *io, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        /* MSG_WAITALL: the kernel gathers a large payload in one call. */
        ssize_t n = io->tls ? nbd_io_read_some(io, p, len) : recv(io->fd, p, len, MSG_WAITALL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && !io->tls)
            n = -errno;
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -ECONNRESET;
        p += n;
        len -= n;
    }
    return 0;
}

int nbd_io_discard(NbdIo *io, uint64_t len)
{
    char scratch[65536];
    while (len > 0) {
        size_t chunk = len < sizeof(scratch) ? len : sizeof(scratch);
        int r = nbd_io_read_exact(io, scratch, chunk);
        if (r < 0)
            return r;
        len -= chunk;
    }
    return 0;
}

/* Sends buf as TLS records (up to TLS_RECORD_MAX each, straight from buf). */
static int tls_send_all(NbdIo *io, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = gnutls_record_send(io->tls, buf, len);
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
            continue;
        if (n < 0) {
            g_debug("TLS send: %s", gnutls_strerror((int)n));
            return -EIO;
        }
        buf += n;
        len -= n;
    }
    return 0;
}

/* Under TLS a reply's small pieces (headers) and the start of its payload
 * are gathered into one full record; the rest of a large payload is
 * encrypted straight from the caller's buffer in full-size records.  So a
 * reply costs no extra record and at most one record's worth of copying. */
static int tls_writev(NbdIo *io, const struct iovec *iov, int iovcnt)
{
    char staging[TLS_RECORD_MAX];
    size_t used = 0;
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        if (used > 0) {
            size_t take = MIN(left, sizeof(staging) - used);
            memcpy(staging + used, p, take);
            used += take;
            p += take;
            left -= take;
            if (used < sizeof(staging))
                continue;
            int r = tls_send_all(io, staging, used);
            used = 0;
            if (r < 0)
                return r;
        }
        /* Whole records go out directly (all of the last piece); a short
         * tail waits in the staging record for the next pieces. */
        size_t direct = i == iovcnt - 1 ? left : left - left % TLS_RECORD_MAX;
        if (direct) {
            int r = tls_send_all(io, p, direct);
            if (r < 0)
                return r;
            p += direct;
            left -= direct;
        }
        memcpy(staging + used, p, left);
        used += left;
    }
    return used ? tls_send_all(io, staging, used) : 0;
}

int nbd_io_writev(NbdIo *io, const struct iovec *iov, int iovcnt, bool more)
{
    if (io->tls)
        return tls_writev(io, iov, iovcnt);
    struct iovec local[16];
    struct iovec *v = iovcnt <= 16 ? local : g_new(struct iovec, iovcnt);
    memcpy(v, iov, sizeof(*v) * iovcnt);
    int r = 0;
    int i = 0;
    while (i < iovcnt) {
        struct msghdr msg = { .msg_iov = v + i, .msg_iovlen = iovcnt - i };
        ssize_t n = sendmsg(io->fd, &msg, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        /* Skip what was written; adjust the first partly written vector. */
        while (i < iovcnt && (size_t)n >= v[i].iov_len) {
            n -= v[i].iov_len;
            i++;
        }
        if (i < iovcnt) {
            v[i].iov_base = (char *)v[i].iov_base + n;
            v[i].iov_len -= n;
        }
    }
    if (v != local)
        g_free(v);
    return r;
}

int nbd_io_write(NbdIo *io, const void *buf, size_t len, bool more)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    return nbd_io_writev(io, &iov, 1, more);
}

bool nbd_io_can_sendfile(NbdIo *io)
{
    /* File data must pass through GnuTLS to be encrypted. */
    return io->tls == NULL;
}

int nbd_io_sendfile(NbdIo *io, int in_fd, uint64_t offset, size_t len)
{
    off_t off = (off_t)offset;
    while (len > 0) {
        /* sendfile has no MSG_NOSIGNAL: the server ignores SIGPIPE instead. */
        ssize_t n = sendfile(io->fd, in_fd, &off, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        len -= n;
    }
    return 0;
}

bool nbd_io_starttls(NbdIo *io, TlsCreds *creds, GError **errp)
{
    g_assert(!io->tls);
    io->tls = tls_creds_server_handshake(creds, io->fd, errp);
    return io->tls != NULL;
}

bool nbd_io_tls_active(NbdIo *io)
{
    return io->tls != NULL;
}

char *nbd_io_tls_peer_identity(NbdIo *io)
{
    return io->tls ? tls_session_peer_identity(io->tls) : NULL;
}

void nbd_io_close(NbdIo *io)
{
    if (io->tls) {
        /* Send close_notify if the socket takes it at once; never wait
         * for a peer that stopped reading. */
        int flags = fcntl(io->fd, F_GETFL);
        if (flags >= 0)
            fcntl(io->fd, F_SETFL, flags | O_NONBLOCK);
        gnutls_bye(io->tls, GNUTLS_SHUT_WR);
        gnutls_deinit(io->tls);
        io->tls = NULL;
    }
    if (io->fd >= 0)
        close(io->fd);
    io->fd = -1;
}

void nbd_io_shutdown(NbdIo *io, int how)
{
    if (io->fd >= 0)
        shutdown(io->fd, how);
}
