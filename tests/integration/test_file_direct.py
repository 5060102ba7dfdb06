#!/usr/bin/python3
"""cache.direct=on on file nodes (O_DIRECT), as QEMU accepts it.

- The image is open with O_DIRECT (/proc/PID/fdinfo), the export advertises
  the alignment as its minimum block size, and aligned reads and writes
  bypass the page cache (fincore shows no page of the image cached after a
  full read through NBD; the same read without cache.direct fills it).
- Aligned writes from unaligned memory (concurrent clients), the file's
  unaligned tail, and a qcow2 image on a direct file (small metadata
  writes) all land: the image equals a model of every acknowledged write,
  and qemu-img reads the qcow2 data and finds the image clean.  An
  unaligned NBD write is refused with EINVAL, as the NBD spec allows.
- QEMU's rules and texts: aio=native needs cache.direct=on, cache.no-flush
  is refused."""
import os
import random
import re
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, ok, skip  # noqa: E402

O_DIRECT = 0o40000


def direct_fds(pid, path):
    """Access flags of the daemon's descriptors on `path`."""
    flags = []
    fd_dir = '/proc/%d/fd' % pid
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)) != path:
                continue
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                flags.append(int(re.search(r'flags:\s+([0-7]+)', f.read()).group(1), 8))
        except OSError:
            continue
    return flags


def cached_pages(path):
    out = subprocess.run(['fincore', '--bytes', '--noheadings', '--output', 'RES', path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def drop_cache(path):
    fd = os.open(path, os.O_RDONLY)
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def loose(h):
    """A client that ignores the advertised minimum block size."""
    nbd = sys.modules['nbd']
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
    return h


def main():
    if not shutil.which('fincore'):
        skip('fincore (util-linux) is not installed')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        # Not on tmpfs: the test directory is under /tmp (a disk here).
        img = d.path('direct.img')
        size = (8 << 20) + 100  # not a multiple of any alignment
        rng = random.Random(7)
        model = bytearray(rng.randbytes(size))
        with open(img, 'wb') as f:
            f.write(model)
        probe = os.open(img, os.O_RDONLY | O_DIRECT)
        os.close(probe)  # O_DIRECT works on this file system (else open fails)

        e = q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'x', 'filename': img, 'aio': 'native'})
        check(e.get('error', {}).get('desc') ==
              'aio=native was specified, but it requires cache.direct=on, which was not specified.',
              'aio=native without cache.direct: %r' % e)
        e = q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'x', 'filename': img,
                                   'cache': {'direct': True, 'no-flush': True}})
        check('error' in e and 'no-flush' in e['error']['desc'], 'cache.no-flush=on: %r' % e)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'd', 'filename': img,
                                  'cache': {'direct': True}, 'aio': 'native'}), 'blockdev-add direct')
        sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'd', 'writable': True}),
           'export')
        flags = direct_fds(d.proc.pid, img)
        check(any(f & O_DIRECT for f in flags), 'no O_DIRECT descriptor on the image: %r' % flags)

        h = connect(sock, 'd')
        align = h.get_block_size(sys.modules['nbd'].SIZE_MINIMUM)
        check(align in (512, 1024, 2048, 4096), 'minimum block size %d' % align)

        # Aligned reads bypass the page cache.
        drop_cache(img)
        whole = b''.join(h.pread(min(1 << 20, (size // align) * align - off), off)
                         for off in range(0, (size // align) * align, 1 << 20))
        check(whole == model[:len(whole)], 'aligned read differs')
        cached = cached_pages(img)
        check(cached < (256 << 10), '%d bytes of the image cached after direct reads' % cached)
        h.shutdown()

        # Writes: aligned ones from unaligned memory (concurrent clients on
        # their own blocks), the file's unaligned tail (allowed: it ends at
        # the end), and an unaligned request refused as the NBD spec says.
        errors = []

        def writer(seed):
            r = random.Random(seed)
            c = connect(sock, 'd')
            try:
                for _ in range(200):
                    blk = r.randrange(size // align)
                    if blk % 3 != seed:
                        continue
                    off = blk * align
                    data = r.randbytes(align * r.choice((1, 2)) if off + 2 * align <= size else align)
                    c.pwrite(data, off)
                    model[off:off + len(data)] = data
                c.flush()
            except Exception as ex:  # reported below
                errors.append(ex)
            finally:
                c.shutdown()

        threads = [threading.Thread(target=writer, args=(s,)) for s in (0, 1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check(not errors, 'a write failed: %r' % errors)
        c = loose(connect(sock, 'd'))
        tail = size - size % align
        data = rng.randbytes(size - tail)
        c.pwrite(data, tail)
        model[tail:] = data
        try:
            c.pwrite(b'z' * 1000, 100)
            check(False, 'an unaligned write was accepted')
        except sys.modules['nbd'].Error as ex:
            check(ex.errnum == 22, 'unaligned write: %r' % ex)
        got = b''.join(c.pread(min(1 << 20, size - off), off) for off in range(0, size, 1 << 20))
        c.shutdown()
        check(got == model, 'NBD reads differ from the acknowledged writes')
        with open(img, 'rb') as f:
            check(f.read() == model, 'the image file differs from the acknowledged writes')

        # A format on a direct file writes metadata in small unaligned
        # pieces (the buffered descriptor's job): qcow2 data round-trips
        # and qemu-img check finds the image clean.
        q2 = d.path('direct.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', q2, '16M'], check=True)
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'q', 'file': {
            'driver': 'file', 'filename': q2, 'cache': {'direct': True}}}), 'qcow2 over a direct file')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'eq', 'node-name': 'q', 'writable': True}),
           'export qcow2')
        c = connect(sock, 'q')
        qdata = rng.randbytes(3 << 20)
        c.pwrite(qdata, 5 << 20)
        c.flush()
        check(c.pread(3 << 20, 5 << 20) == qdata, 'qcow2 over a direct file reads back wrong')
        c.shutdown()
        ok(q.cmd('block-export-del', {'id': 'eq'}), 'export-del qcow2')
        ok(q.cmd('blockdev-del', {'node-name': 'q'}), 'blockdev-del qcow2')
        r = subprocess.run(['qemu-img', 'check', '-q', q2], capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img check: %s%s' % (r.stdout, r.stderr))
        out = subprocess.run(['qemu-img', 'convert', '-O', 'raw', q2, d.path('q.raw')], check=True)
        with open(d.path('q.raw'), 'rb') as f:
            f.seek(5 << 20)
            check(f.read(3 << 20) == qdata, 'qemu-img reads other data from the qcow2 image')

        # Without cache.direct the same read fills the page cache (the
        # check above would catch a direct mode that is not direct).
        ok(q.cmd('block-export-del', {'id': 'e'}), 'export-del')
        ok(q.cmd('blockdev-del', {'node-name': 'd'}), 'blockdev-del')
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'b', 'filename': img}), 'add buffered')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'b'}), 'export buffered')
        drop_cache(img)
        c = connect(sock, 'b')
        for off in range(0, 4 << 20, 1 << 20):
            c.pread(1 << 20, off)
        c.shutdown()
        check(cached_pages(img) >= (2 << 20), 'buffered reads left the page cache empty')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('cache.direct OK (alignment %d)' % align)


main()
