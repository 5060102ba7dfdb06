#!/usr/bin/python3
"""The fault matrix of docs/reliability.md: faults x jobs x on-error policies.

Every cell runs one QMP script against blockd and then against
qemu-storage-daemon (unless QEMU cannot do it; the reason is printed), while
a writer thread writes to the job's source through an NBD export like a
guest and keeps a model of every acknowledged write (mirror_lib.Writer).
A cell asserts, for each daemon:
- the job's events (JOB_STATUS_CHANGE sequence, BLOCK_JOB_ERROR operation
  and action, BLOCK_JOB_COMPLETED/CANCELLED with its error text) and the
  query-block-jobs view of a stopped job (status, paused, io-status), which
  must then be the same for both daemons once normalised (timestamps and
  progress numbers dropped, repeated errors collapsed, QEMU's backup blip
  dropped);
- no acknowledged write is lost: afterwards the target of a completed job,
  or else the source, equals the writer's model; a completed backup equals
  the source at one instant between the command and its reply;
- no dirty bit is lost: an incremental backup's bitmap covers every
  acknowledged write (all of them after a failure, those made after the
  job started after a success; after SIGKILL and a restart, all of them).

    test_fault_matrix.py                 # every cell
    test_fault_matrix.py --list          # the cells
    test_fault_matrix.py target-eio      # one row (or a fault/job prefix, or one cell)
    test_fault_matrix.py target-eio/mirror/stop --blockd-only   (or --qsd-only)
    test_fault_matrix.py -v ...          # also prints what each daemon gave
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, connect, dirty_extents,  # noqa: E402
                        fail, ok, read_all, squash, summary, uncovered, wait_job_end, wait_until)
from mirror_lib import BLOCK, Writer, consistent_point, matches  # noqa: E402

MiB = 1 << 20
SIZE = 16 * MiB
GRAN = 65536
SPEED = 8 * MiB     # a job takes about 2 s until the test lifts the limit
RATE = 40           # guest writes per second (QEMU counts copy-before-write against the speed)
POLICIES = ('report', 'ignore', 'stop', 'enospc')


def initial_image():
    """1 MiB of data (each 4 KiB block different) in every 2 MiB, zeroes between."""
    img = bytearray(SIZE)
    for start in range(0, SIZE, 2 * MiB):
        for off in range(start, start + MiB, BLOCK):
            img[off:off + BLOCK] = (off | 0x8000000000000000).to_bytes(8, 'little') * (BLOCK // 8)
    return img


INITIAL = bytes(initial_image())


# --- one half of a cell: one daemon --------------------------------------------

class Run:
    """A cell's run against one daemon.  `res` is what must be the same for
    both daemons; `notes` is printed."""

    def __init__(self, kind, cell):
        self.kind, self.cell = kind, cell
        self.cmd = blockd_cmd() if kind == 'blockd' else [shutil.which('qemu-storage-daemon')]
        self.res = {}
        self.notes = []
        self.cleanups = []
        self.tmp = tempfile.mkdtemp(prefix='blockd-faults.')

    def path(self, name):
        return os.path.join(self.tmp, name)

    def check(self, cond, msg):
        check(cond, '%s [%s]: %s' % (self.cell.name, self.kind, msg))

    def later(self, fn):
        self.cleanups.append(fn)
        return fn

    def close(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # cleanup must go on
                print('cleanup: %r' % (e,), file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def daemon(self, extra=()):
        d = Daemon(self.cmd, extra=extra)
        self.later(lambda: d.__exit__(None, None, None))
        q = d.qmp()
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}),
           'nbd-server-start')
        return d, q

    def nbdkit(self, *args, filters=(), sock=None):
        t = Nbdkit(*args, filters=filters, sock=sock)
        self.later(t.close)
        return t.start()

    def writer(self, d, seed=1):
        w = Writer(d.path('nbd.sock'), 'src', bytearray(self.image), rate=RATE, seed=seed,
                   tolerate_errors=True)
        self.later(lambda: (w.halt.set(), w.join(10)))
        w.start()
        return w


def export_source(q):
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-src', 'node-name': 'src', 'name': 'src',
                                  'writable': True}), 'export src')


def write_file(path, data, size=SIZE):
    with open(path, 'wb') as f:
        f.write(data)
        f.truncate(size)


def prepare_source(q, d, job, persistent=False):
    """Source and target start empty, as after a full backup of an empty
    disk; for an incremental backup b0 is added then.  Then INITIAL's data
    is written through the export (so b0 has half the disk dirty)."""
    if job == 'backup-inc':
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b0', 'granularity': GRAN,
                                            'persistent': persistent}), 'bitmap')
    h = connect(d.path('nbd.sock'), 'src')
    for off in range(0, SIZE, MiB):
        chunk = INITIAL[off:off + MiB]
        if chunk.count(0) != len(chunk):
            h.pwrite(chunk, off)
    h.flush()
    h.shutdown()


def job_info(q):
    """query-block-jobs of the one job, as compared between daemons."""
    jobs = q.cmd('query-block-jobs')['return']
    if not jobs:
        return None
    return {k: jobs[0][k] for k in ('status', 'paused', 'io-status', 'ready', 'type')}


def status_is(job, *states):
    return lambda e: (e['event'] == 'JOB_STATUS_CHANGE' and e['data']['id'] == job and
                      e['data']['status'] in states)


def is_error(e):
    return e['event'] == 'BLOCK_JOB_ERROR'


def collapse_retries(seq):
    """Collapses repeated (BLOCK_JOB_ERROR stop, paused, running) cycles into one."""
    out = list(seq)
    i = 0
    while i + 6 <= len(out):
        if out[i][0] == 'BLOCK_JOB_ERROR' and out[i:i + 3] == out[i + 3:i + 6]:
            del out[i + 3:i + 6]
        else:
            i += 1
    return out


def run_to(run, q, job, goal, timeout=60):
    """Events until the job reaches `goal` ('ready') or ends.  A job that an
    error policy stops again after it was resumed (QEMU's nbd client fails
    the first request after the server came back) is resumed again."""
    evs = []
    while True:
        evs += wait_until(q, status_is(job, goal, 'paused', 'null'), timeout)
        status = evs[-1]['data']['status']
        if status != 'paused':
            return evs
        errors = [e for e in evs if is_error(e)]
        if not errors or errors[-1]['data']['action'] != 'stop' or len(evs) < 2 or evs[-2] is not errors[-1]:
            continue  # not stopped by an error: QEMU's pause blip at the start of a backup
        run.notes.append('stopped again after resume (resumed again)')
        run.check(len(run.notes) < 20, 'the job keeps stopping')
        time.sleep(0.5)
        ok(q.cmd('job-resume', {'id': job}), 'resume again')


def end_event(evs):
    done = [e for e in evs if e['event'] in ('BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED')]
    return done[-1] if done else None


def succeeded(evs):
    e = end_event(evs)
    return e is not None and e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data']


def acked(w, after=0):
    """(offset, length) of the acknowledged writes numbered above `after`."""
    return [(w.log[n - 1], BLOCK) for n in range(after + 1, w.count + 1) if n not in w.failed]


# --- data checks ----------------------------------------------------------------

def check_source(run, w, data, what='source'):
    bad = matches(data, w.image, w.maybe)
    run.check(bad is None, '%s differs from the acknowledged writes at offset %s (%d writes, %d failed)'
              % (what, bad, w.count, len(w.failed)))


def check_point_in_time(run, w, target, window):
    """A completed backup holds the source as of one instant between the
    command and its reply."""
    point = consistent_point(target, INITIAL, w.log, w.failed)
    run.check(point is not None, 'the backup is not the source at any point in time (first difference '
              'from the initial image at %s)' % matches(target, INITIAL))
    lo, hi = point
    run.check(lo <= window[1] and hi >= window[0], 'backup point %r outside the job start window %r'
              % (point, window))


def initial_writes():
    """The writes prepare_source made (acknowledged before the writer started)."""
    return [(off, MiB) for off in range(0, SIZE, MiB) if INITIAL[off:off + MiB].count(0) != MiB]


def check_bitmap(run, q, d, w, after, what, initial=True):
    """Every acknowledged write numbered above `after` (after=0: and those
    of prepare_source too, unless not `initial`) is dirty in b0."""
    runs = dirty_extents(q, d, 'src', 'b0', SIZE)
    missing = uncovered(runs, acked(w, after) + (initial_writes() if after == 0 and initial else []))
    run.check(not missing, 'bitmap b0 misses %d acknowledged writes (%s), e.g. %r'
              % (len(missing), what, missing[:3]))
    return runs


# --- cells ---------------------------------------------------------------------

class Cell:
    def __init__(self, fault, job, policy, fn, qsd=None):
        self.fault, self.job, self.policy, self.fn = fault, job, policy, fn
        self.qsd_skip = qsd  # None: run against qemu-storage-daemon too; else why not
        self.name = '/'.join(x for x in (fault, job, policy) if x)


CELLS = []


def cell(fault, job, policy=None, qsd=None):
    def add(fn):
        CELLS.append(Cell(fault, job, policy, fn, qsd))
        return fn
    return add


# Error rows: what fails, how, and how the fault is switched on and off.
ERROR_ROWS = {
    'source-eio': dict(side='source', errno='EIO', text='Input/output error'),
    'target-eio': dict(side='target', errno='EIO', text='Input/output error'),
    'target-enospc': dict(side='target', errno='ENOSPC', text='No space left on device'),
    'target-disconnect': dict(side='target', errno='EIO', text='Input/output error', kill=True),
}


def expected_action(row, policy):
    if policy == 'enospc':
        return 'stop' if ERROR_ROWS[row]['errno'] == 'ENOSPC' else 'report'
    return policy


def start_job(q, job, row_side=None, policy=None, speed=SPEED, **extra):
    """blockdev-backup (job 'backup': sync=full, 'backup-inc': incremental
    with b0) or blockdev-mirror (sync=full) of src to tgt, named j."""
    args = {'job-id': 'j', 'device': 'src', 'target': 'tgt', 'sync': 'full', 'speed': speed}
    if job.startswith('backup'):
        args['x-perf'] = {'max-chunk': GRAN}
        if job == 'backup-inc':
            args.update(sync='incremental', bitmap='b0')
    else:
        args.update(granularity=GRAN)
        args['buf-size'] = MiB
    if policy:
        args['on-%s-error' % row_side] = policy
    args.update(extra)
    ok(q.cmd('blockdev-backup' if job.startswith('backup') else 'blockdev-mirror', args), 'start ' + job)


def wait_progress(q, timeout=20):
    deadline = time.time() + timeout
    while True:
        jobs = q.cmd('query-block-jobs')['return']
        if not jobs or jobs[0]['offset'] > 0:
            return
        if time.time() > deadline:
            fail('the job made no progress: %r' % jobs)
        time.sleep(0.02)


def finish_checks(run, q, d, t, w, job, evs, window, read_source, normalise=None):
    """The events to compare, and the data checks: nothing acknowledged
    lost (the target of a completed job, else the source, equals the
    model; a completed backup is the source at one instant of `window`),
    no dirty bit lost (b0 covers the writes since the start after a
    success, all of them otherwise)."""
    seq = squash(summary(evs))
    run.res['events'] = normalise(seq) if normalise else seq
    run.check(q.cmd('query-block-jobs')['return'] == [], 'a job is left')
    if job == 'mirror' and succeeded(evs):
        check_source(run, w, read_all(t.sock), 'the target after the pivot')
    else:
        check_source(run, w, read_source())
    if job.startswith('backup') and succeeded(evs):
        check_point_in_time(run, w, read_all(t.sock), window)
    if job == 'backup-inc':
        if succeeded(evs):
            check_bitmap(run, q, d, w, window[1], 'made after the backup started')
        else:
            check_bitmap(run, q, d, w, 0, 'the backup failed: all of them')
    run.notes.append('%d guest writes, %d failed' % (w.count, len(w.failed)))


def error_cell(run, row, job, policy):
    spec = ERROR_ROWS[row]
    action = expected_action(row, policy)
    d, q = run.daemon()
    run.image = INITIAL
    flag = run.path('fail')
    err_args = ['error=' + spec['errno'], 'error-file=' + flag]
    # The source: a file node, or (source-eio) an nbd node on nbdkit whose reads fail.
    if spec['side'] == 'source':
        s = run.nbdkit('memory', str(SIZE), 'error-pread-rate=100%', *err_args, filters=['error'])
        add_nbd_target(q, 'src', s.sock)
        read_source = lambda: read_all(s.sock)  # noqa: E731
    else:
        write_file(run.path('src.img'), b'')
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': run.path('src.img')}), 'src')
        read_source = lambda: read_all(d.path('nbd.sock'), 'src')  # noqa: E731
    export_source(q)
    # The target: nbdkit memory (failing while `flag` exists), or a file
    # served by nbdkit that the test kills and restarts on the same socket.
    if spec.get('kill'):
        write_file(run.path('tgt.img'), b'')
        t = run.nbdkit('file', run.path('tgt.img'), sock=run.path('t.sock'))
        fault_on, fault_off = t.kill, t.start
    else:
        if spec['side'] == 'target':
            t = run.nbdkit('memory', str(SIZE), 'error-rate=100%', *err_args, filters=['error'])
        else:
            t = run.nbdkit('memory', str(SIZE))
        fault_on = lambda: open(flag, 'w').close()  # noqa: E731
        fault_off = lambda: os.unlink(flag)  # noqa: E731
    add_nbd_target(q, 'tgt', t.sock)
    prepare_source(q, d, job)
    w = run.writer(d)
    time.sleep(0.3)                      # writes before the job (in b0)
    window0 = w.count
    start_job(q, job, spec['side'], policy)
    window = (window0, w.started)
    evs = []
    wait_progress(q)
    fault_on()
    n_fault = w.started
    evs += wait_until(q, is_error, 30)
    run.check(evs[-1]['data']['action'] == action, 'action %r, expected %r' % (evs[-1]['data'], action))
    if action == 'report':
        evs += wait_job_end(q, 'j')
        fault_off()
    else:
        if action == 'ignore':
            evs += wait_until(q, is_error, 30)          # retried, failed again
        else:
            evs += wait_until(q, status_is('j', 'paused'), 30)
            run.res['stopped'] = job_info(q)
            r = q.cmd('job-pause', {'id': 'j'})
            run.res['pause-stopped'] = r.get('error', {}).get('desc')
            time.sleep(0.3)                          # guests write meanwhile
        n_off = w.started
        fault_off()
        if spec.get('kill'):
            time.sleep(0.5)
        if job.startswith('backup') and spec['side'] == 'target' and action == 'stop':
            # copy-before-write to a failing target fails the guest's write
            errs = sorted(set(str(e) for n, e in zip(sorted(w.failed), w.errors) if n_fault < n <= n_off))
            run.res['guest-write-errors'] = errs
        ok(q.cmd('block-job-set-speed', {'device': 'j', 'speed': 0}), 'set-speed 0')
        if action == 'stop':
            ok(q.cmd('job-resume', {'id': 'j'}), 'resume')
        if job == 'mirror':
            evs += run_to(run, q, 'j', 'ready')
            run.res['ready'] = job_info(q)
            time.sleep(0.2)                          # mirrored writes after READY
            if policy == 'enospc':
                ok(q.cmd('job-cancel', {'id': 'j'}), 'cancel')
            else:
                ok(q.cmd('job-complete', {'id': 'j'}), 'complete')
            evs += wait_job_end(q, 'j')
        else:
            evs += run_to(run, q, 'j', 'null')
    w.stop()
    done = end_event(evs)
    if done and 'error' in done['data']:
        run.check(done['data']['error'] == spec['text'], 'error text %r' % done['data']['error'])
    finish_checks(run, q, d, t, w, job, evs, window, read_source,
                  normalise=collapse_retries if spec.get('kill') else None)
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')


for _row in ERROR_ROWS:
    for _job in ('backup', 'backup-inc', 'mirror'):
        for _policy in POLICIES:
            cell(_row, _job, _policy)(lambda run, r=_row, j=_job, p=_policy: error_cell(run, r, j, p))


def file_source(run, q, d, job, path=None):
    """src: a raw file node (exported), data written as prepare_source says."""
    path = path or run.path('src.img')
    write_file(path, b'')
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': path}), 'src')
    export_source(q)
    prepare_source(q, d, job)
    run.image = INITIAL
    return path


def reconnect_cell(run, job):
    """The target's server dies for 0.5 s; the nbd node has reconnect-delay=10:
    no error at all, the job goes on once the server is back."""
    d, q = run.daemon()
    file_source(run, q, d, job)
    write_file(run.path('tgt.img'), b'')
    t = run.nbdkit('file', run.path('tgt.img'), sock=run.path('t.sock'))
    add_nbd_target(q, 'tgt', t.sock, **{'reconnect-delay': 10})
    w = run.writer(d)
    time.sleep(0.3)
    window0 = w.count
    start_job(q, job)
    window = (window0, w.started)
    wait_progress(q)
    t.kill()
    time.sleep(0.5)
    t.start()
    ok(q.cmd('block-job-set-speed', {'device': 'j', 'speed': 0}), 'set-speed 0')
    evs = run_to(run, q, 'j', 'ready')
    if job == 'mirror':
        time.sleep(0.2)
        ok(q.cmd('job-complete', {'id': 'j'}), 'complete')
        evs += wait_job_end(q, 'j')
    w.stop()
    run.check(not any(is_error(e) for e in evs), 'errors despite reconnect-delay: %r' % summary(evs))
    finish_checks(run, q, d, t, w, job, evs, window, lambda: read_all(d.path('nbd.sock'), 'src'))
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')


for _job in ('backup', 'backup-inc', 'mirror'):
    cell('target-reconnect', _job)(lambda run, j=_job: reconnect_cell(run, j))


def slow_cell(run, job, end):
    """A target whose writes take 0.1 s each (nbdkit's delay filter), no speed
    limit: the job completes (mirror in write-blocking mode: READY, then
    complete) or is cancelled (a background mirror, before READY) while
    guests write, with nothing timed out or lost; copy-before-write and
    write-blocking make guest writes wait for the slow target."""
    d, q = run.daemon()
    file_source(run, q, d, job)
    t = run.nbdkit('memory', str(SIZE), 'delay-write=100ms', 'delay-zero=100ms', filters=['delay'])
    add_nbd_target(q, 'tgt', t.sock)
    w = run.writer(d)
    time.sleep(0.3)
    window0 = w.count
    # A background mirror converges only when guests dirty less than the
    # target absorbs; write-blocking converges however slow the target is.
    extra = {'copy-mode': 'write-blocking'} if job == 'mirror' and end == 'complete' else {}
    start_job(q, job, speed=0, **extra)
    window = (window0, w.started)
    if end == 'cancel':
        wait_progress(q)
        ok(q.cmd('job-cancel', {'id': 'j'}), 'cancel')
        t0 = time.time()
        evs = wait_job_end(q, 'j')
        run.check(time.time() - t0 < 10, 'cancel took %.1f s' % (time.time() - t0))
    else:
        evs = run_to(run, q, 'j', 'ready')
        if job == 'mirror':
            time.sleep(0.3)
            ok(q.cmd('job-complete', {'id': 'j'}), 'complete')
            evs += wait_job_end(q, 'j')
    w.stop()
    finish_checks(run, q, d, t, w, job, evs, window, lambda: read_all(d.path('nbd.sock'), 'src'))
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')


for _job, _end in (('backup', 'complete'), ('backup-inc', 'complete'), ('mirror', 'complete'),
                   ('mirror', 'cancel')):
    cell('slow-target', _job, _end)(lambda run, j=_job, e=_end: slow_cell(run, j, e))


def kill_cell(run, job):
    """SIGKILL of the daemon in the middle of the job, while a guest writes;
    then a restart on the same image.  Survives: every acknowledged write (on
    the source), no job; with blockd, the persistent bitmap b0 with every
    acknowledged write marked, also those made before the backup started
    (the backup never finished)."""
    persistent = run.kind == 'blockd' and job == 'backup-inc'
    if job == 'backup-inc' and run.kind != 'blockd':
        run.notes.append('bitmap after restart not checked: QEMU 7.2 cannot keep persistent bitmaps '
                         'on raw images')
    d, q = run.daemon()
    img = run.path('src.img')
    write_file(img, b'')
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'src')
    export_source(q)
    if job == 'backup-inc':
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b0', 'granularity': GRAN,
                                            'persistent': persistent}), 'bitmap')
    prepare_source(q, d, 'backup' if job == 'backup-inc' else job)
    run.image = INITIAL
    t = run.nbdkit('memory', str(SIZE))
    add_nbd_target(q, 'tgt', t.sock)
    w = run.writer(d)
    time.sleep(0.3)
    start_job(q, job)
    wait_progress(q)
    time.sleep(0.3)
    q.cmd('query-jobs')          # events before its reply are queued
    evs = list(q.events)
    d.proc.kill()
    d.proc.wait()
    w.join(10)
    run.check(w.disconnected, 'the writer did not notice the kill')
    run.res['events-before-kill'] = squash(summary(evs))
    run.notes.append('%d guest writes, %d failed' % (w.count, len(w.failed)))

    d, q = run.daemon()
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'src again')
    run.res['jobs-after-restart'] = q.cmd('query-jobs')['return']
    check_source(run, w, read_file(img), 'the source image after SIGKILL')
    if persistent:
        nodes = {n['node-name']: n for n in q.cmd('query-named-block-nodes')['return']}
        bms = {b['name']: b for b in nodes['src'].get('dirty-bitmaps', [])}
        run.check('b0' in bms and not bms['b0'].get('inconsistent'), 'bitmap after SIGKILL: %r' % bms)
        check_bitmap(run, q, d, w, 0, 'after SIGKILL during the backup: all of them')
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')


def read_file(path):
    with open(path, 'rb') as f:
        data = f.read()
    return data + bytes(SIZE - len(data))


for _job in ('backup', 'backup-inc', 'mirror'):
    cell('daemon-kill', _job)(lambda run, j=_job: kill_cell(run, j))


class CellSkipped(Exception):
    pass


def small_fs(run, size_kib):
    """A tmpfs of size_kib KiB mounted in the run's directory (unmounted at the end)."""
    fs = run.path('fs')
    os.mkdir(fs)
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%dk,mode=0755' % size_kib, 'blockd-faults', fs],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise CellSkipped('cannot mount a tmpfs (%s)' % r.stderr.strip())
    run.later(lambda: subprocess.run(['umount', '-l', fs], capture_output=True))
    return fs


def fill(path, leave_kib):
    """Fills the file system of `path` with the file `path`, then frees leave_kib KiB."""
    with open(path, 'wb') as f:
        try:
            while True:
                f.write(b'\xff' * 65536)
                f.flush()
        except OSError:
            pass
        size = f.tell()
    os.truncate(path, max(0, size - leave_kib * 1024))


def bitmaps_of(q, node='src'):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            return {b['name']: b for b in n.get('dirty-bitmaps', [])}
    return {}


def disk_full_cell(run, job):
    """The image and its bitmap sidecar on a small tmpfs that fills up while a
    guest writes (a persistent bitmap b0 records): writes to new blocks fail
    with ENOSPC and are not acknowledged, the daemon stays up, b0 covers
    every acknowledged write; a backup (incremental, b0) or mirror running
    meanwhile carries on (only the guest's writes fail); after space is
    freed, writes, new persistent bitmaps and a restart work, and b0 still
    covers every acknowledged write."""
    fs = small_fs(run, SIZE // 1024 + 1024)
    img = os.path.join(fs, 'src.img')
    write_file(img, b'')
    d, q = run.daemon()
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'src')
    export_source(q)
    prepare_source(q, d, 'backup-inc', persistent=True)
    run.image = INITIAL
    filler = os.path.join(fs, 'filler')
    fill(filler, 40)
    t = run.nbdkit('memory', str(SIZE))
    add_nbd_target(q, 'tgt', t.sock)
    w = run.writer(d)
    evs = []
    if job:
        time.sleep(0.2)
        window0 = w.count
        start_job(q, job, speed=SIZE // 4)
        window = (window0, w.started)
    deadline = time.time() + 30
    while len(w.failed) < 10:
        run.check(time.time() < deadline and w.is_alive(), 'writes did not fail: %d writes' % w.count)
        time.sleep(0.05)
    run.check(set(w.errors) == {'ENOSPC'}, 'guest writes failed with %r' % sorted(set(w.errors)))
    run.check(d.proc.poll() is None, 'the daemon died on a full disk')
    # A metadata change needs a new sidecar (written beside, then renamed).
    r = q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b1', 'persistent': True})
    run.res['add-while-full'] = r.get('error', {}).get('desc', 'ok')
    run.check('error' not in r or 'b1' not in bitmaps_of(q), 'b1 refused but present: %r' % bitmaps_of(q))
    run.check(bitmaps_of(q)['b0']['recording'], 'b0 stopped recording: %r' % bitmaps_of(q))
    if job:
        ok(q.cmd('block-job-set-speed', {'device': 'j', 'speed': 0}), 'set-speed 0')
        evs += run_to(run, q, 'j', 'ready')
        if job == 'mirror':
            ok(q.cmd('job-cancel', {'id': 'j'}), 'cancel')
            evs += wait_job_end(q, 'j')
        run.check(not any(is_error(e) for e in evs), 'the job saw errors: %r' % summary(evs))
        run.res['events'] = squash(summary(evs))
    os.unlink(filler)
    freed = w.count
    deadline = time.time() + 30
    while len(acked(w, freed)) < 10:
        run.check(time.time() < deadline and w.is_alive(), 'writes still fail after space was freed')
        time.sleep(0.05)
    w.stop()
    run.notes.append('%d guest writes, %d failed with ENOSPC' % (w.count, len(w.failed)))
    check_source(run, w, read_all(d.path('nbd.sock'), 'src'))
    if job and job.startswith('backup'):
        check_point_in_time(run, w, read_all(t.sock), window)
        check_bitmap(run, q, d, w, window[1], 'made after the backup started')
    else:
        check_bitmap(run, q, d, w, 0, 'all of them')
    ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b2', 'persistent': True}), 'add after freeing')
    before = bitmaps_of(q)
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')
    # Restart: the sidecar is intact and b0 still covers everything.
    d, q = run.daemon()
    ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'src again')
    after = bitmaps_of(q)
    run.check(set(after) == set(b for b in before if before[b]['persistent']) and
              not any(b.get('inconsistent') for b in after.values()),
              'bitmaps after a restart: %r (before: %r)' % (after, before))
    run.check(after['b0']['count'] == before['b0']['count'], 'b0 changed over the restart')
    if not job:
        check_bitmap(run, q, d, w, 0, 'after the restart')
    run.check('damaged' not in d.stderr_text(), 'sidecar damaged: %s' % d.stderr_text())
    q.close()
    run.check(d.stop() == 0, 'daemon exit status')


_NO_QSD = 'QEMU 7.2 cannot keep persistent bitmaps on raw images'
for _job in (None, 'backup-inc', 'mirror'):
    cell('disk-full', _job or 'writes', qsd=_NO_QSD)(lambda run, j=_job: disk_full_cell(run, j))


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('-')]
    flags = [a for a in sys.argv[1:] if a.startswith('--')]
    if '--list' in flags:
        for c in CELLS:
            print(c.name + ('' if c.qsd_skip is None else '   (blockd only: %s)' % c.qsd_skip))
        return
    cells = [c for c in CELLS if not args or any(c.name == a or c.name.startswith(a.rstrip('/') + '/')
                                                  for a in args)]
    check(cells, 'no cell matches %r' % args)
    have_qsd = shutil.which('qemu-storage-daemon') is not None and '--blockd-only' not in flags
    if not have_qsd:
        print('qemu-storage-daemon halves skipped: %s' % ('--blockd-only' if '--blockd-only' in flags
                                                          else 'qemu-storage-daemon is not installed'))
    t0 = time.time()
    for c in cells:
        t1 = time.time()
        results = {}
        for kind in ('blockd', 'qsd'):
            if kind == 'qsd' and (not have_qsd or c.qsd_skip):
                if c.qsd_skip and have_qsd:
                    print('  %s: qemu-storage-daemon skipped: %s' % (c.name, c.qsd_skip))
                continue
            if kind == 'blockd' and '--qsd-only' in flags:
                continue
            run = Run(kind, c)
            try:
                c.fn(run)
            except CellSkipped as e:
                print('skip %s [%s]: %s' % (c.name, kind, e))
                run.notes.append('skipped: %s' % e)
                results[kind] = run
                continue
            except SystemExit:
                print('FAIL in %s [%s] after %.1f s' % (c.name, kind, time.time() - t1), file=sys.stderr)
                raise
            finally:
                run.close()
            results[kind] = run
        if 'qsd' in results and 'blockd' in results:
            mine, theirs = results['blockd'].res, results['qsd'].res
            for k in sorted(set(mine) | set(theirs)):
                check(mine.get(k) == theirs.get(k), '%s: %s differs from qemu-storage-daemon:\n  blockd %r\n'
                      '  qsd    %r' % (c.name, k, mine.get(k), theirs.get(k)))
        if '-v' in sys.argv[1:]:
            for kind, r in results.items():
                for k, v in sorted(r.res.items()):
                    print('  %s %s: %r' % (kind, k, v))
        notes = '; '.join('%s: %s' % (k, ', '.join(sorted(set(r.notes)))) for k, r in results.items() if r.notes)
        print('ok %-40s %5.1fs  %s' % (c.name, time.time() - t1, notes))
        sys.stdout.flush()
    print('fault matrix: %d cells OK in %.0f s' % (len(cells), time.time() - t0))


main()
