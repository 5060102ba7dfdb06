/* driver=qcow2: QEMU's copy-on-write image format over a `file` child,
 * with an optional backing node (docs/interop/qcow2.txt in QEMU is the spec).
 *
 * Supported: versions 2 and 3, cluster sizes 512 B .. 2 MiB, refcount
 * widths 1..64 bits, zero clusters (v3), compressed clusters (deflate; read,
 * and re-allocated on write), backing chains (qcow2 or raw), write-zeroes
 * and trim, block status, persistent dirty bitmaps (qcow2-bitmap.c).  Refused: encryption, external data files,
 * extended L2 entries, zstd compression, unknown incompatible features, the
 * dirty bit; the corrupt bit allows read-only opens.  Internal snapshots
 * (qcow2-snapshot.c): clusters they share are copied on write.
 *
 * Files.  This one opens and closes images; qcow2-internal.h lists the
 * others (data path, cluster mapping, L2 cache, refcounts, bitmaps) and
 * what they share.
 *
 * Allocation.  New clusters always come from the end of the file; freed
 * clusters are not reused (their refcount drops to 0 and the file range is
 * punched).  Refcounts are raised for a chunk of clusters at a time (the
 * reservation) and flushed before any L2 or L1 entry points into the chunk,
 * so a crash can leak clusters but never leaves a referenced cluster with a
 * refcount of 0.  A freed cluster's refcount is dropped only after the next
 * flush made the L2 update that unreferenced it durable.  Data is written
 * before the L2 entry that makes it visible; new clusters lie past the old
 * end of the file and read as zeroes until written.  A new cluster that
 * carries data the image held before (the rest of a cluster a snapshot
 * shares, a compressed one, backing data) is flushed before its entry is
 * written, and a copied L2 table before its L1 entry.
 *
 * Threads.  One mutex guards the metadata (L1, L2 cache, refcounts,
 * reservation).  Reads look up the mapping under it and read data outside
 * it; overwrites of allocated clusters also write outside it (clusters are
 * never reused, so a stale mapping only ever names a cluster that held this
 * guest data).  Writes that allocate run under the mutex. */
#include "block/drivers/qcow2-internal.h"
#include "block/backing-name.h"
#include "block/child-ref.h"
#include "block/options.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <gio/gio.h>

/* Backing files named by options that open each other in a row before the
 * chain counts as a loop (file identities catch loops among paths). */
#define MAX_OPTIONS_BACKING_DEPTH 256

/* ---- file I/O ---- */

/* Reads from `node` (may be NULL: nothing); bytes past its end read as zeroes. */
int qcow2_read_zero_padded(BlockNode *node, void *buf, uint64_t len, uint64_t off)
{
    uint64_t size = node ? node_size(node) : 0;
    uint64_t avail = off >= size ? 0 : MIN(len, size - off);
    if (avail < len)
        memset((char *)buf + avail, 0, len - avail);
    while (avail > 0) {
        uint32_t n = (uint32_t)MIN(avail, (uint64_t)1 << 30);
        int r = node_pread(node, buf, n, off);
        if (r < 0)
            return r;
        buf = (char *)buf + n;
        off += n;
        avail -= n;
    }
    return 0;
}

/* Writes to the file, growing it (to a cluster boundary) when needed. */
int qcow2_file_write(Qcow2 *s, const void *buf, uint64_t len, uint64_t off)
{
    /* Metadata can name any offset; one no file can have is corruption. */
    if (off > INT64_MAX || len > INT64_MAX - off)
        return -EIO;
    if (off + len > node_size(s->file)) {
        int r = node_grow(s->file, DIV_UP(off + len, s->cs) * s->cs);
        if (r < 0)
            return r == -ENOTSUP ? -ENOSPC : r; /* a fixed-size child (NBD, device) is full */
    }
    while (len > 0) {
        uint32_t n = (uint32_t)MIN(len, (uint64_t)1 << 30);
        int r = node_pwrite(s->file, buf, n, off, 0);
        if (r < 0)
            return r;
        buf = (const char *)buf + n;
        off += n;
        len -= n;
    }
    return 0;
}

