/* The qcow2 driver through the node layer, checked against qemu-img:
 * images made by qemu-img open and read right; what we write reads back,
 * passes `qemu-img check` (no errors, no leaks) and `qemu-img compare`s
 * equal to the expected raw content. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>

#include "block/node.h"
#include "tests/unit/node-json.h"
#include "block/drivers/qcow2.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char *tmpdir;
static unsigned node_counter;

static char *path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

/* Runs a command; returns its exit status (stdout/stderr in *out if given). */
static int run(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int run(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *o = NULL, *e = NULL;
    int status = -1;
    GError *err = NULL;
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", cmd, NULL };
    if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e, &status, &err)) {
        g_test_message("spawn %s: %s", cmd, err->message);
        g_error_free(err);
        return -1;
    }
    if (out)
        *out = g_strconcat(o, e, NULL);
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc != 0 && !out)
        g_test_message("%s: exit %d\n%s%s", cmd, rc, o, e);
    return rc;
}

static bool have_qemu_img(void)
{
    if (g_file_test("/usr/bin/qemu-img", G_FILE_TEST_IS_EXECUTABLE))
        return true;
    g_test_skip("qemu-img is not installed");
    return false;
}

/* Opens a qcow2 node over file `file`; `backing` NULL = from the image,
 * "" = null, else a node name. */
static BlockNode *open_qcow2_full(const char *file, const char *backing, bool ro, GError **errp)
{
    g_autoptr(JsonObject) o = json_object_new();
    g_autofree char *name = g_strdup_printf("q%u", node_counter++);
    json_object_set_string_member(o, "driver", "qcow2");
    json_object_set_string_member(o, "node-name", name);
    if (ro)
        json_object_set_boolean_member(o, "read-only", true);
    JsonObject *f = json_object_new();
    json_object_set_string_member(f, "driver", "file");
    json_object_set_string_member(f, "filename", file);
    if (ro)
        json_object_set_boolean_member(f, "read-only", true);
    json_object_set_object_member(o, "file", f);
    if (backing && !*backing)
        json_object_set_null_member(o, "backing");
    else if (backing)
        json_object_set_string_member(o, "backing", backing);
    return test_node_create(o, false, errp);
}

static BlockNode *open_qcow2(const char *file)
{
    GError *err = NULL;
    BlockNode *n = open_qcow2_full(file, NULL, false, &err);
    g_assert_no_error(err);
    g_assert_nonnull(n);
    return n;
}

static void close_node(BlockNode *n)
{
    g_autofree char *name = g_strdup(node_name(n));
    GError *err = NULL;
    g_assert_true(node_delete(name, &err));
    g_assert_no_error(err);
}

static void write_file(const char *p, const void *data, size_t len)
{
    GError *err = NULL;
    g_assert_true(g_file_set_contents(p, data, (gssize)len, &err));
    g_assert_no_error(err);
}

static void fill_random(GRand *rand, uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)g_rand_int_range(rand, 1, 256);
}

/* qemu-img check says no errors and no leaks; compare says equal to `expected`. */
static void verify_image(const char *image, const uint8_t *expected, size_t len)
{
    g_autofree char *out = NULL;
    int rc = run(&out, "qemu-img check %s", image);
    if (rc != 0)
        g_test_message("qemu-img check %s:\n%s", image, out);
    g_assert_cmpint(rc, ==, 0);
    g_autofree char *raw = path("expected.raw");
    write_file(raw, expected, len);
    g_autofree char *cmp = NULL;
    rc = run(&cmp, "qemu-img compare -f raw -F qcow2 %s %s", raw, image);
    if (rc != 0)
        g_test_message("qemu-img compare:\n%s", cmp);
    g_assert_cmpint(rc, ==, 0);
}

static void read_and_compare(BlockNode *n, const uint8_t *expected, size_t len)
{
    g_autofree uint8_t *buf = g_malloc(len);
    g_assert_cmpint(node_pread(n, buf, (uint32_t)len, 0), ==, 0);
    for (size_t i = 0; i < len; i++)
        if (buf[i] != expected[i])
            g_error("mismatch at %zu: %u != %u", i, buf[i], expected[i]);
}

/* ---- tests ---- */

