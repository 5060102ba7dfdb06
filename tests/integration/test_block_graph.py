#!/usr/bin/python3
"""x-debug-query-block-graph and query-named-block-nodes against
qemu-storage-daemon, in one run, for the same three setups:

1. a file node under a raw node, exported writable, with a dirty bitmap;
2. a qcow2 image over a qcow2 backing file (implicit file and backing nodes);
3. the same as 1 during a slow backup to a second file.

Implicit nodes have different generated names (QEMU '#block123', blockd
'top-file'), so every node not named by the script is named by its path
from a named one ('top/backing/file').  In 1 and 2 the edges (parent,
child, name, permissions held and shared) must be the same sets, and so
must the node names, drivers and read-only flags of query-named-block-nodes.
In 3 QEMU puts a copy-before-write filter node above the source where
blockd has write hooks: the edges between nodes both daemons have must
agree, blockd's job must hold 'source' and 'target' edges, and the
export's edge must still go to the source."""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check, fail  # noqa: E402

NAMED = {'fa', 'ra', 'fb', 'top'}


def canonical(graph):
    """Edges as (parent, edge, child, perm, shared) with implicit names resolved."""
    nodes = {n['id']: n for n in graph['nodes']}
    names = {i: n['name'] for i, n in nodes.items() if n['type'] == 'block-driver' and n['name'] in NAMED}
    for _ in range(10):  # resolve children of resolved nodes
        for e in graph['edges']:
            p, c = e['parent'], e['child']
            if p in names and c not in names and nodes[c]['type'] == 'block-driver':
                names[c] = '%s/%s' % (names[p], e['name'])
    out = set()
    for e in graph['edges']:
        p, c = nodes[e['parent']], nodes[e['child']]
        pname = names.get(e['parent'], '%s:%s' % (p['type'], p['name'] if p['type'] == 'block-job' else '?'))
        cname = names.get(e['child'], '?')
        out.add((pname, e['name'], cname, tuple(e['perm']), tuple(e['shared-perm'])))
    return out, names


def named_nodes(q, names):
    rows = q.cmd('query-named-block-nodes')['return']
    out = set()
    for r in rows:
        out.add((r['node-name'] if r['node-name'] in NAMED else '~' + r['drv'], r['drv'], r['ro']))
    return out


def run(cmd, tmp):
    for f in ('a.img', 'b.img'):
        with open(os.path.join(tmp, f), 'wb') as fh:
            fh.truncate(64 << 20)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', os.path.join(tmp, 'base.qcow2'), '16M'], check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2',
                    os.path.join(tmp, 'top.qcow2')], check=True)
    result = {}
    with Daemon(cmd) as d:
        q = d.qmp()

        def ok(name, args):
            r = q.cmd(name, args)
            check('return' in r, '%s: %r' % (name, r))

        ok('blockdev-add', {'driver': 'file', 'node-name': 'fa', 'filename': os.path.join(tmp, 'a.img')})
        ok('blockdev-add', {'driver': 'raw', 'node-name': 'ra', 'file': 'fa'})
        ok('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': os.path.join(tmp, 'nbd.sock')}}})
        ok('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'ra', 'writable': True})
        ok('block-dirty-bitmap-add', {'node': 'ra', 'name': 'b0'})
        g1 = q.cmd('x-debug-query-block-graph')['return']
        result['export'] = (canonical(g1)[0], named_nodes(q, None))
        ok('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                            'file': {'driver': 'file', 'filename': os.path.join(tmp, 'top.qcow2')}})
        g2 = q.cmd('x-debug-query-block-graph')['return']
        result['qcow2'] = (canonical(g2)[0], named_nodes(q, None))
        ok('blockdev-add', {'driver': 'file', 'node-name': 'fb', 'filename': os.path.join(tmp, 'b.img')})
        ok('blockdev-backup', {'job-id': 'j1', 'device': 'ra', 'target': 'fb', 'sync': 'full', 'speed': 1})
        time.sleep(0.2)
        g3 = q.cmd('x-debug-query-block-graph')['return']
        result['backup'] = canonical(g3)[0]
        ok('block-job-cancel', {'device': 'j1', 'force': True})
        q.close()
        d.stop()
    return result


def main():
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        qsd = run(qsd_cmd(), t1)
        ours = run(blockd_cmd(), t2)
    for setup in ('export', 'qcow2'):
        (qe, qn), (be, bn) = qsd[setup], ours[setup]
        if qe != be:
            fail('%s: edges differ\n  only qemu-storage-daemon: %r\n  only blockd: %r'
                 % (setup, sorted(qe - be), sorted(be - qe)))
        check(qn == bn, '%s: query-named-block-nodes differ: %r vs %r' % (setup, sorted(qn), sorted(bn)))
    qe, be = qsd['backup'], ours['backup']
    both = {'fa', 'ra', 'fb'}
    common_q = {e for e in qe if e[0] in both and e[2] in both}
    common_b = {e for e in be if e[0] in both and e[2] in both}
    check(common_q == common_b, 'backup: edges between shared nodes differ: %r vs %r'
          % (sorted(common_q), sorted(common_b)))
    job_edges = {(e[1], e[2]) for e in be if e[0] == 'block-job:j1'}
    check(job_edges == {('source', 'ra'), ('target', 'fb')}, 'backup: job edges %r' % job_edges)
    check(any(e[0] == 'block-backend:?' and e[1] == 'root' and e[2] == 'ra' for e in be),
          'backup: the export no longer uses ra: %r' % sorted(be))
    print('graphs agree with qemu-storage-daemon: %d + %d edges; backup: %d shared edges'
          % (len(ours['export'][0]), len(ours['qcow2'][0]), len(common_b)))


main()
