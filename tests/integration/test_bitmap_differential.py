#!/usr/bin/python3
"""Dirty bitmaps, blockd against qemu-storage-daemon 7.2: the same QMP
commands give the same replies (errors in class and message), the same NBD
writes give the same bitmaps, read back with nbdinfo --map and with
qemu-img map x-dirty-bitmap, and the same meta contexts are listed."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check, fail

MiB = 1 << 20


def setup_script(img, nbd):
    return [
        ('blockdev-add', {'driver': 'file', 'node-name': 'f0', 'filename': img}),
        ('blockdev-add', {'driver': 'null-co', 'node-name': 'n0', 'size': MiB}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': nbd}}}),
        # errors
        ('block-dirty-bitmap-add', {'node': 'nosuch', 'name': 'b'}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': ''}),
        ('block-dirty-bitmap-add', {'node': 'nosuch', 'name': ''}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b', 'granularity': 1000}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b', 'granularity': 256}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b', 'granularity': 4294967296}),
        ('block-dirty-bitmap-add', {'node': 'n0', 'name': 'b', 'persistent': True}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'x' * 1024}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b0'}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b0'}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'b1', 'granularity': 4096}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'big', 'granularity': 2147483648}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'off', 'disabled': True}),
        ('block-dirty-bitmap-add', {'node': 'n0', 'name': 'c'}),
        ('block-dirty-bitmap-remove', {'node': 'nosuch', 'name': 'b0'}),
        ('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'zz'}),
        ('block-dirty-bitmap-clear', {'node': 'f0', 'name': 'zz'}),
        ('block-dirty-bitmap-enable', {'node': 'f0', 'name': 'zz'}),
        ('block-dirty-bitmap-disable', {'node': 'nosuch', 'name': 'zz'}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'zz', 'bitmaps': ['b0']}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'b0', 'bitmaps': ['zz']}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'b0',
                                      'bitmaps': [{'node': 'nosuch', 'name': 'b'}]}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'b0',
                                      'bitmaps': [{'node': 'n0', 'name': 'c'}]}),
        ('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'big'}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'b0'}),
        ('block-export-add', {'type': 'nbd', 'id': 'ro', 'node-name': 'f0', 'name': 'ro',
                              'bitmaps': ['b0']}),
        ('block-export-add', {'type': 'nbd', 'id': 'ro', 'node-name': 'f0', 'name': 'ro',
                              'bitmaps': ['nosuch']}),
        ('block-export-add', {'type': 'nbd', 'id': 'ro', 'node-name': 'f0', 'name': 'ro',
                              'bitmaps': ['off']}),
        ('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'off'}),
        ('block-dirty-bitmap-enable', {'node': 'f0', 'name': 'off'}),
        ('block-dirty-bitmap-clear', {'node': 'f0', 'name': 'off'}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'b1', 'bitmaps': ['off']}),
        ('block-export-del', {'id': 'ro'}),
        ('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'f0', 'name': 'disk',
                              'writable': True, 'allocation-depth': True,
                              'bitmaps': ['b0', {'node': 'f0', 'name': 'b1'}]}),
        # transactions
        ('transaction', {'actions': []}),
        ('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 't1'}},
            {'type': 'abort', 'data': {}}]}),
        ('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 't1'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 't1'}}]}),
        ('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 't1'}}],
            'properties': {'completion-mode': 'grouped'}}),
        ('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 't2', 'disabled': True}},
            {'type': 'block-dirty-bitmap-clear', 'data': {'node': 'f0', 'name': 'off'}}]}),
        ('query-named-block-nodes', {}),
    ]


def after_writes_script():
    return [
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'b0'}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'b1'}),
        ('block-dirty-bitmap-add', {'node': 'f0', 'name': 'm', 'disabled': True}),
        ('block-dirty-bitmap-merge', {'node': 'f0', 'target': 'm', 'bitmaps': ['b1']}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'm'}),
        # rollback keeps bA's bits and drops bZ
        ('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'f0', 'name': 'bZ'}},
            {'type': 'block-dirty-bitmap-clear', 'data': {'node': 'f0', 'name': 'm'}},
            {'type': 'block-dirty-bitmap-remove', 'data': {'node': 'f0', 'name': 't2'}},
            {'type': 'abort', 'data': {}}]}),
        ('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'm'}),
        ('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'bZ'}),
        ('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'b0'}),
        ('query-named-block-nodes', {}),
    ]


def run(q, script, log):
    for name, args in script:
        r = q.cmd(name, args)
        if name == 'query-named-block-nodes' and 'return' in r:
            # Only the bitmap part is compared here.
            r = {'return': {n['node-name']: n.get('dirty-bitmaps') for n in r['return']}}
        log.append((name, json.dumps(args)[:100], r))


def do_writes(sock):
    import nbd
    h = nbd.NBD()
    h.set_export_name('disk')
    h.connect_unix(sock)
    writes = [(0, 512), (MiB, 65536), (3 * MiB, 131072), (5 * MiB - 100, 300),
              (7 * MiB + 4096, 8192), (20 * MiB, 1), (64 * MiB - 1, 1)]
    for off, n in writes:
        h.pwrite(b'\xab' * n, off)
    h.zero(65536, 10 * MiB)
    h.flush()
    h.shutdown()


def list_contexts(sock, query):
    import nbd
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.set_export_name('disk')
    h.connect_unix(sock)
    if query is not None:
        h.add_meta_context(query)
    got = []
    h.opt_list_meta_context(lambda name: got.append(name) or 0)
    h.opt_abort()
    return sorted(got)


def maps(sock):
    out = {}
    uri = 'nbd+unix:///disk?socket=%s' % sock
    for ctx in ('qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1', 'qemu:allocation-depth'):
        r = subprocess.run(['nbdinfo', '--json', '--map=' + ctx, uri],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, 'nbdinfo %s failed: %s' % (ctx, r.stderr))
        out['nbdinfo ' + ctx] = json.loads(r.stdout)
    for b in ('b0', 'b1'):
        opts = ('driver=nbd,server.type=unix,server.path=%s,export=disk,'
                'x-dirty-bitmap=qemu:dirty-bitmap:%s' % (sock, b))
        r = subprocess.run(['qemu-img', 'map', '--output=json', '--image-opts', opts],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, 'qemu-img map failed: %s' % r.stderr)
        out['qemu-img ' + b] = [{k: e[k] for k in ('start', 'length', 'data')}
                                for e in json.loads(r.stdout)]
    for q in (None, 'qemu:', 'qemu:dirty-bitmap:', 'qemu:dirty-bitmap:b1', 'qemu:nosuch'):
        out['list %r' % q] = list_contexts(sock, q)
    return out


def session(cmd):
    with Daemon(cmd) as d:
        img = d.path('disk.img')
        with open(img, 'wb') as f:
            f.truncate(64 * MiB)
        sock = d.path('nbd.sock')
        q = d.qmp()
        log = []
        run(q, setup_script(img, sock), log)
        do_writes(sock)
        m = maps(sock)
        # The export keeps b0/b1 busy until it is deleted.
        run(q, [('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'b0'}),
                ('block-export-del', {'id': 'e0'})], log)
        run(q, after_writes_script(), log)
        q.close()
        return log, m, d


def main():
    qlog, qmaps, _ = session(qsd_cmd())
    blog, bmaps, _ = session(blockd_cmd())
    bad = 0
    for (name, args, qr), (_, _, br) in zip(qlog, blog):
        if qr != br:
            bad += 1
            print('DIFF %s %s\n  qemu:   %s\n  blockd: %s' % (name, args, json.dumps(qr)[:400],
                                                           json.dumps(br)[:400]), file=sys.stderr)
    for k in qmaps:
        if qmaps[k] != bmaps.get(k):
            bad += 1
            print('DIFF %s\n  qemu:   %s\n  blockd: %s' % (k, json.dumps(qmaps[k])[:600],
                                                         json.dumps(bmaps.get(k))[:600]), file=sys.stderr)
    check(len(qlog) == len(blog), 'different number of replies')
    # The maps must show the writes (the test would pass vacuously otherwise).
    dirty = [e for e in bmaps['nbdinfo qemu:dirty-bitmap:b0'] if e['type'] == 1]
    check(len(dirty) >= 3, 'bitmap b0 shows too few dirty extents: %r' % dirty)
    merged = [r for n, a, r in blog if n == 'block-dirty-bitmap-merge' and '"m"' in a]
    check(merged and merged[-1] == {'return': {}}, 'merge into m failed: %r' % merged)
    check(bad == 0, '%d differences from qemu-storage-daemon' % bad)
    print('ok: %d QMP replies and %d maps identical' % (len(blog), len(bmaps)))


main()
