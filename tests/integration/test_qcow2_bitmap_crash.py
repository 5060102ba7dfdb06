#!/usr/bin/python3
"""Crash safety of persistent bitmaps in a qcow2 image (docs/bitmaps.md,
"Persistence (qcow2 images)"), in the manner of test_data_safety.py:

blockd is killed with SIGKILL ROUNDS times (24 by default) under a write
load on a qcow2 node with persistent bitmaps; in every other round a second
QMP client meanwhile adds and removes persistent bitmaps, toggles one,
clears one and merges into one, so kills also land inside bitmap stores.
After each kill:

  - `qemu-img check` finds nothing but leaked clusters;
  - blockd reopens the image and bitmap 'c' (never cleared) is consistent
    and recording and covers every write acknowledged since it was added;
    'k' covers every write issued after its last clear returned;
  - every block written holds what its last acknowledged write wrote (or
    what a write in flight at the kill wrote).

Then an incremental backup pulled over NBD with bitmap 'c' (the dirty
extents copied onto the full copy taken when 'c' was added) restores the
image byte for byte.  Finally, what QEMU does with the image of a killed
blockd: `qemu-img info` shows the bitmaps in use, `qemu-img check` finds
leaks only, qemu-storage-daemon loads them as inconsistent (read-only it
leaves blockd's crash-safe mark alone; read-write it clears autoclear bit
63, after which blockd too reports them inconsistent, and `remove` works).

    test_qcow2_bitmap_crash.py [ROUNDS]"""
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, blockd_cmd, check, connect, dirty_extents, import_nbd, ok,  # noqa: E402
                        qsd_cmd, skip)

MiB = 1 << 20
SIZE = 256 * MiB
BLOCK = 4096
NWRITERS = 4
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 24


def qemu_img(*args, ok_codes=(0,)):
    r = subprocess.run(['qemu-img'] + list(args), capture_output=True, text=True, timeout=120)
    check(r.returncode in ok_codes, 'qemu-img %s: exit %d\n%s%s' % (' '.join(args), r.returncode, r.stdout[:2000],
                                                                   r.stderr[:2000]))
    return r.stdout


def check_leaks_only(img, what):
    out = qemu_img('check', img, ok_codes=(0, 3))
    check('ERROR' not in out and 'corrupt' not in out, '%s: qemu-img check:\n%s' % (what, out[:2000]))
    return out


def image_bitmaps(img):
    info = json.loads(qemu_img('info', '-U', '--output=json', img))
    return {b['name']: sorted(b['flags']) for b in info.get('format-specific', {}).get('data', {}).get('bitmaps', [])}


def start(img, cmd=None, read_only=False):
    d = Daemon(cmd or blockd_cmd(), monitors=2)
    q = d.qmp()
    args = {'driver': 'qcow2', 'node-name': 'q0', 'file': {'driver': 'file', 'filename': img}}
    if read_only:
        args['read-only'] = True
    ok(q.cmd('blockdev-add', args), 'blockdev-add')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd-server-start')
    return d, q


def bitmaps(q):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == 'q0':
            return {b['name']: b for b in n.get('dirty-bitmaps', [])}
    check(False, 'node q0 missing')


def export_disk(q):
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'q0', 'name': 'disk',
                                  'writable': True}), 'block-export-add')


