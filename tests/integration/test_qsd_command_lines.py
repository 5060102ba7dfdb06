#!/usr/bin/python3
"""qemu-storage-daemon command lines carry over: the examples of its man page
(QMP on a socket chardev, the same with a listening socket passed as fd=N,
exporting a raw image over NBD), its short forms (--blockdev file,...,
--export nbd,..., --object TYPE,...), QemuOpts flags (server,nowait), a TCP
chardev and an inherited NBD socket (addr.type=fd) each run unchanged against
blockd and qemu-storage-daemon, with the same observable result; `--blockdev
help` lists blockd's drivers."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import check, fail, free_port  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import blockd_cmd  # noqa: E402

SIZE = 4 << 20


def qmp_greeting(connect, timeout=20):
    """Connects (retrying while the daemon starts) and returns the greeting."""
    deadline = time.time() + timeout
    while True:
        try:
            s = connect()
            break
        except (FileNotFoundError, ConnectionRefusedError):
            check(time.time() < deadline, 'the QMP socket never accepted a connection')
            time.sleep(0.05)
    s.settimeout(20)
    f = s.makefile('rw')
    greeting = json.loads(f.readline())
    f.write('{"execute": "qmp_capabilities"}\n')
    f.flush()
    reply = json.loads(f.readline())
    s.close()
    check('QMP' in greeting and reply == {'return': {}}, 'QMP session: %r %r' % (greeting, reply))
    return greeting


def unix_connect(path):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        return s
    return connect


def nbd_size(uri, timeout=20):
    deadline = time.time() + timeout
    while True:
        r = subprocess.run(['nbdinfo', '--size', uri], capture_output=True, text=True)
        if r.returncode == 0:
            return int(r.stdout)
        check(time.time() < deadline, 'nbdinfo %s: %s' % (uri, r.stderr))
        time.sleep(0.05)


class Run:
    """One daemon command line in a scratch directory (the cwd, as in the man page)."""

    def __init__(self, daemon, args, pass_fds=()):
        self.dir = tempfile.mkdtemp(prefix='qsd-cl.')
        with open(os.path.join(self.dir, 'disk.img'), 'wb') as f:
            f.write(bytes(range(256)) * (SIZE // 256))
        self.proc = subprocess.Popen(list(daemon) + [a.replace('@DIR@', self.dir) for a in args],
                                     cwd=self.dir, pass_fds=pass_fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            err = self.proc.communicate(timeout=20)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err = self.proc.communicate()[1]
        shutil.rmtree(self.dir, ignore_errors=True)
        check('ERROR: AddressSanitizer' not in err, 'sanitizer report:\n' + err)
        return err


def example_qmp_socket(daemon):
    r = Run(daemon, ['--chardev', 'socket,path=qmp.sock,server=on,wait=off,id=char1', '--monitor', 'chardev=char1'])
    try:
        qmp_greeting(unix_connect(r.path('qmp.sock')))
    finally:
        r.stop()


def example_qmp_fd(daemon):
    """The man page's Python example: the QMP socket passed as fd=N."""
    tmp = tempfile.mkdtemp(prefix='qsd-fd.')
    sock_path = os.path.join(tmp, 'qmp.sock')
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listen_sock:
            listen_sock.bind(sock_path)
            listen_sock.listen()
            fd = listen_sock.fileno()
            r = Run(daemon, ['--chardev', f'socket,fd={fd},server=on,id=char1', '--monitor', 'chardev=char1'],
                    pass_fds=[fd])
        try:
            qmp_greeting(unix_connect(sock_path), timeout=1)  # no busy wait needed: the socket exists
        finally:
            r.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def example_nbd_export(daemon):
    r = Run(daemon, ['--blockdev', 'driver=file,node-name=disk,filename=disk.img',
                     '--nbd-server', 'addr.type=unix,addr.path=nbd.sock',
                     '--export', 'type=nbd,id=export,node-name=disk,writable=on'])
    try:
        check(nbd_size('nbd+unix:///disk?socket=' + r.path('nbd.sock')) == SIZE, 'size')
    finally:
        r.stop()


def short_forms(daemon):
    """Implied first keys, QemuOpts flags, and a TCP QMP chardev."""
    port = free_port()
    r = Run(daemon, ['--blockdev', 'file,node-name=f,filename=disk.img',
                     '--blockdev', 'raw,node-name=r,file=f,offset=1048576',
                     '--nbd-server', 'addr.type=unix,addr.path=nbd.sock',
                     '--export', 'nbd,id=e,node-name=r,name=win',
                     '--chardev', 'socket,id=m1,path=qmp.sock,server,nowait', '--monitor', 'm1',
                     '--chardev', 'socket,id=m2,host=127.0.0.1,port=%d,server=on,wait=off' % port,
                     '--monitor', 'chardev=m2'])
    try:
        check(nbd_size('nbd+unix:///win?socket=' + r.path('nbd.sock')) == SIZE - (1 << 20), 'raw window size')
        qmp_greeting(unix_connect(r.path('qmp.sock')))
        qmp_greeting(lambda: socket.create_connection(('127.0.0.1', port)))
    finally:
        r.stop()


def inherited_nbd_socket(daemon):
    tmp = tempfile.mkdtemp(prefix='qsd-nbdfd.')
    path = os.path.join(tmp, 'nbd.sock')
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ls:
            ls.bind(path)
            ls.listen()
            fd = ls.fileno()
            r = Run(daemon, ['--blockdev', 'driver=file,node-name=disk,filename=disk.img',
                             '--nbd-server', 'addr.type=fd,addr.str=%d' % fd,
                             '--export', 'type=nbd,id=export,node-name=disk'], pass_fds=[fd])
        try:
            check(nbd_size('nbd+unix:///disk?socket=' + path) == SIZE, 'size over an inherited socket')
        finally:
            r.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    daemons = [('blockd', blockd_cmd())]
    qsd = shutil.which('qemu-storage-daemon')
    if qsd:
        daemons.append(('qemu-storage-daemon', [qsd]))
    else:
        print('qemu-storage-daemon is not installed: blockd only')
    cases = [example_qmp_socket, example_qmp_fd, example_nbd_export, short_forms, inherited_nbd_socket]
    for name, cmd in daemons:
        for case in cases:
            try:
                case(cmd)
            except SystemExit:
                print('case %s failed on %s' % (case.__name__, name), file=sys.stderr)
                raise
        print('%s: %d command lines ok' % (name, len(cases)))

    blockd = blockd_cmd()[0]
    r = subprocess.run([blockd, '--blockdev', 'help'], capture_output=True, text=True)
    check(r.returncode == 0 and 'qcow2' in r.stdout.split() and 'file' in r.stdout.split(),
          '--blockdev help: %d %r' % (r.returncode, r.stdout))
    r = subprocess.run([blockd, '--export', 'vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=x'],
                       capture_output=True, text=True)
    check(r.returncode != 0 and 'vhost-user-blk' in r.stderr, 'an export type blockd lacks: %r' % r.stderr)
    if len(daemons) < 2:
        fail('qemu-storage-daemon is needed to compare') if os.environ.get('CI') else None
    print('ok')


main()
