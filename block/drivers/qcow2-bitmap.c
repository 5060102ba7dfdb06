/* qcow2 persistent dirty bitmaps: QEMU's bitmaps extension (header
 * extension 0x23852875, bitmap directory, bitmap tables; autoclear bit 0),
 * read at open and written for the bitmap layer through the
 * BlockDriver.bitmaps_* callbacks (block/image-bitmaps.h).
 *
 * QEMU's rule: a bitmap is marked in use (directory flag bit 0) while a
 * process has the image open for writing, and is stored, not in use, at a
 * clean close; one found in use at open is inconsistent (a crash lost it).
 *
 * blockd keeps the sidecar's rule instead: no write is acknowledged before
 * its dirty bits are durable in the image.  While blockd has the image
 * open for writing, each of its bitmaps has every data cluster allocated
 * (no all-zero table entries), and a writer that dirties a granule not yet
 * stored sets the bit in that cluster and waits for the file's flush (group
 * commit in bitmaps/bitmap-store.c) before its data is written.  The
 * directory still says "in use", so QEMU, which cannot know that, treats
 * the bitmap as inconsistent after a crash (safe).  blockd recognises its
 * own crash-safe bitmaps by two marks that QEMU leaves alone or clears:
 *
 *   - autoclear bit 63: QEMU (and any implementation following the spec)
 *     clears unknown autoclear bits before it writes to the image, so the
 *     bit proves that nobody else has written since blockd set it;
 *   - header extension 0x424c4b44 ("BLKD"): version, the directory offset
 *     it belongs to, and the bitmap table offsets of the crash-safe
 *     bitmaps.  QEMU keeps unknown extensions and ignores them.
 *
 * An in-use bitmap whose table is listed there, with bit 63 set, is loaded
 * as consistent after a crash; any other in-use bitmap is inconsistent.
 *
 * Every change of the directory is copy-on-write and atomic: new data,
 * tables and directory are written to new clusters and flushed, then one
 * write of the header cluster's changed bytes (the autoclear field and the
 * two extensions, placed first so that this usually stays inside one
 * sector) switches to them, a flush makes that durable, and the old
 * clusters are freed.  A crash before the switch leaks the new clusters;
 * after it, the old ones.  Bitmaps whose bits only grew since the last
 * store are rewritten in place (setting bits never breaks the rule);
 * bitmaps that were cleared get new clusters.
 *
 * Locking: the callbacks take s->lock, except bitmaps_write and
 * bitmaps_sync, which the bitmap layer never runs concurrently with a
 * store (it stops its group commit first) and which touch only clusters
 * that the current directory owns. */
#define G_LOG_DOMAIN "blockd-bitmaps"
#include "block/drivers/qcow2-internal.h"
#include "block/image-bitmaps.h"

#include <errno.h>
#include <inttypes.h>
#include <gio/gio.h>

#define BME_FLAG_IN_USE (1u << 0)
#define BME_FLAG_AUTO (1u << 1)
#define BME_RESERVED_FLAGS 0xfffffffcu /* QEMU uses none of bits 2..31 (extra_data_compatible included) */
#define BME_TYPE_DIRTY 1
#define BME_MIN_GRAN_BITS 9
#define BME_MAX_GRAN_BITS 31
#define BME_MAX_NAME 1023
#define BME_MAX_TABLE_SIZE 0x8000000u
#define BME_MAX_PHYS_SIZE 0x20000000u
#define BME_ENTRY_RESERVED 0xff000000000001feULL
#define BME_ENTRY_OFFSET 0x00fffffffffffe00ULL
#define BME_ENTRY_ALL_ONES 1ULL
#define MAX_BITMAPS 65535
#define MAX_DIR_SIZE (64u << 20)
#define DIR_ENTRY_FIXED 24
#define BITMAPS_EXT_LEN 24

#define AUTOCLEAR_BITMAPS (UINT64_C(1) << 0)
#define AUTOCLEAR_BLOCKD (UINT64_C(1) << 63)
#define EXT_BLOCKD_BITMAPS 0x424c4b44u /* "BLKD" */
#define BLOCKD_EXT_VERSION 1
#define BLOCKD_EXT_FIXED 16            /* version, count, directory offset */
#define BLOCKD_EXT_MIN_CAP 8

/* One bitmap directory entry. */
typedef struct BitmapEntry {
    char *name;
    uint32_t flags;          /* as in the image */
    uint8_t gran_bits;
    uint64_t table_offset;
    uint32_t table_size;     /* entries */
    bool consistent;         /* its stored bits can be trusted */
    bool crash_safe;         /* listed in blockd's extension (kept durable by blockd) */
    /* Host order, every entry a data cluster of this bitmap alone: the
     * bitmap can be updated in place.  NULL otherwise. */
    uint64_t *table;
} BitmapEntry;

struct Qcow2Bitmaps {
    GPtrArray *dir;          /* BitmapEntry *, the directory the header points to */
    uint64_t dir_offset, dir_size;
    uint32_t blockd_cap;     /* room of blockd's extension (entries), 0 when absent */
    bool warned_room;        /* said once that the header cluster is full */
    bool loaded;             /* bitmaps_load ran: a store's entries are the whole set */
    bool drop_ext;           /* the bitmaps extension is ignored (no autoclear bit): drop it when writing */
    bool blockd_ext;         /* the header has blockd's extension, which writing drops until a store */
};

/* What a header switch writes. */
typedef struct HeaderBitmaps {
    uint64_t autoclear;
    uint32_t nb;
    uint64_t dir_offset, dir_size;
    const uint64_t *safe;    /* table offsets of the crash-safe bitmaps */
    uint32_t nsafe, cap;
} HeaderBitmaps;

static void entry_free(gpointer p)
{
    BitmapEntry *e = p;
    if (!e)
        return;
    g_free(e->name);
    g_free(e->table);
    g_free(e);
}

