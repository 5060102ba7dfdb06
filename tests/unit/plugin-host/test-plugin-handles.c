/* The plugin host running plugins: our built-ins per handle, Debian's
 * nbdkit plugins by path (API 2 and API 1), errors, emulation. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>

#include "block/driver.h"
#include "block/extents.h"
#include "block/plugin-host/plugin-host.h"
#include "block/plugin-host/host-internal.h"   /* handle internals, for the instance test */

#define MiB (1024 * 1024)

static char *debian_plugin(const char *name)
{
    char *path = g_strdup_printf("%s/nbdkit-%s-plugin.so", NBDKIT_PLUGINDIR, name);
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_test_skip("nbdkit plugin not installed");
        g_clear_pointer(&path, g_free);
    }
    return path;
}

static PluginHandle *open_memory(const char *size)
{
    const char *const config[] = { "size", size, NULL };
    GError *err = NULL;
    PluginHandle *h = plugin_handle_open("memory", config, false, &err);
    g_assert_no_error(err);
    return h;
}

static void test_memory_instances(void)
{
    /* Two handles of the built-in memory plugin are independent disks. */
    PluginHandle *a = open_memory("1M");
    PluginHandle *b = open_memory("2M");
    g_assert_cmpstr(plugin_handle_name(a), ==, "memory");
    g_assert_cmpint(plugin_handle_thread_model(a), ==, 3);
    char buf[4096], out[4096];
    memset(buf, 0xab, sizeof buf);
    g_assert_cmpint(plugin_handle_pwrite(a, buf, sizeof buf, 65536, BLOCK_FLAG_FUA), ==, 0);
    g_assert_cmpint(plugin_handle_pread(a, out, sizeof out, 65536), ==, 0);
    g_assert_cmpmem(buf, sizeof buf, out, sizeof out);
    g_assert_cmpint(plugin_handle_pread(b, out, sizeof out, 65536), ==, 0);
    g_assert_cmpuint(out[0] | out[4095], ==, 0);

    /* Extents: hole, data page, hole. */
    BlockExtents *e = extents_new(0, MiB);
    g_assert_cmpint(plugin_handle_extents(a, MiB, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 3);
    g_assert_cmpuint(extents_get(e, 1).offset, ==, 65536);
    g_assert_cmpuint(extents_get(e, 1).type, ==, 0);
    g_assert_cmpuint(extents_get(e, 2).type, ==, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
    extents_free(e);

    /* Zero frees the page again; a fast zero is accepted. */
    g_assert_cmpint(plugin_handle_zero(a, 65536, 65536, BLOCK_FLAG_FAST_ZERO), ==, 0);
    e = extents_new(0, MiB);
    g_assert_cmpint(plugin_handle_extents(a, MiB, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 1);
    extents_free(e);
    plugin_handle_close(a);
    plugin_handle_close(b);
}

static void test_config_errors(void)
{
    GError *err = NULL;
    g_assert_null(plugin_handle_open("memory", NULL, false, &err));
    g_assert_error(err, G_IO_ERROR, G_IO_ERROR_FAILED);
    g_assert_cmpstr(err->message, ==, "memory: size parameter is required");
    g_clear_error(&err);

    const char *const bad_key[] = { "colour", "red", NULL };
    g_assert_null(plugin_handle_open("null", bad_key, false, &err));
    g_assert_cmpstr(err->message, ==, "null: parameter 'colour': unknown parameter 'colour'");
    g_clear_error(&err);

    const char *const bad_size[] = { "size", "1MiB", NULL };
    g_assert_null(plugin_handle_open("memory", bad_size, false, &err));
    g_assert_nonnull(strstr(err->message, "memory: "));
    g_assert_nonnull(strstr(err->message, "MiB"));
    g_clear_error(&err);

    const char *const no_file[] = { "file", "/no/such/file", NULL };
    g_assert_null(plugin_handle_open("file", no_file, false, &err));
    g_assert_nonnull(strstr(err->message, "file: parameter 'file': realpath: /no/such/file"));
    g_clear_error(&err);

    g_assert_null(plugin_handle_open("no-such-plugin-xyz", NULL, false, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);

    /* A failed configuration leaves the built-in usable. */
    PluginHandle *h = open_memory("64k");
    plugin_handle_close(h);
}

static void test_file_plugin(void)
{
    g_autofree char *dir = g_dir_make_tmp("blockd-ph-XXXXXX", NULL);
    g_autofree char *img = g_build_filename(dir, "disk.img", NULL);
    g_autofree char *data = g_malloc(MiB);
    for (size_t i = 0; i < MiB; i++)
        data[i] = i * 7 + 1;
    g_assert_true(g_file_set_contents(img, data, MiB, NULL));

    const char *const config[] = { "file", img, NULL };
    GError *err = NULL;
    PluginHandle *ro = plugin_handle_open("file", config, true, &err);
    g_assert_no_error(err);
    char buf[512];
    g_assert_cmpint(plugin_handle_pread(ro, buf, sizeof buf, 4096), ==, 0);
    g_assert_cmpmem(buf, sizeof buf, data + 4096, sizeof buf);
    int fd = -1;
    uint64_t fd_offset = 0;
    g_assert_cmpint(plugin_handle_read_fd(ro, 512, 4096, &fd, &fd_offset), ==, 0);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpuint(fd_offset, ==, 4096);
    g_assert_cmpint(pread(fd, buf, sizeof buf, fd_offset), ==, sizeof buf);
    g_assert_cmpmem(buf, sizeof buf, data + 4096, sizeof buf);

    PluginHandle *rw = plugin_handle_open("file", config, false, &err);
    g_assert_no_error(err);
    /* Zero without holes, then with: both read back as zeroes. */
    g_assert_cmpint(plugin_handle_zero(rw, 65536, 0, 0), ==, 0);
    g_assert_cmpint(plugin_handle_zero(rw, 65536, 65536, BLOCK_FLAG_MAY_TRIM | BLOCK_FLAG_FUA), ==, 0);
    g_autofree char *zeroes = g_malloc0(131072), *got = g_malloc(131072);
    g_assert_cmpint(plugin_handle_pread(rw, got, 131072, 0), ==, 0);
    g_assert_cmpmem(got, 131072, zeroes, 131072);
    g_assert_cmpint(plugin_handle_flush(rw), ==, 0);
    g_assert_cmpint(plugin_handle_cache(rw, 4096, 0), ==, 0);
    BlockExtents *e = extents_new(0, MiB);
    g_assert_cmpint(plugin_handle_extents(rw, MiB, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), >=, 1);
    g_assert_cmpuint(extents_get(e, extents_count(e) - 1).offset +
                     extents_get(e, extents_count(e) - 1).length, ==, MiB);
    extents_free(e);
    plugin_handle_close(rw);
    plugin_handle_close(ro);
    g_unlink(img);
    g_rmdir(dir);
}

/* Debian's own memory plugin (API 2), loaded by path: configured once, so
 * a second handle with the same config shares the disk; a different config
 * is refused. */
static void test_external_memory(void)
{
    g_autofree char *path = debian_plugin("memory");
    if (!path)
        return;
    const char *const config[] = { "size", "1M", NULL };
    GError *err = NULL;
    PluginHandle *a = plugin_handle_open(path, config, false, &err);
    g_assert_no_error(err);
    PluginHandle *b = plugin_handle_open(path, config, false, &err);
    g_assert_no_error(err);
    char buf[512], out[512];
    memset(buf, 0x5a, sizeof buf);
    g_assert_cmpint(plugin_handle_pwrite(a, buf, sizeof buf, 512, 0), ==, 0);
    g_assert_cmpint(plugin_handle_pread(b, out, sizeof out, 512), ==, 0);
    g_assert_cmpmem(buf, sizeof buf, out, sizeof out);

    const char *const other[] = { "size", "2M", NULL };
    g_assert_null(plugin_handle_open(path, other, false, &err));
    g_assert_nonnull(strstr(err->message, "different configuration"));
    g_clear_error(&err);
    plugin_handle_close(a);
    plugin_handle_close(b);

    /* After the last handle the .so is unloaded; a new config works. */
    PluginHandle *c = plugin_handle_open(path, other, false, &err);
    g_assert_no_error(err);
    g_assert_cmpint(plugin_handle_pread(c, out, sizeof out, 512), ==, 0);
    g_assert_cmpuint(out[0], ==, 0);
    plugin_handle_close(c);
}

/* Debian's split plugin is API 1: v1 data slots; no native zero or FUA,
 * which the handle reports for the node layer to emulate (its unit test
 * test-node-emulation, and test-nbdkit-plugins.sh end to end). */
static void test_external_api1(void)
{
    g_autofree char *path = debian_plugin("split");
    if (!path)
        return;
    g_autofree char *dir = g_dir_make_tmp("blockd-ph-XXXXXX", NULL);
    g_autofree char *img = g_build_filename(dir, "part", NULL);
    g_autofree char *data = g_malloc(MiB);
    memset(data, 0x11, MiB);
    g_assert_true(g_file_set_contents(img, data, MiB, NULL));
    const char *const config[] = { "file", img, NULL };
    GError *err = NULL;
    PluginHandle *h = plugin_handle_open(path, config, false, &err);
    g_assert_no_error(err);
    g_assert_cmpint(plugin_handle_thread_model(h), ==, 2);   /* SERIALIZE_REQUESTS */
    g_assert_cmpint(h->caps.zero, ==, ZERO_EMULATE);
    g_assert_cmpint(h->caps.fua, !=, NBDKIT_FUA_NATIVE);
    char buf[4096];
    g_assert_cmpint(plugin_handle_pread(h, buf, sizeof buf, 0), ==, 0);
    g_assert_cmpuint(buf[0], ==, 0x11);
    memset(buf, 0x22, sizeof buf);
    g_assert_cmpint(plugin_handle_pwrite(h, buf, sizeof buf, 8192, 0), ==, 0);
    g_assert_cmpint(plugin_handle_flush(h), ==, 0);
    memset(buf, 0, sizeof buf);
    g_assert_cmpint(plugin_handle_pread(h, buf, sizeof buf, 8192), ==, 0);
    g_assert_cmpuint(buf[0] & buf[4095], ==, 0x22);
    plugin_handle_close(h);
    g_unlink(img);
    g_rmdir(dir);
}

/* example1 declares SERIALIZE_ALL_REQUESTS and needs no configuration;
 * two handles share its one library lock. */
static void test_external_serialized(void)
{
    g_autofree char *path = debian_plugin("example1");
    if (!path)
        return;
    GError *err = NULL;
    PluginHandle *a = plugin_handle_open(path, NULL, true, &err);
    g_assert_no_error(err);
    PluginHandle *b = plugin_handle_open(path, NULL, true, &err);
    g_assert_no_error(err);
    g_assert_cmpint(plugin_handle_thread_model(a), ==, 1);
    char x[512], y[512];
    g_assert_cmpint(plugin_handle_pread(a, x, sizeof x, 0), ==, 0);
    g_assert_cmpint(plugin_handle_pread(b, y, sizeof y, 0), ==, 0);
    g_assert_cmpmem(x, sizeof x, y, sizeof y);
    /* No extents callback: the host answers with one data extent. */
    BlockExtents *e = extents_new(0, 1024);
    g_assert_cmpint(plugin_handle_extents(a, 1024, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 1);
    g_assert_cmpuint(extents_get(e, 0).type, ==, 0);
    extents_free(e);
    plugin_handle_close(a);
    plugin_handle_close(b);
}

/* PARALLEL memory plugin: threads writing, zeroing and querying pages that
 * share lock stripes and second-level tables never see each other's data. */
#define WORKERS 8
#define ROUNDS 200

static gpointer memory_worker(gpointer data)
{
    PluginHandle *h = ((gpointer *) data)[0];
    unsigned id = GPOINTER_TO_UINT(((gpointer *) data)[1]);
    g_autofree char *buf = g_malloc(100000), *out = g_malloc(100000);
    for (unsigned round = 0; round < ROUNDS; round++) {
        /* Worker regions interleave at 100000-byte granularity, so pages
         * (64 KiB) are shared between neighbours. */
        uint64_t offset = ((uint64_t) (round % 16) * WORKERS + id) * 100000;
        memset(buf, id + 1, 100000);
        g_assert_cmpint(plugin_handle_pwrite(h, buf, 100000, offset, 0), ==, 0);
        g_assert_cmpint(plugin_handle_pread(h, out, 100000, offset), ==, 0);
        g_assert_cmpmem(buf, 100000, out, 100000);
        g_assert_cmpint(plugin_handle_zero(h, 100000, offset, BLOCK_FLAG_MAY_TRIM), ==, 0);
        g_assert_cmpint(plugin_handle_pread(h, out, 100000, offset), ==, 0);
        g_assert_cmpuint(out[0] | out[50000] | out[99999], ==, 0);
        BlockExtents *e = extents_new(offset, 256 * MiB);
        g_assert_cmpint(plugin_handle_extents(h, 100000, offset, 0, e), ==, 0);
        extents_free(e);
    }
    return NULL;
}

static void test_memory_parallel(void)
{
    PluginHandle *h = open_memory("256M");
    GThread *threads[WORKERS];
    gpointer args[WORKERS][2];
    for (unsigned i = 0; i < WORKERS; i++) {
        args[i][0] = h;
        args[i][1] = GUINT_TO_POINTER(i);
        threads[i] = g_thread_new("worker", memory_worker, args[i]);
    }
    for (unsigned i = 0; i < WORKERS; i++)
        g_thread_join(threads[i]);
    /* Everything was zeroed again: the whole disk is one hole. */
    BlockExtents *e = extents_new(0, 256 * MiB);
    g_assert_cmpint(plugin_handle_extents(h, 256 * MiB - 1, 0, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 1);
    g_assert_cmpuint(extents_get(e, 0).type, ==, BLOCK_EXTENT_HOLE | BLOCK_EXTENT_ZERO);
    extents_free(e);
    plugin_handle_close(h);
}

static void test_null_plugin(void)
{
    const char *const config[] = { "size", "1G", NULL };
    GError *err = NULL;
    PluginHandle *h = plugin_handle_open("null", config, false, &err);
    g_assert_no_error(err);
    char buf[512];
    memset(buf, 1, sizeof buf);
    g_assert_cmpint(plugin_handle_pwrite(h, buf, sizeof buf, 0, 0), ==, 0);
    g_assert_cmpint(plugin_handle_pread(h, buf, sizeof buf, 0), ==, 0);
    g_assert_cmpuint(buf[0] | buf[511], ==, 0);
    BlockExtents *e = extents_new(4096, UINT64_C(1) << 30);
    g_assert_cmpint(plugin_handle_extents(h, 4096, 4096, 0, e), ==, 0);
    g_assert_cmpuint(extents_count(e), ==, 1);
    g_assert_cmpuint(extents_get(e, 0).length, ==, (UINT64_C(1) << 30) - 4096);
    extents_free(e);
    g_assert_cmpint(plugin_handle_read_fd(h, 512, 0, &(int){0}, &(uint64_t){0}), ==, -ENOTSUP);
    plugin_handle_close(h);
}

/* Debian's memory plugin leaks a few bytes per load (not ours to fix). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:nbdkit-memory-plugin.so\n";
}

/* Private instances: two handles on one installed plugin with different
 * configurations, each its own copy of the library; closing one leaves the
 * other working. */
static void test_private_instances(void)
{
    g_autofree char *so = g_strdup_printf("%s/nbdkit-data-plugin.so", NBDKIT_PLUGINDIR);
    if (!g_file_test(so, G_FILE_TEST_EXISTS)) {
        g_test_skip("nbdkit data plugin not installed");
        return;
    }
    GError *err = NULL;
    const char *const c1[] = { "data", "1 2 3", "size", "4096", NULL };
    const char *const c2[] = { "data", "9 8", "size", "8192", NULL };
    PluginHandle *a = plugin_handle_open_instance("data", c1, true, &err);
    g_assert_no_error(err);
    PluginHandle *b = plugin_handle_open_instance(so, c2, true, &err);
    g_assert_no_error(err);
    g_assert_cmpint(a->caps.size, ==, 4096);
    g_assert_cmpint(b->caps.size, ==, 8192);
    g_assert_true(a->lib != b->lib);
    g_assert_true(a->lib->p.pread != b->lib->p.pread);   /* separate copies of the code */
    char buf[4];
    g_assert_cmpint(plugin_handle_pread(a, buf, 4, 0), ==, 0);
    g_assert_cmpmem(buf, 4, "\1\2\3\0", 4);
    plugin_handle_close(a);
    g_assert_cmpint(plugin_handle_pread(b, buf, 4, 0), ==, 0);
    g_assert_cmpmem(buf, 4, "\11\10\0\0", 4);
    plugin_handle_close(b);

    /* A rejected parameter names plugin and parameter; the probe reports it. */
    const char *const bad[] = { "data", "1", "size", "lots", NULL };
    g_assert_null(plugin_handle_open_instance("data", bad, true, &err));
    g_assert_nonnull(strstr(err->message, "data: parameter 'size': "));
    g_clear_error(&err);
    g_assert_null(plugin_handle_open_instance("no-such-plugin-xyz", NULL, true, &err));
    g_assert_nonnull(strstr(err->message, "'no-such-plugin-xyz'"));
    g_clear_error(&err);
}

int main(int argc, char **argv)
{
    /* Keep dlclose'd plugins mapped so leak reports can name them. */
    g_setenv("BLOCKD_KEEP_PLUGINS_LOADED", "1", TRUE);
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/plugin-host/memory-instances", test_memory_instances);
    g_test_add_func("/plugin-host/config-errors", test_config_errors);
    g_test_add_func("/plugin-host/private-instances", test_private_instances);
    g_test_add_func("/plugin-host/file", test_file_plugin);
    g_test_add_func("/plugin-host/null", test_null_plugin);
    g_test_add_func("/plugin-host/external-memory", test_external_memory);
    g_test_add_func("/plugin-host/external-api1", test_external_api1);
    g_test_add_func("/plugin-host/external-serialized", test_external_serialized);
    g_test_add_func("/plugin-host/memory-parallel", test_memory_parallel);
    return g_test_run();
}
