#!/usr/bin/python3
"""blockdev-add of rbd nodes that cannot open fails with qemu-storage-daemon's
texts (the same script runs against both): a missing pool, image, namespace
or snapshot, a snapshot opened writable, an unreadable conf file, a missing
or wrong key-secret object, secret objects with bad arguments, and a cluster
that does not answer (within the conf's client_mount_timeout).  blockd stays
up after each.  Without a timeout in the conf, blockd gives up on an
unreachable cluster after its own 30 s (Ceph's default: 300 s)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from ceph_lib import Cluster  # noqa: E402
from lib import free_port  # noqa: E402
from qmp_lib import Daemon, blockd_cmd, check, qsd_cmd  # noqa: E402


def error_of(q, cmd, args):
    r = q.cmd(cmd, args)
    check('error' in r, '%s %r succeeded: %r' % (cmd, args, r))
    return r['error']['desc']


def main():
    with Cluster(qemu=True) as c:
        c.rbd('create', 'rbd/img', '--size', '16M')
        c.rbd('snap', 'create', 'rbd/img@s1')
        dead = os.path.join(c.dir, 'dead.conf')
        with open(dead, 'w') as f:
            f.write('[global]\nmon host = 127.0.0.1:%d\nclient mount timeout = 3\n' % free_port())
        cases = [
            ('blockdev-add', c.node('n', 'img', pool='nopool')),
            ('blockdev-add', c.node('n', 'noimage')),
            ('blockdev-add', c.node('n', 'img', namespace='nons')),
            ('blockdev-add', c.node('n', 'img', snapshot='s1')),
            ('blockdev-add', c.node('n', 'img', snapshot='nosnap', **{'read-only': True})),
            ('blockdev-add', c.node('n', 'img', conf='/nonexistent/ceph.conf')),
            ('blockdev-add', c.node('n', 'img', **{'key-secret': 'nosuch'})),
            ('object-add', {'qom-type': 'authz-simple', 'id': 'notsecret', 'identity': 'x'}),
            ('blockdev-add', c.node('n', 'img', **{'key-secret': 'notsecret'})),
            ('object-add', {'qom-type': 'secret', 'id': 's0'}),
            ('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'x', 'file': '/etc/hostname'}),
            ('object-add', {'qom-type': 'secret', 'id': 's0', 'data': 'a%b', 'format': 'base64'}),
            ('object-add', {'qom-type': 'secret', 'id': 's0', 'file': '/nonexistent/key'}),
            ('blockdev-add', c.node('n', 'img', conf=dead)),
        ]
        results = {}
        for name, cmd in (('blockd', blockd_cmd()), ('qemu-storage-daemon', qsd_cmd())):
            with Daemon(cmd) as d:
                q = d.qmp()
                out = []
                for command, args in cases:
                    t0 = time.monotonic()
                    r = q.cmd(command, args)
                    out.append(r['error']['desc'] if 'error' in r else 'OK')
                    check(time.monotonic() - t0 < 20, '%s: %s took %.0f s' % (name, out[-1], time.monotonic() - t0))
                check(q.cmd('query-version').get('return'), '%s died' % name)
                q.close()
                d.stop()
            results[name] = out
        for (command, args), ours, theirs in zip(cases, results['blockd'], results['qemu-storage-daemon']):
            check(ours == theirs, '%s %r: blockd says %r, qemu-storage-daemon %r' % (command, args, ours, theirs))
            print('%-12s %s' % (command, ours))
        check('error opening pool nopool: No such file or directory' in results['blockd'], 'pool text')
        check('error connecting: Connection timed out' in results['blockd'], 'timeout text')

        # No timeout in the conf: blockd's own bound instead of Ceph's 300 s.
        forever = os.path.join(c.dir, 'forever.conf')
        with open(forever, 'w') as f:
            f.write('[global]\nmon host = 127.0.0.1:%d\n' % free_port())
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            q.sock.settimeout(120)
            t0 = time.monotonic()
            desc = error_of(q, 'blockdev-add', c.node('n', 'img', conf=forever))
            took = time.monotonic() - t0
            check(desc == 'error connecting: Connection timed out' and 25 < took < 60,
                  'unreachable cluster without a timeout: %r after %.0f s' % (desc, took))
            q.close()
            d.stop()
    print('rbd errors as qemu-storage-daemon OK')


main()
