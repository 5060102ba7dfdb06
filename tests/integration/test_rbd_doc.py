#!/usr/bin/python3
"""docs/rbd.md's shell examples (the ```sh blocks) run verbatim: each with
bash -e from the source directory, with the blockd under test first on
PATH as `blockd`.  Each block starts and stops its own throw-away cluster
and checks what it did itself (qemu-img compare of the data blockd wrote,
nbdinfo through a cephx user): a command that fails, or a cluster left
behind, fails the test."""
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ceph_lib import require_qemu_rbd, require_rbd  # noqa: E402
from lib import blockd_path, check  # noqa: E402

SOURCE_DIR = os.environ.get('SOURCE_DIR') or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def main():
    require_rbd()
    require_qemu_rbd()
    with open(os.path.join(SOURCE_DIR, 'docs', 'rbd.md')) as f:
        blocks = re.findall(r'^```sh\n(.*?)^```$', f.read(), re.M | re.S)
    check(len(blocks) == 2, 'expected 2 sh blocks in docs/rbd.md, found %d' % len(blocks))
    with tempfile.TemporaryDirectory(prefix='blockd-rbd-doc.') as bindir:
        os.symlink(os.path.abspath(blockd_path()), os.path.join(bindir, 'blockd'))
        env = dict(os.environ, PATH=bindir + ':' + os.environ['PATH'])
        for i, block in enumerate(blocks):
            # -x: the failing command shows in the log.
            p = subprocess.run(['bash', '-e', '-x', '-c', block], cwd=SOURCE_DIR, env=env,
                               capture_output=True, text=True, timeout=300)
            check(p.returncode == 0, 'docs/rbd.md block %d failed (%d):\n%s' % (i + 1, p.returncode,
                                                                              p.stderr[-4000:]))
            dirs = re.findall(r'CEPH_DIR=(\S+)', p.stdout + p.stderr)
            check(dirs and all(not os.path.exists(d) for d in dirs), 'block %d left its cluster: %r' % (i + 1, dirs))
            print('block %d OK' % (i + 1))
    print('docs/rbd.md examples OK')


main()
