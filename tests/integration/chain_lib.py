"""Helpers for the backing-chain job tests (block-stream, block-commit).

    from chain_lib import *
    c = make_chain(tmp, 64 << 20)          # base <- mid <- top, qcow2, made with qemu-io
    c.expected                             # bytearray: what top reads (the merge of the layers)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        open_chain(q, c)                   # top node 'top' (its backing files opened from the headers)
        export(q, d, 'top')                # writable NBD export 'top' on d.path('nbd.sock')
        w = ChainWriter(d, 'top', c.expected); w.start()
        ... run a job ...
        w.stop(); w.verify()               # the export reads the merge plus every acknowledged write

make_chain writes distinct patterns in each layer, some regions overwritten
in the layers above (whole clusters and pieces of clusters) and one region
written as zeroes in mid over base's data, so every rule of a merge shows.
Each layer's writes are kept (Chain.layers), so a merge of any part of the
chain (`merge(c, 'base', 'mid')`) is computable too.

FailingNode is "a failing backing node": nbdkit's memory plugin holding a
layer's data behind `--filter=error` (error=EIO or ENOSPC, every request)
switched on and off with its error-file.

run_both(script) runs the same script (a function of a QMP connection, the
daemon and a private directory) against qemu-storage-daemon and blockd;
normalise() turns events into comparable tuples.  backing_chain() and
image_check() read `qemu-img info --backing-chain` and `qemu-img check`;
qmp_chain() reads the same from query-named-block-nodes.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, Nbdkit, blockd_cmd, check, connect, err, fail, ok,  # noqa: E402,F401
                        qsd_cmd, read_all, squash, summary, wait_job_end, wait_status, wait_until)
from mirror_lib import Writer, first_difference, matches  # noqa: E402,F401

KiB = 1 << 10
MiB = 1 << 20
CLUSTER = 64 * KiB
LAYERS = ('base', 'mid', 'top')


def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


class Chain:
    """Three qcow2 images base <- mid <- top and what was written in each."""

    def __init__(self, tmp, size):
        self.tmp, self.size = tmp, size
        self.path = {n: os.path.join(tmp, n + '.qcow2') for n in LAYERS}
        # layer -> [(offset, length, byte)]; byte None: write-zeroes
        self.layers = {n: [] for n in LAYERS}
        self.expected = None

    @property
    def base(self):
        return self.path['base']

    @property
    def mid(self):
        return self.path['mid']

    @property
    def top(self):
        return self.path['top']


def layer_writes(size, layer):
    """The writes of one layer: (offset, length, byte or None for zeroes).

    Over every 1 MiB of the disk (scaled for bigger disks: the pattern
    repeats every `step`):
      base  [0, 512K) data
      mid   [256K, 384K) data (whole clusters over base), [400K, 404K)
            data (a piece of a cluster over base), [448K, 512K) zeroes over
            base's data, [640K, 768K) data where base has nothing
      top   [320K, 336K) data over mid and base (a piece of a mid cluster),
            [704K, 768K) data over mid, [896K, 960K) data alone
    The rest is unallocated everywhere.  Bytes differ per layer and per
    step, so data read from the wrong layer or place shows."""
    step = MiB if size <= 256 * MiB else 16 * MiB
    scale = step // MiB
    plan = {
        'base': [(0, 512, 'd')],
        'mid': [(256, 128, 'd'), (400, 4, 'd'), (448, 64, 'z'), (640, 128, 'd')],
        'top': [(320, 16, 'd'), (704, 64, 'd'), (896, 64, 'd')],
    }[layer]
    salt = {'base': 0x10, 'mid': 0x50, 'top': 0x90}[layer]
    out = []
    for i, start in enumerate(range(0, size, step)):
        for k, (off_k, len_k, kind) in enumerate(plan):
            off, n = start + off_k * KiB * scale, len_k * KiB * scale
            if off + n > size:
                continue
            out.append((off, n, None if kind == 'z' else (salt + (i * 7 + k) % 0x3f) or 1))
    return out


def apply(image, writes):
    for off, n, byte in writes:
        image[off:off + n] = bytes(n) if byte is None else bytes([byte]) * n


def merge(chain, *layers):
    """What the chain reads with only `layers` (bottom first) in it."""
    image = bytearray(chain.size)
    for name in layers:
        apply(image, chain.layers[name])
    return image


def qemu_io_write(path, writes, fmt='qcow2'):
    """Writes with one qemu-io run (batches of commands)."""
    cmds = []
    for off, n, byte in writes:
        cmds.append('write -z %d %d' % (off, n) if byte is None else 'write -P 0x%02x %d %d' % (byte, off, n))
    for i in range(0, len(cmds), 500):
        args = ['qemu-io', '-f', fmt]
        for c in cmds[i:i + 500]:
            args += ['-c', c]
        run(*(args + [path]))


def make_chain(tmp, size=64 * MiB, cluster=CLUSTER, relative=True):
    """base <- mid <- top in `tmp` (backing names relative unless told
    otherwise, formats recorded), each layer written as layer_writes says."""
    c = Chain(tmp, size)
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % cluster, c.base, str(size))
    for name, below in (('mid', 'base'), ('top', 'mid')):
        back = below + '.qcow2' if relative else c.path[below]
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % cluster,
            '-b', back, '-F', 'qcow2', c.path[name], str(size))
    for name in LAYERS:
        c.layers[name] = layer_writes(size, name)
        # Written into each image alone, as if it were the top of its chain then.
        qemu_io_write(c.path[name], c.layers[name])
    c.expected = merge(c, *LAYERS)
    return c


def open_chain(q, c, node='top', **extra):
    """blockdev-add of top (file node '<node>-file'); its backing files are opened from the headers."""
    args = {'driver': 'qcow2', 'node-name': node,
            'file': {'driver': 'file', 'filename': c.top, 'node-name': node + '-file'}}
    args.update(extra)
    ok(q.cmd('blockdev-add', args), 'blockdev-add ' + node)


def open_chain_named(q, c):
    """The three images as named nodes 'base' <- 'mid' <- 'top' (blockdev-add
    each), and 'other', a qcow2 image outside the chain."""
    run('qemu-img', 'create', '-q', '-f', 'qcow2', os.path.join(c.tmp, 'other.qcow2'), str(c.size))
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'other',
                              'file': {'driver': 'file', 'filename': os.path.join(c.tmp, 'other.qcow2')}}),
       'blockdev-add other')
    ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': 'base',
                              'file': {'driver': 'file', 'filename': c.base}}), 'blockdev-add base')
    for name, below in (('mid', 'base'), ('top', 'mid')):
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name, 'backing': below,
                                  'file': {'driver': 'file', 'filename': c.path[name]}}), 'blockdev-add ' + name)


def export(q, d, node, name=None):
    """A writable NBD export of `node` named `name` (default: the node's name)."""
    sock = d.path('nbd.sock')
    if not os.path.exists(sock):
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': sock}}}), 'nbd-server-start')
    ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'e-' + (name or node), 'node-name': node,
                                  'name': name or node, 'writable': True}), 'block-export-add')
    return sock


