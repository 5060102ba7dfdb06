#!/usr/bin/python3
"""docs/backup.md's blockctl routine runs verbatim: its `$ ` lines run in
bash (with /tmp/demo moved to a temporary directory), each succeeds, the
output lines the page shows appear (timings aside), and the restored image
equals the disk."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import check, fail, skip  # noqa: E402

SOURCE_DIR = os.environ.get('SOURCE_DIR', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
BUILD_DIR = os.environ.get('BUILD_DIR', 'build')
MARK = '`blockctl-doc` runs these lines'


def example():
    """The commands and the output lines of the example block."""
    with open(os.path.join(SOURCE_DIR, 'docs', 'backup.md')) as f:
        lines = f.read().split('\n')
    start = next(i for i, line in enumerate(lines) if MARK in line)
    # The ```console block after the mark (and its doc-test marker).
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith('```console'))
    block = []
    for line in lines[first + 1:]:
        if line.startswith('```'):
            break
        block.append(line)
    commands, outputs = [], []
    for line in block:
        if line.startswith('$ '):
            commands.append(line[2:])
        elif commands and commands[-1].endswith('\\'):
            commands[-1] += '\n' + line
        elif line.strip():
            outputs.append(line)
    return commands, outputs


def normal(line):
    """Timings and rates vary: `0.20 s`, `(316.1 MiB/s)` become placeholders; runs of spaces one."""
    line = re.sub(r'\d+\.\d+ s\b', 'T s', line)
    line = re.sub(r'\(\d+\.\d+ \w+/s\)', '(R)', line)
    return re.sub(' +', ' ', line.strip())


def main():
    for tool in ('nbdsh', 'truncate'):
        if not shutil.which(tool, path='/usr/bin:/bin'):
            skip(tool + ' is not installed')
    commands, outputs = example()
    check(len(commands) >= 8 and outputs, 'no example found in docs/backup.md')
    tmp = tempfile.mkdtemp(prefix='blockctl-doc.')
    demo = os.path.join(tmp, 'demo')
    bindir = os.path.join(tmp, 'bin')
    os.mkdir(bindir)
    os.symlink(os.path.abspath(os.environ['BLOCKD']), os.path.join(bindir, 'blockd'))
    os.symlink(os.path.abspath(os.path.join(BUILD_DIR, 'tools', 'blockctl')), os.path.join(bindir, 'blockctl'))
    script = 'set -e\n' + '\n'.join(c.replace('/tmp/demo', demo) for c in commands) + '\n'
    env = dict(os.environ, PATH=bindir + ':/usr/bin:/bin')
    env.pop('BLOCKCTL_SOCKET', None)
    try:
        r = subprocess.run(['bash', '-c', script], capture_output=True, text=True, env=env, timeout=120, cwd=tmp)
        check(r.returncode == 0, 'the example failed (%d):\n%s\n%s' % (r.returncode, r.stdout, r.stderr))
        got = [normal(line) for line in r.stdout.replace(demo, '/tmp/demo').split('\n')]
        pos = 0
        for want in map(normal, outputs):
            while pos < len(got) and got[pos] != want:
                pos += 1
            if pos == len(got):
                fail('the page shows %r, the run did not print it (in order):\n%s' % (want, r.stdout))
        with open(os.path.join(demo, 'restored.img'), 'rb') as a, open(os.path.join(demo, 'disk0.img'), 'rb') as b:
            check(a.read() == b.read(), 'the restored image differs from the disk')
    finally:
        pidfile = os.path.join(demo, 'blockd.pid')
        try:
            with open(pidfile) as f:
                pid = int(f.read())
            # Only if `quit` was not reached, and only that blockd.
            if os.path.realpath('/proc/%d/exe' % pid) == os.path.realpath(os.environ['BLOCKD']):
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    print('docs/backup.md blockctl example OK')


main()
