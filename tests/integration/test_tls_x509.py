#!/usr/bin/python3
"""TLS with X.509 certificates (certtool fixtures): nbdinfo, libnbd and
qemu-img reach the export over nbds+unix:// and nbds://127.0.0.1:PORT; a
plaintext client gets only NBD_REP_ERR_TLS_REQD (no export list, no export
data); a certificate from another CA and a DN not allowed by tls-authz are
refused with a log line, while an established connection keeps working."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, fail, free_port, import_nbd, skip
from tls_lib import (CLIENT1_DN, CLIENT2_DN, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO, OPT_INFO,
                     OPT_LIST, OPT_STARTTLS, OPT_STRUCTURED_REPLY, REP_ACK, REP_ERR_INVALID,
                     REP_ERR_TLS_REQD, REP_SERVER, RawClient, go_data, make_x509)

nbd = import_nbd()
SIZE = 64 << 20


def run(*cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=60)


def libnbd_handle(certdir, sock=None, port=None):
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_certificates(certdir)
    h.set_export_name('disk')
    if sock:
        h.connect_unix(sock)
    else:
        h.connect_tcp('127.0.0.1', str(port))
    return h


def check_plaintext_refused(sock):
    """FORCEDTLS: only STARTTLS and ABORT are processed before TLS."""
    c = RawClient(sock)
    for opt, data in ((OPT_LIST, b''), (OPT_INFO, go_data('disk')), (OPT_GO, go_data('disk')),
                      (OPT_STRUCTURED_REPLY, b''), (99, b'junk')):
        rep = c.option(opt, data)
        check(len(rep) == 1 and rep[0][0] == REP_ERR_TLS_REQD,
              'option %d before STARTTLS: %r (want only NBD_REP_ERR_TLS_REQD)' % (opt, rep))
        check(b'disk' not in rep[0][1], 'option %d leaked the export name' % opt)
    rep = c.option(OPT_ABORT)
    check(rep[-1][0] == REP_ACK and c.at_eof(), 'ABORT before STARTTLS not honoured')
    # EXPORT_NAME has no error reply: the server must hang up.
    c = RawClient(sock)
    c.send_option(OPT_EXPORT_NAME, b'disk')
    check(c.at_eof(), 'EXPORT_NAME without TLS was not disconnected')
    r = run('nbdinfo', 'nbd+unix:///disk?socket=' + sock)
    check(r.returncode != 0, 'plaintext nbdinfo succeeded: ' + r.stdout)
    if shutil.which('qemu-img'):
        r = run('qemu-img', 'info', '-f', 'raw', 'nbd+unix:///disk?socket=' + sock)
        check(r.returncode != 0 and 'TLS' in r.stdout, 'plaintext qemu-img: ' + r.stdout)


def check_qemu_img(fix, sock, port, pattern):
    if not shutil.which('qemu-img'):
        return
    obj = 'tls-creds-x509,id=tls0,dir=%s,endpoint=client' % os.path.join(fix, 'client')
    for server in ('server.type=unix,server.path=%s,tls-hostname=localhost' % sock,
                   'server.type=inet,server.host=127.0.0.1,server.port=%d' % port):
        opts = 'driver=nbd,%s,export=disk,tls-creds=tls0' % server
        r = run('qemu-img', 'info', '--object', obj, '--image-opts', opts)
        check(r.returncode == 0 and '64 MiB' in r.stdout, 'qemu-img info over TLS: ' + r.stdout)
        out = os.path.join(fix, 'copy.img')
        r = run('qemu-img', 'convert', '--object', obj, '--image-opts', opts, '-O', 'raw', out)
        check(r.returncode == 0, 'qemu-img convert over TLS: ' + r.stdout)
        with open(out, 'rb') as f:
            check(f.read(len(pattern)) == pattern, 'qemu-img read wrong data over TLS')
        os.unlink(out)


def check_blockd_client_hostname(fix, port, pattern):
    """blockd as the TLS client, as QEMU users write it: server.host is the
    address, tls-hostname the name in the certificate (localhost)."""
    client = ['--object', 'tls-creds-x509,id=tc,dir=%s,endpoint=client' % os.path.join(fix, 'client')]
    node = ('driver=nbd,node-name=n0,server.type=inet,server.host=127.0.0.1,server.port=%d,'
            'export=disk,tls-creds=tc' % port)
    c = Blockd(*(client + ['--blockdev', node + ',tls-hostname=localhost',
                           '--export', 'type=nbd,id=e0,node-name=n0,name=remote']))
    with c:
        h = c.connect('remote')
        check(h.pread(len(pattern), 0) == pattern, 'blockd over TLS with tls-hostname read wrong data')
        h.shutdown()
    # A name that does not lead to server.host cannot be checked: refused clearly.
    r = run(os.environ['BLOCKD'], *(client + ['--blockdev', node + ',tls-hostname=nosuch.invalid']))
    check(r.returncode != 0 and "tls-hostname 'nosuch.invalid' does not resolve to server.host" in r.stdout,
          'tls-hostname that cannot be checked: %s' % r.stdout)


def check_rogue_certificate(fix, sock, d):
    """Python's ssl always sends its certificate; the server must reject the other CA's."""
    c = RawClient(sock)
    try:
        c.starttls(os.path.join(fix, 'rogue'))
        rep = c.option(OPT_GO, go_data('disk'))
        fail('a certificate from another CA was accepted: %r' % rep)
    except (OSError, EOFError):
        pass
    c.close()
    # The same client with a good certificate gets in (the raw path works).
    c = RawClient(sock)
    c.starttls(os.path.join(fix, 'client'))
    rep = c.option(OPT_LIST)
    check(rep[0][0] == REP_SERVER and rep[-1][0] == REP_ACK, 'LIST over TLS: %r' % rep)
    rep = c.option(OPT_STARTTLS)
    check(rep[-1][0] == REP_ERR_INVALID, 'second STARTTLS: %r' % rep)
    c.close()
    wait_log(d, 'client certificate rejected', 'no log line for the rogue certificate')


def wait_log(d, text, msg):
    deadline = time.monotonic() + 10
    while text not in d.stderr_text():
        if time.monotonic() > deadline:
            fail('%s: %s' % (msg, d.stderr_text()[-2000:]))
        time.sleep(0.05)


def main():
    fix = make_x509(os.path.join(os.environ.get('TMPDIR', '/tmp'), 'blockd-tls.%d' % os.getpid()))
    try:
        port = free_port()
        server_dir = os.path.join(fix, 'server')
        base = ['--object', 'tls-creds-x509,id=tls0,dir=%s,endpoint=server,verify-peer=on' % server_dir,
                '--blockdev', 'driver=memory,node-name=m0,size=%d' % SIZE,
                '--export', 'type=nbd,id=e0,node-name=m0,name=disk,writable=on']
        tmp = tempfile.mkdtemp(prefix='blockd-test.')
        sock = os.path.join(tmp, 'tls.sock')
        d = Blockd(*(base + ['--nbd-server', 'addr.type=unix,addr.path=%s,tls-creds=tls0' % sock,
                             '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=%d,tls-creds=tls0' % port]),
                   tmpdir=tmp)
        with d:
            check('nbds+unix:///disk' in open(os.path.join(d.tmp, 'blockd.out')).read(),
                  'start-up URIs do not say nbds')
            pattern = os.urandom(1 << 20)
            keeper = libnbd_handle(os.path.join(fix, 'client'), sock=sock)
            keeper.pwrite(pattern, 0)
            check(keeper.get_size() == SIZE, 'size over TLS')

            for uri in ('nbds+unix:///disk?socket=%s&tls-certificates=%s' % (sock, os.path.join(fix, 'client')),
                        'nbds://127.0.0.1:%d/disk?tls-certificates=%s' % (port, os.path.join(fix, 'client'))):
                r = run('nbdinfo', '--size', uri)
                check(r.returncode == 0 and r.stdout.strip() == str(SIZE), 'nbdinfo %s: %s' % (uri, r.stdout))
            h = libnbd_handle(os.path.join(fix, 'client'), port=port)
            check(h.pread(len(pattern), 0) == pattern, 'data read over TLS (inet) differs')
            big = os.urandom(8 << 20)              # many full records both ways
            h.pwrite(big, 16 << 20)
            check(h.pread(len(big), 16 << 20) == big, 'large transfer over TLS differs')
            h.shutdown()

            # nbdcopy: several connections, many requests in flight each way.
            src = os.path.join(tmp, 'src.img')
            with open(src, 'wb') as f:
                f.write(os.urandom(SIZE))
            certs = os.path.join(fix, 'client')
            tls_uri = 'nbds+unix:///disk?socket=%s&tls-certificates=%s' % (sock, certs)
            r = run('nbdcopy', src, tls_uri)
            check(r.returncode == 0, 'nbdcopy to the TLS export: ' + r.stdout)
            back = os.path.join(tmp, 'back.img')
            r = run('nbdcopy', tls_uri, back)
            check(r.returncode == 0, 'nbdcopy from the TLS export: ' + r.stdout)
            with open(src, 'rb') as a, open(back, 'rb') as b:
                check(a.read() == b.read(), 'nbdcopy round trip over TLS differs')
            os.unlink(src)
            os.unlink(back)
            keeper.pwrite(pattern, 0)

            check_plaintext_refused(sock)
            check_qemu_img(fix, sock, port, pattern)
            check_blockd_client_hostname(fix, port, pattern)
            check_rogue_certificate(fix, sock, d)
            # Every failure above left the first connection untouched.
            check(keeper.pread(len(pattern), 0) == pattern, 'established connection disturbed')
            keeper.shutdown()

        # tls-authz: only client2's DN (QEMU's order) is allowed.
        authz = ['--object', 'authz-simple,id=auth0,identity=%s' % CLIENT2_DN.replace(',', ',,')]
        tmp = tempfile.mkdtemp(prefix='blockd-test.')
        sock2 = os.path.join(tmp, 'tls.sock')
        d2 = Blockd(*(base + authz + ['--nbd-server', 'addr.type=unix,addr.path=%s,tls-creds=tls0,tls-authz=auth0' % sock2]),
                    tmpdir=tmp)
        with d2:
            r = run('nbdinfo', '--size', 'nbds+unix:///disk?socket=%s&tls-certificates=%s'
                    % (sock2, os.path.join(fix, 'client2')))
            check(r.returncode == 0, 'allowed DN refused: ' + r.stdout)
            r = run('nbdinfo', '--size', 'nbds+unix:///disk?socket=%s&tls-certificates=%s'
                    % (sock2, os.path.join(fix, 'client')))
            check(r.returncode != 0, 'a DN not allowed by tls-authz got in')
            wait_log(d2, "refused: TLS identity '%s' not allowed by tls-authz 'auth0'" % CLIENT1_DN,
                     'no log line for the refused identity')
    finally:
        shutil.rmtree(fix, ignore_errors=True)


main()
