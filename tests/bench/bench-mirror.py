#!/usr/bin/python3
"""Mirror benchmark (issue 6), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-mirror.py

1. Time to mirror a 2 GiB node (a raw file of non-zero data in /dev/shm) to
   an NBD target (a fresh nbdkit memory plugin each time) until READY,
   blockd and qemu-storage-daemon running side by side, a warm-up round
   then BENCH_ROUNDS alternating rounds; medians and their ratio (target:
   blockd >= 2x faster).  Both with nbdkit's default allocator and with
   allocator=malloc (the default one caps every client, see bench-backup).
2. Guest write IOPS (one client, random 4 KiB writes, one at a time) with
   no mirror and while a READY mirror runs, in background and
   write-blocking copy mode.
3. The same at queue depth 16 (fio's nbd engine, one connection; issue
   18's measure: write-blocking should keep >= 50 % of the IOPS without a
   job), BENCH_ROUNDS rounds of every mode in turn, medians of the
   per-round ratios (the machine's load swings between rounds).
BENCH_SIZE (bytes), BENCH_ROUNDS and BENCH_QUICK=1 shrink the run; with
BENCH_ROWS set, the medians are appended there for run-all.sh's summary."""
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lib import CEILING, QUICK, ROUNDS, SIZE, ok, report, start_daemons, with_ceiling  # noqa: E402
from bench_rows import ISSUE, row  # noqa: E402
from backup_lib import Nbdkit, check, wait_job_end, wait_status  # noqa: E402
from mirror_lib import Writer  # noqa: E402

WINDOW = 1.0 if QUICK else 3.0  # seconds of writes per IOPS figure


def iops(sock):
    """Acknowledged random 4 KiB writes per second over WINDOW seconds."""
    w = Writer(sock, 'src', None, size=SIZE, seed=5)
    w.start()
    time.sleep(WINDOW)
    return w.stop() / WINDOW


def iops_qd16(sock):
    """Random 4 KiB writes per second at queue depth 16 over WINDOW seconds (fio)."""
    p = subprocess.run(['fio', '--name=bench', '--ioengine=nbd', '--uri=nbd+unix:///src?socket=' + sock,
                        '--rw=randwrite', '--bs=4k', '--iodepth=16', '--size=%d' % SIZE,
                        '--runtime=%g' % WINDOW, '--time_based', '--output-format=json'],
                       capture_output=True, text=True)
    check(p.returncode == 0, 'fio failed: %s' % p.stderr[-500:])
    return json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]['write']['iops']


@contextlib.contextmanager
def mirror_to_ready(q, job, mode, *nbdkit_args):
    """A mirror of src to a fresh nbdkit memory target, yielded once READY
    with the seconds it took; cancelled (force) and cleaned up after."""
    with Nbdkit('memory', str(SIZE), *nbdkit_args) as t:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': job,
                                  'server': {'type': 'unix', 'path': t.sock}}), 'target')
        t0 = time.monotonic()
        ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': 'src', 'target': job,
                                     'sync': 'full', 'copy-mode': mode}), 'mirror')
        wait_status(q, job, 'ready', timeout=600)
        yield time.monotonic() - t0
        ok(q.cmd('block-job-cancel', {'device': job, 'force': True}), 'cancel')
        wait_job_end(q, job, timeout=120)
        ok(q.cmd('blockdev-del', {'node-name': job}), 'del target')


def ready_trial(allocator):
    def trial(name, st, rnd):
        with mirror_to_ready(st['q'], 'm-%s-%d' % (allocator, rnd), 'background',
                             'allocator=' + allocator) as took:
            return took
    return trial


