#!/usr/bin/python3
"""Bitmap commands on qcow2 nodes that QEMU refuses, run against blockd and
qemu-storage-daemon on identical images: every reply (error class and
text, or success) must be the same.  Covered: a qcow2 v2 image, names too
long, duplicates (persistent or not, either way round), default
granularities (qcow2 clusters of 512 B, 4 KiB, 64 KiB, 2 MiB; file and raw
nodes), a bitmap too big
for the image ("Use larger granularity"), too many bitmaps (an image with
65535 of them: qemu-storage-daemon needs minutes to load them, its
bdrv_find_dirty_bitmap being linear, so by default only blockd's reply is
compared with QEMU's text; QCOW2_BITMAPS_MANY=1 runs QSD too), bad granularity, empty name, unknown node and bitmap,
bitmaps of a read-only image (readonly), in-use bitmaps left by a killed
QEMU (inconsistent), a raw node, a transaction that fails; then the
bitmaps both daemons list.

One deliberate difference (docs/bitmaps.md): a persistent bitmap added to
a read-only qcow2 node.  QEMU 7.2 accepts it and loses it at close ("Lost
persistent bitmaps during inactivation ... No write access"); blockd
refuses it with "Can't make bitmap 'X' persistent in 'NODE': No write
access".  That reply is checked on its own."""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, ok, qsd_cmd, skip  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
LONG = 'x' * 1024


def qemu_img(*args):
    r = subprocess.run(['qemu-img'] + list(args), capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, 'qemu-img %s: %s' % (' '.join(args), r.stderr[:2000]))


def many_bitmaps(path, n=65535):
    """A 1 MiB image whose bitmaps extension lists n empty bitmaps sharing
    one (all-zero) bitmap table: enough for QEMU's limit, cheap to load
    read-only (its refcounts do not count the added directory)."""
    qemu_img('create', '-q', '-f', 'qcow2', path, '1M')
    qemu_img('bitmap', '--add', path, 'b00000')
    with open(path, 'r+b') as f:
        h = f.read(65536)
        hl = struct.unpack('>I', h[100:104])[0]
        off = hl
        while True:
            typ, ln = struct.unpack('>II', h[off:off + 8])
            check(typ != 0, 'no bitmaps extension')
            if typ == 0x23852875:
                break
            off += 8 + (ln + 7) // 8 * 8
        nb, _, dsize, doff = struct.unpack('>IIQQ', h[off + 8:off + 32])
        f.seek(doff)
        entry = f.read(24)
        table_off, table_size, flags, typ, gbits, _, _ = struct.unpack('>QIIBBHI', entry)
        d = bytearray()
        for i in range(n):
            name = b'b%05d' % i
            d += struct.pack('>QIIBBHI', table_off, table_size, flags, typ, gbits, len(name), 0) + name
            d += bytes(-len(d) % 8)
        f.seek(0, 2)
        end = (f.tell() + 65535) // 65536 * 65536
        f.seek(end)
        f.write(d)
        f.seek(off + 8)
        f.write(struct.pack('>IIQQ', n, 0, len(d), end))


def crashed_bitmap(path):
    """An image whose bitmap 'x' is in use: QEMU was killed with it loaded."""
    qemu_img('create', '-q', '-f', 'qcow2', path, '64M')
    d = Daemon(qsd_cmd())
    with d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'n',
                                  'file': {'driver': 'file', 'filename': path}}), 'add')
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'n', 'name': 'x', 'persistent': True}), 'add x')
        d.proc.kill()
        d.proc.wait()


def make_images(tmp):
    qemu_img('create', '-q', '-f', 'qcow2', os.path.join(tmp, 'v3.qcow2'), '1G')
    qemu_img('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', os.path.join(tmp, 'v2.qcow2'), '1G')
    qemu_img('create', '-q', '-f', 'qcow2', os.path.join(tmp, 'big.qcow2'), '1P')
    for cs in ('512', '4k', '2M'):
        qemu_img('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=' + cs, os.path.join(tmp, 'c%s.qcow2' % cs), '64M')
    ro = os.path.join(tmp, 'ro.qcow2')
    qemu_img('create', '-q', '-f', 'qcow2', ro, '1G')
    qemu_img('bitmap', '--add', ro, 'stored')
    crashed_bitmap(os.path.join(tmp, 'crashed.qcow2'))
    with open(os.path.join(tmp, 'raw.img'), 'wb') as f:
        f.truncate(GiB)


