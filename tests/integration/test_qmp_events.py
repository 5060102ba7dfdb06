#!/usr/bin/python3
"""Events and monitors: BLOCK_EXPORT_DELETED reaches every negotiated monitor
(not one still negotiating) with a timestamp; quit replies, emits SHUTDOWN
and exits 0; the socket is private (0600); the command-line server and
exports are the ones QMP manages."""
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check


def check_event(ev, name, data):
    check(ev['event'] == name and ev.get('data') == data, 'event %r' % ev)
    ts = ev['timestamp']
    check(isinstance(ts['seconds'], int) and abs(ts['seconds'] - time.time()) < 60, 'seconds %r' % ts)
    check(isinstance(ts['microseconds'], int) and 0 <= ts['microseconds'] < 1000000, 'usec %r' % ts)


def main():
    with Daemon(blockd_cmd(), monitors=2) as d:
        for s in d.socks:
            check(stat.S_IMODE(os.stat(s).st_mode) == 0o600, '%s is not mode 0600' % s)
        a, b = d.qmp(0), d.qmp(1)
        waiting = d.qmp(0, negotiate=False)
        r = waiting.cmd('query-version')
        check(r['error'] == {'class': 'CommandNotFound',
                             'desc': "Expecting capabilities negotiation with 'qmp_capabilities'"}, repr(r))
        check(waiting.greeting['QMP']['capabilities'] == [], 'capabilities %r' % waiting.greeting)
        check(waiting.greeting['QMP']['version']['qemu'] == {'major': 7, 'minor': 2, 'micro': 0},
              'version %r' % waiting.greeting)
        check(a.cmd('blockdev-add', {'driver': 'memory', 'node-name': 'm0', 'size': 1 << 20}) == {'return': {}},
              'memory node')
        sock = d.path('nbd.sock')
        r = a.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}, id='s')
        check(r == {'return': {}, 'id': 's'}, repr(r))
        check(a.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'm0'}) == {'return': {}}, 'add')
        check(a.cmd('block-export-del', {'id': 'e0'}) == {'return': {}}, 'del')
        check_event(a.wait_event('BLOCK_EXPORT_DELETED'), 'BLOCK_EXPORT_DELETED', {'id': 'e0'})
        check_event(b.wait_event('BLOCK_EXPORT_DELETED'), 'BLOCK_EXPORT_DELETED', {'id': 'e0'})
        # The unnegotiated session got no event: its next message is the reply.
        r = waiting.cmd('qmp_capabilities')
        check(r == {'return': {}} and not waiting.events, 'event leaked before negotiation: %r' % waiting.events)
        r = a.cmd('quit', id=9)
        check(r == {'return': {}, 'id': 9}, 'quit: %r' % r)
        check_event(b.wait_event('SHUTDOWN'), 'SHUTDOWN', {'guest': False, 'reason': 'host-qmp-quit'})
        check(d.wait() == 0, 'exit status after quit')
        check(not any(os.path.exists(s) for s in d.socks), 'monitor sockets left behind')

    # Command line and QMP share one server and one set of exports.
    nbd_dir = tempfile.mkdtemp(prefix='qmp-ev.')
    with Daemon(blockd_cmd(), extra=['--blockdev', 'driver=null-co,node-name=n0,size=1M',
                                     '--nbd-server', 'addr.type=unix,addr.path=%s/nbd.sock' % nbd_dir,
                                     '--export', 'type=nbd,id=e0,node-name=n0,writable=on']) as d:
        q = d.qmp()
        r = q.cmd('query-block-exports')
        check(r == {'return': [{'id': 'e0', 'type': 'nbd', 'node-name': 'n0', 'shutting-down': False}]}, repr(r))
        r = q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('x.sock')}}})
        check(r['error']['desc'] == 'NBD server already running', repr(r))
        check(q.cmd('nbd-server-stop') == {'return': {}}, 'stop')
        check_event(q.wait_event('BLOCK_EXPORT_DELETED'), 'BLOCK_EXPORT_DELETED', {'id': 'e0'})
        check(q.cmd('query-block-exports') == {'return': []}, 'exports after stop')
        q.close()
        check(d.stop() == 0, 'exit status after SIGTERM')
    shutil.rmtree(nbd_dir, ignore_errors=True)

    # A monitor on an unknown chardev is a start-up error, as in QEMU.
    p = subprocess.run(blockd_cmd() + ['--monitor', 'chardev=nope'], capture_output=True, text=True, timeout=20)
    check(p.returncode != 0 and 'chardev "nope" not found' in p.stderr, 'unknown chardev: %r' % p.stderr)
    print('events, quit and command-line integration OK')


main()
