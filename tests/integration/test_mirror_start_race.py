#!/usr/bin/python3
"""Write-blocking mirrors started while a guest writes at full speed.

A guest write that ran the mirror's before-write hook (which locks its
range) must also run its after-write hook (which unlocks it), even when
the job was being created at that instant; otherwise the range stays
locked, every copy of that region is busy forever and the job never gets
READY (a later guest write there hangs too).  Starts 60 write-blocking
mirrors in a row against a writer at full speed; each must reach READY
within 20 s and cancel cleanly, and the writer must never stall."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, add_source, blockd_cmd, check, ok, wait_job_end,  # noqa: E402
                        wait_status)
from mirror_lib import Writer  # noqa: E402

SIZE = 4 << 20
STARTS = 60


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'memory', 'node-name': 'tgt', 'size': SIZE}), 'target')
        w = Writer(d.path('nbd.sock'), 'src', bytearray(SIZE))
        w.start()
        time.sleep(0.1)
        for i in range(STARTS):
            job = 'race%d' % i
            ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                         'copy-mode': 'write-blocking'}), 'mirror %d' % i)
            wait_status(q, job, 'ready', timeout=20)
            before = w.count
            ok(q.cmd('block-job-cancel', {'device': job, 'force': True}), 'cancel %d' % i)
            wait_job_end(q, job)
            deadline = time.time() + 10
            while w.count == before:
                check(time.time() < deadline, 'start %d: the writer stalled' % i)
                time.sleep(0.01)
        n = w.stop()
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('%d write-blocking starts under %d writes OK' % (STARTS, n))


main()
