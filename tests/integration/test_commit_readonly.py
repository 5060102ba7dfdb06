#!/usr/bin/python3
"""block-commit and block-stream into read-only nodes, against qemu-storage-daemon.

The chain base <- mid <- top is opened from top's header only, so base and
mid are read-only (as QEMU opens backing files); both daemons reopen the
node a job writes read-write for the job and (where QEMU does) back
read-only at its end.  Each script runs the same QMP commands on both; the
`ro` flags of every node (by image file) before, during and after the job,
the events, the final chain (qemu-img info --backing-chain), qemu-img
check and the data are compared or checked:

1. Intermediate commit of mid into base while a client writes to top and
   verifies: base holds the merge of base and mid, top names base.qcow2,
   base is read-only again after the job.
2. Active commit, job-complete after READY: base becomes the active layer
   and stays read-write (QEMU gives the target the source's mode).
3. Active commit cancelled after READY: base stays read-write (QEMU does
   not reopen it back), the chain and top's data are unchanged.
4. Stream into mid (read-only) from base: mid holds the merge of base and
   mid, has no backing file any more, and is read-only again.
5. The layers blockdev-added with read-only=true (their file nodes inline):
   an intermediate commit reopens them the same way.
6. A fourth layer over top, the chain opened from its header: the
   intermediate commit of mid rewrites read-only top's header.
7. An NBD base added read-only: an active commit reopens it read-write
   (and over a read-only export is refused with QEMU's text).
8. A mirror of a read-only source: the target is reopened read-only at
   the pivot, as QEMU does.
9. The layers' file nodes blockdev-added read-only by name: QEMU does
   not reopen those, so the commits and a stream into mid are refused
   alike ("Block node is read-only").
10. Readers holding base and mid (qemu-io -r: QEMU's image locks keep
   writers out): the commits and a stream into mid are refused with QSD's
   texts and events (a refused intermediate commit's job is created and
   ends at once, a refused stream makes none), nothing changes (the ro
   flags, the chain intact and readable), and once the readers are gone
   the same commit works.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, ChainWriter, backing_chain, check, check_clean, compare, export,  # noqa: E402
                       image_name, make_chain, merge, normalise, ok, open_chain, read_all, read_image, reply, run_both,
                       wait_job_end, wait_status, wait_until)
from backup_lib import Nbdkit  # noqa: E402
from test_commit import strip  # noqa: E402

SIZE = 64 * MiB
JOB_FILTERS = ('commit_top', 'mirror_top', 'copy-on-read')


def ro_flags(q):
    """Every node's (image file, driver, ro), sorted: implicit nodes have
    different names in the two daemons; QEMU's job filter nodes (which
    blockd does not have) are left out."""
    return sorted((image_name(n['file']), n['drv'], n['ro']) for n in q.cmd('query-named-block-nodes')['return']
                  if n['drv'] not in JOB_FILTERS)


def node_of(q, path):
    """The name of the format node of image `path`."""
    for n in q.cmd('query-named-block-nodes')['return']:
        if n['drv'] == 'qcow2' and image_name(n['file']) == os.path.basename(path):
            return n['node-name']
    raise AssertionError('no node for %s' % path)


def slow_start(q, cmd, args, job):
    """Starts a job at 1 byte/s (it copies at most one chunk before it waits),
    samples the ro flags while it runs, then lets it go at full speed."""
    ok(q.cmd(cmd, dict(args, **{'job-id': job, 'speed': 1})), cmd)
    events = wait_status(q, job, 'running')
    during = ro_flags(q)
    ok(q.cmd('block-job-set-speed', {'device': job, 'speed': 0}), 'block-job-set-speed')
    return events, during


def close_top(q, exports=('e-top',)):
    for e in exports:
        ok(q.cmd('block-export-del', {'id': e}), 'block-export-del')
        wait_until(q, lambda ev: ev['event'] == 'BLOCK_EXPORT_DELETED')
    ok(q.cmd('blockdev-del', {'node-name': 'top'}), 'blockdev-del top')


def intermediate(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain(q, c)
    export(q, d, 'top')
    before = ro_flags(q)
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    events, during = slow_start(q, 'block-commit', {'device': 'top', 'top': c.mid}, 'ic')
    events += wait_job_end(q, 'ic')
    after = ro_flags(q)
    w.stop()
    w.verify('the export after the intermediate commit')
    close_top(q)
    check(read_image(c.top) == bytes(w.image), 'top.qcow2 does not read what the export read')
    check(read_image(c.base) == bytes(merge(c, 'base', 'mid')), 'base.qcow2 is not the merge of base and mid')
    chain = strip(tmp, backing_chain(c.top))
    for path in (c.top, c.base):
        check_clean(path)
    return normalise(events), before, during, after, chain


def active(q, d, tmp, finish):
    c = make_chain(tmp, SIZE)
    open_chain(q, c)
    export(q, d, 'top')
    before = ro_flags(q)
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    ok(q.cmd('block-commit', {'job-id': 'ac', 'device': 'top'}), 'block-commit')
    events = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY')
    during = ro_flags(q)
    ok(q.cmd(*finish), finish[0])
    events += wait_job_end(q, 'ac')
    after = ro_flags(q)
    w.stop()
    w.verify('the export after the active commit')
    close_top(q)
    if finish[0] == 'job-complete':
        check(read_image(c.base) == bytes(w.image), 'base.qcow2 does not read what the export read')
    else:
        check(read_image(c.top) == bytes(w.image), 'top.qcow2 does not read what the export read')
    chain = strip(tmp, backing_chain(c.top))
    for path in (c.top, c.mid, c.base):
        check_clean(path)
    return normalise(events), before, during, after, chain


def active_complete(q, d, tmp):
    return active(q, d, tmp, ('job-complete', {'id': 'ac'}))


def active_cancel(q, d, tmp):
    return active(q, d, tmp, ('block-job-cancel', {'device': 'ac'}))


def stream(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain(q, c)
    export(q, d, 'top')
    before = ro_flags(q)
    w = ChainWriter(d, 'top', c.expected, rate=300)
    w.start()
    events, during = slow_start(q, 'block-stream', {'device': node_of(q, c.mid)}, 'st')
    events += wait_job_end(q, 'st')
    after = ro_flags(q)
    w.stop()
    w.verify('the export after the stream into mid')
    close_top(q)
    check(read_image(c.mid) == bytes(merge(c, 'base', 'mid')), 'mid.qcow2 is not the merge of base and mid')
    check(read_image(c.top) == bytes(w.image), 'top.qcow2 does not read what the export read')
    chain = strip(tmp, backing_chain(c.top))
    for path in (c.top, c.mid):
        check_clean(path)
    return normalise(events), before, during, after, chain


def added_read_only(q, d, tmp):
    """libvirt's way: each layer blockdev-added read-only, named as the next one's backing."""
    c = make_chain(tmp, SIZE)
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'base', 'read-only': True,
                              'file': {'driver': 'file', 'filename': c.base}}), 'blockdev-add base')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'mid', 'read-only': True, 'backing': 'base',
                              'file': {'driver': 'file', 'filename': c.mid}}), 'blockdev-add mid')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
                              'file': {'driver': 'file', 'filename': c.top}}), 'blockdev-add top')
    before = ro_flags(q)
    events, during = slow_start(q, 'block-commit', {'device': 'top', 'top-node': 'mid', 'base-node': 'base'}, 'rc')
    events += wait_job_end(q, 'rc')
    after = ro_flags(q)
    for node in ('top', 'mid', 'base'):
        ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
    check(read_image(c.base) == bytes(merge(c, 'base', 'mid')), 'base.qcow2 is not the merge of base and mid')
    check(read_image(c.top) == bytes(c.expected), 'top.qcow2 changed')
    chain = strip(tmp, backing_chain(c.top))
    check_clean(c.base)
    return normalise(events), before, during, after, chain


def read_only_overlay(q, d, tmp):
    """A fourth layer over top, the chain opened from its header: the
    commit of mid into base rewrites the header of top, which is read-only
    (QEMU reopens it for that moment)."""
    c = make_chain(tmp, SIZE)
    active = os.path.join(tmp, 'active.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'top.qcow2', '-F', 'qcow2', active, str(SIZE)],
                   check=True)
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'active',
                              'file': {'driver': 'file', 'filename': active}}), 'blockdev-add active')
    before = ro_flags(q)
    events, during = slow_start(q, 'block-commit', {'device': 'active', 'top': c.mid}, 'oc')
    events += wait_job_end(q, 'oc')
    after = ro_flags(q)
    ok(q.cmd('blockdev-del', {'node-name': 'active'}), 'blockdev-del active')
    check(read_image(active) == bytes(c.expected), 'active.qcow2 reads differently')
    check(read_image(c.base) == bytes(merge(c, 'base', 'mid')), 'base.qcow2 is not the merge of base and mid')
    for path in (c.top, c.base):
        check_clean(path)
    return normalise(events), before, during, after, strip(tmp, backing_chain(active))


def files_by_reference(q, d, tmp):
    """Layers whose file nodes were blockdev-added read-only by name: QEMU
    reopens only the children a node opened itself, so the format node
    cannot be written and every job into it is refused alike."""
    c = make_chain(tmp, SIZE)
    for n in ('base', 'mid'):
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': n + '-f', 'read-only': True,
                                  'filename': c.path[n]}), 'blockdev-add %s-f' % n)
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'base', 'read-only': True, 'file': 'base-f'}),
       'blockdev-add base')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'mid', 'read-only': True, 'backing': 'base',
                              'file': 'mid-f'}), 'blockdev-add mid')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top', 'backing': 'mid',
                              'file': {'driver': 'file', 'filename': c.top}}), 'blockdev-add top')
    before = ro_flags(q)
    answers = [reply(q.cmd('block-commit', {'job-id': 'x', 'device': 'top', 'top-node': 'mid', 'base-node': 'base'})),
               reply(q.cmd('block-commit', {'job-id': 'y', 'device': 'top', 'base-node': 'base'})),
               reply(q.cmd('block-stream', {'job-id': 'z', 'device': 'mid'}))]
    events = normalise(q.events)
    del q.events[:]
    check(ro_flags(q) == before, 'the refusals changed ro flags')
    return events, before, answers, q.cmd('query-block-jobs')['return']


def mirror_read_only_source(q, d, tmp):
    """A mirror of a read-only source: at the pivot the target takes the
    source's mode (QEMU's mirror_exit_common reopens it read-only)."""
    src, tgt = os.path.join(tmp, 'src.qcow2'), os.path.join(tmp, 'tgt.qcow2')
    for path in (src, tgt):
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', path, str(4 * MiB)], check=True)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x33 0 1M', src], check=True, stdout=subprocess.DEVNULL)
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'src', 'read-only': True,
                              'file': {'driver': 'file', 'filename': src}}), 'blockdev-add src')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'tgt',
                              'file': {'driver': 'file', 'filename': tgt}}), 'blockdev-add tgt')
    before = ro_flags(q)
    ok(q.cmd('blockdev-mirror', {'job-id': 'm', 'device': 'src', 'target': 'tgt', 'sync': 'full'}), 'blockdev-mirror')
    events = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY')
    during = ro_flags(q)
    ok(q.cmd('job-complete', {'id': 'm'}), 'job-complete')
    events += wait_job_end(q, 'm')
    after = ro_flags(q)
    for node in ('src', 'tgt'):
        ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
    check(read_image(tgt) == read_image(src), 'the target does not read as the source')
    check_clean(tgt)
    return normalise(events), before, during, after, strip(tmp, backing_chain(tgt))


def nbd_base(q, d, tmp):
    """An NBD base added read-only under a qcow2 overlay: an active commit
    reopens it read-write (QEMU's nbd_client_reopen_prepare); over a
    read-only export the commit is refused with QEMU's text."""
    top = os.path.join(tmp, 'top.qcow2')
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', top, str(4 * MiB)], check=True)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x22 1M 1M', top], check=True, stdout=subprocess.DEVNULL)
    with Nbdkit('-r', 'memory', str(4 * MiB)) as ro_server, Nbdkit('memory', str(4 * MiB)) as server:
        answers = []
        for name, srv in (('ro', ro_server), ('rw', server)):
            ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'nb-' + name, 'read-only': True,
                                      'server': {'type': 'unix', 'path': srv.sock}}), 'blockdev-add nb-' + name)
            ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'top-' + name, 'backing': 'nb-' + name,
                                      'file': {'driver': 'file', 'filename': top}}), 'blockdev-add top-' + name)
            answers.append(reply(q.cmd('block-commit', {'job-id': 'n' + name, 'device': 'top-' + name})))
            if name == 'ro':
                refused = normalise(q.events)
                del q.events[:]
                for node in ('top-ro', 'nb-ro'):
                    ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
        events = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_READY')
        during = ro_flags(q)
        ok(q.cmd('job-complete', {'id': 'nrw'}), 'job-complete')
        events += wait_job_end(q, 'nrw')
        after = ro_flags(q)
        for node in ('top-rw', 'nb-rw'):
            ok(q.cmd('blockdev-del', {'node-name': node}), 'blockdev-del ' + node)
        want = bytes(MiB) + b'\x22' * MiB + bytes(2 * MiB)
        check(read_all(server.sock, '', 4 * MiB) == want, 'the NBD base does not hold the merge')
    return answers, refused, normalise(events), during, after


