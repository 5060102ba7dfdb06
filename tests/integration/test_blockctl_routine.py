#!/usr/bin/python3
"""The backup routine with blockctl alone: `backup --incremental` makes a
full backup (adding the bitmap in the same transaction), then qcow2
increments over it; `restore` rebuilds the disk as of each backup, byte for
byte, including clusters the guest zeroed; its --verify passes, and fails
once an increment is corrupted."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, ok, read_all, write  # noqa: E402

SIZE = 8 << 20
MIB = 1 << 20
BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        img = d.path('src.raw')
        with open(img, 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'blockdev-add')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'src', 'node-name': 'src', 'writable': True}), 'export')
        uri = 'nbd+unix:///src?socket=' + d.path('nbd.sock')
        model = bytearray(SIZE)

        def put(off, data):
            write(d, 'src', off, data)
            model[off:off + len(data)] = data

        def ctl(*args):
            return subprocess.run([BLOCKCTL, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=120)

        def bitmaps():
            r = ctl('bitmap', 'list', 'src', '--json')
            check(r.returncode == 0, 'bitmap list: %r' % (r,))
            return {b['name']: b for b in json.loads(r.stdout)}

        backups = d.path('backups')
        os.mkdir(backups)
        full, inc1, inc2 = (os.path.join(backups, n) for n in ('full.qcow2', 'inc1.qcow2', 'inc2.qcow2'))

        put(0, bytes((i * 7 + 1) % 251 + 1 for i in range(SIZE)))  # no zero byte anywhere
        r = ctl('backup', 'src', '--incremental', '--to', full)
        check(r.returncode == 0 and 'full, bitmap backup added' in r.stdout, 'first backup: %r' % (r,))
        check(set(bitmaps()) == {'backup'} and bitmaps()['backup']['recording'], 'bitmap after full: %r' % bitmaps())
        at_full = bytes(model)

        put(1 * MIB, b'\xc1' * 65536)
        put(2 * MIB, b'\0' * 65536)            # zeroed: the increment must record it
        put(5 * MIB + 100, b'\xc5' * 4096)
        check(bitmaps()['backup']['count'] == 3 * 65536, 'dirty bytes: %r' % bitmaps())
        r = ctl('backup', 'src', '--incremental', '--to', inc1, '--backing', full)
        check(r.returncode == 0 and 'done: 192.0 KiB' in r.stdout and 'incremental' in r.stdout,
              'first increment: %r' % (r,))
        check(bitmaps()['backup']['count'] == 0, 'bitmap not rotated: %r' % bitmaps())
        at_inc1 = bytes(model)

        put(3 * MIB, b'\xc3' * 65536)
        put(1 * MIB, b'\xc2' * 65536)
        put(6 * MIB, b'\0' * (2 * 65536))
        r = ctl('backup', 'src', '--incremental', '--to', inc2, '--backing', inc1)
        check(r.returncode == 0 and 'done: 256.0 KiB' in r.stdout, 'second increment: %r' % (r,))

        out1 = d.path('out1.raw')
        r = ctl('restore', full, inc1, '--to', out1)
        check(r.returncode == 0, 'restore to inc1: %r' % (r,))
        with open(out1, 'rb') as f:
            check(f.read() == at_inc1, 'full + inc1 is not the disk as of inc1')
        r = ctl('restore', full, '--to', d.path('out0.raw'))
        with open(d.path('out0.raw'), 'rb') as f:
            check(r.returncode == 0 and f.read() == at_full, 'full alone is not the disk as of the full backup')

        out2 = d.path('out2.raw')
        r = ctl('restore', full, inc1, inc2, '--to', out2, '--verify', uri)
        check(r.returncode == 0 and 'verified' in r.stdout, 'restore --verify: %r' % (r,))
        check(read_all(d.path('nbd.sock'), 'src') == bytes(model), 'source differs from the model')
        with open(out2, 'rb') as f:
            check(f.read() == bytes(model), 'the restored chain differs from the source')

        r = ctl('restore', full, out1, '--to', d.path('bad.raw'))
        check(r.returncode == 1 and 'is not a qcow2 image' in r.stderr and not os.path.exists(d.path('bad.raw')),
              'a raw increment: %r' % (r,))
        r = ctl('restore', full, inc2, inc1, '--to', d.path('swapped.raw'))
        check(r.returncode == 0 and '%s records inc1.qcow2 as its backing file, not %s' % (inc2, full) in r.stderr,
              'increments out of order: %r' % (r,))
        r = ctl('restore', full, '--to', out1)
        check(r.returncode == 1 and 'File exists' in r.stderr, 'restore over an existing file: %r' % (r,))

        # Corrupt the cluster only inc2 holds (the 0xc3 one) and verify again.
        with open(inc2, 'r+b') as f:
            data = f.read()
            pos = data.find(b'\xc3' * 65536)
            check(pos > 0, 'the 0xc3 cluster is not in inc2')
            f.seek(pos + 10)
            f.write(b'\x00')
        r = ctl('restore', full, inc1, inc2, '--to', d.path('out3.raw'), '--verify', uri)
        check(r.returncode == 1 and 'verify failed' in r.stderr and 'at offset %d' % (3 * MIB + 10) in r.stderr,
              'verify of a corrupted chain: %r' % (r,))

        nodes = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']]
        check(nodes == ['src'] and q.cmd('query-jobs')['return'] == [], 'left behind: %r' % nodes)
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('blockctl backup routine OK')


main()
