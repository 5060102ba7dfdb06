/* Pure encoders, decoders and validators of NBD messages (see nbd-wire.h). */
#include "server/nbd/nbd-wire.h"

#include <errno.h>
#include <string.h>

/* Copies a wire string into a NUL-terminated one; false if too long or has NUL. */
static bool copy_wire_string(const uint8_t *p, size_t len, char **out, const char **why)
{
    if (len > NBD_MAX_STRING) {
        *why = "string longer than 4096 bytes";
        return false;
    }
    if (len && memchr(p, 0, len)) {
        *why = "string contains NUL";
        return false;
    }
    *out = g_strndup((const char *)p, len);
    return true;
}

bool nbd_parse_opt_info(const uint8_t *data, size_t len, NbdOptInfoRequest *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len < 6) {
        *why = "option data shorter than 6 bytes";
        return false;
    }
    uint32_t name_len = nbd_get32(data);
    if (name_len > len - 6) {
        *why = "export name length runs past the option data";
        return false;
    }
    uint16_t nr_info = nbd_get16(data + 4 + name_len);
    if (len != 4 + (size_t)name_len + 2 + 2 * (size_t)nr_info) {
        *why = "option length does not match the number of info requests";
        return false;
    }
    if (!copy_wire_string(data + 4, name_len, &out->name, why))
        return false;
    const uint8_t *infos = data + 6 + name_len;
    for (unsigned i = 0; i < nr_info; i++) {
        switch (nbd_get16(infos + 2 * i)) {
        case NBD_INFO_NAME: out->want_name = true; break;
        case NBD_INFO_DESCRIPTION: out->want_description = true; break;
        case NBD_INFO_BLOCK_SIZE: out->want_block_size = true; break;
        default: break; /* EXPORT is always sent; unknown types are ignored */
        }
    }
    return true;
}

void nbd_opt_info_request_clear(NbdOptInfoRequest *req)
{
    g_clear_pointer(&req->name, g_free);
}

bool nbd_parse_opt_meta_context(const uint8_t *data, size_t len, NbdOptMetaRequest *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len < 8) {
        *why = "option data shorter than 8 bytes";
        return false;
    }
    uint32_t name_len = nbd_get32(data);
    if (name_len > len - 8) {
        *why = "export name length runs past the option data";
        return false;
    }
    if (!copy_wire_string(data + 4, name_len, &out->name, why))
        return false;
    size_t pos = 4 + (size_t)name_len;
    uint32_t nr_queries = nbd_get32(data + pos);
    pos += 4;
    out->queries = g_ptr_array_new_with_free_func(g_free);
    for (uint32_t i = 0; i < nr_queries; i++) {
        if (len - pos < 4) {
            *why = "query count runs past the option data";
            goto fail;
        }
        uint32_t qlen = nbd_get32(data + pos);
        pos += 4;
        if (qlen > len - pos) {
            *why = "query length runs past the option data";
            goto fail;
        }
        char *query;
        if (!copy_wire_string(data + pos, qlen, &query, why))
            goto fail;
        g_ptr_array_add(out->queries, query);
        pos += qlen;
    }
    if (pos != len) {
        *why = "trailing bytes after the last query";
        goto fail;
    }
    return true;

fail:
    nbd_opt_meta_request_clear(out);
    return false;
}

void nbd_opt_meta_request_clear(NbdOptMetaRequest *req)
{
    g_clear_pointer(&req->name, g_free);
    g_clear_pointer(&req->queries, g_ptr_array_unref);
}

bool nbd_meta_query_matches(const char *query, const char *context, bool for_list)
{
    size_t qlen = strlen(query);
    /* A query must name a namespace: "ns:..." with a non-empty ns. */
    const char *colon = strchr(query, ':');
    if (!colon || colon == query)
        return false;
    if (query[qlen - 1] == ':')
        return for_list && strncmp(query, context, qlen) == 0;
    return strcmp(query, context) == 0;
}

