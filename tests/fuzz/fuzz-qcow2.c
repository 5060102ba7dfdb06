/* Fuzz target "qcow2": the qcow2 header and metadata parser
 * (block/drivers/qcow2*.c) through the real node layer and file driver.
 *
 * Input: an image file.  It is written to a file in a private directory
 * and opened as a qcow2 node over a file node, read-only: block status
 * over the first GiB, reads of the start of each extent found and of the
 * image's last bytes.  Then read-write: a few writes, write-zeroes, trims
 * and flushes, which walk the refcount and allocation code.  Afterwards no
 * node may be left in the graph.
 *
 * A backing file named in the image is opened when the name has no '/'
 * and no ':' (json:, rbd: and URI names would reach servers and clusters):
 * it resolves inside the private directory, which holds the image,
 * "backing.raw" (256 KiB of a pattern) and "backing.qcow2" (1 MiB, empty,
 * 512-byte clusters), so seeds with a backing chain reach the backing
 * code.  Other names would reach arbitrary host files, so those images
 * are opened with backing=null. */
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include "block/driver.h"
#include "block/node.h"
#include "tests/unit/node-json.h"
#include "block/drivers/qcow2.h"

#define KiB 1024u
#define MAX_EXTENTS 64
#define READ_MAX (64 * KiB)

static char *path;
static uint8_t *buf;

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Whether the backing file name the image holds stays inside our directory. */
static bool backing_name_is_local(const uint8_t *data, size_t size)
{
    if (size < 20)
        return true;
    uint64_t off = (uint64_t)be32(data + 8) << 32 | be32(data + 12);
    uint32_t len = be32(data + 16);
    if (off == 0 || off > size || len > size - off)
        return true; /* no name, or one the driver refuses */
    return !memchr(data + off, '/', len) && !memchr(data + off, ':', len) && !memchr(data + off, '\0', len);
}

static BlockNode *open_image(bool read_only, bool backing_null)
{
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "driver", "qcow2");
    json_object_set_string_member(o, "node-name", "fuzz-qcow2");
    json_object_set_boolean_member(o, "read-only", read_only);
    JsonObject *f = json_object_new();
    json_object_set_string_member(f, "driver", "file");
    json_object_set_string_member(f, "filename", path);
    json_object_set_boolean_member(f, "read-only", read_only);
    json_object_set_object_member(o, "file", f);
    if (backing_null)
        json_object_set_null_member(o, "backing");
    g_autoptr(GError) err = NULL;
    BlockNode *n = test_node_create(o, false, &err);
    g_assert_true((n != NULL) == (err == NULL));
    return n;
}

static void close_image(void)
{
    g_autoptr(GError) err = NULL;
    if (!node_delete("fuzz-qcow2", &err))
        g_error("fuzz: cannot delete the qcow2 node: %s", err->message);
    /* The file node (and any backing chain) went with it. */
    g_autoptr(GPtrArray) left = node_list();
    if (left->len)
        g_error("fuzz: node '%s' is left in the graph", node_name(left->pdata[0]));
}

static void read_range(BlockNode *n, uint64_t offset, uint64_t len)
{
    uint64_t size = node_size(n);
    if (offset >= size)
        return;
    len = MIN(MIN(len, size - offset), (uint64_t)READ_MAX);
    if (len)
        node_pread(n, buf, (uint32_t)len, offset);
}

