#!/usr/bin/python3
"""Active commit (block-commit of the active layer) against qemu-storage-daemon.

1. Complete: on base <- mid <- top with an NBD client writing to top's
   export and verifying, the commit becomes READY (type commit, len = what
   top and mid hold), job-complete moves the export to base while the
   client keeps writing: no write fails or is lost (the export reads the
   client's model), base.qcow2 reads the same once closed, qemu-img check
   is clean, top's and mid's images are untouched.  Without a client,
   READY's len (what top and mid hold) equals qemu-storage-daemon's.
3. A smaller base grows first; after the switch the export keeps its size
   and data.
2. Cancel after READY (a second commit and blockdev-del of mid and base
   refused alike meanwhile): block-job-cancel ends the job without the switch
   (BLOCK_JOB_COMPLETED, no error); a second commit cancelled with
   job-cancel after READY ends with BLOCK_JOB_CANCELLED; either way the
   export stays on top, the chain is as it was (query-named-block-nodes and
   qemu-img info) and top reads the client's model.
Events, exports and chains equal qemu-storage-daemon's.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, ChainWriter, backing_chain, check, check_clean, compare, export,  # noqa: E402
                       make_chain, normalise, ok, open_chain_named, qmp_chain, read_all, read_image, reply, run, run_both,
                       wait_job_end, wait_until)
from test_commit import close_all, format_nodes, strip  # noqa: E402

SIZE = 64 * MiB


def ready(q, job):
    """Events up to BLOCK_JOB_READY of `job`, and its len."""
    events = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY' and ev['data']['device'] == job)
    return events, events[-1]['data']['len']


def writes_go_on(w, n=20):
    """Returns once the client finished n more writes (it keeps writing while a job changes state)."""
    target = w.count + n
    while w.count < target and w.is_alive():
        w.join(0.05)
    check(w.is_alive() or w.error is None, 'the writer stopped: %r' % (w.error,))


def exports(q):
    return sorted((e['id'], e['node-name']) for e in q.cmd('query-block-exports')['return'])


def complete(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    export(q, d, 'top')
    before = strip(tmp, qmp_chain(q, 'top'))
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    ok(q.cmd('block-commit', {'job-id': 'ac', 'device': 'top', 'base-node': 'base'}), 'block-commit')
    events, length = ready(q, 'ac')
    # The first pass copies what top and mid hold, not the whole disk.
    check(0 < length < SIZE // 2, 'READY with len %d: the first pass was not limited to top and mid' % length)
    writes_go_on(w)
    ok(q.cmd('job-complete', {'id': 'ac'}), 'job-complete')
    events += wait_job_end(q, 'ac')
    writes_go_on(w)
    w.stop()
    w.verify('the export after the active commit')
    where = exports(q)
    check(where == [('e-top', 'base')], 'exports after the active commit: %r' % where)
    chains = (strip(tmp, qmp_chain(q, 'base')), strip(tmp, qmp_chain(q, 'top')))
    check(chains[1] == before, 'top\'s chain changed: %r, was %r' % (chains[1], before))
    nodes = format_nodes(q)
    close_all(q)
    check(read_image(c.base) == bytes(w.image), 'base.qcow2 does not read what the export read')
    check(strip(tmp, backing_chain(c.top))[:2] == [('<tmp>/top.qcow2', 'qcow2', 'mid.qcow2', 'qcow2'),
                                                  ('<tmp>/mid.qcow2', 'qcow2', 'base.qcow2', 'qcow2')],
          'qemu-img info of top: %r' % backing_chain(c.top))
    for path in (c.top, c.mid, c.base):
        check_clean(path)
    return normalise(events), where, chains, nodes


def cancel(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    export(q, d, 'top')
    before = strip(tmp, qmp_chain(q, 'top'))
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    events, answers = [], []
    for job, verb, args in (('soft', 'block-job-cancel', {'device': 'soft'}),
                            ('hard', 'job-cancel', {'id': 'hard'})):
        ok(q.cmd('block-commit', {'job-id': job, 'device': 'top'}), 'block-commit ' + job)
        events += ready(q, job)[0]
        # What the running commit holds.
        answers.append(reply(q.cmd('block-commit', {'job-id': 'k', 'device': 'top', 'top-node': 'mid'})))
        for node in ('mid', 'base'):
            answers.append(reply(q.cmd('blockdev-del', {'node-name': node})))
        writes_go_on(w)
        ok(q.cmd(verb, args), verb)
        events += wait_job_end(q, job)
        writes_go_on(w)
    w.stop()
    w.verify('the export after the cancelled commits')
    where = exports(q)
    check(where == [('e-top', 'top')], 'exports after the cancelled commits: %r' % where)
    chain = strip(tmp, qmp_chain(q, 'top'))
    check(chain == before, 'the chain changed: %r, was %r' % (chain, before))
    nodes = format_nodes(q)
    close_all(q)
    check(read_image(c.top) == bytes(w.image), 'top.qcow2 does not read what the export read')
    check([i[:3] for i in strip(tmp, backing_chain(c.top))] == before,
          'qemu-img info --backing-chain %r, query-named-block-nodes said %r' % (backing_chain(c.top), before))
    for path in (c.top, c.mid, c.base):
        check_clean(path)
    return normalise(events), where, chain, nodes, answers


def first_pass(q, d, tmp):
    """No client: READY's len is what top and mid hold, nothing else."""
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    ok(q.cmd('block-commit', {'job-id': 'fp', 'device': 'top'}), 'block-commit')
    length = ready(q, 'fp')[1]
    ok(q.cmd('job-cancel', {'id': 'fp'}), 'job-cancel')
    wait_job_end(q, 'fp')
    return length


