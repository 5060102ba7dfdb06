#!/usr/bin/python3
"""qcow2 images whose header names the backing file by options, not by a
path (block/backing-name.c), open in blockd with no backing option and
read as qemu-img reads them.  The base is a raw image served by qemu-nbd:

* an NBD URI (nbd+unix:///?socket=...), format raw;
* a nested json: name ({"driver": "nbd", "server": {...}}), format nbd
  (what QEMU records for a base it names by options);
* the same name with format raw: the raw node gets the named node as its
  file (QEMU refuses this one: "A block device must be specified for
  \"file\"", so only the base is the oracle there);
* a flattened json: name with the format inside ({"driver": "raw",
  "file.driver": "nbd", "file.server.path": ...}), no recorded format.
A write into the overlay lands there, not in the base.  Names blockd
cannot open fail blockdev-add with an error that names them: bad JSON, a
protocol name without a recorded format, an rbd: option it does not take."""
import os
import random
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, ok, read_all  # noqa: E402

SIZE = 4 << 20


def run(*args):
    subprocess.run(args, check=True, capture_output=True)


def qemu_img_read(path, tmp):
    out = os.path.join(tmp, 'qemu-img.raw')
    run('qemu-img', 'convert', '-U', '-O', 'raw', path, out)
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def drop_backing_format(path):
    """Turns the header's backing format extension into an unknown one
    (which qemu-img ignores too): an old image with no recorded format."""
    with open(path, 'r+b') as f:
        head = bytearray(f.read(65536))
        pos = struct.unpack('>I', head[100:104])[0] if struct.unpack('>I', head[4:8])[0] >= 3 else 72
        while pos + 8 <= len(head):
            magic, length = struct.unpack('>II', head[pos:pos + 8])
            if magic == 0:
                break
            if magic == 0xE2792ACA:
                f.seek(pos)
                f.write(struct.pack('>I', 0x0B1ACC0D))
                return
            pos += 8 + (length + 7) // 8 * 8
    check(False, '%s has no backing format extension' % path)


def overlay(d, name, backing, fmt):
    """A new qcow2 image naming `backing` (with format `fmt`, or none) in its header."""
    path = d.path(name + '.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', path, str(SIZE))
    run('qemu-img', 'rebase', '-u', '-b', backing, '-F', fmt or 'raw', path)
    if not fmt:
        drop_backing_format(path)
        info = subprocess.run(['qemu-img', 'info', '-U', path], capture_output=True, text=True).stdout
        check('backing file format' not in info, 'the backing format is still recorded: %s' % info)
    return path


def open_alone(q, node, path):
    return q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': node,
                                  'file': {'driver': 'file', 'filename': path}})


def main():
    rng = random.Random(5)
    base_data = rng.randbytes(SIZE)
    with Daemon(blockd_cmd()) as d:
        base = d.path('base.raw')
        with open(base, 'wb') as f:
            f.write(base_data)
        base_sock = d.path('base.sock')
        qnbd = subprocess.Popen(['qemu-nbd', '-r', '-t', '-f', 'raw', '-k', base_sock, base],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):  # until qemu-nbd answers
                if subprocess.run(['nbdinfo', '--size', 'nbd+unix:///?socket=' + base_sock],
                                  capture_output=True).returncode == 0:
                    break
                time.sleep(0.05)
            q = d.qmp()
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
            server = '"server": {"type": "unix", "path": "%s"}' % base_sock
            nested = 'json:{"driver": "nbd", %s}' % server
            cases = [  # name, backing file name, format, whether qemu-img opens it too
                ('uri', 'nbd+unix:///?socket=' + base_sock, 'raw', True),
                ('nested', nested, 'nbd', True),
                ('nested-under-raw', nested, 'raw', False),
                ('flat', 'json:{"driver": "raw", "file.driver": "nbd", "file.server.type": "unix", '
                         '"file.server.path": "%s"}' % base_sock, 'raw', True),
            ]
            for name, backing, fmt, qemu_opens in cases:
                path = overlay(d, name, backing, fmt)
                ok(open_alone(q, name, path), 'blockdev-add of the %s overlay' % name)
                nodes = {n['node-name']: n for n in q.cmd('query-named-block-nodes')['return']}
                check(nodes[name].get('backing_file') == backing,
                      '%s: backing_file %r' % (name, nodes[name].get('backing_file')))
                check(any(n['drv'] == 'nbd' for n in nodes.values()), '%s: no nbd node opened' % name)
                ok(q.cmd('block-export-add', {'type': 'nbd', 'id': name, 'node-name': name, 'name': name,
                                              'writable': True}), 'export ' + name)
                got = read_all(sock, name)
                check(got == base_data, '%s: blockd reads other data than the base through the overlay' % name)
                h = connect(sock, name)
                h.pwrite(b'\xa5' * 65536, 65536)
                h.flush()
                h.shutdown()
                ok(q.cmd('block-export-del', {'id': name}), 'export-del ' + name)
                ok(q.cmd('blockdev-del', {'node-name': name}), 'blockdev-del ' + name)
                want = bytearray(base_data)
                want[65536:131072] = b'\xa5' * 65536
                check(not qemu_opens or qemu_img_read(path, os.path.dirname(d.path('x'))) == bytes(want),
                      '%s: qemu-img reads other data than base + the write' % name)
                if not qemu_opens:  # blockd reads the write back itself
                    ok(open_alone(q, name, path), 'blockdev-add of the %s overlay again' % name)
                    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': name, 'node-name': name, 'name': name}),
                       'export ' + name)
                    check(read_all(sock, name) == bytes(want), '%s: the write is not read back' % name)
                    ok(q.cmd('block-export-del', {'id': name}), 'export-del ' + name)
                    ok(q.cmd('blockdev-del', {'node-name': name}), 'blockdev-del ' + name)
                print('%s backing name %s: opens alone, reads the base, writes land in the overlay' % (name, backing))
            with open(base, 'rb') as f:
                check(f.read() == base_data, 'the base changed')

            bad = [
                ('json:{"driver": "nbd", ' + server, 'raw', 'Could not parse the JSON options'),
                ('json:{"driver": "nbd", %s}' % server, None, 'has no recorded format'),
                ('rbd:pool/image:mon_host=127.0.0.1', 'raw', "option 'mon_host' is not supported"),
            ]
            for i, (backing, fmt, text) in enumerate(bad):
                path = overlay(d, 'bad%d' % i, backing, fmt)
                r = open_alone(q, 'bad%d' % i, path)
                msg = r.get('error', {}).get('desc', '')
                check(r.get('error', {}).get('class') == 'GenericError' and 'Could not open backing file' in msg
                      and text in msg, 'backing name %r: expected an error with %r, got %r' % (backing, text, r))
                print('refused: %s' % msg)
            check(not any(n['node-name'].startswith('bad') for n in q.cmd('query-named-block-nodes')['return']),
                  'a refused image left nodes behind')
        finally:
            qnbd.terminate()
            qnbd.wait()
    print('PASS')


main()
