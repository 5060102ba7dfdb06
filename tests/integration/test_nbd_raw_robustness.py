#!/usr/bin/python3
"""Misbehaving NBD clients must not hurt the daemon or other clients.

Each case below sends something wrong over a raw socket; after each one a
fresh well-behaved client must still write and read back data."""

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_nbd_raw_lib import *  # noqa: E402,F403


def garbage_flags(d):
    c = Client(d.sock)
    c.greeting(cflags=None)
    c.send(b"\xde\xad\xbe\xef" + os.urandom(1000))
    check(c.at_eof(), "server kept a client that sent garbage flags")
    c.close()


def unknown_client_flags(d):
    c = Client(d.sock)
    c.greeting(cflags=0x7)  # bit 2 is unknown
    check(c.at_eof(), "server accepted unknown client flags")
    c.close()


def hangup_during_greeting(d):
    c = Client(d.sock)
    c.recv_exact(5)
    c.close()


def option_longer_than_data(d):
    c = Client(d.sock)
    c.greeting()
    c.send(struct.pack(">QII", IHAVEOPT, OPT_GO, 1000) + b"\0\0\0\0disk0")
    c.close()


def option_length_absurd(d):
    c = Client(d.sock)
    c.greeting()
    c.send(struct.pack(">QII", IHAVEOPT, OPT_INFO, 0xFFFFFFFF))
    check(c.at_eof(), "server waited for 4 GiB of option data")
    c.close()


def bad_option_magic(d):
    c = Client(d.sock)
    c.greeting()
    c.send(struct.pack(">QII", 0x1122334455667788, OPT_LIST, 0))
    check(c.at_eof(), "server accepted an option with bad magic")
    c.close()


def many_unknown_options(d):
    c = Client(d.sock)
    c.greeting()
    answered = 0
    try:
        for i in range(1000):
            c.send_option(1000 + i, b"x" * (i % 7))
            rtype, msg = c.read_option_reply(1000 + i)
            check(rtype == REP_ERR_UNSUP, "unknown option got %#x" % rtype)
            answered += 1
    except (EOFError, ConnectionResetError, BrokenPipeError):
        pass  # the option-count cap closed the connection: fine
    check(answered >= 50, "only %d unknown options were answered" % answered)
    c.close()


def malformed_options(d):
    """Malformed options get NBD_REP_ERR_INVALID and the session goes on."""
    c = Client(d.sock)
    c.greeting()
    rep = c.option(OPT_LIST, b"junk")
    check(rep[-1][0] == REP_ERR_INVALID, "LIST with data: %#x" % rep[-1][0])
    rep = c.option(OPT_GO, struct.pack(">I", 100) + b"disk0\0\0")
    check(rep[-1][0] == REP_ERR_INVALID, "GO with a lying name length: %#x" % rep[-1][0])
    rep = c.option(OPT_GO, struct.pack(">I", 5) + b"disk0" + struct.pack(">H", 3) + b"\0\1")
    check(rep[-1][0] == REP_ERR_INVALID, "GO with a lying info count: %#x" % rep[-1][0])
    rep = c.option(OPT_SET_META_CONTEXT, meta_data(b"disk0", ["base:allocation"]))
    check(rep[-1][0] == REP_ERR_INVALID, "SET_META_CONTEXT before structured replies accepted")
    rep = c.option(OPT_STRUCTURED_REPLY)
    check(rep[-1][0] == REP_ACK, "STRUCTURED_REPLY refused")
    rep = c.option(OPT_STRUCTURED_REPLY)
    check(rep[-1][0] == REP_ERR_INVALID, "repeated STRUCTURED_REPLY accepted")
    rep = c.option(OPT_LIST_META_CONTEXT, struct.pack(">I", 5) + b"disk0" + struct.pack(">I", 9))
    check(rep[-1][0] == REP_ERR_INVALID, "LIST_META_CONTEXT with a lying query count accepted")
    rep = c.option(OPT_INFO, struct.pack(">I", 7) + b"nothere" + struct.pack(">H", 0))
    check(rep[-1][0] == REP_ERR_UNKNOWN, "INFO for a missing export: %#x" % rep[-1][0])
    rep = c.option(OPT_STARTTLS)
    # TLS is built in but not configured on this server: NBD_REP_ERR_POLICY (§4 NOTLS).
    check(rep[-1][0] == 0x80000002, "STARTTLS: %#x" % rep[-1][0])
    # LIST: one NBD_REP_SERVER for disk0, then ACK.
    rep = c.option(OPT_LIST)
    check(rep[-1][0] == REP_ACK and rep[0][0] == REP_SERVER, "LIST failed: %r" % rep)
    n = struct.unpack(">I", rep[0][1][:4])[0]
    check(rep[0][1][4:4 + n] == b"disk0", "LIST did not name disk0")
    rep = c.option(OPT_ABORT)
    check(rep[-1][0] == REP_ACK, "ABORT not acked")
    check(c.at_eof(), "server kept the connection after ABORT")
    c.close()