class ChainWriter(Writer):
    """A guest writing 4 KiB blocks into an export while a job runs; its
    model starts from `expected` (the chain's merge) and takes every
    acknowledged write, so verify() knows what the disk must hold."""

    def __init__(self, d, export_name, expected, rate=0, seed=7):
        self.sock_path = d.path('nbd.sock')
        super().__init__(self.sock_path, export_name, bytearray(expected), rate=rate, seed=seed)

    def verify(self, what='export'):
        disk = read_all(self.sock_path, self.export, len(self.image))
        bad = matches(disk, self.image)
        check(bad is None, '%s differs from the merge plus %d writes at offset %s (reads %r, wants %r)'
              % (what, self.count, bad, disk[bad:bad + 16] if bad is not None else b'',
                 bytes(self.image[bad:bad + 16]) if bad is not None else b''))
        return disk


class FailingNode:
    """A failing backing node: nbdkit memory SIZE behind --filter=error
    (error=EIO or ENOSPC on every request while the error-file exists).

        with FailingNode(size, 'EIO', writes) as f:     # healthy, holds `writes`
            q.cmd('blockdev-add', f.blockdev('base'))   # an 'nbd' node
            f.fail(True) ... f.fail(False)"""

    def __init__(self, size, errno_name='EIO', writes=None, reads_only=False, read_delay=0):
        """reads_only: only reads fail (error-pread-rate); block status
        still answers.  QEMU 7.2's stream, ignoring a block-status failure,
        retries the same offset for ever.  read_delay: every read takes
        that many seconds (nbdkit's delay filter), a slow backing node."""
        self.size, self.errno_name = size, errno_name
        self.writes = layer_writes(size, 'base') if writes is None else list(writes)
        self.dir = tempfile.mkdtemp(prefix='blockd-failing.')
        self.flag = os.path.join(self.dir, 'fail')
        rate = 'error-pread-rate=100%' if reads_only else 'error-rate=100%'
        delay = ['delay-read=%d' % read_delay] if read_delay else []
        self.kit = Nbdkit('memory', str(size), 'error=' + errno_name, rate, 'error-file=' + self.flag,
                          *delay, filters=(['delay'] if read_delay else []) + ['error'])

    @property
    def sock(self):
        return self.kit.sock

    def start(self):
        self.kit.start()
        if self.writes:
            h = connect(self.kit.sock)
            for off, n, byte in self.writes:
                if byte is None:
                    h.zero(n, off)
                else:
                    h.pwrite(bytes([byte]) * n, off)
            h.flush()
            h.shutdown()
        return self

    def fail(self, on):
        if on:
            open(self.flag, 'w').close()
        elif os.path.exists(self.flag):
            os.unlink(self.flag)

    def uri(self):
        return 'nbd+unix://?socket=' + self.kit.sock

    def blockdev(self, node_name):
        return {'driver': 'nbd', 'node-name': node_name, 'server': {'type': 'unix', 'path': self.kit.sock}}

    def close(self):
        self.fail(False)
        self.kit.close()
        subprocess.run(['rm', '-rf', self.dir])

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def make_chain_over(tmp, size, failing, cluster=CLUSTER):
    """mid <- top (qcow2, in tmp) over a base that is not a file: a healthy
    FailingNode (format raw, named by its URI in mid's header) holding
    layer_writes' base data; mid and top get theirs through qemu-io with the
    whole chain open (a piece of a cluster is completed from below, as the
    merge expects).  The Chain's base path is the URI."""
    c = Chain(tmp, size)
    c.path['base'] = failing.uri()
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % cluster,
        '-b', failing.uri(), '-F', 'raw', '-u', c.mid, str(size))
    run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=%d' % cluster,
        '-b', 'mid.qcow2', '-F', 'qcow2', '-u', c.top, str(size))
    c.layers['base'] = list(failing.writes)
    for name in ('mid', 'top'):
        c.layers[name] = layer_writes(size, name)
        qemu_io_write(c.path[name], c.layers[name])
    c.expected = merge(c, *LAYERS)
    return c


