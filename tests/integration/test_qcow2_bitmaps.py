#!/usr/bin/python3
"""Persistent dirty bitmaps in qcow2 images, both ways with QEMU's tools
(docs/bitmaps.md, "Persistence (qcow2 images)"):

1. blockd -> QEMU: bitmaps added to a qcow2 node in blockd (persistent,
   disabled, 4 KiB granularity) with writes through NBD; after blockd
   stops, `qemu-img info` lists them with QEMU's flags, `qemu-img check` is
   clean, `qemu-nbd -B NAME` and qemu-storage-daemon export them and
   `nbdinfo --map=qemu:dirty-bitmap:NAME` equals blockd's map (and the
   SHA-256 QEMU computes equals blockd's); `qemu-img bitmap --merge` works
   on the image, and blockd reads the merged bitmap back.
2. QEMU -> blockd: bitmaps made by `qemu-img bitmap --add` and by
   qemu-storage-daemon (block-dirty-bitmap-add persistent), written through
   QSD's NBD export with qemu-io; blockd opens the image and shows and
   serves the same bitmaps (states, granularity, count, map, hash); an
   incremental blockdev-backup with one copies its writes and clears it;
   after more writes in blockd, QSD reads the bitmaps back.
3. Management on a qcow2 node: remove, clear, enable, disable, merge and a
   transaction, each reflected in the image (qemu-img info) at once;
   QEMU's default granularity (the cluster size within 4..64 KiB).
4. A read-only qcow2 node: its bitmaps come up read-only and nothing is
   written to the image.
5. Bitmaps beside internal snapshots: create, copy-on-write and delete
   keep the bitmaps; QEMU reads them back, qemu-img check is clean."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, import_nbd, ok, qsd_cmd, skip, wait_job_end  # noqa: E402

MiB = 1 << 20
SIZE = 256 * MiB


def need(*tools):
    for t in tools:
        if not shutil.which(t):
            skip('%s is not installed' % t)


def qemu_img(*args, ok_codes=(0,)):
    r = subprocess.run(['qemu-img'] + list(args), capture_output=True, text=True, timeout=120)
    check(r.returncode in ok_codes, 'qemu-img %s: exit %d\n%s%s' % (' '.join(args), r.returncode, r.stdout[:2000],
                                                                       r.stderr[:2000]))
    return r.stdout


def create(path, size=SIZE, *opts):
    qemu_img('create', '-q', '-f', 'qcow2', *opts, path, str(size))


def image_bitmaps(path):
    """{name: (granularity, flags)} as qemu-img info reports them."""
    info = json.loads(qemu_img('info', '-U', '--output=json', path))
    return {b['name']: (b['granularity'], sorted(b['flags']))
            for b in info.get('format-specific', {}).get('data', {}).get('bitmaps', [])}


def image_clean(path, leaks=False):
    """qemu-img check finds nothing (with `leaks`, leaked clusters only:
    what a killed process had reserved)."""
    out = qemu_img('check', path, ok_codes=(0, 3) if leaks else (0,))
    check('No errors were found on the image.' in out or (leaks and 'ERROR' not in out and 'corrupt' not in out),
          'qemu-img check %s:\n%s' % (path, out[:2000]))


def add_qcow2(q, path, name='q0', read_only=False):
    args = {'driver': 'qcow2', 'node-name': name, 'file': {'driver': 'file', 'filename': path}}
    if read_only:
        args['read-only'] = True
    ok(q.cmd('blockdev-add', args), 'blockdev-add ' + path)


def bitmaps(q, node='q0'):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            return {b['name']: b for b in n.get('dirty-bitmaps', [])}
    check(False, 'node %s missing' % node)


def sha(q, name, node='q0'):
    return ok(q.cmd('x-debug-block-dirty-bitmap-sha256', {'node': node, 'name': name}), 'sha256 ' + name)['sha256']


def nbd_start(q, d):
    sock = d.path('nbd.sock')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    return sock


def export(q, names, writable=True, node='q0', id='e0'):
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': id, 'node-name': node, 'name': 'disk',
                                  'writable': writable, 'bitmaps': list(names)}), 'block-export-add')


def unexport(q, id='e0'):
    ok(q.cmd('block-export-del', {'id': id}), 'block-export-del')
    deadline = time.time() + 10
    while any(e['id'] == id for e in q.cmd('query-block-exports')['return']):
        check(time.time() < deadline, 'export %s was not deleted' % id)
        time.sleep(0.02)


def nbd_map(uri, name):
    """nbdinfo's map of qemu:dirty-bitmap:NAME: [(offset, length, type)]."""
    r = subprocess.run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:' + name, uri],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, 'nbdinfo %s: %s' % (uri, r.stderr))
    return [(e['offset'], e['length'], e['type']) for e in json.loads(r.stdout)]


