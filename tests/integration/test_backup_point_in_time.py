#!/usr/bin/python3
"""Point in time: a backup limited to 16 MiB/s while a guest rewrites the
whole source still leaves the target equal to the source at the job's start
(copy-before-write).  Then the verbs on a stalled job (speed 1): pause,
resume, set-speed, the paused block-job-cancel refusal, and job-cancel of a
paused job (running, aborting, BLOCK_JOB_CANCELLED); set-speed 0 lets a
stalled job finish."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, connect,  # noqa: E402
                        err, ok, read_all, summary, wait_job_end, wait_status, write)

SIZE = 32 << 20


def main():
    with Daemon(blockd_cmd()) as d, Nbdkit('memory', '32M') as t, Nbdkit('memory', '32M') as t2:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        write(d, 'src', 0, b'\x55' * SIZE)
        add_nbd_target(q, 'tgt', t.sock)
        add_nbd_target(q, 'tgt2', t2.sock)

        # The guest rewrites the whole source while the job is paused (so it
        # cannot finish first, however slow the machine): only
        # copy-before-write can keep the old data for the target.
        pit_speed = 16 << 20
        ok(q.cmd('blockdev-backup', {'job-id': 'pit', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                     'speed': pit_speed}), 'backup')
        ok(q.cmd('job-pause', {'id': 'pit'}), 'pause pit')
        wait_status(q, 'pit', 'paused')

        def rewrite():
            h = connect(d.path('nbd.sock'), 'src')
            for off in range(0, SIZE, 1 << 20):
                h.pwrite(b'\x66' * (1 << 20), off)
            h.shutdown()
        writer = threading.Thread(target=rewrite)
        writer.start()
        writer.join()
        r = q.cmd('query-block-jobs')['return']
        check(len(r) == 1 and r[0]['speed'] == pit_speed and r[0]['status'] == 'paused',
              'the paused job should still be there after the rewrite: %r' % r)
        ok(q.cmd('job-resume', {'id': 'pit'}), 'resume pit')
        evs = wait_job_end(q, 'pit')
        check([e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED'][0]['data'].get('error') is None,
              'backup failed: %r' % evs)
        check(read_all(t.sock) == b'\x55' * SIZE, 'target is not the source at the start of the job')
        check(read_all(d.path('nbd.sock'), 'src') == b'\x66' * SIZE, 'the guest writes were lost')

        # The limit holds without guest writes: 32 MiB at 32 MiB/s takes about a second.
        started = time.time()
        ok(q.cmd('blockdev-backup', {'job-id': 'r', 'device': 'src', 'target': 'tgt2', 'sync': 'full',
                                     'speed': 32 << 20}), 'backup r')
        wait_job_end(q, 'r')
        elapsed = time.time() - started
        check(0.8 < elapsed < 10, '32 MiB at 32 MiB/s took %.2f s' % elapsed)

        # A stalled job (speed 1: one chunk, then sleep) and the verbs.
        ok(q.cmd('blockdev-backup', {'job-id': 'p', 'device': 'src', 'target': 'tgt2', 'sync': 'full',
                                     'speed': 1}), 'backup p')
        err(q.cmd('job-resume', {'id': 'p'}), "Can't resume a job that was not paused")
        ok(q.cmd('job-pause', {'id': 'p'}), 'pause')
        evs = wait_status(q, 'p', 'paused')
        err(q.cmd('job-pause', {'id': 'p'}), 'Job is already paused')
        err(q.cmd('block-job-cancel', {'device': 'p'}), "The block job for device 'p' is currently paused")
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['paused'] and info['status'] == 'paused' and info['speed'] == 1 and not info['busy'],
              'paused job %r' % info)
        err(q.cmd('block-job-set-speed', {'device': 'p', 'speed': -1}),
            "Parameter 'speed' expects a non-negative value")
        ok(q.cmd('job-resume', {'id': 'p'}), 'resume')
        evs += wait_status(q, 'p', 'running')
        ok(q.cmd('block-job-pause', {'device': 'p'}), 'pause again')
        evs += wait_status(q, 'p', 'paused')
        ok(q.cmd('job-cancel', {'id': 'p'}), 'cancel')
        evs += wait_job_end(q, 'p')
        check(summary(evs, drop_blips=False) == [('status', 'p', s) for s in ('created', 'running', 'paused', 'running',
                                                                  'paused', 'running', 'aborting')] +
              [('BLOCK_JOB_CANCELLED', ('device', 'p'), ('type', 'backup')),
               ('status', 'p', 'concluded'), ('status', 'p', 'null')], 'cancel sequence %r' % summary(evs))

        # A stalled job finishes once the limit is lifted.
        ok(q.cmd('blockdev-backup', {'job-id': 's', 'device': 'src', 'target': 'tgt2', 'sync': 'full',
                                     'speed': 1}), 'backup s')
        time.sleep(0.3)
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['status'] == 'running' and 0 < info['offset'] < SIZE, 'stalled job %r' % info)
        ok(q.cmd('block-job-set-speed', {'device': 's', 'speed': 0}), 'set-speed 0')
        evs = wait_job_end(q, 's', timeout=30)
        check(any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data'] for e in evs),
              'job s did not complete: %r' % evs)
        check(read_all(t2.sock) == b'\x66' * SIZE, 'second target content')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('point in time, pause/resume/cancel and speed OK')


main()