static void read_side(BlockNode *n)
{
    BlockImageInfo info;
    if (node_image_info(n, &info) && info.backing_filename)
        g_assert_cmpuint(strlen(info.backing_filename), <=, 1023);
    uint64_t size = node_size(n);
    uint64_t end = MIN(size, (uint64_t)1 << 30), pos = 0;
    for (int calls = 0; pos < end && calls < MAX_EXTENTS; calls++) {
        uint32_t count = (uint32_t)MIN(end - pos, (uint64_t)UINT32_MAX);
        BlockExtents *e = extents_new(pos, pos + count);
        g_assert_nonnull(e);
        int r = node_block_status(n, count, pos, 0, e);
        uint64_t next = extents_next_offset(e);
        for (size_t i = 0; r == 0 && i < extents_count(e) && i < MAX_EXTENTS; i++) {
            BlockExtent x = extents_get(e, i);
            g_assert_cmpuint(x.offset, >=, pos);
            g_assert_cmpuint(x.length, >, 0);
            g_assert_cmpuint(x.offset + x.length, <=, pos + count);
            read_range(n, x.offset, x.length);
        }
        extents_free(e);
        if (r < 0 || next <= pos)
            break;
        pos = next;
    }
    if (size > 0) {
        BlockExtents *e = extents_new(size - 1, size);
        node_block_status(n, 1, size - 1, BLOCK_FLAG_REQ_ONE | BLOCK_FLAG_ALLOCATION, e);
        extents_free(e);
    }
    read_range(n, size > 3 * KiB ? size - 3 * KiB : 0, 3 * KiB);
}

/* Requests at the start, the middle and the end of the image. */
static void write_side(BlockNode *n)
{
    uint64_t size = node_size(n);
    if (size == 0)
        return;
    memset(buf, 0xa5, READ_MAX);
    const uint64_t spots[] = { 0, size / 2, size > 5000 ? size - 5000 : 0, 700 };
    for (size_t i = 0; i < G_N_ELEMENTS(spots); i++) {
        uint64_t off = MIN(spots[i], size - 1);
        uint32_t len = (uint32_t)MIN(size - off, (uint64_t)(5000 + 3000 * i));
        if (node_pwrite(n, buf, len, off, 0) < 0)
            return; /* metadata is broken: the node refuses writes from now on */
        node_pread(n, buf, len, off);
    }
    node_zero(n, (uint32_t)MIN(size, (uint64_t)128 * KiB), 0, BLOCK_FLAG_MAY_TRIM);
    node_zero(n, (uint32_t)MIN(size - size / 2, (uint64_t)70000), size / 2, 0);
    node_flush(n);
    node_trim(n, (uint32_t)MIN(size, (uint64_t)200 * KiB), 0, 0);
    node_pwrite(n, buf, (uint32_t)MIN(size, (uint64_t)4 * KiB), 0, BLOCK_FLAG_FUA);
    node_flush(n);
    read_side(n);
}

static int qcow2_one(const uint8_t *data, size_t size)
{
    fuzz_write_file(path, data, size);
    bool backing_null = !backing_name_is_local(data, size);
    BlockNode *n = open_image(true, backing_null);
    if (n) {
        read_side(n);
        close_image();
    }
    n = open_image(false, backing_null);
    if (n) {
        write_side(n);
        close_image();
    }
    g_unlink(path);
    return 0;
}

static void qcow2_init(void)
{
    block_drivers_init();
    path = g_build_filename(fuzz_tmpdir(), "image.qcow2", NULL);
    buf = g_malloc(READ_MAX);
    g_autofree uint8_t *pattern = g_malloc(256 * KiB);
    for (size_t i = 0; i < 256 * KiB; i++)
        pattern[i] = (uint8_t)(i / 512 + 1);
    g_autofree char *raw = g_build_filename(fuzz_tmpdir(), "backing.raw", NULL);
    fuzz_write_file(raw, pattern, 256 * KiB);
    g_autofree char *qcow2 = g_build_filename(fuzz_tmpdir(), "backing.qcow2", NULL);
    g_autoptr(GError) err = NULL;
    if (!qcow2_create_image(qcow2, 1u << 20, NULL, NULL, 512, &err))
        g_error("fuzz: %s", err->message);
}

static void qcow2_cleanup(void)
{
    g_clear_pointer(&path, g_free);
    g_clear_pointer(&buf, g_free);
    fuzz_tmpdir_remove();
}

const FuzzTarget fuzz_target_qcow2 = {
    .name = "qcow2",
    .init = qcow2_init,
    .one = qcow2_one,
    .cleanup = qcow2_cleanup,
};
