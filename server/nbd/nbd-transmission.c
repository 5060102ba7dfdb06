/* The transmission phase (reference §6-§8, §14).
 *
 * Up to MAX_THREADS request threads per connection (started on demand) take
 * turns receiving: one reads a request header through a small read-ahead
 * buffer (several headers per recv at high queue depth) and any WRITE
 * payload straight into a reusable I/O buffer, passes the socket on, then
 * executes the request; requests complete in any order.  Each reply is
 * written with one writev (or header + sendfile) under the send lock.
 * While the backend answers quickly (page cache, RAM), small requests and
 * BLOCK_STATUS skip the hand-off: the receiving thread runs them itself,
 * several read-ahead ones as a batch with one send for their replies, and
 * spins briefly for the next request before sleeping (see rx_fill).  A
 * batch of reads and writes runs in a deferral scope (block/io-defer.h):
 * requests that finish elsewhere (on an nbd node, raw over one, or a
 * write-blocking mirror's copy to an nbd target) leave it pending, and the
 * batch is answered once it is done, by its thread after the next one took
 * over receiving.
 *
 * READ always answers with one data chunk: asking base:allocation for holes
 * first can cost more than the read (SEEK_HOLE scans page by page on tmpfs),
 * and clients that care about sparseness ask BLOCK_STATUS themselves. */
#define G_LOG_DOMAIN "blockd-nbd"
#include "server/nbd/nbd-conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include "server/nbd/nbd-wire.h"
#include "block/io-defer.h"

/* Requests in flight per connection (nbdkit uses 16 threads too). */
#define MAX_THREADS        16
/* Below this a pread + one writev is cheaper than header + sendfile. */
#define SENDFILE_MIN       (64 * 1024)
#define READ_AHEAD_SIZE    (64 * 1024)
#define BUFFER_CLASSES     14          /* 4 KiB << 0 .. 4 KiB << 13 = 32 MiB */
#define MAX_CACHED_BYTES   (64u * 1024 * 1024)
/* Payload buffers a connection may hold at once, in use and cached for
 * reuse together (docs/nbd.md): READ data waiting for a client that does
 * not read its replies, WRITE data waiting to be written.  A request that
 * would go over waits for another to finish: the client's own backlog
 * slows it, never the daemon's memory. */
#define MAX_BUFFER_BYTES   (128u * 1024 * 1024)
/* Small requests already read ahead run as one batch on one thread, with
 * one send for all their replies: at high queue depth this saves a thread
 * wake-up and a send per request.  Only quick commands join a batch. */
#define BATCH_MAX          16
#define BATCH_IO_MAX       (16 * 1024)
/* Writes take longer than reads to run; a batch holding up their replies
 * for longer leaves the client idle (measured: 4 x 4 KiB is best).  While
 * writes defer their completion (a write-blocking mirror's copies to its
 * target, block/io-defer.h), a batch costs a wait for those and a thread
 * hand-off, and bigger ones pay (8 x 4 KiB: 5 % more IOPS at QD16). */
#define BATCH_WRITE_BYTES  (16 * 1024)
#define BATCH_DEFERRED_WRITE_BYTES (32 * 1024)
/* While quick requests average less than this, the receiving thread runs
 * them itself and keeps receiving: on a page-cache or RAM backend that
 * beats waking another thread per request.  Slower backends (a cold disk)
 * get requests handed to parallel threads instead.  The time includes the
 * reply's send (5-15 us alone on a VM); a cold disk read takes 100 us. */
#define INLINE_MAX_NS      50000
/* In that mode the receiving thread spins up to this long for the next
 * request before sleeping in recv (adaptive, like QEMU's AioContext
 * polling): waking a sleeping thread costs tens of microseconds on a VM,
 * more than a client at queue depth 1 takes to send its next request. */
#define POLL_MIN_NS        4000
#define POLL_MAX_NS        64000

typedef struct IoBuffer {
    struct IoBuffer *next;
    unsigned klass;
    void *data;
} IoBuffer;

typedef struct Work {
    NbdRequest req;
    uint32_t error;          /* validation result, 0 = execute */
    const char *why;
    IoBuffer *buf;           /* WRITE payload, or READ data when async */
    bool async;              /* run with export_p*_async: reply once the batch's scope is done */
    int result;              /* then its result */
} Work;

