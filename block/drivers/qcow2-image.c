/* qcow2: changes to the image as a whole -- block_resize (the L1 table and
 * the header's size), change-backing-file (the header's backing file name
 * and format extension) and blockdev-create on a node (the metadata that
 * qcow2-create.c lays out, written through the file node). */
#include "block/drivers/qcow2-internal.h"
#include "block/child-ref.h"
#include "block/node-perm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <unistd.h>
#include <string.h>
#include <gio/gio.h>

/* ---- block_resize ---- */

/* Moves the L1 table to new clusters holding `l1_size` entries (QEMU's
 * qcow2_grow_l1_table with an exact size): the new table is durable before
 * the header points at it, and the old one is freed after the next flush. */
static int grow_l1(Qcow2 *s, uint32_t l1_size)
{
    uint64_t bytes = (uint64_t)l1_size * 8, clusters = DIV_UP(bytes, s->cs), off;
    int r = qcow2_alloc_clusters(s, clusters, &off);
    if (r < 0)
        return r;
    g_autofree uint8_t *raw = g_malloc0(clusters * s->cs);
    for (uint32_t i = 0; i < s->l1_size; i++)
        put_be64(raw + 8 * i, s->l1[i]);
    uint8_t hdr[12];
    put_be32(hdr, l1_size);
    put_be64(hdr + 4, off);
    if ((r = qcow2_file_write(s, raw, clusters * s->cs, off)) < 0 || (r = node_flush(s->file)) < 0 ||
        (r = qcow2_file_write(s, hdr, sizeof hdr, 36)) < 0 || (r = node_flush(s->file)) < 0) {
        s->broken = true;
        return r;
    }
    if (s->l1_offset)
        qcow2_free_later(s, s->l1_offset, DIV_UP((uint64_t)s->l1_size * 8, s->cs) * s->cs);
    s->l1 = g_renew(uint64_t, s->l1, l1_size);
    memset(s->l1 + s->l1_size, 0, (l1_size - s->l1_size) * 8);
    s->l1_size = l1_size;
    s->l1_offset = off;
    return 0;
}

/* Drops the guest clusters from `first` on (QEMU's full discard of the
 * cropped part: unallocated, whatever the backing node holds) and the L2
 * tables past the last one still needed, whose L1 entries become 0. */
static int crop_clusters(Qcow2 *s, uint64_t first)
{
    uint64_t keep_tables = DIV_UP(first, s->l2_entries);
    for (uint64_t l1i = first / s->l2_entries; l1i < s->l1_size; l1i++) {
        if (!(s->l1[l1i] & L1E_OFFSET_MASK))
            continue;
        uint64_t c0 = MAX(first, l1i * s->l2_entries), c1 = (l1i + 1) * s->l2_entries;
        int r = qcow2_set_entries(s, c0, c1 - c0, 0, 0);
        if (r < 0)
            return r;
        if (l1i < keep_tables)
            continue;
        uint64_t table = s->l1[l1i] & L1E_OFFSET_MASK;
        if ((r = write_be64(s, 0, s->l1_offset + 8 * l1i)) < 0) {
            s->broken = true;
            return r;
        }
        s->l1[l1i] = 0;
        gint64 key = (gint64)table;
        g_hash_table_remove(s->l2, &key);
        qcow2_free_later(s, table, s->cs);
    }
    return 0;
}

/* Growing over a backing node that is larger than the old end would let
 * its data show through in the new area: QEMU (bdrv_co_truncate's
 * BDRV_REQ_ZERO_WRITE) zeroes the area instead, whole clusters by their
 * zero flag (a v2 image has none and refuses) and the unaligned head by
 * writing zeroes.  Called with s->lock held; drops it for the head's write. */
static bool zero_new_area(Qcow2 *s, uint64_t old, uint64_t size, GError **errp)
{
    if (!s->backing || node_size(s->backing) <= old)
        return true;
    if (s->version < 3) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Failed to zero out new clusters: %s", g_strerror(ENOTSUP));
        return false;
    }
    uint64_t zero_start = DIV_UP(old, s->cs) * s->cs;
    int r = size > zero_start ? qcow2_zero_clusters(s, zero_start / s->cs, DIV_UP(size, s->cs), false) : 0;
    if (r < 0) {
        qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to zero out new clusters: %s", g_strerror(-r));
        return false;
    }
    if (zero_start > old) {
        uint64_t len = MIN(zero_start, size) - old;
        g_autofree void *zeroes = g_malloc0(len);
        g_mutex_unlock(&s->lock);
        r = qcow2_pwrite(s, zeroes, (uint32_t)len, old, 0);
        g_mutex_lock(&s->lock);
        if (r < 0) {
            qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to zero out the new area: %s", g_strerror(-r));
            return false;
        }
    }
    return true;
}

