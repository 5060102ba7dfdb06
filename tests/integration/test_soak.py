#!/usr/bin/python3
"""Soak: one blockd, three file nodes, 64 verifying NBD clients (half over
TCP 127.0.0.1, half over a Unix socket, some reconnecting, some of those
abruptly, some slow to read their replies) for SOAK_SECONDS (default 80),
while backups (full and incremental, to files and nbdkit), a mirror (soft
cancel, hard cancel, complete with a pivot of the export and blockdev-del
of the old node), dirty-bitmap cycles (add, disable/enable, merge, clear,
transactions, remove; persistent and not) and a QMP poller run on their
own monitors.

Asserts: no I/O error, no mismatch (reads against each client's model,
base:allocation zero claims, the exported bitmap 'x0' never clean where a
client wrote), every job ends as expected, the final incremental backups
and a final full backup equal their sources byte for byte, the daemon's
RSS is flat after warm-up and its descriptor count does not grow.

    SOAK_SECONDS=1800 meson test -C build soak      (or: make soak)

To tell failures apart, SOAK_PERSISTENT=0 makes the cycled bitmaps
non-persistent (the incremental chain of n1 keeps its persistent bitmap);
SOAK_VERBOSE=1 also prints blockd's RSS and descriptor count every second.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, fail, ok,  # noqa: E402
                        read_all, wait_job_end, wait_status)
from lib import free_port  # noqa: E402
from soak_lib import (Client, IoLoop, Stats, fd_count, median, peak_rss_bytes,  # noqa: E402
                      rss_bytes)

SECONDS = float(os.environ.get('SOAK_SECONDS', '80'))
SIZE = 64 << 20           # each node
REGION = 2 << 20          # each client's share
CLIENTS = 64
LOOPS = 4                 # I/O threads
JOB_TIMEOUT = 300         # generous: ASan, two shared cores, 64 busy clients
WARMUP = 0.3              # share of the run before memory and descriptors are baselined
MiB = 1 << 20
PERSISTENT = os.environ.get('SOAK_PERSISTENT', '1') != '0'
VERBOSE = os.environ.get('SOAK_VERBOSE', '0') != '0'

# Memory: ASan keeps freed blocks in a quarantine (256 MiB by default) and
# its allocator rarely returns memory to the kernel, so RSS climbs for a while
# and then wobbles with the quarantine and with how many connection threads
# (up to 16 per connection) exist at sample time.  A leak of a few hundred
# bytes per request still shows: this run makes hundreds of thousands.  The
# baseline is the median of the samples in the 20 % of the run right after
# warm-up, compared with the median of the last third: 25 % + 48 MiB of
# growth are allowed (the slack covers thread stacks and the quarantine).
RSS_GROWTH, RSS_SLACK = 1.25, 48 * MiB
SELF_RSS_LIMIT = 2 << 30  # the test's models are 256 MiB; more means a leak on our side
FD_SLACK = 4              # descriptors closed asynchronously (connection teardown)


class Control:
    def __init__(self):
        self.stop = threading.Event()
        self.pause = threading.Event()

    def gate(self, worker):
        """Between cycles: parks the worker while a checkpoint is being taken."""
        while worker.parks and self.pause.is_set() and not self.stop.is_set():
            worker.idle.set()
            time.sleep(0.05)
        worker.idle.clear()

    def sleep(self, seconds):
        self.stop.wait(seconds)


class Worker(threading.Thread):
    """A thread with its own QMP monitor doing cycle() until stopped."""
    parks = True   # parks at checkpoints

    def __init__(self, d, monitor, ctl, tmp):
        super().__init__(daemon=True)
        self.d, self.monitor, self.ctl, self.tmp = d, monitor, ctl, tmp
        self.idle = threading.Event()
        self.error = None
        self.cycles = 0
        self.jobs = 0
        self.rng = random.Random(monitor)

    def run(self):
        try:
            self.q = self.d.qmp(self.monitor)
            self.prepare()
            while not self.ctl.stop.is_set():
                self.ctl.gate(self)
                if self.ctl.stop.is_set():
                    break
                self.cycle()
                self.cycles += 1
        except BaseException:  # fail() raises SystemExit
            self.error = '%s:\n%s' % (type(self).__name__, traceback.format_exc())
        finally:
            self.idle.set()
            if hasattr(self, 'q'):
                self.q.close()

    def prepare(self):
        pass

    def cmd(self, name, args=None):
        return ok(self.q.cmd(name, args), '%s %r' % (name, args))

    def finish_jobs(self, expect):
        """Waits for every job in expect {id: 'completed'|'cancelled'} to end so."""
        evs = wait_job_end(self.q, list(expect), JOB_TIMEOUT)
        for job, want in expect.items():
            states = [e['data']['status'] for e in evs
                      if e['event'] == 'JOB_STATUS_CHANGE' and e['data']['id'] == job]
            for was, now in zip(states, states[1:]):
                check((was, now) not in (('paused', 'waiting'), ('paused', 'pending'), ('standby', 'waiting')),
                      'job %s left %s for %s without a resume: %r' % (job, was, now, states))
            mine = [e for e in evs if e['event'].startswith('BLOCK_JOB_') and
                    e['data'].get('device', e['data'].get('id')) == job]
            names = [e['event'] for e in mine if e['event'] != 'BLOCK_JOB_READY']
            if want == 'completed':
                check(names == ['BLOCK_JOB_COMPLETED'] and 'error' not in mine[-1]['data'],
                      'job %s: %r' % (job, mine))
            else:
                check(names == ['BLOCK_JOB_CANCELLED'], 'job %s: %r' % (job, mine))
            self.jobs += 1


class Backups(Worker):
    """Incremental chains of n0 (into a raw file) and n1 (persistent bitmap, into
    nbdkit), and full backups of both alternately, three jobs at a time."""

    def __init__(self, d, monitor, ctl, tmp, chain1_sock, scratch_sock):
        super().__init__(d, monitor, ctl, tmp)
        self.chain1_sock, self.scratch_sock = chain1_sock, scratch_sock

    def prepare(self):
        add_nbd_target(self.q, 'tchain1', self.chain1_sock)
        self.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'n0', 'name': 'inc0'}},
            {'type': 'drive-backup', 'data': {'job-id': 'full0', 'device': 'n0', 'sync': 'full',
                                              'target': os.path.join(self.tmp, 'chain0.img'),
                                              'format': 'raw'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'n1', 'name': 'pinc1', 'persistent': True}},
            {'type': 'blockdev-backup', 'data': {'job-id': 'full1', 'device': 'n1', 'target': 'tchain1',
                                                 'sync': 'full'}}]})
        self.finish_jobs({'full0': 'completed', 'full1': 'completed'})

    def incrementals(self, k):
        self.cmd('drive-backup', {'job-id': 'inc0-%d' % k, 'device': 'n0', 'sync': 'incremental',
                                  'bitmap': 'inc0', 'target': os.path.join(self.tmp, 'chain0.img'),
                                  'format': 'raw', 'mode': 'existing'})
        self.cmd('blockdev-backup', {'job-id': 'inc1-%d' % k, 'device': 'n1', 'target': 'tchain1',
                                     'sync': 'incremental', 'bitmap': 'pinc1'})
        return {'inc0-%d' % k: 'completed', 'inc1-%d' % k: 'completed'}

    def cycle(self):
        k = self.cycles
        jobs = self.incrementals(k)
        full, scratch = 'full-%d' % k, None
        if k % 2 == 0:
            add_nbd_target(self.q, 'tscratch-%d' % k, self.scratch_sock)
            self.cmd('blockdev-backup', {'job-id': full, 'device': 'n0', 'target': 'tscratch-%d' % k,
                                         'sync': 'full'})
            # A pause and resume.  As in QEMU a job pauses only at its next
            # chunk boundary, so one past its last chunk ends regardless and
            # then refuses the resume; one that is still paused must not.
            r = self.q.cmd('job-pause', {'id': full})
            if 'error' not in r:
                self.ctl.sleep(0.2)
                r = self.q.cmd('job-resume', {'id': full})
                if 'error' in r:
                    state = {j['id']: j['status'] for j in self.cmd('query-jobs')}.get(full)
                    check(state in (None, 'waiting', 'pending', 'concluded'),
                          'job-resume of %s in state %s: %r' % (full, state, r))
        else:
            scratch = os.path.join(self.tmp, 'full-%d.img' % k)
            self.cmd('drive-backup', {'job-id': full, 'device': 'n1', 'target': scratch,
                                      'sync': 'full', 'format': 'raw'})
        jobs[full] = 'completed'
        self.finish_jobs(jobs)
        if scratch:
            os.unlink(scratch)
        else:
            self.cmd('blockdev-del', {'node-name': 'tscratch-%d' % k})
        self.ctl.sleep(0.5)


class Mirrors(Worker):
    """n2's export: mirror to nbdkit then soft cancel; mirror to nbdkit then hard
    cancel; drive-mirror (write-blocking) to a new file, complete (the export
    pivots under its clients), blockdev-del the old node and delete its file."""

    def __init__(self, d, monitor, ctl, tmp, target_sock):
        super().__init__(d, monitor, ctl, tmp)
        self.target_sock = target_sock
        self.node, self.path = 'n2', os.path.join(tmp, 'n2.img')
        self.pivots = 0

    def cycle(self):
        k, job = self.cycles, 'mirror-%d' % self.cycles
        kind = k % 3
        if kind == 2:
            new, path = 'n2g%d' % k, os.path.join(self.tmp, 'n2g%d.img' % k)
            self.cmd('drive-mirror', {'job-id': job, 'device': self.node, 'target': path, 'format': 'raw',
                                      'sync': 'full', 'node-name': new, 'copy-mode': 'write-blocking'})
        else:
            target = 'mt-%d' % k
            add_nbd_target(self.q, target, self.target_sock)
            self.cmd('blockdev-mirror', {'job-id': job, 'device': self.node, 'target': target,
                                         'sync': 'full', 'granularity': self.rng.choice([4096, 65536])})
        wait_status(self.q, job, 'ready', JOB_TIMEOUT)
        self.ctl.sleep(self.rng.uniform(0.5, 2))
        if kind == 0:
            self.cmd('block-job-cancel', {'device': job})       # final sync, no pivot
            self.finish_jobs({job: 'completed'})
        elif kind == 1:
            self.cmd('job-cancel', {'id': job})
            self.finish_jobs({job: 'cancelled'})
        else:
            self.cmd('job-complete', {'id': job})
            self.finish_jobs({job: 'completed'})
            exports = {e['id']: e['node-name'] for e in self.cmd('query-block-exports')}
            check(exports.get('e2') == new, 'after the pivot e2 is on %r, not %s' % (exports.get('e2'), new))
            self.cmd('blockdev-del', {'node-name': self.node})
            os.unlink(self.path)
            self.node, self.path = new, path
            self.pivots += 1
        if kind != 2:
            self.cmd('blockdev-del', {'node-name': target})
        self.ctl.sleep(1)


class Bitmaps(Worker):
    """Add, disable/enable, merge (also across nodes), clear, sha256,
    transactions (one rolled back) and remove, on n0 and n1 in turn, while
    the clients write.  Persistent bitmaps are among them."""

    def cycle(self):
        k = self.cycles
        node = 'n0' if k % 2 == 0 else 'n1'
        a, b, c = 'cyc-a-%d' % k, 'cyc-b-%d' % k, 'cyc-c-%d' % k
        bm = lambda name: {'node': node, 'name': name}  # noqa: E731
        self.cmd('block-dirty-bitmap-add', dict(bm(a), persistent=PERSISTENT and k % 4 < 2,
                                                granularity=self.rng.choice([512, 4096, 65536, 1 << 20])))
        self.cmd('block-dirty-bitmap-add', dict(bm(b), disabled=k % 3 == 0))
        self.ctl.sleep(0.2)
        self.cmd('block-dirty-bitmap-disable', bm(a))
        self.ctl.sleep(0.05)
        self.cmd('block-dirty-bitmap-enable', bm(a))
        self.cmd('block-dirty-bitmap-merge', {'node': node, 'target': b,
                                              'bitmaps': [a, {'node': 'n0', 'name': 'keep0'}]})
        self.cmd('x-debug-block-dirty-bitmap-sha256', bm(a))
        self.cmd('block-dirty-bitmap-clear', bm(b))
        self.cmd('block-dirty-bitmap-enable', bm(b))
        self.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-disable', 'data': bm(a)},
            {'type': 'block-dirty-bitmap-add', 'data': dict(bm(c), persistent=PERSISTENT and k % 4 == 1)},
            {'type': 'block-dirty-bitmap-clear', 'data': bm(b)},
            {'type': 'block-dirty-bitmap-merge', 'data': {'node': node, 'target': c, 'bitmaps': [a]}}]})
        r = self.q.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-clear', 'data': bm(c)},
            {'type': 'block-dirty-bitmap-add', 'data': bm('never')},
            {'type': 'abort', 'data': {}}]})
        check('error' in r, 'a transaction with abort succeeded: %r' % r)
        nodes = {n['node-name']: n for n in self.cmd('query-named-block-nodes')}
        have = {m['name']: m for m in nodes[node].get('dirty-bitmaps', [])}
        check(a in have and b in have and c in have and 'never' not in have,
              'bitmaps of %s after the transactions: %r' % (node, sorted(have)))
        check(not have[a]['recording'] and have[b]['recording'] and have[c]['recording'],
              'bitmap states after the transaction: %r' % ([have[a], have[b], have[c]],))
        check(have[a]['persistent'] == (PERSISTENT and k % 4 < 2), 'persistent flag of %s: %r' % (a, have[a]))
        if node == 'n1':  # and the other way round: into n0's keep0
            self.cmd('block-dirty-bitmap-merge', {'node': 'n0', 'target': 'keep0',
                                                  'bitmaps': [{'node': node, 'name': c}]})
        for name in (a, b, c):
            self.cmd('block-dirty-bitmap-remove', bm(name))
        # Short-lived fine-grained persistent bitmaps: most writes meanwhile
        # dirty a granule that is not durable yet and wait for the store.
        for i in range(5 if PERSISTENT else 0):
            self.cmd('block-dirty-bitmap-add', dict(bm('short'), persistent=True, granularity=512))
            self.ctl.sleep(self.rng.uniform(0, 0.05))
            self.cmd('block-dirty-bitmap-remove', bm('short'))
        self.q.events.clear()
        self.ctl.sleep(0.3)


class Poller(Worker):
    """query-* every ~100 ms; the exports must stay listed."""
    parks = False

    def prepare(self):
        schema = self.cmd('query-qmp-schema')
        names = {e['name'] for e in schema if e.get('meta-type') == 'command'}
        self.queries = [c for c in ('query-block-jobs', 'query-jobs', 'query-named-block-nodes',
                                    'query-block-exports') if c in names]
        check(len(self.queries) >= 3, 'query commands in the schema: %r' % self.queries)
        self.polls = 0

    def cycle(self):
        for name in self.queries:
            r = self.cmd(name)
            if name == 'query-block-exports':
                check(sorted(e['id'] for e in r) == ['e0', 'e1', 'e2'], 'exports: %r' % r)
            self.polls += 1
        self.q.events.clear()
        self.ctl.sleep(0.1)


def make_image(path, seed):
    """1 MiB of random data every 4 MiB, holes between."""
    rng = random.Random(seed)
    image = bytearray(SIZE)
    for off in range(0, SIZE, 4 * MiB):
        image[off:off + MiB] = rng.randbytes(MiB)
    with open(path, 'wb') as f:
        f.truncate(SIZE)
        for off in range(0, SIZE, 4 * MiB):
            f.seek(off)
            f.write(image[off:off + MiB])
    return image


def dump_threads(pid):
    """Every thread's backtrace of a hung blockd, saved next to meson's logs;
    returns the path and the main thread's stack."""
    if not shutil.which('gdb'):
        return 'no gdb to show where blockd hangs'
    out = subprocess.run(['gdb', '-p', str(pid), '-batch', '-ex', 'thread apply all bt'],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300).stdout
    logs = os.path.join(os.environ.get('BUILD_DIR', tempfile.gettempdir()), 'meson-logs')
    path = os.path.join(logs if os.path.isdir(logs) else tempfile.gettempdir(), 'soak-hang-%d.txt' % pid)
    with open(path, 'w') as f:
        f.write(out)
    main_thread = out[out.rfind('\nThread 1 '):]
    return 'backtraces of all threads in %s; the main thread:%s' % (path, main_thread[:3000])