/* ---- open ---- */

static void qcow2_free(Qcow2 *s)
{
    if (!s)
        return;
    g_free(s->l1);
    g_free(s->rt);
    if (s->rblocks)
        g_hash_table_destroy(s->rblocks);
    if (s->l2)
        g_hash_table_destroy(s->l2);
    if (s->pending_free)
        g_array_free(s->pending_free, TRUE);
    g_free(s->backing_name);
    g_free(s->backing_full);
    g_free(s->backing_fmt);
    qcow2_free_snapshots(s);
    qcow2_bitmaps_free(s);
    g_rw_lock_clear(&s->io_lock);
    g_assert(!s->allocs || s->allocs->len == 0);
    if (s->allocs)
        g_array_free(s->allocs, TRUE);
    g_cond_clear(&s->alloc_cond);
    g_mutex_clear(&s->lock);
    g_free(s);
}


/* Names of the unknown incompatible feature bits, from the image's feature table. */
static char *unknown_features(uint64_t bits, const uint8_t *table, uint32_t table_len)
{
    GString *str = g_string_new(NULL);
    for (unsigned bit = 0; bit < 64; bit++) {
        if (!(bits & (UINT64_C(1) << bit)))
            continue;
        const char *name = NULL;
        char buf[47];
        for (uint32_t i = 0; table && i + 48 <= table_len; i += 48) {
            if (table[i] == 0 && table[i + 1] == bit) {
                memcpy(buf, table + i + 2, 46);
                buf[46] = 0;
                name = buf;
            }
        }
        if (str->len)
            g_string_append(str, ", ");
        if (name)
            g_string_append(str, name);
        else
            g_string_append_printf(str, "Unknown incompatible feature: %u", bit);
    }
    return g_string_free(str, FALSE);
}

