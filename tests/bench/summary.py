#!/usr/bin/python3
"""One table over every benchmark's rows (issue 18's report), printed by
run-all.sh at the end of `make bench`.

    tests/bench/summary.py ROWS.jsonl

ROWS.jsonl is what the scripts appended through bench_rows.py.  Issue 18's
rows come first, in the issue's order, each listed even when not measured
(a script failed or was not selected), then every other group in the order
the scripts ran.  A row measured twice (scripts run again into the same
file) shows its last figures."""
import json
import sys

from bench_rows import ISSUE

# Issue 18's table, in its order: (row id, what the issue calls it).
ISSUE_ROWS = [
    ('seq-read-file', 'sequential read'), ('seq-read-memory', 'sequential read, memory'),
    ('seq-write-file', 'sequential write'), ('seq-write-memory', 'sequential write, memory'),
    ('randwrite-qd16-file', '4 KiB random write QD16'), ('randwrite-qd16-memory', '4 KiB random write QD16, memory'),
    ('randread-qd16-file', '4 KiB random read QD16'), ('randread-qd16-memory', '4 KiB random read QD16, memory'),
    ('randread-qd1-file', '4 KiB random read QD1'), ('randread-qd1-memory', '4 KiB random read QD1, memory'),
    ('map-allocation', 'nbdinfo --map'), ('map-dirty-bitmap', 'nbdinfo --map=qemu:dirty-bitmap'),
    ('full-backup', 'full backup to nbdkit memory'), ('incremental-backup', 'incremental backup to qemu-nbd'),
    ('mirror-background-qd16', 'write IOPS, READY background mirror'),
    ('mirror-write-blocking-qd16', 'write IOPS, write-blocking mirror'),
]
PEERS = ['qemu-nbd', 'qemu-storage-daemon', 'nbdkit-file', 'nbdkit-memory']
SHORT = {'qemu-storage-daemon': 'qsd', 'nbdkit-memory': 'nbdkit-mem'}   # column headings


def num(v):
    if v is None:
        return '-'
    a = abs(v)
    return '%.0f' % v if a >= 100 else '%.1f' % v if a >= 10 else '%.2f' % v if a >= 0.1 else '%.3g' % v


def better(r, b, other):
    """blockd's ratio to `other`, > 1 when blockd is better (times inverted)."""
    if not b or not other or b <= 0 or other <= 0:
        return None
    return b / other if r['higher_is_better'] else other / b


def judge(r):
    """(blockd/best peer, blockd/ceiling, met: 'yes', 'no', 'no*' (the
    target lies beyond the ceiling) or '' (no target))."""
    vals, goal = r['values'], r.get('goal') or {}
    b = vals.get('blockd')
    peers = [v for k, v in vals.items() if not k.startswith('blockd') and v]
    best = None
    if peers:
        best = max(peers) if r['higher_is_better'] else min(peers)
    r_best = better(r, b, best)
    r_ceil = better(r, b, r.get('ceiling'))
    if not goal or b is None:
        return r_best, r_ceil, ''
    peer = vals.get(goal['vs']) if 'vs' in goal else best
    conds = []
    if 'ratio' in goal and peer:
        conds.append(better(r, b, peer) >= goal['ratio'] - 1e-9)
    if 'ceiling_frac' in goal and r_ceil is not None:
        conds.append(r_ceil >= goal['ceiling_frac'])
    if 'min' in goal:
        conds.append(b >= goal['min'])
    if 'max' in goal:
        conds.append(b <= goal['max'])
    if not conds:
        return r_best, r_ceil, '?'
    if any(conds):
        return r_best, r_ceil, 'yes'
    # Out of reach: the ratio asked for would put blockd past the ceiling.
    c = r.get('ceiling')
    if 'min' in goal and c is not None and len(conds) == 1 and c < goal['min']:
        return r_best, r_ceil, 'no*'
    if 'ratio' in goal and 'ceiling_frac' not in goal and c and peer:
        need = peer * goal['ratio'] if r['higher_is_better'] else peer / goal['ratio']
        if (need > c) if r['higher_is_better'] else (need < c):
            return r_best, r_ceil, 'no*'
    return r_best, r_ceil, 'no'


def load(path):
    rows, infos = {}, {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if 'info' in obj:
                infos[obj['info']] = obj
            else:
                rows.pop(obj['row'], None)   # keep the run order of the last one
                rows[obj['row']] = obj
    return rows, infos


def main(path):
    rows, infos = load(path)
    extra = []   # other columns some script measured (blockd-before)
    for r in rows.values():
        extra += [k for k in r['values'] if k != 'blockd' and k not in PEERS and k not in extra]
    cols = ['blockd'] + PEERS + extra
    head = ['workload', 'unit'] + [SHORT.get(c, c) for c in cols] + \
        ['ceiling', 'vs best', 'vs ceil', 'target', 'met?']
    lines = []

    def add(title, r):
        r_best, r_ceil, met = judge(r)
        ceil = '-' if r.get('ceiling') is None else '%s %s' % (num(r['ceiling']), r.get('ceiling_name') or '')
        unit = r['unit'] + ('' if r['higher_is_better'] else ' (lower)')
        lines.append([title, unit] + [num(r['values'].get(c)) for c in cols] +
                     [ceil, num(r_best) + 'x' if r_best else '-', '%.0f %%' % (100 * r_ceil) if r_ceil else '-',
                      r.get('target') or '-', met or '-'])

    missing = []
    lines.append(['== issue 18'])
    for row_id, name in ISSUE_ROWS:
        if row_id in rows:
            r = rows.pop(row_id)
            add(r['title'], r)
        else:
            missing.append(name)
    groups = []
    for r in rows.values():
        if r['group'] not in groups:
            groups.append(r['group'])
    for g in groups:
        lines.append(['== ' + g + (' (not in issue 18\'s list)' if g == ISSUE else '')])
        for r in rows.values():
            if r['group'] == g:
                add(r['title'], r)

    widths = [max(len(ln[i]) for ln in lines + [head] if len(ln) > 1) for i in range(len(head))]
    print('blockd benchmark summary: medians of runs alternating blockd and its peers in this run.')
    for name in ('socketpair', 'memcpy', 'dd into tmpfs', 'socket into tmpfs'):
        if name in infos:
            print('  machine: %-17s %8s %s  (%s)' % (name, num(infos[name]['value']), infos[name]['unit'],
                                                  infos[name]['note']))
    print('  qsd = qemu-storage-daemon.  "vs best": blockd / the best peer, > 1 means blockd is better; for\n'
          '  times ("lower") it is the peer\'s time / blockd\'s.  "vs ceil": blockd\'s share of the ceiling\'s\n'
          '  rate (for times, ceiling time / blockd\'s).  met? no* = the target lies beyond the ceiling.')
    print()
    fmt = lambda ln: '  '.join(c.ljust(w) if i < 2 or i >= len(head) - 2 else c.rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(ln, widths))).rstrip()
    print(fmt(head))
    for ln in lines:
        print(ln[0] if len(ln) == 1 else fmt(ln))
    if missing:
        print('\nissue 18 rows not measured in this run: ' + '; '.join(missing))


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: summary.py ROWS.jsonl')
    main(sys.argv[1])
