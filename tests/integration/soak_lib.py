"""Verified NBD clients for the soak test, many per thread (libnbd's aio API).

    loop = IoLoop([Client(...), ...]); loop.start()
    ...; loop.allow_reconnect.clear(); loop.wait_all_connected(60)
    loop.finish(verify=True)        # quiesce, read back every region, disconnect
    stats = loop.stats()

Each client owns a disjoint region of an export and keeps a model of it: the
bytes it expects (`model`) and which of them are known (`known`: 0 after a
trim, whose result the protocol leaves unspecified, until rewritten).  It
keeps a few requests in flight, never two overlapping ones, so the model
changes only when a write completes and every read or block status sees
exactly the model as it was when it was sent.  Every problem (an I/O error,
a mismatch, a lost dirty bit, a dead connection, a stuck request) is counted
and the first ones are kept with details.
"""

import os
import random
import select
import threading
import time

from backup_lib import import_nbd

nbd = import_nbd()

SECTOR = 512
MAX_IO = 256 << 10
STUCK = 180           # seconds a request may stay unanswered (ASan, 2 busy cores, job pauses)
ONES = b'\x01' * (4 << 20)
ZEROS = bytes(4 << 20)

# Weights of the operations a connected client issues.
MIX = [('read', 34), ('write', 28), ('fua', 8), ('zero', 8), ('trim', 5), ('flush', 4), ('status', 13)]
OPS = [op for op, w in MIX for _ in range(w)]


class Stats:
    FIELDS = ('requests', 'bytes_written', 'bytes_verified', 'io_errors', 'mismatches',
              'connects', 'abrupt_closes', 'status_checks')

    def __init__(self):
        for f in self.FIELDS:
            setattr(self, f, 0)
        self.problems = []  # the first few, as text

    def add(self, other):
        for f in self.FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.problems += other.problems


