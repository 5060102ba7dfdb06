#!/usr/bin/python3
"""Persistent dirty bitmaps of a raw image (sidecar IMAGE.bitmaps):
a clean restart keeps them; after SIGKILL in the middle of a write load the
restored bitmap covers every acknowledged write and is not inconsistent;
a damaged sidecar is reported and its bitmap marked inconsistent."""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail

MiB = 1 << 20
SIZE = 256 * MiB
GRAN = 65536


def start(img):
    d = Daemon(blockd_cmd(), extra=['--blockdev', 'driver=file,node-name=f0,filename=' + img])
    q = d.qmp()
    sock = d.path('nbd.sock')
    r = q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
    check(r == {'return': {}}, 'nbd-server-start: %r' % r)
    return d, q, sock


def bitmaps(q):
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['node-name'] == 'f0':
            return {b['name']: b for b in n.get('dirty-bitmaps', [])}
    fail('node f0 missing')


def export(q, names):
    r = q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'f0', 'name': 'disk',
                                   'writable': True, 'bitmaps': names})
    check(r == {'return': {}}, 'block-export-add: %r' % r)


def dirty_map(sock, name):
    r = subprocess.run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:' + name,
                        'nbd+unix:///disk?socket=' + sock], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, 'nbdinfo: %s' % r.stderr)
    return [(e['offset'], e['length']) for e in json.loads(r.stdout) if e['type'] == 1]


def covered(extents, off, length):
    for s, n in extents:
        if s <= off and off + length <= s + n:
            return True
    return False


def connect(sock):
    import nbd
    h = nbd.NBD()
    h.set_export_name('disk')
    h.connect_unix(sock)
    return h


