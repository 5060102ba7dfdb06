/* The node layer's fallbacks (block/node.c), done once for every driver and
 * plugin: FUA by a flush after the write, zero by writing zero buffers
 * (also when a native zero says -ENOTSUP for one request), a fast zero
 * refused without writing, cache by reading; and a driver is only ever
 * asked what its capabilities allow.  A recording driver stands in for
 * the storage. */
#include <errno.h>
#include <string.h>
#include <glib.h>

#include "block/driver.h"
#include "block/node.h"

#define SIZE (4u << 20)

typedef struct Rec {
    int fua, zero_native, cache;   /* what the driver reports */
    bool zero_enotsup;             /* its native zero refuses every request */
    GString *log;                  /* "w(off,len,F) f z(off,len) r(off,len) c(..)" */
    char *data;
} Rec;

static Rec rec;   /* one test at a time; the driver instance points here */

/* Stands in for the null-co driver (a driver needs a branch of BlockdevOptions). */
static void *rec_open(BlockNode *self, const BlockdevOptionsNull *opts, bool read_only, GError **errp)
{
    return &rec;
}

static void rec_close(void *opaque) {}
static int64_t rec_size(void *opaque) { return SIZE; }
static int rec_true(void *opaque) { return 1; }
static int rec_can_fua(void *opaque) { return ((Rec *)opaque)->fua; }
static int rec_can_zero(void *opaque) { return ((Rec *)opaque)->zero_native; }
static int rec_can_cache(void *opaque) { return ((Rec *)opaque)->cache; }
static int rec_can_fast_zero(void *opaque) { return ((Rec *)opaque)->zero_native; }

static int rec_pread(void *opaque, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Rec *r = opaque;
    g_string_append_printf(r->log, "r(%u,%u) ", (unsigned)offset, count);
    memcpy(buf, r->data + offset, count);
    return 0;
}

static int rec_pwrite(void *opaque, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    Rec *r = opaque;
    /* Never FUA unless native: the node layer strips and flushes. */
    g_assert(!(flags & BLOCK_FLAG_FUA) || r->fua == BLOCK_SUPPORT_NATIVE);
    g_string_append_printf(r->log, "w(%u,%u%s) ", (unsigned)offset, count, flags & BLOCK_FLAG_FUA ? ",F" : "");
    memcpy(r->data + offset, buf, count);
    return 0;
}

static int rec_flush(void *opaque, uint32_t flags)
{
    g_string_append(((Rec *)opaque)->log, "f ");
    return 0;
}

static int rec_zero(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    Rec *r = opaque;
    g_assert(r->zero_native);
    if (r->zero_enotsup)
        return -ENOTSUP;
    g_string_append_printf(r->log, "z(%u,%u%s) ", (unsigned)offset, count, flags & BLOCK_FLAG_FUA ? ",F" : "");
    memset(r->data + offset, 0, count);
    return 0;
}

static int rec_cache(void *opaque, uint32_t count, uint64_t offset, uint32_t flags)
{
    Rec *r = opaque;
    g_assert(r->cache == BLOCK_SUPPORT_NATIVE);
    g_string_append_printf(r->log, "c(%u,%u) ", (unsigned)offset, count);
    return 0;
}

static const BlockDriver rec_driver = {
    .name = "null-co",
    .type = BLOCKDEV_DRIVER_NULL_CO,
    .open.null_co = rec_open,
    .close = rec_close,
    .get_size = rec_size,
    .can_write = rec_true,
    .can_flush = rec_true,
    .can_zero = rec_can_zero,
    .can_fast_zero = rec_can_fast_zero,
    .can_fua = rec_can_fua,
    .can_cache = rec_can_cache,
    .pread = rec_pread,
    .pwrite = rec_pwrite,
    .flush = rec_flush,
    .zero = rec_zero,
    .cache = rec_cache,
};

/* A node over the recorder with these capabilities, its log emptied. */
static BlockNode *open_recorder(int fua, int zero_native, bool zero_enotsup, int cache)
{
    static int serial;
    rec.fua = fua;
    rec.zero_native = zero_native;
    rec.zero_enotsup = zero_enotsup;
    rec.cache = cache;
    if (!rec.log)
        rec.log = g_string_new(NULL);
    g_string_truncate(rec.log, 0);
    g_free(rec.data);
    rec.data = g_malloc(SIZE);
    memset(rec.data, 0xaa, SIZE);
    g_autofree char *name = g_strdup_printf("rec%d", serial++);
    BlockdevOptions o = { .driver = BLOCKDEV_DRIVER_NULL_CO, .has_node_name = true, .node_name = name };
    GError *err = NULL;
    BlockNode *n = node_create(&o, &err);
    g_assert_no_error(err);
    return n;
}

