#!/usr/bin/python3
"""Backing-chain jobs benchmark (issue 14), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-chain.py

A qcow2 chain base <- mid <- top in /dev/shm: base full of data, mid
holding a quarter of the disk (whole MiB here and there), top an eighth.
Each row times one job on a fresh copy of the image it changes, blockd and
qemu-storage-daemon side by side in alternating rounds after a warm-up
round, with the same copy by `qemu-img convert` (reading the chain,
writing a new qcow2 image) as the ceiling; medians and their ratios.

  stream: block-stream of top, the whole chain (top ends alone).
  commit: block-commit of mid into base (an intermediate commit: the
          quarter of the disk mid holds, written over base's data; top
          ends with base as its backing file), `qemu-img commit` of mid
          as the ceiling;
  active commit: block-commit of top (and mid) into base, job-complete at
          READY (the chain's users move to base), `qemu-img commit -b
          base` of top as the ceiling.
          (Their MiB/s divide the chain's size; a commit moves the quarter
          of it that mid holds, top's eighth lying inside mid's quarter.)

BENCH_SIZE (bytes), BENCH_ROUNDS and BENCH_QUICK=1 (256 MiB) shrink the
run.  The machine the numbers come from is shared and noisy: compare the
ratios of one run, not absolute figures across runs.  With BENCH_ROWS set,
the medians are also appended there for run-all.sh's summary."""
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lib import SIZE, alternate, daemons, ok, report  # noqa: E402
from bench_rows import row  # noqa: E402
from backup_lib import Daemon, check, wait_job_end, wait_until  # noqa: E402

