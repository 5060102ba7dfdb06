#!/usr/bin/python3
"""drive-mirror to a local raw file (node-name given, then mode=existing),
and the sync modes: `full` copies everything and pivots the export to the
new file node; `none` copies only what is written during the job (data,
write-zeroes and trim through the export, granularity 4 KiB); `top` skips
the source's holes, leaving what the target had there."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, add_source, blockd_cmd, check, connect, ok, read_all,  # noqa: E402
                        summary, wait_job_end, wait_status)

SIZE = 8 << 20


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        h = connect(d.path('nbd.sock'), 'src')
        h.pwrite(b'\x42' * (1 << 20), 1 << 20)
        h.flush()
        image = bytearray(SIZE)
        image[1 << 20:2 << 20] = b'\x42' * (1 << 20)

        def finish(job, complete):
            if complete:
                ok(q.cmd('job-complete', {'id': job}), 'complete ' + job)
            else:  # a soft cancel: final sync, no pivot
                ok(q.cmd('block-job-cancel', {'device': job}), 'cancel ' + job)
            evs = wait_job_end(q, job)
            check(('BLOCK_JOB_COMPLETED', ('device', job), ('type', 'mirror')) in summary(evs),
                  '%s: %r' % (job, summary(evs)))

        # sync=none: only writes made during the job reach the file.
        path = d.path('none.img')
        ok(q.cmd('drive-mirror', {'job-id': 'n', 'device': 'src', 'target': path, 'sync': 'none',
                                  'node-name': 'none0', 'granularity': 4096}), 'drive-mirror none')
        wait_status(q, 'n', 'ready')
        h.pwrite(b'\x07' * 4096, 8192)
        h.zero(4096, (1 << 20) + 4096)
        h.flush()
        ok(q.cmd('block-job-cancel', {'device': 'n'}), 'soft cancel n')  # final sync, no pivot
        wait_job_end(q, 'n')
        image[8192:12288] = b'\x07' * 4096
        image[(1 << 20) + 4096:(1 << 20) + 8192] = bytes(4096)
        with open(path, 'rb') as f:
            got = f.read()
        want = bytearray(SIZE)
        want[8192:12288] = b'\x07' * 4096  # the zeroed block was zero in the file already
        check(got == want, 'sync=none copied more (or less) than the new writes')
        ok(q.cmd('blockdev-del', {'node-name': 'none0'}), 'del none0')

        # sync=top into an existing file full of 0x33: the holes keep 0x33.
        path = d.path('top.img')
        with open(path, 'wb') as f:
            f.write(b'\x33' * SIZE)
        ok(q.cmd('drive-mirror', {'job-id': 't', 'device': 'src', 'target': path, 'sync': 'top',
                                  'mode': 'existing', 'node-name': 'top0'}), 'drive-mirror top')
        wait_status(q, 't', 'ready')
        finish('t', False)
        with open(path, 'rb') as f:
            got = f.read()
        check(got[(1 << 20) + 8192:2 << 20] == image[(1 << 20) + 8192:2 << 20] and
              got[8192:12288] == b'\x07' * 4096,
              'sync=top missed allocated data')
        check(got[4 << 20:5 << 20] == b'\x33' * (1 << 20), 'sync=top copied a hole')
        ok(q.cmd('blockdev-del', {'node-name': 'top0'}), 'del top0')

        # sync=full: the export moves to the new file node.
        path = d.path('full.img')
        ok(q.cmd('drive-mirror', {'job-id': 'f', 'device': 'src', 'target': path, 'sync': 'full',
                                  'node-name': 'full0'}), 'drive-mirror full')
        wait_status(q, 'f', 'ready')
        h.pwrite(b'\x09' * 4096, SIZE - 4096)
        image[SIZE - 4096:] = b'\x09' * 4096
        finish('f', True)
        h.pwrite(b'\x0a' * 4096, 0)  # after the pivot: lands in the file
        h.flush()
        image[0:4096] = b'\x0a' * 4096
        h.shutdown()
        check(q.cmd('query-block-exports')['return'][0]['node-name'] == 'full0', 'export not on full0')
        check(read_all(d.path('nbd.sock'), 'src') == image, 'export content differs')
        with open(path, 'rb') as f:
            check(f.read() == image, 'drive-mirror file differs')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('drive-mirror and sync modes OK')


main()
