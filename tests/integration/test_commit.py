#!/usr/bin/python3
"""block-commit against qemu-storage-daemon: refusals and intermediate commit.

1. Refusals: the same block-commit arguments to both daemons get the same
   answer (class and text), in QEMU's order of checks; while a commit runs,
   a second one and blockdev-del of each node it holds are refused alike,
   a user pause and resume of it answer and change state alike, and that
   commit (no backing-file: base's file name is recorded) ends the
   same way.  A base smaller than top grows first, as in QEMU.  (blockd
   only: a layer that leaves the chain may not be written while the
   commit runs, where QEMU drops the writes.)
2. Intermediate commit of mid into base (backing-file 'base.qcow2') on
   base <- mid <- top while an NBD client writes to top and verifies: the
   export reads the merge plus every acknowledged write, base holds the
   merge of base and mid, top's image names base.qcow2
   (`qemu-img info --backing-chain` agrees with query-named-block-nodes),
   qemu-img check is clean, and events, final chain and node list equal
   qemu-storage-daemon's.
"""
import errno
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import errno_of, import_nbd  # noqa: E402
from chain_lib import (MiB, ChainWriter, connect, fail, first_difference, backing_chain, check, check_clean, compare, export,  # noqa: E402
                       make_chain, merge, node_names, normalise, ok, open_chain_named, qmp_chain, read_all,
                       read_image, reply, run, run_both, wait_job_end, wait_status, wait_until)

SIZE = 64 * MiB


def strip(tmp, value):
    """value with the private directory's path replaced, so both daemons'
    results compare; QEMU's json: file names (an image whose backing node is
    named by node name rather than opened from the header) become the
    image's file name, which is what blockd reports."""
    if isinstance(value, str):
        if value.startswith('json:'):
            value = json.loads(value[5:]).get('file', {}).get('filename', value)
        return value.replace(tmp, '<tmp>')
    if isinstance(value, (list, tuple)):
        return type(value)(strip(tmp, v) for v in value)
    return value


def format_nodes(q):
    """The named nodes but the file nodes that blockd names '<node>-file'
    where qemu-storage-daemon gives them hidden '#block' names."""
    return [n for n in node_names(q) if not n.endswith('-file')]


def close_all(q, exports=('e-top',)):
    """Removes the exports and the chain's nodes (top down): the daemon closes the images."""
    for e in exports:
        ok(q.cmd('block-export-del', {'id': e}), 'block-export-del')
        wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
    for node in ('top', 'mid', 'base'):
        if node in node_names(q):
            ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)


