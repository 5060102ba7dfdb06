#!/usr/bin/python3
"""New qcow2 targets of drive-mirror and drive-backup get QEMU's backing
file: with sync=top the source's backing file, with sync=none the source.

* drive-mirror sync=top of a qcow2 overlay (over a raw base) into a new
  qcow2 image: only the overlay's own clusters are copied (qemu-img map of
  the new image shows just those), its backing file is the base, and after
  the pivot the export reads the same through it; qemu-img compare agrees
  once the daemon stopped.
* drive-backup sync=none into a new qcow2 image: the image's backing file
  is the source's file, and the target node reads the source as of the
  job's start although the guest keeps writing (copy-before-write fills
  exactly the overwritten clusters)."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, connect, ok, summary, wait_job_end, wait_status  # noqa: E402

SIZE = 16 << 20
CLUSTER = 64 << 10


def qemu_img(*args):
    return subprocess.run(['qemu-img'] + list(args), capture_output=True, text=True, check=True).stdout


def info(path):
    return json.loads(qemu_img('info', '-U', '--output=json', path))


def data_bytes(path):
    """Bytes the image itself holds (not its backing)."""
    m = json.loads(qemu_img('map', '-U', '--output=json', path))
    return sum(e['length'] for e in m if e['data'] and e['depth'] == 0)


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        base, top = d.path('base.raw'), d.path('top.qcow2')
        rng = random.Random(9)
        image = bytearray(rng.randbytes(SIZE))
        with open(base, 'wb') as f:
            f.write(image)
        qemu_img('create', '-f', 'qcow2', '-b', base, '-F', 'raw', top)
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'src',
                                  'file': {'driver': 'file', 'filename': top}}), 'src')
        sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'src', 'writable': True}), 'export')
        h = connect(sock, 'src')
        for c in (3, 70, 200):  # three clusters in the overlay
            data = rng.randbytes(CLUSTER)
            h.pwrite(data, c * CLUSTER)
            image[c * CLUSTER:(c + 1) * CLUSTER] = data
        h.zero(CLUSTER, 100 * CLUSTER)  # a zero cluster in the overlay hides base data
        image[100 * CLUSTER:101 * CLUSTER] = bytes(CLUSTER)
        h.flush()

        # drive-mirror sync=top: a shallow copy over the same base.
        new = d.path('new.qcow2')
        ok(q.cmd('drive-mirror', {'job-id': 'm', 'device': 'src', 'target': new, 'format': 'qcow2',
                                  'sync': 'top', 'node-name': 'new0'}), 'drive-mirror top')
        wait_status(q, 'm', 'ready')
        check(info(new).get('full-backing-filename') == base and info(new).get('backing-filename-format') == 'raw',
              'new image backing: %r' % info(new))
        ok(q.cmd('job-complete', {'id': 'm'}), 'complete')
        evs = wait_job_end(q, 'm')
        check(('BLOCK_JOB_COMPLETED', ('device', 'm'), ('type', 'mirror')) in summary(evs), 'mirror %r' % summary(evs))
        check(h.pread(SIZE, 0) == bytes(image), 'export after the pivot reads other data')
        held = data_bytes(new)
        check(held == 3 * CLUSTER, 'sync=top copied %d bytes of data, expected the overlay\'s 3 clusters' % held)
        zeros = [e for e in json.loads(qemu_img('map', '-U', '--output=json', new))
                 if e['depth'] == 0 and e['zero'] and e['start'] <= 100 * CLUSTER < e['start'] + e['length']]
        check(zeros, 'the overlay\'s zero cluster was not mirrored as a zero cluster')
        h.shutdown()
        ok(q.cmd('block-export-del', {'id': 'e'}), 'export-del')

        # drive-backup sync=none from the base-backed image now in use: point in time.
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e2', 'node-name': 'new0', 'name': 'disk',
                                      'writable': True}), 'export new0')
        fleece = d.path('fleece.qcow2')
        ok(q.cmd('drive-backup', {'job-id': 'f', 'device': 'new0', 'target': fleece, 'format': 'qcow2',
                                  'sync': 'none'}), 'drive-backup none')
        targets = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']
                   if n['node-name'].startswith('drive-backup-') and n['drv'] == 'qcow2']
        check(len(targets) == 1, 'fleecing node %r' % targets)
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e3', 'node-name': targets[0], 'name': 'fleece'}),
           'export fleece')
        check(info(fleece).get('full-backing-filename') == new, 'fleece backing: %r' % info(fleece))
        h = connect(sock, 'disk')
        h.pwrite(b'\xee' * CLUSTER, 5 * CLUSTER)
        h.pwrite(b'\xdd' * 4096, 150 * CLUSTER + 4096)
        h.flush()
        h.shutdown()
        f = connect(sock, 'fleece')
        check(f.pread(SIZE, 0) == bytes(image), 'the fleecing image moved with the guest')
        f.shutdown()
        held = data_bytes(fleece)
        check(held == 2 * CLUSTER, 'the fleecing image holds %d bytes, expected the 2 overwritten clusters' % held)
        ok(q.cmd('block-export-del', {'id': 'e3'}), 'del e3')
        ok(q.cmd('job-cancel', {'id': 'f'}), 'cancel')
        wait_job_end(q, 'f')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
        image[5 * CLUSTER:6 * CLUSTER] = b'\xee' * CLUSTER
        image[150 * CLUSTER + 4096:150 * CLUSTER + 8192] = b'\xdd' * 4096
        expect = d.path('expect.raw')
        with open(expect, 'wb') as f:
            f.write(image)
        r = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', new, expect],
                           capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img compare new.qcow2: %s%s' % (r.stdout, r.stderr))
        r = subprocess.run(['qemu-img', 'check', new], capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img check new.qcow2: %s%s' % (r.stdout, r.stderr))
    print('qcow2 drive targets over a backing OK')


main()