class Soak:
    def __init__(self, d, tmp, port, sock, images, ctl, workers):
        self.d, self.tmp, self.pid, self.ctl, self.workers = d, tmp, d.proc.pid, ctl, workers
        self.samples = []  # (seconds since start, RSS, descriptors)
        self.hung = None
        self.progress = (0, time.monotonic())  # (requests, when that count was first seen)
        clients = []
        for cid in range(CLIENTS):
            e = cid % 3
            base = (cid // 3) * REGION
            clients.append(Client(cid, 'e%d' % e, base, images[e][base:base + REGION],
                                  unix=sock if cid % 2 == 0 else None, tcp=port if cid % 2 else None,
                                  seed=cid, reconnect=cid % 4 == 1, sluggish=cid % 8 == 2,
                                  dirty_context='qemu:dirty-bitmap:x0' if e == 1 else None))
        self.loops = [IoLoop(clients[i::LOOPS]) for i in range(LOOPS)]

    def problems(self):
        """A reason to stop early, or None."""
        if self.hung:
            return self.hung
        if self.d.proc.poll() is not None:
            return 'blockd exited with status %d' % self.d.proc.returncode
        for w in self.workers:
            if w.error:
                return w.error
        for loop in self.loops:
            if loop.error:
                return loop.error
        s = self.stats()
        if s.io_errors or s.mismatches:
            return '%d I/O errors, %d mismatches' % (s.io_errors, s.mismatches)
        return None

    def stats(self):
        s = Stats()
        for loop in self.loops:
            s.add(loop.stats())
        return s

    def sample(self, t0):
        now = time.monotonic()
        self.samples.append((now - t0, rss_bytes(self.pid), fd_count(self.pid)))
        check(rss_bytes(os.getpid()) < SELF_RSS_LIMIT, 'the test itself uses more than %d MiB: '
              'a leak in the test or in libnbd\'s Python binding' % (SELF_RSS_LIMIT // MiB))
        requests = self.stats().requests
        if requests != self.progress[0]:
            self.progress = (requests, now)
        elif now - self.progress[1] > 120 and not self.hung:
            self.hang('no client sent a request for 120 s')

    def wait_connected(self, timeout):
        """Waits until all 64 clients are connected; None if something failed."""
        deadline = time.monotonic() + timeout
        while not all(loop.connected() for loop in self.loops):
            if self.problems():
                return None
            if time.monotonic() > deadline:
                states = [(c.cid, c.state) for loop in self.loops for c in loop.clients if c.state != 'ready']
                return self.hang('clients did not all connect within %d s: %r' % (timeout, states))
            time.sleep(0.05)
        return True

    def hang(self, what):
        self.hung = '%s\n%s' % (what, dump_threads(self.pid))
        return None

    def checkpoint(self, resume):
        """Descriptors with every job worker idle between cycles and all 64
        clients connected (the same state at warm-up end and at the end)."""
        self.ctl.pause.set()
        deadline = time.monotonic() + JOB_TIMEOUT + 60
        for w in self.workers:
            while w.parks and not w.idle.wait(1):
                if self.problems():
                    return None
                if time.monotonic() > deadline:
                    return self.hang('%s did not reach the checkpoint' % type(w).__name__)
        for loop in self.loops:
            loop.allow_reconnect.clear()
        if not self.wait_connected(120):
            return None
        time.sleep(1)
        fds = []
        for _ in range(4):
            fds.append(fd_count(self.pid))
            time.sleep(0.5)
        if resume:
            for loop in self.loops:
                loop.allow_reconnect.set()
            self.ctl.pause.clear()
        return min(fds)

    def run(self):
        t0 = time.monotonic()
        for loop in self.loops:
            loop.start()
        for w in self.workers:
            w.start()
        fds_warm = fds_end = None
        why = None
        while time.monotonic() - t0 < SECONDS:
            self.sample(t0)
            why = self.problems()
            if why:
                break
            if fds_warm is None and time.monotonic() - t0 >= WARMUP * SECONDS:
                fds_warm = self.checkpoint(resume=True)
                if fds_warm is None:
                    why = self.problems()
                    break
            time.sleep(1)
        if not why:
            fds_end = self.checkpoint(resume=False)
        self.ctl.stop.set()
        for w in self.workers:
            w.join(JOB_TIMEOUT + 60)
            check(not w.is_alive(), '%s did not stop' % type(w).__name__)
        why = why or self.problems()
        if why:
            for loop in self.loops:
                loop.halt.set()
            self.report_failure(why)
        # Final pass: every client reads its whole region back, then disconnects.
        for loop in self.loops:
            loop.finish(verify=True)
        for loop in self.loops:
            loop.join(JOB_TIMEOUT)
            check(not loop.is_alive(), 'an I/O thread did not finish its final pass')
        why = self.problems()
        if why:
            self.report_failure(why)
        self.sample(t0)
        return fds_warm, fds_end

    def report_failure(self, why):
        s = self.stats()
        print('soak failed after %d requests: %s' % (s.requests, why), file=sys.stderr)
        for p in s.problems[:20]:
            print('  ' + p, file=sys.stderr)
        if not self.hung and self.d.proc.poll() is None and \
                any('unanswered' in p or 'handshake' in p or 'cannot connect' in p for p in s.problems):
            print(dump_threads(self.pid), file=sys.stderr)
        print('blockd stderr (tail):\n' + self.d.stderr_text()[-6000:], file=sys.stderr)
        lines = why.strip().splitlines()
        fail(lines[-1] if 'Traceback' in why else lines[0])

    def check_memory(self):
        start = WARMUP * SECONDS
        base = [r for t, r, _ in self.samples if start <= t < start + 0.2 * SECONDS]
        last = [r for t, r, _ in self.samples if t >= SECONDS * 2 / 3]
        if len(base) < 3 or len(last) < 3:
            print('(run too short to judge memory: %d and %d samples)' % (len(base), len(last)))
            return median(base or [0]), median(last or [0])
        b, e = median(base), median(last)
        check(e <= b * RSS_GROWTH + RSS_SLACK,
              'RSS grew from a median of %.1f MiB after warm-up to %.1f MiB in the last third '
              '(samples in MiB, one a second: %s)' % (b / MiB, e / MiB,
                                        ' '.join('%d' % (r // MiB) for _, r, _ in self.samples)))
        return b, e


def final_backups(d, tmp, chain1_sock, mirror_node):
    """With the clients gone: the last incrementals complete both chains, a
    full backup copies n2's current node; all must equal their sources."""
    q = d.qmp(0)
    jobs = {}
    ok(q.cmd('drive-backup', {'job-id': 'last0', 'device': 'n0', 'sync': 'incremental', 'bitmap': 'inc0',
                              'target': os.path.join(tmp, 'chain0.img'), 'format': 'raw',
                              'mode': 'existing'}), 'last incremental of n0')
    ok(q.cmd('blockdev-backup', {'job-id': 'last1', 'device': 'n1', 'target': 'tchain1',
                                 'sync': 'incremental', 'bitmap': 'pinc1'}), 'last incremental of n1')
    ok(q.cmd('drive-backup', {'job-id': 'last2', 'device': mirror_node, 'sync': 'full',
                              'target': os.path.join(tmp, 'final2.img'), 'format': 'raw'}), 'full of n2')
    evs = wait_job_end(q, ['last0', 'last1', 'last2'], JOB_TIMEOUT)
    for job in ('last0', 'last1', 'last2'):
        done = [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED' and e['data']['device'] == job]
        check(len(done) == 1 and 'error' not in done[0]['data'], '%s: %r' % (job, evs))
        jobs[job] = True
    sock = os.path.join(tmp, 'nbd.sock')
    for export, copy in (('e0', os.path.join(tmp, 'chain0.img')), ('e1', None),
                         ('e2', os.path.join(tmp, 'final2.img'))):
        src = read_all(sock, export)
        if copy:
            with open(copy, 'rb') as f:
                dst = f.read()
        else:
            dst = read_all(chain1_sock)
        check(len(src) == SIZE and src == dst, 'the backup of %s differs from its source (%s)'
              % (export, 'incremental chain' if export != 'e2' else 'full backup'))
    q.close()
    return len(jobs)


def scratch_dir():
    """The images live in /dev/shm when it is a roomy tmpfs: the clients write
    gigabytes a minute, and on a shared machine's disk that writeback stalls
    everyone (including this test: minutes-long fsyncs).  SOAK_DIR overrides."""
    where = os.environ.get('SOAK_DIR')
    if not where and os.path.isdir('/dev/shm') and os.access('/dev/shm', os.W_OK):
        st = os.statvfs('/dev/shm')
        if st.f_bavail * st.f_frsize > 2 << 30:
            where = '/dev/shm'
    return tempfile.mkdtemp(prefix='blockd-soak.', dir=where)


def main():
    tmp = scratch_dir()
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def watchdog(tmp, servers):
    """meson runs the soak without a timeout (its length is SOAK_SECONDS), so
    the test bounds itself: a hang anywhere ends the run here."""
    limit = SECONDS + 2 * JOB_TIMEOUT + 300

    def expire():
        print('FAIL: the soak is still running %d s after its start' % limit, file=sys.stderr)
        for s in servers:
            if s.proc and s.proc.poll() is None:
                s.proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        os._exit(1)
    t = threading.Timer(limit, expire)
    t.daemon = True
    t.start()


def run(tmp):
    images = [make_image(os.path.join(tmp, 'n%d.img' % i), 1000 + i) for i in range(3)]
    sock, port = os.path.join(tmp, 'nbd.sock'), free_port()
    extra = ['--nbd-server', 'addr.type=unix,addr.path=' + sock,
             '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d' % port]
    with Nbdkit('memory', '64M') as chain1, Nbdkit('memory', '64M') as scratch, \
            Nbdkit('memory', '64M') as mirror_target, Daemon(blockd_cmd(), monitors=5, extra=extra) as d:
        watchdog(tmp, [d, chain1, scratch, mirror_target])
        q = d.qmp(0)
        for i in range(3):
            ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'n%d' % i,
                                      'filename': os.path.join(tmp, 'n%d.img' % i)}), 'blockdev-add')
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'n0', 'name': 'keep0'}), 'keep0')
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'n1', 'name': 'x0', 'granularity': 65536}), 'x0')
        for i in range(3):
            args = {'type': 'nbd', 'id': 'e%d' % i, 'node-name': 'n%d' % i, 'name': 'e%d' % i, 'writable': True}
            if i == 1:
                args['bitmaps'] = ['x0']
            ok(q.cmd('block-export-add', args), 'block-export-add')
        q.close()
        ctl = Control()
        backups = Backups(d, 1, ctl, tmp, chain1.sock, scratch.sock)
        mirrors = Mirrors(d, 2, ctl, tmp, mirror_target.sock)
        bitmaps = Bitmaps(d, 3, ctl, tmp)
        poller = Poller(d, 4, ctl, tmp)
        soak = Soak(d, tmp, port, sock, images, ctl, [backups, mirrors, bitmaps, poller])
        del images[:]  # the clients hold their own copies
        fds_warm, fds_end = soak.run()
        rss_base, rss_end = soak.check_memory()
        check(fds_end <= fds_warm + FD_SLACK, 'descriptors grew from %d after warm-up to %d at the end'
              % (fds_warm, fds_end))
        final_jobs = final_backups(d, tmp, chain1.sock, mirrors.node)
        peak = peak_rss_bytes(d.proc.pid)
        if VERBOSE:
            print('RSS MiB / descriptors, one sample a second: ' +
                  ' '.join('%d/%d' % (r // MiB, f) for _, r, f in soak.samples))
        status = d.stop()
        check(status == 0, 'blockd exited with status %d after SIGTERM:\n%s' % (status, d.stderr_text()[-8000:]))
        check('runtime error:' not in d.stderr_text(), 'sanitizer report:\n' + d.stderr_text()[-6000:])
        s = soak.stats()
        jobs = backups.jobs + mirrors.jobs + final_jobs
        print('soak %ds, %d clients: %d requests, %.1f MiB written, %.1f MiB verified, %d block-status '
              'checks, %d connects (%d abrupt), 0 errors, 0 mismatches; RSS median %.0f -> %.0f MiB, '
              'peak %.0f MiB; fds %d -> %d; jobs %d (%d backup cycles, %d mirrors, %d pivots), '
              '%d bitmap cycles, %d QMP polls'
              % (SECONDS, CLIENTS, s.requests, s.bytes_written / MiB, s.bytes_verified / MiB,
                 s.status_checks, s.connects, s.abrupt_closes, rss_base / MiB, rss_end / MiB, peak / MiB,
                 fds_warm, fds_end, jobs, backups.cycles, mirrors.cycles, mirrors.pivots, bitmaps.cycles,
                 poller.polls))


main()
