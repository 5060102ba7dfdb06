#!/usr/bin/python3
"""blockctl: tables by default, JSON with --json, QMP errors and a missing
daemon reported clearly with a non-zero exit status."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, skip

BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', ''), 'tools', 'blockctl')
if not os.path.exists(BLOCKCTL):
    skip('blockctl not built')


def ctl(sock, *args):
    return subprocess.run([BLOCKCTL, '-s', sock] + list(args), capture_output=True, text=True, timeout=30)


with Daemon(blockd_cmd()) as d:
    sock = d.socks[0]
    img = d.path('img')
    with open(img, 'wb') as f:
        f.truncate(1 << 20)
    r = ctl(sock, 'add-file', 'f0', img)
    check(r.returncode == 0, 'add-file: %r' % r.stderr)
    r = ctl(sock, 'nodes')
    lines = r.stdout.splitlines()
    check(lines[0].split()[:3] == ['NODE', 'DRIVER', 'SIZE'], 'nodes header: %r' % r.stdout)
    check(lines[1].split()[:3] == ['f0', 'file', '1048576'] and img in lines[1], 'nodes row: %r' % r.stdout)
    r = ctl(sock, 'qmp', '{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", "data": {"path": "%s"}}}}' % d.path('nbd.sock'))
    check(r.returncode == 0 and json.loads(r.stdout) == {}, 'qmp: %r' % (r.stdout + r.stderr))
    check(ctl(sock, 'export', 'f0', 'disk0').returncode == 0, 'export')
    r = ctl(sock, '--json', 'exports')
    check(json.loads(r.stdout) == [{'id': 'disk0', 'type': 'nbd', 'node-name': 'f0', 'shutting-down': False}],
          'exports --json: %r' % r.stdout)
    check(ctl(sock, 'unexport', 'disk0').returncode == 0, 'unexport')
    r = ctl(sock, 'unexport', 'disk0')
    check(r.returncode != 0 and "Export 'disk0' is not found" in r.stderr, 'unexport twice: %r' % r.stderr)
    check(ctl(sock, 'exports').stdout.splitlines()[1:] == [], 'exports after unexport')
    # Mistyped words and flags are usage errors (exit 2) that change nothing.
    for args, want in ((('export', 'f0', 'x', 'writeable'), "unexpected 'writeable'"),
                       (('export', 'f0', 'x', 'y', 'writable'), "unexpected '"),
                       (('add-file', 'f1', img, 'readonly'), "unexpected 'readonly'"),
                       (('backup', 'f0', '--to', 'n', '--sped', '1M'), "unknown or incomplete option '--sped'"),
                       (('backup', 'f0', '--to', 'n', '--speed', '10Q'), "bad --speed '10Q'"),
                       (('backup', 'f0'), 'NODE and --to are required'),
                       (('nodes', 'extra'), "unexpected 'extra'"),
                       (('job', 'pause'), 'job needs more arguments'),
                       (('frobnicate',), "unknown command 'frobnicate'")):
        r = ctl(sock, *args)
        check(r.returncode == 2 and want in r.stderr, '%r: %d %r' % (args, r.returncode, r.stderr))
    check(ctl(sock, 'exports').stdout.splitlines()[1:] == [], 'a usage error changed something')
    r = ctl(sock, 'backup', '--help')
    check(r.returncode == 0 and r.stdout.startswith('usage: blockctl backup NODE --to'), 'backup --help: %r' % r.stdout)
    # Size suffixes for --speed reach the job as bytes per second.
    big = d.path('big')
    with open(big, 'wb') as f:
        f.truncate(64 << 20)
    check(ctl(sock, 'add-file', 'f1', big, 'read-only').returncode == 0, 'add-file read-only')
    r = ctl(sock, 'qmp', 'blockdev-add', '{"driver": "null-co", "node-name": "sink", "size": %d}' % (64 << 20))
    check(r.returncode == 0, 'null target: %r' % r.stderr)
    r = ctl(sock, 'backup', 'f1', '--to', 'sink', '--speed', '10M', '--job', 'slow')
    check(r.returncode == 0, 'backup --speed 10M: %r' % r.stderr)
    jobs = json.loads(ctl(sock, '--json', 'jobs').stdout)
    check([(j['device'], j['speed']) for j in jobs] == [('slow', 10 << 20)], '--speed 10M: %r' % jobs)
    check(ctl(sock, 'job', 'cancel', 'slow').returncode == 0, 'cancel')
    check(d.stop() == 0, 'blockd exit status')

r = ctl('/nonexistent/blockd.sock', 'nodes')
check(r.returncode != 0 and 'cannot connect to /nonexistent/blockd.sock' in r.stderr, 'no daemon: %r' % r.stderr)
print('blockctl OK')
