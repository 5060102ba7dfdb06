#!/usr/bin/python3
"""An export of an nbd node (the daemon as a proxy in front of another NBD
server), whose small reads and writes blockd runs asynchronously: a batch
of them is sent to the target and answered once all its replies are in
(server/nbd/nbd-transmission.c, execute_async).

1. data: 16 requests in flight at a time, small ones (the asynchronous
   path), large ones and FUA writes mixed, read back through the export
   and straight from the target, compared with a model;
2. errors from the target (nbdkit's error filter) reach the client with
   their code, for small and large requests, on a connection that lives on;
3. the target killed under 16 requests in flight, no reconnect-delay:
   every request ends, in error, within seconds, the client's connection
   and the daemon live on, and once the target is back the next requests
   succeed (the node reconnects);
4. the same with reconnect-delay=10 and the target back after 0.5 s: every
   request succeeds (those in flight when it died too) and the data is
   all there.

Each runs with the nbd node exported itself and with a raw node over it.
1 and 4 run against qemu-storage-daemon too, with the same checks.  2 and 3
do not: qemu-storage-daemon 7.2 drops the client's connection when a read
fails ("Disconnect client, due to: Failed to send reply: reading from file
failed"), where blockd answers the request with its error."""
import os
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, Nbdkit, add_nbd_target, blockd_cmd, check, connect, import_nbd, ok, qsd_cmd  # noqa: E402
from chain_lib import export  # noqa: E402

nbd = import_nbd()
SIZE = 16 << 20
SIZES = (512, 4096, 4096, 8192, 16384, 65536, 1 << 20)   # up to 16 KiB: the batched path


def add_proxy(q, sock, fmt, **extra):
    """Node px on the target at `sock`: the nbd node itself, or (fmt 'raw')
    a raw format node over it, as libvirt stacks them."""
    if fmt == 'raw':
        nbd_node = {'driver': 'nbd', 'server': {'type': 'unix', 'path': sock}}
        nbd_node.update(extra)
        ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'px', 'file': nbd_node}), 'blockdev-add raw')
    else:
        add_nbd_target(q, 'px', sock, **extra)


def export_node(q, d, node):
    """A writable export of `node`, and a client connected to it."""
    return connect(export(q, d, node), node)


def run_aio(h, ops, depth=16, timeout=60, tick=lambda: None):
    """Runs ops (('w', offset, bytes, fua) or ('r', offset, length)) `depth`
    at a time, calling tick() between polls; returns a list of (op, errno
    or 0, data read)."""
    results = [None] * len(ops)
    bufs = {}

    def done(i, err):
        results[i] = err.value
        return 1

    deadline = time.time() + timeout
    for i, op in enumerate(ops):
        while h.aio_in_flight() >= depth:
            h.poll(10)
            tick()
            check(time.time() < deadline, 'requests did not complete')
        if op[0] == 'w':
            buf = nbd.Buffer.from_bytearray(bytearray(op[2]))
            h.aio_pwrite(buf, op[1], lambda err, i=i: done(i, err),
                         flags=nbd.CMD_FLAG_FUA if op[3] else 0)
        else:
            buf = nbd.Buffer(op[2])
            h.aio_pread(buf, op[1], lambda err, i=i: done(i, err))
        bufs[i] = buf
    while h.aio_in_flight() > 0:
        h.poll(10)
        tick()
        check(time.time() < deadline, 'requests did not complete')
    return [(ops[i], results[i], bufs[i].to_bytearray() if ops[i][0] == 'r' and results[i] == 0 else None)
            for i in range(len(ops))]


