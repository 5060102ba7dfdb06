#!/usr/bin/python3
"""Write-blocking mirror to an NBD target under a writer with 16 writes in
flight: the NBD server then runs the writes in batches whose write-throughs
complete on the target driver's thread (block/io-defer.h), and overlapping
writes of one batch wait for each other's range.

1. 70 % of the writes go to 4 hot blocks, so overlapping writes are in
   flight together (in one batch of the NBD server, too), in bursts: after
   each, with nothing in flight, the hot blocks must read the same on
   source and target.  The job is then soft-cancelled (final sync, no
   pivot): source and target must be identical, and every block must hold
   one of the values written to it (or zeroes).
2. Writes to distinct blocks (none overlaps another in flight) while a new
   mirror becomes READY and is completed (pivot) under the writer: the
   export, now on the target, holds every acknowledged write."""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, import_nbd,  # noqa: E402
                        ok, read_all, summary, wait_job_end, wait_status)
from mirror_lib import BLOCK, first_difference, pattern  # noqa: E402

SIZE = 16 << 20
DEPTH = 16
HOT = 4


class AioWriter(threading.Thread):
    """Random 4 KiB writes, DEPTH in flight.  hot: half of them go to the
    first HOT blocks (overlaps in flight); otherwise no two writes in
    flight share a block, and `image` gets every acknowledged one."""

    def __init__(self, sock, hot, seed):
        super().__init__(daemon=True)
        self.sock, self.hot = sock, hot
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.image = bytearray(SIZE)
        self.written = {}   # block -> set of values written there
        self.inflight = {}  # id -> (block, data)
        self.busy = set()   # blocks with a write in flight (not hot mode)
        self.acked = 0
        self.error = None

    def done(self, i, err):
        blk, data = self.inflight.pop(i)
        if err:
            self.error = 'write %d at block %d failed: errno %d' % (i, blk, err)
        else:
            self.acked += 1
            if not self.hot:
                self.image[blk * BLOCK:(blk + 1) * BLOCK] = data
        self.busy.discard(blk)
        return 1

    def run(self):
        nbd = import_nbd()
        try:
            h = nbd.NBD()
            h.set_export_name('src')
            h.connect_unix(self.sock)
            n = 0
            blocks = SIZE // BLOCK
            while not self.halt.is_set() or self.inflight:
                while not self.halt.is_set() and len(self.inflight) < DEPTH:
                    if self.hot and self.rng.random() < 0.7:
                        blk = self.rng.randrange(HOT)
                    else:
                        blk = self.rng.randrange(blocks)
                        if not self.hot and blk in self.busy:
                            continue
                    n += 1
                    data = bytearray(pattern(n))
                    self.written.setdefault(blk, set()).add(bytes(data))
                    self.inflight[n] = (blk, data)
                    self.busy.add(blk)
                    h.aio_pwrite(data, blk * BLOCK, completion=lambda err, i=n: self.done(i, err.value))
                h.poll(-1)
                if self.error:
                    break
            h.shutdown()
        except Exception as e:  # reported by stop()
            self.error = repr(e)

    def stop(self):
        self.halt.set()
        self.join(60)
        check(not self.is_alive(), 'the writer did not finish')
        check(self.error is None, 'writer: %s' % self.error)


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        nbd_sock = d.path('nbd.sock')

        # 1. Overlapping writes in flight, soft cancel after READY.
        with Nbdkit('memory', str(SIZE)) as t:
            add_nbd_target(q, 'tgt', t.sock)
            w = AioWriter(nbd_sock, hot=True, seed=1)
            w.start()
            time.sleep(0.2)
            ok(q.cmd('blockdev-mirror', {'job-id': 'm1', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                         'copy-mode': 'write-blocking'}), 'mirror 1')
            wait_status(q, 'm1', 'ready', timeout=60)
            w.stop()
            written = dict(w.written)
            # Bursts of overlapping writes; whenever none is in flight, the
            # hot blocks are the same on both sides (nothing is dirty).
            total = w.acked
            hot_bytes = HOT * BLOCK
            for burst in range(25):
                w = AioWriter(nbd_sock, hot=True, seed=100 + burst)
                w.start()
                time.sleep(0.1)
                w.stop()
                total += w.acked
                for blk, vals in w.written.items():
                    written.setdefault(blk, set()).update(vals)
                src = read_all(nbd_sock, 'src', size=hot_bytes)
                tgt = read_all(t.sock, size=hot_bytes)
                check(src == tgt, 'after burst %d the hot blocks differ at %r' % (burst, first_difference(src, tgt)))
            ok(q.cmd('block-job-cancel', {'device': 'm1'}), 'soft cancel')
            evs = wait_job_end(q, 'm1')
            check(('BLOCK_JOB_COMPLETED', ('device', 'm1'), ('type', 'mirror')) in summary(evs),
                  'm1 end %r' % summary(evs))
            check(not any(e['event'] == 'BLOCK_JOB_ERROR' for e in evs), 'm1 errors %r' % summary(evs))
            src = read_all(nbd_sock, 'src')
            tgt = read_all(t.sock)
            check(src == tgt, 'source and target differ at %r' % first_difference(src, tgt))
            for blk in range(SIZE // BLOCK):
                got = bytes(src[blk * BLOCK:(blk + 1) * BLOCK])
                check(got in written.get(blk, set()) or got == bytes(BLOCK),
                      'block %d holds data never written there' % blk)
            ok(q.cmd('blockdev-del', {'node-name': 'tgt'}), 'del tgt')
            print('overlapping: %d writes, source == target' % total)

        # 2. A pivot under the writer: no acknowledged write is lost.
        with Nbdkit('memory', str(SIZE)) as t:
            add_nbd_target(q, 'tgt2', t.sock)
            w = AioWriter(nbd_sock, hot=False, seed=2)
            w.image[:] = read_all(nbd_sock, 'src')
            w.start()
            time.sleep(0.2)
            ok(q.cmd('blockdev-mirror', {'job-id': 'm2', 'device': 'src', 'target': 'tgt2', 'sync': 'full',
                                         'copy-mode': 'write-blocking'}), 'mirror 2')
            wait_status(q, 'm2', 'ready', timeout=60)
            time.sleep(1)
            ok(q.cmd('job-complete', {'id': 'm2'}), 'complete')
            evs = wait_job_end(q, 'm2')
            check(('BLOCK_JOB_COMPLETED', ('device', 'm2'), ('type', 'mirror')) in summary(evs),
                  'm2 end %r' % summary(evs))
            time.sleep(0.5)
            w.stop()
            exports = q.cmd('query-block-exports')['return']
            check(exports and exports[0]['node-name'] == 'tgt2', 'export after pivot: %r' % exports)
            got = read_all(nbd_sock, 'src')
            check(got == w.image, 'after the pivot the export differs from the acknowledged writes at %r'
                  % first_difference(got, w.image))
            check(read_all(t.sock) == w.image, 'target differs from the acknowledged writes')
            print('pivot: %d writes, none lost' % w.acked)
            q.close()
            check(d.stop() == 0, 'daemon exit status')
    print('write-blocking at QD16 OK')


main()
