#!/usr/bin/python3
"""Backing chains over an RBD base (issue 19: stream and commit over an RBD
base): mid <- top are local qcow2 images, base is a raw RBD image.

1. block-stream of top with a verifying NBD writer on top: top ends up
   holding the whole merge, its header names no backing file, and the RBD
   image is unchanged.
2. block-commit of mid into the RBD base (intermediate), then an active
   commit of top into it with the writer running (READY, job-complete): the
   export now writes to RBD, and `rbd export` of the image equals the merge
   plus every acknowledged write.  top's header then names the RBD image by
   QEMU's json: name, which qemu-img opens.
3. That name is the one qemu-storage-daemon shows for the same rbd node,
   and the backing name and format an intermediate commit writes into the
   header are the ones qemu-storage-daemon writes.
4. blockd opens such images by themselves, with no backing option: mid,
   whose header names its base the legacy way (rbd:rbd/IMAGE:conf=...,
   format raw), and top after the commit (the json: name, format rbd); it
   reads them as qemu-img convert does."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (LAYERS, MiB, Chain, ChainWriter, Daemon, blockd_cmd, check, export, layer_writes,  # noqa: E402
                       merge, ok, qemu_io_write, qsd_cmd, read_all, run, wait_job_end, wait_status)
from ceph_lib import Cluster  # noqa: E402

SIZE = 16 * MiB


def make_rbd_chain(cl, tmp, image):
    """base (RBD image `image`, raw) <- mid <- top (qcow2 files in tmp)."""
    c = Chain(tmp, SIZE)
    cl.rbd('create', 'rbd/' + image, '--size', '16M')
    c.path['base'] = cl.uri(image)
    c.layers['base'] = layer_writes(SIZE, 'base')
    qemu_io_write(c.path['base'], c.layers['base'], fmt='raw')
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', c.path['base'], '-F', 'raw', '-u', c.mid, str(SIZE))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', '-u', c.top, str(SIZE))
    for name in ('mid', 'top'):
        c.layers[name] = layer_writes(SIZE, name)
        qemu_io_write(c.path[name], c.layers[name])
    c.expected = merge(c, *LAYERS)
    return c


def open_over_rbd(q, cl, c, image):
    ok(q.cmd('blockdev-add', cl.node('base', image)), 'blockdev-add rbd base')
    for name, below in (('mid', 'base'), ('top', 'mid')):
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name, 'backing': below,
                                  'file': {'driver': 'file', 'filename': c.path[name]}}), 'blockdev-add ' + name)


def completed(evs, job):
    done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED' and e['data']['device'] == job]
    check(done and 'error' not in done[0], '%s: %r' % (job, evs))


def info(path):
    return json.loads(subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], capture_output=True,
                                     text=True, check=True).stdout)


def opens_alone(path, what):
    """blockd opens the qcow2 image at `path` with the backing file its
    header names (no backing option) and reads what qemu-img reads."""
    want = os.path.join(os.path.dirname(path), 'qemu-img.raw')
    run('qemu-img', 'convert', '-U', '-O', 'raw', path, want)
    with open(want, 'rb') as f:
        want_data = f.read()
    os.unlink(want)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'alone', 'read-only': True,
                                  'file': {'driver': 'file', 'filename': path}}), 'blockdev-add ' + what)
        chain = [n['drv'] for n in q.cmd('query-named-block-nodes')['return']]
        sock = d.path('nbd.sock')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'alone', 'name': 'alone'}), 'export')
        got = read_all(sock, 'alone')
        q.cmd('quit')
        check(d.wait() == 0, 'blockd exit status')
    check('rbd' in chain, '%s: no rbd node was opened for its backing file: %r' % (what, chain))
    check(got == want_data, '%s: blockd reads other data than qemu-img through the backing file' % what)
    print('%s opens by itself over its RBD backing file (%s) and reads as qemu-img does'
          % (what, info(path).get('backing-filename')))


def stream(cl, tmp):
    c = make_rbd_chain(cl, tmp, 'sbase')
    before = cl.export('sbase')
    opens_alone(c.mid, 'mid (rbd: backing name)')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        open_over_rbd(q, cl, c, 'sbase')
        export(q, d, 'top')
        w = ChainWriter(d, 'top', c.expected)
        w.start()
        ok(q.cmd('block-stream', {'job-id': 's', 'device': 'top'}), 'block-stream')
        completed(wait_job_end(q, 's'), 's')
        w.stop()
        w.verify('top after the stream')
        q.cmd('quit')
        check(d.wait() == 0, 'blockd exit status')
    i = info(c.top)
    check('backing-filename' not in i, 'top still names a backing file: %r' % i.get('backing-filename'))
    check(cl.export('sbase') == before, 'the stream changed the RBD base')
    print('stream over an RBD base: top holds the merge and %d writes, no backing file' % w.count)


def commit(cl, tmp):
    c = make_rbd_chain(cl, tmp, 'cbase')
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        open_over_rbd(q, cl, c, 'cbase')
        export(q, d, 'top')
        w = ChainWriter(d, 'top', c.expected)
        w.start()
        ok(q.cmd('block-commit', {'job-id': 'mid-into-rbd', 'device': 'top', 'top-node': 'mid',
                                  'base-node': 'base'}), 'intermediate commit')
        completed(wait_job_end(q, 'mid-into-rbd'), 'mid-into-rbd')
        check(cl.export('cbase') == bytes(merge(c, 'base', 'mid')), 'the RBD base does not hold base + mid')
        ok(q.cmd('block-commit', {'job-id': 'top-into-rbd', 'device': 'top', 'base-node': 'base'}),
           'active commit')
        wait_status(q, 'top-into-rbd', 'ready')
        ok(q.cmd('job-complete', {'id': 'top-into-rbd'}), 'job-complete')
        completed(wait_job_end(q, 'top-into-rbd'), 'top-into-rbd')
        exports = {e['id']: e['node-name'] for e in q.cmd('query-block-exports')['return']}
        check(exports.get('e-top') == 'base', 'the export is not on the RBD node: %r' % exports)
        w.stop()
        disk = w.verify('the export after the active commit')
        q.cmd('quit')
        check(d.wait() == 0, 'blockd exit status')
    check(cl.export('cbase') == disk, 'rbd export differs from the merge plus every acknowledged write')
    i = info(c.top)
    check(i.get('backing-filename') == rbd_name(cl, 'cbase') and i.get('backing-filename-format') == 'rbd',
          'top names its new backing file %r (%r)' % (i.get('backing-filename'), i.get('backing-filename-format')))
    full = json.loads(subprocess.run(['qemu-img', 'info', '-U', '--backing-chain', '--output=json', c.top],
                                     capture_output=True, text=True, check=True).stdout)
    check(len(full) == 2 and full[1]['virtual-size'] == SIZE, 'qemu-img opens the chain: %r' % full)
    opens_alone(c.top, 'top (json: backing name)')
    print('commit into an RBD base: intermediate then active (READY, complete) with %d writes; rbd export '
          'equals the merge' % w.count)


def commit_header(cl, tmp, image, cmd):
    """The backing name and format an intermediate commit into the RBD base
    writes into top's header, run by `cmd`'s daemon."""
    c = make_rbd_chain(cl, tmp, image)
    with Daemon(cmd) as d:
        q = d.qmp()
        open_over_rbd(q, cl, c, image)
        ok(q.cmd('block-commit', {'job-id': 'j', 'device': 'top', 'top-node': 'mid', 'base-node': 'base'}),
           'intermediate commit')
        completed(wait_job_end(q, 'j'), 'j')
        q.cmd('quit')
        d.wait()
    i = info(c.top)
    return i.get('backing-filename'), i.get('backing-filename-format')


def header_vs_qsd(cl, tmp):
    theirs = commit_header(cl, os.path.join(tmp, 'q'), 'qhdr', qsd_cmd())
    ours = commit_header(cl, os.path.join(tmp, 'b'), 'bhdr', blockd_cmd())
    check(ours == (theirs[0].replace('qhdr', 'bhdr'), theirs[1]), 'commit header: QSD %r, blockd %r' % (theirs, ours))
    print('an intermediate commit into RBD records what qemu-storage-daemon records: %r' % (ours,))


def rbd_name(cl, image):
    """The file name qemu-storage-daemon shows for an rbd node of the image."""
    with Daemon(qsd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', dict(cl.node('n', image), **{'read-only': True})), 'QSD blockdev-add')
        name = [n['file'] for n in q.cmd('query-named-block-nodes')['return'] if n['node-name'] == 'n'][0]
        q.cmd('quit')
        d.wait()
    return name


def names(cl):
    cl.rbd('create', 'rbd/named', '--size', '1M')
    want = rbd_name(cl, 'named')
    check(want.startswith('json:{'), 'QSD names an rbd node %r' % want)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', dict(cl.node('n', 'named'), **{'read-only': True})), 'blockdev-add')
        got = [(n['file'], n['image']['filename']) for n in q.cmd('query-named-block-nodes')['return']
               if n['node-name'] == 'n'][0]
        q.cmd('quit')
        d.wait()
    check(got == (want, want), 'blockd names the rbd node %r, QSD %r' % (got, want))
    print('an rbd node is named as qemu-storage-daemon names it: %s' % want)


def main():
    tmp = tempfile.mkdtemp(prefix='blockd-rbd-chain.')
    try:
        with Cluster(qemu=True) as cl:
            names(cl)
            for sub in ('s', 'c', 'q', 'b'):
                os.makedirs(os.path.join(tmp, sub))
            header_vs_qsd(cl, tmp)
            stream(cl, os.path.join(tmp, 's'))
            commit(cl, os.path.join(tmp, 'c'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('PASS')


main()
