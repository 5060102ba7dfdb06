#!/bin/sh
# Runs the whole test suite (unit + integration) in the sanitized build and
# ends with one line "N passed, N failed, N skipped".
set -u
BUILD=${BUILD:-build}
meson test -C "$BUILD" --print-errorlogs --num-processes 2 "$@"
status=$?
/usr/bin/python3 - "$BUILD/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"passed": 0, "failed": 0, "skipped": 0}
try:
    with open(sys.argv[1]) as f:
        for line in f:
            try:
                r = json.loads(line)["result"]
            except ValueError:
                continue  # a torn line (another meson run shares the log)
            if r in ("OK", "EXPECTEDFAIL"):
                counts["passed"] += 1
            elif r == "SKIP":
                counts["skipped"] += 1
            else:
                counts["failed"] += 1
except FileNotFoundError:
    counts["failed"] += 1
print(f'{counts["passed"]} passed, {counts["failed"]} failed, {counts["skipped"]} skipped')
PY
exit $status
