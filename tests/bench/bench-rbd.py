#!/usr/bin/python3
"""RBD benchmark (issue 19), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-rbd.py

A single-node Ceph cluster (tests/integration/ceph_lib.py: memstore, one
OSD on this machine) serves one image per daemon.  blockd and
qemu-storage-daemon each open theirs with their rbd driver (defaults:
librbd's cache on, as QEMU with cache.direct=off) and export it over NBD on
a Unix socket; the same workloads run against both, daemon order
alternating per round after a warm-up round, medians reported:
  seq-write   nbdcopy --flush of a random file into the export
  seq-read    nbdcopy of the export to null:
  randread    fio (nbd engine) 4 KiB random reads, iodepth 16
  randwrite   fio 4 KiB random writes, iodepth 16
The ceiling is `rbd bench` on the same pool: librbd without NBD or a
daemon, with the clients' request shapes (256 KiB sequential like
nbdcopy's requests, 4 KiB random, 16 threads).  The goal: blockd
>= 1.2x qemu-storage-daemon or within 90 % of the ceiling.
A second table says how busy the machine was in each workload (median
cores of CPU time per second of wall time): the daemon, the Ceph daemons
(OSD and monitor, on the same two cores) and the client (nbdcopy, fio or
rbd bench itself).  It shows where a row's time goes: `rbd bench` needs
no NBD client and no daemon, so its OSD gets CPU the others spend there.
BENCH_QUICK=1: a 256 MiB image and 2 s fio runs (1 GiB and 5 s otherwise);
Five rounds after a warm-up (BENCH_ROUNDS overrides); with BENCH_ROWS set, the medians are also
appended there for run-all.sh's summary."""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
from bench_lib import QUICK, blockd_cmd, cpu_seconds, ok  # noqa: E402
from bench_rows import row  # noqa: E402
from backup_lib import Daemon, fail  # noqa: E402
from ceph_lib import Cluster, require_qemu_rbd, require_rbd  # noqa: E402

SIZE_MIB = int(os.environ.get('BENCH_RBD_MIB', 256 if QUICK else 1024))
FIO_SECONDS = 2 if QUICK else 5
# Five rounds even in quick mode: one OSD on the same two cores makes single
# rounds swing by 2x either way (seq-write 0.55x to 1.28x of QSD in runs
# minutes apart), and a median of two is no median.
ROUNDS = int(os.environ.get('BENCH_ROUNDS', 5))
WORKLOADS = [('seq-write', 'MiB/s'), ('seq-read', 'MiB/s'), ('randread', 'IOPS'), ('randwrite', 'IOPS')]


class CpuMeter:
    """Cores busy (CPU seconds per wall second) of the daemon, the Ceph
    daemons and this script's children (the client) over one workload."""

    def __init__(self, cluster, daemon_pid=None):
        self.pids = {'daemon': [daemon_pid] if daemon_pid else [], 'ceph': [cluster.osd_pid, cluster.mon_pid]}

    def snapshot(self):
        t = os.times()
        snap = {k: sum(cpu_seconds(p) for p in pids) for k, pids in self.pids.items()}
        snap['client'] = t.children_user + t.children_system
        return snap, time.monotonic()

    def run(self, fn):
        (before, t0) = self.snapshot()
        value = fn()
        (after, t1) = self.snapshot()
        return value, {k: (after[k] - before[k]) / (t1 - t0) for k in after}

    def measure(self, workloads):
        """Runs each (name, fn) in turn: {name: its rate, name + ' cpu': its cores busy}."""
        res = {}
        for w, fn in workloads:
            res[w], res[w + ' cpu'] = self.run(fn)
        return res


def timed(cmd):
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return SIZE_MIB / (time.monotonic() - t0)


def fio(uri, rw):
    out = subprocess.run(['fio', '--name=bench', '--ioengine=nbd', '--uri=' + uri, '--rw=' + rw, '--bs=4k',
                          '--iodepth=16', '--size=%dM' % SIZE_MIB, '--runtime=%d' % FIO_SECONDS, '--time_based',
                          '--output-format=json'], check=True, capture_output=True, text=True).stdout
    job = json.loads(out[out.index('{'):])['jobs'][0]
    return job['read']['iops'] + job['write']['iops']


def measure(uri, src, meter):
    """Each workload's rate, and its CPU use under the key workload + ' cpu'."""
    return meter.measure((('seq-write', lambda: timed(['nbdcopy', '--flush', src, uri])),
                          ('seq-read', lambda: timed(['nbdcopy', uri, 'null:'])),
                          ('randread', lambda: fio(uri, 'randread')),
                          ('randwrite', lambda: fio(uri, 'randwrite'))))


def daemon_trial(cmd, cluster, image, src):
    """Starts the daemon with image exported, runs every workload, stops it."""
    with Daemon(cmd) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', cluster.node('r', image)), 'blockdev-add rbd')
        sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r', 'writable': True}), 'export')
        res = measure('nbd+unix:///r?socket=' + sock, src, CpuMeter(cluster, d.proc.pid))
        q.close()
        d.stop()
    return res


