#!/usr/bin/python3
"""Extent-map benchmark (issue 18's `nbdinfo --map` rows), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-map.py

Each daemon serves its own sparse 1 TiB raw file in /dev/shm (a file node,
so base:allocation comes from the file's holes), with a dirty bitmap `b`
(64 KiB granularity) that saw 10 000 writes of 4 KiB at scattered 64 KiB
aligned offsets: 10 000 data extents in the file and 10 000 dirty granules
in the bitmap, 40 MiB of data.  The export is then read-only with the
bitmap (disabled, as QEMU requires) and the rows time the whole client:
  map:          `nbdinfo --map` (base:allocation)       target: >= 1.0x QSD
  dirty bitmap: `nbdinfo --map=qemu:dirty-bitmap:b`      target: <= 1/2 QSD
blockd and qemu-storage-daemon alternate after a warm-up round; medians of
BENCH_ROUNDS rounds (default 7, quick 5) of the best of 3 runs each: a run
takes tens of milliseconds, and one preemption on the shared machine
doubles it (single runs gave medians 4x apart from one run to the next).
The ceiling is the CPU time nbdinfo itself used in blockd's runs (start-up,
handshake, formatting 20 000 lines): the wall time of a server that took no
time at all.  bench-bitmaps.py's walk measures the server side alone
(libnbd in-process)."""
import contextlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_lib import QUICK, alternate, daemons, ok  # noqa: E402
from bench_rows import ISSUE, row  # noqa: E402
from backup_lib import Daemon, check, connect, fail  # noqa: E402

TiB = 1 << 40
GRAN = 64 << 10
EXTENTS = 10000
ROUNDS = int(os.environ.get('BENCH_ROUNDS', 5 if QUICK else 7))


def serve(stack, cmd, shm, n):
    """A daemon exporting its 1 TiB file, the writes done, read-only with
    the bitmap as export 'r'; returns the export's URI."""
    img = os.path.join(shm, 'map-%d.raw' % n)
    with open(img, 'wb') as f:
        f.truncate(TiB)
    d = stack.enter_context(Daemon(cmd))
    q = d.qmp()
    stack.callback(q.close)
    sock = d.path('nbd.sock')
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img}), 'file')
    ok(q.cmd('block-dirty-bitmap-add', {'node': 'f', 'name': 'b', 'granularity': GRAN}), 'bitmap')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'w', 'node-name': 'f', 'name': 'w',
                                  'writable': True}), 'export w')
    h = connect(sock, 'w')
    buf = b'\1' * 4096
    for slot in random.Random(4).sample(range(TiB // GRAN), EXTENTS):
        h.pwrite(buf, slot * GRAN)
    h.flush()
    h.shutdown()
    ok(q.cmd('block-export-del', {'id': 'w'}), 'del w')
    ok(q.cmd('block-dirty-bitmap-disable', {'node': 'f', 'name': 'b'}), 'disable')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'r', 'node-name': 'f', 'name': 'r',
                                  'bitmaps': ['b']}), 'export r')
    return 'nbd+unix:///r?socket=' + sock


def nbdinfo(*args):
    r = subprocess.run(['nbdinfo'] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail('nbdinfo %s: %s' % (' '.join(args), r.stderr[-500:]))
    return r.stdout


def check_maps(name, uri):
    """The maps list the extents written (untimed, once per daemon)."""
    data = [ln for ln in nbdinfo('--map', uri).splitlines() if ln.split()[2] == '0']
    check(len(data) == EXTENTS, '%s: base:allocation lists %d data extents, not %d' % (name, len(data), EXTENTS))
    dirty = [ln for ln in nbdinfo('--map=qemu:dirty-bitmap:b', uri).splitlines() if ln.split()[2] == '1']
    # Neighbouring granules among the 10 000 merge into one extent.
    check(EXTENTS * 0.99 <= len(dirty) <= EXTENTS,
          '%s: the bitmap lists %d dirty extents for %d granules' % (name, len(dirty), EXTENTS))


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(*args):
    """(wall, nbdinfo's own CPU) seconds of the best of 3 runs of nbdinfo ARGS."""
    best = None
    for _ in range(3):
        t0, c0 = time.perf_counter(), child_cpu()
        nbdinfo(*args)
        t = (time.perf_counter() - t0, child_cpu() - c0)
        best = t if best is None else min(best, t)
    return best


def main():
    if not shutil.which('nbdinfo'):
        fail('nbdinfo is not installed')
    shm = tempfile.mkdtemp(prefix='bench-map.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        with contextlib.ExitStack() as stack:
            uris = {}
            for n, (name, cmd) in enumerate(daemons()):
                uris[name] = serve(stack, cmd, shm, n)
                check_maps(name, uris[name])
            print('nbdinfo over a 1 TiB raw file, %d extents of 4 KiB, bitmap granularity 64 KiB '
                  '(median of %d rounds of the best of 3; ratio > 1 means blockd is faster):' % (EXTENTS, ROUNDS))
            for row_id, title, arg, factor, target in (
                    ('map-allocation', 'nbdinfo --map', '--map', 1.0, '>=1.0x qsd'),
                    ('map-dirty-bitmap', 'nbdinfo --map=qemu:dirty-bitmap', '--map=qemu:dirty-bitmap:b', 2.0,
                     'time <= 1/2 qsd')):
                cpu = []

                def trial(n, uri, r):
                    wall, c = timed(arg, uri)
                    if n == 'blockd':
                        cpu.append(c)
                    return wall
                times = alternate(uris, trial, rounds=ROUNDS)
                med = {n: statistics.median(v) for n, v in times.items()}
                floor = statistics.median(cpu)
                line = '  %-32s' % title
                for n in uris:
                    line += '  %s %6.1f ms' % (n, 1e3 * med[n])
                if 'qemu-storage-daemon' in med:
                    line += '  (%.2fx; target %s)' % (med['qemu-storage-daemon'] / med['blockd'], target)
                print(line + '; nbdinfo\'s own CPU %.1f ms' % (1e3 * floor))
                row(row_id, title.replace('=qemu:', ' '), 'ms', False,
                    {n: 1e3 * med[n] for n in uris}, ceiling=1e3 * floor, ceiling_name='nbdinfo CPU',
                    target=target, goal={'ratio': factor, 'vs': 'qemu-storage-daemon'}, group=ISSUE)
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
