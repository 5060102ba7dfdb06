#!/usr/bin/python3
"""An rbd base opened read-only, then committed into.

A qcow2 overlay (a local file) over an rbd image added with read-only=true,
as libvirt adds backing layers: block-commit of the overlay reopens the rbd
node read-write, which takes the image's exclusive lock as a writable open
does.  While a second blockd holds the image writable (its lock), the
commit is refused with the lock's text and nothing changes (the node stays
read-only, the chain reads the same).  Without it, the active commit runs:
during it the rbd node is read-write and its lock is held, after
job-complete the image holds the merge of base and overlay and the rbd
node stays read-write (QEMU gives the commit's base the active layer's
mode).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from backup_lib import ok, read_all, wait_job_end, wait_until  # noqa: E402
from ceph_lib import Cluster  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check  # noqa: E402

SIZE = 8 << 20
LOCKED = (r"Image 'rbd/base' is in use by another client \(\S+\) that holds its exclusive lock; "
          r"open it with read-only=on")


def ro(q, node):
    return [n['ro'] for n in q.cmd('query-named-block-nodes')['return'] if n['node-name'] == node][0]


def locks(c):
    return json.loads(c.rbd('lock', 'ls', '--format', 'json', 'rbd/base'))


def main():
    with Cluster() as c, tempfile.TemporaryDirectory(prefix='rbd-commit.') as tmp:
        base = bytearray(b'\x11' * SIZE)
        raw = os.path.join(tmp, 'base.raw')
        with open(raw, 'wb') as f:
            f.write(base)
        c.rbd('import', raw, 'rbd/base')
        top = os.path.join(tmp, 'top.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', top, str(SIZE)], check=True)
        subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 1M 1M', '-c', 'write -z 4M 64k', top],
                       check=True, stdout=subprocess.DEVNULL)
        merged = bytearray(base)
        merged[1 << 20:2 << 20] = b'\x22' * (1 << 20)
        merged[4 << 20:(4 << 20) + 65536] = bytes(65536)
        with Daemon(blockd_cmd()) as d, Daemon(blockd_cmd()) as other:
            q = d.qmp()
            ok(q.cmd('blockdev-add', c.node('rb', 'base', **{'read-only': True})), 'blockdev-add rb')
            ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'rb',
                                      'file': {'driver': 'file', 'filename': top}}), 'blockdev-add top')
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'top', 'name': 'top',
                                          'writable': True}), 'block-export-add')
            check(read_all(sock, 'top') == merged, 'the chain does not read the merge')
            check(ro(q, 'rb') is True and locks(c) == [], 'the read-only rbd node is not read-only or locked')

            # Another client writing the image: the reopen takes no lock.
            qo = other.qmp()
            ok(qo.cmd('blockdev-add', c.node('w', 'base')), 'the other writer')
            r = q.cmd('block-commit', {'job-id': 'c', 'device': 'top'})
            err = r.get('error', {}).get('desc', '')
            check(re.fullmatch(LOCKED, err), 'commit while another client holds the lock: %r' % r)
            check(ro(q, 'rb') is True and q.cmd('query-block-jobs')['return'] == [],
                  'the refused commit changed something')
            check(read_all(sock, 'top') == merged, 'the chain reads differently after the refusal')
            ok(qo.cmd('blockdev-del', {'node-name': 'w'}), 'blockdev-del of the other writer')

            ok(q.cmd('block-commit', {'job-id': 'c', 'device': 'top'}), 'block-commit')
            wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY')
            check(ro(q, 'rb') is False and len(locks(c)) == 1, 'during the commit: ro %r, locks %r'
                  % (ro(q, 'rb'), locks(c)))
            ok(q.cmd('job-complete', {'id': 'c'}), 'job-complete')
            events = wait_job_end(q, 'c')
            check(any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data'] for e in events),
                  'the commit failed: %r' % events)
            check(ro(q, 'rb') is False, 'the rbd node went back read-only after job-complete (QEMU keeps it writable)')
            check(read_all(sock, 'top') == merged, 'the export reads differently on the rbd image')
            ok(q.cmd('block-export-del', {'id': 'e'}), 'block-export-del')
            wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
            ok(q.cmd('blockdev-del', {'node-name': 'top'}), 'blockdev-del top')
            ok(q.cmd('blockdev-del', {'node-name': 'rb'}), 'blockdev-del rb')
            check(c.export('base') == merged, 'the rbd image is not the merge of base and overlay')
            check(locks(c) == [], 'the lock outlived the node')
            q.close()
            qo.close()


if __name__ == '__main__':
    main()
