#!/usr/bin/python3
"""change-backing-file: the backing file name recorded in an image of a chain.

The same script against qemu-storage-daemon and blockd: the refusals
(unknown device, a device that is not a root node, unknown image, an
image without a backing node, an image outside the device's chain, a
device in use by a job, a read-only image, a name too long for the
header), then new relative and absolute names for two images of a
three-image chain and for a read-only image (QEMU reopens it read-write
for the change), the backing format changing with them (QEMU records the
image's own format).
After each change `qemu-img info` and `qemu-img check` of the images
agree, and the images reopened from their headers alone (blockdev-add
without `backing`) show the same chain in query-named-block-nodes.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_lib import check, differential  # noqa: E402


def info(*names):
    return ('sh', '; '.join('qemu-img info -U $T/%s | grep -E "^(image|backing)"; qemu-img check -U $T/%s | head -1'
                            % (n, n) for n in names))


def steps():
    return [
        ('sh', 'qemu-img create -q -f raw $T/base.img 1M; cp $T/base.img $T/base2.img; '
               'qemu-img create -q -f qcow2 -b $T/base.img -F raw $T/mid.qcow2; '
               'qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 $T/top.qcow2; '
               'qemu-img create -q -f qcow2 $T/lone.qcow2 1M; '
               'qemu-img create -q -f qcow2 -b $T/base.img -F raw $T/ro.qcow2; '
               'qemu-img create -q -f qcow2 -b $T/ro.qcow2 -F qcow2 $T/rotop.qcow2; '
               'qemu-img create -q -f raw $T/src.img 1M'),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'base', 'file': {'driver': 'file',
                                                                          'filename': '$T/base.img'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'mid', 'backing': 'base',
                          'file': {'driver': 'file', 'filename': '$T/mid.qcow2'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
                          'file': {'driver': 'file', 'filename': '$T/top.qcow2', 'node-name': 'topf'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'lone', 'file': {'driver': 'file',
                                                                            'filename': '$T/lone.qcow2'}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'base2', 'read-only': True,
                          'file': {'driver': 'file', 'filename': '$T/base.img', 'locking': 'off'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'ro', 'backing': 'base2', 'read-only': True,
                          'file': {'driver': 'file', 'filename': '$T/ro.qcow2'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'rotop', 'backing': 'ro',
                          'file': {'driver': 'file', 'filename': '$T/rotop.qcow2'}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'src', 'file': {'driver': 'file',
                                                                         'filename': '$T/src.img'}}),
        info('mid.qcow2', 'top.qcow2'),
        ('change-backing-file', {'device': 'nosuch', 'image-node-name': 'mid', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'mid', 'image-node-name': 'mid', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'topf', 'image-node-name': 'top', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'nosuch', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'base', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'lone', 'image-node-name': 'lone', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'lone', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'lone', 'image-node-name': 'mid', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'ro', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'rotop', 'image-node-name': 'mid', 'backing-file': 'x'}),
        ('change-backing-file', {'device': 'rotop', 'image-node-name': 'ro', 'backing-file': 'base2.img'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'mid', 'backing-file': 'x' * 1024}),
        ('change-backing-file', {'device': 'top'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'mid', 'backing-file': 5}),
        # a node a job uses is no longer a root (QEMU's bdrv_is_root_node), as target or source;
        # (qemu-storage-daemon's backups pause once at start: their statuses are not compared)
        ('blockdev-backup', {'job-id': 'j', 'device': 'src', 'target': 'lone', 'sync': 'full', 'speed': 1,
                             'auto-dismiss': False}),
        ('change-backing-file', {'device': 'lone', 'image-node-name': 'lone', 'backing-file': 'x'}),
        ('job-cancel', {'id': 'j'}),
        ('wait-job', 'j', False),
        ('job-dismiss', {'id': 'j'}),
        ('blockdev-backup', {'job-id': 'k', 'device': 'top', 'target': 'src', 'sync': 'full', 'speed': 1,
                             'auto-dismiss': False}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'mid', 'backing-file': 'x'}),
        ('job-cancel', {'id': 'k'}),
        ('wait-job', 'k', False),
        ('job-dismiss', {'id': 'k'}),
        info('mid.qcow2', 'top.qcow2', 'ro.qcow2'),
        # the changes
        ('change-backing-file', {'device': 'top', 'image-node-name': 'mid', 'backing-file': 'base2.img'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'top', 'backing-file': '$T/mid.qcow2'}),
        info('mid.qcow2', 'top.qcow2'),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'top', 'backing-file': ''}),
        info('top.qcow2'),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'top', 'backing-file': 'mid.qcow2'}),
        ('change-backing-file', {'device': 'top', 'image-node-name': 'mid', 'backing-file': 'lone.qcow2'}),
        ('blockdev-del', {'node-name': 'top'}),
        ('blockdev-del', {'node-name': 'mid'}),
        ('blockdev-del', {'node-name': 'lone'}),
        info('mid.qcow2', 'top.qcow2', 'ro.qcow2'),
        # reopened from the headers: top -> mid.qcow2 -> lone.qcow2
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'top2',
                          'file': {'driver': 'file', 'filename': '$T/top.qcow2'}}),
        ('query-named-block-nodes', {}),
    ]


def chain(nodes):
    """top2's chain as (filename, backing-filename, format) per level."""
    out = []
    img = [n for n in nodes if n['node-name'] == 'top2'][0]['image']
    while img:
        out.append((img['filename'], img.get('backing-filename'), img.get('backing-filename-format')))
        img = img.get('backing-image')
    return out


def test_differential():
    st = steps()
    ours, refusals = differential(st, skip_compare=('query-named-block-nodes',))
    infos = [r for s, r in ours if s[0] == 'sh' and s[1].startswith('qemu-img info')]
    check('backing file: base2.img' in infos[1] and 'backing file format: qcow2' in infos[1],
          'mid after the change: %r' % infos[1])
    nodes = [r for s, r in ours if s[0] == 'query-named-block-nodes'][0]
    got = chain(nodes)
    want = [('$T/top.qcow2', 'mid.qcow2', 'qcow2'), ('$T/mid.qcow2', 'lone.qcow2', 'qcow2'),
            ('$T/lone.qcow2', None, None)]
    check(got == want, 'reopened chain %r, expected %r' % (got, want))
    check(refusals >= 12, 'only %d refusals compared' % refusals)
    print('differential: %d steps, %d refusals with the same class and text; images and the reopened '
          'chain as with qemu-storage-daemon' % (len(st), refusals))


if __name__ == '__main__':
    test_differential()
