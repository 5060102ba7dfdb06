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
   per-round ratios (the machine's load swings between rounds).  Its
   ceiling: the best daemon's IOPS with the target itself exported as an
   nbd node (a write-blocking mirror does that and a local write), as a
   percentage of blockd's IOPS with no mirror; that export's write and
   read IOPS are rows of their own.
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


def iops_qd16(sock, export='src', rw='randwrite'):
    """Random 4 KiB I/O per second at queue depth 16 over WINDOW seconds (fio)."""
    p = subprocess.run(['fio', '--name=bench', '--ioengine=nbd', '--uri=nbd+unix:///%s?socket=%s' % (export, sock),
                        '--rw=' + rw, '--bs=4k', '--iodepth=16', '--size=%d' % SIZE,
                        '--runtime=%g' % WINDOW, '--time_based', '--output-format=json'],
                       capture_output=True, text=True)
    check(p.returncode == 0, 'fio failed: %s' % p.stderr[-500:])
    job = json.loads(p.stdout[p.stdout.index('{'):])['jobs'][0]
    return job['read' if rw.endswith('read') else 'write']['iops']


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


@contextlib.contextmanager
def proxy_export(q, name):
    """A fresh nbdkit memory target added as nbd node `name` and exported
    under that name by the daemon's NBD server (the guest's writes then go
    to the target and nowhere else); removed after."""
    with Nbdkit('memory', str(SIZE), 'allocator=malloc') as t:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': name,
                                  'server': {'type': 'unix', 'path': t.sock}}), 'proxy node')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': name, 'node-name': name, 'name': name,
                                      'writable': True}), 'proxy export')
        yield
        ok(q.cmd('block-export-del', {'id': name}), 'del proxy export')
        deadline = time.monotonic() + 30
        while any(e['id'] == name for e in q.cmd('query-block-exports')['return']):
            check(time.monotonic() < deadline, 'proxy export %s did not go' % name)
            time.sleep(0.05)
        ok(q.cmd('blockdev-del', {'node-name': name}), 'del proxy node')


def ready_trial(allocator):
    def trial(name, st, rnd):
        with mirror_to_ready(st['q'], 'm-%s-%d' % (allocator, rnd), 'background',
                             'allocator=' + allocator) as took:
            return took
    return trial


def qd16_report(name, st):
    """IOPS at QD16 with no job and under a READY mirror in each copy mode,
    ROUNDS rounds with the modes in rotating order.  Also, as yardsticks:
    fio straight into a fresh nbdkit memory target ('target'), and through
    the daemon to such a target exported as an nbd node ('proxy': what a
    write-blocking mirror must do at the least, on top of the local write),
    for writes and for reads ('proxy-read').  Returns mode -> the median of
    the per-round percentages of the IOPS without a job, and 'iops' -> mode
    -> the median IOPS."""
    modes = ('none', 'background', 'write-blocking', 'target', 'proxy', 'proxy-read')
    res = {m: [] for m in modes}
    iops_qd16(st['nbd'])  # warm-up
    for rnd in range(ROUNDS):
        k = rnd % len(modes)
        for mode in modes[k:] + modes[:k]:
            if mode == 'none':
                res[mode].append(iops_qd16(st['nbd']))
            elif mode == 'target':
                with Nbdkit('memory', str(SIZE), 'allocator=malloc') as t:
                    res[mode].append(iops_qd16(t.sock, ''))
            elif mode.startswith('proxy'):
                px = 'px%d%s' % (rnd, mode[5:])
                with proxy_export(st['q'], px):
                    res[mode].append(iops_qd16(st['nbd'], px, 'randread' if mode == 'proxy-read' else 'randwrite'))
            else:
                with mirror_to_ready(st['q'], 'q%d-%s' % (rnd, mode), mode, 'allocator=malloc'):
                    res[mode].append(iops_qd16(st['nbd']))
    med = {m: statistics.median(v) for m, v in res.items()}
    line = 'guest 4 KiB write IOPS at QD16, %s: no mirror %.0f' % (name, med['none'])
    out = {'iops': med}
    for mode in modes[1:]:
        ratios = [x / y for x, y in zip(res[mode], res['none'])]
        out[mode] = 100 * statistics.median(ratios)
        what = {'target': 'the target alone (fio into nbdkit memory)',
                'proxy': 'the target exported as an nbd node',
                'proxy-read': 'random reads from it'}.get(mode, 'READY mirror, ' + mode)
        line += '; %s %.0f (%.0f %% of no mirror, per round: %s)' % (
            what, med[mode], out[mode], ' '.join('%.0f' % (100 * r) for r in ratios))
    print(line)
    return out


# Issue 18's targets for the guest's write IOPS under a READY mirror.
IOPS_TARGETS = {'background': 80, 'write-blocking': 50}


def iops_rows(suffix, title, group, pct, ceiling=None):
    """One row per copy mode: each daemon's IOPS under the mirror as a
    percentage of its IOPS without one; `ceiling` is the write-blocking
    row's (when measured)."""
    for mode, floor in IOPS_TARGETS.items():
        c = ceiling if mode == 'write-blocking' else None
        row('mirror-%s-%s' % (mode, suffix), '%s, %s mirror' % (title, mode), '% no-job', True,
            {n: v[mode] for n, v in pct.items()}, target='>=%d%% of no mirror' % floor,
            goal={'min': floor}, group=group, ceiling=c,
            ceiling_name='best nbd-node export' if c is not None else None)


def proxy_ceiling(qd16):
    """A write-blocking mirror sends every guest write to its target and
    waits for it, after writing it to the source: it cannot keep more of
    the guest's IOPS than the best daemon here reaches when its export is
    the target itself (an nbd node), as a percentage of blockd's IOPS
    without a mirror."""
    best = max(v['iops']['proxy'] for v in qd16.values())
    return 100 * best / qd16['blockd']['iops']['none']


def proxy_rows(qd16):
    """The nbd-node export's own figures, against qemu-storage-daemon's."""
    for mode, rw in (('proxy', 'write'), ('proxy-read', 'read')):
        row('nbd-node-rand%s-qd16' % rw, 'rand%s QD16, export of an nbd node (nbdkit memory)' % rw, 'IOPS', True,
            {n: v['iops'][mode] for n, v in qd16.items()}, group='NBD, no issue-18 target')


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
                qd16 = {name: qd16_report(name, st) for name, st in setups.items()}
                iops_rows('qd16', 'write IOPS QD16', ISSUE, qd16, ceiling=proxy_ceiling(qd16))
                proxy_rows(qd16)
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
