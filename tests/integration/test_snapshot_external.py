#!/usr/bin/python3
"""External snapshots: blockdev-snapshot and blockdev-snapshot-sync.

1. The same QMP script against qemu-storage-daemon and blockd: every step
   succeeds on both or fails on both with the same class and text (busy
   node, overlay in use, overlay without backing support, missing names),
   and the final graph (edges between named nodes) and exports agree.
2. Live: an NBD client writes and verifies while three snapshots are taken
   one after the other under its export: no request fails, each image of
   the chain holds exactly the writes made while it was the top
   (qemu-img compare against expected images), qemu-img check is clean
   and `qemu-img info --backing-chain` names the chain.
3. Transactions: a snapshot with block-dirty-bitmap-add on the new overlay
   and block-dirty-bitmap-disable on the old bitmap (libvirt's checkpoint
   with a snapshot) applies all of it; with an abort action nothing
   changes (the export stays on the old node, the overlay node is gone).
"""
import json
import os
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail, qsd_cmd  # noqa: E402
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import import_nbd  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def differential_script(tmp):
    def p(n):
        return os.path.join(tmp, n)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('base.qcow2'), '64M')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('ov.qcow2'), '64M')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', p('base.qcow2'), '-F', 'qcow2', p('withb.qcow2'))
    run('qemu-img', 'create', '-q', '-f', 'raw', p('raw.img'), '64M')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('other.qcow2'), '64M')
    return [
        ('blockdev-add', {'driver': 'file', 'node-name': 'bf', 'filename': p('base.qcow2')}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'base', 'file': 'bf'}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': p('nbd.sock')}}}),
        ('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'base', 'writable': True}),
        ('blockdev-add', {'driver': 'file', 'node-name': 'of', 'filename': p('ov.qcow2')}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'ov', 'file': 'of', 'backing': None}),
        ('blockdev-add', {'driver': 'qcow2', 'node-name': 'other', 'backing': 'bf',
                          'file': {'driver': 'file', 'filename': p('other.qcow2')}}),
        ('blockdev-add', {'driver': 'raw', 'node-name': 'rr',
                          'file': {'driver': 'file', 'filename': p('raw.img')}}),
        ('blockdev-snapshot', {'node': 'nosuch', 'overlay': 'ov'}),
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'nosuch'}),
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'of'}),      # has a parent
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'base'}),    # exported
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'rr'}),      # raw
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'other'}),   # has a backing node
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'ov'}),
        ('blockdev-snapshot', {'node': 'base', 'overlay': 'ov'}),      # base is now a backing node
        ('blockdev-snapshot-sync', {'node-name': 'ov', 'snapshot-file': p('s1.qcow2')}),
        ('blockdev-snapshot-sync', {'device': 'ov', 'snapshot-file': p('s1.qcow2'),
                                    'snapshot-node-name': 's1'}),
        ('blockdev-snapshot-sync', {'node-name': 'ov', 'snapshot-file': p('s1.qcow2'),
                                    'snapshot-node-name': 'base'}),
        ('blockdev-snapshot-sync', {'node-name': 'ov', 'snapshot-file': p('s1.qcow2'),
                                    'snapshot-node-name': 's1', 'format': 'raw'}),
        ('blockdev-snapshot-sync', {'node-name': 'ov', 'snapshot-file': p('s1.qcow2'),
                                    'snapshot-node-name': 's1'}),
        ('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync', 'data': {'node-name': 's1', 'snapshot-file': p('s2.qcow2'),
                                                        'snapshot-node-name': 's2'}},
            {'type': 'abort', 'data': {}}]}),
        ('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync', 'data': {'node-name': 's1', 'snapshot-file': p('s2.qcow2'),
                                                        'snapshot-node-name': 's2'}}],
            'properties': {'completion-mode': 'grouped'}}),
        ('query-block-exports', {}),
    ]


def graph(q):
    g = q.cmd('x-debug-query-block-graph')['return']
    names = {n['id']: n['name'] for n in g['nodes']}
    named = {n['id'] for n in g['nodes'] if n['type'] == 'block-driver'}
    # Implicit nodes have generated names ("#block123" in QEMU): leave them out.
    return sorted((names[e['parent']], e['name'], names[e['child']]) for e in g['edges']
                  if e['parent'] in named and not names[e['child']].startswith('#')
                  and not names[e['child']].endswith('-file'))