def smaller_base(q, d, tmp):
    """An active commit into a smaller base grows it first (QEMU's mirror_run)
    and moves the export to it: the disk keeps its size and data."""
    small, big = os.path.join(tmp, 'small.qcow2'), os.path.join(tmp, 'big.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', small, str(SIZE // 2))
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 1M', small)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', small, '-F', 'qcow2', big, str(SIZE))
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 %d 1M' % (SIZE - MiB), big)
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'small',
                              'file': {'driver': 'file', 'filename': small}}), 'blockdev-add small')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'big', 'backing': 'small',
                              'file': {'driver': 'file', 'filename': big}}), 'blockdev-add big')
    sock = export(q, d, 'big')
    ok(q.cmd('block-commit', {'job-id': 'g', 'device': 'big'}), 'block-commit')
    events = ready(q, 'g')[0]
    ok(q.cmd('job-complete', {'id': 'g'}), 'job-complete')
    events += wait_job_end(q, 'g')
    where = exports(q)
    data = read_all(sock, 'big', SIZE)
    check(len(data) == SIZE and data[:MiB] == b'\x11' * MiB and data[-MiB:] == b'\x22' * MiB
          and not any(data[MiB:-MiB]), 'the export reads differently on the grown base')
    sizes = [n['image']['virtual-size'] for n in q.cmd('query-named-block-nodes')['return']
             if n['node-name'] == 'small']
    return normalise(events), where, sizes


def main():
    want, got = run_both(smaller_base)
    for i, what in enumerate(('events', 'exports', 'base size')):
        compare(what + ' of the commit into a smaller base', want[i], got[i])
    want, got = run_both(first_pass)
    check(want == got, 'READY len %d, qemu-storage-daemon %d' % (got, want))
    want, got = run_both(complete)
    for i, what in enumerate(('events', 'exports', 'chains', 'nodes')):
        compare(what + ' after the completed commit', want[i], got[i])
    want, got = run_both(cancel)
    for i, what in enumerate(('events', 'exports', 'chain', 'nodes', 'answers')):
        compare(what + ' after the cancelled commits', want[i], got[i])


if __name__ == '__main__':
    main()