def sock_uri(sock):
    return 'nbd+unix:///disk?socket=' + sock


def write_through(sock, writes):
    h = connect(sock, 'disk')
    for off, n, byte in writes:
        h.pwrite(bytes([byte]) * n, off)
    h.flush()
    h.shutdown()


def quit(d, q):
    q.cmd('quit')
    check(d.wait() == 0, 'daemon exit status')
    err = d.stderr_text()
    check('ERROR' not in err and 'runtime error' not in err, 'daemon stderr: %s' % err[-3000:])


class QemuNbd:
    """qemu-nbd -r -B NAME... on a Unix socket, export name 'disk'."""

    def __init__(self, path, names):
        self.tmp = tempfile.mkdtemp(prefix='blockd-qemu-nbd.')
        self.sock = os.path.join(self.tmp, 'sock')
        args = ['qemu-nbd', '-r', '-t', '-f', 'qcow2', '-x', 'disk', '-k', self.sock]
        for n in names:
            args += ['-B', n]
        self.proc = subprocess.Popen(args + [path], stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                check(False, 'qemu-nbd exited: %s' % self.proc.stderr.read().decode())
            check(time.time() < deadline, 'qemu-nbd socket did not appear')
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        shutil.rmtree(self.tmp, ignore_errors=True)


WRITES = [(0, 4096, 1), (5 * MiB, 65536, 2), (5 * MiB + 65536 * 3, 100, 3), (100 * MiB, 3 * MiB, 4),
          (SIZE - 4096, 4096, 5)]


def test_blockd_to_qemu(tmp):
    img = os.path.join(tmp, 'b2q.qcow2')
    create(img)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        sock = nbd_start(q, d)
        for args in ({'name': 'p', 'persistent': True},
                     {'name': 'p4k', 'persistent': True, 'granularity': 4096},
                     {'name': 'pd', 'persistent': True, 'disabled': True},
                     {'name': 'tmp'}):
            ok(q.cmd('block-dirty-bitmap-add', dict({'node': 'q0'}, **args)), 'add %r' % args)
        # While blockd has the image open the bitmaps are in use, as in QEMU.
        check(image_bitmaps(img) == {'p': (65536, ['auto', 'in-use']), 'p4k': (4096, ['auto', 'in-use']),
                                     'pd': (65536, ['in-use'])}, 'while open: %r' % image_bitmaps(img))
        export(q, [])
        write_through(sock, WRITES)
        unexport(q)
        export(q, ['p', 'p4k'])
        want = {n: nbd_map(sock_uri(sock), n) for n in ('p', 'p4k')}
        unexport(q)
        hashes = {n: sha(q, n) for n in ('p', 'p4k', 'pd')}
        before = bitmaps(q)
        check(before['p']['count'] == 65536 * 3 + 3 * MiB + 65536, 'count of p: %d' % before['p']['count'])
        quit(d, q)
    check(image_bitmaps(img) == {'p': (65536, ['auto']), 'p4k': (4096, ['auto']), 'pd': (65536, [])},
          'after a clean stop: %r' % image_bitmaps(img))
    image_clean(img)
    # qemu-nbd -B serves blockd's bitmaps.
    with QemuNbd(img, ['p', 'p4k']) as srv:
        for n in ('p', 'p4k'):
            got = nbd_map(sock_uri(srv.sock), n)
            check(got == want[n], 'qemu-nbd map of %s differs:\n%r\n%r' % (n, got, want[n]))
    # So does qemu-storage-daemon (read-only: the bitmaps are not in use then).
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img, read_only=True)
        sock = nbd_start(q, d)
        qb = bitmaps(q)
        for n in ('p', 'p4k', 'pd'):
            for k in ('granularity', 'count', 'recording', 'persistent'):
                check(qb[n][k] == before[n][k], 'QSD sees %s.%s = %r, blockd had %r' % (n, k, qb[n][k], before[n][k]))
            check(sha(q, n) == hashes[n], 'QSD hash of %s differs' % n)
        export(q, ['p', 'p4k'], writable=False)
        for n in ('p', 'p4k'):
            check(nbd_map(sock_uri(sock), n) == want[n], 'QSD map of %s differs' % n)
        quit(d, q)
    # qemu-img bitmap --merge on the image, read back by blockd.
    qemu_img('bitmap', '--merge', 'p4k', img, 'pd')
    image_clean(img)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        b = bitmaps(q)
        check(set(b) == {'p', 'p4k', 'pd'}, 'bitmaps after the merge: %r' % sorted(b))
        check(not b['pd']['recording'] and b['pd']['count'] == before['p']['count'],
              'pd after merging p4k into it: %r' % b['pd'])
        quit(d, q)
    image_clean(img)
    print('blockd -> QEMU: qemu-img info, check, qemu-nbd -B, QSD and qemu-img bitmap --merge agree')