def rbd_bench(cluster, image):
    """`rbd bench` on the pool: librbd's own rates, the ceiling."""
    def run(io_type, size, pattern, total):
        out = cluster.rbd('bench', '--io-type', io_type, '--io-size', str(size), '--io-threads', '16',
                          '--io-total', str(total), '--io-pattern', pattern, 'rbd/' + image)
        m = re.search(r'elapsed: *\S+ +ops: *(\d+) +ops/sec: *([\d.]+)', out)
        if not m:
            fail('rbd bench output: %r' % out[-300:])
        return float(m.group(2))
    total = SIZE_MIB << 20
    small = min(total, (64 << 20) if QUICK else (256 << 20))
    return CpuMeter(cluster).measure((('seq-write', lambda: run('write', 256 << 10, 'seq', total) / 4),
                                      ('seq-read', lambda: run('read', 256 << 10, 'seq', total) / 4),
                                      ('randread', lambda: run('read', 4096, 'rand', small)),
                                      ('randwrite', lambda: run('write', 4096, 'rand', small))))


def main():
    for tool in ('nbdcopy', 'fio', 'qemu-storage-daemon'):
        if not shutil.which(tool):
            fail('bench-rbd: %s is not installed' % tool)
    os.environ['BLOCKD'] = blockd_cmd()[0]
    try:
        require_rbd()
        require_qemu_rbd()
    except SystemExit as e:
        if e.code == 77:  # the reason is printed; nothing to measure
            return
        raise
    tmp = tempfile.mkdtemp(prefix='bench-rbd.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        src = os.path.join(tmp, 'src.img')
        with open(src, 'wb') as f:
            for _ in range(SIZE_MIB):
                f.write(os.urandom(1 << 20))
        with Cluster(CEPH_STORE_BYTES=str(max(4 << 30, SIZE_MIB << 22))) as c:
            daemons = {'blockd': blockd_cmd(), 'qemu-storage-daemon': ['qemu-storage-daemon']}
            for image in ('blockd', 'qemu-storage-daemon', 'ceiling'):
                c.rbd('create', 'rbd/' + image, '--size', '%dM' % SIZE_MIB)
            runs = {n: [] for n in list(daemons) + ['rbd bench']}
            for r in range(ROUNDS + 1):
                order = list(daemons) if r % 2 == 0 else list(daemons)[::-1]
                for name in order:
                    res = daemon_trial(daemons[name], c, name, src)
                    if r > 0:
                        runs[name].append(res)
                if r > 0:
                    runs['rbd bench'].append(rbd_bench(c, 'ceiling'))
        med = {n: {w: statistics.median(x[w] for x in v) for w, _ in WORKLOADS} for n, v in runs.items()}
        print('RBD image of %d MiB on a single-node memstore cluster, NBD over a Unix socket '
              '(median of %d rounds, fio %d s, iodepth 16):' % (SIZE_MIB, ROUNDS, FIO_SECONDS))
        print('  %-10s %-6s %10s %20s %10s %12s %12s' % ('workload', 'unit', 'blockd', 'qemu-storage-daemon',
                                                          'rbd bench', 'blockd/qsd', 'of ceiling'))
        for w, unit in WORKLOADS:
            b, qsd, ceil = med['blockd'][w], med['qemu-storage-daemon'][w], med['rbd bench'][w]
            goal = 'ok' if b >= 1.2 * qsd or b >= 0.9 * ceil else 'below goal'
            print('  %-10s %-6s %10.0f %20.0f %10.0f %11.2fx %11.0f%%  %s'
                  % (w, unit, b, qsd, ceil, b / qsd, 100 * b / ceil, goal))
            row('rbd-' + w, '%s, rbd %d MiB' % (w, SIZE_MIB), unit, True, {'blockd': b, 'qemu-storage-daemon': qsd},
                ceiling=ceil, ceiling_name='rbd bench', target='>=1.2x qsd or >=90% of ceiling',
                goal={'ratio': 1.2, 'vs': 'qemu-storage-daemon', 'ceiling_frac': 0.9}, group='RBD (issue 19)')
        print('Cores busy during each workload (median; the machine has %d): daemon + Ceph (OSD and monitor) '
              '+ client (nbdcopy or fio; rbd bench itself)' % os.cpu_count())
        print('  %-10s %-26s %-26s %-26s' % ('workload', 'blockd', 'qemu-storage-daemon', 'rbd bench'))
        for w, _ in WORKLOADS:
            cells = []
            for n in ('blockd', 'qemu-storage-daemon', 'rbd bench'):
                c = {k: statistics.median(x[w + ' cpu'][k] for x in runs[n]) for k in ('daemon', 'ceph', 'client')}
                cells.append('%.2f+%.2f+%.2f = %.2f' % (c['daemon'], c['ceph'], c['client'], sum(c.values())))
            print('  %-10s %-26s %-26s %-26s' % (w, cells[0], cells[1], cells[2]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


main()
