#!/usr/bin/python3
"""Error policies of a backup against failing targets (nbdkit's error filter,
switched on and off with its error-file; the full plugin for ENOSPC) and a
failing source: report, ignore, stop (paused, io-status, resume retries and
finishes once healthy), enospc (EIO reports, ENOSPC stops with io-status
nospace).  The same script runs against qemu-storage-daemon when installed;
the event sequences must match (repeated ignore errors counted once)."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, err, ok,  # noqa: E402
                        read_all, squash, summary, wait_job_end, wait_status, wait_until)

SIZE = 16 << 20


def backup(q, job, target, **kw):
    args = {'job-id': job, 'device': 'src', 'target': target, 'sync': 'full'}
    args.update(kw)
    ok(q.cmd('blockdev-backup', args), 'backup ' + job)


def scenario(cmd):
    results = {}
    with Daemon(cmd) as d, Nbdkit('full', '16M') as full:
        image = bytes(range(256)) * (SIZE // 256)
        with open(d.path('src.img'), 'wb') as f:
            f.write(image)
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': d.path('src.img')}), 'src')
        add_nbd_target(q, 'tfull', full.sock)
        flag = d.path('fail')
        with Nbdkit('memory', '16M', 'error-rate=100%', 'error-file=' + flag, filters=['error']) as bad:
            add_nbd_target(q, 'tbad', bad.sock)

            open(flag, 'w').close()
            backup(q, 'rep', 'tbad')
            evs = wait_job_end(q, 'rep')
            results['report'] = summary(evs)
            done = [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
            check(done and done[0]['data'].get('error') == 'Input/output error', 'report: %r' % done)

            backup(q, 'en', 'tbad', **{'on-target-error': 'enospc'})
            results['enospc-eio'] = summary(wait_job_end(q, 'en'))

            backup(q, 'ign', 'tbad', **{'on-target-error': 'ignore'})
            evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
            evs += wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
            os.unlink(flag)
            evs += wait_job_end(q, 'ign')
            results['ignore'] = squash(summary(evs))
            check(read_all(bad.sock) == image, 'ignore: target differs after recovery')

            open(flag, 'w').close()
            backup(q, 'st', 'tbad', **{'on-target-error': 'stop'})
            evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
            evs += wait_status(q, 'st', 'paused')
            info = q.cmd('query-block-jobs')['return'][0]
            check(info['io-status'] == 'failed' and info['paused'] and info['status'] == 'paused',
                  'stopped job %r' % info)
            err(q.cmd('job-pause', {'id': 'st'}), 'Job is already paused')
            os.unlink(flag)
            ok(q.cmd('job-resume', {'id': 'st'}), 'resume')
            evs += wait_job_end(q, 'st')
            results['stop'] = summary(evs)
            check(read_all(bad.sock) == image, 'stop: target differs after resume')

            backup(q, 'nos', 'tfull', **{'on-target-error': 'enospc'})
            evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
            evs += wait_status(q, 'nos', 'paused')
            info = q.cmd('query-block-jobs')['return'][0]
            check(info['io-status'] == 'nospace', 'ENOSPC io-status %r' % info)
            ok(q.cmd('job-cancel', {'id': 'nos'}), 'cancel')
            evs += wait_job_end(q, 'nos')
            results['enospc-nospc'] = summary(evs)

            # A failing source: the error is a read.
            add_nbd_target(q, 'bsrc', bad.sock)
            open(flag, 'w').close()
            ok(q.cmd('blockdev-backup', {'job-id': 'rd', 'device': 'bsrc', 'target': 'tfull',
                                         'sync': 'full'}), 'backup rd')
            results['source'] = summary(wait_job_end(q, 'rd'))
            os.unlink(flag)
            ok(q.cmd('blockdev-del', {'node-name': 'bsrc'}), 'del bsrc')
            ok(q.cmd('blockdev-del', {'node-name': 'tbad'}), 'del tbad')
            q.close()
            check(d.stop() == 0, 'daemon exit status')
    return results


def status(job, *states):
    return [('status', job, s) for s in states]


def error_ev(job, op, action):
    return ('BLOCK_JOB_ERROR', ('action', action), ('device', job), ('operation', op))


def done(job, error=None):
    return ('BLOCK_JOB_COMPLETED', ('device', job)) + ((('error', error),) if error else ()) + \
        (('type', 'backup'),)


def failed(job, op='write'):
    return status(job, 'created', 'running') + [error_ev(job, op, 'report')] + status(job, 'aborting') + \
        [done(job, 'Input/output error')] + status(job, 'concluded', 'null')


def main():
    r = scenario(blockd_cmd())
    check(r['report'] == failed('rep'), 'report %r' % r['report'])
    check(r['enospc-eio'] == failed('en'), 'enospc with EIO %r' % r['enospc-eio'])
    check(r['source'] == failed('rd', 'read'), 'source error %r' % r['source'])
    ok_end = lambda j: status(j, 'waiting', 'pending') + [done(j)] + status(j, 'concluded', 'null')  # noqa: E731
    check(r['ignore'] == status('ign', 'created', 'running') + [error_ev('ign', 'write', 'ignore')] +
          ok_end('ign'), 'ignore %r' % r['ignore'])
    check(r['stop'] == status('st', 'created', 'running') + [error_ev('st', 'write', 'stop')] +
          status('st', 'paused', 'running') + ok_end('st'), 'stop %r' % r['stop'])
    check(r['enospc-nospc'] == status('nos', 'created', 'running') + [error_ev('nos', 'write', 'stop')] +
          status('nos', 'paused', 'running', 'aborting') +
          [('BLOCK_JOB_CANCELLED', ('device', 'nos'), ('type', 'backup'))] + status('nos', 'concluded', 'null'),
          'enospc with ENOSPC %r' % r['enospc-nospc'])
    if shutil.which('qemu-storage-daemon'):
        qr = scenario(['qemu-storage-daemon'])
        for k in r:
            check(qr[k] == r[k], 'qemu-storage-daemon differs for %s:\n%r\n%r' % (k, qr[k], r[k]))
    print('error policies OK')


main()
