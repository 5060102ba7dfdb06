#!/usr/bin/env bash
# nbdinfo --size / --is read-only / --can match a writable and a read-only export.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

start_blockd \
    --blockdev driver=memory,node-name=m0,size=64M \
    --blockdev driver=memory,node-name=m1,size=1M \
    --export type=nbd,id=rw,node-name=m0,name=rw,writable=on \
    --export type=nbd,id=ro,node-name=m1,name=ro
rw="nbd+unix:///rw?socket=$SOCK"
ro="nbd+unix:///ro?socket=$SOCK"

[[ $(nbdinfo --size "$rw") == 67108864 ]] || fail "--size of rw is not 67108864"
[[ $(nbdinfo --size "$ro") == 1048576 ]] || fail "--size of ro is not 1048576"

# expect_can URI WHAT STATUS: nbdinfo exits 0 for true, 2 for false.
expect_can() {
    local st=0
    nbdinfo --can "$2" "$1" || st=$?
    [[ $st -eq $3 ]] || fail "nbdinfo --can $2 $1: exit $st, want $3"
}
for c in write flush trim zero fua multi-conn cache fast-zero df; do
    expect_can "$rw" "$c" 0
done
for c in write trim zero fast-zero; do
    expect_can "$ro" "$c" 2
done
for c in cache df; do
    expect_can "$ro" "$c" 0
done

st=0; nbdinfo --is read-only "$rw" || st=$?
[[ $st -eq 2 ]] || fail "rw export: --is read-only exit $st, want 2"
st=0; nbdinfo --is read-only "$ro" || st=$?
[[ $st -eq 0 ]] || fail "ro export: --is read-only exit $st, want 0"

stop_blockd
