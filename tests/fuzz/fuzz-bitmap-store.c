/* Fuzz target "bitmap-store": the persistent dirty-bitmap sidecar loader
 * (bitmaps/bitmap-store.c bitmap_store_open) and a rewrite of what it
 * loaded.
 *
 * Input: a sidecar file (format: docs/bitmaps.md).  It is loaded twice:
 * as given, and with its checksums (header, entries, data) recomputed, so
 * that mutations get past the CRCs to the checks behind them.  The node
 * size is the one the first entry records (as for a sidecar made for the
 * image), else 1 MiB.  After the second load the bitmaps are written back
 * with bitmap_store_rewrite as dirty-bitmap.c does, and loading that file
 * must give the same bitmaps.  Last, the fixed file is loaded the way
 * blockdev-add does (dirty_bitmap_load_persistent on a file node over a
 * sparse image of that size, up to 64 GiB), the bitmaps are read and the
 * node closed, which writes the sidecar again. */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include "bitmaps/bitmap-store.h"
#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/hbitmap.h"
#include "block/driver.h"
#include "block/node.h"
#include "tests/unit/node-json.h"

#define HEADER_SIZE 32
#define ENTRY_FIXED 40
#define ENTRY_CRC_VALID (1u << 1)

static char *path, *image;   /* the sidecar path is image + ".bitmaps" */

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc & 1 ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
    }
    return ~crc;
}

static uint32_t get32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* The node size the sidecar was made for (first entry), or 1 MiB. */
static uint64_t node_size_of(const uint8_t *f, size_t len)
{
    if (len >= HEADER_SIZE + ENTRY_FIXED)
        return get64(f + HEADER_SIZE + 8) & INT64_MAX; /* node sizes are int64_t */
    return 1u << 20;
}

/* Recomputes every checksum the loader verifies, walking the directory as it does. */
static void fix_checksums(uint8_t *f, size_t len)
{
    memcpy(f, "BLKDBMAP", 8);
    put32(f + 8, 1);
    uint32_t nentries = get32(f + 12);
    uint32_t dir_size = MIN(get32(f + 16), (uint32_t)(len - HEADER_SIZE));
    uint8_t *p = f + HEADER_SIZE, *end = p + dir_size;
    for (uint32_t i = 0; i < nentries && end - p >= ENTRY_FIXED; i++) {
        uint16_t name_len = (uint16_t)(p[28] | (p[29] << 8));
        size_t entry_len = ENTRY_FIXED + ((name_len + 7u) & ~7u);
        if (name_len == 0 || (size_t)(end - p) < entry_len)
            break;
        uint64_t data_offset = get64(p), node_size = get64(p + 8) & INT64_MAX;
        uint32_t granularity = get32(p + 16);
        if ((get32(p + 20) & ENTRY_CRC_VALID) && granularity) {
            uint64_t nbits = (node_size + granularity - 1) / granularity;
            uint64_t bytes = (nbits + 63) / 64 * 8;
            if (data_offset <= len && bytes <= len - data_offset)
                put32(p + 24, crc32_update(0, f + data_offset, bytes));
        }
        uint32_t crc = crc32_update(0, p, 32);
        put32(p + 32, crc32_update(crc, p + ENTRY_FIXED, name_len));
        p += entry_len;
    }
    uint32_t crc = crc32_update(0, f, 24);
    put32(f + 24, crc32_update(crc, f + HEADER_SIZE, dir_size));
}

/* What every loaded bitmap must look like. */
static void check_loaded(GPtrArray *loaded, uint64_t node_size)
{
    for (guint i = 0; i < loaded->len; i++) {
        StoredBitmap *sb = loaded->pdata[i];
        g_assert_nonnull(sb->name);
        g_assert_cmpuint(strlen(sb->name), <=, 1023);
        for (guint k = 0; k < i; k++)
            g_assert_cmpstr(((StoredBitmap *)loaded->pdata[k])->name, !=, sb->name);
        if (sb->inconsistent) {
            g_assert_null(sb->bits);
            g_assert_false(sb->enabled);
            continue;
        }
        g_assert_nonnull(sb->bits);
        g_assert_cmpuint(sb->granularity, >=, 512);
        g_assert_cmpuint(sb->granularity & (sb->granularity - 1), ==, 0);
        g_assert_cmpuint(sb->node_size, ==, node_size);
        g_assert_cmpuint(hbitmap_size(sb->bits), ==, (node_size + sb->granularity - 1) / sb->granularity);
        g_assert_cmpuint(hbitmap_count(sb->bits), <=, hbitmap_size(sb->bits));
        int64_t first = hbitmap_next_set(sb->bits, 0, hbitmap_size(sb->bits));
        g_assert_true((first < 0) == (hbitmap_count(sb->bits) == 0));
    }
}

static void load(const uint8_t *data, size_t size, bool read_only, uint64_t node_size,
                 BitmapStore **store, GPtrArray **loaded)
{
    fuzz_write_file(path, data, size);
    *store = bitmap_store_open(path, read_only, node_size, loaded);
    check_loaded(*loaded, node_size);
}

