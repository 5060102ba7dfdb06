#!/usr/bin/python3
"""driver=nbdkit over QMP: blockdev-add with the `args` map, query-qmp-schema
describing it, errors that name the plugin and the parameter (bad name, bad
path, not a plugin, missing callback, rejected parameter, crash and exit in
config) with blockd still serving afterwards, plugin errors reaching NBD
clients with the plugin's errno, and blockdev-del unloading only that
node's private instance of the plugin."""
import errno
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, skip

import nbd

BUILD = os.environ.get('BUILD_DIR', '')
TESTPLUGINS = os.path.join(BUILD, 'tests', 'unit', 'plugin-host')
MISBEHAVING = os.path.join(TESTPLUGINS, 'nbdkit-misbehaving-plugin.so')
NO_GET_SIZE = os.path.join(TESTPLUGINS, 'nbdkit-no-get-size-plugin.so')
if not os.path.exists(MISBEHAVING):
    skip('test plugins not built')


def add(q, name, plugin, **args):
    a = {'driver': 'nbdkit', 'node-name': name, 'plugin': plugin}
    if args:
        a['args'] = {k.replace('_', '-'): v for k, v in args.items()}
    return q.cmd('blockdev-add', a)


def error_of(r):
    check('error' in r, 'expected an error, got %r' % r)
    return r['error']['desc']


def instances(pid, soname):
    """Distinct private copies of `soname` mapped in the process."""
    with open('/proc/%d/maps' % pid) as f:
        return {line.split()[4] for line in f if soname in line}


