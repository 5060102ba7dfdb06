#!/usr/bin/python3
"""Compressed backups: blockdev-backup and drive-backup with compress=true
into qcow2 targets write compressed clusters (raw deflate, QEMU's format).
qemu-img compare finds the target equal to the source, qemu-img map
--output=json shows the data as compressed clusters (7.2's map gives
compressed data no host "offset"; later versions say "compressed": true),
qemu-img check is clean, and the target is much smaller than the data.
A target that cannot take compressed writes (raw) is refused with
qemu-storage-daemon's error, and a second compressed backup into the same
image (clusters replaced) stays consistent."""
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, qsd_cmd, wait_job_end  # noqa: E402

SIZE = 24 << 20


def run(*args):
    return subprocess.run(args, capture_output=True, text=True)


def make_source(path, seed):
    rng = random.Random(seed)
    with open(path, 'wb') as f:
        while f.tell() < SIZE:
            kind = rng.random()
            n = rng.randrange(1, 200000)
            if kind < 0.5:
                f.write((b'compressible text %d ' % rng.randrange(100)) * (n // 20 + 1))
            elif kind < 0.6:
                f.write(bytes(rng.getrandbits(8) for _ in range(min(n, 20000))))
            else:
                f.write(b'\0' * n)
        f.truncate(SIZE)


def compressed_entries(path):
    r = run('qemu-img', 'map', '--output=json', path)
    check(r.returncode == 0, 'qemu-img map: %s' % r.stderr)
    m = json.loads(r.stdout)
    data = [e for e in m if e['data']]
    comp = [e for e in data if e.get('compressed', 'offset' not in e)]
    return sum(e['length'] for e in comp), sum(e['length'] for e in data)


def verify(src, tgt, what):
    r = run('qemu-img', 'compare', '-f', 'raw', '-F', 'qcow2', src, tgt)
    check(r.returncode == 0, '%s: qemu-img compare: %s%s' % (what, r.stdout, r.stderr))
    r = run('qemu-img', 'check', tgt)
    check(r.returncode == 0, '%s: qemu-img check:\n%s%s' % (what, r.stdout, r.stderr))
    comp, data = compressed_entries(tgt)
    check(data > 0 and comp == data, '%s: %d of %d data bytes compressed' % (what, comp, data))
    used = os.stat(tgt).st_blocks * 512
    check(used < SIZE // 3, '%s: target uses %d bytes' % (what, used))
    return comp


def refusal(cmd):
    with Daemon(cmd) as d:
        q = d.qmp()
        src, raw = d.path('src'), d.path('t.raw')
        for p in (src, raw):
            with open(p, 'wb') as f:
                f.truncate(1 << 20)
        q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 's', 'file': {'driver': 'file', 'filename': src}})
        q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 't', 'file': {'driver': 'file', 'filename': raw}})
        out = [q.cmd('blockdev-backup', {'job-id': 'j', 'device': 's', 'target': 't', 'sync': 'full',
                                         'compress': True})]
        out.append(q.cmd('drive-backup', {'job-id': 'j', 'device': 's', 'target': d.path('d.raw'),
                                          'format': 'raw', 'sync': 'full', 'compress': True}))
        d.stop()
    return out


def main():
    a, b = refusal(qsd_cmd()), refusal(blockd_cmd())
    check(a == b, 'refusals differ:\n  qsd:    %r\n  blockd: %r' % (a, b))
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        src, tgt, dtgt = d.path('src.raw'), d.path('t.qcow2'), d.path('drive.qcow2')
        make_source(src, 1)
        r = run('qemu-img', 'create', '-f', 'qcow2', tgt, str(SIZE))
        check(r.returncode == 0, r.stderr)
        q.cmd('blockdev-add', {'driver': 'raw', 'node-name': 's', 'file': {'driver': 'file', 'filename': src}})
        q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 't', 'file': {'driver': 'file', 'filename': tgt}})
        r = q.cmd('blockdev-backup', {'job-id': 'b1', 'device': 's', 'target': 't', 'sync': 'full',
                                      'compress': True})
        check(r == {'return': {}}, 'blockdev-backup: %r' % r)
        evs = wait_job_end(q, 'b1')
        check(any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data'] for e in evs),
              'blockdev-backup completed: %r' % evs)
        r = q.cmd('drive-backup', {'job-id': 'b2', 'device': 's', 'target': dtgt, 'format': 'qcow2',
                                   'sync': 'full', 'compress': True})
        check(r == {'return': {}}, 'drive-backup: %r' % r)
        evs = wait_job_end(q, 'b2')
        check(any(e['event'] == 'BLOCK_JOB_COMPLETED' and 'error' not in e['data'] for e in evs),
              'drive-backup completed: %r' % evs)
        q.cmd('blockdev-del', {'node-name': 't'})
        comp = verify(src, tgt, 'blockdev-backup')
        verify(src, dtgt, 'drive-backup')
        # Again into the same image over a changed source: every cluster replaced.
        make_source(src, 2)
        q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 't', 'file': {'driver': 'file', 'filename': tgt}})
        q.cmd('blockdev-backup', {'job-id': 'b3', 'device': 's', 'target': 't', 'sync': 'full', 'compress': True})
        wait_job_end(q, 'b3')
        q.cmd('blockdev-del', {'node-name': 't'})
        verify(src, tgt, 'second backup')
        check(d.stop() == 0, 'daemon exit status')
    print('compressed backups: %d bytes of compressed clusters; PASS' % comp)


if __name__ == '__main__':
    main()
