#!/usr/bin/python3
"""systemd readiness (NOTIFY_SOCKET, sd_notify's protocol): READY=1 arrives
once the command line's exports are connectable, from the process systemd
started (with MAINPID = the daemon when daemonized), to a path or an
abstract '@name' socket; STOPPING=1 on SIGTERM, also one sent right at
READY=1; no READY=1 when start-up fails; NOTIFY_SOCKET is not passed on to the daemon's children."""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import blockd_path, check, fail, sanitizer_report, sigterm_and_wait  # noqa: E402

SIZE = 64 << 20
# A plugin script run by the daemon: its size says whether the daemon's
# children see NOTIFY_SOCKET (2 MiB) or not (1 MiB).
PROBE = '''#!/bin/sh
case "$1" in
get_size) if [ -n "$NOTIFY_SOCKET" ]; then echo 2097152; else echo 1048576; fi ;;
pread) exit 1 ;;
*) exit 2 ;;
esac
'''


class Listener:
    """The service manager's end: an AF_UNIX datagram socket with SO_PASSCRED."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.address = address
        self.sock.bind(address)

    def recv(self, timeout):
        """(fields, sender pid) of the next message, or None after timeout s."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except (socket.timeout, BlockingIOError):
            return None
        pid = None
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack('iII', cdata[:12])[0]
        fields = dict(line.split('=', 1) for line in data.decode().split('\n') if line)
        return fields, pid

    def expect(self, key, timeout=30):
        msg = self.recv(timeout)
        check(msg is not None, 'no %s=1 within %d s' % (key, timeout))
        check(msg[0].get(key) == '1', 'want %s=1, got %r' % (key, msg[0]))
        return msg

    def close(self):
        self.sock.close()
        if not self.address.startswith('\0'):
            os.unlink(self.address)


def nbd_size(uri):
    r = subprocess.run(['nbdinfo', '--size', uri], capture_output=True, text=True)
    check(r.returncode == 0, 'nbdinfo %s failed right after READY=1: %s' % (uri, r.stderr))
    return int(r.stdout)


def gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def serve_args(tmp):
    sock = os.path.join(tmp, 'nbd.sock')
    return sock, ['--blockdev', 'driver=memory,node-name=m,size=64M',
                  '--blockdev', 'driver=nbdkit,node-name=probe,plugin=sh,script=' +
                  os.path.join(tmp, 'probe.sh'),
                  '--nbd-server', 'addr.type=unix,addr.path=' + sock,
                  '--export', 'type=nbd,id=e,node-name=m',
                  '--export', 'type=nbd,id=p,node-name=probe']


def foreground(tmp, notify_socket, bind_address):
    """Plain start: READY=1 from blockd itself, exports up; STOPPING=1 on SIGTERM."""
    lis = Listener(bind_address)
    sock, args = serve_args(tmp)
    err = open(os.path.join(tmp, 'fg.err'), 'w+')
    proc = subprocess.Popen([blockd_path()] + args, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err,
                            env=dict(os.environ, NOTIFY_SOCKET=notify_socket))
    try:
        fields, pid = lis.expect('READY')
        check(nbd_size('nbd+unix:///m?socket=' + sock) == SIZE, 'wrong export size')
        check(pid == proc.pid, 'READY=1 came from pid %s, not blockd %d' % (pid, proc.pid))
        check('MAINPID' not in fields, 'MAINPID sent without --daemonize: %r' % fields)
        check(nbd_size('nbd+unix:///probe?socket=' + sock) == 1 << 20,
              "the daemon's children inherit NOTIFY_SOCKET")
        check(lis.recv(0.2) is None, 'unexpected second message before SIGTERM')
        check(sigterm_and_wait(proc, 30) == 0, 'blockd exited %s after SIGTERM' % proc.returncode)
        fields, pid = lis.expect('STOPPING')
        check(pid == proc.pid, 'STOPPING=1 came from pid %s' % pid)
        err.seek(0)
        text = err.read()
        check(not sanitizer_report(text), 'sanitizer report:\n' + text[:8000])
        check('cannot notify' not in text, 'blockd could not notify: ' + text)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lis.close()


