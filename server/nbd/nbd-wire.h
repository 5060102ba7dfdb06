/* Pure encoders, decoders and validators of NBD messages.
 *
 * Nothing here does I/O or touches an export: every function works on byte
 * buffers and plain structs, so the unit tests can feed it malformed input. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include "block/node.h"
#include "server/nbd/nbd-protocol.h"

static inline void nbd_put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void nbd_put32(uint8_t *p, uint32_t v) { nbd_put16(p, v >> 16); nbd_put16(p + 2, v); }
static inline void nbd_put64(uint8_t *p, uint64_t v) { nbd_put32(p, v >> 32); nbd_put32(p + 4, v); }
static inline uint16_t nbd_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t nbd_get32(const uint8_t *p) { return (uint32_t)nbd_get16(p) << 16 | nbd_get16(p + 2); }
static inline uint64_t nbd_get64(const uint8_t *p) { return (uint64_t)nbd_get32(p) << 32 | nbd_get32(p + 4); }

/* ---- Options ---- */

/* The data of NBD_OPT_INFO / NBD_OPT_GO. */
typedef struct NbdOptInfoRequest {
    char *name;              /* NUL-terminated copy of the export name */
    bool want_name;
    bool want_description;
    bool want_block_size;
} NbdOptInfoRequest;

/* Parses INFO/GO data strictly (§3.5); false with a reason on malformed data. */
bool nbd_parse_opt_info(const uint8_t *data, size_t len, NbdOptInfoRequest *out, const char **why);
/* Frees what nbd_parse_opt_info allocated. */
void nbd_opt_info_request_clear(NbdOptInfoRequest *req);

/* The data of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT. */
typedef struct NbdOptMetaRequest {
    char *name;              /* export name */
    GPtrArray *queries;      /* char *, NUL-terminated */
} NbdOptMetaRequest;

/* Parses META_CONTEXT data (§3.7); false with a reason if any length runs past the data. */
bool nbd_parse_opt_meta_context(const uint8_t *data, size_t len, NbdOptMetaRequest *out, const char **why);
/* Frees what nbd_parse_opt_meta_context allocated. */
void nbd_opt_meta_request_clear(NbdOptMetaRequest *req);
/* Whether `query` picks `context`: exact name, or for LIST a query ending in ':' as a prefix. */
bool nbd_meta_query_matches(const char *query, const char *context, bool for_list);

/* ---- Transmission flags and block sizes ---- */

/* The transmission flags for an export with these capabilities (§5). */
uint16_t nbd_compute_eflags(const NodeCaps *caps, bool read_only, bool structured);
/* The block size constraints to advertise: the node's, clamped to what we can buffer. */
void nbd_compute_block_sizes(const NodeCaps *caps, uint32_t *min, uint32_t *preferred, uint32_t *max);

/* ---- Requests ---- */

#define NBD_REQUEST_SIZE          28
#define NBD_EXTENDED_REQUEST_SIZE 32

typedef struct NbdRequest {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint64_t length;         /* effect length, or payload length with PAYLOAD_LEN */
} NbdRequest;

/* Decodes a 28-byte (compact) or 32-byte (extended) header; false on bad magic. */
bool nbd_parse_request(const uint8_t *buf, bool extended, NbdRequest *req);
/* Bytes of payload that follow the header on the wire (framing, before any validation). */
uint64_t nbd_request_payload_length(const NbdRequest *req, bool extended);

/* What request validation needs to know about the connection. */
typedef struct NbdValidateContext {
    uint64_t size;
    uint16_t eflags;
    bool structured;         /* structured replies or extended headers */
    bool extended;
    bool has_meta_contexts;  /* a context is selected for this export */
    uint32_t min_block;
    uint32_t max_payload;
} NbdValidateContext;

/* The NBD error for a request (0 = valid), checked in the order of §6.3. */
uint32_t nbd_validate_request(const NbdValidateContext *ctx, const NbdRequest *req, const char **why);
/* Maps an errno (either sign) to an NBD error as in §11; cmd_flags decide EOVERFLOW/ENOTSUP. */
uint32_t nbd_errno_to_nbd(int err, uint16_t cmd_flags);
/* A short name for a command type, for messages. */
const char *nbd_cmd_name(uint16_t type);

/* ---- Replies ---- */

#define NBD_SIMPLE_REPLY_SIZE   16
#define NBD_CHUNK_HEADER_SIZE   20
#define NBD_EXTENDED_REPLY_SIZE 32

/* Writes a simple reply header; returns 16. */
size_t nbd_encode_simple_reply(uint8_t *buf, uint32_t error, uint64_t cookie);
/* Writes a structured (20 bytes) or extended (32 bytes) chunk header; returns its size. */
size_t nbd_encode_chunk_header(uint8_t *buf, bool extended, uint16_t flags, uint16_t type,
                               uint64_t cookie, uint64_t offset, uint64_t payload_length);

/* Builds block-status descriptors from consecutive extents (§8.1): clipped to
 * the request, coalesced, lengths > 0, at most `max` of them. */
typedef struct NbdExtentEncoder {
    uint8_t *out;            /* descriptor area: 8 (compact) or 16 (extended) bytes each */
    bool extended;
    bool req_one;
    uint64_t pos;            /* next offset to describe */
    uint64_t end;            /* request end */
    size_t count;
    size_t max;
    uint32_t last_type;
} NbdExtentEncoder;

/* Starts an encoder writing into out (room for max descriptors). */
void nbd_extent_encoder_init(NbdExtentEncoder *enc, uint8_t *out, bool extended, uint64_t offset,
                             uint64_t length, bool req_one, size_t max);
/* Adds the next extent; false once the encoder wants no more. */
bool nbd_extent_encoder_add(NbdExtentEncoder *enc, uint64_t length, uint32_t type);
/* Bytes of descriptors written. */
size_t nbd_extent_encoder_bytes(const NbdExtentEncoder *enc);
