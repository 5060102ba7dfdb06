#!/usr/bin/python3
"""qemu:allocation-depth against qemu-nbd -A on the same images.

A three-image qcow2 chain made by qemu-img/qemu-io (data and zero clusters
in every layer, a top larger than its backing file), a qcow2 without
backing, and a sparse raw file: the whole map (nbdinfo) must be the same,
and so must the depth of every 4 KiB block in the answers to 200 random
block-status requests, with and without REQ_ONE.  Depths seen on the
chain must include 0, 1, 2 and 3."""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, import_nbd, skip  # noqa: E402

MiB = 1 << 20
BLOCK = 4096


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def make_images(tmp):
    def p(name):
        return os.path.join(tmp, name)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('base.qcow2'), '16M')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', p('base.qcow2'), '-F', 'qcow2', p('mid.qcow2'))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', p('mid.qcow2'), '-F', 'qcow2', p('top.qcow2'), '24M')
    run('qemu-io', '-c', 'write -P 1 0 64k', '-c', 'write -P 2 2M 128k', '-c', 'write -P 5 8M 1M', p('base.qcow2'))
    run('qemu-io', '-c', 'write -P 3 1M 64k', '-c', 'write -z 2M 64k', '-c', 'write -P 6 8M 64k', p('mid.qcow2'))
    run('qemu-io', '-c', 'write -P 4 3M 64k', '-c', 'write -z 5M 64k', '-c', 'write -P 7 8320k 64k',
        '-c', 'write -P 8 20M 64k', p('top.qcow2'))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('alone.qcow2'), '8M')
    run('qemu-io', '-c', 'write -P 9 1M 64k', '-c', 'write -z 2M 64k', p('alone.qcow2'))
    with open(p('sparse.raw'), 'wb') as f:
        f.truncate(8 * MiB)
        f.seek(3 * MiB)
        f.write(b'\x11' * MiB)


class QemuNbd:
    def __init__(self, tmp, image, fmt):
        self.sock = os.path.join(tmp, 'qemu-nbd-%s.sock' % os.path.basename(image))
        self.proc = subprocess.Popen(['qemu-nbd', '-A', '-r', '-t', '-k', self.sock, '-f', fmt, image],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            check(self.proc.poll() is None and time.time() < deadline, 'qemu-nbd did not start')
            time.sleep(0.02)

    def uri(self):
        return 'nbd+unix:///?socket=' + self.sock

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def blockd_args(image, fmt):
    args = ['--blockdev', 'driver=file,node-name=f,filename=%s,read-only=on' % image]
    node = 'f'
    if fmt == 'qcow2':
        args += ['--blockdev', 'driver=qcow2,node-name=q,file=f,read-only=on']
        node = 'q'
    return args + ['--export', 'type=nbd,id=e,node-name=%s,name=,allocation-depth=on' % node]


def nbdinfo_map(uri):
    return subprocess.run(['nbdinfo', '--map=qemu:allocation-depth', uri], check=True,
                          capture_output=True, text=True).stdout


def connect(uri):
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context('qemu:allocation-depth')
    h.connect_uri(uri)
    check(h.can_meta_context('qemu:allocation-depth'), 'qemu:allocation-depth not negotiated at %s' % uri)
    return h


def depths(h, offset, length, flags):
    """Depth of each 4 KiB block the reply to one request covers."""
    got = {}

    def cb(meta, off, entries, err):
        pos = off
        for i in range(0, len(entries), 2):
            for b in range(pos // BLOCK, (pos + entries[i]) // BLOCK):
                got[b] = entries[i + 1]
            pos += entries[i]
        return 0
    h.block_status(length, offset, cb, flags)
    return got


def compare(tmp, image, fmt, rng):
    q = QemuNbd(tmp, image, fmt)
    try:
        with Blockd(*blockd_args(image, fmt)) as d:
            want, got = nbdinfo_map(q.uri()), nbdinfo_map(d.uri())
            check(want == got, '%s: maps differ\nqemu-nbd:\n%s\nblockd:\n%s' % (image, want, got))
            nbd = import_nbd()
            hq, hb = connect(q.uri()), connect(d.uri())
            size = hq.get_size()
            check(hb.get_size() == size, 'sizes differ')
            seen = set()
            for i in range(200):
                offset = rng.randrange(0, size // BLOCK) * BLOCK
                length = rng.randrange(1, (size - offset) // BLOCK + 1) * BLOCK
                flags = nbd.CMD_FLAG_REQ_ONE if i % 2 else 0
                a, b = depths(hq, offset, length, flags), depths(hb, offset, length, flags)
                check(offset // BLOCK in b, 'blockd answered nothing at %d' % offset)
                common = set(a) & set(b)
                diff = [blk * BLOCK for blk in common if a[blk] != b[blk]]
                check(not diff, '%s: depth differs at %r (request %d+%d flags %d)'
                      % (image, diff[:4], offset, length, flags))
                seen.update(b.values())
            hq.shutdown()
            hb.shutdown()
            return want, seen
    finally:
        q.stop()


def main():
    for tool in ('qemu-nbd', 'qemu-img', 'qemu-io', 'nbdinfo'):
        if not shutil.which(tool):
            skip('%s is not installed' % tool)
    rng = random.Random(7)
    tmp = tempfile.mkdtemp(prefix='alloc-depth.')
    try:
        make_images(tmp)
        chain_map, seen = compare(tmp, os.path.join(tmp, 'top.qcow2'), 'qcow2', rng)
        check(seen == {0, 1, 2, 3}, 'chain: depths seen %r, want 0-3' % sorted(seen))
        _, seen = compare(tmp, os.path.join(tmp, 'alone.qcow2'), 'qcow2', rng)
        check(seen == {0, 1}, 'qcow2 without backing: depths %r' % sorted(seen))
        _, seen = compare(tmp, os.path.join(tmp, 'sparse.raw'), 'raw', rng)
        check(seen == {1}, 'raw file: depths %r (holes are allocated in the file, as in QEMU)' % sorted(seen))
        print('allocation depth matches qemu-nbd -A on a 3-image chain, a lone qcow2 and a sparse file:')
        print(chain_map, end='')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('PASS')


main()
