#!/usr/bin/python3
"""blockd as a TLS client of QEMU: an NBD target node (driver=nbd) with
tls-creds reaches qemu-nbd serving over X.509 and qemu-storage-daemon
serving over PSK; a blockdev-backup job pushes a disk to qemu-nbd over TLS
and data written through blockd lands in QEMU's images.  A node
without credentials, or with another CA's, is refused; object-del refuses
credentials a node holds and accepts them once the node is gone."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail, skip
from tls_lib import make_psk, make_x509
from lib import import_nbd

nbd = import_nbd()
SIZE = 8 << 20


def wait_socket(proc, path, what):
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            fail('%s did not start' % what)
        time.sleep(0.05)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_target(q, node, creds, sock, image, pattern, offset, hostname='localhost'):
    """blockdev-add an nbd node over TLS, export it, write through it, read the image."""
    opts = {'driver': 'nbd', 'node-name': node, 'tls-creds': creds,
            'server': {'type': 'unix', 'path': sock}, 'export': ''}
    if hostname:
        opts['tls-hostname'] = hostname
    r = q.cmd('blockdev-add', opts)
    check(r == {'return': {}}, 'blockdev-add nbd with %s: %r' % (creds, r))
    r = q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + node, 'node-name': node,
                                   'name': node, 'writable': True})
    check(r == {'return': {}}, 'block-export-add: %r' % r)
    return opts


def main():
    for tool in ('qemu-nbd', 'qemu-storage-daemon'):
        if not shutil.which(tool):
            skip('%s is not installed' % tool)
    tmp = tempfile.mkdtemp(prefix='blockd-tls-qemu.')
    procs = []
    try:
        fix = make_x509(os.path.join(tmp, 'x509'))
        key = os.urandom(32).hex()
        make_psk(os.path.join(tmp, 'psk-server'), {'alice': key})
        make_psk(os.path.join(tmp, 'psk-client'), {'alice': key})
        images = {}
        for name in ('qnbd', 'qsd'):
            images[name] = os.path.join(tmp, name + '.img')
            with open(images[name], 'wb') as f:
                f.truncate(SIZE)

        # qemu-nbd: X.509, client certificates verified.
        qnbd_sock = os.path.join(tmp, 'qnbd.sock')
        procs.append(subprocess.Popen(
            ['qemu-nbd', '--object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=server,verify-peer=on'
             % os.path.join(fix, 'server'), '--tls-creds', 'tls0', '-f', 'raw', '-t', '-e', '8',
             '-k', qnbd_sock, images['qnbd']], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_socket(procs[-1], qnbd_sock, 'qemu-nbd')
        # qemu-storage-daemon: PSK.
        qsd_sock = os.path.join(tmp, 'qsd.sock')
        procs.append(subprocess.Popen(
            ['qemu-storage-daemon',
             '--object', 'tls-creds-psk,id=tls0,dir=%s,endpoint=server' % os.path.join(tmp, 'psk-server'),
             '--blockdev', 'driver=file,node-name=f0,filename=%s' % images['qsd'],
             '--nbd-server', 'addr.type=unix,addr.path=%s,tls-creds=tls0' % qsd_sock,
             '--export', 'type=nbd,id=e0,node-name=f0,name=,writable=on'],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        wait_socket(procs[-1], qsd_sock, 'qemu-storage-daemon')

        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            nbd_sock = d.path('nbd.sock')
            check(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': nbd_sock}}})
                  == {'return': {}}, 'nbd-server-start')
            for oid, sub in (('x509c', 'client'), ('rogue', 'rogue')):
                r = q.cmd('object-add', {'qom-type': 'tls-creds-x509', 'id': oid, 'endpoint': 'client',
                                         'dir': os.path.join(fix, sub)})
                check(r == {'return': {}}, 'object-add %s: %r' % (oid, r))
            r = q.cmd('object-add', {'qom-type': 'tls-creds-psk', 'id': 'pskc', 'endpoint': 'client',
                                     'dir': os.path.join(tmp, 'psk-client'), 'username': 'alice'})
            check(r == {'return': {}}, 'object-add pskc: %r' % r)

            # Refusals: no TLS at all, and a certificate qemu-nbd does not trust.
            r = q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'plain',
                                       'server': {'type': 'unix', 'path': qnbd_sock}})
            check('error' in r, 'plaintext node reached a TLS qemu-nbd: %r' % r)
            r = q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'bad', 'tls-creds': 'rogue',
                                       'server': {'type': 'unix', 'path': qnbd_sock}})
            check('error' in r, 'another CA\'s certificate reached qemu-nbd: %r' % r)
            r = q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'bad', 'tls-creds': 'nosuch',
                                       'server': {'type': 'unix', 'path': qnbd_sock}})
            check("No TLS credentials with id 'nosuch'" in r.get('error', {}).get('desc', ''), repr(r))
            check(q.cmd('object-del', {'id': 'rogue'}) == {'return': {}}, 'failed node kept its creds')

            # A backup job pushes a whole disk to qemu-nbd over TLS.
            source = os.urandom(SIZE)
            with open(d.path('src.img'), 'wb') as f:
                f.write(source)
            r = q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': d.path('src.img')})
            check(r == {'return': {}}, 'blockdev-add src: %r' % r)
            r = q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': 'b0', 'tls-creds': 'x509c',
                                       'tls-hostname': 'localhost',
                                       'server': {'type': 'unix', 'path': qnbd_sock}})
            check(r == {'return': {}}, 'blockdev-add of the TLS backup target: %r' % r)
            r = q.cmd('blockdev-backup', {'job-id': 'bk', 'device': 'src', 'target': 'b0', 'sync': 'full'})
            check(r == {'return': {}}, 'blockdev-backup to qemu-nbd over TLS: %r' % r)
            ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=60)
            check('error' not in ev['data'] and ev['data']['offset'] == SIZE, 'backup over TLS: %r' % ev)
            with open(images['qnbd'], 'rb') as f:
                check(f.read() == source, 'the backup did not reach qemu-nbd intact')
            deadline = time.monotonic() + 10
            while q.cmd('blockdev-del', {'node-name': 'b0'}) != {'return': {}}:
                check(time.monotonic() < deadline, 'blockdev-del b0 refused')
                time.sleep(0.1)

            for node, creds, sock in (('t0', 'x509c', qnbd_sock), ('t1', 'pskc', qsd_sock)):
                check_target(q, node, creds, sock, None, None, None)
                r = q.cmd('object-del', {'id': creds})
                check('in use' in r.get('error', {}).get('desc', ''),
                      'object-del of creds a node holds: %r' % r)

            patterns = {}
            for node in ('t0', 't1'):
                h = nbd.NBD()
                h.set_export_name(node)
                h.connect_unix(nbd_sock)
                check(h.get_size() == SIZE, 'size through the TLS node %s' % node)
                patterns[node] = os.urandom(1 << 20)
                h.pwrite(patterns[node], 65536)
                h.flush()
                check(h.pread(1 << 20, 65536) == patterns[node], 'read back through %s' % node)
                h.shutdown()

            for node, creds in (('t0', 'x509c'), ('t1', 'pskc')):
                check(q.cmd('block-export-del', {'id': 'e-' + node}) == {'return': {}}, 'export-del')
                deadline = time.monotonic() + 10
                while True:
                    r = q.cmd('blockdev-del', {'node-name': node})
                    if r == {'return': {}} or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                check(r == {'return': {}}, 'blockdev-del %s: %r' % (node, r))
                check(q.cmd('object-del', {'id': creds}) == {'return': {}},
                      'object-del after blockdev-del')
            q.cmd('quit')
            check(d.wait() == 0, 'blockd did not exit cleanly')

        for name, node in (('qnbd', 't0'), ('qsd', 't1')):
            with open(images[name], 'rb') as f:
                f.seek(65536)
                check(f.read(1 << 20) == patterns[node], 'data did not reach %s over TLS' % name)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


main()
