#!/usr/bin/python3
"""Incremental backup chains: a transaction [block-dirty-bitmap-add,
blockdev-backup full] then three incremental backups with guest writes in
between, each to its own nbdkit memory target.  Each restore (the full
image with the increments applied in order, using the targets' allocation
maps) is byte-identical to the source at that backup's start.  The bitmap
is busy during a job, cleared by a successful incremental, kept by
bitmap-mode never, and restored (old bits plus new writes) by a failure."""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, err,  # noqa: E402
                        import_nbd, ok, read_all, wait_job_end, write)

SIZE = 32 << 20
CLUSTER = 64 << 10


def bitmap_count(q, node, name):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            for b in n.get('dirty-bitmaps', []):
                if b.get('name') == name:
                    return b['count']
    return None


def data_extents(sock):
    """(offset, length) of the allocated (non-hole) regions of an NBD export."""
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.connect_unix(sock)
    out = []
    size = h.get_size()
    pos = 0
    while pos < size:
        found = []

        def cb(meta, off, entries, error):
            if meta == 'base:allocation':
                found.extend(zip(entries[0::2], entries[1::2]))
            return 0
        h.block_status(min(size - pos, 1 << 30), pos, cb)
        for length, flags in found:
            if not flags & 1:
                out.append((pos, length))
            pos += length
    h.shutdown()
    return out


def main():
    rng = random.Random(5)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        write(d, 'src', 0, bytes(rng.randrange(1, 256) for _ in range(4096)) * (SIZE // 4096))
        targets = []
        for i in range(5):
            t = Nbdkit('memory', str(SIZE)).start()
            targets.append(t)
            add_nbd_target(q, 't%d' % i, t.sock)
        ok(q.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'src', 'name': 'b0'}},
            {'type': 'blockdev-backup', 'data': {'job-id': 'full', 'device': 'src', 'target': 't0',
                                                 'sync': 'full'}}]}), 'transaction')
        wait_job_end(q, 'full')
        check(bitmap_count(q, 'src', 'b0') == 0, 'b0 not clean after the full backup')
        restored = bytearray(read_all(targets[0].sock))
        check(bytes(restored) == read_all(d.path('nbd.sock'), 'src'), 'full backup differs')

        for i in (1, 2, 3):
            for _ in range(20):
                off = rng.randrange(0, SIZE - 200000)
                write(d, 'src', off, bytes([rng.randrange(1, 256)]) * rng.randrange(1, 200000))
            expect = read_all(d.path('nbd.sock'), 'src')
            dirty = bitmap_count(q, 'src', 'b0')
            check(dirty and dirty % CLUSTER == 0, 'b0 count %r' % dirty)
            ok(q.cmd('blockdev-backup', {'job-id': 'inc%d' % i, 'device': 'src', 'target': 't%d' % i,
                                         'sync': 'incremental', 'bitmap': 'b0'}), 'incremental')
            evs = wait_job_end(q, 'inc%d' % i)
            done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
            check('error' not in done and done['len'] == dirty, 'incremental %d: %r (dirty %d)' % (i, done, dirty))
            check(bitmap_count(q, 'src', 'b0') == 0, 'b0 not cleared by incremental %d' % i)
            inc = read_all(targets[i].sock)
            extents = data_extents(targets[i].sock)
            check(0 < sum(n for _, n in extents) <= dirty, 'increment %d holds %r' % (i, extents))
            for off, n in extents:
                restored[off:off + n] = inc[off:off + n]
            check(bytes(restored) == expect, 'restore after increment %d differs from the source' % i)

        # bitmap-mode never keeps the bits; the bitmap is busy during the job.
        write(d, 'src', 0, b'\x42' * CLUSTER * 2)
        ok(q.cmd('blockdev-backup', {'job-id': 'nv', 'device': 'src', 'target': 't4', 'sync': 'bitmap',
                                     'bitmap': 'b0', 'bitmap-mode': 'never', 'speed': 1}), 'never')
        err(q.cmd('block-dirty-bitmap-clear', {'node': 'src', 'name': 'b0'}),
            "Bitmap 'b0' is currently in use by another operation and cannot be used")
        err(q.cmd('blockdev-backup', {'job-id': 'x', 'device': 'src', 'target': 't3', 'sync': 'incremental',
                                      'bitmap': 'b0'}),
            "Bitmap 'b0' is currently in use by another operation and cannot be used")
        ok(q.cmd('block-job-set-speed', {'device': 'nv', 'speed': 0}), 'speed')
        wait_job_end(q, 'nv')
        check(bitmap_count(q, 'src', 'b0') == 2 * CLUSTER, 'never: count %r' % bitmap_count(q, 'src', 'b0'))

        # A failed incremental (cancelled) keeps the old bits and adds new writes.
        ok(q.cmd('blockdev-backup', {'job-id': 'cx', 'device': 'src', 'target': 't4', 'sync': 'incremental',
                                     'bitmap': 'b0', 'speed': 1}), 'cx')
        write(d, 'src', 8 << 20, b'\x43' * CLUSTER)
        ok(q.cmd('job-cancel', {'id': 'cx'}), 'cancel')
        wait_job_end(q, 'cx')
        check(bitmap_count(q, 'src', 'b0') == 3 * CLUSTER, 'cancelled: count %r' % bitmap_count(q, 'src', 'b0'))
        q.close()
        check(d.stop() == 0, 'daemon exit status')
        for t in targets:
            t.close()
    print('incremental chain OK')


main()
