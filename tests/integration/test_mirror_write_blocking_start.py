#!/usr/bin/python3
"""write-blocking is in force from the job's start, as in QEMU's active
mode, not only once the first pass is done: a mirror with a low speed limit
is still copying the start of the disk when a guest writes near its end;
in write-blocking mode that write is on the target as soon as it is
acknowledged, in background mode it is not there yet.  Both jobs are then
completed and the target must equal the source."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, blockd_cmd, check, connect, ok,  # noqa: E402
                        read_all, summary, wait_job_end, wait_status, write)

SIZE = 16 << 20
SPEED = 1 << 20  # the first pass would take 16 s
BLOCK = 4096


def one(q, d, mode, fill):
    name = 'src-' + mode
    add_source(q, d, name, SIZE)
    write(d, name, 0, bytes([fill]) * SIZE)
    with Nbdkit('memory', str(SIZE)) as t:
        add_nbd_target(q, 'tgt-' + mode, t.sock)
        ok(q.cmd('blockdev-mirror', {'job-id': mode, 'device': name, 'target': 'tgt-' + mode,
                                     'sync': 'full', 'speed': SPEED, 'copy-mode': mode}), 'mirror')
        data = bytes(range(256)) * (BLOCK // 256)
        offset = SIZE - 4 * BLOCK
        write(d, name, offset, data)
        h = connect(t.sock)
        on_target = h.pread(BLOCK, offset)
        h.shutdown()
        info = q.cmd('query-block-jobs')['return'][0]
        check(info['status'] == 'running' and not info['ready'] and info['offset'] < SIZE // 2,
              '%s: the first pass should still be running: %r' % (mode, info))
        if mode == 'write-blocking':
            check(on_target == data, 'write-blocking: an acknowledged write during the first pass '
                  'is not on the target')
        else:
            check(on_target == bytes(BLOCK), 'background: the write reached the target before the '
                  'first pass did (%r...)' % on_target[:8])
        ok(q.cmd('block-job-set-speed', {'device': mode, 'speed': 0}), 'set-speed')
        wait_status(q, mode, 'ready', timeout=60)
        ok(q.cmd('job-complete', {'id': mode}), 'complete')
        evs = wait_job_end(q, mode)
        check(('BLOCK_JOB_COMPLETED', ('device', mode), ('type', 'mirror')) in summary(evs),
              '%s end %r' % (mode, summary(evs)))
        expect = bytearray([fill]) * SIZE
        expect[offset:offset + BLOCK] = data
        check(read_all(t.sock) == bytes(expect), '%s: target differs from the source' % mode)
    print('%s: write during the first pass %s the target at once' %
          (mode, 'reached' if mode == 'write-blocking' else 'did not reach'))


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        one(q, d, 'write-blocking', 0x5a)
        one(q, d, 'background', 0xa5)
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('write-blocking from the start OK')


main()
