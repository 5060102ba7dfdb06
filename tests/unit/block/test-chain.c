/* block/chain.c over real qcow2 chains made by qemu-img: lookups, the
 * stream and commit argument resolution (QEMU's texts), is-allocated-above
 * (runs merged across layers, a base excluded) and the relink (edge,
 * header as qemu-img reads it, layers that fell out closed, a refused
 * rewrite changing nothing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <glib.h>
#include <gio/gio.h>

#include "block/chain.h"
#include "block/driver.h"
#include "qapi/qapi-visit.h"
#include "tests/unit/node-json.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char *tmpdir;
static unsigned counter;

static char *path(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static char *path(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *name = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return g_build_filename(tmpdir, name, NULL);
}

static int run(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int run(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *o = NULL, *e = NULL;
    int status = -1;
    char *argv[] = { (char *)"/bin/sh", (char *)"-c", cmd, NULL };
    g_assert_true(g_spawn_sync(NULL, argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &o, &e, &status, NULL));
    if (out)
        *out = g_strconcat(o, e, NULL);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool have_qemu(void)
{
    if (g_file_test("/usr/bin/qemu-img", G_FILE_TEST_IS_EXECUTABLE) &&
        g_file_test("/usr/bin/qemu-io", G_FILE_TEST_IS_EXECUTABLE))
        return true;
    g_test_skip("qemu-img or qemu-io is not installed");
    return false;
}

/* base: [0, 1M) data; mid: [1M, 2M) and [3M, 3M+64K); top: [0, 64K).  4 MiB each. */
static void make_chain(const char *prefix)
{
    g_autofree char *base = path("%s-base.qcow2", prefix);
    g_autofree char *mid = path("%s-mid.qcow2", prefix);
    g_autofree char *top = path("%s-top.qcow2", prefix);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 %s 4M && qemu-io -f qcow2 -c 'write -P 1 0 1M' %s >/dev/null",
                        base, base), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -b %s-base.qcow2 -F qcow2 %s && "
                              "qemu-io -f qcow2 -c 'write -P 2 1M 1M' -c 'write -P 2 3M 64k' %s >/dev/null",
                        prefix, mid, mid), ==, 0);
    g_assert_cmpint(run(NULL, "qemu-img create -q -f qcow2 -b %s-mid.qcow2 -F qcow2 %s && "
                              "qemu-io -f qcow2 -c 'write -P 3 0 64k' %s >/dev/null", prefix, top, top), ==, 0);
}

/* The top of a chain made by make_chain, its layers opened from the headers. */
static BlockNode *open_top(const char *prefix)
{
    g_autofree char *file = path("%s-top.qcow2", prefix);
    g_autofree char *text = g_strdup_printf(
        "{\"driver\": \"qcow2\", \"node-name\": \"c%u\", \"file\": {\"driver\": \"file\", \"filename\": \"%s\"}}",
        counter++, file);
    GError *err = NULL;
    BlockNode *n = test_node_create_text(text, &err);
    g_assert_no_error(err);
    return n;
}

static void test_lookups(void)
{
    if (!have_qemu())
        return;
    make_chain("l");
    BlockNode *top = open_top("l");
    BlockNode *mid = chain_backing(top), *base = chain_backing(mid);
    g_assert_nonnull(base);
    g_assert_null(chain_backing(base));
    g_assert_true(chain_contains(top, top) && chain_contains(top, base) && !chain_contains(mid, top));
    g_assert_true(chain_overlay(top, base) == mid && chain_overlay(top, mid) == top);
    g_assert_null(chain_overlay(top, top));
    g_assert_true(chain_bottom(top) == base && chain_bottom(base) == base);
    /* By the name an image records, relative to it, or by an absolute path. */
    g_assert_true(chain_find_image(top, "l-base.qcow2") == base);
    g_autofree char *abs = path("%s", "l-mid.qcow2");
    g_assert_true(chain_find_image(top, abs) == mid);
    g_assert_null(chain_find_image(top, "nope.qcow2"));
    g_assert_null(chain_find_image(mid, "l-mid.qcow2"));
    g_autofree char *name = g_strdup(node_name(top));
    g_assert_true(node_delete(name, NULL));
}