typedef struct Tx {
    NbdConn *c;
    NbdValidateContext vctx;

    GMutex recv_lock;        /* the socket's read side, rbuf, stopping, threads */
    gint waiting_to_receive; /* threads blocked on recv_lock */
    bool stopping;           /* DISC, end of stream or framing error seen */
    unsigned n_threads;
    GThread *threads[MAX_THREADS];
    uint8_t rbuf[READ_AHEAD_SIZE];
    size_t rpos, rlen;

    GMutex buf_lock;
    GCond buf_cond;          /* a buffer was given back */
    IoBuffer *free_bufs[BUFFER_CLASSES];
    uint64_t cached_bytes;   /* in free_bufs */
    uint64_t held_bytes;     /* handed out by buffer_get */

    GMutex send_lock;
    gint dead;               /* the socket failed: skip sends */

    gint avg_request_ns;     /* moving average of a quick request's run time */
    gint writes_defer;       /* the last batch deferred some completions */
    bool inline_mode;        /* the receiving thread runs requests (recv_lock) */
    uint64_t poll_ns;        /* current spin before a blocking recv (recv_lock) */
} Tx;

/* ---- I/O buffers (per-connection free lists by power-of-two class) ---- */

static unsigned buffer_class(size_t len)
{
    unsigned k = 0;
    while (k < BUFFER_CLASSES - 1 && ((size_t)4096 << k) < len)
        k++;
    return k;
}

static void buffer_free(IoBuffer *b)
{
    free(b->data);
    g_free(b);
}

/* Drops cached buffers (largest first) until `need` more bytes fit in the
 * budget or the cache is empty; returns them for freeing outside the lock. */
static IoBuffer *uncache_locked(Tx *tx, uint64_t need)
{
    IoBuffer *dropped = NULL;
    for (unsigned k = BUFFER_CLASSES; k > 0 && tx->held_bytes + tx->cached_bytes + need > MAX_BUFFER_BYTES;) {
        IoBuffer *b = tx->free_bufs[k - 1];
        if (!b) {
            k--;
            continue;
        }
        tx->free_bufs[k - 1] = b->next;
        tx->cached_bytes -= (size_t)4096 << b->klass;
        b->next = dropped;
        dropped = b;
    }
    return dropped;
}

static IoBuffer *buffer_get(Tx *tx, size_t len)
{
    unsigned k = buffer_class(len);
    size_t size = (size_t)4096 << k;
    IoBuffer *dropped = NULL;
    g_mutex_lock(&tx->buf_lock);
    IoBuffer *b = tx->free_bufs[k];
    if (b) {
        tx->free_bufs[k] = b->next;
        tx->cached_bytes -= size;
    } else {
        /* Invariant: held + cached <= MAX_BUFFER_BYTES.  Make room by
         * dropping cached buffers, else wait for one in use to come back. */
        for (;;) {
            for (IoBuffer *d = uncache_locked(tx, size), *next; d; d = next) {
                next = d->next;
                d->next = dropped;
                dropped = d;
            }
            if (tx->held_bytes + tx->cached_bytes + size <= MAX_BUFFER_BYTES)
                break;
            g_cond_wait(&tx->buf_cond, &tx->buf_lock);
        }
    }
    tx->held_bytes += size;
    g_mutex_unlock(&tx->buf_lock);
    for (IoBuffer *next; dropped; dropped = next) {
        next = dropped->next;
        buffer_free(dropped);
    }
    if (!b) {
        b = g_new0(IoBuffer, 1);
        b->klass = k;
        /* Page-aligned so O_DIRECT backends can use it as is. */
        if (posix_memalign(&b->data, 4096, size) != 0)
            g_error("nbd: out of memory for a %zu byte buffer", size);
    }
    return b;
}

static void buffer_put(Tx *tx, IoBuffer *b)
{
    if (!b)
        return;
    size_t size = (size_t)4096 << b->klass;
    g_mutex_lock(&tx->buf_lock);
    tx->held_bytes -= size;
    if (tx->cached_bytes + size <= MAX_CACHED_BYTES) {
        b->next = tx->free_bufs[b->klass];
        tx->free_bufs[b->klass] = b;
        tx->cached_bytes += size;
        b = NULL;
    }
    g_cond_broadcast(&tx->buf_cond);
    g_mutex_unlock(&tx->buf_lock);
    if (b)
        buffer_free(b);
}