/* Parses and checks the header; fills s.  `hdr` holds cluster 0 (or less). */
static bool parse_header(Qcow2 *s, BlockNode *self, const uint8_t *h, uint64_t hlen, GError **errp)
{
    const char *me = node_name(self);
    if (hlen < HDR_V2_LENGTH || be32_at(h) != QCOW2_MAGIC) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Image is not in qcow2 format");
        return false;
    }
    s->version = be32_at(h + 4);
    if (s->version < 2 || s->version > 3) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Unsupported qcow2 version %u", s->version);
        return false;
    }
    s->cluster_bits = be32_at(h + 20);
    if (s->cluster_bits < MIN_CLUSTER_BITS || s->cluster_bits > MAX_CLUSTER_BITS) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Unsupported cluster size: 2^%u", s->cluster_bits);
        return false;
    }
    s->cs = 1u << s->cluster_bits;
    s->size = be64_at(h + 24);
    uint32_t crypt = be32_at(h + 32);
    if (crypt != 0) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' is encrypted (%s); encrypted qcow2 images are not supported",
                me, crypt == 1 ? "AES" : crypt == 2 ? "LUKS" : "unknown method");
        return false;
    }
    s->l1_size = be32_at(h + 36);
    s->l1_offset = be64_at(h + 40);
    s->rt_offset = be64_at(h + 48);
    s->rt_clusters = be32_at(h + 56);
    uint32_t nb_snapshots = be32_at(h + 60);
    if (s->version >= 3) {
        if (hlen < HDR_V3_LENGTH) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "qcow2 header too short");
            return false;
        }
        s->incompat = be64_at(h + 72);
        s->compat = be64_at(h + 80);
        s->autoclear = be64_at(h + 88);
        s->refcount_order = be32_at(h + 96);
        s->header_length = be32_at(h + 100);
        if (s->header_length < HDR_V3_LENGTH || s->header_length % 8 || s->header_length > s->cs ||
            s->header_length > hlen) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid qcow2 header length %u", s->header_length);
            return false;
        }
    } else {
        s->refcount_order = 4;
        s->header_length = HDR_V2_LENGTH;
    }
    if (s->refcount_order > 6) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid refcount order %u", s->refcount_order);
        return false;
    }

    /* Header extensions, up to the backing file name or the cluster end. */
    uint64_t backing_off = be64_at(h + 8);
    uint32_t backing_len = be32_at(h + 16);
    uint64_t ext_end = MIN(hlen, backing_off ? MIN(backing_off, (uint64_t)s->cs) : (uint64_t)s->cs);
    const uint8_t *features = NULL;
    uint32_t features_len = 0;
    bool bitmaps = false;
    for (uint64_t off = s->header_length; off + 8 <= ext_end;) {
        uint32_t type = be32_at(h + off), len = be32_at(h + off + 4);
        if (type == EXT_END)
            break;
        if (off + 8 + len > ext_end) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid qcow2 header extension 0x%08x", type);
            return false;
        }
        const uint8_t *data = h + off + 8;
        switch (type) {
        case EXT_BACKING_FORMAT:
            g_free(s->backing_fmt);
            s->backing_fmt = g_strndup((const char *)data, len);
            break;
        case EXT_FEATURE_TABLE:
            features = data;
            features_len = len;
            break;
        case EXT_BITMAPS:
            bitmaps = true;
            break;
        default:
            break; /* crypto and data file are refused through their bits */
        }
        off += 8 + ((uint64_t)len + 7) / 8 * 8;
    }

    uint64_t known = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
    if (s->incompat & ~known) {
        g_autofree char *names = unknown_features(s->incompat & ~known, features, features_len);
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Unsupported qcow2 feature(s): %s", names);
        return false;
    }
    if (s->incompat & INCOMPAT_DATA_FILE) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Image '%s' uses an external data file; not supported", me);
        return false;
    }
    if (s->incompat & INCOMPAT_EXTL2) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' uses extended L2 entries (subclusters); not supported", me);
        return false;
    }
    if ((s->incompat & INCOMPAT_COMPRESSION) || (s->header_length > 104 && h[104] != 0)) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Image '%s' uses compression type %u; only zlib (deflate) is supported", me,
                s->header_length > 104 ? h[104] : 0);
        return false;
    }
    if (s->incompat & INCOMPAT_DIRTY) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                "Image '%s' is dirty (its refcounts may be inconsistent); run 'qemu-img check -r all' on it",
                me);
        return false;
    }
    if ((s->incompat & INCOMPAT_CORRUPT) && !s->read_only) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                "Image '%s' is marked corrupt; it can only be opened read-only (repair: 'qemu-img check -r all')",
                me);
        return false;
    }
    s->header_nb_snapshots = nb_snapshots; /* read by qcow2_read_snapshots at open */
    s->snapshots_offset = be64_at(h + 64);
    (void)bitmaps; /* read by qcow2_bitmaps_open */

    if (backing_off) {
        if (backing_len > MAX_BACKING_NAME || backing_off > s->cs || backing_off + backing_len > hlen) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid backing file name in image '%s'", me);
            return false;
        }
        s->backing_name = g_strndup((const char *)h + backing_off, backing_len);
    }

    s->l2_entries = s->cs / 8;
    s->rb_entries = (uint64_t)s->cs * 8 >> s->refcount_order;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (UINT64_C(1) << (s->cluster_bits - 8)) - 1;
    s->coffset_mask = (UINT64_C(1) << s->csize_shift) - 1;
    uint64_t per_l1 = (uint64_t)s->l2_entries * s->cs;
    if ((uint64_t)s->l1_size * 8 > MAX_L1_BYTES || s->size > (uint64_t)s->l1_size * per_l1 ||
        (s->l1_offset & (s->cs - 1)) || (s->rt_offset & (s->cs - 1)) || !s->rt_offset ||
        (uint64_t)s->rt_clusters * s->cs > MAX_REFTABLE_BYTES || !s->rt_clusters) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Image '%s' has an invalid L1 or refcount table", me);
        return false;
    }
    return true;
}

/* The image files whose backing files this thread is opening, innermost
 * first (on the stack of the nested opens): a chain that comes back to one
 * of them, an image naming itself for instance, would recurse forever. */
