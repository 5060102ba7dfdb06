#!/usr/bin/python3
"""Block jobs' image locks are qemu-storage-daemon's (docs/running.md,
"Image locking"): the same QMP script against both daemons leaves the same
lock bytes on the files of a writable export's node, of a backup target and
of a mirror target -- while the backup runs (no one else may write the
source), after it is cancelled, while the mirror runs (no one else may even
read the target), and after the mirror's pivot moved the export.  A mirror
to a file another process exports is refused with QEMU's message."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lock_lib import error, locked, ok, tool  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402

NAMES = ('src', 'tgt', 'tgt2')


def script(d, q, files):
    def snapshot(step):
        return step, [sorted(locked(files[n])) for n in NAMES]

    for n in NAMES:
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': n, 'filename': files[n]}), n)
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'writable': True}), 'export')
    yield snapshot('exported')
    ok(q.cmd('blockdev-backup', {'job-id': 'b', 'device': 'src', 'target': 'tgt', 'sync': 'none'}), 'backup')
    yield snapshot('backup running')
    ok(q.cmd('block-job-cancel', {'device': 'b'}), 'cancel')
    q.wait_event('BLOCK_JOB_CANCELLED')
    yield snapshot('backup cancelled')
    ok(q.cmd('blockdev-mirror', {'job-id': 'm', 'device': 'src', 'target': 'tgt2', 'sync': 'full'}), 'mirror')
    q.wait_event('BLOCK_JOB_READY')
    yield snapshot('mirror ready')
    ok(q.cmd('block-job-complete', {'device': 'm'}), 'complete')
    q.wait_event('BLOCK_JOB_COMPLETED')
    yield snapshot('mirror completed')


def refused_mirror(files):
    with Daemon(qsd_cmd()) as holder:
        h = holder.qmp()
        ok(h.cmd('blockdev-add', {'driver': 'file', 'node-name': 't', 'filename': files['tgt']}), 'holder')
        ok(h.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': holder.path('s')}}}), 'nbd')
        ok(h.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 't', 'writable': True}), 'export')
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            for n in ('src', 'tgt'):
                ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': n, 'filename': files[n]}), n)
            error(q.cmd('blockdev-mirror', {'job-id': 'm', 'device': 'src', 'target': 'tgt', 'sync': 'full'}),
                  'Failed to get shared "consistent read" lock', 'mirror to a file in use')
            check(q.cmd('query-jobs') == {'return': []}, 'a refused mirror left a job')
            check(d.stop() == 0, 'blockd failed')


def main():
    with tempfile.TemporaryDirectory(prefix='blockd-locking.') as tmp:
        files = {n: os.path.join(tmp, n + '.raw') for n in NAMES}
        for path in files.values():
            tool('qemu-img', 'create', '-f', 'raw', path, '4M')
        results = {}
        for name, cmd in (('blockd', blockd_cmd()), ('qsd', qsd_cmd())):
            with Daemon(cmd) as d:
                results[name] = list(script(d, d.qmp(), files))
                check(d.stop() == 0, '%s failed' % name)
        refused_mirror(files)
    for (step, ours), (_, theirs) in zip(results['blockd'], results['qsd']):
        check(ours == theirs, '%s: blockd locks %r, qemu-storage-daemon %r (src, tgt, tgt2)' % (step, ours, theirs))
    steps = dict(results['blockd'])
    check(201 in steps['backup running'][0] and steps['mirror ready'][2] == [101, 200, 201, 203],
          'jobs took no locks: %r' % steps)
    print('job locks as qemu-storage-daemon: %r' % steps)


if __name__ == '__main__':
    main()
