#!/usr/bin/python3
"""Backup benchmark (issue 5), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-backup.py

1. Full backup of a 2 GiB node (a raw file of non-zero data in /dev/shm)
   to an NBD target (nbdkit memory plugin), blockd against
   qemu-storage-daemon in the same run (target: blockd >= 2x faster).
2. Incremental backup with 1 % of the node dirty (scattered 64 KiB writes)
   after a full backup that started the bitmap (target: at most 1.5 % of
   the full backup's time).
3. Guest 4 KiB write latency (median and p99 over random offsets) with no
   backup and during a backup to a slow target (nbdkit delay filter).
BENCH_SIZE (bytes) and BENCH_QUICK=1 shrink the run."""
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
from backup_lib import Daemon, Nbdkit, check, connect, fail, wait_job_end  # noqa: E402

QUICK = os.environ.get('BENCH_QUICK') == '1'
SIZE = int(os.environ.get('BENCH_SIZE', (256 << 20) if QUICK else (2 << 30)))
CLUSTER = 64 << 10


def blockd():
    path = os.environ.get('BLOCKD', 'build-release/blockd')
    if not os.access(path, os.X_OK):
        fail('BLOCKD=%s is not executable' % path)
    return [path]


def make_source(path):
    block = bytes(random.Random(1).randrange(1, 256) for _ in range(1 << 20))
    with open(path, 'wb') as f:
        for _ in range(SIZE >> 20):
            f.write(block)


def ok(r, what):
    if 'return' not in r:
        fail('%s: %r' % (what, r))


def run_backup(q, job, target, **kw):
    args = {'job-id': job, 'device': 'src', 'target': target, 'sync': 'full'}
    args.update(kw)
    t0 = time.monotonic()
    ok(q.cmd('blockdev-backup', args), 'backup ' + job)
    evs = wait_job_end(q, job, timeout=600)
    elapsed = time.monotonic() - t0
    done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
    if not done or 'error' in done[0]:
        fail('backup %s failed: %r' % (job, done))
    return elapsed


def latencies(sock, export, n=200):
    h = connect(sock, export)
    rng = random.Random(7)
    out = []
    buf = b'\x99' * 4096
    for _ in range(n):
        off = rng.randrange(0, SIZE // 4096) * 4096
        t0 = time.perf_counter()
        h.pwrite(buf, off)
        out.append((time.perf_counter() - t0) * 1000)
    h.shutdown()
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1]


def measure(cmd, shm):
    src = os.path.join(shm, 'src.raw')
    make_source(src)
    res = {}
    with Daemon(cmd) as d, Nbdkit('memory', str(SIZE)) as full_t, Nbdkit('memory', str(SIZE)) as inc_t, \
            Nbdkit('memory', str(SIZE), 'delay-write=20ms', 'delay-zero=20ms', filters=['delay']) as slow_t:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': src}), 'src')
        nbd_sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': nbd_sock}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'name': 'src',
                                      'writable': True}), 'export')
        for name, t in (('full', full_t), ('inc', inc_t), ('slow', slow_t)):
            ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': name,
                                      'server': {'type': 'unix', 'path': t.sock}}), 'target ' + name)
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b'}), 'bitmap')
        res['full'] = run_backup(q, 'f', 'full', bitmap='b', **{'bitmap-mode': 'on-success'})
        h = connect(nbd_sock, 'src')
        rng = random.Random(3)
        clusters = rng.sample(range(SIZE // CLUSTER), SIZE // CLUSTER // 100)
        for c in clusters:
            h.pwrite(b'\x77' * CLUSTER, c * CLUSTER)
        h.flush()
        h.shutdown()
        res['inc'] = run_backup(q, 'i', 'inc', sync='incremental', bitmap='b')
        res['lat_idle'] = latencies(nbd_sock, 'src')
        # The background copy is held back (speed 1) so that every guest
        # write pays for copy-before-write to the slow target.
        ok(q.cmd('blockdev-backup', {'job-id': 's', 'device': 'src', 'target': 'slow', 'sync': 'full',
                                     'speed': 1}), 'slow')
        time.sleep(0.2)
        res['lat_backup'] = latencies(nbd_sock, 'src', n=50)
        ok(q.cmd('job-cancel', {'id': 's'}), 'cancel slow')
        wait_job_end(q, 's', timeout=120)
        q.close()
        d.stop()
    os.unlink(src)
    return res


def main():
    shm = tempfile.mkdtemp(prefix='bench-backup.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        mib = SIZE / (1 << 20)
        ours = measure(blockd(), shm)
        theirs = measure(['qemu-storage-daemon'], shm) if shutil.which('qemu-storage-daemon') else None
        print('full backup of %d MiB to nbdkit memory:' % mib)
        print('  blockd               %7.2f s  %8.1f MiB/s' % (ours['full'], mib / ours['full']))
        if theirs:
            print('  qemu-storage-daemon  %7.2f s  %8.1f MiB/s' % (theirs['full'], mib / theirs['full']))
            print('  speed-up             %7.2fx (target >= 2x)' % (theirs['full'] / ours['full']))
        for name, r in (('blockd', ours), ('qemu-storage-daemon', theirs)):
            if r:
                print('incremental, 1 %% dirty, %s: %.3f s = %.2f %% of the full backup (target <= 1.5 %%)'
                      % (name, r['inc'], 100 * r['inc'] / r['full']))
                print('4 KiB write latency, %s: idle median %.3f ms p99 %.3f ms; during a backup to a slow '
                      'target median %.3f ms p99 %.3f ms' % ((name,) + r['lat_idle'] + r['lat_backup']))
        check(ours['inc'] < ours['full'], 'incremental slower than full')
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