static void buffers_free_all(Tx *tx)
{
    for (unsigned k = 0; k < BUFFER_CLASSES; k++) {
        while (tx->free_bufs[k]) {
            IoBuffer *b = tx->free_bufs[k];
            tx->free_bufs[k] = b->next;
            buffer_free(b);
        }
    }
}

/* ---- Sending replies ---- */

static void mark_dead(Tx *tx)
{
    g_atomic_int_set(&tx->dead, 1);
    /* Wake the receiver: nothing more can be answered on this socket. */
    nbd_io_shutdown(&tx->c->io, SHUT_RDWR);
}

/* While a thread executes a batch of requests its replies collect here
 * and go out in one send at the end (NULL: send each reply at once). */
static __thread GByteArray *reply_batch;

static void send_locked_iov(Tx *tx, const struct iovec *iov, int n)
{
    if (reply_batch) {
        for (int i = 0; i < n; i++)
            g_byte_array_append(reply_batch, iov[i].iov_base, (guint)iov[i].iov_len);
        return;
    }
    g_mutex_lock(&tx->send_lock);
    if (!g_atomic_int_get(&tx->dead) && nbd_io_writev(&tx->c->io, iov, n, false) < 0)
        mark_dead(tx);
    g_mutex_unlock(&tx->send_lock);
}

/* An error reply: an ERROR chunk with a message once structured replies are on. */
static void reply_error(Tx *tx, const NbdRequest *req, uint32_t error, const char *why)
{
    NbdConn *c = tx->c;
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE + 6];
    if (!c->structured) {
        nbd_encode_simple_reply(hdr, error, req->cookie);
        struct iovec iov = { hdr, NBD_SIMPLE_REPLY_SIZE };
        send_locked_iov(tx, &iov, 1);
        return;
    }
    g_autofree char *msg = g_strdup_printf("%s: %s", nbd_cmd_name(req->type),
                                           why ? why : "request failed");
    size_t mlen = strnlen(msg, NBD_MAX_STRING);
    size_t h = nbd_encode_chunk_header(hdr, c->extended, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                                       req->cookie, req->offset, 6 + mlen);
    nbd_put32(hdr + h, error);
    nbd_put16(hdr + h + 4, (uint16_t)mlen);
    struct iovec iov[2] = { { hdr, h + 6 }, { msg, mlen } };
    send_locked_iov(tx, iov, 2);
}

/* A successful reply without data. */
static void reply_ok(Tx *tx, const NbdRequest *req)
{
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE];
    size_t h;
    if (tx->c->extended)
        h = nbd_encode_chunk_header(hdr, true, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
                                    req->cookie, req->offset, 0);
    else
        h = nbd_encode_simple_reply(hdr, 0, req->cookie);
    struct iovec iov = { hdr, h };
    send_locked_iov(tx, &iov, 1);
}

static void reply_status(Tx *tx, const NbdRequest *req, int r)
{
    if (r < 0)
        reply_error(tx, req, nbd_errno_to_nbd(r, req->flags), g_strerror(-r));
    else
        reply_ok(tx, req);
}

/* The header in front of READ data: simple reply, or an OFFSET_DATA chunk. */
static size_t read_reply_header(Tx *tx, const NbdRequest *req, uint8_t *hdr)
{
    NbdConn *c = tx->c;
    if (!c->structured)
        return nbd_encode_simple_reply(hdr, 0, req->cookie);
    size_t h = nbd_encode_chunk_header(hdr, c->extended, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                                       req->cookie, req->offset, 8 + req->length);
    nbd_put64(hdr + h, req->offset);
    return h + 8;
}

