#!/usr/bin/python3
"""blockdev-create driver=rbd and block_resize on rbd nodes, against QEMU's
rbd driver (qemu-storage-daemon with qemu-block-extra) on one Ceph cluster.

The same script runs against both daemons, each on images of its own
($P-...): create jobs (default and 64 KiB objects) with their statuses and
`rbd info` of the result; the refusals (a snapshot name, object sizes that
are no power of two or too small, an image that exists, an unknown pool)
as job errors of the same text; an rbd node grown and shrunk by
block_resize, `rbd info` after each; the data written before a shrink
read back (what the new end keeps) through qemu-img.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceph_lib import Cluster  # noqa: E402
from image_lib import check, differential  # noqa: E402

MiB = 1 << 20


def steps(conf):
    def loc(image, **extra):
        return dict({'pool': 'rbd', 'image': image, 'conf': conf}, **extra)

    def create(job, **opts):
        return [('blockdev-create', {'job-id': job, 'options': dict({'driver': 'rbd'}, **opts)}),
                ('wait-job', job)]

    def info(image):
        return ('sh', "rbd -c %s info rbd/%s | grep -E '^\\s*(size|order)'" % (conf, image))
    return (create('c1', location=loc('$P-a'), size=64 * MiB) + [info('$P-a')] +
            create('c2', location=loc('$P-b'), size=16 * MiB, **{'cluster-size': 65536}) + [info('$P-b')] +
            create('c3', location=loc('$P-c', snapshot='s'), size=MiB) +
            create('c4', location=loc('$P-c'), size=MiB, **{'cluster-size': 100000}) +
            create('c5', location=loc('$P-c'), size=MiB, **{'cluster-size': 2048}) +
            create('c6', location=loc('$P-a'), size=MiB) +
            create('c7', location=dict(loc('$P-c'), pool='nosuch'), size=MiB) +
            [('query-jobs', {}),
             # (before blockd opens the image: it holds its exclusive lock while open)
             ('sh', "qemu-io -f raw -c 'write -P 5 0 8M' 'rbd:rbd/$P-a:conf=%s' >/dev/null 2>&1; echo $?" % conf),
             ('blockdev-add', dict({'driver': 'rbd', 'node-name': 'a'}, **loc('$P-a'))),
             ('block_resize', {'node-name': 'a', 'size': 128 * MiB}),
             info('$P-a'),
             ('block_resize', {'node-name': 'a', 'size': 4 * MiB}),
             info('$P-a'),
             ('blockdev-del', {'node-name': 'a'}),
             ('sh', "qemu-io -f raw -c 'read -P 5 0 4M' 'rbd:rbd/$P-a:conf=%s' | grep -c '^read'" % conf),
             ('blockdev-add', dict({'driver': 'rbd', 'node-name': 'b', 'read-only': True}, **loc('$P-b'))),
             ('block_resize', {'node-name': 'b', 'size': 32 * MiB}),
             ('block_resize', {'node-name': 'b', 'size': 4 * MiB + 1})])


def main():
    with Cluster(qemu=True) as c:
        st = steps(c.conf)
        ours, refusals = differential(st, names_qsd={'$P': 'qsd'}, names_ours={'$P': 'blockd'})
        infos = [r for s, r in ours if s[0] == 'sh' and ' info ' in s[1]]
        check('size 64 MiB in 16 objects' in infos[0] and 'order 22' in infos[0], 'rbd info a: %r' % infos[0])
        check('order 16' in infos[1], 'rbd info b: %r' % infos[1])
        check('size 128 MiB' in infos[2] and 'size 4 MiB' in infos[3], 'rbd info after resizes: %r' % infos[2:])
        jobs = [r for s, r in ours if s[0] == 'query-jobs'][0]
        errors = sorted(j['error'] for j in jobs if 'error' in j)
        check(len(errors) == 5, 'job errors: %r' % errors)
        reads = [r for s, r in ours if s[0] == 'sh' and 'read -P' in s[1]][0]
        check(reads.split() == ['1'], 'data after shrinking: %r' % reads)
        # both daemons' images are alike (created side by side on one cluster)
        a = subprocess.run(['rbd', '-c', c.conf, 'info', 'rbd/qsd-b'], capture_output=True, text=True).stdout
        b = subprocess.run(['rbd', '-c', c.conf, 'info', 'rbd/blockd-b'], capture_output=True, text=True).stdout
        check([x for x in a.splitlines() if 'order' in x] == [x for x in b.splitlines() if 'order' in x],
              'object sizes differ')
        print('rbd: %d steps as with qemu-storage-daemon, %d refusals and %d job errors of the same text: %s'
              % (len(st), refusals, len(errors), errors))


main()