def pattern(tag):
    return (tag * (BLOCK // len(tag)))


class Writers:
    """NWRITERS threads, each writing whole blocks of its own part of the
    first half of the disk (so the last write of each block is known): `acked` gets (issue
    time, offset, length, block content) of every acknowledged write,
    `inflight[i]` the write thread i has issued and not seen acknowledged."""

    def __init__(self, sock, rnd):
        self.sock, self.rnd = sock, rnd
        self.halt = threading.Event()
        self.acked = []
        self.inflight = [None] * NWRITERS
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(NWRITERS)]

    def run(self, i):
        rng = random.Random(self.rnd * 100 + i)
        region = SIZE // 2 // NWRITERS  # the second half stays as the full copy has it
        try:
            h = connect(self.sock, 'disk')
            seq = 0
            while not self.halt.is_set():
                n = rng.choice((1, 1, 1, 16, 48)) * BLOCK
                off = i * region + rng.randrange(0, (region - n) // BLOCK) * BLOCK
                seq += 1
                zero = rng.random() < 0.1
                block = bytes(BLOCK) if zero else pattern(struct.pack('<IIQ', self.rnd, i, seq))
                self.inflight[i] = (off, n, block)
                issued = time.monotonic()
                if zero:
                    h.zero(n, off)
                else:
                    h.pwrite(block * (n // BLOCK), off)
                self.acked.append((issued, off, n, block))
                self.inflight[i] = None
        except Exception:
            pass  # the daemon was killed

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.halt.set()
        for t in self.threads:
            t.join(30)


def churn(q, halt, clears, rng, errors, rnd):
    """Bitmap changes on 'k', 'other' and temporary bitmaps until halted;
    a failure before the kill goes to `errors`."""
    n = 0
    try:
        while not halt.is_set():
            op = rng.choice(('toggle', 'addrm', 'clear', 'merge'))
            if op == 'toggle':
                ok(q.cmd('block-dirty-bitmap-disable', {'node': 'q0', 'name': 'other'}), 'disable')
                ok(q.cmd('block-dirty-bitmap-enable', {'node': 'q0', 'name': 'other'}), 'enable')
            elif op == 'addrm':
                name = 'tmp%d.%d' % (rnd, n)
                ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': name, 'persistent': True,
                                                    'granularity': rng.choice((4096, 65536))}), 'add')
                halt.wait(rng.uniform(0, 0.02))
                ok(q.cmd('block-dirty-bitmap-remove', {'node': 'q0', 'name': name}), 'remove')
            elif op == 'clear':
                # Until it returns, a clear may or may not have happened:
                # no write can be required in 'k' then.
                clears.append(float('inf'))
                ok(q.cmd('block-dirty-bitmap-clear', {'node': 'q0', 'name': 'k'}), 'clear k')
                clears[-1] = time.monotonic()
            else:
                ok(q.cmd('block-dirty-bitmap-merge', {'node': 'q0', 'target': 'other', 'bitmaps': ['c']}), 'merge')
            n += 1
            halt.wait(rng.uniform(0, 0.05))
    except (EOFError, OSError) as e:
        if not halt.is_set():
            errors.append('QMP connection lost before the kill: %r' % e)
    except SystemExit:
        if not halt.is_set():
            errors.append('a bitmap command failed (see above)')


def covered(runs, off, n):
    pos = off
    for s, length in runs:
        if s <= pos < s + length:
            pos = s + length
            if pos >= off + n:
                return True
    return pos >= off + n


def read_image(sock, path=None):
    """The whole disk over NBD: its SHA-256 (and a copy in `path`)."""
    h = connect(sock, 'disk')
    sha = hashlib.sha256()
    f = open(path, 'wb') if path else None
    for pos in range(0, SIZE, 16 * MiB):
        chunk = h.pread(16 * MiB, pos)
        sha.update(chunk)
        if f:
            f.write(chunk)
    if f:
        f.close()
    h.shutdown()
    return sha.hexdigest()


def incremental_backup(q, d, base, tmp):
    """Restores the image from the full copy `base` plus the extents bitmap
    'c' calls dirty (pulled over NBD as a backup tool does) and checks that
    the result is the image, byte for byte."""
    sock = d.path('nbd.sock')
    full = os.path.join(tmp, 'restore.raw')
    shutil.copyfile(base, full)
    ok(q.cmd('block-dirty-bitmap-disable', {'node': 'q0', 'name': 'c'}), 'disable c')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'inc', 'node-name': 'q0', 'name': 'inc',
                                  'bitmaps': ['c']}), 'export c')
    runs = []
    nbd = import_nbd()
    h = nbd.NBD()
    h.set_export_name('inc')
    h.add_meta_context('qemu:dirty-bitmap:c')
    h.connect_unix(sock)
    pos = 0

    def cb(ctx, offset, entries, err):
        nonlocal pos
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                runs.append((pos, entries[i]))
            pos += entries[i]
        return 0

    while pos < SIZE:
        h.block_status(min(SIZE - pos, 1 << 30), pos, cb)
    copied = 0
    with open(full, 'r+b') as f:
        for off, n in runs:
            for p in range(off, off + n, 16 * MiB):
                m = min(16 * MiB, off + n - p)
                f.seek(p)
                f.write(h.pread(m, p))
                copied += m
    h.shutdown()
    with open(full, 'rb') as f:
        restored = hashlib.sha256(f.read()).hexdigest()
    check(restored == read_image(sock), 'the incremental backup does not restore the image')
    ok(q.cmd('block-export-del', {'id': 'inc'}), 'export-del')
    deadline = time.time() + 10
    while any(e['id'] == 'inc' for e in q.cmd('query-block-exports')['return']):
        check(time.time() < deadline, 'export inc was not deleted')
        time.sleep(0.02)
    ok(q.cmd('block-dirty-bitmap-enable', {'node': 'q0', 'name': 'c'}), 'enable c')
    print('incremental backup from bitmap c: %d MiB of %d copied, restore identical' % (copied >> 20, SIZE >> 20))
    d.proc.kill()
    d.proc.wait()


