#!/usr/bin/python3
"""drive-backup targets that cannot be used fail with QEMU's errors and
leave no node or job behind; the same script runs against
qemu-storage-daemon and the messages must match where QEMU defines them.
A "new" image on an NBD URI is the existing export, opened (QEMU's
bdrv_img_create does the same), so a backup to it succeeds on both."""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, Nbdkit, blockd_cmd, check, ok, qsd_cmd, summary, wait_job_end  # noqa: E402

SIZE = 1 << 20


def scenario(cmd):
    out = {}
    with Daemon(cmd) as d, Nbdkit('memory', str(SIZE)) as t:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'src', 'size': SIZE, 'read-zeroes': True}),
           'src')
        cases = {
            'uri-new-unreachable': {'target': 'nbd+unix:///?socket=/nonexistent/s', 'format': 'raw'},
            'uri-existing-unreachable': {'target': 'nbd+unix:///?socket=/nonexistent/s', 'format': 'raw',
                                         'mode': 'existing'},
            'qcow2-new-no-dir': {'target': '/nonexistent/dir/x.qcow2', 'format': 'qcow2'},
            'existing-missing': {'target': '/nonexistent/x.img', 'mode': 'existing'},
            'uri-no-socket': {'target': 'nbd+unix:///', 'format': 'raw', 'mode': 'existing'},
            'uri-no-host': {'target': 'nbd://', 'format': 'raw', 'mode': 'existing'},
        }
        for name, extra in cases.items():
            args = {'job-id': 'j', 'device': 'src', 'sync': 'full'}
            args.update(extra)
            r = q.cmd('drive-backup', args)
            check('error' in r, '%s: drive-backup succeeded: %r' % (name, r))
            out[name] = (r['error']['class'], r['error']['desc'])
        nodes = sorted(n['node-name'] for n in q.cmd('query-named-block-nodes')['return'])
        check(nodes == ['src'], 'refused drive-backups left nodes behind: %r' % nodes)
        check(q.cmd('query-jobs') == {'return': []}, 'refused drive-backups left jobs behind')
        q.events.clear()
        ok(q.cmd('drive-backup', {'job-id': 'u', 'device': 'src', 'sync': 'full', 'format': 'raw',
                                  'target': 'nbd+unix:///?socket=' + t.sock}), 'drive-backup to an export')
        out['uri-new-opens'] = [e for e in summary(wait_job_end(q, 'u')) if e[0].startswith('BLOCK_JOB')]
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    return out


def main():
    ours = scenario(blockd_cmd())
    check(ours['uri-no-socket'] == ('GenericError', "NBD URI 'nbd+unix:///': nbd+unix needs ?socket=PATH "
                                                    "and no host"), 'uri-no-socket %r' % (ours['uri-no-socket'],))
    check(ours['uri-no-host'] == ('GenericError', "NBD URI 'nbd://' has no host"), 'uri-no-host %r'
          % (ours['uri-no-host'],))
    check(ours['uri-new-opens'] == [('BLOCK_JOB_COMPLETED', ('device', 'u'), ('type', 'backup'))],
          'backup to an opened export: %r' % ours['uri-new-opens'])
    if shutil.which('qemu-storage-daemon'):
        theirs = scenario(qsd_cmd())
        for name in ('uri-new-unreachable', 'uri-existing-unreachable', 'qcow2-new-no-dir', 'existing-missing',
                     'uri-new-opens'):
            check(ours[name] == theirs[name], '%s: blockd %r, qemu-storage-daemon %r'
                  % (name, ours[name], theirs[name]))
    for name, v in ours.items():
        print('%-26s %r' % (name, v))
    print('drive target errors OK')


main()