uint16_t nbd_compute_eflags(const NodeCaps *caps, bool read_only, bool structured)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS;
    if (read_only)
        f |= NBD_FLAG_READ_ONLY;
    if (caps->can_flush)
        f |= NBD_FLAG_SEND_FLUSH;
    if (!read_only && caps->fua != BLOCK_SUPPORT_NONE)
        f |= NBD_FLAG_SEND_FUA;
    if (caps->is_rotational)
        f |= NBD_FLAG_ROTATIONAL;
    if (!read_only && caps->can_trim)
        f |= NBD_FLAG_SEND_TRIM;
    if (!read_only && caps->can_zero) {
        f |= NBD_FLAG_SEND_WRITE_ZEROES;
        if (caps->can_fast_zero)
            f |= NBD_FLAG_SEND_FAST_ZERO;
    }
    if (structured)
        f |= NBD_FLAG_SEND_DF;
    if (caps->can_multi_conn || read_only)
        f |= NBD_FLAG_CAN_MULTI_CONN;
    if (caps->cache != BLOCK_SUPPORT_NONE)
        f |= NBD_FLAG_SEND_CACHE;
    return f;
}

static bool is_power_of_2(uint32_t v)
{
    return v && !(v & (v - 1));
}

void nbd_compute_block_sizes(const NodeCaps *caps, uint32_t *min, uint32_t *preferred, uint32_t *max)
{
    uint32_t mn = caps->block_min, pr = caps->block_preferred, mx = caps->block_max;
    if (!is_power_of_2(mn) || mn > 65536)
        mn = 1;
    if (!is_power_of_2(pr) || pr < mn)
        pr = MAX(4096u, mn);
    if (mx == 0 || mx > NBD_MAX_PAYLOAD_DEFAULT)
        mx = NBD_MAX_PAYLOAD_DEFAULT;
    mx -= mx % mn;
    if (mx < pr)
        mx = MAX(pr, mn);
    if (pr > mx)
        pr = mx;
    *min = mn;
    *preferred = pr;
    *max = mx;
}

bool nbd_parse_request(const uint8_t *buf, bool extended, NbdRequest *req)
{
    uint32_t magic = nbd_get32(buf);
    if (magic != (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC))
        return false;
    req->flags = nbd_get16(buf + 4);
    req->type = nbd_get16(buf + 6);
    req->cookie = nbd_get64(buf + 8);
    req->offset = nbd_get64(buf + 16);
    req->length = extended ? nbd_get64(buf + 24) : nbd_get32(buf + 24);
    return true;
}

uint64_t nbd_request_payload_length(const NbdRequest *req, bool extended)
{
    /* A WRITE always carries `length` bytes; with extended headers that is
     * true whether or not the client remembered PAYLOAD_LEN. */
    if (req->type == NBD_CMD_WRITE)
        return req->length;
    if (extended && (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN))
        return req->length;
    return 0;
}

static bool is_write_type(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM || type == NBD_CMD_WRITE_ZEROES;
}

static bool has_range(uint16_t type)
{
    return type == NBD_CMD_READ || is_write_type(type) || type == NBD_CMD_CACHE ||
           type == NBD_CMD_BLOCK_STATUS;
}

/* The flags each command accepts, FUA aside. */
static uint16_t own_flags(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ: return NBD_CMD_FLAG_DF;
    case NBD_CMD_WRITE_ZEROES: return NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS: return NBD_CMD_FLAG_REQ_ONE;
    default: return 0;
    }
}

#define REJECT(err, msg) do { *why = (msg); return (err); } while (0)