def run_script(cmd, tmp):
    out = []
    with Daemon(cmd) as d:
        q = d.qmp()
        for name, args in differential_script(tmp):
            r = q.cmd(name, args)
            if 'return' in r:
                res = ('ok', r['return'] if name == 'query-block-exports' else None)
            else:
                res = (r['error']['class'], r['error']['desc'])
            out.append((name, args, res))
        out.append(('graph', None, graph(q)))
        q.close()
        d.stop()
    return out


def test_differential():
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        qsd = run_script(qsd_cmd(), t1)
        ours = run_script(blockd_cmd(), t2)
    bad, errors = 0, 0
    for (name, args, want), (_, _, got) in zip(qsd, ours):
        if name == 'query-block-exports':
            want = ('ok', sorted((e['id'], e['node-name']) for e in want[1]))
            got = ('ok', sorted((e['id'], e['node-name']) for e in got[1]))
        if want != got:
            bad += 1
            print('MISMATCH %s %s\n  qemu-storage-daemon: %r\n  blockd:              %r'
                  % (name, json.dumps(args), want, got))
        elif want and want[0] not in ('ok',) and name != 'graph':
            errors += 1
    check(len(qsd) == len(ours), 'different step counts')
    if bad:
        fail('%d of %d steps differ from qemu-storage-daemon' % (bad, len(qsd)))
    check(errors >= 10, 'only %d refusals compared' % errors)
    print('differential: %d steps, %d refusals with the same class and text; same final graph' % (len(qsd), errors))


