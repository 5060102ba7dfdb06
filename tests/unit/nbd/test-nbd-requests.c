/* Unit tests of NBD request parsing and validation, flags and reply encoding. */
#include <errno.h>
#include <string.h>
#include <glib.h>
#include "server/nbd/nbd-wire.h"

#define MiB (1024u * 1024)
#define SIZE (64 * (uint64_t)MiB)

static void encode_compact(uint8_t *b, uint16_t flags, uint16_t type, uint64_t cookie,
                           uint64_t offset, uint32_t length)
{
    nbd_put32(b, NBD_REQUEST_MAGIC);
    nbd_put16(b + 4, flags);
    nbd_put16(b + 6, type);
    nbd_put64(b + 8, cookie);
    nbd_put64(b + 16, offset);
    nbd_put32(b + 24, length);
}

static void test_parse_compact(void)
{
    uint8_t b[NBD_REQUEST_SIZE];
    encode_compact(b, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0x0102030405060708ull, 4096, 512);
    NbdRequest r;
    g_assert_true(nbd_parse_request(b, false, &r));
    g_assert_cmpuint(r.flags, ==, NBD_CMD_FLAG_FUA);
    g_assert_cmpuint(r.type, ==, NBD_CMD_WRITE);
    g_assert_cmpuint(r.cookie, ==, 0x0102030405060708ull);
    g_assert_cmpuint(r.offset, ==, 4096);
    g_assert_cmpuint(r.length, ==, 512);
    g_assert_cmpuint(nbd_request_payload_length(&r, false), ==, 512);
    /* Only WRITE carries a payload in compact mode. */
    r.type = NBD_CMD_READ;
    g_assert_cmpuint(nbd_request_payload_length(&r, false), ==, 0);
    /* Wrong magic, and an extended magic where a compact one is expected. */
    nbd_put32(b, 0x12560953);
    g_assert_false(nbd_parse_request(b, false, &r));
    nbd_put32(b, NBD_EXTENDED_REQUEST_MAGIC);
    g_assert_false(nbd_parse_request(b, false, &r));
}

static void test_parse_extended(void)
{
    uint8_t b[NBD_EXTENDED_REQUEST_SIZE];
    nbd_put32(b, NBD_EXTENDED_REQUEST_MAGIC);
    nbd_put16(b + 4, 0);
    nbd_put16(b + 6, NBD_CMD_TRIM);
    nbd_put64(b + 8, 42);
    nbd_put64(b + 16, 1);
    nbd_put64(b + 24, 0x100000000ull); /* 4 GiB: needs 64 bits */
    NbdRequest r;
    g_assert_true(nbd_parse_request(b, true, &r));
    g_assert_cmpuint(r.type, ==, NBD_CMD_TRIM);
    g_assert_cmpuint(r.length, ==, 0x100000000ull);
    g_assert_cmpuint(nbd_request_payload_length(&r, true), ==, 0);
    /* PAYLOAD_LEN on a non-write still means bytes follow (framing). */
    r.flags = NBD_CMD_FLAG_PAYLOAD_LEN;
    r.type = NBD_CMD_BLOCK_STATUS;
    r.length = 12;
    g_assert_cmpuint(nbd_request_payload_length(&r, true), ==, 12);
    g_assert_cmpuint(nbd_request_payload_length(&r, false), ==, 0);
    nbd_put32(b, NBD_REQUEST_MAGIC);
    g_assert_false(nbd_parse_request(b, true, &r));
}

static NbdValidateContext writable_ctx(void)
{
    NodeCaps caps = {
        .can_write = true, .can_flush = true, .can_trim = true, .can_zero = true,
        .can_fast_zero = true, .fua = BLOCK_SUPPORT_NATIVE, .cache = BLOCK_SUPPORT_EMULATE,
    };
    return (NbdValidateContext){
        .size = SIZE, .eflags = nbd_compute_eflags(&caps, false, true), .structured = true,
        .has_meta_contexts = true, .min_block = 1, .max_payload = 32 * MiB,
    };
}

static uint32_t check(const NbdValidateContext *ctx, uint16_t type, uint16_t flags,
                      uint64_t offset, uint64_t length)
{
    NbdRequest r = { .flags = flags, .type = type, .offset = offset, .length = length };
    const char *why = NULL;
    uint32_t e = nbd_validate_request(ctx, &r, &why);
    g_assert_true((e == 0) == (why == NULL));
    return e;
}

