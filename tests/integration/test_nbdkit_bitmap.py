#!/usr/bin/python3
"""A node hosted from an installed nbdkit plugin is a node like any other:
a dirty bitmap on it records exactly the writes made through its export,
query-named-block-nodes counts them, the bitmap is exported as the
qemu:dirty-bitmap meta context, an incremental backup job copies exactly
its dirty granules, and a full backup of a read-only plugin node (pattern)
reproduces the plugin's data on an NBD target."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail  # noqa: E402
from backup_lib import Nbdkit, add_nbd_target, read_all, wait_job_end  # noqa: E402

sys.path.insert(0, '/usr/lib/python3/dist-packages')
import nbd  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
GRANULARITY = 64 * KiB
WRITES = [(0, 4 * KiB), (5 * MiB + 100, 10), (17 * MiB, 200 * KiB), (63 * MiB, MiB)]


def ok(reply, what):
    check('return' in reply, '%s failed: %r' % (what, reply))
    return reply['return']


def dirty_ranges(writes):
    """The granule-aligned ranges the writes must have dirtied, merged."""
    spans = sorted((off // GRANULARITY * GRANULARITY,
                    -(-(off + n) // GRANULARITY) * GRANULARITY) for off, n in writes)
    merged = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [tuple(x) for x in merged]


with Daemon(blockd_cmd()) as d:
    q = d.qmp()
    sock = d.path('nbd.sock')
    ok(q.cmd('blockdev-add', {'driver': 'nbdkit', 'node-name': 'k0', 'plugin': 'memory',
                              'args': {'size': '64M'}}), 'blockdev-add nbdkit memory')
    ok(q.cmd('block-dirty-bitmap-add', {'node': 'k0', 'name': 'b0',
                                        'granularity': GRANULARITY}), 'bitmap add')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'server')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'k0',
                                  'writable': True, 'bitmaps': ['b0']}), 'export')

    h = nbd.NBD()
    h.connect_uri('nbd+unix:///k0?socket=' + sock)
    for off, n in WRITES:
        h.pwrite(bytes([0x5a]) * n, off)
    h.flush()
    check(h.pread(10, 5 * MiB + 100) == bytes([0x5a]) * 10, 'data did not read back')
    h.shutdown()

    nodes = ok(q.cmd('query-named-block-nodes'), 'query-named-block-nodes')
    k0 = [n for n in nodes if n['node-name'] == 'k0']
    check(len(k0) == 1, 'node k0 missing from %r' % nodes)
    bitmaps = k0[0].get('dirty-bitmaps', [])
    check(len(bitmaps) == 1 and bitmaps[0]['name'] == 'b0', 'bitmaps: %r' % bitmaps)
    expected = dirty_ranges(WRITES)
    count = sum(end - start for start, end in expected)
    check(bitmaps[0]['count'] == count,
          'bitmap count %d, expected %d' % (bitmaps[0]['count'], count))
    check(bitmaps[0]['busy'] is True, 'an exported bitmap must be busy: %r' % bitmaps[0])

    out = subprocess.run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:b0',
                          'nbd+unix:///k0?socket=' + sock],
                         check=True, capture_output=True, text=True).stdout
    extents = json.loads(out)
    got = [(e['offset'], e['offset'] + e['length']) for e in extents if e['type'] & 1]
    check(got == expected, 'dirty extents %r, expected %r' % (got, expected))
    check(extents[-1]['offset'] + extents[-1]['length'] == 64 * MiB,
          'map does not cover the disk: %r' % extents[-1])

    ok(q.cmd('block-export-del', {'id': 'e0'}), 'export del')
    q.wait_event('BLOCK_EXPORT_DELETED')

    def run_backup(job, **args):
        args.update({'job-id': job})
        ok(q.cmd('blockdev-backup', args), 'blockdev-backup ' + job)
        events = wait_job_end(q, job)
        done = [e['data'] for e in events if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(len(done) == 1 and 'error' not in done[0], '%s: %r' % (job, events))
        return done[0]

    # Incremental backup from the plugin node: exactly the dirty granules move,
    # and the bitmap is cleared on success.
    with Nbdkit('memory', '64M') as target:
        add_nbd_target(q, 't0', target.sock)
        done = run_backup('inc', device='k0', target='t0', sync='incremental', bitmap='b0')
        check(done['len'] == count, 'incremental copied %d bytes, %d dirty' % (done['len'], count))
        copied = read_all(target.sock)
        for off, n in WRITES:
            check(copied[off:off + n] == bytes([0x5a]) * n, 'write at %d missing on target' % off)
        ok(q.cmd('blockdev-del', {'node-name': 't0'}), 'blockdev-del t0')
    nodes = ok(q.cmd('query-named-block-nodes'), 'query-named-block-nodes')
    b0 = [n for n in nodes if n['node-name'] == 'k0'][0]['dirty-bitmaps'][0]
    check(b0['count'] == 0 and b0['busy'] is False, 'after incremental: %r' % b0)

    # Full backup of a read-only plugin node: the target holds the plugin's data.
    ok(q.cmd('blockdev-add', {'driver': 'nbdkit', 'node-name': 'p0', 'plugin': 'pattern',
                              'args': {'size': '8M'}, 'read-only': True}), 'pattern node')
    with Nbdkit('memory', '8M') as target:
        add_nbd_target(q, 't1', target.sock)
        run_backup('full', device='p0', target='t1', sync='full')
        copied = read_all(target.sock)
        expected = b''.join((i * 8).to_bytes(8, 'big') for i in range(len(copied) // 8))
        check(copied == expected, 'full backup of the pattern plugin differs')
        ok(q.cmd('blockdev-del', {'node-name': 't1'}), 'blockdev-del t1')
    check(d.stop() == 0, 'blockd did not exit cleanly: ' + d.stderr_text())
print('ok')
