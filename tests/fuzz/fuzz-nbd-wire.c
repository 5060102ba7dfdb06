/* Fuzz target "nbd-wire": the pure NBD parsers and validators of
 * server/nbd/nbd-wire.c, checked against the protocol's rules.
 *
 * Input: a connection context (node capabilities, export size, negotiated
 * modes; the transmission flags and block sizes are computed from them as
 * the server does), then a sequence of operations, each a selector byte
 * and its bytes: a request header to parse and validate, NBD_OPT_INFO/GO
 * or META_CONTEXT option data to parse, extents to encode as block-status
 * descriptors, an errno to map.  Missing bytes read as zero. */
#include "tests/fuzz/fuzz.h"

#include <errno.h>
#include <string.h>
#include <glib.h>
#include "server/nbd/nbd-wire.h"

typedef struct Reader {
    const uint8_t *p;
    size_t left;
} Reader;

static uint64_t take(Reader *r, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        v = v << 8 | (r->left ? *r->p : 0);
        if (r->left) {
            r->p++;
            r->left--;
        }
    }
    return v;
}

/* Up to `max` bytes of the input (fewer at its end). */
static const uint8_t *take_bytes(Reader *r, size_t want, size_t *got)
{
    const uint8_t *p = r->p;
    *got = MIN(want, r->left);
    r->p += *got;
    r->left -= *got;
    return p;
}

