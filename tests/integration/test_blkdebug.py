#!/usr/bin/python3
"""blkdebug fault scripts: the same rules and the same NBD requests against
blockd and, when installed, qemu-storage-daemon; each request's outcome (ok
or the errno the NBD client sees) must be the expected one on both.  Rules
come from blockdev-add, from a config file, and from --blockdev."""
import errno
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail  # noqa: E402
from lib import errno_of, import_nbd  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402

nbd = import_nbd()
OK, EIO, ENOSPC, EPERM = 'ok', errno.EIO, errno.ENOSPC, errno.EPERM
CONFIG = '''# writes fail from the second on; a read switches to the sector-2 rule
[inject-error]
event = "write_aio"
state = "2"
errno = "28"
iotype = "write"

[set-state]
event = "write_aio"
state = "1"
new_state = "2"

[inject-error "r"]
event = "read_aio"
sector = "2"
'''

# (blkdebug options, format node on top (None, 'raw', 'qcow2'), [(request, offset, length, expected)]);
# qcow2 images hold 1 MiB of data at 0 and nothing after.
SCRIPTS = [
    ({'inject-error': [{'event': 'read_aio'}]}, 'raw',
     [('r', 0, 512, EIO), ('w', 0, 512, EIO), ('f', 0, 0, EIO)]),
    ({'inject-error': [{'event': 'read_aio'}]}, None,      # nobody raises read_aio
     [('w', 0, 512, OK), ('r', 0, 512, OK)]),
    ({'inject-error': [{'event': 'none', 'once': True, 'errno': 28}]}, None,
     [('r', 0, 512, ENOSPC), ('w', 0, 512, OK), ('r', 0, 512, OK)]),
    ({'inject-error': [{'event': 'none', 'sector': 8, 'errno': 1}]}, None,
     [('r', 0, 4096, OK), ('r', 4096, 512, EPERM), ('r', 4095, 2, EPERM), ('r', 4097, 511, OK),
      ('w', 4096, 1, EPERM), ('z', 0, 8192, EPERM), ('w', 8192, 512, OK)]),
    ({'inject-error': [{'event': 'none', 'iotype': 'write'}]}, None,
     [('r', 0, 512, OK), ('w', 0, 512, EIO), ('z', 0, 4096, OK), ('f', 0, 0, OK)]),
    ({'inject-error': [{'event': 'none', 'iotype': 'write-zeroes', 'errno': 28}]}, None,
     [('w', 0, 512, OK), ('z', 0, 4096, ENOSPC), ('z', 0, 100, ENOSPC)]),
    ({'inject-error': [{'event': 'none', 'iotype': 'discard'}]}, None,
     [('w', 0, 512, OK), ('t', 0, 4096, EIO)]),
    ({'inject-error': [{'event': 'none', 'iotype': 'discard', 'errno': 95}]}, None,
     [('t', 0, 4096, OK)]),                                   # ENOTSUP: a discard is a hint
    ({'inject-error': [{'event': 'none', 'iotype': 'block-status'}]}, None,
     [('r', 0, 512, OK), ('b', 0, 4096, EIO)]),
    ({'inject-error': [{'event': 'flush_to_disk', 'iotype': 'flush'}]}, 'raw',
     [('f', 0, 0, OK), ('w', 0, 512, OK), ('f', 0, 0, EIO), ('f', 0, 0, EIO), ('W', 0, 512, EIO)]),
    ({'inject-error': [{'event': 'pwritev'}]}, None,
     [('r', 0, 512, OK), ('w', 0, 512, EIO), ('r', 0, 512, EIO)]),
    ({'inject-error': [{'event': 'read_aio', 'state': 2}, {'event': 'write_aio', 'state': 1, 'errno': 28,
                                                           'iotype': 'write'}],
      'set-state': [{'event': 'write_aio', 'state': 1, 'new_state': 2},
                    {'event': 'read_aio', 'state': 2, 'new_state': 3}]}, 'raw',
     [('r', 0, 512, OK), ('w', 0, 512, ENOSPC), ('w', 0, 512, ENOSPC), ('r', 0, 512, EIO),
      ('r', 0, 512, EIO), ('w', 0, 512, EIO)]),
    ({'inject-error': [{'event': 'none', 'errno': 0}, {'event': 'none'}]}, None,
     [('r', 0, 512, OK)]),                                    # the first match decides
    ({'config': CONFIG}, 'raw',
     [('w', 0, 512, OK), ('w', 0, 512, ENOSPC), ('r', 0, 512, OK), ('r', 1024, 512, EIO),
      ('w', 0, 512, ENOSPC)]),
    # qcow2 raises read_aio for data clusters, l2_load for each L2 table it reads,
    # flush events for its file; the rule stays active until another event.
    ({'inject-error': [{'event': 'read_aio', 'iotype': 'read', 'once': True}]}, 'qcow2',
     [('r', 2 << 20, 512, OK), ('r', 0, 512, EIO), ('r', 0, 512, OK), ('w', 2 << 20, 512, OK)]),
    ({'inject-error': [{'event': 'l2_load', 'iotype': 'read'}]}, 'qcow2',
     [('r', 0, 512, EIO), ('r', 0, 512, EIO), ('f', 0, 0, OK), ('r', 3 << 20, 512, EIO)]),
    ({'inject-error': [{'event': 'flush_to_disk', 'iotype': 'flush', 'errno': 28}]}, 'qcow2',
     [('f', 0, 0, OK), ('w', 0, 512, OK), ('f', 0, 0, ENOSPC), ('r', 0, 512, OK)]),
]

