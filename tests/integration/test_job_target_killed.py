#!/usr/bin/python3
"""A backup target that dies mid-job (nbdkit file plugin, SIGKILL):
with on-target-error=stop the job pauses with io-status failed, and after
the target is back (same socket, same file) job-resume reconnects and the
job finishes with the right data; with the default policy the job fails
with "Input/output error"; with reconnect-delay the job rides out a short
outage without any error."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, ok,  # noqa: E402
                        summary, wait_job_end, wait_status, wait_until, write)

SIZE = 16 << 20


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        image = bytes(range(251)) * (SIZE // 251) + b'\x01' * (SIZE % 251)
        write(d, 'src', 0, image)
        img = d.path('target.img')

        def target():
            with open(img, 'wb') as f:
                f.truncate(SIZE)
            return Nbdkit('file', img, sock=d.path('t.sock'))

        # stop: pause on the error, resume once the target is back.
        t = target().start()
        add_nbd_target(q, 'tgt', t.sock)
        ok(q.cmd('blockdev-backup', {'job-id': 'k', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                     'speed': 4 << 20, 'on-target-error': 'stop'}), 'backup')
        time.sleep(0.6)
        t.kill()
        evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
        check(evs[-1]['data'] == {'device': 'k', 'operation': 'write', 'action': 'stop'}, 'error %r' % evs[-1])
        evs += wait_status(q, 'k', 'paused')
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['io-status'] == 'failed' and 0 < info['offset'] < SIZE, 'stopped job %r' % info)
        t.start()
        ok(q.cmd('block-job-set-speed', {'device': 'k', 'speed': 0}), 'speed')
        ok(q.cmd('job-resume', {'id': 'k'}), 'resume')
        evs += wait_job_end(q, 'k')
        check(summary(evs, drop_blips=False)[-5:] == [
            ('status', 'k', 'waiting'), ('status', 'k', 'pending'),
            ('BLOCK_JOB_COMPLETED', ('device', 'k'), ('type', 'backup')),
            ('status', 'k', 'concluded'), ('status', 'k', 'null')], 'end %r' % summary(evs))
        t.close()
        with open(img, 'rb') as f:
            check(f.read() == image, 'target file differs after the resumed backup')

        # report (default): the job fails.
        t = target().start()
        ok(q.cmd('blockdev-backup', {'job-id': 'r', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                     'speed': 4 << 20}), 'backup r')
        time.sleep(0.6)
        t.kill()
        evs = wait_job_end(q, 'r')
        done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(done and done[0].get('error') == 'Input/output error', 'report: %r' % summary(evs))
        t.close()
        ok(q.cmd('blockdev-del', {'node-name': 'tgt'}), 'del tgt')

        # reconnect-delay: a short outage is invisible to the job.
        t = target().start()
        add_nbd_target(q, 'tgt2', t.sock, **{'reconnect-delay': 10})
        ok(q.cmd('blockdev-backup', {'job-id': 'rd', 'device': 'src', 'target': 'tgt2', 'sync': 'full',
                                     'speed': 8 << 20}), 'backup rd')
        time.sleep(0.5)
        t.kill()
        time.sleep(1)
        t.start()
        evs = wait_job_end(q, 'rd')
        check(not any(e['event'] == 'BLOCK_JOB_ERROR' for e in evs), 'errors despite reconnect-delay: %r'
              % summary(evs))
        check(any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data'] for e in evs),
              'rd did not complete: %r' % summary(evs))
        t.close()
        with open(img, 'rb') as f:
            check(f.read() == image, 'target file differs after the reconnect')
        ok(q.cmd('blockdev-del', {'node-name': 'tgt2'}), 'del tgt2')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('killed target OK')


main()
