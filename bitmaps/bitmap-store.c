/* Dirty-bitmap persistence: the sidecar file, or an image that stores
 * bitmaps itself (see bitmaps/bitmap-store.h, docs/bitmaps.md). */
#define G_LOG_DOMAIN "blockd-bitmaps"
#include "bitmaps/bitmap-store.h"

#include <gio/gio.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_MAGIC "BLKDBMAP"
#define STORE_VERSION 1
#define HEADER_SIZE 32
#define ENTRY_FIXED 40
#define DATA_ALIGN 4096
#define ENTRY_ENABLED      (1u << 0)
#define ENTRY_CRC_VALID    (1u << 1)
#define ENTRY_INCONSISTENT (1u << 2)
#define MAX_NAME 1023

typedef struct PendingRun {
    uint64_t data_offset;
    HBitmap *bits, *durable;
    uint64_t first_word, last_word;
} PendingRun;

struct BitmapStore {
    BlockNode *node;        /* an image store: the node whose image holds the bitmaps */
    char *path;             /* a sidecar: its path */
    int fd;                 /* -1 until the file exists */
    GMutex lock;
    GCond cond;
    GArray *pending;        /* PendingRun */
    uint64_t issued;        /* last ticket handed out */
    uint64_t durable;       /* every ticket <= this is on stable storage */
    bool flushing;
    bool quiesced;
    int error;              /* sticky -errno of a failed durable write */
};

/* CRC-32 (IEEE), as zlib's crc32(). */
static uint32_t crc32_update(uint32_t crc, const void *data, size_t len)
{
    static uint32_t table[256];
    static gsize ready;
    if (g_once_init_enter(&ready)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        g_once_init_leave(&ready, 1);
    }
    const uint8_t *p = data;
    crc = ~crc;
    while (len--)
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v) { v = GUINT32_TO_LE(v); memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { v = GUINT64_TO_LE(v); memcpy(p, &v, 8); }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return GUINT32_FROM_LE(v); }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return GUINT64_FROM_LE(v); }

static uint64_t bits_for(uint64_t node_size, uint32_t granularity)
{
    return (node_size + granularity - 1) / granularity;
}

static uint64_t data_bytes(uint64_t nbits)
{
    return (nbits + 63) / 64 * 8;
}

char *bitmap_store_path_for(const char *image)
{
    return g_strconcat(image, ".bitmaps", NULL);
}

static BitmapStore *store_alloc(const char *path, int fd)
{
    BitmapStore *st = g_new0(BitmapStore, 1);
    st->path = g_strdup(path);
    st->fd = fd;
    g_mutex_init(&st->lock);
    g_cond_init(&st->cond);
    st->pending = g_array_new(FALSE, FALSE, sizeof(PendingRun));
    return st;
}

BitmapStore *bitmap_store_new(const char *path)
{
    return store_alloc(path, -1);
}

BitmapStore *bitmap_store_new_image(BlockNode *node)
{
    BitmapStore *st = store_alloc(NULL, -1);
    st->node = node;
    return st;
}

BitmapStore *bitmap_store_open_image(BlockNode *node, GPtrArray **loaded, GError **errp)
{
    *loaded = g_ptr_array_new_with_free_func((GDestroyNotify)stored_bitmap_free);
    if (!node_bitmaps_load(node, *loaded, errp))
        return NULL;
    return bitmap_store_new_image(node);
}

