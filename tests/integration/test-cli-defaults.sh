#!/usr/bin/env bash
# No arguments: a 1 GiB export disk0 on a unix socket and 127.0.0.1:10809.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

"$PYTHON" -c 'import socket; socket.create_server(("127.0.0.1", 10809)).close()' 2>/dev/null ||
    skip "port 10809 is busy"

# Keep any default socket path inside $TMP.
(cd "$TMP" && export TMPDIR="$TMP" XDG_RUNTIME_DIR="$TMP" && exec "$BLOCKD") \
    >"$BLOCKD_OUT" 2>"$BLOCKD_ERR" </dev/null &
BLOCKD_PID=$!

inet=$(blockd_inet_uri)
[[ $inet =~ ^nbd://127\.0\.0\.1:10809/disk0$ ]] || fail "inet URI is '$inet', want nbd://127.0.0.1:10809/disk0"
unix=$(grep -o 'nbd+unix://[^[:space:]]*' "$BLOCKD_OUT" | head -n1) ||
    fail "no nbd+unix:// URI printed: $(cat "$BLOCKD_OUT")"
[[ $unix == nbd+unix:///disk0\?socket=* ]] || fail "unix URI '$unix' does not name disk0"

for uri in "$inet" "$unix"; do
    [[ $(nbdinfo --size "$uri") == 1073741824 ]] || fail "$uri: size is not 1 GiB"
done
nbdinfo --list "$unix" | grep -qF 'export="disk0"' || fail "--list does not show disk0"
stop_blockd
