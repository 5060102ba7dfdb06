#!/usr/bin/python3
"""Limits that keep careless or hostile NBD clients from locking others out
or pinning the daemon's memory:

- a client still in the handshake after handshake-max-seconds (default 10,
  as QEMU) is disconnected, whether it says nothing or trickles an option;
- over max-connections a client is told why (NBD_REP_ERR_POLICY with a
  message) and closed, and a slot frees when a silent client times out;
- option data is never held beyond 64 KiB: half-sent 8 MiB options on 40
  connections pin almost nothing, and a complete oversized option is
  answered NBD_REP_ERR_TOO_BIG with the connection still usable;
- a client that sends 40 READs of 32 MiB and does not read the replies
  makes the daemon hold at most 128 MiB of buffers (docs/nbd.md), and the
  replies are right once it reads them."""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_nbd_raw_lib import (CMD_READ, CMD_WRITE, OPT_GO, OPT_INFO, REP_ACK, Client,  # noqa: E402
                              check, check_healthy, run, tsan_build)

MiB = 1 << 20
REP_ERR_POLICY, REP_ERR_TOO_BIG = 0x80000002, 0x80000009


def rss(daemon):
    with open('/proc/%d/status' % daemon.proc.pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError('no VmRSS')


def raw_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def closed_within(s, seconds):
    """Seconds until the server closed `s` (reading and dropping), or None."""
    start = time.time()
    s.settimeout(0.2)
    while time.time() - start < seconds:
        try:
            if not s.recv(65536):
                return time.time() - start
        except socket.timeout:
            pass
        except (ConnectionResetError, BrokenPipeError):
            return time.time() - start
    return None


def libnbd_connect(path):
    import nbd
    h = nbd.NBD()
    h.set_export_name('disk0')
    h.connect_unix(path)
    return h


def body_timeout_and_max_connections(daemon):
    # Three clients connect and say nothing: they take every slot.
    connected = time.time()
    silent = [raw_connect(daemon.sock) for _ in range(3)]
    time.sleep(0.3)
    import nbd
    try:
        libnbd_connect(daemon.sock)
        check(False, 'a fourth client was served over max-connections=3')
    except nbd.Error as e:
        check('policy' in str(e), 'refusal: %s' % e)
    c = Client(daemon.sock)
    c.greeting()
    name = b'disk0'
    rep = c.option(OPT_GO, struct.pack('>I', len(name)) + name + struct.pack('>H', 0))
    check(rep[-1][0] == REP_ERR_POLICY and b'too many connections' in rep[-1][1]
          and b'max-connections' in rep[-1][1], 'refusal does not say why: %r' % (rep,))
    c.close()
    # The handshake limit (2 s here) frees the slots.
    gone = [closed_within(s, 10) for s in silent]
    check(all(g is not None for g in gone), 'silent clients were never disconnected: %r' % gone)
    gone = [time.time() - connected for _ in gone]  # all closed by now
    check(min(gone) >= 1.9, 'silent clients were cut before the 2 s limit (%.1f s)' % min(gone))
    for s in silent:
        s.close()
    # A slot frees once the server thread has finished with the client,
    # a moment after the client saw its connection close.
    deadline = time.time() + 10
    while True:
        try:
            h = libnbd_connect(daemon.sock)
            break
        except nbd.Error as e:
            check('policy' in str(e) and time.time() < deadline,
                  'no slot freed after the silent clients were cut: %s' % e)
            time.sleep(0.1)
    h.pwrite(b'x' * 4096, 0)
    # A client past the handshake is not subject to the limit.
    time.sleep(3)
    check(h.pread(4096, 0) == b'x' * 4096, 'a connected client lost its data')
    # A client that trickles one option byte by byte is cut too.
    c = Client(daemon.sock)
    c.greeting()
    c.send(struct.pack('>QII', 0x49484156454F5054, OPT_GO, 1000))
    t0 = time.time()
    cut = None
    while time.time() - t0 < 10:
        try:
            c.send(b'\0')
        except (BrokenPipeError, ConnectionResetError):
            cut = time.time() - t0
            break
        time.sleep(0.2)
    check(cut is not None, 'a trickling client was never disconnected')
    c.close()
    h.shutdown()
    print('handshake limit: silent and trickling clients cut after %.1f-%.1f s; over-limit client told why'
          % (min(gone), max(gone)))


def body_default_limit(daemon):
    s = raw_connect(daemon.sock)
    gone = closed_within(s, 30)
    check(gone is not None and 8 <= gone <= 20, 'default handshake limit: closed after %r s, want ~10' % gone)
    s.close()
    print('default handshake limit: silent client closed after %.1f s' % gone)


def body_option_memory(daemon):
    before = rss(daemon)
    conns = []
    chunk = b'\0' * MiB
    for _ in range(40):
        c = Client(daemon.sock)
        c.greeting()
        c.send(struct.pack('>QII', 0x49484156454F5054, OPT_INFO, 8 * MiB))
        for _ in range(4):
            c.send(chunk)
        conns.append(c)
    time.sleep(0.5)
    grown = rss(daemon) - before
    check(grown < 32 * MiB, '40 half-sent 8 MiB options pinned %d MiB' % (grown // MiB))
    for c in conns:
        c.close()
    # A whole oversized option is refused and the connection goes on.
    c = Client(daemon.sock)
    c.greeting()
    name = b'disk0'
    big = struct.pack('>I', len(name)) + name + struct.pack('>H', 40000) + b'\0\3' * 40000
    rep = c.option(OPT_INFO, big)
    check(rep[-1][0] == REP_ERR_TOO_BIG, 'oversized option: %r' % (rep,))
    rep = c.option(OPT_GO, struct.pack('>I', len(name)) + name + struct.pack('>H', 0))
    check(rep[-1][0] == REP_ACK, 'GO after an oversized option: %r' % (rep,))
    c.disconnect()
    check_healthy(daemon)
    print('option memory: 40 half-sent 8 MiB options grew RSS by %d MiB; oversized option refused'
          % (grown // MiB))


def body_unread_replies(daemon):
    c = Client(daemon.sock)
    c.negotiate(structured=False)
    pattern = bytes(range(256)) * (MiB // 256)
    for i in range(40):
        off = i * 32 * MiB % (1024 * MiB)
        err, _, _ = c.call(CMD_WRITE, off, MiB, payload=pattern, cookie=1000 + i)
        check(err == 0, 'write %d failed' % i)
    before = rss(daemon)
    c.send(b''.join(c.request(CMD_READ, i + 1, i * 32 * MiB % (1024 * MiB), 32 * MiB) for i in range(40)))
    time.sleep(3)
    grown = rss(daemon) - before
    daemon.check_alive()
    # 128 MiB of buffers; ASan and the allocator add some: 64 MiB of slack.
    check(grown < 192 * MiB, 'a client not reading 40 x 32 MiB of replies pinned %d MiB' % (grown // MiB))
    lengths = {i + 1: 32 * MiB for i in range(40)}
    for n in range(40):
        cookie, err, data, _ = c.read_reply(lengths)
        check(err == 0, 'READ %d failed with %d' % (cookie, err))
        check(data[:MiB] == pattern and not any(data[MiB:MiB + 4096]), 'READ %d: wrong data' % cookie)
    c.disconnect()
    check_healthy(daemon)
    print('unread replies: 40 x 32 MiB pending grew RSS by %d MiB; all replies correct' % (grown // MiB))


def main():
    which = sys.argv[1:] or ['limits', 'default', 'options', 'replies']
    status = 0
    if 'limits' in which:
        status |= run(body_timeout_and_max_connections, server_opts=',max-connections=3,handshake-max-seconds=2')
    if 'default' in which:
        status |= run(body_default_limit)
    if tsan_build() and ('options' in which or 'replies' in which):
        # Both measure the daemon's RSS, which TSan's shadow memory inflates
        # several-fold (and 40 x 32 MiB of replies would take it past 1 GiB).
        print('SKIP (ThreadSanitizer build): option memory and unread replies measure RSS')
        which = [w for w in which if w not in ('options', 'replies')]
    if 'options' in which:
        status |= run(body_option_memory)
    if 'replies' in which:
        status |= run(body_unread_replies, size='1G')
    sys.exit(status)


main()
