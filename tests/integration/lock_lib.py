"""Helpers for the image-locking tests: which of QEMU's lock bytes other
processes hold on a file, how a process opened it, and QEMU's tools.

    from lock_lib import locked, access_modes, tool
    locked(path)            # {100, 101, 203}: bytes locked by any process
    access_modes(pid, path) # {'r'} or {'rw'}: how pid's descriptors open it
    tool('qemu-img', 'info', path)  # (exit status, stdout + stderr)
"""

import fcntl
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import check, skip  # noqa: E402

F_OFD_GETLK = getattr(fcntl, 'F_OFD_GETLK', 36)
# struct flock on x86-64 and aarch64: l_type, l_whence, l_start, l_len, l_pid.
FLOCK = 'hhqqi4x'
PERM_BYTES = range(100, 104)    # consistent read, write, write unchanged, resize
SHARED_BYTES = range(200, 204)  # the same, not shared


def locked(path):
    """The lock bytes (100..103, 200..203) some open file description holds."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = set()
        for off in list(PERM_BYTES) + list(SHARED_BYTES):
            fl = struct.pack(FLOCK, fcntl.F_WRLCK, os.SEEK_SET, off, 1, 0)
            kind = struct.unpack(FLOCK, fcntl.fcntl(fd, F_OFD_GETLK, fl))[0]
            if kind != fcntl.F_UNLCK:
                out.add(off)
        return out
    finally:
        os.close(fd)


def access_modes(pid, path):
    """How process `pid`'s descriptors on `path` are open: a set of 'r', 'w', 'rw'."""
    real = os.path.realpath(path)
    modes = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)) != real:
                continue
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                flags = int(next(l for l in f if l.startswith('flags:')).split()[1], 8)
        except (FileNotFoundError, StopIteration):
            continue
        modes.add({os.O_RDONLY: 'r', os.O_WRONLY: 'w', os.O_RDWR: 'rw'}[flags & os.O_ACCMODE])
    return modes


def tool(*args):
    """Runs a QEMU tool: (exit status, its output and error output)."""
    if not shutil.which(args[0]):
        skip('%s is not installed' % args[0])
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def refused(out, message, path):
    """True if a QEMU tool's output is QEMU's lock refusal with its hint."""
    return message in out and 'Is another process using the image [%s]?' % path in out


def ok(reply, what):
    check(reply == {'return': {}}, '%s: %r' % (what, reply))


def error(reply, desc, what):
    """Asserts a QMP GenericError reply with exactly this desc."""
    check(reply.get('error') == {'class': 'GenericError', 'desc': desc},
          '%s: expected the error %r, got %r' % (what, desc, reply))
