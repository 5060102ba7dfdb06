#!/usr/bin/python3
"""Crash consistency of qcow2 images with internal snapshots: blockd is
killed with SIGKILL at ROUNDS different moments while a client makes
allocating writes (over clusters and L2 tables that snapshots share, so
they are copied on write), flushes, and takes and deletes snapshots through
QMP.  After each kill:

- `qemu-img check` reports the image clean or leaking clusters only
  (exit status 0 or 3), never corrupt;
- every write that a completed flush covered is there: each byte reads as
  it was at the last flush or as one of the writes made after it;
- every snapshot whose creation returned (and whose deletion was not
  asked for) is listed, with the data the image had when it was taken;
  every snapshot whose deletion returned is gone.

The same image goes on to the next round (blockd opens what the crash
left).  Kill moments are spread over 20..600 ms after the client starts,
with a fixed seed so a failure can be replayed (`SEED=n`)."""
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, fail  # noqa: E402

SIZE = 4 << 20
CS = 65536
ROUNDS = int(os.environ.get('ROUNDS', '24'))


def run(*args):
    return subprocess.run(args, capture_output=True, text=True)


def read_image(path, snapshot=None):
    out = path + '.raw'
    args = ['qemu-img', 'convert', '-U', '-O', 'raw'] + (['-l', 'snapshot.name=' + snapshot] if snapshot else [])
    r = run(*args, path, out)
    check(r.returncode == 0, 'qemu-img convert %s: %s' % (snapshot, r.stderr))
    with open(out, 'rb') as f:
        data = f.read()
    os.unlink(out)
    return data


def tags(path):
    r = run('qemu-img', 'snapshot', '-l', '-U', path)
    check(r.returncode == 0, 'qemu-img snapshot -l: %s' % r.stderr)
    return [line.split()[1] for line in r.stdout.splitlines()[2:]]


def check_flushed(data, flushed, later, rnd):
    """Each byte as at the last flush, or as one of the writes after it."""
    for blk in range(0, SIZE, 4096):
        a, b = data[blk:blk + 4096], flushed[blk:blk + 4096]
        if a == b:
            continue
        for i in range(4096):
            p = blk + i
            if a[i] == b[i]:
                continue
            if not any(off <= p < off + ln and val == a[i] for off, ln, val in later):
                fail('round %d: byte %d reads %d, flushed %d, no later write of it' % (rnd, p, a[i], b[i]))


class State:
    def __init__(self):
        self.model = bytearray(SIZE)
        self.flushed = bytes(SIZE)
        self.later = []          # (offset, length, value) written since the last flush
        self.snaps = {}          # name -> data, creation returned
        self.maybe = set()       # creation or deletion in flight at the kill
        self.deleted = set()     # deletion returned
        self.count = 0


def client(d, st, rng, stop):
    """Writes, flushes, snapshots until the daemon dies."""
    try:
        q = d.qmp()
        h = connect(d.path('nbd.sock'), 'q')
        while not stop.is_set():
            for _ in range(rng.randrange(1, 6)):
                if rng.random() < 0.5:
                    off, ln = rng.randrange(SIZE // CS) * CS, CS * rng.randrange(1, 3)
                else:
                    off, ln = rng.randrange(SIZE - 1), rng.randrange(1, 2 * CS)
                ln = min(ln, SIZE - off)
                val = rng.randrange(1, 256)
                st.later.append((off, ln, val))
                h.pwrite(bytes([val]) * ln, off)
                st.model[off:off + ln] = bytes([val]) * ln
            if rng.random() < 0.4:
                h.flush()
                st.flushed, st.later = bytes(st.model), []
            r = rng.random()
            if r < 0.25:
                st.count += 1
                name = 'k%d' % st.count
                st.maybe.add(name)
                res = q.cmd('blockdev-snapshot-internal-sync', {'device': 'q', 'name': name})
                check('return' in res, 'snapshot: %r' % res)
                st.snaps[name] = bytes(st.model)
                st.maybe.discard(name)
            elif r < 0.4 and len(st.snaps) > 2:
                name = sorted(st.snaps)[0]
                st.maybe.add(name)
                del st.snaps[name]
                res = q.cmd('blockdev-snapshot-delete-internal-sync', {'device': 'q', 'name': name})
                check('return' in res, 'delete: %r' % res)
                st.deleted.add(name)
                st.maybe.discard(name)
    except (OSError, EOFError, Exception):  # the daemon was killed under us
        pass


def main():
    seed = int(os.environ.get('SEED', '7'))
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix='blockd-qcrash.')
    try:
        img = os.path.join(tmp, 'crash.qcow2')
        check(run('qemu-img', 'create', '-f', 'qcow2', img, str(SIZE)).returncode == 0, 'create')
        st = State()
        # Start with data and two snapshots made by qemu-img.
        for i, pat in enumerate((0x21, 0x22)):
            off = i * 3 * CS
            run('qemu-io', '-c', 'write -P %d %d %d' % (pat, off, SIZE // 2), img)
            st.model[off:off + SIZE // 2] = bytes([pat]) * (SIZE // 2)
            check(run('qemu-img', 'snapshot', '-c', 'base%d' % i, img).returncode == 0, 'snapshot -c')
            st.snaps['base%d' % i] = bytes(st.model)
        st.flushed = bytes(st.model)
        leaks = 0
        for rnd in range(ROUNDS):
            delay = 0.02 + rng.random() * 0.58
            with Daemon(blockd_cmd(), extra=[
                    '--blockdev', 'driver=file,node-name=f,filename=' + img,
                    '--blockdev', 'driver=qcow2,node-name=q,file=f']) as d:
                q = d.qmp()
                q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}})
                q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'q', 'writable': True})
                stop = threading.Event()
                t = threading.Thread(target=client, args=(d, st, random.Random(seed * 1000 + rnd), stop))
                t.start()
                time.sleep(delay)
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
                stop.set()
                t.join(30)
                check(not t.is_alive(), 'client thread stuck')
            r = run('qemu-img', 'check', img)
            check(r.returncode in (0, 3) and 'ERROR' not in r.stdout + r.stderr,
                  'round %d (kill after %.0f ms): qemu-img check %d:\n%s%s' %
                  (rnd, delay * 1000, r.returncode, r.stdout, r.stderr))
            leaks += r.returncode == 3
            data = read_image(img)
            check_flushed(data, st.flushed, st.later, rnd)
            # What the image holds now is what the next round starts from.
            st.model = bytearray(data)
            st.flushed, st.later = bytes(data), []
            listed = set(tags(img))
            for name in st.snaps:
                check(name in listed or name in st.maybe, 'round %d: snapshot %s lost' % (rnd, name))
            for name in st.deleted:
                check(name not in listed, 'round %d: deleted snapshot %s is back' % (rnd, name))
            for name in list(st.maybe):
                if name not in listed:
                    st.snaps.pop(name, None)
                    st.deleted.add(name)
                elif name not in st.snaps:
                    st.deleted.discard(name)
                    st.snaps[name] = read_image(img, name)
            st.maybe.clear()
            for name in rng.sample(sorted(st.snaps), min(2, len(st.snaps))):
                check(read_image(img, name) == st.snaps[name], 'round %d: snapshot %s data' % (rnd, name))
            print('round %d: killed after %.0f ms, check %s, %d snapshots' %
                  (rnd, delay * 1000, 'clean' if r.returncode == 0 else 'leaks', len(listed)))
        print('%d rounds, %d with leaked clusters only; PASS' % (ROUNDS, leaks))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
