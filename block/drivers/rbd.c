/* driver=rbd: a Ceph RBD image through librbd (QEMU's rbd driver).
 *
 * Options as QEMU 7.2's BlockdevOptionsRbd without `encrypt`: pool,
 * namespace, image, snapshot (read-only), conf, user, key-secret (a secret
 * object holding the cephx key), auth-client-required, server (monitors).
 * Connecting, option handling and the exclusive lock are in rbd-connect.c;
 * this file is the data path.
 *
 * Every request is one librbd AIO: the request thread submits it and sleeps
 * on its own completion, so any number of request threads have requests in
 * flight on the one image handle at once (librbd is thread-safe), and a
 * request holds its thread only while its own completion is pending.
 * Errors: librbd's errno values that mean something to a client stay
 * (EROFS while another client holds the lock, ENOSPC, ...); the others --
 * ETIMEDOUT once rados_osd_op_timeout passes in an outage, ESHUTDOWN for a
 * blocklisted client -- become EIO (NBD would call them EINVAL or "server
 * shutting down"), and stderr names the real one. */
#include "block/driver.h"
#include "block/drivers/rbd.h"
#include "block/json-filename.h"
#include "block/node.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

typedef enum { RBD_OP_READ, RBD_OP_WRITE, RBD_OP_FLUSH, RBD_OP_DISCARD, RBD_OP_ZERO } RbdOp;

static const char *const op_names[] = { "read", "write", "flush", "discard", "write-zeroes" };

/* One line on stderr per failure, at most one every 10 s per image (an
 * outage fails every request in flight), with a count of the others. */
static void log_failure(RbdImage *s, RbdOp op, uint64_t offset, uint64_t count, int err)
{
    gint64 now = g_get_monotonic_time();
    g_mutex_lock(&s->log_lock);
    if (s->last_log && now - s->last_log < 10 * G_TIME_SPAN_SECOND) {
        s->unlogged++;
        g_mutex_unlock(&s->log_lock);
        return;
    }
    unsigned skipped = s->unlogged;
    s->unlogged = 0;
    s->last_log = now;
    g_mutex_unlock(&s->log_lock);
    g_autofree char *more = skipped ? g_strdup_printf(" (and %u more since the last message)", skipped) : NULL;
    fprintf(stderr, "blockd: rbd %s: %s of %" PRIu64 " bytes at %" PRIu64 " failed: %s%s\n",
            s->spec, op_names[op], count, offset, g_strerror(err), more ? more : "");
}

static int client_errno(int err)
{
    switch (err) {
    case EROFS: case EPERM: case ENOSPC: case EDQUOT: case ENOMEM: case EINVAL: case ENOTSUP:
        return err;
    default:
        return EIO;
    }
}

/* Submits one AIO and waits for its completion: bytes (reads) or 0, or -errno
 * (client_errno). */
static ssize_t rbd_request(RbdImage *s, RbdOp op, void *buf, uint64_t count, uint64_t offset, uint32_t flags)
{
    rbd_completion_t c;
    int r = rbd_aio_create_completion(NULL, NULL, &c);
    if (r < 0)
        return r;
    switch (op) {
    case RBD_OP_READ:
        r = rbd_aio_read(s->image, offset, count, buf, c);
        break;
    case RBD_OP_WRITE:
        r = rbd_aio_write(s->image, offset, count, buf, c);
        break;
    case RBD_OP_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    case RBD_OP_DISCARD:
        r = rbd_aio_discard(s->image, offset, count, c);
        break;
    case RBD_OP_ZERO:
        /* Without MAY_TRIM the zeroes must stay allocated (QEMU's mapping). */
        r = rbd_aio_write_zeroes(s->image, offset, count, c,
                                 (flags & BLOCK_FLAG_MAY_TRIM) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, 0);
        break;
    }
    ssize_t ret = r;
    if (r == 0) {
        rbd_aio_wait_for_complete(c);
        ret = rbd_aio_get_return_value(c);
    }
    rbd_aio_release(c);
    if (ret < 0) {
        log_failure(s, op, offset, count, (int)-ret);
        ret = -client_errno((int)-ret);
    }
    return ret;
}

