#!/usr/bin/python3
"""driver=qcow2 in the real daemon: a three-layer chain made by qemu-img
(raw base <- qcow2 middle <- qcow2 top, the top naming its backing by a
relative path), opened with blockdev-add, exported over NBD and written
with libnbd (writes, zeroes, trims).  The export reads back what was
written; `nbdinfo --map` and `qemu-img map` agree on allocation; once the
daemon has stopped, `qemu-img check` finds no errors or leaks and
`qemu-img compare` finds the expected content.  Then the refusals: not a
qcow2 file, encrypted, dirty, a missing backing file, each a GenericError
with a clear message and no half-made nodes left behind."""
import json
import os
import random
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, import_nbd, ok, skip  # noqa: E402

SIZE = 8 << 20
BASE_SIZE = 6 << 20  # shorter than the overlays: zeroes past its end


def run(*args, check_rc=True):
    p = subprocess.run(list(args), capture_output=True, text=True)
    if check_rc and p.returncode != 0:
        raise SystemExit('FAIL: %s: exit %d\n%s%s' % (' '.join(args), p.returncode, p.stdout, p.stderr))
    return p


def nodes(q):
    return {n['node-name']: n for n in ok(q.cmd('query-named-block-nodes'), 'query-named-block-nodes')}


def make_chain(tmp, rng):
    """base.raw <- mid.qcow2 <- top.qcow2; returns the content the top shows."""
    image = bytearray(SIZE)
    base = bytearray(BASE_SIZE)
    for i in range(0, BASE_SIZE, 1 << 20):  # 512 KiB data, 512 KiB hole per MiB
        base[i:i + (512 << 10)] = rng.randbytes(512 << 10)
    with open(os.path.join(tmp, 'base.raw'), 'wb') as f:
        f.write(base)
    image[:BASE_SIZE] = base
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw',
        os.path.join(tmp, 'mid.qcow2'), str(SIZE))
    for off, pattern in ((300 << 10, 0x11), (5 << 20, 0x22), (BASE_SIZE + (64 << 10), 0x33)):
        run('qemu-io', '-f', 'qcow2', '-c', 'write -P %d %d 100k' % (pattern, off), os.path.join(tmp, 'mid.qcow2'))
        image[off:off + (100 << 10)] = bytes([pattern]) * (100 << 10)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=32k', '-b', 'mid.qcow2', '-F', 'qcow2',
        os.path.join(tmp, 'top.qcow2'))
    return image