static void expect(GError **err, const char *text)
{
    g_assert_nonnull(*err);
    g_assert_cmpstr((*err)->message, ==, text);
    g_clear_error(err);
}

static void test_resolve(void)
{
    if (!have_qemu())
        return;
    make_chain("r");
    BlockNode *top = open_top("r");
    const char *t = node_name(top);
    g_autofree char *mid = g_strdup(node_name(chain_backing(top)));
    g_autofree char *base = g_strdup(node_name(chain_bottom(top)));
    ChainStreamRange s;
    GError *err = NULL;
    g_assert_false(chain_resolve_stream(t, "x", "y", NULL, NULL, &s, &err));
    expect(&err, "'base' and 'base-node' cannot be specified at the same time");
    g_assert_false(chain_resolve_stream("nope", NULL, NULL, NULL, NULL, &s, &err));
    expect(&err, "Cannot find device='nope' nor node-name='nope'");
    g_assert_false(chain_resolve_stream(t, NULL, t, NULL, NULL, &s, &err));
    g_autofree char *msg = g_strdup_printf("Node '%s' is not a backing image of '%s'", t, t);
    expect(&err, msg);
    g_assert_false(chain_resolve_stream(t, NULL, NULL, NULL, "b", &s, &err));
    expect(&err, "backing file specified, but streaming the entire chain");
    g_assert_true(chain_resolve_stream(t, "r-base.qcow2", NULL, NULL, NULL, &s, &err));
    g_assert_true(s.top == top && s.base == node_find(base) && s.bottom == node_find(mid));
    g_assert_true(chain_resolve_stream(t, NULL, NULL, mid, NULL, &s, &err));
    g_assert_true(s.base == node_find(base) && s.bottom == node_find(mid));
    g_assert_true(chain_resolve_stream(t, NULL, NULL, NULL, NULL, &s, &err));
    g_assert_true(s.base == NULL && s.bottom == node_find(base));
    /* A blocked layer stops both, with QEMU's op-blocker text. */
    g_assert_true(node_block_ops(node_find(mid), "block device is in use by block job: stream", NULL));
    g_assert_false(chain_resolve_stream(t, NULL, base, NULL, NULL, &s, &err));
    g_autofree char *busy = g_strdup_printf("Node '%s' is busy: block device is in use by block job: stream", mid);
    expect(&err, busy);
    node_unblock_ops(node_find(mid));

    ChainCommitRange c;
    g_assert_false(chain_resolve_commit("nope", NULL, NULL, NULL, NULL, &c, &err));
    g_assert_true(g_error_matches(err, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND));
    expect(&err, "Device 'nope' not found");
    g_assert_false(chain_resolve_commit(mid, NULL, NULL, NULL, NULL, &c, &err));
    expect(&err, "Need a root block node");
    g_assert_false(chain_resolve_commit(t, "x", t, NULL, NULL, &c, &err));
    expect(&err, "'top-node' and 'top' are mutually exclusive");
    g_assert_false(chain_resolve_commit(t, NULL, base, NULL, base, &c, &err));
    expect(&err, "cannot commit an image into itself");
    g_assert_false(chain_resolve_commit(t, NULL, NULL, "nope.qcow2", NULL, &c, &err));
    expect(&err, "Can't find 'nope.qcow2' in the backing chain");
    g_assert_false(chain_resolve_commit(t, "nope.qcow2", NULL, NULL, NULL, &c, &err));
    expect(&err, "Top image file nope.qcow2 not found");
    g_assert_true(chain_resolve_commit(t, NULL, mid, NULL, NULL, &c, &err));
    g_assert_true(c.root == top && c.top == node_find(mid) && c.base == node_find(base));
    g_assert_true(chain_resolve_commit(t, NULL, NULL, NULL, NULL, &c, &err));
    g_assert_true(c.top == top && c.base == node_find(base));
    g_autofree char *name = g_strdup(t);
    g_assert_true(node_delete(name, NULL));
}

