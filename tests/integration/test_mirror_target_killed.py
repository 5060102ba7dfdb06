#!/usr/bin/python3
"""A mirror target (nbdkit file plugin) killed mid-job, with each error policy:
- stop: BLOCK_JOB_ERROR write/stop, the job pauses with io-status failed;
  once the target is back, job-resume retries and the mirror converges
  (READY), a write made while it was paused reaches the target, and after
  the pivot the target file equals the source;
- ignore: one BLOCK_JOB_ERROR write/ignore per failed attempt, the regions
  stay dirty, and once the target is back the job converges by itself;
- report (default): the job fails with "Input/output error"."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, ok,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status, wait_until, write)

SIZE = 16 << 20


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        image = bytearray(bytes(range(251)) * (SIZE // 251) + b'\x01' * (SIZE % 251))
        for off in range(0, SIZE, 4 << 20):
            write(d, 'src', off, bytes(image[off:off + (4 << 20)]))
        img = d.path('target.img')

        def target():
            with open(img, 'wb') as f:
                f.truncate(SIZE)
            return Nbdkit('file', img, sock=d.path('t.sock'))

        def killed_mid_job(job, policy, t=None):
            t = t or target().start()
            args = {'job-id': job, 'device': 'src', 'target': 'tgt', 'sync': 'full', 'speed': 4 << 20}
            if policy:
                args['on-target-error'] = policy
            ok(q.cmd('blockdev-mirror', args), 'mirror ' + job)
            time.sleep(0.6)
            t.kill()
            return t

        def pivot_and_check(t, job):
            ok(q.cmd('job-complete', {'id': job}), 'complete ' + job)
            evs = wait_job_end(q, job)
            check(summary(evs)[-5:] == [
                ('status', job, 'waiting'), ('status', job, 'pending'),
                ('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')),
                ('status', job, 'concluded'), ('status', job, 'null')], 'end %r' % summary(evs))
            check(read_all(d.path('nbd.sock'), 'src') == image, '%s: export content differs' % job)
            with open(img, 'rb') as f:
                check(f.read() == image, '%s: target file differs after the pivot' % job)

        t = target().start()
        add_nbd_target(q, 'tgt', t.sock)

        # stop: paused with io-status failed; resume once the target is back.
        t = killed_mid_job('k', 'stop', t)
        evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
        check(evs[-1]['data'] == {'device': 'k', 'operation': 'write', 'action': 'stop'}, 'error %r' % evs[-1])
        wait_status(q, 'k', 'paused')
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['io-status'] == 'failed' and info['paused'] and 0 < info['offset'] < SIZE, 'stopped %r' % info)
        image[100:4196] = b'\x77' * 4096  # a paused mirror still tracks writes
        write(d, 'src', 100, b'\x77' * 4096)
        t.start()
        ok(q.cmd('block-job-set-speed', {'device': 'k', 'speed': 0}), 'speed')
        ok(q.cmd('job-resume', {'id': 'k'}), 'resume')
        wait_status(q, 'k', 'ready')
        check(q.cmd('query-block-jobs')['return'][0]['io-status'] == 'ok', 'io-status not reset')
        pivot_and_check(t, 'k')
        # The export now serves 'tgt' (nbdkit still up): mirror it back to a memory node.
        ok(q.cmd('blockdev-add', {'driver': 'memory', 'node-name': 'back', 'size': SIZE}), 'back')
        ok(q.cmd('blockdev-mirror', {'job-id': 'b', 'device': 'tgt', 'target': 'back', 'sync': 'full'}), 'b')
        wait_status(q, 'b', 'ready')
        ok(q.cmd('job-complete', {'id': 'b'}), 'complete b')
        wait_job_end(q, 'b')
        t.close()
        exports = {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}
        check(exports['e-src'] == 'back', 'export not moved back: %r' % exports)

        # ignore: errors are reported and retried; converges once the target is back.
        t = killed_mid_job('i', 'ignore')
        evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
        check(evs[-1]['data'] == {'device': 'i', 'operation': 'write', 'action': 'ignore'}, 'error %r' % evs[-1])
        time.sleep(0.5)
        check(q.cmd('query-block-jobs')['return'][0]['status'] == 'running', 'ignore: job stopped')
        t.start()
        wait_status(q, 'i', 'ready')
        ok(q.cmd('job-cancel', {'id': 'i'}), 'cancel i')
        wait_job_end(q, 'i')
        t.close()
        with open(img, 'rb') as f:
            check(f.read() == image, 'ignore: target file differs')

        # report: the job fails.
        t = killed_mid_job('r', None)
        evs = wait_job_end(q, 'r')
        done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(done and done[0].get('error') == 'Input/output error', 'report: %r' % summary(evs))
        check(('BLOCK_JOB_ERROR', ('action', 'report'), ('device', 'r'), ('operation', 'write'))
              in summary(evs), 'report: %r' % summary(evs))
        t.close()
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('mirror target killed OK')


main()
