"""Shared helpers for the raw-socket NBD tests (not a test itself).

A minimal NBD client over the plain `socket` module, so the tests can send
exactly the bytes they want (malformed ones included), plus start/stop of
the real daemon ($BLOCKD) with a memory export on a Unix socket."""

import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_EXTENDED_HEADERS = 9, 10, 11
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
REP_ERR_UNSUP, REP_ERR_INVALID, REP_ERR_UNKNOWN = 0x80000001, 0x80000003, 0x80000006
REP_ERR_EXT_HEADER_REQD = 0x8000000A

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM = 0, 1, 2, 3, 4
CMD_CACHE, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 5, 6, 7
FLAG_FUA, FLAG_NO_HOLE, FLAG_DF, FLAG_REQ_ONE, FLAG_FAST_ZERO, FLAG_PAYLOAD_LEN = 1, 2, 4, 8, 16, 32
REPLY_FLAG_DONE = 1
TYPE_NONE, TYPE_OFFSET_DATA, TYPE_OFFSET_HOLE = 0, 1, 2
TYPE_BLOCK_STATUS, TYPE_BLOCK_STATUS_EXT = 5, 6
TYPE_ERROR, TYPE_ERROR_OFFSET = 0x8001, 0x8002
EPERM, EIO, EINVAL, ENOSPC = 1, 5, 22, 28

# The first line of a sanitizer report (as lib.SANITIZER_REPORTS).
SANITIZER_REPORTS = ("ERROR: AddressSanitizer", "WARNING: ThreadSanitizer")


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


