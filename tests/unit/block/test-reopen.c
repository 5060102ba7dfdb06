/* node_reopen_read_only (block/node-reopen.c) on file, raw (with an
 * offset/size window), blkdebug and qcow2 nodes: read-only to read-write and back,
 * the data written in between landing in the file, and every refusal
 * rolling back completely (another process's lock, a conflicting claim,
 * a read-only file named by reference, a driver that cannot reopen). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <gio/gio.h>

#include "block/node.h"
#include "tests/unit/node-json.h"

#define KiB 1024u

static char *tmpdir;

static char *path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

/* A zero-filled file of `size` bytes. */
static char *make_file(const char *name, size_t size)
{
    char *p = path(name);
    g_autofree char *zeros = g_malloc0(size);
    g_assert_true(g_file_set_contents(p, zeros, (gssize)size, NULL));
    return p;
}

static BlockNode *open_text(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static BlockNode *open_text(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *text = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    GError *err = NULL;
    BlockNode *n = test_node_create_text(text, &err);
    g_assert_no_error(err);
    return n;
}

static void close_node(const char *name)
{
    GError *err = NULL;
    g_assert_true(node_delete(name, &err));
    g_assert_no_error(err);
}

/* Writes 4 KiB of `byte` at `offset` and reads it back. */
static void write_and_check(BlockNode *n, uint64_t offset, int byte)
{
    uint8_t buf[4 * KiB], back[4 * KiB];
    memset(buf, byte, sizeof buf);
    g_assert_cmpint(node_pwrite(n, buf, sizeof buf, offset, 0), ==, 0);
    g_assert_cmpint(node_pread(n, back, sizeof back, offset), ==, 0);
    g_assert_cmpmem(buf, sizeof buf, back, sizeof back);
    g_assert_cmpint(node_flush(n), ==, 0);
}

/* The byte at `offset` of file `p`. */
static int file_byte(const char *p, off_t offset)
{
    int fd = open(p, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    uint8_t b = 0;
    g_assert_cmpint(pread(fd, &b, 1, offset), ==, 1);
    close(fd);
    return b;
}

static void test_file(void)
{
    g_autofree char *p = make_file("f.img", 64 * KiB);
    BlockNode *n = open_text("{\"driver\": \"file\", \"node-name\": \"f\", \"read-only\": true, "
                             "\"filename\": \"%s\"}", p);
    g_assert_true(node_read_only(n) && !node_caps(n)->can_write);
    GError *err = NULL;
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    g_assert_true(!node_read_only(n) && node_caps(n)->can_write && node_caps(n)->can_zero);
    write_and_check(n, 8 * KiB, 0x5a);
    g_assert_true(node_reopen_read_only(n, true, &err));
    g_assert_true(node_read_only(n) && !node_caps(n)->can_write);
    g_assert_cmpint(file_byte(p, 8 * KiB), ==, 0x5a);
    /* The same mode again is a no-op. */
    g_assert_true(node_reopen_read_only(n, true, &err));
    close_node("f");
}

static void test_raw_window(void)
{
    g_autofree char *p = make_file("r.img", 64 * KiB);
    BlockNode *n = open_text("{\"driver\": \"raw\", \"node-name\": \"r\", \"read-only\": true, \"offset\": 16384, "
                             "\"size\": 32768, \"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", p);
    BlockNode *file = node_find("r-file");
    g_assert_nonnull(file);
    g_assert_true(node_read_only(n) && node_read_only(file));
    GError *err = NULL;
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    /* The file the raw node opened itself follows it. */
    g_assert_true(!node_read_only(n) && !node_read_only(file));
    g_assert_cmpuint(node_size(n), ==, 32 * KiB);
    write_and_check(n, 0, 0x77);
    g_assert_true(node_reopen_read_only(n, true, &err));
    g_assert_true(node_read_only(n) && node_read_only(file));
    g_assert_cmpint(file_byte(p, 16 * KiB), ==, 0x77);
    g_assert_cmpint(file_byte(p, 16 * KiB - 1), ==, 0);
    close_node("r");
}

/* A filter passes the reopen to the child it opened. */
static void test_blkdebug(void)
{
    g_autofree char *p = make_file("b.img", 64 * KiB);
    BlockNode *n = open_text("{\"driver\": \"blkdebug\", \"node-name\": \"b\", \"read-only\": true, "
                             "\"image\": {\"driver\": \"file\", \"filename\": \"%s\"}}", p);
    GError *err = NULL;
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    write_and_check(n, 4 * KiB, 0x66);
    g_assert_true(node_reopen_read_only(n, true, &err));
    g_assert_true(node_read_only(n) && !node_caps(n)->can_write);
    g_assert_cmpint(file_byte(p, 4 * KiB), ==, 0x66);
    close_node("b");
}

static bool have_qemu_img(void)
{
    if (g_file_test("/usr/bin/qemu-img", G_FILE_TEST_IS_EXECUTABLE))
        return true;
    g_test_skip("qemu-img is not installed");
    return false;
}

/* Runs a shell command; its output goes to the test log when it fails. */
static int run(const char *cmd)
{
    int status = -1;
    g_autofree char *out = NULL, *err = NULL;
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", (char *)cmd, NULL };
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out, &err, &status, NULL));
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc != 0)
        g_printerr("%s: exit %d\n%s%s", cmd, rc, out, err);
    return rc;
}