static void warn(const char *path, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void warn(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_message("dirty bitmap file '%s' is damaged: %s", path, msg);
}

/* Parses one directory entry at `p` (bounded by `end`); NULL if unusable.
 * Sets *next to the following entry. */
static StoredBitmap *parse_entry(const char *path, const uint8_t *file, size_t file_len,
                                 const uint8_t *p, const uint8_t *end, uint64_t node_size,
                                 const uint8_t **next)
{
    if (end - p < ENTRY_FIXED) {
        warn(path, "the bitmap directory is truncated");
        return NULL;
    }
    uint16_t name_len = (uint16_t)(p[28] | (p[29] << 8));
    size_t entry_len = ENTRY_FIXED + ((name_len + 7u) & ~7u);
    if (name_len == 0 || name_len > MAX_NAME || (size_t)(end - p) < entry_len) {
        warn(path, "a bitmap directory entry has an invalid name length");
        return NULL;
    }
    /* A NUL would shorten the name (to "" even), which a rewrite cannot store. */
    if (memchr(p + ENTRY_FIXED, '\0', name_len)) {
        warn(path, "a bitmap directory entry has an invalid name");
        return NULL;
    }
    *next = p + entry_len;
    StoredBitmap *sb = g_new0(StoredBitmap, 1);
    sb->name = g_strndup((const char *)p + ENTRY_FIXED, name_len);
    sb->data_offset = get64(p);
    sb->node_size = get64(p + 8);
    sb->granularity = get32(p + 16);
    uint32_t flags = get32(p + 20);
    uint32_t data_crc = get32(p + 24);
    sb->enabled = flags & ENTRY_ENABLED;

    uint32_t crc = crc32_update(0, p, 32);
    crc = crc32_update(crc, p + ENTRY_FIXED, name_len);
    if (crc != get32(p + 32)) {
        warn(path, "the entry of bitmap '%s' fails its checksum; the bitmap is inconsistent", sb->name);
        goto inconsistent;
    }
    if (flags & ENTRY_INCONSISTENT)
        goto inconsistent;
    if (sb->granularity < 512 || (sb->granularity & (sb->granularity - 1))) {
        warn(path, "bitmap '%s' has an invalid granularity %u; the bitmap is inconsistent",
             sb->name, sb->granularity);
        goto inconsistent;
    }
    if (sb->node_size != node_size) {
        warn(path, "bitmap '%s' was made for %" G_GUINT64_FORMAT " bytes but the image has %"
             G_GUINT64_FORMAT "; the bitmap is inconsistent", sb->name, sb->node_size, node_size);
        goto inconsistent;
    }
    uint64_t nbits = bits_for(node_size, sb->granularity);
    uint64_t len = data_bytes(nbits);
    if (sb->data_offset > file_len || len > file_len - sb->data_offset) {
        warn(path, "the data of bitmap '%s' lies beyond the end of the file; the bitmap is inconsistent",
             sb->name);
        goto inconsistent;
    }
    const uint8_t *data = file + sb->data_offset;
    if ((flags & ENTRY_CRC_VALID) && crc32_update(0, data, len) != data_crc) {
        warn(path, "the data of bitmap '%s' fails its checksum; the bitmap is inconsistent", sb->name);
        goto inconsistent;
    }
    sb->bits = hbitmap_new(nbits);
    if (!hbitmap_deserialize(sb->bits, data)) {
        warn(path, "bitmap '%s' has bits set beyond the end of the image; the bitmap is inconsistent",
             sb->name);
        hbitmap_free(sb->bits);
        sb->bits = NULL;
        goto inconsistent;
    }
    return sb;

inconsistent:
    sb->inconsistent = true;
    sb->enabled = false;
    return sb;
}

BitmapStore *bitmap_store_open(const char *path, bool read_only, uint64_t node_size,
                               GPtrArray **loaded)
{
    *loaded = g_ptr_array_new_with_free_func((GDestroyNotify)stored_bitmap_free);
    g_autofree char *file = NULL;
    gsize len = 0;
    g_autoptr(GError) err = NULL;
    if (!g_file_get_contents(path, &file, &len, &err)) {
        if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT))
            g_message("cannot read dirty bitmap file: %s", err->message);
        return NULL;
    }
    const uint8_t *f = (const uint8_t *)file;
    if (len < HEADER_SIZE || memcmp(f, STORE_MAGIC, 8) != 0) {
        warn(path, "it is not a blockd bitmap file (bad magic); its bitmaps are not loaded");
        return NULL;
    }
    if (get32(f + 8) != STORE_VERSION) {
        warn(path, "unsupported version %u; its bitmaps are not loaded", get32(f + 8));
        return NULL;
    }
    uint32_t nentries = get32(f + 12);
    uint32_t dir_size = get32(f + 16);
    if (dir_size > len - HEADER_SIZE) {
        warn(path, "the bitmap directory is truncated");
        dir_size = (uint32_t)(len - HEADER_SIZE);
    }
    uint32_t crc = crc32_update(0, f, 24);
    crc = crc32_update(crc, f + HEADER_SIZE, dir_size);
    if (crc != get32(f + 24))
        warn(path, "the header fails its checksum; each bitmap is checked on its own");

    const uint8_t *p = f + HEADER_SIZE, *end = p + dir_size;
    for (uint32_t i = 0; i < nentries && p < end; i++) {
        const uint8_t *next = end;
        StoredBitmap *sb = parse_entry(path, f, len, p, end, node_size, &next);
        if (!sb)
            break;
        bool duplicate = false;
        for (guint k = 0; k < (*loaded)->len; k++)
            duplicate |= strcmp(((StoredBitmap *)(*loaded)->pdata[k])->name, sb->name) == 0;
        if (duplicate) {
            warn(path, "bitmap '%s' is listed twice; the second entry is ignored", sb->name);
            stored_bitmap_free(sb);
        } else {
            g_ptr_array_add(*loaded, sb);
        }
        p = next;
    }
    int fd = open(path, read_only ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        g_message("cannot open dirty bitmap file '%s': %s", path, g_strerror(errno));
        return store_alloc(path, -1);
    }
    return store_alloc(path, fd);
}

