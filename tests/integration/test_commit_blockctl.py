#!/usr/bin/python3
"""blockctl commit on base <- mid <- top (named nodes, top exported):
- `commit top --top mid --wait` merges mid into base and exits 0 (top's
  chain is then top <- base, qemu-img agrees, the export reads the same);
- `commit top --wait --no-complete` returns once the active commit is
  ready and leaves it running; `job complete` then moves the export to base;
- `commit top --top mid` of a layer under a commit, a bad --top and a
  misuse of --no-complete fail with the daemon's or blockctl's message and
  change nothing;
- SIGINT while `--wait` follows a commit held by a speed limit cancels it:
  exit status 130, no job left, the chain as it was.
"""
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, Daemon, backing_chain, blockd_cmd, check, export, fail, make_chain,  # noqa: E402
                       open_chain_named, read_all, wait_job_end)

SIZE = 64 * MiB


def main():
    blockctl = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')
    with tempfile.TemporaryDirectory(prefix='commit-blockctl.') as tmp, Daemon(blockd_cmd()) as d:
        c = make_chain(tmp, SIZE)
        q = d.qmp()
        open_chain_named(q, c)
        sock = export(q, d, 'top')

        def run(*args):
            return subprocess.run([blockctl, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=60)

        def export_node():
            return q.cmd('query-block-exports')['return'][0]['node-name']

        # Refusals change nothing.
        p = run('commit', 'top', '--top', 'nosuch', '--wait')
        check(p.returncode == 1 and "Cannot find device='' nor node-name='nosuch'" in p.stderr, 'bad --top: %r' % p)
        p = run('commit', 'top', '--top', 'mid', '--no-complete')
        check(p.returncode == 2 and '--no-complete is for an active commit' in p.stderr, '--no-complete: %r' % p)

        # SIGINT while waiting cancels; the chain stays.
        proc = subprocess.Popen([blockctl, '-s', d.socks[0], 'commit', 'top', '--top', 'mid', '--speed', '1',
                                 '--wait'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The job exists once the command was accepted.
        while not q.cmd('query-block-jobs')['return']:
            if proc.poll() is not None:
                fail('blockctl ended early: %r' % (proc.communicate(),))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        check(proc.returncode == 130 and 'cancelled' in err, 'SIGINT: %d %r %r' % (proc.returncode, out, err))
        check(q.cmd('query-jobs') == {'return': []}, 'blockctl left the cancelled job behind')
        check([x[:3] for x in backing_chain(c.top)] ==
              [(c.top, 'qcow2', 'mid.qcow2'), (c.mid, 'qcow2', 'base.qcow2'), (c.base, 'qcow2', None)],
              'the chain changed after the cancel: %r' % backing_chain(c.top))

        # Intermediate commit.
        p = run('commit', 'top', '--top', 'mid', '--base', 'base', '--backing-file', 'base.qcow2', '--wait')
        check(p.returncode == 0 and 'the layers from mid down are merged into the base' in p.stdout,
              'intermediate: %r' % p)
        check([x[:3] for x in backing_chain(c.top)] == [(c.top, 'qcow2', 'base.qcow2'), (c.base, 'qcow2', None)],
              'chain after the intermediate commit: %r' % backing_chain(c.top))
        check(read_all(sock, 'top', SIZE) == bytes(c.expected), 'the export reads differently')
        check(q.cmd('query-jobs') == {'return': []}, 'blockctl left the job behind')

        # Active commit: --no-complete stops at ready, `job complete` switches.
        p = run('commit', 'top', '--wait', '--no-complete', '--job', 'ac')
        check(p.returncode == 0 and 'commit ac ready' in p.stdout, 'active --no-complete: %r' % p)
        check(q.cmd('query-block-jobs')['return'][0]['status'] == 'ready', 'not left ready')
        check(export_node() == 'top', 'switched before job complete')
        q.events.clear()
        check(run('job', 'complete', 'ac').returncode == 0, 'job complete')
        wait_job_end(q, 'ac')
        check(export_node() == 'base', 'export not on base: %r' % export_node())
        check(read_all(sock, 'top', SIZE) == bytes(c.expected), 'the export reads differently on base')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('blockctl commit OK')


main()