def qd16_report(name, st):
    """IOPS at QD16 with no job and under a READY mirror in each copy mode,
    ROUNDS rounds with the modes in rotating order; returns mode -> the
    median of the per-round percentages of the IOPS without a job, and
    'ceiling' -> the same for the target server's own IOPS (fio straight
    into a fresh nbdkit memory target): a write-blocking mirror writes every
    guest write there too, so it cannot keep more than that."""
    modes = ('none', 'background', 'write-blocking', 'target')
    res = {m: [] for m in modes}
    iops_qd16(st['nbd'])  # warm-up
    for rnd in range(ROUNDS):
        for mode in modes[rnd % 4:] + modes[:rnd % 4]:
            if mode == 'none':
                res[mode].append(iops_qd16(st['nbd']))
                continue
            if mode == 'target':
                with Nbdkit('memory', str(SIZE), 'allocator=malloc') as t:
                    res[mode].append(iops_qd16(t.sock))
                continue
            with mirror_to_ready(st['q'], 'q%d-%s' % (rnd, mode), mode, 'allocator=malloc'):
                res[mode].append(iops_qd16(st['nbd']))
    line = 'guest 4 KiB write IOPS at QD16, %s: no mirror %.0f' % (name, statistics.median(res['none']))
    out = {}
    for mode in modes[1:]:
        ratios = [x / y for x, y in zip(res[mode], res['none'])]
        out[mode] = 100 * statistics.median(ratios)
        what = 'the target alone (fio into nbdkit memory)' if mode == 'target' else 'READY mirror, ' + mode
        line += '; %s %.0f (%.0f %% of no mirror, per round: %s)' % (
            what, statistics.median(res[mode]), out[mode], ' '.join('%.0f' % (100 * r) for r in ratios))
    print(line)
    out['ceiling'] = out.pop('target')
    return out


# Issue 18's targets for the guest's write IOPS under a READY mirror.
IOPS_TARGETS = {'background': 80, 'write-blocking': 50}


def iops_rows(suffix, title, group, pct):
    """One row per copy mode: each daemon's IOPS under the mirror as a
    percentage of its IOPS without one; the write-blocking row's ceiling is
    the target server's own IOPS as a percentage of blockd's (when measured)."""
    for mode, floor in IOPS_TARGETS.items():
        ceiling = pct.get('blockd', {}).get('ceiling') if mode == 'write-blocking' else None
        row('mirror-%s-%s' % (mode, suffix), '%s, %s mirror' % (title, mode), '% no-job', True,
            {n: v[mode] for n, v in pct.items()}, target='>=%d%% of no mirror' % floor,
            goal={'min': floor}, group=group, ceiling=ceiling,
            ceiling_name='target alone' if ceiling is not None else None)


def ready_row(row_id, title, med):
    """Time to READY against qemu-storage-daemon (issue 6: >= 2x) and the
    nbdcopy ceiling into the same kind of target."""
    row(row_id, title, 's', False, {n: v for n, v in med.items() if n != CEILING},
        ceiling=med.get(CEILING), ceiling_name='nbdcopy', target='>=2x qsd',
        goal={'ratio': 2, 'vs': 'qemu-storage-daemon'}, group='mirror')


def main():
    shm = tempfile.mkdtemp(prefix='bench-mirror.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        with contextlib.ExitStack() as stack:
            setups, st_src = start_daemons(stack, shm)
            mib = SIZE / (1 << 20)
            ready_row('mirror-ready', 'mirror %d MiB to READY, nbdkit memory' % mib,
                      report('mirror of %d MiB to nbdkit memory until READY (default allocator):' % mib, mib,
                             with_ceiling(setups, ready_trial('sparse'), st_src, 'allocator=sparse'), target=2))
            ready_row('mirror-ready-malloc', 'mirror %d MiB to READY, nbdkit malloc' % mib,
                      report('mirror of %d MiB to nbdkit memory allocator=malloc until READY:' % mib, mib,
                             with_ceiling(setups, ready_trial('malloc'), st_src, 'allocator=malloc'), target=2))
            qd1 = {}
            for name, st in setups.items():
                q = st['q']
                idle = iops(st['nbd'])
                res = {}
                for mode in ('background', 'write-blocking'):
                    with mirror_to_ready(q, 'w-' + mode, mode, 'allocator=malloc') as took:
                        res[mode] = (took, iops(st['nbd']))
                print('guest 4 KiB write IOPS, %s: no mirror %.0f; READY mirror, background %.0f, '
                      'write-blocking %.0f (READY after %.2f s and %.2f s)'
                      % (name, idle, res['background'][1], res['write-blocking'][1],
                         res['background'][0], res['write-blocking'][0]))
                check(res['write-blocking'][1] > 0, '%s: no guest write completed in write-blocking mode' % name)
                qd1[name] = {m: 100 * res[m][1] / idle for m in res}
            iops_rows('qd1', 'write IOPS QD1 (one run)', 'mirror', qd1)
            if shutil.which('fio'):
                iops_rows('qd16', 'write IOPS QD16', ISSUE, {name: qd16_report(name, st) for name, st in setups.items()})
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