static void do_read(Tx *tx, const NbdRequest *req)
{
    NbdConn *c = tx->c;
    uint32_t len = (uint32_t)req->length;
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE + 8];

    /* Zero copy: the header with MSG_MORE, then the file bytes. */
    int fd;
    uint64_t fd_offset;
    if (len >= SENDFILE_MIN && !reply_batch && nbd_io_can_sendfile(&c->io) && export_read_fd(c->exp, len, req->offset, &fd, &fd_offset) == 0) {
        size_t h = read_reply_header(tx, req, hdr);
        g_mutex_lock(&tx->send_lock);
        if (!g_atomic_int_get(&tx->dead) &&
            (nbd_io_write(&c->io, hdr, h, true) < 0 ||
             nbd_io_sendfile(&c->io, fd, fd_offset, len) < 0)) {
            /* The header is out, so framing is lost: hard disconnect (§14). */
            mark_dead(tx);
        }
        g_mutex_unlock(&tx->send_lock);
        close(fd);
        return;
    }

    IoBuffer *b = buffer_get(tx, len);
    int r = export_pread(c->exp, b->data, len, req->offset);
    if (r < 0) {
        reply_error(tx, req, nbd_errno_to_nbd(r, req->flags), g_strerror(-r));
    } else {
        size_t h = read_reply_header(tx, req, hdr);
        struct iovec iov[2] = { { hdr, h }, { b->data, len } };
        send_locked_iov(tx, iov, 2);
    }
    buffer_put(tx, b);
}

static void do_block_status(Tx *tx, const NbdRequest *req)
{
    NbdConn *c = tx->c;
    GPtrArray *sel = c->meta_selected;
    unsigned n = sel->len;
    bool req_one = req->flags & NBD_CMD_FLAG_REQ_ONE;
    size_t desc_size = c->extended ? 16 : 8;
    size_t fixed = c->extended ? 8 : 4;
    g_autofree uint8_t *hdrs = g_malloc(n * NBD_EXTENDED_REPLY_SIZE);
    g_autofree struct iovec *iov = g_new(struct iovec, 2 * n);
    g_autoptr(GPtrArray) payloads = g_ptr_array_new_with_free_func(g_free);

    for (unsigned i = 0; i < n; i++) {
        const ExportMetaContext *ctx = sel->pdata[i];
        BlockExtents *e = extents_new(req->offset, c->size);
        int r = e ? ctx->block_status(c->exp, ctx, req->length, req->offset,
                                      req_one ? BLOCK_FLAG_REQ_ONE : 0, e)
                  : -EINVAL;
        if (r < 0) {
            extents_free(e);
            reply_error(tx, req, nbd_errno_to_nbd(r, req->flags), g_strerror(-r));
            return;
        }
        size_t count = MIN(extents_count(e), (size_t)NBD_MAX_EXTENTS);
        size_t max = MAX(count, 1);
        uint8_t *p = g_malloc(fixed + max * desc_size);
        g_ptr_array_add(payloads, p);
        NbdExtentEncoder enc;
        nbd_extent_encoder_init(&enc, p + fixed, c->extended, req->offset, req->length, req_one, max);
        for (size_t j = 0; j < count; j++) {
            BlockExtent x = extents_get(e, j);
            if (!nbd_extent_encoder_add(&enc, x.length, x.type))
                break;
        }
        if (enc.count == 0) /* "unknown": data, covering the request (status 0 is always safe) */
            nbd_extent_encoder_add(&enc, req->length, 0);
        extents_free(e);

        nbd_put32(p, (uint32_t)(i + 1));
        if (c->extended)
            nbd_put32(p + 4, (uint32_t)enc.count);
        size_t plen = fixed + nbd_extent_encoder_bytes(&enc);
        uint8_t *h = hdrs + i * NBD_EXTENDED_REPLY_SIZE;
        size_t hl = nbd_encode_chunk_header(h, c->extended, i + 1 == n ? NBD_REPLY_FLAG_DONE : 0,
                                            c->extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT
                                                        : NBD_REPLY_TYPE_BLOCK_STATUS,
                                            req->cookie, req->offset, plen);
        iov[2 * i] = (struct iovec){ h, hl };
        iov[2 * i + 1] = (struct iovec){ p, plen };
    }
    send_locked_iov(tx, iov, 2 * n);
}

/* The node flag for a request's FUA. */
static uint32_t fua_flag(const NbdRequest *req)
{
    return (req->flags & NBD_CMD_FLAG_FUA) ? BLOCK_FLAG_FUA : 0;
}

/* An asynchronous request finished (maybe on a driver's thread). */
static void work_done(void *opaque, int r)
{
    ((Work *)opaque)->result = r;
}

/* Starts a READ or WRITE of a batch in a deferral scope: a driver that can
 * (an nbd node) answers later on its own thread, and the batch's replies
 * go out once all are in (finish_deferred), instead of this thread
 * sleeping on each request in turn.  Others complete before this returns. */
