#!/usr/bin/python3
"""An RBD image exported by blockd over NBD (the node given on the command
line): nbdcopy in and out keeps every byte (checksums of the file, the
export and `rbd export`); on a sparse image with 1 MiB objects,
`nbdinfo --map` reports exactly the objects `rbd diff --whole-object`
lists as data and the rest as holes that read as zeroes, before and after
a discard and a write-zeroes that may punch holes, while write-zeroes
without it keeps the objects allocated."""
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceph_lib import Cluster  # noqa: E402
from lib import Blockd, check, import_nbd  # noqa: E402

MiB = 1 << 20


def sha(data):
    return hashlib.sha256(data).hexdigest()


def nbd_map(uri):
    out = subprocess.run(['nbdinfo', '--map', '--json', uri], capture_output=True, text=True, check=True).stdout
    return [(e['offset'], e['length']) for e in json.loads(out) if e['type'] == 0]


def rbd_map(c, image):
    """Data extents of `rbd diff --whole-object`, adjacent ones merged."""
    runs = []
    for e in json.loads(c.rbd('diff', '--whole-object', '--format', 'json', 'rbd/' + image)):
        if e['exists'] != 'true' and e['exists'] is not True:
            continue
        if runs and runs[-1][0] + runs[-1][1] == e['offset']:
            runs[-1] = (runs[-1][0], runs[-1][1] + e['length'])
        else:
            runs.append((e['offset'], e['length']))
    return runs


def main():
    nbd = import_nbd()
    with Cluster() as c:
        c.rbd('create', 'rbd/img', '--size', '64M')
        c.rbd('create', 'rbd/sparse', '--size', '64M', '--object-size', '1M')
        with Blockd('--blockdev', 'driver=rbd,node-name=r0,pool=rbd,image=img,conf=' + c.conf,
                    '--blockdev', 'driver=rbd,node-name=r1,pool=rbd,image=sparse,conf=' + c.conf,
                    '--export', 'type=nbd,id=e0,node-name=r0,name=img,writable=on',
                    '--export', 'type=nbd,id=e1,node-name=r1,name=sparse,writable=on') as d:
            src = os.path.join(d.tmp, 'src')
            data = os.urandom(48 * MiB + 12345)
            with open(src, 'wb') as f:
                f.write(data)
            full = data + bytes(64 * MiB - len(data))
            subprocess.run(['nbdcopy', src, d.uri('img')], check=True)
            back = os.path.join(d.tmp, 'back')
            subprocess.run(['nbdcopy', d.uri('img'), back], check=True)
            with open(back, 'rb') as f:
                check(sha(f.read()) == sha(full), 'nbdcopy out differs from what nbdcopy wrote in')
            check(sha(c.export('img')) == sha(full), 'rbd export differs from what nbdcopy wrote')

            uri = d.uri('sparse')
            check(nbd_map(uri) == [] and rbd_map(c, 'sparse') == [], 'a new image is not all holes')
            h = d.connect('sparse')
            h.pwrite(b'\x11' * 4096, 0)
            h.pwrite(b'\x22' * 1000, 10 * MiB + 5)
            h.pwrite(b'\x33' * (2 * MiB), 30 * MiB + 4096, nbd.CMD_FLAG_FUA)
            h.flush()
            want = [(0, MiB), (10 * MiB, MiB), (30 * MiB, 3 * MiB)]
            check(rbd_map(c, 'sparse') == want, 'rbd diff %r' % rbd_map(c, 'sparse'))
            check(nbd_map(uri) == want, 'nbdinfo --map %r, rbd diff %r' % (nbd_map(uri), want))
            check(h.pread(MiB, 5 * MiB) == bytes(MiB), 'a hole does not read as zeroes')
            check(h.pread(1000, 10 * MiB + 5) == b'\x22' * 1000, 'data lost')

            h.trim(MiB, 10 * MiB)                     # a whole object: gone
            h.zero(MiB, 31 * MiB)                     # may punch a hole
            h.zero(MiB, 40 * MiB, nbd.CMD_FLAG_NO_HOLE)  # must stay allocated
            h.flush()
            check(h.pread(3 * MiB, 30 * MiB) == bytes(4096) + b'\x33' * (MiB - 4096) + bytes(MiB) +
                  b'\x33' * 4096 + bytes(MiB - 4096), 'zeroed data reads back wrong')
            check(h.pread(MiB, 40 * MiB) == bytes(MiB), 'write-zeroes without holes is not zero')
            want = [(0, MiB), (30 * MiB, MiB), (32 * MiB, MiB), (40 * MiB, MiB)]
            got_rbd, got_nbd = rbd_map(c, 'sparse'), nbd_map(uri)
            check(got_rbd == want, 'rbd diff after trim/zero %r' % got_rbd)
            check(got_nbd == got_rbd, 'nbdinfo --map %r, rbd diff %r' % (got_nbd, got_rbd))
            h.shutdown()
    print('rbd over NBD OK')


main()