class Reader:
    """qemu-io -r holding an image open (interactive, until stopped): QEMU's
    image locks say it reads the image and lets no one else write it."""

    def __init__(self, path):
        self.p = subprocess.Popen(['qemu-io', '-r', '-f', 'qcow2', path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # One read answered: the image is open and locked.
        self.p.stdin.write('read 0 512\n')
        self.p.stdin.flush()
        out = ''
        while 'read 512/512' not in out:
            line = self.p.stdout.readline()
            check(line != '', 'qemu-io exited: %s' % out)
            out += line

    def stop(self):
        self.p.stdin.close()
        self.p.wait()


def locked_base(q, d, tmp):
    c = make_chain(tmp, SIZE)
    open_chain(q, c)
    export(q, d, 'top')
    before = ro_flags(q)
    readers = [Reader(c.base), Reader(c.mid)]
    try:
        answers = [reply(q.cmd('block-commit', {'job-id': 'lc', 'device': 'top', 'top': c.mid})),
                   reply(q.cmd('block-commit', {'job-id': 'la', 'device': 'top'})),
                   reply(q.cmd('block-stream', {'job-id': 'ls', 'device': node_of(q, c.mid)}))]
        refused = ro_flags(q)
        jobs = q.cmd('query-block-jobs')['return']
        # Emitted before each reply: a refused job's whole life, if any.
        refusal_events = normalise(q.events)
        del q.events[:]
    finally:
        for r in readers:
            r.stop()
    sock = d.path('nbd.sock')
    check(read_all(sock, 'top', SIZE) == bytes(c.expected), 'the chain reads differently after the refusals')
    ok(q.cmd('block-commit', {'job-id': 'lc', 'device': 'top', 'top': c.mid}), 'block-commit without the reader')
    events = wait_job_end(q, 'lc')
    after = ro_flags(q)
    # The chain reads the same after the commit.  (Not blockdev-del top and
    # qemu-img on base: qemu-storage-daemon 7.2 keeps top busy after the
    # refused commits, "in use by block job: commit", and base.qcow2 does
    # not read as the merge while it is open there.)
    check(read_all(sock, 'top', SIZE) == bytes(c.expected), 'the chain reads differently after the commit')
    return answers, refusal_events, before, refused, jobs, normalise(events), after, strip(tmp, backing_chain(c.top))


def main():
    parts = ('events', 'ro before', 'ro during', 'ro after', 'final chain')
    # (image, driver) -> ro before, during and after the job, as QEMU has them.
    modes = {'intermediate commit': (('base.qcow2', 'qcow2'), (True, False, True)),
             'active commit, complete': (('base.qcow2', 'qcow2'), (True, False, False)),
             'active commit, cancel after READY': (('base.qcow2', 'qcow2'), (True, False, False)),
             'stream into mid': (('mid.qcow2', 'qcow2'), (True, False, True)),
             'mirror of a read-only source': (('tgt.qcow2', 'qcow2'), (False, False, True))}
    for name, script in (('intermediate commit', intermediate), ('active commit, complete', active_complete),
                         ('active commit, cancel after READY', active_cancel), ('stream into mid', stream),
                         ('commit of read-only blockdev-added layers', added_read_only),
                         ('commit under a read-only overlay', read_only_overlay),
                         ('mirror of a read-only source', mirror_read_only_source)):
        want, got = run_both(script)
        for i, what in enumerate(parts):
            compare('%s: %s' % (name, what), want[i], got[i])
        if name in modes:
            node, wanted = modes[name]
            seen = tuple([ro for (f, drv, ro) in got[i] if (f, drv) == node][0] for i in (1, 2, 3))
            check(seen == wanted, '%s: %s ro before/during/after %r, want %r' % (name, node[0], seen, wanted))
    want, got = run_both(nbd_base)
    for i, what in enumerate(('answers', 'events of the refusal', 'events', 'ro during', 'ro after')):
        compare('NBD base: ' + what, want[i], got[i])
    want, got = run_both(files_by_reference)
    for i, what in enumerate(('events', 'ro flags', 'answers', 'jobs')):
        compare('file nodes named read-only: ' + what, want[i], got[i])
    check(all(a[0] != 'ok' for a in got[2]), 'a job into a read-only file node started: %r' % (got[2],))
    want, got = run_both(locked_base)
    for i, what in enumerate(('answers', 'events of the refusals', 'ro before', 'ro after the refusals', 'jobs',
                              'events', 'ro after', 'final chain')):
        compare('base and mid held by readers: ' + what, want[i], got[i])
    check(got[3] == got[2], 'the refused reopens changed ro flags: %r -> %r' % (got[2], got[3]))
    check(got[4] == [], 'a refused job is left: %r' % got[4])


if __name__ == '__main__':
    main()
