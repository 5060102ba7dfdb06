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
    check(d.stop() == 0, 'blockd exit status')

r = ctl('/nonexistent/blockd.sock', 'nodes')
check(r.returncode != 0 and 'cannot connect to /nonexistent/blockd.sock' in r.stderr, 'no daemon: %r' % r.stderr)
print('blockctl OK')