def main():
    for tool in ('qemu-img', 'qemu-storage-daemon'):
        if not shutil.which(tool):
            skip('%s is not installed' % tool)
    import_nbd()
    tmp = tempfile.mkdtemp(prefix='blockd-qcow2-crash.', dir=os.environ.get('TEST_TMPDIR', '/var/tmp'))
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


def run(tmp):
    img = os.path.join(tmp, 'disk.qcow2')
    base = os.path.join(tmp, 'full.raw')
    qemu_img('create', '-q', '-f', 'qcow2', img, str(SIZE))
    # Some data first, then the bitmaps and the full copy they are relative to.
    d, q = start(img)
    with d:
        export_disk(q)
        h = connect(d.path('nbd.sock'), 'disk')
        for i in range(0, 32 * MiB, MiB):
            h.pwrite(bytes([i // MiB + 1]) * MiB, i * 5)
        h.flush()
        h.shutdown()
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'c', 'persistent': True, 'granularity': 4096}),
           'add c')
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'c64', 'persistent': True}), 'add c64')
        for name in ('k', 'other'):
            ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': name, 'persistent': True}), 'add ' + name)
        read_image(d.path('nbd.sock'), base)
        q.cmd('quit')
        check(d.wait() == 0, 'clean stop after setup')

    expected = {}     # block index -> the contents it may hold
    to_check = set()  # blocks written in the last round
    acked = []        # every acknowledged write since 'c' was added: (issued, off, n, content)
    clears = [0.0]    # when 'k' was last cleared (writes issued after it must be in 'k')
    total = 0
    rng = random.Random(1)
    for rnd in range(ROUNDS + 1):
        d, q = start(img)
        with d:
            sock = d.path('nbd.sock')
            if clears[-1] == float('inf'):
                clears[-1] = time.monotonic()  # a clear killed midway: done or not, before this
            b = bitmaps(q)
            for name in ('c', 'c64', 'k'):
                check(name in b and 'inconsistent' not in b[name] and b[name]['recording'],
                      'round %d: bitmap %s after SIGKILL: %r' % (rnd, name, b.get(name)))
            # A temporary bitmap whose add returned before the kill is stored.
            for name in b:
                if name.startswith('tmp'):
                    check('inconsistent' not in b[name], 'round %d: %s %r' % (rnd, name, b[name]))
                    ok(q.cmd('block-dirty-bitmap-remove', {'node': 'q0', 'name': name}), 'remove ' + name)
            c = dirty_extents(q, d, 'q0', 'c', SIZE)
            c64 = dirty_extents(q, d, 'q0', 'c64', SIZE)
            k = dirty_extents(q, d, 'q0', 'k', SIZE)
            lost = [w[1:3] for w in acked if not covered(c, w[1], w[2])]
            check(not lost, 'round %d: %d of %d acknowledged writes missing from bitmap c, e.g. %r'
                  % (rnd, len(lost), len(acked), lost[:3]))
            lost = [w[1:3] for w in acked if not covered(c64, w[1], w[2])]
            check(not lost, 'round %d: %d acknowledged writes missing from bitmap c64' % (rnd, len(lost)))
            late = [w for w in acked if w[0] > clears[-1]]
            lost = [w[1:3] for w in late if not covered(k, w[1], w[2])]
            check(not lost, 'round %d: %d of %d writes issued after the last clear missing from k, e.g. %r'
                  % (rnd, len(lost), len(late), lost[:3]))
            # The data of every block written in the last round.
            export_disk(q)
            h = connect(sock, 'disk')
            for blk in sorted(to_check):
                got = bytes(h.pread(BLOCK, blk * BLOCK))
                check(got in expected[blk], 'round %d: block at %d holds %r..., none of the %d writes that may be there'
                      % (rnd, blk * BLOCK, got[:16], len(expected[blk])))
                expected[blk] = {got}
            h.shutdown()
            to_check = set()
            if rnd == ROUNDS:
                incremental_backup(q, d, base, tmp)
                break
            # Load (and in odd rounds bitmap churn) until a kill at a random point.
            w = Writers(sock, rnd + 1).start()
            halt = threading.Event()
            t = None
            errors = []
            if rnd % 2:
                t = threading.Thread(target=churn, args=(d.qmp(1), halt, clears, rng, errors, rnd), daemon=True)
                t.start()
            time.sleep(rng.uniform(0.3, 1.5))
            halt.set()
            d.proc.kill()
            d.proc.wait()
            w.stop()
            if t:
                t.join(10)
            check(not errors, 'round %d: %s' % (rnd, errors))
        check(len(w.acked) > 10, 'round %d: too few writes before the kill: %d' % (rnd, len(w.acked)))
        total += len(w.acked)
        for issued, off, n, block in sorted(w.acked, key=lambda x: x[0]):
            for blk in range(off // BLOCK, (off + n) // BLOCK):
                expected[blk] = {block}
                to_check.add(blk)
        with open(base, 'rb') as f:
            for inflight in w.inflight:
                if not inflight:
                    continue
                off, n, block = inflight
                for blk in range(off // BLOCK, (off + n) // BLOCK):
                    if blk not in expected:
                        f.seek(blk * BLOCK)
                        expected[blk] = {f.read(BLOCK)}
                    expected[blk].add(block)
                    to_check.add(blk)
        acked += w.acked
        check_leaks_only(img, 'round %d' % rnd)
    print('%d kills under load (%d with bitmap churn): %d acknowledged writes, all in the bitmaps and on disk'
          % (ROUNDS, ROUNDS // 2, total))

    # What QEMU makes of a killed blockd's image.
    flags = image_bitmaps(img)
    check(flags.get('c') == ['auto', 'in-use'] and flags.get('k') == ['auto', 'in-use'],
          'qemu-img info after a blockd crash: %r' % flags)
    check_leaks_only(img, 'after the last kill')
    d, q = start(img, qsd_cmd(), read_only=True)
    with d:
        b = bitmaps(q)
        check(b['c'].get('inconsistent') is True, 'QSD read-only: c %r' % b['c'])
        q.cmd('quit')
        d.wait()
    d, q = start(img)
    with d:
        check('inconsistent' not in bitmaps(q)['c'], 'a read-only QSD took blockd\'s mark away')
        d.proc.kill()
        d.proc.wait()
    d, q = start(img, qsd_cmd())
    with d:
        b = bitmaps(q)
        check(b['c'].get('inconsistent') is True and b['c']['count'] == 0, 'QSD read-write: c %r' % b['c'])
        q.cmd('quit')
        d.wait()
    check(image_bitmaps(img).get('c') == ['auto', 'in-use'], 'after QSD: %r' % image_bitmaps(img))
    d, q = start(img)
    with d:
        b = bitmaps(q)
        check(b['c'].get('inconsistent') is True and not b['c']['recording'],
              'blockd after QSD wrote the image: c %r' % b['c'])
        r = q.cmd('block-dirty-bitmap-clear', {'node': 'q0', 'name': 'c'})
        check(r.get('error', {}).get('desc') == "Bitmap 'c' is inconsistent and cannot be used", 'clear: %r' % r)
        for name in list(b):
            ok(q.cmd('block-dirty-bitmap-remove', {'node': 'q0', 'name': name}), 'remove ' + name)
        q.cmd('quit')
        check(d.wait() == 0, 'clean stop')
    check(image_bitmaps(img) == {}, 'bitmaps left: %r' % image_bitmaps(img))
    check_leaks_only(img, 'at the end')
    print('after a blockd crash: qemu-img info shows in-use, check finds leaks only, QSD loads the bitmaps '
          'inconsistent; after QSD wrote the image blockd does too')


main()