uint64_t bitmap_store_enqueue(BitmapStore *st, uint64_t data_offset, HBitmap *bits,
                              HBitmap *durable, uint64_t first_word, uint64_t last_word)
{
    PendingRun run = { data_offset, bits, durable, first_word, last_word };
    g_mutex_lock(&st->lock);
    g_array_append_val(st->pending, run);
    uint64_t ticket = ++st->issued;
    g_mutex_unlock(&st->lock);
    return ticket;
}

/* Writes the runs' current words in place, one fdatasync for all, then
 * marks what was written durable.  Called without the lock held. */
static int write_runs(BitmapStore *st, GArray *runs)
{
    if (st->node) {
        GArray *buf = g_array_new(FALSE, FALSE, sizeof(uint8_t));
        int r = 0;
        for (guint i = 0; i < runs->len && r == 0; i++) {
            PendingRun *run = &g_array_index(runs, PendingRun, i);
            uint64_t n = run->last_word - run->first_word + 1;
            g_array_set_size(buf, (guint)(n * 8));
            hbitmap_serialize_words(run->bits, run->first_word, n, (uint8_t *)buf->data);
            r = node_bitmaps_write(st->node, run->data_offset, run->first_word, n, buf->data);
        }
        g_array_free(buf, TRUE);
        return r < 0 ? r : node_bitmaps_sync(st->node);
    }
    if (st->fd < 0)
        return -EIO;
    GArray *written = g_array_new(FALSE, FALSE, sizeof(uint8_t));
    int r = 0;
    for (guint i = 0; i < runs->len && r == 0; i++) {
        PendingRun *run = &g_array_index(runs, PendingRun, i);
        uint64_t n = run->last_word - run->first_word + 1;
        g_array_set_size(written, (guint)(n * 8));
        hbitmap_serialize_words(run->bits, run->first_word, n, (uint8_t *)written->data);
        ssize_t w = pwrite(st->fd, written->data, n * 8, (off_t)(run->data_offset + run->first_word * 8));
        if (w != (ssize_t)(n * 8))
            r = w < 0 ? -errno : -EIO;
    }
    if (r == 0 && fdatasync(st->fd) < 0)
        r = -errno;
    g_array_free(written, TRUE);
    return r;
}