static void test_validate_ok(void)
{
    NbdValidateContext c = writable_ctx();
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 0, 4096), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, SIZE - 1, 1), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 32 * MiB), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_FLUSH, 0, 0, 0), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, 0, SIZE), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO, 0, SIZE), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_CACHE, 0, 0, SIZE), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 0, SIZE), ==, 0);
}

static void test_validate_errors(void)
{
    NbdValidateContext c = writable_ctx();
    /* 1. unknown commands (RESIZE is not offered; DISC never validated) */
    g_assert_cmpuint(check(&c, 99, 0, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_RESIZE, 0, SIZE, 0), ==, NBD_EINVAL);
    /* 3. range: ENOSPC for writes, EINVAL otherwise; zero length; overflow */
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, SIZE, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0, SIZE - 1, 2), ==, NBD_ENOSPC);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE_ZEROES, 0, SIZE, 1), ==, NBD_ENOSPC);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, 0, SIZE, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_BLOCK_STATUS, 0, SIZE + 1, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, UINT64_MAX, 2), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0, 4096, UINT64_MAX), ==, NBD_ENOSPC);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 0, 0), ==, NBD_EINVAL);
    /* 4. flush with a range */
    g_assert_cmpuint(check(&c, NBD_CMD_FLUSH, 0, 1, 0), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_FLUSH, 0, 0, 1), ==, NBD_EINVAL);
    /* 5. flags */
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0x40, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_DF, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, NBD_CMD_FLAG_REQ_ONE, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, NBD_CMD_FLAG_FAST_ZERO, 0, 1), ==, NBD_EINVAL);
    /* 6. payload limits; EOVERFLOW only for DF reads */
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 0, 32 * MiB + 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 32 * MiB + 1), ==, NBD_EOVERFLOW);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0, 0, 32 * MiB + 1), ==, NBD_EINVAL);
    /* 8. block status without a context */
    c.has_meta_contexts = false;
    g_assert_cmpuint(check(&c, NBD_CMD_BLOCK_STATUS, 0, 0, 1), ==, NBD_EINVAL);
}

static void test_validate_order_and_negotiation(void)
{
    NbdValidateContext c = writable_ctx();
    /* Read-only export: EPERM comes before the range check (step 2 < 3). */
    NodeCaps ro_caps = { .can_flush = true, .fua = BLOCK_SUPPORT_NATIVE, .can_trim = true, .can_zero = true };
    c.eflags = nbd_compute_eflags(&ro_caps, true, true);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0, SIZE, 10), ==, NBD_EPERM);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, 0, 0, 1), ==, NBD_EPERM);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE_ZEROES, 0, 0, 1), ==, NBD_EPERM);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 0, 1), ==, 0);
    /* Range (3) before flags (5). */
    c = writable_ctx();
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0x40, SIZE, 1), ==, NBD_ENOSPC);
    /* DF without structured replies; FUA without SEND_FUA. */
    c.structured = false;
    g_assert_cmpuint(check(&c, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_BLOCK_STATUS, 0, 0, 1), ==, NBD_EINVAL);
    c = writable_ctx();
    c.eflags &= ~(NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_TRIM |
                  NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FAST_ZERO);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, 0, 0, 1), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_FLUSH, 0, 0, 0), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, 0, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE_ZEROES, 0, 0, 1), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_CACHE, 0, 0, 1), ==, NBD_EINVAL);
    /* Extended headers: PAYLOAD_LEN allowed on WRITE only; 64-bit effect lengths. */
    c = writable_ctx();
    c.extended = true;
    c.size = 16 * (uint64_t)1024 * MiB;
    g_assert_cmpuint(check(&c, NBD_CMD_WRITE, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 512), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_PAYLOAD_LEN, 0, 12), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_TRIM, 0, 0, 8 * (uint64_t)1024 * MiB), ==, 0);
    /* Alignment, only when a minimum block size is advertised; the tail may be short. */
    c = writable_ctx();
    c.min_block = 512;
    c.size = SIZE - 100;
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 1, 512), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 0, 100), ==, NBD_EINVAL);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, 512, 1024), ==, 0);
    g_assert_cmpuint(check(&c, NBD_CMD_READ, 0, SIZE - 512, 412), ==, 0);
}

