#!/usr/bin/python3
"""Live storage migration: a node exported writable is mirrored to an nbdkit
memory target while a writer writes random blocks through the export at
full speed.  After READY, job-complete pivots with the writer still running:
the export then serves the target (query-block-exports), and both the export
and the target itself hold exactly what the writer had acknowledged.  Runs
in write-blocking mode (converges at any write rate) and in background mode
with a rate-limited writer."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check,  # noqa: E402
                        ok, read_all, summary, wait_job_end, wait_status)
from mirror_lib import Writer, fill, first_difference, make_image  # noqa: E402

SIZE = 64 << 20


def scenario(d, q, mode, rate):
    src, tgt, job = 'src-' + mode, 'tgt-' + mode, 'm-' + mode
    add_source(q, d, src, SIZE)
    image = make_image(SIZE)
    fill(d.path('nbd.sock'), src, image)
    with Nbdkit('memory', str(SIZE)) as t:
        add_nbd_target(q, tgt, t.sock)
        w = Writer(d.path('nbd.sock'), src, image, rate=rate)
        w.start()
        time.sleep(0.2)
        q.events.clear()
        ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': src, 'target': tgt, 'sync': 'full',
                                     'copy-mode': mode}), 'blockdev-mirror')
        evs = wait_status(q, job, 'ready', timeout=60)
        before = w.count
        time.sleep(0.5)  # in sync while the writer goes on
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['ready'] and info['status'] == 'ready' and info['type'] == 'mirror', 'ready %r' % info)
        ok(q.cmd('job-complete', {'id': job}), 'job-complete')
        evs += wait_job_end(q, job)
        time.sleep(0.3)  # the writer keeps writing, now to the target
        n = w.stop()
        check(n > before + 10, '%s: writer made no progress during READY (%d -> %d)' % (mode, before, n))
        check(summary(evs) == [
            ('status', job, 'created'), ('status', job, 'running'), ('status', job, 'ready'),
            ('BLOCK_JOB_READY', ('device', job), ('type', 'mirror')),
            ('status', job, 'waiting'), ('status', job, 'pending'),
            ('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')),
            ('status', job, 'concluded'), ('status', job, 'null')], '%s events %r' % (mode, summary(evs)))
        exports = {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}
        check(exports['e-' + src] == tgt, 'export still on %r after the pivot' % exports['e-' + src])
        via_export = read_all(d.path('nbd.sock'), src)
        check(via_export == image, '%s: export differs from the acknowledged writes at %r'
              % (mode, first_difference(via_export, image)))
        direct = read_all(t.sock)
        check(direct == image, '%s: target differs from the acknowledged writes at %r'
              % (mode, first_difference(direct, image)))
        print('%s: %d writes, %d during READY and the pivot' % (mode, n, n - before))
        ok(q.cmd('block-export-del', {'id': 'e-' + src}), 'export-del')
        wait_until_gone(q, 'e-' + src)
        ok(q.cmd('blockdev-del', {'node-name': tgt}), 'del target')
        ok(q.cmd('blockdev-del', {'node-name': src}), 'del source')


def wait_until_gone(q, export_id):
    deadline = time.time() + 10
    while any(e['id'] == export_id for e in q.cmd('query-block-exports')['return']):
        check(time.time() < deadline, 'export %s did not go away' % export_id)
        time.sleep(0.05)


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        scenario(d, q, 'write-blocking', 0)
        scenario(d, q, 'background', 300)
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('mirror complete OK')


main()
