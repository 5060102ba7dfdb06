#!/usr/bin/python3
"""QEMU's bitmaps documentation (docs/interop/bitmaps.rst, the drive-backup
edition), its two transaction examples run verbatim -- drive names as node
names, file names relative to the daemon's working directory, images made
with qemu-img as the document says -- against blockd and against
qemu-storage-daemon:

* "Example: Partial Transactional Failures": drive0's incremental
  drive-backup into drive0.inc0.qcow2 completes, drive1's fails (drive1 is
  an NBD node whose server, nbdkit with the error filter, fails reads):
  BLOCK_JOB_ERROR {action report, operation read} then BLOCK_JOB_COMPLETED
  with error "Input/output error" and offset 0; drive0's bitmap is cleared,
  drive1's keeps its bits; drive0.inc0.qcow2 on drive0.full.qcow2 restores
  drive0 byte for byte (qemu-img compare) and passes qemu-img check.
* "Example: Grouped Completion Mode": the same transaction with
  completion-mode grouped: drive1 ERROR + COMPLETED(error), then drive0
  BLOCK_JOB_CANCELLED; both bitmaps keep their bits.
* The issue's variant: drive1's *target* is the NBD server, a qcow2 image
  (metadata preallocated: an export cannot grow) served by nbdkit's file
  plugin behind the error filter failing writes, named by an nbd+unix://
  URI: the same sequences with operation write.

Each daemon's per-job event sequences and bitmap counts must match the
document and each other."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, Nbdkit, blockd_cmd, check, connect, fail, ok, qsd_cmd, wait_job_end  # noqa: E402

SIZE = 64 << 20  # the document's 67108864
CLUSTER = 64 << 10


def qemu_img(*args):
    r = subprocess.run(['qemu-img'] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        fail('qemu-img %s: %s%s' % (' '.join(args), r.stdout, r.stderr))
    return r.stdout


def counts(q):
    out = {}
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] in ('drive0', 'drive1'):
            out[n['node-name']] = [b['count'] for b in n.get('dirty-bitmaps', []) if b.get('name') == 'bitmap0'][0]
    return out


def job_events(events, drive):
    """The document's events of one job, with the fields it shows."""
    out = []
    for e in events:
        d = e['data']
        if d.get('device') != drive or e['event'] not in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_ERROR',
                                                          'BLOCK_JOB_CANCELLED'):
            continue
        if e['event'] == 'BLOCK_JOB_ERROR':
            out.append((e['event'], d['action'], d['operation']))
        else:
            out.append((e['event'], d['type'], d.get('error'), d['len'], d['offset'] == d['len']))
    return out


def wait_both(q):
    """Every event until both jobs (ids drive0 and drive1) are gone."""
    return wait_job_end(q, ['drive0', 'drive1'], timeout=60)


def drive_backup(drive, **kw):
    data = {'device': drive, 'bitmap': 'bitmap0', 'format': 'qcow2', 'mode': 'existing',
            'sync': 'incremental', 'target': '%s.inc0.qcow2' % drive}
    data.update(kw)
    return {'type': 'drive-backup', 'data': data}


def guest_write(sock, drive, offsets, byte):
    h = connect(sock, drive)
    for off in offsets:
        h.pwrite(bytes([byte]) * CLUSTER, off)
    h.flush()
    h.shutdown()


def with_job_ids(actions):
    """qemu-storage-daemon has no drives, so a job without job-id fails
    there ("Invalid job ID ''"); blockd takes the device (node) name as
    QEMU does for a drive.  The only change made for qemu-storage-daemon."""
    for a in actions:
        if a['type'] == 'drive-backup':
            a['data'].setdefault('job-id', a['data']['device'])
    return actions


