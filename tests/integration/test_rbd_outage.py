#!/usr/bin/python3
"""The cluster goes away mid-write and comes back (the OSD stopped with
SIGSTOP and continued with SIGCONT: a memstore OSD that is killed would
lose the data; see ceph_lib.pause_osd for how long a stop may last).  With rados_osd_op_timeout = 5 in the conf, writes through
the export fail with EIO within seconds instead of hanging, blockd stays up
(QMP answers) and names the image and the error on stderr; once the OSD is
back, writes succeed again and the image holds every acknowledged write
(a failed block holds the failed data or what it held before).  A backup
into RBD with on-target-error=stop pauses on the outage and, resumed after
the cluster is back, completes with a byte-identical copy."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, add_source, blockd_cmd, check, ok, read_all, summary, wait_job_end,  # noqa: E402
                        wait_until, write)
from ceph_lib import Cluster  # noqa: E402
from mirror_lib import Writer, matches  # noqa: E402

SIZE = 32 << 20


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            check(False, what)
        time.sleep(0.1)


def main():
    with Cluster() as c:
        c.rbd('create', 'rbd/img', '--size', '32M')
        c.rbd('create', 'rbd/backup', '--size', '32M')
        conf = c.conf_with('short-timeout.conf', rados_osd_op_timeout=5)
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('blockdev-add', c.node('img', 'img', conf=conf)), 'blockdev-add')
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e', 'node-name': 'img', 'name': 'img',
                                          'writable': True}), 'export')
            image = bytearray(SIZE)
            w = Writer(sock, 'img', image, rate=100, tolerate_errors=True)
            w.start()
            wait_for(lambda: w.count > 50, 10, 'no writes before the outage')
            c.pause_osd()
            t0 = time.monotonic()
            wait_for(lambda: w.failed, 20, 'writes did not fail during the outage')
            took = time.monotonic() - t0
            check(q.cmd('query-version').get('return'), 'QMP does not answer during the outage')
            check(set(w.errors) == {'EIO'}, 'errors %r' % w.errors)
            check('blockd: rbd rbd/img: write of 4096 bytes at' in d.stderr_text() and
                  'Connection timed out' in d.stderr_text(), 'stderr: %r' % d.stderr_text()[-500:])
            c.resume_osd()
            failed = len(w.failed)
            done = w.count
            wait_for(lambda: w.count > done + 100, 30, 'writes did not resume after the outage')
            check(len(w.failed) <= failed + 5, 'writes still failing after the outage')
            w.stop()
            print('writes failed %.1f s into the outage; %d of %d failed' % (took, len(w.failed), w.count))
            where = matches(read_all(sock, 'img'), image, w.maybe)
            check(where is None, 'after the outage the image differs at %r' % where)

            # A backup into RBD pauses on the outage and finishes after it.
            add_source(q, d, 'src', SIZE)
            data = os.urandom(SIZE)
            write(d, 'src', 0, data)
            ok(q.cmd('blockdev-add', c.node('tgt', 'backup', conf=conf)), 'target')
            q.events.clear()
            ok(q.cmd('blockdev-backup', {'job-id': 'b', 'device': 'src', 'target': 'tgt', 'sync': 'full',
                                         'on-target-error': 'stop', 'speed': 4 << 20}), 'blockdev-backup')
            time.sleep(1)
            c.pause_osd()
            evs = wait_until(q, lambda ev: ev['event'] == 'BLOCK_JOB_ERROR', timeout=30)
            err = evs[-1]['data']
            check(err['action'] == 'stop' and err['operation'] == 'write', 'BLOCK_JOB_ERROR %r' % err)
            c.resume_osd()  # the job pauses once its other requests are done
            wait_until(q, lambda ev: ev['event'] == 'JOB_STATUS_CHANGE' and ev['data']['status'] == 'paused')
            job = q.cmd('query-block-jobs')['return'][0]
            check(job['status'] == 'paused' and job['io-status'] == 'failed', 'job %r' % job)
            ok(q.cmd('block-job-set-speed', {'device': 'b', 'speed': 0}), 'set-speed')
            # Requests issued before the outage reach the OSD when it continues
            # and may delay the first retries past the 5 s timeout: a job that
            # pauses again is resumed again, as an operator would.
            evs = []
            for resumes in range(1, 6):
                time.sleep(1)
                ok(q.cmd('job-resume', {'id': 'b'}), 'job-resume')
                evs += wait_until(q, lambda ev: ev['event'] == 'JOB_STATUS_CHANGE' and
                                  ev['data']['status'] in ('paused', 'concluded'), timeout=120)
                if evs[-1]['data']['status'] == 'concluded':
                    break
            done = [e['data'] for e in evs if e['event'] == 'BLOCK_JOB_COMPLETED']
            check(done and 'error' not in done[0], 'backup after the outage: %r' % summary(evs))
            print('backup completed after %d job-resume' % resumes)
            wait_job_end(q, 'b')
            check(c.export('backup') == data, 'the backup differs from the source')
            q.close()
            check(d.stop() == 0, 'blockd exit status')
    print('rbd outage OK')


main()
