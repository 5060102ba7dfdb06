#!/usr/bin/python3
"""Backup benchmark (issue 5), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-backup.py

1. Full backup of a 2 GiB node (a raw file of non-zero data in /dev/shm)
   to an NBD target (a fresh nbdkit memory plugin each time), blockd and
   qemu-storage-daemon running side by side, a warm-up round then
   BENCH_ROUNDS alternating rounds; medians and their ratio (target:
   blockd >= 2x faster).
2. Incremental backup with 1 % of the node dirty (scattered 64 KiB writes)
   after a full backup that started the bitmap (target: at most 1.5 % of
   the median full backup's time).
3. Guest 4 KiB write latency (median and p99 over random offsets) with no
   backup and during a backup to a slow target (nbdkit delay filter).
BENCH_SIZE (bytes), BENCH_ROUNDS and BENCH_QUICK=1 shrink the run."""
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lib import SIZE, ok, report, start_daemons, with_ceiling  # noqa: E402
from backup_lib import Nbdkit, check, connect, fail, wait_job_end  # noqa: E402

CLUSTER = 64 << 10


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


@contextlib.contextmanager
def nbd_target(q, name, *args, **kw):
    """A fresh nbdkit memory target added as node `name`, deleted after."""
    with Nbdkit('memory', str(SIZE), *args, **kw) as t:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': name,
                                  'server': {'type': 'unix', 'path': t.sock}}), 'target ' + name)
        try:
            yield t
        finally:
            ok(q.cmd('blockdev-del', {'node-name': name}), 'del ' + name)


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


def full_trial(allocator):
    def trial(name, st, rnd):
        q = st['q']
        node = 'full-%s-%d' % (allocator, rnd)
        with nbd_target(q, node, 'allocator=' + allocator):
            return run_backup(q, node, node)
    return trial


def incremental(st):
    """(full seconds, incremental seconds) with 1 % of the clusters dirty."""
    q = st['q']
    ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b'}), 'bitmap')
    with nbd_target(q, 'base'):
        full = run_backup(q, 'bf', 'base', bitmap='b', **{'bitmap-mode': 'on-success'})
    h = connect(st['nbd'], 'src')
    rng = random.Random(3)
    for c in rng.sample(range(SIZE // CLUSTER), SIZE // CLUSTER // 100):
        h.pwrite(b'\x77' * CLUSTER, c * CLUSTER)
    h.flush()
    h.shutdown()
    with nbd_target(q, 'inc'):
        inc = run_backup(q, 'bi', 'inc', sync='incremental', bitmap='b')
    return full, inc


def latency(st):
    q = st['q']
    idle = latencies(st['nbd'], 'src')
    with nbd_target(q, 'slow', 'delay-write=20ms', 'delay-zero=20ms', filters=['delay']):
        # The background copy is held back (speed 1) so that every guest
        # write pays for copy-before-write to the slow target.
        ok(q.cmd('blockdev-backup', {'job-id': 's', 'device': 'src', 'target': 'slow', 'sync': 'full',
                                     'speed': 1}), 'slow')
        time.sleep(0.2)
        busy = latencies(st['nbd'], 'src', n=50)
        ok(q.cmd('job-cancel', {'id': 's'}), 'cancel slow')
        wait_job_end(q, 's', timeout=120)
    return idle, busy


def main():
    shm = tempfile.mkdtemp(prefix='bench-backup.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        with contextlib.ExitStack() as stack:
            setups, st_src = start_daemons(stack, shm)
            mib = SIZE / (1 << 20)
            # nbdkit's default (sparse) allocator takes a write lock and
            # faults in fresh pages for every write, which caps what any
            # client reaches (nbdcopy included); allocator=malloc shows
            # what the daemons themselves can do.
            med = report('full backup of %d MiB to nbdkit memory (default allocator):' % mib, mib,
                         with_ceiling(setups, full_trial('sparse'), st_src, 'allocator=sparse'), target=2)
            report('full backup of %d MiB to nbdkit memory allocator=malloc:' % mib, mib,
                   with_ceiling(setups, full_trial('malloc'), st_src, 'allocator=malloc'), target=2)
            for name, st in setups.items():
                full, inc = incremental(st)
                print('incremental, 1 %% dirty, %s: %.3f s = %.2f %% of the median full backup '
                      '(target <= 1.5 %%; the full backup that started the bitmap took %.2f s)'
                      % (name, inc, 100 * inc / med[name], full))
                check(inc < full, '%s: incremental slower than full' % name)
            for name, st in setups.items():
                idle, busy = latency(st)
                print('4 KiB write latency, %s: idle median %.3f ms p99 %.3f ms; during a backup to a slow '
                      'target median %.3f ms p99 %.3f ms' % ((name,) + idle + busy))
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
