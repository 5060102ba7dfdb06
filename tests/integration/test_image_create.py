#!/usr/bin/python3
"""blockdev-create: file and qcow2 images made by a create job.

1. The same script against qemu-storage-daemon and blockd: each job's
   JOB_STATUS_CHANGE sequence (created, running, waiting, pending,
   concluded; aborting instead of waiting/pending on failure), query-jobs
   with its error texts, job-dismiss, the command's own refusals (driver
   without create support, bad and used job IDs), every qcow2 option check
   QEMU makes, and `qemu-img info` / `qemu-img check` of every image made
   (v3 and v2, cluster sizes 512 B .. 2 MiB, refcount widths 1 and 64,
   lazy refcounts, backing file and format, file as a node reference and
   inline) agree.
2. The images open in blockd (blockdev-add) and take data written over
   NBD, read back; qemu-img check stays clean afterwards.
3. blockd's own limit: qcow2 preallocation other than off is refused with
   a clear error, and nothing is written.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from image_lib import Daemon, blockd_cmd, check, differential  # noqa: E402

MiB = 1 << 20


def file_steps():
    return [
        ('blockdev-create', {'job-id': 'c1', 'options': {'driver': 'file', 'filename': '$T/a.img', 'size': MiB}}),
        ('wait-job', 'c1'),
        ('query-jobs', {}),
        ('job-dismiss', {'id': 'c1'}),
        ('query-jobs', {}),
        ('blockdev-create', {'job-id': 'c2', 'options': {'driver': 'file', 'filename': '$T/nodir/a.img',
                                                         'size': MiB}}),
        ('wait-job', 'c2'),
        ('blockdev-create', {'job-id': 'c2', 'options': {'driver': 'file', 'filename': '$T/b.img', 'size': MiB}}),
        ('query-jobs', {}),
        ('job-dismiss', {'id': 'c2'}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'raw'}}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'null-co'}}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'nbd'}}),
        ('blockdev-create', {'options': {'driver': 'file', 'filename': '$T/g.img', 'size': 1}}),
        ('blockdev-create', {'job-id': '', 'options': {'driver': 'file', 'filename': '$T/g.img', 'size': 1}}),
        ('blockdev-create', {'job-id': '#x', 'options': {'driver': 'file', 'filename': '$T/g.img', 'size': 1}}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'file', 'filename': '$T/g.img'}}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'file', 'filename': '$T/g.img', 'size': 1,
                                                         'bogus': 1}}),
        ('blockdev-create', {'job-id': 'c3', 'options': {'driver': 'file', 'filename': '$T/m.img', 'size': MiB,
                                                         'preallocation': 'metadata'}}),
        ('wait-job', 'c3'),
        ('blockdev-create', {'job-id': 'c4', 'options': {'driver': 'file', 'filename': '$T/f.img', 'size': MiB,
                                                         'preallocation': 'full', 'nocow': True}}),
        ('wait-job', 'c4'),
        ('blockdev-create', {'job-id': 'c5', 'options': {'driver': 'file', 'filename': '$T/g.img',
                                                         'size': MiB + 1, 'preallocation': 'falloc'}}),
        ('wait-job', 'c5'),
        # an exported node does not share resize: neither a file create (image
        # locks: the hint's second line is not part of the job's error) nor a
        # qcow2 create on the node may go on
        ('sh', 'qemu-img create -q -f raw $T/lk.img 1M'),
        ('blockdev-add', {'driver': 'file', 'node-name': 'lk', 'filename': '$T/lk.img'}),
        ('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': '$T/nbd.sock'}}}),
        ('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'lk', 'writable': True}),
        ('blockdev-create', {'job-id': 'c6', 'options': {'driver': 'file', 'filename': '$T/lk.img', 'size': 2 * MiB}}),
        ('wait-job', 'c6'),
        ('blockdev-create', {'job-id': 'c7', 'options': {'driver': 'qcow2', 'file': 'lk', 'size': 2 * MiB}}),
        ('wait-job', 'c7'),
        ('block-export-del', {'id': 'e'}),
        ('blockdev-del', {'node-name': 'lk'}),
        ('query-jobs', {}),
        ('sh', 'stat -c "%n %s %b" $T/a.img $T/f.img $T/g.img $T/m.img $T/lk.img'),
    ]


def qcow2_steps():
    steps = [
        ('sh', 'qemu-img create -q -f raw $T/base.img 1G'),
        ('blockdev-create', {'job-id': 'f1', 'options': {'driver': 'file', 'filename': '$T/q.qcow2', 'size': 0}}),
        ('wait-job', 'f1'),
        ('blockdev-add', {'driver': 'file', 'node-name': 'qf', 'filename': '$T/q.qcow2'}),
        ('blockdev-create', {'job-id': 'q1', 'options': {'driver': 'qcow2', 'file': 'qf', 'size': 64 * MiB}}),
        ('wait-job', 'q1'),
        ('sh', 'qemu-img info -U $T/q.qcow2; qemu-img check -U $T/q.qcow2; stat -c %s $T/q.qcow2'),
        ('blockdev-create', {'job-id': 'q2', 'options': {'driver': 'qcow2', 'file': 'nosuch', 'size': MiB}}),
        ('wait-job', 'q2'),
    ]
    refused = [
        {'size': 1000},
        {'size': MiB, 'cluster-size': 1000},
        {'size': MiB, 'cluster-size': 256},
        {'size': MiB, 'cluster-size': 4 * MiB},
        {'size': MiB, 'backing-fmt': 'raw'},
        {'size': MiB, 'version': 'v2', 'lazy-refcounts': True},
        {'size': MiB, 'version': 'v2', 'refcount-bits': 8},
        {'size': MiB, 'refcount-bits': 3},
        {'size': MiB, 'refcount-bits': 128},
        {'size': MiB, 'refcount-bits': 0},
        {'size': MiB, 'backing-file': '/x', 'preallocation': 'metadata'},
        {'size': 1000, 'cluster-size': 1000, 'refcount-bits': 3},   # the first check wins
    ]
    for i, opts in enumerate(refused):
        opts = dict(opts, driver='qcow2', file='qf')
        steps += [('blockdev-create', {'job-id': 'r%d' % i, 'options': opts}), ('wait-job', 'r%d' % i)]
    made = [
        ('v2.qcow2', {'size': 1 << 30, 'version': 'v2', 'cluster-size': 4096, 'backing-file': 'base.img',
                      'backing-fmt': 'raw'}),
        ('lazy.qcow2', {'size': 10 << 30, 'lazy-refcounts': True, 'refcount-bits': 1, 'cluster-size': 2 * MiB}),
        ('r64.qcow2', {'size': MiB, 'refcount-bits': 64, 'cluster-size': 512}),
        ('back.qcow2', {'size': 64 * MiB, 'backing-file': '$T/q.qcow2', 'backing-fmt': 'qcow2'}),
    ]
    for name, opts in made:
        steps += [
            ('blockdev-create', {'job-id': 'f-' + name, 'options': {'driver': 'file', 'filename': '$T/' + name,
                                                                    'size': 0}}),
            ('wait-job', 'f-' + name),
            # the file inline, as a nested node definition
            ('blockdev-create', {'job-id': name, 'options': dict(opts, driver='qcow2', file={
                'driver': 'file', 'filename': '$T/' + name})}),
            ('wait-job', name),
            ('sh', 'qemu-img info -U $T/%s; qemu-img check -U $T/%s' % (name, name)),
        ]
    # the file: read-only, missing, an inline definition whose name is taken or new (a temporary node)
    steps += [
        ('sh', 'qemu-img create -q -f raw $T/ro.img 0'),
        ('blockdev-add', {'driver': 'file', 'node-name': 'ro', 'filename': '$T/ro.img', 'read-only': True}),
        ('blockdev-create', {'job-id': 'x1', 'options': {'driver': 'qcow2', 'file': 'ro', 'size': MiB}}),
        ('wait-job', 'x1'),
        ('blockdev-create', {'job-id': 'x2', 'options': {'driver': 'qcow2', 'size': MiB, 'file': {
            'driver': 'file', 'filename': '$T/nonexist.img'}}}),
        ('wait-job', 'x2'),
        ('blockdev-create', {'job-id': 'x3', 'options': {'driver': 'qcow2', 'size': MiB, 'file': {
            'driver': 'file', 'filename': '$T/ro.img', 'node-name': 'ro'}}}),
        ('wait-job', 'x3'),
        ('blockdev-del', {'node-name': 'ro'}),
        ('blockdev-create', {'job-id': 'x4', 'options': {'driver': 'qcow2', 'size': MiB, 'file': {
            'driver': 'file', 'filename': '$T/ro.img', 'node-name': 'tmpnode'}}}),
        ('wait-job', 'x4'),
        ('sh', 'qemu-img check $T/ro.img'),
    ]
    steps += [('query-jobs', {}), ('query-named-block-nodes', {'flat': True})]
    return steps


def test_differential():
    steps = file_steps() + qcow2_steps()
    ours, refusals = differential(steps, skip_compare=('query-named-block-nodes',))
    jobs = [r for s, r in ours if s[0] == 'wait-job']
    check(['created', 'running', 'waiting', 'pending', 'concluded'] in jobs, 'no successful job: %r' % jobs)
    check(['created', 'running', 'aborting', 'concluded'] in jobs, 'no failed job: %r' % jobs)
    checks = [r for s, r in ours if s[0] == 'sh' and 'qemu-img check' in s[1]]
    check(len(checks) == 6 and all('No errors were found on the image.' in c for c in checks),
          'qemu-img check: %r' % checks)
    # Only the created nodes' own: no temporary node of an inline file stays.
    nodes = [n['node-name'] for s, r in ours if s[0] == 'query-named-block-nodes' for n in r]
    check(nodes == ['qf'], 'nodes left: %r' % nodes)
    last_jobs = [r for s, r in ours if s[0] == 'query-jobs'][-1]
    failed = [j['error'] for j in last_jobs if 'error' in j]
    check(refusals >= 8 and len(failed) >= 18, 'only %d + %d refusals compared' % (refusals, len(failed)))
    print('differential: %d steps, %d command refusals and %d failed jobs with the same texts, every image '
          'identical to qemu-storage-daemon' % (len(steps), refusals, len(failed)))


def test_use_and_limits(tmp):
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()

        def ok(name, args):
            r = q.cmd(name, args)
            check('return' in r, '%s: %r' % (name, r))

        def wait(job):
            from image_lib import job_statuses
            st = job_statuses(q, job)
            info = [j for j in q.cmd('query-jobs')['return'] if j['id'] == job][0]
            ok('job-dismiss', {'id': job})
            return st, info.get('error')
        img = os.path.join(tmp, 'd.qcow2')
        ok('blockdev-create', {'job-id': 'f', 'options': {'driver': 'file', 'filename': img, 'size': 0}})
        check(wait('f')[1] is None, 'file create failed')
        ok('blockdev-add', {'driver': 'file', 'node-name': 'df', 'filename': img})
        ok('blockdev-create', {'job-id': 'p', 'options': {'driver': 'qcow2', 'file': 'df', 'size': 32 * MiB,
                                                          'preallocation': 'metadata'}})
        st, err = wait('p')
        check(err and 'preallocation' in err.lower(), 'preallocation=metadata: %r' % err)
        check(os.path.getsize(img) == 0, 'a refused create wrote to the file')
        ok('blockdev-create', {'job-id': 'q', 'options': {'driver': 'qcow2', 'file': 'df', 'size': 32 * MiB,
                                                          'cluster-size': 65536}})
        check(wait('q')[1] is None, 'qcow2 create failed')
        ok('blockdev-add', {'driver': 'qcow2', 'node-name': 'd', 'file': 'df'})
        sock = os.path.join(tmp, 'nbd.sock')
        ok('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        ok('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'd', 'writable': True})
        from lib import import_nbd
        nbd = import_nbd()
        h = nbd.NBD()
        h.connect_uri('nbd+unix:///d?socket=' + sock)
        check(h.get_size() == 32 * MiB, 'export size %d' % h.get_size())
        pattern = bytes(range(256)) * 4096
        for off in (0, 5 * MiB + 4096, 32 * MiB - len(pattern)):
            h.pwrite(pattern, off)
        h.flush()
        for off in (0, 5 * MiB + 4096, 32 * MiB - len(pattern)):
            check(h.pread(len(pattern), off) == pattern, 'read back differs at %d' % off)
        h.shutdown()
        ok('block-export-del', {'id': 'e'})
        ok('blockdev-del', {'node-name': 'd'})
        ok('blockdev-del', {'node-name': 'df'})
        q.close()
        d.stop()
    r = subprocess.run(['qemu-img', 'check', img], capture_output=True, text=True)
    check(r.returncode == 0 and 'No errors' in r.stdout, 'qemu-img check after use: %s%s' % (r.stdout, r.stderr))
    r = subprocess.run(['qemu-img', 'compare', '-f', 'qcow2', img, img], capture_output=True, text=True)
    check(r.returncode == 0, 'qemu-img compare')
    print('blockd: a created qcow2 image took %d writes over NBD and stayed clean' % 3)


if __name__ == '__main__':
    import tempfile
    test_differential()
    with tempfile.TemporaryDirectory() as tmp:
        test_use_and_limits(tmp)
