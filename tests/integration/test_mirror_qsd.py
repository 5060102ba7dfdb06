#!/usr/bin/python3
"""The same mirror QMP script against blockd and qemu-storage-daemon: state
sequences and events of complete, pause/resume while READY (standby),
soft cancel, forced cancel and job-cancel after READY, cancel before READY,
complete while standby with manual finalize/dismiss,
pause/resume while running, the export's node after the pivot, the target
content, and the validation messages.  Both daemons must give identical results."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, ok, qsd_cmd,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status)

SIZE = 16 << 20


def make_image(path):
    data = bytearray(SIZE)
    for i in range(0, SIZE, 2 << 20):
        data[i:i + 65536] = bytes([i >> 20 | 1]) * 65536
    with open(path, 'wb') as f:
        f.write(data)
    return bytes(data)


def scenario(cmd):
    out = {}
    with Daemon(cmd) as d, Nbdkit('memory', str(SIZE)) as t:
        image = make_image(d.path('src.img'))
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': d.path('src.img')}), 'src')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'src', 'name': 'src',
                                      'writable': True}), 'export')
        add_nbd_target(q, 'tgt', t.sock)
        with open(d.path('src2.img'), 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src2', 'filename': d.path('src2.img')}), 'src2')
        with open(d.path('tgt2.img'), 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'tgt2', 'filename': d.path('tgt2.img')}), 'tgt2')

        errors = []
        for args in [
            {'job-id': 'x', 'device': 'nope', 'target': 'tgt', 'sync': 'full'},
            {'job-id': 'x', 'device': 'src', 'target': 'tgt', 'sync': 'incremental'},
            {'job-id': 'x', 'device': 'src', 'target': 'tgt', 'sync': 'full', 'granularity': 1000},
            {'job-id': 'x', 'device': 'src', 'target': 'tgt', 'sync': 'full', 'granularity': 256},
            {'job-id': 'x', 'device': 'src', 'target': 'src', 'sync': 'full'},
            {'job-id': 'x', 'device': 'src', 'target': 'tgt', 'sync': 'full', 'buf-size': -1},
            {'job-id': '1x', 'device': 'src', 'target': 'tgt', 'sync': 'full'},
        ]:
            r = q.cmd('blockdev-mirror', args)
            check('error' in r, 'blockdev-mirror %r succeeded' % args)
            errors.append(r['error']['desc'])
        out['errors'] = errors
        check(q.cmd('query-jobs') == {'return': []}, 'a refused mirror left a job behind')
        q.events.clear()

        def start(job, **extra):
            args = {'job-id': job, 'device': 'src', 'target': 'tgt', 'sync': 'full'}
            args.update(extra)
            ok(q.cmd('blockdev-mirror', args), 'blockdev-mirror ' + job)

        # Cancel before READY (speed 1 and one chunk in flight: stalled; QEMU
        # copies up to buf-size per iteration before it sleeps).
        start('c0', speed=1, granularity=65536, **{'buf-size': 65536})
        r = q.cmd('job-complete', {'id': 'c0'})
        out['complete-running'] = r['error']['desc']
        busy = []
        for args in [
            {'job-id': 'y', 'device': 'src', 'target': 'src2', 'sync': 'full'},  # source of c0
            {'job-id': 'y', 'device': 'src2', 'target': 'tgt', 'sync': 'full'},  # target of c0
            {'job-id': 'c0', 'device': 'src2', 'target': 'tgt2', 'sync': 'full'},
        ]:
            r = q.cmd('blockdev-mirror', args)
            busy.append(r.get('error', {}).get('desc'))
        out['busy'] = busy
        ok(q.cmd('job-pause', {'id': 'c0'}), 'pause c0')
        evs = wait_status(q, 'c0', 'paused')
        out['paused-info'] = {k: v for k, v in q.cmd('query-block-jobs')['return'][0].items()
                              if k in ('paused', 'status', 'ready', 'io-status', 'type', 'speed')}
        ok(q.cmd('job-resume', {'id': 'c0'}), 'resume c0')
        evs += wait_status(q, 'c0', 'running')
        ok(q.cmd('job-cancel', {'id': 'c0'}), 'cancel c0')
        out['cancel-before-ready'] = summary(evs + wait_job_end(q, 'c0'), drop_blips=False)

        # Soft cancel after READY, pause/resume while READY.
        start('s0')
        evs = wait_status(q, 's0', 'ready')
        ok(q.cmd('job-pause', {'id': 's0'}), 'pause')
        evs += wait_status(q, 's0', 'standby')
        ok(q.cmd('job-resume', {'id': 's0'}), 'resume')
        evs += wait_status(q, 's0', 'ready')
        ok(q.cmd('block-job-cancel', {'device': 's0'}), 'soft cancel')
        evs += wait_job_end(q, 's0')
        out['soft-cancel'] = summary(evs)
        out['soft-target'] = read_all(t.sock) == image

        # Forced cancel after READY.
        start('f0')
        evs = wait_status(q, 'f0', 'ready')
        ok(q.cmd('block-job-cancel', {'device': 'f0', 'force': True}), 'force cancel')
        out['force-cancel'] = summary(evs + wait_job_end(q, 'f0'))

        # job-cancel after READY.
        start('j0')
        evs = wait_status(q, 'j0', 'ready')
        ok(q.cmd('job-cancel', {'id': 'j0'}), 'job-cancel')
        out['job-cancel'] = summary(evs + wait_job_end(q, 'j0'))

        # Complete while standby (pivots after resume), manual finalize/dismiss.
        start('p0', **{'auto-finalize': False, 'auto-dismiss': False, 'copy-mode': 'write-blocking'})
        evs = wait_status(q, 'p0', 'ready')
        ok(q.cmd('block-job-pause', {'device': 'p0'}), 'pause p0')
        evs += wait_status(q, 'p0', 'standby')
        ok(q.cmd('block-job-complete', {'device': 'p0'}), 'complete in standby')
        ok(q.cmd('block-job-resume', {'device': 'p0'}), 'resume p0')
        evs += wait_status(q, 'p0', 'pending')
        ok(q.cmd('job-finalize', {'id': 'p0'}), 'finalize')
        evs += wait_status(q, 'p0', 'concluded')
        ok(q.cmd('job-dismiss', {'id': 'p0'}), 'dismiss')
        evs += wait_job_end(q, 'p0')
        out['complete'] = summary(evs)
        out['export-node'] = q.cmd('query-block-exports')['return'][0]['node-name']
        out['target'] = read_all(d.path('nbd.sock'), 'src') == image and read_all(t.sock) == image
        q.close()
        d.stop()
    return out


def main():
    mine = scenario(blockd_cmd())
    for k, v in sorted(mine.items()):
        print('%s: %r' % (k, v))
    check(mine['target'] and mine['soft-target'], 'target content wrong: %r' % mine)
    check(mine['export-node'] == 'tgt', 'export not switched: %r' % mine['export-node'])
    theirs = scenario(qsd_cmd())
    for k in sorted(mine):
        check(mine[k] == theirs[k], '%s differs:\n  blockd %r\n  qsd    %r' % (k, mine[k], theirs[k]))
    print('mirror matches qemu-storage-daemon OK')


main()