class Client:
    """One connection (reconnected as needed) doing verified I/O on [base, base+length)."""

    def __init__(self, cid, export, base, initial, unix=None, tcp=None, seed=0,
                 reconnect=False, sluggish=False, dirty_context=None, dirty_granularity=None, depth=3):
        self.cid, self.export, self.base = cid, export, base
        self.length = len(initial)
        self.model = bytearray(initial)
        self.known = bytearray(ONES[:self.length])
        # Sectors changed by a completed write, write-zeroes or trim: the
        # exported dirty bitmap must show each of them dirty from then on.
        self.touched = bytearray(self.length // SECTOR) if dirty_context else None
        self.dirty_context, self.dirty_granularity = dirty_context, dirty_granularity
        self.unix, self.tcp = unix, tcp
        self.rng = random.Random(seed)
        self.reconnect, self.depth = reconnect, depth
        # A sluggish client now and then stops reading its socket for a
        # moment: the server's replies back up while it holds their data.
        self.sluggish, self.next_stall, self.stall_until = sluggish, 0, 0
        self.h = None
        self.state = 'idle'          # idle, connecting, ready, draining, closing, off
        self.inflight = {}           # id -> op
        self.next_id = 0
        self.next_cycle = 0
        self.abrupt = False
        self.stats = Stats()
        self.verify_queue = None     # offsets still to read back in the final pass
        self.verifying = False
        self.stopping = False

    def name(self):
        return 'client %d (%s over %s, [%d, %d))' % (self.cid, self.export, 'tcp' if self.tcp else 'unix',
                                                    self.base, self.base + self.length)

    def problem(self, kind, text):
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        if len(self.stats.problems) < 10:
            self.stats.problems.append('%s: %s: %s' % (kind, self.name(), text))

    # Connection life cycle --------------------------------------------------

    def open(self, now):
        h = nbd.NBD()
        h.set_export_name(self.export)
        h.add_meta_context('base:allocation')
        if self.dirty_context:
            h.add_meta_context(self.dirty_context)
        try:
            if self.tcp:
                h.aio_connect_tcp('127.0.0.1', str(self.tcp))
            else:
                h.aio_connect_unix(self.unix)
        except nbd.Error as e:
            self.problem('io_errors', 'cannot connect: %s' % e)
            self.next_cycle = now + 1
            return
        self.h, self.state = h, 'connecting'
        self.connect_started = now
        self.stats.connects += 1

    def ready(self, now):
        h = self.h
        self.can = {'fua': h.can_fua(), 'zero': h.can_zero(), 'trim': h.can_trim(),
                    'flush': h.can_flush()}
        if self.dirty_context and not h.can_meta_context(self.dirty_context):
            self.problem('io_errors', 'the export does not offer %s' % self.dirty_context)
        self.state = 'ready'
        self.next_cycle = now + self.rng.uniform(2, 8)

    def drop(self):
        """Forgets the handle; libnbd closes the socket (in-flight reads are abandoned)."""
        self.h = None
        self.inflight.clear()

    def reading(self, now):
        """False while a sluggish client ignores its socket."""
        if not self.sluggish or self.state != 'ready' or self.stopping:
            return True
        if now >= self.next_stall:
            self.stall_until = now + self.rng.uniform(0.05, 0.4)
            self.next_stall = now + self.rng.uniform(1, 3)
        return now >= self.stall_until

    def step(self, now, loop):
        if self.state == 'idle':
            if now < self.next_cycle:
                return
            if not self.stopping or self.verify_queue:
                self.open(now)
            else:
                self.state = 'off'
            return
        h = self.h
        if self.state == 'connecting':
            if h.aio_is_ready():
                self.ready(now)
            elif h.aio_is_dead() or h.aio_is_closed():
                self.problem('io_errors', 'connection failed during the handshake')
                self.drop()
                self.state = 'idle'
            elif now - self.connect_started > STUCK:
                self.problem('io_errors', 'handshake did not finish in %d s' % STUCK)
                self.drop()
                self.state = 'idle'
            return
        if self.state in ('ready', 'draining') and (h.aio_is_dead() or h.aio_is_closed()):
            self.problem('io_errors', 'the connection died with %d requests in flight' % len(self.inflight))
            self.drop()
            self.state = 'idle'
            return
        for op in self.inflight.values():
            if now - op['t'] > STUCK and not op.get('stuck'):
                op['stuck'] = True
                self.problem('io_errors', '%s at %d+%d unanswered for %d s'
                             % (op['op'], op['off'], op['len'], STUCK))
        if self.state == 'ready':
            if self.stopping:
                if self.verify_queue:
                    # The read-back starts once the last ordinary request is
                    # answered, so it never overlaps a write.
                    if self.verifying or not self.inflight:
                        self.verifying = True
                        self.issue_verify_reads()
                    return
                if not self.inflight:
                    h.aio_disconnect()
                    self.state = 'closing'
                return
            if self.reconnect and now >= self.next_cycle and loop.allow_reconnect.is_set():
                self.state = 'draining'
                self.abrupt = self.rng.random() < 0.35
                return
            if loop.quiesce.is_set():
                return
            while len(self.inflight) < self.depth:
                if not self.issue(now):
                    break
        elif self.state == 'draining':
            # An abrupt close may abandon reads, never writes: a write whose
            # reply was lost could land after the next connection rewrote
            # the range, and the model could not tell.
            writes = [op for op in self.inflight.values() if op['op'] not in ('read', 'status')]
            if self.abrupt and not writes:
                self.stats.abrupt_closes += 1
                self.drop()
                self.state = 'idle'
            elif not self.inflight:
                h.aio_disconnect()
                self.state = 'closing'
        elif self.state == 'closing':
            if h.aio_is_closed() or h.aio_is_dead():
                self.drop()
                self.state = 'off' if self.stopping else 'idle'

    # Requests ---------------------------------------------------------------

    def pick_range(self, maxlen, aligned):
        for _ in range(4):
            if aligned:
                n = 4096 * self.rng.randint(1, maxlen // 4096)
                off = 4096 * self.rng.randrange((self.length - n) // 4096 + 1)
            else:
                n = self.rng.randint(SECTOR, maxlen)
                off = self.rng.randrange(self.length - n + 1)
            if all(off + n <= o['off'] or o['off'] + o['len'] <= off for o in self.inflight.values()
                   if o['len']):
                return off, n
        return None

    def issue(self, now):
        kind = self.rng.choice(OPS)
        if kind in ('fua', 'zero', 'trim', 'flush') and not self.can[kind]:
            kind = 'write' if kind == 'fua' else 'read'
        if kind == 'flush':
            if any(o['op'] == 'flush' for o in self.inflight.values()):
                return False
            return self.send({'op': 'flush', 'off': 0, 'len': 0, 't': now})
        maxlen = (1 << 20) if kind in ('zero', 'trim', 'status') else MAX_IO
        r = self.pick_range(maxlen, self.rng.random() < 0.5)
        if r is None:
            return False
        return self.send({'op': kind, 'off': r[0], 'len': r[1], 't': now})

    def send(self, op):
        h, i = self.h, self.next_id
        self.next_id += 1
        op['id'] = i
        done = (lambda err, i=i: self.complete(i, err.value))
        where = self.base + op['off']
        kind = op['op']
        try:
            # Plain bytearrays, not nbd.Buffer: libnbd 1.14's Python binding
            # never frees an nbd.Buffer passed to an aio call (the process
            # grows by every byte read or written).
            if kind == 'read':
                op['buf'] = bytearray(op['len'])
                h.aio_pread(op['buf'], where, completion=done)
            elif kind in ('write', 'fua'):
                op['data'] = bytearray(os.urandom(op['len']))
                h.aio_pwrite(op['data'], where, completion=done,
                             flags=nbd.CMD_FLAG_FUA if kind == 'fua' else 0)
            elif kind == 'zero':
                h.aio_zero(op['len'], where, completion=done,
                           flags=nbd.CMD_FLAG_NO_HOLE if self.rng.random() < 0.3 else 0)
            elif kind == 'trim':
                h.aio_trim(op['len'], where, completion=done)
            elif kind == 'flush':
                h.aio_flush(completion=done)
            elif kind == 'status':
                op['extents'] = {}
                h.aio_block_status(op['len'], where,
                                   lambda meta, off, ents, err, i=i: self.extent(i, meta, off, ents),
                                   completion=done)
        except nbd.Error as e:
            self.problem('io_errors', '%s at %d+%d not sent: %s' % (kind, where, op['len'], e))
            return False
        self.inflight[i] = op
        self.stats.requests += 1
        return True

    def extent(self, i, meta, off, entries):
        op = self.inflight.get(i)
        if op is not None:
            op['extents'].setdefault(meta, []).append((off, list(entries)))
        return 0

    def complete(self, i, err):
        try:
            op = self.inflight.pop(i, None)
            if op is None:     # abandoned by an abrupt close
                return 1
            if err:
                self.problem('io_errors', '%s at %d+%d failed: %s'
                             % (op['op'], self.base + op['off'], op['len'], os.strerror(err)))
                if op['op'] in ('write', 'fua', 'zero', 'trim'):
                    self.forget(op['off'], op['len'])
                return 1
            getattr(self, 'done_' + op['op'])(op)
        except Exception as e:  # a bug here must not vanish in libnbd's callback
            self.problem('io_errors', 'completion handler raised %r' % (e,))
        return 1

    def forget(self, off, n):
        self.known[off:off + n] = ZEROS[:n]

    def mark_touched(self, off, n):
        if self.touched is not None:
            a, b = off // SECTOR, (off + n + SECTOR - 1) // SECTOR
            self.touched[a:b] = ONES[:b - a]

    def done_write(self, op):
        off, n = op['off'], op['len']
        self.model[off:off + n] = op['data']
        self.known[off:off + n] = ONES[:n]
        self.mark_touched(off, n)
        self.stats.bytes_written += n

    done_fua = done_write

    def done_zero(self, op):
        off, n = op['off'], op['len']
        self.model[off:off + n] = ZEROS[:n]
        self.known[off:off + n] = ONES[:n]
        self.mark_touched(off, n)

    def done_trim(self, op):
        self.forget(op['off'], op['len'])
        self.mark_touched(op['off'], op['len'])

    def done_flush(self, op):
        pass

    def done_read(self, op):
        self.verify(op['off'], op['buf'])

    def verify(self, off, data):
        n = len(data)
        known = self.known[off:off + n]
        pos = 0
        while pos < n:
            s = known.find(1, pos)
            if s < 0:
                break
            e = known.find(0, s)
            e = n if e < 0 else e
            want = self.model[off + s:off + e]
            if data[s:e] != want:
                bad = s + first_difference(data[s:e], want)
                self.problem('mismatches', 'read at %d+%d: byte %d differs (got %s, want %s)%s'
                             % (self.base + off, n, self.base + off + bad, bytes(data[bad:bad + 8]).hex(),
                                bytes(self.model[off + bad:off + bad + 8]).hex(),
                                self.loop.whose(bytes(data[bad:bad + 32]))))
                # Take what was read as the new truth, so one bad read is one mismatch.
                self.model[off + s:off + e] = data[s:e]
            self.stats.bytes_verified += e - s
            pos = e

    def done_status(self, op):
        off, n = op['off'], op['len']
        self.stats.status_checks += 1
        for meta, replies in op['extents'].items():
            for start, entries in replies:
                pos = start - self.base
                for length, flags in zip(entries[0::2], entries[1::2]):
                    a, b = max(pos, off), min(pos + length, off + n)
                    if a < b:
                        self.check_extent(meta, a, b, flags)
                    pos += length

    def check_extent(self, meta, a, b, flags):
        if meta == 'base:allocation' and flags & 2:   # NBD_STATE_ZERO: reads return zeroes
            known = self.known[a:b]
            pos = 0
            while pos < b - a:
                s = known.find(1, pos)
                if s < 0:
                    break
                e = known.find(0, s)
                e = b - a if e < 0 else e
                if self.model[a + s:a + e].count(0) != e - s:
                    self.problem('mismatches', 'base:allocation says [%d, %d) reads as zeroes, '
                                 'but it holds data' % (self.base + a, self.base + b))
                    return
                pos = e
        elif meta == self.dirty_context and not flags & 1:
            t = self.touched[a // SECTOR:(b + SECTOR - 1) // SECTOR]
            if 1 in t:
                first = self.base + (a // SECTOR + t.index(1)) * SECTOR
                self.problem('mismatches', '%s says [%d, %d) is clean, but sector %d was written'
                             % (meta, self.base + a, self.base + b, first))

    # Final pass -------------------------------------------------------------

    def issue_verify_reads(self):
        while self.verify_queue and len(self.inflight) < self.depth:
            off = self.verify_queue.pop()
            self.send({'op': 'read', 'off': off, 'len': min(MAX_IO, self.length - off), 't': time.monotonic()})


def first_difference(a, b):
    lo = 0
    while lo < len(a):
        if a[lo:lo + 4096] != b[lo:lo + 4096]:
            for i in range(lo, min(lo + 4096, len(a))):
                if a[i] != b[i]:
                    return i
        lo += 4096
    return 0


class IoLoop(threading.Thread):
    """Drives its clients' libnbd handles with poll(2)."""

    registry = []  # every client of every loop, to tell whose data a bad read returned

    def __init__(self, clients):
        super().__init__(daemon=True)
        self.clients = clients
        for c in clients:
            c.loop = self
        IoLoop.registry += clients
        self.allow_reconnect = threading.Event()
        self.allow_reconnect.set()
        self.quiesce = threading.Event()     # no new requests (existing ones finish)
        self.halt = threading.Event()
        self.error = None

    @staticmethod
    def whose(sample):
        if len(sample) < 16 or sample.count(0) == len(sample):
            return ''
        for c in IoLoop.registry:
            i = c.model.find(sample)
            if i >= 0:
                return "; those bytes are client %d's data at %d (export %s)" % (c.cid, c.base + i, c.export)
        return '; those bytes are no client\'s current data'

    def run(self):
        try:
            while not self.halt.is_set():
                now = time.monotonic()
                for c in self.clients:
                    c.step(now, self)
                if all(c.state == 'off' for c in self.clients):
                    return
                p, fds = select.poll(), {}
                for c in self.clients:
                    if c.h is None or not c.reading(now):
                        continue
                    d = c.h.aio_get_direction()
                    mask = (select.POLLIN if d & nbd.AIO_DIRECTION_READ else 0) | \
                           (select.POLLOUT if d & nbd.AIO_DIRECTION_WRITE else 0)
                    if mask:
                        fd = c.h.aio_get_fd()
                        p.register(fd, mask)
                        fds[fd] = c
                for fd, ev in p.poll(20):
                    c = fds[fd]
                    try:
                        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                            c.h.aio_notify_read()
                        elif ev & select.POLLOUT:
                            c.h.aio_notify_write()
                    except nbd.Error as e:
                        c.problem('io_errors', 'connection error: %s' % e)
                        c.drop()
                        c.state = 'idle'
        except BaseException as e:
            import traceback
            self.error = traceback.format_exc()
            raise e

    def connected(self):
        return all(c.state == 'ready' for c in self.clients)

    def finish(self, verify):
        """Stops issuing requests; with verify, each client reads its whole region back."""
        for c in self.clients:
            if verify:
                c.verify_queue = list(range(0, c.length, MAX_IO))
            c.stopping = True

    def stats(self):
        s = Stats()
        for c in self.clients:
            s.add(c.stats)
        return s


def rss_bytes(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    return 0


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def median(values):
    v = sorted(values)
    if not v:
        return 0
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) // 2