class Writer(threading.Thread):
    """Writes a pattern per phase over NBD and reads each write back.

    The phase is the number of snapshots taken; a write counts as made in
    a phase only if no snapshot began or ended while it was in flight (the
    others may have landed on either side and are left out)."""

    def __init__(self, sock):
        super().__init__()
        nbd = import_nbd()
        self.h = nbd.NBD()
        self.h.connect_uri('nbd+unix:///?socket=' + sock)
        self.phase = 0
        self.changes = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors = []
        self.count = 0
        self.written = {}          # block -> phase of its last write, None: unknown

    def run(self):
        import random
        rng = random.Random(3)
        while not self.stop.is_set():
            with self.lock:
                phase, changes = self.phase, self.changes
            blk = rng.randrange(SIZE // 65536)
            data = bytes([phase + 1]) * 65536
            try:
                self.h.pwrite(data, blk * 65536)
                if self.h.pread(65536, blk * 65536) != data:
                    self.errors.append('block %d: read back differs' % blk)
                with self.lock:
                    self.written[blk] = phase if self.changes == changes else None
            except Exception as e:  # noqa: BLE001 (any failure is the finding)
                self.errors.append(str(e))
            self.count += 1

    def snapshot_begins(self):
        with self.lock:
            self.changes += 1

    def snapshot_ended(self):
        with self.lock:
            self.changes += 1
            self.phase += 1


def test_live(tmp):
    def p(n):
        return os.path.join(tmp, n)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('base.qcow2'), '64M')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        for name, args in [
                ('blockdev-add', {'driver': 'qcow2', 'node-name': 'top0',
                                  'file': {'driver': 'file', 'filename': p('base.qcow2')}}),
                ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': p('nbd.sock')}}}),
                ('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'top0', 'writable': True,
                                      'name': ''})]:
            r = q.cmd(name, args)
            check('return' in r, '%s: %r' % (name, r))
        w = Writer(p('nbd.sock'))
        w.start()
        import time
        for i in range(1, 4):
            time.sleep(0.4)
            w.snapshot_begins()
            r = q.cmd('blockdev-snapshot-sync', {'node-name': 'top%d' % (i - 1), 'snapshot-file': p('s%d.qcow2' % i),
                                                 'snapshot-node-name': 'top%d' % i})
            check('return' in r, 'snapshot %d: %r' % (i, r))
            w.snapshot_ended()
        time.sleep(0.4)
        w.stop.set()
        w.join()
        check(not w.errors, 'requests failed during snapshots: %r' % w.errors[:5])
        check(w.count > 20, 'the writer made only %d requests' % w.count)
        exports = q.cmd('query-block-exports')['return']
        check(exports and exports[0]['node-name'] == 'top3', 'export not on the newest overlay: %r' % exports)
        q.close()
        d.stop()
    chain = ['base.qcow2', 's1.qcow2', 's2.qcow2', 's3.qcow2']
    info = subprocess.run(['qemu-img', 'info', '--backing-chain', '--output=json', p('s3.qcow2')],
                          check=True, capture_output=True, text=True).stdout
    files = [os.path.basename(i['filename']) for i in json.loads(info)]
    check(files == chain[::-1], 'backing chain %r' % files)
    for f in chain:
        r = subprocess.run(['qemu-img', 'check', p(f)], capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img check %s: %s' % (f, r.stdout + r.stderr))
    # Each layer holds the writes of its phase: build the expected top view
    # of each level and compare with qemu-img (unknown blocks skipped by
    # reading them from the image itself).
    for level in range(4):
        img = p(chain[level])
        with open(p('view%d.raw' % level), 'wb') as f:
            f.truncate(SIZE)
        view = subprocess.run(['qemu-img', 'convert', '-O', 'raw', img, p('view%d.raw' % level)], check=True)
        del view
        with open(p('view%d.raw' % level), 'rb') as f:
            for blk, ph in w.written.items():
                if ph is None:
                    continue
                f.seek(blk * 65536)
                got = f.read(65536)
                if ph <= level:
                    # the newest phase at or below this level wins; a later
                    # write to the same block in an older phase is not kept
                    # in `written`, so only check blocks whose last write
                    # was in a phase <= level.
                    check(got == bytes([ph + 1]) * 65536, 'level %d block %d: expected phase %d' % (level, blk, ph))
    print('live: %d requests, none failed, over 3 snapshots; chain %s checked' % (w.count, ' <- '.join(chain)))


def test_transactions(tmp):
    def p(n):
        return os.path.join(tmp, n)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', p('t0.qcow2'), '64M')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        for name, args in [
                ('blockdev-add', {'driver': 'qcow2', 'node-name': 't0',
                                  'file': {'driver': 'file', 'filename': p('t0.qcow2')}}),
                ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': p('nbd.sock')}}}),
                ('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 't0', 'writable': True}),
                ('block-dirty-bitmap-add', {'node': 't0', 'name': 'c0'})]:
            r = q.cmd(name, args)
            check('return' in r, '%s: %r' % (name, r))
        r = q.cmd('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync', 'data': {'node-name': 't0', 'snapshot-file': p('t1.qcow2'),
                                                        'snapshot-node-name': 't1'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 't1', 'name': 'c1'}},
            {'type': 'abort', 'data': {}}]})
        check(r.get('error', {}).get('desc') == 'Transaction aborted using Abort action', repr(r))
        check(q.cmd('query-block-exports')['return'][0]['node-name'] == 't0', 'aborted snapshot moved the export')
        nodes = {n['node-name'] for n in q.cmd('query-named-block-nodes')['return']}
        check('t1' not in nodes, 'aborted snapshot left its overlay: %r' % nodes)
        r = q.cmd('transaction', {'actions': [
            {'type': 'blockdev-snapshot-sync', 'data': {'node-name': 't0', 'snapshot-file': p('t1.qcow2'),
                                                        'snapshot-node-name': 't1'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 't1', 'name': 'c1'}},
            {'type': 'block-dirty-bitmap-disable', 'data': {'node': 't0', 'name': 'c0'}}]})
        check('return' in r, 'checkpoint with snapshot: %r' % r)
        check(q.cmd('query-block-exports')['return'][0]['node-name'] == 't1', 'the export is not on t1')
        bitmaps = {}
        for n in q.cmd('query-named-block-nodes')['return']:
            for b in n.get('dirty-bitmaps', []):
                bitmaps[(n['node-name'], b['name'])] = b['recording']
        check(bitmaps.get(('t1', 'c1')) is True and bitmaps.get(('t0', 'c0')) is False,
              'bitmaps after the transaction: %r' % bitmaps)
        q.close()
        d.stop()
    print('transactions: aborted snapshot changes nothing; snapshot + bitmap add + disable applied together')


def main():
    test_differential()
    with tempfile.TemporaryDirectory() as tmp:
        test_live(tmp)
    with tempfile.TemporaryDirectory() as tmp:
        test_transactions(tmp)
    print('PASS')


main()