static void test_open_qemu_img(void)
{
    if (!have_qemu_img())
        return;
    const char *const variants[] = { "compat=1.1", "compat=0.10", "cluster_size=512", "cluster_size=2M",
                                     "refcount_bits=1", "refcount_bits=64", "cluster_size=4096,refcount_bits=8" };
    for (size_t v = 0; v < G_N_ELEMENTS(variants); v++) {
        g_autofree char *img = path("open.qcow2");
        g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o %s %s 5000192", variants[v], img), ==, 0);
        BlockNode *n = open_qcow2(img);
        g_assert_cmpuint(node_size(n), ==, 5000192);
        g_assert_false(node_read_only(n));
        g_assert_true(node_caps(n)->can_zero && node_caps(n)->can_trim && node_caps(n)->can_extents);
        g_autofree uint8_t *buf = g_malloc(5000192);
        g_autofree uint8_t *zero = g_malloc0(5000192);
        g_assert_cmpint(node_pread(n, buf, 5000192, 0), ==, 0);
        g_assert_cmpmem(buf, 5000192, zero, 5000192);
        BlockExtents *e = extents_new(0, 5000192);
        g_assert_cmpint(node_block_status(n, 5000192, 0, 0, e), ==, 0);
        g_assert_cmpuint(extents_count(e), ==, 1);
        g_assert_cmpuint(extents_get(e, 0).type, ==, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
        extents_free(e);
        /* A write at the very end (the last cluster is partial). */
        memset(buf, 0x5a, 3000);
        g_assert_cmpint(node_pwrite(n, buf, 3000, 5000192 - 3000, 0), ==, 0);
        memset(zero + 5000192 - 3000, 0x5a, 3000);
        close_node(n);
        verify_image(img, zero, 5000192);
    }
}

/* Random writes of random sizes, some unaligned, some large. */
static void random_writes(BlockNode *n, uint8_t *expected, size_t size, GRand *rand, int count)
{
    g_autofree uint8_t *buf = g_malloc(1 * MiB);
    for (int i = 0; i < count; i++) {
        uint32_t len = g_rand_boolean(rand) ? (uint32_t)g_rand_int_range(rand, 1, 5000)
                                            : (uint32_t)g_rand_int_range(rand, 1, 1 * MiB);
        uint64_t off = (uint64_t)g_rand_int_range(rand, 0, (gint32)(size - len + 1));
        if (g_rand_int_range(rand, 0, 4) == 0)
            off &= ~(uint64_t)4095;
        fill_random(rand, buf, len);
        g_assert_cmpint(node_pwrite(n, buf, len, off, 0), ==, 0);
        memcpy(expected + off, buf, len);
    }
}

static void roundtrip(const char *opts, size_t size)
{
    g_autofree char *img = path("rt.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o %s %s %zu", opts, img, size), ==, 0);
    g_autofree uint8_t *expected = g_malloc0(size);
    GRand *rand = g_rand_new_with_seed(42);
    BlockNode *n = open_qcow2(img);
    random_writes(n, expected, size, rand, 60);
    read_and_compare(n, expected, size);
    g_assert_cmpint(node_flush(n), ==, 0);
    close_node(n);
    verify_image(img, expected, size);
    /* Reopened, more writes over allocated and new clusters. */
    n = open_qcow2(img);
    read_and_compare(n, expected, size);
    random_writes(n, expected, size, rand, 30);
    close_node(n);
    verify_image(img, expected, size);
    g_rand_free(rand);
}

static void test_roundtrip(void)
{
    if (!have_qemu_img())
        return;
    roundtrip("compat=1.1", 24 * MiB + 12800);
    roundtrip("compat=0.10", 24 * MiB);
    roundtrip("cluster_size=4096", 8 * MiB);
    roundtrip("cluster_size=512,refcount_bits=4", 4 * MiB + 1536);
}

