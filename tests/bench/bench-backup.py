#!/usr/bin/python3
"""Backup benchmark (issue 5), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-backup.py

1. Full backup of a 2 GiB node (a raw file of non-zero data in /dev/shm)
   to an NBD target (a fresh nbdkit memory plugin each time), blockd and
   qemu-storage-daemon running side by side, a warm-up round then
   BENCH_ROUNDS alternating rounds; medians and their ratio (target:
   blockd >= 2x faster).
2. Incremental backup with 1 % of the node dirty (scattered 64 KiB writes,
   other clusters each round) to a fresh raw file served by qemu-nbd, after
   a full backup that started the bitmap; alternating rounds, medians
   (targets: at most 1.5 % of the median full backup's time, issue 5; at
   most half of qemu-storage-daemon's time, issue 18).  Its ceiling: a
   libnbd client writing the same clusters straight into a fresh qemu-nbd
   target, in the same alternating rounds.
3. Guest 4 KiB write latency (median and p99 over random offsets) with no
   backup and during a backup to a slow target (nbdkit delay filter).
BENCH_SIZE (bytes), BENCH_ROUNDS and BENCH_QUICK=1 shrink the run; with
BENCH_ROWS set, the medians are appended there for run-all.sh's summary."""
import contextlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lib import CEILING, ROUNDS, SIZE, alternate, ok, report, start_daemons, with_ceiling  # noqa: E402
from bench_rows import ISSUE, row  # noqa: E402
from backup_lib import Nbdkit, check, connect, fail, import_nbd, wait_job_end  # noqa: E402

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


@contextlib.contextmanager
def qemu_nbd(shm, name):
    """A fresh sparse raw file in `shm` served by qemu-nbd (issue 18's
    incremental backup target); yields its socket."""
    img = os.path.join(shm, name + '.raw')
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    sock = img + '.sock'
    p = subprocess.Popen(['qemu-nbd', '-t', '-f', 'raw', '-k', sock, img],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:   # the socket file appears at bind, a moment before listen
            with socket.socket(socket.AF_UNIX) as c:
                if c.connect_ex(sock) == 0:
                    break
            if p.poll() is not None or time.monotonic() > deadline:
                fail('qemu-nbd did not start on %s' % sock)
            time.sleep(0.02)
        yield sock
    finally:
        p.terminate()
        p.wait()
        os.unlink(img)


@contextlib.contextmanager
def qemu_nbd_target(q, name, shm):
    """qemu_nbd() added as node `name`, removed after."""
    with qemu_nbd(shm, name) as sock:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': name,
                                  'server': {'type': 'unix', 'path': sock}}), 'target ' + name)
        try:
            yield
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


def start_bitmap(st):
    """Bitmap b on src, started by a full backup; returns its seconds."""
    q = st['q']
    ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b'}), 'bitmap')
    with nbd_target(q, 'base'):
        return run_backup(q, 'bf', 'base', bitmap='b', **{'bitmap-mode': 'on-success'})


