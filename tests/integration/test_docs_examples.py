#!/usr/bin/python3
"""Runs the shell examples of README.md, docs/*.md and the man pages'
EXAMPLES sections verbatim (the convention is in docs/README-docs.md).

Per document, in a fresh temporary directory and in document order: every
```sh block runs as a bash script (errexit on); in a ```console block the
`$ ` lines run and the other lines are the expected output (in order, `...`
matching any text).  Markers right before a block:
`<!-- doc-test: skip (REASON) -->`, `fails`, `background` (a daemon: the
next block runs after its READY=1), `file NAME` (write a block that is not
run to NAME); on its own line `<!-- doc-test: stop -->` stops the daemons
started so far (in man pages `.\\" doc-test: ...`).  PATH starts with
the build's blockd and blockctl.  Untagged or indented code blocks that
start with a command are an error: tag them.

    test_docs_examples.py [--list] [FILE...]    (default: every document)

As root the examples run in private network and mount namespaces (own
loopback; a fresh /run and /tmp per document), so fixed ports,
/run/blockd.sock and /tmp paths collide with nothing else on the machine;
without root the test is skipped.  Each document runs in
BUILD_DIR/doc-test/NAME-XXXX (removed afterwards unless DOC_TEST_KEEP=1
and it failed).
"""

import fcntl
import glob
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77
TIMEOUT = float(os.environ.get('DOC_TEST_TIMEOUT', '120'))
SOURCE_DIR = os.environ.get('SOURCE_DIR') or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.environ.get('BUILD_DIR') or os.path.join(SOURCE_DIR, 'build')
SANITIZER_REPORTS = ('ERROR: AddressSanitizer', 'WARNING: ThreadSanitizer',
                     'runtime error:', 'ERROR: LeakSanitizer')

# First words that make an untagged code block a shell example.
COMMAND_WORDS = {
    'blockd', 'blockctl', 'nbdinfo', 'nbdcopy', 'nbdkit', 'nbdsh', 'qemu-img',
    'qemu-io', 'qemu-nbd', 'qemu-storage-daemon', 'make', 'meson', 'ninja',
    'certtool', 'systemctl', 'journalctl', 'truncate', 'mkdir', 'sudo', 'cat',
    'echo', 'cp', 'kill', 'gcc', 'dd', 'apt', 'apt-get', 'python3', 'curl',
    'rbd', 'ceph', 'nbd-client', 'fio', 'modprobe', 'chmod', 'rm', 'ls', 'ln',
    'tar', 'openssl', 'ssh', 'scp', 'virsh', 'qemu-system-x86_64', 'pkg-config',
    'git', 'cd', 'nm'}


class DocError(Exception):
    pass


class Block:
    def __init__(self, path, line, kind, text, marker, marker_line):
        self.path = path            # the document, relative to SOURCE_DIR
        self.line = line            # line number of the block's first line
        self.kind = kind            # 'sh' or 'console'
        self.text = text            # the block's lines, indentation removed
        self.skip = None            # the reason, for skip
        self.fails = False
        self.background = False
        self.file = None            # file NAME: the block is written to NAME
        if marker is not None:
            m = re.fullmatch(r'skip \((.+)\)', marker)
            f = re.fullmatch(r'file (\S+)', marker)
            if m:
                self.skip = m.group(1)
            elif f:
                self.file = f.group(1)
            elif marker == 'fails':
                self.fails = True
            elif marker == 'background':
                self.background = True
            else:
                raise DocError('%s:%d: unknown marker "doc-test: %s" (skip (REASON), '
                               'fails, background, stop or file NAME)'
                               % (path, marker_line, marker))
        if self.file and kind in ('sh', 'console'):
            raise DocError('%s:%d: "doc-test: file" is for blocks that are not run '
                           '(```c, ```text, ...)' % (path, marker_line))
        self.expected = []          # console: the documented output lines
        if self.file:
            self.script = []
        elif kind == 'console':
            script = []
            cont = False
            for ln in text:
                if cont or ln.startswith('$ '):
                    script.append(ln if cont else ln[2:])
                    cont = ln.rstrip().endswith('\\')
                else:
                    # keep the line numbers: blank lines for the output
                    script.append('')
                    if ln.strip():
                        self.expected.append(ln.rstrip())
            self.script = script
            if not any(s.strip() for s in script):
                raise DocError('%s:%d: console block without a "$ " command'
                               % (path, line))
        else:
            self.script = list(text)

    def where(self):
        return '%s:%d' % (self.path, self.line)

    def title(self):
        if self.file:
            return '(written to %s)' % self.file
        first = next((s.strip() for s in self.script if s.strip()), '')
        return first if len(first) <= 70 else first[:67] + '...'