def nbd_map(sock, name):
    """Per-4K list of (data, zero) from NBD block status."""
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.set_export_name(name)
    h.connect_unix(sock)
    flags = [None] * (SIZE // 4096)
    pos = [0]

    def cb(meta, off, entries, err):
        for length, f in zip(entries[0::2], entries[1::2]):
            for b in range(off // 4096, min((off + length) // 4096, len(flags))):
                flags[b] = (not f & 1, bool(f & 2))
            off += length
        pos[0] = off
        return 0
    while pos[0] < SIZE:
        h.block_status(SIZE - pos[0], pos[0], cb)
    h.shutdown()
    return flags


def qemu_map(path):
    out = json.loads(run('qemu-img', 'map', '-U', '--output=json', path).stdout)
    flags = [None] * (SIZE // 4096)
    for e in out:
        for b in range(e['start'] // 4096, (e['start'] + e['length']) // 4096):
            flags[b] = (e['data'], e['zero'])
    return flags


def nbdinfo_map(uri):
    """nbdinfo --map agrees with libnbd; returns its allocated byte count."""
    out = json.loads(run('nbdinfo', '--map', '--json', uri).stdout)
    return sum(e['length'] for e in out if not e['type'] & 1)


def main():
    for tool in ('qemu-img', 'qemu-io', 'nbdinfo'):
        if not shutil.which(tool):
            skip('%s is not installed' % tool)
    nbd = import_nbd()
    rng = random.Random(1234)
    with Daemon(blockd_cmd()) as d:
        image = make_chain(d.tmp, rng)
        top = d.path('top.qcow2')
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'disk',
                                  'file': {'driver': 'file', 'filename': top}}), 'blockdev-add qcow2')
        info = nodes(q)
        check(info['disk']['drv'] == 'qcow2' and info['disk']['image']['format'] == 'qcow2', 'format %r' % info['disk'])
        check(info['disk']['file'] == top, 'file %r' % info['disk']['file'])
        # As qemu-storage-daemon 7.2: backing_file is the full name, the
        # image's backing-filename what the header says.
        check(info['disk'].get('backing_file') == d.path('mid.qcow2'), 'backing_file %r' % info['disk'])
        check(info['disk']['image'].get('backing-filename') == 'mid.qcow2', 'backing name')
        check(info['disk']['image'].get('full-backing-filename') == d.path('mid.qcow2'), 'full backing name')
        chain = info['disk']['image']['backing-image']
        check(chain['filename'] == d.path('mid.qcow2') and chain['format'] == 'qcow2'
              and chain['backing-image']['format'] == 'raw'
              and chain['backing-image']['filename'] == d.path('base.raw')
              and 'backing-image' not in chain['backing-image'], 'nested backing images %r' % chain)
        flat = {n['node-name']: n for n in q.cmd('query-named-block-nodes', {'flat': True})['return']}
        check('backing-image' not in flat['disk']['image'], 'flat shows no backing image')
        check(info['disk']['image'].get('backing-filename-format') == 'qcow2', 'backing format')
        check(info['disk']['image'].get('cluster-size') == 32768, 'cluster size')
        check(info['disk']['backing_file_depth'] == 2, 'depth %r' % info['disk']['backing_file_depth'])
        check(info['disk']['image']['virtual-size'] == SIZE, 'virtual size')
        sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'disk', 'name': 'disk',
                                      'writable': True}), 'block-export-add')

        h = connect(sock, 'disk')
        check(h.get_size() == SIZE, 'export size')
        check(bytes(h.pread(SIZE, 0)) == bytes(image), 'chain content before writes')
        for _ in range(120):
            n = rng.choice([1, 511, 4096, 5000, 32768, 70000, 300000])
            off = rng.randrange(0, SIZE - n)
            data = rng.randbytes(n)
            h.pwrite(data, off)
            image[off:off + n] = data
        for off, n, fl in ((100 << 10, 200 << 10, 0), (2 << 20, 1 << 20, nbd.CMD_FLAG_NO_HOLE),
                           (BASE_SIZE - 5000, 70000, 0), (7 << 20, 96 << 10, nbd.CMD_FLAG_FAST_ZERO)):
            h.zero(n, off, fl)
            image[off:off + n] = bytes(n)
        h.trim(128 << 10, 4 << 20)  # whole clusters: zero flag (there is a backing)
        image[4 << 20:(4 << 20) + (128 << 10)] = bytes(128 << 10)
        h.flush()
        check(bytes(h.pread(SIZE, 0)) == bytes(image), 'content after writes')
        h.shutdown()

        # Reads of 64 KiB and more within one run of data clusters go out by
        # sendfile from the image file (qcow2's read_fd), the others through
        # a buffer: both must read the same bytes, at any offset.  A new
        # image, so that one write makes clusters contiguous in the file.
        flat = d.path('flat.qcow2')
        run('qemu-img', 'create', '-q', '-f', 'qcow2', flat, str(SIZE))
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'flat',
                                  'file': {'driver': 'file', 'filename': flat}}), 'blockdev-add flat')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'flat', 'name': 'flat',
                                      'writable': True}), 'block-export-add flat')
        hf = connect(sock, 'flat')
        want = bytearray(SIZE)
        for run_off, n in ((1 << 20, 1 << 20), (3 << 20, 512 << 10), (2 << 20, 64 << 10)):
            data = rng.randbytes(n)
            hf.pwrite(data, run_off)
            want[run_off:run_off + n] = data
        hf.flush()
        hf.shutdown()
        hf = connect(sock, 'flat')  # a connection that has only read
        for off, n in [(1 << 20, 64 << 10), ((1 << 20) + 12345, 65536 + 77), ((2 << 20) - 70000, 140000),
                       ((2 << 20) - 65536, 3 << 20), (3 << 20, 512 << 10), (0, 64 << 10)] + \
                [(rng.randrange(0, 4 << 20), rng.choice([65536, 70000, 131072, 300000])) for _ in range(40)]:
            check(bytes(hf.pread(n, off)) == bytes(want[off:off + n]), 'flat: read of %d at %d' % (n, off))
        hf.shutdown()
        ok(q.cmd('block-export-del', {'id': 'e1'}), 'block-export-del flat')
        while any(e['id'] == 'e1' for e in q.cmd('query-block-exports')['return']):
            pass
        ok(q.cmd('blockdev-del', {'node-name': 'flat'}), 'blockdev-del flat')

        # Allocation as the NBD client sees it and as qemu-img sees the file.
        ours, theirs = nbd_map(sock, 'disk'), qemu_map(top)
        check(None not in ours and None not in theirs, 'maps incomplete')
        bad = [i for i in range(len(ours)) if ours[i] != theirs[i]]
        check(not bad, 'map differs at %d blocks, first at %#x: nbd %r qemu-img %r' %
              (len(bad), bad[0] * 4096 if bad else 0, ours[bad[0]] if bad else None,
               theirs[bad[0]] if bad else None))
        allocated = nbdinfo_map('nbd+unix:///disk?socket=' + sock)
        check(allocated == 4096 * sum(1 for f in ours if f[0]), 'nbdinfo --map disagrees')

        ok(q.cmd('block-export-del', {'id': 'e0'}), 'block-export-del')
        q.wait_event('BLOCK_EXPORT_DELETED')
        ok(q.cmd('blockdev-del', {'node-name': 'disk'}), 'blockdev-del')
        left = nodes(q)
        check(not left, 'implicit nodes left after blockdev-del: %r' % sorted(left))

        # backing: null and backing: a node name.
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'midf', 'filename': d.path('mid.qcow2'),
                                  'read-only': True}), 'mid file')
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'mid', 'file': 'midf', 'backing': None,
                                  'read-only': True}), 'mid without backing')
        check(nodes(q)['mid'].get('backing_file_depth') == 0, 'backing: null has no backing node')
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top2', 'read-only': True, 'backing': 'mid',
                                  'file': {'driver': 'file', 'filename': top, 'read-only': True}}), 'top2')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e1', 'node-name': 'top2', 'name': 'top2'}), 'export top2')
        h = connect(sock, 'top2')
        got = bytes(h.pread(SIZE, 0))
        h.shutdown()
        # Expected: top's own clusters, then mid's own, zeroes elsewhere
        # (mid's backing is null).
        mid_own = d.path('mid-own.qcow2')
        shutil.copy(d.path('mid.qcow2'), mid_own)
        run('qemu-img', 'rebase', '-u', '-b', '', mid_own)
        run('qemu-img', 'convert', '-O', 'raw', mid_own, d.path('mid-own.raw'))
        with open(d.path('mid-own.raw'), 'rb') as f:
            expect = bytearray(f.read())
        for e in json.loads(run('qemu-img', 'map', '-U', '--output=json', top).stdout):
            if e['depth'] == 0:
                expect[e['start']:e['start'] + e['length']] = image[e['start']:e['start'] + e['length']]
        check(got == bytes(expect), 'top2 over mid (backing: null) content')
        ok(q.cmd('block-export-del', {'id': 'e1'}), 'block-export-del e1')
        q.wait_event('BLOCK_EXPORT_DELETED')
        for name in ('top2', 'mid', 'midf'):
            ok(q.cmd('blockdev-del', {'node-name': name}), 'blockdev-del ' + name)
        # The same chain with the backing given inline: same content, and
        # its implicit nodes leave with it.
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top3', 'read-only': True,
                                  'file': {'driver': 'file', 'filename': top, 'read-only': True},
                                  'backing': {'driver': 'qcow2', 'read-only': True, 'backing': None,
                                              'file': {'driver': 'file', 'filename': d.path('mid.qcow2'),
                                                       'read-only': True}}}), 'top3')
        check(nodes(q)['top3']['backing_file_depth'] == 1, 'inline backing depth')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'top3', 'name': 'top3'}), 'export top3')
        h = connect(sock, 'top3')
        check(bytes(h.pread(SIZE, 0)) == bytes(expect), 'top3 (inline backing) content')
        h.shutdown()
        ok(q.cmd('block-export-del', {'id': 'e2'}), 'block-export-del e2')
        q.wait_event('BLOCK_EXPORT_DELETED')
        ok(q.cmd('blockdev-del', {'node-name': 'top3'}), 'blockdev-del top3')
        check(not nodes(q), 'nodes left after top3: %r' % sorted(nodes(q)))
        q.close()
        check(d.stop() == 0, 'daemon exit status')

        # The file as qemu-img sees it.
        p = run('qemu-img', 'check', top, check_rc=False)
        check(p.returncode == 0, 'qemu-img check:\n%s%s' % (p.stdout, p.stderr))
        with open(d.path('expected.raw'), 'wb') as f:
            f.write(image)
        p = run('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', d.path('expected.raw'), top, check_rc=False)
        check(p.returncode == 0, 'qemu-img compare:\n%s%s' % (p.stdout, p.stderr))
    print('qcow2 chain: writes, zeroes, trims, maps, check and compare OK')

    errors()
    print('qcow2 refusals OK')