static bool is_power_of_2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static void check_request(const NbdValidateContext *ctx, Reader *r)
{
    uint8_t buf[NBD_EXTENDED_REQUEST_SIZE] = { 0 };
    size_t n;
    const uint8_t *p = take_bytes(r, ctx->extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE, &n);
    memcpy(buf, p, n);
    /* Half of the headers get the right magic, or the fuzzer rarely gets past it. */
    if (n > 0 && (buf[0] & 1))
        nbd_put32(buf, ctx->extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
    NbdRequest req;
    if (!nbd_parse_request(buf, ctx->extended, &req))
        return;
    if (!ctx->extended)
        g_assert_cmpuint(req.length, <=, UINT32_MAX);
    uint64_t payload = nbd_request_payload_length(&req, ctx->extended);
    const char *why = NULL;
    uint32_t err = nbd_validate_request(ctx, &req, &why);
    g_assert_true(err == 0 || why != NULL);
    g_assert_true(err == 0 || err == NBD_EINVAL || err == NBD_EPERM || err == NBD_ENOSPC ||
                  err == NBD_EOVERFLOW);
    if (err)
        return;
    /* A valid request is one the layers below may assert on (seam 1). */
    uint16_t t = req.type;
    g_assert_true(t == NBD_CMD_READ || t == NBD_CMD_WRITE || t == NBD_CMD_FLUSH || t == NBD_CMD_TRIM ||
                  t == NBD_CMD_CACHE || t == NBD_CMD_WRITE_ZEROES || t == NBD_CMD_BLOCK_STATUS);
    bool ranged = t != NBD_CMD_FLUSH;
    if (ranged) {
        g_assert_cmpuint(req.length, >, 0);
        g_assert_cmpuint(req.offset, <=, ctx->size);
        g_assert_cmpuint(req.length, <=, ctx->size - req.offset);
        if (ctx->min_block > 1) {
            g_assert_cmpuint(req.offset % ctx->min_block, ==, 0);
            g_assert_true(req.length % ctx->min_block == 0 || req.offset + req.length == ctx->size);
        }
    } else {
        g_assert_cmpuint(req.offset, ==, 0);
        g_assert_cmpuint(req.length, ==, 0);
        g_assert_true(ctx->eflags & NBD_FLAG_SEND_FLUSH);
    }
    if (t == NBD_CMD_READ || t == NBD_CMD_WRITE)
        g_assert_cmpuint(req.length, <=, ctx->max_payload);
    if (t == NBD_CMD_WRITE || t == NBD_CMD_TRIM || t == NBD_CMD_WRITE_ZEROES)
        g_assert_false(ctx->eflags & NBD_FLAG_READ_ONLY);
    if (t == NBD_CMD_TRIM)
        g_assert_true(ctx->eflags & NBD_FLAG_SEND_TRIM);
    if (t == NBD_CMD_WRITE_ZEROES)
        g_assert_true(ctx->eflags & NBD_FLAG_SEND_WRITE_ZEROES);
    if (t == NBD_CMD_CACHE)
        g_assert_true(ctx->eflags & NBD_FLAG_SEND_CACHE);
    if (t == NBD_CMD_BLOCK_STATUS)
        g_assert_true(ctx->structured && ctx->has_meta_contexts);
    if (req.flags & NBD_CMD_FLAG_FUA)
        g_assert_true(ctx->eflags & NBD_FLAG_SEND_FUA);
    if (req.flags & NBD_CMD_FLAG_DF)
        g_assert_true(t == NBD_CMD_READ && ctx->structured);
    if (req.flags & NBD_CMD_FLAG_FAST_ZERO)
        g_assert_true(t == NBD_CMD_WRITE_ZEROES && (ctx->eflags & NBD_FLAG_SEND_FAST_ZERO));
    /* The payload the receiver reads is exactly the data of a write. */
    g_assert_cmpuint(payload, ==, t == NBD_CMD_WRITE ? req.length : 0);
}

static void check_opt_info(Reader *r)
{
    size_t len;
    const uint8_t *data = take_bytes(r, take(r, 2), &len);
    NbdOptInfoRequest req;
    const char *why = NULL;
    if (!nbd_parse_opt_info(data, len, &req, &why)) {
        g_assert_nonnull(why);
        g_assert_null(req.name);
        return;
    }
    g_assert_nonnull(req.name);
    size_t name_len = strlen(req.name);
    g_assert_cmpuint(name_len, <=, NBD_MAX_STRING);
    g_assert_cmpuint(name_len, ==, nbd_get32(data));
    g_assert_cmpmem(req.name, name_len, data + 4, name_len);
    nbd_opt_info_request_clear(&req);
}

static void check_opt_meta(Reader *r)
{
    size_t len;
    const uint8_t *data = take_bytes(r, take(r, 2), &len);
    NbdOptMetaRequest req;
    const char *why = NULL;
    if (!nbd_parse_opt_meta_context(data, len, &req, &why)) {
        g_assert_nonnull(why);
        g_assert_null(req.name);
        g_assert_null(req.queries);
        return;
    }
    g_assert_cmpuint(strlen(req.name), <=, NBD_MAX_STRING);
    static const char *const contexts[] = {
        "base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:",
    };
    for (guint q = 0; q < req.queries->len; q++) {
        const char *query = req.queries->pdata[q];
        g_assert_cmpuint(strlen(query), <=, NBD_MAX_STRING);
        for (size_t c = 0; c < G_N_ELEMENTS(contexts); c++) {
            bool set = nbd_meta_query_matches(query, contexts[c], false);
            bool list = nbd_meta_query_matches(query, contexts[c], true);
            /* SET selects exact names only; LIST finds at least what SET does. */
            g_assert_true(!set || strcmp(query, contexts[c]) == 0);
            g_assert_true(!set || list);
        }
    }
    nbd_opt_meta_request_clear(&req);
}

static void check_extents(Reader *r)
{
    bool extended = take(r, 1) & 1;
    bool req_one = take(r, 1) & 1;
    size_t max = 1 + take(r, 1) % 16;
    uint64_t offset = take(r, 8) & INT64_MAX;
    uint64_t length = extended ? take(r, 8) & INT64_MAX : take(r, 4);
    if (length == 0 || offset + length > INT64_MAX)
        return; /* validation rejects these before block status runs */
    uint8_t out[16 * 16];
    NbdExtentEncoder enc;
    nbd_extent_encoder_init(&enc, out, extended, offset, length, req_one, max);
    while (r->left > 0) {
        /* Extents may run past the request: the encoder clips them. */
        uint64_t len = take(r, 1) & 0x80 ? take(r, 8) & INT64_MAX : take(r, 2);
        uint32_t type = take(r, 1) & 3;
        if (!nbd_extent_encoder_add(&enc, len, type))
            break;
    }
    size_t bytes = nbd_extent_encoder_bytes(&enc);
    size_t size = extended ? 16 : 8;
    g_assert_cmpuint(bytes % size, ==, 0);
    size_t count = bytes / size;
    g_assert_cmpuint(count, <=, req_one ? 1 : max);
    uint64_t sum = 0;
    for (size_t i = 0; i < count; i++) {
        uint64_t l = extended ? nbd_get64(out + i * 16) : nbd_get32(out + i * 8);
        g_assert_cmpuint(l, >, 0);
        sum += l;
        /* Neighbours of the same type are merged. */
        if (i > 0) {
            uint64_t t0 = extended ? nbd_get64(out + (i - 1) * 16 + 8) : nbd_get32(out + (i - 1) * 8 + 4);
            uint64_t t1 = extended ? nbd_get64(out + i * 16 + 8) : nbd_get32(out + i * 8 + 4);
            g_assert_cmpuint(t0, !=, t1);
        }
    }
    g_assert_cmpuint(sum, <=, length);
    g_assert_cmpuint(sum, ==, enc.pos - offset);
}

static int nbd_wire_one(const uint8_t *data, size_t size)
{
    Reader r = { data, size };
    /* The export as the server would describe it. */
    NodeCaps caps = { 0 };
    uint64_t bits = take(&r, 2);
    caps.can_write = bits & 1;
    caps.can_flush = bits & 2;
    caps.can_trim = bits & 4;
    caps.can_zero = bits & 8;
    caps.can_fast_zero = bits & 16;
    caps.can_extents = bits & 32;
    caps.can_multi_conn = bits & 64;
    caps.is_rotational = bits & 128;
    caps.fua = (bits >> 8) % 3;
    caps.cache = (bits >> 10) % 3;
    bool read_only = bits & (1 << 12);
    bool structured = bits & (1 << 13);
    bool extended = bits & (1 << 14);
    bool has_meta = bits & (1 << 15);
    caps.block_min = (uint32_t)take(&r, 4);
    caps.block_preferred = (uint32_t)take(&r, 4);
    caps.block_max = (uint32_t)take(&r, 4);
    uint64_t export_size = take(&r, 8) & INT64_MAX; /* node sizes are int64_t */

    NbdValidateContext ctx = {
        .size = export_size,
        .eflags = nbd_compute_eflags(&caps, read_only, structured || extended),
        .structured = structured || extended,
        .extended = extended,
        .has_meta_contexts = has_meta,
    };
    uint32_t preferred;
    nbd_compute_block_sizes(&caps, &ctx.min_block, &preferred, &ctx.max_payload);
    /* What the protocol requires of advertised block sizes (§4.5). */
    g_assert_true(is_power_of_2(ctx.min_block) && ctx.min_block <= 65536);
    g_assert_true(is_power_of_2(preferred) && preferred >= ctx.min_block);
    g_assert_cmpuint(ctx.max_payload, >=, preferred);
    g_assert_cmpuint(ctx.max_payload % ctx.min_block, ==, 0);
    g_assert_true(ctx.eflags & NBD_FLAG_HAS_FLAGS);
    if (read_only)
        g_assert_false(ctx.eflags & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FUA));
    if (ctx.eflags & NBD_FLAG_SEND_FAST_ZERO)
        g_assert_true(ctx.eflags & NBD_FLAG_SEND_WRITE_ZEROES);

    while (r.left > 0) {
        switch (take(&r, 1) % 5) {
        case 0:
            check_request(&ctx, &r);
            break;
        case 1:
            check_opt_info(&r);
            break;
        case 2:
            check_opt_meta(&r);
            break;
        case 3:
            check_extents(&r);
            break;
        case 4: {
            /* errno values, either sign (callers pass -errno). */
            int err = (int)(take(&r, 2) % 4096) * (take(&r, 1) & 1 ? -1 : 1);
            uint16_t flags = (uint16_t)take(&r, 2);
            uint32_t e = nbd_errno_to_nbd(err, flags);
            g_assert_true(e == 0 || e == NBD_EPERM || e == NBD_EIO || e == NBD_ENOMEM || e == NBD_EINVAL ||
                          e == NBD_ENOSPC || e == NBD_EOVERFLOW || e == NBD_ENOTSUP || e == NBD_ESHUTDOWN);
            g_assert_true((e == 0) == (err == 0));
            break;
        }
        }
    }
    return 0;
}

const FuzzTarget fuzz_target_nbd_wire = {
    .name = "nbd-wire",
    .one = nbd_wire_one,
};
