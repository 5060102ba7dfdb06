#!/usr/bin/python3
"""Transactions with backups (QEMU's bitmaps.rst examples with two drives,
drive1's target failing writes through nbdkit's error filter):
individual mode lets drive0's incremental succeed (bitmap cleared) while
drive1's fails (bitmap kept); grouped mode cancels drive0's job too and
both bitmaps keep their bits.  An abort action undoes a prepared backup,
grouped mode refuses bitmap actions, and drive-backup writes a raw file.
The per-job event sequences are compared with qemu-storage-daemon's."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, connect, ok,  # noqa: E402
                        summary, wait_job_end)

SIZE = 8 << 20
CLUSTER = 64 << 10


def count(q, node):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            return [b['count'] for b in n.get('dirty-bitmaps', []) if b.get('name') == 'bitmap0'][0]


def per_job(events, job):
    return summary([e for e in events if job in (e['data'].get('id'), e['data'].get('device'))])


def backup(drive, target, job):
    return {'type': 'blockdev-backup', 'data': {'job-id': job, 'device': drive, 'target': target,
                                                'sync': 'incremental', 'bitmap': 'bitmap0'}}


def scenario(cmd):
    out = {}
    with Daemon(cmd) as d, Nbdkit('memory', str(SIZE)) as good:
        q = d.qmp()
        flag = d.path('fail')
        bad = Nbdkit('memory', str(SIZE), 'error-rate=100%', 'error-file=' + flag, filters=['error']).start()
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        for drive in ('drive0', 'drive1'):
            with open(d.path(drive), 'wb') as f:
                f.write(b'\x11' * SIZE)
            ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': drive, 'filename': d.path(drive)}), drive)
            ok(q.cmd('block-dirty-bitmap-add', {'node': drive, 'name': 'bitmap0'}), 'bitmap')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': drive, 'node-name': drive, 'writable': True}), 'exp')
        add_nbd_target(q, 'good', good.sock)
        add_nbd_target(q, 'bad', bad.sock)

        def guest_write(offsets):
            for drive in ('drive0', 'drive1'):
                h = connect(d.path('nbd.sock'), drive)
                for off in offsets:
                    h.pwrite(b'\x22' * CLUSTER, off)
                h.shutdown()
        guest_write([0, CLUSTER, 4 << 20])
        check(count(q, 'drive0') == 3 * CLUSTER and count(q, 'drive1') == 3 * CLUSTER, 'initial counts')

        # individual: drive0 succeeds, drive1 fails.
        open(flag, 'w').close()
        ok(q.cmd('transaction', {'actions': [backup('drive0', 'good', 'j0'), backup('drive1', 'bad', 'j1')]}),
           'transaction individual')
        evs = wait_job_end(q, ['j0', 'j1'])
        out['individual'] = (per_job(evs, 'j0'), per_job(evs, 'j1'))
        out['individual-counts'] = (count(q, 'drive0'), count(q, 'drive1'))

        # grouped: drive1 fails, drive0 is cancelled, both bitmaps keep their bits.
        guest_write([6 << 20])
        ok(q.cmd('transaction', {'actions': [backup('drive0', 'good', 'g0'), backup('drive1', 'bad', 'g1')],
                                 'properties': {'completion-mode': 'grouped'}}), 'transaction grouped')
        evs = wait_job_end(q, ['g0', 'g1'])
        # Whether g0 finished its own copy (waiting) before g1 failed is timing.
        out['grouped'] = tuple([e for e in per_job(evs, j) if e != ('status', j, 'waiting')] for j in ('g0', 'g1'))
        out['grouped-counts'] = (count(q, 'drive0'), count(q, 'drive1'))
        os.unlink(flag)

        r = q.cmd('transaction', {'actions': [backup('drive1', 'good', 'a0'), {'type': 'abort', 'data': {}}]})
        out['abort'] = r.get('error', {}).get('desc')
        out['abort-count'] = count(q, 'drive1')
        out['abort-jobs'] = q.cmd('query-jobs')['return']
        r = q.cmd('transaction', {'actions': [{'type': 'block-dirty-bitmap-add',
                                               'data': {'node': 'drive0', 'name': 'x'}}],
                                  'properties': {'completion-mode': 'grouped'}})
        out['grouped-add'] = r.get('error', {}).get('desc')
        q.events.clear()

        target = d.path('db.raw')
        ok(q.cmd('drive-backup', {'job-id': 'db', 'device': 'drive0', 'target': target, 'sync': 'full',
                                  'format': 'raw'}), 'drive-backup')
        out['drive-backup'] = summary(wait_job_end(q, 'db'))
        with open(target, 'rb') as f, open(d.path('drive0'), 'rb') as g:
            check(f.read() == g.read(), 'drive-backup target differs')
        for drive in ('drive0', 'drive1'):
            ok(q.cmd('block-export-del', {'id': drive}), 'del export')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
        bad.close()
    return out


def main():
    r = scenario(blockd_cmd())
    st = lambda j, *s: [('status', j, x) for x in s]  # noqa: E731
    done = lambda j, e=None: [('BLOCK_JOB_COMPLETED', ('device', j)) + ((('error', e),) if e else ()) +  # noqa: E731
                              (('type', 'backup'),)]
    fail_seq = lambda j: st(j, 'created', 'running') + [  # noqa: E731
        ('BLOCK_JOB_ERROR', ('action', 'report'), ('device', j), ('operation', 'write'))] + \
        st(j, 'aborting') + done(j, 'Input/output error') + st(j, 'concluded', 'null')
    check(r['individual'] == (st('j0', 'created', 'running', 'waiting', 'pending') + done('j0') +
                              st('j0', 'concluded', 'null'), fail_seq('j1')), 'individual %r' % (r['individual'],))
    check(r['individual-counts'] == (0, 3 * CLUSTER), 'individual counts %r' % (r['individual-counts'],))
    g0 = r['grouped'][0]
    check(g0[-4:] == st('g0', 'aborting') + [('BLOCK_JOB_CANCELLED', ('device', 'g0'), ('type', 'backup'))] +
          st('g0', 'concluded', 'null'), 'grouped g0 %r' % g0)
    check(r['grouped'][1] == fail_seq('g1'), 'grouped g1 %r' % (r['grouped'][1],))
    check(r['grouped-counts'] == (CLUSTER, 4 * CLUSTER), 'grouped counts %r' % (r['grouped-counts'],))
    check(r['abort'] == 'Transaction aborted using Abort action', 'abort %r' % r['abort'])
    check(r['abort-count'] == 4 * CLUSTER and r['abort-jobs'] == [], 'abort left %r' % (r,))
    check(r['grouped-add'] == "Action 'block-dirty-bitmap-add' does not support Transaction property "
          'completion-mode = grouped', 'grouped add %r' % r['grouped-add'])
    check(r['drive-backup'] == st('db', 'created', 'running', 'waiting', 'pending') + done('db') +
          st('db', 'concluded', 'null'), 'drive-backup %r' % r['drive-backup'])
    if shutil.which('qemu-storage-daemon'):
        qr = scenario(['qemu-storage-daemon'])
        for k in r:
            check(qr[k] == r[k], 'qemu-storage-daemon differs for %s:\n%r\n%r' % (k, qr[k], r[k]))
    print('transactions OK')


main()
