#!/usr/bin/python3
"""Persistent dirty bitmaps for RBD images (docs/rbd.md, "Dirty bitmaps"):
a raw rbd node has no file to keep them in and refuses `persistent: true`
with QEMU's text, compared with qemu-storage-daemon's rbd driver; a qcow2
image stored in RBD (`driver=qcow2,file.driver=rbd`) keeps them inside
the image, in QEMU's format, crash-safe:

1. blockd adds a persistent bitmap, guest writes go through NBD, blockd
   stops; a new blockd finds the bitmap with the same count and hash, and
   so does qemu-storage-daemon reading the image from RBD.
2. More writes, then SIGKILL: the reopened bitmap is usable (not
   inconsistent) and covers every acknowledged write; an incremental
   backup from it to a local file, applied over a copy of the first
   state, gives the image byte for byte."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, ok, qsd_cmd, read_all, wait_job_end  # noqa: E402
from ceph_lib import Cluster  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB
GRAN = 64 * 1024


def qcow2_on_rbd(c, name='q0'):
    return {'driver': 'qcow2', 'node-name': name,
            'file': {'driver': 'rbd', 'pool': 'rbd', 'image': 'disk', 'conf': c.conf}}


def bitmap(q, node, name):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == node:
            for b in n.get('dirty-bitmaps', []):
                if b['name'] == name:
                    return b
    return None


def sha(q, node, name):
    return ok(q.cmd('x-debug-block-dirty-bitmap-sha256', {'node': node, 'name': name}), 'sha256')['sha256']


def serve(q, d, node='q0'):
    sock = d.path('nbd.sock')
    ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': node, 'name': 'disk',
                                  'writable': True}), 'export')
    return sock


def random_writes(sock, rng, n):
    """n acknowledged writes (each flushed); returns [(offset, length)]."""
    h = connect(sock, 'disk')
    done = []
    for _ in range(n):
        length = rng.randrange(1, 200000)
        off = rng.randrange(0, SIZE - length)
        h.pwrite(bytes([rng.randrange(1, 256)]) * length, off)
        h.flush()
        done.append((off, length))
    h.shutdown()
    return done


def dirty_granules(writes):
    g = set()
    for off, length in writes:
        g.update(range(off // GRAN, (off + length - 1) // GRAN + 1))
    return g


def refusal_on_raw_rbd(c):
    c.rbd('create', 'rbd/raw', '--size', '16M')
    texts = {}
    for kind, cmd in (('blockd', blockd_cmd()), ('qsd', qsd_cmd())):
        with Daemon(cmd) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', c.node('r0', 'raw')), 'blockdev-add rbd (%s)' % kind)
            r = q.cmd('block-dirty-bitmap-add', {'node': 'r0', 'name': 'b', 'persistent': True})
            texts[kind] = (r.get('error', {}).get('class'), r.get('error', {}).get('desc'))
            q.cmd('quit')
            d.wait()
    check(texts['blockd'] == texts['qsd'] == ('GenericError', "Can't store persistent bitmaps to r0: Operation not supported"),
          'persistent bitmap on a raw rbd node: %r' % texts)
    print('raw rbd node: %s (as qemu-storage-daemon)' % texts['blockd'][1])


def main():
    rng = random.Random(1915)
    # The killed blockd's exclusive lock stays until its watch expires.
    with Cluster(qemu=True, CEPH_WATCH_TIMEOUT=5) as c:
        refusal_on_raw_rbd(c)
        p = subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', c.uri('disk'), str(SIZE)],
                           capture_output=True, text=True)
        check(p.returncode == 0, 'qemu-img create on rbd: %s' % p.stderr)

        # 1. Stored at a clean stop, read back by blockd and by QEMU.
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', qcow2_on_rbd(c)), 'blockdev-add qcow2 over rbd')
            ok(q.cmd('block-dirty-bitmap-add', {'node': 'q0', 'name': 'b', 'persistent': True}), 'add b')
            sock = serve(q, d)
            first = random_writes(sock, rng, 20)
            count, digest = bitmap(q, 'q0', 'b')['count'], sha(q, 'q0', 'b')
            check(count == len(dirty_granules(first)) * GRAN, 'count %d' % count)
            base = read_all(sock, 'disk')
            q.cmd('quit')
            check(d.wait() == 0, 'blockd exit status')
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', qcow2_on_rbd(c)), 'reopen')
            b = bitmap(q, 'q0', 'b')
            check(b and b['persistent'] and b['count'] == count and sha(q, 'q0', 'b') == digest,
                  'reopened in blockd: %r' % b)
            q.cmd('quit')
            check(d.wait() == 0, 'blockd exit status')
        with Daemon(qsd_cmd()) as d:
            q = d.qmp()
            args = qcow2_on_rbd(c)
            args['read-only'] = True
            ok(q.cmd('blockdev-add', args), 'qemu-storage-daemon opens the image')
            b = bitmap(q, 'q0', 'b')
            check(b and b['count'] == count and sha(q, 'q0', 'b') == digest, 'QSD sees %r' % b)
            q.cmd('quit')
            d.wait()
        print('qcow2 on rbd: bitmap b (%d bytes dirty) read back by blockd and qemu-storage-daemon' % count)

        # 2. Crash: SIGKILL after acknowledged writes; the bitmap still covers them.
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', qcow2_on_rbd(c)), 'reopen')
            ok(q.cmd('block-dirty-bitmap-clear', {'node': 'q0', 'name': 'b'}), 'clear b (a backup of base)')
            sock = serve(q, d)
            second = random_writes(sock, rng, 25)
            want = read_all(sock, 'disk')
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait()
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            deadline = time.monotonic() + 90
            while True:
                r = q.cmd('blockdev-add', qcow2_on_rbd(c))
                if 'error' not in r or 'exclusive lock' not in r['error']['desc'] or time.monotonic() > deadline:
                    break
                time.sleep(1)
            ok(r, 'reopen after SIGKILL (once the dead owner\'s watch expired)')
            b = bitmap(q, 'q0', 'b')
            check(b and b['recording'] and not b.get('inconsistent'), 'after SIGKILL: %r' % b)
            sock = serve(q, d)
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'eb', 'node-name': 'q0', 'name': 'bm', 'writable': True,
                                          'bitmaps': ['b']}), 'export with the bitmap')
            covered = set()
            m = subprocess.run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:b',
                                'nbd+unix:///bm?socket=' + sock], capture_output=True, text=True)
            check(m.returncode == 0, 'nbdinfo: %s' % m.stderr)
            for e in json.loads(m.stdout):
                if e['type'] & 1:
                    covered.update(range(e['offset'] // GRAN, (e['offset'] + e['length'] - 1) // GRAN + 1))
            missing = dirty_granules(second) - covered
            check(not missing, '%d acknowledged granules are not dirty after SIGKILL' % len(missing))
            check(read_all(sock, 'disk') == want, 'acknowledged data lost after SIGKILL')
            ok(q.cmd('block-export-del', {'id': 'eb'}), 'block-export-del eb')  # frees the bitmap
            deadline = time.monotonic() + 20
            while any(e['id'] == 'eb' for e in q.cmd('query-block-exports')['return']):
                check(time.monotonic() < deadline, 'export eb was not deleted')
                time.sleep(0.05)
            # Incremental backup from the reopened bitmap onto a copy of base.
            target = d.path('restore.raw')
            with open(target, 'wb') as f:
                f.write(base)
            ok(q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 't',
                                      'file': {'driver': 'file', 'filename': target}}), 'target')
            ok(q.cmd('blockdev-backup', {'job-id': 'inc', 'device': 'q0', 'target': 't', 'sync': 'incremental',
                                         'bitmap': 'b'}), 'incremental backup')
            evs = wait_job_end(q, 'inc')
            done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
            check(done and 'error' not in done[0], 'incremental: %r' % evs)
            ok(q.cmd('blockdev-del', {'node-name': 't'}), 'blockdev-del target')
            with open(target, 'rb') as f:
                restored = f.read()
            check(hashlib.sha256(restored).digest() == hashlib.sha256(want).digest(),
                  'base + increment differs from the image')
            q.cmd('quit')
            check(d.wait() == 0, 'blockd exit status')
        p = subprocess.run(['qemu-img', 'check', c.uri('disk')], capture_output=True, text=True)
        check(p.returncode in (0, 3) and 'ERROR' not in p.stdout, 'qemu-img check: %s' % p.stdout)
        print('SIGKILL: %d acknowledged writes all dirty, data kept, incremental backup restores '
              'byte-identical' % len(second))
    print('PASS')


main()
