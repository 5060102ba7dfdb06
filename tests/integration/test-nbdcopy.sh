#!/usr/bin/env bash
# nbdcopy round trip through a writable file-backed export, 1 and 4 connections.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdcopy sha256sum

make_random_file "$TMP/src.img" 64
truncate -s 64M "$TMP/disk.img"
start_blockd --blockdev "driver=file,node-name=f0,filename=$TMP/disk.img" \
             --export type=nbd,id=e0,node-name=f0,writable=on
want=$(sha256sum <"$TMP/src.img")

# round_trip ARGS...: src.img -> export -> out.img with nbdcopy ARGS, compare.
round_trip() {
    rm -f "$TMP/out.img"
    nbdcopy "$@" "$TMP/src.img" "$URI" || fail "nbdcopy $* to the export failed"
    nbdcopy "$@" "$URI" "$TMP/out.img" || fail "nbdcopy $* from the export failed"
    [[ $(sha256sum <"$TMP/out.img") == "$want" ]] ||
        fail "nbdcopy $*: data read back differs from what was written"
}

round_trip
# Forget the first copy's data so the second round proves itself.
dd if=/dev/zero of="$TMP/disk.img" bs=1M count=64 conv=notrunc status=none
round_trip --connections=4 --requests=64 --flush
# The image file itself holds the data (no copy lost in a cache).
[[ $(sha256sum <"$TMP/disk.img") == "$want" ]] || fail "disk.img differs from src.img"

nbdcopy "$URI" null: || fail "nbdcopy to null: failed"

stop_blockd
