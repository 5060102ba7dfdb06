#!/usr/bin/python3
"""snapshot-save, snapshot-load and snapshot-delete (QEMU 6.0's job
commands) compared with QEMU itself: the same script runs against
qemu-system-x86_64 (-machine none, the images as -blockdev qcow2 nodes)
and blockd; each job's JOB_STATUS_CHANGE sequence, its query-jobs entry
(type, status, progress, error text) and the resulting `qemu-img snapshot
-l` tags of every image must agree.  QEMU's STOP/RESUME events (it stops
its VM) have no counterpart in blockd and are left out.

Where blockd differs by design (docs/snapshots.md): it saves an empty VM
state, so it loads its own snapshots, and refuses to load one whose VM
state QEMU wrote.  Checked here: a save, writes, a load restore every
named device's data exactly; an image QEMU saved with VM state is refused
by blockd's snapshot-load with a clear error and left unchanged."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, fail, skip  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Qmp  # noqa: E402

SIZE = 1 << 20


def run(*args):
    return subprocess.run(args, capture_output=True, text=True)


def tags(path):
    r = run('qemu-img', 'snapshot', '-l', '-U', path)
    check(r.returncode == 0, r.stderr)
    return [line.split()[1] for line in r.stdout.splitlines()[2:]]


def images(tmp):
    paths = {n: os.path.join(tmp, n + ext) for n, ext in (('a', '.qcow2'), ('b', '.qcow2'), ('r', '.raw'))}
    for n in ('a', 'b'):
        check(run('qemu-img', 'create', '-f', 'qcow2', paths[n], str(SIZE)).returncode == 0, 'create')
    check(run('qemu-img', 'create', '-f', 'raw', paths['r'], str(SIZE)).returncode == 0, 'create raw')
    return paths


def blockdev_args(paths):
    args = []
    for n in ('a', 'b'):
        args += ['--blockdev', 'driver=file,node-name=f%s,filename=%s' % (n, paths[n]),
                 '--blockdev', 'driver=qcow2,node-name=%s,file=f%s' % (n, n)]
    args += ['--blockdev', 'driver=file,node-name=fr,filename=%s' % paths['r'],
             '--blockdev', 'driver=raw,node-name=r,file=fr']
    return args


class Qemu:
    """qemu-system-x86_64 -machine none with a QMP socket."""

    def __init__(self, tmp, args):
        exe = shutil.which('qemu-system-x86_64')
        if not exe:
            skip('qemu-system-x86_64 is not installed (Debian: qemu-system-x86)')
        self.sock = os.path.join(tmp, 'qemu.sock')
        self.proc = subprocess.Popen([exe, '-machine', 'none', '-nodefaults', '-display', 'none',
                                      '-qmp', 'unix:%s,server=on,wait=off' % self.sock] +
                                     [a.replace('--blockdev', '-blockdev') for a in args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                fail('qemu-system-x86_64 exited: %s' % self.proc.stderr.read().decode())
            if time.time() > deadline:
                fail('qemu-system-x86_64 did not start')
            time.sleep(0.05)

    def qmp(self):
        return Qmp(self.sock)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def run_job(q, cmd, args):
    """Runs a job command; returns (reply, status sequence, query-jobs entry) and dismisses it."""
    reply = q.cmd(cmd, args)
    if 'error' in reply:
        return reply, [], None
    seq = []
    deadline = time.time() + 20
    while True:
        while q.events:
            ev = q.events.pop(0)
            if ev['event'] == 'JOB_STATUS_CHANGE' and ev['data']['id'] == args['job-id']:
                seq.append(ev['data']['status'])
        if seq and seq[-1] == 'concluded':
            break
        if time.time() > deadline:
            fail('%s did not conclude: %r' % (cmd, seq))
        q.sock.settimeout(0.2)
        try:
            q.events.append(q.recv())
        except OSError:
            pass
        finally:
            q.sock.settimeout(20)
    info = [j for j in q.cmd('query-jobs')['return'] if j['id'] == args['job-id']]
    check(q.cmd('job-dismiss', {'id': args['job-id']}) == {'return': {}}, 'job-dismiss')
    while q.events:  # the dismissal's null
        q.events.pop(0)
    return reply, seq, info[0] if info else None


SCRIPT = [
    ('snapshot-save', {'job-id': 'j1', 'tag': 't1', 'vmstate': 'a', 'devices': ['a', 'b']}),
    ('snapshot-save', {'job-id': 'j2', 'tag': 't1', 'vmstate': 'a', 'devices': ['a', 'b']}),
    ('snapshot-save', {'job-id': 'j3', 'tag': 't2', 'vmstate': 'nope', 'devices': ['a', 'b']}),
    ('snapshot-save', {'job-id': 'j4', 'tag': 't2', 'vmstate': 'b', 'devices': ['a']}),
    ('snapshot-save', {'job-id': 'j5', 'tag': 't2', 'vmstate': 'a', 'devices': ['a', 'r']}),
    ('snapshot-save', {'job-id': 'j6', 'tag': 't2', 'vmstate': 'a', 'devices': ['a', 'zz']}),
    ('snapshot-save', {'job-id': 'j7', 'tag': 't2', 'vmstate': 'fa', 'devices': ['fa']}),
    ('snapshot-save', {'job-id': '', 'tag': 't2', 'vmstate': 'a', 'devices': ['a']}),
    ('snapshot-load', {'job-id': 'j8', 'tag': 'nope', 'vmstate': 'a', 'devices': ['a', 'b']}),
    ('snapshot-load', {'job-id': 'j9', 'tag': 't1', 'vmstate': 'zz', 'devices': ['a', 'b']}),
    ('snapshot-load', {'job-id': 'j10', 'tag': 't1', 'vmstate': 'a', 'devices': ['a', 'r']}),
    ('snapshot-save', {'job-id': 'j11', 'tag': 't3', 'vmstate': 'b', 'devices': ['b']}),
    ('snapshot-save', {'job-id': 'j12', 'tag': 't3', 'vmstate': 'a', 'devices': ['a', 'b']}),
    ('snapshot-delete', {'job-id': 'j13', 'tag': 'nope', 'devices': ['a', 'b']}),
    ('snapshot-delete', {'job-id': 'j14', 'tag': 't1', 'devices': ['a', 'r']}),
    ('snapshot-delete', {'job-id': 'j15', 'tag': 't1', 'devices': ['a']}),
    ('snapshot-delete', {'job-id': 'j16', 'tag': 't3', 'devices': ['a', 'b']}),
]


def script(kind):
    tmp = tempfile.mkdtemp(prefix='blockd-snapjobs.')
    try:
        paths = images(tmp)
        if kind == 'qemu':
            d = Qemu(tmp, blockdev_args(paths))
        else:
            d = Daemon(blockd_cmd(), extra=blockdev_args(paths))
        q = d.qmp()
        out = []
        for cmd, args in SCRIPT:
            reply, seq, info = run_job(q, cmd, args)
            out.append((cmd, args['job-id'], reply, seq, info))
        # A second job with an ID in use is refused by the command.
        first = q.cmd('snapshot-delete', {'job-id': 'dup', 'tag': 'x', 'devices': ['a']})
        second = q.cmd('snapshot-delete', {'job-id': 'dup', 'tag': 'x', 'devices': ['a']})
        out.append(('duplicate id', 'dup', first, [], second))
        d.stop()
        out.append(('qemu-img snapshot -l', '', {n: tags(paths[n]) for n in ('a', 'b')}, [], None))
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare():
    a, b = script('qemu'), script('blockd')
    for x, y in zip(a, b):
        check(x == y, 'differs from qemu-system-x86_64 at %s %s:\n  qemu:   %r\n  blockd: %r' %
              (x[0], x[1], x[2:], y[2:]))
    print('%d steps agree with qemu-system-x86_64' % len(a))


def restore():
    """save, write, load: every named device back to the saved data."""
    tmp = tempfile.mkdtemp(prefix='blockd-snapjobs.')
    try:
        paths = images(tmp)
        for n, pat in (('a', 1), ('b', 2)):
            run('qemu-io', '-c', 'write -P %d 0 300k' % pat, paths[n])
        with Daemon(blockd_cmd(), extra=blockdev_args(paths)) as d:
            q = d.qmp()
            sock = d.path('nbd.sock')
            q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
            for n in ('a', 'b'):
                q.cmd('block-export-add', {'type': 'nbd', 'id': n, 'node-name': n, 'writable': True})
            before = {n: connect(sock, n).pread(SIZE, 0) for n in ('a', 'b')}
            _, seq, info = run_job(q, 'snapshot-save', {'job-id': 's', 'tag': 'keep', 'vmstate': 'a',
                                                        'devices': ['a', 'b']})
            check(seq == ['created', 'running', 'waiting', 'pending', 'concluded'] and 'error' not in info,
                  'save: %r %r' % (seq, info))
            for n in ('a', 'b'):
                h = connect(sock, n)
                h.pwrite(b'\x77' * 200000, 100000)
                h.pwrite(b'\x55' * 4096, SIZE - 4096)
                h.flush()
                h.shutdown()
            _, seq, info = run_job(q, 'snapshot-load', {'job-id': 'l', 'tag': 'keep', 'vmstate': 'a',
                                                        'devices': ['a', 'b']})
            check(seq == ['created', 'running', 'waiting', 'pending', 'concluded'] and 'error' not in info,
                  'load: %r %r' % (seq, info))
            for n in ('a', 'b'):
                check(connect(sock, n).pread(SIZE, 0) == before[n], 'device %s restored' % n)
            d.stop()
        for n in ('a', 'b'):
            r = run('qemu-img', 'check', paths[n])
            check(r.returncode == 0, 'qemu-img check %s: %s' % (n, r.stdout))
            r = run('qemu-img', 'snapshot', '-l', paths[n])
            check('keep' in r.stdout and ' 0 B ' in r.stdout, 'the empty VM state: %s' % r.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('save, write, load restores both devices')


def refuse_vm_state():
    """An image QEMU saved VM state into: blockd refuses to load it."""
    tmp = tempfile.mkdtemp(prefix='blockd-snapjobs.')
    try:
        paths = images(tmp)
        qemu = Qemu(tmp, blockdev_args(paths))
        q = qemu.qmp()
        _, seq, info = run_job(q, 'snapshot-save', {'job-id': 's', 'tag': 'vm', 'vmstate': 'a',
                                                    'devices': ['a', 'b']})
        check('error' not in info, 'qemu save: %r' % info)
        qemu.stop()
        with Daemon(blockd_cmd(), extra=blockdev_args(paths)) as d:
            q = d.qmp()
            _, seq, info = run_job(q, 'snapshot-load', {'job-id': 'l', 'tag': 'vm', 'vmstate': 'a',
                                                        'devices': ['a', 'b']})
            check(seq == ['created', 'running', 'aborting', 'concluded'], 'refused load events %r' % seq)
            check(info['error'].startswith("Snapshot 'vm' on 'a' holds ") and 'only QEMU can load it'
                  in info['error'], 'refusal text: %r' % info)
            # Named as the VM state's device, b holds none (QEMU saved it on a): that loads.
            _, seq, info = run_job(q, 'snapshot-load', {'job-id': 'l2', 'tag': 'vm', 'vmstate': 'b',
                                                        'devices': ['a', 'b']})
            check('error' not in info, 'load with the empty VM state of b: %r' % info)
            d.stop()
        for n in ('a', 'b'):
            r = run('qemu-img', 'check', paths[n])
            check(r.returncode == 0, 'qemu-img check %s' % n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('a snapshot with QEMU VM state is refused')


def bitmap_counts(q, node):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            return sorted((b['name'], b['count'], b['recording']) for b in n.get('dirty-bitmaps', []))
    fail('no node %s' % node)


def bitmaps_after_load(kind):
    """snapshot-load refuses a device with dirty bitmaps, enabled or not
    (QEMU's bdrv_snapshot_goto: a revert would change data behind them),
    after reverting the devices named before it; the bitmaps are kept."""
    tmp = tempfile.mkdtemp(prefix='blockd-snapjobs.')
    try:
        paths = images(tmp)
        d = Qemu(tmp, blockdev_args(paths)) if kind == 'qemu' else Daemon(blockd_cmd(), extra=blockdev_args(paths))
        q = d.qmp()
        _, _, info = run_job(q, 'snapshot-save', {'job-id': 's', 'tag': 't', 'vmstate': 'a', 'devices': ['a', 'b']})
        check('error' not in info, '%s save: %r' % (kind, info))
        for name, off in (('on', False), ('off', True)):
            r = q.cmd('block-dirty-bitmap-add', {'node': 'a', 'name': name, 'disabled': off})
            check(r == {'return': {}}, 'add %s: %r' % (name, r))
        before = bitmap_counts(q, 'a')
        sock = os.path.join(tmp, 'nbd.sock')
        q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        for n in ('a', 'b'):
            q.cmd('block-export-add', {'type': 'nbd', 'id': n, 'node-name': n, 'writable': True})
            h = connect(sock, n)
            h.pwrite(b'\x33' * 8192, 65536)
            h.flush()
            h.shutdown()
        _, seq, info = run_job(q, 'snapshot-load', {'job-id': 'l', 'tag': 't', 'vmstate': 'a',
                                                    'devices': ['b', 'a']})
        after = bitmap_counts(q, 'a')
        data = {n: connect(sock, n).pread(SIZE, 0).count(b'\x33') for n in ('a', 'b')}
        d.stop()
        return before, after, seq, info['error'], data
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bitmaps_compare():
    theirs, ours = bitmaps_after_load('qemu'), bitmaps_after_load('blockd')
    check(ours == theirs, 'snapshot-load with bitmaps: qemu %r, blockd %r' % (theirs, ours))
    check(ours[3] == "Could not load snapshot 't' on 'a': Device has active dirty bitmaps", 'text %r' % (ours[3],))
    check(ours[4] == {'a': 8192, 'b': 0}, 'b reverted, a untouched: %r' % (ours[4],))
    check(ours[1] == [('off', 0, False), ('on', 65536, True)], 'bitmaps kept (one 64 KiB granule): %r' % (ours[1],))
    print('snapshot-load refuses a device with dirty bitmaps as QEMU does: %s' % ours[3])


if __name__ == '__main__':
    compare()
    restore()
    refuse_vm_state()
    bitmaps_compare()
    print('PASS')
