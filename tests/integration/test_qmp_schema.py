#!/usr/bin/python3
"""query-qmp-schema: blockd lists every command it implements (and
query-commands agrees), and each command and event has the argument names,
optionality and types that qemu-storage-daemon 7.2 declares for it (QEMU
6.0's snapshot jobs: that qemu-system-x86_64 declares, when installed).
blockd may accept fewer members than QEMU, never other ones; its own
'memory' driver and the SHUTDOWN event (from QEMU's system emulator) are
the only additions."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, Qmp, blockd_cmd, qsd_cmd, check, fail

COMMANDS = {'qmp_capabilities', 'query-version', 'query-commands', 'query-qmp-schema', 'quit',
            'blockdev-add', 'blockdev-del', 'query-named-block-nodes', 'nbd-server-start',
            'nbd-server-stop', 'nbd-server-add', 'nbd-server-remove', 'block-export-add',
            'block-export-del', 'query-block-exports',
            # dirty bitmaps (issue 4)
            'block-dirty-bitmap-add', 'block-dirty-bitmap-remove', 'block-dirty-bitmap-clear',
            'block-dirty-bitmap-enable', 'block-dirty-bitmap-disable', 'block-dirty-bitmap-merge',
            'x-debug-block-dirty-bitmap-sha256', 'transaction',
            # TLS objects (issue 7)
            'object-add', 'object-del',
            # block jobs and backup (issue 5)
            'blockdev-backup', 'drive-backup', 'query-jobs', 'query-block-jobs',
            'job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-dismiss', 'job-finalize',
            'block-job-pause', 'block-job-resume', 'block-job-cancel', 'block-job-set-speed',
            'block-job-complete', 'block-job-dismiss', 'block-job-finalize',
            # mirror (issue 6)
            'blockdev-mirror', 'drive-mirror',
            # the graph (issue 13)
            'x-debug-query-block-graph',
            # external snapshots (issue 14)
            'blockdev-snapshot', 'blockdev-snapshot-sync',
            # internal snapshots and the snapshot jobs (issue 15)
            'blockdev-snapshot-internal-sync', 'blockdev-snapshot-delete-internal-sync',
            'snapshot-save', 'snapshot-load', 'snapshot-delete',
            # backing chains (issue 14)
            'block-stream', 'block-commit',
            # images (issue 14)
            'blockdev-create', 'block_resize', 'change-backing-file', 'query-block'} | {
            # blockd's downstream extensions (named by QEMU's rule: __RFQDN_name)
            '__io.blockd_block-stream-increment'}
# QEMU's rule for downstream extensions (scripts/qapi/expr.py's valid_name).
DOWNSTREAM_NAME = re.compile(r'^__[a-zA-Z0-9.-]+_[a-zA-Z][a-zA-Z0-9_-]*$')
# Commands of QEMU's system emulator, not of qemu-storage-daemon: checked
# against qemu-system-x86_64's schema when it is installed.
SYSTEM_COMMANDS = {'snapshot-save', 'snapshot-load', 'snapshot-delete'}
EVENTS = {'BLOCK_EXPORT_DELETED', 'SHUTDOWN',
          # block jobs (issue 5)
          'JOB_STATUS_CHANGE', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED', 'BLOCK_JOB_ERROR',
          'BLOCK_JOB_READY', 'BLOCK_JOB_PENDING'}
BLOCKD_ONLY_VALUES = {'memory', 'nbdkit', 'overlay'}
# Members QEMU added after 7.2 that blockd already takes (QEMU 9.1's
# handshake limit, which QEMU 7.2 applies without the option).
LATER_QEMU_MEMBERS = {'handshake-max-seconds'}


def fetch(cmd):
    with Daemon(cmd) as d:
        q = d.qmp()
        schema = q.cmd('query-qmp-schema')['return']
        commands = {c['name'] for c in q.cmd('query-commands')['return']}
        q.close()
        d.stop()
    return {e['name']: e for e in schema}, commands


def fetch_system():
    """qemu-system-x86_64's schema, or None when it is not installed."""
    exe = shutil.which('qemu-system-x86_64')
    if not exe:
        return None
    tmp = tempfile.mkdtemp(prefix='blockd-schema.')
    sock = os.path.join(tmp, 'qmp.sock')
    proc = subprocess.Popen([exe, '-machine', 'none', '-nodefaults', '-display', 'none',
                             '-qmp', 'unix:%s,server=on,wait=off' % sock],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(sock):
            check(proc.poll() is None and time.time() < deadline, 'qemu-system-x86_64 did not start')
            time.sleep(0.05)
        q = Qmp(sock)
        schema = q.cmd('query-qmp-schema')['return']
        q.close()
        return {e['name']: e for e in schema}
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def compare(ours, theirs, a, b, where, seen):
    """Our type `a` must be a restriction of QEMU's type `b`."""
    if (a, b) in seen:
        return
    seen.add((a, b))
    x, y = ours[a], theirs[b]
    check(x['meta-type'] == y['meta-type'], '%s: %s vs QEMU %s' % (where, x['meta-type'], y['meta-type']))
    mt = x['meta-type']
    if mt == 'builtin':
        check(a == b, '%s: builtin %s vs QEMU %s' % (where, a, b))
    elif mt == 'enum':
        extra = set(x['values']) - set(y['values']) - BLOCKD_ONLY_VALUES
        check(not extra, '%s: enum values %s unknown to QEMU' % (where, extra))
        check(x['values'] == [m['name'] for m in x['members']], '%s: values/members differ' % where)
    elif mt == 'array':
        compare(ours, theirs, x['element-type'], y['element-type'], where + '[]', seen)
    elif mt == 'alternate':
        for m in x['members']:
            kinds = [t['type'] for t in y['members'] if theirs[t['type']]['meta-type'] == ours[m['type']]['meta-type']]
            check(kinds, '%s: alternate branch %s not in QEMU' % (where, m['type']))
            # Builtins all share a meta-type: match them by name (null vs str).
            same = [k for k in kinds if k == m['type']]
            compare(ours, theirs, m['type'], (same or kinds)[0], where + '|', seen)
    elif mt == 'object':
        qm = {m['name']: m for m in y['members']}
        for m in x['members']:
            name = '%s.%s' % (where, m['name'])
            if m['name'] in LATER_QEMU_MEMBERS and m['name'] not in qm:
                continue
            check(m['name'] in qm, '%s: member unknown to QEMU' % name)
            check(('default' in m) == ('default' in qm[m['name']]), '%s: optionality differs' % name)
            compare(ours, theirs, m['type'], qm[m['name']]['type'], name, seen)
        check(x.get('tag') == y.get('tag'), '%s: tag %s vs %s' % (where, x.get('tag'), y.get('tag')))
        qv = {v['case']: v['type'] for v in y.get('variants', [])}
        for v in x.get('variants', []):
            if v['case'] in BLOCKD_ONLY_VALUES:
                continue
            check(v['case'] in qv, '%s: variant %s unknown to QEMU' % (where, v['case']))
            compare(ours, theirs, v['type'], qv[v['case']], '%s(%s)' % (where, v['case']), seen)


def x_type(schema, name, key):
    return schema[name].get(key, '')


def main():
    ours, our_commands = fetch(blockd_cmd())
    theirs, _ = fetch(qsd_cmd())
    listed = {n for n, e in ours.items() if e['meta-type'] == 'command'}
    check(listed == COMMANDS, 'commands in schema: %s' % sorted(listed ^ COMMANDS))
    check(our_commands == COMMANDS, 'query-commands: %s' % sorted(our_commands ^ COMMANDS))
    events = {n for n, e in ours.items() if e['meta-type'] == 'event'}
    check(events == EVENTS, 'events in schema: %s' % sorted(events ^ EVENTS))
    check(ours['0'] == {'name': '0', 'meta-type': 'object', 'members': []}, 'empty object is not "0"')
    check(ours['nbd-server-add'].get('features') == ['deprecated'], 'nbd-server-add is not deprecated')
    seen = set()
    system = fetch_system()
    for name in sorted(SYSTEM_COMMANDS):
        if system is not None:
            compare(ours, system, ours[name]['arg-type'], system[name]['arg-type'], name, set())
    for name in sorted(listed | events):
        if name in SYSTEM_COMMANDS:
            continue
        if name.startswith('__'):
            check(DOWNSTREAM_NAME.match(name), '%s does not follow QEMU\'s downstream naming rule' % name)
            for key in ('arg-type', 'ret-type'):
                for m in ours.get(x_type(ours, name, key), {}).get('members', []):
                    check(DOWNSTREAM_NAME.match(m['type']) or not m['type'].startswith('__'),
                          '%s: member type %s' % (name, m['type']))
            continue
        if name not in theirs:
            check(name == 'SHUTDOWN', '%s is not in QEMU\'s schema' % name)
            continue
        x, y = ours[name], theirs[name]
        compare(ours, theirs, x['arg-type'], y['arg-type'], name, seen)
        if 'ret-type' in x:
            compare(ours, theirs, x['ret-type'], y['ret-type'], name + '->', seen)
    # Every type name referenced is described (the schema is closed).
    for e in ours.values():
        for key in ('arg-type', 'ret-type', 'element-type'):
            if key in e:
                check(e[key] in ours, '%s: %s %s not described' % (e['name'], key, e[key]))
        for m in e.get('members', []):
            if 'type' in m:
                check(m['type'] in ours, '%s: member type %s not described' % (e['name'], m['type']))
    print('%d schema entries checked against QEMU' % len(ours))


main()
