#!/usr/bin/python3
"""Convergence under a writer faster than the speed limit: a writer writes
random 4 KiB blocks through the export at full speed (each dirties a 64 KiB
granule, far more than the 8 MiB/s limit).  In background mode the mirror
does not reach READY within 10 s; in write-blocking mode it does (guest
writes reach the target before they are acknowledged), and after the pivot
the target holds every acknowledged write."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, ok,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status)
from mirror_lib import Writer, first_difference  # noqa: E402

SIZE = 16 << 20
SPEED = 8 << 20


def events_for(q, seconds):
    """Every event that arrives within `seconds` (polling: a timed-out read
    would break the connection's file object)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        q.cmd('query-block-jobs')
        time.sleep(0.1)
    got = list(q.events)
    q.events.clear()
    return got


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        image = bytearray(SIZE)
        with Nbdkit('memory', str(SIZE)) as t:
            add_nbd_target(q, 'tgt', t.sock)
            w = Writer(d.path('nbd.sock'), 'src', image)
            w.start()
            time.sleep(0.2)

            # Background: never in sync while the writer outpaces the limit.
            q.events.clear()
            ok(q.cmd('blockdev-mirror', {'job-id': 'bg', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                         'speed': SPEED}), 'mirror bg')
            n0 = w.count
            evs = events_for(q, 10)
            n1 = w.count
            check(not any(e['event'] == 'BLOCK_JOB_READY' for e in evs),
                  'background mirror became READY under a faster writer: %r' % summary(evs))
            info = q.cmd('query-block-jobs')['return'][0]
            check(info['status'] == 'running' and info['len'] - info['offset'] > 0, 'bg job %r' % info)
            ok(q.cmd('job-cancel', {'id': 'bg'}), 'cancel bg')
            evs = wait_job_end(q, 'bg')
            check(('BLOCK_JOB_CANCELLED', ('device', 'bg'), ('type', 'mirror')) in summary(evs),
                  'bg cancel %r' % summary(evs))

            # Write-blocking: converges although the writer never slows down.
            ok(q.cmd('blockdev-mirror', {'job-id': 'wb', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                         'speed': SPEED, 'copy-mode': 'write-blocking'}), 'mirror wb')
            t0 = time.time()
            n2 = w.count
            wait_status(q, 'wb', 'ready', timeout=30)
            took = time.time() - t0
            time.sleep(1)
            n3 = w.count
            ok(q.cmd('job-complete', {'id': 'wb'}), 'complete')
            evs = wait_job_end(q, 'wb')
            check(('BLOCK_JOB_COMPLETED', ('device', 'wb'), ('type', 'mirror')) in summary(evs),
                  'wb end %r' % summary(evs))
            w.stop()
            check(n3 - n2 > 100, 'the writer stalled in write-blocking mode (%d writes)' % (n3 - n2))
            got = read_all(t.sock)
            check(got == image, 'target differs at %r' % first_difference(got, image))
            print('background: %.0f writes/s, no READY in 10 s; write-blocking: READY in %.1f s, %.0f writes/s'
                  % ((n1 - n0) / 10, took, (n3 - n2) / (time.time() - t0)))
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('write-blocking OK')


main()