uint32_t nbd_validate_request(const NbdValidateContext *ctx, const NbdRequest *req, const char **why)
{
    uint16_t t = req->type;
    *why = NULL;

    /* 1. unknown command (DISC never reaches validation; RESIZE is not offered) */
    if (t > NBD_CMD_BLOCK_STATUS || t == NBD_CMD_DISC)
        REJECT(NBD_EINVAL, "unknown command");
    /* A payload on a command that has no payload form (we offer none but WRITE). */
    if (ctx->extended && (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) && t != NBD_CMD_WRITE)
        REJECT(NBD_EINVAL, "payload not supported for this command");
    /* 2. writes on a read-only export */
    if (is_write_type(t) && (ctx->eflags & NBD_FLAG_READ_ONLY))
        REJECT(NBD_EPERM, "export is read-only");
    /* 3. range */
    if (has_range(t)) {
        if (req->length == 0)
            REJECT(NBD_EINVAL, "zero-length request");
        if (req->offset > ctx->size || req->length > ctx->size - req->offset) {
            if (t == NBD_CMD_WRITE || t == NBD_CMD_WRITE_ZEROES)
                REJECT(NBD_ENOSPC, "request past the end of the export");
            REJECT(NBD_EINVAL, "request past the end of the export");
        }
    }
    /* 4. flush takes no range */
    if (t == NBD_CMD_FLUSH && (req->offset || req->length))
        REJECT(NBD_EINVAL, "flush with nonzero offset or length");
    /* 5. flags */
    uint16_t known = NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_DF |
                     NBD_CMD_FLAG_REQ_ONE | NBD_CMD_FLAG_FAST_ZERO;
    uint16_t flags = req->flags;
    if (ctx->extended && t == NBD_CMD_WRITE)
        flags &= ~NBD_CMD_FLAG_PAYLOAD_LEN;
    if (flags & ~known)
        REJECT(NBD_EINVAL, "unknown command flags");
    if (flags & ~(own_flags(t) | NBD_CMD_FLAG_FUA))
        REJECT(NBD_EINVAL, "flag not valid for this command");
    if ((flags & NBD_CMD_FLAG_DF) && !ctx->structured)
        REJECT(NBD_EINVAL, "DF without structured replies");
    if ((flags & NBD_CMD_FLAG_FUA) && !(ctx->eflags & NBD_FLAG_SEND_FUA))
        REJECT(NBD_EINVAL, "FUA not supported");
    if ((flags & NBD_CMD_FLAG_FAST_ZERO) && !(ctx->eflags & NBD_FLAG_SEND_FAST_ZERO))
        REJECT(NBD_EINVAL, "FAST_ZERO not supported");
    /* 6. payload size */
    if ((t == NBD_CMD_READ || t == NBD_CMD_WRITE) && req->length > ctx->max_payload) {
        if (t == NBD_CMD_READ && (flags & NBD_CMD_FLAG_DF))
            REJECT(NBD_EOVERFLOW, "read too large for DF");
        REJECT(NBD_EINVAL, "request larger than the maximum payload");
    }
    /* 7. commands not advertised */
    if (t == NBD_CMD_FLUSH && !(ctx->eflags & NBD_FLAG_SEND_FLUSH))
        REJECT(NBD_EINVAL, "flush not supported");
    if (t == NBD_CMD_TRIM && !(ctx->eflags & NBD_FLAG_SEND_TRIM))
        REJECT(NBD_EINVAL, "trim not supported");
    if (t == NBD_CMD_WRITE_ZEROES && !(ctx->eflags & NBD_FLAG_SEND_WRITE_ZEROES))
        REJECT(NBD_EINVAL, "write zeroes not supported");
    if (t == NBD_CMD_CACHE && !(ctx->eflags & NBD_FLAG_SEND_CACHE))
        REJECT(NBD_EINVAL, "cache not supported");
    /* 8. block status needs a selected context */
    if (t == NBD_CMD_BLOCK_STATUS && (!ctx->structured || !ctx->has_meta_contexts))
        REJECT(NBD_EINVAL, "no meta context selected");
    /* 9. alignment */
    uint64_t mask = ctx->min_block - 1;
    if (ctx->min_block > 1 && has_range(t) &&
        ((req->offset & mask) || ((req->length & mask) && req->offset + req->length != ctx->size)))
        REJECT(NBD_EINVAL, "request not aligned to the minimum block size");
    return 0;
}