int bitmap_store_wait(BitmapStore *st, uint64_t ticket)
{
    g_mutex_lock(&st->lock);
    while (st->durable < ticket) {
        if (st->flushing || st->quiesced) {
            g_cond_wait(&st->cond, &st->lock);
            continue;
        }
        /* Become the flusher for everything queued so far. */
        st->flushing = true;
        GArray *runs = st->pending;
        st->pending = g_array_new(FALSE, FALSE, sizeof(PendingRun));
        uint64_t upto = st->issued;
        /* Snapshot the words before writing them: only bits that were set
         * when read may be called durable afterwards. */
        GArray *snap = g_array_new(FALSE, FALSE, sizeof(uint64_t));
        for (guint i = 0; i < runs->len; i++) {
            PendingRun *run = &g_array_index(runs, PendingRun, i);
            for (uint64_t w = run->first_word; w <= run->last_word; w++) {
                uint64_t v = hbitmap_word(run->bits, w);
                g_array_append_val(snap, v);
            }
        }
        g_mutex_unlock(&st->lock);
        int r = write_runs(st, runs);
        g_mutex_lock(&st->lock);
        if (r == 0) {
            guint k = 0;
            for (guint i = 0; i < runs->len; i++) {
                PendingRun *run = &g_array_index(runs, PendingRun, i);
                for (uint64_t w = run->first_word; w <= run->last_word; w++, k++)
                    if (run->durable)
                        hbitmap_or_word(run->durable, w, g_array_index(snap, uint64_t, k));
            }
        } else {
            st->error = r;
        }
        g_array_free(snap, TRUE);
        g_array_free(runs, TRUE);
        if (upto > st->durable)
            st->durable = upto;
        st->flushing = false;
        g_cond_broadcast(&st->cond);
    }
    int r = st->error;
    g_mutex_unlock(&st->lock);
    return r;
}

void bitmap_store_quiesce(BitmapStore *st)
{
    g_mutex_lock(&st->lock);
    st->quiesced = true;
    while (st->flushing)
        g_cond_wait(&st->cond, &st->lock);
    g_mutex_unlock(&st->lock);
}

void bitmap_store_forget(BitmapStore *st, HBitmap *bits)
{
    g_mutex_lock(&st->lock);
    g_assert(st->quiesced && !st->flushing);
    for (guint i = st->pending->len; i > 0; i--)
        if (g_array_index(st->pending, PendingRun, i - 1).bits == bits)
            g_array_remove_index(st->pending, i - 1);
    g_mutex_unlock(&st->lock);
}

void bitmap_store_resume(BitmapStore *st)
{
    g_mutex_lock(&st->lock);
    st->quiesced = false;
    g_cond_broadcast(&st->cond);
    g_mutex_unlock(&st->lock);
}

/* Writes all of buf at offset. */
static bool write_all(int fd, const void *buf, size_t len, off_t offset)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = pwrite(fd, p, len, offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
        offset += w;
    }
    return true;
}

