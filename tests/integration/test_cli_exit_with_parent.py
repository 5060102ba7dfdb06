#!/usr/bin/python3
"""A blockd that serves its parent exits with it: under socket activation
(the parent, here a python process holding a libnbd handle, is SIGKILLed, as
a crashed nbdcopy would be) and with --exit-with-parent (a shell parent).
--exit-with-parent with --daemonize is a usage error."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import blockd_path, check, fail  # noqa: E402

ACTIVATOR = r'''
import sys, time, nbd
h = nbd.NBD()
h.connect_systemd_socket_activation(sys.argv[1:])
assert h.get_size() == 64 << 20
print('connected', flush=True)
time.sleep(3600)
'''


def wait_pidfile(path, proc):
    deadline = time.time() + 20
    while not (os.path.exists(path) and open(path).read().strip()):
        check(time.time() < deadline and proc.poll() is None, 'no pidfile %s' % path)
        time.sleep(0.05)
    return int(open(path).read())


def gone_within(pid, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of a dead parent is reaped by init: /proc tells.
        try:
            with open('/proc/%d/stat' % pid) as f:
                if f.read().split(')')[1].split()[0] == 'Z':
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def main():
    blockd = blockd_path()
    tmp = tempfile.mkdtemp(prefix='blockd-ewp.')
    try:
        mem = ['--blockdev', 'driver=memory,node-name=m,size=64M', '--export', 'type=nbd,id=e,node-name=m']
        # Socket activation: the activator dies without closing its handle.
        pidfile = os.path.join(tmp, 'activated.pid')
        act = subprocess.Popen(['/usr/bin/python3', '-c', ACTIVATOR, blockd] + mem + ['--pidfile', pidfile],
                               stdout=subprocess.PIPE, text=True)
        check(act.stdout.readline().strip() == 'connected', 'the activator did not connect')
        pid = wait_pidfile(pidfile, act)
        act.kill()
        act.wait()
        if not gone_within(pid, 10):
            os.kill(pid, signal.SIGKILL)
            fail('a socket-activated blockd outlived its activator')

        # --exit-with-parent under a shell that is killed.
        pidfile = os.path.join(tmp, 'ewp.pid')
        sock = os.path.join(tmp, 'nbd.sock')
        args = [blockd, '--exit-with-parent', '--pidfile', pidfile,
                '--nbd-server', 'addr.type=unix,addr.path=' + sock] + mem
        sh = subprocess.Popen(['/bin/sh', '-c', '"$@" & wait', 'sh'] + args, stdout=subprocess.DEVNULL)
        pid = wait_pidfile(pidfile, sh)
        sh.kill()
        sh.wait()
        if not gone_within(pid, 10):
            os.kill(pid, signal.SIGKILL)
            fail('blockd --exit-with-parent outlived its parent')
        check(not os.path.exists(sock), 'blockd --exit-with-parent did not shut down cleanly (socket left)')

        r = subprocess.run([blockd, '--exit-with-parent', '--daemonize'] + mem, capture_output=True, text=True)
        check(r.returncode != 0 and 'cannot be used together' in r.stderr,
              '--exit-with-parent --daemonize: %d %r' % (r.returncode, r.stderr))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


main()
