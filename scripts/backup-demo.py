#!/usr/bin/python3
"""The whole backup story in one run (for the README's run command):

    BLOCKD=build/blockd scripts/backup-demo.py [SIZE_MIB]

serves a memory disk, writes to it like a guest, takes a full backup to an
NBD target (nbdkit's memory plugin) that also starts a dirty bitmap afresh
(bitmap-mode on-success), writes more, takes an incremental backup through the bitmap,
restores the image (full + increment) and checks it byte for byte against
the disk, printing what it did and the throughput.  Needs nbdkit and
python3-libnbd (/usr/bin/python3)."""
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests', 'integration'))
from backup_lib import (Daemon, Nbdkit, add_nbd_target, add_source, connect, import_nbd,  # noqa: E402
                        read_all, wait_job_end)

MiB = 1 << 20


def step(msg):
    print('==> ' + msg, flush=True)


def backup(q, job, target, **kw):
    args = {'job-id': job, 'device': 'disk0', 'target': target}
    args.update(kw)
    t0 = time.monotonic()
    r = q.cmd('blockdev-backup', args)
    if 'error' in r:
        sys.exit('blockdev-backup: %s' % r['error']['desc'])
    evs = wait_job_end(q, job, timeout=600)
    done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED'][0]
    if 'error' in done:
        sys.exit('backup %s failed: %s' % (job, done['error']))
    secs = time.monotonic() - t0
    print('    %s: %d MiB copied in %.2f s (%.0f MiB/s)' % (job, done['len'] // MiB, secs,
                                                          done['len'] / MiB / secs if secs else 0))


def allocated(sock):
    nbd = import_nbd()
    h = nbd.NBD()
    h.add_meta_context('base:allocation')
    h.connect_unix(sock)
    size, out, pos = h.get_size(), [], 0
    while pos < size:
        got = []
        h.block_status(min(size - pos, 1 << 30), pos,
                       lambda meta, off, e, err: got.extend(zip(e[0::2], e[1::2])) or 0)
        for length, flags in got:
            if not flags & 1:
                out.append((pos, length))
            pos += length
    h.shutdown()
    return out


def main():
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 else 256 * MiB
    rng = random.Random(1)
    with Daemon([os.environ.get('BLOCKD', 'build/blockd')]) as d, \
            Nbdkit('memory', str(size)) as full, Nbdkit('memory', str(size)) as inc:
        q = d.qmp()
        step('serving a %d MiB memory disk "disk0" over NBD' % (size // MiB))
        add_source(q, d, 'disk0', size)
        h = connect(d.path('nbd.sock'), 'disk0')
        step('writing %d MiB of data like a guest' % (size // 2 // MiB))
        chunk = bytes(rng.randrange(1, 256) for _ in range(MiB))
        for off in range(0, size // 2, MiB):
            h.pwrite(chunk, off)
        step('full backup to nbd+unix:///?socket=%s that also starts dirty bitmap b0' % full.sock)
        add_nbd_target(q, 'full', full.sock)
        add_nbd_target(q, 'inc', inc.sock)
        q.cmd('block-dirty-bitmap-add', {'node': 'disk0', 'name': 'b0'})
        backup(q, 'full-backup', 'full', sync='full', bitmap='b0', **{'bitmap-mode': 'on-success'})
        step('writing 64 scattered 64 KiB blocks')
        for _ in range(64):
            h.pwrite(bytes([rng.randrange(1, 256)]) * 65536, rng.randrange(0, size // 65536) * 65536)
        h.flush()
        step('incremental backup through bitmap b0 to nbd+unix:///?socket=%s' % inc.sock)
        backup(q, 'incremental-backup', 'inc', sync='incremental', bitmap='b0')
        step('restoring: full backup + the increment\'s allocated blocks')
        image = bytearray(read_all(full.sock))
        delta = read_all(inc.sock)
        for off, n in allocated(inc.sock):
            image[off:off + n] = delta[off:off + n]
        ok = bytes(image) == read_all(d.path('nbd.sock'), 'disk0')
        print('    restored image %s the disk' % ('matches' if ok else 'DIFFERS FROM'))
        h.shutdown()
        for node in ('full', 'inc'):
            q.cmd('blockdev-del', {'node-name': node})
        q.close()
        d.stop()
    sys.exit(0 if ok else 1)


main()
