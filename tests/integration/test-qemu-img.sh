#!/usr/bin/env bash
# qemu-img convert/compare/map/info over nbd+unix:// and nbd://127.0.0.1:PORT.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool qemu-img nbdinfo

# A sparse source: random data at 0..4M and 20M..24M, zeroes elsewhere.
truncate -s 64M "$TMP/src.img"
make_random_file "$TMP/chunk" 4
dd if="$TMP/chunk" of="$TMP/src.img" bs=1M conv=notrunc status=none
dd if="$TMP/chunk" of="$TMP/src.img" bs=1M seek=20 conv=notrunc status=none

start_blockd --blockdev driver=memory,node-name=m0,size=64M \
             --export type=nbd,id=e0,node-name=m0,name=disk,writable=on \
             --nbd-server "addr.type=unix,addr.path=$SOCK" \
             --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port=0
hostport=$(blockd_inet_uri | sed -E 's|^nbd://([^/]*).*|\1|')
unix_uri="nbd+unix:///disk?socket=$SOCK"
inet_uri="nbd://$hostport/disk"

# same_map URI: qemu-img map and nbdinfo --map describe the same extents.
same_map() {
    qemu-img map --output=json -f raw "$1" >"$TMP/qemu.json" || fail "qemu-img map $1 failed"
    nbdinfo --map --json "$1" >"$TMP/nbdinfo.json" || fail "nbdinfo --map $1 failed"
    "$PYTHON" - "$TMP/qemu.json" "$TMP/nbdinfo.json" <<'PY' || fail "maps of $1 differ"
import json, sys
def merge(ext):
    out = []
    for start, length, data, zero in ext:
        if out and out[-1][2:] == [data, zero] and out[-1][0] + out[-1][1] == start:
            out[-1][1] += length
        else:
            out.append([start, length, data, zero])
    return out
q = merge((e["start"], e["length"], e["data"], e["zero"]) for e in json.load(open(sys.argv[1])))
n = merge((e["offset"], e["length"], not (e["type"] & 1), bool(e["type"] & 2))
          for e in json.load(open(sys.argv[2])))
if q != n or q[-1][0] + q[-1][1] != 64 << 20:
    sys.exit("qemu-img map %r\nnbdinfo --map %r" % (q, n))
PY
}

for uri in "$unix_uri" "$inet_uri"; do
    qemu-img info -f raw "$uri" >"$TMP/info" || fail "qemu-img info $uri failed"
    grep -q 'virtual size: 64 MiB (67108864 bytes)' "$TMP/info" ||
        fail "qemu-img info $uri: wrong size: $(cat "$TMP/info")"
    qemu-img convert -n -f raw -O raw "$TMP/src.img" "$uri" || fail "qemu-img convert to $uri failed"
    qemu-img compare -f raw -F raw "$TMP/src.img" "$uri" || fail "qemu-img compare with $uri: differ"
    same_map "$uri"
done

# Data written at 20M must show as data in the map.
grep -q '"start": 20971520, "length": 4194304, .*"data": true' "$TMP/qemu.json" ||
    fail "qemu-img map does not show 20M..24M as data: $(cat "$TMP/qemu.json")"

stop_blockd
