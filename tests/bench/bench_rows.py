#!/usr/bin/python3
"""Machine-readable benchmark rows, one JSON object a line, appended to the
file named by BENCH_ROWS (nothing is written when it is unset), so that
run-all.sh can print one summary table (summary.py) over every script.

    from bench_rows import row
    row('seq-read-file', 'seq read, file', 'MiB/s', True,
        {'blockd': 3100, 'qemu-nbd': 2400}, ceiling=5000, ceiling_name='socketpair',
        target='>=1.3x best peer', goal={'ratio': 1.3}, group=ISSUE)

`goal` is what summary.py checks, `target` the words it prints:
  ratio R       blockd's ratio to the peer (goal 'vs': a column name, or the
                best peer when absent) is at least R; ratios are oriented so
                that > 1 means blockd is better, for times too
  ceiling_frac  or blockd reaches this fraction of the ceiling's rate
  min / max     blockd's own value is at least / at most this (percentages)

The shell scripts call this file as a command (bench_rows.sh wraps it):
    bench_rows.py ROW TITLE UNIT higher|lower [name=value ...] [--ceiling V NAME]
                  [--target TEXT] [--goal JSON] [--group G]
Rows go in GROUPs: ISSUE (issue 18's table) or the script's own subject."""
import json
import os
import sys

ISSUE = 'issue 18'
INFO = 'info'


def _append(obj):
    path = os.environ.get('BENCH_ROWS')
    if not path:
        return
    # One write of one line: concurrent appenders (none today) would not interleave.
    with open(path, 'a') as f:
        f.write(json.dumps(obj, ensure_ascii=False) + '\n')


def row(row_id, title, unit, higher_is_better, values, ceiling=None, ceiling_name=None,
        target=None, goal=None, group=None):
    """One measured row; values maps a server column name to its median."""
    _append({'row': row_id, 'title': title, 'unit': unit, 'higher_is_better': bool(higher_is_better),
             'values': {k: (None if v is None else float(v)) for k, v in values.items()},
             'ceiling': None if ceiling is None else float(ceiling), 'ceiling_name': ceiling_name,
             'target': target, 'goal': goal or {}, 'group': group or 'other'})


def info(name, value, unit, note=''):
    """A figure about the machine (socketpair and memcpy rates) for the table's header."""
    _append({'info': name, 'value': float(value), 'unit': unit, 'note': note})


def _main(argv):
    if len(argv) < 4:
        sys.exit('usage: bench_rows.py ROW TITLE UNIT higher|lower [name=value ...] [--ceiling V NAME] '
                 '[--target TEXT] [--goal JSON] [--group G]  |  bench_rows.py --info NAME VALUE UNIT [NOTE]')
    if argv[0] == '--info':
        info(argv[1], argv[2], argv[3], argv[4] if len(argv) > 4 else '')
        return
    row_id, title, unit, order = argv[:4]
    kw, values, rest = {}, {}, argv[4:]
    while rest:
        a = rest.pop(0)
        if a == '--ceiling':
            kw['ceiling'], kw['ceiling_name'] = float(rest.pop(0)), rest.pop(0)
        elif a == '--target':
            kw['target'] = rest.pop(0)
        elif a == '--goal':
            kw['goal'] = json.loads(rest.pop(0))
        elif a == '--group':
            kw['group'] = rest.pop(0)
        else:
            name, _, v = a.partition('=')
            values[name] = float(v) if v not in ('', '-') else None
    row(row_id, title, unit, order == 'higher', values, **kw)


if __name__ == '__main__':
    _main(sys.argv[1:])
