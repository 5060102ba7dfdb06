#!/usr/bin/python3
"""Incremental backups of an RBD image to local files: a transaction
[block-dirty-bitmap-add, blockdev-backup sync=full] then three
blockdev-backup sync=incremental with the bitmap, each to its own sparse
raw file, with guest writes through the NBD export of the rbd node in
between.  Restoring the full file and applying each increment's data
extents (qemu-img map) gives, byte for byte, the image at that backup's
start; each increment holds only what the bitmap had marked."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, ok, read_all, wait_job_end, write  # noqa: E402
from ceph_lib import Cluster  # noqa: E402

SIZE = 32 << 20
CLUSTER = 64 << 10


def bitmap_count(q, node, name):
    for n in q.cmd('query-named-block-nodes')['return']:
        for b in n.get('dirty-bitmaps', []) if n['node-name'] == node else []:
            if b.get('name') == name:
                return b['count']
    return None


def data_extents(path):
    out = subprocess.run(['qemu-img', 'map', '--output=json', '-f', 'raw', path], capture_output=True,
                         text=True, check=True).stdout
    return [(e['start'], e['length']) for e in json.loads(out) if e['data']]


def main():
    rng = random.Random(19)
    with Cluster() as c:
        c.rbd('create', 'rbd/src', '--size', '32M')
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', c.node('src', 'src')), 'blockdev-add rbd')
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'name': 'src',
                                          'writable': True}), 'export')
            write(d, 'src', 0, bytes(rng.randrange(1, 256) for _ in range(4096)) * (SIZE // 4096))
            targets = []
            for i in range(4):
                path = d.path('backup-%d.raw' % i)
                with open(path, 'wb') as f:
                    f.truncate(SIZE)
                targets.append(path)
                ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 't%d' % i, 'filename': path}), 'target')

            ok(q.cmd('transaction', {'actions': [
                {'type': 'block-dirty-bitmap-add', 'data': {'node': 'src', 'name': 'b0'}},
                {'type': 'blockdev-backup', 'data': {'job-id': 'full', 'device': 'src', 'target': 't0',
                                                     'sync': 'full'}}]}), 'transaction')
            evs = wait_job_end(q, 'full')
            check(not [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' in e['data']],
                  'full backup failed: %r' % evs)
            with open(targets[0], 'rb') as f:
                restored = bytearray(f.read())
            check(bytes(restored) == read_all(sock, 'src'), 'the full backup differs from the image')

            for i in (1, 2, 3):
                for _ in range(15):
                    off = rng.randrange(0, SIZE - 300000)
                    write(d, 'src', off, bytes([rng.randrange(1, 256)]) * rng.randrange(1, 300000))
                expect = read_all(sock, 'src')
                dirty = bitmap_count(q, 'src', 'b0')
                check(dirty and dirty % CLUSTER == 0, 'b0 count %r' % dirty)
                ok(q.cmd('blockdev-backup', {'job-id': 'inc%d' % i, 'device': 'src', 'target': 't%d' % i,
                                             'sync': 'incremental', 'bitmap': 'b0'}), 'incremental')
                evs = wait_job_end(q, 'inc%d' % i)
                done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
                check('error' not in done and done['len'] == dirty, 'incremental %d: %r' % (i, done))
                check(bitmap_count(q, 'src', 'b0') == 0, 'b0 not cleared by incremental %d' % i)
                extents = data_extents(targets[i])
                check(0 < sum(n for _, n in extents) <= dirty, 'increment %d holds %r' % (i, extents))
                with open(targets[i], 'rb') as f:
                    inc = f.read()
                for off, n in extents:
                    restored[off:off + n] = inc[off:off + n]
                check(bytes(restored) == expect, 'restore after increment %d differs from the image' % i)
                check(c.export('src') == expect, 'rbd export differs from what NBD reads')
            q.close()
            check(d.stop() == 0, 'blockd exit status')
    print('incremental backup chain from RBD OK')


main()
