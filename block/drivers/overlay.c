/* driver=overlay: a copy-on-write overlay over a `backing` node, the
 * scratch target of pull-mode backups (fleecing; docs/backup.md).
 *
 * It records which clusters it holds.  Reads of held clusters come from
 * the scratch store, others from the backing node; writes go to the
 * scratch store (a partly written cluster is first filled from the
 * backing).  The scratch store is memory, or with `file` a node of at
 * least the same size (clusters at their own offsets; sparse files stay
 * small), so scratch space is only what was written here: for fleecing,
 * what guests overwrote since the checkpoint.
 *
 * Point in time: a reader of a cluster the overlay does not hold reads the
 * backing node under the read side of a lock that writes into the overlay
 * take exclusively; a backup's copy-before-write writes the old data here
 * before the guest's write reaches the backing node, so a read never sees
 * a guest write that landed after the checkpoint. */
#include "block/driver.h"
#include "block/node.h"
#include "block/child-ref.h"
#include "bitmaps/hbitmap.h"

#include <errno.h>
#include <string.h>

#define OVERLAY_CLUSTER (64u * 1024)

typedef struct Overlay {
    BlockNode *backing;
    BlockNode *file;     /* NULL: clusters live in `mem` */
    uint64_t size;
    GRWLock lock;
    HBitmap *held;       /* clusters stored here */
    GHashTable *mem;     /* cluster index -> OVERLAY_CLUSTER bytes */
} Overlay;

static void *overlay_open(BlockNode *self, const BlockdevOptionsOverlay *opts, bool read_only, GError **errp)
{
    BlockNode *backing = node_find_reference(opts->backing, errp);
    if (!backing)
        return NULL;
    BlockNode *file = NULL;
    if (opts->has_file && !(file = node_find_reference(opts->file, errp)))
        return NULL;
    if (file && (node_read_only(file) || node_size(file) < node_size(backing))) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "Scratch node '%s' must be writable and at least as large as '%s'",
                    node_name(file), node_name(backing));
        return NULL;
    }
    uint64_t size = node_size(backing);
    HBitmap *held = hbitmap_try_new((size + OVERLAY_CLUSTER - 1) / OVERLAY_CLUSTER);
    if (!held) {
        g_set_error(errp, G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                    "Cannot allocate the cluster map of an overlay over '%s': it is too large",
                    node_name(backing));
        return NULL;
    }
    /* QEMU's fleecing overlay is a qcow2 image over the source as backing. */
    if (!node_add_child(self, backing, NODE_CHILD_COW, errp) ||
        (file && !node_add_child(self, file, NODE_CHILD_STORAGE, errp))) {
        hbitmap_free(held);
        return NULL;          /* node_create drops an edge already added */
    }
    Overlay *o = g_new0(Overlay, 1);
    o->backing = backing;
    o->file = file;
    o->size = size;
    g_rw_lock_init(&o->lock);
    o->held = held;
    o->mem = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    return o;
}

static void overlay_close(void *opaque)
{
    Overlay *o = opaque;
    hbitmap_free(o->held);
    g_hash_table_destroy(o->mem);
    g_rw_lock_clear(&o->lock);
    g_free(o);
}

static int64_t overlay_get_size(void *opaque) { return (int64_t)((Overlay *)opaque)->size; }
static int overlay_can_write(void *opaque) { return 1; }
static int overlay_can_flush(void *opaque) { return 1; }

/* Bytes of cluster c that exist (the last cluster may be short). */
static uint32_t cluster_len(Overlay *o, uint64_t c)
{
    return (uint32_t)MIN((uint64_t)OVERLAY_CLUSTER, o->size - c * OVERLAY_CLUSTER);
}

/* Reads part of a held cluster. */
static int read_held(Overlay *o, uint64_t c, uint32_t skip, void *buf, uint32_t n)
{
    if (o->file)
        return node_pread(o->file, buf, n, c * OVERLAY_CLUSTER + skip);
    gint64 key = (gint64)c;
    memcpy(buf, (char *)g_hash_table_lookup(o->mem, &key) + skip, n);
    return 0;
}

