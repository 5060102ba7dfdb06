#!/usr/bin/python3
"""blockctl's job commands: `backup NODE --to nbd+unix://... --wait` copies
the node (and removes the target node it made), `--bitmap B --incremental`
copies only what changed, `jobs` lists a running job, `job pause|resume|
cancel` control it, and a failing backup exits non-zero with the error."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, add_source, blockd_cmd, check, ok, read_all,  # noqa: E402
                        wait_job_end, write)

SIZE = 8 << 20


def main():
    blockctl = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')
    with Daemon(blockd_cmd()) as d, Nbdkit('memory', str(SIZE)) as t, Nbdkit('memory', str(SIZE)) as t2:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        write(d, 'src', 0, b'\x5a' * SIZE)

        def run(*args):
            return subprocess.run([blockctl, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=60)

        ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b'}), 'bitmap')
        p = run('backup', 'src', '--to', 'nbd+unix:///?socket=' + t.sock, '--bitmap', 'b', '--wait')
        check(p.returncode == 0 and 'backup backup-src done' in p.stdout, 'backup: %r' % (p,))
        check(read_all(t.sock) == b'\x5a' * SIZE, 'full backup through blockctl differs')
        nodes = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']]
        check(nodes == ['src'], 'blockctl left nodes behind: %r' % nodes)

        write(d, 'src', 1 << 20, b'\x01' * 65536)
        p = run('backup', 'src', '--to', 'nbd+unix:///?socket=' + t2.sock, '--bitmap', 'b', '--incremental',
                '--wait', '--job', 'inc')
        check(p.returncode == 0 and 'backup inc done: 64.0 KiB' in p.stdout, 'incremental: %r' % (p,))
        inc = read_all(t2.sock)
        check(inc[1 << 20:(1 << 20) + 65536] == b'\x01' * 65536 and inc.count(0) == SIZE - 65536,
              'the increment holds more than the changed cluster')

        p = run('backup', 'src', '--to', 'nbd+unix:///?socket=' + t2.sock, '--speed', '1', '--job', 'slow')
        check(p.returncode == 0 and 'started job slow' in p.stdout, 'slow start: %r' % (p,))
        p = run('jobs')
        check(p.returncode == 0 and 'slow' in p.stdout and 'running' in p.stdout, 'jobs: %r' % (p,))
        check(run('job', 'pause', 'slow').returncode == 0, 'pause')
        q.events.clear()
        for _ in range(50):
            if q.cmd('query-block-jobs')['return'][0]['status'] == 'paused':
                break
        p = run('jobs')
        check('paused' in p.stdout, 'jobs after pause: %r' % p.stdout)
        p = run('job', 'pause', 'slow')
        check(p.returncode != 0 and 'Job is already paused' in p.stderr, 'second pause: %r' % (p,))
        check(run('job', 'resume', 'slow').returncode == 0, 'resume')
        check(run('job', 'cancel', 'slow').returncode == 0, 'cancel')
        evs = wait_job_end(q, 'slow')
        check(any(e['event'] == 'BLOCK_JOB_CANCELLED' for e in evs), 'not cancelled: %r' % evs)

        p = run('backup', 'src', '--to', 'nbd+unix:///?socket=' + d.path('nope.sock'), '--wait')
        check(p.returncode != 0 and 'blockdev-add' in p.stderr, 'bad target: %r' % (p,))
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('blockctl backup/jobs/job OK')


main()
