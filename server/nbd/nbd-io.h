/* Per-connection socket I/O for the NBD server.
 *
 * Every byte the server reads or writes on a client socket goes through
 * these few functions, so after STARTTLS a GnuTLS session slots in
 * underneath without the protocol code knowing.  All functions are
 * blocking, retry on EINTR and short transfers, and never raise SIGPIPE
 * for writes.  One thread may read while another writes (GnuTLS allows
 * one sender and one receiver on a session at a time). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <glib.h>
#include <gnutls/gnutls.h>
#include "objects/tls-creds.h"

typedef struct NbdIo {
    int fd;
    gnutls_session_t tls;   /* NULL until STARTTLS succeeded */
} NbdIo;

/* Binds the I/O layer to a connected socket (not owned). */
void nbd_io_init(NbdIo *io, int fd);
/* Reads up to len bytes: the count, 0 at end of stream, or -errno. */
ssize_t nbd_io_read_some(NbdIo *io, void *buf, size_t len);
/* Like nbd_io_read_some without waiting: -EAGAIN when nothing is there (always under TLS). */
ssize_t nbd_io_read_nowait(NbdIo *io, void *buf, size_t len);
/* Reads exactly len bytes: 0, or -errno (-ECONNRESET at end of stream). */
int nbd_io_read_exact(NbdIo *io, void *buf, size_t len);
/* Reads and drops len bytes: 0 or -errno. */
int nbd_io_discard(NbdIo *io, uint64_t len);
/* Writes all of iov (iov is not modified); more = more data follows soon (MSG_MORE). 0 or -errno. */
int nbd_io_writev(NbdIo *io, const struct iovec *iov, int iovcnt, bool more);
/* Writes all of buf; 0 or -errno. */
int nbd_io_write(NbdIo *io, const void *buf, size_t len, bool more);
/* True when nbd_io_sendfile can copy file data to the peer without a user buffer. */
bool nbd_io_can_sendfile(NbdIo *io);
/* Sends len bytes of in_fd from offset (zero copy); 0 or -errno (-EIO if the file is short). */
int nbd_io_sendfile(NbdIo *io, int in_fd, uint64_t offset, size_t len);
/* Runs the server side of the TLS handshake; afterwards all I/O is encrypted. */
bool nbd_io_starttls(NbdIo *io, TlsCreds *creds, GError **errp);
/* True once STARTTLS succeeded. */
bool nbd_io_tls_active(NbdIo *io);
/* The TLS peer's identity (distinguished name or PSK username), or NULL. */
char *nbd_io_tls_peer_identity(NbdIo *io);
/* Ends the TLS session, if any, without waiting for the peer; then closes the socket. */
void nbd_io_close(NbdIo *io);
/* shutdown(2) of the socket (SHUT_RD, SHUT_RDWR); wakes blocked readers/writers. */
void nbd_io_shutdown(NbdIo *io, int how);