typedef struct OpeningImage {
    dev_t dev;
    ino_t ino;
    const struct OpeningImage *outer;
} OpeningImage;
static __thread const OpeningImage *opening_images;

/* Opens a backing file named by options (json:, rbd:, an NBD URI): no
 * loop can be seen by file identity there, so nesting is bounded instead. */
static BlockNode *open_backing_by_options(Qcow2 *s, BlockNode *self, GError **errp)
{
    static __thread unsigned depth;
    if (depth >= MAX_OPTIONS_BACKING_DEPTH) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                "Could not open backing file '%s': more than %u backing files named by options in a row (a loop?)",
                s->backing_name, MAX_OPTIONS_BACKING_DEPTH);
        return NULL;
    }
    GError *err = NULL;
    BlockdevOptions *opts = backing_name_options(s->backing_name, s->backing_fmt, &err);
    BlockNode *b = NULL;
    if (opts) {
        s->backing_full = g_strdup(s->backing_name);
        depth++;
        b = node_create_child(self, opts, "-backing", true, &err);
        depth--;
        qapi_free_BlockdevOptions(opts);
    }
    if (!b) {
        g_set_error(errp, err->domain, err->code, "Could not open backing file: %s", err->message);
        g_error_free(err);
    }
    return b;
}

/* Resolves and opens the backing file named in the image. */
static BlockNode *open_backing_from_header(Qcow2 *s, BlockNode *self, GError **errp)
{
    const char *name = s->backing_name;
    if (!backing_name_is_path(name))
        return open_backing_by_options(s, self, errp);
    if (g_path_is_absolute(name)) {
        s->backing_full = g_strdup(name);
    } else {
        const char *image = node_filename(s->file);
        if (!image) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT,
                    "Cannot use relative backing file name '%s' for '%s': the image has no file name",
                    name, node_name(self));
            return NULL;
        }
        g_autofree char *dir = g_path_get_dirname(image);
        s->backing_full = g_build_filename(dir, name, NULL);
    }
    const char *fmt = s->backing_fmt;
    if (!fmt) {
        int err = 0;
        fmt = qcow2_probe_format(s->backing_full, &err);
        if (!fmt) {
            qcow2_set_error(errp, g_io_error_from_errno(err), "Could not open backing file: Could not open '%s': %s",
                    s->backing_full, g_strerror(err));
            return NULL;
        }
    }
    if (strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0 && strcmp(fmt, "file") != 0) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED,
                "Could not open backing file '%s': unsupported backing format '%s'", s->backing_full, fmt);
        return NULL;
    }
    BlockdevOptions file = { .driver = BLOCKDEV_DRIVER_FILE, .u.file.filename = s->backing_full };
    BlockdevRef file_ref = { .type = QAPI_QTYPE_QDICT, .u.definition = &file };
    BlockdevOptions format = { .driver = strcmp(fmt, "qcow2") == 0 ? BLOCKDEV_DRIVER_QCOW2 : BLOCKDEV_DRIVER_RAW };
    if (format.driver == BLOCKDEV_DRIVER_QCOW2)
        format.u.qcow2.file = &file_ref;
    else
        format.u.raw.file = &file_ref;
    const BlockdevOptions *opts = strcmp(fmt, "file") == 0 ? &file : &format;
    OpeningImage me = { .outer = opening_images };
    struct stat st;
    const char *image = node_filename(s->file);
    if (image && stat(image, &st) == 0) {
        me.dev = st.st_dev;
        me.ino = st.st_ino;
    }
    if (stat(s->backing_full, &st) == 0) {
        for (const OpeningImage *o = &me; o; o = o->outer) {
            if (o->dev == st.st_dev && o->ino == st.st_ino) {
                qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                        "Could not open backing file '%s': it is already in the backing chain (a loop)",
                        s->backing_full);
                return NULL;
            }
        }
    }
    GError *err = NULL;
    opening_images = &me;
    BlockNode *b = node_create_child(self, opts, "-backing", true, &err);
    opening_images = me.outer;
    if (!b) {
        g_set_error(errp, err->domain, err->code, "Could not open backing file: %s", err->message);
        g_error_free(err);
    }
    return b;
}