static BitmapEntry *entry_copy(const BitmapEntry *e)
{
    BitmapEntry *c = g_memdup2(e, sizeof *e);
    c->name = g_strdup(e->name);
    c->table = e->table ? g_memdup2(e->table, (gsize)e->table_size * 8) : NULL;
    return c;
}

static uint32_t entry_size(size_t name_len)
{
    return (uint32_t)((DIR_ENTRY_FIXED + name_len + 7) & ~(size_t)7);
}

static uint64_t bits_for(uint64_t size, uint32_t gran_bits)
{
    return DIV_UP(size, UINT64_C(1) << gran_bits);
}

/* Bitmap table entries a bitmap of the image's size needs (QEMU's
 * size_to_clusters of the serialisation size: whole 64-bit words). */
static uint64_t table_size_for(const Qcow2 *s, uint32_t gran_bits)
{
    return DIV_UP(DIV_UP(bits_for(s->size, gran_bits), 64) * 8, s->cs);
}

/* ---- reading ---- */

/* The payloads of the bitmaps extension and of blockd's, found among the
 * header extensions of header cluster `h` (hlen bytes). */
typedef struct FoundExts {
    const uint8_t *bitmaps;  /* BITMAPS_EXT_LEN bytes, or NULL */
    uint32_t bitmaps_len;
    const uint8_t *blockd;
    uint32_t blockd_len;
    uint64_t backing_off;    /* 0: none */
    uint32_t backing_len;
    uint64_t end;            /* end of the extension area (past the end marker) */
} FoundExts;

static bool find_exts(const Qcow2 *s, const uint8_t *h, uint64_t hlen, FoundExts *f)
{
    memset(f, 0, sizeof *f);
    f->backing_off = be64_at(h + 8);
    f->backing_len = be32_at(h + 16);
    uint64_t ext_end = MIN(hlen, f->backing_off ? MIN(f->backing_off, (uint64_t)s->cs) : (uint64_t)s->cs);
    uint64_t off = s->header_length;
    f->end = off;
    while (off + 8 <= ext_end) {
        uint32_t type = be32_at(h + off), len = be32_at(h + off + 4);
        if (type == EXT_END) {
            f->end = off + 8;
            return true;
        }
        if (off + 8 + len > ext_end)
            return false; /* parse_header refused this already */
        if (type == EXT_BITMAPS) {
            f->bitmaps = h + off + 8;
            f->bitmaps_len = len;
        } else if (type == EXT_BLOCKD_BITMAPS) {
            f->blockd = h + off + 8;
            f->blockd_len = len;
        }
        off += 8 + ((uint64_t)len + 7) / 8 * 8;
        f->end = off;
    }
    return true;
}

/* QEMU's check_dir_entry. */
static bool entry_ok(const Qcow2 *s, const uint8_t *p, uint32_t flags, uint8_t gran_bits)
{
    uint64_t table_offset = be64_at(p);
    uint32_t table_size = be32_at(p + 8);
    if (table_size == 0 || table_offset == 0 || (table_offset & (s->cs - 1)) || table_size > BME_MAX_TABLE_SIZE ||
        gran_bits > BME_MAX_GRAN_BITS || gran_bits < BME_MIN_GRAN_BITS || (flags & BME_RESERVED_FLAGS) ||
        be16_at(p + 18) > BME_MAX_NAME || p[16] != BME_TYPE_DIRTY)
        return false;
    uint64_t phys = (uint64_t)table_size * s->cs;
    if (phys > BME_MAX_PHYS_SIZE)
        return false;
    /* A bitmap not in use must cover the whole disk. */
    return (flags & BME_FLAG_IN_USE) || s->size <= ((phys * 8) << gran_bits);
}

/* Reads and checks the directory (QEMU's bitmap_list_load and messages). */
static GPtrArray *read_directory(Qcow2 *s, uint64_t offset, uint64_t size, uint32_t nb, GError **errp)
{
    if (size == 0) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Requested bitmap directory size is zero");
        return NULL;
    }
    if (size > MAX_DIR_SIZE) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Requested bitmap directory size is too big");
        return NULL;
    }
    g_autofree uint8_t *dir = g_try_malloc(size);
    if (!dir || file_read(s, dir, size, offset) < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Failed to read bitmap directory");
        return NULL;
    }
    GPtrArray *out = g_ptr_array_new_with_free_func(entry_free);
    uint64_t pos = 0;
    uint32_t count = 0;
    while (pos < size) {
        const uint8_t *p = dir + pos;
        if (size - pos < DIR_ENTRY_FIXED)
            goto broken;
        if (++count > nb) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "More bitmaps found than specified in header extension");
            goto fail;
        }
        uint16_t name_len = be16_at(p + 18);
        uint32_t extra = be32_at(p + 20);
        uint64_t esize = ((uint64_t)DIR_ENTRY_FIXED + name_len + extra + 7) & ~UINT64_C(7);
        if (esize > size - pos)
            goto broken;
        if (extra != 0) {
            qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Bitmap extra data is not supported");
            goto fail;
        }
        uint32_t flags = be32_at(p + 12);
        if (!entry_ok(s, p, flags, p[17])) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Bitmap '%.*s' doesn't satisfy the constraints",
                            (int)name_len, (const char *)p + DIR_ENTRY_FIXED);
            goto fail;
        }
        BitmapEntry *e = g_new0(BitmapEntry, 1);
        e->name = g_strndup((const char *)p + DIR_ENTRY_FIXED, name_len);
        e->flags = flags;
        e->gran_bits = p[17];
        e->table_offset = be64_at(p);
        e->table_size = be32_at(p + 8);
        e->consistent = !(flags & BME_FLAG_IN_USE);
        g_ptr_array_add(out, e);
        pos += esize;
    }
    if (count != nb) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Less bitmaps found than specified in header extension");
        goto fail;
    }
    return out;