def plain_newstyle(d):
    """A client without FIXED_NEWSTYLE may only use EXPORT_NAME."""
    c = Client(d.sock)
    c.greeting(cflags=0)
    rep = c.option(OPT_LIST)
    check(rep[-1][0] == REP_ERR_INVALID, "non-fixed client got LIST answered: %#x" % rep[-1][0])
    c.send_option(OPT_EXPORT_NAME, b"disk0")
    size, eflags = struct.unpack(">QH", c.recv_exact(10))
    check(size == 64 << 20 and eflags & 1, "EXPORT_NAME reply size %d flags %#x" % (size, eflags))
    c.recv_exact(124)  # no NO_ZEROES: the padding must be there
    err, data, _ = c.call(CMD_READ, 0, 512)
    check(err == 0 and len(data) == 512, "simple READ failed")
    c.disconnect()


def export_name_unknown(d):
    c = Client(d.sock)
    c.greeting()
    c.send_option(OPT_EXPORT_NAME, b"nothere")
    check(c.at_eof(), "EXPORT_NAME of a missing export did not disconnect")
    c.close()


def bad_request_magic(d):
    c = Client(d.sock)
    c.negotiate()
    c.send(struct.pack(">IHHQQI", 0x12560953, 0, CMD_READ, 1, 0, 512))
    check(c.at_eof(), "server accepted a request with bad magic")
    c.close()


def truncated_write(d):
    c = Client(d.sock)
    c.negotiate()
    c.send(c.request(CMD_WRITE, 1, 0, 65536) + b"\xaa" * 1000)
    c.close()


def disconnect_mid_request(d):
    c = Client(d.sock)
    c.negotiate()
    c.send(c.request(CMD_READ, 1, 0, 32 << 20) + c.request(CMD_READ, 2, 0, 32 << 20))
    c.send(c.request(CMD_READ, 3, 0, 1 << 20)[:10])
    c.close()


def validation_errors(d):
    """Requests the server must refuse without dropping the connection."""
    c = Client(d.sock)
    c.negotiate(contexts=["base:allocation"])
    size = c.size
    cases = [
        ("read past end", CMD_READ, size, 1, 0, EINVAL),
        ("write past end", CMD_WRITE, size - 1, 2, 0, ENOSPC),
        ("zero past end", CMD_WRITE_ZEROES, size, 512, 0, ENOSPC),
        ("trim past end", CMD_TRIM, size - 512, 1024, 0, EINVAL),
        ("unknown command", 99, 0, 512, 0, EINVAL),
        ("unknown flag", CMD_READ, 0, 512, 0x4000, EINVAL),
        ("REQ_ONE on read", CMD_READ, 0, 512, FLAG_REQ_ONE, EINVAL),
        ("flush with range", CMD_FLUSH, 0, 512, 0, EINVAL),
        ("read too large", CMD_READ, 0, 33 << 20, 0, EINVAL),
        ("read zero length", CMD_READ, 0, 0, 0, EINVAL),
    ]
    for i, (what, cmd, off, length, flags, want) in enumerate(cases):
        payload = bytes(length) if cmd == CMD_WRITE else b""
        err, _, _ = c.call(cmd, off, length, flags, payload, cookie=100 + i)
        check(err == want, "%s: error %d, expected %d" % (what, err, want))
    # An oversize write (33 MiB) is drained and refused...
    err, _, _ = c.call(CMD_WRITE, 0, 33 << 20, payload=bytes(33 << 20), cookie=200)
    check(err == EINVAL, "33 MiB write: error %d, expected EINVAL" % err)
    err, data, _ = c.call(CMD_READ, 0, 4096, cookie=201)
    check(err == 0 and len(data) == 4096, "connection unusable after an oversize write")
    # ...an absurd one (1 GiB) disconnects.
    c.send(c.request(CMD_WRITE, 202, 0, 1 << 30))
    check(c.at_eof(), "server waited for a 1 GiB write payload")
    c.close()


def read_only_client_sees_data(d):
    """Two clients at once: data written by one is read by the other."""
    a, b = Client(d.sock), Client(d.sock)
    a.negotiate()
    b.negotiate(structured=False)
    pattern = bytes(range(256)) * 16
    err, _, _ = a.call(CMD_WRITE, 1 << 20, 4096, FLAG_FUA, pattern)
    check(err == 0, "FUA write failed")
    err, data, _ = b.call(CMD_READ, 1 << 20, 4096)
    check(err == 0 and data == pattern, "second client did not see the write")
    a.disconnect()
    b.disconnect()


CASES = [garbage_flags, unknown_client_flags, hangup_during_greeting,
         option_longer_than_data, option_length_absurd, bad_option_magic,
         many_unknown_options, malformed_options, plain_newstyle,
         export_name_unknown, bad_request_magic, truncated_write,
         disconnect_mid_request, validation_errors, read_only_client_sees_data]


def body(d):
    check_healthy(d)
    for i, case in enumerate(CASES):
        try:
            case(d)
        except TestFailure as e:
            raise TestFailure("%s: %s" % (case.__name__, e))
        check_healthy(d, offset=4096 * (i + 3), pattern=case.__name__.encode())
        print("ok %s" % case.__name__)


sys.exit(run(body))
