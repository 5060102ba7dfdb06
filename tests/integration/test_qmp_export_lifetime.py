#!/usr/bin/python3
"""Export lifetime against qemu-storage-daemon: block-export-del and
nbd-server-remove in `safe` and `hard` mode while NBD clients are connected.

The same script runs against qemu-storage-daemon and blockd.  Every QMP reply
must be identical (errors: class and message), each NBD client action must
succeed or fail alike, and BLOCK_EXPORT_DELETED must come for the same ids
between the same synchronisation points (an export is only "deleted" once its
last client has gone)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, qsd_cmd, check  # noqa: E402
from lib import import_nbd  # noqa: E402

nbd = import_nbd()


def add(id, name='disk0', node='n0'):
    return ('qmp', 'block-export-add', {'type': 'nbd', 'id': id, 'node-name': node, 'name': name})


def delete(id, mode=None):
    args = {'id': id}
    if mode:
        args['mode'] = mode
    return ('qmp', 'block-export-del', args)


SCRIPT = [
    ('qmp', 'blockdev-add', {'driver': 'null-co', 'node-name': 'n0', 'size': 1048576}),
    ('qmp', 'blockdev-add', {'driver': 'null-co', 'node-name': 'n1', 'size': 2097152}),
    ('start',),
    # No client: deleted at once, the id and name are free again.
    add('e0'),
    delete('e0'),
    ('sync',),
    add('e0'),
    # A client still negotiating (no GO yet) does not hold the export.
    ('opt-connect', 'a'),
    delete('e0'),
    ('sync',),
    ('go', 'a', 'disk0'),                 # fails alike: the name is gone
    add('e0'),
    ('connect', 'b', 'disk0'),
    ('read', 'b'),
    # safe (explicit or default) refuses while a client is connected.
    delete('e0'),
    delete('e0', 'safe'),
    ('qmp', 'nbd-server-remove', {'name': 'e0'}),
    ('qmp', 'nbd-server-remove', {'name': 'e0', 'mode': 'safe'}),
    ('qmp', 'query-block-exports', None),
    ('sync',),                            # no event yet
    ('read', 'b'),                        # and the client still works
    # The client leaves by itself: safe now succeeds, at once (QEMU has
    # always seen the hang-up before it runs the next command).
    ('close', 'b'),
    delete('e0', 'safe'),
    ('qmp', 'query-block-exports', None),
    ('sync',),
    # hard disconnects the clients; the export is gone afterwards.
    add('e0'),
    add('e1', name='disk1', node='n1'),
    ('connect', 'c', 'disk0'),
    ('connect', 'd', 'disk0'),
    ('connect', 'e', 'disk1'),
    delete('e0', 'hard'),
    ('sync',),
    ('qmp', 'query-block-exports', None),
    ('read', 'c'),                        # fails: disconnected
    ('read', 'd'),
    ('read', 'e'),                        # the other export is untouched
    delete('e0', 'hard'),                 # not found any more
    add('e0'),                            # id and name are free again
    ('qmp', 'nbd-server-remove', {'name': 'e1', 'mode': 'hard'}),
    ('sync',),
    ('read', 'e'),
    ('qmp', 'query-block-exports', None),
    ('qmp', 'nbd-server-remove', {'name': 'e1'}),
    # The node is released with the export.
    ('qmp', 'blockdev-del', {'node-name': 'n1'}),
    # nbd-server-stop drops a connected client's export too.
    ('close', 'a'),
    ('close', 'c'),
    ('close', 'd'),
    ('close', 'e'),
    ('connect', 'f', 'disk0'),
    ('qmp', 'nbd-server-stop', None),
    ('sync',),
    ('read', 'f'),
    ('qmp', 'query-block-exports', None),
]


def run(cmd):
    """Runs SCRIPT; returns the list of observations."""
    out = []
    with Daemon(cmd) as d:
        q = d.qmp()
        sock = d.path('nbd.sock')
        clients = {}

        def deleted_events():
            ids = [e['data']['id'] for e in q.events if e['event'] == 'BLOCK_EXPORT_DELETED']
            q.events = [e for e in q.events if e['event'] != 'BLOCK_EXPORT_DELETED']
            return ids

        for step in SCRIPT:
            if os.environ.get("LT_DEBUG"):
                print(step, flush=True)
            kind = step[0]
            if kind == 'qmp':
                r = q.cmd(step[1], step[2])
                out.append((step, r))
            elif kind == 'start':
                r = q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
                out.append((step, r))
            elif kind == 'sync':
                # Let deletions finish, then fence with a command: every
                # event sent so far has arrived before its reply.
                time.sleep(0.3)
                q.cmd('query-version')
                out.append((step, deleted_events()))
            elif kind in ('connect', 'opt-connect'):
                h = nbd.NBD()
                if kind == 'opt-connect':
                    h.set_opt_mode(True)
                else:
                    h.set_export_name(step[2])
                h.connect_unix(sock)
                clients[step[1]] = h
                out.append((step, 'ok'))
            elif kind == 'go':
                h = clients[step[1]]
                h.set_export_name(step[2])
                try:
                    h.opt_go()
                    out.append((step, 'ok'))
                except nbd.Error as e:
                    out.append((step, 'error'))
            elif kind == 'read':
                try:
                    clients[step[1]].pread(512, 0)
                    out.append((step, 'ok'))
                except nbd.Error:
                    out.append((step, 'error'))
            elif kind == 'close':
                h = clients.pop(step[1])
                try:
                    h.shutdown()
                except nbd.Error:
                    pass  # already disconnected by the server
                del h
                out.append((step, 'ok'))
        for h in clients.values():
            del h
        clients.clear()
        q.close()
        d.stop()
    return out


def main():
    theirs = run(qsd_cmd())
    ours = run(blockd_cmd())
    check(len(ours) == len(theirs), 'step count')
    for (step, a), (_, b) in zip(ours, theirs):
        check(a == b, 'step %r: blockd %r, QEMU %r' % (step, a, b))
    # The checks above would pass vacuously if QEMU's behaviour changed
    # under us; pin the facts this test is about.
    refused = [r for s, r in theirs if s[0] == 'qmp' and 'error' in r
               and r['error']['desc'] == "export 'e0' still in use"]
    check(len(refused) == 4, 'safe refusals: %r' % refused)
    syncs = [r for s, r in theirs if s[0] == 'sync']
    check(syncs == [['e0'], ['e0'], [], ['e0'], ['e0'], ['e1'], ['e0']], 'events: %r' % syncs)
    print('%d steps matched' % len(ours))


main()
