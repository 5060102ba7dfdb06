/* Unit tests of the NBD option parsers (INFO/GO and META_CONTEXT data). */
#include <string.h>
#include <glib.h>
#include "server/nbd/nbd-wire.h"

/* Builds option data: a 4-byte-length-prefixed name, then the rest. */
static GByteArray *with_name(const char *name)
{
    GByteArray *b = g_byte_array_new();
    uint8_t len[4];
    nbd_put32(len, (uint32_t)strlen(name));
    g_byte_array_append(b, len, 4);
    g_byte_array_append(b, (const guint8 *)name, (guint)strlen(name));
    return b;
}

static void append16(GByteArray *b, uint16_t v)
{
    uint8_t x[2];
    nbd_put16(x, v);
    g_byte_array_append(b, x, 2);
}

static void append32(GByteArray *b, uint32_t v)
{
    uint8_t x[4];
    nbd_put32(x, v);
    g_byte_array_append(b, x, 4);
}

static void append_query(GByteArray *b, const char *q)
{
    append32(b, (uint32_t)strlen(q));
    g_byte_array_append(b, (const guint8 *)q, (guint)strlen(q));
}

static void test_info_valid(void)
{
    g_autoptr(GByteArray) b = with_name("disk0");
    append16(b, 3);
    append16(b, NBD_INFO_NAME);
    append16(b, NBD_INFO_BLOCK_SIZE);
    append16(b, 77); /* unknown: ignored */
    NbdOptInfoRequest req;
    const char *why = NULL;
    g_assert_true(nbd_parse_opt_info(b->data, b->len, &req, &why));
    g_assert_cmpstr(req.name, ==, "disk0");
    g_assert_true(req.want_name);
    g_assert_true(req.want_block_size);
    g_assert_false(req.want_description);
    nbd_opt_info_request_clear(&req);
    g_assert_null(req.name);
}

static void test_info_default_export(void)
{
    g_autoptr(GByteArray) b = with_name("");
    append16(b, 0);
    NbdOptInfoRequest req;
    const char *why = NULL;
    g_assert_true(nbd_parse_opt_info(b->data, b->len, &req, &why));
    g_assert_cmpstr(req.name, ==, "");
    g_assert_false(req.want_name || req.want_description || req.want_block_size);
    nbd_opt_info_request_clear(&req);
}

static void test_info_malformed(void)
{
    NbdOptInfoRequest req;
    const char *why = NULL;
    /* Too short. */
    uint8_t small[5] = { 0 };
    g_assert_false(nbd_parse_opt_info(small, sizeof(small), &req, &why));
    g_assert_nonnull(why);
    /* Name length runs past the data. */
    g_autoptr(GByteArray) b = with_name("abc");
    append16(b, 0);
    nbd_put32(b->data, 100);
    g_assert_false(nbd_parse_opt_info(b->data, b->len, &req, &why));
    /* Info count does not match the length (claims 2, carries 1). */
    g_autoptr(GByteArray) c = with_name("abc");
    append16(c, 2);
    append16(c, NBD_INFO_NAME);
    g_assert_false(nbd_parse_opt_info(c->data, c->len, &req, &why));
    /* Trailing garbage. */
    g_autoptr(GByteArray) d = with_name("abc");
    append16(d, 0);
    append16(d, 0);
    g_assert_false(nbd_parse_opt_info(d->data, d->len, &req, &why));
    /* NUL inside the name. */
    g_autoptr(GByteArray) e = with_name("a\0b");
    nbd_put32(e->data, 3);
    g_byte_array_set_size(e, 4);
    g_byte_array_append(e, (const guint8 *)"a\0b", 3);
    append16(e, 0);
    g_assert_false(nbd_parse_opt_info(e->data, e->len, &req, &why));
    /* Name longer than 4096 bytes. */
    g_autofree char *longname = g_strnfill(4097, 'x');
    g_autoptr(GByteArray) f = with_name(longname);
    append16(f, 0);
    g_assert_false(nbd_parse_opt_info(f->data, f->len, &req, &why));
}