static void check_same(GPtrArray *a, GPtrArray *b)
{
    g_assert_cmpuint(a->len, ==, b->len);
    for (guint i = 0; i < a->len; i++) {
        StoredBitmap *x = a->pdata[i], *y = b->pdata[i];
        g_assert_cmpstr(x->name, ==, y->name);
        g_assert_cmpint(x->inconsistent, ==, y->inconsistent);
        g_assert_cmpint(x->enabled, ==, y->enabled);
        if (x->inconsistent)
            continue;
        g_assert_cmpuint(x->granularity, ==, y->granularity);
        uint64_t n = hbitmap_size(x->bits);
        g_assert_cmpuint(n, ==, hbitmap_size(y->bits));
        g_assert_cmpuint(hbitmap_count(x->bits), ==, hbitmap_count(y->bits));
        for (uint64_t w = 0; w < (n + 63) / 64; w++)
            g_assert_cmpuint(hbitmap_word(x->bits, w), ==, hbitmap_word(y->bits, w));
    }
}

/* What blockdev-add of the image does with its sidecar, then a close.
 * Images over 64 GiB are left out: a bitmap of 512-byte granules of a
 * huge image is legitimately huge, and loading one holds it three times
 * over (bits, the durable copy, the buffer of the rewrite). */
static void load_through_node(const uint8_t *sidecar, size_t size, uint64_t node_size)
{
    if (node_size > (UINT64_C(1) << 36))
        return;
    int fd = open(image, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        g_error("fuzz: %s: %s", image, g_strerror(errno));
    int r = ftruncate(fd, (off_t)node_size);
    close(fd);
    if (r < 0) {
        g_unlink(image); /* a size this file system cannot hold */
        return;
    }
    fuzz_write_file(path, sidecar, size);
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "driver", "file");
    json_object_set_string_member(o, "node-name", "fuzz-file");
    json_object_set_string_member(o, "filename", image);
    g_autoptr(GError) err = NULL;
    BlockNode *node = test_node_create(o, false, &err);
    if (!node)
        g_error("fuzz: %s", err->message);
    dirty_bitmap_load_persistent(node);
    g_autoptr(GPtrArray) bitmaps = dirty_bitmap_list(node);
    for (guint i = 0; i < bitmaps->len; i++) {
        DirtyBitmap *bm = bitmaps->pdata[i];
        g_assert_cmpuint(dirty_bitmap_size(bm), ==, node_size);
        g_assert_cmpuint(dirty_bitmap_count(bm), <=, node_size);
        dirty_bitmap_next_dirty(bm, 0, node_size);
        dirty_bitmap_next_clean(bm, 0, node_size);
    }
    if (!node_delete("fuzz-file", &err))
        g_error("fuzz: %s", err->message);
    g_unlink(image);
    g_unlink(path);
}

static int bitmap_store_one(const uint8_t *data, size_t size)
{
    BitmapStore *st;
    GPtrArray *loaded;

    /* 1. The file as given. */
    load(data, size, true, node_size_of(data, size), &st, &loaded);
    bitmap_store_free(st);
    g_ptr_array_unref(loaded);
    if (size < HEADER_SIZE) {
        g_unlink(path);
        return 0;
    }

    /* 2. With valid checksums, writable, then written back and reloaded. */
    g_autofree uint8_t *fixed = g_memdup2(data, size);
    fix_checksums(fixed, size);
    uint64_t node_size = node_size_of(fixed, size);
    load(fixed, size, false, node_size, &st, &loaded);
    if (st) {
        g_autoptr(GError) err = NULL;
        bitmap_store_quiesce(st);
        bool ok = bitmap_store_rewrite(st, loaded, true, &err);
        bitmap_store_resume(st);
        g_assert_no_error(err);
        g_assert_true(ok);
        bitmap_store_free(st);
        GPtrArray *again = NULL;
        st = bitmap_store_open(path, true, node_size, &again);
        /* An empty list deletes the file: nothing to load then. */
        g_assert_true(st != NULL || loaded->len == 0);
        check_same(loaded, again);
        bitmap_store_free(st);
        g_ptr_array_unref(again);
    }
    g_ptr_array_unref(loaded);
    g_unlink(path);

    /* 3. Through the node layer. */
    load_through_node(fixed, size, node_size);
    return 0;
}

static void bitmap_store_init(void)
{
    block_drivers_init();
    image = g_build_filename(fuzz_tmpdir(), "image", NULL);
    path = bitmap_store_path_for(image);
}

static void bitmap_store_cleanup(void)
{
    g_clear_pointer(&path, g_free);
    g_clear_pointer(&image, g_free);
    node_graph_shutdown();
    fuzz_tmpdir_remove();
}

const FuzzTarget fuzz_target_bitmap_store = {
    .name = "bitmap-store",
    .init = bitmap_store_init,
    .one = bitmap_store_one,
    .cleanup = bitmap_store_cleanup,
};
