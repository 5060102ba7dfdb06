#!/usr/bin/python3
"""blockctl mirror: `mirror NODE --to nbd+unix://... --complete` copies the
node, pivots and exits 0 (the export then serves the target node, which has
the data); `--wait` alone returns once the mirror is READY and leaves it
running, and `job complete ID` finishes it; a mirror to a missing server fails."""
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

        def export_node():
            return q.cmd('query-block-exports')['return'][0]['node-name']

        p = run('mirror', 'src', '--to', 'nbd+unix:///?socket=' + t.sock, '--complete')
        check(p.returncode == 0 and 'mirror mirror-src completed' in p.stdout, 'mirror: %r' % (p,))
        check(export_node().startswith('mirror-target-'), 'export not switched: %r' % export_node())
        check(read_all(t.sock) == b'\x5a' * SIZE, 'target differs')
        check(q.cmd('query-jobs') == {'return': []}, 'blockctl left the job behind')
        first = export_node()

        # --wait: READY, then `job complete`.
        write(d, 'src', 4096, b'\x11' * 4096)  # now lands on the first target
        p = run('mirror', first, '--to', 'nbd+unix:///?socket=' + t2.sock, '--wait', '--job', 'again',
                '--write-blocking')
        check(p.returncode == 0 and 'mirror again ready' in p.stdout, 'mirror --wait: %r' % (p,))
        check(q.cmd('query-block-jobs')['return'][0]['status'] == 'ready', 'not left READY')
        q.events.clear()
        check(run('job', 'complete', 'again').returncode == 0, 'job complete')
        wait_job_end(q, 'again')
        check(export_node() != first and export_node().startswith('mirror-target-'), 'second pivot')
        data = read_all(t2.sock)
        check(data[4096:8192] == b'\x11' * 4096 and data[:4096] == b'\x5a' * 4096, 'second target differs')

        p = run('mirror', 'src', '--to', 'nbd+unix:///?socket=' + d.path('none.sock'), '--complete')
        check(p.returncode != 0 and 'Failed to connect' in p.stderr, 'missing target: %r' % (p,))
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('blockctl mirror OK')


main()