class Stop:
    """<!-- doc-test: stop -->: the reader's Ctrl-C; stops every process the
    document started so far (its background blocks first)."""
    kind = 'stop'
    skip = None
    background = fails = False

    def __init__(self, path, line):
        self.path, self.line, self.script = path, line, []

    def where(self):
        return '%s:%d' % (self.path, self.line)

    def title(self):
        return '(stop the daemons started so far)'


def looks_like_command(lines):
    for ln in lines:
        s = ln.strip()
        if not s:
            continue
        if s.startswith(('->', '<-', '{')):
            return False        # a QMP transcript
        if s.startswith('$ '):
            return True
        word = s.split()[0]
        return word in COMMAND_WORDS or word.startswith(('./', 'tests/', 'scripts/'))
    return False


MARKER_MD = re.compile(r'^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$')
FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([^`\s]*)')


def parse_markdown(path, text):
    """The ```sh and ```console blocks of a Markdown file, in order."""
    lines = text.split('\n')
    blocks = []
    marker = marker_line = None
    i = 0
    prev_blank = True
    while i < len(lines):
        line = lines[i]
        m = MARKER_MD.match(line)
        if m and m.group(1) == 'stop':
            if marker is not None:
                raise DocError('%s:%d: doc-test marker not followed by a fenced code block'
                               % (path, marker_line))
            blocks.append(Stop(path, i + 1))
            i += 1
            continue
        if m:
            if marker is not None:
                raise DocError('%s:%d: two doc-test markers in a row' % (path, marker_line))
            marker, marker_line = m.group(1), i + 1
            i += 1
            continue
        f = FENCE.match(line)
        if f:
            indent, fence, lang = len(f.group(1)), f.group(2), f.group(3).lower()
            body = []
            j = i + 1
            while j < len(lines):
                s = lines[j]
                if s.strip().startswith(fence[0] * len(fence)) and \
                        s.strip().strip(fence[0]) == '':
                    break
                body.append(s[indent:] if s[:indent].strip() == '' else s.lstrip())
                j += 1
            else:
                raise DocError('%s:%d: unclosed code fence' % (path, i + 1))
            if lang in ('sh', 'console') or (marker or '').startswith('file '):
                blocks.append(Block(path, i + 2, lang, body, marker, marker_line))
            elif marker is not None:
                raise DocError('%s:%d: doc-test marker before a ```%s block (only '
                               '```sh and ```console blocks run; "file NAME" writes '
                               'any other block to a file)' % (path, marker_line, lang))
            elif lang == '' and looks_like_command(body):
                raise DocError('%s:%d: untagged code block with a command: tag it '
                               '```sh (runs) or ```text (not run), see docs/README-docs.md'
                               % (path, i + 1))
            marker = None
            i = j + 1
            prev_blank = False
            continue
        if marker is not None and line.strip():
            raise DocError('%s:%d: doc-test marker not followed by a fenced code block'
                           % (path, marker_line))
        # An indented code block (4+ spaces after a blank line, outside lists).
        if prev_blank and line.startswith('    ') and line.strip() and \
                not re.match(r'\s*([-*+]|\d+\.)\s', line):
            body = []
            j = i
            while j < len(lines) and (lines[j].startswith('    ') or not lines[j].strip()):
                body.append(lines[j][4:])
                j += 1
            if looks_like_command(body) and not in_list_item(lines, i):
                raise DocError('%s:%d: indented code block with a command: make it a '
                               'fenced ```sh block (runs) or ```text (not run), see '
                               'docs/README-docs.md' % (path, i + 1))
            prev_blank = False
            i = j
            continue
        prev_blank = not line.strip()
        i += 1
    if marker is not None:
        raise DocError('%s:%d: doc-test marker at the end of the file' % (path, marker_line))
    return blocks


def in_list_item(lines, i):
    """Whether the indented line i continues a list item (then it is text,
    or a code block indented further, which the check above also sees)."""
    j = i - 1
    while j >= 0 and (not lines[j].strip() or lines[j].startswith(' ')):
        j -= 1
    return j >= 0 and re.match(r'([-*+]|\d+\.)\s', lines[j]) is not None and \
        not lines[i].startswith('        ')


ROFF_ESCAPES = [('\\-', '-'), ('\\e', '\\'), ('\\(aq', "'"), ('\\(dq', '"'),
                ('\\(ga', '`'), ('\\(ti', '~'), ('\\(ha', '^'), ('\\&', ''),
                ('\\fB', ''), ('\\fI', ''), ('\\fR', ''), ('\\fP', ''), ('\\ ', ' ')]


def unroff(s):
    out = []
    i = 0
    while i < len(s):
        for esc, rep in ROFF_ESCAPES:
            if s.startswith(esc, i):
                out.append(rep)
                i += len(esc)
                break
        else:
            out.append(s[i])
            i += 1
    return ''.join(out)


def parse_man(path, text):
    """The .EX/.EE and .nf/.fi blocks of a man page's EXAMPLES section."""
    lines = text.split('\n')
    blocks = []
    section = None
    marker = marker_line = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith('.SH'):
            section = line[3:].strip().strip('"')
        m = re.match(r'^\.\\"\s*doc-test:\s*(.*?)\s*$', line)
        if m and m.group(1) == 'stop':
            blocks.append(Stop(path, i + 1))
        elif m:
            marker, marker_line = m.group(1), i + 1
        elif line in ('.EX', '.nf') and section == 'EXAMPLES':
            end = '.EE' if line == '.EX' else '.fi'
            j = i + 1
            body = []
            while j < len(lines) and lines[j] != end:
                body.append(unroff(lines[j]))
                j += 1
            blocks.append(Block(path, i + 2, 'sh', body, marker, marker_line))
            marker = None
            i = j
        elif marker is not None and not line.startswith('.'):
            raise DocError('%s:%d: doc-test marker not followed by .EX or .nf'
                           % (path, marker_line))
        i += 1
    return blocks


def documents(args):
    if args:
        return [os.path.relpath(os.path.abspath(a), SOURCE_DIR) for a in args]
    docs = ['README.md'] + sorted(
        os.path.relpath(p, SOURCE_DIR) for p in glob.glob(os.path.join(SOURCE_DIR, 'docs', '*.md')))
    docs += sorted(os.path.relpath(p, SOURCE_DIR)
                   for p in glob.glob(os.path.join(SOURCE_DIR, 'docs', '*.[1-8]')))
    return docs


def parse(path):
    with open(os.path.join(SOURCE_DIR, path), encoding='utf-8') as f:
        text = f.read()
    if path.endswith('.md'):
        return parse_markdown(path, text)
    return parse_man(path, text)


# --- isolation -----------------------------------------------------------

def enter_namespaces():
    """As root, re-run this script in new network and mount namespaces; True
    if isolated (then port 10809 is ours, and each document gets its own
    /run and /tmp)."""
    if os.environ.get('DOC_TEST_ISOLATED') == '1':
        return True
    if os.geteuid() != 0 or os.environ.get('DOC_TEST_NO_NAMESPACES'):
        return False
    probe = subprocess.run(['unshare', '--mount', '--net', 'true'],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if probe.returncode != 0:
        return False
    env = dict(os.environ, DOC_TEST_ISOLATED='1')
    os.execvpe('unshare', ['unshare', '--mount', '--net', '--propagation', 'private',
                           sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env)


PRIVATE_DIRS = (('/run', '755'), ('/tmp', '1777'))


def mount_private_dirs():
    """A fresh, empty /run and /tmp for one document (in our mount namespace)."""
    for d, mode in PRIVATE_DIRS:
        subprocess.run(['mount', '-t', 'tmpfs', '-o', 'mode=' + mode, 'doc-test', d], check=True)


def unmount_private_dirs():
    for d, _ in PRIVATE_DIRS:
        subprocess.run(['umount', '--lazy', d], check=True)


def loopback_up():
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack('16sH14x', b'lo', 0)
        flags = struct.unpack('16sH14x', fcntl.ioctl(s, SIOCGIFFLAGS, ifr))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack('16sH14x', b'lo', flags | IFF_UP))


def port_busy(port):
    try:
        socket.create_server(('127.0.0.1', port)).close()
        return False
    except OSError:
        return True


# --- running -------------------------------------------------------------

class Failure(Exception):
    pass


class DocRun:
    """One document: its directory, its shell state, its background blocks."""

    def __init__(self, path):
        self.path = path
        # not in /tmp: that is the examples' own (a private tmpfs as root)
        top = os.path.join(BUILD_DIR, 'doc-test')
        os.makedirs(top, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=os.path.basename(path) + '-', dir=top)
        self.cwd_file = os.path.join(self.dir, '.doc-test', 'cwd')
        os.makedirs(os.path.dirname(self.cwd_file))
        os.makedirs(os.path.join(self.dir, '.doc-test', 'tmp'))
        with open(self.cwd_file, 'w') as f:
            f.write(self.dir + '\n')
        self.marker = 'doc-test-%d-%s' % (os.getpid(), os.path.basename(self.dir))
        self.background = []        # (block, Popen, log path)
        self.notify_sockets = []
        self.n = 0
        path_dirs = [BUILD_DIR, os.path.join(BUILD_DIR, 'tools')]
        self.env = dict(os.environ,
                        PATH=':'.join(path_dirs + [os.environ.get('PATH', '/usr/bin:/bin')]),
                        TMPDIR=os.path.join(self.dir, '.doc-test', 'tmp'),
                        BLOCKD_DOC_TEST=self.marker)
        for k in ('BLOCKD', 'BUILD_DIR', 'SOURCE_DIR', 'NOTIFY_SOCKET', 'BLOCKCTL_SOCKET',
                  'LISTEN_PID', 'LISTEN_FDS', 'DOC_TEST_ISOLATED'):
            self.env.pop(k, None)

    def script(self, block):
        # Line 1 is the preamble: block line k (from 0) is script line k + 2.
        pre = ('cd "$(cat %s)" && trap \'pwd > %s\' EXIT && '
               'trap \'echo "doc-test: exit status $? at %s:$((LINENO - 2 + %d)): '
               '$BASH_COMMAND" >&2\' ERR && set -e'
               % (shq(self.cwd_file), shq(self.cwd_file), block.path, block.line))
        if block.background:
            # bash waits for the daemon on SIGTERM, so its status is the daemon's
            pre += " && trap ':' TERM INT"
        if block.fails:
            pre = pre.replace(" && set -e", '')
        body = '\n'.join(block.script)
        self.n += 1
        name = os.path.join(self.dir, '.doc-test', 'block-%d' % self.n)
        with open(name + '.sh', 'w') as f:
            f.write(pre + '\n' + body + '\n')
        return name

    def start(self, block, notify=None):
        name = self.script(block)
        log = name + '.log'
        env = dict(self.env)
        if notify:
            env['NOTIFY_SOCKET'] = notify
        with open(log, 'wb') as out:
            p = subprocess.Popen(['bash', name + '.sh'], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, env=env,
                                 cwd=self.dir, start_new_session=True)
        return p, log

    def run(self, block):
        if block.file:
            with open(self.cwd_file) as f:
                cwd = f.read().strip()
            with open(os.path.join(cwd, block.file), 'w') as f:
                f.write('\n'.join(block.text) + '\n')
            return
        if block.background:
            return self.run_background(block)
        p, log = self.start(block)
        try:
            rc = p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(p)
            self.fail(block, log, 'still running after %d s' % TIMEOUT)
        out = read(log)
        if block.fails:
            if rc == 0:
                self.fail(block, log, 'exit status 0, but the doc says it fails')
        elif rc != 0:
            self.fail(block, log, 'exit status %d' % rc)
        self.check_output(block, log, out)

    def run_background(self, block):
        sock_path = os.path.join(self.dir, '.doc-test', 'notify-%d' % (self.n + 1))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(sock_path)
        s.settimeout(0.2)
        # open until the block stops: blockd also sends STOPPING=1
        self.notify_sockets.append(s)
        p, log = self.start(block, sock_path)
        self.background.append((block, p, log))
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                if b'READY=1' in s.recv(4096):
                    break
            except socket.timeout:
                pass
            rc = p.poll()
            if rc is not None:
                self.background.pop()
                if rc != 0:
                    self.fail(block, log, 'exit status %d before it was ready' % rc)
                break
            if time.monotonic() > deadline:
                self.fail(block, log, 'no blockd in it reported READY=1 within %d s '
                          '(a background block must start blockd)' % TIMEOUT)
        # blockd prints its URIs before it is ready: the output is there
        self.check_output(block, log, read(log))

    def check_output(self, block, log, out):
        report = [r for r in SANITIZER_REPORTS if r in out]
        if report:
            self.fail(block, log, 'sanitizer report (%s)' % report[0])
        if block.kind != 'console' or not block.expected:
            return
        # runs of white space are one space: column widths may differ
        actual = [' '.join(ln.split()) for ln in out.split('\n')]
        k = 0
        for want in block.expected:
            rx = re.compile('.*'.join(re.escape(part)
                                      for part in ' '.join(want.split()).split('...')))
            while k < len(actual) and not rx.fullmatch(actual[k]):
                k += 1
            if k == len(actual):
                self.fail(block, log, 'documented output line not found (in order): %r' % want)
            k += 1

    def stop(self):
        """Stops the file's background blocks (SIGTERM to their process
        groups), then any process still carrying the file's marker."""
        problems = []
        for block, p, log in reversed(self.background):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                rc = p.wait(20)
            except subprocess.TimeoutExpired:
                kill_group(p)
                problems.append((block, log, 'did not stop within 20 s of SIGTERM'))
                continue
            out = read(log)
            if rc != 0:
                problems.append((block, log, 'exit status %d after SIGTERM' % rc))
            elif any(r in out for r in SANITIZER_REPORTS):
                problems.append((block, log, 'sanitizer report'))
        self.background = []
        for s in self.notify_sockets:
            s.close()
        self.notify_sockets = []
        for pid in self.marked_pids():
            print('    stopping leftover process %d: %s' % (pid, cmdline(pid)))
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.marked_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.marked_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if problems:
            self.fail(*problems[0])

    def marked_pids(self):
        me = ('BLOCKD_DOC_TEST=' + self.marker).encode()
        pids = []
        for d in os.listdir('/proc'):
            if not d.isdigit():
                continue
            try:
                with open('/proc/%s/environ' % d, 'rb') as f:
                    if me in f.read().split(b'\0'):
                        pids.append(int(d))
            except OSError:
                pass
        return pids

    def fail(self, block, log, why):
        msg = ['%s: %s block %s' % (block.where(), block.kind, why)]
        msg.append('--- the block:')
        for k, ln in enumerate(block.text):
            msg.append('%5d  %s' % (block.line + k, ln))
        msg.append('--- its output:')
        msg.append(tail(read(log)))
        for b, _, blog in self.background:
            if b is not block:
                msg.append('--- output of the background block at %s (still running):'
                           % b.where())
                msg.append(tail(read(blog)))
        raise Failure('\n'.join(msg))

    def cleanup(self, keep):
        if keep:
            print('    (kept %s)' % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def shq(s):
    return "'" + s.replace("'", "'\\''") + "'"


def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def tail(text, n=120):
    lines = text.rstrip('\n').split('\n')
    if len(lines) > n:
        lines = ['[... %d lines ...]' % (len(lines) - n)] + lines[-n:]
    return '\n'.join(lines)


def cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        return '?'


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def main():
    args = sys.argv[1:]
    listing = '--list' in args
    args = [a for a in args if a != '--list']
    try:
        plan = [(path, parse(path)) for path in documents(args)]
    except (DocError, OSError) as e:
        print('FAIL: %s' % e, file=sys.stderr)
        return 1
    if listing:
        for path, blocks in plan:
            for b in blocks:
                what = 'skip (%s)' % b.skip if b.skip else \
                    ', '.join(k for k, v in (('background', b.background),
                                             ('fails', b.fails)) if v) or 'run'
                print('%-28s %-8s %-24s %s' % (b.where(), b.kind, what, b.title()))
        return 0

    if os.geteuid() != 0:
        print('SKIP: the examples are written for root (Debian 12, as root: /run/blockd.sock, '
              '/run/blockd/...) and run in private namespaces', file=sys.stderr)
        return SKIP
    isolated = enter_namespaces()
    if isolated:
        loopback_up()
        print('running in private network and mount namespaces '
              '(own loopback; each document its own /run and /tmp)')
    else:
        print('no private namespaces (unshare --mount --net failed): documents that use '
              'port 10809 while it is busy, or /run, are skipped')
    for tool in (os.path.join(BUILD_DIR, 'blockd'), os.path.join(BUILD_DIR, 'tools', 'blockctl')):
        if not os.access(tool, os.X_OK):
            print('FAIL: %s is not built' % tool, file=sys.stderr)
            return 1

    def interrupted(signum, frame):
        raise SystemExit('interrupted by signal %d' % signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    ran, skipped, failures = 0, [], []
    for path, blocks in plan:
        print('== %s: %d blocks' % (path, len(blocks)))
        if not blocks:
            continue
        source = '\n'.join('\n'.join(b.script) for b in blocks if not b.skip)
        why = None
        if not isolated and re.search(r'/run/|/tmp/', source):
            why = 'the examples use /run or /tmp and there is no private mount namespace'
        elif not isolated and port_busy(10809) and (
                '10809' in source or re.search(r'^\s*(\$ )?blockd\s*$', source, re.M)):
            why = 'port 10809 is busy (another NBD server?) and the examples use it'
        if why:
            for b in blocks:
                if not isinstance(b, Stop):
                    skipped.append((b, why))
            print('    SKIP: ' + why)
            continue
        if isolated:
            mount_private_dirs()
        doc = DocRun(path)
        failed = False
        stopped = False
        try:
            for b in blocks:
                if isinstance(b, Stop):
                    doc.stop()
                    print('  stop  %-28s' % b.where())
                    continue
                if b.skip:
                    print('  skip  %-28s %s' % (b.where(), b.skip))
                    skipped.append((b, b.skip))
                    continue
                t0 = time.monotonic()
                doc.run(b)
                ran += 1
                print('  ok    %-28s %5.1fs  %s%s' % (
                    b.where(), time.monotonic() - t0,
                    '(background) ' if b.background else '(fails) ' if b.fails else '',
                    b.title()))
            stopped = True
            doc.stop()
        except Failure as e:
            failed = True
            failures.append(str(e))
            print('  FAIL  ' + str(e).replace('\n', '\n        '))
        finally:
            if failed or not stopped:
                # a failure, or interrupted: no process of the file survives
                try:
                    doc.stop()
                except Failure:
                    pass
            doc.cleanup(keep=failed and bool(os.environ.get('DOC_TEST_KEEP')))
            if isolated:
                unmount_private_dirs()

    try:
        os.rmdir(os.path.join(BUILD_DIR, 'doc-test'))
    except OSError:
        pass        # a kept directory, or never made
    print()
    print('%d blocks ran, %d skipped:' % (ran, len(skipped)))
    for b, why in skipped:
        print('  %-28s %s' % (b.where(), why))
    if failures:
        print('\n%d failed:' % len(failures), file=sys.stderr)
        for f in failures:
            print('FAIL: ' + f.split('\n')[0], file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
