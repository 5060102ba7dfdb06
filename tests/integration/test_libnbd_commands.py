#!/usr/bin/python3
"""block_status with and without REQ_ONE, zero with NO_HOLE and FAST_ZERO,
trim, cache and FUA through python3-libnbd."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, import_nbd

nbd = import_nbd()
MiB = 1 << 20
SIZE = 16 * MiB
HOLE, ZERO = 1, 2


def extents(h, length, offset, flags=0):
    """[(offset, length, flags)] for base:allocation."""
    got = []

    def cb(context, start, entries, err):
        check(context == 'base:allocation', 'extent for context %r' % context)
        pos = start
        for i in range(0, len(entries), 2):
            got.append((pos, entries[i], entries[i + 1]))
            pos += entries[i]
        return 0
    h.block_status(length, offset, cb, flags)
    return got


with Blockd('--blockdev', 'driver=memory,node-name=m0,size=%d' % SIZE,
            '--export', 'type=nbd,id=e0,node-name=m0,writable=on') as d:
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.connect_unix(d.sock)
    check(h.can_meta_context('base:allocation'), 'base:allocation not negotiated')

    h.pwrite(b'\x11' * MiB, 2 * MiB, nbd.CMD_FLAG_FUA)
    ext = extents(h, SIZE, 0)
    check(ext[0][0] == 0 and sum(e[1] for e in ext) == SIZE, 'extents do not tile: %r' % ext)
    for off, length, fl in ext:
        inside = off < 3 * MiB and off + length > 2 * MiB
        check((fl == 0) if inside else (fl == HOLE | ZERO), 'extent %r wrong in %r' % ((off, length, fl), ext))

    one = extents(h, 4 * MiB, 2 * MiB, nbd.CMD_FLAG_REQ_ONE)
    check(len(one) == 1, 'REQ_ONE gave %d extents: %r' % (len(one), one))
    check(one[0][0] == 2 * MiB and 0 < one[0][1] <= MiB and one[0][2] == 0,
          'REQ_ONE at 2M: %r, want data of at most 1M' % one)
    one = extents(h, MiB, 0, nbd.CMD_FLAG_REQ_ONE)
    check(len(one) == 1 and one[0][1] <= MiB and one[0][2] == HOLE | ZERO,
          'REQ_ONE at 0: %r' % one)

    h.zero(64 * 1024, 2 * MiB, nbd.CMD_FLAG_NO_HOLE)
    check(h.pread(64 * 1024, 2 * MiB) == bytes(64 * 1024), 'zero NO_HOLE did not zero')
    check(h.pread(64 * 1024, 2 * MiB + 64 * 1024) == b'\x11' * 64 * 1024,
          'zero NO_HOLE touched data after its range')

    check(h.can_fast_zero(), 'memory export does not advertise fast zero')
    h.zero(128 * 1024, 2 * MiB + 128 * 1024, nbd.CMD_FLAG_FAST_ZERO)
    check(h.pread(128 * 1024, 2 * MiB + 128 * 1024) == bytes(128 * 1024),
          'zero FAST_ZERO did not zero')

    h.trim(MiB // 4, 2 * MiB + MiB // 2)      # contents unspecified afterwards
    check(h.pread(MiB // 4, 2 * MiB + 3 * MiB // 4) == b'\x11' * (MiB // 4),
          'trim touched data after its range')

    check(h.can_cache(), 'cache not advertised')
    h.cache(MiB, 0)
    h.flush()
    check(h.pread(4096, 0) == bytes(4096), 'read after cache/flush failed')
    h.shutdown()
