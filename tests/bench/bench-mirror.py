#!/usr/bin/python3
"""Mirror benchmark (issue 6), called by `make bench`.

    BLOCKD=build-release/blockd tests/bench/bench-mirror.py

1. Time to mirror a 2 GiB node (a raw file of non-zero data in /dev/shm) to
   an NBD target (nbdkit memory plugin) until READY, blockd against
   qemu-storage-daemon in the same run (target: blockd >= 2x faster).
2. Guest write IOPS (one client, random 4 KiB writes, one at a time) with no
   mirror and while a READY mirror runs, in background and write-blocking
   copy mode.
BENCH_SIZE (bytes) and BENCH_QUICK=1 shrink the run."""
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'integration'))
from backup_lib import Daemon, Nbdkit, check, fail, wait_job_end, wait_status  # noqa: E402
from mirror_lib import Writer  # noqa: E402

QUICK = os.environ.get('BENCH_QUICK') == '1'
SIZE = int(os.environ.get('BENCH_SIZE', (256 << 20) if QUICK else (2 << 30)))
WINDOW = 1.0 if QUICK else 3.0  # seconds of writes per IOPS figure


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


def iops(sock):
    """Acknowledged random 4 KiB writes per second over WINDOW seconds."""
    w = Writer(sock, 'src', None, size=SIZE, seed=5)
    w.start()
    time.sleep(WINDOW)
    return w.stop() / WINDOW


def measure(cmd, shm):
    src = os.path.join(shm, 'src.raw')
    make_source(src)
    res = {}
    with Daemon(cmd) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': src}), 'src')
        nbd_sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': nbd_sock}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'name': 'src',
                                      'writable': True}), 'export')
        res['idle'] = iops(nbd_sock)
        for i, mode in enumerate(('background', 'write-blocking')):
            with Nbdkit('memory', str(SIZE)) as t:
                ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 't%d' % i,
                                          'server': {'type': 'unix', 'path': t.sock}}), 'target')
                t0 = time.monotonic()
                ok(q.cmd('blockdev-mirror', {'job-id': 'm%d' % i, 'device': 'src', 'target': 't%d' % i,
                                             'sync': 'full', 'copy-mode': mode}), 'mirror')
                wait_status(q, 'm%d' % i, 'ready', timeout=600)
                res['ready-' + mode] = time.monotonic() - t0
                res['iops-' + mode] = iops(nbd_sock)
                ok(q.cmd('block-job-cancel', {'device': 'm%d' % i, 'force': True}), 'cancel')
                wait_job_end(q, 'm%d' % i, timeout=120)
                ok(q.cmd('blockdev-del', {'node-name': 't%d' % i}), 'del target')
        q.close()
        d.stop()
    os.unlink(src)
    return res


def main():
    shm = tempfile.mkdtemp(prefix='bench-mirror.', dir='/dev/shm' if os.path.isdir('/dev/shm') else None)
    try:
        mib = SIZE / (1 << 20)
        ours = measure(blockd(), shm)
        theirs = measure(['qemu-storage-daemon'], shm) if shutil.which('qemu-storage-daemon') else None
        print('mirror of %d MiB to nbdkit memory until READY (background mode):' % mib)
        print('  blockd               %7.2f s  %8.1f MiB/s' % (ours['ready-background'],
                                                            mib / ours['ready-background']))
        if theirs:
            print('  qemu-storage-daemon  %7.2f s  %8.1f MiB/s' % (theirs['ready-background'],
                                                                mib / theirs['ready-background']))
            print('  speed-up             %7.2fx (target >= 2x)' % (theirs['ready-background'] /
                                                                 ours['ready-background']))
        for name, r in (('blockd', ours), ('qemu-storage-daemon', theirs)):
            if r:
                print('guest 4 KiB write IOPS, %s: no mirror %.0f; READY mirror, background %.0f, '
                      'write-blocking %.0f (write-blocking READY after %.2f s)'
                      % (name, r['idle'], r['iops-background'], r['iops-write-blocking'],
                         r['ready-write-blocking']))
        check(ours['iops-write-blocking'] > 0, 'no guest write completed in write-blocking mode')
    finally:
        shutil.rmtree(shm, ignore_errors=True)


main()