broken:
    qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Broken bitmap directory");
fail:
    g_ptr_array_free(out, TRUE);
    return NULL;
}

/* The entry's bitmap table (host order), each entry checked as QEMU does. */
static int read_table(Qcow2 *s, const BitmapEntry *e, uint64_t **out)
{
    uint64_t *t = g_try_new(uint64_t, e->table_size);
    if (!t)
        return -ENOMEM;
    int r = file_read(s, t, (uint64_t)e->table_size * 8, e->table_offset);
    for (uint32_t i = 0; r == 0 && i < e->table_size; i++) {
        t[i] = GUINT64_FROM_BE(t[i]);
        uint64_t off = t[i] & BME_ENTRY_OFFSET;
        if ((t[i] & BME_ENTRY_RESERVED) || (off && ((t[i] & BME_ENTRY_ALL_ONES) || (off & (s->cs - 1)))))
            r = -EINVAL;
    }
    if (r < 0) {
        g_free(t);
        return r;
    }
    *out = t;
    return 0;
}

/* Whether every table entry is a data cluster that only this bitmap uses,
 * so that its words can be rewritten in place. */
static bool table_owned(Qcow2 *s, const uint64_t *t, uint32_t n, GHashTable *seen)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = t[i] & BME_ENTRY_OFFSET, rc;
        if (!off || (t[i] & ~BME_ENTRY_OFFSET) || qcow2_refcount_of(s, off >> s->cluster_bits, &rc) < 0 || rc != 1 ||
            !qcow2_clusters_allocated(s, off, 1))
            return false;
        gint64 key = (gint64)off;
        if (g_hash_table_contains(seen, &key))
            return false;
        g_hash_table_add(seen, g_memdup2(&key, sizeof key));
    }
    return true;
}

/* The bits of a consistent entry, from its table `t`. */
static int read_bits(Qcow2 *s, const BitmapEntry *e, const uint64_t *t, HBitmap *bits)
{
    uint64_t nbytes = hbitmap_serialized_size(bits);
    if (table_size_for(s, e->gran_bits) != e->table_size)
        return -EINVAL;
    g_autofree uint8_t *buf = g_try_malloc0(MAX(nbytes, (uint64_t)1));
    if (!buf)
        return -ENOMEM;
    for (uint32_t i = 0; i < e->table_size; i++) {
        uint64_t at = (uint64_t)i * s->cs, len = MIN((uint64_t)s->cs, nbytes - at);
        uint64_t off = t[i] & BME_ENTRY_OFFSET;
        int r = 0;
        if (off)
            r = file_read(s, buf + at, len, off);
        else if (t[i] & BME_ENTRY_ALL_ONES)
            memset(buf + at, 0xff, len);
        if (r < 0)
            return r;
    }
    /* Bits past the end must be zero; an all-ones cluster sets them. */
    uint64_t nbits = hbitmap_size(bits);
    if (nbits % 64 && nbytes) {
        uint64_t last;
        memcpy(&last, buf + nbytes - 8, 8);
        last = GUINT64_FROM_LE(last) & ((UINT64_C(1) << (nbits % 64)) - 1);
        last = GUINT64_TO_LE(last);
        memcpy(buf + nbytes - 8, &last, 8);
    }
    return hbitmap_deserialize(bits, buf) ? 0 : -EINVAL;
}

/* ---- writing ---- */

/* The header cluster as it is in the file now (cs bytes). */
static int read_header(Qcow2 *s, uint8_t **out)
{
    uint8_t *h = g_malloc0(s->cs);
    int r = file_read(s, h, s->cs, 0);
    if (r < 0) {
        g_free(h);
        return r;
    }
    *out = h;
    return 0;
}

/* Bytes the header cluster holds besides blockd's extension list: the
 * header, the bitmaps extension, every other extension, the end marker
 * and the backing file name.  *room gets how many table offsets blockd's
 * extension can list after that (0 if not even its fixed part fits). */
static int header_room(Qcow2 *s, uint32_t *room)
{
    g_autofree uint8_t *h = NULL;
    int r = read_header(s, &h);
    if (r < 0)
        return r;
    FoundExts f;
    if (!find_exts(s, h, s->cs, &f))
        return -EIO;
    uint64_t used = s->header_length + 8 + BITMAPS_EXT_LEN + 8 + f.backing_len;
    for (uint64_t off = s->header_length; off + 8 <= f.end;) {
        uint32_t type = be32_at(h + off), len = be32_at(h + off + 4);
        if (type == EXT_END)
            break;
        uint64_t step = 8 + ((uint64_t)len + 7) / 8 * 8;
        if (type != EXT_BITMAPS && type != EXT_BLOCKD_BITMAPS)
            used += step;
        off += step;
    }
    uint64_t fixed = 8 + BLOCKD_EXT_FIXED;
    *room = used + fixed > s->cs ? 0 : (uint32_t)MIN((s->cs - used - fixed) / 8, (uint64_t)MAX_BITMAPS);
    return 0;
}

/* Rebuilds the header cluster with `hb` (the autoclear field, the bitmaps
 * extension and blockd's first, then the other extensions, the end marker
 * and the backing file name) and writes the bytes that changed in one
 * write, then flushes: the switch from one stored state to the next. */