bool qcow2_truncate(void *o, uint64_t size, GError **errp)
{
    Qcow2 *s = o;
    /* QEMU's qcow2_co_truncate, in its order. */
    if (size % 512) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "The new size must be a multiple of 512");
        return false;
    }
    g_mutex_lock(&s->lock);
    bool ok = false;
    int r;
    if (s->broken) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "The image's metadata could not be updated earlier");
        goto out;
    }
    /* v2 snapshots do not record their size (QEMU's reason). */
    if (s->nb_snapshots && s->version < 3) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Can't resize a v2 image which has snapshots");
        goto out;
    }
    uint64_t per_l1 = (uint64_t)s->l2_entries * s->cs;
    uint64_t l1_size = DIV_UP(size, per_l1), old = s->size;
    if (size < old) {
        if ((r = crop_clusters(s, DIV_UP(size, s->cs))) < 0) {
            qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to discard cropped clusters: %s", g_strerror(-r));
            goto out;
        }
    } else if (l1_size > s->l1_size) {
        r = l1_size * 8 > MAX_L1_BYTES ? -EFBIG : grow_l1(s, (uint32_t)l1_size);
        if (r < 0) {
            qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to grow the L1 table: %s", g_strerror(-r));
            goto out;
        }
    }
    if (size > old && !zero_new_area(s, old, size, errp))
        goto out;
    if ((r = write_be64(s, size, 24)) < 0 || (r = node_flush(s->file)) < 0 ||
        (r = qcow2_apply_pending_frees(s)) < 0) {
        s->broken = true;
        qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to update the image size: %s", g_strerror(-r));
        goto out;
    }
    s->size = size;
    ok = true;
out:
    g_mutex_unlock(&s->lock);
    return ok;
}

/* ---- change-backing-file ---- */

/* Cluster 0 rebuilt with another backing file name and format (QEMU's
 * qcow2_update_header keeps the other extensions; so does this). */
static uint8_t *header_with_backing(Qcow2 *s, const uint8_t *old, const char *name, const char *fmt, int *err)
{
    g_autofree uint8_t *h = g_malloc0(s->cs);
    memcpy(h, old, s->header_length);
    uint64_t pos = s->header_length;
    size_t flen = fmt ? strlen(fmt) : 0;
    if (flen) {
        put_be32(h + pos, EXT_BACKING_FORMAT);
        put_be32(h + pos + 4, (uint32_t)flen);
        memcpy(h + pos + 8, fmt, flen);
        pos += 8 + DIV_UP(flen, 8) * 8;
    }
    uint64_t old_backing = be64_at(old + 8);
    uint64_t ext_end = old_backing ? MIN(old_backing, (uint64_t)s->cs) : s->cs;
    for (uint64_t off = s->header_length; off + 8 <= ext_end;) {
        uint32_t type = be32_at(old + off), len = be32_at(old + off + 4);
        uint64_t step = 8 + DIV_UP((uint64_t)len, 8) * 8;
        if (type == EXT_END || off + step > ext_end)
            break;
        if (type != EXT_BACKING_FORMAT) {
            if (pos + step > s->cs) {
                *err = ENOSPC;
                return NULL;
            }
            memcpy(h + pos, old + off, step);
            pos += step;
        }
        off += step;
    }
    pos += 8; /* the end marker: zeroes */
    size_t nlen = name ? strlen(name) : 0;
    if (pos + nlen > s->cs) {
        *err = ENOSPC;
        return NULL;
    }
    if (nlen)   /* no name (a stream of the whole chain): no memcpy from NULL */
        memcpy(h + pos, name, nlen);
    put_be64(h + 8, nlen ? pos : 0);
    put_be32(h + 16, (uint32_t)nlen);
    return g_steal_pointer(&h);
}

/* QEMU reopens a read-only image read-write for the change; blockd's nodes
 * are not reopened, so the header goes through a writable descriptor of
 * the image file of its own (a file node's image only). */
static int write_header_readonly(Qcow2 *s, const uint8_t *h)
{
    const char *path = node_filename(s->file);
    if (!path || strcmp(node_driver_name(s->file), "file") != 0)
        return -EROFS;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = pwrite(fd, h, s->cs, 0);
    int r = n == (ssize_t)s->cs ? 0 : n < 0 ? -errno : -EIO;
    if (r == 0 && fdatasync(fd) < 0)
        r = -errno;
    close(fd);
    return r;
}

bool qcow2_change_backing_file(void *o, const char *name, const char *fmt, GError **errp)
{
    Qcow2 *s = o;
    int err = 0;
    if (name && strlen(name) > MAX_BACKING_NAME)
        err = EINVAL;
    G_GNUC_UNUSED g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    g_autofree uint8_t *old = err ? NULL : g_malloc(s->cs);
    g_autofree uint8_t *h = NULL;
    if (!err && file_read(s, old, s->cs, 0) < 0)
        err = EIO;
    if (!err && !(h = header_with_backing(s, old, name, fmt, &err)) && !err)
        err = EIO;
    int r = err ? -err : s->read_only ? write_header_readonly(s, h) : qcow2_file_write(s, h, s->cs, 0);
    if (r == 0 && !s->read_only)
        r = node_flush(s->file);
    if (r < 0) {
        qcow2_set_error(errp, g_io_error_from_errno(-r), "%s", g_strerror(-r));
        return false;
    }
    g_free(s->backing_name);
    g_free(s->backing_full);
    g_free(s->backing_fmt);
    s->backing_name = g_strdup(name);
    s->backing_fmt = g_strdup(fmt);
    s->backing_full = NULL;
    const char *image = node_filename(s->file);
    if (name && !g_path_is_absolute(name) && image) {
        g_autofree char *dir = g_path_get_dirname(image);
        s->backing_full = g_build_filename(dir, name, NULL);
    }
    return true;
}

