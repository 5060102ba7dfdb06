"""Shared helpers for blockd's Python integration tests.

    from lib import Blockd, skip, fail, errno_of
    with Blockd('--blockdev', 'driver=memory,node-name=m,size=64M',
                '--export', 'type=nbd,id=e,node-name=m,writable=on') as d:
        h = d.connect()          # a connected nbd.NBD handle
        ...
    # leaving the block sends SIGTERM and asserts exit status 0

Blockd adds `--nbd-server addr.type=unix,addr.path=SOCK` unless the arguments
name one, and `--pidfile`; it waits for the pidfile (exports ready).  The
temporary directory and a still-running daemon are cleaned up on any exit.
"""

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77


def fail(msg):
    print('FAIL: ' + msg, file=sys.stderr)
    sys.exit(1)


def skip(msg):
    print('SKIP: ' + msg, file=sys.stderr)
    sys.exit(SKIP)


def check(cond, msg):
    if not cond:
        fail(msg)


# The first line of a sanitizer report.  ASan/UBSan abort and the TSan build
# (halt_on_error=1) exits 66, so the exit status usually tells already; the
# helpers also look for these so a report is never missed (e.g. in a daemon
# that was failing anyway).
SANITIZER_REPORTS = ('ERROR: AddressSanitizer', 'WARNING: ThreadSanitizer')


_TSAN = {}


def is_tsan_build(path):
    """Whether the executable at `path` is a ThreadSanitizer build."""
    if path not in _TSAN:
        try:
            with open(path, 'rb') as f:
                _TSAN[path] = b'__tsan_init' in f.read()
        except OSError:
            _TSAN[path] = False
    return _TSAN[path]


def sigterm_and_wait(proc, timeout=30, path=None):
    """Sends SIGTERM and returns the exit status (subprocess.TimeoutExpired
    after `timeout` s).  Under ThreadSanitizer (clang 14) a process-directed
    signal can land on TSan's own background thread, which keeps it pending
    for good (seen about once in 120 stops of a loaded machine), so for a
    TSan build SIGTERM is sent again every 2 s (blockd ignores stop signals
    once its stop has begun); other builds get exactly one, so a daemon
    that loses it still fails the test."""
    proc.send_signal(signal.SIGTERM)
    if not is_tsan_build(path or blockd_path()):
        return proc.wait(timeout=timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=min(2, max(0.01, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
            proc.send_signal(signal.SIGTERM)


def sanitizer_report(text):
    """The sanitizer report in text (from its first line on), or ''."""
    starts = [text.find(r) for r in SANITIZER_REPORTS if r in text]
    return text[min(starts):] if starts else ''


def import_nbd():
    try:
        import nbd
    except ImportError:
        skip('python3-libnbd is not installed')
    return nbd


def errno_of(err):
    """The errno of an nbd.Error as a number (libnbd may give a name string)."""
    num = getattr(err, 'errnum', None)
    if isinstance(num, int) and num:
        return num
    e = getattr(err, 'errno', None)
    if isinstance(e, str):
        return getattr(errno, e, None)
    return e


def blockd_path():
    path = os.environ.get('BLOCKD')
    if not path:
        fail('BLOCKD must name the blockd binary')
    return path


def tsan_build():
    """Whether $BLOCKD is a ThreadSanitizer build (make tsan)."""
    with open(blockd_path(), 'rb') as f:
        return b'__tsan_init' in f.read()


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Blockd:
    """One blockd process on a Unix socket in its own temporary directory."""

    def __init__(self, *args, tmpdir=None):
        self.tmp = tmpdir or tempfile.mkdtemp(prefix='blockd-test.')
        self.sock = os.path.join(self.tmp, 'nbd.sock')
        self.pidfile = os.path.join(self.tmp, 'blockd.pid')
        self.args = list(args)
        if '--nbd-server' not in self.args:
            self.args += ['--nbd-server', 'addr.type=unix,addr.path=' + self.sock]
        self.proc = None

    def uri(self, name=''):
        return 'nbd+unix:///%s?socket=%s' % (name, self.sock)

    def start(self):
        self.out = open(os.path.join(self.tmp, 'blockd.out'), 'w+')
        self.err = open(os.path.join(self.tmp, 'blockd.err'), 'w+')
        try:
            self.proc = subprocess.Popen([blockd_path()] + self.args +
                                         ['--pidfile', self.pidfile],
                                         stdin=subprocess.DEVNULL,
                                         stdout=self.out, stderr=self.err)
        except OSError as e:
            fail('cannot run %s: %s' % (blockd_path(), e))
        deadline = time.monotonic() + 20
        while not (os.path.exists(self.pidfile) and os.path.getsize(self.pidfile) > 0):
            if self.proc.poll() is not None:
                fail('blockd exited (status %d) before writing its pidfile: %s'
                     % (self.proc.returncode, self.stderr_text()[:500]))
            if time.monotonic() > deadline:
                fail('blockd did not write its pidfile within 20 s')
            time.sleep(0.05)
        return self

    def stderr_text(self):
        self.err.flush()
        with open(self.err.name) as f:
            return f.read()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def connect(self, name='', strict=True):
        """A new nbd.NBD handle connected to export `name`."""
        nbd = import_nbd()
        h = nbd.NBD()
        if not strict:
            h.set_strict_mode(0)
        h.set_export_name(name)
        h.connect_unix(self.sock)
        return h

    def stop(self):
        """SIGTERM and assert exit status 0."""
        check(self.alive(), 'blockd died before the end of the test (status %s): %s'
              % (self.proc.returncode if self.proc else None, self.stderr_text()[-2000:]))
        try:
            status = sigterm_and_wait(self.proc, 30)
        except subprocess.TimeoutExpired:
            fail('blockd did not exit within 30 s of SIGTERM')
        check(status == 0, 'blockd exited with status %d after SIGTERM: %s'
              % (status, self.stderr_text()[-2000:]))
        report = sanitizer_report(self.stderr_text())
        check(not report, 'sanitizer report:\n' + report[:8000])

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:            # __exit__ is not called for us
            self.kill()
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.stop()
            else:
                # The test failed (often because the daemon died): show why.
                report = sanitizer_report(self.stderr_text())
                if report:
                    print('--- blockd sanitizer report ---\n' + report[:8000], file=sys.stderr)
        finally:
            self.kill()
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False