def errors():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()

        def refused(name, path, fragment):
            r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name,
                                       'file': {'driver': 'file', 'filename': path}})
            check('error' in r, '%s: accepted' % name)
            check(r['error']['class'] == 'GenericError', '%s: class %r' % (name, r['error']))
            check(fragment in r['error']['desc'], '%s: %r lacks %r' % (name, r['error']['desc'], fragment))
            check(not nodes(q), '%s: nodes left behind: %r' % (name, sorted(nodes(q))))
            return r['error']['desc']

        raw = d.path('disk.raw')
        with open(raw, 'wb') as f:
            f.write(b'\x01' * 65536)
        check(refused('notq', raw, 'Image is not in qcow2 format') == 'Image is not in qcow2 format', 'message')

        img = d.path('x.qcow2')
        run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '1M')
        with open(img, 'r+b') as f:
            f.seek(32)
            f.write(struct.pack('>I', 2))  # crypt_method: LUKS
        refused('enc', img, 'encrypted')

        run('qemu-img', 'create', '-q', '-f', 'qcow2', img, '1M')
        with open(img, 'r+b') as f:
            f.seek(72)
            f.write(struct.pack('>Q', 1))  # incompatible_features: dirty
        refused('dirty', img, "dirty")
        refused('dirty', img, "qemu-img check -r all")

        gone = d.path('gone.raw')
        with open(gone, 'wb') as f:
            f.write(bytes(4096))
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', gone, '-F', 'raw', img, '1M')
        os.unlink(gone)
        desc = refused('orphan', img, 'Could not open backing file')
        check(gone in desc and 'No such file or directory' in desc, 'missing backing message %r' % desc)
        # With the backing file back, the same names work.
        with open(gone, 'wb') as f:
            f.write(bytes(4096))
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'orphan',
                                  'file': {'driver': 'file', 'filename': img}}), 'retry')
        q.close()
        check(d.stop() == 0, 'daemon exit status')


main()