/* ---- blockdev-create ---- */

/* QEMU's qcow2_co_create checks after opening the file, in its order. */
static bool create_params(const BlockdevCreateOptionsQcow2 *o, Qcow2CreateParams *p, GError **errp)
{
    const char *msg = NULL;
    p->size = o->size;
    p->version = o->has_version && o->version == BLOCKDEV_QCOW2_VERSION_V2 ? 2 : 3;
    p->cluster_size = o->has_cluster_size ? o->cluster_size : 65536;
    bool prealloc = o->has_preallocation && o->preallocation != PREALLOC_MODE_OFF;
    p->lazy_refcounts = o->has_lazy_refcounts && o->lazy_refcounts;
    int64_t bits = o->has_refcount_bits ? o->refcount_bits : 16;
    if (o->size % 512)
        msg = "Image size must be a multiple of 512 bytes";
    else if (o->has_cluster_size && (o->cluster_size < 512 || o->cluster_size > (1u << MAX_CLUSTER_BITS) ||
                                     (o->cluster_size & (o->cluster_size - 1))))
        msg = "Cluster size must be a power of two between 512 and 2048k";
    else if (o->has_backing_file && prealloc)
        msg = "Backing file and preallocation can only be used at the same time if extended_l2 is on";
    else if (o->has_backing_fmt && !o->has_backing_file)
        msg = "Backing format cannot be used without backing file";
    else if (p->version < 3 && p->lazy_refcounts)
        msg = "Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)";
    else if (bits < 1 || bits > 64 || (bits & (bits - 1)))
        msg = "Refcount width must be a power of two and may not exceed 64 bits";
    else if (p->version < 3 && bits != 16)
        msg = "Different refcount widths than 16 bits require compatibility level 1.1 or above "
              "(use version=v3 or greater)";
    /* blockd's own limit: QEMU also preallocates; blockd's qcow2 driver does not. */
    else if (prealloc)
        msg = "Preallocation is not supported by blockd's qcow2 driver (use preallocation=off)";
    if (msg) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "%s", msg);
        return false;
    }
    p->refcount_bits = (uint32_t)bits;
    p->backing_file = o->has_backing_file ? o->backing_file : NULL;
    p->backing_format = o->has_backing_fmt ? BlockdevDriver_str[o->backing_fmt] : NULL;
    return true;
}

/* QEMU's permission check for a writer on a read-only node. */
static bool writable(BlockNode *file, GError **errp)
{
    if (node_read_only(file)) {
        qcow2_set_error(errp, G_IO_ERROR_READ_ONLY, "Block node is read-only");
        return false;
    }
    return true;
}

/* Writes the new image's metadata from offset 0 of `file`, growing it as needed. */
static bool write_metadata(BlockNode *file, const uint8_t *meta, size_t len, GError **errp)
{
    int r = node_grow(file, len);
    for (size_t done = 0; r == 0 && done < len;) {
        uint32_t n = (uint32_t)MIN(len - done, (size_t)1 << 30);
        r = node_pwrite(file, meta + done, n, done, 0);
        done += n;
    }
    if (r == 0)
        r = node_flush(file);
    if (r == -ENOTSUP)
        r = -ENOSPC;
    if (r < 0)
        qcow2_set_error(errp, g_io_error_from_errno(-r), "Could not write qcow2 header: %s", g_strerror(-r));
    return r == 0;
}

bool qcow2_create_on_node(const BlockdevCreateOptions *options, GError **errp)
{
    const BlockdevCreateOptionsQcow2 *o = &options->u.qcow2;
    BlockNode *file = NULL;
    bool created = false;
    if (o->file->type == QAPI_QTYPE_QSTRING) {
        file = node_find_reference(o->file->u.reference, errp);
    } else {
        file = node_create_anonymous(o->file->u.definition, "create", errp);
        created = file != NULL;
    }
    if (!file)
        return false;
    node_ref(file);
    Qcow2CreateParams p = { 0 };
    NodePermClaim *claim = NULL;
    size_t len = 0;
    g_autofree uint8_t *meta = NULL;
    /* QEMU writes through a BlockBackend with write and resize, sharing all. */
    bool ok = create_params(o, &p, errp) && writable(file, errp) &&
              (claim = node_perm_claim(file, BLOCK_PERM_WRITE | BLOCK_PERM_RESIZE, BLOCK_PERM_ALL, errp)) &&
              (meta = qcow2_create_metadata(&p, &len, errp)) && write_metadata(file, meta, len, errp);
    node_perm_release(claim);
    const char *name = node_name(file);
    g_autofree char *created_name = created ? g_strdup(name) : NULL;
    node_unref(file);
    if (created_name)
        node_delete(created_name, NULL);
    return ok;
}
