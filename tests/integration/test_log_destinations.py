#!/usr/bin/python3
"""--log=syslog and --log=journal deliver blockd's messages with the right
priority and fields (a refused NBD client: notice; -v adds debug records);
a daemon without --log uses the journal when its socket exists, else
syslog; a foreground blockd whose stderr is the journal writes journal
records.  Runs in a private mount namespace (see log_lib.py)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import blockd_path, check, fail, skip  # noqa: E402
from log_lib import datagram_sink, drain, enter_private_namespace, parse_journal, wait_for  # noqa: E402

JOURNAL = '/run/systemd/journal/socket'
REFUSED = b"refused: export 'nope' not found"
started = []   # pids, killed if the test fails half-way


def start(tmp, *extra, stderr=None):
    sock, pidfile = os.path.join(tmp, 'nbd.sock'), os.path.join(tmp, 'pid')
    args = [blockd_path(), '--blockdev', 'driver=memory,node-name=m,size=1M', '--export', 'type=nbd,id=e,node-name=m',
            '--nbd-server', 'addr.type=unix,addr.path=' + sock, '--pidfile', pidfile] + list(extra)
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=stderr if stderr is not None else subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (os.path.exists(pidfile) and os.path.getsize(pidfile)):
        check(time.monotonic() < deadline and (p.poll() is None or '--daemonize' in extra), 'blockd did not start')
        time.sleep(0.05)
    started.append(int(open(pidfile).read()))
    subprocess.run(['nbdinfo', 'nbd+unix:///nope?socket=' + sock], capture_output=True)
    return p, started[-1]


def stop(pid, p=None):
    os.kill(pid, signal.SIGTERM)
    started.remove(pid)
    if p:
        return p.wait(timeout=30)
    for _ in range(600):   # a daemon is not our child: /proc tells when it is gone
        try:
            with open('/proc/%d/stat' % pid) as f:
                if f.read().split(')')[1].split()[0] == 'Z':
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    fail('blockd %d did not stop' % pid)


def refused_record(sink):
    got = wait_for(sink, lambda d: REFUSED in d)
    check(got is not None, 'no log record for the refused client')
    return got


def main():
    if not shutil.which('nbdinfo'):
        skip('nbdinfo is not installed')
    enter_private_namespace()
    tmp = tempfile.mkdtemp(prefix='blockd-logdst.')
    try:
        syslog, journal = datagram_sink('/dev/log'), datagram_sink(JOURNAL)

        p, pid = start(tmp, '--log=syslog')
        got = refused_record(syslog)
        want = b'blockd[%d]: nbd: client pid ' % pid
        check(got[-1].startswith(b'<29>') and want in got[-1], 'syslog record %r' % got[-1])
        stop(pid, p)
        check(REFUSED not in p.stderr.read(), 'the refusal also went to stderr')
        check(not drain(journal), 'syslog mode wrote journal records')

        p, pid = start(tmp, '--log=journal', '-v')
        got = [parse_journal(d) for d in refused_record(journal)]
        rec = got[-1]
        check(rec.get('PRIORITY') == '5' and rec.get('GLIB_DOMAIN') == 'blockd-nbd' and
              rec.get('SYSLOG_IDENTIFIER') == 'blockd' and rec['MESSAGE'].startswith('client pid '),
              'journal record %r' % rec)
        check(any(r.get('PRIORITY') == '7' and r['MESSAGE'].startswith('blockd ') for r in got),
              'no debug record with -v: %r' % got)
        stop(pid, p)
        drain(journal)
        p, pid = start(tmp, '--log=journal')
        got = [parse_journal(d) for d in refused_record(journal)]
        check(all(r.get('PRIORITY') != '7' for r in got), 'debug records without -v: %r' % got)
        stop(pid, p)

        # A daemon without --log: the journal while its socket exists, else syslog.
        _, pid = start(tmp, '--daemonize')
        refused_record(journal)
        stop(pid)
        journal.close()
        os.unlink(JOURNAL)
        _, pid = start(tmp, '--daemonize')
        refused_record(syslog)
        stop(pid)

        # stderr connected to the journal (a systemd service): journal records.
        journal = datagram_sink(JOURNAL)
        stream = socket.socket(socket.AF_UNIX)
        stream.bind('/run/systemd/journal/stdout')
        stream.listen(1)
        err = socket.socket(socket.AF_UNIX)
        err.connect('/run/systemd/journal/stdout')
        conn, _ = stream.accept()
        p, pid = start(tmp, stderr=err.fileno())
        rec = parse_journal(refused_record(journal)[-1])
        check(rec.get('GLIB_DOMAIN') == 'blockd-nbd', 'record %r' % rec)
        stop(pid, p)
        conn.settimeout(0.5)
        try:
            text = conn.recv(65536)
        except socket.timeout:
            text = b''
        check(REFUSED not in text, 'the refusal went to the stderr stream as text: %r' % text)
    finally:
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    print('ok')


main()
