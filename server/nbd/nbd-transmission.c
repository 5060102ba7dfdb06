/* The transmission phase (reference §6-§8, §14).
 *
 * The connection thread is the receiver: it reads request headers through
 * a small read-ahead buffer (several headers per recv at high queue depth)
 * and WRITE payloads straight into a reusable I/O buffer, validates them and
 * queues them.  A few worker threads per connection (spawned on demand)
 * execute requests and may complete out of order; each reply is written with
 * one writev (or header + sendfile) under the send lock. */
#include "server/nbd/nbd-conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "server/nbd/nbd-wire.h"

#define MAX_WORKERS        8
#define MAX_IN_FLIGHT      64
#define MAX_IN_FLIGHT_BYTES (128u * 1024 * 1024)
#define READ_AHEAD_SIZE    (64 * 1024)
#define BUFFER_CLASSES     14          /* 4 KiB << 0 .. 4 KiB << 13 = 32 MiB */
#define MAX_CACHED_BYTES   (64u * 1024 * 1024)
/* Reads at least this large first ask base:allocation whether they are a hole. */
#define HOLE_CHECK_MIN     (64 * 1024)

typedef struct IoBuffer {
    struct IoBuffer *next;
    unsigned klass;
    void *data;
} IoBuffer;

typedef struct Work {
    struct Work *next;
    NbdRequest req;
    uint32_t error;          /* validation result, 0 = execute */
    const char *why;
    IoBuffer *buf;           /* WRITE payload */
    uint64_t cost;           /* bytes counted against MAX_IN_FLIGHT_BYTES */
} Work;

typedef struct Tx {
    NbdConn *c;
    NbdValidateContext vctx;
    const ExportMetaContext *hole_ctx; /* base:allocation, when cheap to ask */

    GMutex lock;             /* queue, counters, workers */
    GCond work_cond;
    GCond space_cond;
    Work *head, *tail;
    unsigned in_flight;
    uint64_t in_flight_bytes;
    bool receiver_waiting;
    unsigned n_workers, n_idle;
    GThread *workers[MAX_WORKERS];
    bool stopping;

    GMutex buf_lock;
    IoBuffer *free_bufs[BUFFER_CLASSES];
    uint64_t cached_bytes;

    GMutex send_lock;
    gint dead;               /* the socket failed: skip sends */

    uint8_t rbuf[READ_AHEAD_SIZE];
    size_t rpos, rlen;
} Tx;

/* ---- I/O buffers (per-connection free lists by power-of-two class) ---- */

static unsigned buffer_class(size_t len)
{
    unsigned k = 0;
    while (k < BUFFER_CLASSES - 1 && ((size_t)4096 << k) < len)
        k++;
    return k;
}

static IoBuffer *buffer_get(Tx *tx, size_t len)
{
    unsigned k = buffer_class(len);
    g_mutex_lock(&tx->buf_lock);
    IoBuffer *b = tx->free_bufs[k];
    if (b) {
        tx->free_bufs[k] = b->next;
        tx->cached_bytes -= (size_t)4096 << k;
    }
    g_mutex_unlock(&tx->buf_lock);
    if (!b) {
        b = g_new0(IoBuffer, 1);
        b->klass = k;
        /* Page-aligned so O_DIRECT backends can use it as is. */
        if (posix_memalign(&b->data, 4096, (size_t)4096 << k) != 0)
            g_error("nbd: out of memory for a %zu byte buffer", (size_t)4096 << k);
    }
    return b;
}

static void buffer_put(Tx *tx, IoBuffer *b)
{
    if (!b)
        return;
    size_t size = (size_t)4096 << b->klass;
    g_mutex_lock(&tx->buf_lock);
    if (tx->cached_bytes + size <= MAX_CACHED_BYTES) {
        b->next = tx->free_bufs[b->klass];
        tx->free_bufs[b->klass] = b;
        tx->cached_bytes += size;
        b = NULL;
    }
    g_mutex_unlock(&tx->buf_lock);
    if (b) {
        free(b->data);
        g_free(b);
    }
}