static int overlay_pread(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Overlay *o = opaque;
    int r = 0;
    g_rw_lock_reader_lock(&o->lock);
    while (count > 0 && r == 0) {
        uint64_t c = offset / OVERLAY_CLUSTER;
        uint32_t skip = (uint32_t)(offset % OVERLAY_CLUSTER);
        uint32_t n = MIN(count, OVERLAY_CLUSTER - skip);
        if (hbitmap_get(o->held, c)) {
            r = read_held(o, c, skip, buf, n);
        } else {
            /* Merge a run of clusters not held into one backing read. */
            while (n < count && !hbitmap_get(o->held, (offset + n) / OVERLAY_CLUSTER))
                n = MIN(count, n + OVERLAY_CLUSTER);
            r = node_pread(o->backing, buf, n, offset);
        }
        buf = (char *)buf + n;
        offset += n;
        count -= n;
    }
    g_rw_lock_reader_unlock(&o->lock);
    return r;
}

/* Writes `data` (NULL: zeroes) over part of cluster c.  Exclusive lock held. */
static int write_cluster(Overlay *o, uint64_t c, uint32_t skip, const void *data, uint32_t n)
{
    uint32_t len = cluster_len(o, c);
    bool held = hbitmap_get(o->held, c);
    if (o->file) {
        int r = 0;
        if (!held && (skip > 0 || n < len)) {
            /* Fill the cluster from the backing first. */
            g_autofree void *fill = g_malloc(len);
            r = node_pread(o->backing, fill, len, c * OVERLAY_CLUSTER);
            if (r == 0)
                r = node_pwrite(o->file, fill, len, c * OVERLAY_CLUSTER, 0);
        }
        if (r == 0)
            r = data ? node_pwrite(o->file, data, n, c * OVERLAY_CLUSTER + skip, 0)
                     : node_zero(o->file, n, c * OVERLAY_CLUSTER + skip, 0);
        if (r == 0 && !held)
            hbitmap_set(o->held, c, 1);
        return r;
    }
    gint64 key = (gint64)c;
    char *mem = g_hash_table_lookup(o->mem, &key);
    if (!mem) {
        mem = g_malloc0(OVERLAY_CLUSTER);
        if (skip > 0 || n < len) {
            int r = node_pread(o->backing, mem, len, c * OVERLAY_CLUSTER);
            if (r < 0) {
                g_free(mem);
                return r;
            }
        }
        g_hash_table_insert(o->mem, g_memdup2(&key, sizeof key), mem);
        hbitmap_set(o->held, c, 1);
    }
    if (data)
        memcpy(mem + skip, data, n);
    else
        memset(mem + skip, 0, n);
    return 0;
}

static int overlay_write(Overlay *o, const void *buf, uint32_t count, uint64_t offset)
{
    int r = 0;
    g_rw_lock_writer_lock(&o->lock);
    while (count > 0 && r == 0) {
        uint64_t c = offset / OVERLAY_CLUSTER;
        uint32_t skip = (uint32_t)(offset % OVERLAY_CLUSTER);
        uint32_t n = MIN(count, OVERLAY_CLUSTER - skip);
        r = write_cluster(o, c, skip, buf, n);
        if (buf)
            buf = (const char *)buf + n;
        offset += n;
        count -= n;
    }
    g_rw_lock_writer_unlock(&o->lock);
    return r;
}

static int overlay_pwrite(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    return overlay_write(opaque, buf, count, offset);
}

static int overlay_zero(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    return overlay_write(opaque, NULL, count, offset);
}

static int overlay_flush(void *opaque, uint32_t flags)
{
    Overlay *o = opaque;
    return o->file ? node_flush(o->file) : 0;
}

const BlockDriver block_driver_overlay = {
    .name = "overlay",
    .type = BLOCKDEV_DRIVER_OVERLAY,
    .open.overlay = overlay_open,
    .close = overlay_close,
    .get_size = overlay_get_size,
    .can_write = overlay_can_write,
    .can_flush = overlay_can_flush,
    .pread = overlay_pread,
    .pwrite = overlay_pwrite,
    .zero = overlay_zero,
    .flush = overlay_flush,
};
