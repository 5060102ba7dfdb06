#!/usr/bin/python3
"""blockctl create and resize.

create makes raw (sparse, falloc, full) and qcow2 images (cluster size,
backing file and format) through blockdev-create jobs that it follows and
dismisses: qemu-img info shows what was asked and qemu-img check is clean,
no job stays behind; a job that fails prints the daemon's error and exits
1; usage errors exit 2 and make nothing.  resize grows and shrinks a node
(with a dirty bitmap on it: its dirty count follows), prints the new size
(or {} with --json) and is refused with QEMU's permission conflict while
the node is exported.
"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, ok  # noqa: E402

BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')
MiB = 1 << 20


def qemu_img_info(path):
    r = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()

        def ctl(*args):
            return subprocess.run([BLOCKCTL, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=60, cwd=d.tmp)

        # usage errors: status 2, nothing made
        for args, want in ((('create', 'x.img'), 'create needs more arguments'),
                           (('create', 'x.img', '1Q'), "bad SIZE '1Q'"),
                           (('create', 'x.img', '1M', '--format', 'vmdk'), 'raw or qcow2'),
                           (('create', 'x.img', '1M', '--backing', 'b.img'), 'need --format qcow2'),
                           (('create', 'x.img', '1M', '--format', 'qcow2', '--preallocation', 'full'), 'only be off'),
                           (('create', 'x.img', '1M', '--format', 'qcow2', '--backing-format', 'raw'),
                            '--backing-format needs --backing'),
                           (('resize', 'n'), 'resize needs more arguments'),
                           (('resize', 'n', 'big'), "bad SIZE 'big'")):
            r = ctl(*args)
            check(r.returncode == 2 and want in r.stderr, '%s: %d %r' % (args, r.returncode, r.stderr))
        check(not os.path.exists(d.path('x.img')), 'a usage error made a file')

        r = ctl('create', 'sparse.img', '64M')
        check(r.returncode == 0 and r.stdout.strip() == 'created %s (raw, 64.0 MiB)' % d.path('sparse.img'),
              'create raw: %r %r' % (r.stdout, r.stderr))
        r = ctl('create', 'full.img', '8M', '--preallocation', 'full')
        check(r.returncode == 0, 'create full: %r' % r.stderr)
        check(os.stat(d.path('full.img')).st_blocks * 512 >= 8 * MiB, 'full preallocation allocated nothing')
        check(os.stat(d.path('sparse.img')).st_blocks * 512 <= 64 * 1024, 'the sparse image is allocated')
        r = ctl('create', 'base.qcow2', '1G', '--format', 'qcow2')
        check(r.returncode == 0, 'create qcow2: %r' % r.stderr)
        r = ctl('--json', 'create', 'top.qcow2', '1G', '--format', 'qcow2', '--backing', 'base.qcow2',
                '--backing-format', 'qcow2', '--cluster-size', '128k')
        check(r.returncode == 0 and json.loads(r.stdout) == {}, 'create top --json: %r %r' % (r.stdout, r.stderr))
        info = qemu_img_info(d.path('top.qcow2'))
        check(info['virtual-size'] == 1 << 30 and info['cluster-size'] == 128 * 1024 and
              info['backing-filename'] == 'base.qcow2' and info['backing-filename-format'] == 'qcow2',
              'qemu-img info top.qcow2: %r' % info)
        for img in ('base.qcow2', 'top.qcow2'):
            c = subprocess.run(['qemu-img', 'check', d.path(img)], capture_output=True, text=True)
            check(c.returncode == 0, 'qemu-img check %s: %s' % (img, c.stdout))
        r = ctl('create', 'nodir/x.img', '1M')
        check(r.returncode == 1 and "Could not create '%s': No such file or directory" % d.path('nodir/x.img')
              in r.stderr, 'create failure: %d %r' % (r.returncode, r.stderr))
        check(q.cmd('query-jobs')['return'] == [], 'jobs left: %r' % q.cmd('query-jobs'))

        # resize
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                  'file': {'driver': 'file', 'filename': d.path('top.qcow2')}}), 'add top')
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'top', 'name': 'b'}), 'bitmap')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'top', 'writable': True}), 'export')
        subprocess.run(['qemu-io', '-f', 'raw', '-c', 'write -P 9 1020M 4M',
                        'nbd+unix:///top?socket=' + d.path('nbd.sock')], check=True, capture_output=True)
        r = ctl('resize', 'top', '2G')
        check(r.returncode == 1 and "Permission conflict on node 'top': permissions 'resize' are both required by "
              "an unnamed block device (uses node 'top' as 'root' child) and unshared by an unnamed block device "
              "(uses node 'top' as 'root' child)." in r.stderr, 'resize under an export: %r' % r.stderr)
        ok(q.cmd('block-export-del', {'id': 'e'}), 'export-del')
        r = ctl('resize', 'top', '2G')
        check(r.returncode == 0 and r.stdout.strip() == 'top is now 2.0 GiB (2147483648 bytes)',
              'resize: %r %r' % (r.stdout, r.stderr))
        r = ctl('resize', 'top', '1022M')
        check(r.returncode == 0, 'shrink: %r' % r.stderr)
        nodes = {n['node-name']: n for n in q.cmd('query-named-block-nodes')['return']}
        check(nodes['top']['image']['virtual-size'] == 1022 * MiB, 'node size %r' % nodes['top']['image'])
        check(nodes['top']['dirty-bitmaps'][0]['count'] == 2 * MiB, 'bitmap %r' % nodes['top']['dirty-bitmaps'])
        ok(q.cmd('blockdev-del', {'node-name': 'top'}), 'del top')
        check(qemu_img_info(d.path('top.qcow2'))['virtual-size'] == 1022 * MiB, 'image size after the shrink')
        q.close()
        check(d.stop() == 0, 'blockd exit status')
    print('blockctl create and resize OK')


main()