static void execute_async(Tx *tx, Work *w)
{
    NbdConn *c = tx->c;
    const NbdRequest *req = &w->req;
    uint32_t len = (uint32_t)req->length;
    w->async = true;
    if (req->type == NBD_CMD_READ) {
        w->buf = buffer_get(tx, len);
        export_pread_async(c->exp, w->buf->data, len, req->offset, work_done, w);
    } else {
        export_pwrite_async(c->exp, w->buf->data, len, req->offset, fua_flag(req), work_done, w);
    }
}

/* The reply of a request run by execute_async, once it finished.  One
 * whose connection was lost before it was answered runs again the
 * synchronous way, which reconnects as the node allows (reconnect-delay). */
static void reply_async(Tx *tx, Work *w)
{
    const NbdRequest *req = &w->req;
    NbdConn *c = tx->c;
    if (w->result == -ENOTCONN)
        w->result = req->type == NBD_CMD_READ
                        ? export_pread(c->exp, w->buf->data, (uint32_t)req->length, req->offset)
                        : export_pwrite(c->exp, w->buf->data, (uint32_t)req->length, req->offset, fua_flag(req));
    if (req->type != NBD_CMD_READ || w->result < 0) {
        reply_status(tx, req, w->result);
        return;
    }
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE + 8];
    size_t h = read_reply_header(tx, req, hdr);
    struct iovec iov[2] = { { hdr, h }, { w->buf->data, (size_t)req->length } };
    send_locked_iov(tx, iov, 2);
}

static void execute(Tx *tx, Work *w)
{
    NbdConn *c = tx->c;
    const NbdRequest *req = &w->req;
    uint32_t fua = fua_flag(req);

    if (w->error) {
        reply_error(tx, req, w->error, w->why);
        return;
    }
    if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) && io_defer_current()) {
        execute_async(tx, w);
        return;
    }
    switch (req->type) {
    case NBD_CMD_READ:
        do_read(tx, req);
        break;
    case NBD_CMD_WRITE:
        reply_status(tx, req, export_pwrite(c->exp, w->buf->data, (uint32_t)req->length, req->offset, fua));
        break;
    case NBD_CMD_FLUSH:
        reply_status(tx, req, export_flush(c->exp));
        break;
    case NBD_CMD_TRIM:
        reply_status(tx, req, export_trim(c->exp, req->length, req->offset, fua));
        break;
    case NBD_CMD_WRITE_ZEROES: {
        uint32_t flags = fua;
        if (!(req->flags & NBD_CMD_FLAG_NO_HOLE))
            flags |= BLOCK_FLAG_MAY_TRIM;
        if (req->flags & NBD_CMD_FLAG_FAST_ZERO)
            flags |= BLOCK_FLAG_FAST_ZERO;
        reply_status(tx, req, export_zero(c->exp, req->length, req->offset, flags));
        break;
    }
    case NBD_CMD_CACHE:
        reply_status(tx, req, export_cache(c->exp, req->length, req->offset));
        break;
    case NBD_CMD_BLOCK_STATUS:
        do_block_status(tx, req);
        break;
    default:
        reply_error(tx, req, NBD_EINVAL, "unknown command");
        break;
    }
}

/* ---- Receiving ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Reads what has arrived into the read-ahead buffer; in inline mode spins
 * first for up to poll_ns, which grows while requests arrive soon after
 * the spin gave up and shrinks while they do not. */
static ssize_t rx_fill(Tx *tx)
{
    NbdIo *io = &tx->c->io;
    uint8_t *p = tx->rbuf + tx->rlen;
    size_t room = READ_AHEAD_SIZE - tx->rlen;
    if (!tx->inline_mode || nbd_io_tls_active(io)) /* no cheap peek under TLS */
        return nbd_io_read_some(io, p, room);
    uint64_t t0 = now_ns();
    if (tx->poll_ns) {
        do {
            ssize_t n = nbd_io_read_nowait(io, p, room);
            if (n != -EAGAIN)
                return n;
        } while (now_ns() - t0 < tx->poll_ns);
    }
    ssize_t n = nbd_io_read_some(io, p, room);
    if (now_ns() - t0 < POLL_MAX_NS)
        tx->poll_ns = MIN(MAX(tx->poll_ns * 2, POLL_MIN_NS), POLL_MAX_NS);
    else if ((tx->poll_ns /= 2) < POLL_MIN_NS)
        tx->poll_ns = 0;
    return n;
}