static int rbd_drv_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    ssize_t r = rbd_request(o, RBD_OP_READ, buf, count, offset, 0);
    if (r < 0)
        return (int)r;
    if ((uint64_t)r < count) /* past the end of a shrunk image: zeroes, as QEMU */
        memset((char *)buf + r, 0, count - (size_t)r);
    return 0;
}

static int rbd_drv_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    ssize_t r = rbd_request(o, RBD_OP_WRITE, (void *)buf, count, offset, 0);
    return r < 0 ? (int)r : 0;
}

static int rbd_drv_flush(void *o, uint32_t flags)
{
    ssize_t r = rbd_request(o, RBD_OP_FLUSH, NULL, 0, 0, 0);
    return r < 0 ? (int)r : 0;
}

static int rbd_drv_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    ssize_t r = rbd_request(o, RBD_OP_DISCARD, NULL, count, offset, 0);
    return r < 0 ? (int)r : 0;
}

static int rbd_drv_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    ssize_t r = rbd_request(o, RBD_OP_ZERO, NULL, count, offset, flags);
    return r < 0 ? (int)r : 0;
}

/* Block status from the object map (fast-diff), as QEMU: whole objects
 * that exist are data, the others read as zeroes (holes). */
typedef struct DiffState {
    BlockExtents *extents;
    uint64_t from;   /* the request's offset: nothing before it is added */
    uint64_t next;   /* end of what has been described */
    uint64_t end;
    int error;
} DiffState;

#define DIFF_STOP (-9000) /* QEMU's value for ending rbd_diff_iterate2 early */

static int diff_add(DiffState *d, uint64_t offset, uint64_t length, uint32_t type)
{
    if (offset < d->from) {
        if (offset + length <= d->from)
            return 0;
        length -= d->from - offset;
        offset = d->from;
    }
    int r = extents_add(d->extents, offset, length, type);
    if (r < 0)
        d->error = r;
    return r;
}

static int diff_cb(uint64_t offset, size_t length, int exists, void *opaque)
{
    DiffState *d = opaque;
    if (offset > d->next && diff_add(d, d->next, offset - d->next, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO) < 0)
        return DIFF_STOP;
    if (diff_add(d, offset, length, exists ? 0 : BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO) < 0)
        return DIFF_STOP;
    d->next = offset + length;
    return d->next >= d->end ? DIFF_STOP : 0;
}

/* True if the object map can answer for this image right now (QEMU's checks,
 * including its workaround for librbd < 1.17 reporting wrong offsets for
 * unaligned requests on striped images and clones, tracker.ceph.com/issues/53784). */
static bool fast_diff_usable(RbdImage *s)
{
    uint64_t features, flags;
    if (rbd_get_features(s->image, &features) < 0 || !(features & RBD_FEATURE_FAST_DIFF))
        return false;
    if (rbd_get_flags(s->image, &flags) < 0 || (flags & RBD_FLAG_FAST_DIFF_INVALID))
        return false;
#if LIBRBD_VERSION_CODE < LIBRBD_VERSION(1, 17, 0)
    if (features & RBD_FEATURE_STRIPINGV2)
        return false;
    rbd_linked_image_spec_t parent;
    rbd_snap_spec_t snap;
    int r = rbd_get_parent(s->image, &parent, &snap);
    if (r == 0) {
        rbd_linked_image_spec_cleanup(&parent);
        rbd_snap_spec_cleanup(&snap);
    }
    if (r != -ENOENT)
        return false;
#endif
    return true;
}

