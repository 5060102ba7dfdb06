/* The raw format driver: passes I/O through to its `file` child, optionally
 * restricted to a window [offset, offset+size) of it. */
#include "block/driver.h"
#include "block/node.h"
#include "block/child-ref.h"
#include "block/options.h"
#include "block/debug-event.h"

#include <errno.h>

typedef struct RawState {
    BlockNode *self, *child;
    uint64_t offset, size;
    bool fixed_size;     /* the `size` option was given */
    BlockFlushGen flush_gen;
} RawState;

static void *raw_open_over(BlockNode *self, BlockNode *child, bool created, const BlockdevOptionsRaw *opts,
                           bool read_only, GError **errp);

static void *raw_open(BlockNode *self, const BlockdevOptionsRaw *opts, bool read_only, GError **errp)
{
    bool created;
    BlockNode *child = node_open_child(self, opts->file, "-file", &created, errp);
    if (!child)
        return NULL;
    void *s = raw_open_over(self, child, created, opts, read_only, errp);
    /* A child made from nested options leaves with its parent (or its failure). */
    if (!s && created)
        node_delete(node_name(child), NULL);
    return s;
}

static void *raw_open_over(BlockNode *self, BlockNode *child, bool created, const BlockdevOptionsRaw *opts,
                           bool read_only, GError **errp)
{
    uint64_t child_size = node_size(child);
    uint64_t offset = 0, size = UINT64_MAX;
    if ((opts->has_offset && !block_option_size("offset", opts->offset, &offset, errp)) ||
        (opts->has_size && !block_option_size("size", opts->size, &size, errp)))
        return NULL;
    if (offset > child_size) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Offset (%" G_GUINT64_FORMAT ") cannot be greater than size of the "
                    "containing file (%" G_GUINT64_FORMAT ")", (guint64)offset, (guint64)child_size);
        return NULL;
    }
    if (size == UINT64_MAX)
        size = child_size - offset;
    if (size > child_size - offset) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "The sum of offset (%" G_GUINT64_FORMAT ") and size (%" G_GUINT64_FORMAT
                    ") has to be smaller or equal to the actual size of the containing file (%"
                    G_GUINT64_FORMAT ")", (guint64)offset, (guint64)size, (guint64)child_size);
        return NULL;
    }
    if (!read_only && node_read_only(child)) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_READ_ONLY,
                    "Node '%s' is read-only; open '%s' with read-only=on",
                    node_name(child), node_name(self));
        return NULL;
    }
    /* QEMU: the whole file is a filtered child, a window of it a data child. */
    NodeChildRole role = offset || opts->has_size ? NODE_CHILD_DATA : NODE_CHILD_FILTERED;
    if (!(created ? node_add_implicit_child : node_add_child)(self, child, role, errp))
        return NULL;
    RawState *s = g_new0(RawState, 1);
    s->self = self;
    s->child = child;
    s->offset = offset;
    s->size = size;
    s->fixed_size = opts->has_size;
    return s;
}

static void raw_close(void *opaque) { g_free(opaque); }
/* Without a size option the file's current length counts (QEMU's
 * raw_getlength), so a resized file resizes the raw node above it. */
static int64_t raw_get_size(void *opaque)
{
    RawState *s = opaque;
    if (!s->fixed_size && s->child) {
        uint64_t child = node_size(s->child);
        s->size = child > s->offset ? child - s->offset : 0;
    }
    return (int64_t)s->size;
}

static const NodeCaps *child_caps(void *opaque) { return node_caps(((RawState *)opaque)->child); }
static int raw_can_write(void *o) { return !node_read_only(((RawState *)o)->child); }
static int raw_can_flush(void *o) { return child_caps(o)->can_flush; }
static int raw_can_trim(void *o) { return child_caps(o)->can_trim; }
static int raw_can_zero(void *o) { return child_caps(o)->can_zero; }
static int raw_can_fast_zero(void *o) { return child_caps(o)->can_fast_zero; }
static int raw_can_fua(void *o) { return child_caps(o)->fua ? BLOCK_SUPPORT_NATIVE : BLOCK_SUPPORT_NONE; }
static int raw_can_cache(void *o) { return child_caps(o)->cache ? BLOCK_SUPPORT_NATIVE : BLOCK_SUPPORT_NONE; }
static int raw_can_extents(void *o) { return child_caps(o)->can_extents; }
static int raw_can_multi_conn(void *o) { return child_caps(o)->can_multi_conn; }
static int raw_is_rotational(void *o) { return child_caps(o)->is_rotational; }

static int raw_block_size(void *o, uint32_t *min, uint32_t *pref, uint32_t *max)
{
    const NodeCaps *c = child_caps(o);
    *min = c->block_min;
    *pref = c->block_preferred;
    *max = c->block_max;
    return 0;
}

static int raw_pread(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    RawState *s = o;
    node_debug_event(s->child, BLKDBG_READ_AIO);
    return node_pread(s->child, buf, count, offset + s->offset);
}

static int raw_pwrite(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    RawState *s = o;
    node_debug_event(s->child, BLKDBG_WRITE_AIO);
    block_flush_gen_write(&s->flush_gen);
    return node_pwrite(s->child, buf, count, offset + s->offset, flags);
}

