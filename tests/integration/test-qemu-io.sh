#!/usr/bin/env bash
# qemu-io write/flush/zero/discard/read-verify on a writable export; a
# read-only export refuses writes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool qemu-io

start_blockd --blockdev driver=memory,node-name=m0,size=64M \
             --blockdev driver=memory,node-name=m1,size=64M \
             --export type=nbd,id=rw,node-name=m0,name=rw,writable=on \
             --export type=nbd,id=ro,node-name=m1,name=ro
rw="nbd+unix:///rw?socket=$SOCK"
ro="nbd+unix:///ro?socket=$SOCK"

# qio URI CMD...: run qemu-io with each CMD; fail on any error or pattern mismatch.
qio() {
    local uri=$1 args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f raw "${args[@]}" "$uri" >"$TMP/qio.out" 2>&1 ||
        fail "qemu-io $* exited non-zero: $(cat "$TMP/qio.out")"
    ! grep -Eqi 'failed|error|denied' "$TMP/qio.out" ||
        fail "qemu-io $* reported an error: $(cat "$TMP/qio.out")"
}
expect_line() {
    grep -qF "$1" "$TMP/qio.out" || fail "qemu-io output lacks '$1': $(cat "$TMP/qio.out")"
}

qio "$rw" 'aio_write -P 0x55 0 1M' 'aio_flush' 'read -P 0x55 0 1M' 'write -z 2M 1M' \
          'read -P 0 2M 1M' 'discard 3M 1M' 'flush'
expect_line 'wrote 1048576/1048576 bytes at offset 0'
expect_line 'read 1048576/1048576 bytes at offset 0'
expect_line 'wrote 1048576/1048576 bytes at offset 2097152'
expect_line 'read 1048576/1048576 bytes at offset 2097152'
expect_line 'discard 1048576/1048576 bytes at offset 3145728'

# A new connection sees the data; the pattern check really checks.
qio "$rw" 'read -P 0x55 0 1M' 'read -P 0 1M 3M'
if qemu-io -f raw -c 'read -P 0x56 0 1M' "$rw" >"$TMP/qio.out" 2>&1; then
    fail "qemu-io pattern check passed on the wrong pattern: $(cat "$TMP/qio.out")"
fi

# Read-only export: qemu-io cannot write to it, and the data stays zero.
if qemu-io -f raw -c 'write -P 0x55 0 64k' "$ro" >"$TMP/qio.out" 2>&1; then
    fail "qemu-io wrote to the read-only export: $(cat "$TMP/qio.out")"
fi
qemu-io -r -f raw -c 'read -P 0 0 64k' "$ro" >"$TMP/qio.out" 2>&1 ||
    fail "read-only export: read failed or data changed: $(cat "$TMP/qio.out")"

stop_blockd
