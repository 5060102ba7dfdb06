#!/usr/bin/python3
"""blockctl's command line: usage errors (unknown options, extra or missing
words, bad sizes and values) exit 2 with the message and the usage on stderr
and change nothing; every command has --help; sizes take k/M/G; the bitmap
commands (add, list with dirty counts changing as the node is written,
clear, merge, enable, disable, remove); --json output parses for every
query command; events carry local, human timestamps."""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, blockd_cmd, check, fail, ok, write  # noqa: E402

SIZE = 4 << 20
BLOCKCTL = os.path.join(os.environ.get('BUILD_DIR', 'build'), 'tools', 'blockctl')
COMMANDS = ['nodes', 'exports', 'add-file', 'export', 'unexport', 'qmp', 'events', 'bitmap add', 'bitmap list',
            'bitmap remove', 'bitmap clear', 'bitmap enable', 'bitmap disable', 'bitmap merge', 'backup',
            'restore', 'mirror', 'jobs', 'job']


def main():
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        img = d.path('src.raw')
        with open(img, 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'src', 'filename': img}), 'blockdev-add')
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'src', 'node-name': 'src', 'writable': True}), 'export')
        ok(q.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'sink', 'size': SIZE}), 'null target')

        def ctl(*args, sock=d.socks[0]):
            return subprocess.run([BLOCKCTL, '-s', sock] + list(args), capture_output=True, text=True, timeout=60)

        def state():
            return (q.cmd('query-named-block-nodes')['return'], q.cmd('query-jobs')['return'],
                    q.cmd('query-block-exports')['return'], sorted(os.listdir(d.tmp)))

        # Usage errors: status 2, the message and the usage line, nothing changed.
        before = state()
        for args, want in (
                (('bitmap',), 'bitmap needs a command'),
                (('bitmap', 'frob'), "unknown command 'bitmap frob'"),
                (('bitmap', 'add', 'src'), 'bitmap add needs more arguments'),
                (('bitmap', 'add', 'src', 'b', 'extra'), "unexpected 'extra'"),
                (('bitmap', 'add', 'src', 'b', '--granularity', '64q'), "bad --granularity '64q'"),
                (('bitmap', 'add', 'src', 'b', '--granularity'), "unknown or incomplete option '--granularity'"),
                (('bitmap', 'add', 'src', 'b', '--persistant'), "unknown or incomplete option '--persistant'"),
                (('bitmap', 'add', 'src', 'b', '--disabled=yes'), "unknown or incomplete option '--disabled=yes'"),
                (('bitmap', 'list', 'src', 'more'), "unexpected 'more'"),
                (('bitmap', 'remove', 'src'), 'bitmap remove needs more arguments'),
                (('bitmap', 'clear'), 'bitmap clear needs more arguments'),
                (('bitmap', 'merge', 'src', 'b'), 'bitmap merge needs more arguments'),
                (('backup', 'src', 'extra', '--to', 'sink'), "unexpected 'extra'"),
                (('backup', 'src', '--to', 'sink', '--granularity', '1M'), '--granularity are for the bitmap'),
                (('backup', 'src', '--to', 'sink', '--backing', './x'), '--backing and --format are for a file'),
                (('backup', 'src', '--incremental', '--to', './f', '--format', 'vmdk'), "bad --format 'vmdk'"),
                (('backup', 'src', '--incremental', '--to', 'sink', '--granularity', 'big'),
                 "bad --granularity 'big'"),
                (('backup', 'src', '--to', 'sink', '--speed=fast'), "bad --speed 'fast'"),
                (('restore', '--to', './o'), 'restore needs an argument'),
                (('restore', './full'), '--to is required'),
                (('restore', './full', '--to', './o', '--verify', 'file'), "bad --verify 'file'"),
                (('restore', './full', '--to', 'sink', '--verify', 'nbd://h/e'), '--verify reads the restored'),
                (('restore', './full', '--to', './o', '--format', 'qcow2', '--verify', 'nbd://h/e'),
                 '--verify reads the restored'),
                (('mirror', 'src', '--to', 'sink', '--bogus'), "unknown or incomplete option '--bogus'"),
                (('mirror', 'src', 'x', '--to', 'sink'), "unexpected 'x'"),
                (('events', 'x'), "unexpected 'x'"),
                (('jobs', '--all'), "unknown or incomplete option '--all'"),
                (('exports', 'x'), "unexpected 'x'"),
                (('unexport',), 'unexport needs an argument'),
                (('unexport', 'a', 'b'), "unexpected 'b'"),
                (('qmp', '{bad json'), 'invalid JSON'),
                (('qmp', 'query-jobs', '[1]'), 'arguments must be a JSON object'),
                (('job', 'frob', 'x'), "unknown job verb 'frob'"),
                (('job', 'pause', 'x', 'y'), "unexpected 'y'"),
                (('--bogus', 'nodes'), 'Unknown option --bogus')):
            r = ctl(*args)
            check(r.returncode == 2 and r.stderr.startswith('blockctl: ') and want in r.stderr and not r.stdout,
                  '%r: %d %r' % (args, r.returncode, r.stderr))
            if args[0] != '--bogus':
                check('usage: blockctl ' + args[0] in r.stderr, '%r: no usage line: %r' % (args, r.stderr))
        check(state() == before, 'a usage error changed something')

        # --help for every command, and the summary.
        for name in COMMANDS:
            r = ctl(*name.split(), '--help')
            check(r.returncode == 0 and r.stdout.startswith('usage: blockctl ' + name), '%s --help: %r' % (name, r))
        r = ctl('bitmap', '--help')
        check(r.returncode == 0 and r.stdout.count('usage: blockctl bitmap') == 7, 'bitmap --help: %r' % r.stdout)
        r = ctl('--help')
        check(r.returncode == 0 and all(('  ' + n) in r.stdout for n in COMMANDS), '--help: %r' % r.stdout)

        # Bitmaps: sizes with suffixes, counts that follow the writes.
        def listed(*args):
            r = ctl('bitmap', 'list', *args)
            check(r.returncode == 0 and r.stdout.split()[:5] == ['NODE', 'NAME', 'GRANULARITY', 'DIRTY', 'STATE'],
                  'bitmap list: %r' % (r,))
            return {cols[1]: (int(cols[2]), int(cols[3]), cols[4])
                    for cols in (line.split() for line in r.stdout.splitlines()[1:])}

        check(listed() == {}, 'bitmaps at start')
        check(ctl('bitmap', 'add', 'src', 'b1', '--granularity', '128k').returncode == 0, 'add b1')
        check(ctl('bitmap', 'add', 'src', 'b2', '--disabled', '--granularity=64k').returncode == 0, 'add b2')
        check(ctl('bitmap', 'add', 'src', 'p', '--persistent').returncode == 0, 'add p')
        check(listed('src') == {'b1': (131072, 0, 'recording'), 'b2': (65536, 0, 'disabled'),
                                'p': (65536, 0, 'recording,persistent')}, 'bitmaps after add: %r' % listed())
        write(d, 'src', 0, b'\x01' * 4096)
        check(listed()['b1'][1] == 131072 and listed()['b2'][1] == 0, 'after one write: %r' % listed())
        write(d, 'src', 1 << 20, b'\x01' * 4096)
        check(listed()['b1'][1] == 262144 and listed()['p'][1] == 131072, 'after two writes: %r' % listed())
        check(ctl('bitmap', 'merge', 'src', 'b2', 'b1').returncode == 0, 'merge')
        check(listed()['b2'][1] == 262144, 'merge into b2: %r' % listed())
        check(ctl('bitmap', 'clear', 'src', 'b1').returncode == 0 and listed()['b1'][1] == 0, 'clear')
        check(ctl('bitmap', 'disable', 'src', 'b1').returncode == 0 and listed()['b1'][2] == 'disabled', 'disable')
        write(d, 'src', 2 << 20, b'\x01' * 4096)
        check(listed()['b1'][1] == 0, 'a disabled bitmap recorded a write')
        check(ctl('bitmap', 'enable', 'src', 'b1').returncode == 0 and listed()['b1'][2] == 'recording', 'enable')
        for name in ('b1', 'b2', 'p'):
            check(ctl('bitmap', 'remove', 'src', name).returncode == 0, 'remove ' + name)
        check(listed() == {}, 'bitmaps after remove: %r' % listed())
        r = ctl('bitmap', 'remove', 'src', 'b1')
        check(r.returncode == 1 and "Dirty bitmap 'b1' not found" in r.stderr, 'remove twice: %r' % (r,))
        r = ctl('bitmap', 'list', 'nosuch')
        check(r.returncode == 1 and "node-name='nosuch'" in r.stderr, 'list of a missing node: %r' % (r,))
        # --granularity of the bitmap a first --incremental adds.
        r = ctl('backup', 'src', '--incremental', '--bitmap', 'g', '--granularity', '256k', '--to', 'sink')
        check(r.returncode == 0 and listed()['g'][0] == 262144, 'backup --granularity: %r %r' % (r, listed()))

        # --json parses for every query command (a slow job runs, so jobs has a row).
        r = ctl('backup', 'src', '--to', 'sink', '--speed', '1k', '--job', 'slow')
        check(r.returncode == 0, 'slow backup: %r' % (r,))
        for args, check_json in ((('nodes',), lambda j: {n['node-name'] for n in j} == {'src', 'sink'}),
                                 (('exports',), lambda j: [e['id'] for e in j] == ['src']),
                                 (('jobs',), lambda j: [x['device'] for x in j] == ['slow']),
                                 (('bitmap', 'list'), lambda j: [(b['node'], b['name'], b['granularity'])
                                                                 for b in j] == [('src', 'g', 262144)]),
                                 (('bitmap', 'list', 'src'), lambda j: j[0]['count'] >= 0 and not j[0]['busy'])):
            for form in (('--json',) + args, args + ('--json',)):
                r = ctl(*form)
                check(r.returncode == 0 and check_json(json.loads(r.stdout)), '%r: %r' % (form, r))
        ok(q.cmd('job-cancel', {'id': 'slow'}), 'cancel')

        # events: local time from the event's timestamp; --json has the raw event.
        human = subprocess.Popen([BLOCKCTL, '-s', d.socks[0], 'events'], stdout=subprocess.PIPE, text=True)
        raw = subprocess.Popen([BLOCKCTL, '-s', d.socks[0], 'events', '--json'], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # both connected
        ok(q.cmd('block-export-del', {'id': 'src'}), 'block-export-del')
        line, event = human.stdout.readline(), json.loads(raw.stdout.readline())
        human.kill()
        raw.kill()
        human.wait()
        raw.wait()
        ts = event['timestamp']
        when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ts['seconds'])) + '.%06d' % ts['microseconds']
        check(event['event'] == 'BLOCK_EXPORT_DELETED' and line.startswith(when + ' BLOCK_EXPORT_DELETED {'),
              'events: %r vs %r' % (line, event))
        check(re.match(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} ', line), 'timestamp format: %r' % line)
        q.close()
        if d.stop() != 0:
            fail('daemon exit status')
    print('blockctl command line OK')


main()
