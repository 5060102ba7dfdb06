#!/usr/bin/python3
"""Read-only nodes and backing files are opened O_RDONLY (checked in
/proc/PID/fdinfo, since the tests may run as root, whom mode 0444 does
not stop), so read-only image files (chmod 0444) can be served.

* A read-only file node, and the implicit file child of a read-only raw
  node (it inherits read-only, as in QEMU), serve a 0444 file.
* A qcow2 overlay's backing file, named in the image or given as nested
  options, is opened read-only (the overlay itself read-write); while the
  overlay is exported and written, the backing file holds only the shared
  "consistent read" lock, so qemu-img info (without -U) reads it."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import import_nbd  # noqa: E402
from lock_lib import access_modes, locked, ok, tool  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check  # noqa: E402

SIZE = 1 << 20
DATA = bytes(range(256)) * (SIZE // 256)


def export_and_read(d, q, node):
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': node, 'node-name': node}), 'export ' + node)
    h = import_nbd().NBD()
    h.set_export_name(node)
    h.connect_unix(d.path('nbd.sock'))
    data = h.pread(SIZE, 0)
    h.shutdown()
    return data


def read_only_files(base):
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': base, 'read-only': True}), 'file')
        ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'r', 'read-only': True,
                                  'file': {'driver': 'file', 'filename': base}}), 'raw')
        check(access_modes(d.proc.pid, base) == {'r'}, 'opened %r' % access_modes(d.proc.pid, base))
        check(export_and_read(d, q, 'f') == DATA and export_and_read(d, q, 'r') == DATA, 'wrong data')
        check(d.stop() == 0, 'blockd failed')
    print('read-only nodes open O_RDONLY')


def backing(base, top, how):
    node = {'driver': 'qcow2', 'node-name': 'top', 'file': {'driver': 'file', 'filename': top}}
    if how == 'nested':
        node['backing'] = {'driver': 'raw', 'file': {'driver': 'file', 'filename': base}}
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('blockdev-add', node), 'qcow2 ' + how)
        pid = d.proc.pid
        check(access_modes(pid, base) == {'r'} and access_modes(pid, top) == {'rw'},
              '%s backing: base %r, top %r' % (how, access_modes(pid, base), access_modes(pid, top)))
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'top', 'writable': True}), 'export')
        h = import_nbd().NBD()
        h.set_export_name('top')
        h.connect_unix(d.path('nbd.sock'))
        h.pwrite(b'\xff' * 4096, 0)
        check(h.pread(8192, 0) == b'\xff' * 4096 + DATA[4096:8192], 'overlay data')
        check(locked(base) == {100}, 'backing file locks %r' % locked(base))
        rc, out = tool('qemu-img', 'info', base)
        check(rc == 0 and 'file format: raw' in out, 'qemu-img info of the backing file: %s' % out)
        h.shutdown()
        check(d.stop() == 0, 'blockd failed')
    print('backing file (%s) opens O_RDONLY, shared' % how)


def main():
    with tempfile.TemporaryDirectory(prefix='blockd-readonly.') as tmp:
        base, top = os.path.join(tmp, 'base.raw'), os.path.join(tmp, 'top.qcow2')
        with open(base, 'wb') as f:
            f.write(DATA)
        os.chmod(base, 0o444)
        read_only_files(base)
        for how in ('header', 'nested'):
            tool('qemu-img', 'create', '-f', 'qcow2', '-b', base, '-F', 'raw', top)
            backing(base, top, how)
    print('read-only opens OK')


if __name__ == '__main__':
    main()
