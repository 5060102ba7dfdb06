#!/usr/bin/python3
"""Block status of a file node stays exact although the file driver
remembers the last data region it found (SEEK_HOLE is slow on big files):
after a write, then a block status query, then a trim and a zero with
may-trim inside the remembered region, base:allocation reports the new
holes, and data written later into a hole shows as data again."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, import_nbd  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def extents(h, offset=0, length=SIZE):
    """[(offset, length, flags)] tiling [offset, offset+length)."""
    nbd = import_nbd()
    out = []
    pos = offset
    while pos < offset + length:
        got = []

        def cb(ctx, off, entries, err):
            if ctx == nbd.CONTEXT_BASE_ALLOCATION:
                for i in range(0, len(entries), 2):
                    got.append(entries[i:i + 2])
            return 0
        h.block_status(offset + length - pos, pos, cb)
        for n, flags in got:
            n = min(n, offset + length - pos)
            out.append((pos, n, flags))
            pos += n
    return out


def kind_at(h, offset):
    """'data' or 'hole' at one offset."""
    for off, n, flags in extents(h, offset, 4096):
        return 'hole' if flags & 1 else 'data'


def main():
    d = Blockd()
    path = os.path.join(d.tmp, 'disk.raw')
    with open(path, 'wb') as f:
        f.truncate(SIZE)
    d.args += ['--blockdev', 'driver=file,node-name=f0,filename=' + path,
               '--export', 'type=nbd,id=e0,node-name=f0,writable=on']
    d.start()
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_unix(d.sock)
    h.pwrite(b'\x11' * (8 * MiB), 0)
    check(kind_at(h, 0) == 'data' and kind_at(h, 7 * MiB) == 'data', 'written data not reported as data')
    check(kind_at(h, 8 * MiB) == 'hole', 'the unwritten rest is not a hole')
    h.trim(MiB, MiB)
    check(kind_at(h, MiB) == 'hole', 'trimmed region inside the remembered data region is still data')
    check(kind_at(h, 3 * MiB) == 'data', 'data after the trim lost')
    h.zero(MiB, 4 * MiB)  # may-trim is the default: a hole
    check(kind_at(h, 4 * MiB) == 'hole', 'zeroed (may-trim) region is still data: %r' % extents(h, 0, 8 * MiB))
    h.pwrite(b'\x22' * MiB, MiB)
    check(kind_at(h, MiB) == 'data', 'data written into a hole not reported')
    check(h.pread(4096, MiB) == b'\x22' * 4096 and h.pread(4096, 4 * MiB) == bytes(4096)
          and h.pread(4096, 6 * MiB) == b'\x11' * 4096, 'contents wrong')
    tiles = extents(h)
    check(tiles[0][0] == 0 and sum(n for _, n, _ in tiles) == SIZE, 'extents do not tile the disk')
    h.shutdown()
    d.stop()
    print('file holes OK')


main()