def sigterm_at_ready(tmp, rounds=20):
    """A SIGTERM sent the moment READY=1 arrives stops blockd cleanly (exit
    0), never by the signal's default action (the signal handlers are in
    place before READY=1 and the pidfile)."""
    sock = os.path.join(tmp, 'ready.sock')
    for i in range(rounds):
        path = os.path.join(tmp, 'notify-ready.sock')
        lis = Listener(path)
        proc = subprocess.Popen([blockd_path(), '--blockdev', 'driver=memory,node-name=m,size=1M',
                                 '--nbd-server', 'addr.type=unix,addr.path=' + sock,
                                 '--export', 'type=nbd,id=e,node-name=m'],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                                env=dict(os.environ, NOTIFY_SOCKET=path))
        try:
            lis.expect('READY')
            rc = sigterm_and_wait(proc, 30)
            check(rc == 0, 'round %d: blockd exited %s on a SIGTERM right after READY=1'
                  % (i, rc))
            check(not os.path.exists(sock), 'round %d: socket left behind' % i)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            lis.close()


def daemonized(tmp):
    """--daemonize: the parent (the process systemd watches) sends READY=1
    and MAINPID = the daemon, whose pid the pidfile holds."""
    path = os.path.join(tmp, 'notify-d.sock')
    lis = Listener(path)
    sock, args = serve_args(tmp)
    pidfile = os.path.join(tmp, 'd.pid')
    proc = subprocess.Popen([blockd_path(), '--daemonize', '--pidfile', pidfile] + args,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=dict(os.environ, NOTIFY_SOCKET=path))
    daemon = None
    try:
        fields, pid = lis.expect('READY')
        check(os.path.exists(pidfile), 'READY=1 before the pidfile was written')
        daemon = int(open(pidfile).read())
        check(fields.get('MAINPID') == str(daemon),
              'MAINPID %r, pidfile says %d' % (fields.get('MAINPID'), daemon))
        check(pid == proc.pid, 'READY=1 came from pid %s, not the started process %d'
              % (pid, proc.pid))
        check(nbd_size('nbd+unix:///m?socket=' + sock) == SIZE, 'wrong export size')
        _, stderr = proc.communicate(timeout=30)
        check(proc.returncode == 0, '--daemonize exited %d: %s' % (proc.returncode, stderr))
        os.kill(daemon, signal.SIGTERM)
        fields, pid = lis.expect('STOPPING')
        check(pid == daemon, 'STOPPING=1 came from pid %s, not the daemon %d' % (pid, daemon))
        check(gone_within(daemon, 30), 'daemon did not exit after SIGTERM')
        daemon = None
    finally:
        if daemon is not None:
            os.kill(daemon, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lis.close()


def failing(tmp, extra):
    """A start-up failure: non-zero exit and no READY=1."""
    path = os.path.join(tmp, 'notify-bad.sock')
    lis = Listener(path)
    try:
        r = subprocess.run([blockd_path()] + extra +
                           ['--blockdev', 'driver=file,node-name=f,filename=' +
                            os.path.join(tmp, 'missing.img'),
                            '--nbd-server', 'addr.type=unix,addr.path=' +
                            os.path.join(tmp, 'bad.sock'),
                            '--export', 'type=nbd,id=e,node-name=f'],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=dict(os.environ, NOTIFY_SOCKET=path), timeout=60)
        check(r.returncode != 0, 'blockd %s with a missing image exited 0' % extra)
        check('missing.img' in r.stderr, 'error not reported: ' + r.stderr)
        while True:
            msg = lis.recv(0.5)
            if msg is None:
                break
            check('READY' not in msg[0], 'READY=1 sent by a failed start-up %s: %r'
                  % (extra, msg[0]))
    finally:
        lis.close()


def main():
    if not shutil.which('nbdinfo'):
        print('SKIP: nbdinfo is not installed', file=sys.stderr)
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix='blockd-notify.')
    try:
        with open(os.path.join(tmp, 'probe.sh'), 'w') as f:
            f.write(PROBE)
        os.chmod(os.path.join(tmp, 'probe.sh'), 0o755)
        path = os.path.join(tmp, 'notify.sock')
        foreground(tmp, path, path)
        name = 'blockd-test-notify-%d' % os.getpid()
        foreground(tmp, '@' + name, '\0' + name)
        daemonized(tmp)
        sigterm_at_ready(tmp)
        failing(tmp, [])
        failing(tmp, ['--daemonize'])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('PASS')


if __name__ == '__main__':
    try:
        main()
    except subprocess.TimeoutExpired as e:
        fail('timed out: %s' % e)