static void fsync_parent_dir(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* Everything queued so far is covered by what was just written. */
static bool store_mark_durable(BitmapStore *st)
{
    g_mutex_lock(&st->lock);
    g_array_set_size(st->pending, 0);
    st->durable = st->issued;
    st->error = 0;
    g_cond_broadcast(&st->cond);
    g_mutex_unlock(&st->lock);
    return true;
}

bool bitmap_store_rewrite(BitmapStore *st, GPtrArray *entries, bool clean, GError **errp)
{
    if (st->node) {
        if (!node_bitmaps_store(st->node, entries, clean, errp))
            return false;
        for (guint i = 0; i < entries->len; i++) {
            StoredBitmap *sb = entries->pdata[i];
            if (sb->durable && sb->bits && !sb->inconsistent)
                hbitmap_merge(sb->durable, sb->bits);
        }
        return store_mark_durable(st);
    }
    if (entries->len == 0) {
        if (st->fd >= 0)
            close(st->fd);
        st->fd = -1;
        if (unlink(st->path) < 0 && errno != ENOENT) {
            g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(errno),
                        "Cannot remove dirty bitmap file '%s': %s", st->path, g_strerror(errno));
            return false;
        }
        fsync_parent_dir(st->path);
        return store_mark_durable(st);
    }

    /* Directory layout first, so that data offsets are known. */
    GByteArray *dir = g_byte_array_new();
    for (guint i = 0; i < entries->len; i++) {
        StoredBitmap *sb = entries->pdata[i];
        size_t name_len = strlen(sb->name);
        guint at = dir->len;
        g_byte_array_set_size(dir, at + ENTRY_FIXED + (guint)((name_len + 7) & ~7u));
        memset(dir->data + at, 0, dir->len - at);
        memcpy(dir->data + at + ENTRY_FIXED, sb->name, name_len);
    }
    uint64_t offset = (HEADER_SIZE + dir->len + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
    guint at = 0;
    for (guint i = 0; i < entries->len; i++) {
        StoredBitmap *sb = entries->pdata[i];
        size_t name_len = strlen(sb->name);
        uint8_t *e = dir->data + at;
        uint64_t len = sb->inconsistent ? 0 : data_bytes(hbitmap_size(sb->bits));
        sb->data_offset = offset;
        put64(e, offset);
        put64(e + 8, sb->node_size);
        put32(e + 16, sb->granularity);
        uint32_t flags = (sb->enabled ? ENTRY_ENABLED : 0) | (sb->inconsistent ? ENTRY_INCONSISTENT : 0);
        uint32_t data_crc = 0;
        if (clean && !sb->inconsistent) {
            g_autofree uint8_t *buf = g_malloc(len ? len : 1);
            hbitmap_serialize(sb->bits, buf);
            data_crc = crc32_update(0, buf, len);
            flags |= ENTRY_CRC_VALID;
        }
        put32(e + 20, flags);
        put32(e + 24, data_crc);
        e[28] = (uint8_t)(name_len & 0xff);
        e[29] = (uint8_t)(name_len >> 8);
        uint32_t crc = crc32_update(0, e, 32);
        put32(e + 32, crc32_update(crc, e + ENTRY_FIXED, name_len));
        offset += (len + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
        at += ENTRY_FIXED + (guint)((name_len + 7) & ~7u);
    }
    uint8_t header[HEADER_SIZE] = { 0 };
    memcpy(header, STORE_MAGIC, 8);
    put32(header + 8, STORE_VERSION);
    put32(header + 12, entries->len);
    put32(header + 16, dir->len);
    put32(header + 20, clean ? 1 : 0);
    uint32_t crc = crc32_update(0, header, 24);
    put32(header + 24, crc32_update(crc, dir->data, dir->len));

    g_autofree char *tmp = g_strconcat(st->path, ".tmp", NULL);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write_all(fd, header, HEADER_SIZE, 0) &&
              write_all(fd, dir->data, dir->len, HEADER_SIZE);
    for (guint i = 0; ok && i < entries->len; i++) {
        StoredBitmap *sb = entries->pdata[i];
        if (sb->inconsistent)
            continue;
        size_t len = hbitmap_serialized_size(sb->bits);
        g_autofree uint8_t *buf = g_malloc(len ? len : 1);
        hbitmap_serialize(sb->bits, buf);
        ok = write_all(fd, buf, len, (off_t)sb->data_offset);
        if (ok && sb->durable)
            hbitmap_merge(sb->durable, sb->bits);
    }
    ok = ok && ftruncate(fd, (off_t)offset) == 0 && fsync(fd) == 0 && rename(tmp, st->path) == 0;
    g_byte_array_free(dir, TRUE);
    if (!ok) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        g_set_error(errp, G_IO_ERROR, g_io_error_from_errno(e),
                    "Cannot write dirty bitmap file '%s': %s", st->path, g_strerror(e));
        return false;
    }
    fsync_parent_dir(st->path);
    if (st->fd >= 0)
        close(st->fd);
    st->fd = fd;
    return store_mark_durable(st);
}

void bitmap_store_free(BitmapStore *st)
{
    if (!st)
        return;
    if (st->fd >= 0)
        close(st->fd);
    g_array_free(st->pending, TRUE);
    g_mutex_clear(&st->lock);
    g_cond_clear(&st->cond);
    g_free(st->path);
    g_free(st);
}