/* Partial-cluster writes over a backing file copy the rest of the cluster. */
static void backing_cow(const char *fmt)
{
    const size_t size = 4 * MiB;
    g_autofree uint8_t *expected = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(7);
    fill_random(rand, expected, size);
    g_autofree char *base_raw = path("base.raw");
    write_file(base_raw, expected, size - 100 * KiB); /* shorter than the overlay */
    memset(expected + size - 100 * KiB, 0, 100 * KiB);
    g_autofree char *base = NULL;
    if (strcmp(fmt, "raw") == 0) {
        base = g_strdup(base_raw);
    } else {
        base = path("base.qcow2");
        g_assert_cmpint(run(NULL, "qemu-img convert -O qcow2 %s %s %s", strcmp(fmt, "compressed") == 0 ? "-c" : "",
                            base_raw, base), ==, 0);
        g_assert_cmpint(run(NULL, "qemu-img resize -q %s %zu", base, size - 100 * KiB), ==, 0);
    }
    g_autofree char *img = path("overlay.qcow2");
    /* Relative backing name: resolved against the overlay's directory. */
    g_autofree char *base_name = g_path_get_basename(base);
    g_assert_cmpint(run(NULL, "cd %s && qemu-img create -q -f qcow2 -b %s -F %s overlay.qcow2 %zu", tmpdir,
                        base_name, strcmp(fmt, "raw") == 0 ? "raw" : "qcow2", size), ==, 0);
    BlockNode *n = open_qcow2(img);
    read_and_compare(n, expected, size);
    BlockImageInfo info;
    g_assert_true(node_image_info(n, &info));
    g_assert_cmpstr(info.backing_filename, ==, base_name);
    g_assert_cmpstr(info.full_backing_filename, ==, base);
    g_assert_nonnull(info.backing);
    g_assert_true(node_read_only(info.backing));
    /* Extents: the backing's data shows through. */
    BlockExtents *e = extents_new(0, size);
    g_assert_cmpint(node_block_status(n, (uint32_t)size, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_get(e, 0).type, ==, 0);
    g_assert_cmpuint(extents_get(e, extents_count(e) - 1).type, ==, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
    extents_free(e);
    uint8_t buf[3000];
    for (int i = 0; i < 40; i++) {
        uint32_t len = (uint32_t)g_rand_int_range(rand, 1, sizeof buf);
        uint64_t off = (uint64_t)g_rand_int_range(rand, 0, (gint32)(size - len));
        fill_random(rand, buf, len);
        g_assert_cmpint(node_pwrite(n, buf, len, off, 0), ==, 0);
        memcpy(expected + off, buf, len);
    }
    read_and_compare(n, expected, size);
    close_node(n);
    verify_image(img, expected, size);
    /* backing: null shows zeroes where the overlay has nothing. */
    GError *err = NULL;
    n = open_qcow2_full(img, "", true, &err);
    g_assert_no_error(err);
    g_assert_false(node_image_info(n, &info) && info.backing);
    close_node(n);
    g_rand_free(rand);
}

static void test_backing_raw(void) { if (have_qemu_img()) backing_cow("raw"); }
static void test_backing_qcow2(void) { if (have_qemu_img()) backing_cow("qcow2"); }
static void test_backing_compressed(void) { if (have_qemu_img()) backing_cow("compressed"); }

/* Compressed clusters in the image itself: read, then overwritten (re-allocated). */
static void test_compressed(void)
{
    if (!have_qemu_img())
        return;
    const size_t size = 2 * MiB;
    g_autofree uint8_t *expected = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(3);
    for (size_t i = 0; i < size; i++)
        expected[i] = (uint8_t)(i / 1000 + (i % 7 == 0 ? g_rand_int_range(rand, 0, 3) : 0));
    g_autofree char *raw = path("c.raw"), *img = path("c.qcow2");
    write_file(raw, expected, size);
    g_assert_cmpint(run(NULL, "qemu-img convert -c -O qcow2 -o cluster_size=4096 %s %s", raw, img), ==, 0);
    BlockNode *n = open_qcow2(img);
    read_and_compare(n, expected, size);
    uint8_t buf[6000];
    for (int i = 0; i < 50; i++) {
        uint32_t len = (uint32_t)g_rand_int_range(rand, 1, sizeof buf);
        uint64_t off = (uint64_t)g_rand_int_range(rand, 0, (gint32)(size - len));
        fill_random(rand, buf, len);
        g_assert_cmpint(node_pwrite(n, buf, len, off, 0), ==, 0);
        memcpy(expected + off, buf, len);
    }
    g_assert_cmpint(node_zero(n, 64 * KiB, 256 * KiB, BLOCK_FLAG_MAY_TRIM), ==, 0);
    memset(expected + 256 * KiB, 0, 64 * KiB);
    read_and_compare(n, expected, size);
    close_node(n);
    verify_image(img, expected, size);
    g_rand_free(rand);
}

static void zero_trim(const char *opts, bool with_backing)
{
    const size_t size = 2 * MiB;
    const uint32_t cs = strstr(opts, "cluster_size=512") ? 512 : 65536;
    g_autofree uint8_t *expected = g_malloc0(size), *buf = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(11);
    g_autofree char *img = path("z.qcow2"), *base = path("zbase.raw");
    if (with_backing) {
        fill_random(rand, expected, size);
        write_file(base, expected, size);
        g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o %s -b %s -F raw %s", opts, base, img), ==, 0);
    } else {
        g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o %s %s %zu", opts, img, size), ==, 0);
    }
    BlockNode *n = open_qcow2(img);
    fill_random(rand, buf, size / 2);
    g_assert_cmpint(node_pwrite(n, buf, (uint32_t)size / 2, size / 4, 0), ==, 0);
    memcpy(expected + size / 4, buf, size / 2);
    bool v3 = !strstr(opts, "compat=0.10");

    /* FAST_ZERO: cheap on v3 for whole clusters; partial clusters with data are not. */
    int r = node_zero(n, cs * 4, size / 4, BLOCK_FLAG_FAST_ZERO);
    if (v3 || !with_backing) {
        g_assert_cmpint(r, ==, 0);
        memset(expected + size / 4, 0, cs * 4);
    } else {
        g_assert_cmpint(r, ==, -ENOTSUP);
    }
    g_assert_cmpint(node_zero(n, 100, size / 4 + cs * 8 + 10, BLOCK_FLAG_FAST_ZERO), ==, -ENOTSUP);
    read_and_compare(n, expected, size);

    /* Unaligned zeroes, with and without MAY_TRIM, over data, holes and backing. */
    const struct { uint64_t off; uint32_t len; uint32_t flags; } zs[] = {
        { 1000, 300000, 0 },
        { size / 4 - 5000, 3 * cs + 17, BLOCK_FLAG_MAY_TRIM },
        { size / 2, (uint32_t)cs * 3, 0 },
        { size - 3 * cs - 5, (uint32_t)3 * cs + 5, BLOCK_FLAG_MAY_TRIM },
        { 7, 9, 0 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(zs); i++) {
        g_assert_cmpint(node_zero(n, zs[i].len, zs[i].off, zs[i].flags), ==, 0);
        memset(expected + zs[i].off, 0, zs[i].len);
        read_and_compare(n, expected, size);
    }
    if (getenv("QCOW2_DEBUG")) { node_flush(n); g_autofree char *o = NULL; run(&o, "qemu-img map --output=json -U %s", img); g_test_message("%s before trim:\n%s", opts, o); }
    /* Trim: whole clusters lose their data (zero with a backing file on v3). */
    g_assert_cmpint(node_trim(n, cs * 6, size / 2 + cs * 10, 0), ==, 0);
    g_assert_cmpint(node_pread(n, buf, cs * 6, size / 2 + cs * 10), ==, 0);
    if (!with_backing) {
        memset(expected + size / 2 + cs * 10, 0, cs * 6);
        read_and_compare(n, expected, size);
    } else if (v3) {
        memset(expected + size / 2 + cs * 10, 0, cs * 6);
        read_and_compare(n, expected, size);
    } else {
        memcpy(expected + size / 2 + cs * 10, buf, cs * 6); /* a hint: unchanged */
    }
    /* Zeroed clusters report as zero in block status (v2 over a backing
     * file has no way to say zero: there the zeroes were written). */
    BlockExtents *e = extents_new(size / 2, size);
    g_assert_cmpint(node_block_status(n, cs * 3, size / 2, 0, e), ==, 0);
    g_assert_cmpuint(extents_get(e, 0).type & BLOCK_EXTENT_ZERO, ==,
                     v3 || !with_backing ? BLOCK_EXTENT_ZERO : 0);
    extents_free(e);
    /* Rewrite some zeroed clusters. */
    fill_random(rand, buf, 3 * cs);
    g_assert_cmpint(node_pwrite(n, buf, 3 * cs, size / 2 + cs, 0), ==, 0);
    memcpy(expected + size / 2 + cs, buf, 3 * cs);
    read_and_compare(n, expected, size);
    g_assert_cmpint(node_flush(n), ==, 0);
    close_node(n);
    verify_image(img, expected, size);
    g_rand_free(rand);
}

static void test_zero_trim(void)
{
    if (!have_qemu_img())
        return;
    zero_trim("compat=1.1", false);
    zero_trim("compat=1.1", true);
    zero_trim("compat=0.10", false);
    zero_trim("compat=0.10", true);
    zero_trim("cluster_size=512", true);
}

static uint32_t header_u32(const char *img, off_t off)
{
    int fd = open(img, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    uint32_t v = 0;
    g_assert_cmpint(pread(fd, &v, 4, off), ==, 4);
    close(fd);
    return GUINT32_FROM_BE(v);
}

/* 512-byte clusters: the 1-cluster refcount table (64 blocks of 256
 * clusters = 8 MiB) has to grow, several times. */
static void test_refcount_growth(void)
{
    if (!have_qemu_img())
        return;
    const size_t size = 40 * MiB;
    g_autofree char *img = path("grow.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=512 %s %zu", img, size), ==, 0);
    g_assert_cmpuint(header_u32(img, 56), ==, 1);
    g_autofree uint8_t *expected = g_malloc0(size);
    GRand *rand = g_rand_new_with_seed(5);
    BlockNode *n = open_qcow2(img);
    /* Sequential 1 MiB writes over 30 MiB, skipping some, then small scattered ones. */
    for (size_t off = 0; off < 30 * MiB; off += 1 * MiB) {
        if ((off / MiB) % 5 == 3)
            continue;
        fill_random(rand, expected + off, 1 * MiB);
        g_assert_cmpint(node_pwrite(n, expected + off, 1 * MiB, off, 0), ==, 0);
    }
    random_writes(n, expected, size, rand, 200);
    read_and_compare(n, expected, size);
    close_node(n);
    g_assert_cmpuint(header_u32(img, 56), >, 1);
    verify_image(img, expected, size);
    g_rand_free(rand);
}

static void test_create(void)
{
    if (!have_qemu_img())
        return;
    const uint32_t sizes[] = { 0, 512, 4096, 2 * MiB };
    for (size_t i = 0; i < G_N_ELEMENTS(sizes); i++) {
        g_autofree char *img = path("created.qcow2");
        GError *err = NULL;
        const size_t size = 3 * MiB + 512;
        g_assert_true(qcow2_create_image(img, size, NULL, NULL, sizes[i], &err));
        g_assert_no_error(err);
        g_autofree char *info = NULL;
        g_assert_cmpint(run(&info, "qemu-img info --output=json %s", img), ==, 0);
        g_assert_nonnull(strstr(info, "\"virtual-size\": 3146240"));
        g_assert_nonnull(strstr(info, "\"compat\": \"1.1\""));
        g_autofree uint8_t *expected = g_malloc0(size);
        verify_image(img, expected, size);
        BlockNode *n = open_qcow2(img);
        GRand *rand = g_rand_new_with_seed(9);
        random_writes(n, expected, size, rand, 20);
        close_node(n);
        verify_image(img, expected, size);
        g_rand_free(rand);
    }
    /* With a backing file (absolute name) and format. */
    const size_t size = 1 * MiB;
    g_autofree uint8_t *expected = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(10);
    fill_random(rand, expected, size);
    g_autofree char *base = path("cbase.raw"), *img = path("cover.qcow2");
    write_file(base, expected, size);
    GError *err = NULL;
    g_assert_true(qcow2_create_image(img, size, base, "raw", 0, &err));
    g_assert_no_error(err);
    g_autofree char *info = NULL;
    g_assert_cmpint(run(&info, "qemu-img info --output=json %s", img), ==, 0);
    g_assert_nonnull(strstr(info, "\"backing-filename-format\": \"raw\""));
    verify_image(img, expected, size);
    /* Bad cluster size. */
    g_assert_false(qcow2_create_image(img, size, NULL, NULL, 3000, &err));
    g_assert_error(err, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_clear_error(&err);
    g_rand_free(rand);
}

static void expect_open_error(const char *img, bool ro, const char *fragment)
{
    GError *err = NULL;
    BlockNode *n = open_qcow2_full(img, NULL, ro, &err);
    g_assert_null(n);
    g_assert_nonnull(err);
    if (!strstr(err->message, fragment))
        g_error("error '%s' does not contain '%s'", err->message, fragment);
    g_error_free(err);
    /* The implicit file node went away with the failed open. */
    g_autofree char *file = g_strdup_printf("q%u-file", node_counter - 1);
    g_assert_null(node_find(file));
}

static void set_header_u64(const char *img, off_t off, uint64_t v)
{
    int fd = open(img, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    v = GUINT64_TO_BE(v);
    g_assert_cmpint(pwrite(fd, &v, 8, off), ==, 8);
    close(fd);
}

static void set_header_u32(const char *img, off_t off, uint32_t v)
{
    int fd = open(img, O_WRONLY);
    g_assert_cmpint(fd, >=, 0);
    v = GUINT32_TO_BE(v);
    g_assert_cmpint(pwrite(fd, &v, 4, off), ==, 4);
    close(fd);
}

static void test_errors(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *raw = path("notqcow2.raw"), *img = path("e.qcow2");
    uint8_t junk[4096] = { 1, 2, 3 };
    write_file(raw, junk, sizeof junk);
    expect_open_error(raw, false, "Image is not in qcow2 format");

    /* Encrypted: a crypt_method in the header (qemu-img's LUKS creation
     * benchmarks the CPU and can fail on a loaded machine). */
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 1M", img), ==, 0);
    set_header_u32(img, 32, 2); /* crypt_method = 2 (LUKS) */
    expect_open_error(img, false, "encrypted");

    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 1M", img), ==, 0);
    set_header_u64(img, 72, 1);
    expect_open_error(img, false, "dirty");
    expect_open_error(img, true, "qemu-img check -r all");
    set_header_u64(img, 72, 1u << 9);
    expect_open_error(img, false, "Unsupported qcow2 feature");

    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o extended_l2=on %s 1M", img), ==, 0);
    expect_open_error(img, false, "extended L2");

    g_autofree char *gone = path("gone.raw");
    write_file(gone, junk, sizeof junk);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -b %s -F raw %s 1M", gone, img), ==, 0);
    g_unlink(gone);
    expect_open_error(img, false, "Could not open backing file");

    /* Internal snapshots: read-only and read-write opens; a write copies
     * the shared cluster and table, the snapshot keeps its data. */
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 1M && qemu-io -c \"write -P 7 0 64k\" %s -f qcow2 "
                              ">/dev/null && qemu-img snapshot -c s1 %s", img, img, img), ==, 0);
    GError *err = NULL;
    BlockNode *n = open_qcow2_full(img, NULL, true, &err);
    g_assert_no_error(err);
    uint8_t buf[512];
    g_assert_cmpint(node_pread(n, buf, sizeof buf, 0), ==, 0);
    g_assert_cmpuint(buf[0], ==, 7);
    g_assert_true(node_read_only(n));
    close_node(n);
    n = open_qcow2_full(img, NULL, false, &err);
    g_assert_no_error(err);
    memset(buf, 9, sizeof buf);
    g_assert_cmpint(node_pwrite(n, buf, sizeof buf, 512, 0), ==, 0);
    g_assert_cmpint(node_flush(n), ==, 0);
    close_node(n);
    g_assert_cmpint(run(NULL, "qemu-img check -q %s && ! qemu-io -r -f qcow2 -c \"read -P 7 0 512\" "
                              "-c \"read -P 9 512 512\" -c \"read -P 7 1024 63k\" %s | grep -q 'verification failed' && "
                              "qemu-img convert -l snapshot.name=s1 -O raw %s %s.raw && "
                              "! qemu-io -r -f raw -c \"read -P 7 0 64k\" %s.raw | grep -q 'verification failed'",
                              img, img, img, img, img), ==, 0);
}

/* Persistent bitmaps: opening read-write keeps autoclear bit 0 (the
 * bitmaps stay valid) but marks every bitmap in use, since nothing tracks
 * writes until the bitmap layer takes them over; unknown autoclear bits
 * are cleared.  A read-only open changes nothing. */
static void test_bitmaps_autoclear(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *img = path("bm.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 1M && qemu-img bitmap --add %s b0", img, img), ==, 0);
    g_assert_cmpuint(header_u32(img, 92), ==, 1);
    set_header_u32(img, 92, 1 | (1u << 5));
    GError *err = NULL;
    BlockNode *n = open_qcow2_full(img, NULL, true, &err);
    g_assert_no_error(err);
    close_node(n);
    g_assert_cmpuint(header_u32(img, 92), ==, 1 | (1u << 5));
    g_autofree char *info = NULL;
    g_assert_cmpint(run(&info, "qemu-img info %s", img), ==, 0);
    g_assert_nonnull(strstr(info, "auto"));
    g_assert_null(strstr(info, "in-use"));
    n = open_qcow2(img);
    close_node(n);
    g_assert_cmpuint(header_u32(img, 92), ==, 1);
    g_free(info);
    info = NULL;
    g_assert_cmpint(run(&info, "qemu-img info %s", img), ==, 0);
    g_assert_nonnull(strstr(info, "in-use"));
    g_assert_cmpint(run(NULL, "qemu-img check -q %s", img), ==, 0);
}

/* An L1 entry missing its COPIED flag (refcount 1) is repaired on write. */
static void test_copied_flag_repair(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *img = path("copied.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 4M && qemu-io -f qcow2 -c \"write -P 1 0 64k\" %s "
                              ">/dev/null", img, img), ==, 0);
    int fd = open(img, O_RDWR);
    g_assert_cmpint(fd, >=, 0);
    uint64_t l1, e;
    g_assert_cmpint(pread(fd, &l1, 8, 40), ==, 8);
    g_assert_cmpint(pread(fd, &e, 8, (off_t)GUINT64_FROM_BE(l1)), ==, 8);
    e = GUINT64_TO_BE(GUINT64_FROM_BE(e) & ~(UINT64_C(1) << 63));
    g_assert_cmpint(pwrite(fd, &e, 8, (off_t)GUINT64_FROM_BE(l1)), ==, 8);
    close(fd);
    g_assert_cmpint(run(NULL, "qemu-img check -q %s 2>/dev/null", img), ==, 2);
    g_autofree uint8_t *expected = g_malloc0(4 * MiB);
    memset(expected, 1, 64 * KiB);
    memset(expected + 64 * KiB, 2, 4096);
    BlockNode *n = open_qcow2(img);
    g_assert_cmpint(node_pwrite(n, expected + 64 * KiB, 4096, 64 * KiB, 0), ==, 0);
    close_node(n);
    verify_image(img, expected, 4 * MiB);
}

typedef struct Worker {
    BlockNode *node;
    uint8_t *expected;
    uint64_t base, len;
    unsigned seed;
} Worker;

static gpointer worker(gpointer p)
{
    Worker *w = p;
    GRand *rand = g_rand_new_with_seed(w->seed);
    uint8_t buf[20000], rd[20000];
    for (int i = 0; i < 150; i++) {
        uint32_t len = (uint32_t)g_rand_int_range(rand, 1, sizeof buf);
        uint64_t off = w->base + (uint64_t)g_rand_int_range(rand, 0, (gint32)(w->len - len));
        fill_random(rand, buf, len);
        g_assert_cmpint(node_pwrite(w->node, buf, len, off, 0), ==, 0);
        memcpy(w->expected + off, buf, len);
        g_assert_cmpint(node_pread(w->node, rd, len, off), ==, 0);
        g_assert_cmpmem(rd, len, buf, len);
        if (i % 20 == 0)
            g_assert_cmpint(node_flush(w->node), ==, 0);
    }
    g_rand_free(rand);
    return NULL;
}

/* Threads writing (and reading back) disjoint regions at once. */
static void test_threads(void)
{
    if (!have_qemu_img())
        return;
    const size_t size = 8 * MiB;
    g_autofree char *img = path("mt.qcow2");
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=4096 %s %zu", img, size), ==, 0);
    g_autofree uint8_t *expected = g_malloc0(size);
    BlockNode *n = open_qcow2(img);
    Worker w[4];
    GThread *t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){ n, expected, i * size / 4, size / 4, (unsigned)i + 100 };
        t[i] = g_thread_new("w", worker, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        g_thread_join(t[i]);
    read_and_compare(n, expected, size);
    close_node(n);
    verify_image(img, expected, size);
}

static gpointer chaos_worker(gpointer p)
{
    Worker *w = p;
    GRand *rand = g_rand_new_with_seed(w->seed);
    g_autofree uint8_t *buf = g_malloc(200000);
    for (int i = 0; i < 300; i++) {
        uint32_t len = (uint32_t)g_rand_int_range(rand, 1, 200000);
        uint64_t off = (uint64_t)g_rand_int_range(rand, 0, (gint32)(w->len - len));
        switch (g_rand_int_range(rand, 0, 8)) {
        case 0:
            g_assert_cmpint(node_zero(w->node, len, off, g_rand_boolean(rand) ? BLOCK_FLAG_MAY_TRIM : 0), ==, 0);
            break;
        case 1:
            g_assert_cmpint(node_trim(w->node, len, off, 0), ==, 0);
            break;
        case 2:
            g_assert_cmpint(node_flush(w->node), ==, 0);
            break;
        case 3: {
            BlockExtents *e = extents_new(off, off + len);
            g_assert_cmpint(node_block_status(w->node, len, off, 0, e), ==, 0);
            extents_free(e);
            break;
        }
        case 4:
        case 5:
            g_assert_cmpint(node_pread(w->node, buf, len, off), ==, 0);
            break;
        default:
            fill_random(rand, buf, len);
            g_assert_cmpint(node_pwrite(w->node, buf, len, off, 0), ==, 0);
            break;
        }
    }
    g_rand_free(rand);
    return NULL;
}

/* Threads doing everything at once over the same ranges, over a backing
 * file: the content is whatever won, but the image must stay consistent. */
static void test_threads_overlapping(void)
{
    if (!have_qemu_img())
        return;
    const size_t size = 4 * MiB;
    g_autofree uint8_t *data = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(77);
    fill_random(rand, data, size);
    g_rand_free(rand);
    g_autofree char *base = path("chaos-base.raw"), *img = path("chaos.qcow2");
    write_file(base, data, size);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=4096 -b %s -F raw %s", base, img), ==, 0);
    BlockNode *n = open_qcow2(img);
    Worker w[4];
    GThread *t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){ n, NULL, 0, size, (unsigned)i + 200 };
        t[i] = g_thread_new("chaos", chaos_worker, &w[i]);
    }
    for (int i = 0; i < 4; i++)
        g_thread_join(t[i]);
    /* What the node reads is what qemu-img reads. */
    g_autofree uint8_t *now = g_malloc(size);
    g_assert_cmpint(node_pread(n, now, (uint32_t)size, 0), ==, 0);
    close_node(n);
    verify_image(img, now, size);
}