/* Reads exactly len bytes through the read-ahead buffer; 0 or -errno. */
static int rx_read(Tx *tx, void *dst, size_t len)
{
    size_t have = tx->rlen - tx->rpos;
    if (have >= len) {
        memcpy(dst, tx->rbuf + tx->rpos, len);
        tx->rpos += len;
        return 0;
    }
    memcpy(dst, tx->rbuf + tx->rpos, have);
    dst = (char *)dst + have;
    len -= have;
    tx->rpos = tx->rlen = 0;
    /* Large payloads go straight into their buffer. */
    if (len >= READ_AHEAD_SIZE / 2)
        return nbd_io_read_exact(&tx->c->io, dst, len);
    while (tx->rlen < len) {
        ssize_t n = rx_fill(tx);
        if (n <= 0)
            return n == 0 ? -ECONNRESET : (int)n;
        tx->rlen += n;
    }
    memcpy(dst, tx->rbuf, len);
    tx->rpos = len;
    return 0;
}

static int rx_skip(Tx *tx, uint64_t len)
{
    size_t have = MIN(len, tx->rlen - tx->rpos);
    tx->rpos += have;
    len -= have;
    return len ? nbd_io_discard(&tx->c->io, len) : 0;
}

/* Reads the next request and its payload (called with recv_lock held).
 * False at DISC, end of stream or a framing error: receiving is over. */
static bool receive_request(Tx *tx, Work *w)
{
    NbdConn *c = tx->c;
    size_t hsize = c->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
    uint8_t hdr[NBD_EXTENDED_REQUEST_SIZE];

    if (g_atomic_int_get(&tx->dead) || rx_read(tx, hdr, hsize) < 0)
        return false;
    if (!nbd_parse_request(hdr, c->extended, &w->req)) {
        g_message("client %s disconnected: bad request magic", c->peer ? c->peer : "");
        nbd_io_shutdown(&c->io, SHUT_RDWR);
        return false;
    }
    if (w->req.type == NBD_CMD_DISC)
        return false;
    uint64_t payload = nbd_request_payload_length(&w->req, c->extended);
    if (payload > NBD_MAX_PAYLOAD_DRAIN) {
        g_message("client %s disconnected: a request payload of %" G_GUINT64_FORMAT " bytes is too large",
                  c->peer ? c->peer : "", payload);
        nbd_io_shutdown(&c->io, SHUT_RDWR);
        return false;
    }
    w->error = nbd_validate_request(&tx->vctx, &w->req, &w->why);
    if (!payload)
        return true;
    if (w->error == 0) {
        w->buf = buffer_get(tx, payload);
        if (rx_read(tx, w->buf->data, payload) == 0)
            return true;
    } else if (rx_skip(tx, payload) == 0) {
        return true;
    }
    /* Truncated payload: nothing to answer. */
    buffer_put(tx, w->buf);
    w->buf = NULL;
    return false;
}

/* True for a request cheap enough to run in a batch behind others. */
static bool batchable(const NbdRequest *req)
{
    return (req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) &&
           req->length <= BATCH_IO_MAX;
}

/* True for a request that may run on the receiving thread while the
 * backend is fast: small I/O, and BLOCK_STATUS (a client walking a map
 * waits for each answer, so a thread hand-off doubles its latency). */
static bool quick(const NbdRequest *req)
{
    return batchable(req) || req->type == NBD_CMD_BLOCK_STATUS;
}

/* True when the read-ahead buffer holds the whole next request, header
 * and payload, and it may join a batch that already has write_bytes of
 * WRITE payload. */
static bool next_request_buffered(Tx *tx, uint64_t write_bytes)
{
    bool extended = tx->c->extended;
    size_t hsize = extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
    size_t have = tx->rlen - tx->rpos;
    NbdRequest req;
    if (have < hsize || !nbd_parse_request(tx->rbuf + tx->rpos, extended, &req))
        return false;
    uint64_t max_write = g_atomic_int_get(&tx->writes_defer) ? BATCH_DEFERRED_WRITE_BYTES : BATCH_WRITE_BYTES;
    if (req.type == NBD_CMD_WRITE && write_bytes + req.length > max_write)
        return false;
    return batchable(&req) && have - hsize >= nbd_request_payload_length(&req, extended);
}

/* ---- Request threads ---- */

