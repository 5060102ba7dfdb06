#!/usr/bin/python3
"""blockd and QEMU share RBD images: what blockd writes (over NBD, through
blockdev-add's rbd node) qemu-img reads through an rbd: file name and
qemu-storage-daemon's rbd node serves over NBD; what qemu-img and
qemu-storage-daemon write, blockd's read-only rbd nodes serve.  A snapshot
opened with snapshot= shows the data of its time after blockd overwrote
it, for blockd and qemu-img alike.  A qcow2 image that qemu-img made in an
RBD image takes blockd's writes (its RBD image grows as clusters are
appended) and passes qemu-img check with the data in place."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from backup_lib import ok, read_all, write  # noqa: E402
from ceph_lib import Cluster  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402

SIZE = 16 << 20


def pattern(seed):
    block = bytes((seed * 37 + i * 11) % 251 + 1 for i in range(65536))
    return block * (SIZE // len(block))


def serve(q, d, c, node, image, writable=False, **extra):
    """An rbd node exported over NBD as `node` (nbd server started on first use)."""
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('blockdev-add', c.node(node, image, **extra)), 'blockdev-add ' + node)
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + node, 'node-name': node, 'name': node,
                                  'writable': writable}), 'export ' + node)
    return sock


def qemu_img_read(c, spec, tmp):
    out = os.path.join(tmp, 'qemu-img.out')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'raw', c.uri(spec), out], check=True)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def main():
    with Cluster(qemu=True) as c:
        for image in ('a', 'b', 'c'):
            c.rbd('create', 'rbd/' + image, '--size', str(SIZE >> 20) + 'M')
        with Daemon(blockd_cmd()) as d, Daemon(qsd_cmd()) as qd:
            q, qq = d.qmp(), qd.qmp()
            # blockd writes, QEMU reads (blockd keeps the image open meanwhile).
            serve(q, d, c, 'a', 'a', writable=True)
            write(d, 'a', 0, pattern(1))
            check(qemu_img_read(c, 'a', d.tmp) == pattern(1), 'qemu-img reads other data than blockd wrote')
            qsock = serve(qq, qd, c, 'qa', 'a', **{'read-only': True})
            check(read_all(qsock, 'qa') == pattern(1), 'qemu-storage-daemon reads other data than blockd wrote')

            # A snapshot keeps what blockd wrote before it.
            c.rbd('snap', 'create', 'rbd/a@s1')
            write(d, 'a', 4096, b'\x99' * 65536)
            serve(q, d, c, 'a-s1', 'a', snapshot='s1', **{'read-only': True})
            check(read_all(d.path('nbd.sock'), 'a-s1') == pattern(1), 'snapshot s1 changed')
            check(qemu_img_read(c, 'a@s1', d.tmp) == pattern(1), 'qemu-img reads snapshot s1 differently')
            now = pattern(1)[:4096] + b'\x99' * 65536 + pattern(1)[4096 + 65536:]
            check(read_all(d.path('nbd.sock'), 'a') == now, 'the image lost the write after the snapshot')

            # qemu-img writes, blockd reads.
            src = d.path('src.raw')
            with open(src, 'wb') as f:
                f.write(pattern(2))
            subprocess.run(['qemu-img', 'convert', '-n', '-f', 'raw', '-O', 'raw', src, c.uri('b')], check=True)
            serve(q, d, c, 'b', 'b', **{'read-only': True})
            check(read_all(d.path('nbd.sock'), 'b') == pattern(2), 'blockd reads other data than qemu-img wrote')

            # qemu-storage-daemon writes (and keeps the image open), blockd reads.
            serve(qq, qd, c, 'qc', 'c', writable=True)
            write(qd, 'qc', 0, pattern(3))
            serve(q, d, c, 'c', 'c', **{'read-only': True})
            check(read_all(d.path('nbd.sock'), 'c') == pattern(3),
                  'blockd reads other data than qemu-storage-daemon wrote')
            # qcow2 inside an RBD image: blockd appends clusters, growing it.
            subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', c.uri('q'), str(SIZE)], check=True)
            ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'q',
                                      'file': c.node('q-file', 'q')}), 'qcow2 on rbd')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-q', 'node-name': 'q', 'name': 'q',
                                          'writable': True}), 'export q')
            write(d, 'q', 0, pattern(4))
            ok(q.cmd('block-export-del', {'id': 'e-q'}), 'export-del q')
            ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'blockdev-del q')
            info = json.loads(c.rbd('info', '--format', 'json', 'rbd/q'))
            check(info['size'] > SIZE, 'the RBD image under the qcow2 did not grow: %r' % info['size'])
            subprocess.run(['qemu-img', 'check', '-q', c.uri('q')], check=True)
            out = d.path('q.raw')
            subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', c.uri('q'), out], check=True)
            with open(out, 'rb') as f:
                check(f.read() == pattern(4), 'qemu-img reads other data from the qcow2 on RBD')
            q.close()
            qq.close()
            check(d.stop() == 0, 'blockd exit status')
            qd.stop()
    print('rbd interop with qemu-img and qemu-storage-daemon OK')


main()