static void test_errno_mapping(void)
{
    g_assert_cmpuint(nbd_errno_to_nbd(-EPERM, 0), ==, NBD_EPERM);
    g_assert_cmpuint(nbd_errno_to_nbd(-EROFS, 0), ==, NBD_EPERM);
    g_assert_cmpuint(nbd_errno_to_nbd(-EIO, 0), ==, NBD_EIO);
    g_assert_cmpuint(nbd_errno_to_nbd(EDQUOT, 0), ==, NBD_ENOSPC);
    g_assert_cmpuint(nbd_errno_to_nbd(-EFBIG, 0), ==, NBD_ENOSPC);
    g_assert_cmpuint(nbd_errno_to_nbd(-EOVERFLOW, 0), ==, NBD_EINVAL);
    g_assert_cmpuint(nbd_errno_to_nbd(-EOVERFLOW, NBD_CMD_FLAG_DF), ==, NBD_EOVERFLOW);
    g_assert_cmpuint(nbd_errno_to_nbd(-ENOTSUP, 0), ==, NBD_EINVAL);
    g_assert_cmpuint(nbd_errno_to_nbd(-EOPNOTSUPP, NBD_CMD_FLAG_FAST_ZERO), ==, NBD_ENOTSUP);
    g_assert_cmpuint(nbd_errno_to_nbd(-ESHUTDOWN, 0), ==, NBD_ESHUTDOWN);
    g_assert_cmpuint(nbd_errno_to_nbd(-ENOENT, 0), ==, NBD_EINVAL);
}

static void test_eflags(void)
{
    NodeCaps caps = { .can_write = true, .can_flush = true, .fua = BLOCK_SUPPORT_EMULATE,
                      .can_trim = true, .can_zero = true, .can_fast_zero = true,
                      .cache = BLOCK_SUPPORT_NONE, .is_rotational = true };
    uint16_t f = nbd_compute_eflags(&caps, false, false);
    g_assert_cmphex(f, ==, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                           NBD_FLAG_ROTATIONAL | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                           NBD_FLAG_SEND_FAST_ZERO);
    /* DF only with structured replies; multi-conn when read-only or promised. */
    f = nbd_compute_eflags(&caps, false, true);
    g_assert_true(f & NBD_FLAG_SEND_DF);
    g_assert_false(f & NBD_FLAG_CAN_MULTI_CONN);
    caps.can_multi_conn = true;
    caps.cache = BLOCK_SUPPORT_EMULATE;
    f = nbd_compute_eflags(&caps, false, true);
    g_assert_true(f & NBD_FLAG_CAN_MULTI_CONN);
    g_assert_true(f & NBD_FLAG_SEND_CACHE);
    /* Read-only: write-side flags off, multi-conn on. */
    caps.can_multi_conn = false;
    f = nbd_compute_eflags(&caps, true, true);
    g_assert_true(f & NBD_FLAG_READ_ONLY);
    g_assert_true(f & NBD_FLAG_CAN_MULTI_CONN);
    g_assert_false(f & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FUA |
                        NBD_FLAG_SEND_FAST_ZERO));
    /* FAST_ZERO never without WRITE_ZEROES. */
    caps = (NodeCaps){ .can_write = true, .can_fast_zero = true };
    f = nbd_compute_eflags(&caps, false, false);
    g_assert_cmphex(f, ==, NBD_FLAG_HAS_FLAGS);
}

static void test_block_sizes(void)
{
    NodeCaps caps = { 0 };
    uint32_t mn, pr, mx;
    nbd_compute_block_sizes(&caps, &mn, &pr, &mx);
    g_assert_cmpuint(mn, ==, 1);
    g_assert_cmpuint(pr, ==, 4096);
    g_assert_cmpuint(mx, ==, 33554432);
    caps.block_min = 512;
    caps.block_preferred = 65536;
    caps.block_max = 0xffffffff;
    nbd_compute_block_sizes(&caps, &mn, &pr, &mx);
    g_assert_cmpuint(mn, ==, 512);
    g_assert_cmpuint(pr, ==, 65536);
    g_assert_cmpuint(mx, ==, 33554432);
    caps.block_min = 3; /* not a power of two: ignored */
    caps.block_max = 1 * MiB;
    nbd_compute_block_sizes(&caps, &mn, &pr, &mx);
    g_assert_cmpuint(mn, ==, 1);
    g_assert_cmpuint(mx, ==, 1 * MiB);
}