static int switch_header(Qcow2 *s, const HeaderBitmaps *hb)
{
    g_autofree uint8_t *old = NULL;
    int r = read_header(s, &old);
    if (r < 0)
        return r;
    FoundExts f;
    if (!find_exts(s, old, s->cs, &f))
        return -EIO;
    g_autofree uint8_t *h = g_malloc0(s->cs);
    memcpy(h, old, s->header_length);
    put_be64(h + 88, hb->autoclear);
    uint64_t pos = s->header_length;
    if (hb->nb) {
        put_be32(h + pos, EXT_BITMAPS);
        put_be32(h + pos + 4, BITMAPS_EXT_LEN);
        put_be32(h + pos + 8, hb->nb);
        put_be32(h + pos + 12, 0);
        put_be64(h + pos + 16, hb->dir_size);
        put_be64(h + pos + 24, hb->dir_offset);
        pos += 8 + BITMAPS_EXT_LEN;
    }
    if (hb->cap) {
        uint32_t len = BLOCKD_EXT_FIXED + 8 * hb->cap;
        if (pos + 8 + len > s->cs)
            return -ENOSPC;
        put_be32(h + pos, EXT_BLOCKD_BITMAPS);
        put_be32(h + pos + 4, len);
        put_be32(h + pos + 8, BLOCKD_EXT_VERSION);
        put_be32(h + pos + 12, hb->nsafe);
        put_be64(h + pos + 16, hb->dir_offset);
        for (uint32_t i = 0; i < hb->nsafe; i++)
            put_be64(h + pos + 8 + BLOCKD_EXT_FIXED + 8 * i, hb->safe[i]);
        pos += 8 + len;
    }
    for (uint64_t off = s->header_length; off + 8 <= f.end;) {
        uint32_t type = be32_at(old + off), len = be32_at(old + off + 4);
        if (type == EXT_END)
            break;
        uint64_t step = 8 + ((uint64_t)len + 7) / 8 * 8;
        if (type != EXT_BITMAPS && type != EXT_BLOCKD_BITMAPS) {
            if (pos + step > s->cs)
                return -ENOSPC;
            memcpy(h + pos, old + off, step);
            pos += step;
        }
        off += step;
    }
    pos += 8; /* the end marker: zeroes */
    if (f.backing_off) {
        if (pos + f.backing_len > s->cs || f.backing_off + f.backing_len > s->cs)
            return -ENOSPC;
        memcpy(h + pos, old + f.backing_off, f.backing_len);
        put_be64(h + 8, pos);
        pos += f.backing_len;
    }
    if (pos > s->cs)
        return -ENOSPC;
    /* The bytes the old header used are rewritten too (zeroes past the new end). */
    uint64_t old_end = MAX(f.end, f.backing_off ? f.backing_off + f.backing_len : 0);
    uint64_t span = MIN(MAX(pos, old_end), (uint64_t)s->cs), first = 0, last = 0;
    bool changed = false;
    for (uint64_t i = 0; i < span; i++) {
        if (h[i] != old[i]) {
            if (!changed)
                first = i;
            last = i;
            changed = true;
        }
    }
    if (changed && (r = qcow2_file_write(s, h + first, last - first + 1, first)) < 0)
        return r;
    if ((r = node_flush(s->file)) < 0)
        return r;
    s->autoclear = hb->autoclear;
    return 0;
}

/* Writes the serialised bits into the bitmap's data clusters (table t,
 * every entry allocated). */
