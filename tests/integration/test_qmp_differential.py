#!/usr/bin/python3
"""Differential test: one QMP script runs against qemu-storage-daemon and
against blockd.  Every reply must match in kind (return/error), errors in
class and message, returns in shape (same JSON types; object keys of blockd
present in QEMU's answer).  A few documented differences are allowed."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check, fail


def script(tmp):
    img = os.path.join(tmp, 'disk.img')
    nbd = os.path.join(tmp, 'nbd.sock')
    with open(img, 'wb') as f:
        f.truncate(4 << 20)
    return [
        # envelope and argument errors
        '{"execute": }',
        '[1, 2]',
        '{"arguments": {}}',
        '{"execute": "query-version", "foo": 1, "id": 7}',
        '{"execute": 42}',
        '{"execute": "query-version", "arguments": []}',
        '{"execute": "no-such-command", "id": "x"}',
        '{"execute": "query-version", "arguments": {"foo": 1}}',
        '{"execute": "blockdev-del", "arguments": {}}',
        '{"execute": "blockdev-del", "arguments": {"node-name": 5}}',
        '{"execute": "block-export-del", "arguments": {"id": "x", "mode": "bogus"}}',
        '{"execute": "query-named-block-nodes", "arguments": {"flat": "yes"}}',
        '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "path": "%s"}}}' % nbd,
        '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "%s"}}, "max-connections": 4294967296}}' % nbd,
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": "big"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "bogus": 1}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "nosuch", "node-name": "n0"}}',
        '{"execute": "blockdev-add", "arguments": {"node-name": "n0"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "r0", "file": 5}}',
        # nodes
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0", "size": 1048576}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "file", "node-name": "f0", "filename": "%s"}}' % img,
        '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "r0", "file": "f0"}}',
        '{"execute": "blockdev-add", "arguments": {"driver": "raw", "node-name": "r1", "file": {"driver": "null-co", "node-name": "n1", "size": "z"}}}',
        '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}',
        '{"execute": "blockdev-del", "arguments": {"node-name": "nosuch"}}',
        # exports before and after the server starts
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "r0"}}',
        '{"execute": "nbd-server-stop"}',
        '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "%s"}}}}' % nbd,
        '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "%s"}}}}' % nbd,
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", "node-name": "r0", "writable": true, "name": "disk0"}}',
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "n0", "name": "disk0"}}',
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "nosuch"}}',
        '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", "node-name": "n0", "description": "null"}}',
        '{"execute": "query-block-exports"}',
        '{"execute": "block-export-del", "arguments": {"id": "e1"}}',
        '{"execute": "block-export-del", "arguments": {"id": "e1"}}',
        '{"execute": "nbd-server-add", "arguments": {"device": "n0", "name": "legacy"}}',
        '{"execute": "query-block-exports"}',
        '{"execute": "nbd-server-remove", "arguments": {"name": "legacy"}}',
        '{"execute": "nbd-server-remove", "arguments": {"name": "legacy"}}',
        '{"execute": "block-export-del", "arguments": {"id": "e0", "mode": "hard"}}',
        '{"execute": "query-block-exports"}',
        '{"execute": "nbd-server-stop"}',
        '{"execute": "nbd-server-stop"}',
        '{"execute": "blockdev-del", "arguments": {"node-name": "r0"}}',
        '{"execute": "blockdev-del", "arguments": {"node-name": "f0"}}',
        '{"execute": "blockdev-del", "arguments": {"node-name": "n0"}}',
        '{"execute": "query-named-block-nodes"}',
        '{"execute": "query-version", "id": {"x": [1, 2]}}',
        '{"execute": "qmp_capabilities"}',
    ]


# Messages that still differ from QEMU's, as (blockd's text, QEMU's text);
# each is printed when met so that it gets fixed where it is produced.
KNOWN_DIFFS = set()


def desc_matches(msg, ours, theirs):
    # The lexer's wording after "JSON parse error, " varies (json-glib vs QEMU).
    if theirs.startswith('JSON parse error'):
        return ours.startswith('JSON parse error')
    if (ours, theirs) in KNOWN_DIFFS:
        print('known difference: %r vs QEMU %r' % (ours, theirs))
        return True
    return ours == theirs


def shape_ok(ours, theirs, where):
    """blockd's value has QEMU's shape: same JSON types, known keys."""
    if isinstance(theirs, dict):
        check(isinstance(ours, dict), '%s: %r is not an object' % (where, ours))
        for k in ours:
            check(k in theirs, '%s: key %r not in QEMU\'s answer %r' % (where, k, sorted(theirs)))
            shape_ok(ours[k], theirs[k], where + '.' + k)
    elif isinstance(theirs, list):
        check(isinstance(ours, list) and len(ours) == len(theirs),
              '%s: list %r vs QEMU %r' % (where, ours, theirs))
        for i, (a, b) in enumerate(zip(ours, theirs)):
            shape_ok(a, b, '%s[%d]' % (where, i))
    elif isinstance(theirs, bool):
        check(isinstance(ours, bool), '%s: %r is not a boolean' % (where, ours))
    elif isinstance(theirs, int):
        check(isinstance(ours, int) and not isinstance(ours, bool), '%s: %r is not an int' % (where, ours))
    elif isinstance(theirs, str):
        check(isinstance(ours, str), '%s: %r is not a string' % (where, ours))


def run(cmd, msgs):
    with Daemon(cmd) as d:
        q = d.qmp()
        replies = [q.raw(m) for m in msgs]
        events = q.events
        q.close()
        d.stop()
        return replies, events


def main():
    import tempfile
    tmp = tempfile.mkdtemp(prefix='qmp-diff.')
    try:
        msgs = script(tmp)
        theirs, their_events = run(qsd_cmd(), msgs)
        ours, our_events = run(blockd_cmd(), msgs)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    for msg, a, b in zip(msgs, ours, theirs):
        where = 'reply to %s' % msg
        check(('error' in a) == ('error' in b), '%s: blockd %r, QEMU %r' % (where, a, b))
        check(a.get('id') == b.get('id'), '%s: id %r, QEMU %r' % (where, a.get('id'), b.get('id')))
        if 'error' in b:
            check(a['error']['class'] == b['error']['class'],
                  '%s: class %s, QEMU %s' % (where, a['error']['class'], b['error']['class']))
            check(desc_matches(msg, a['error']['desc'], b['error']['desc']),
                  '%s: desc %r, QEMU %r' % (where, a['error']['desc'], b['error']['desc']))
        elif 'query-version' in msg:
            shape_ok(a['return'], b['return'], where)
        elif 'query-named-block-nodes' in msg:
            check(len(a['return']) == len(b['return']), '%s: node count' % where)
            for x, y in zip(a['return'], b['return']):
                check(x['node-name'] == y['node-name'] and x['drv'] == y['drv'] and x['ro'] == y['ro'],
                      '%s: %r vs QEMU %r' % (where, x, y))
                check(x['image']['virtual-size'] == y['image']['virtual-size'], '%s: size' % where)
                shape_ok(x, y, where)
        else:
            check(a == b, '%s: blockd %r, QEMU %r' % (where, a, b))
    # Both announce the same export deletions, in the same order.
    deleted = lambda evs: [e['data']['id'] for e in evs if e['event'] == 'BLOCK_EXPORT_DELETED']
    check(deleted(our_events) == deleted(their_events),
          'BLOCK_EXPORT_DELETED %r, QEMU %r' % (deleted(our_events), deleted(their_events)))
    print('%d messages matched' % len(msgs))


main()
