#!/usr/bin/python3
"""NBD_OPT_EXPORT_NAME (the pre-GO way, still used by nbd-client and by
qemu as a fallback) with the empty name gets the first export; an unknown
name is a disconnect, not a crash."""
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check

IHAVEOPT = 0x49484156454F5054


def export_name(d, name):
    """Size and flags the server answers EXPORT_NAME `name` with, or None on disconnect."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(d.sock)
        greeting = b''
        while len(greeting) < 18:
            chunk = s.recv(18 - len(greeting))
            check(chunk, 'server closed during the greeting')
            greeting += chunk
        s.sendall(struct.pack('>I', 3))      # FIXED_NEWSTYLE | NO_ZEROES
        s.sendall(struct.pack('>QII', IHAVEOPT, 1, len(name)) + name)
        reply = b''
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            if not chunk:
                return None
            reply += chunk
        return struct.unpack('>QH', reply)


with Blockd('--blockdev', 'driver=memory,node-name=m0,size=8M',
            '--blockdev', 'driver=memory,node-name=m1,size=4M',
            '--export', 'type=nbd,id=e0,node-name=m0',
            '--export', 'type=nbd,id=e1,node-name=m1') as d:
    got = export_name(d, b'')
    check(got is not None, 'EXPORT_NAME "" was refused (or the daemon crashed)')
    check(got[0] == 8 << 20, 'EXPORT_NAME "": size %d, want the first export (8 MiB)' % got[0])
    got = export_name(d, b'm1')
    check(got is not None and got[0] == 4 << 20, 'EXPORT_NAME "m1": %r' % (got,))
    check(export_name(d, b'nope') is None, 'EXPORT_NAME "nope" did not disconnect')
    check(d.alive(), 'blockd died')
