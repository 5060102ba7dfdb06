#!/usr/bin/python3
"""TLS with pre-shared keys (QEMU's keys.psk format): nbdinfo, libnbd and
qemu-img get in with the right key; a wrong key, an unknown username and a
username not allowed by tls-authz (which QEMU 7.2 ignores for PSK) are
refused with a log line, while an established connection keeps working."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, fail, import_nbd
from tls_lib import make_psk

nbd = import_nbd()
SIZE = 16 << 20


def run(*cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=60)


def wait_log(d, text, msg):
    deadline = time.monotonic() + 10
    while text not in d.stderr_text():
        if time.monotonic() > deadline:
            fail('%s: %s' % (msg, d.stderr_text()[-2000:]))
        time.sleep(0.05)


def main():
    keys = {'alice': os.urandom(32).hex(), 'bob': os.urandom(32).hex()}
    tmp = tempfile.mkdtemp(prefix='blockd-test.')
    fix = os.path.join(tmp, 'fixtures')
    make_psk(os.path.join(fix, 'server'), keys)
    good = make_psk(os.path.join(fix, 'alice'), {'alice': keys['alice']})
    bob = make_psk(os.path.join(fix, 'bob'), {'bob': keys['bob']})
    wrong = make_psk(os.path.join(fix, 'wrong'), {'alice': os.urandom(32).hex()})
    unknown = make_psk(os.path.join(fix, 'carol'), {'carol': keys['alice']})
    sock = os.path.join(tmp, 'tls.sock')
    image = os.path.join(tmp, 'disk.img')
    with open(image, 'wb') as f:
        f.truncate(SIZE)
    with Blockd('--object', 'tls-creds-psk,id=tls0,dir=%s,endpoint=server' % os.path.join(fix, 'server'),
                '--object', 'authz-simple,id=auth0,identity=alice',
                # A file node: without TLS its reads would go out by sendfile.
                '--blockdev', 'driver=file,node-name=m0,filename=%s' % image,
                '--export', 'type=nbd,id=e0,node-name=m0,name=disk,writable=on',
                '--nbd-server', 'addr.type=unix,addr.path=%s,tls-creds=tls0,tls-authz=auth0' % sock,
                tmpdir=tmp) as d:
        keeper = nbd.NBD()
        keeper.set_tls(nbd.TLS_REQUIRE)
        keeper.set_tls_username('alice')
        keeper.set_tls_psk_file(good)
        keeper.set_export_name('disk')
        keeper.connect_unix(sock)
        pattern = os.urandom(1 << 20)
        keeper.pwrite(pattern, 4096)

        uri = 'nbds+unix://%s@/disk?socket=%s&tls-psk-file=%s'
        r = run('nbdinfo', '--size', uri % ('alice', sock, good))
        check(r.returncode == 0 and r.stdout.strip() == str(SIZE), 'PSK nbdinfo: ' + r.stdout)

        r = run('nbdinfo', '--size', uri % ('alice', sock, wrong))
        check(r.returncode != 0, 'a wrong PSK key got in')
        wait_log(d, "PSK user 'alice' failed (wrong key?)", 'no log line for the wrong key')
        r = run('nbdinfo', '--size', uri % ('carol', sock, unknown))
        check(r.returncode != 0, 'an unknown PSK username got in')
        wait_log(d, "unknown PSK username 'carol'", 'no log line for the unknown user')
        r = run('nbdinfo', '--size', uri % ('bob', sock, bob))
        check(r.returncode != 0, 'a PSK user not allowed by tls-authz got in')
        wait_log(d, "refused: TLS identity 'bob' not allowed by tls-authz 'auth0'",
                 'no log line for the refused PSK user')

        if shutil.which('qemu-img'):
            obj = 'tls-creds-psk,id=tls0,dir=%s,endpoint=client,username=alice' % os.path.dirname(good)
            opts = ('driver=nbd,server.type=unix,server.path=%s,export=disk,tls-creds=tls0,'
                    'tls-hostname=localhost' % sock)
            out = os.path.join(tmp, 'copy.img')
            r = run('qemu-img', 'convert', '--object', obj, '--image-opts', opts, '-O', 'raw', out)
            check(r.returncode == 0, 'qemu-img over PSK: ' + r.stdout)
            with open(out, 'rb') as f:
                f.seek(4096)
                check(f.read(len(pattern)) == pattern, 'qemu-img read wrong data over PSK')

        check(keeper.pread(len(pattern), 4096) == pattern, 'established PSK connection disturbed')
        with open(image, 'rb') as f:
            f.seek(4096)
            check(f.read(len(pattern)) == pattern, 'data written over PSK not in the image')
        keeper.shutdown()


main()
