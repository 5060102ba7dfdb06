#!/usr/bin/python3
"""--run 'CMD' (nbdkit's captive mode): CMD sees $uri/$nbd/$exportname/
$unixsocket/$port as nbdkit sets them (shell variables, not exported) and
nbdinfo reaches the export through "$uri"; blockd stops when CMD exits and
exits with its status (128+N when a signal N killed it); without
--nbd-server it listens only on a private Unix socket, removed at exit; a
SIGTERM to blockd ends CMD too; --daemonize and socket activation are
refused."""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import blockd_path, check, skip  # noqa: E402

MEM = ['--blockdev', 'driver=memory,node-name=m,size=64M', '--export', 'type=nbd,id=e,node-name=m,name=disk']
SHOW = 'echo "uri=$uri|nbd=$nbd|exportname=$exportname|unixsocket=$unixsocket|port=$port"'


def run(*args, timeout=60):
    return subprocess.run([blockd_path()] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def main():
    if not shutil.which('nbdinfo'):
        skip('nbdinfo is not installed')
    # The defaults: disk0 on a private socket; CMD's status is blockd's; nothing left behind.
    r = run('--run', SHOW + '; nbdinfo --size "$uri"; sh -c \'echo "child sees ${uri:-nothing}"\'; exit 3')
    check(r.returncode == 3, '--run exit 3: blockd exited %d: %s' % (r.returncode, r.stderr))
    m = re.match(r'uri=nbd\+unix:///disk0\?socket=(/\S+/nbd\.sock)\|nbd=(\S*)\|exportname=disk0\|'
                 r'unixsocket=(\S+)\|port=\n1073741824\nchild sees nothing\n$', r.stdout)
    check(m, 'variables or nbdinfo output: %r' % r.stdout)
    sock = m.group(1)
    check(m.group(2) == 'nbd+unix:///disk0?socket=' + sock and m.group(3) == sock, 'nbd/unixsocket %r' % r.stdout)
    check(not os.path.exists(os.path.dirname(sock)), 'the private socket directory was left behind')
    check('blockd: export' not in r.stdout, 'URIs printed on the command\'s stdout')

    # A TCP server from the command line: $port, the export's name, no private socket.
    r = run(*MEM, '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0',
            '--run', SHOW + '; nbdinfo --size "$uri"')
    m = re.match(r'uri=nbd://127\.0\.0\.1:(\d+)/disk\|nbd=\S+\|exportname=disk\|unixsocket=\|port=(\d+)\n'
                 r'67108864\n$', r.stdout)
    check(r.returncode == 0 and m and m.group(1) == m.group(2), 'TCP: %d %r %r' % (r.returncode, r.stdout, r.stderr))

    # Killed by a signal: 128+N, as nbdkit.
    r = run(*MEM, '--run', 'kill -KILL $$')
    check(r.returncode == 128 + signal.SIGKILL, 'CMD killed by SIGKILL: blockd exited %d' % r.returncode)

    # blockd stops when CMD exits; SIGTERM to blockd ends CMD, whose status it returns.
    tmp = tempfile.mkdtemp(prefix='blockd-run.')
    try:
        pidfile, marker = os.path.join(tmp, 'pid'), os.path.join(tmp, 'cmd.pid')
        p = subprocess.Popen([blockd_path(), *MEM, '--pidfile', pidfile,
                              '--run', 'echo $$ > %s; exec sleep 600' % marker])
        deadline = time.monotonic() + 20
        while not (os.path.exists(marker) and os.path.getsize(marker)):
            check(time.monotonic() < deadline and p.poll() is None, 'the command did not start')
            time.sleep(0.05)
        cmd_pid = int(open(marker).read())
        p.send_signal(signal.SIGTERM)
        st = p.wait(timeout=30)
        check(st == 128 + signal.SIGTERM, 'blockd stopped by SIGTERM exited %d, want the command\'s 143' % st)
        check(not os.path.exists('/proc/%d' % cmd_pid) or 'Z' in open('/proc/%d/stat' % cmd_pid).read().split()[2],
              'the command outlived blockd')
        check(not os.path.exists(pidfile), 'pidfile left behind')
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    r = run(*MEM, '--daemonize', '--run', 'true')
    check(r.returncode == 1 and r.stderr == 'blockd: --run and --daemonize cannot be used together\n',
          '--run --daemonize: %d %r' % (r.returncode, r.stderr))
    r = subprocess.run(['/usr/bin/python3', '-c', 'import os,sys; os.environ["LISTEN_PID"]=str(os.getpid()); '
                        'os.environ["LISTEN_FDS"]="1"; os.execv(sys.argv[1], sys.argv[1:])',
                        blockd_path(), '--run', 'true'], capture_output=True, text=True, timeout=60)
    check(r.returncode == 1 and 'socket activation' in r.stderr, '--run activated: %d %r' % (r.returncode, r.stderr))
    print('ok')


main()
