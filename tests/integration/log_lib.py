"""Capturing blockd's syslog and journal output without syslogd or journald.

A test calls enter_private_namespace() first: the script runs again in a
private mount namespace (unshare -m, needs root) with a fresh /dev (a tmpfs
with the usual device nodes) and a tmpfs on /run/systemd, so that it can
bind its own sockets at /dev/log (syslog(3)), /run/systemd/journal/socket
(the journal's native protocol) and /run/systemd/journal/stdout (what a
service's stderr is connected to) without touching the host.  Where that
cannot be done the test is skipped (77) and says why.
"""
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

from lib import skip

MARK = 'BLOCKD_TEST_PRIVATE_NS'
DEVICES = {'null': (1, 3), 'zero': (1, 5), 'full': (1, 7), 'random': (1, 8), 'urandom': (1, 9), 'tty': (5, 0)}


def _mount(*args):
    r = subprocess.run(['mount'] + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        skip('mount %s failed in a private namespace: %s' % (' '.join(args), r.stderr.strip()))


def _fresh_dev():
    _mount('-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', '/dev')
    for name, (major, minor) in DEVICES.items():
        os.mknod('/dev/' + name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod('/dev/' + name, 0o666)
    for i, name in enumerate(['stdin', 'stdout', 'stderr']):
        os.symlink('/proc/self/fd/%d' % i, '/dev/' + name)
    os.symlink('/proc/self/fd', '/dev/fd')
    os.mkdir('/dev/shm')
    _mount('-t', 'tmpfs', 'tmpfs', '/dev/shm')


def enter_private_namespace():
    """Re-runs the calling script in a private mount namespace (once)."""
    if os.environ.get(MARK) != '1':
        if os.geteuid() != 0:
            skip('faking /dev/log and the journal socket needs root (a private mount namespace)')
        if not shutil.which('unshare'):
            skip('unshare(1) is not installed')
        env = dict(os.environ, **{MARK: '1'})
        try:
            r = subprocess.run(['unshare', '-m', '--propagation', 'private', sys.executable] + sys.argv,
                               env=env)
        except OSError as e:
            skip('cannot run unshare: %s' % e)
        sys.exit(r.returncode)
    _fresh_dev()
    _mount('-t', 'tmpfs', 'tmpfs', '/run/systemd')
    os.mkdir('/run/systemd/journal')


def datagram_sink(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s


def drain(sock, timeout=0.3):
    """Every datagram that arrives until none came for `timeout` seconds."""
    out = []
    sock.settimeout(timeout)
    while True:
        try:
            out.append(sock.recv(1 << 20))
        except socket.timeout:
            return out


def wait_for(sock, pred, timeout=20):
    """Datagrams received until one satisfies pred (all of them), or fails."""
    got = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(1 << 20))
        except socket.timeout:
            continue
        if pred(got[-1]):
            return got
    return None


def parse_journal(data):
    """A native journal protocol datagram as {FIELD: value}."""
    fields = {}
    i = 0
    while i < len(data):
        nl = data.index(b'\n', i)
        line = data[i:nl]
        if b'=' in line:
            k, v = line.split(b'=', 1)
            i = nl + 1
        else:   # KEY\n <64-bit LE length> value \n
            k = line
            n = int.from_bytes(data[nl + 1:nl + 9], 'little')
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode('utf-8', 'replace')
    return fields
