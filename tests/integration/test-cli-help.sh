#!/usr/bin/env bash
# --help and --version exit 0 and print what they promise.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

"$BLOCKD" --help >"$TMP/help" 2>&1 || fail "--help exited non-zero"
for opt in --blockdev --nbd-server --export --pidfile --daemonize --exit-with-parent --log --verbose --run --help --version; do
    grep -q -- "$opt" "$TMP/help" || fail "--help does not mention $opt: $(cat "$TMP/help")"
done
"$BLOCKD" --version >"$TMP/version" 2>&1 || fail "--version exited non-zero"
grep -Eq '^blockd [0-9]+\.[0-9]+' "$TMP/version" || fail "--version printed: $(cat "$TMP/version")"