static void expect_run(BlockNode *top, BlockNode *base, uint64_t off, int allocated, uint64_t len)
{
    uint64_t pnum = 0;
    g_assert_cmpint(chain_is_allocated_above(top, base, off, 4 * MiB, &pnum), ==, allocated);
    g_assert_cmpuint(pnum, ==, len);
}

static void test_allocated_above(void)
{
    if (!have_qemu())
        return;
    make_chain("a");
    BlockNode *top = open_top("a");
    BlockNode *mid = chain_backing(top), *base = chain_backing(mid);
    /* The whole chain: top's and base's data join into one run up to mid's end. */
    expect_run(top, NULL, 0, 1, 2 * MiB);
    expect_run(top, NULL, 2 * MiB, 0, 1 * MiB);
    expect_run(top, NULL, 3 * MiB, 1, 64 * KiB);
    expect_run(top, NULL, 3 * MiB + 64 * KiB, 0, 1 * MiB - 64 * KiB);
    /* Above base: base's own data does not count. */
    expect_run(top, base, 0, 1, 64 * KiB);
    expect_run(top, base, 64 * KiB, 0, 1 * MiB - 64 * KiB);
    expect_run(top, base, 1 * MiB, 1, 1 * MiB);
    /* Above mid: only top. */
    expect_run(top, mid, 64 * KiB, 0, 4 * MiB - 64 * KiB);
    /* At the end, and a short request. */
    uint64_t pnum = 1;
    g_assert_cmpint(chain_is_allocated_above(top, NULL, 4 * MiB, MiB, &pnum), ==, 0);
    g_assert_cmpuint(pnum, ==, 0);
    g_assert_cmpint(chain_is_allocated_above(top, NULL, 0, 4 * KiB, &pnum), ==, 1);
    g_assert_cmpuint(pnum, ==, 4 * KiB);
    g_autofree char *name = g_strdup(node_name(top));
    g_assert_true(node_delete(name, NULL));
}

/* What qemu-img says an image's backing file is ("" for none). */
static char *backing_of(const char *image)
{
    g_autofree char *out = NULL;
    g_assert_cmpint(run(&out, "qemu-img info -U --output=json %s", image), ==, 0);
    g_autoptr(JsonParser) p = json_parser_new();
    g_assert_true(json_parser_load_from_data(p, out, -1, NULL));
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    if (!json_object_has_member(o, "backing-filename"))
        return g_strdup("");
    return g_strdup_printf("%s/%s", json_object_get_string_member(o, "backing-filename"),
                           json_object_has_member(o, "backing-filename-format")
                               ? json_object_get_string_member(o, "backing-filename-format") : "-");
}

