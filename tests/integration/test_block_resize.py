#!/usr/bin/python3
"""block_resize on file, raw, qcow2 (and memory, blockd's own) nodes.

1. The same script against qemu-storage-daemon and blockd (also for nbd
   client and blkdebug nodes): lookups by
   node-name (device names no node in either), the refusals (negative
   size, read-only image, a size qcow2 cannot take, backing nodes and the
   nodes of running jobs "in use", a node an NBD export or a raw window
   uses: QEMU's permission conflict text), growing and shrinking qcow2 and
   raw images, a raw node following its resized file, query-block;
   x-debug-block-dirty-bitmap-sha256 of bitmaps on the resized nodes after
   each step (QEMU resizes them: bits past a smaller end are dropped, a
   larger end adds clean ones); the export size nbdinfo sees after the
   export is added again; data read back over NBD after shrinking and
   growing; qemu-img info and check of the images.
2. The same for qcow2 images with a persistent bitmap (stored with the
   new size, read back after reopening), internal snapshots (a v2 image
   refuses; a v3 image shrinks and grows, the snapshot's data kept) and
   a backing file larger than the image (the grown area reads as zeroes,
   not as the backing file's data; a v2 image refuses).
3. blockd's memory driver: grown and shrunk under a bitmap; data inside
   the kept part survives, the regrown part reads as zeroes.
4. A persistent bitmap in a raw file's sidecar follows the resizes and
   reads back the same after a restart.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_lib import Daemon, blockd_cmd, check, differential  # noqa: E402

MiB = 1 << 20


def sha(node, name):
    return ('x-debug-block-dirty-bitmap-sha256', {'node': node, 'name': name})


def nbd_size(names):
    return ('sh', '; '.join("nbdinfo --size 'nbd+unix:///%s?socket=$T/nbd.sock'" % n for n in names))


def steps():
    s = [
        ('sh', 'qemu-img create -q -f qcow2 $T/base.qcow2 1M; '
               'qemu-img create -q -f qcow2 -b $T/base.qcow2 -F qcow2 $T/top.qcow2; '
               'qemu-img create -q -f qcow2 $T/q.qcow2 1M; qemu-img create -q -f raw $T/r.img 1M; '
               'qemu-img create -q -f qcow2 $T/lone.qcow2 1M; qemu-img create -q -f raw $T/w.img 4M; '
               'qemu-img create -q -f raw $T/t.img 1M'),
        ('query-block', {}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                          'file': {'driver': 'file', 'filename': '$T/base.qcow2'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'base',
                          'file': {'driver': 'file', 'filename': '$T/top.qcow2', 'node-name': 'topf'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'q', 'file': {'driver': 'file', 'filename': '$T/q.qcow2'}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'r',
                          'file': {'driver': 'file', 'filename': '$T/r.img', 'node-name': 'rf'}}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'lone', 'read-only': True,
                          'file': {'driver': 'file', 'filename': '$T/lone.qcow2'}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'win', 'offset': 4096, 'size': MiB,
                          'file': {'driver': 'file', 'filename': '$T/w.img', 'node-name': 'wf'}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 't',
                          'file': {'driver': 'file', 'filename': '$T/t.img'}}),
        ('query-block', {}),
        ('block-dirty-bitmap-add', {'node': 'q', 'name': 'b1', 'granularity': 65536}),
        ('block-dirty-bitmap-add', {'node': 'r', 'name': 'b2', 'granularity': 512}),
        ('block-dirty-bitmap-add', {'node': 'rf', 'name': 'b3', 'granularity': 4096}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': '$T/nbd.sock'}}}),
        ('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'q', 'writable': True}),
        ('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'r', 'writable': True}),
        nbd_size(['q', 'r']),
        ('sh', "qemu-io -f raw -c 'write -P 1 0 1M' 'nbd+unix:///q?socket=$T/nbd.sock' >/dev/null; "
               "qemu-io -f raw -c 'write -P 1 1000 1047000' 'nbd+unix:///r?socket=$T/nbd.sock' >/dev/null"),
        sha('q', 'b1'), sha('r', 'b2'), sha('rf', 'b3'),
        # refusals
        ('block_resize', {'size': 2 * MiB}),
        ('block_resize', {'device': 'q', 'size': 2 * MiB}),
        ('block_resize', {'node-name': 'nosuch', 'size': 2 * MiB}),
        ('block_resize', {'device': 'x', 'node-name': 'nosuch', 'size': 2 * MiB}),
        ('block_resize', {'node-name': 'q', 'size': -1}),
        ('block_resize', {'node-name': 'q', 'size': 'big'}),
        ('block_resize', {'node-name': 'q'}),
        ('block_resize', {'node-name': 'q', 'size': 4 * MiB}),      # exported: permission conflict
        ('block_resize', {'node-name': 'r', 'size': 4 * MiB}),
        ('block_resize', {'node-name': 'rf', 'size': 4 * MiB}),     # under an exported raw node
        ('block_resize', {'node-name': 'lone', 'size': 4 * MiB}),   # read-only
        ('block_resize', {'node-name': 'base', 'size': 4 * MiB}),   # a backing node
        ('block_resize', {'device': 'top', 'node-name': 'base', 'size': 4 * MiB}),
        ('block_resize', {'node-name': 'top', 'size': 4 * MiB + 1}),  # qcow2: multiple of 512
        ('block_resize', {'node-name': 'win', 'size': 2 * MiB}),    # fixed-size raw window
        ('block_resize', {'node-name': 'wf', 'size': 2 * MiB}),     # under the window
        ('block_resize', {'node-name': 'topf', 'size': 8 * MiB}),   # a qcow2 image's file
        ('block_resize', {'node-name': 'q', 'size': 1 << 56}),      # an L1 table over QEMU's limit
        ('blockdev-add', {'driver': 'null-co', 'node-name': 'nul'}),
        ('block_resize', {'node-name': 'nul', 'size': MiB}),        # a driver that cannot
        # a mirror job's source and target
        ('blockdev-mirror', {'job-id': 'm', 'device': 't', 'target': 'top', 'sync': 'full',
                             'auto-dismiss': False}),
        ('block_resize', {'node-name': 't', 'size': 2 * MiB}),
        ('block_resize', {'node-name': 'top', 'size': 2 * MiB}),
        ('job-cancel', {'id': 'm'}),
        ('wait-job', 'm', False),      # whether it got READY first depends on timing
        ('job-dismiss', {'id': 'm'}),
        # growing and shrinking
        ('block-export-del', {'id': 'e1'}),
        ('wait-export-gone', 'e1'),
        ('block-export-del', {'id': 'e2'}),
        ('wait-export-gone', 'e2'),
        ('block_resize', {'node-name': 'top', 'size': 4 * MiB}),
        ('block_resize', {'node-name': 'top', 'size': MiB}),
        ('block_resize', {'node-name': 'q', 'size': 4 * MiB}),
        ('block_resize', {'node-name': 'r', 'size': 3 * MiB}),
        sha('q', 'b1'), sha('r', 'b2'), sha('rf', 'b3'),
        ('block_resize', {'node-name': 'q', 'size': 512 * 1024}),
        ('block_resize', {'node-name': 'r', 'size': 512 * 1024 + 512}),
        sha('q', 'b1'), sha('r', 'b2'), sha('rf', 'b3'),
        ('block_resize', {'node-name': 'q', 'size': 0}),
        sha('q', 'b1'),
        ('block_resize', {'node-name': 'q', 'size': 2 * MiB}),
        ('block_resize', {'node-name': 'rf', 'size': 2 * MiB}),    # the raw node above follows
        sha('q', 'b1'), sha('r', 'b2'), sha('rf', 'b3'),
        ('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'q', 'writable': True}),
        ('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'r', 'writable': True}),
        nbd_size(['q', 'r']),
        ('sh', "qemu-io -f raw -c 'read -P 0 0 2M' "
               "'nbd+unix:///q?socket=$T/nbd.sock' | grep -c '^read'; "
               "qemu-io -f raw -c 'read -P 1 1000 523288' -c 'read -P 0 524800 1572352' "
               "'nbd+unix:///r?socket=$T/nbd.sock' | grep -c '^read'"),
        ('block-export-del', {'id': 'e1'}),
        ('wait-export-gone', 'e1'),
        ('block-export-del', {'id': 'e2'}),
        ('wait-export-gone', 'e2'),
        ('query-block', {}),
        ('blockdev-del', {'node-name': 'q'}),
        ('blockdev-del', {'node-name': 'top'}),
        ('sh', 'qemu-img check $T/q.qcow2 | head -1; qemu-img info $T/q.qcow2 | grep virtual; '
               'qemu-img check $T/top.qcow2 | head -1; qemu-img info $T/top.qcow2 | grep virtual; '
               'stat -c "%n %s" $T/r.img $T/w.img'),
    ]
    return s


def qcow2_state_steps():
    """A persistent bitmap in the qcow2 image, internal snapshots (v2 and v3)."""
    return [
        ('sh', "qemu-img create -q -f qcow2 $T/p.qcow2 4M; qemu-img create -q -f qcow2 -o compat=0.10 $T/v2.qcow2 4M; qemu-img snapshot -c s1 $T/v2.qcow2; qemu-img create -q -f qcow2 $T/s.qcow2 4M; qemu-io -f qcow2 -c 'write -P 3 0 4M' $T/s.qcow2 >/dev/null; qemu-img snapshot -c s1 $T/s.qcow2"),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'p', 'file': {'driver': 'file', 'filename': '$T/p.qcow2'}}),
        ('block-dirty-bitmap-add', {'node': 'p', 'name': 'pb', 'persistent': True, 'granularity': 65536}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': '$T/nbd.sock'}}}),
        ('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'p', 'writable': True}),
        ('sh', "qemu-io -f raw -c 'write -P 1 0 4M' 'nbd+unix:///p?socket=$T/nbd.sock' >/dev/null"),
        ('block-export-del', {'id': 'e1'}),
        ('wait-export-gone', 'e1'),
        ('block_resize', {'node-name': 'p', 'size': 8388608}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'p', 'name': 'pb'}),
        ('block_resize', {'node-name': 'p', 'size': 1048576}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'p', 'name': 'pb'}),
        ('blockdev-del', {'node-name': 'p'}),
        ('sh', "qemu-img info $T/p.qcow2 | grep -E 'virtual|name|granularity'; qemu-img check $T/p.qcow2 | head -1"),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'p', 'file': {'driver': 'file', 'filename': '$T/p.qcow2'}}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'p', 'name': 'pb'}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'v2', 'file': {'driver': 'file', 'filename': '$T/v2.qcow2'}}),
        ('block_resize', {'node-name': 'v2', 'size': 8388608}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 's', 'file': {'driver': 'file', 'filename': '$T/s.qcow2'}}),
        ('block_resize', {'node-name': 's', 'size': 1048576}),
        ('block_resize', {'node-name': 's', 'size': 8388608}),
        ('blockdev-del', {'node-name': 's'}),
        ('sh', "qemu-img check $T/s.qcow2 | head -1; qemu-img info $T/s.qcow2 | grep virtual; qemu-io -f qcow2 -r -c 'read -P 3 0 1M' -c 'read -P 0 1M 7M' $T/s.qcow2 | grep -c '^read'; qemu-img snapshot -l $T/s.qcow2 | tail -1 | awk '{print $2, $3}'; qemu-img convert -l snapshot.name=s1 -O raw $T/s.qcow2 $T/s1.raw; qemu-io -f raw -r -c 'read -P 3 0 4M' $T/s1.raw | grep -c '^read'"),
    ]


def backing_steps():
    """Growing over a larger backing node: the new area reads as zeroes, not as the backing data."""
    return [
        ('sh', "qemu-img create -q -f qcow2 $T/base.qcow2 8M; qemu-io -f qcow2 -c 'write -P 7 0 8M' $T/base.qcow2 >/dev/null; qemu-img create -q -f qcow2 -b $T/base.qcow2 -F qcow2 $T/top.qcow2 1000000; qemu-img create -q -f qcow2 -o compat=0.10 -b $T/base.qcow2 -F qcow2 $T/v2.qcow2 1M; qemu-img create -q -f qcow2 -b $T/base.qcow2 -F qcow2 $T/big.qcow2 9M"),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'file': {'driver': 'file', 'filename': '$T/top.qcow2'}}),
        ('block_resize', {'node-name': 'top', 'size': 6291456}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'v2', 'file': {'driver': 'file', 'filename': '$T/v2.qcow2'}}),
        ('block_resize', {'node-name': 'v2', 'size': 6291456}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'big', 'file': {'driver': 'file', 'filename': '$T/big.qcow2'}}),
        ('block_resize', {'node-name': 'big', 'size': 10485760}),
        ('blockdev-del', {'node-name': 'top'}),
        ('blockdev-del', {'node-name': 'v2'}),
        ('blockdev-del', {'node-name': 'big'}),
        ('sh', "qemu-img check $T/top.qcow2 | head -1; qemu-img info $T/top.qcow2 | grep virtual; qemu-io -f qcow2 -r -c 'read -P 7 0 999936' -c 'read -P 0 999936 5291520' $T/top.qcow2 | grep -c '^read'; qemu-img map --output=json $T/top.qcow2 | head -5"),
        ('sh', "qemu-io -f qcow2 -r -c 'read -P 7 0 9M' -c 'read -P 0 9M 1M' $T/big.qcow2 | grep -c '^read'; qemu-img check $T/big.qcow2 | head -1"),
    ]


def other_driver_steps():
    """An nbd client node ($K: an nbdkit memory export of 4 MiB) and blkdebug."""
    return [
        ('sh', 'qemu-img create -q -f raw $T/d.img 1M'),
        ('blockdev-add', {'driver': 'nbd', 'node-name': 'n', 'server': {'type': 'unix', 'path': '$K'}}),
        ('block_resize', {'node-name': 'n', 'size': 8 * MiB}),    # cannot grow
        ('block_resize', {'node-name': 'n', 'size': 2 * MiB}),
        ('block_resize', {'node-name': 'n', 'size': 4 * MiB}),    # back up to the export's size
        ('blockdev-add', {'driver': 'blkdebug', 'node-name': 'bd',
                          'image': {'driver': 'file', 'filename': '$T/d.img', 'node-name': 'df'}}),
        ('block_resize', {'node-name': 'bd', 'size': 2 * MiB}),   # passed to the image
        ('sh', 'stat -c %s $T/d.img'),
        ('blockdev-del', {'node-name': 'n'}),
        ('blockdev-del', {'node-name': 'bd'}),
    ]


def test_other_drivers():
    import shutil
    import tempfile
    if not shutil.which('nbdkit'):
        print('nbd client node: nbdkit is not installed, left out')
        return
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, 'k.sock')
        k = subprocess.Popen(['nbdkit', '-f', '-U', sock, 'memory', '4M'])
        try:
            while not os.path.exists(sock):
                check(k.poll() is None, 'nbdkit exited')
                time.sleep(0.02)
            st = other_driver_steps()
            ours, refusals = differential(st, names_qsd={'$K': sock}, names_ours={'$K': sock})
        finally:
            k.terminate()
            k.wait()
    check(refusals == 1, 'refusals: %d' % refusals)
    print('nbd and blkdebug nodes: %d steps as with qemu-storage-daemon' % len(st))


def test_differential():
    st = steps()
    ours, refusals = differential(st)
    reads = [r for s, r in ours if s[0] == 'sh' and 'read -P' in s[1]][0]
    check(reads.split() == ['1', '2'], 'data after resizes: %r' % reads)
    sizes = [r.split() for s, r in ours if s[0] == 'sh' and s[1].startswith('nbdinfo')]
    check(sizes == [[str(MiB), str(MiB)], [str(2 * MiB), str(2 * MiB)]], 'NBD sizes: %r' % sizes)
    check(refusals >= 15, 'only %d refusals compared' % refusals)
    print('differential: %d steps, %d refusals with the same class and text; NBD sizes %s; bitmaps '
          'identical after each resize' % (len(st), refusals, sizes))
    st = qcow2_state_steps()
    ours, refusals = differential(st)
    snap = [r for s, r in ours if s[0] == 'sh' and 'snapshot -l' in s[1]][0]
    check(snap.split()[:3] == ['No', 'errors', 'were'] and snap.split()[-1] == '1',
          'image with a snapshot after shrinking and growing: %r' % snap)
    stored = [r for s, r in ours if s[0] == 'sh' and 'granularity' in s[1]][0]
    check('virtual size: 1 MiB' in stored and 'name: pb' in stored, 'persistent bitmap after resizes: %r' % stored)
    print('qcow2 with a persistent bitmap and internal snapshots: %d steps as with qemu-storage-daemon' % len(st))
    st = backing_steps()
    ours, refusals = differential(st)
    reads = [[x for x in r.splitlines() if x.isdigit()][0] for s, r in ours if s[0] == 'sh' and 'read -P' in s[1]]
    check(reads == ['2', '2'], 'the grown area over a backing file: %r' % reads)
    print('qcow2 grown over a larger backing file: zeroes there, %d steps as with qemu-storage-daemon' % len(st))


def test_memory():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()

        def ok(name, args):
            r = q.cmd(name, args)
            check('return' in r, '%s: %r' % (name, r))
            return r['return']
        sock = d.path('nbd.sock')
        ok('blockdev-add', {'driver': 'memory', 'node-name': 'm', 'size': 300 * MiB})
        ok('block-dirty-bitmap-add', {'node': 'm', 'name': 'b'})
        ok('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        from lib import import_nbd
        nbd = import_nbd()

        def connect():
            ok('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'm', 'writable': True})
            h = nbd.NBD()
            h.connect_uri('nbd+unix:///m?socket=' + sock)
            return h

        def disconnect(h):
            h.shutdown()
            ok('block-export-del', {'id': 'e'})
        h = connect()
        h.pwrite(b'\x07' * MiB, 0)
        h.pwrite(b'\x08' * MiB, 280 * MiB)
        disconnect(h)
        ok('block_resize', {'node-name': 'm', 'size': 512 * 1024 + 4096})
        bm = [b for n in ok('query-named-block-nodes', {}) if n['node-name'] == 'm' for b in n['dirty-bitmaps']]
        # 9 granules stay dirty; the count stops at the node's end
        check(bm[0]['count'] == 512 * 1024 + 4096, 'bitmap after shrinking: %r' % bm)
        ok('block_resize', {'node-name': 'm', 'size': 290 * MiB})
        h = connect()
        check(h.get_size() == 290 * MiB, 'size after growing: %d' % h.get_size())
        check(h.pread(512 * 1024 + 4096, 0) == b'\x07' * (512 * 1024 + 4096), 'kept data lost')
        check(h.pread(MiB - 516 * 1024, 516 * 1024) == bytes(MiB - 516 * 1024), 'cut data came back')
        check(h.pread(MiB, 280 * MiB) == bytes(MiB), 'data past the cut came back')
        disconnect(h)
        bm = [b for n in ok('query-named-block-nodes', {}) if n['node-name'] == 'm' for b in n['dirty-bitmaps']]
        check(bm[0]['count'] == 9 * 65536, 'bitmap after growing: %r' % bm)
        q.close()
        d.stop()
    print('memory: shrunk and regrown under a bitmap; kept data intact, the rest zeroes')


def test_sidecar():
    """A persistent bitmap in a raw file's sidecar: resized with its node, stored, read back after a restart."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        img = os.path.join(tmp, 'r.img')
        with open(img, 'wb') as f:
            f.truncate(4 * MiB)
        seen = []
        for restart in (False, True):
            with Daemon(blockd_cmd()) as d:
                q = d.qmp()

                def ok(name, args):
                    r = q.cmd(name, args)
                    check('return' in r, '%s: %r' % (name, r))
                    return r['return']
                ok('blockdev-add', {'driver': 'file', 'node-name': 'r', 'filename': img})
                if not restart:
                    ok('block-dirty-bitmap-add', {'node': 'r', 'name': 'pb', 'persistent': True})
                    ok('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}})
                    ok('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'r', 'writable': True})
                    from lib import import_nbd
                    h = import_nbd().NBD()
                    h.connect_uri('nbd+unix:///r?socket=' + d.path('nbd.sock'))
                    h.pwrite(b'\1' * 65536, 0)
                    h.pwrite(b'\2' * MiB, 3 * MiB)
                    h.shutdown()
                    ok('block-export-del', {'id': 'e'})
                    ok('block_resize', {'node-name': 'r', 'size': 8 * MiB})
                    ok('block_resize', {'node-name': 'r', 'size': 3 * MiB + 65536})
                bm = [b for n in ok('query-named-block-nodes', {}) if n['node-name'] == 'r'
                      for b in n['dirty-bitmaps']]
                seen.append((bm[0]['count'], ok('x-debug-block-dirty-bitmap-sha256', {'node': 'r', 'name': 'pb'})))
                q.close()
                check(d.stop() == 0, 'blockd exit status')
        check(seen[0][0] == 2 * 65536 and seen[0] == seen[1], 'sidecar bitmap across a restart: %r' % seen)
        check(os.path.getsize(img) == 3 * MiB + 65536, 'file size %d' % os.path.getsize(img))
    print('sidecar bitmap: resized with its node, the same bits after a restart')


if __name__ == '__main__':
    test_differential()
    test_other_drivers()
    test_memory()
    test_sidecar()
