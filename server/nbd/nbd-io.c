/* Per-connection socket I/O (see nbd-io.h). */
#include "server/nbd/nbd-io.h"

#include <errno.h>
#include <glib.h>
#include <string.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

void nbd_io_init(NbdIo *io, int fd)
{
    io->fd = fd;
}

ssize_t nbd_io_read_some(NbdIo *io, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(io->fd, buf, len, 0);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -errno;
    }
}

int nbd_io_read_exact(NbdIo *io, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = nbd_io_read_some(io, p, len);
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

int nbd_io_writev(NbdIo *io, const struct iovec *iov, int iovcnt, bool more)
{
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
    return true; /* false once TLS is active */
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

void nbd_io_shutdown(NbdIo *io, int how)
{
    if (io->fd >= 0)
        shutdown(io->fd, how);
}