def test_clean_restart(tmp):
    img = os.path.join(tmp, 'clean.img')
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    d, q, sock = start(img)
    with d:
        for args in ({'node': 'f0', 'name': 'p', 'persistent': True},
                     {'node': 'f0', 'name': 'pd', 'persistent': True, 'disabled': True,
                      'granularity': 4096},
                     {'node': 'f0', 'name': 'tmp'}):
            r = q.cmd('block-dirty-bitmap-add', args)
            check(r == {'return': {}}, 'add %r: %r' % (args, r))
        check(os.path.exists(img + '.bitmaps'), 'no sidecar file after adding a persistent bitmap')
        export(q, ['p'])
        h = connect(sock)
        h.pwrite(b'x' * 4096, 5 * MiB)
        h.pwrite(b'y' * 100, SIZE - 100)
        h.shutdown()
        q.cmd('block-export-del', {'id': 'e0'})
        before = bitmaps(q)
        sha = q.cmd('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'p'})['return']
        d.stop()
    d, q, sock = start(img)
    with d:
        after = bitmaps(q)
        check('tmp' not in after, 'a non-persistent bitmap survived a restart')
        check(after.get('p') == before['p'], 'p changed over a restart: %r -> %r' % (before['p'], after.get('p')))
        check(after.get('pd') == before['pd'], 'pd changed: %r -> %r' % (before['pd'], after.get('pd')))
        check(after['p']['recording'] and not after['pd']['recording'], 'recording states lost')
        sha2 = q.cmd('x-debug-block-dirty-bitmap-sha256', {'node': 'f0', 'name': 'p'})['return']
        check(sha == sha2, 'bits changed over a restart')
        check(after['p']['count'] == 2 * GRAN, 'count %d' % after['p']['count'])
        # Removing a persistent bitmap removes it from the sidecar at once.
        check(q.cmd('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'pd'}) == {'return': {}}, 'remove')
        d.proc.kill()
        d.proc.wait()
    d, q, sock = start(img)
    with d:
        after = bitmaps(q)
        check('pd' not in after and 'p' in after, 'remove not persisted: %r' % after)
        d.stop()


def test_crash(tmp):
    img = os.path.join(tmp, 'crash.img')
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    d, q, sock = start(img)
    logged = []
    with d:
        check(q.cmd('block-dirty-bitmap-add', {'node': 'f0', 'name': 'c', 'persistent': True}) ==
              {'return': {}}, 'add c')
        export(q, ['c'])
        stop = threading.Event()

        def writer(seed):
            rng = random.Random(seed)
            try:
                h = connect(sock)
                while not stop.is_set():
                    off = rng.randrange(0, SIZE // 4096) * 4096
                    n = rng.choice((512, 4096, 65536, 200000))
                    n = min(n, SIZE - off)
                    if rng.random() < 0.2:
                        h.zero(n, off)
                    else:
                        h.pwrite(b'\x5a' * n, off)
                    logged.append((off, n))   # acknowledged
            except Exception:
                pass                          # the daemon was killed

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        d.proc.kill()                         # SIGKILL mid-load
        d.proc.wait()
        stop.set()
        for t in threads:
            t.join()
    check(len(logged) > 20, 'too few writes before the kill: %d' % len(logged))
    d, q, sock = start(img)
    with d:
        b = bitmaps(q).get('c')
        check(b is not None, 'bitmap c lost after SIGKILL')
        check(not b.get('inconsistent') and b['recording'], 'bitmap c after SIGKILL: %r' % b)
        q.cmd('block-dirty-bitmap-disable', {'node': 'f0', 'name': 'c'})
        export(q, ['c'])
        ext = dirty_map(sock, 'c')
        missing = [w for w in logged if not covered(ext, w[0], w[1])]
        check(not missing, '%d of %d acknowledged writes not in the restored bitmap, e.g. %r'
              % (len(missing), len(logged), missing[:3]))
        print('crash: %d acknowledged writes, all covered' % len(logged))
        q.cmd('block-export-del', {'id': 'e0'})
        d.stop()


def test_damaged(tmp):
    img = os.path.join(tmp, 'damaged.img')
    with open(img, 'wb') as f:
        f.truncate(SIZE)
    d, q, sock = start(img)
    with d:
        q.cmd('block-dirty-bitmap-add', {'node': 'f0', 'name': 'dmg', 'persistent': True})
        q.cmd('block-dirty-bitmap-add', {'node': 'f0', 'name': 'ok', 'persistent': True})
        d.stop()
    side = img + '.bitmaps'
    with open(side, 'r+b') as f:
        data = bytearray(f.read())
    # Flip a bit in the first bitmap's data (the first 4 KiB-aligned region).
    data[4096] ^= 0x10
    with open(side, 'wb') as f:
        f.write(data)
    d, q, sock = start(img)
    with d:
        b = bitmaps(q)
        check(b['dmg'].get('inconsistent') is True and b['dmg']['count'] == 0 and
              not b['dmg']['recording'], 'damaged bitmap not inconsistent: %r' % b['dmg'])
        check('inconsistent' not in b['ok'], 'the intact bitmap was condemned too: %r' % b['ok'])
        err = d.stderr_text()
        check('damaged' in err and "'dmg'" in err, 'damage not reported on stderr: %r' % err)
        r = q.cmd('block-dirty-bitmap-clear', {'node': 'f0', 'name': 'dmg'})
        check(r.get('error', {}).get('desc') == "Bitmap 'dmg' is inconsistent and cannot be used",
              'clear of an inconsistent bitmap: %r' % r)
        r = q.cmd('block-dirty-bitmap-remove', {'node': 'f0', 'name': 'dmg'})
        check(r == {'return': {}}, 'remove of an inconsistent bitmap: %r' % r)
        d.stop()
    # Garbage instead of a sidecar: reported, nothing loaded, the node still opens.
    with open(side, 'wb') as f:
        f.write(b'garbage' * 100)
    d, q, sock = start(img)
    with d:
        check(bitmaps(q) == {}, 'bitmaps loaded from garbage')
        check('not a blockd bitmap file' in d.stderr_text(), 'garbage sidecar not reported')
        d.stop()


def main():
    tmp = tempfile.mkdtemp(prefix='blockd-bitmap-persist.')
    try:
        test_clean_restart(tmp)
        test_damaged(tmp)
        test_crash(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


main()