static int write_bits(Qcow2 *s, const uint64_t *t, uint32_t tsize, const HBitmap *bits)
{
    uint64_t words = hbitmap_serialized_size(bits) / 8, per = s->cs / 8;
    g_autofree uint8_t *buf = g_malloc(s->cs);
    for (uint32_t i = 0; i < tsize; i++) {
        uint64_t w0 = (uint64_t)i * per, n = w0 < words ? MIN(per, words - w0) : 0;
        memset(buf + n * 8, 0, s->cs - n * 8);
        if (n)
            hbitmap_serialize_words(bits, w0, n, buf);
        int r = qcow2_file_write(s, buf, s->cs, t[i] & BME_ENTRY_OFFSET);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Clusters of the file that a failed or finished store gives back. */
typedef struct Frees {
    GArray *ranges;          /* FreeRange */
    GHashTable *seen;        /* cluster offsets (gint64 *) already listed */
} Frees;

static void frees_init(Frees *fr)
{
    fr->ranges = g_array_new(FALSE, FALSE, sizeof(FreeRange));
    fr->seen = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
}

static void frees_clear(Frees *fr)
{
    g_array_free(fr->ranges, TRUE);
    g_hash_table_destroy(fr->seen);
}

/* Lists the clusters of [off, off+len) that are in use and not listed yet
 * (a corrupt image naming one cluster twice must not free it twice). */
static void frees_add(Qcow2 *s, Frees *fr, uint64_t off, uint64_t len)
{
    for (uint64_t c = off >> s->cluster_bits; c < DIV_UP(off + len, s->cs); c++) {
        uint64_t rc;
        gint64 key = (gint64)(c << s->cluster_bits);
        /* (The refcount is read first: it loads the block that
         * qcow2_clusters_allocated looks at in the cache.) */
        if (g_hash_table_contains(fr->seen, &key) || qcow2_refcount_of(s, c, &rc) < 0 || rc == 0 ||
            !qcow2_clusters_allocated(s, c << s->cluster_bits, 1))
            continue;
        g_hash_table_add(fr->seen, g_memdup2(&key, sizeof key));
        FreeRange f = { c << s->cluster_bits, s->cs };
        g_array_append_val(fr->ranges, f);
    }
}

/* Lists an entry's data clusters and table for freeing. */
static void frees_add_entry(Qcow2 *s, Frees *fr, const BitmapEntry *e)
{
    g_autofree uint64_t *t = NULL;
    const uint64_t *table = e->table;
    if (!table && read_table(s, e, &t) == 0)
        table = t;
    for (uint32_t i = 0; table && i < e->table_size; i++)
        if (table[i] & BME_ENTRY_OFFSET)
            frees_add(s, fr, table[i] & BME_ENTRY_OFFSET, s->cs);
    /* An unreadable table: its clusters leak (qemu-img check -r leaks). */
    if (table)
        frees_add(s, fr, e->table_offset, (uint64_t)e->table_size * 8);
}

/* Queues the listed clusters' references to be dropped; the caller
 * applies them after a flush (qcow2_apply_pending_frees). */
static void frees_apply(Qcow2 *s, Frees *fr)
{
    for (guint i = 0; i < fr->ranges->len; i++) {
        FreeRange *f = &g_array_index(fr->ranges, FreeRange, i);
        qcow2_free_later(s, f->offset, f->length);
    }
}

/* Writes `dir` (BitmapEntry *) as the new directory and switches the
 * header to it (autoclear bit 0 when it is not empty, bit 63 and blockd's
 * extension for its crash-safe entries); the old directory's clusters are
 * added to `drop` (its tables are the caller's business). */
static int commit(Qcow2 *s, GPtrArray *dir, uint32_t cap, Frees *drop)
{
    Qcow2Bitmaps *b = s->bitmaps;
    uint64_t size = 0, off = 0;
    for (guint i = 0; i < dir->len; i++)
        size += entry_size(strlen(((BitmapEntry *)dir->pdata[i])->name));
    if (size > MAX_DIR_SIZE || dir->len > MAX_BITMAPS)
        return -EFBIG;
    int r;
    if (size) {
        g_autofree uint8_t *raw = g_malloc0(size);
        uint64_t pos = 0;
        for (guint i = 0; i < dir->len; i++) {
            const BitmapEntry *e = dir->pdata[i];
            size_t nl = strlen(e->name);
            put_be64(raw + pos, e->table_offset);
            put_be32(raw + pos + 8, e->table_size);
            put_be32(raw + pos + 12, e->flags);
            raw[pos + 16] = BME_TYPE_DIRTY;
            raw[pos + 17] = e->gran_bits;
            put_be16(raw + pos + 18, (uint16_t)nl);
            memcpy(raw + pos + DIR_ENTRY_FIXED, e->name, nl);
            pos += entry_size(nl);
        }
        if ((r = qcow2_alloc_clusters(s, DIV_UP(size, s->cs), &off)) < 0)
            return r;
        g_assert(qcow2_clusters_allocated(s, off, DIV_UP(size, s->cs)));
        if ((r = qcow2_file_write(s, raw, size, off)) < 0 || (r = node_flush(s->file)) < 0) {
            qcow2_free_later(s, off, size);
            return r;
        }
    }
    g_autofree uint64_t *safe = g_new(uint64_t, dir->len + 1);
    uint32_t nsafe = 0;
    for (guint i = 0; i < dir->len; i++) {
        const BitmapEntry *e = dir->pdata[i];
        if (e->crash_safe)
            safe[nsafe++] = e->table_offset;
    }
    g_assert(nsafe <= cap);
    HeaderBitmaps hb = {
        .autoclear = (dir->len ? AUTOCLEAR_BITMAPS : 0) | (nsafe ? AUTOCLEAR_BLOCKD : 0),
        .nb = dir->len, .dir_offset = off, .dir_size = size,
        .safe = safe, .nsafe = nsafe, .cap = nsafe ? cap : 0,
    };
    if ((r = switch_header(s, &hb)) < 0) {
        /* Which header is on disk is unknown: no more metadata writes. */
        s->broken = true;
        return r;
    }
    if (b->dir_size)
        frees_add(s, drop, b->dir_offset, b->dir_size);
    b->dir_offset = off;
    b->dir_size = size;
    b->blockd_cap = hb.cap;
    return 0;
}

/* The capacity blockd's extension gets for n entries: powers of two, so
 * that adding a bitmap seldom moves the extensions behind it. */
static uint32_t cap_for(const Qcow2Bitmaps *b, uint32_t n, uint32_t room)
{
    if (n == 0)
        return 0;
    uint32_t cap = MAX(b->blockd_cap, (uint32_t)BLOCKD_EXT_MIN_CAP);
    while (cap < n)
        cap *= 2;
    return MIN(cap, room);
}

/* ---- open ---- */

bool qcow2_bitmaps_open(Qcow2 *s, BlockNode *self, const uint8_t *h, uint64_t hlen, GError **errp)
{
    const char *me = node_name(self);
    Qcow2Bitmaps *b = g_new0(Qcow2Bitmaps, 1);
    b->dir = g_ptr_array_new_with_free_func(entry_free);
    s->bitmaps = b;
    FoundExts f;
    if (!find_exts(s, h, hlen, &f)) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "Invalid qcow2 header extensions in image '%s'", me);
        return false;
    }
    bool drop = false; /* an extension to take out of the header */
    if (f.bitmaps && !(s->autoclear & AUTOCLEAR_BITMAPS)) {
        /* QEMU's warnings: the extension is ignored (and dropped when writing). */
        if (s->version < 3)
            g_message("warning: image '%s': This qcow2 v2 image contains bitmaps, but they may have been "
                      "modified by a program without persistent bitmap support; so now they must all be "
                      "considered inconsistent", me);
        else
            g_message("warning: image '%s': a program lacking bitmap support modified this file, so all "
                      "bitmaps are now considered inconsistent; some clusters may be leaked, run "
                      "'qemu-img check -r' on the image file to fix", me);
        f.bitmaps = NULL;
        drop = true;
    }
    uint64_t dir_offset = 0;
    if (f.bitmaps) {
        if (f.bitmaps_len != BITMAPS_EXT_LEN) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "bitmaps_ext: Invalid extension length");
            return false;
        }
        uint32_t nb = be32_at(f.bitmaps);
        uint64_t dir_size = be64_at(f.bitmaps + 8);
        dir_offset = be64_at(f.bitmaps + 16);
        if (be32_at(f.bitmaps + 4) != 0) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "bitmaps_ext: Reserved field is not zero");
            return false;
        }
        if (nb > MAX_BITMAPS) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                            "bitmaps_ext: Image has %" PRIu32 " bitmaps, exceeding the QEMU supported maximum of %d",
                            nb, MAX_BITMAPS);
            return false;
        }
        if (nb == 0) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "found bitmaps extension with zero bitmaps");
            return false;
        }
        if (dir_offset & (s->cs - 1)) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA, "bitmaps_ext: invalid bitmap directory offset");
            return false;
        }
        if (dir_size > MAX_DIR_SIZE) {
            qcow2_set_error(errp, G_IO_ERROR_INVALID_DATA,
                            "bitmaps_ext: bitmap directory size (%" PRIu64 ") exceeds the maximum supported size (%u)",
                            dir_size, MAX_DIR_SIZE);
            return false;
        }
        GPtrArray *dir = read_directory(s, dir_offset, dir_size, nb, errp);
        if (!dir)
            return false;
        g_ptr_array_free(b->dir, TRUE);
        b->dir = dir;
        b->dir_offset = dir_offset;
        b->dir_size = dir_size;
        /* blockd's crash-safe bitmaps: valid only while autoclear bit 63 says
         * that no other program wrote to the image since. */
        if (f.blockd && (s->autoclear & AUTOCLEAR_BLOCKD) && f.blockd_len >= BLOCKD_EXT_FIXED &&
            be32_at(f.blockd) == BLOCKD_EXT_VERSION && be64_at(f.blockd + 8) == dir_offset) {
            uint32_t n = MIN(be32_at(f.blockd + 4), (f.blockd_len - BLOCKD_EXT_FIXED) / 8);
            for (guint i = 0; i < dir->len; i++) {
                BitmapEntry *e = dir->pdata[i];
                for (uint32_t k = 0; k < n && !e->consistent; k++)
                    if (be64_at(f.blockd + BLOCKD_EXT_FIXED + 8 * k) == e->table_offset)
                        e->consistent = e->crash_safe = true;
            }
            b->blockd_cap = (f.blockd_len - BLOCKD_EXT_FIXED) / 8;
        }
    }
    b->drop_ext = drop;
    b->blockd_ext = f.blockd != NULL;
    if (s->read_only || s->version < 3)
        return true;
    return qcow2_bitmaps_start_writing(s, me, errp);
}