static void *qcow2_open(BlockNode *self, const BlockdevOptionsQcow2 *opts, bool read_only, GError **errp)
{
    bool file_created = false, backing_created = false;
    g_autofree uint8_t *h = NULL;
    Qcow2 *s = g_new0(Qcow2, 1);
    g_mutex_init(&s->lock);
    g_rw_lock_init(&s->io_lock);
    g_cond_init(&s->alloc_cond);
    s->allocs = g_array_new(FALSE, FALSE, sizeof(Qcow2Alloc));
    s->read_only = read_only;
    uint64_t l2_cache = 0, cache = 0;
    if ((opts->has_l2_cache_size && !block_option_size("l2-cache-size", opts->l2_cache_size, &l2_cache, errp)) ||
        (opts->has_cache_size && !block_option_size("cache-size", opts->cache_size, &cache, errp)))
        goto fail;
    s->file = node_open_child(self, opts->file, "-file", &file_created, errp);
    if (!s->file)
        goto fail;
    if (!read_only && node_read_only(s->file)) {
        qcow2_set_error(errp, G_IO_ERROR_READ_ONLY, "Node '%s' is read-only; open '%s' with read-only=on",
                node_name(s->file), node_name(self));
        goto fail;
    }
    /* Claimed (image locks taken) before the first byte is read or written,
     * as QEMU attaches its file child.  From here on node_create's cleanup
     * drops the child, and the node_delete calls below are no-ops. */
    if (!(file_created ? node_add_implicit_child : node_add_child)(self, s->file, NODE_CHILD_STORAGE, errp))
        goto fail;
    s->file_can_trim = node_caps(s->file)->can_trim;

    /* Cluster 0 holds the header, its extensions and the backing file name. */
    uint64_t fsize = node_size(s->file);
    uint8_t first[HDR_V3_LENGTH + 8] = { 0 };
    if (file_read(s, first, sizeof first, 0) < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the qcow2 header of '%s'", node_name(self));
        goto fail;
    }
    uint32_t cbits = be32_at(first + 20);
    uint64_t hlen = MIN(fsize, be32_at(first) == QCOW2_MAGIC && cbits >= MIN_CLUSTER_BITS &&
                               cbits <= MAX_CLUSTER_BITS ? (uint64_t)1 << cbits : sizeof first);
    h = g_malloc0(MAX(hlen, (uint64_t)sizeof first));
    if (file_read(s, h, hlen, 0) < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the qcow2 header of '%s'", node_name(self));
        goto fail;
    }
    if (!parse_header(s, self, h, hlen, errp))
        goto fail;

    /* L1 and refcount tables. */
    s->l1 = g_new0(uint64_t, MAX(s->l1_size, 1u));
    s->rt_entries = (uint64_t)s->rt_clusters * s->cs / 8;
    s->rt = g_new0(uint64_t, s->rt_entries);
    {
        g_autofree uint8_t *raw = g_malloc(MAX((uint64_t)s->l1_size * 8, s->rt_entries * 8));
        if (file_read(s, raw, (uint64_t)s->l1_size * 8, s->l1_offset) < 0) {
            qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the L1 table of '%s'", node_name(self));
            goto fail;
        }
        for (uint32_t i = 0; i < s->l1_size; i++)
            s->l1[i] = be64_at(raw + 8 * i);
        if (file_read(s, raw, s->rt_entries * 8, s->rt_offset) < 0) {
            qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not read the refcount table of '%s'", node_name(self));
            goto fail;
        }
        for (uint64_t i = 0; i < s->rt_entries; i++)
            s->rt[i] = be64_at(raw + 8 * i);
    }
    {
        if (!qcow2_read_snapshots(s, s->header_nb_snapshots, s->snapshots_offset, errp)) {
            g_prefix_error(errp, "Could not read snapshots: ");
            goto fail;
        }
    }
    s->rblocks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    s->l2 = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, l2_table_free);
    if (!l2_cache)
        l2_cache = cache ? cache : 1u << 20;
    s->l2_max = (guint)MIN(MAX(l2_cache / s->cs, (uint64_t)4), (uint64_t)65536);
    s->pending_free = g_array_new(FALSE, FALSE, sizeof(FreeRange));
    s->end = DIV_UP(fsize, s->cs);
    s->reserve_chunk = MIN(MAX((uint64_t)(4u << 20) / s->cs, (uint64_t)8), (uint64_t)1024);

    /* Backing: absent = the one the image names; null (or "") = none; else a node. */
    if (opts->has_backing && opts->backing->type == QAPI_QTYPE_QDICT) {
        /* QEMU's default: backing files are opened read-only. */
        s->backing = node_create_child(self, opts->backing->u.definition, "-backing", true, errp);
        if (!s->backing)
            goto fail;
        backing_created = true;
    } else if (opts->has_backing && opts->backing->type == QAPI_QTYPE_QSTRING) {
        if (*opts->backing->u.reference && !(s->backing = node_find_reference(opts->backing->u.reference, errp)))
            goto fail;
    } else if (opts->has_backing) {
        /* null: none */
    } else if (s->backing_name) {
        s->backing = open_backing_from_header(s, self, errp);
        if (!s->backing)
            goto fail;
        backing_created = true;
    }
    if (s->backing == self) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "A node cannot be its own backing node");
        goto fail;
    }
    if (s->backing &&
        !(backing_created ? node_add_implicit_child : node_add_child)(self, s->backing, NODE_CHILD_COW, errp))
        goto fail;

    /* Persistent bitmaps: the directory is read; writing, every bitmap is
     * marked in use and the autoclear bits blockd does not maintain are
     * cleared (QEMU's rule for unknown ones). */
    if (!qcow2_bitmaps_open(s, self, h, hlen, errp))
        goto fail;

    return s;