def open_chain_over(q, c, failing):
    """The failing base as node 'base' (nbd), 'mid' and 'top' over it by node name."""
    ok(q.cmd('blockdev-add', failing.blockdev('base')), 'blockdev-add base')
    for name, below in (('mid', 'base'), ('top', 'mid')):
        ok(q.cmd('blockdev-add', {'driver': 'qcow2', 'node-name': name, 'backing': below,
                                  'file': {'driver': 'file', 'filename': c.path[name]}}), 'blockdev-add ' + name)


# ---- running one script against both daemons ----

def run_both(script, need_qsd=True):
    """(qsd_result, blockd_result): script(q, d, tmp) run against
    qemu-storage-daemon and blockd, each with its own directory.  Without
    qemu-storage-daemon (need_qsd False) the first is None."""
    results = []
    cmds = [('qsd', qsd_cmd() if need_qsd else None), ('blockd', blockd_cmd())]
    for who, cmd in cmds:
        if cmd is None:
            results.append(None)
            continue
        with tempfile.TemporaryDirectory(prefix='chain-%s.' % who) as tmp, Daemon(cmd) as d:
            q = d.qmp()
            try:
                results.append(script(q, d, tmp))
            except BaseException:
                print('--- %s stderr ---\n%s' % (who, d.stderr_text()[-3000:]), file=sys.stderr)
                raise
            q.close()
            status = d.stop()
            check(status == 0, '%s exited with status %d: %s' % (who, status, d.stderr_text()[-2000:]))
    return tuple(results)


