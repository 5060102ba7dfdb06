#!/usr/bin/python3
"""A socket-activated blockd exits when its activator's connection is gone,
however the activator ends: a libnbd client that _exits without closing its
handle mid-way (a request in flight), nbdcopy failing mid-copy on a read
error, nbdinfo finishing normally.  (test_cli_exit_with_parent.py covers
an activator killed by SIGKILL.)"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import blockd_path, check, fail, skip  # noqa: E402

ACTIVATOR = r'''
import os, sys, nbd
h = nbd.NBD()
h.connect_systemd_socket_activation(sys.argv[1:])
h.pread(4096, 0)
h.aio_pread(nbd.Buffer(1 << 20), 1 << 20)   # in flight when the process goes
os._exit(3)
'''


def wrap(pidfile, args):
    """args run with their pid noted first (blockd removes its own pidfile as it exits)."""
    return ['/bin/sh', '-c', 'echo $$ > "$0"; exec "$@"', pidfile] + args


def pid_of(pidfile):
    deadline = time.monotonic() + 20
    while not (os.path.exists(pidfile) and os.path.getsize(pidfile)):
        if time.monotonic() > deadline:
            fail('blockd wrote no pidfile %s' % pidfile)
        time.sleep(0.05)
    return int(open(pidfile).read())


def gone_within(pid, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open('/proc/%d/stat' % pid) as f:
                if f.read().split(')')[1].split()[0] == 'Z':
                    return True    # exited; waiting for init to reap it
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def expect_gone(pidfile, what):
    pid = pid_of(pidfile)
    if not gone_within(pid, 15):
        os.kill(pid, 9)
        fail('a socket-activated blockd outlived its activator (%s)' % what)


def main():
    if not shutil.which('nbdcopy') or not shutil.which('nbdinfo'):
        skip('nbdcopy or nbdinfo is not installed')
    tmp = tempfile.mkdtemp(prefix='blockd-saexit.')
    try:
        blockd = blockd_path()
        mem = ['--blockdev', 'driver=memory,node-name=m,size=64M', '--export', 'type=nbd,id=e,node-name=m']

        pidfile = os.path.join(tmp, 'a.pid')
        r = subprocess.run(['/usr/bin/python3', '-c', ACTIVATOR, *wrap(pidfile, [blockd, *mem])], timeout=60)
        check(r.returncode == 3, 'the activator failed before its _exit: %d' % r.returncode)
        expect_gone(pidfile, 'os._exit with a request in flight')

        # nbdcopy reads the source (data, no holes) until sector 8192 fails: it gives up mid-copy.
        pidfile, img = os.path.join(tmp, 'c.pid'), os.path.join(tmp, 'src.img')
        with open(img, 'wb') as f:
            f.write(os.urandom(16 << 20))
        bad = ['--blockdev', 'driver=blkdebug,node-name=dbg,image.driver=file,image.filename=' + img + ','
               'inject-error.0.event=none,inject-error.0.iotype=read,inject-error.0.sector=8192',
               '--blockdev', 'driver=raw,node-name=disk,file=dbg', '--export', 'type=nbd,id=e,node-name=disk']
        r = subprocess.run(['nbdcopy', '--', '[', *wrap(pidfile, [blockd, *bad]), ']',
                            os.path.join(tmp, 'out.img')], capture_output=True, text=True, timeout=120)
        check(r.returncode != 0 and 'Input/output error' in r.stderr, 'nbdcopy: %d %r' % (r.returncode, r.stderr))
        expect_gone(pidfile, 'nbdcopy failed mid-copy')

        pidfile = os.path.join(tmp, 'i.pid')
        r = subprocess.run(['nbdinfo', '--size', '--', '[', *wrap(pidfile, [blockd, *mem]), ']'],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0 and r.stdout.strip() == str(64 << 20), 'nbdinfo: %r' % r.stdout)
        expect_gone(pidfile, 'nbdinfo finished')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


main()