def test_qemu_to_blockd(tmp):
    need('qemu-io')
    img = os.path.join(tmp, 'q2b.qcow2')
    create(img)
    qemu_img('bitmap', '--add', img, 'qb')
    qemu_img('bitmap', '--add', '-g', '4096', '--disable', img, 'qd')
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'qp', 'persistent': True, 'granularity': 16384}),
           'QSD add qp')
        sock = nbd_start(q, d)
        export(q, [])
        cmds = []
        for off, n, byte in WRITES:
            cmds += ['-c', 'write -P %d %d %d' % (byte, off, n)]
        r = subprocess.run(['qemu-io', '-f', 'raw'] + cmds + [sock_uri(sock)], capture_output=True, text=True)
        check(r.returncode == 0 and 'error' not in r.stdout.lower(), 'qemu-io: %s %s' % (r.stdout, r.stderr))
        unexport(q)
        ok(q.cmd('block-dirty-bitmap-enable', {'node': 'q0', 'name': 'qd'}), 'enable qd')
        export(q, ['qb', 'qp', 'qd'])
        want = {n: nbd_map(sock_uri(sock), n) for n in ('qb', 'qp', 'qd')}
        unexport(q)
        ok(q.cmd('block-dirty-bitmap-disable', {'node': 'q0', 'name': 'qd'}), 'disable qd')
        qsd = bitmaps(q)
        hashes = {n: sha(q, n) for n in ('qb', 'qp', 'qd')}
        quit(d, q)
    check(image_bitmaps(img) == {'qb': (65536, ['auto']), 'qd': (4096, []), 'qp': (16384, ['auto'])},
          'QSD stored %r' % image_bitmaps(img))
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        b = bitmaps(q)
        check(set(b) == {'qb', 'qd', 'qp'}, 'blockd loaded %r' % sorted(b))
        for n in ('qb', 'qd', 'qp'):
            for k in ('granularity', 'count', 'recording', 'persistent', 'busy'):
                check(b[n][k] == qsd[n][k], '%s.%s: blockd %r, QSD %r' % (n, k, b[n][k], qsd[n][k]))
            check('inconsistent' not in b[n], '%s inconsistent' % n)
            check(sha(q, n) == hashes[n], 'hash of %s differs from QSD' % n)
        # The bytes QEMU wrote are there.
        sock = nbd_start(q, d)
        ok(q.cmd('block-dirty-bitmap-enable', {'node': 'q0', 'name': 'qd'}), 'enable qd')
        export(q, ['qb', 'qp', 'qd'])
        for n in ('qb', 'qp', 'qd'):
            check(nbd_map(sock_uri(sock), n) == want[n], 'blockd map of %s differs from QSD' % n)
        h = connect(sock, 'disk')
        for off, n, byte in WRITES:
            check(h.pread(n, off) == bytes([byte]) * n, 'data at %d' % off)
        h.pwrite(b'\x09' * 4096, 200 * MiB)
        h.shutdown()
        unexport(q)
        # An incremental backup with QEMU's bitmap: the dirty clusters go to
        # the target, the bitmap is cleared in the image (a bitmap that
        # loses its bits is stored in new clusters).
        target = os.path.join(tmp, 'inc.raw')
        with open(target, 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'tgt', 'filename': target}), 'target')
        ok(q.cmd('blockdev-backup', {'job-id': 'inc', 'device': 'q0', 'target': 'tgt', 'sync': 'incremental',
                                     'bitmap': 'qb'}), 'blockdev-backup')
        evs = wait_job_end(q, 'inc')
        done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(done and 'error' not in done[0], 'incremental backup: %r' % done)
        check(bitmaps(q)['qb']['count'] == 0, 'qb after the backup: %r' % bitmaps(q)['qb'])
        ok(q.cmd('blockdev-del', {'node-name': 'tgt'}), 'del target')
        with open(target, 'rb') as f:
            for off, n, byte in WRITES + [(200 * MiB, 4096, 9)]:
                f.seek(off)
                check(f.read(n) == bytes([byte]) * n, 'backup target at %d' % off)
        hashes = {n: sha(q, n) for n in ('qb', 'qp', 'qd')}
        after = bitmaps(q)
        quit(d, q)
    image_clean(img)
    check(image_bitmaps(img) == {'qb': (65536, ['auto']), 'qd': (4096, ['auto']), 'qp': (16384, ['auto'])},
          'blockd stored %r' % image_bitmaps(img))
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        b = bitmaps(q)
        check(b['qb']['count'] == 0, 'QSD: qb after the backup %r' % b['qb'])
        for n in ('qb', 'qp', 'qd'):
            check(b[n]['count'] == after[n]['count'] and b[n]['recording'], 'QSD reads back %r' % b[n])
            check(sha(q, n) == hashes[n], 'QSD hash of %s after blockd differs' % n)
        quit(d, q)
    image_clean(img)
    print('QEMU -> blockd: qemu-img bitmap --add and QSD bitmaps load, serve and go back')