static char *make_qcow2(const char *name)
{
    char *p = path(name);
    g_autofree char *cmd = g_strdup_printf("qemu-img create -q -f qcow2 %s 1M", p);
    g_assert_cmpint(run(cmd), ==, 0);
    return p;
}

/* Open read-only, nothing else may change: the node reads and reports as before. */
static void assert_intact(BlockNode *n, BlockNode *file)
{
    uint8_t buf[512];
    g_assert_true(node_read_only(n) && !node_caps(n)->can_write);
    g_assert_true(node_read_only(file));
    g_assert_cmpint(node_pread(n, buf, sizeof buf, 0), ==, 0);
}

/* Whether some other open file description locks byte `byte` of `p`
 * (QEMU's lock bytes: 101 = the write permission held). */
static bool byte_locked(const char *p, int byte)
{
    int fd = open(p, O_RDONLY);
    g_assert_cmpint(fd, >=, 0);
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };
    g_assert_cmpint(fcntl(fd, F_OFD_GETLK, &fl), ==, 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

static void test_qcow2(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *p = make_qcow2("q.qcow2");
    BlockNode *n = open_text("{\"driver\": \"qcow2\", \"node-name\": \"q\", \"read-only\": true, "
                             "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", p);
    BlockNode *file = node_find("q-file");
    GError *err = NULL;
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    g_assert_true(!node_read_only(n) && !node_read_only(file));
    /* A writable format claims write on its file: the lock byte says so. */
    g_assert_true(byte_locked(p, 101));
    write_and_check(n, 64 * KiB, 0x42);   /* allocates a cluster and an L2 table */
    g_assert_true(node_reopen_read_only(n, true, &err));
    assert_intact(n, file);
    g_assert_false(byte_locked(p, 101));   /* the write claim went with it */
    g_assert_true(byte_locked(p, 100));    /* still reading */
    /* Read-only again, the image is complete: qemu-img agrees. */
    g_autofree char *check = g_strdup_printf("qemu-img check -q -U %s && "
                                             "qemu-io -r -U -f qcow2 -c 'read -q -P 0x42 64k 4k' %s", p, p);
    g_assert_cmpint(run(check), ==, 0);
    close_node("q");
}

/* Another process (here another open file description) reading the image
 * holds lock byte 201 (write not shared): the reopen fails with QEMU's
 * text and changes nothing; without it, the reopen works. */
static void test_qcow2_locked(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *p = make_qcow2("l.qcow2");
    BlockNode *n = open_text("{\"driver\": \"qcow2\", \"node-name\": \"l\", \"read-only\": true, "
                             "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", p);
    BlockNode *file = node_find("l-file");
    int other = open(p, O_RDONLY);
    g_assert_cmpint(other, >=, 0);
    struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 201, .l_len = 1 };
    g_assert_cmpint(fcntl(other, F_OFD_SETLK, &fl), ==, 0);
    GError *err = NULL;
    g_assert_false(node_reopen_read_only(n, false, &err));
    g_assert_nonnull(err);
    g_assert_true(g_str_has_prefix(err->message, "Failed to get \"write\" lock"));
    g_clear_error(&err);
    assert_intact(n, file);
    g_assert_false(byte_locked(p, 101));   /* no write lock left behind */
    close(other);
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    write_and_check(n, 0, 0x11);
    close_node("l");
}