static void test_reply_headers(void)
{
    uint8_t b[32];
    g_assert_cmpuint(nbd_encode_simple_reply(b, NBD_EINVAL, 7), ==, 16);
    g_assert_cmphex(nbd_get32(b), ==, NBD_SIMPLE_REPLY_MAGIC);
    g_assert_cmpuint(nbd_get32(b + 4), ==, NBD_EINVAL);
    g_assert_cmpuint(nbd_get64(b + 8), ==, 7);
    g_assert_cmpuint(nbd_encode_chunk_header(b, false, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                                             9, 4096, 520), ==, 20);
    g_assert_cmphex(nbd_get32(b), ==, NBD_STRUCTURED_REPLY_MAGIC);
    g_assert_cmpuint(nbd_get16(b + 4), ==, NBD_REPLY_FLAG_DONE);
    g_assert_cmpuint(nbd_get16(b + 6), ==, NBD_REPLY_TYPE_OFFSET_DATA);
    g_assert_cmpuint(nbd_get64(b + 8), ==, 9);
    g_assert_cmpuint(nbd_get32(b + 16), ==, 520);
    g_assert_cmpuint(nbd_encode_chunk_header(b, true, 0, NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
                                             9, 4096, 1ull << 33), ==, 32);
    g_assert_cmphex(nbd_get32(b), ==, NBD_EXTENDED_REPLY_MAGIC);
    g_assert_cmpuint(nbd_get64(b + 16), ==, 4096);
    g_assert_cmpuint(nbd_get64(b + 24), ==, 1ull << 33);
}

static void test_extent_encoder(void)
{
    uint8_t out[16 * 8];
    NbdExtentEncoder enc;
    /* Coalescing, zero-length skipping and clipping at the request end. */
    nbd_extent_encoder_init(&enc, out, false, 1000, 5000, false, 8);
    g_assert_true(nbd_extent_encoder_add(&enc, 1000, 3));
    g_assert_true(nbd_extent_encoder_add(&enc, 0, 0));
    g_assert_true(nbd_extent_encoder_add(&enc, 1000, 3));
    g_assert_true(nbd_extent_encoder_add(&enc, 500, 0));
    g_assert_false(nbd_extent_encoder_add(&enc, 1 << 30, 2));
    g_assert_cmpuint(enc.count, ==, 3);
    g_assert_cmpuint(nbd_extent_encoder_bytes(&enc), ==, 24);
    g_assert_cmpuint(nbd_get32(out), ==, 2000);
    g_assert_cmpuint(nbd_get32(out + 4), ==, 3);
    g_assert_cmpuint(nbd_get32(out + 8), ==, 500);
    g_assert_cmpuint(nbd_get32(out + 16), ==, 2500);
    g_assert_cmpuint(nbd_get32(out + 20), ==, 2);
    /* REQ_ONE: one descriptor, not longer than the request. */
    nbd_extent_encoder_init(&enc, out, false, 0, 4096, true, 8);
    g_assert_true(nbd_extent_encoder_add(&enc, 512, 0));
    g_assert_false(nbd_extent_encoder_add(&enc, 512, 3));
    g_assert_cmpuint(enc.count, ==, 1);
    g_assert_cmpuint(nbd_get32(out), ==, 512);
    /* Extended: 64-bit lengths, a cap on descriptors. */
    nbd_extent_encoder_init(&enc, out, true, 0, 1ull << 40, false, 2);
    g_assert_true(nbd_extent_encoder_add(&enc, 1ull << 33, 3));
    g_assert_true(nbd_extent_encoder_add(&enc, 4096, 0));
    g_assert_false(nbd_extent_encoder_add(&enc, 4096, 3));
    g_assert_cmpuint(enc.count, ==, 2);
    g_assert_cmpuint(nbd_get64(out), ==, 1ull << 33);
    g_assert_cmpuint(nbd_get64(out + 8), ==, 3);
    g_assert_cmpuint(nbd_get64(out + 16), ==, 4096);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/nbd/request/parse-compact", test_parse_compact);
    g_test_add_func("/nbd/request/parse-extended", test_parse_extended);
    g_test_add_func("/nbd/request/validate-ok", test_validate_ok);
    g_test_add_func("/nbd/request/validate-errors", test_validate_errors);
    g_test_add_func("/nbd/request/validate-order", test_validate_order_and_negotiation);
    g_test_add_func("/nbd/request/errno-mapping", test_errno_mapping);
    g_test_add_func("/nbd/flags/eflags", test_eflags);
    g_test_add_func("/nbd/flags/block-sizes", test_block_sizes);
    g_test_add_func("/nbd/reply/headers", test_reply_headers);
    g_test_add_func("/nbd/reply/extent-encoder", test_extent_encoder);
    return g_test_run();
}
