#!/usr/bin/python3
"""Clients that send garbage or vanish mid-write do not disturb a good
client; afterwards the daemon is alive and exits 0 on SIGTERM."""
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, fail, import_nbd

nbd = import_nbd()
IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
SIZE = 32 << 20


def raw_connect(d):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.sock)
    return s


def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            fail('server closed after %d of %d bytes' % (len(buf), n))
        buf += chunk
    return buf


def handshake(s):
    """Fixed newstyle, NO_ZEROES, EXPORT_NAME "e0"."""
    magic, opt_magic, flags = struct.unpack('>QQH', recv_exact(s, 18))
    check(magic == 0x4e42444d41474943 and opt_magic == IHAVEOPT, 'bad greeting')
    s.sendall(struct.pack('>I', 3))
    s.sendall(struct.pack('>QII', IHAVEOPT, 1, 2) + b'e0')
    size, _ = struct.unpack('>QH', recv_exact(s, 10))
    check(size == SIZE, 'EXPORT_NAME: size %d' % size)


def drain_until_closed(s):
    """The server may answer or hang up, but must not leave us hanging forever."""
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        fail('server neither answered nor closed a garbage connection')
    except ConnectionResetError:
        pass
    s.close()


stop = threading.Event()
good_errors = []
good_rounds = [0]


def good_client(d):
    """Keeps writing and reading back its own region until told to stop."""
    try:
        h = d.connect()
        n = 0
        while not stop.is_set() or n < 10:
            data = os.urandom(64 * 1024)
            off = (16 << 20) + (n % 64) * 64 * 1024
            h.pwrite(data, off)
            if h.pread(len(data), off) != data:
                good_errors.append('read back differs at %d' % off)
                return
            n += 1
        good_rounds[0] = n
        h.shutdown()
    except nbd.Error as e:
        good_errors.append(str(e))


with Blockd('--blockdev', 'driver=memory,node-name=m0,size=%d' % SIZE,
            '--export', 'type=nbd,id=e0,node-name=m0,name=e0,writable=on') as d:
    t = threading.Thread(target=good_client, args=(d,))
    t.start()

    for _ in range(5):
        # Garbage instead of client flags.
        s = raw_connect(d)
        s.sendall(os.urandom(4096))
        drain_until_closed(s)

        # Garbage after a good handshake: bad request magic loses framing.
        s = raw_connect(d)
        handshake(s)
        s.sendall(b'\xde\xad\xbe\xef' * 1024)
        drain_until_closed(s)

        # A write whose payload never arrives: the client goes away mid-write.
        s = raw_connect(d)
        handshake(s)
        s.sendall(struct.pack('>IHHQQI', REQUEST_MAGIC, 0, 1, 1, 0, 1 << 20))
        s.sendall(os.urandom(1000))
        s.close()

        # Vanishing in the middle of the handshake.
        s = raw_connect(d)
        recv_exact(s, 18)
        s.sendall(struct.pack('>I', 3) + struct.pack('>QII', IHAVEOPT, 1, 100) + b'x')
        s.close()

    stop.set()
    t.join(timeout=60)
    check(not t.is_alive(), 'the good client hung')
    check(not good_errors, 'good client failed: %s' % good_errors)
    check(good_rounds[0] >= 10, 'good client made only %d rounds' % good_rounds[0])
    check(d.alive(), 'blockd died')
    h = d.connect()
    check(h.get_size() == SIZE, 'new client after the abuse: wrong size')
    h.shutdown()