static gpointer request_thread(gpointer opaque);

/* Starts one more request thread when nobody is queued up to receive. */
static void maybe_add_thread(Tx *tx)
{
    if (g_atomic_int_get(&tx->waiting_to_receive) > 0 || tx->n_threads >= MAX_THREADS)
        return;
    GThread *t = g_thread_try_new("nbd-request", request_thread, tx, NULL);
    if (t)
        tx->threads[tx->n_threads++] = t;
}

/* Leader/follower: each thread takes the receive lock, reads one request
 * (header and payload, straight into its buffer), hands the socket to the
 * next thread and executes the request itself.  No queue sits between
 * reading and executing, so a request costs no thread hand-off, and up to
 * MAX_THREADS requests run in parallel and complete in any order. */
/* Reads one request, then while they are quick and wholly read ahead up to
 * BATCH_MAX - 1 more (recv_lock held).  Sets *n to the count read; false
 * when receiving is over (the *n requests read still need running). */
static bool receive_batch(Tx *tx, Work *batch, unsigned *n)
{
    bool ok = !tx->stopping;
    uint64_t write_bytes = 0;
    *n = 0;
    while (ok) {
        batch[*n] = (Work){ 0 };
        ok = receive_request(tx, &batch[*n]);
        if (ok) {
            if (batch[*n].req.type == NBD_CMD_WRITE)
                write_bytes += batch[*n].req.length;
            ++*n;
        }
        /* A slow backend (a network store: rbd, an NBD target) runs
         * requests in parallel instead: a batch would serialise them. */
        if (*n == BATCH_MAX || !batchable(&batch[0].req) || !next_request_buffered(tx, write_bytes) ||
            g_atomic_int_get(&tx->avg_request_ns) >= INLINE_MAX_NS)
            break;
    }
    return ok;
}

/* A batch whose replies (and payload buffers) wait for writes its
 * requests set off and did not wait for: a write-blocking mirror's copies
 * to its target (block/io-defer.h). */
typedef struct Deferred {
    IoDefer *defer;
    GByteArray *replies;
} Deferred;

/* Each thread's reply buffer for such batches (one at a time), kept. */
static GPrivate deferred_replies = G_PRIVATE_INIT((GDestroyNotify)g_byte_array_unref);

static GByteArray *deferred_replies_get(void)
{
    GByteArray *a = g_private_get(&deferred_replies);
    if (!a) {
        a = g_byte_array_sized_new(BATCH_MAX * 64);
        g_private_set(&deferred_replies, a);
    }
    g_byte_array_set_size(a, 0);
    return a;
}

/* Sends a batch's replies once what it deferred is done, and gives its
 * buffers back. */
static void finish_deferred(Tx *tx, Work *batch, unsigned n, Deferred *d)
{
    io_defer_wait(d->defer);
    reply_batch = d->replies;
    for (unsigned i = 0; i < n; i++) {
        if (batch[i].async)
            reply_async(tx, &batch[i]);
        buffer_put(tx, batch[i].buf);
    }
    reply_batch = NULL;
    if (d->replies->len) {
        struct iovec iov = { d->replies->data, d->replies->len };
        send_locked_iov(tx, &iov, 1);
    }
    *d = (Deferred){ 0 };
}

/* True if a batch has a read or write, which may finish later: on an nbd
 * node, or a write-blocking mirror's write-through (block/io-defer.h). */
static bool has_io(const Work *batch, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if ((batch[i].req.type == NBD_CMD_WRITE || batch[i].req.type == NBD_CMD_READ) && !batch[i].error)
            return true;
    return false;
}

/* Runs n requests; several send their replies together.  Reads and writes
 * of a quick batch may defer their completion: with `held`, such a batch is
 * left there, its replies unsent (false; finish_deferred answers it),
 * otherwise this waits for them. */
