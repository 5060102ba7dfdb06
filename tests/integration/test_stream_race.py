#!/usr/bin/python3
"""A client write into a region a stream is copying at that moment wins.

The base is slow (nbdkit's delay filter: every read takes a second), so the
stream's first copy -- [0, 256 KiB) of a 1 MiB chain, read from the base --
is in flight for a second.  Meanwhile a client writes 4 KiB in the middle
of it through the export.  The copy must not land its old base data over
the write: after the stream the export (and the image alone, its backing
link gone) read the client's data there and the chain's merge elsewhere.
The same script runs against qemu-storage-daemon (whose copy-on-read
serialises with the write the same way); both must agree.  (Without the
copier's write hook taking its range, blockd fails this test.)

Then a rate-limited backup of top runs across a whole-chain stream of
top: the link changes while the backup job still reads top (qcow2 lets
reads in flight finish on the old backing node before it closes), and
the backup target holds the chain's merge."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, FailingNode, Nbdkit, check, compare, connect, export, make_chain,  # noqa: E402
                       make_chain_over, normalise, ok, open_chain_named, open_chain_over, qmp_chain, read_all,
                       reply, run_both, wait_job_end, wait_until)

SIZE = 1 * MiB
OFFSET = 8192
DATA = b'\xc5' * 4096


def script(q, d, tmp):
    out = []
    with FailingNode(SIZE, 'EIO', read_delay=1) as f:
        c = make_chain_over(tmp, SIZE, f)
        open_chain_over(q, c, f)
        sock = export(q, d, 'top')
        h = connect(sock, 'top')
        out.append(reply(q.cmd('block-stream', {'job-id': 's', 'device': 'top'})))
        evs = wait_until(q, lambda e: e['event'] == 'JOB_STATUS_CHANGE' and e['data']['status'] == 'running')
        # The first copy reads the slow base for a second: write into it meanwhile.
        time.sleep(0.3)
        done = threading.Event()

        def write():
            h.pwrite(DATA, OFFSET)
            done.set()
        t = threading.Thread(target=write)
        t.start()
        evs += wait_job_end(q, 's', timeout=120)
        t.join(60)
        check(done.is_set(), 'the client write did not complete')
        out.append(normalise(evs))
        out.append(len(qmp_chain(q, 'top')))
        h.shutdown()
        expected = bytearray(c.expected)
        expected[OFFSET:OFFSET + len(DATA)] = DATA
        disk = read_all(sock, 'top', SIZE)
        check(disk[OFFSET:OFFSET + len(DATA)] == DATA, 'the stream overwrote the client write')
        check(disk == bytes(expected), 'the export differs from the merge plus the write')
        out.append('data ok')
        q.cmd('block-export-del', {'id': 'e-top', 'mode': 'hard'})
        wait_until(q, lambda e: e['event'] == 'BLOCK_EXPORT_DELETED')
        for n in ('top', 'mid', 'base'):
            q.cmd('blockdev-del', {'node-name': n})
    return out


def backup_script(q, d, tmp):
    """A rate-limited backup of top runs across a whole-chain stream of top
    (both daemons allow it): the relink happens while the backup still reads
    top; the backup's target then holds the chain's merge."""
    out = []
    c = make_chain(tmp, 8 * MiB)
    open_chain_named(q, c)
    with Nbdkit('memory', str(8 * MiB)) as t:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'tgt', 'server': {'type': 'unix', 'path': t.sock}}),
           'target')
        out.append(reply(q.cmd('blockdev-backup', {'job-id': 'b', 'device': 'top', 'target': 'tgt',
                                                   'sync': 'full', 'speed': 4 * MiB})))
        out.append(reply(q.cmd('block-stream', {'job-id': 's', 'device': 'top'})))
        evs = wait_job_end(q, ['s', 'b'], timeout=120)
        for job in ('s', 'b'):
            seq = normalise([e for e in evs if e['data'].get('id', e['data'].get('device')) == job])
            # QEMU pauses every job around each drain of the graph change
            # (paused, running blips of the backup); blockd's jobs go on.
            seq = [x for x in seq if x != ('status', job, 'paused')]
            out.append([x for i, x in enumerate(seq) if i == 0 or x != seq[i - 1]])
        out.append(len(qmp_chain(q, 'top')))
        q.cmd('blockdev-del', {'node-name': 'tgt'})
        check(read_all(t.sock, '', 8 * MiB) == bytes(c.expected), 'the backup target differs from the chain')
        out.append('backup ok')
    return out


if __name__ == '__main__':
    qsd, ours = run_both(script)
    compare('write during a copy', qsd, ours)
    print('a write into a region being copied wins (%d steps alike)' % len(ours))
    qsd, ours = run_both(backup_script)
    compare('backup across a stream', qsd, ours)
    print('a backup reading top across the relink: target complete (%d steps alike)' % len(ours))
