#!/usr/bin/python3
"""Runs each mode of tsan-selftest and checks TSan's verdict.

With the GLib shim, the deliberate bugs are reported and every handover
through GLib is not; without it, a GMutex/GCond handover is reported (which
is why the shim exists).  Usage: test-tsan-shim.py SELFTEST SELFTEST_NOSHIM
"""
import os
import subprocess
import sys

# mode -> the TSan report it must give ('' for none)
EXPECTED = {
    'race': 'WARNING: ThreadSanitizer: data race',
    'two-mutexes': 'WARNING: ThreadSanitizer: data race',
    'lock-order': 'WARNING: ThreadSanitizer: lock-order-inversion',
    'mutex': '',
    'cond': '',
    'once': '',
    'main-loop': '',
    'pool': '',
    'queue': '',
}
# Without the shim GLib's futex locks, and so its handovers, are invisible
# to TSan.  (main-loop is left out: there TSan sometimes sees the handover
# through the main context's eventfd, whose read and write it intercepts.)
EXPECTED_NOSHIM = {
    'mutex': 'WARNING: ThreadSanitizer: data race',
    'cond': 'WARNING: ThreadSanitizer: data race',
    'once': 'WARNING: ThreadSanitizer: data race',
    'pool': 'WARNING: ThreadSanitizer: data race',
    'queue': 'WARNING: ThreadSanitizer: data race',
}


def run(exe, mode):
    env = dict(os.environ)
    # halt_on_error as in the real runs; no suppressions: the self-test must
    # see every report.
    env['TSAN_OPTIONS'] = 'halt_on_error=1:exitcode=66:second_deadlock_stack=1'
    r = subprocess.run([exe, mode], env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr


def main():
    exe, noshim = sys.argv[1], sys.argv[2]
    failures = 0
    for table, binary, label in ((EXPECTED, exe, 'shim'), (EXPECTED_NOSHIM, noshim, 'no shim')):
        for mode, want in table.items():
            status, err = run(binary, mode)
            if want:
                ok = status == 66 and want in err
            else:
                ok = status == 0 and 'ThreadSanitizer' not in err
            print('%s %s (%s): %s' % ('ok' if ok else 'FAIL', mode, label,
                                      want or 'no report'))
            if not ok:
                failures += 1
                print('  exit status %d, stderr:\n%s' % (status, err[-4000:]))
    if failures:
        print('FAIL: %d mode(s) wrong' % failures)
        sys.exit(1)
    print('PASS')


main()
