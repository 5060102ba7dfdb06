#!/usr/bin/python3
"""Graph conflicts, run against qemu-storage-daemon and blockd in one go.

The same QMP script (nodes in use by exports, parents and jobs; deleting
them; jobs on busy, non-root and read-only nodes) runs against both
daemons.  Every step must succeed on both or fail on both with the same
error class and text.  Slow jobs (speed 1) keep their nodes busy while the
conflicting commands run."""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check, fail  # noqa: E402


def script(tmp):
    imgs = {}
    for n in ('a', 'b', 'c', 'd', 'e', 'f', 'g'):
        imgs[n] = os.path.join(tmp, n + '.img')
        with open(imgs[n], 'wb') as f:
            f.truncate(64 << 20)

    def file(node, img, **extra):
        return ('blockdev-add', dict({'driver': 'file', 'node-name': node, 'filename': imgs[img],
                                      'locking': 'off'}, **extra))
    return [
        file('fa', 'a'),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'ra', 'file': 'fa'}),
        file('fb', 'b'),
        file('fc', 'c'),
        file('fd', 'd'),
        file('fro', 'c', **{'read-only': True}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': os.path.join(tmp, 'nbd.sock')}}}),
        ('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'ra', 'writable': True}),
        # 1: a read-only node exported writable
        ('block-export-add', {'type': 'nbd', 'id': 'ero', 'node-name': 'fro', 'writable': True}),
        # 2, 3: deleting a node a parent uses, and one an export uses
        ('blockdev-del', {'node-name': 'fa'}),
        ('blockdev-del', {'node-name': 'ra'}),
        # a slow backup: ra is its source, fb its target
        ('blockdev-backup', {'job-id': 'j1', 'device': 'ra', 'target': 'fb', 'sync': 'full', 'speed': 1}),
        # 4, 5: the backup target used by a second job, from the same and another source
        ('blockdev-backup', {'job-id': 'j2', 'device': 'ra', 'target': 'fb', 'sync': 'full'}),
        ('blockdev-backup', {'job-id': 'j3', 'device': 'fc', 'target': 'fb', 'sync': 'full'}),
        # 6: deleting the backup target
        ('blockdev-del', {'node-name': 'fb'}),
        # 7: mirroring the backup's source (its copy-before-write sits above it)
        ('blockdev-mirror', {'job-id': 'm1', 'device': 'ra', 'target': 'fc', 'sync': 'full'}),
        # 8: mirroring a node that has a parent
        ('blockdev-mirror', {'job-id': 'm2', 'device': 'fa', 'target': 'fc', 'sync': 'full'}),
        # 9: mirroring into the backup's target
        ('blockdev-mirror', {'job-id': 'm3', 'device': 'fc', 'target': 'fb', 'sync': 'full'}),
        # a slow mirror: fc to fd
        ('blockdev-mirror', {'job-id': 'm4', 'device': 'fc', 'target': 'fd', 'sync': 'full', 'speed': 1}),
        # 10, 11: deleting the mirror's source and target
        ('blockdev-del', {'node-name': 'fc'}),
        ('blockdev-del', {'node-name': 'fd'}),
        # 12: a second mirror of the same source
        ('blockdev-mirror', {'job-id': 'm5', 'device': 'fc', 'target': 'fb', 'sync': 'full'}),
        # 13: backing up into the mirror's target
        ('blockdev-backup', {'job-id': 'j5', 'device': 'ra', 'target': 'fd', 'sync': 'full'}),
        # 14, 15: a job into itself
        ('blockdev-mirror', {'job-id': 'm6', 'device': 'fro', 'target': 'fro', 'sync': 'full'}),
        ('blockdev-backup', {'job-id': 'j6', 'device': 'fro', 'target': 'fro', 'sync': 'full'}),
        # things that are allowed in both: a parent and a writable export on a busy target
        ('blockdev-add', {'driver': 'raw', 'node-name': 'rb', 'file': 'fb'}),
        ('block-export-add', {'type': 'nbd', 'id': 'eb', 'node-name': 'fb', 'writable': True}),
        # 16, 17: reading the mirror's target, directly or through a parent
        # (the mirror shares only write-unchanged on its target)
        ('block-export-add', {'type': 'nbd', 'id': 'ed', 'node-name': 'fd'}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'rd', 'file': 'fd'}),
        ('block-export-add', {'type': 'nbd', 'id': 'erd', 'node-name': 'rd', 'writable': True}),
        # 18, 19: mirroring into a node that is exported, directly or through a parent
        file('fe', 'e'),
        file('ff', 'f'),
        file('fg', 'g'),
        ('block-export-add', {'type': 'nbd', 'id': 'ef', 'node-name': 'ff'}),
        ('blockdev-mirror', {'job-id': 'm7', 'device': 'fe', 'target': 'ff', 'sync': 'full'}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'rg', 'file': 'fg'}),
        ('block-export-add', {'type': 'nbd', 'id': 'erg', 'node-name': 'rg'}),
        ('blockdev-mirror', {'job-id': 'm8', 'device': 'fe', 'target': 'fg', 'sync': 'full'}),
        ('blockdev-del', {'node-name': 'rd'}),
        # 20: backing up the slow mirror's source (its op blockers)
        ('blockdev-backup', {'job-id': 'j7', 'device': 'fc', 'target': 'fe', 'sync': 'full'}),
        # after the jobs end, the nodes are free again
        ('block-job-cancel', {'device': 'j1', 'force': True}),
        ('block-job-cancel', {'device': 'm4', 'force': True}),
        ('wait', None),
        ('blockdev-del', {'node-name': 'fd'}),
        ('block-export-del', {'id': 'e0'}),
        ('wait', None),
        ('blockdev-del', {'node-name': 'ra'}),
        ('blockdev-del', {'node-name': 'fa'}),
    ]


def run(cmd, tmp):
    out = []
    with Daemon(cmd) as d:
        q = d.qmp()
        for name, args in script(tmp):
            if name == 'wait':  # jobs and exports to go away
                deadline = time.time() + 10
                while q.cmd('query-block-jobs')['return'] or any(
                        e['shutting-down'] for e in q.cmd('query-block-exports')['return']):
                    check(time.time() < deadline, 'jobs or exports did not go away')
                    time.sleep(0.05)
                continue
            r = q.cmd(name, args)
            out.append((name, args, ('ok',) if 'return' in r else (r['error']['class'], r['error']['desc'])))
        q.close()
        d.stop()
    return out


def main():
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        qsd = run(qsd_cmd(), t1)
        ours = run(blockd_cmd(), t2)
    bad = 0
    errors = 0
    for (name, args, want), (_, _, got) in zip(qsd, ours):
        if os.environ.get('VERBOSE'):
            print(name, json.dumps(args), want)
        if want != got:
            bad += 1
            print('MISMATCH %s %s\n  qemu-storage-daemon: %r\n  blockd:              %r'
                  % (name, json.dumps(args), want, got))
        elif want[0] != 'ok':
            errors += 1
    check(len(qsd) == len(ours), 'different step counts')
    if bad:
        fail('%d of %d steps differ' % (bad, len(qsd)))
    check(errors >= 20, 'only %d conflicts checked' % errors)
    print('%d steps, %d conflicts with the same class and text as qemu-storage-daemon' % (len(qsd), errors))


main()