static void test_relink(void)
{
    if (!have_qemu())
        return;
    make_chain("k");
    g_autofree char *top_file = path("%s", "k-top.qcow2");
    g_autofree char *base_file = path("%s", "k-base.qcow2");
    BlockNode *top = open_top("k");
    g_autofree char *top_name = g_strdup(node_name(top));
    g_autofree char *mid_name = g_strdup(node_name(chain_backing(top)));
    g_autofree char *base_name = g_strdup(node_name(chain_bottom(top)));
    BlockNode *base = chain_bottom(top);
    GError *err = NULL;

    /* A name that does not fit the header is refused; nothing changes. */
    g_autofree char *long_name = g_strnfill(2000, 'x');
    g_assert_false(chain_relink(top, base, long_name, &err));
    g_assert_nonnull(err);
    g_clear_error(&err);
    g_assert_true(chain_backing(top) == node_find(mid_name));
    g_autofree char *b0 = backing_of(top_file);
    g_assert_cmpstr(b0, ==, "k-mid.qcow2/qcow2");

    /* mid falls out and closes; base stays, now top's; the header names it. */
    g_assert_true(chain_relink(top, base, NULL, &err));
    g_assert_no_error(err);
    g_assert_true(chain_backing(top) == base);
    g_assert_null(node_find(mid_name));
    g_assert_nonnull(node_find(base_name));
    g_autofree char *b1 = backing_of(top_file);
    g_autofree char *want1 = g_strdup_printf("%s/qcow2", base_file);
    g_assert_cmpstr(b1, ==, want1);
    BlockImageInfo info;
    g_assert_true(node_image_info(top, &info));
    g_assert_cmpstr(info.backing_filename, ==, base_file);
    /* Top reads base where it has nothing (mid's data is gone with it). */
    uint8_t buf[4];
    g_assert_cmpint(node_pread(top, buf, 4, 512 * KiB), ==, 0);
    g_assert_cmpint(buf[0], ==, 1);
    g_assert_cmpint(node_pread(top, buf, 4, 1 * MiB), ==, 0);
    g_assert_cmpint(buf[0], ==, 0);

    g_assert_true(chain_relink(top, base, NULL, &err));   /* already linked: nothing to do */
    g_assert_true(chain_relink(top, NULL, NULL, &err));
    g_assert_no_error(err);
    g_assert_null(chain_backing(top));
    g_assert_null(node_find(base_name));
    g_autofree char *b2 = backing_of(top_file);
    g_assert_cmpstr(b2, ==, "");
    g_assert_true(node_delete(top_name, NULL));
    g_autofree char *out = NULL;
    g_assert_cmpint(run(&out, "qemu-img check -q %s", top_file), ==, 0);
}

static void test_relink_name_given(void)
{
    if (!have_qemu())
        return;
    make_chain("n");
    g_autofree char *top_file = path("%s", "n-top.qcow2");
    /* A persistent bitmap's header extensions survive the rewrite. */
    g_assert_cmpint(run(NULL, "qemu-img bitmap --add %s b0", top_file), ==, 0);
    BlockNode *top = open_top("n");
    g_autofree char *top_name = g_strdup(node_name(top));
    GError *err = NULL;
    g_assert_true(chain_relink(top, chain_bottom(top), "n-base.qcow2", &err));
    g_assert_no_error(err);
    g_autofree char *b = backing_of(top_file);
    g_assert_cmpstr(b, ==, "n-base.qcow2/qcow2");
    g_assert_true(node_delete(top_name, NULL));
    /* qemu-img opens the relinked chain. */
    g_autofree char *out = NULL;
    g_assert_cmpint(run(&out, "qemu-io -f qcow2 -r -c 'read -P 1 64k 960k' -c 'read -P 3 0 64k' %s", top_file), ==, 0);
    g_autofree char *info = NULL;
    g_assert_cmpint(run(&info, "qemu-img info %s", top_file), ==, 0);
    g_assert_nonnull(strstr(info, "name: b0"));
    g_autofree char *check = NULL;
    g_assert_cmpint(run(&check, "qemu-img check -q %s", top_file), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    block_drivers_init();
    GError *err = NULL;
    tmpdir = g_dir_make_tmp("test-chain-XXXXXX", &err);
    g_assert_no_error(err);
    g_test_add_func("/chain/lookups", test_lookups);
    g_test_add_func("/chain/resolve", test_resolve);
    g_test_add_func("/chain/allocated-above", test_allocated_above);
    g_test_add_func("/chain/relink", test_relink);
    g_test_add_func("/chain/relink-name-given", test_relink_name_given);
    int rc = g_test_run();
    node_graph_shutdown();
    (void)run(NULL, "rm -rf %s", tmpdir);
    g_free(tmpdir);
    return rc;
}
