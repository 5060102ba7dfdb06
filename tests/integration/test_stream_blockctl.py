#!/usr/bin/python3
"""blockctl stream and pull on a three-image chain opened from its headers:
`stream top --base ... --wait` pulls mid in and reports the new backing node
(the chain then has two images and reads the same); `pull top --length 1M`
prints `cursor N of END` and the next run goes on from --cursor; `pull
--all` finishes and says so (no backing file left, exactly one completion
event); refusals: --backing-file without --base is a usage error (exit 2,
nothing changed), an unknown node fails with the daemon's message (exit 1)."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chain_lib import (MiB, Daemon, backing_chain, blockd_cmd, check, export, make_chain, open_chain,  # noqa: E402
                       qmp_chain, read_all)

SIZE = 16 * MiB


def main():
    blockctl = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')
    with tempfile.TemporaryDirectory() as tmp, Daemon(blockd_cmd()) as d:
        c = make_chain(tmp, SIZE)
        q = d.qmp()
        open_chain(q, c)
        export(q, d, 'top')

        def run(*args):
            return subprocess.run([blockctl, '-s', d.socks[0]] + list(args), capture_output=True, text=True,
                                  timeout=120)

        p = run('stream', 'top', '--backing-file', 'x')
        check(p.returncode == 2 and '--base' in p.stderr, 'usage error: %r' % (p,))
        p = run('stream', 'nope', '--wait')
        check(p.returncode == 1 and "Cannot find device='nope' nor node-name='nope'" in p.stderr, 'nope: %r' % (p,))
        check(len(qmp_chain(q, 'top')) == 3, 'a refused command changed the chain')

        base = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']
                if n['image']['filename'] == c.base and n['drv'] == 'qcow2'][0]
        p = run('stream', 'top', '--base', base, '--wait')
        check(p.returncode == 0 and re.search(r'stream stream-top completed in [0-9.]+ s: top now has %s as its '
                                              r'backing node' % re.escape(base), p.stdout), 'stream: %r' % (p,))
        check(len(qmp_chain(q, 'top')) == 2, 'stream --base: chain %r' % qmp_chain(q, 'top'))
        # mid, opened from top's header, is closed; base, opened by mid, stays (top's now).
        files = sorted(n['image']['filename'] for n in q.cmd('query-named-block-nodes')['return'])
        check(files == sorted([c.top, c.top, c.base, c.base]), 'nodes after stream --base: %r' % files)
        check(backing_chain(c.top)[1][0] == c.base, 'qemu-img info: %r' % backing_chain(c.top))
        check(q.cmd('query-jobs') == {'return': []}, 'blockctl left the job behind')
        check(read_all(d.path('nbd.sock'), 'top', SIZE) == bytes(c.expected), 'data after stream')

        p = run('pull', 'top', '--length', '1M')
        m = re.fullmatch(r'cursor (\d+) of %d\n' % SIZE, p.stdout)
        check(p.returncode == 0 and m and 0 < int(m.group(1)) < SIZE, 'pull: %r' % (p,))
        p = run('pull', 'top', '--cursor', m.group(1), '--length', '1M')
        m2 = re.fullmatch(r'cursor (\d+) of %d\n' % SIZE, p.stdout)
        check(p.returncode == 0 and m2 and int(m2.group(1)) > int(m.group(1)), 'pull --cursor: %r' % (p,))
        q.events.clear()
        p = run('pull', 'top', '--cursor', m2.group(1), '--all')
        check(p.returncode == 0 and p.stdout == 'cursor %d of %d: pull complete, top no longer has a backing file\n'
              % (SIZE, SIZE), 'pull --all: %r' % (p,))
        check(len(qmp_chain(q, 'top')) == 1 and backing_chain(c.top) == [(c.top, 'qcow2', None, None)],
              'pull --all left a backing file')
        names = sorted(n['node-name'] for n in q.cmd('query-named-block-nodes')['return'])
        check(names == ['top', 'top-file'], 'nodes after pull --all: %r' % names)
        done = [e for e in q.events if e['event'] == 'BLOCK_JOB_COMPLETED']
        check(len(done) == 1 and done[0]['data']['type'] == 'stream', 'completion events: %r' % done)
        check(read_all(d.path('nbd.sock'), 'top', SIZE) == bytes(c.expected), 'data after pull')
        q.close()
        check(d.stop() == 0, 'blockd exit status')
    print('blockctl stream and pull: chain 3 -> 2 -> 1 images, data intact')


main()