def random_writes(rng, n, size=SIZE):
    ops = []
    for _ in range(n):
        length = rng.choice(SIZES)
        off = rng.randrange(0, (size - length) // 512) * 512
        ops.append(('w', off, bytes([rng.randrange(256)]) * length, rng.random() < 0.2))
    return ops


def apply(model, ops):
    """Applies writes to the model; returns the offsets of the 512-byte
    sectors more than one of them wrote: in a 16-deep window a later write
    may overtake an earlier one, so those hold either."""
    writers = {}
    for op in ops:
        model[op[1]:op[1] + len(op[2])] = op[2]
        for off in range(op[1], op[1] + len(op[2]), 512):
            writers[off] = writers.get(off, 0) + 1
    return sorted(off for off, n in writers.items() if n > 1)


def compare(name, got, model, what):
    if got != model:
        off = next(i for i in range(0, len(model), 512) if got[i:i + 512] != model[i:i + 512])
        check(False, '%s: %s differs from the model at %d' % (name, what, off))


def read_back(h, size=SIZE):
    ops = [('r', off, 4096) for off in range(0, size, 4096)]
    out = run_aio(h, ops)
    bad = [(op, e) for op, e, _ in out if e]
    check(not bad, 'reads failed: %r' % bad[:3])
    return b''.join(data for _, _, data in out)


def data_case(name, cmd, fmt):
    rng = random.Random(1)
    with Nbdkit('memory', str(SIZE)) as t, Daemon(cmd) as d:
        q = d.qmp()
        add_proxy(q, t.sock, fmt)
        h = export_node(q, d, 'px')
        model = bytearray(SIZE)
        ops = random_writes(rng, 600)
        out = run_aio(h, ops)
        bad = [(op[0], op[1], len(op[2]), e) for op, e, _ in out if e]
        check(not bad, '%s: writes failed: %r' % (name, bad[:3]))
        # Overlaps are resolved by writing every overlapped sector once
        # more, alone, so the whole image is known.
        for off in apply(model, ops):
            op = ('w', off, bytes(model[off:off + 512]), False)
            check(run_aio(h, [op], depth=1)[0][1] == 0, '%s: rewrite failed' % name)
        compare(name, read_back(h), model, 'read back through the export')
        direct = nbd.NBD()
        direct.connect_unix(t.sock)
        compare(name, direct.pread(SIZE, 0), model, 'read straight from the target')
        direct.shutdown()
        # Mixed reads and writes of distinct regions in one window.
        ops = []
        for i in range(400):
            off = (i * 37 % (SIZE // 16384)) * 16384
            if i % 2:
                ops.append(('w', off, bytes([i % 251 + 1]) * 4096, False))
            else:
                ops.append(('r', off + 8192, 8192))
        out = run_aio(h, ops)
        for op, e, data in out:
            check(e == 0, '%s: %r failed: %d' % (name, op[:2], e))
            if op[0] == 'w':
                model[op[1]:op[1] + 4096] = op[2]
        for op, e, data in out:
            if op[0] == 'r':
                # Written regions never overlap the reads (+8192 of a 16 KiB slot).
                check(data == model[op[1]:op[1] + op[2]], '%s: read at %d returned other data' % (name, op[1]))
        compare(name, read_back(h), model, 'read back after the mixed window')
        h.shutdown()
        q.close()
        check(d.stop() == 0, '%s: daemon exit status' % name)


def nbdkit_file(*args, filters=()):
    """nbdkit's file plugin (its data outlives a restart) on a 16 MiB image
    of non-zero data in its own directory, not started yet."""
    t = Nbdkit('file', 'IMAGE', *args, filters=filters)
    img = t.path('disk.img')
    t.args[t.args.index('IMAGE')] = img
    with open(img, 'wb') as f:
        f.write(b'\x55' * SIZE)
    return t


def error_case(name, cmd, fmt):
    """nbdkit's error filter fails every read with EIO and every write with
    ENOSPC; flush still works.  The image is all data: qemu-storage-daemon
    answers a read of a hole without reading.  The daemon's log names the
    failures once each, as failures of node px (not of raw's child)."""
    with nbdkit_file('error-pread=EIO', 'error-pread-rate=1', 'error-pwrite=ENOSPC', 'error-pwrite-rate=1',
                     filters=['error']) as t, Daemon(cmd) as d:
        q = d.qmp()
        add_proxy(q, t.sock, fmt)
        h = export_node(q, d, 'px')
        ops = []
        for i in range(64):
            length = SIZES[i % len(SIZES)]
            ops.append(('w', i * 65536, b'\x42' * length, False) if i % 2 else ('r', i * 65536, length))
        out = run_aio(h, ops)
        for op, e, _ in out:
            want = 28 if op[0] == 'w' else 5   # ENOSPC, EIO
            check(e == want, '%s: %s of %d bytes: errno %r, want %d' % (name, op[0], len(op[2]) if op[0] == 'w'
                                                                      else op[2], e, want))
        h.flush()
        h.shutdown()
        q.close()
        check(d.stop() == 0, '%s: daemon exit status' % name)
        # The first failure of each kind in full, the others counted (at
        # exit at the latest): 32 of each, none twice, all under px.
        lines = [line for line in d.stderr_text().splitlines() if "node '" in line]
        check(all("node 'px'" in line for line in lines), '%s: a failure logged under another node: %r' % (name, lines))
        for op, text in (('read', 'Input/output error'), ('write', 'No space left on device')):
            first = [x for x in lines if re.search(r"%s of \d+ bytes at offset \d+ failed: %s$" % (op, text), x)]
            more = sum(int(m.group(1)) for m in (re.search(r"(\d+) more %s errors? \(%s\)" % (op, text), x)
                                                 for x in lines) if m)
            check(len(first) == 1 and 1 + more == 32, '%s: %d %s failures logged, want 32: %r'
                  % (name, len(first) + more, op, lines))


def killed_case(name, cmd, fmt, delay):
    """The target (nbdkit file, so its data survives) dies under 16
    requests in flight; with reconnect-delay it comes back after 0.5 s."""
    t = nbdkit_file()
    with t, Daemon(cmd) as d:
        q = d.qmp()
        add_proxy(q, t.sock, fmt, **({'reconnect-delay': 10} if delay else {}))
        h = export_node(q, d, 'px')
        rng = random.Random(2)
        # Distinct offsets: no two requests of a window overlap.
        slots = rng.sample(range(SIZE // 4096), 3000)
        ops = [('w', off * 4096, bytes([i % 255 + 1]) * 4096, False) if i % 3 else ('r', off * 4096, 4096)
               for i, off in enumerate(slots)]

        # Killed 0.2 s into the run, with requests in flight, and (with
        # the delay) started again 0.5 s later, both from here: an nbdkit
        # started from a Python thread other than the main one exits at once.
        t0 = time.time()
        state = {'killed': False, 'back': not delay}

        def tick():
            if not state['killed'] and time.time() - t0 > 0.2:
                t.kill()
                state['killed'] = True
            elif state['killed'] and not state['back'] and time.time() - t0 > 0.7:
                t.start()
                state['back'] = True

        out = []
        # Windows of 200 requests, 16 in flight, until well after the kill
        # (and the restart).
        while time.time() - t0 < 1.2 or not state['back']:
            out += run_aio(h, ops[:200], tick=tick)
            ops = ops[200:] + ops[:200]
        check(state['killed'], '%s: the target was never killed' % name)
        errs = [e for _, e, _ in out if e]
        if delay:
            check(not errs, '%s: %d of %d requests failed despite reconnect-delay (errno %r)'
                  % (name, len(errs), len(out), sorted(set(errs))))
            # Every write landed: the last write of each offset is on the target.
            last = {}
            for op, e, _ in out:
                if op[0] == 'w':
                    last[op[1]] = op[2]
            direct = nbd.NBD()
            direct.connect_unix(t.sock)
            for off, data in last.items():
                check(direct.pread(4096, off) == data, '%s: write at %d lost across the reconnect' % (name, off))
            direct.shutdown()
        else:
            check(errs, '%s: no request failed although the target was killed' % name)
            check(set(errs) <= {5, 107, 108}, '%s: unexpected errnos %r' % (name, sorted(set(errs))))
            t.start()
            out = run_aio(h, ops[:200])
            errs = [e for _, e, _ in out if e]
            check(not errs, '%s: %d requests failed after the target came back' % (name, len(errs)))
        check(d.proc.poll() is None, '%s: the daemon died' % name)
        ok(q.cmd('query-named-block-nodes'), '%s: query after the target died' % name)
        h.shutdown()
        q.close()
        check(d.stop() == 0, '%s: daemon exit status' % name)


daemons = [('blockd', blockd_cmd())]
if shutil.which('qemu-storage-daemon'):
    daemons.append(('qemu-storage-daemon', qsd_cmd()))
for name, cmd in daemons:
    for fmt in ('nbd', 'raw'):
        data_case(name, cmd, fmt)
        if name == 'blockd':
            error_case(name, cmd, fmt)
            killed_case(name, cmd, fmt, delay=False)
        killed_case(name, cmd, fmt, delay=True)
print('ok')
