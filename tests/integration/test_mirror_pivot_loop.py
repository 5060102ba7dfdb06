#!/usr/bin/python3
"""Pivot back and forth under two exports (issue 13: node_replace).

Node A has two writable exports, x1 and x2; a client on each writes random
4 KiB blocks (each in its own half of the disk) and reads back earlier
blocks of its half, checking them against what it had acknowledged.  A
mirror then pivots the node under both exports 20 times: A to B, B to A, ...
alternating write-blocking and background copy modes.  Every pivot must move
both exports (query-block-exports), no client request may fail, the reads
must always match, and at the end both exports and the node the exports
finally sit on must hold exactly what the clients acknowledged."""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, blockd_cmd, check, connect, ok, read_all,  # noqa: E402
                        summary, wait_job_end, wait_status)
from mirror_lib import first_difference, pattern  # noqa: E402

SIZE = 16 << 20
BLOCK = 4096
PIVOTS = 20


class Client(threading.Thread):
    """Writes and verifies through one export, in [lo, hi) of the disk."""

    def __init__(self, sock, export, image, lo, hi, seed):
        super().__init__(daemon=True)
        self.sock, self.export, self.image, self.lo, self.hi = sock, export, image, lo, hi
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.writes = self.reads = 0
        self.error = None

    def run(self):
        try:
            h = connect(self.sock, self.export)
            written = []
            n = self.lo // BLOCK * 1000003  # distinct patterns per client
            while not self.halt.is_set():
                n += 1
                off = self.rng.randrange(self.lo // BLOCK, self.hi // BLOCK) * BLOCK
                data = pattern(n)
                h.pwrite(data, off)
                self.image[off:off + BLOCK] = data
                written.append(off)
                self.writes += 1
                back = self.rng.choice(written)
                got = h.pread(BLOCK, back)
                if got != self.image[back:back + BLOCK]:
                    raise AssertionError('%s: block %d reads back wrong' % (self.export, back))
                self.reads += 1
                time.sleep(0.0005)  # a busy guest, not a flood: background mode converges
            h.flush()
            h.shutdown()
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(30)
        check(not self.is_alive(), '%s: client did not stop' % self.export)
        check(self.error is None, '%s: a request failed: %r' % (self.export, self.error))


def exports_on(q):
    return {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        sock = d.path('nbd.sock')
        for node in ('a', 'b'):
            ok(q.cmd('blockdev-add', {'driver': 'memory', 'node-name': node, 'size': SIZE}), 'add ' + node)
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        for x in ('x1', 'x2'):
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': x, 'node-name': 'a', 'name': x,
                                          'writable': True}), 'export ' + x)
        image = bytearray(SIZE)
        clients = [Client(sock, 'x1', image, 0, SIZE // 2, 1),
                   Client(sock, 'x2', image, SIZE // 2, SIZE, 2)]
        for c in clients:
            c.start()
        cur, other = 'a', 'b'
        for i in range(PIVOTS):
            job = 'pivot%d' % i
            mode = 'write-blocking' if i % 2 == 0 else 'background'
            q.events.clear()
            ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': cur, 'target': other,
                                         'sync': 'full', 'copy-mode': mode}), 'mirror %d' % i)
            evs = wait_status(q, job, 'ready', timeout=60)
            ok(q.cmd('job-complete', {'id': job}), 'job-complete %d' % i)
            evs += wait_job_end(q, job)
            check(('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')) in summary(evs),
                  'pivot %d: no BLOCK_JOB_COMPLETED in %r' % (i, summary(evs)))
            check(not any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' in e['data'] for e in evs),
                  'pivot %d completed with an error: %r' % (i, evs))
            on = exports_on(q)
            check(on == {'x1': other, 'x2': other}, 'pivot %d: exports on %r, want %r' % (i, on, other))
            for c in clients:
                check(c.error is None, 'pivot %d: %s failed: %r' % (i, c.export, c.error))
            cur, other = other, cur
        time.sleep(0.2)
        for c in clients:
            c.stop()
        for x in ('x1', 'x2'):
            disk = read_all(sock, x)
            check(disk == image, '%s differs from the acknowledged writes at %r'
                  % (x, first_difference(disk, image)))
        check(cur == 'a', 'an even number of pivots ends on a')
        writes = sum(c.writes for c in clients)
        reads = sum(c.reads for c in clients)
        check(writes > PIVOTS * 10, 'clients made little progress (%d writes)' % writes)
        print('%d pivots, %d writes and %d verified reads, none failed' % (PIVOTS, writes, reads))
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('mirror pivot loop OK')


main()