def node(q, name, path, read_only=False):
    args = {'driver': 'qcow2', 'node-name': name, 'file': {'driver': 'file', 'filename': path}}
    if read_only:
        args['read-only'] = True
    ok(q.cmd('blockdev-add', args), 'blockdev-add ' + name)


def script(cmd, tmp):
    """The replies of one daemon, in order: [(what, reply without ids)]."""
    out = []
    with Daemon(cmd) as d:
        q = d.qmp()
        for n, f, ro in (('v3', 'v3.qcow2', False), ('v2', 'v2.qcow2', False), ('big', 'big.qcow2', False),
                         ('ro', 'ro.qcow2', True), ('crashed', 'crashed.qcow2', False),
                         ('c512', 'c512.qcow2', False), ('c4k', 'c4k.qcow2', False), ('c2M', 'c2M.qcow2', False)):
            node(q, n, os.path.join(tmp, f), ro)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f0', 'filename': os.path.join(tmp, 'raw.img')}),
           'file')
        ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'r0', 'file': 'f0'}), 'raw')

        def do(what, name, args):
            out.append((what, q.cmd(name, args)))

        add = 'block-dirty-bitmap-add'
        do('v2 persistent', add, {'node': 'v2', 'name': 'p', 'persistent': True})
        do('v2 plain', add, {'node': 'v2', 'name': 'g'})
        do('v2 persistent duplicate', add, {'node': 'v2', 'name': 'g', 'persistent': True})
        do('v2 persistent long name', add, {'node': 'v2', 'name': LONG, 'persistent': True})
        do('persistent long name', add, {'node': 'v3', 'name': LONG, 'persistent': True})
        do('long name', add, {'node': 'v3', 'name': LONG})
        do('persistent', add, {'node': 'v3', 'name': 'p', 'persistent': True})
        do('persistent duplicate', add, {'node': 'v3', 'name': 'p', 'persistent': True})
        do('duplicate of a persistent one', add, {'node': 'v3', 'name': 'p'})
        do('plain', add, {'node': 'v3', 'name': 'n', 'granularity': 4096})
        do('persistent duplicate of a plain one', add, {'node': 'v3', 'name': 'n', 'persistent': True})
        do('persistent 2 GiB granularity', add, {'node': 'v3', 'name': 'huge', 'persistent': True,
                                                 'granularity': 1 << 31})
        do('granularity 256', add, {'node': 'v3', 'name': 'g256', 'persistent': True, 'granularity': 256})
        do('granularity 1000', add, {'node': 'v3', 'name': 'g1000', 'persistent': True, 'granularity': 1000})
        do('empty name', add, {'node': 'v3', 'name': '', 'persistent': True})
        do('no such node', add, {'node': 'nope', 'name': 'a', 'persistent': True})
        do('too big for the image', add, {'node': 'big', 'name': 'p', 'persistent': True})
        do('too big at 512 B', add, {'node': 'big', 'name': 'p', 'persistent': True, 'granularity': 512})
        do('big enough granularity', add, {'node': 'big', 'name': 'p', 'persistent': True, 'granularity': 1 << 31})
        do('raw node', add, {'node': 'r0', 'name': 'p', 'persistent': True})
        # Default granularities: the cluster size within 4..64 KiB, 64 KiB without clusters.
        for n in ('c512', 'c4k', 'c2M', 'v3', 'f0', 'r0'):
            do('default granularity on ' + n, add, {'node': n, 'name': 'dflt', 'persistent': n.startswith('c')})
        for c in ('clear', 'remove', 'enable', 'disable'):
            do('no such bitmap: ' + c, 'block-dirty-bitmap-' + c, {'node': 'v3', 'name': 'zz'})
        # Bitmaps of a read-only image.
        for c in ('clear', 'remove', 'disable', 'enable'):
            do('readonly: ' + c, 'block-dirty-bitmap-' + c, {'node': 'ro', 'name': 'stored'})
        do('readonly: plain add', add, {'node': 'ro', 'name': 'tmp'})
        do('readonly: merge into', 'block-dirty-bitmap-merge', {'node': 'ro', 'target': 'stored', 'bitmaps': ['tmp']})
        do('readonly: merge from', 'block-dirty-bitmap-merge', {'node': 'ro', 'target': 'tmp', 'bitmaps': ['stored']})
        # In use after QEMU was killed: inconsistent, only remove works.
        for c in ('clear', 'enable', 'disable'):
            do('inconsistent: ' + c, 'block-dirty-bitmap-' + c, {'node': 'crashed', 'name': 'x'})
        do('inconsistent: plain add', add, {'node': 'crashed', 'name': 'y'})
        do('inconsistent: merge into', 'block-dirty-bitmap-merge',
           {'node': 'crashed', 'target': 'x', 'bitmaps': ['y']})
        do('inconsistent: merge from', 'block-dirty-bitmap-merge',
           {'node': 'crashed', 'target': 'y', 'bitmaps': ['x']})
        do('inconsistent: export', 'block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'crashed',
                                                        'bitmaps': ['x']})
        do('inconsistent: remove', 'block-dirty-bitmap-remove', {'node': 'crashed', 'name': 'x'})
        do('transaction with a refused add', 'transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'v3', 'name': 't1', 'persistent': True}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'v2', 'name': 't2', 'persistent': True}}]})
        for n in ('v3', 'v2', 'big', 'ro', 'crashed', 'r0', 'f0', 'c512', 'c4k', 'c2M'):
            bms = [b for x in q.cmd('query-named-block-nodes')['return'] if x['node-name'] == n
                   for b in x.get('dirty-bitmaps', [])]
            out.append(('bitmaps of ' + n, bms))
        ro_add = q.cmd(add, {'node': 'ro', 'name': 'new', 'persistent': True})
        q.cmd('quit')
        d.wait()
    return out, ro_add


def too_many(cmd, tmp):
    """The replies to adding a 65536th persistent bitmap and a duplicate
    on an image with 65535 (opened read-only)."""
    path = os.path.join(tmp, 'many.qcow2')
    many_bitmaps(path)
    with Daemon(cmd) as d:
        q = d.qmp()
        q.sock.settimeout(900)
        node(q, 'many', path, True)
        out = [q.cmd('block-dirty-bitmap-add', {'node': 'many', 'name': 'one-more', 'persistent': True}),
               q.cmd('block-dirty-bitmap-add', {'node': 'many', 'name': 'b00007', 'persistent': True})]
        q.cmd('quit')
        d.wait(600)
    return out


def main():
    for tool in ('qemu-img', 'qemu-storage-daemon'):
        if not shutil.which(tool):
            skip('%s is not installed' % tool)
    top = tempfile.mkdtemp(prefix='blockd-qcow2-bm-errors.', dir=os.environ.get('TEST_TMPDIR', '/var/tmp'))
    try:
        results = {}
        for name, cmd in (('qemu-storage-daemon', qsd_cmd()), ('blockd', blockd_cmd())):
            tmp = os.path.join(top, name)
            os.mkdir(tmp)
            make_images(tmp)
            t0 = time.time()
            results[name] = script(cmd, tmp)
            print('%s: %d replies (%.1f s)' % (name, len(results[name][0]), time.time() - t0))
        qsd, blockd = results['qemu-storage-daemon'][0], results['blockd'][0]
        bad = []
        for (what, want), (_, got) in zip(qsd, blockd):
            if want != got:
                bad.append('%s:\n  qemu-storage-daemon %r\n  blockd              %r' % (what, want, got))
        check(len(qsd) == len(blockd) and not bad, '%d replies differ:\n%s' % (len(bad), '\n'.join(bad)))
        errors = sum(1 for _, r in qsd if isinstance(r, dict) and 'error' in r)
        print('%d replies identical (%d errors)' % (len(qsd), errors))
        # Too many bitmaps.
        tmp = os.path.join(top, 'many')
        os.mkdir(tmp)
        got = too_many(blockd_cmd(), tmp)
        if os.environ.get('QCOW2_BITMAPS_MANY') == '1':
            want = too_many(qsd_cmd(), tmp)
        else:
            want = [{'error': {'class': 'GenericError', 'desc': "Can't make bitmap 'one-more' persistent in 'many': "
                                                                "Maximum number of persistent bitmaps is already reached"}},
                    {'error': {'class': 'GenericError', 'desc': 'Bitmap already exists: b00007'}}]
        check(got == want, 'too many bitmaps:\n  want %r\n  got  %r' % (want, got))
        print('65535 bitmaps: one more refused as %s' % ('by qemu-storage-daemon' if len(want) and
                                                       os.environ.get('QCOW2_BITMAPS_MANY') == '1' else 'QEMU does'))
        # The deliberate difference.
        check(results['qemu-storage-daemon'][1] == {'return': {}}, 'QSD: %r' % (results['qemu-storage-daemon'][1],))
        want = {'error': {'class': 'GenericError',
                          'desc': "Can't make bitmap 'new' persistent in 'ro': No write access"}}
        check(results['blockd'][1] == want, 'blockd, persistent bitmap on a read-only node: %r' % (results['blockd'][1],))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print('ok')


main()
