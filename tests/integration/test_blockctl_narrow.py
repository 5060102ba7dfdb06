#!/usr/bin/python3
"""blockctl's progress bar fits the terminal: `backup --wait` in a pty 40
columns wide never writes a line (between carriage returns and newlines)
longer than 40 columns and shows a bar; 12 columns give the percentage
alone; a pty that reports no width falls back to $COLUMNS."""
import errno
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, fail, ok  # noqa: E402

SIZE = 24 << 20
BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')


def run_in_pty(args, columns, env=None):
    """Everything blockctl writes to its terminal (stdout and stderr), and its exit status."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack('HHHH', 24, columns, 0, 0))
    p = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out = b''
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError as e:
            if e.errno != errno.EIO:   # EIO: the last holder of the slave side exited
                raise
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=60), out.decode()


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('blockdev-add', {'driver': 'memory', 'node-name': 'src', 'size': SIZE}), 'source')
        ok(q.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'sink', 'size': SIZE}), 'target')

        def backup(columns, job, env=None):
            # 6 chunks of 4 MiB at 8 MiB/s: about 3 s of redraws.
            status, text = run_in_pty([BLOCKCTL, '-s', d.socks[0], 'backup', 'src', '--to', 'sink', '--wait',
                                       '--speed', '8M', '--job', job], columns, env)
            check(status == 0, 'backup in a pty of %d columns: %d %r' % (columns, status, text))
            segments = [s for s in re.split('[\r\n]', text) if s.strip()]
            limit = columns or int(env['COLUMNS'])
            for s in segments:
                if len(s) > limit:
                    fail('a line of %d characters in %d columns: %r' % (len(s), limit, s))
            check(('backup %s done' % job) in ' '.join(segments), 'no summary: %r' % text)
            return [s for s in segments if '%' in s]

        progress = backup(40, 'wide')
        check(len(progress) >= 2 and all(s.startswith('[') for s in progress), 'no bar in 40 columns: %r' % progress)
        check(re.match(r'\[#{10,}\] 100\.0% ', progress[-1]), 'the bar does not end full: %r' % progress[-1])
        progress = backup(12, 'narrow')
        check(progress and all(re.fullmatch(r' *\d+\.\d% *', s) for s in progress),
              'not the percentage alone in 12 columns: %r' % progress)
        env = dict(os.environ, COLUMNS='30')
        progress = backup(0, 'env', env)
        check(progress and progress[-1].startswith('[') and max(len(s) for s in progress) > 12,
              'COLUMNS=30 not honoured: %r' % progress)
        q.close()
        if d.stop() != 0:
            fail('daemon exit status')
    print('blockctl narrow terminal OK')


main()
