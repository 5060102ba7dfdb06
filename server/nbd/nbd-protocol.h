/* NBD wire constants, spelled as in reference/nbd-protocol.md.
 *
 * Only numbers live here; layouts are encoded and decoded in nbd-wire.c. */
#pragma once

#include <stdint.h>

#define NBD_MAGIC                   UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_IHAVEOPT                UINT64_C(0x49484156454F5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC               UINT64_C(0x0003e889045565a9)
#define NBD_REQUEST_MAGIC           UINT32_C(0x25609513)
#define NBD_EXTENDED_REQUEST_MAGIC  UINT32_C(0x21e41c71)
#define NBD_SIMPLE_REPLY_MAGIC      UINT32_C(0x67446698)
#define NBD_STRUCTURED_REPLY_MAGIC  UINT32_C(0x668e33ef)
#define NBD_EXTENDED_REPLY_MAGIC    UINT32_C(0x6e8a278c)

/* Handshake flags (server) and client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE     (1u << 0)
#define NBD_FLAG_NO_ZEROES          (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_C_NO_ZEROES        (1u << 1)

/* Options. */
#define NBD_OPT_EXPORT_NAME         1
#define NBD_OPT_ABORT               2
#define NBD_OPT_LIST                3
#define NBD_OPT_PEEK_EXPORT         4
#define NBD_OPT_STARTTLS            5
#define NBD_OPT_INFO                6
#define NBD_OPT_GO                  7
#define NBD_OPT_STRUCTURED_REPLY    8
#define NBD_OPT_LIST_META_CONTEXT   9
#define NBD_OPT_SET_META_CONTEXT    10
#define NBD_OPT_EXTENDED_HEADERS    11

/* Option reply types. */
#define NBD_REP_ACK                 UINT32_C(1)
#define NBD_REP_SERVER              UINT32_C(2)
#define NBD_REP_INFO                UINT32_C(3)
#define NBD_REP_META_CONTEXT        UINT32_C(4)
#define NBD_REP_ERR_UNSUP           UINT32_C(0x80000001)
#define NBD_REP_ERR_POLICY          UINT32_C(0x80000002)
#define NBD_REP_ERR_INVALID         UINT32_C(0x80000003)
#define NBD_REP_ERR_PLATFORM        UINT32_C(0x80000004)
#define NBD_REP_ERR_TLS_REQD        UINT32_C(0x80000005)
#define NBD_REP_ERR_UNKNOWN         UINT32_C(0x80000006)
#define NBD_REP_ERR_SHUTDOWN        UINT32_C(0x80000007)
#define NBD_REP_ERR_BLOCK_SIZE_REQD UINT32_C(0x80000008)
#define NBD_REP_ERR_TOO_BIG         UINT32_C(0x80000009)
#define NBD_REP_ERR_EXT_HEADER_REQD UINT32_C(0x8000000a)

/* Info types. */
#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS          (1u << 0)
#define NBD_FLAG_READ_ONLY          (1u << 1)
#define NBD_FLAG_SEND_FLUSH         (1u << 2)
#define NBD_FLAG_SEND_FUA           (1u << 3)
#define NBD_FLAG_ROTATIONAL         (1u << 4)
#define NBD_FLAG_SEND_TRIM          (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES  (1u << 6)
#define NBD_FLAG_SEND_DF            (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN     (1u << 8)
#define NBD_FLAG_SEND_RESIZE        (1u << 9)
#define NBD_FLAG_SEND_CACHE         (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO     (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* Commands. */
#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_CACHE               5
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_BLOCK_STATUS        7
#define NBD_CMD_RESIZE              8

/* Command flags. */
#define NBD_CMD_FLAG_FUA            (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1u << 1)
#define NBD_CMD_FLAG_DF             (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE        (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO      (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN    (1u << 5)

/* Reply chunk flags and types. */
#define NBD_REPLY_FLAG_DONE         (1u << 0)
#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR        0x8001
#define NBD_REPLY_TYPE_ERROR_OFFSET 0x8002

/* base:allocation states. */
#define NBD_STATE_HOLE              (1u << 0)
#define NBD_STATE_ZERO              (1u << 1)

/* Error numbers. */
#define NBD_EPERM                   1
#define NBD_EIO                     5
#define NBD_ENOMEM                  12
#define NBD_EINVAL                  22
#define NBD_ENOSPC                  28
#define NBD_EOVERFLOW               75
#define NBD_ENOTSUP                 95
#define NBD_ESHUTDOWN               108

/* Limits. */
#define NBD_MAX_STRING              4096
#define NBD_MAX_PAYLOAD_DEFAULT     (32u * 1024 * 1024)
/* WRITE payloads up to this are drained and refused; larger ones disconnect. */
#define NBD_MAX_PAYLOAD_DRAIN       (64u * 1024 * 1024)
/* Option data above this disconnects (largest legal option is far smaller). */
#define NBD_MAX_OPTION_LENGTH       (8u * 1024 * 1024)
/* Option data held in memory at most (16 meta context queries of the
 * longest string); longer options are read, dropped and refused. */
#define NBD_MAX_OPTION_BUFFER       (64u * 1024)
/* Most block-status descriptors in one chunk. */
#define NBD_MAX_EXTENTS             (1u << 20)
