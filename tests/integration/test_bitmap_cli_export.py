#!/usr/bin/python3
"""Exporting dirty bitmaps from the command line with keyval lists:
--export ...,bitmaps.0=b0,bitmaps.1=b1 and the {node, name} form
bitmaps.0.node=f0,bitmaps.0.name=b1.

A first run creates two persistent bitmaps on a raw file over QMP and
dirties known ranges through NBD; SIGTERM stores them in the image's
sidecar.  Later runs have no monitor at all: --blockdev loads the bitmaps and
--export offers them, which nbdinfo --map=qemu:dirty-bitmap:NAME must show.
Gaps in the indexes are refused with QEMU's message."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, sanitizer_report  # noqa: E402
from lib import Blockd, import_nbd  # noqa: E402

nbd = import_nbd()

MiB = 1 << 20
GRAN = 65536
# b0 sees every write; b1 is created after the first two.
B0_DIRTY = [(0, GRAN), (1 * MiB, GRAN), (3 * MiB, 2 * GRAN)]
B1_DIRTY = [(3 * MiB, 2 * GRAN)]


def qmp_ok(q, name, args=None):
    r = q.cmd(name, args)
    check(r == {'return': {}}, '%s %r: %r' % (name, args, r))


def create_bitmaps(img):
    with Daemon(blockd_cmd(), extra=['--blockdev', 'driver=file,node-name=f0,filename=' + img]) as d:
        q = d.qmp()
        sock = d.path('nbd.sock')
        qmp_ok(q, 'nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        qmp_ok(q, 'block-dirty-bitmap-add', {'node': 'f0', 'name': 'b0', 'granularity': GRAN,
                                             'persistent': True})
        qmp_ok(q, 'block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'f0',
                                       'name': 'disk', 'writable': True})
        h = nbd.NBD()
        h.set_export_name('disk')
        h.connect_unix(sock)
        for off, length in B0_DIRTY[:2]:
            h.pwrite(b'\x5a' * length, off)
        qmp_ok(q, 'block-dirty-bitmap-add', {'node': 'f0', 'name': 'b1', 'granularity': GRAN,
                                             'persistent': True})
        for off, length in B0_DIRTY[2:]:
            h.pwrite(b'\xa5' * length, off)
        h.flush()
        h.shutdown()
        del h
        check(d.stop() == 0, 'first run did not exit cleanly: %s' % d.stderr_text())


def dirty_map(blockd, name):
    r = subprocess.run(['nbdinfo', '--json', '--map=qemu:dirty-bitmap:' + name, blockd.uri('disk')],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, 'nbdinfo --map=qemu:dirty-bitmap:%s: %s' % (name, r.stderr))
    return [(e['offset'], e['length']) for e in json.loads(r.stdout) if e['type'] == 1]


def blockdev(img):
    return ['--blockdev', 'driver=file,node-name=f0,filename=' + img]


def main():
    tmp = tempfile.mkdtemp(prefix='bitmap-cli.')
    try:
        img = os.path.join(tmp, 'disk.img')
        with open(img, 'wb') as f:
            f.truncate(8 * MiB)
        create_bitmaps(img)

        # bitmaps.0 / bitmaps.1: two plain names, in that order.
        with Blockd(*blockdev(img), '--export',
                    'type=nbd,id=e0,node-name=f0,name=disk,writable=on,bitmaps.0=b0,bitmaps.1=b1') as b:
            got0, got1 = dirty_map(b, 'b0'), dirty_map(b, 'b1')
            check(got0 == B0_DIRTY, 'b0 map %r, expected %r' % (got0, B0_DIRTY))
            check(got1 == B1_DIRTY, 'b1 map %r, expected %r' % (got1, B1_DIRTY))

        # The {node, name} form, mixed with a plain name, indexes out of order.
        with Blockd(*blockdev(img), '--export',
                    'type=nbd,id=e0,node-name=f0,name=disk,writable=on,'
                    'bitmaps.1=b0,bitmaps.0.node=f0,bitmaps.0.name=b1') as b:
            got0, got1 = dirty_map(b, 'b0'), dirty_map(b, 'b1')
            check(got0 == B0_DIRTY, '{node,name} run: b0 map %r' % (got0,))
            check(got1 == B1_DIRTY, '{node,name} run: b1 map %r' % (got1,))

        # Only what was listed is offered.
        with Blockd(*blockdev(img), '--export',
                    'type=nbd,id=e0,node-name=f0,name=disk,writable=on,bitmaps.0=b1') as b:
            r = subprocess.run(['nbdinfo', '--map=qemu:dirty-bitmap:b0', b.uri('disk')],
                               capture_output=True, text=True, timeout=60)
            check(r.returncode != 0, 'b0 offered although only b1 was listed: %s' % r.stdout)
            check(dirty_map(b, 'b1') == B1_DIRTY, 'single-element list')

        # QEMU's keyval errors: a gap, a mixture, a missing {node, name} member.
        cases = [
            ('bitmaps.0=b0,bitmaps.2=b1', "Parameter 'bitmaps.1' missing"),
            ('bitmaps.0=b0,bitmaps.x=b1', "Parameters 'bitmaps.*' used inconsistently"),
            ('bitmaps.0.node=f0', "Parameter 'bitmaps.0.name' is missing"),
            ('bitmaps=b0', "Invalid parameter type for 'bitmaps', expected: array"),
        ]
        for opts, message in cases:
            sock = os.path.join(tmp, 'bad.sock')
            r = subprocess.run(blockd_cmd() + blockdev(img) +
                               ['--nbd-server', 'addr.type=unix,addr.path=' + sock,
                                '--export', 'type=nbd,id=e0,node-name=f0,writable=on,' + opts],
                               capture_output=True, text=True, timeout=30)
            check(r.returncode != 0, '%s accepted' % opts)
            check(message in r.stderr, '%s: stderr %r, expected %r' % (opts, r.stderr, message))
            check(not sanitizer_report(r.stderr), r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('bitmaps exported from the command line')


main()