bool qcow2_bitmaps_start_writing(Qcow2 *s, const char *me, GError **errp)
{
    Qcow2Bitmaps *b = s->bitmaps;
    g_assert(!s->read_only);
    if (s->version < 3)
        return true;
    /* Writing.  Until the bitmap layer takes the bitmaps over (a store),
     * writes are not tracked: every bitmap is marked in use and nothing is
     * claimed crash-safe, as QEMU leaves an image it writes to.  Unknown
     * autoclear bits are cleared too (the spec's rule). */
    bool flags_change = false;
    for (guint i = 0; i < b->dir->len; i++)
        flags_change |= !(((BitmapEntry *)b->dir->pdata[i])->flags & BME_FLAG_IN_USE);
    uint64_t want = b->dir->len ? AUTOCLEAR_BITMAPS : 0;
    if (!flags_change && !b->drop_ext && !b->blockd_ext && s->autoclear == want)
        return true;
    g_mutex_lock(&s->lock);
    int r;
    if (flags_change) {
        g_autoptr(GPtrArray) dir = g_ptr_array_new_with_free_func(entry_free);
        for (guint i = 0; i < b->dir->len; i++) {
            BitmapEntry *e = entry_copy(b->dir->pdata[i]);
            e->flags |= BME_FLAG_IN_USE;
            e->crash_safe = false;
            g_ptr_array_add(dir, e);
        }
        Frees drop;
        frees_init(&drop);
        r = commit(s, dir, 0, &drop);
        if (r == 0)
            frees_apply(s, &drop);
        frees_clear(&drop);
        if (r == 0) {
            for (guint i = 0; i < b->dir->len; i++)
                ((BitmapEntry *)b->dir->pdata[i])->flags |= BME_FLAG_IN_USE;
        }
    } else {
        /* The same directory; the header alone changes. */
        HeaderBitmaps hb = { .autoclear = want, .nb = b->dir->len, .dir_offset = b->dir_offset,
                             .dir_size = b->dir_size };
        r = switch_header(s, &hb);
        if (r == 0)
            b->blockd_cap = 0;
    }
    for (guint i = 0; i < b->dir->len; i++)
        ((BitmapEntry *)b->dir->pdata[i])->crash_safe = false;
    if (r == 0 && s->pending_free->len)
        r = qcow2_apply_pending_frees(s);
    g_mutex_unlock(&s->lock);
    if (r < 0) {
        qcow2_set_error(errp, G_IO_ERROR_FAILED, "Could not update the qcow2 header of '%s': %s", me,
                        g_strerror(-r));
        return false;
    }
    return true;
}

void qcow2_bitmaps_free(Qcow2 *s)
{
    if (!s->bitmaps)
        return;
    g_ptr_array_free(s->bitmaps->dir, TRUE);
    g_free(s->bitmaps);
    s->bitmaps = NULL;
}

/* ---- the BlockDriver callbacks ---- */