def scenario(cmd, variant):
    """variant 'source': drive1's source fails reads (the document's case);
    'target': drive1's target is an NBD server failing writes."""
    work = tempfile.mkdtemp(prefix='blockd-bitmaps-doc.')
    old = os.getcwd()
    os.chdir(work)  # the daemon inherits it: the document's relative names
    out = {}
    try:
        for drive, byte in (('drive0', 0x10), ('drive1', 0x20)):
            with open(drive + '.raw', 'wb') as f:
                f.write(bytes([byte]) * SIZE)
        trigger = os.path.join(work, 'fail-now')
        src_filter = ['error-pread=EIO', 'error-pread-rate=100%', 'error-pread-file=' + trigger]
        with Daemon(cmd) as d, Nbdkit('file', os.path.join(work, 'drive1.raw'),
                                      *(src_filter if variant == 'source' else []), filters=['error']) as n1:
            q = d.qmp()
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd')
            ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'drive0', 'filename': 'drive0.raw'}), 'd0')
            ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'drive1',
                                      'server': {'type': 'unix', 'path': n1.sock}}), 'd1')
            for drive in ('drive0', 'drive1'):
                ok(q.cmd('block-export-add', {'type': 'nbd', 'id': drive, 'node-name': drive,
                                              'writable': True}), 'export')

            # The anchor: bitmaps and full backups in one transaction (the document's first example).
            qsd = 'qemu-storage-daemon' in cmd[0]
            fix = with_job_ids if qsd else (lambda actions: actions)
            ok(q.cmd('transaction', {'actions': fix([
                {'type': 'block-dirty-bitmap-add', 'data': {'node': 'drive0', 'name': 'bitmap0'}},
                {'type': 'block-dirty-bitmap-add', 'data': {'node': 'drive1', 'name': 'bitmap0'}},
                {'type': 'drive-backup', 'data': {'device': 'drive0', 'target': 'drive0.full.qcow2',
                                                  'sync': 'full', 'format': 'qcow2'}},
                {'type': 'drive-backup', 'data': {'device': 'drive1', 'target': 'drive1.full.qcow2',
                                                  'sync': 'full', 'format': 'qcow2'}}])}), 'anchor')
            evs = wait_both(q)
            for drive in ('drive0', 'drive1'):
                check(job_events(evs, drive) == [('BLOCK_JOB_COMPLETED', 'backup', None, SIZE, True)],
                      '%s full backup: %r' % (drive, job_events(evs, drive)))

            # The guest writes; then the images of the next backups.
            for drive in ('drive0', 'drive1'):
                guest_write(sock, drive, [0, 5 * CLUSTER, 40 * CLUSTER, 1000 * CLUSTER], 0x33)
                qemu_img('create', '-f', 'qcow2', drive + '.inc0.qcow2', '-b', drive + '.full.qcow2', '-F', 'qcow2')
            before = counts(q)
            check(before == {'drive0': 4 * CLUSTER, 'drive1': 4 * CLUSTER}, 'bitmaps before: %r' % before)

            target1 = {}
            n1t = None
            if variant == 'target':
                # drive1's target: a qcow2 image behind an NBD server failing
                # writes.  An NBD export cannot grow, so the image is made with
                # its metadata preallocated (which rules out a backing file).
                qemu_img('create', '-f', 'qcow2', '-o', 'preallocation=metadata', 'drive1.inc0.qcow2', str(SIZE))
                n1t = Nbdkit('file', os.path.join(work, 'drive1.inc0.qcow2'), 'error-pwrite=EIO',
                             'error-pwrite-rate=100%', 'error-pwrite-file=' + trigger, filters=['error']).start()
                target1 = {'target': 'nbd+unix:///?socket=' + n1t.sock}
            open(trigger, 'w').close()

            # Example: Partial Transactional Failures.
            q.events.clear()
            ok(q.cmd('transaction', {'actions': fix([drive_backup('drive0'), drive_backup('drive1', **target1)])}),
               'partial transaction')
            evs = wait_both(q)
            out['partial'] = (job_events(evs, 'drive0'), job_events(evs, 'drive1'), counts(q))
            r = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', 'drive0.inc0.qcow2',
                                'drive0.raw'], capture_output=True, text=True)
            out['partial-restore'] = (r.returncode, r.stdout.strip())
            r = subprocess.run(['qemu-img', 'check', 'drive0.inc0.qcow2'], capture_output=True, text=True)
            out['partial-check'] = r.returncode

            # Example: Grouped Completion Mode (new images, drive0 written again).
            guest_write(sock, 'drive0', [7 * CLUSTER], 0x44)
            before = counts(q)
            for drive in ('drive0', 'drive1'):
                qemu_img('create', '-f', 'qcow2', drive + '.inc1.qcow2', '-b', drive + '.inc0.qcow2', '-F', 'qcow2')
            if variant == 'target':
                target1 = {'target': 'nbd+unix:///?socket=' + n1t.sock, 'mode': 'existing'}
            q.events.clear()
            ok(q.cmd('transaction', {'properties': {'completion-mode': 'grouped'},
                                     'actions': fix([drive_backup('drive0', target='drive0.inc1.qcow2'),
                                                     drive_backup('drive1', **(target1 or
                                                                              {'target': 'drive1.inc1.qcow2'}))])}),
               'grouped transaction')
            evs = wait_both(q)
            names = [(e['event'], e['data'].get('device')) for e in evs
                     if e['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_ERROR')]
            out['grouped'] = (job_events(evs, 'drive0'), job_events(evs, 'drive1'), counts(q), before, names)
            if n1t:
                n1t.stop()
            q.close()
            check(d.stop() == 0, 'daemon exit status')
    finally:
        os.chdir(old)
        shutil.rmtree(work, ignore_errors=True)
    return out