/* The same for a deferral scope's requests (block/io-defer.h): the child
 * finishes them, asynchronously if it can (an nbd child); over a child that
 * cannot (a file), the node layer calls raw_pread/raw_pwrite instead. */
static bool raw_async_possible(void *o, bool write)
{
    return node_async_possible(((RawState *)o)->child, write);
}

static int raw_pread_async(void *o, void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                           void (*done)(void *opaque, int r), void *opaque)
{
    RawState *s = o;
    node_debug_event(s->child, BLKDBG_READ_AIO);
    node_pread_async(s->child, buf, count, offset + s->offset, done, opaque);
    return 0;
}

static int raw_pwrite_async(void *o, const void *buf, uint32_t count, uint64_t offset, uint32_t flags,
                            void (*done)(void *opaque, int r), void *opaque)
{
    RawState *s = o;
    node_debug_event(s->child, BLKDBG_WRITE_AIO);
    block_flush_gen_write(&s->flush_gen);
    node_pwrite_async(s->child, buf, count, offset + s->offset, flags, done, opaque);
    return 0;
}

/* The debug events QEMU raises on the way to the child (a blkdebug child
 * counts them): flush_to_disk only if something was written since. */
static int raw_flush(void *o, uint32_t flags)
{
    RawState *s = o;
    if (node_read_only(s->self))
        return node_flush(s->child);
    bool needed;
    node_debug_event(s->child, BLKDBG_FLUSH_TO_OS);
    unsigned gen = block_flush_gen_begin(&s->flush_gen, &needed);
    if (needed)
        node_debug_event(s->child, BLKDBG_FLUSH_TO_DISK);
    int r = node_flush(s->child);
    if (r == 0)
        block_flush_gen_done(&s->flush_gen, gen);
    return r;
}

static int raw_trim(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    RawState *s = o;
    block_flush_gen_write(&s->flush_gen);
    return node_trim(s->child, count, offset + s->offset, flags);
}

static int raw_zero(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    RawState *s = o;
    block_flush_gen_write(&s->flush_gen);
    return node_zero(s->child, count, offset + s->offset, flags);
}

static int raw_cache(void *o, uint32_t count, uint64_t offset, uint32_t flags)
{
    RawState *s = o;
    return node_cache(s->child, count, offset + s->offset);
}

/* Asks the child in its own coordinates, then shifts the answer back. */
static int raw_extents(void *o, uint32_t count, uint64_t offset, uint32_t flags, BlockExtents *out)
{
    RawState *s = o;
    BlockExtents *inner = extents_new(offset + s->offset, s->offset + s->size);
    if (!inner)
        return -errno;
    int r = node_block_status(s->child, count, offset + s->offset, flags, inner);
    for (size_t i = 0; r == 0 && i < extents_count(inner); i++) {
        BlockExtent e = extents_get(inner, i);
        r = extents_add(out, e.offset - s->offset, e.length, e.type);
    }
    extents_free(inner);
    return r;
}

/* The image file is the child's, unless only a window of it is used. */
static void raw_image_info(void *o, BlockImageInfo *info)
{
    RawState *s = o;
    if (s->offset == 0 && s->size == node_size(s->child))
        info->filename = node_filename(s->child);
}

static int raw_read_fd(void *o, uint32_t count, uint64_t offset, int *fd, uint64_t *fd_offset)
{
    RawState *s = o;
    return node_read_fd(s->child, count, offset + s->offset, fd, fd_offset);
}

static void raw_replace_child(void *o, BlockNode *old_child, BlockNode *new_child)
{
    RawState *s = o;
    g_assert(s->child == old_child);
    s->child = new_child;
    block_flush_gen_write(&s->flush_gen);  /* the next flush reaches the new child */
}

/* block_resize: the file follows, past the window's offset (QEMU's raw_co_truncate). */
static bool raw_truncate(void *opaque, uint64_t size, GError **errp)
{
    RawState *s = opaque;
    if (s->fixed_size) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "Cannot resize fixed-size raw disks");
        return false;
    }
    if (INT64_MAX - size < s->offset) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "Disk size too large for the chosen offset");
        return false;
    }
    if (!node_truncate(s->child, s->offset + size, errp))
        return false;
    s->size = size;
    return true;
}

const BlockDriver block_driver_raw = {
    .name = "raw",
    .type = BLOCKDEV_DRIVER_RAW,
    .open.raw = raw_open,
    .close = raw_close,
    .reopen = block_driver_reopen_passthrough,
    .get_size = raw_get_size,
    .can_write = raw_can_write,
    .can_flush = raw_can_flush,
    .can_trim = raw_can_trim,
    .can_zero = raw_can_zero,
    .can_fast_zero = raw_can_fast_zero,
    .can_fua = raw_can_fua,
    .can_cache = raw_can_cache,
    .can_extents = raw_can_extents,
    .can_multi_conn = raw_can_multi_conn,
    .is_rotational = raw_is_rotational,
    .block_size = raw_block_size,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pread_async = raw_pread_async,
    .pwrite_async = raw_pwrite_async,
    .async_possible = raw_async_possible,
    .flush = raw_flush,
    .trim = raw_trim,
    .zero = raw_zero,
    .extents = raw_extents,
    .cache = raw_cache,
    .read_fd = raw_read_fd,
    .image_info = raw_image_info,
    .replace_child = raw_replace_child,
    .truncate = raw_truncate,
};
