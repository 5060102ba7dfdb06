#!/usr/bin/python3
"""Image locks go away and can be switched off (docs/running.md, "Image locking").

* SIGKILL: the kernel drops a killed blockd's locks; a qemu-io writer then
  gets in (it was refused before the kill).
* locking=off: blockd takes no locks (qemu-img info gets in without -U) and
  opens an image qemu-storage-daemon holds; locking=on behaves as auto on a
  file system with OFD locks; any other value is refused.
* The last claim going (block-export-del of a raw file's only export)
  unlocks what it added, even while the node stays."""
import os
import signal
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lock_lib import error, locked, ok, refused, tool  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402


def qcow2(path, locking=None):
    f = {'driver': 'file', 'filename': path}
    if locking:
        f['locking'] = locking
    return {'driver': 'qcow2', 'node-name': 'q', 'file': f}


def sigkill(path):
    with Daemon(blockd_cmd()) as d:
        ok(d.qmp().cmd('blockdev-add', qcow2(path)), 'qcow2')
        rc, out = tool('qemu-io', '-c', 'write 0 4k', path)
        check(rc != 0 and refused(out, 'Failed to get "write" lock', path), 'qemu-io got in: %s' % out)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(timeout=20)
        check(locked(path) == set(), 'a killed blockd left locks: %r' % locked(path))
        rc, out = tool('qemu-io', '-c', 'write 0 4k', path)
        check(rc == 0 and 'wrote 4096/4096' in out, 'qemu-io after SIGKILL: %s' % out)
    print('SIGKILL releases the locks')


def options(path):
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', qcow2(path, 'off')), 'locking=off')
        check(locked(path) == set(), 'locking=off locked %r' % locked(path))
        rc, out = tool('qemu-img', 'info', path)
        check(rc == 0 and 'file format: qcow2' in out, 'qemu-img info with locking=off: %s' % out)
        ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'del')
        ok(q.cmd('blockdev-add', qcow2(path, 'on')), 'locking=on')
        check(locked(path) == {100, 101, 103, 201, 203}, 'locking=on locked %r' % locked(path))
        ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'del')
        error(q.cmd('blockdev-add', qcow2(path, 'maybe')),
              "Parameter 'locking' does not accept value 'maybe'", 'locking=maybe')
        with Daemon(qsd_cmd()) as qsd:
            ok(qsd.qmp().cmd('blockdev-add', qcow2(path)), 'qsd holds it')
            error(q.cmd('blockdev-add', qcow2(path)), 'Failed to get "write" lock', 'auto next to qsd')
            ok(q.cmd('blockdev-add', qcow2(path, 'off')), 'locking=off next to qsd')
            ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'del')
        check(d.stop() == 0, 'blockd failed')
    print('locking=off, on, auto')


def export_release(img):
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img}), 'file')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('s')}}}), 'nbd')
        for writable, want in ((True, {100, 101, 203}), (False, {100, 203})):
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'f', 'writable': writable}), 'exp')
            check(locked(img) == want, 'export writable=%s locked %r' % (writable, locked(img)))
            ok(q.cmd('block-export-del', {'id': 'e'}), 'export-del')
            q.wait_event('BLOCK_EXPORT_DELETED')
            check(locked(img) == set(), 'block-export-del left %r' % locked(img))
        check(d.stop() == 0, 'blockd failed')
    print('block-export-del releases')


def main():
    with tempfile.TemporaryDirectory(prefix='blockd-locking.') as tmp:
        path, img = os.path.join(tmp, 'a.qcow2'), os.path.join(tmp, 'b.raw')
        tool('qemu-img', 'create', '-f', 'qcow2', path, '1M')
        tool('qemu-img', 'create', '-f', 'raw', img, '1M')
        sigkill(path)
        options(path)
        export_release(img)
    print('image lock release OK')


if __name__ == '__main__':
    main()
