#!/usr/bin/python3
"""Each refused NBD client (unknown export, over max-connections, handshake
timeout, malformed option), failed job and failed I/O request is logged
exactly once with its cause (stderr, GLib's format): the client's address,
the job id and type, the node, operation, range and errno text; repeats of
an I/O error are summed up at exit.  Debug lines appear only with -v."""
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from lib import Blockd, blockd_path, check, import_nbd  # noqa: E402
from qmp_lib import Qmp  # noqa: E402

MAGIC, IHAVEOPT = 0x4e42444d41474943, 0x49484156454f5054


def once(d, pattern, what):
    """The one stderr line matching pattern (a regex); fails on none or several."""
    deadline = time.monotonic() + 10
    while True:
        lines = [ln for ln in d.stderr_text().splitlines() if re.search(pattern, ln)]
        if len(lines) > 1 or (lines and time.monotonic() > deadline - 9) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    check(len(lines) == 1, '%s: want one log line matching %r, got %r' % (what, pattern, lines))
    return lines[0]


def raw_client(port):
    s = socket.create_connection(('127.0.0.1', port))
    check(len(s.recv(18, socket.MSG_WAITALL)) == 18, 'no greeting')
    return s


def main():
    nbd = import_nbd()
    tmp = tempfile.mkdtemp(prefix='blockd-logev.')
    dbg = 'driver=blkdebug,image.driver=memory,image.size=2M,inject-error.0.event=none'
    d = Blockd('--blockdev', 'driver=memory,node-name=m,size=2M', '--export', 'type=nbd,id=e,node-name=m,writable=on',
               '--blockdev', 'node-name=dbg,inject-error.0.iotype=read,inject-error.0.sector=2048,' + dbg,
               '--blockdev', 'driver=raw,node-name=disk,file=dbg', '--export', 'type=nbd,id=d,node-name=disk',
               '--blockdev', 'node-name=tgt,' + dbg,
               '--nbd-server', 'addr.type=inet,addr.host=127.0.0.1,addr.port=0,max-connections=2,'
               'handshake-max-seconds=1',
               '--chardev', 'socket,id=q,path=%s/qmp.sock,server=on,wait=off' % tmp, '--monitor', 'q',
               tmpdir=tmp)
    try:
        d.start()
        port = int(re.search(r'nbd://127.0.0.1:(\d+)/', open(d.out.name).read()).group(1))
        client = r"client 127\.0\.0\.1:\d+ refused: "

        h = nbd.NBD()
        h.set_export_name('nope')
        check_raises(nbd, lambda: h.connect_tcp('127.0.0.1', str(port)), 'unknown export')
        once(d, client + "export 'nope' not found", 'unknown export')

        held = [nbd.NBD(), nbd.NBD()]
        for x in held:
            x.set_export_name('m')
            x.connect_tcp('127.0.0.1', str(port))
        h = nbd.NBD()
        check_raises(nbd, lambda: h.connect_tcp('127.0.0.1', str(port)), 'third connection')
        once(d, client + r'too many connections: the server allows 2 \(max-connections\)', 'max-connections')
        for x in held:
            x.shutdown()
        del held

        s = raw_client(port)
        once(d, client + r'no complete handshake within 1 s', 'handshake timeout')
        s.close()
        s = raw_client(port)
        s.sendall(struct.pack('>I', 3) + struct.pack('>QII', 0x1234, 1, 0))
        once(d, client + 'bad option magic', 'malformed option')
        s.close()

        h = nbd.NBD()
        h.set_export_name('disk')
        h.connect_tcp('127.0.0.1', str(port))
        for _ in range(10):
            check_raises(nbd, lambda: h.pread(512, 1 << 20), 'read of the bad sector')
        once(d, r"node 'disk': read of 512 bytes at offset 1048576 failed: Input/output error$", 'I/O error')
        h.shutdown()

        h = nbd.NBD()
        h.set_export_name('m')
        h.connect_tcp('127.0.0.1', str(port))
        h.pwrite(b'\xab' * (1 << 20), 0)   # data, so the backup has something to write
        h.shutdown()
        q = Qmp(os.path.join(tmp, 'qmp.sock'))
        r = q.cmd('blockdev-backup', {'job-id': 'j', 'device': 'm', 'target': 'tgt', 'sync': 'full'})
        check(r == {'return': {}}, 'blockdev-backup: %r' % r)
        ev = q.wait_event('BLOCK_JOB_COMPLETED', timeout=30)
        check(ev['data'].get('error') == 'Input/output error', 'job end %r' % ev)
        once(d, r"job 'j' \(backup\) failed: Input/output error$", 'failed job')
        ops = re.findall(r"node 'tgt': (\S+) .*failed: Input/output error", d.stderr_text())
        check(ops and len(ops) == len(set(ops)), 'target write errors logged %r' % ops)
        q.close()

        d.stop()
        once(d, r"node 'disk': 9 more read errors \(Input/output error\) in the last \d+ s$", 'summary at exit')
        check('DEBUG' not in d.stderr_text(), 'debug lines without -v')
    finally:
        d.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    r = subprocess.run([blockd_path(), '-v', '--run', 'nbdinfo --size "$uri" >/dev/null'],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0 and re.search(r'blockd-nbd-DEBUG.*client .* connected', r.stderr),
          'no debug line with -v: %d %r' % (r.returncode, r.stderr))
    print('ok')


def check_raises(nbd, fn, what):
    try:
        fn()
    except nbd.Error:
        return
    check(False, '%s succeeded' % what)


main()
