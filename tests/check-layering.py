#!/usr/bin/python3
"""The layering rule of DESIGN.md, checked on the sources: each part may
include headers only from itself and the parts below it.

    server/ -> jobs/ -> bitmaps/ -> block/ -> objects/, plugins/ -> qapi/

qapi/ is the generated types and their visitor runtime (qapi/qapi-visit.h):
block/ creates nodes from the generated option structs, so it may include
"qapi/qapi-types.h", but nothing of server/ (the QMP half of the runtime,
server/qmp/qapi-runtime.h, included).  The generated qapi-types.h in the
build directory ($BUILD_DIR) is checked as part of qapi/.  block/ may also
use bitmaps/hbitmap.h, the pure data structure (no I/O, no locks, no other
includes of blockd).  Exits 1 naming every offending #include; it also
fails if a rule names a part that has no sources (so a rename cannot
silently turn the check off), and first checks itself on a small tree
that breaks the rule."""
import os
import re
import sys
import tempfile

SOURCE_DIR = os.environ.get('SOURCE_DIR') or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_DIR = os.environ.get('BUILD_DIR')

# part -> parts it may include from (itself always allowed)
ALLOWED = {
    'jobs': {'bitmaps', 'block', 'objects', 'qapi'},
    'bitmaps': {'block', 'objects', 'qapi'},
    'block': {'objects', 'plugins', 'qapi'},
    'objects': {'qapi'},
    'plugins': set(),
    'qapi': set(),
}
EXCEPTIONS = {('block', 'bitmaps/hbitmap.h')}
PARTS = {'server', 'jobs', 'bitmaps', 'block', 'objects', 'plugins', 'qapi', 'tools', 'tests'}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
# Generated headers of a part, in the build directory.
GENERATED = {'qapi': ['qapi/qapi-types.h']}


def check(source_dir, build_dir):
    """The offending includes (and empty parts) of the tree at source_dir."""
    bad = []
    for part, allowed in ALLOWED.items():
        top = os.path.join(source_dir, part)
        files = [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs if f.endswith(('.c', '.h'))]
        if not files:
            bad.append('%s/: no sources (rule out of date?)' % part)
        if build_dir:
            for gen in GENERATED.get(part, []):
                path = os.path.join(build_dir, gen)
                if not os.path.exists(path):
                    bad.append('%s: generated header missing (build first)' % gen)
                else:
                    files.append(path)
        for path in files:
            with open(path, encoding='utf-8') as f:
                text = f.read()
            for inc in INCLUDE.findall(text):
                first = inc.split('/')[0]
                if '/' not in inc or first not in PARTS or first == part:
                    continue  # local header ("host-internal.h") or same part
                if first in allowed or (part, inc) in EXCEPTIONS:
                    continue
                shown = os.path.relpath(path, build_dir if build_dir and path.startswith(build_dir) else source_dir)
                bad.append('%s includes "%s" (%s/ may use only %s)'
                           % (shown, inc, part,
                              ', '.join(sorted(a + '/' for a in allowed if a in PARTS)) or 'itself'))
    return bad


def self_test():
    """The check must refuse block/ including the QMP runtime, directly or
    through a generated header, and accept qapi/qapi-types.h."""
    with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as build:
        for part in ALLOWED:
            os.makedirs(os.path.join(src, part))
            with open(os.path.join(src, part, 'x.c'), 'w') as f:
                f.write('#include "%s/x.h"\n' % part)
        os.makedirs(os.path.join(build, 'qapi'))
        with open(os.path.join(build, 'qapi', 'qapi-types.h'), 'w') as f:
            f.write('#include "qapi/qapi-visit.h"\n')
        with open(os.path.join(src, 'block', 'ok.c'), 'w') as f:
            f.write('#include "qapi/qapi-types.h"\n')
        assert check(src, build) == [], check(src, build)
        with open(os.path.join(src, 'block', 'bad.c'), 'w') as f:
            f.write('#include "server/qmp/qapi-runtime.h"\n')
        assert any('block/bad.c includes "server/qmp/qapi-runtime.h"' in b for b in check(src, build))
        os.remove(os.path.join(src, 'block', 'bad.c'))
        with open(os.path.join(build, 'qapi', 'qapi-types.h'), 'w') as f:
            f.write('#include "server/qmp/qapi-runtime.h"\n')
        assert any('qapi-types.h includes "server/qmp/qapi-runtime.h"' in b for b in check(src, build))


def main():
    self_test()
    bad = check(SOURCE_DIR, BUILD_DIR)
    for line in bad:
        print('LAYERING:', line)
    if bad:
        sys.exit(1)
    print('layering OK: %s' % ', '.join('%s/ -> {%s}' % (p, ', '.join(sorted(a for a in al if a in PARTS)))
                                        for p, al in ALLOWED.items()))


main()