bool qcow2_bitmaps_can_add(void *o, const char *name, uint32_t granularity, const char *const *names, guint n,
                           GError **errp)
{
    Qcow2 *s = o;
    if (s->version < 3) {
        qcow2_set_error(errp, G_IO_ERROR_NOT_SUPPORTED, "Cannot store dirty bitmaps in qcow2 v2 files");
        return false;
    }
    uint32_t gran_bits = (uint32_t)g_bit_nth_lsf(granularity, -1);
    if (gran_bits > BME_MAX_GRAN_BITS) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "Granularity exceeds maximum (%llu bytes)",
                        1ULL << BME_MAX_GRAN_BITS);
        return false;
    }
    if (gran_bits < BME_MIN_GRAN_BITS) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "Granularity is under minimum (%llu bytes)",
                        1ULL << BME_MIN_GRAN_BITS);
        return false;
    }
    uint64_t bytes = DIV_UP(bits_for(s->size, gran_bits), 8);
    if (bytes > BME_MAX_PHYS_SIZE || bytes > (uint64_t)BME_MAX_TABLE_SIZE * s->cs) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT,
                        "Too much space will be occupied by the bitmap. Use larger granularity");
        return false;
    }
    if (strlen(name) > BME_MAX_NAME) {
        qcow2_set_error(errp, G_IO_ERROR_INVALID_ARGUMENT, "Name length exceeds maximum (%u characters)",
                        BME_MAX_NAME);
        return false;
    }
    uint64_t dir_size = entry_size(strlen(name));
    for (guint i = 0; i < n; i++)
        dir_size += entry_size(strlen(names[i]));
    if (n + 1 > MAX_BITMAPS) {
        qcow2_set_error(errp, G_IO_ERROR_NO_SPACE, "Maximum number of persistent bitmaps is already reached");
        return false;
    }
    if (dir_size > MAX_DIR_SIZE) {
        qcow2_set_error(errp, G_IO_ERROR_NO_SPACE, "Not enough space in the bitmap directory");
        return false;
    }
    /* QEMU 7.2 takes the bitmap and loses it at close ("Lost persistent
     * bitmaps ... No write access"); blockd says so at once. */
    if (s->read_only) {
        qcow2_set_error(errp, G_IO_ERROR_READ_ONLY, "No write access");
        return false;
    }
    return true;
}

bool qcow2_bitmaps_load(void *o, GPtrArray *out, GError **errp)
{
    Qcow2 *s = o;
    g_mutex_lock(&s->lock);
    Qcow2Bitmaps *b = s->bitmaps;
    b->loaded = true;
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    for (guint i = 0; i < b->dir->len; i++) {
        BitmapEntry *e = b->dir->pdata[i];
        StoredBitmap *sb = g_new0(StoredBitmap, 1);
        sb->name = g_strdup(e->name);
        sb->granularity = 1u << e->gran_bits;
        sb->node_size = s->size;
        sb->enabled = e->consistent && (e->flags & BME_FLAG_AUTO);
        sb->inconsistent = !e->consistent;
        g_ptr_array_add(out, sb);
        if (!e->consistent)
            continue;
        uint64_t *t = NULL;
        int r = read_table(s, e, &t);
        if (r == 0) {
            sb->bits = hbitmap_try_new(bits_for(s->size, e->gran_bits));
            r = sb->bits ? read_bits(s, e, t, sb->bits) : -ENOMEM;
        }
        if (r < 0) {
            g_message("warning: could not read bitmap '%s' from image '%s' (%s); the bitmap is inconsistent",
                      e->name, node_filename(s->file) ? node_filename(s->file) : "", g_strerror(-r));
            hbitmap_free(sb->bits);
            sb->bits = NULL;
            sb->inconsistent = true;
            sb->enabled = false;
            e->consistent = false;
            g_free(t);
            continue;
        }
        /* A table of allocated clusters of its own can take in-place updates. */
        g_free(e->table);
        e->table = !s->read_only && table_owned(s, t, e->table_size, seen) ? t : NULL;
        if (!e->table)
            g_free(t);
    }
    g_mutex_unlock(&s->lock);
    return true;
}

static BitmapEntry *find_entry(GPtrArray *dir, const char *name)
{
    for (guint i = 0; i < dir->len; i++)
        if (strcmp(((BitmapEntry *)dir->pdata[i])->name, name) == 0)
            return dir->pdata[i];
    return NULL;
}

/* Data clusters and a table for a bitmap with `tsize` table entries: new,
 * all allocated; the table is written (the data is the caller's). */
static int new_table(Qcow2 *s, uint32_t tsize, uint64_t **table, uint64_t *table_offset, Frees *undo)
{
    uint64_t data, toff;
    uint64_t tclusters = DIV_UP((uint64_t)tsize * 8, s->cs);
    int r = qcow2_alloc_clusters(s, tsize, &data);
    if (r < 0)
        return r;
    frees_add(s, undo, data, (uint64_t)tsize * s->cs);
    if ((r = qcow2_alloc_clusters(s, tclusters, &toff)) < 0)
        return r;
    frees_add(s, undo, toff, tclusters * s->cs);
    g_assert(qcow2_clusters_allocated(s, data, tsize) && qcow2_clusters_allocated(s, toff, tclusters));
    uint64_t *t = g_new(uint64_t, tsize);
    g_autofree uint8_t *raw = g_malloc0(tclusters * s->cs);
    for (uint32_t i = 0; i < tsize; i++) {
        t[i] = data + (uint64_t)i * s->cs;
        put_be64(raw + 8 * i, t[i]);
    }
    if ((r = qcow2_file_write(s, raw, tclusters * s->cs, toff)) < 0) {
        g_free(t);
        return r;
    }
    *table = t;
    *table_offset = toff;
    return 0;
}