MiB = 1 << 20
CEILING = 'qemu-img convert (ceiling)'


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def make_chain(shm):
    """The template chain: base.qcow2, mid.qcow2, top.qcow2 (top is copied per trial)."""
    paths = {n: os.path.join(shm, n + '.qcow2') for n in ('base', 'mid', 'top')}
    raw = os.path.join(shm, 'base.raw')
    with open(raw, 'wb') as f:
        block = os.urandom(MiB)
        for _ in range(SIZE // MiB):
            f.write(block)
    run('qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, paths['base'])
    os.unlink(raw)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', paths['mid'], str(SIZE))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', paths['top'], str(SIZE))
    # mid: 1 MiB of every 4; top: 1 MiB of every 8 (one qemu-io run per image).
    for name, every, pattern in (('mid', 4, 0x22), ('top', 8, 0x33)):
        cmds = []
        for off in range(MiB, SIZE, every * MiB):
            cmds += ['-c', 'write -P 0x%x %d %d' % (pattern, off, MiB)]
        for i in range(0, len(cmds), 1000):
            run('qemu-io', '-f', 'qcow2', *cmds[i:i + 1000], paths[name])
    return paths


def fresh_top(paths, name):
    """A copy of the template top (with the same backing file name) for one trial."""
    path = os.path.join(os.path.dirname(paths['top']), 'top-%s.qcow2' % name)
    shutil.copyfile(paths['top'], path)
    return path


def stream_trial(paths):
    def trial(name, st, rnd):
        top = fresh_top(paths, 'stream')
        try:
            if name == CEILING:
                out = top + '.convert'
                t0 = time.monotonic()
                run('qemu-img', 'convert', '-f', 'qcow2', '-O', 'qcow2', top, out)
                took = time.monotonic() - t0
                os.unlink(out)
                return took
            q = st['q']
            ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                      'file': {'driver': 'file', 'filename': top}}), 'top')
            job = 'stream-%d' % rnd
            t0 = time.monotonic()
            ok(q.cmd('block-stream', {'job-id': job, 'device': 'top'}), 'block-stream')
            evs = wait_job_end(q, job, timeout=1200)
            took = time.monotonic() - t0
            done = [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
            check(done and 'error' not in done[0]['data'], '%s: stream failed: %r' % (name, done))
            ok(q.cmd('blockdev-del', {'node-name': 'top'}), 'del top')
            if rnd == 0:   # the warm-up round checks the result, untimed
                info = subprocess.run(['qemu-img', 'info', '-U', top], capture_output=True, text=True).stdout
                check('backing file' not in info, '%s: top still has a backing file' % name)
                run('qemu-img', 'compare', '-q', '-U', top, paths['top'])
            return took
        finally:
            os.unlink(top)
    return trial


def fresh_chain(paths):
    """A directory with copies of base and top for one commit trial (mid,
    which a commit only reads, is linked), under the same names."""
    d = os.path.join(os.path.dirname(paths['top']), 'trial')
    shutil.rmtree(d, ignore_errors=True)
    os.mkdir(d)
    for n in ('base', 'top'):
        shutil.copyfile(paths[n], os.path.join(d, n + '.qcow2'))
    os.symlink(paths['mid'], os.path.join(d, 'mid.qcow2'))
    return d, {n: os.path.join(d, n + '.qcow2') for n in ('base', 'mid', 'top')}


def commit_trial(active):
    """block-commit of mid (intermediate) or of top (active, completed at
    READY) into base, on the chain opened by node name (blockd does not
    reopen a base opened read-only from a header); `qemu-img commit` of the
    same layers as the ceiling."""
    def factory(paths):
        def trial(name, st, rnd):
            d, p = fresh_chain(paths)
            try:
                if name == CEILING:
                    args = ['-b', p['base'], p['top']] if active else [p['mid']]
                    t0 = time.monotonic()
                    # -d: mid (linked, shared by every trial) and top keep their data.
                    run('qemu-img', 'commit', '-q', '-d', '-f', 'qcow2', *args)
                    return time.monotonic() - t0
                q = st['q']
                for n, backing in (('base', None), ('mid', 'base'), ('top', 'mid')):
                    args = {'driver': 'qcow2', 'node-name': n, 'file': {'driver': 'file', 'filename': p[n]}}
                    if backing:
                        args['backing'] = backing
                    ok(q.cmd('blockdev-add', args), 'blockdev-add ' + n)
                job = 'commit-%d' % rnd
                args = {'job-id': job, 'device': 'top', 'base-node': 'base'}
                if not active:
                    args['top-node'] = 'mid'
                t0 = time.monotonic()
                ok(q.cmd('block-commit', args), 'block-commit')
                if active:
                    wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY', timeout=1200)
                    ok(q.cmd('job-complete', {'id': job}), 'job-complete')
                evs = wait_job_end(q, job, timeout=1200)
                took = time.monotonic() - t0
                done = [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
                check(done and 'error' not in done[0]['data'], '%s: commit failed: %r' % (name, done))
                for n in ('top', 'mid', 'base'):
                    ok(q.cmd('blockdev-del', {'node-name': n}), 'del ' + n)
                if rnd == 0:   # the warm-up round checks the result, untimed
                    want = paths['top'] if active else paths['mid']
                    run('qemu-img', 'compare', '-q', '-U', '-f', 'qcow2', '-F', 'qcow2', p['base'], want)
                    if not active:
                        info = subprocess.run(['qemu-img', 'info', '-U', p['top']], capture_output=True,
                                              text=True).stdout
                        check('backing file: ' + p['base'] in info, '%s: top not on base: %s' % (name, info))
                return took
            finally:
                shutil.rmtree(d, ignore_errors=True)
        return trial
    return factory


# One row per job: (row id, title, trial factory, what the ceiling is).  block-commit rows go here, in
# the same form (a trial that starts the job on fresh copies of the images
# it changes and returns the seconds to its end, CEILING the same copy by
# qemu-img).
ROWS = [
    ('chain-stream', 'block-stream of the whole chain into top (%d MiB)', stream_trial, 'qemu-img convert'),
    ('chain-commit', 'block-commit of mid into base, intermediate (%d MiB chain)', commit_trial(False),
     'qemu-img commit'),
    ('chain-active-commit', 'block-commit of top and mid into base, active, completed at READY (%d MiB chain)',
     commit_trial(True), 'qemu-img commit'),
]


def main():
    shm = tempfile.mkdtemp(prefix='bench-chain.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        paths = make_chain(shm)
        mib = SIZE / MiB
        with contextlib.ExitStack() as stack:
            setups = {}
            for name, cmd in daemons():
                d = stack.enter_context(Daemon(cmd))
                q = d.qmp()
                stack.callback(q.close)
                setups[name] = {'q': q}
            setups[CEILING] = None
            for row_id, title, factory, ceiling in ROWS:
                times = alternate(setups, factory(paths))
                med = report(title % mib + ':', mib, {n: v for n, v in times.items() if n != CEILING})
                ceil = statistics.median(times[CEILING])
                print('  %-20s median %7.2f s  %8.1f MiB/s   (blockd at %.0f %% of its speed)'
                      % (ceiling, ceil, mib / ceil, 100 * ceil / med['blockd']))
                row(row_id, '%s, %d MiB chain' % (row_id.replace('chain-', '').replace('-', ' '), mib), 's', False,
                    med, ceiling=ceil, ceiling_name=ceiling, group='backing chain (issue 14)')
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