def test_management(tmp):
    img = os.path.join(tmp, 'mgmt.qcow2')
    create(img)
    small = os.path.join(tmp, 'c4k.qcow2')
    create(small, SIZE, '-o', 'cluster_size=4096')
    big = os.path.join(tmp, 'c2m.qcow2')
    create(big, SIZE, '-o', 'cluster_size=2M')
    tiny = os.path.join(tmp, 'c512.qcow2')
    create(tiny, 16 * MiB, '-o', 'cluster_size=512')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        add_qcow2(q, small, 'q4k')
        add_qcow2(q, big, 'q2m')
        add_qcow2(q, tiny, 'q512')
        sock = nbd_start(q, d)
        # QEMU's default granularity: the cluster size within 4..64 KiB.
        for node, gran in (('q0', 65536), ('q4k', 4096), ('q2m', 65536), ('q512', 4096)):
            ok(q.cmd('block-dirty-bitmap-add', {'node': node, 'name': 'g', 'persistent': True}), 'add g')
            check(bitmaps(q, node)['g']['granularity'] == gran, 'default granularity on %s' % node)
        for name in ('a', 'b', 'c'):
            ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': name, 'persistent': True}), 'add ' + name)
        export(q, [])
        write_through(sock, [(MiB, 4096, 1)])
        check(image_bitmaps(img)['a'] == (65536, ['auto', 'in-use']), 'a: %r' % image_bitmaps(img))
        ok(q.cmd('block-dirty-bitmap-disable', {'node': 'q0', 'name': 'a'}), 'disable a')
        check(image_bitmaps(img)['a'] == (65536, ['in-use']), 'disable not stored: %r' % image_bitmaps(img))
        ok(q.cmd('block-dirty-bitmap-remove', {'node': 'q0', 'name': 'b'}), 'remove b')
        check('b' not in image_bitmaps(img), 'remove not stored')
        write_through(sock, [(2 * MiB, 4096, 2)])
        ok(q.cmd('block-dirty-bitmap-clear', {'node': 'q0', 'name': 'c'}), 'clear c')
        ok(q.cmd('block-dirty-bitmap-merge', {'node': 'q0', 'target': 'a', 'bitmaps': ['g']}), 'merge')
        check(bitmaps(q)['a']['count'] == 2 * 65536 and bitmaps(q)['c']['count'] == 0, 'merge/clear: %r' % bitmaps(q))
        # A transaction that fails leaves the image as it was; one that succeeds stores its actions.
        r = q.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'q0', 'name': 'tx', 'persistent': True}},
            {'type': 'block-dirty-bitmap-clear', 'data': {'node': 'q0', 'name': 'a'}},
            {'type': 'abort', 'data': {}}]})
        check('error' in r, 'abort transaction: %r' % r)
        check('tx' not in image_bitmaps(img) and bitmaps(q)['a']['count'] == 2 * 65536, 'rollback')
        ok(q.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-disable', 'data': {'node': 'q0', 'name': 'g'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'q0', 'name': 'tx', 'persistent': True}}]}),
           'transaction')
        check(image_bitmaps(img)['tx'] == (65536, ['auto', 'in-use']) and image_bitmaps(img)['g'] == (65536, ['in-use']),
              'transaction not stored: %r' % image_bitmaps(img))
        hashes = {n: sha(q, n) for n in ('a', 'c', 'g', 'tx')}
        unexport(q)
        # Killed now, the image keeps every change made so far (crash-safe).
        d.proc.kill()
        d.proc.wait()
    check(image_bitmaps(img)['tx'] == (65536, ['auto', 'in-use']), 'after SIGKILL: %r' % image_bitmaps(img))
    image_clean(img, leaks=True)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        b = bitmaps(q)
        check(set(b) == {'a', 'c', 'g', 'tx'}, 'after SIGKILL: %r' % sorted(b))
        for n, h in hashes.items():
            check('inconsistent' not in b[n] and sha(q, n) == h, '%s after SIGKILL: %r' % (n, b[n]))
        check(not b['a']['recording'] and not b['g']['recording'] and b['c']['recording'], 'states after SIGKILL')
        quit(d, q)
    image_clean(img, leaks=True)
    for f in (small, big, tiny):  # killed too
        image_clean(f, leaks=True)
    print('management: every change stored at once; default granularity as QEMU')


