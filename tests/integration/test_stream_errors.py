#!/usr/bin/python3
"""block-stream's on-error policies against a failing backing node (the
base is an nbd node in front of nbdkit's error filter, switched on and
off; reads fail, block status answers: QEMU 7.2 ignoring a block-status
failure retries the same offset for ever), the same script against
qemu-storage-daemon and blockd: events
(BLOCK_JOB_ERROR with device, operation, action; repeats of policy ignore
counted once), replies, query-block-jobs' io-status and the final chains
must be the same.

EIO:    report (fails, chain intact), enospc (EIO is reported), ignore (goes
        on past the errors, then fails; backing file kept), a user pause of
        a running stream and a cancel while paused, stop (pauses with
        io-status failed; its active node and the layer it removes refuse
        to be a backup's source; a resume while still failing stops again; healthy
        again, a resume finishes: chain relinked, data complete).
ENOSPC: report ("No space left on device"), enospc and stop (paused with
        io-status nospace), job-cancel of the paused job ends it; chain intact.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, FailingNode, check, compare, export, image_name, make_chain_over,  # noqa: E402
                       normalise, open_chain_over, qmp_chain, read_all, reply, run_both, wait_job_end, wait_status,
                       wait_until)

SIZE = 8 * MiB


def stream(q, job, **kw):
    args = {'job-id': job, 'device': 'top'}
    args.update({k.replace('_', '-'): v for k, v in kw.items()})
    return reply(q.cmd('block-stream', args))


def job_info(q, job):
    for j in q.cmd('query-block-jobs')['return']:
        if j['device'] == job:
            return (j['status'], j['paused'], j['io-status'])
    return None


def stopped(q, job):
    """Events up to the job's pause after an error, and what query-block-jobs says then."""
    evs = wait_until(q, lambda e: e['event'] == 'BLOCK_JOB_ERROR')
    evs += wait_status(q, job, 'paused')
    return evs, job_info(q, job)


def chain_names(q):
    return [(image_name(f), fmt) for f, fmt, _ in qmp_chain(q, 'top')]


def eio_script(q, d, tmp):
    out = []
    with FailingNode(SIZE, 'EIO', reads_only=True) as f:
        c = make_chain_over(tmp, SIZE, f)
        open_chain_over(q, c, f)
        export(q, d, 'top')
        f.fail(True)
        for name, policy in (('report', 'report'), ('enospc', 'enospc')):
            out.append((name, stream(q, name, on_error=policy)))
            evs = wait_job_end(q, name)
            done = [e['data'].get('error') for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
            out.append((name, normalise(evs), done))

        out.append(('ignore', stream(q, 'ignore', on_error='ignore')))
        evs = wait_job_end(q, 'ignore')
        done = [e['data'].get('error') for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(done == ['Input/output error'] and len(chain_names(q)) == 3, 'ignore: %r' % done)
        out.append(('ignore', normalise(evs), done, chain_names(q)))

        # A user pause returns at once; a cancel of the paused job ends it.
        f.fail(False)
        out.append(('pause', stream(q, 'pause', speed=65536)))
        out.append(('pause', reply(q.cmd('block-job-pause', {'device': 'pause'}))))
        evs = wait_status(q, 'pause', 'paused')
        out.append(('pause', job_info(q, 'pause')))
        # QEMU: block-job-cancel refuses a paused job unless forced.
        out.append(('pause', reply(q.cmd('block-job-cancel', {'device': 'pause'}))))
        out.append(('pause', reply(q.cmd('block-job-cancel', {'device': 'pause', 'force': True}))))
        evs += wait_job_end(q, 'pause')
        out.append(('pause', normalise(evs), chain_names(q)))

        f.fail(True)
        out.append(('stop', stream(q, 'stop', on_error='stop')))
        evs, info = stopped(q, 'stop')
        check(info == ('paused', True, 'failed'), 'stop: %r' % (info,))
        out.append(('stop', info))
        # The stream's nodes are busy for other jobs (QEMU's op blockers):
        # its active node and the layer it removes cannot be backed up.
        out.append(('stop', reply(q.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'bk', 'size': SIZE}))))
        for dev in ('mid', 'top'):
            out.append(('backup of a streamed node', dev,
                        reply(q.cmd('blockdev-backup', {'job-id': 'bk-' + dev, 'device': dev, 'target': 'bk',
                                                        'sync': 'full'}))))
        out.append(('stop', reply(q.cmd('blockdev-del', {'node-name': 'bk'}))))
        out.append(('stop', reply(q.cmd('block-job-pause', {'device': 'stop'}))))
        out.append(('stop', reply(q.cmd('block-job-resume', {'device': 'stop'}))))   # still failing
        more, info = stopped(q, 'stop')
        evs += more
        out.append(('stop again', info))
        f.fail(False)
        out.append(('stop', reply(q.cmd('block-job-resume', {'device': 'stop'}))))
        evs += wait_job_end(q, 'stop')
        check(len(chain_names(q)) == 1, 'stop: the chain was not relinked: %r' % chain_names(q))
        out.append(('stop', normalise(evs, ignore_repeats=False), chain_names(q)))
        data = read_all(d.path('nbd.sock'), 'top', SIZE)
        check(data == bytes(c.expected), 'after stop/resume the export does not read the merge')
        q.cmd('block-export-del', {'id': 'e-top', 'mode': 'hard'})
        wait_until(q, lambda e: e['event'] == 'BLOCK_EXPORT_DELETED')
        q.cmd('blockdev-del', {'node-name': 'top'})
        q.cmd('blockdev-del', {'node-name': 'mid'})
        q.cmd('blockdev-del', {'node-name': 'base'})
    return out


def enospc_script(q, d, tmp):
    out = []
    with FailingNode(SIZE, 'ENOSPC', reads_only=True) as f:
        c = make_chain_over(tmp, SIZE, f)
        open_chain_over(q, c, f)
        f.fail(True)
        out.append(('report', stream(q, 'report')))
        evs = wait_job_end(q, 'report')
        done = [e['data'].get('error') for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(done == ['No space left on device'], 'ENOSPC report: %r' % done)
        out.append(('report', normalise(evs), done))
        for policy in ('enospc', 'stop'):
            out.append((policy, stream(q, policy, on_error=policy)))
            evs, info = stopped(q, policy)
            check(info == ('paused', True, 'nospace'), '%s: %r' % (policy, info))
            out.append((policy, info))
            # Paused by the error policy counts as paused by the user (QEMU);
            # job-cancel has no such check.
            out.append((policy, reply(q.cmd('block-job-cancel', {'device': policy}))))
            out.append((policy, reply(q.cmd('job-cancel', {'id': policy}))))
            evs += wait_job_end(q, policy)
            check(len(chain_names(q)) == 3, '%s: chain changed' % policy)
            out.append((policy, normalise(evs), chain_names(q)))
        f.fail(False)
        q.cmd('blockdev-del', {'node-name': 'top'})
        q.cmd('blockdev-del', {'node-name': 'mid'})
        q.cmd('blockdev-del', {'node-name': 'base'})
    return out


if __name__ == '__main__':
    qsd, ours = run_both(eio_script)
    compare('EIO matrix', qsd, ours)
    print('EIO: %d steps alike' % len(ours))
    qsd, ours = run_both(enospc_script)
    compare('ENOSPC matrix', qsd, ours)
    print('ENOSPC: %d steps alike' % len(ours))
