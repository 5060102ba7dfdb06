"""Shared by the job benchmarks: blockd and qemu-storage-daemon side by
side, measured in alternating rounds after a warm-up round, so that a
noisy machine, a cold page cache or a cold nbdkit hit both alike; results
are medians and ratios of medians."""
import os
import random
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
from backup_lib import Daemon, Nbdkit, fail  # noqa: E402

CEILING = 'nbdcopy -C 4 (ceiling)'

QUICK = os.environ.get('BENCH_QUICK') == '1'
SIZE = int(os.environ.get('BENCH_SIZE', (256 << 20) if QUICK else (2 << 30)))
ROUNDS = int(os.environ.get('BENCH_ROUNDS', 2 if QUICK else 3))


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def blockd_cmd():
    path = os.environ.get('BLOCKD', 'build-release/blockd')
    if not os.access(path, os.X_OK):
        fail('BLOCKD=%s is not executable' % path)
    return [path]


def daemons():
    """(name, command) of every daemon to measure: blockd first, then
    BLOCKD_BEFORE as "blockd-before" if set (another build, measured in the
    same alternating rounds: before/after figures of a change on a noisy
    machine), then qemu-storage-daemon unless BENCH_NO_QSD=1."""
    out = [('blockd', blockd_cmd())]
    before = os.environ.get('BLOCKD_BEFORE')
    if before:
        if not os.access(before, os.X_OK):
            fail('BLOCKD_BEFORE=%s is not executable' % before)
        out.append(('blockd-before', [before]))
    if shutil.which('qemu-storage-daemon') and os.environ.get('BENCH_NO_QSD') != '1':
        out.append(('qemu-storage-daemon', ['qemu-storage-daemon']))
    return out


def make_source(path, size=SIZE):
    """A raw file of non-zero, incompressible-looking data."""
    block = bytes(random.Random(1).randrange(1, 256) for _ in range(1 << 20))
    with open(path, 'wb') as f:
        for _ in range(size >> 20):
            f.write(block)


def ok(r, what):
    if 'return' not in r:
        fail('%s: %r' % (what, r))


def alternate(setups, trial, rounds=ROUNDS):
    """Runs trial(name, state, round) -> seconds for every daemon, a
    warm-up round first (not counted), then `rounds` rounds whose order
    alternates.  `setups` maps name -> state.  Returns name -> [seconds]."""
    names = list(setups)
    times = {n: [] for n in names}
    for r in range(rounds + 1):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t = trial(n, setups[n], r)
            if r > 0:
                times[n].append(t)
    return times


def report(title, mib, times, target=None):
    """Prints the median time and rate per daemon and the ratio of medians."""
    print(title)
    med = {n: statistics.median(v) for n, v in times.items()}
    for n, v in times.items():
        if n == CEILING:
            continue
        print('  %-20s median %7.2f s  %8.1f MiB/s   (runs: %s)'
              % (n, med[n], mib / med[n], ' '.join('%.2f' % x for x in v)))
    if 'blockd-before' in med:
        print('  blockd vs before     %7.2fx faster' % (med['blockd-before'] / med['blockd']))
    if 'qemu-storage-daemon' in med:
        ratio = med['qemu-storage-daemon'] / med['blockd']
        print('  speed-up             %7.2fx%s' % (ratio, ' (target >= %gx)' % target if target else ''))
    if CEILING in med:
        print('  %-20s median %7.2f s  %8.1f MiB/s   (the target server\'s own limit; blockd at %.0f %% of it)'
              % ('nbdcopy -C 4', med[CEILING], mib / med[CEILING], 100 * med[CEILING] / med['blockd']))
    return med


def start_daemons(stack, shm):
    """Every daemon of daemons() started (entered on `stack`) with a 2 GiB
    file node `src` in `shm` exported writable as 'src'.  Returns
    (name -> {'q': QMP client, 'nbd': export socket}, one source file)."""
    setups = {}
    src = None
    for name, cmd in daemons():
        src = os.path.join(shm, 'src-%d.raw' % len(setups))
        make_source(src)
        d = stack.enter_context(Daemon(cmd))
        q = d.qmp()
        stack.callback(q.close)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': src}), 'src')
        nbd = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': nbd}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'name': 'src',
                                      'writable': True}), 'export')
        setups[name] = {'q': q, 'nbd': nbd}
    return setups, src


def ceiling_trial(src, *nbdkit_args):
    """A trial for alternate(): nbdcopy, libnbd's own copier with four
    connections, from the source file to a fresh nbdkit memory target -- what
    the target server itself can take, a ceiling for any client."""
    def trial(name, st, rnd):
        with Nbdkit('memory', str(SIZE), *nbdkit_args) as t:
            t0 = time.monotonic()
            subprocess.run(['nbdcopy', '-C', '4', src, 'nbd+unix:///?socket=' + t.sock], check=True)
            return time.monotonic() - t0
    return trial


def with_ceiling(setups, trial, src, *nbdkit_args):
    """alternate() over the daemons and the nbdcopy ceiling (if installed)."""
    if not shutil.which('nbdcopy'):
        return alternate(setups, trial)
    both = dict(setups)
    both[CEILING] = None
    ceil = ceiling_trial(src, *nbdkit_args)
    return alternate(both, lambda n, st, r: ceil(n, st, r) if n == CEILING else trial(n, st, r))