static void test_meta_valid(void)
{
    g_autoptr(GByteArray) b = with_name("disk0");
    append32(b, 2);
    append_query(b, "base:allocation");
    append_query(b, "qemu:dirty-bitmap:");
    NbdOptMetaRequest req;
    const char *why = NULL;
    g_assert_true(nbd_parse_opt_meta_context(b->data, b->len, &req, &why));
    g_assert_cmpstr(req.name, ==, "disk0");
    g_assert_cmpuint(req.queries->len, ==, 2);
    g_assert_cmpstr(req.queries->pdata[0], ==, "base:allocation");
    g_assert_cmpstr(req.queries->pdata[1], ==, "qemu:dirty-bitmap:");
    nbd_opt_meta_request_clear(&req);
    g_assert_null(req.queries);
}

static void test_meta_no_queries(void)
{
    g_autoptr(GByteArray) b = with_name("");
    append32(b, 0);
    NbdOptMetaRequest req;
    const char *why = NULL;
    g_assert_true(nbd_parse_opt_meta_context(b->data, b->len, &req, &why));
    g_assert_cmpuint(req.queries->len, ==, 0);
    nbd_opt_meta_request_clear(&req);
}

static void test_meta_malformed(void)
{
    NbdOptMetaRequest req;
    const char *why = NULL;
    uint8_t small[7] = { 0 };
    g_assert_false(nbd_parse_opt_meta_context(small, sizeof(small), &req, &why));
    /* Claims 3 queries, carries 1. */
    g_autoptr(GByteArray) b = with_name("disk0");
    append32(b, 3);
    append_query(b, "base:allocation");
    g_assert_false(nbd_parse_opt_meta_context(b->data, b->len, &req, &why));
    g_assert_null(req.queries);
    /* Query length past the end. */
    g_autoptr(GByteArray) c = with_name("disk0");
    append32(c, 1);
    append32(c, 1000);
    g_byte_array_append(c, (const guint8 *)"base:", 5);
    g_assert_false(nbd_parse_opt_meta_context(c->data, c->len, &req, &why));
    /* A huge query count with no data must fail quickly, not allocate. */
    g_autoptr(GByteArray) d = with_name("disk0");
    append32(d, 0xffffffffu);
    g_assert_false(nbd_parse_opt_meta_context(d->data, d->len, &req, &why));
    /* Export name length past the data. */
    g_autoptr(GByteArray) e = with_name("disk0");
    append32(e, 0);
    nbd_put32(e->data, 0x7fffffffu);
    g_assert_false(nbd_parse_opt_meta_context(e->data, e->len, &req, &why));
    /* Trailing bytes after the last query. */
    g_autoptr(GByteArray) f = with_name("disk0");
    append32(f, 1);
    append_query(f, "base:allocation");
    append16(f, 0);
    g_assert_false(nbd_parse_opt_meta_context(f->data, f->len, &req, &why));
}

static void test_query_matching(void)
{
    /* LIST: a trailing ':' is a prefix wildcard. */
    g_assert_true(nbd_meta_query_matches("base:", "base:allocation", true));
    g_assert_true(nbd_meta_query_matches("qemu:dirty-bitmap:", "qemu:dirty-bitmap:b0", true));
    g_assert_true(nbd_meta_query_matches("qemu:", "qemu:dirty-bitmap:b0", true));
    g_assert_false(nbd_meta_query_matches("qemu:", "base:allocation", true));
    /* SET: wildcards select nothing; exact names only. */
    g_assert_false(nbd_meta_query_matches("base:", "base:allocation", false));
    g_assert_true(nbd_meta_query_matches("base:allocation", "base:allocation", false));
    g_assert_false(nbd_meta_query_matches("base:alloc", "base:allocation", false));
    g_assert_false(nbd_meta_query_matches("base:allocation2", "base:allocation", true));
    /* No namespace: never matches. */
    g_assert_false(nbd_meta_query_matches("allocation", "allocation", true));
    g_assert_false(nbd_meta_query_matches(":x", ":x", false));
    g_assert_false(nbd_meta_query_matches("", "base:allocation", true));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd/options/info/valid", test_info_valid);
    g_test_add_func("/nbd/options/info/default-export", test_info_default_export);
    g_test_add_func("/nbd/options/info/malformed", test_info_malformed);
    g_test_add_func("/nbd/options/meta/valid", test_meta_valid);
    g_test_add_func("/nbd/options/meta/no-queries", test_meta_no_queries);
    g_test_add_func("/nbd/options/meta/malformed", test_meta_malformed);
    g_test_add_func("/nbd/options/meta/matching", test_query_matching);
    return g_test_run();
}