typedef struct SlotWorker {
    BlockNode *node;
    uint8_t *expected;
    size_t size;
    unsigned id, seed;
} SlotWorker;

enum { SLOT = 4096, SLOTS = 16, SLOT_THREADS = 4 };

/* Writes every slot this thread owns (slot % SLOT_THREADS == id) of every
 * 64 KiB cluster, one slot per write, clusters in a random order. */
static gpointer slot_worker(gpointer p)
{
    SlotWorker *w = p;
    GRand *rand = g_rand_new_with_seed(w->seed);
    const size_t clusters = w->size / (SLOT * SLOTS);
    g_autofree uint32_t *order = g_new(uint32_t, clusters);
    for (size_t i = 0; i < clusters; i++)
        order[i] = (uint32_t)i;
    for (size_t i = clusters - 1; i > 0; i--) {
        size_t j = (size_t)g_rand_int_range(rand, 0, (gint32)(i + 1));
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint8_t buf[SLOT];
    for (size_t i = 0; i < clusters; i++)
        for (unsigned slot = w->id; slot < SLOTS; slot += SLOT_THREADS) {
            uint64_t off = (uint64_t)order[i] * SLOT * SLOTS + (uint64_t)slot * SLOT;
            fill_random(rand, buf, SLOT);
            g_assert_cmpint(node_pwrite(w->node, buf, SLOT, off, 0), ==, 0);
            memcpy(w->expected + off, buf, SLOT); /* slots are disjoint: no lock */
        }
    g_rand_free(rand);
    return NULL;
}

/* Threads writing different parts of the same new clusters at once, over
 * a backing file: each partial write copies the rest of its cluster into
 * a new one, so two writers of one cluster must not both allocate it (the
 * first copy would be leaked and its data lost) -- the second waits for
 * the first's allocation and then writes in place.  Every thread's data
 * and the backing data around it must be there, with no leaked cluster. */
static void test_threads_shared_clusters(void)
{
    if (!have_qemu_img())
        return;
    const size_t size = 8 * MiB;
    g_autofree uint8_t *expected = g_malloc(size);
    GRand *rand = g_rand_new_with_seed(91);
    fill_random(rand, expected, size);
    g_rand_free(rand);
    g_autofree char *base = path("slots-base.raw"), *img = path("slots.qcow2");
    write_file(base, expected, size);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=65536 -b %s -F raw %s", base, img), ==,
                    0);
    BlockNode *n = open_qcow2(img);
    SlotWorker w[SLOT_THREADS];
    GThread *t[SLOT_THREADS];
    for (unsigned i = 0; i < SLOT_THREADS; i++) {
        w[i] = (SlotWorker){ n, expected, size, i, 300 + i };
        t[i] = g_thread_new("slots", slot_worker, &w[i]);
    }
    for (unsigned i = 0; i < SLOT_THREADS; i++)
        g_thread_join(t[i]);
    read_and_compare(n, expected, size);
    close_node(n);
    verify_image(img, expected, size); /* qemu-img check exits 3 on leaks */
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    GError *err = NULL;
    tmpdir = g_dir_make_tmp("test-qcow2-XXXXXX", &err);
    g_assert_no_error(err);
    g_test_add_func("/qcow2/open-qemu-img", test_open_qemu_img);
    g_test_add_func("/qcow2/roundtrip", test_roundtrip);
    g_test_add_func("/qcow2/backing-raw", test_backing_raw);
    g_test_add_func("/qcow2/backing-qcow2", test_backing_qcow2);
    g_test_add_func("/qcow2/backing-compressed", test_backing_compressed);
    g_test_add_func("/qcow2/compressed", test_compressed);
    g_test_add_func("/qcow2/zero-trim", test_zero_trim);
    g_test_add_func("/qcow2/refcount-growth", test_refcount_growth);
    g_test_add_func("/qcow2/create", test_create);
    g_test_add_func("/qcow2/errors", test_errors);
    g_test_add_func("/qcow2/bitmaps-autoclear", test_bitmaps_autoclear);
    g_test_add_func("/qcow2/copied-flag-repair", test_copied_flag_repair);
    g_test_add_func("/qcow2/threads", test_threads);
    g_test_add_func("/qcow2/threads-overlapping", test_threads_overlapping);
    g_test_add_func("/qcow2/threads-shared-clusters", test_threads_shared_clusters);
    int rc = g_test_run();
    node_graph_shutdown();
    g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmpdir);
    (void)run(NULL, "%s", cmd);
    g_free(tmpdir);
    return rc;
}