static void close_recorder(BlockNode *n)
{
    g_autofree char *name = g_strdup(node_name(n));
    g_assert_true(node_delete(name, NULL));   /* node_create's node is the graph's */
}

static void expect_log(const char *want)
{
    g_assert_cmpstr(rec.log->str, ==, want);
    g_string_truncate(rec.log, 0);
}

static void test_fua_emulated(void)
{
    BlockNode *n = open_recorder(BLOCK_SUPPORT_EMULATE, 1, false, BLOCK_SUPPORT_NATIVE);
    char buf[4096];
    memset(buf, 1, sizeof buf);
    g_assert_cmpint(node_pwrite(n, buf, sizeof buf, 8192, BLOCK_FLAG_FUA), ==, 0);
    expect_log("w(8192,4096) f ");
    g_assert_cmpint(node_zero(n, 4096, 0, BLOCK_FLAG_FUA), ==, 0);
    expect_log("z(0,4096) f ");
    g_assert_cmpint(node_pwrite(n, buf, sizeof buf, 8192, 0), ==, 0);
    expect_log("w(8192,4096) ");
    close_recorder(n);
}

static void test_fua_native(void)
{
    BlockNode *n = open_recorder(BLOCK_SUPPORT_NATIVE, 1, false, BLOCK_SUPPORT_NATIVE);
    char buf[512] = { 0 };
    g_assert_cmpint(node_pwrite(n, buf, sizeof buf, 0, BLOCK_FLAG_FUA), ==, 0);
    expect_log("w(0,512,F) ");
    g_assert_cmpint(node_zero(n, 512, 512, BLOCK_FLAG_FUA), ==, 0);
    expect_log("z(512,512,F) ");
    close_recorder(n);
}

static void check_zeroes(uint64_t offset, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        g_assert_cmpint(rec.data[offset + i], ==, 0);
    g_assert_cmpint((unsigned char)rec.data[offset + len], ==, 0xaa);
}

static void test_zero_emulated(void)
{
    /* No native zero: zero buffers, at most 1 MiB at a time in this build
     * (any split is fine; the bytes are what counts), and a fast zero
     * fails at once without touching the data. */
    BlockNode *n = open_recorder(BLOCK_SUPPORT_EMULATE, 0, false, BLOCK_SUPPORT_NATIVE);
    g_assert_cmpint(node_zero(n, 3u << 20, 4096, BLOCK_FLAG_MAY_TRIM), ==, 0);
    g_assert_true(g_str_has_prefix(rec.log->str, "w(4096,"));
    g_assert_null(strstr(rec.log->str, "z("));
    check_zeroes(4096, 3u << 20);
    g_string_truncate(rec.log, 0);
    g_assert_cmpint(node_zero(n, 4096, 0, BLOCK_FLAG_FAST_ZERO), ==, -ENOTSUP);
    expect_log("");
    g_assert_cmpint(node_zero(n, 4096, 0, BLOCK_FLAG_FUA), ==, 0);
    expect_log("w(0,4096) f ");
    close_recorder(n);
}

static void test_zero_native_refuses(void)
{
    /* A native zero that cannot do a request: written as zeroes instead,
     * a fast zero fails. */
    BlockNode *n = open_recorder(BLOCK_SUPPORT_NATIVE, 1, true, BLOCK_SUPPORT_NATIVE);
    g_assert_cmpint(node_zero(n, 65536, 65536, 0), ==, 0);
    expect_log("w(65536,65536) ");
    check_zeroes(65536, 65536);
    g_assert_cmpint(node_zero(n, 4096, 0, BLOCK_FLAG_FAST_ZERO), ==, -ENOTSUP);
    expect_log("");
    close_recorder(n);
}

static void test_cache(void)
{
    BlockNode *n = open_recorder(BLOCK_SUPPORT_EMULATE, 1, false, BLOCK_SUPPORT_EMULATE);
    g_assert_cmpint(node_cache(n, 8192, 4096), ==, 0);
    expect_log("r(4096,8192) ");
    close_recorder(n);
    n = open_recorder(BLOCK_SUPPORT_EMULATE, 1, false, BLOCK_SUPPORT_NATIVE);
    g_assert_cmpint(node_cache(n, 8192, 4096), ==, 0);
    expect_log("c(4096,8192) ");
    close_recorder(n);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    block_driver_register(&rec_driver); /* replaces null-co */
    g_test_add_func("/node-emulation/fua-emulated", test_fua_emulated);
    g_test_add_func("/node-emulation/fua-native", test_fua_native);
    g_test_add_func("/node-emulation/zero-emulated", test_zero_emulated);
    g_test_add_func("/node-emulation/zero-native-refuses", test_zero_native_refuses);
    g_test_add_func("/node-emulation/cache", test_cache);
    int r = g_test_run();
    g_free(rec.data);
    if (rec.log)
        g_string_free(rec.log, TRUE);
    return r;
}