with Daemon(blockd_cmd()) as d:
    q = d.qmp()
    pid = d.proc.pid

    # The schema: BlockdevOptions' nbdkit branch has plugin (str) and an
    # optional args object whose members are all strings.
    schema = {e['name']: e for e in q.cmd('query-qmp-schema')['return']}
    add_cmd = schema['blockdev-add']
    opts = schema[add_cmd['arg-type']]
    branch = [v['type'] for v in opts['variants'] if v['case'] == 'nbdkit']
    check(branch, 'no nbdkit variant in BlockdevOptions')
    members = {m['name']: m for m in schema[branch[0]]['members']}
    check(members['plugin']['type'] == 'str' and 'default' not in members['plugin'], 'plugin member')
    check('default' in members['args'], 'args is not optional')
    args_t = schema[members['args']['type']]
    check(args_t['meta-type'] == 'object' and args_t['members'] == [] and
          args_t.get('additional-members-type') == 'str', 'args type: %r' % args_t)
    check('nbdkit' in schema[[m for m in opts['members'] if m['name'] == 'driver'][0]['type']]['values'],
          'nbdkit not in BlockdevDriver')

    # Two instances of one plugin with different parameters.
    check(add(q, 'd1', 'data', data='1 2 3', size='1M') == {'return': {}}, 'add d1')
    check(add(q, 'd2', 'data', data='7 7', size='2M') == {'return': {}}, 'add d2')
    check(add(q, 'p1', 'pattern', size='64k') == {'return': {}}, 'add p1')
    check(add(q, 'bad', MISBEHAVING, eio='4096') == {'return': {}}, 'add misbehaving')
    sizes = {n['node-name']: n['image']['virtual-size'] for n in q.cmd('query-named-block-nodes')['return']}
    check(sizes == {'d1': 1 << 20, 'd2': 2 << 20, 'p1': 65536, 'bad': 1 << 20}, 'sizes: %r' % sizes)
    copies = instances(pid, 'nbdkit-data-plugin.so')
    check(len(copies) == 2, 'expected 2 private copies of the data plugin, got %r' % copies)

    # Non-string parameter values are refused by the schema.
    r = q.cmd('blockdev-add', {'driver': 'nbdkit', 'node-name': 'x', 'plugin': 'data', 'args': {'size': 5}})
    check("args.size" in error_of(r) and 'string' in error_of(r), 'non-string arg: %r' % r)

    # Errors name the plugin and the parameter; nothing is left behind.
    cases = [
        (('nosuch', 'no-such-plugin-xyz'), {}, ["'no-such-plugin-xyz'", 'is it installed']),
        (('nosuch', '/nonexistent/plugin.so'), {}, ['/nonexistent/plugin.so', 'No such file']),
        (('nosuch', '/etc/hostname'), {}, ['/etc/hostname', 'cannot load plugin']),
        (('nosuch', NO_GET_SIZE), {}, ['must have a .get_size callback']),
        (('nosuch', 'data'), {'size': '12 parsecs', 'data': '1'}, ["data: parameter 'size'", 'parsecs']),
        (('nosuch', 'memory'), {'colour': 'red'}, ["memory", "colour"]),
        (('nosuch', 'data'), {}, ['data: ', 'data parameter was not specified']),
        (('nosuch', MISBEHAVING), {'size': '1M', 'crash': '1'},
         ["'misbehaving' crashed", "parameter 'crash'"]),
        (('nosuch', MISBEHAVING), {'exit': '1'}, ["'misbehaving' exited (status 3)", "parameter 'exit'"]),
        (('nosuch', MISBEHAVING), {'fail': 'the moon is full'}, ["misbehaving: parameter 'fail': the moon is full"]),
    ]
    for (name, plugin), args, expect in cases:
        msg = error_of(add(q, name, plugin, **args))
        for e in expect:
            check(e in msg, '%s %r: %r lacks %r' % (plugin, args, msg, e))
    nodes = {n['node-name'] for n in q.cmd('query-named-block-nodes')['return']}
    check(nodes == {'d1', 'd2', 'p1', 'bad'}, 'nodes after errors: %r' % nodes)
    check(len(instances(pid, 'nbdkit-data-plugin.so')) == 2, 'failed adds left plugin copies mapped')

    # Still serving: export the nodes and read them.
    sock = d.path('nbd.sock')
    check(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}) == {'return': {}},
          'nbd-server-start')
    for n in ('d1', 'd2', 'bad'):
        check(q.cmd('block-export-add', {'type': 'nbd', 'id': n, 'node-name': n}) == {'return': {}},
              'export %s' % n)

    def client(name):
        h = nbd.NBD()
        h.set_export_name(name)
        h.connect_unix(sock)
        return h
    h1, h2 = client('d1'), client('d2')
    check(h1.pread(4, 0) == b'\x01\x02\x03\x00', 'd1 data: %r' % h1.pread(4, 0))
    check(h2.pread(4, 0) == b'\x07\x07\x00\x00', 'd2 data: %r' % h2.pread(4, 0))
    h1.shutdown()
    h2.shutdown()

    # The plugin's nbdkit_set_error(ENOSPC) reaches the client as ENOSPC.
    hb = client('bad')
    check(hb.pread(512, 0) == b'\xab' * 512, 'misbehaving read')
    try:
        hb.pread(512, 4096)
        check(False, 'read at the failing offset succeeded')
    except nbd.Error as e:
        check(e.errno in (errno.ENOSPC, 'ENOSPC'), 'errno %r, expected ENOSPC' % e.errno)
    hb.shutdown()

    # blockdev-del unloads only that node's instance.
    for n in ('d1', 'd2', 'bad'):
        check(q.cmd('block-export-del', {'id': n}) == {'return': {}}, 'block-export-del %s' % n)
    q.wait_event('BLOCK_EXPORT_DELETED')
    for _ in range(50):
        r = q.cmd('blockdev-del', {'node-name': 'd1'})
        if 'return' in r:
            break
        time.sleep(0.1)
    check(r == {'return': {}}, 'blockdev-del d1: %r' % r)
    left = instances(pid, 'nbdkit-data-plugin.so')
    check(len(left) == 1 and left < copies, 'after deleting d1: %r (before %r)' % (left, copies))
    # d2 is still there.
    sizes = {n['node-name']: n['image']['virtual-size'] for n in q.cmd('query-named-block-nodes')['return']}
    check(sizes.get('d2') == 2 << 20 and 'd1' not in sizes, 'nodes after delete: %r' % sizes)
    # A new d1 with other data gets a fresh instance.
    check(add(q, 'd1', 'data', data='5', size='512') == {'return': {}}, 're-add d1')
    check(len(instances(pid, 'nbdkit-data-plugin.so')) == 2, 're-added d1 has no copy of its own')
    for n in ('d1', 'd2'):
        for _ in range(50):
            r = q.cmd('blockdev-del', {'node-name': n})
            if 'return' in r:
                break
            time.sleep(0.1)
        check(r == {'return': {}}, 'blockdev-del %s: %r' % (n, r))
    check(not instances(pid, 'nbdkit-data-plugin.so'), 'data plugin still mapped after deleting every node')
    q.close()
    st = d.stop()
    check(st == 0, 'blockd exit status %r: %s' % (st, d.stderr_text()[-3000:]))
print('PASS')
