#!/usr/bin/python3
"""A node hosted from an installed nbdkit plugin is a node like any other:
a dirty bitmap on it records exactly the writes made through its export,
query-named-block-nodes counts them, and the bitmap is exported as the
qemu:dirty-bitmap meta context."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail  # noqa: E402

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
    ok(q.cmd('block-dirty-bitmap-clear', {'node': 'k0', 'name': 'b0'}), 'clear')
    nodes = ok(q.cmd('query-named-block-nodes'), 'query-named-block-nodes')
    b0 = [n for n in nodes if n['node-name'] == 'k0'][0]['dirty-bitmaps'][0]
    check(b0['count'] == 0 and b0['busy'] is False, 'after clear: %r' % b0)
    check(d.stop() == 0, 'blockd did not exit cleanly: ' + d.stderr_text())
print('ok')
