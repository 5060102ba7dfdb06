#!/usr/bin/python3
"""Live migration into and out of Ceph: a local qcow2 image exported
writable is mirrored into an RBD image while a writer writes random blocks
through the export (write-blocking mode); after READY, job-complete pivots
with the writer still running, the export then serves the rbd node, and
both the export and `rbd export` hold exactly what the writer had
acknowledged.  The same the other way round: an RBD image mirrored to a
local raw file (background mode, rate-limited writer)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, blockd_cmd, check, ok, read_all, summary, wait_job_end,  # noqa: E402
                        wait_status)
from ceph_lib import Cluster  # noqa: E402
from mirror_lib import Writer, fill, first_difference, make_image  # noqa: E402

SIZE = 64 << 20


def migrate(q, d, src, tgt, mode, rate):
    """Mirrors export `src` to node `tgt` under a writer and pivots; the writes' model."""
    sock = d.path('nbd.sock')
    image = make_image(SIZE)
    fill(sock, src, image)
    w = Writer(sock, src, image, rate=rate)
    w.start()
    time.sleep(0.2)
    q.events.clear()
    ok(q.cmd('blockdev-mirror', {'job-id': 'm', 'device': src, 'target': tgt, 'sync': 'full',
                                 'copy-mode': mode}), 'blockdev-mirror')
    evs = wait_status(q, "m", "ready", timeout=120)
    before = w.count
    time.sleep(0.5)
    ok(q.cmd('job-complete', {'id': 'm'}), 'job-complete')
    evs += wait_job_end(q, 'm', timeout=120)
    time.sleep(0.3)  # still writing, now to the target
    n = w.stop()
    check(n > before + 10, 'writer made no progress during READY (%d -> %d)' % (before, n))
    check(('BLOCK_JOB_COMPLETED', ('device', 'm'), ('type', 'mirror')) in summary(evs), 'events %r' % summary(evs))
    exports = {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}
    check(exports['e-' + src] == tgt, 'export still on %r after the pivot' % exports['e-' + src])
    got = read_all(sock, src)
    check(got == image, '%s: export differs from the acknowledged writes at %r' % (mode, first_difference(got, image)))
    print('%s: %d writes, %d during READY and the pivot' % (mode, n, n - before))
    return image


def export(q, d, node):
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + node, 'node-name': node, 'name': node,
                                  'writable': True}), 'export')


def main():
    with Cluster() as c:
        c.rbd('create', 'rbd/dst', '--size', '64M')
        c.rbd('create', 'rbd/away', '--size', '64M')
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            local = d.path('local.qcow2')
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', local, str(SIZE)], check=True)
            ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'local',
                                      'file': {'driver': 'file', 'filename': local}}), 'qcow2 source')
            export(q, d, 'local')
            ok(q.cmd('blockdev-add', c.node('dst', 'dst')), 'rbd target')
            image = migrate(q, d, 'local', 'dst', 'write-blocking', 0)
            check(c.export('dst') == image, 'rbd export differs from the acknowledged writes')

            ok(q.cmd('blockdev-add', c.node('away', 'away')), 'rbd source')
            export(q, d, 'away')
            raw = d.path('away.raw')
            with open(raw, 'wb') as f:
                f.truncate(SIZE)
            ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'raw', 'filename': raw}), 'file target')
            image = migrate(q, d, 'away', 'raw', 'background', 300)
            with open(raw, 'rb') as f:
                check(f.read() == image, 'the local file differs from the acknowledged writes')
            q.close()
            check(d.stop() == 0, 'blockd exit status')
    print('mirror into and out of RBD OK')


main()
