#!/usr/bin/python3
"""Overlapping writes: four writers on their own connections hammer a small
disk (so they often hit the same blocks at once) through the whole mirror —
first pass, dirty loop, READY — in both copy modes and two granularities.
After the writers stop, a soft cancel does the final sync and the target
must equal the source byte for byte (any copy or write-through that reached
the target out of order would leave a stale block)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, ok,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status)
from mirror_lib import Writer, first_difference  # noqa: E402

SIZE = 256 << 10  # 64 blocks: the writers collide all the time


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        for i, (mode, gran) in enumerate([('write-blocking', 4096), ('write-blocking', 65536),
                                          ('background', 4096), ('background', 65536)]):
            with Nbdkit('memory', str(SIZE)) as t:
                tgt, job = 't%d' % i, 'j%d' % i
                add_nbd_target(q, tgt, t.sock)
                writers = [Writer(d.path('nbd.sock'), 'src', bytearray(SIZE), seed=10 * i + k,
                                  rate=0 if mode == 'write-blocking' else 2000) for k in range(4)]
                for w in writers:
                    w.start()
                ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': 'src', 'target': tgt, 'sync': 'full',
                                             'copy-mode': mode, 'granularity': gran,
                                             'buf-size': 1 << 20}), 'mirror')
                wait_status(q, job, 'ready', timeout=60)
                time.sleep(1)
                n = sum(w.stop() for w in writers)
                ok(q.cmd('block-job-cancel', {'device': job}), 'soft cancel')
                evs = wait_job_end(q, job)
                check(('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')) in summary(evs),
                      '%s: %r' % (job, summary(evs)))
                src, dst = read_all(d.path('nbd.sock'), 'src'), read_all(t.sock)
                check(src == dst, '%s granularity %d: target differs from the source at %r after %d writes'
                      % (mode, gran, first_difference(src, dst), n))
                print('%s, granularity %d: %d overlapping writes, target == source' % (mode, gran, n))
                ok(q.cmd('blockdev-del', {'node-name': tgt}), 'del target')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('mirror under overlapping writes OK')


main()
