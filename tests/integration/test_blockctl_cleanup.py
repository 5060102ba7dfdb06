#!/usr/bin/python3
"""blockctl cleans up after itself: a backup whose target fails (nbdkit's
error filter) or goes away (killed), and a backup or mirror interrupted with
SIGINT, leave no job and no target node behind, exit 1 (130 for SIGINT), and
the bitmap still covers every change, so the next backup with the same job
ID works and copies them; a failed first full backup takes its bitmap away.
After blockctl is SIGKILLed mid-way, the next run dismisses the job it left
and, since that full backup was never confirmed, starts over with a full one."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_source, blockd_cmd, check, dirty_extents, fail, ok,  # noqa: E402
                        read_all, uncovered, write)

SIZE = 8 << 20
MIB = 1 << 20
BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')


def main():
    with Daemon(blockd_cmd()) as d, Nbdkit('memory', str(SIZE)) as good, \
            Nbdkit('memory', str(SIZE), 'error-rate=100%', 'error-file=' + os.path.join(d.tmp, 'fail'),
                   filters=['error']) as bad:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        write(d, 'src', 0, b'\x5a' * SIZE)
        open(os.path.join(d.tmp, 'fail'), 'w').close()   # bad fails every request from now on

        def ctl(*args):
            return subprocess.run([BLOCKCTL, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=120)

        def start(*args):
            return subprocess.Popen([BLOCKCTL, '-s', d.socks[0]] + list(args), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        def to(server):
            return 'nbd+unix:///?socket=' + server.sock

        def clean(what):
            nodes = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']]
            check(nodes == ['src'], '%s: nodes left: %r' % (what, nodes))
            check(q.cmd('query-block-jobs')['return'] == [] and q.cmd('query-jobs')['return'] == [],
                  '%s: jobs left: %r' % (what, q.cmd('query-jobs')))

        def bitmap_names():
            src = [n for n in q.cmd('query-named-block-nodes')['return'] if n['node-name'] == 'src'][0]
            return sorted(b['name'] for b in src.get('dirty-bitmaps', []))

        def wait_running(job, proc):
            deadline = time.time() + 30
            while True:
                jobs = [j for j in q.cmd('query-block-jobs')['return'] if j['device'] == job]
                if jobs and jobs[0]['status'] == 'running':
                    return
                if proc.poll() is not None:
                    fail('blockctl ended early: %r' % (proc.communicate(),))
                check(time.time() < deadline, 'job %s did not start' % job)
                time.sleep(0.05)

        # A first full backup that fails takes its new bitmap (and marker) away again.
        r = ctl('backup', 'src', '--incremental', '--bitmap', 'c', '--to', to(bad))
        check(r.returncode == 1 and 'failed: Input/output error' in r.stderr and
              'the next --incremental backup is a full one' in r.stderr, 'failing full: %r' % (r,))
        clean('failed full backup')
        check(bitmap_names() == [], 'bitmaps after a failed full backup: %r' % bitmap_names())

        r = ctl('backup', 'src', '--incremental', '--to', to(good), '--job', 'j')
        check(r.returncode == 0 and 'full, bitmap backup added' in r.stdout, 'full: %r' % (r,))
        check(bitmap_names() == ['backup'], 'bitmaps after the full backup: %r' % bitmap_names())

        # An incremental backup to a failing target.
        changes = [(1 * MIB, 65536), (4 * MIB + 4096, 4096)]
        for off, n in changes:
            write(d, 'src', off, b'\x01' * n)
        r = ctl('backup', 'src', '--incremental', '--to', to(bad), '--job', 'j')
        check(r.returncode == 1 and 'backup j failed: Input/output error' in r.stderr, 'failing target: %r' % (r,))
        clean('failed incremental backup')
        check(uncovered(dirty_extents(q, d, 'src', 'backup', SIZE), changes) == [], 'bitmap lost changes (failure)')

        # A target that goes away mid-way.  More than one 4 MiB chunk is dirty:
        # the first goes at once, the next waits for --speed's budget.
        write(d, 'src', 2 * MIB, b'\x02' * (6 * MIB))
        changes.append((2 * MIB, 6 * MIB))
        with Nbdkit('memory', str(SIZE)) as doomed:
            p = start('backup', 'src', '--incremental', '--to', to(doomed), '--job', 'j', '--speed', '1M')
            wait_running('j', p)
            doomed.kill()
            out, err = p.communicate(timeout=60)
            check(p.returncode == 1 and 'backup j failed' in err, 'killed target: %r' % ((p.returncode, out, err),))
        clean('backup to a killed target')
        check(uncovered(dirty_extents(q, d, 'src', 'backup', SIZE), changes) == [], 'bitmap lost changes (kill)')

        # SIGINT while a slow incremental backup runs.
        p = start('backup', 'src', '--incremental', '--to', to(good), '--job', 'j', '--speed', '64k')
        wait_running('j', p)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        check(p.returncode == 130 and 'backup j cancelled' in err, 'SIGINT: %r' % ((p.returncode, out, err),))
        clean('interrupted backup')
        check(uncovered(dirty_extents(q, d, 'src', 'backup', SIZE), changes) == [], 'bitmap lost changes (SIGINT)')

        # The next backup with the same job ID copies every change.
        with Nbdkit('memory', str(SIZE)) as t:
            r = ctl('backup', 'src', '--incremental', '--to', to(t), '--job', 'j', '--json')
            check(r.returncode == 0, 'backup after the failures: %r' % (r,))
            result = json.loads(r.stdout)
            check(result['mode'] == 'incremental' and result['bytes'] == 65536 + 6 * MIB,
                  'backup after the failures: %r' % result)
            data = read_all(t.sock)
            for off, n in changes:
                check(data[off:off + n] == read_all(d.path('nbd.sock'), 'src')[off:off + n],
                      'the increment misses the change at %d' % off)
        clean('backup after the failures')

        # SIGINT while a mirror is still copying.
        with Nbdkit('memory', str(SIZE)) as t:
            p = start('mirror', 'src', '--to', to(t), '--job', 'm', '--speed', '64k', '--complete')
            wait_running('m', p)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=60)
            check(p.returncode == 130 and 'mirror m cancelled' in err, 'mirror SIGINT: %r' % ((p.returncode, out, err),))
        clean('interrupted mirror')
        r = ctl('mirror', 'src', '--to', to(bad), '--job', 'm', '--complete')
        check(r.returncode == 1 and 'mirror m failed' in r.stderr, 'failing mirror: %r' % (r,))
        clean('failed mirror')

        # SIGKILL: blockctl cannot clean up.  The next run dismisses the job it
        # left and starts the chain again, as the full backup was not confirmed.
        p = start('backup', 'src', '--incremental', '--bitmap', 'k', '--to', to(good), '--job', 'k', '--speed', '64k')
        wait_running('k', p)
        p.kill()
        p.communicate()
        ok(q.cmd('block-job-set-speed', {'device': 'k', 'speed': 0}), 'set-speed')
        deadline = time.time() + 30
        while q.cmd('query-jobs')['return'][0]['status'] != 'concluded':
            check(time.time() < deadline, 'the orphaned job did not conclude')
            time.sleep(0.05)
        check(bitmap_names() == ['backup', 'k', 'k~unfinished'], 'bitmaps after SIGKILL: %r' % bitmap_names())
        orphans = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return'] if n['node-name'] != 'src']
        r = ctl('backup', 'src', '--incremental', '--bitmap', 'k', '--to', to(good), '--job', 'k')
        check(r.returncode == 0 and 'dismissing job k' in r.stderr and 'did not finish' in r.stderr and
              'full, bitmap k added' in r.stdout, 'run after SIGKILL: %r' % (r,))
        # The target node a killed blockctl added is not its to remove.
        check(len(orphans) == 1, 'orphaned nodes: %r' % orphans)
        ok(q.cmd('blockdev-del', {'node-name': orphans[0]}), 'removing the orphaned target node')
        check(bitmap_names() == ['backup', 'k'], 'bitmaps after the new full backup: %r' % bitmap_names())
        clean('after SIGKILL')
        q.close()
        if d.stop() != 0:
            fail('daemon exit status')
    print('blockctl cleanup OK')


main()