def refusals(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    raw = os.path.join(tmp, 'raw.img')
    open(raw, 'wb').truncate(SIZE)
    ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 'raw',
                              'file': {'driver': 'file', 'filename': raw}}), 'blockdev-add raw')
    x = {'job-id': 'x', 'device': 'top'}
    args = [
        {'device': 'nosuch'},
        {'job-id': 'x', 'device': 'mid'},
        {'device': 'top', 'top-node': 'mid'},
        {'job-id': 'bad id', 'device': 'top', 'top-node': 'mid'},
        dict(x, top='a', **{'top-node': 'b'}),
        dict(x, base='a', **{'base-node': 'b'}),
        dict(x, **{'top-node': 'nosuch'}),
        dict(x, **{'base-node': 'nosuch'}),
        dict(x, **{'top-node': 'raw'}),
        dict(x, **{'top-node': 'mid', 'base-node': 'top'}),
        dict(x, top='nosuch.qcow2'),
        dict(x, top='mid.qcow2', **{'speed': -1}),
        dict(x, top=os.path.join(tmp, 'mid.qcow2'), **{'speed': -1}),
        dict(x, base='base.qcow2', **{'speed': -1}),
        dict(x, base=os.path.join(tmp, 'base.qcow2'), **{'top-node': 'mid', 'speed': -1}),
        dict(x, base='nosuch.qcow2'),
        dict(x, **{'top-node': 'mid', 'base-node': 'mid'}),
        dict(x, **{'top-node': 'base'}),
        {'job-id': 'x', 'device': 'raw'},
        dict(x, **{'backing-file': 'base.qcow2'}),
        dict(x, **{'top-node': 'top', 'base-node': 'base', 'backing-file': 'base.qcow2'}),
        dict(x, **{'top-node': 'mid', 'speed': -1}),
        dict(x, **{'on-error': 'bogus'}),
    ]
    answers = [strip(tmp, reply(q.cmd('block-commit', a))) for a in args]
    # A commit that holds the chain (speed 1: one chunk, then it waits).
    answers.append(reply(q.cmd('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid',
                                                'base-node': 'base', 'speed': 1})))
    answers.append(reply(q.cmd('block-commit', {'job-id': 'k', 'device': 'top', 'top-node': 'mid'})))
    answers.append(reply(q.cmd('block-commit', {'job-id': 'j', 'device': 'raw'})))
    for node in ('top', 'mid', 'base'):
        answers.append(reply(q.cmd('blockdev-del', {'node-name': node})))
    answers.append(reply(q.cmd('block-job-complete', {'device': 'j'})))
    # A user pause: paused (io-status ok), a second pause refused; resume.
    answers.append(reply(q.cmd('job-pause', {'id': 'j'})))
    events = wait_status(q, 'j', 'paused')
    job = q.cmd('query-block-jobs')['return'][0]
    answers.append((job['status'], job['paused'], job['io-status']))
    answers.append(reply(q.cmd('job-pause', {'id': 'j'})))
    answers.append(reply(q.cmd('job-resume', {'id': 'j'})))
    answers.append(reply(q.cmd('block-job-set-speed', {'device': 'j', 'speed': 0})))
    events += wait_job_end(q, 'j')
    events = [e for e in events if e['data'].get('id', e['data'].get('device')) == 'j']
    chain = strip(tmp, qmp_chain(q, 'top'))
    check(chain == [i[:3] for i in strip(tmp, backing_chain(c.top))],
          'query-named-block-nodes %r and qemu-img info %r disagree' % (chain, backing_chain(c.top)))
    return answers, normalise(events), chain, format_nodes(q)


def intermediate(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain_named(q, c)
    export(q, d, 'top')
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    ok(q.cmd('block-commit', {'job-id': 'c1', 'device': 'top', 'top-node': 'mid', 'base-node': 'base',
                              'backing-file': 'base.qcow2'}), 'block-commit')
    events = wait_job_end(q, 'c1')
    w.stop()
    w.verify('the export of top after the commit')
    chain = strip(tmp, qmp_chain(q, 'top'))
    want = [('<tmp>/top.qcow2', 'qcow2', 'base.qcow2'), ('<tmp>/base.qcow2', 'qcow2', None)]
    check(chain == want, 'query-named-block-nodes: chain %r, wants %r' % (chain, want))
    nodes = format_nodes(q)
    # qemu-img reads the images once the daemon closed them (QEMU keeps
    # qcow2 metadata in its cache until then).
    close_all(q)
    got, want = read_image(c.base), bytes(merge(c, 'base', 'mid'))
    check(got == want, 'base does not hold the merge of base and mid: first difference at %s (%s)'
          % (first_difference(got, want), d.proc.args[0]))
    info = strip(tmp, backing_chain(c.top))
    check([i[:3] for i in info] == [('<tmp>/top.qcow2', 'qcow2', 'base.qcow2'),
                                    ('<tmp>/base.qcow2', 'qcow2', None)] and info[0][3] == 'qcow2',
          'qemu-img info --backing-chain: %r' % info)
    check(read_image(c.top) == bytes(w.image), 'top.qcow2 does not read what the export read')
    for path in (c.top, c.base, c.mid):
        check_clean(path)
    return normalise(events), chain, nodes


def smaller_base(q, d, tmp):
    """A base smaller than the layers above grows first, as in QEMU: for an
    intermediate commit, then for an active one."""
    small = os.path.join(tmp, 'small.qcow2')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', small, str(SIZE // 2))
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 1M', small)
    paths = [small]
    for name in ('big', 'over'):
        paths.append(os.path.join(tmp, name + '.qcow2'))
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', paths[-2], '-F', 'qcow2', paths[-1], str(SIZE))
    run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 %d 1M' % (SIZE - (1 << 20)), paths[1])
    for name, path, backing in (('small', paths[0], None), ('big', paths[1], 'small'), ('over', paths[2], 'big')):
        args = {'driver': 'qcow2', 'node-name': name, 'file': {'driver': 'file', 'filename': path}}
        if backing:
            args['backing'] = backing
        ok(q.cmd('blockdev-add', args), 'blockdev-add ' + name)
    ok(q.cmd('block-commit', {'job-id': 'i', 'device': 'over', 'top-node': 'big'}), 'intermediate commit')
    events = wait_job_end(q, 'i')
    sizes = [n['image']['virtual-size'] for n in q.cmd('query-named-block-nodes')['return']
             if n['node-name'] == 'small']
    close = [('big',), ('over', 'small')]
    for node in close[0]:
        ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
    data = read_all_node(q, d, 'over')
    check(data[:1 << 20] == b'\x11' * (1 << 20) and data[-(1 << 20):] == b'\x22' * (1 << 20)
          and not any(data[1 << 20:-(1 << 20)]), 'over reads differently after the commit into a grown base')
    for node in close[1]:
        ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
    info = subprocess.run(['qemu-img', 'info', '-U', '--output=json', small], capture_output=True, text=True)
    sizes.append(json.loads(info.stdout)['virtual-size'])
    return normalise(events), sizes


def read_all_node(q, d, node):
    """What `node` reads, through a read-only export."""
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'r', 'node-name': node, 'name': node}), 'export')
    data = read_all(sock, node, SIZE)
    ok(q.cmd('block-export-del', {'id': 'r'}), 'block-export-del')
    wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
    return data


