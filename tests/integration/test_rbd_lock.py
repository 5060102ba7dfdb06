#!/usr/bin/python3
"""One writer per image: blockd takes an image's exclusive lock when it
opens it writable.  A second blockd's writable open is refused with a clear
error naming the owner (read-only opens work); QEMU writing the image
meanwhile gets EROFS and changes nothing.  When the lock is broken (`rbd
lock rm`, which blocklists the owner), the owner's writes fail at once
with an error instead of hanging or landing, it stays up, and the other
blockd can now open the image writable.  A writer that was killed keeps
the image locked until its watch expires (CEPH_WATCH_TIMEOUT=10 here),
then the next writable open takes over, with the killed writer's flushed
data intact."""
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from backup_lib import connect, ok, read_all, write  # noqa: E402
from ceph_lib import Cluster  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check  # noqa: E402

SIZE = 8 << 20
LOCKED = r"Image 'rbd/%s' is in use by another client \(\S+\) that holds its exclusive lock; open it with read-only=on"


def serve(q, d, c, node, image, **extra):
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    r = q.cmd('blockdev-add', c.node(node, image, **extra))
    if 'error' in r:
        return r['error']['desc']
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': node, 'node-name': node, 'name': node,
                                  'writable': not extra.get('read-only')}), 'export')
    return None


def main():
    with Cluster(qemu=True, CEPH_WATCH_TIMEOUT=10) as c:
        for image in ('img', 'img2'):
            c.rbd('create', 'rbd/' + image, '--size', '8M')
        with Daemon(blockd_cmd()) as a, Daemon(blockd_cmd()) as b:
            qa, qb = a.qmp(), b.qmp()
            check(serve(qa, a, c, 'w', 'img') is None, 'first writer')
            write(a, 'w', 0, b'\xaa' * SIZE)
            err = serve(qb, b, c, 'w', 'img')
            check(err and re.fullmatch(LOCKED % 'img', err), 'second writer: %r' % err)
            check(serve(qb, b, c, 'ro', 'img', **{'read-only': True}) is None, 'reader')
            check(read_all(b.path('nbd.sock'), 'ro') == b'\xaa' * SIZE, 'the reader sees other data')

            p = subprocess.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x55 0 64k', c.uri('img')],
                               capture_output=True, text=True)
            check('Read-only file system' in p.stdout + p.stderr, 'qemu-io wrote: %r' % (p.stdout + p.stderr))
            check(read_all(a.path('nbd.sock'), 'w') == b'\xaa' * SIZE, 'a refused writer changed the image')

            # Break the lock: the owner is blocklisted, its writes fail fast.
            locks = json.loads(c.rbd('lock', 'ls', '--format', 'json', 'rbd/img'))
            check(len(locks) == 1, 'lock ls: %r' % locks)
            c.rbd('lock', 'rm', 'rbd/img', locks[0]['id'], locks[0]['locker'])
            h = connect(a.path('nbd.sock'), 'w')
            t0 = time.monotonic()
            try:
                h.pwrite(b'\x66' * 4096, 0)
                h.flush()
                failed = None
            except Exception as e:
                failed = e
            check(failed is not None and time.monotonic() - t0 < 15,
                  'blocklisted writer: %r after %.1f s' % (failed, time.monotonic() - t0))
            h.shutdown()
            check(qa.cmd('query-version').get('return'), 'the blocklisted blockd died')
            ok(qb.cmd('block-export-del', {'id': 'ro'}), 'export-del')
            check(serve(qb, b, c, 'w2', 'img') is None, 'writable open after the lock was broken')
            write(b, 'w2', 0, b'\x77' * 4096)
            check(c.export('img')[:8192] == b'\x77' * 4096 + b'\xaa' * 4096, 'image after takeover')
            qa.close()
            qb.close()
            check(a.stop() == 0, 'the blocklisted blockd did not exit cleanly')
            check(b.stop() == 0, 'blockd exit status')

        # A killed writer: refused while its watch lives, taken over after.
        with Daemon(blockd_cmd()) as k, Daemon(blockd_cmd()) as n:
            qk, qn = k.qmp(), n.qmp()
            check(serve(qk, k, c, 'w', 'img2') is None, 'writer to be killed')
            write(k, 'w', 0, b'\x42' * SIZE)
            k.proc.send_signal(signal.SIGKILL)
            k.proc.wait()
            t0 = time.monotonic()
            err = serve(qn, n, c, 'w', 'img2')
            check(err and re.fullmatch(LOCKED % 'img2', err), 'open right after the kill: %r' % err)
            while err and time.monotonic() - t0 < 60:
                time.sleep(2)
                err = serve(qn, n, c, 'w', 'img2')
            took = time.monotonic() - t0
            check(err is None and took < 40, 'take-over after the kill: %r after %.0f s' % (err, took))
            check(read_all(n.path('nbd.sock'), 'w') == b'\x42' * SIZE, 'the killed writer\'s data')
            print('take-over %.0f s after the writer was killed' % took)
            qn.close()
            check(n.stop() == 0, 'blockd exit status')
    print('rbd exclusive lock OK')


main()
