#!/usr/bin/python3
"""Invalid requests (strict mode off) get the right NBD error and the
connection stays usable after each."""
import errno
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, errno_of, fail, import_nbd

nbd = import_nbd()
SIZE = 8 << 20
UNKNOWN_FLAG = 1 << 14


def expect_error(h, what, want, call):
    try:
        call()
    except nbd.Error as e:
        got = errno_of(e)
        check(got == want, '%s: errno %s (%s), want %s'
              % (what, got, e.string, errno.errorcode[want]))
    else:
        fail('%s: succeeded, want %s' % (what, errno.errorcode[want]))
    still_works(h, what)


def still_works(h, what):
    try:
        check(h.pread(512, 0) == bytes(512), 'after %s: good read returned wrong data' % what)
    except nbd.Error as e:
        fail('after %s: connection no longer works: %s' % (what, e))


with Blockd('--blockdev', 'driver=memory,node-name=m0,size=%d' % SIZE,
            '--blockdev', 'driver=memory,node-name=m1,size=%d' % SIZE,
            '--export', 'type=nbd,id=rw,node-name=m0,name=rw,writable=on',
            '--export', 'type=nbd,id=ro,node-name=m1,name=ro') as d:
    h = d.connect('rw', strict=False)
    expect_error(h, 'read past the end', errno.EINVAL, lambda: h.pread(512, SIZE))
    expect_error(h, 'read straddling the end', errno.EINVAL, lambda: h.pread(1024, SIZE - 512))
    expect_error(h, 'write past the end', errno.ENOSPC, lambda: h.pwrite(bytes(512), SIZE))
    expect_error(h, 'zero past the end', errno.ENOSPC, lambda: h.zero(512, SIZE))
    expect_error(h, 'trim past the end', errno.EINVAL, lambda: h.trim(512, SIZE))
    expect_error(h, 'read with an unknown flag', errno.EINVAL,
                 lambda: h.pread(512, 0, UNKNOWN_FLAG))
    expect_error(h, 'write with an unknown flag', errno.EINVAL,
                 lambda: h.pwrite(b'x' * 512, 0, UNKNOWN_FLAG))
    expect_error(h, 'NO_HOLE on a read', errno.EINVAL,
                 lambda: h.pread(512, 0, nbd.CMD_FLAG_NO_HOLE))
    # A zero-length read may succeed or fail, but must not cost the connection.
    try:
        h.pread(0, 0)
    except nbd.Error:
        pass
    still_works(h, 'zero-length read')
    h.shutdown()

    r = d.connect('ro', strict=False)
    expect_error(r, 'write to a read-only export', errno.EPERM,
                 lambda: r.pwrite(b'x' * 512, 0))
    expect_error(r, 'zero on a read-only export', errno.EPERM, lambda: r.zero(512, 0))
    expect_error(r, 'trim on a read-only export', errno.EPERM, lambda: r.trim(512, 0))
    r.shutdown()

    # DF is meaningless without structured replies.
    s = nbd.NBD()
    s.set_strict_mode(0)
    s.set_request_structured_replies(False)
    s.set_export_name('rw')
    s.connect_unix(d.sock)
    check(not s.get_structured_replies_negotiated(), 'structured replies were negotiated')
    expect_error(s, 'DF without structured replies', errno.EINVAL,
                 lambda: s.pread(512, 0, nbd.CMD_FLAG_DF))
    s.shutdown()
