#!/usr/bin/python3
"""Extended headers (NBD_OPT_EXTENDED_HEADERS): 32-byte requests and
replies, 64-bit effect lengths, BLOCK_STATUS_EXT, and no EXPORT_NAME.

No installed client speaks extended headers, so this is our own client."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_nbd_raw_lib import *  # noqa: E402,F403

GiB = 1 << 30
SIZE = 8 * GiB


def parse_status_ext(chunks, ids):
    """{context id: [(length, status), ...]} from BLOCK_STATUS_EXT chunks."""
    out = {}
    for rtype, payload, hoff in chunks:
        check(rtype == TYPE_BLOCK_STATUS_EXT, "chunk type %d, expected BLOCK_STATUS_EXT" % rtype)
        ctx, count = struct.unpack(">II", payload[:8])
        check(count >= 1 and len(payload) == 8 + 16 * count, "bad BLOCK_STATUS_EXT length")
        descs = [struct.unpack(">QQ", payload[8 + 16 * i:24 + 16 * i]) for i in range(count)]
        check(all(length > 0 for length, _ in descs), "zero-length extent")
        check(all(descs[i][1] != descs[i + 1][1] for i in range(count - 1)), "extents not coalesced")
        out[ctx] = descs
    check(set(out) == set(ids.values()), "one chunk per selected context expected, got %r" % out.keys())
    return out


def negotiation_rules(d):
    c = Client(d.sock)
    c.greeting()
    rep = c.option(OPT_EXTENDED_HEADERS, b"x")
    check(rep[-1][0] == REP_ERR_INVALID, "EXTENDED_HEADERS with data accepted")
    rep = c.option(OPT_EXTENDED_HEADERS)
    check(rep[-1][0] == REP_ACK, "EXTENDED_HEADERS refused")
    rep = c.option(OPT_STRUCTURED_REPLY)
    check(rep[-1][0] == REP_ERR_EXT_HEADER_REQD, "downgrade to structured replies: %#x" % rep[-1][0])
    # EXPORT_NAME is forbidden once extended headers are on: the server hangs up.
    c.send_option(OPT_EXPORT_NAME, b"disk0")
    check(c.at_eof(), "EXPORT_NAME accepted after EXTENDED_HEADERS")
    c.close()


def transmission(d):
    c = Client(d.sock)
    ids = c.negotiate(extended=True, contexts=["base:allocation"])
    check(c.size == SIZE, "size %d, expected %d" % (c.size, SIZE))
    check("base:allocation" in ids and ids["base:allocation"] != 0, "no context id: %r" % ids)

    # WRITE with PAYLOAD_LEN, READ back: extended chunk echoing the offset.
    data = os.urandom(65536)
    err, _, chunks = c.call(CMD_WRITE, 5 * GiB, len(data), payload=data)
    check(err == 0, "write failed: %d" % err)
    check(chunks and chunks[-1][0] == TYPE_NONE and chunks[-1][2] == 5 * GiB,
          "write reply is not a NONE chunk echoing the offset: %r" % chunks)
    err, back, chunks = c.call(CMD_READ, 5 * GiB, len(data), cookie=2)
    check(err == 0 and back == data, "read-back mismatch")
    check(all(hoff == 5 * GiB for _, _, hoff in chunks), "read chunk offset not echoed")

    # BLOCK_STATUS over the whole 8 GiB (a 64-bit length).
    err, _, chunks = c.call(CMD_BLOCK_STATUS, 0, SIZE, cookie=3)
    check(err == 0, "block status failed: %d" % err)
    descs = parse_status_ext(chunks, ids)[ids["base:allocation"]]
    check(sum(length for length, _ in descs) <= SIZE, "extents run past the request")
    pos = 0
    for length, status in descs:
        if pos <= 5 * GiB < pos + length:
            check(status & 1 == 0, "written range reported as a hole")
        pos += length
    check(pos > 5 * GiB, "extents stop before the written range")

    # REQ_ONE: one descriptor, not longer than the request.
    err, _, chunks = c.call(CMD_BLOCK_STATUS, 0, 6 * GiB, FLAG_REQ_ONE, cookie=4)
    descs = parse_status_ext(chunks, ids)[ids["base:allocation"]]
    check(err == 0 and len(descs) == 1 and descs[0][0] <= 6 * GiB, "REQ_ONE reply %r" % descs)

    # WRITE_ZEROES and TRIM with lengths above 4 GiB.
    err, _, _ = c.call(CMD_WRITE_ZEROES, GiB, 5 * GiB, cookie=5)
    check(err == 0, "5 GiB write zeroes failed: %d" % err)
    err, back, _ = c.call(CMD_READ, 5 * GiB, 4096, cookie=6)
    check(err == 0 and back == bytes(4096), "zeroed range does not read as zeroes")
    err, _, _ = c.call(CMD_TRIM, 0, SIZE, cookie=7)
    check(err == 0, "8 GiB trim failed: %d" % err)
    err, _, _ = c.call(CMD_TRIM, GiB, SIZE, cookie=8)
    check(err == EINVAL, "trim past the end: %d" % err)

    # Errors come as extended ERROR chunks.
    err, _, chunks = c.call(CMD_READ, SIZE, 512, cookie=9)
    check(err == EINVAL and chunks[-1][0] == TYPE_ERROR, "read past end: %d %r" % (err, chunks))
    # A payload on a command without a payload form: consumed, EINVAL.
    err, _, _ = c.call(CMD_BLOCK_STATUS, 0, 12, FLAG_PAYLOAD_LEN, b"\0" * 12, cookie=10)
    check(err == EINVAL, "block status with a payload: %d" % err)
    err, _, _ = c.call(CMD_FLUSH, cookie=11)
    check(err == 0, "flush after a payload: %d" % err)

    # A compact request magic is a framing error now (pad to 32 bytes so the
    # server has a whole header to reject).
    c.send(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, 12, 0, 512) + bytes(4))
    check(c.at_eof(), "compact request accepted after extended headers")
    c.close()


def body(d):
    negotiation_rules(d)
    transmission(d)
    check_healthy(d)


sys.exit(run(body, size="8G"))
