#!/usr/bin/python3
"""block-stream on a three-image qcow2 chain (base <- mid <- top), the same
QMP script against qemu-storage-daemon and blockd.

1. Refusals: every bad argument combination fails on both with the same
   class and text (mutual exclusion, unknown nodes, nodes outside the
   chain, a backing file for a full stream, a taken filter node name, busy
   nodes while a stream runs, blockdev-del of a layer in use); a
   rate-limited stream is listed alike by query-block-jobs and cancelled
   with the same events; with auto-finalize off the link changes only at
   job-finalize.
2. Live: an NBD client writes into top and verifies while top is streamed
   from mid (base kept, backing file recorded as given), then from base
   (the whole chain): no write fails, the export reads the chain's merge
   plus every acknowledged write, the events are the same on both daemons,
   query-named-block-nodes and `qemu-img info --backing-chain` name the
   same chain, `qemu-img check` is clean and the image alone (its backing
   link gone) reads what the export read.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, ChainWriter, backing_chain, check, check_clean, compare, export, image_name, make_chain,  # noqa: E402
                       node_names, normalise, open_chain_named, qmp_chain, read_image, reply, run_both,
                       wait_job_end, wait_until)

SIZE = 64 * MiB


def refusals(q, d, tmp):
    c = make_chain(tmp, 8 * MiB)
    open_chain_named(q, c)
    out = []

    def stream(**args):
        a = {'job-id': 'x', 'device': 'top'}
        a.update({k.replace('_', '-'): v for k, v in args.items()})
        out.append(('block-stream', sorted(args), reply(q.cmd('block-stream', a))))

    stream(base='base.qcow2', base_node='base')
    stream(base='base.qcow2', bottom='mid')
    stream(bottom='mid', base_node='base')
    stream(device='nope')
    stream(base='nope.qcow2')
    stream(base_node='nope')
    stream(base_node='top')
    stream(base_node='other')
    stream(device='mid', base_node='top')
    stream(bottom='nope')
    stream(bottom='other')
    stream(backing_file='base.qcow2')
    stream(bottom='mid', backing_file='base.qcow2')
    stream(filter_node_name='mid')
    # A stream that stays running: others meet its blockers.
    stream(base_node='base', speed=1, on_error='stop')
    stream(job_id='y')
    stream(job_id='y', device='mid')
    out.append(('blockdev-del mid', reply(q.cmd('blockdev-del', {'node-name': 'mid'}))))
    jobs = q.cmd('query-block-jobs')['return']
    out.append(('query-block-jobs', [(j['device'], j['type'], j['status'], j['speed'], j['io-status'], j['len'])
                                     for j in jobs]))
    out.append(('set-speed', reply(q.cmd('block-job-set-speed', {'device': 'x', 'speed': -1}))))
    out.append(('cancel', reply(q.cmd('block-job-cancel', {'device': 'x'}))))
    out.append(('events', normalise(wait_job_end(q, 'x'))))
    out.append(('chain', [image_name(f[0]) for f in qmp_chain(q, 'top')]))
    # Manual finalize: the link changes at job-finalize, not before.
    stream(job_id='m', base_node='base', auto_finalize=False, auto_dismiss=False)
    evs = wait_until(q, lambda e: e['event'] == 'JOB_STATUS_CHANGE' and e['data'] == {'id': 'm', 'status': 'pending'})
    out.append(('pending', [image_name(f[0]) for f in qmp_chain(q, 'top')]))
    out.append(('finalize', reply(q.cmd('job-finalize', {'id': 'm'}))))
    evs += wait_until(q, lambda e: e['event'] == 'JOB_STATUS_CHANGE' and e['data'] == {'id': 'm', 'status': 'concluded'})
    out.append(('dismiss', reply(q.cmd('job-dismiss', {'id': 'm'}))))
    evs += wait_job_end(q, 'm')
    # (qemu-storage-daemon 7.2 may crash on query-named-block-nodes between
    # the finalize and the dismiss of a stream, so the chain is read after.)
    out.append(('finalized', [image_name(f[0]) for f in qmp_chain(q, 'top')]))
    out.append(('events', normalise(evs)))
    return out


def test_refusals():
    qsd, ours = run_both(refusals)
    compare('refusals', qsd, ours)
    print('refusals: %d steps alike' % len(qsd))


def live(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    export(q, d, 'top')
    out = []
    # Hundreds of writes while the streams, held to 16 MiB/s, copy: enough
    # to land in regions being copied, few enough to leave most of the
    # disk to the streams.
    w = ChainWriter(d, 'top', c.expected, rate=250)
    w.start()
    # Pull mid into top, keep base (recorded by the name given).
    out.append(reply(q.cmd('block-stream', {'job-id': 's1', 'device': 'top', 'base-node': 'base',
                                            'backing-file': 'base.qcow2', 'speed': 16 * MiB})))
    out.append(normalise(wait_job_end(q, 's1')))
    chain1 = qmp_chain(q, 'top')
    out.append([(image_name(f), fmt, b) for f, fmt, b in chain1])
    from_img = [(image_name(f), fmt, b) for f, fmt, b, _ in backing_chain(c.top)]
    check(from_img == [(image_name(f), fmt, b) for f, fmt, b in chain1],
          'qemu-img info %r vs query-named-block-nodes %r' % (from_img, chain1))
    # Then everything: top stands alone.
    out.append(reply(q.cmd('block-stream', {'job-id': 's2', 'device': 'top', 'speed': 16 * MiB})))
    out.append(normalise(wait_job_end(q, 's2')))
    chain2 = qmp_chain(q, 'top')
    out.append([(image_name(f), fmt, b) for f, fmt, b in chain2])
    w.stop()
    check(w.count > 100, 'the writer wrote only %d blocks' % w.count)
    disk = w.verify('export after both streams')
    out.append(node_names(q))
    ok = [len(chain1) == 2, len(chain2) == 1]
    return out, (c, disk, w.count, ok)


def test_live():
    qsd, ours = run_both(live_checked)
    compare('live stream', qsd[0], ours[0])
    print('live: %d writes during two streams; events, chains and nodes alike' % ours[1])


def live_checked(q, d, tmp):
    out, (c, disk, count, ok) = live(q, d, tmp)
    check(all(ok), 'chain lengths after the streams: %r' % ok)
    # After the daemon stops (run_both), the images are checked below; stop it here first.
    q.cmd('block-export-del', {'id': 'e-top'})
    q.cmd('blockdev-del', {'node-name': 'top'})
    check(backing_chain(c.top) == [(c.top, 'qcow2', None, None)], 'top still has a backing file: %r'
          % backing_chain(c.top))
    check_clean(c.top)
    check(read_image(c.top) == disk, 'the image alone reads differently from the export')
    return out, count


if __name__ == '__main__':
    test_refusals()
    test_live()
