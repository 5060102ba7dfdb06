#!/bin/bash
# Runs every benchmark against the release build, one after another, so
# blockd and its peers are measured side by side in the same run.
set -u
here=$(cd "$(dirname "$0")" && pwd)
status=0
run() {
    echo
    echo "=== $1 ==="
    case "$1" in
        *.py) /usr/bin/python3 "$here/$1" || status=1 ;;
        *) bash "$here/$1" || status=1 ;;
    esac
}
run run-bench.sh
for extra in bench-bitmaps.py bench-backup.py bench-mirror.py bench-chain.py bench-tls.sh bench-rbd.py; do
    [ -f "$here/$extra" ] && run "$extra"
done
exit $status
