"""Helpers for the QMP integration tests: start blockd or qemu-storage-daemon
with one or more QMP monitors and talk QMP to them.

    from qmp_lib import Daemon, blockd_cmd, qsd_cmd
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()              # connected, greeting read, capabilities negotiated
        q.cmd('query-version')   # the whole reply object
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lib import SKIP, check, fail, sanitizer_report, sigterm_and_wait, skip  # noqa: E402,F401  (re-exported)


def blockd_cmd():
    path = os.environ.get('BLOCKD')
    if not path:
        fail('BLOCKD must name the blockd binary')
    return [path]


def qsd_cmd():
    path = shutil.which('qemu-storage-daemon')
    if not path:
        skip('qemu-storage-daemon is not installed')
    return [path]


class Qmp:
    """One QMP connection."""

    def __init__(self, path, negotiate=True, timeout=20):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        # The socket file appears at bind(), a moment before listen().
        deadline = time.time() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except ConnectionRefusedError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)
        self.file = self.sock.makefile('rb')
        self.events = []
        self.greeting = self.recv()
        if negotiate:
            r = self.cmd('qmp_capabilities')
            # QEMU 7.2 can send its greeting twice when the client connects
            # while its monitor is still being set up (the chardev's open
            # event handled twice); blockd never may, so only QEMU's repeat
            # of the same greeting is skipped.
            if r == self.greeting and 'blockd' not in str(r['QMP']['version'].get('package', '')):
                r = self.reply()
            check(r == {'return': {}}, 'qmp_capabilities failed: %r' % r)

    def close(self):
        self.file.close()
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def recv(self):
        line = self.file.readline()
        if not line:
            raise EOFError('QMP connection closed')
        return json.loads(line)

    def reply(self):
        """The next non-event message; events are kept in self.events."""
        while True:
            msg = self.recv()
            if 'event' in msg:
                self.events.append(msg)
            else:
                return msg

    def raw(self, data):
        self.send_raw(data)
        return self.reply()

    def cmd(self, name, args=None, id=None):
        msg = {'execute': name}
        if args is not None:
            msg['arguments'] = args
        if id is not None:
            msg['id'] = id
        return self.raw(json.dumps(msg))

    def wait_event(self, name, timeout=10):
        deadline = time.time() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev['event'] == name:
                    return self.events.pop(i)
            if time.time() > deadline:
                fail('event %s did not arrive' % name)
            self.sock.settimeout(max(0.1, deadline - time.time()))
            try:
                self.events.append(self.recv())
            except socket.timeout:
                pass
            finally:
                self.sock.settimeout(20)


class Daemon:
    """A daemon with `monitors` QMP monitors on Unix sockets in a temporary directory."""

    def __init__(self, cmd, monitors=1, extra=()):
        self.tmp = tempfile.mkdtemp(prefix='blockd-qmp.')
        self.socks = [os.path.join(self.tmp, 'qmp%d.sock' % i) for i in range(monitors)]
        args = list(cmd)
        self.exe = shutil.which(args[0]) or args[0]
        for i, s in enumerate(self.socks):
            args += ['--chardev', 'socket,id=m%d,path=%s,server=on,wait=off' % (i, s),
                     '--monitor', 'chardev=m%d' % i]
        args += list(extra)
        self.stderr = open(os.path.join(self.tmp, 'stderr'), 'w+')
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.time() + 20
        while not all(os.path.exists(s) for s in self.socks):
            if self.proc.poll() is not None:
                fail('daemon exited at start-up: %s' % self.stderr_text())
            if time.time() > deadline:
                fail('monitor sockets did not appear')
            time.sleep(0.02)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def qmp(self, index=0, negotiate=True):
        return Qmp(self.socks[index], negotiate)

    def stderr_text(self):
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def wait(self, timeout=20):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail('daemon did not exit')

    def stop(self):
        if self.proc.poll() is None:
            try:
                sigterm_and_wait(self.proc, 20, self.exe)
            except subprocess.TimeoutExpired:
                fail('daemon did not exit')
        status = self.wait()
        report = sanitizer_report(self.stderr_text())
        check(not report, 'sanitizer report:\n' + report[:8000])
        return status

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is not None:
                # The test failed (often because the daemon died): show why.
                if isinstance(exc, EOFError):
                    # The monitor closed: the daemon may still be dying
                    # (an abort under a sanitizer takes a moment).
                    try:
                        self.proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        pass
                text = self.stderr_text()
                report = sanitizer_report(text)
                if report:
                    print('--- daemon sanitizer report ---\n' + report[:8000], file=sys.stderr)
                elif self.proc.poll() is not None:
                    # Died without a sanitizer report (a GLib assertion, a
                    # signal): its last words and how it ended.
                    print('--- daemon exited with status %s; its stderr ends ---\n%s'
                          % (self.proc.returncode, text[-4000:]), file=sys.stderr)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            self.stderr.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
