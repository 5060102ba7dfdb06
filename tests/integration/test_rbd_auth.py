#!/usr/bin/python3
"""cephx: a Ceph user made for blockd (docs/rbd.md's `ceph auth
get-or-create client.blockd ...`) opens an image with user=, key-secret=
(a secret object read from a key file), auth-client-required=[cephx] and
the monitors given as server=[...] instead of the conf file, and writes
through it.  A wrong key, no key, and a user without rights on the pool
fail blockdev-add with qemu-storage-daemon's texts (same script against
both); a refused key looks like an unreachable cluster to librados (it
retries until client_mount_timeout), for QEMU as for blockd."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from backup_lib import ok, read_all, write  # noqa: E402
from ceph_lib import Cluster  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402


def client_conf(c):
    """The cluster's conf without the admin keyring and without the monitors;
    a refused key is retried until client_mount_timeout: 5 s."""
    path = os.path.join(c.dir, 'client.conf')
    with open(c.conf) as f:
        lines = [ln if not ln.startswith('client mount timeout') else 'client mount timeout = 5\n'
                 for ln in f if not ln.startswith(('keyring', 'mon host'))]
    with open(path, 'w') as f:
        f.writelines(lines)
    return path


def main():
    with Cluster(qemu=True, CEPH_AUTH='cephx') as c:
        c.rbd('create', 'rbd/img', '--size', '16M')
        key = c.ceph('auth', 'get-or-create-key', 'client.blockd', 'mon', 'profile rbd',
                     'osd', 'profile rbd pool=rbd').strip()
        other_key = c.ceph('auth', 'get-or-create-key', 'client.elsewhere', 'mon', 'profile rbd',
                           'osd', 'profile rbd pool=other').strip()
        key_file = os.path.join(c.dir, 'blockd.key')
        with open(key_file, 'w') as f:
            f.write(key + '\n')
        wrong = subprocess.run(['ceph-authtool', '--gen-print-key'], capture_output=True, text=True,
                               check=True).stdout.strip()
        host, port = c.env['CEPH_MON_ADDR'].split(':')[1:]
        conf = client_conf(c)
        base = {'conf': conf, 'server': [{'host': host, 'port': port}], 'auth-client-required': ['cephx']}

        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            ok(q.cmd('object-add', {'qom-type': 'secret', 'id': 'key0', 'file': key_file, 'format': 'base64'}),
               'secret from a key file')
            ok(q.cmd('blockdev-add', c.node('r0', 'img', user='blockd', **{'key-secret': 'key0'}, **base)),
               'blockdev-add with cephx')
            sock = d.path('nbd.sock')
            ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
            ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'r0', 'name': 'r0',
                                          'writable': True}), 'export')
            write(d, 'r0', 8192, b'cephx' * 1000)
            check(read_all(sock, 'r0')[8192:13192] == b'cephx' * 1000, 'read back through cephx')
            check(c.export('img')[8192:13192] == b'cephx' * 1000, 'rbd export does not show the write')
            q.close()
            check(d.stop() == 0, 'blockd exit status')

        cases = [
            ('object-add', {'qom-type': 'secret', 'id': 'bad', 'data': wrong, 'format': 'base64'}),
            ('blockdev-add', c.node('n', 'img', user='blockd', **{'key-secret': 'bad'}, **base)),
            ('blockdev-add', c.node('n', 'img', user='blockd', **base)),
            ('object-add', {'qom-type': 'secret', 'id': 'k', 'data': other_key, 'format': 'base64'}),
            ('blockdev-add', c.node('n', 'img', user='elsewhere', **{'key-secret': 'k'}, **base)),
        ]
        results = {}
        for name, cmd in (('blockd', blockd_cmd()), ('qemu-storage-daemon', qsd_cmd())):
            with Daemon(cmd) as d:
                q = d.qmp()
                q.sock.settimeout(60)
                results[name] = [q.cmd(cmd_name, args).get('error', {}).get('desc', 'OK')
                                 for cmd_name, args in cases]
                check(q.cmd('query-version').get('return'), '%s died' % name)
                q.close()
                d.stop()
        for (command, args), ours, theirs in zip(cases, results['blockd'], results['qemu-storage-daemon']):
            check(ours == theirs, '%s %r: blockd says %r, qemu-storage-daemon %r' % (command, args, ours, theirs))
            print('%-12s %s' % (command, ours))
        check(results['blockd'][1].startswith('error connecting: '), 'wrong key: %r' % results['blockd'][1])
        check(results['blockd'][4] == 'error reading header from img: Operation not permitted',
              'a user without rights on the pool: %r' % results['blockd'][4])
    print('rbd cephx OK')


main()
