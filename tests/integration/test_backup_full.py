#!/usr/bin/python3
"""A full backup of a file node to an nbdkit memory target: the job's state
sequence and events (defaults, then auto-finalize/auto-dismiss off), the
target's content, query-jobs/query-block-jobs, and blockdev-backup's
validation messages.  The same QMP script runs against qemu-storage-daemon
when it is installed, and the event sequences must be identical."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, import_nbd, ok,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status)

SIZE = 64 << 20


def make_image(path):
    with open(path, 'wb') as f:
        f.truncate(SIZE)
        for i in range(0, SIZE, 4 << 20):
            f.seek(i)
            f.write(bytes([(i >> 20) & 0xff or 1]) * (1 << 20))  # 1 MiB data, 3 MiB hole
    with open(path, 'rb') as f:
        return f.read()


def allocated_bytes(sock):
    """Bytes the NBD export reports as allocated (not holes)."""
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.connect_unix(sock)
    total, reach = [0], [0]

    def cb(meta, off, entries, err):
        for length, flags in zip(entries[0::2], entries[1::2]):
            if not flags & 1:
                total[0] += length
            off += length
        reach[0] = off
        return 0
    while reach[0] < SIZE:
        h.block_status(SIZE - reach[0], reach[0], cb)
    h.shutdown()
    return total[0]


def scenario(cmd):
    """Runs the script; returns (event summaries, error texts)."""
    with Daemon(cmd) as d, Nbdkit('memory', '64M') as t1, Nbdkit('memory', '64M') as t2:
        image = make_image(d.path('src.img'))
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': d.path('src.img')}), 'src')
        add_nbd_target(q, 't1', t1.sock)
        add_nbd_target(q, 't2', t2.sock)
        errors = []
        for args in [
            {'job-id': 'x', 'device': 'nope', 'target': 't1', 'sync': 'full'},
            {'job-id': 'x', 'device': 'src', 'target': 'src', 'sync': 'full'},
            {'job-id': 'x', 'device': 'src', 'target': 't1', 'sync': 'incremental'},
            {'job-id': 'x', 'device': 'src', 'target': 't1', 'sync': 'bitmap', 'bitmap': 'nob'},
            {'job-id': 'x', 'device': 'src', 'target': 't1', 'sync': 'full', 'bitmap-mode': 'never'},
            {'job-id': '1x', 'device': 'src', 'target': 't1', 'sync': 'full'},
        ]:
            r = q.cmd('blockdev-backup', args)
            check('error' in r, 'blockdev-backup %r succeeded' % args)
            errors.append(r['error']['desc'])
        check(q.cmd('query-jobs') == {'return': []}, 'a refused backup left a job behind')
        q.events.clear()

        # Defaults: runs to the end and disappears.
        ok(q.cmd('blockdev-backup', {'job-id': 'j0', 'device': 'src', 'target': 't1', 'sync': 'full'}), 'backup')
        evs = wait_job_end(q, 'j0')
        done = [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(len(done) == 1 and done[0]['data']['len'] == SIZE and done[0]['data']['offset'] == SIZE,
              'BLOCK_JOB_COMPLETED %r' % done)
        seq = summary(evs)
        check(read_all(t1.sock) == image, 'target 1 differs from the source')
        allocated = allocated_bytes(t1.sock)

        # Manual finalize and dismiss.
        ok(q.cmd('blockdev-backup', {'job-id': 'k', 'device': 'src', 'target': 't2', 'sync': 'full',
                                     'auto-finalize': False, 'auto-dismiss': False}), 'backup k')
        evs = wait_status(q, 'k', 'pending')
        q.wait_event('BLOCK_JOB_PENDING')
        evs.append({'event': 'BLOCK_JOB_PENDING', 'data': {'type': 'backup', 'id': 'k'}})
        r = q.cmd('query-block-jobs')['return']
        check(len(r) == 1 and r[0]['status'] == 'pending' and r[0]['device'] == 'k' and r[0]['len'] == SIZE
              and r[0]['io-status'] == 'ok' and not r[0]['auto-finalize'], 'query-block-jobs %r' % r)
        errors.append(q.cmd('job-dismiss', {'id': 'k'})['error']['desc'])
        errors.append(q.cmd('job-pause', {'id': 'k'})['error']['desc'])
        errors.append(q.cmd('block-job-pause', {'device': 'nope'})['error']['desc'])
        errors.append(q.cmd('job-pause', {'id': 'nope'})['error']['desc'])
        errors.append(q.cmd('job-complete', {'id': 'k'})['error']['desc'])
        ok(q.cmd('job-finalize', {'id': 'k'}), 'finalize')
        evs += wait_status(q, 'k', 'concluded')
        r = q.cmd('query-jobs')['return']
        check(r == [{'id': 'k', 'type': 'backup', 'status': 'concluded', 'current-progress': SIZE,
                     'total-progress': SIZE}], 'query-jobs %r' % r)
        ok(q.cmd('job-dismiss', {'id': 'k'}), 'dismiss')
        evs += wait_job_end(q, 'k')
        seq += summary(evs)
        check(read_all(t2.sock) == image, 'target 2 differs from the source')
        check(q.cmd('query-jobs') == {'return': []}, 'jobs left')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    return seq, errors, allocated


def main():
    seq, errors, allocated = scenario(blockd_cmd())
    # The source's holes were not written: the target (zero to start with) stays sparse.
    check(allocated == SIZE // 4, 'the target has %d bytes allocated, expected %d' % (allocated, SIZE // 4))
    expected = [('status', 'j0', s) for s in ('created', 'running', 'waiting', 'pending')] + [
        ('BLOCK_JOB_COMPLETED', ('device', 'j0'), ('type', 'backup')),
        ('status', 'j0', 'concluded'), ('status', 'j0', 'null')] + [
        ('status', 'k', s) for s in ('created', 'running', 'waiting', 'pending')] + [
        ('BLOCK_JOB_PENDING', ('id', 'k'), ('type', 'backup')),
        ('BLOCK_JOB_COMPLETED', ('device', 'k'), ('type', 'backup')),
        ('status', 'k', 'concluded'), ('status', 'k', 'null')]
    check(seq == expected, 'event sequence %r' % seq)
    check(errors == [
        "Cannot find device='nope' nor node-name='nope'",
        'Source and target cannot be the same',
        "must provide a valid bitmap name for 'incremental' sync mode",
        "Bitmap 'nob' could not be found",
        'Cannot specify bitmap sync mode without a bitmap',
        "Invalid job ID '1x'",
        "Job 'k' in state 'pending' cannot accept command verb 'dismiss'",
        "Job 'k' in state 'pending' cannot accept command verb 'pause'",
        "Block job 'nope' not found",
        'Job not found',
        "Job 'k' in state 'pending' cannot accept command verb 'complete'",
    ], 'errors %r' % errors)
    if shutil.which('qemu-storage-daemon'):
        qseq, qerrors, _ = scenario(['qemu-storage-daemon'])
        check(qseq == seq, 'qemu-storage-daemon sequence differs:\n%r\n%r' % (qseq, seq))
        check(qerrors == errors, 'qemu-storage-daemon errors differ:\n%r\n%r' % (qerrors, errors))
    print('full backup: events, data and errors OK')


main()