fail:
    if (backing_created && s->backing)
        node_delete(node_name(s->backing), NULL);
    if (file_created && s->file)
        node_delete(node_name(s->file), NULL);
    qcow2_free(s);
    return NULL;
}

static void qcow2_close(void *o)
{
    Qcow2 *s = o;
    if (!s->read_only && !s->broken) {
        g_mutex_lock(&s->lock);
        /* Make unlinking durable, then drop the freed and unused clusters. */
        if (node_flush(s->file) == 0 && qcow2_apply_pending_frees(s) == 0 && qcow2_release_reservation(s) == 0)
            node_flush(s->file);
        g_mutex_unlock(&s->lock);
    }
    qcow2_free(s);
}

/* Read-write: what an open read-write would refuse is refused (a corrupt
 * image); read-only: what a close does first (freed clusters returned,
 * the reservation released, all durable), so the image is complete on
 * disk before no more writes may come. */
static bool qcow2_reopen(void *o, bool read_only, GError **errp)
{
    Qcow2 *s = o;
    if (!read_only) {
        if (s->incompat & INCOMPAT_CORRUPT) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Image is marked corrupt; it can only be opened "
                                                           "read-only (repair: 'qemu-img check -r all')");
            return false;
        }
        s->read_only = false;
        g_autoptr(GError) err = NULL;
        if (!qcow2_bitmaps_start_writing(s, node_filename(s->file) ? node_filename(s->file) : "", &err)) {
            s->read_only = true;
            qcow2_set_error(errp, err->code, "%s", err->message);
            return false;
        }
        return true;
    }
    G_GNUC_UNUSED g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&s->lock);
    int r = s->broken ? 0 : node_flush(s->file);
    if (r == 0 && !s->broken && (r = qcow2_apply_pending_frees(s)) == 0 && (r = qcow2_release_reservation(s)) == 0)
        r = node_flush(s->file);
    if (r < 0) {
        qcow2_set_error(errp, g_io_error_from_errno(-r), "Could not flush the image: %s", g_strerror(-r));
        return false;
    }
    s->read_only = true;
    return true;
}