uint32_t nbd_errno_to_nbd(int err, uint16_t cmd_flags)
{
    switch (err < 0 ? -err : err) {
    case 0: return 0;
    case EPERM: case EROFS: return NBD_EPERM;
    case EIO: return NBD_EIO;
    case ENOMEM: return NBD_ENOMEM;
    case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
    case EOVERFLOW: return (cmd_flags & NBD_CMD_FLAG_DF) ? NBD_EOVERFLOW : NBD_EINVAL;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return (cmd_flags & NBD_CMD_FLAG_FAST_ZERO) ? NBD_ENOTSUP : NBD_EINVAL;
    case ESHUTDOWN: return NBD_ESHUTDOWN;
    default: return NBD_EINVAL;
    }
}

const char *nbd_cmd_name(uint16_t type)
{
    static const char *const names[] = {
        "read", "write", "disc", "flush", "trim", "cache", "write_zeroes", "block_status",
    };
    return type < G_N_ELEMENTS(names) ? names[type] : "unknown";
}

size_t nbd_encode_simple_reply(uint8_t *buf, uint32_t error, uint64_t cookie)
{
    nbd_put32(buf, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(buf + 4, error);
    nbd_put64(buf + 8, cookie);
    return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_encode_chunk_header(uint8_t *buf, bool extended, uint16_t flags, uint16_t type,
                               uint64_t cookie, uint64_t offset, uint64_t payload_length)
{
    nbd_put16(buf + 4, flags);
    nbd_put16(buf + 6, type);
    nbd_put64(buf + 8, cookie);
    if (extended) {
        nbd_put32(buf, NBD_EXTENDED_REPLY_MAGIC);
        nbd_put64(buf + 16, offset);
        nbd_put64(buf + 24, payload_length);
        return NBD_EXTENDED_REPLY_SIZE;
    }
    nbd_put32(buf, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put32(buf + 16, (uint32_t)payload_length);
    return NBD_CHUNK_HEADER_SIZE;
}

void nbd_extent_encoder_init(NbdExtentEncoder *enc, uint8_t *out, bool extended, uint64_t offset,
                             uint64_t length, bool req_one, size_t max)
{
    *enc = (NbdExtentEncoder){
        .out = out, .extended = extended, .req_one = req_one,
        .pos = offset, .end = offset + length, .max = max,
    };
}

static uint8_t *descriptor(NbdExtentEncoder *enc, size_t i)
{
    return enc->out + i * (enc->extended ? 16 : 8);
}

static void write_descriptor(NbdExtentEncoder *enc, size_t i, uint64_t length, uint32_t type)
{
    uint8_t *d = descriptor(enc, i);
    if (enc->extended) {
        nbd_put64(d, length);
        nbd_put64(d + 8, type);
    } else {
        nbd_put32(d, (uint32_t)length);
        nbd_put32(d + 4, type);
    }
}

static uint64_t read_descriptor_length(NbdExtentEncoder *enc, size_t i)
{
    uint8_t *d = descriptor(enc, i);
    return enc->extended ? nbd_get64(d) : nbd_get32(d);
}

bool nbd_extent_encoder_add(NbdExtentEncoder *enc, uint64_t length, uint32_t type)
{
    if (enc->pos >= enc->end)
        return false;
    if (length == 0)
        return true;
    /* Clip to the request: compact descriptors are 32 bits and so are compact
     * request lengths, so a clipped descriptor always fits. */
    if (length > enc->end - enc->pos)
        length = enc->end - enc->pos;
    if (enc->count > 0 && enc->last_type == type) {
        uint64_t merged = read_descriptor_length(enc, enc->count - 1) + length;
        write_descriptor(enc, enc->count - 1, merged, type);
    } else {
        if (enc->count == enc->max || (enc->req_one && enc->count == 1)) {
            enc->end = enc->pos; /* full: stop here */
            return false;
        }
        write_descriptor(enc, enc->count++, length, type);
        enc->last_type = type;
    }
    enc->pos += length;
    return enc->pos < enc->end;
}

size_t nbd_extent_encoder_bytes(const NbdExtentEncoder *enc)
{
    return enc->count * (enc->extended ? 16 : 8);
}