def dirty_clusters(rnd):
    """The clusters round `rnd` writes: 1 % of them, other ones each round."""
    return random.Random(3 + rnd).sample(range(SIZE // CLUSTER), SIZE // CLUSTER // 100)


def incremental_ceiling(shm, rnd, depth=16):
    """What the target takes at best: seconds for a libnbd client to write
    round `rnd`'s dirty clusters, in order, `depth` at a time, into a fresh
    qemu-nbd target (the incremental's data and nothing else: no job, no
    source reads, no QMP)."""
    with qemu_nbd(shm, 'ceiling-%d' % rnd) as sock:
        h = connect(sock, '')
        buf = import_nbd().Buffer.from_bytearray(bytearray(b'\x77' * CLUSTER))
        t0 = time.monotonic()
        for c in sorted(dirty_clusters(rnd)):
            while h.aio_in_flight() >= depth:
                h.poll(-1)
            h.aio_pwrite(buf, c * CLUSTER)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        took = time.monotonic() - t0
        h.shutdown()
        return took


def incremental_trial(shm):
    """A trial for alternate(): 1 % of the clusters written (untimed), then
    the incremental backup of them to qemu-nbd, which clears the bitmap for
    the next round; for the ceiling, incremental_ceiling()."""
    def trial(name, st, rnd):
        if name == CEILING:
            return incremental_ceiling(shm, rnd)
        h = connect(st['nbd'], 'src')
        for c in dirty_clusters(rnd):
            h.pwrite(b'\x77' * CLUSTER, c * CLUSTER)
        h.flush()
        h.shutdown()
        node = 'inc-%d' % rnd
        with qemu_nbd_target(st['q'], node, shm):
            return run_backup(st['q'], node, node, sync='incremental', bitmap='b')
    return trial


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


def full_row(row_id, title, group, med):
    """A full-backup row: issue 18's target, >= 2x qemu-storage-daemon or
    >= 90 % of the target's own ceiling (nbdcopy into the same target)."""
    row(row_id, title, 's', False, {n: v for n, v in med.items() if n != CEILING},
        ceiling=med.get(CEILING), ceiling_name='nbdcopy', target='>=2x qsd or >=90% of ceiling',
        goal={'ratio': 2, 'vs': 'qemu-storage-daemon', 'ceiling_frac': 0.9}, group=group)


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
            full_row('full-backup', 'full backup %d MiB, nbdkit memory' % mib, ISSUE, med)
            full_row('full-backup-malloc', 'full backup %d MiB, nbdkit malloc' % mib, 'backup',
                     report('full backup of %d MiB to nbdkit memory allocator=malloc:' % mib, mib,
                            with_ceiling(setups, full_trial('malloc'), st_src, 'allocator=malloc'), target=2))
            started = {name: start_bitmap(st) for name, st in setups.items()}
            # At least 5 rounds: a quick run's incremental takes milliseconds.
            incs = alternate(dict(setups, **{CEILING: None}), incremental_trial(shm), rounds=max(ROUNDS, 5))
            inc_ceiling = statistics.median(incs.pop(CEILING))
            inc = {}
            for name, runs in incs.items():
                inc[name] = statistics.median(runs)
                print('incremental, 1 %% dirty, to qemu-nbd, %s: median %.3f s = %.2f %% of the median full backup '
                      '(target <= 1.5 %%; the full backup that started the bitmap took %.2f s; runs: %s)'
                      % (name, inc[name], 100 * inc[name] / med[name], started[name],
                         ' '.join('%.3f' % x for x in runs)))
                check(inc[name] < started[name], '%s: incremental slower than full' % name)
            if 'qemu-storage-daemon' in inc:
                print('  speed-up             %7.2fx (target >= 2x)' % (inc['qemu-storage-daemon'] / inc['blockd']))
            print('  the target alone     median %.3f s (a libnbd client writing the same clusters into a fresh '
                  'qemu-nbd, 16 at a time; blockd at %.0f %% of it)' % (inc_ceiling, 100 * inc_ceiling / inc['blockd']))
            row('incremental-backup', 'incremental backup, 1 % dirty, qemu-nbd', 'ms', False,
                {n: 1e3 * v for n, v in inc.items()}, ceiling=1e3 * inc_ceiling, ceiling_name='qemu-nbd alone',
                target='time <= 1/2 qsd', goal={'ratio': 2, 'vs': 'qemu-storage-daemon'}, group=ISSUE)
            lat = {}
            for name, st in setups.items():
                idle, busy = latency(st)
                lat[name] = busy
                print('4 KiB write latency, %s: idle median %.3f ms p99 %.3f ms; during a backup to a slow '
                      'target median %.3f ms p99 %.3f ms' % ((name,) + idle + busy))
            for i, what in enumerate(('median', 'p99')):
                row('backup-write-latency-' + what, '4 KiB write latency in backup, ' + what, 'ms', False,
                    {n: v[i] for n, v in lat.items()}, group='backup')
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
