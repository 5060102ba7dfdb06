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
with a fixed seed so a failure can be replayed (`SEED=n`).

Then at chosen points: a fixed script (a write over shared clusters, a
snapshot, writes, a deletion, writes, snapshot-load, a write) runs once to
count blockd's writes to the image file, then again for each of up to 40
points spread over them, with kill-shim.c (LD_PRELOAD) killing blockd just
before that write: inside data writes, copies of shared tables, and the
commits of snapshot creation, deletion and revert.  Each time the image
is checked as above and holds the state before or after the step that was
cut (`POINT=n` runs one point)."""
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


# --- kills at chosen writes ---

def kill_points():
    shim = os.environ.get('KILL_SHIM')
    if not shim or not os.path.exists(shim):
        print('kill points: KILL_SHIM not built; skipped')
        return
    tmp = tempfile.mkdtemp(prefix='blockd-qkill.')
    try:
        base = os.path.join(tmp, 'base.qcow2')
        check(run('qemu-img', 'create', '-f', 'qcow2', base, str(SIZE)).returncode == 0, 'create')
        data = bytearray(SIZE)
        for i, pat in enumerate((0x31, 0x32)):
            off = i * 5 * CS + 1000
            run('qemu-io', '-c', 'write -P %d %d %d' % (pat, off, SIZE // 2), base)
            data[off:off + SIZE // 2] = bytes([pat]) * (SIZE // 2)
            check(run('qemu-img', 'snapshot', '-c', 'base%d' % i, base).returncode == 0, 'snapshot -c')
        # The script, and the state (data, snapshot names) after each step.
        writes = {0: [(100000, 5000, 0x41)], 2: [(3 * CS, CS, 0x42), (SIZE - 1000, 1000, 0x43)],
                  4: [(7 * CS + 17, 3 * CS, 0x44), (40 * CS, 100, 0x45)], 6: [(2 * CS, 2 * CS, 0x46)]}
        states = [(bytes(data), {'base0', 'base1'})]
        for step in range(7):
            d, names = bytearray(states[-1][0]), set(states[-1][1])
            for off, ln, val in writes.get(step, []):
                d[off:off + ln] = bytes([val]) * ln
            if step == 1:
                names.add('p1')
                p1 = bytes(d)
            elif step == 3:
                names.discard('base0')
            elif step == 5:
                d = bytearray(p1)
            states.append((bytes(d), names))

        def script(dmn, done):
            q = dmn.qmp()
            q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': dmn.path('nbd.sock')}}})
            q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'q', 'writable': True})
            h = connect(dmn.path('nbd.sock'), 'q')
            for step in range(7):
                if step in writes:
                    for off, ln, val in writes[step]:
                        h.pwrite(bytes([val]) * ln, off)
                    h.flush()
                elif step == 1:
                    check('return' in q.cmd('blockdev-snapshot-internal-sync', {'device': 'q', 'name': 'p1'}), 'p1')
                elif step == 3:
                    check('return' in q.cmd('blockdev-snapshot-delete-internal-sync',
                                            {'device': 'q', 'name': 'base0'}), 'delete')
                elif step == 5:
                    h.shutdown()
                    q.cmd('snapshot-load', {'job-id': 'l', 'tag': 'p1', 'vmstate': 'q', 'devices': ['q']})
                    while True:
                        jobs = q.cmd('query-jobs')['return']
                        if jobs[0]['status'] == 'concluded':
                            break
                        time.sleep(0.02)
                    check('error' not in jobs[0], 'load %r' % jobs)
                    h = connect(dmn.path('nbd.sock'), 'q')
                done.append(step)
            h.shutdown()

        def one(point):
            img = os.path.join(tmp, 'img.qcow2')
            shutil.copyfile(base, img)
            env = {'LD_PRELOAD': shim, 'KILL_SHIM_FILE': img, 'KILL_SHIM_AT': str(point),
                   'KILL_SHIM_COUNT': os.path.join(tmp, 'count'),
                   'ASAN_OPTIONS': os.environ.get('ASAN_OPTIONS', '') + ':verify_asan_link_order=0'}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                dmn = Daemon(blockd_cmd(), extra=['--blockdev', 'driver=file,node-name=f,filename=' + img,
                                                  '--blockdev', 'driver=qcow2,node-name=q,file=f'])
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            done = []
            with dmn:
                try:
                    script(dmn, done)
                except (OSError, EOFError, Exception):
                    pass
                if point == 0:
                    check(dmn.stop() == 0, 'daemon exit status')
                else:
                    if len(done) == 7:
                        # The script is through: the point lies in the close.
                        dmn.proc.send_signal(signal.SIGTERM)
                    dmn.proc.wait(20)
                    check(dmn.proc.returncode == -signal.SIGKILL or (len(done) == 7 and dmn.proc.returncode == 0),
                          'point %d: blockd not killed (%r)' % (point, dmn.proc.returncode))
            return img, len(done)

        img, n = one(0)
        check(n == 7, 'the script ran %d steps' % n)
        with open(os.path.join(tmp, 'count')) as f:
            total = int(f.read())
        check(read_image(img) == states[7][0] and set(tags(img)) == states[7][1], 'the script\'s result')
        pts = sorted({1 + (k * (total - 1)) // 39 for k in range(40)})
        if os.environ.get('POINT'):
            pts = [int(os.environ['POINT'])]
        for point in pts:
            img, done = one(point)
            r = run('qemu-img', 'check', img)
            check(r.returncode in (0, 3) and 'ERROR' not in r.stdout + r.stderr,
                  'point %d (step %d): qemu-img check %d:\n%s%s' % (point, done, r.returncode, r.stdout, r.stderr))
            got, names = read_image(img), set(tags(img))
            before, after = states[done], states[min(done + 1, 7)]
            check(names in (before[1], after[1]), 'point %d (step %d): snapshots %r' % (point, done, names))
            if done in writes:
                later = writes[done]
                check_flushed(got, before[0], later, point)
            else:
                check(got in (before[0], after[0]), 'point %d (step %d): image data' % (point, done))
            if 'p1' in names:
                check(read_image(img, 'p1') == states[2][0], 'point %d: snapshot p1 data' % point)
            print('point %d/%d: killed in step %d, check %s' %
                  (point, total, done, 'clean' if r.returncode == 0 else 'leaks'))
        print('%d kill points over %d writes; PASS' % (len(pts), total))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    # PHASE=random or PHASE=points runs one half; POINT=n one kill point.
    phase = os.environ.get('PHASE', '')
    if phase in ('', 'random') and not os.environ.get('POINT'):
        main()
    if phase in ('', 'points'):
        kill_points()
