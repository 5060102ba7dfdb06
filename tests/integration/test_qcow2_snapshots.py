#!/usr/bin/python3
"""Internal qcow2 snapshots (docs/snapshots.md), round trips with qemu-img
and qemu-storage-daemon both ways, data verified against a model:

1. QMP: blockdev-snapshot-internal-sync / -delete-internal-sync and the
   transaction action run the same script against blockd and
   qemu-storage-daemon; replies (errors by class and text), the resulting
   snapshot lists (query-named-block-nodes, qemu-img snapshot -l) and
   qemu-img check agree.
2. blockd takes snapshots of an image while a client writes through NBD
   (shared clusters and tables copied on write); qemu-img check is clean,
   `qemu-img convert -l` shows each snapshot's data, the live image its
   own; qemu-img snapshot -a / -d then work on what blockd made.
3. qemu-img makes snapshots; blockd lists them, writes over shared
   clusters, deletes one and reverts to another (snapshot-load); data
   checked with qemu-img.
4. qemu-storage-daemon makes a snapshot and writes; blockd lists, reverts
   and deletes; and the reverse: blockd makes one, qemu-storage-daemon
   lists and deletes it.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, fail, ok, qsd_cmd  # noqa: E402

SIZE = 4 << 20
CS = 65536
WORK = tempfile.mkdtemp(prefix='blockd-qsnap.')


def run(*args):
    return subprocess.run(args, capture_output=True, text=True)


def qemu_img_check(path, what):
    r = run('qemu-img', 'check', path)
    check(r.returncode == 0, '%s: qemu-img check failed (%d):\n%s%s' % (what, r.returncode, r.stdout, r.stderr))


def snapshot_tags(path):
    r = run('qemu-img', 'snapshot', '-l', '-U', path)
    check(r.returncode == 0, 'qemu-img snapshot -l: %s' % r.stderr)
    return [line.split()[1] for line in r.stdout.splitlines()[2:]]


def contents(path, snapshot=None):
    out = path + '.raw'
    args = ['qemu-img', 'convert', '-U', '-O', 'raw']
    if snapshot:
        args += ['-l', 'snapshot.name=' + snapshot]
    r = run(*args, path, out)
    check(r.returncode == 0, 'qemu-img convert %s: %s' % (snapshot, r.stderr))
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def random_writes(h, model, rng, n):
    for _ in range(n):
        if rng.random() < 0.5:
            off = rng.randrange(0, SIZE // CS) * CS
            ln = CS * rng.randrange(1, 4)
        else:
            off = rng.randrange(0, SIZE - 1)
            ln = rng.randrange(1, 3 * CS)
        ln = min(ln, SIZE - off)
        data = bytes([rng.randrange(1, 256)]) * ln
        h.pwrite(data, off)
        model[off:off + ln] = data
    h.flush()


def open_image(q, d, path, name='q'):
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name,
                              'file': {'driver': 'file', 'filename': path}}), 'blockdev-add')
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + name, 'node-name': name, 'name': name,
                                  'writable': True}), 'block-export-add')
    return connect(sock, name)


def close_image(q, h, name='q'):
    h.shutdown()
    ok(q.cmd('block-export-del', {'id': 'e-' + name}), 'block-export-del')
    q.wait_event('BLOCK_EXPORT_DELETED')
    ok(q.cmd('blockdev-del', {'node-name': name}), 'blockdev-del')


def node_snapshots(q, name='q'):
    for n in q.cmd('query-named-block-nodes', {'flat': True})['return']:
        if n['node-name'] == name:
            return [(s['id'], s['name'], s['vm-state-size']) for s in n['image'].get('snapshots', [])]
    fail('node %s not listed' % name)


def wait_concluded(q, timeout=20):
    """query-jobs once the only job concluded (auto-dismiss is off)."""
    deadline = time.time() + timeout
    while True:
        jobs = q.cmd('query-jobs')['return']
        if jobs and jobs[0]['status'] == 'concluded':
            return jobs
        if time.time() > deadline:
            fail('job did not conclude: %r' % jobs)
        time.sleep(0.05)


def new_image(path):
    r = run('qemu-img', 'create', '-f', 'qcow2', path, str(SIZE))
    check(r.returncode == 0, r.stderr)


# --- 1. the QMP commands against qemu-storage-daemon ---

def qmp_script(cmd):
    out = []
    with Daemon(cmd) as d:
        q = d.qmp()
        img, raw, ro = d.path('a.qcow2'), d.path('r.raw'), d.path('ro.qcow2')
        new_image(img)
        new_image(ro)
        run('qemu-img', 'snapshot', '-c', 'ro1', ro)
        top = d.path('top.qcow2')
        run('qemu-img', 'create', '-f', 'qcow2', '-b', img, '-F', 'qcow2', top)
        run('qemu-io', '-c', 'write -P 1 0 1M', '-c', 'write -P 2 2M 64k', img)
        run('qemu-img', 'create', '-f', 'raw', raw, '1M')

        def c(name, args=None):
            r = q.cmd(name, args)
            if isinstance(r.get('return'), dict):
                for k in ('date-sec', 'date-nsec', 'vm-clock-sec', 'vm-clock-nsec'):
                    r['return'].pop(k, None)
            out.append((name, args, r))
        q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'q', 'file': {'driver': 'file', 'filename': img}})
        q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'r', 'file': {'driver': 'file', 'filename': raw}})
        q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'ro', 'read-only': True,
                               'file': {'driver': 'file', 'filename': ro, 'read-only': True}})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 's1'})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 's1'})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': ''})
        c('blockdev-snapshot-internal-sync', {'device': 'nope', 'name': 's1'})
        c('blockdev-snapshot-internal-sync', {'device': 'r', 'name': 's1'})
        c('blockdev-snapshot-internal-sync', {'device': 'ro', 'name': 's1'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'ro', 'name': 'ro1'})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': '2'})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': '1'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 's1'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 's1'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'id': '2'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'id': '9'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'id': '3', 'name': 'zz'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'r', 'name': 's1'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'nope', 'name': 's1'})
        c('transaction', {'actions': [{'type': 'blockdev-snapshot-internal-sync',
                                       'data': {'device': 'q', 'name': 't1'}}]})
        # A node below another (the backing of an overlay) is not a root.
        q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'q',
                               'file': {'driver': 'file', 'filename': top}})
        c('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 'under'})
        c('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 't1'})
        q.cmd('blockdev-del', {'node-name': 'top'})
        c('transaction', {'actions': [{'type': 'blockdev-snapshot-internal-sync',
                                       'data': {'device': 'q', 'name': 't2'}}, {'type': 'abort', 'data': {}}]})
        c('transaction', {'actions': [{'type': 'blockdev-snapshot-internal-sync',
                                       'data': {'device': 'q', 'name': 't3'}}],
                          'properties': {'completion-mode': 'grouped'}})
        c('transaction', {'actions': [{'type': 'blockdev-snapshot-internal-sync',
                                       'data': {'device': 'q', 'name': 't4'}},
                                      {'type': 'blockdev-snapshot-internal-sync',
                                       'data': {'device': 'q', 'name': 't4'}}]})
        out.append(('snapshots', None, node_snapshots(q)))
        check(d.stop() == 0, 'daemon exit status')
        qemu_img_check(img, 'qmp script')
        out.append(('qemu-img snapshot -l', None, snapshot_tags(img)))
        data = contents(img)
        check(data[:1 << 20] == b'\x01' * (1 << 20) and data[2 << 20:(2 << 20) + CS] == b'\x02' * CS,
              'image data after the QMP script')
    return out


def part1():
    a, b = qmp_script(qsd_cmd()), qmp_script(blockd_cmd())
    for x, y in zip(a, b):
        check(x == y, 'differs from qemu-storage-daemon at %s %s:\n  qsd:    %r\n  blockd: %r' %
              (x[0], json.dumps(x[1]), x[2], y[2]))
    print('1: %d QMP steps agree with qemu-storage-daemon' % len(a))


# --- 2. blockd makes snapshots while a client writes; qemu-img reads them ---

def part2():
    rng = random.Random(2)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        img = os.path.join(WORK, 'b.qcow2')
        new_image(img)
        model = bytearray(SIZE)
        h = open_image(q, d, img)
        expected = {}
        for i in range(4):
            random_writes(h, model, rng, 30)
            ok(q.cmd('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 'snap%d' % i}), 'snapshot')
            expected['snap%d' % i] = bytes(model)
        random_writes(h, model, rng, 40)
        check(h.pread(SIZE, 0) == bytes(model), 'live data read back through blockd')
        # Delete one in the middle while the others stay.
        r = q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 'snap1'})
        check(r['return']['name'] == 'snap1' and r['return']['vm-state-size'] == 0, 'delete reply %r' % r)
        del expected['snap1']
        random_writes(h, model, rng, 20)
        check(h.pread(SIZE, 0) == bytes(model), 'live data after delete')
        check([s[1] for s in node_snapshots(q)] == ['snap0', 'snap2', 'snap3'], 'listed snapshots')
        close_image(q, h)
        check(d.stop() == 0, 'daemon exit status')
    qemu_img_check(img, 'after blockd snapshots')
    check(snapshot_tags(img) == ['snap0', 'snap2', 'snap3'], 'qemu-img snapshot -l: %r' % snapshot_tags(img))
    check(contents(img) == bytes(model), 'live image as qemu-img reads it')
    for name, data in expected.items():
        check(contents(img, name) == data, 'snapshot %s as qemu-img reads it' % name)
    # qemu-img applies and deletes what blockd made.
    r = run('qemu-img', 'snapshot', '-a', 'snap2', img)
    check(r.returncode == 0, r.stderr)
    check(contents(img) == expected['snap2'], 'qemu-img snapshot -a snap2')
    r = run('qemu-img', 'snapshot', '-d', 'snap0', img)
    check(r.returncode == 0, r.stderr)
    qemu_img_check(img, 'after qemu-img -a/-d')
    check(snapshot_tags(img) == ['snap2', 'snap3'], 'after qemu-img -d')
    print('2: blockd snapshots read, applied and deleted by qemu-img')
    return img, expected


# --- 3. qemu-img makes snapshots, blockd works with them ---

def part3():
    rng = random.Random(3)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        img = os.path.join(WORK, 'c.qcow2')
        new_image(img)
        model = bytearray(SIZE)
        expected = {}
        for i in range(3):
            pattern = 0x10 + i
            for off in range(i * CS, SIZE, 3 * CS):
                r = run('qemu-io', '-c', 'write -P %d %d %d' % (pattern, off, CS // 2), img)
                check(r.returncode == 0, r.stderr)
                model[off:off + CS // 2] = bytes([pattern]) * (CS // 2)
            r = run('qemu-img', 'snapshot', '-c', 'img%d' % i, img)
            check(r.returncode == 0, r.stderr)
            expected['img%d' % i] = bytes(model)
        h = open_image(q, d, img)
        check([s[1] for s in node_snapshots(q)] == ['img0', 'img1', 'img2'], 'blockd lists qemu-img snapshots')
        random_writes(h, model, rng, 40)
        check(h.pread(SIZE, 0) == bytes(model), 'live data over qemu-img snapshots')
        ok(q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 'img1'}), 'delete img1')
        h.shutdown()
        ok(q.cmd('snapshot-load', {'job-id': 'load', 'tag': 'img0', 'vmstate': 'q', 'devices': ['q']}), 'load')
        jobs = wait_concluded(q)
        check(jobs[0]['status'] == 'concluded' and 'error' not in jobs[0], 'snapshot-load: %r' % jobs)
        ok(q.cmd('job-dismiss', {'id': 'load'}), 'dismiss')
        h = connect(d.path('nbd.sock'), 'q')
        check(h.pread(SIZE, 0) == expected['img0'], 'blockd reverted to img0')
        model = bytearray(expected['img0'])
        random_writes(h, model, rng, 20)
        close_image(q, h)
        check(d.stop() == 0, 'daemon exit status')
    qemu_img_check(img, 'after blockd on qemu-img snapshots')
    check(snapshot_tags(img) == ['img0', 'img2'], 'qemu-img snapshot -l after blockd')
    check(contents(img) == bytes(model), 'live image after revert and writes')
    for name in ('img0', 'img2'):
        check(contents(img, name) == expected[name], 'qemu-img snapshot %s unchanged' % name)
    print('3: qemu-img snapshots listed, written over, deleted and loaded by blockd')


# --- 4. qemu-storage-daemon and blockd, both ways ---

def qsd_session(img, steps):
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        h = open_image(q, d, img)
        result = steps(q, h)
        close_image(q, h)
        d.stop()
    return result


def part4():
    rng = random.Random(4)
    img = os.path.join(WORK, 'd.qcow2')
    new_image(img)
    model = bytearray(SIZE)

    def qsd_makes(q, h):
        random_writes(h, model, rng, 20)
        ok(q.cmd('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 'fromqsd'}), 'qsd snapshot')
        snap = bytes(model)
        random_writes(h, model, rng, 20)
        return snap
    snap = qsd_session(img, qsd_makes)
    qemu_img_check(img, 'after qemu-storage-daemon')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        h = open_image(q, d, img)
        check(h.pread(SIZE, 0) == bytes(model), 'blockd reads what qemu-storage-daemon wrote')
        check([s[1] for s in node_snapshots(q)] == ['fromqsd'], 'blockd lists the qsd snapshot')
        random_writes(h, model, rng, 20)
        ok(q.cmd('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 'fromblockd'}), 'blockd snapshot')
        snap2 = bytes(model)
        random_writes(h, model, rng, 20)
        r = q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 'fromqsd'})
        check(r['return']['name'] == 'fromqsd', 'blockd deletes the qsd snapshot: %r' % r)
        close_image(q, h)
        check(d.stop() == 0, 'daemon exit status')
    qemu_img_check(img, 'after blockd')
    check(contents(img, 'fromblockd') == snap2, 'the blockd snapshot as qemu-img reads it')
    check(snap != snap2, 'two different snapshots')

    def qsd_uses(q, h):
        check(h.pread(SIZE, 0) == bytes(model), 'qemu-storage-daemon reads what blockd wrote')
        check([s[1] for s in node_snapshots(q)] == ['fromblockd'], 'qsd lists the blockd snapshot')
        r = q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': 'fromblockd'})
        check('return' in r, 'qsd deletes the blockd snapshot: %r' % r)
    qsd_session(img, qsd_uses)
    qemu_img_check(img, 'after qemu-storage-daemon deleted')
    check(snapshot_tags(img) == [] and contents(img) == bytes(model), 'final image')
    print('4: qemu-storage-daemon and blockd use each other\'s snapshots')


if __name__ == '__main__':
    parts = sys.argv[1:] or ['1', '2', '3', '4']
    try:
        for p in parts:
            globals()['part' + p]()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    print('PASS')
