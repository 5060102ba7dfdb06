#!/usr/bin/python3
"""block-commit's on-error policies against qemu-storage-daemon.

A failing node is nbdkit's memory plugin behind its error filter (EIO or
ENOSPC on every request while its error-file exists):
- writes fail: the chain's base is that node (raw over NBD) and the
  intermediate commit of mid into it writes there (operation "write");
- reads fail: mid is a qcow2 image whose file is that node, and the
  commit of mid reads it (operation "read");
- one active commit into a failing base.
For each cell (report, ignore, stop, enospc; EIO, ENOSPC) the failure is
on when the job starts, and the same script runs against both daemons:
events (runs of one repeated BLOCK_JOB_ERROR, policy ignore retrying,
count once), io-status and paused while stopped, the answer to job-pause
of a stopped job, and then resume after the failure is gone (the region is
retried and the commit completes: top's chain is base alone and reads what
it read before) or job-cancel of the stopped job, and for report the
failed job (the chain as it was) — all equal qemu-storage-daemon's.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, FailingNode, LAYERS, Chain, check, compare, connect, layer_writes,  # noqa: E402
                       make_chain_over, merge, normalise, ok, open_chain_over, qemu_io_write, qmp_chain,
                       read_all, reply, run, run_both, wait_job_end, wait_status, wait_until)
from test_commit import strip  # noqa: E402

SIZE = 16 * MiB


def job_info(q, job):
    for j in q.cmd('query-block-jobs')['return']:
        if j['device'] == job:
            return j
    return None


def chain_over_failing_mid(tmp, failing):
    """base (a qcow2 file) <- mid (qcow2 whose file is the failing node, its
    image uploaded there) <- top (qcow2 file): the layers as make_chain writes them."""
    c = Chain(tmp, SIZE)
    for name, below in (('base', None), ('mid', 'base'), ('top', 'mid')):
        args = ['qemu-img', 'create', '-q', '-f', 'qcow2']
        if below:
            args += ['-b', below + '.qcow2', '-F', 'qcow2']
        run(*(args + [c.path[name], str(SIZE)]))
    for name in LAYERS:
        c.layers[name] = layer_writes(SIZE, name)
        qemu_io_write(c.path[name], c.layers[name])
    c.expected = merge(c, *LAYERS)
    h = connect(failing.sock)
    with open(c.mid, 'rb') as f:
        image = f.read()
    for off in range(0, len(image), MiB):
        h.pwrite(image[off:off + MiB], off)
    h.flush()
    h.shutdown()
    return c


def open_chain_failing_mid(q, c, failing):
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                              'file': {'driver': 'file', 'filename': c.base}}), 'blockdev-add base')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'mid', 'backing': 'base',
                              'file': failing.blockdev('mid-nbd')}), 'blockdev-add mid')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
                              'file': {'driver': 'file', 'filename': c.top}}), 'blockdev-add top')


def content(q, d):
    """What top reads, through a read-only export."""
    sock = d.path('nbd.sock')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'r', 'node-name': 'top', 'name': 'top'}), 'export')
    data = read_all(sock, 'top', SIZE)
    ok(q.cmd('block-export-del', {'id': 'r'}), 'block-export-del')
    wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
    ok(q.cmd('nbd-server-stop'), 'nbd-server-stop')
    return data


def cell(side, policy, errno_name, then, active=False):
    """A script: `side` 'write' (failing base) or 'read' (failing mid);
    `then` what follows the first error: 'resume' or 'cancel' (stop, enospc
    stopping) or 'heal' (ignore: the failure goes, the retry succeeds)."""
    def script(q, d, tmp):
        failing = FailingNode(SIZE, errno_name, writes=[] if side == 'read' else None)
        failing.start()
        sock = failing.sock
        try:
            if side == 'write':
                c = make_chain_over(tmp, SIZE, failing)
                open_chain_over(q, c, failing)
                args = {'job-id': 'j', 'device': 'top', 'on-error': policy}
                if not active:
                    args.update({'top-node': 'mid', 'base-node': 'base', 'backing-file': failing.uri()})
            else:
                c = chain_over_failing_mid(tmp, failing)
                open_chain_failing_mid(q, c, failing)
                args = {'job-id': 'j', 'device': 'top', 'top-node': 'mid', 'base-node': 'base',
                        'on-error': policy}
            before = content(q, d)
            failing.fail(True)
            answers = [reply(q.cmd('block-commit', args))]
            events = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_ERROR')
            first = events[-1]['data']
            stopped = None
            if first['action'] == 'stop':
                events += wait_status(q, 'j', 'paused')
                info = job_info(q, 'j')
                stopped = (info['status'], info['paused'], info['io-status'])
                answers.append(reply(q.cmd('job-pause', {'id': 'j'})))
            failing.fail(False)
            if then == 'resume':
                answers.append(reply(q.cmd('job-resume', {'id': 'j'})))
            elif then == 'cancel':
                answers.append(reply(q.cmd('job-cancel', {'id': 'j'})))
            if active and then != 'cancel' and first['action'] != 'report':
                events += wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY')
                answers.append(reply(q.cmd('job-complete', {'id': 'j'})))
            events += wait_job_end(q, 'j')
            after = content(q, d) if not active else None
            check(after is None or after == before, '%s/%s/%s/%s: top reads differently after the job'
                  % (side, policy, errno_name, then))
            chain = strip(tmp, qmp_chain(q, 'top'))
            for node in ('top', 'mid', 'base'):
                q.cmd('blockdev-del', {'node-name': node})
            # QEMU names a qcow2 image whose file is an nbd node with a json:
            # name, blockd with its file's name, "" (left alone here).
            chain = [tuple(x.replace(sock, '<sock>') if isinstance(x, str) else x for x in link) for link in chain]
            chain = [('<over nbd>',) + link[1:] if 'json:' in link[0] or link[0] == '' else link
                     for link in chain]
            return normalise(events), answers, stopped, chain
        finally:
            failing.close()
    return script


CELLS = [
    # side, policy, errno, then
    ('write', 'report', 'EIO', None),
    ('write', 'ignore', 'EIO', 'heal'),
    ('write', 'stop', 'EIO', 'resume'),
    ('write', 'enospc', 'EIO', None),
    ('write', 'report', 'ENOSPC', None),
    ('write', 'ignore', 'ENOSPC', 'heal'),
    ('write', 'stop', 'ENOSPC', 'cancel'),
    ('write', 'enospc', 'ENOSPC', 'resume'),
    ('read', 'report', 'EIO', None),
    ('read', 'ignore', 'EIO', 'heal'),
    ('read', 'stop', 'EIO', 'resume'),
    ('read', 'stop', 'EIO', 'cancel'),
    ('read', 'enospc', 'EIO', None),
]


def main():
    only = sys.argv[1:]   # e.g. "write stop ENOSPC": the cells whose name starts so
    for side, policy, errno_name, then in CELLS:
        name = '%s %s %s %s' % (side, policy, errno_name, then or '')
        if only and not name.startswith(' '.join(only)):
            continue
        want, got = run_both(cell(side, policy, errno_name, then))
        for i, what in enumerate(('events', 'answers', 'job while stopped', 'chain')):
            compare('%s (%s)' % (what, name), want[i], got[i])
    # An active commit into a failing base, policy report.
    want, got = run_both(cell('write', 'report', 'EIO', None, active=True))
    for i, what in enumerate(('events', 'answers', 'job while stopped', 'chain')):
        compare('%s (active commit, report)' % what, want[i], got[i])


if __name__ == '__main__':
    main()