def layer_writers():
    """blockd only (QEMU lets a client write to a layer that an
    intermediate commit drops, and loses the write): a commit of a layer
    that is written is refused, and a write to it while the commit runs
    fails (EPERM), so nothing acknowledged is lost; reads go on."""
    def script(q, d, tmp):
        nbd = import_nbd()
        c = make_chain(tmp, SIZE)
        open_chain_named(q, c)
        export(q, d, 'mid')
        r = q.cmd('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid'})
        check(reply(r) == ('GenericError', "Node 'mid' is written by a user (an export?): a commit would "
                           "lose those writes"), 'commit of a written layer: %r' % r)
        r = q.cmd('block-commit', {'job-id': 'j', 'device': 'top'})
        check(reply(r) == ('GenericError', "Node 'mid' is written by a user (an export?): a commit would "
                           "lose those writes"), 'active commit over a written layer: %r' % r)
        ok(q.cmd('block-export-del', {'id': 'e-mid'}), 'block-export-del')
        wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
        ok(q.cmd('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid', 'speed': 1}), 'commit')
        export(q, d, 'mid')
        h = connect(d.path('nbd.sock'), 'mid')
        try:
            h.pwrite(b'\x42' * 4096, 0)
            fail('a write to mid during its commit was accepted')
        except nbd.Error as e:
            check(errno_of(e) == errno.EPERM, 'write to mid: %r' % e)
        want = bytes(merge(c, 'base', 'mid'))
        check(h.pread(1 << 20, 0) == want[:1 << 20], 'mid reads differently during its commit')
        h.shutdown()
        ok(q.cmd('block-job-set-speed', {'device': 'j', 'speed': 0}), 'set-speed')
        evs = wait_job_end(q, 'j')
        check(not [e for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' in e['data']],
              'the commit failed: %r' % evs)
    run_both(script, need_qsd=False)


def main():
    want, got = run_both(refusals)
    compare('refusals', want[0], got[0])
    compare('events of the held commit', want[1], got[1])
    compare('chain after the held commit', want[2], got[2])
    compare('nodes after the held commit', want[3], got[3])
    want, got = run_both(smaller_base)
    compare('commit into a smaller base', want, got)
    layer_writers()
    want, got = run_both(intermediate)
    compare('events of the intermediate commit', want[0], got[0])
    compare('chain after the intermediate commit', want[1], got[1])
    compare('nodes after the intermediate commit', want[2], got[2])


if __name__ == '__main__':
    main()