static int rbd_drv_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *extents)
{
    RbdImage *s = o;
    if (!fast_diff_usable(s))
        return extents_add(extents, offset, count, 0);
    /* Whole objects: ask from the start of the object holding `offset`. */
    uint64_t start = offset - offset % s->object_size;
    DiffState d = { .extents = extents, .from = offset, .next = start, .end = offset + count };
    int r = rbd_diff_iterate2(s->image, NULL, start, d.end - start, 1, 1, diff_cb, &d);
    if (d.error)
        return d.error;
    if (r < 0 && r != DIFF_STOP) {
        /* Like QEMU, a failed query is no error: everything is data. */
        if (d.next > offset)
            return 0;
        return extents_add(extents, offset, count, 0);
    }
    if (d.next < d.end)
        return extents_add(extents, d.next, d.end - d.next, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
    return 0;
}

/* QEMU grows an image that a write goes past (a qcow2 on RBD appending). */
static int rbd_drv_grow(void *o, uint64_t size)
{
    RbdImage *s = o;
    int r = rbd_resize(s->image, size);
    if (r == 0)
        s->size = size;
    return r;
}

/* block_resize (QEMU's qemu_rbd_co_truncate): librbd drops the objects past a new, smaller end. */
static bool rbd_drv_truncate(void *o, uint64_t size, GError **errp)
{
    int r = rbd_drv_grow(o, size);
    if (r < 0)
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(-r), "Failed to resize file: %s", g_strerror(-r));
    return r == 0;
}

static void rbd_drv_close(void *o) { rbd_image_close(o); }
static bool rbd_drv_reopen(void *o, bool read_only, GError **errp) { return rbd_image_reopen(o, read_only, errp); }
static int64_t rbd_drv_get_size(void *o) { return (int64_t)((RbdImage *)o)->size; }
static int rbd_drv_can_write(void *o) { return !((RbdImage *)o)->read_only; }
static int rbd_drv_yes(void *o) { return 1; }
static int rbd_drv_no(void *o) { return 0; }
static int rbd_drv_can_fua(void *o) { return BLOCK_SUPPORT_EMULATE; } /* librbd has no FUA: a flush */
static int rbd_drv_can_extents(void *o) { return ((RbdImage *)o)->fast_diff; }

/* QEMU's name for an rbd node (bdrv_refresh_filename): its driver and the
 * options rbd calls strong (qemu_rbd_strong_runtime_opts), in the order
 * QEMU adds them; what a qcow2 header records when an rbd image becomes
 * its backing file, and what qemu-img opens from it. */
static char *json_name(const BlockdevOptionsRbd *opts)
{
    g_autoptr(JsonObject) all = json_object_new();
    qapi_out_members_BlockdevOptionsRbd(all, opts);
    g_autoptr(JsonObject) strong = json_object_new();
    json_object_set_string_member(strong, "driver", "rbd");
    static const char *const keys[] = { "pool", "namespace", "image", "conf", "snapshot", "user", "server" };
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++)
        if (json_object_has_member(all, keys[i]))
            json_object_set_member(strong, keys[i], json_node_copy(json_object_get_member(all, keys[i])));
    return block_json_filename(strong);
}

static void *rbd_drv_open(BlockNode *self, const BlockdevOptionsRbd *opts, const BlockdevCacheOptions *cache,
                          bool read_only, GError **errp)
{
    RbdImage *s = rbd_image_open(opts, cache, read_only, errp);
    if (s)
        s->json_name = json_name(opts);
    return s;
}

static void rbd_drv_image_info(void *o, BlockImageInfo *info)
{
    info->filename = ((RbdImage *)o)->json_name;
}

const BlockDriver block_driver_rbd = {
    .name = "rbd",
    .type = BLOCKDEV_DRIVER_RBD,
    .open.rbd = rbd_drv_open,
    .close = rbd_drv_close,
    .reopen = rbd_drv_reopen,
    .get_size = rbd_drv_get_size,
    .can_write = rbd_drv_can_write,
    .can_flush = rbd_drv_yes,
    .can_trim = rbd_drv_can_write,
    .can_zero = rbd_drv_can_write,
    .can_fast_zero = rbd_drv_yes,
    .can_fua = rbd_drv_can_fua,
    .can_extents = rbd_drv_can_extents,
    /* One image handle serves every user: a flush covers all their writes. */
    .can_multi_conn = rbd_drv_yes,
    .is_rotational = rbd_drv_no,
    .pread = rbd_drv_pread,
    .pwrite = rbd_drv_pwrite,
    .flush = rbd_drv_flush,
    .trim = rbd_drv_trim,
    .zero = rbd_drv_zero,
    .extents = rbd_drv_extents,
    .image_info = rbd_drv_image_info,
    .grow = rbd_drv_grow,
    .truncate = rbd_drv_truncate,
    .create = rbd_image_create,
};
