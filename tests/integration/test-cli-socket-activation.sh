#!/usr/bin/env bash
# Socket activation: nbdinfo/nbdcopy start blockd themselves (LISTEN_FDS, fd 3).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo nbdcopy

size=$(nbdinfo --size -- [ "$BLOCKD" --blockdev driver=memory,node-name=m,size=64M \
                            --export type=nbd,id=e,node-name=m ]) ||
    fail "nbdinfo with socket activation failed"
[[ $size == 67108864 ]] || fail "socket-activated size is '$size', want 67108864"

make_random_file "$TMP/src.img" 8
nbdcopy -- [ "$BLOCKD" --blockdev "driver=file,node-name=f,filename=$TMP/src.img" \
             --export type=nbd,id=e,node-name=f ] "$TMP/out.img" ||
    fail "nbdcopy with socket activation failed"
cmp "$TMP/src.img" "$TMP/out.img" || fail "socket-activated copy differs"
