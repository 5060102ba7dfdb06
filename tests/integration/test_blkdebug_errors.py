#!/usr/bin/python3
"""Bad blkdebug options: blockdev-add, config files and --blockdev fail with
qemu-storage-daemon 7.2's texts (checked against it when installed), and
leave no node behind."""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail  # noqa: E402

CONFIGS = [
    ('[foo]\nevent = "read_aio"\n', "There is no option group 'foo'"),
    ('[inject-error]\nevent = "read_aio"\nfoo = "1"\n', "Invalid parameter 'foo'"),
    ('[inject-error]\nerrno = "5"\n', 'Missing event name for rule'),
    ('[set-state]\nevent = "bogus"\n', 'invalid parameter value: bogus'),
    ('[inject-error]\nevent = "read_aio"\niotype = "bogus"\n', 'invalid parameter value: bogus'),
    ('[inject-error]\nevent = "read_aio"\nerrno = "x"\n', "Parameter 'errno' expects a number"),
    ('[inject-error]\nevent = "read_aio"\nsector = "1k"\n', "Parameter 'sector' expects a number"),
    ('[inject-error]\nevent = "read_aio"\nonce = "maybe"\n', "Parameter 'once' expects 'on' or 'off'"),
    ('[inject-error]\nevent = read_aio\n', 'invalid parameter value: '),      # unquoted reads as ""
    ('[inject-error]\nerrno="5"\n', 'Invalid parameter \'errno="5"\''),     # no spaces: one word
    ('event = "read_aio"\n', 'no group defined'),
    ('[inject-error]\n   \nevent = "read_aio"\n', 'parse error'),
]

ADDS = [
    ({}, "Parameter 'image' is missing"),
    ({'image': 'nosuch'}, "Cannot find device='nosuch' nor node-name='nosuch'"),
    ({'inject-error': [{'event': 'bogus'}]}, "Parameter 'event' does not accept value 'bogus'"),
    ({'inject-error': [{}]}, "Parameter 'inject-error[0].event' is missing"),
    ({'inject-error': [{'event': 'read_aio', 'iotype': 'x'}]}, "Parameter 'iotype' does not accept value 'x'"),
    ({'inject-error': [{'event': 'read_aio', 'errno': 'x'}]},
     "Invalid parameter type for 'inject-error[0].errno', expected: integer"),
    ({'set-state': [{'event': 'read_aio'}]}, "Parameter 'set-state[0].new_state' is missing"),
    ({'set-state': [{'event': 'read_aio', 'new_state': 2, 'foo': 1}]},
     "Parameter 'set-state[0].foo' is unexpected"),
    ({'align': 3}, 'Cannot meet constraints with align 3'),
    ({'align': -1}, "Parameter 'align' expects a non-negative number below 2^64"),
    ({'align': 4096, 'max-transfer': 1000}, 'Cannot meet constraints with max-transfer 1000'),
    ({'max-transfer': 3000000000}, "Parameter 'max-transfer' expects int32_t"),
    ({'opt-write-zero': 4096, 'max-write-zero': 1024}, 'Cannot meet constraints with max-write-zero 1024'),
    ({'opt-discard': 4096, 'max-discard': 1024}, 'Cannot meet constraints with max-discard 1024'),
    ({'config': '/nonexistent/rules'}, 'Could not read blkdebug config file: No such file or directory'),
    ({'image': {'driver': 'file', 'filename': '/nonexistent/img'}},
     "Could not open '/nonexistent/img': No such file or directory"),
    ({'image': {'driver': 'file', 'node-name': 'inner', 'filename': 'IMG'}, 'align': 3},
     'Cannot meet constraints with align 3'),
]

CLI = [
    ('inject-error.0.event=bogus', "Parameter 'event' does not accept value 'bogus'"),
    ('inject-error.0.errno=5', "Parameter 'inject-error.0.event' is missing"),
    ('inject-error.0.event=none,inject-error.0.once=maybe', "Parameter 'inject-error.0.once' expects 'on' or 'off'"),
    ('set-state.0.event=none', "Parameter 'set-state.0.new_state' is missing"),
]


def errors(cmd):
    """Every error text, in order, from one daemon."""
    out = []
    with Daemon(cmd) as d:
        img = d.path('img')
        with open(img, 'wb') as f:
            f.truncate(1 << 20)
        q = d.qmp()
        check(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'f', 'filename': img}) == {'return': {}}, 'file')
        adds = [({'config': d.path('c%d' % i)}, want) for i, (_, want) in enumerate(CONFIGS)] + ADDS
        for i, (text, _) in enumerate(CONFIGS):
            with open(d.path('c%d' % i), 'w') as f:
                f.write(text)
        for opts, _ in adds:
            args = dict({'driver': 'blkdebug', 'node-name': 'd', 'image': 'f'}, **opts)
            if isinstance(args['image'], dict) and args['image']['filename'] == 'IMG':
                args['image'] = dict(args['image'], filename=img)
            if not opts and 'image' in args:
                del args['image']
            r = q.cmd('blockdev-add', args)
            out.append(r.get('error', {}).get('desc', r))
        nodes = [n['node-name'] for n in q.cmd('query-named-block-nodes')['return']]
        check(nodes == ['f'], 'nodes left behind: %r' % nodes)
        q.close()
        d.stop()
        for opts, _ in CLI:
            p = subprocess.run(cmd + ['--blockdev', 'driver=file,node-name=f,filename=' + img, '--blockdev',
                                      'driver=blkdebug,node-name=d,image=f,' + opts],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=20)
            check(p.returncode != 0, '%s accepted %s' % (cmd[0], opts))
            out.append(p.stderr.strip().split(': ', 2)[-1])
    return out


def main():
    want = [w for _, w in CONFIGS + ADDS + CLI]
    daemons = [blockd_cmd()] + ([[shutil.which('qemu-storage-daemon')]] if shutil.which('qemu-storage-daemon') else [])
    for cmd in daemons:
        got = errors(cmd)
        for g, w in zip(got, want):
            if g != w:
                fail('%s: %r, expected %r' % (os.path.basename(cmd[0]), g, w))
    print('%d errors as QEMU on %d daemons' % (len(want), len(daemons)))


if __name__ == '__main__':
    main()
