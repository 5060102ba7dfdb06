#!/usr/bin/python3
"""Dirty-bitmap benchmark (issue 4), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-bitmaps.py

1. Walk: a 1 TiB null-co node with 10 000 scattered dirty 64 KiB extents;
   the time a libnbd client spends in BLOCK_STATUS requests walking the whole
   qemu:dirty-bitmap:b context, blockd against qemu-storage-daemon (target:
   blockd at most half of QEMU's time).
2. Write IOPS cost of tracking: fio 4 KiB random writes (nbd engine,
   iodepth 16) on a 1 GiB raw file in /dev/shm with 0, 1 and 8 enabled
   bitmaps and with 1 persistent bitmap (targets: < 5 % and < 15 %).
3. The same on a 1 GiB qcow2 image in /dev/shm (metadata preallocated, so
   that writes overwrite clusters in place and the bitmap's cost is not
   hidden behind cluster allocation): no bitmap against one persistent
   bitmap stored in the image and kept crash-safe (target: < 10 %).
4. Memory: the bitmap's bytes for 1 TiB at 64 KiB against one bit per
   granule (target: within 10 %).
BENCH_QUICK=1 shortens the fio runs (one round instead of the median of
three); BENCH_ROUNDS=N takes the median of N rounds; BENCH_ONLY=walk, raw,
qcow2 or memory runs one part.  With BENCH_ROWS set, the figures are also
appended there for run-all.sh's summary (bench_rows.py)."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration', 'qmp'))
from qmp_lib import Daemon, check, fail  # noqa: E402
sys.path.insert(0, HERE)
from bench_lib import cpu_seconds  # noqa: E402
from bench_rows import row  # noqa: E402

TiB = 1 << 40
GRAN = 65536
QUICK = os.environ.get('BENCH_QUICK') == '1'
FIO_SECONDS = 2 if QUICK else 5
ROUNDS = int(os.environ.get('BENCH_ROUNDS', 1 if QUICK else 3))
ONLY = os.environ.get('BENCH_ONLY')


def blockd():
    path = os.environ.get('BLOCKD', 'build-release/blockd')
    if not os.access(path, os.X_OK):
        fail('BLOCKD=%s is not executable' % path)
    return [path]


def qsd():
    path = shutil.which('qemu-storage-daemon')
    if not path:
        fail('qemu-storage-daemon is not installed')
    return [path]


def ok(q, name, args):
    r = q.cmd(name, args)
    check(r == {'return': {}}, '%s %r: %r' % (name, args, r))


def walk_time(cmd):
    import nbd
    with Daemon(cmd) as d:
        q = d.qmp()
        sock = d.path('nbd.sock')
        ok(q, 'blockdev-add', {'driver': 'null-co', 'node-name': 'n0', 'size': TiB})
        ok(q, 'block-dirty-bitmap-add', {'node': 'n0', 'name': 'b', 'granularity': GRAN})
        ok(q, 'nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        ok(q, 'block-export-add', {'type': 'nbd', 'id': 'w', 'node-name': 'n0', 'name': 'w',
                                   'writable': True})
        h = nbd.NBD()
        h.set_export_name('w')
        h.connect_unix(sock)
        rng = random.Random(4)
        buf = b'\1' * GRAN
        for off in rng.sample(range(TiB // GRAN), 10000):
            h.pwrite(buf, off * GRAN)
        h.shutdown()
        ok(q, 'block-export-del', {'id': 'w'})
        ok(q, 'block-dirty-bitmap-disable', {'node': 'n0', 'name': 'b'})
        ok(q, 'block-export-add', {'type': 'nbd', 'id': 'r', 'node-name': 'n0', 'name': 'r',
                                   'bitmaps': ['b']})
        h = nbd.NBD()
        h.set_export_name('r')
        h.add_meta_context('qemu:dirty-bitmap:b')
        h.connect_unix(sock)
        dirty = [0]
        pos = [0]

        # The timed callback only sums lengths (C-level slicing): a Python
        # loop over ~20 000 entries costs more than either server's work
        # and would hide the difference.  Dirty bytes are counted in an
        # untimed pass.
        def cb(ctx, offset, entries, err):
            pos[0] += sum(entries[0::2])
            return 0

        def count_cb(ctx, offset, entries, err):
            for i in range(0, len(entries), 2):
                if entries[i + 1] & 1:
                    dirty[0] += entries[i]
                pos[0] += entries[i]
            return 0

        def walk(callback):
            pos[0] = 0
            while pos[0] < TiB:
                h.block_status(min(TiB - pos[0], (1 << 32) - GRAN), pos[0], callback)

        walk(count_cb)
        best = None
        for _ in range(5):
            t0 = time.perf_counter()
            walk(cb)
            t = time.perf_counter() - t0
            best = t if best is None else min(best, t)
        check(dirty[0] == 10000 * GRAN, 'walk found %d dirty bytes' % dirty[0])
        h.shutdown()
        ok(q, 'block-export-del', {'id': 'r'})
        return best


def fio_iops(sock, pid=None):
    """fio's write IOPS; with the daemon's `pid`, (IOPS, daemon CPU
    microseconds per write), a measure other load on the machine disturbs
    less than IOPS."""
    cpu0 = cpu_seconds(pid) if pid else 0
    r = subprocess.run(['fio', '--name=w', '--ioengine=nbd',
                        '--uri=nbd+unix:///disk?socket=' + sock, '--rw=randwrite', '--bs=4k',
                        '--iodepth=16', '--time_based', '--runtime=%d' % FIO_SECONDS,
                        '--size=1g', '--output-format=json'],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, 'fio failed: %s' % r.stderr[-500:])
    write = json.loads(r.stdout[r.stdout.index('{'):])['jobs'][0]['write']
    if not pid:
        return write['iops']
    return write['iops'], (cpu_seconds(pid) - cpu0) * 1e6 / max(write['total_ios'], 1)


def tracking_cost(configs, kind):
    """Median IOPS samples per configuration over ROUNDS interleaved rounds:
    single fio runs on this 2-core machine swing by 20-30 %, more than the
    costs measured.  `kind` is 'raw' (a file node) or 'qcow2' (a qcow2 node
    over a file node, metadata preallocated); each run gets a fresh image."""
    tmp = tempfile.mkdtemp(prefix='blockd-bench-bitmaps.', dir='/dev/shm')
    samples = {}
    try:
        for label, adds in [c for _ in range(ROUNDS) for c in configs]:
            img = os.path.join(tmp, 'disk.img')
            for f in (img, img + '.bitmaps'):
                if os.path.exists(f):
                    os.unlink(f)
            if kind == 'qcow2':
                subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata',
                                img, '1G'], check=True)
                node = {'driver': 'qcow2', 'node-name': 'f0', 'file': {'driver': 'file', 'filename': img}}
            else:
                with open(img, 'wb') as f:
                    f.truncate(1 << 30)
                node = {'driver': 'file', 'node-name': 'f0', 'filename': img}
            with Daemon(blockd()) as d:
                q = d.qmp()
                sock = d.path('nbd.sock')
                ok(q, 'blockdev-add', node)
                for i, extra in enumerate(adds):
                    ok(q, 'block-dirty-bitmap-add', dict({'node': 'f0', 'name': 'b%d' % i}, **extra))
                ok(q, 'nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
                ok(q, 'block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f0',
                                           'name': 'disk', 'writable': True})
                iops, cpu = fio_iops(sock, d.proc.pid)
                samples.setdefault(label, []).append(iops)
                samples.setdefault(label + ' cpu', []).append(cpu)
                d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return samples


def report(samples, base_label, targets):
    """Prints each configuration's median against the base's, with the runs."""
    med = {label: sorted(v)[len(v) // 2] for label, v in samples.items()}
    base = med[base_label]
    for label, target in targets:
        cost = 100 * (base - med[label]) / base
        print('write IOPS with %-20s: %8.0f (cost %5.1f%% vs %8.0f without; target < %d%%); runs %s vs %s'
              % (label, med[label], cost, base, target,
                 ' '.join('%.0f' % x for x in samples[label]), ' '.join('%.0f' % x for x in samples[base_label])))
        row('bitmap-cost-' + label.replace(', ', '-').replace(' ', '-'), 'write IOPS cost, ' + label, '% IOPS', False,
            {'blockd': cost}, target='< %d%%' % target, goal={'max': target}, group='bitmaps')
        cb, cl = med[base_label + ' cpu'], med[label + ' cpu']
        print('    daemon CPU per write: %.2f us vs %.2f us without (+%.1f%%)' % (cl, cb, 100 * (cl - cb) / cb))


def memory_bytes(nbits):
    """hbitmap's layout: 64-bit words per level until a single top word."""
    total, bits = 0, nbits
    while True:
        words = max(1, (bits + 63) // 64)
        total += words * 8
        if words == 1:
            return total
        bits = words


def main():
    if ONLY in (None, 'walk'):
        tb = walk_time(blockd())
        tq = walk_time(qsd())
        print('bitmap walk, 1 TiB, 10000 dirty 64 KiB extents: blockd %.1f ms, qemu-storage-daemon '
              '%.1f ms (%.0f%% of QEMU; target <= 50%%)' % (tb * 1e3, tq * 1e3, 100 * tb / tq))
        row('bitmap-walk', 'bitmap walk, libnbd, best of 5', 'ms', False,
            {'blockd': tb * 1e3, 'qemu-storage-daemon': tq * 1e3}, target='time <= 1/2 qsd',
            goal={'ratio': 2, 'vs': 'qemu-storage-daemon'}, group='bitmaps')
    if ONLY in (None, 'raw'):
        r = tracking_cost((('none', []),
                           ('1 bitmap', [{}]),
                           ('8 bitmaps', [{}] * 8),
                           ('1 persistent', [{'persistent': True}])), 'raw')
        report(r, 'none', (('1 bitmap', 5), ('8 bitmaps', 5), ('1 persistent', 15)))
    if ONLY in (None, 'qcow2'):
        r = tracking_cost((('qcow2, none', []),
                           ('qcow2, 1 persistent', [{'persistent': True}])), 'qcow2')
        report(r, 'qcow2, none', (('qcow2, 1 persistent', 10),))
    if ONLY in (None, 'memory'):
        nbits = TiB // GRAN
        mem = memory_bytes(nbits)
        print('bitmap memory for 1 TiB at 64 KiB: %d bytes (%.1f%% over one bit per granule; '
              'target <= 10%%)' % (mem, 100 * (mem - nbits / 8) / (nbits / 8)))
        row('bitmap-memory', 'bitmap memory over 1 bit/granule', '% over', False,
            {'blockd': 100 * (mem - nbits / 8) / (nbits / 8)}, target='<= 10%', goal={'max': 10}, group='bitmaps')


main()