class Client:
    """One NBD connection; every method is a single protocol step."""

    def __init__(self, path, timeout=20):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.extended = False
        self.structured = False

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("server closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def at_eof(self):
        """True if the server closed the connection (reads nothing more)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    # ---- handshake ----
    def greeting(self, cflags=3):
        magic, opt, gflags = struct.unpack(">QQH", self.recv_exact(18))
        check(magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting magic")
        check(gflags == 3, "handshake flags %#x, expected FIXED_NEWSTYLE|NO_ZEROES" % gflags)
        if cflags is not None:
            self.send(struct.pack(">I", cflags))

    def send_option(self, opt, data=b""):
        self.send(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)

    def read_option_reply(self, opt):
        magic, ropt, rtype, length = struct.unpack(">QIII", self.recv_exact(20))
        check(magic == REP_MAGIC, "bad option reply magic %#x" % magic)
        check(ropt == opt, "option reply for %d, expected %d" % (ropt, opt))
        return rtype, self.recv_exact(length)

    def option(self, opt, data=b""):
        """Sends an option and collects replies up to the final one."""
        self.send_option(opt, data)
        replies = []
        while True:
            rtype, payload = self.read_option_reply(opt)
            replies.append((rtype, payload))
            if rtype == REP_ACK or rtype & 0x80000000:
                return replies

    def negotiate(self, structured=True, extended=False, contexts=(), name=b"disk0"):
        self.greeting()
        if extended:
            rep = self.option(OPT_EXTENDED_HEADERS)
            check(rep[-1][0] == REP_ACK, "EXTENDED_HEADERS not acked: %r" % rep)
            self.extended = self.structured = True
        elif structured:
            rep = self.option(OPT_STRUCTURED_REPLY)
            check(rep[-1][0] == REP_ACK, "STRUCTURED_REPLY not acked")
            self.structured = True
        ids = {}
        if contexts:
            rep = self.option(OPT_SET_META_CONTEXT, meta_data(name, contexts))
            check(rep[-1][0] == REP_ACK, "SET_META_CONTEXT failed: %r" % rep)
            for rtype, payload in rep[:-1]:
                ids[payload[4:].decode()] = struct.unpack(">I", payload[:4])[0]
        rep = self.option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        check(rep[-1][0] == REP_ACK, "GO failed: %r" % rep)
        info = [p for t, p in rep if t == REP_INFO and p[:2] == b"\0\0"]
        check(len(info) == 1 and len(info[0]) == 12, "GO without a valid NBD_INFO_EXPORT")
        self.size, self.eflags = struct.unpack(">QH", info[0][2:])
        return ids

    # ---- transmission ----
    def request(self, cmd, cookie, offset=0, length=0, flags=0, payload=b""):
        if self.extended:
            if cmd == CMD_WRITE:
                flags |= FLAG_PAYLOAD_LEN
            hdr = struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        else:
            hdr = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)
        return hdr + payload

    def read_reply(self, read_lengths):
        """Reads one whole reply: (cookie, error, data, chunks).

        read_lengths maps cookie -> expected READ length (for simple replies)."""
        magic = struct.unpack(">I", self.recv_exact(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            check(not self.extended, "simple reply after extended headers")
            error, cookie = struct.unpack(">IQ", self.recv_exact(12))
            data = b""
            if error == 0 and cookie in read_lengths:
                check(not self.structured, "simple reply to a READ after structured replies")
                data = self.recv_exact(read_lengths[cookie])
            return cookie, error, data, []
        chunks, error, data = [], 0, {}
        while True:
            if magic == STRUCTURED_REPLY_MAGIC:
                check(not self.extended, "structured reply after extended headers")
                flags, rtype, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
                hoff = None
            elif magic == EXT_REPLY_MAGIC:
                check(self.extended, "extended reply without extended headers")
                flags, rtype, cookie, hoff, length = struct.unpack(">HHQQQ", self.recv_exact(28))
            else:
                raise TestFailure("unknown reply magic %#x" % magic)
            payload = self.recv_exact(length)
            chunks.append((rtype, payload, hoff))
            if rtype & 0x8000:
                check(length >= 6, "short error chunk")
                err, mlen = struct.unpack(">IH", payload[:6])
                check(err != 0 and 6 + mlen <= length, "bad error chunk")
                error = err
            elif rtype == TYPE_OFFSET_DATA:
                data[struct.unpack(">Q", payload[:8])[0]] = payload[8:]
            elif rtype == TYPE_OFFSET_HOLE:
                off, size = struct.unpack(">QI", payload)
                data[off] = bytes(size)
            if flags & REPLY_FLAG_DONE:
                break
            magic = struct.unpack(">I", self.recv_exact(4))[0]
        joined = b"".join(data[k] for k in sorted(data))
        return cookie, error, joined, chunks

    def call(self, cmd, offset=0, length=0, flags=0, payload=b"", cookie=1):
        self.send(self.request(cmd, cookie, offset, length, flags, payload))
        c, error, data, chunks = self.read_reply({cookie: length} if cmd == CMD_READ else {})
        check(c == cookie, "reply cookie %d, expected %d" % (c, cookie))
        return error, data, chunks

    def disconnect(self):
        self.send(self.request(CMD_DISC, 0))
        self.close()


def meta_data(name, queries):
    data = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    for q in queries:
        q = q.encode() if isinstance(q, str) else q
        data += struct.pack(">I", len(q)) + q
    return data


class Daemon:
    """The real daemon with one memory export `disk0` on a Unix socket."""

    def __init__(self, size="64M", server_opts=""):
        self.blockd = os.environ.get("BLOCKD")
        if not self.blockd:
            print("BLOCKD is not set", file=sys.stderr)
            sys.exit(77)
        self.tmp = tempfile.TemporaryDirectory(prefix="nbd-raw-")
        self.sock = os.path.join(self.tmp.name, "nbd.sock")
        self.pidfile = os.path.join(self.tmp.name, "blockd.pid")
        self.err = open(os.path.join(self.tmp.name, "blockd.err"), "w+")
        self.proc = subprocess.Popen([
            self.blockd,
            "--blockdev", "driver=memory,node-name=m0,size=" + size,
            "--nbd-server", "addr.type=unix,addr.path=" + self.sock + server_opts,
            "--export", "type=nbd,id=e0,node-name=m0,name=disk0,writable=on",
            "--pidfile", self.pidfile], stderr=self.err)
        deadline = time.time() + 30
        while not os.path.exists(self.pidfile):
            if self.proc.poll() is not None:
                raise TestFailure("blockd exited early with status %d: %s"
                                  % (self.proc.returncode, self.stderr_text()[-2000:]))
            if time.time() > deadline:
                self.proc.kill()
                raise TestFailure("blockd did not write its pidfile")
            time.sleep(0.05)

    def stderr_text(self):
        self.err.flush()
        with open(self.err.name, errors="replace") as f:
            return f.read()

    def check_alive(self):
        check(self.proc.poll() is None, "blockd died (status %s)" % self.proc.returncode)

    def stop(self):
        with open(self.pidfile) as f:
            pid = int(f.read().strip() or self.proc.pid)
        check(pid == self.proc.pid, "pidfile holds %d, daemon is %d" % (pid, self.proc.pid))
        os.kill(pid, signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise TestFailure("blockd did not exit after SIGTERM")
        err = self.stderr_text()
        self.err.close()
        self.tmp.cleanup()
        check(status == 0, "blockd exited with status %d: %s" % (status, err[-2000:]))
        starts = [err.find(r) for r in SANITIZER_REPORTS if r in err]
        check(not starts, "sanitizer report:\n" + (err[min(starts):][:8000] if starts else ""))

    def kill(self):
        """Kills the daemon after a failure and shows the end of its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.err.closed:
            err = self.stderr_text()
            if err:
                print("--- blockd stderr ---\n" + err[-4000:], file=sys.stderr)
            self.err.close()
        self.tmp.cleanup()


def tsan_build():
    """Whether $BLOCKD is a ThreadSanitizer build (make tsan)."""
    with open(os.environ["BLOCKD"], "rb") as f:
        return b"__tsan_init" in f.read()


def check_healthy(daemon, offset=12345, pattern=b"healthy!"):
    """A fresh, well-behaved client can write and read back data."""
    daemon.check_alive()
    c = Client(daemon.sock)
    c.negotiate()
    data = (pattern * (4096 // len(pattern) + 1))[:4096]
    err, _, _ = c.call(CMD_WRITE, offset, len(data), payload=data)
    check(err == 0, "healthy write failed with %d" % err)
    err, back, _ = c.call(CMD_READ, offset, len(data), cookie=2)
    check(err == 0 and back == data, "healthy read-back mismatch (error %d)" % err)
    c.disconnect()


def run(body, size="64M", server_opts=""):
    """Runs body(daemon) against a fresh daemon, then stops it by PID.
    server_opts are appended to --nbd-server (",max-connections=2").

    Returns the exit status: 0 on pass, 1 on failure."""
    try:
        daemon = Daemon(size, server_opts)
    except TestFailure as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    try:
        body(daemon)
        daemon.stop()
    except Exception as e:  # any failure, libnbd's included: never leave the daemon behind
        print("FAIL: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        daemon.kill()
        return 1
    except Exception:                   # e.g. nbd.Error: still stop the daemon
        traceback.print_exc()
        daemon.kill()
        return 1
    print("PASS")
    return 0
