/* Per-connection socket I/O for the NBD server.
 *
 * Every byte the server reads or writes on a client socket goes through
 * these few functions, so a TLS session can later slot in underneath
 * without touching the protocol code.  All functions are blocking, retry
 * on EINTR and short transfers, and never raise SIGPIPE for writes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef struct NbdIo {
    int fd;
} NbdIo;

/* Binds the I/O layer to a connected socket (not owned). */
void nbd_io_init(NbdIo *io, int fd);
/* Reads up to len bytes: the count, 0 at end of stream, or -errno. */
ssize_t nbd_io_read_some(NbdIo *io, void *buf, size_t len);
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
/* shutdown(2) of the socket (SHUT_RD, SHUT_RDWR); wakes blocked readers/writers. */
void nbd_io_shutdown(NbdIo *io, int how);