def test_read_only(tmp):
    img = os.path.join(tmp, 'ro.qcow2')
    create(img)
    qemu_img('bitmap', '--add', img, 'stored')
    before = open(img, 'rb').read()
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img, read_only=True)
        b = bitmaps(q)['stored']
        check(b['persistent'] and b['recording'] and 'inconsistent' not in b, 'read-only load: %r' % b)
        r = q.cmd('block-dirty-bitmap-clear', {'node': 'q0', 'name': 'stored'})
        check(r.get('error', {}).get('desc') == "Bitmap 'stored' is readonly and cannot be modified", 'clear: %r' % r)
        r = q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'new', 'persistent': True})
        check(r.get('error', {}).get('desc') == "Can't make bitmap 'new' persistent in 'q0': No write access",
              'persistent add on a read-only node: %r' % r)
        ok(q.cmd('block-dirty-bitmap-disable', {'node': 'q0', 'name': 'stored'}), 'disable')
        quit(d, q)
    check(open(img, 'rb').read() == before, 'a read-only node changed its image')
    print('read-only node: bitmaps read-only, image untouched')


def test_with_snapshots(tmp):
    """Persistent bitmaps and internal snapshots in one image: creating and
    deleting a snapshot (which rewrites the refcounts and copies shared
    clusters on write) keeps the bitmap directory and every mark; QEMU reads
    both back and qemu-img check is clean."""
    img = os.path.join(tmp, 'snap.qcow2')
    create(img)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img)
        sock = nbd_start(q, d)
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'p', 'persistent': True}), 'add p')
        export(q, [])
        write_through(sock, WRITES[:2])
        ok(q.cmd('blockdev-snapshot-internal-sync', {'device': 'q0', 'name': 's1'}), 'snapshot s1')
        write_through(sock, WRITES[1:4])  # copies clusters the snapshot shares
        ok(q.cmd('blockdev-snapshot-internal-sync', {'device': 'q0', 'name': 's2'}), 'snapshot s2')
        ok(q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q0', 'name': 's1'}), 'delete s1')
        write_through(sock, WRITES[4:])
        unexport(q)
        export(q, ['p'])
        want = nbd_map(sock_uri(sock), 'p')
        unexport(q)
        count, digest = bitmaps(q)['p']['count'], sha(q, 'p')
        quit(d, q)
    check(count == 65536 * 4 + 3 * MiB, 'count of p: %d' % count)
    check(image_bitmaps(img) == {'p': (65536, ['auto'])}, 'bitmaps after snapshots: %r' % image_bitmaps(img))
    image_clean(img)
    snaps = qemu_img('snapshot', '-l', img)
    check(' s2 ' in snaps and ' s1 ' not in snaps, 'snapshot list: %s' % snaps)
    with QemuNbd(img, ['p']) as srv:
        check(nbd_map(sock_uri(srv.sock), 'p') == want, 'qemu-nbd map of p differs')
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        add_qcow2(q, img, read_only=True)
        check(sha(q, 'p') == digest, 'QSD hash of p differs')
        quit(d, q)
    print('bitmaps survive internal snapshot create/delete: count %d, QEMU agrees' % count)


def main():
    need('qemu-img', 'qemu-nbd', 'nbdinfo', 'qemu-storage-daemon')
    import_nbd()
    tmp = tempfile.mkdtemp(prefix='blockd-qcow2-bitmaps.', dir=os.environ.get('TEST_TMPDIR', '/var/tmp'))
    try:
        which = sys.argv[1:] or ['b2q', 'q2b', 'mgmt', 'ro', 'snap']
        if 'b2q' in which:
            test_blockd_to_qemu(tmp)
        if 'q2b' in which:
            test_qemu_to_blockd(tmp)
        if 'mgmt' in which:
            test_management(tmp)
        if 'ro' in which:
            test_read_only(tmp)
        if 'snap' in which:
            test_with_snapshots(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


main()
