#!/usr/bin/python3
"""Pull in increments (__io.blockd_block-stream-increment, libvirt's
non-continuous BlockPull) on a three-image chain opened from its headers.

1. Increments of 2 MiB with an NBD client writing in between: the cursor
   only grows and reaches the end, `end` is the size, exactly one
   BLOCK_JOB_COMPLETED (type stream, device = job-id) arrives, from the
   increment that reaches the end, and none from a later call; then the
   backing link is gone (query-named-block-nodes, `qemu-img info`), the
   layers below are closed, and the export reads the merge plus every
   acknowledged write.
2. Refusals: a cursor past the end, a negative one, a length over the
   limit, the arguments block-stream refuses.
3. A failing backing node: the increment fails with an error saying so and
   the chain stays as it was; healthy again, the increments finish.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, ChainWriter, Daemon, FailingNode, backing_chain, blockd_cmd, check, check_clean,  # noqa: E402
                       export, make_chain, make_chain_over, open_chain, open_chain_over, qmp_chain, read_all,
                       read_image)

SIZE = 32 * MiB
CMD = '__io.blockd_block-stream-increment'


def completions(q):
    """BLOCK_JOB_COMPLETED events received so far (a round trip first: events
    emitted before its reply arrive before it)."""
    q.cmd('query-block-jobs')
    found = [e for e in q.events if e['event'] == 'BLOCK_JOB_COMPLETED']
    q.events = [e for e in q.events if e['event'] != 'BLOCK_JOB_COMPLETED']
    return found


def test_increments():
    with tempfile.TemporaryDirectory() as tmp, Daemon(blockd_cmd()) as d:
        c = make_chain(tmp, SIZE)
        q = d.qmp()
        open_chain(q, c)
        export(q, d, 'top')
        w = ChainWriter(d, 'top', c.expected, rate=300)
        w.start()
        replies, cursor = [], 0
        while cursor < SIZE:
            # The writer keeps writing between (and during) the increments.
            r = q.cmd(CMD, {'device': 'top', 'job-id': 'pull', 'cursor': cursor, 'length': 2 * MiB})
            check('return' in r, 'increment at %d: %r' % (cursor, r))
            check(r['return']['cursor'] > cursor, 'the cursor did not move: %r' % r)
            replies.append(r['return'])
            cursor = r['return']['cursor']
            if cursor < SIZE:
                check(not completions(q), 'a completion event before the end')
        w.stop()
        check(len(replies) > 4, 'only %d increments' % len(replies))
        check(all(r['end'] == SIZE for r in replies), 'end is not the size: %r' % replies)
        cursors = [r['cursor'] for r in replies]
        check(cursors == sorted(cursors) and cursors[-1] == SIZE, 'cursors %r' % cursors)
        done = completions(q)
        check(len(done) == 1 and done[0]['data'] == {'type': 'stream', 'device': 'pull', 'len': SIZE,
                                                       'offset': SIZE, 'speed': 0}, 'completion: %r' % done)
        # Nothing left: answered, no second event.
        r = q.cmd(CMD, {'device': 'top', 'job-id': 'pull', 'cursor': SIZE})
        check(r.get('return') == {'cursor': SIZE, 'end': SIZE}, 'a call after the end: %r' % r)
        r = q.cmd(CMD, {'device': 'top', 'job-id': 'pull'})
        check(r.get('return') == {'cursor': SIZE, 'end': SIZE}, 'a call from 0 after the end: %r' % r)
        check(not completions(q), 'a second completion event')
        check(not [e for e in q.events if e['event'].startswith(('JOB_', 'BLOCK_JOB'))],
              'job events from increments: %r' % q.events)
        check(len(qmp_chain(q, 'top')) == 1, 'top still has a backing node: %r' % qmp_chain(q, 'top'))
        names = sorted(n['node-name'] for n in q.cmd('query-named-block-nodes')['return'])
        check(names == ['top', 'top-file'], 'the layers below were not closed: %r' % names)
        check(backing_chain(c.top) == [(c.top, 'qcow2', None, None)], 'qemu-img info: %r' % backing_chain(c.top))
        disk = w.verify('export after the pull')
        q.cmd('block-export-del', {'id': 'e-top', 'mode': 'hard'})
        q.cmd('blockdev-del', {'node-name': 'top'})
        check_clean(c.top)
        check(read_image(c.top) == disk, 'the image alone reads differently')
        q.close()
        check(d.stop() == 0, 'blockd exit status')
    print('increments: %d calls, %d writes meanwhile, one completion' % (len(replies), w.count))


def test_refusals_and_failure():
    with tempfile.TemporaryDirectory() as tmp, Daemon(blockd_cmd()) as d, \
            FailingNode(8 * MiB, 'EIO', reads_only=True) as f:
        q = d.qmp()
        c = make_chain_over(tmp, 8 * MiB, f)
        open_chain_over(q, c, f)

        def refused(args, desc):
            r = q.cmd(CMD, dict({'device': 'top'}, **args))
            check(r.get('error') == {'class': 'GenericError', 'desc': desc}, '%r: %r' % (args, r))

        refused({'cursor': 8 * MiB + 1}, "Parameter 'cursor' is past the end of 'top' (8388608 bytes)")
        refused({'cursor': -1}, "Parameter 'cursor' expects a non-negative value")
        refused({'length': 65 * MiB}, "Parameter 'length' expects a value of at most 67108864")
        refused({'device': 'nope'}, "Cannot find device='nope' nor node-name='nope'")
        refused({'base-node': 'top'}, "Node 'top' is not a backing image of 'top'")
        refused({'backing-file': 'x'}, 'backing file specified, but streaming the entire chain')

        before = qmp_chain(q, 'top')
        f.fail(True)
        r = q.cmd(CMD, {'device': 'top'})
        check(r.get('error', {}).get('desc', '').startswith("Pulling into 'top' failed at offset ")
              and r['error']['desc'].endswith('Input/output error; the backing chain is unchanged'),
              'failed increment: %r' % r)
        check(qmp_chain(q, 'top') == before, 'the chain changed after a failed increment')
        check(len(backing_chain(c.top)) == 3, 'qemu-img info after a failure: %r' % backing_chain(c.top))
        check(not completions(q), 'a completion event after a failure')
        f.fail(False)
        cursor, calls = 0, 0
        while cursor < 8 * MiB:
            r = q.cmd(CMD, {'device': 'top', 'cursor': cursor, 'length': MiB})
            check('return' in r, 'increment after recovery: %r' % r)
            cursor, calls = r['return']['cursor'], calls + 1
        done = completions(q)
        check(len(done) == 1 and done[0]['data']['device'] == 'top', 'completion after recovery: %r' % done)
        check(len(qmp_chain(q, 'top')) == 1, 'not relinked after recovery')
        export(q, d, 'top')
        check(read_all(d.path('nbd.sock'), 'top', 8 * MiB) == bytes(c.expected), 'data after recovery')
        q.cmd('block-export-del', {'id': 'e-top', 'mode': 'hard'})
        for n in ('top', 'mid', 'base'):
            q.cmd('blockdev-del', {'node-name': n})
        q.close()
        check(d.stop() == 0, 'blockd exit status')
    print('refusals and a failed increment: chain intact, %d increments after recovery' % calls)


if __name__ == '__main__':
    test_increments()
    test_refusals_and_failure()
