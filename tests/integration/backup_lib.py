"""Helpers for the block-job and backup integration tests.

    from backup_lib import *
    with Nbdkit('memory', '64M') as t, Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', 64 << 20)          # memory node + writable export
        write(d, 'src', 0, b'\\x55' * 65536)        # through NBD, like a guest
        add_nbd_target(q, 'tgt', t.sock)
        ...
        evs = wait_job_end(q, 'j0')                 # every event up to status null

Nbdkit runs `nbdkit -f -U SOCK [--filter=F ...] PLUGIN ARGS` in a private
directory and is stopped by PID.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check, fail, skip  # noqa: E402,F401


def import_nbd():
    try:
        import nbd
    except ImportError:
        skip('python3-libnbd is not installed')
    return nbd


class Nbdkit:
    """An nbdkit server on a Unix socket; filters are given as '--filter=X'."""

    def __init__(self, *args, filters=(), sock=None):
        if not shutil.which('nbdkit'):
            skip('nbdkit is not installed')
        self.tmp = tempfile.mkdtemp(prefix='blockd-nbdkit.')
        self.sock = sock or os.path.join(self.tmp, 'nbdkit.sock')
        # -P: the pidfile appears once nbdkit accepts connections (the
        # socket file appears at bind, a moment before listen).
        self.pidfile = os.path.join(self.tmp, 'nbdkit.pid')
        self.args = ['nbdkit', '-f', '-U', self.sock, '-P', self.pidfile] + \
            ['--filter=' + f for f in filters] + list(args)
        self.proc = None

    def path(self, name):
        return os.path.join(self.tmp, name)

    def start(self):
        for f in (self.sock, self.pidfile):
            if os.path.exists(f):
                os.unlink(f)
        if hasattr(self, 'log'):
            self.log.close()
        self.log = open(os.path.join(self.tmp, 'nbdkit.log'), 'a')
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 20
        while not (os.path.exists(self.sock) and os.path.exists(self.pidfile) and os.path.getsize(self.pidfile)):
            if self.proc.poll() is not None:
                fail('nbdkit exited at start-up: %r' % self.args)
            if time.time() > deadline:
                fail('nbdkit socket did not appear')
            time.sleep(0.02)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.kill()

    def close(self):
        """Stops nbdkit and removes its directory."""
        self.stop()
        if hasattr(self, 'log'):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def ok(r, what):
    check('return' in r, '%s failed: %r' % (what, r))
    return r['return']


def err(r, desc, cls='GenericError'):
    check('error' in r and r['error']['desc'] == desc and r['error']['class'] == cls,
          'expected error %r (%s), got %r' % (desc, cls, r))


def add_source(q, d, name, size, export=True):
    """A memory node `name` exported writable under its own name."""
    ok(q.cmd('blockdev-add', {'driver': 'memory', 'node-name': name, 'size': size}), 'blockdev-add')
    if export:
        sock = d.path('nbd.sock')
        if not os.path.exists(sock):
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + name, 'node-name': name,
                                      'name': name, 'writable': True}), 'block-export-add')


def add_nbd_target(q, name, sock, **extra):
    args = {'driver': 'nbd', 'node-name': name, 'server': {'type': 'unix', 'path': sock}}
    args.update(extra)
    ok(q.cmd('blockdev-add', args), 'blockdev-add nbd')


def connect(sock, name=''):
    nbd = import_nbd()
    h = nbd.NBD()
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def write(d, export, offset, data):
    h = connect(d.path('nbd.sock'), export)
    h.pwrite(data, offset)
    h.flush()
    h.shutdown()


def read_all(sock, name='', size=None):
    h = connect(sock, name)
    size = size or h.get_size()
    out = bytearray()
    pos = 0
    while pos < size:
        n = min(32 << 20, size - pos)
        out += h.pread(n, pos)
        pos += n
    h.shutdown()
    return bytes(out)


def digest(data):
    return hashlib.sha256(data).hexdigest()


def wait_job_end(q, job_id, timeout=60):
    """Every event up to JOB_STATUS_CHANGE null of job_id (or of every job in
    a list of IDs), in order; later events stay queued."""
    deadline = time.time() + timeout
    got = []
    pending = set([job_id] if isinstance(job_id, str) else job_id)
    while True:
        while q.events:
            ev = q.events.pop(0)
            got.append(ev)
            if ev['event'] == 'JOB_STATUS_CHANGE' and ev['data']['status'] == 'null':
                pending.discard(ev['data']['id'])
                if not pending:
                    return got
        if time.time() > deadline:
            fail('job %s did not end; events so far: %r' % (job_id, summary(got)))
        q.sock.settimeout(max(0.1, deadline - time.time()))
        try:
            q.events.append(q.recv())
        except OSError:
            pass
        finally:
            q.sock.settimeout(20)


def wait_status(q, job_id, status, timeout=30):
    """Events up to the JOB_STATUS_CHANGE to `status` (the rest stay queued)."""
    return wait_until(q, lambda ev: ev['event'] == 'JOB_STATUS_CHANGE' and
                      ev['data'] == {'id': job_id, 'status': status}, timeout)


def wait_until(q, pred, timeout=30):
    """Events up to the first one for which pred(event) (the rest stay queued)."""
    deadline = time.time() + timeout
    got = []
    while True:
        while q.events:
            ev = q.events.pop(0)
            got.append(ev)
            if pred(ev):
                return got
        if time.time() > deadline:
            fail('the awaited event did not arrive; events: %r' % summary(got))
        q.sock.settimeout(max(0.1, deadline - time.time()))
        try:
            q.events.append(q.recv())
        except OSError:
            pass
        finally:
            q.sock.settimeout(20)


def squash(seq):
    """Collapses runs of identical items (a job retrying with policy ignore
    raises one BLOCK_JOB_ERROR per attempt)."""
    out = []
    for item in seq:
        if not out or out[-1] != item:
            out.append(item)
    return out


def dirty_extents(q, d, node, bitmap, size):
    """The dirty (offset, length) runs of `bitmap` on `node`, read over NBD
    (qemu:dirty-bitmap:NAME) through a temporary writable export."""
    nbd = import_nbd()
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'bitmap-check', 'node-name': node,
                                  'name': 'bitmap-check', 'writable': True, 'bitmaps': [bitmap]}),
       'export of bitmap ' + bitmap)
    ctx = 'qemu:dirty-bitmap:' + bitmap
    h = nbd.NBD()
    h.add_meta_context(ctx)
    h.set_export_name('bitmap-check')
    h.connect_unix(sock)
    runs = []
    pos = 0

    def cb(metacontext, offset, entries, error):
        nonlocal pos
        if metacontext != ctx:
            return 0
        for i in range(0, len(entries), 2):
            if entries[i + 1] & 1:
                runs.append((pos, entries[i]))
            pos += entries[i]
        return 0

    while pos < size:
        before = pos
        h.block_status(min(size - pos, 1 << 30), pos, cb)
        check(pos > before, 'no progress reading bitmap %s' % bitmap)
    h.shutdown()
    ok(q.cmd('block-export-del', {'id': 'bitmap-check'}), 'block-export-del bitmap-check')
    # The export goes away once its client is gone; wait so the bitmap is free again.
    deadline = time.time() + 10
    while any(e['id'] == 'bitmap-check' for e in q.cmd('query-block-exports')['return']):
        check(time.time() < deadline, 'export bitmap-check was not deleted')
        time.sleep(0.02)
    return runs


def uncovered(runs, writes):
    """The (offset, length) writes not inside a dirty run."""
    out = []
    for off, n in writes:
        if not any(s <= off and off + n <= s + length for s, length in runs):
            out.append((off, n))
    return out


def summary(events, drop_blips=True):
    """Events as comparable tuples: status changes, and BLOCK_JOB_* names with
    their data minus progress numbers.  QEMU 7.2's paused/running blip right
    after a backup starts is dropped when drop_blips."""
    out = []
    for ev in events:
        name, data = ev['event'], dict(ev.get('data') or {})
        if name == 'JOB_STATUS_CHANGE':
            out.append(('status', data['id'], data['status']))
        elif name.startswith('BLOCK_JOB_'):
            for k in ('len', 'offset', 'speed'):
                data.pop(k, None)
            out.append((name,) + tuple(sorted(data.items())))
    if drop_blips:
        # created, running, paused, running (consecutive, one job) -> created, running.
        i = 0
        while i + 3 < len(out):
            w = out[i:i + 4]
            if (all(x[0] == 'status' and x[1] == w[0][1] for x in w)
                    and [x[2] for x in w] == ['created', 'running', 'paused', 'running']):
                del out[i + 2:i + 4]
            i += 1
    return out
