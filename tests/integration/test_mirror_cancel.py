#!/usr/bin/python3
"""Cancel after READY with a writer running: block-job-cancel (soft) ends the
job as a success without pivot (BLOCK_JOB_COMPLETED, the export stays on the
source), and the target equals the source as it was at one instant between
the cancel command and the end of the job: it shows the writer's first k
writes exactly, for some k in that window.  In write-blocking mode with a
full-speed writer and in background mode with a rate-limited one."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, connect,  # noqa: E402
                        ok, read_all, summary, wait_job_end, wait_status)
from mirror_lib import Writer, consistent_point, make_image  # noqa: E402

SIZE = 32 << 20


def scenario(d, q, mode, rate):
    src, tgt, job = 'src-' + mode, 'tgt-' + mode, 'c-' + mode
    add_source(q, d, src, SIZE)
    image = make_image(SIZE)
    h = connect(d.path('nbd.sock'), src)
    for off in range(0, SIZE, 4 << 20):
        h.pwrite(bytes(image[off:off + (1 << 20)]), off)
    h.shutdown()
    initial = bytes(image)
    with Nbdkit('memory', str(SIZE)) as t:
        add_nbd_target(q, tgt, t.sock)
        w = Writer(d.path('nbd.sock'), src, image, rate=rate, seed=7)
        w.start()
        ok(q.cmd('blockdev-mirror', {'job-id': job, 'device': src, 'target': tgt, 'sync': 'full',
                                     'copy-mode': mode}), 'mirror')
        wait_status(q, job, 'ready', timeout=60)
        time.sleep(0.3)
        n_before = w.count
        ok(q.cmd('block-job-cancel', {'device': job}), 'soft cancel')
        evs = wait_job_end(q, job)
        n_after = w.count
        time.sleep(0.2)  # later writes must not reach the target any more
        w.stop()
        check(summary(evs)[-5:] == [
            ('status', job, 'waiting'), ('status', job, 'pending'),
            ('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')),
            ('status', job, 'concluded'), ('status', job, 'null')], '%s end %r' % (mode, summary(evs)))
        exports = {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}
        check(exports['e-' + src] == src, 'soft cancel moved the export: %r' % exports)
        check(read_all(d.path('nbd.sock'), src) == image, 'source lost writes')
        point = consistent_point(read_all(t.sock), initial, w.log)
        check(point is not None, '%s: the target is no point-in-time image of the source' % mode)
        lo, hi = point
        # The writer counts a write once acknowledged: the one in flight as
        # the job ended (n_after + 1) may already be in the target.
        check(hi >= n_before and lo <= n_after + 1, '%s: target shows writes %r, cancel window [%d, %d]'
              % (mode, point, n_before, n_after + 1))
        check(w.count > n_after, 'the writer stopped at the cancel')
        print('%s: target = source after write %d..%d; cancel window [%d, %d]; %d writes in all'
              % (mode, lo, hi, n_before, n_after, w.count))
    ok(q.cmd('block-export-del', {'id': 'e-' + src}), 'export-del')


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        scenario(d, q, 'write-blocking', 0)
        scenario(d, q, 'background', 500)
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('mirror cancel after READY OK')


main()
