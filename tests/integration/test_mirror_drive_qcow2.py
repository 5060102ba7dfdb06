#!/usr/bin/python3
"""drive-mirror into a new qcow2 image (format qcow2, mode absolute-paths)
while a guest writes, then job-complete: the export now serves the qcow2
node, later writes land in the image, and after the daemon stops the image
passes `qemu-img check` and equals every acknowledged write (qemu-img
compare against the expected raw content).  The holes of the source stay
unallocated in the image (qemu-img map)."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, add_source, blockd_cmd, check, connect, ok, skip, summary,  # noqa: E402
                        wait_job_end, wait_status)

SIZE = 16 << 20


def main():
    if subprocess.run(['which', 'qemu-img'], capture_output=True).returncode != 0:
        skip('qemu-img is not installed')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        image = bytearray(SIZE)
        h = connect(d.path('nbd.sock'), 'src')
        rng = random.Random(6)
        for i in range(0, 8 << 20, 1 << 20):  # the first 8 MiB hold data, the rest is a hole
            data = rng.randbytes(1 << 20)
            h.pwrite(data, i)
            image[i:i + len(data)] = data
        path = d.path('new.qcow2')
        ok(q.cmd('drive-mirror', {'job-id': 'm', 'device': 'src', 'target': path, 'format': 'qcow2',
                                  'sync': 'full', 'node-name': 'new0'}), 'drive-mirror')
        for _ in range(50):  # writes during the first pass
            off = rng.randrange(0, 8 << 20)
            data = rng.randbytes(rng.randrange(1, 20000))
            h.pwrite(data, off)
            image[off:off + len(data)] = data
        wait_status(q, 'm', 'ready')
        ok(q.cmd('job-complete', {'id': 'm'}), 'complete')
        evs = wait_job_end(q, 'm')
        check(('BLOCK_JOB_COMPLETED', ('device', 'm'), ('type', 'mirror')) in summary(evs), 'end %r' % summary(evs))
        check(q.cmd('query-block-exports')['return'][0]['node-name'] == 'new0', 'export not on the qcow2 node')
        fmt = [n['drv'] for n in q.cmd('query-named-block-nodes')['return'] if n['node-name'] == 'new0']
        check(fmt == ['qcow2'], 'new0 is %r' % fmt)
        h.pwrite(b'\x5e' * 4096, 12 << 20)  # after the pivot: into the image
        image[12 << 20:(12 << 20) + 4096] = b'\x5e' * 4096
        h.flush()
        check(h.pread(SIZE, 0) == bytes(image), 'the export serves other data after the pivot')
        h.shutdown()
        q.close()
        check(d.stop() == 0, 'daemon exit status')
        r = subprocess.run(['qemu-img', 'check', path], capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img check: %s%s' % (r.stdout, r.stderr))
        raw = d.path('expected.raw')
        with open(raw, 'wb') as f:
            f.write(image)
        r = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', '-F', 'raw', path, raw],
                           capture_output=True, text=True)
        check(r.returncode == 0, 'qemu-img compare: %s%s' % (r.stdout, r.stderr))
        m = json.loads(subprocess.run(['qemu-img', 'map', '--output=json', path], capture_output=True,
                                      text=True, check=True).stdout)
        allocated = sum(e['length'] for e in m if e['data'])
        check(allocated <= (8 << 20) + (1 << 20), 'the source\'s hole was copied: %d bytes allocated' % allocated)
    print('drive-mirror into qcow2 OK')


main()
