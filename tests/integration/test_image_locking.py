#!/usr/bin/python3
"""Image locking as QEMU does it (docs/running.md, "Image locking").

* The same QMP setups against blockd and qemu-storage-daemon leave the same
  lock bytes on the image files (file node alone, exported writable and
  read-only, raw over file, qcow2 read-write and read-only, a qcow2
  overlay's backing file before and while the overlay is exported, and
  after the export or node is deleted).
* blockd holding a qcow2 image: qemu-img info and a qemu-io writer are
  refused with QEMU's messages; -U (force share) gets through.
* qemu-storage-daemon holding it: blockd's blockdev-add and block-export-add
  fail with QEMU's desc (no leftover nodes), its command line with the hint.
* Two blockd processes: the second is refused until the first deletes the node."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lock_lib import error, locked, ok, refused, tool  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402

WRITE = 'Failed to get "write" lock'
SHARED_WRITE = 'Failed to get shared "write" lock'
RW_QCOW2 = {100, 101, 103, 201, 203}


def qcow2(path, read_only=False):
    return {'driver': 'qcow2', 'node-name': 'q', 'read-only': read_only,
            'file': {'driver': 'file', 'filename': path}}


def export(q, node, writable, eid='e'):
    return q.cmd('block-export-add', {'type': 'nbd', 'id': eid, 'node-name': node, 'writable': writable})


def setups(d, q, img, top, base):
    """Runs the setups one after the other; yields (step, {file: lock bytes})."""
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img}), 'file')
    yield 'file node', {img: locked(img)}
    for writable in (True, False):
        ok(export(q, 'f', writable), 'export')
        yield 'exported writable=%s' % writable, {img: locked(img)}
        ok(q.cmd('block-export-del', {'id': 'e'}), 'export-del')
        q.wait_event('BLOCK_EXPORT_DELETED')
        yield 'export deleted', {img: locked(img)}
    ok(q.cmd('blockdev-del', {'node-name': 'f'}), 'del f')
    ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'r', 'file': {'driver': 'file', 'filename': img}}), 'raw')
    ok(export(q, 'r', True), 'export raw')
    yield 'raw over file exported writable', {img: locked(img)}
    for read_only in (False, True):
        ok(q.cmd('blockdev-add', qcow2(top, read_only)), 'qcow2')
        yield 'qcow2 read-only=%s' % read_only, {top: locked(top), base: locked(base)}
        if not read_only:
            ok(export(q, 'q', True, 'eq'), 'export qcow2')
            yield 'qcow2 exported', {top: locked(top), base: locked(base)}
            ok(q.cmd('block-export-del', {'id': 'eq'}), 'export-del')
            q.wait_event('BLOCK_EXPORT_DELETED')
        ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'del q')
        yield 'qcow2 deleted', {top: locked(top), base: locked(base)}


def differential(tmp):
    img, top, base = (os.path.join(tmp, n) for n in ('img.raw', 'top.qcow2', 'base.raw'))
    for path in (img, base):
        with open(path, 'wb') as f:
            f.truncate(1 << 20)
    tool('qemu-img', 'create', '-f', 'qcow2', '-b', base, '-F', 'raw', top)
    results = {}
    for name, cmd in (('blockd', blockd_cmd()), ('qsd', qsd_cmd())):
        with Daemon(cmd) as d:
            results[name] = list(setups(d, d.qmp(), img, top, base))
            check(d.stop() == 0, '%s failed' % name)
    for (step, ours), (_, theirs) in zip(results['blockd'], results['qsd']):
        check(ours == theirs, '%s: blockd locks %r, qemu-storage-daemon %r' % (step, ours, theirs))
    steps = dict(results['blockd'])
    check(steps['exported writable=True'][img] == {100, 101, 203}, 'writable export: %r' % steps)
    check(steps['qcow2 exported'] == {top: RW_QCOW2, base: {100}}, 'qcow2: %r' % steps)
    print('lock bytes: %d steps as qemu-storage-daemon' % len(results['blockd']))


def blockd_holds(path):
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', qcow2(path)), 'qcow2')
        check(locked(path) == RW_QCOW2, 'locks: %r' % locked(path))
        rc, out = tool('qemu-img', 'info', path)
        check(rc != 0 and refused(out, SHARED_WRITE, path), 'qemu-img info: %d %s' % (rc, out))
        rc, out = tool('qemu-io', '-c', 'write 0 4k', path)
        check(rc != 0 and refused(out, WRITE, path), 'qemu-io write: %d %s' % (rc, out))
        rc, out = tool('qemu-img', 'info', '-U', path)
        check(rc == 0 and 'file format: qcow2' in out, 'qemu-img info -U: %s' % out)

        # A second blockd: refused over QMP (nothing left behind), then let in.
        with Daemon(blockd_cmd()) as d2:
            q2 = d2.qmp()
            error(q2.cmd('blockdev-add', qcow2(path)), WRITE, 'second blockd')
            error(q2.cmd('blockdev-add', qcow2(path, True)), SHARED_WRITE, 'second blockd, read-only')
            check(q2.cmd('query-named-block-nodes') == {'return': []}, 'a refused node stayed behind')
            ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'blockdev-del')
            check(locked(path) == set(), 'blockdev-del left locks: %r' % locked(path))
            ok(q2.cmd('blockdev-add', qcow2(path)), 'second blockd after blockdev-del')
            check(d2.stop() == 0, 'second blockd failed')
        check(d.stop() == 0, 'blockd failed')
    print('blockd holding an image: QEMU tools and a second blockd refused')


def qsd_holds(path):
    with Daemon(qsd_cmd()) as qsd:
        ok(qsd.qmp().cmd('blockdev-add', qcow2(path)), 'qsd qcow2')
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            error(q.cmd('blockdev-add', qcow2(path)), WRITE, 'qcow2 on an image in use')
            ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': path}), 'file node')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('s')}}}), 'nbd')
            error(export(q, 'f', True), WRITE, 'writable export')
            error(export(q, 'f', False), 'Failed to get shared "resize" lock', 'read-only export')
            check(q.cmd('query-block-exports') == {'return': []}, 'a refused export stayed behind')
            check(d.stop() == 0, 'blockd failed')
        p = subprocess.run(blockd_cmd() + ['--blockdev', 'qcow2,node-name=q,file.driver=file,file.filename=' + path],
                           capture_output=True, text=True, timeout=30)
        check(p.returncode == 1 and p.stderr.endswith(
            ': %s\nIs another process using the image [%s]?\n' % (WRITE, path)), 'command line: %r' % p.stderr)
    print('qemu-storage-daemon holding an image: blockd refused with its messages')


def main():
    with tempfile.TemporaryDirectory(prefix='blockd-locking.') as tmp:
        differential(tmp)
        path = os.path.join(tmp, 'held.qcow2')
        tool('qemu-img', 'create', '-f', 'qcow2', path, '1M')
        blockd_holds(path)
        qsd_holds(path)
    print('image locking OK')


if __name__ == '__main__':
    main()
