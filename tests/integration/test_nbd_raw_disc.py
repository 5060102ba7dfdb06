#!/usr/bin/python3
"""NBD_CMD_DISC with requests in flight: every request sent before the DISC
still gets its reply, then the server closes the connection."""

import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_nbd_raw_lib import *  # noqa: E402,F403

KiB = 1024


def disc_after_burst(d, structured):
    c = Client(d.sock)
    c.negotiate(structured=structured)
    burst = bytearray()
    expected = {}
    read_lengths = {}
    for i in range(24):
        payload = bytes([i + 1]) * (256 * KiB)
        burst += c.request(CMD_WRITE, 1000 + i, i * 256 * KiB, len(payload), payload=payload)
        expected[1000 + i] = None
    for i in range(24):
        burst += c.request(CMD_READ, 2000 + i, (40 << 20) + i * 64 * KiB, 64 * KiB)
        expected[2000 + i] = bytes(64 * KiB)
        read_lengths[2000 + i] = 64 * KiB
    burst += c.request(CMD_FLUSH, 3000)
    expected[3000] = None
    burst += c.request(CMD_DISC, 4000)

    # Send from a thread so neither side can block the other.
    sender = threading.Thread(target=c.send, args=(bytes(burst),))
    sender.start()
    seen = set()
    while len(seen) < len(expected):
        cookie, error, data, _ = c.read_reply(read_lengths)
        check(cookie in expected, "reply for unknown cookie %d" % cookie)
        check(cookie not in seen, "two replies for cookie %d" % cookie)
        check(error == 0, "request %d failed with %d" % (cookie, error))
        if expected[cookie] is not None:
            check(data == expected[cookie], "wrong data for read %d" % cookie)
        seen.add(cookie)
    sender.join()
    check(c.at_eof(), "server kept the connection open after DISC")
    c.close()

    # The writes really happened.
    v = Client(d.sock)
    v.negotiate()
    for i in (0, 11, 23):
        err, data, _ = v.call(CMD_READ, i * 256 * KiB, 256 * KiB, cookie=i + 1)
        check(err == 0 and data == bytes([i + 1]) * (256 * KiB), "write %d lost" % i)
    v.disconnect()


def body(d):
    disc_after_burst(d, structured=True)
    disc_after_burst(d, structured=False)
    check_healthy(d)


sys.exit(run(body))