bool qcow2_bitmaps_store(void *o, GPtrArray *entries, bool clean, GError **errp)
{
    Qcow2 *s = o;
    Qcow2Bitmaps *b = s->bitmaps;
    if (s->read_only) {
        qcow2_set_error(errp, G_IO_ERROR_READ_ONLY, "No write access");
        return false;
    }
    g_mutex_lock(&s->lock);
    int r = s->broken ? -EIO : 0;
    uint32_t room = 0;
    if (r == 0)
        r = header_room(s, &room);
    g_autoptr(GPtrArray) dir = g_ptr_array_new_with_free_func(entry_free);
    g_autofree guint *slot = g_new0(guint, entries->len + 1); /* entry i -> its place in dir, +1 */
    Frees undo, drop;
    frees_init(&undo);
    frees_init(&drop);
    uint32_t nsafe = 0;
    const char *failed = NULL;
    for (guint i = 0; r == 0 && i < entries->len; i++) {
        StoredBitmap *sb = entries->pdata[i];
        BitmapEntry *old = find_entry(b->dir, sb->name);
        if (sb->inconsistent) {
            /* Kept as the image has it: in use, not ours. */
            if (old) {
                BitmapEntry *e = entry_copy(old);
                e->flags |= BME_FLAG_IN_USE;
                e->consistent = e->crash_safe = false;
                g_free(e->table);
                e->table = NULL;
                g_ptr_array_add(dir, e);
            }
            continue;
        }
        uint32_t gran_bits = (uint32_t)g_bit_nth_lsf(sb->granularity, -1);
        uint64_t tsize = table_size_for(s, gran_bits);
        if (tsize > BME_MAX_TABLE_SIZE || tsize * s->cs > BME_MAX_PHYS_SIZE ||
            hbitmap_size(sb->bits) != bits_for(s->size, gran_bits)) {
            failed = sb->name;
            r = -EFBIG;
            break;
        }
        BitmapEntry *e = g_new0(BitmapEntry, 1);
        e->name = g_strdup(sb->name);
        e->gran_bits = (uint8_t)gran_bits;
        e->table_size = (uint32_t)tsize;
        e->consistent = true;
        e->crash_safe = !clean && nsafe < cap_for(b, nsafe + 1, room);
        nsafe += e->crash_safe;
        if (!clean && !e->crash_safe && !b->warned_room) {
            g_message("warning: image '%s': no room left in the header cluster to list bitmap '%s' as "
                      "crash-safe; it is stored as QEMU stores it (inconsistent after a crash)",
                      node_filename(s->file) ? node_filename(s->file) : "", sb->name);
            b->warned_room = true;
        }
        e->flags = (clean ? 0 : BME_FLAG_IN_USE) | (sb->enabled ? BME_FLAG_AUTO : 0);
        g_ptr_array_add(dir, e);
        slot[i] = dir->len;
        if (old && old->table && old->consistent && !sb->reset && old->table_size == tsize &&
            old->gran_bits == gran_bits) {
            /* Only bits set since: in place. */
            e->table = g_memdup2(old->table, tsize * 8);
            e->table_offset = old->table_offset;
        } else {
            if ((r = new_table(s, (uint32_t)tsize, &e->table, &e->table_offset, &undo)) < 0) {
                failed = sb->name;
                break;
            }
            if (old)
                frees_add_entry(s, &drop, old);
        }
        if ((r = write_bits(s, e->table, e->table_size, sb->bits)) < 0) {
            failed = sb->name;
            break;
        }
    }
    /* Bitmaps that are gone.  (Never loaded, they are not the caller's to
     * drop: they stay, in use.) */
    for (guint i = 0; r == 0 && i < b->dir->len; i++) {
        BitmapEntry *old = b->dir->pdata[i];
        if (find_entry(dir, old->name))
            continue;
        if (b->loaded) {
            frees_add_entry(s, &drop, old);
        } else {
            BitmapEntry *e = entry_copy(old);
            e->flags |= BME_FLAG_IN_USE;
            e->consistent = e->crash_safe = false;
            g_free(e->table);
            e->table = NULL;
            g_ptr_array_add(dir, e);
        }
    }
    if (r == 0 && (r = node_flush(s->file)) == 0)
        r = commit(s, dir, cap_for(b, nsafe, room), &drop);
    if (r == 0) {
        frees_apply(s, &drop); /* commit flushed the switch */
        GPtrArray *old = b->dir;
        b->dir = g_steal_pointer(&dir);
        g_ptr_array_free(old, TRUE);
        r = qcow2_apply_pending_frees(s);
        for (guint i = 0; i < entries->len; i++) {
            StoredBitmap *sb = entries->pdata[i];
            BitmapEntry *e = slot[i] ? b->dir->pdata[slot[i] - 1] : NULL;
            sb->data_offset = e && e->crash_safe ? slot[i] : 0;
        }
        if (r < 0) /* stored; dropping the old clusters failed (they leak) */
            g_message("warning: image '%s': freeing old bitmap clusters failed: %s",
                      node_filename(s->file) ? node_filename(s->file) : "", g_strerror(-r));
        r = 0;
    } else if (!s->broken) {
        /* Nothing switched: the new clusters were never referenced. */
        frees_apply(s, &undo);
    }
    frees_clear(&undo);
    frees_clear(&drop);
    g_mutex_unlock(&s->lock);
    if (r < 0) {
        if (failed)
            qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to store bitmap '%s' in the image: %s",
                            failed, g_strerror(-r));
        else
            qcow2_set_error(errp, g_io_error_from_errno(-r), "Failed to update bitmap extension: %s",
                            g_strerror(-r));
        return false;
    }
    return true;
}

int qcow2_bitmaps_write(void *o, uint64_t loc, uint64_t first_word, uint64_t nwords, const void *buf)
{
    Qcow2 *s = o;
    Qcow2Bitmaps *b = s->bitmaps;
    if (loc == 0 || loc > b->dir->len)
        return -EINVAL;
    const BitmapEntry *e = b->dir->pdata[loc - 1];
    if (!e->table || !e->crash_safe)
        return -EINVAL;
    uint64_t at = first_word * 8, len = nwords * 8;
    if (DIV_UP(at + len, s->cs) > e->table_size)
        return -EINVAL;
    const uint8_t *p = buf;
    while (len > 0) {
        uint64_t in = at & (s->cs - 1), n = MIN(len, s->cs - in);
        int r = node_pwrite(s->file, p, (uint32_t)n, (e->table[at >> s->cluster_bits] & BME_ENTRY_OFFSET) + in, 0);
        if (r < 0)
            return r;
        p += n;
        at += n;
        len -= n;
    }
    return 0;
}

int qcow2_bitmaps_sync(void *o)
{
    Qcow2 *s = o;
    return node_flush(s->file);
}