/* A claim in this process that does not share write on the file: QEMU's
 * permission conflict, and everything back as it was. */
static void test_qcow2_conflict(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *p = make_qcow2("c.qcow2");
    BlockNode *n = open_text("{\"driver\": \"qcow2\", \"node-name\": \"c\", \"read-only\": true, "
                             "\"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}", p);
    BlockNode *file = node_find("c-file");
    GError *err = NULL;
    NodePermClaim *claim = node_perm_claim(file, BLOCK_PERM_CONSISTENT_READ, BLOCK_PERM_ALL & ~BLOCK_PERM_WRITE, &err);
    g_assert_no_error(err);
    g_assert_false(node_reopen_read_only(n, false, &err));
    g_assert_nonnull(err);
    g_assert_true(g_str_has_prefix(err->message, "Permission conflict on node 'c-file'"));
    g_clear_error(&err);
    assert_intact(n, file);
    g_assert_false(byte_locked(p, 101));
    node_perm_release(claim);
    g_assert_true(node_reopen_read_only(n, false, &err));
    g_assert_no_error(err);
    close_node("c");
}

/* A read-only file node named by reference keeps its mode (QEMU reopens
 * only the children a node opened itself): the format cannot be written. */
static void test_qcow2_file_by_reference(void)
{
    if (!have_qemu_img())
        return;
    g_autofree char *p = make_qcow2("n.qcow2");
    BlockNode *file = open_text("{\"driver\": \"file\", \"node-name\": \"nf\", \"read-only\": true, "
                                "\"filename\": \"%s\"}", p);
    BlockNode *n = open_text("{\"driver\": \"qcow2\", \"node-name\": \"nq\", \"read-only\": true, \"file\": \"nf\"}");
    GError *err = NULL;
    g_assert_false(node_reopen_read_only(n, false, &err));
    g_assert_error(err, G_IO_ERROR, G_IO_ERROR_READ_ONLY);
    g_assert_cmpstr(err->message, ==, "Block node is read-only");
    g_clear_error(&err);
    assert_intact(n, file);
    close_node("nq");
    close_node("nf");
}

static void test_unsupported(void)
{
    BlockNode *n = open_text("{\"driver\": \"memory\", \"node-name\": \"m\", \"read-only\": true, \"size\": 65536}");
    GError *err = NULL;
    g_assert_false(node_reopen_read_only(n, false, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(err->message, ==, "Block format 'memory' used by node 'm' does not support reopening files");
    g_clear_error(&err);
    g_assert_true(node_read_only(n));
    close_node("m");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    GError *err = NULL;
    tmpdir = g_dir_make_tmp("test-reopen-XXXXXX", &err);
    g_assert_no_error(err);
    g_test_add_func("/reopen/file", test_file);
    g_test_add_func("/reopen/raw-window", test_raw_window);
    g_test_add_func("/reopen/blkdebug", test_blkdebug);
    g_test_add_func("/reopen/qcow2", test_qcow2);
    g_test_add_func("/reopen/qcow2-locked", test_qcow2_locked);
    g_test_add_func("/reopen/qcow2-conflict", test_qcow2_conflict);
    g_test_add_func("/reopen/qcow2-file-by-reference", test_qcow2_file_by_reference);
    g_test_add_func("/reopen/unsupported", test_unsupported);
    int r = g_test_run();
    g_autofree char *rm = g_strdup_printf("rm -rf %s", tmpdir);
    run(rm);
    g_free(tmpdir);
    return r;
}