static int64_t qcow2_get_size(void *o) { return (int64_t)((Qcow2 *)o)->size; }
static int qcow2_can_write(void *o) { return !((Qcow2 *)o)->read_only; }
static int qcow2_can_flush(void *o) { return 1; }
static int qcow2_can_trim(void *o) { return 1; }
static int qcow2_can_zero(void *o) { return 1; }
static int qcow2_can_fast_zero(void *o) { return 1; }
static int qcow2_can_extents(void *o) { return 1; }
static int qcow2_can_fua(void *o) { return BLOCK_SUPPORT_EMULATE; }
static int qcow2_can_multi_conn(void *o) { return node_caps(((Qcow2 *)o)->file)->can_multi_conn; }

static int qcow2_block_size(void *o, uint32_t *min, uint32_t *pref, uint32_t *max)
{
    *min = 1;
    *pref = ((Qcow2 *)o)->cs;
    *max = 0xffffffff;
    return 0;
}

static void qcow2_image_info(void *o, BlockImageInfo *info)
{
    Qcow2 *s = o;
    info->filename = node_filename(s->file);
    info->backing_filename = s->backing_name;
    info->full_backing_filename = s->backing_full ? s->backing_full : s->backing_name;
    info->backing_format = s->backing_fmt;
    info->backing = s->backing;
    info->cluster_size = s->cs;
}

/* node_replace: the image file or the backing node changes under a drained
 * parent.  The header's backing file name stays (QEMU's bdrv_replace_node
 * does not rewrite it either; stream and commit rewrite it themselves). */
static void qcow2_replace_child(void *o, BlockNode *old_child, BlockNode *new_child)
{
    Qcow2 *s = o;
    g_assert(s->file == old_child || s->backing == old_child);
    if (s->file == old_child)
        s->file = new_child;
    if (s->backing == old_child)
        s->backing = new_child;
}

/* blockdev-snapshot (an overlay opened without a backing node gets one),
 * stream and commit (a layer below is taken out).  The node's users are
 * drained, but a job may read the node directly: io_lock, which reads,
 * writes and block status hold while they use s->backing, lets those in
 * flight finish on the old backing node, which the caller may close next. */
static void qcow2_set_backing(void *o, BlockNode *backing)
{
    Qcow2 *s = o;
    g_rw_lock_writer_lock(&s->io_lock);
    s->backing = backing;
    g_rw_lock_writer_unlock(&s->io_lock);
}

const BlockDriver block_driver_qcow2 = {
    .name = "qcow2",
    .supports_backing = true,
    .type = BLOCKDEV_DRIVER_QCOW2,
    .reopen = qcow2_reopen,
    .open.qcow2 = qcow2_open,
    .close = qcow2_close,
    .get_size = qcow2_get_size,
    .can_write = qcow2_can_write,
    .can_flush = qcow2_can_flush,
    .can_trim = qcow2_can_trim,
    .can_zero = qcow2_can_zero,
    .can_fast_zero = qcow2_can_fast_zero,
    .can_fua = qcow2_can_fua,
    .can_extents = qcow2_can_extents,
    .can_multi_conn = qcow2_can_multi_conn,
    .block_size = qcow2_block_size,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .flush = qcow2_flush,
    .trim = qcow2_trim,
    .zero = qcow2_zero,
    .extents = qcow2_extents,
    .read_fd = qcow2_read_fd,
    .image_info = qcow2_image_info,
    .replace_child = qcow2_replace_child,
    .snapshot = &qcow2_snapshot_ops,
    .pwrite_compressed = qcow2_pwrite_compressed,
    .set_backing = qcow2_set_backing,
    .bitmaps_can_add = qcow2_bitmaps_can_add,
    .bitmaps_load = qcow2_bitmaps_load,
    .bitmaps_store = qcow2_bitmaps_store,
    .bitmaps_write = qcow2_bitmaps_write,
    .bitmaps_sync = qcow2_bitmaps_sync,
    .truncate = qcow2_truncate,
    .change_backing_file = qcow2_change_backing_file,
    .create = qcow2_create_on_node,
};