def normalise(events, ignore_repeats=True):
    """Events as comparable tuples: (JOB_STATUS_CHANGE, id, status), and
    BLOCK_JOB_* with their data minus progress (offset, len, speed) and
    timestamps; QEMU 7.2's paused/running blip at a job's start is dropped;
    with ignore_repeats, runs of identical events (policy ignore retrying)
    count once."""
    out = summary(events)
    return squash(out) if ignore_repeats else out


def compare(what, want, got):
    """Fails with both sequences side by side when they differ."""
    if want != got:
        lines = ['%s differs from qemu-storage-daemon:' % what]
        for i in range(max(len(want), len(got))):
            a = want[i] if i < len(want) else '-'
            b = got[i] if i < len(got) else '-'
            lines.append('%s %-60s | %s' % ('  ' if a == b else '!!', a, b))
        fail('\n'.join(str(x) for x in lines))


def reply(r):
    """A command's result as a comparable value: ('ok',) or (class, desc)."""
    if 'return' in r:
        return ('ok',)
    return (r['error']['class'], r['error']['desc'])


# ---- what qemu-img and query-named-block-nodes say about a chain ----

def backing_chain(path):
    """`qemu-img info --backing-chain` of `path`: [(filename, format,
    backing-filename or None, backing format or None)], top first."""
    out = subprocess.run(['qemu-img', 'info', '-U', '--backing-chain', '--output=json', path],
                         check=True, capture_output=True, text=True).stdout
    return [(i['filename'], i['format'], i.get('backing-filename'), i.get('backing-filename-format'))
            for i in json.loads(out)]


def image_check(path, fmt='qcow2'):
    """`qemu-img check` of one image: its JSON report (check-errors, leaks, corruptions ...)."""
    p = subprocess.run(['qemu-img', 'check', '-U', '-f', fmt, '--output=json', path],
                       capture_output=True, text=True)
    if p.returncode not in (0, 2, 3):   # 2: corruptions, 3: leaks; the report says
        fail('qemu-img check %s failed (%d): %s' % (path, p.returncode, p.stderr))
    return json.loads(p.stdout)


def check_clean(path):
    r = image_check(path)
    check(r.get('check-errors', 0) == 0 and r.get('corruptions', 0) == 0 and r.get('leaks', 0) == 0,
          'qemu-img check %s: %r' % (path, r))


def read_image(path, fmt='qcow2'):
    """Every byte `path` reads (with its backing chain), by qemu-img convert."""
    with tempfile.TemporaryDirectory() as t:
        out = os.path.join(t, 'out.raw')
        run('qemu-img', 'convert', '-U', '-f', fmt, '-O', 'raw', path, out)
        with open(out, 'rb') as f:
            return f.read()


def qmp_chain(q, node):
    """The backing chain of `node` from query-named-block-nodes: [(filename,
    format, backing-filename or None)], top first, as backing_chain gives it."""
    nodes = {n['node-name']: n for n in q.cmd('query-named-block-nodes')['return']}
    check(node in nodes, 'node %s not in query-named-block-nodes' % node)
    image = nodes[node]['image']
    out = []
    while image:
        out.append((image['filename'], image['format'], image.get('backing-filename')))
        image = image.get('backing-image')
    return out


def image_name(filename):
    """The base name of the image file a node's filename names: QEMU shows
    json:{...} for a node opened with options beside its file; the file
    name inside is the image's."""
    if (filename or '').startswith('nbd'):
        return re.sub(r'socket=.*/', 'socket=', filename)   # nbdkit's directory differs per run
    m = re.findall(r'([^/"]+\.(?:qcow2|img|raw))', filename or '')
    return m[-1] if m else filename


def node_names(q):
    """The names of every node, sorted, implicit ones left out: QEMU's
    '#block...' and blockd's '<parent>-file' / '<parent>-backing'."""
    return sorted(n['node-name'] for n in q.cmd('query-named-block-nodes')['return']
                  if not n['node-name'].startswith('#') and not n['node-name'].endswith(('-file', '-backing')))