static void buffers_free_all(Tx *tx)
{
    for (unsigned k = 0; k < BUFFER_CLASSES; k++) {
        while (tx->free_bufs[k]) {
            IoBuffer *b = tx->free_bufs[k];
            tx->free_bufs[k] = b->next;
            free(b->data);
            g_free(b);
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

static void send_locked_iov(Tx *tx, const struct iovec *iov, int n)
{
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

/* True (and replied) when base:allocation says the whole range reads as zeroes. */
static bool read_as_hole(Tx *tx, const NbdRequest *req)
{
    NbdConn *c = tx->c;
    if (!tx->hole_ctx || !c->structured || req->length < HOLE_CHECK_MIN ||
        (req->flags & NBD_CMD_FLAG_DF))
        return false;
    BlockExtents *e = extents_new(req->offset, c->size);
    bool hole = e && tx->hole_ctx->block_status(c->exp, tx->hole_ctx, req->length, req->offset,
                                                BLOCK_FLAG_REQ_ONE, e) == 0 &&
                extents_count(e) > 0;
    if (hole) {
        BlockExtent x = extents_get(e, 0);
        hole = (x.type & BLOCK_EXTENT_ZERO) && x.offset == req->offset &&
               x.length >= req->length;
    }
    extents_free(e);
    if (!hole)
        return false;
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE + 12];
    size_t h = nbd_encode_chunk_header(hdr, c->extended, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_HOLE,
                                       req->cookie, req->offset, 12);
    nbd_put64(hdr + h, req->offset);
    nbd_put32(hdr + h + 8, (uint32_t)req->length);
    struct iovec iov = { hdr, h + 12 };
    send_locked_iov(tx, &iov, 1);
    return true;
}

static void do_read(Tx *tx, const NbdRequest *req)
{
    NbdConn *c = tx->c;
    uint32_t len = (uint32_t)req->length;
    uint8_t hdr[NBD_EXTENDED_REPLY_SIZE + 8];

    if (read_as_hole(tx, req))
        return;

    /* Zero copy: the header with MSG_MORE, then the file bytes. */
    int fd;
    uint64_t fd_offset;
    if (nbd_io_can_sendfile(&c->io) && export_read_fd(c->exp, len, req->offset, &fd, &fd_offset) == 0) {
        size_t h = read_reply_header(tx, req, hdr);
        g_mutex_lock(&tx->send_lock);
        if (!g_atomic_int_get(&tx->dead) &&
            (nbd_io_write(&c->io, hdr, h, true) < 0 ||
             nbd_io_sendfile(&c->io, fd, fd_offset, len) < 0)) {
            /* The header is out, so framing is lost: hard disconnect (§14). */
            mark_dead(tx);
        }
        g_mutex_unlock(&tx->send_lock);
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

static void execute(Tx *tx, Work *w)
{
    NbdConn *c = tx->c;
    const NbdRequest *req = &w->req;
    uint32_t fua = (req->flags & NBD_CMD_FLAG_FUA) ? BLOCK_FLAG_FUA : 0;

    if (w->error) {
        reply_error(tx, req, w->error, w->why);
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

/* ---- Workers ---- */

static gpointer worker_main(gpointer opaque)
{
    Tx *tx = opaque;
    g_mutex_lock(&tx->lock);
    for (;;) {
        while (!tx->head && !tx->stopping) {
            tx->n_idle++;
            g_cond_wait(&tx->work_cond, &tx->lock);
            tx->n_idle--;
        }
        Work *w = tx->head;
        if (!w)
            break;
        tx->head = w->next;
        if (!tx->head)
            tx->tail = NULL;
        g_mutex_unlock(&tx->lock);

        execute(tx, w);
        buffer_put(tx, w->buf);

        g_mutex_lock(&tx->lock);
        tx->in_flight--;
        tx->in_flight_bytes -= w->cost;
        if (tx->receiver_waiting)
            g_cond_signal(&tx->space_cond);
        g_free(w);
    }
    g_mutex_unlock(&tx->lock);
    return NULL;
}

static void enqueue(Tx *tx, Work *w)
{
    g_mutex_lock(&tx->lock);
    if (tx->tail)
        tx->tail->next = w;
    else
        tx->head = w;
    tx->tail = w;
    if (tx->n_idle > 0) {
        g_cond_signal(&tx->work_cond);
    } else if (tx->n_workers < MAX_WORKERS) {
        GThread *t = g_thread_try_new("nbd-worker", worker_main, tx, NULL);
        if (t)
            tx->workers[tx->n_workers++] = t;
    }
    g_mutex_unlock(&tx->lock);
}

/* Waits until `cost` more bytes and one more request fit in the budget. */
static void wait_for_room(Tx *tx, uint64_t cost)
{
    g_mutex_lock(&tx->lock);
    while (tx->in_flight > 0 && !g_atomic_int_get(&tx->dead) &&
           (tx->in_flight >= MAX_IN_FLIGHT || tx->in_flight_bytes + cost > MAX_IN_FLIGHT_BYTES)) {
        tx->receiver_waiting = true;
        g_cond_wait(&tx->space_cond, &tx->lock);
        tx->receiver_waiting = false;
    }
    tx->in_flight++;
    tx->in_flight_bytes += cost;
    g_mutex_unlock(&tx->lock);
}

/* ---- Receiving ---- */

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
        ssize_t n = nbd_io_read_some(&tx->c->io, tx->rbuf + tx->rlen, READ_AHEAD_SIZE - tx->rlen);
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

/* Reads and queues requests until DISC, end of stream or a framing error. */
static void receive_loop(Tx *tx)
{
    NbdConn *c = tx->c;
    size_t hsize = c->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
    uint8_t hdr[NBD_EXTENDED_REQUEST_SIZE];

    while (!g_atomic_int_get(&tx->dead)) {
        if (rx_read(tx, hdr, hsize) < 0)
            return;
        NbdRequest req;
        if (!nbd_parse_request(hdr, c->extended, &req)) {
            g_debug("nbd: bad request magic, disconnecting");
            nbd_io_shutdown(&c->io, SHUT_RDWR);
            return;
        }
        if (req.type == NBD_CMD_DISC)
            return;
        uint64_t payload = nbd_request_payload_length(&req, c->extended);
        if (payload > NBD_MAX_PAYLOAD_DRAIN) {
            g_debug("nbd: %" G_GUINT64_FORMAT " byte payload, disconnecting", payload);
            nbd_io_shutdown(&c->io, SHUT_RDWR);
            return;
        }
        Work *w = g_new0(Work, 1);
        w->req = req;
        w->error = nbd_validate_request(&tx->vctx, &req, &w->why);
        if (w->error == 0 && (req.type == NBD_CMD_READ || req.type == NBD_CMD_WRITE))
            w->cost = req.length;
        wait_for_room(tx, w->cost);
        int r = 0;
        if (payload && w->error == 0) {
            w->buf = buffer_get(tx, payload);
            r = rx_read(tx, w->buf->data, payload);
        } else if (payload) {
            r = rx_skip(tx, payload);
        }
        if (r < 0) {
            /* Truncated payload: nothing to answer. */
            buffer_put(tx, w->buf);
            g_mutex_lock(&tx->lock);
            tx->in_flight--;
            tx->in_flight_bytes -= w->cost;
            g_mutex_unlock(&tx->lock);
            g_free(w);
            return;
        }
        enqueue(tx, w);
    }
}

static const ExportMetaContext *find_context(Export *exp, const char *name)
{
    GPtrArray *contexts = export_meta_contexts(exp);
    for (unsigned i = 0; contexts && i < contexts->len; i++) {
        const ExportMetaContext *ctx = contexts->pdata[i];
        if (strcmp(ctx->name, name) == 0)
            return ctx;
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
    if (export_caps(c->exp)->can_extents)
        tx->hole_ctx = find_context(c->exp, "base:allocation");
    g_mutex_init(&tx->lock);
    g_mutex_init(&tx->buf_lock);
    g_mutex_init(&tx->send_lock);
    g_cond_init(&tx->work_cond);
    g_cond_init(&tx->space_cond);

    receive_loop(tx);

    /* DISC or end of stream: let the workers answer everything queued. */
    g_mutex_lock(&tx->lock);
    tx->stopping = true;
    g_cond_broadcast(&tx->work_cond);
    g_mutex_unlock(&tx->lock);
    for (unsigned i = 0; i < tx->n_workers; i++)
        g_thread_join(tx->workers[i]);

    buffers_free_all(tx);
    g_mutex_clear(&tx->lock);
    g_mutex_clear(&tx->buf_lock);
    g_mutex_clear(&tx->send_lock);
    g_cond_clear(&tx->work_cond);
    g_cond_clear(&tx->space_cond);
    g_free(tx);
}