# The same from --blockdev (lists as inject-error.0.event=...).
CLI_SCRIPTS = [SCRIPTS[2], SCRIPTS[11], SCRIPTS[13]]


def request(h, hs, kind, offset, length):
    try:
        if kind == 'r':
            h.pread(length, offset)
        elif kind in 'wW':
            h.pwrite(b'\xcd' * length, offset, nbd.CMD_FLAG_FUA if kind == 'W' else 0)
        elif kind == 'z':
            h.zero(length, offset)
        elif kind == 't':
            h.trim(length, offset)
        elif kind == 'f':
            h.flush()
        elif kind == 'b':
            hs.block_status(length, offset, lambda *a: 0)
        return OK
    except nbd.Error as e:
        return errno_of(e)


def connect(sock, structured):
    h = nbd.NBD()
    # QEMU 7.2 drops a connection whose structured read fails: plain replies for data.
    h.set_request_structured_replies(structured)
    if structured:
        h.add_meta_context('base:allocation')
    h.connect_uri('nbd+unix:///e?socket=' + sock)
    return h


def keyval(obj, prefix=''):
    """A --blockdev string for a dict of options (lists as key.N.member)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    out = []
    for k, v in items:
        if isinstance(v, (dict, list)):
            out.append(keyval(v, '%s%s.' % (prefix, k)))
        else:
            out.append('%s%s=%s' % (prefix, k, ('on' if v else 'off') if isinstance(v, bool) else v))
    return ','.join(out)


def make_image(d, fmt):
    """1 MiB of 0xab (all data: QEMU does not read holes), in a 4 MiB qcow2 image for qcow2."""
    img = d.path('img')
    if fmt != 'qcow2':
        with open(img, 'wb') as f:
            f.write(b'\xab' * (1 << 20))
        return img
    for tool in (['qemu-img', 'create', '-q', '-f', 'qcow2', img, '4M'],
                 ['qemu-io', '-f', 'qcow2', '-c', 'write -q -P 0xab 0 1M', img]):
        subprocess.run(tool, check=True, stdout=subprocess.DEVNULL)
    return img


def run_script(cmd, opts, fmt, steps, cli):
    """Sets the nodes up over QMP (or with --blockdev when `cli`), then runs the requests."""
    with Daemon(cmd) as d:
        img, sock = make_image(d, fmt), d.path('nbd.sock')
        opts = dict(opts)
        if 'config' in opts:
            with open(d.path('rules.cfg'), 'w') as f:
                f.write(opts['config'])
            opts['config'] = d.path('rules.cfg')
        nodes = [{'driver': 'file', 'node-name': 'f', 'filename': img, 'discard': 'unmap'},
                 dict(opts, driver='blkdebug', **{'node-name': 'dbg', 'image': 'f', 'discard': 'unmap'})]
        if fmt:
            nodes.append({'driver': fmt, 'node-name': 'fmt', 'file': 'dbg', 'discard': 'unmap'})
        export = {'type': 'nbd', 'id': 'e', 'node-name': nodes[-1]['node-name'], 'writable': True, 'name': 'e'}
        if cli:
            d.stop()
            args = list(cmd)
            for n in nodes:
                args += ['--blockdev', keyval(n)]
            args += ['--nbd-server', 'addr.type=unix,addr.path=' + sock, '--export', keyval(export)]
            return run_script_with(Daemon(args), sock, steps)
        q = d.qmp()
        for n in nodes:
            r = q.cmd('blockdev-add', n)
            check(r == {'return': {}}, 'blockdev-add %r: %r' % (n, r))
        r = q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}})
        check(r == {'return': {}}, repr(r))
        r = q.cmd('block-export-add', export)
        check(r == {'return': {}}, repr(r))
        q.close()
        return run_script_with(d, sock, steps)


def run_script_with(d, sock, steps):
    with d:
        d.qmp().close()    # the command line has been processed once QMP answers
        h, hs = connect(sock, False), connect(sock, True)
        got = [request(h, hs, k, o, n) for k, o, n, _ in steps]
        h.shutdown()
        hs.shutdown()
        d.stop()
        return got


def main():
    daemons = [('blockd', blockd_cmd())]
    if shutil.which('qemu-storage-daemon'):
        daemons.append(('qemu-storage-daemon', [shutil.which('qemu-storage-daemon')]))
    else:
        print('qemu-storage-daemon is not installed: checking blockd only')
    for i, (opts, fmt, steps) in enumerate(SCRIPTS + CLI_SCRIPTS):
        if fmt == 'qcow2' and not shutil.which('qemu-img'):
            continue
        want = [s[3] for s in steps]
        for name, cmd in daemons:
            got = run_script(cmd, opts, fmt, steps, i >= len(SCRIPTS))
            if got != want:
                fail('%s, rules %r%s:\n  requests %r\n  got  %r\n  want %r' % (
                    name, opts, ' under ' + fmt if fmt else '', [s[:3] for s in steps], got, want))
    print('%d scripts passed on %s' % (len(SCRIPTS + CLI_SCRIPTS), ', '.join(n for n, _ in daemons)))


if __name__ == '__main__':
    main()
