#!/usr/bin/python3
"""The speed limit of backup, mirror and stream, measured from outside.

Each job copies 32 MiB of random data at speed 2 MiB/s (a stream pulls it
from a base image into an empty overlay) while query-block-jobs
is polled every 10 ms.  Over every 100 ms window the progress must stay
within the speed (2 MiB/s allows 204.8 KiB per 100 ms; the margin allows
twice that plus one 64 KiB cluster: polling and completion times blur the
windows), and over the whole run within 25 % of it.  Then block-job-set-speed
doubles the speed and the rate follows.  A cancelled rate-limited job
reports an offset below its length.  (qemu-storage-daemon lets a whole
1 MiB backup chunk, or 16 MiB of mirror buffer, through at once, so this
test is blockd's alone.)"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check  # noqa: E402

MiB = 1 << 20
SIZE = 32 * MiB
SPEED = 2 * MiB
CLUSTER = 64 * 1024


def sample(q, seconds):
    """[(time, offset)] of job j every 10 ms for `seconds`."""
    out = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        jobs = q.cmd('query-block-jobs')['return']
        check(jobs, 'the job ended early')
        out.append((time.monotonic(), jobs[0]['offset']))
        time.sleep(0.01)
    return out


def worst_window(samples, window=0.1):
    """The most progress seen within `window` seconds."""
    worst = 0
    j = 0
    for i in range(len(samples)):
        while samples[i][0] - samples[j][0] > window:
            j += 1
        worst = max(worst, samples[i][1] - samples[j][1])
    return worst


def rate(samples):
    (t0, o0), (t1, o1) = samples[0], samples[-1]
    return (o1 - o0) / (t1 - t0)


def run(kind, tmp):
    src, dst = os.path.join(tmp, kind + '-src'), os.path.join(tmp, kind + '-dst')
    with open(src, 'wb') as f:
        f.write(os.urandom(SIZE))
    with open(dst, 'wb') as f:
        f.truncate(SIZE)
    if kind == 'stream':
        # An empty overlay over the random data: every byte is copied, so
        # the progress is the data copied.
        subprocess.run(['qemu-img', 'convert', '-q', '-O', 'qcow2', src, src + '.qcow2'], check=True)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', src + '.qcow2', '-F', 'qcow2',
                        dst + '.qcow2'], check=True)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        if kind == 'stream':
            r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 's',
                                       'file': {'driver': 'file', 'filename': dst + '.qcow2'}})
            check('return' in r, repr(r))
            r = q.cmd('block-stream', {'job-id': 'j', 'device': 's', 'speed': SPEED})
        else:
            for node, path in (('s', src), ('t', dst)):
                r = q.cmd('blockdev-add', {'driver': 'file', 'node-name': node, 'filename': path})
                check('return' in r, repr(r))
            args = {'job-id': 'j', 'device': 's', 'target': 't', 'sync': 'full', 'speed': SPEED}
            r = q.cmd('blockdev-backup' if kind == 'backup' else 'blockdev-mirror', args)
        check('return' in r, repr(r))
        first = sample(q, 2.0)
        limit = 2 * SPEED // 10 + CLUSTER
        worst = worst_window(first)
        check(worst <= limit, '%s: %d bytes in one 100 ms window at %d B/s (limit %d)'
              % (kind, worst, SPEED, limit))
        r1 = rate(first)
        check(0.75 * SPEED <= r1 <= 1.25 * SPEED, '%s: %.0f B/s at speed %d' % (kind, r1, SPEED))
        r = q.cmd('block-job-set-speed', {'device': 'j', 'speed': 2 * SPEED})
        check('return' in r, repr(r))
        second = sample(q, 2.0)
        r2 = rate(second)
        check(0.75 * 2 * SPEED <= r2 <= 1.25 * 2 * SPEED, '%s: %.0f B/s after set-speed %d'
              % (kind, r2, 2 * SPEED))
        worst2 = worst_window(second)
        check(worst2 <= 2 * (2 * SPEED) // 10 + CLUSTER, '%s: %d bytes in 100 ms at speed %d'
              % (kind, worst2, 2 * SPEED))
        r = q.cmd('block-job-cancel', {'device': 'j', 'force': True})
        check('return' in r, repr(r))
        ev = q.wait_event('BLOCK_JOB_CANCELLED', timeout=20)
        data = ev['data']
        check(data['offset'] < data['len'], '%s: cancelled at %d of %d' % (kind, data['offset'], data['len']))
        check(data['speed'] == 2 * SPEED, '%s: event speed %r' % (kind, data['speed']))
        print('%s: %.2f MiB/s at 2 MiB/s (worst 100 ms: %d KiB), %.2f MiB/s at 4 MiB/s (worst %d KiB); '
              'cancelled at %d of %d' % (kind, r1 / MiB, worst // 1024, r2 / MiB, worst2 // 1024,
                                         data['offset'], data['len']))


def main():
    with tempfile.TemporaryDirectory() as tmp:
        run('backup', tmp)
        run('mirror', tmp)
        run('stream', tmp)
    print('PASS')


main()