def expect(name, r, operation):
    # An incremental job's len is the bitmap's dirty bytes (the document's
    # 67108864 is a disk whose every cluster was dirty).
    err = [('BLOCK_JOB_ERROR', 'report', operation),
           ('BLOCK_JOB_COMPLETED', 'backup', 'Input/output error', 4 * CLUSTER, False)]
    d0, d1, after = r['partial']
    check(d0 == [('BLOCK_JOB_COMPLETED', 'backup', None, 4 * CLUSTER, True)], '%s partial drive0: %r' % (name, d0))
    check(d1 == err, '%s partial drive1: %r' % (name, d1))
    check(after == {'drive0': 0, 'drive1': 4 * CLUSTER}, '%s bitmaps after the partial failure: %r' % (name, after))
    check(r['partial-restore'] == (0, 'Images are identical.'),
          '%s drive0.inc0.qcow2 does not restore drive0: %r' % (name, r['partial-restore']))
    check(r['partial-check'] == 0, '%s qemu-img check drive0.inc0.qcow2 failed' % name)
    d0, d1, after, before, names = r['grouped']
    check(d1 == err, '%s grouped drive1: %r' % (name, d1))
    check(len(d0) == 1 and d0[0][:4] == ('BLOCK_JOB_CANCELLED', 'backup', None, CLUSTER),
          '%s grouped drive0: %r' % (name, d0))
    check(names.index(('BLOCK_JOB_COMPLETED', 'drive1')) < names.index(('BLOCK_JOB_CANCELLED', 'drive0')),
          '%s grouped: drive0 cancelled before drive1 failed: %r' % (name, names))
    check(after == before == {'drive0': CLUSTER, 'drive1': 4 * CLUSTER},
          '%s bitmaps after the grouped failure: %r (before %r)' % (name, after, before))


def main():
    if not shutil.which('qemu-img'):
        print('SKIP: qemu-img is not installed')
        sys.exit(77)
    for variant, operation in (('source', 'read'), ('target', 'write')):
        ours = scenario(blockd_cmd(), variant)
        expect('blockd (%s)' % variant, ours, operation)
        if shutil.which('qemu-storage-daemon'):
            theirs = scenario(qsd_cmd(), variant)
            expect('qemu-storage-daemon (%s)' % variant, theirs, operation)
            for key in ('partial', 'grouped'):
                check(ours[key][:2] == theirs[key][:2], '%s %s: blockd %r, qemu-storage-daemon %r'
                      % (variant, key, ours[key][:2], theirs[key][:2]))
        print('%s variant: the document\'s events and bitmaps, as qemu-storage-daemon' % variant)
    print('bitmaps.rst examples OK')


main()
