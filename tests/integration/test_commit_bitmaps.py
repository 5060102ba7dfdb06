#!/usr/bin/python3
"""Persistent bitmaps in a read-only qcow2 base follow its reopen for a
commit (QEMU's qcow2_reopen_bitmaps_rw and _ro), the same script against
qemu-storage-daemon and blockd:

base.qcow2 has an enabled bitmap b0 (cluster 0 dirty, written by qemu-io)
and a disabled one, b1; mid and top are overlays with their own clusters.
The daemon opens top alone (the chain from the headers, base read-only),
then commits mid into base (an intermediate commit reopens base
read-write and back).  While base is writable a client adds a persistent
bitmap b2 to it.  Compared between the daemons:
- base's bitmaps after the job (query-named-block-nodes: names, counts,
  recording, persistent; x-debug-block-dirty-bitmap-sha256): b0 took the
  committed clusters, b1 did not;
- the image after the daemon quit (qemu-img info: bitmap names, flags
  without in-use, granularity; qemu-img check);
- the same bitmaps loaded from it again by qemu-storage-daemon (counts and
  hashes), so the stored bits are the ones the daemon had.
b2 takes only the clusters copied after it was added, which is timing: it
is checked per daemon (part of the committed clusters, stored as held).
base's bitmaps are listed before the job too: both daemons load the
bitmaps of every image in the chain when it is opened.  Before this, blockd
refused the reopen ("blockd cannot reopen a qcow2 image with persistent
bitmaps read-write")."""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail, qsd_cmd  # noqa: E402

MiB = 1 << 20
SIZE = 8 * MiB
CLUSTER = 64 << 10


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def write(path, *clusters, byte=0x5a):
    args = ['qemu-io', '-f', 'qcow2']
    for c in clusters:
        args += ['-c', 'write -P 0x%02x %d %d' % (byte, c * CLUSTER, CLUSTER)]
    run(*(args + [path]))


def make_chain(tmp):
    base, mid, top = (os.path.join(tmp, n + '.qcow2') for n in ('base', 'mid', 'top'))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', base, str(SIZE))
    run('qemu-img', 'bitmap', '--add', base, 'b0')
    run('qemu-img', 'bitmap', '--add', '--disable', base, 'b1')
    write(base, 0, byte=0x11)   # marks b0 (enabled), not b1
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid)
    write(mid, 3, 4, 20, byte=0x22)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top)
    write(top, 7, byte=0x33)
    return base, mid, top


def bitmaps_of(q, filename):
    """(node-name, [(name, count, recording, persistent)], {name: sha256}) of the node of `filename`."""
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['drv'] == 'qcow2' and n['file'] == filename:
            bms = sorted((b['name'], b['count'], b['recording'], b.get('persistent', False))
                         for b in n.get('dirty-bitmaps', []))
            sha = {}
            for b in bms:
                r = q.cmd('x-debug-block-dirty-bitmap-sha256', {'node': n['node-name'], 'name': b[0]})
                sha[b[0]] = r.get('return', {}).get('sha256', r.get('error'))
            return n['node-name'], bms, sha
    fail('no qcow2 node for %s' % filename)


def wait_done(q, job):
    while True:
        ev = q.wait_event('JOB_STATUS_CHANGE', timeout=30)
        if ev['data']['id'] == job and ev['data']['status'] in ('concluded', 'null'):
            return


def script(cmd, tmp):
    base, mid, top = make_chain(tmp)
    out = {}
    with Daemon(cmd) as d:
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top',
                                   'file': {'driver': 'file', 'filename': top}})
        check('return' in r, 'blockdev-add top: %r' % r)
        node, before, _ = bitmaps_of(q, base)
        out['before'] = before
        r = q.cmd('block-commit', {'job-id': 'c', 'device': 'top', 'top': mid, 'base': base, 'speed': 1})
        out['commit'] = 'ok' if 'return' in r else (r['error']['class'], r['error']['desc'])
        if 'return' in r:
            # base is writable now: a new persistent bitmap goes into it.
            r = q.cmd('block-dirty-bitmap-add', {'node': node, 'name': 'b2', 'persistent': True})
            out['add b2'] = 'ok' if 'return' in r else (r['error']['class'], r['error']['desc'])
            q.cmd('block-job-set-speed', {'device': 'c', 'speed': 0})
            wait_done(q, 'c')
        _, out['after'], out['sha'] = bitmaps_of(q, base)
        q.cmd('quit')
        check(d.wait() == 0, 'daemon exit status')
    info = json.loads(run('qemu-img', 'info', '--output=json', base))
    out['image'] = sorted((b['name'], b['flags'], b['granularity'])
                          for b in info['format-specific']['data'].get('bitmaps', []))
    out['check'] = subprocess.run(['qemu-img', 'check', base], capture_output=True, text=True).returncode
    # Where the data went in the file differs (bitmap clusters take other
    # places), and qemu-img map splits a range where the file offsets jump.
    out['data'] = []
    for e in json.loads(run('qemu-img', 'map', '--output=json', base)):
        e = {k: v for k, v in e.items() if k != 'offset'}
        last = out['data'][-1] if out['data'] else None
        if last and {k: v for k, v in last.items() if k not in ('start', 'length')} == \
                {k: v for k, v in e.items() if k not in ('start', 'length')}:
            last['length'] += e['length']
        else:
            out['data'].append(e)
    # What qemu-storage-daemon loads from the image now.
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        r = q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'b', 'read-only': True,
                                   'file': {'driver': 'file', 'filename': base}})
        check('return' in r, 'qemu-storage-daemon blockdev-add of the base: %r' % r)
        _, out['reloaded'], out['reloaded sha'] = bitmaps_of(q, base)
        q.cmd('quit')
        d.wait()
    return out


def split_b2(out):
    """b2 takes what the job copies after it was added: the first chunk
    may be copied before (speed limits start after it), so its count is
    timing, checked per daemon and not across them."""
    b2 = {}
    for k in ('after', 'reloaded'):
        b2[k] = [b for b in out[k] if b[0] == 'b2']
        out[k] = [b for b in out[k] if b[0] != 'b2']
    for k in ('sha', 'reloaded sha'):
        b2[k] = out[k].pop('b2', None)
    return b2


def main():
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        want = script(qsd_cmd(), t1)
        got = script(blockd_cmd(), t2)
    for who, out in (('qemu-storage-daemon', want), ('blockd', got)):
        b2 = split_b2(out)
        check(len(b2['after']) == 1 and 0 < b2['after'][0][1] <= 3 * CLUSTER,
              '%s: b2 is %r, expected some of the 3 committed clusters' % (who, b2['after']))
        check(b2['reloaded'] == b2['after'] and b2['reloaded sha'] == b2['sha'],
              '%s: b2 as stored %r differs from b2 in the daemon %r' % (who, b2['reloaded'], b2['after']))
    bad = [k for k in want if want[k] != got.get(k)]
    for k in want:
        print('%-13s qemu-storage-daemon %r\n%-13s blockd              %r' % (k, want[k], '', got.get(k)))
    if bad:
        fail('differs from qemu-storage-daemon: %s' % ', '.join(bad))
    b0 = dict((b[0], b[1]) for b in got['after'])['b0']
    check(b0 == 4 * CLUSTER, 'b0 counts %d bytes, expected cluster 0 and the 3 committed clusters' % b0)
    check(all('in-use' not in b[1] for b in got['image']), 'a bitmap stayed in use: %r' % got['image'])
    print('PASS')


main()
