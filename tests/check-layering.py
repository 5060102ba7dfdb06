#!/usr/bin/python3
"""The layering rule of DESIGN.md, checked on the sources: each part may
include headers only from itself and the parts below it.

    server/ -> jobs/ -> bitmaps/ -> block/ -> objects/, plugins/

block/ may also use bitmaps/hbitmap.h, the pure data structure (no I/O, no
locks, no other includes of blockd).  Exits 1 naming every offending
#include; it also fails if a rule names a part that has no sources (so a
rename cannot silently turn the check off)."""
import os
import re
import sys

SOURCE_DIR = os.environ.get('SOURCE_DIR') or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# part -> parts it may include from (itself always allowed)
ALLOWED = {
    'jobs': {'bitmaps', 'block', 'objects'},
    'bitmaps': {'block', 'objects'},
    'block': {'objects', 'plugins'},
    'objects': set(),
    'plugins': set(),
}
EXCEPTIONS = {('block', 'bitmaps/hbitmap.h')}
PARTS = {'server', 'jobs', 'bitmaps', 'block', 'objects', 'plugins', 'qapi', 'tools', 'tests'}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def main():
    bad = []
    for part, allowed in ALLOWED.items():
        top = os.path.join(SOURCE_DIR, part)
        files = [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs if f.endswith(('.c', '.h'))]
        if not files:
            bad.append('%s/: no sources (rule out of date?)' % part)
        for path in files:
            with open(path, encoding='utf-8') as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                first = inc.split('/')[0]
                if '/' not in inc or first not in PARTS or first == part:
                    continue  # local header ("host-internal.h") or same part
                if first in allowed or (part, inc) in EXCEPTIONS:
                    continue
                bad.append('%s includes "%s" (%s/ may use only %s)'
                           % (os.path.relpath(path, SOURCE_DIR), inc, part,
                              ', '.join(sorted(a + '/' for a in allowed if a in PARTS)) or 'itself'))
    for line in bad:
        print('LAYERING:', line)
    if bad:
        sys.exit(1)
    print('layering OK: %s' % ', '.join('%s/ -> {%s}' % (p, ', '.join(sorted(a for a in al if a in PARTS)))
                                        for p, al in ALLOWED.items()))


main()