static bool run_batch(Tx *tx, Work *batch, unsigned n, Deferred *held)
{
    if (n == 0)
        return true;
    bool timed = quick(&batch[0].req);
    uint64_t t0 = timed ? now_ns() : 0;
    Deferred d = { 0 };
    bool pending = false;
    if (timed && has_io(batch, n)) {
        d.defer = io_defer_open();
        d.replies = deferred_replies_get();
        reply_batch = d.replies;
        for (unsigned i = 0; i < n; i++)
            execute(tx, &batch[i]);
        reply_batch = NULL;
        pending = io_defer_close(d.defer);
        g_atomic_int_set(&tx->writes_defer, pending);
    } else if (n == 1) {
        execute(tx, &batch[0]);
        buffer_put(tx, batch[0].buf);
    } else {
        g_autoptr(GByteArray) replies = g_byte_array_sized_new(n * 64);
        reply_batch = replies;
        for (unsigned i = 0; i < n; i++) {
            execute(tx, &batch[i]);
            buffer_put(tx, batch[i].buf);
        }
        reply_batch = NULL;
        struct iovec iov = { replies->data, replies->len };
        send_locked_iov(tx, &iov, 1);
    }
    if (timed) {
        /* What the requests themselves took: a deferred write's completion
         * is not the backend's speed. */
        uint64_t per = MIN((now_ns() - t0) / n, (uint64_t)G_MAXINT / 8);
        gint avg = g_atomic_int_get(&tx->avg_request_ns);
        g_atomic_int_set(&tx->avg_request_ns, (gint)((avg * 7 + (gint)per) / 8));
    }
    if (pending && held) {
        *held = d;
        return false;
    }
    if (d.defer)
        finish_deferred(tx, batch, n, &d);
    return true;
}

/* True when a batch just read can run on the receiving thread. */
static bool run_inline(Tx *tx, const Work *batch, unsigned n)
{
    return n > 0 && quick(&batch[0].req) && g_atomic_int_get(&tx->avg_request_ns) < INLINE_MAX_NS;
}

/* Leader/follower: each thread takes the receive lock, reads requests
 * (header and payload, straight into its buffer), hands the socket to the
 * next thread and executes them itself.  No queue sits between reading and
 * executing, so a request costs no thread hand-off, and up to MAX_THREADS
 * requests run in parallel and complete in any order.  Quick requests on a
 * fast backend are run by the receiving thread without a hand-off at all. */
static gpointer request_thread(gpointer opaque)
{
    Tx *tx = opaque;
    Work batch[BATCH_MAX];
    for (;;) {
        unsigned n;
        g_atomic_int_inc(&tx->waiting_to_receive);
        g_mutex_lock(&tx->recv_lock);
        g_atomic_int_dec_and_test(&tx->waiting_to_receive);
        Deferred held = { 0 };
        bool ok = receive_batch(tx, batch, &n);
        while (ok && run_inline(tx, batch, n)) {
            tx->inline_mode = true;
            /* A batch waiting for deferred writes is answered after the
             * next thread took over receiving. */
            if (!run_batch(tx, batch, n, &held))
                break;
            ok = receive_batch(tx, batch, &n);
        }
        tx->inline_mode = false;
        if (!ok)
            tx->stopping = true; /* DISC or EOF: requests already read still finish */
        else
            maybe_add_thread(tx);
        g_mutex_unlock(&tx->recv_lock);
        if (held.defer)
            finish_deferred(tx, batch, n, &held);
        else
            run_batch(tx, batch, n, NULL);
        if (!ok)
            break;
    }
    return NULL;
}

void nbd_transmission(NbdConn *c)
{
    Tx *tx = g_new0(Tx, 1);
    tx->c = c;
    tx->vctx = (NbdValidateContext){
        .size = c->size,
        .eflags = c->eflags,
        .structured = c->structured,
        .extended = c->extended,
        .has_meta_contexts = c->meta_selected && c->meta_selected->len > 0,
        .min_block = c->min_block,
        .max_payload = c->max_payload,
    };
    g_mutex_init(&tx->recv_lock);
    g_mutex_init(&tx->buf_lock);
    g_cond_init(&tx->buf_cond);
    g_mutex_init(&tx->send_lock);

    /* The connection thread is the first request thread; the others are
     * started on demand and joined here once receiving has stopped. */
    request_thread(tx);
    g_mutex_lock(&tx->recv_lock);
    unsigned n = tx->n_threads;
    g_mutex_unlock(&tx->recv_lock);
    for (unsigned i = 0; i < n; i++)
        g_thread_join(tx->threads[i]);

    buffers_free_all(tx);
    g_mutex_clear(&tx->recv_lock);
    g_mutex_clear(&tx->buf_lock);
    g_cond_clear(&tx->buf_cond);
    g_mutex_clear(&tx->send_lock);
    g_free(tx);
}
