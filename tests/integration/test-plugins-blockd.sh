#!/usr/bin/env bash
# blockd's built-in plugin drivers (memory, file, null-co) give the same data
# and the same nbdinfo --map as real nbdkit running the same plugin .so after
# the same writes; two memory nodes are independent disks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdkit nbdinfo nbdcopy
: "${BUILD_DIR:?BUILD_DIR must name the build directory}"
PLUGINS=$BUILD_DIR/plugins
source "$(dirname "$0")/nbdkit-lib.sh"
nbdkit_sanitizer_env "$PLUGINS/nbdkit-blockd-memory-plugin.so"

# start_nbdkit PLUGIN ARGS...: serve our PLUGIN .so on $NBD_SOCK.
start_nbdkit() {
    local so=$PLUGINS/nbdkit-blockd-$1-plugin.so; shift
    run_nbdkit "$so" "$@"
}

make_random_file "$TMP/rand1" 1
make_random_file "$TMP/rand2" 2

# exercise URI OUT: the same writes, zeroes and trims, then OUT.map and OUT.data.
exercise() {
    "$PYTHON" - "$1" "$TMP/rand1" "$TMP/rand2" <<'PY' || fail "exercise $1"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
size = h.get_size()
r1 = open(sys.argv[2], "rb").read(); r2 = open(sys.argv[3], "rb").read()
if h.is_read_only():
    sys.exit(0)
h.pwrite(r1, 0)
h.pwrite(r2, 8 << 20, nbd.CMD_FLAG_FUA)
h.pwrite(bytes(65536), 2 << 20)                # zero data into a hole
h.zero(65536, 0)                               # may punch
h.trim(65536, 65536)
h.zero(1 << 20, 9 << 20, nbd.CMD_FLAG_NO_HOLE)
h.zero(65536, 10 << 20, nbd.CMD_FLAG_FAST_ZERO) if h.can_fast_zero() else None
h.pwrite(b"\x01" * 100, size - 100)
h.flush()
h.shutdown()
PY
    nbdinfo --map "$1" >"$2.map" || fail "nbdinfo --map $1"
    nbdcopy "$1" "$2.data" || fail "nbdcopy from $1"
}

# compare NAME: blockd's and nbdkit's results must be identical.
compare() {
    diff -u "$TMP/nbdkit.map" "$TMP/blockd.map" >&2 || fail "$1: maps differ"
    cmp "$TMP/nbdkit.data" "$TMP/blockd.data" || fail "$1: data differs"
    [[ $(nbdinfo --size "$NBD_URI") == $(nbdinfo --size "$URI") ]] || fail "$1: sizes differ"
}

# --- memory ---
start_nbdkit memory size=64M
exercise "$NBD_URI" "$TMP/nbdkit"
start_blockd --blockdev driver=memory,node-name=m0,size=64M \
             --export type=nbd,id=e0,node-name=m0,writable=on
exercise "$URI" "$TMP/blockd"
compare memory
grep -q ' 0  data' "$TMP/blockd.map" && grep -q ' 3  hole,zero' "$TMP/blockd.map" ||
    fail "memory map lacks data or holes: $(cat "$TMP/blockd.map")"
stop_blockd
stop_nbdkit

# --- file (each server gets its own copy of the same sparse image) ---
truncate -s 16M "$TMP/a.img"
dd if="$TMP/rand1" of="$TMP/a.img" bs=1M seek=4 conv=notrunc status=none
cp --sparse=always "$TMP/a.img" "$TMP/b.img"
start_nbdkit file file="$TMP/a.img"
exercise "$NBD_URI" "$TMP/nbdkit"
start_blockd --blockdev driver=file,node-name=f0,filename="$TMP/b.img" \
             --export type=nbd,id=e0,node-name=f0,writable=on
exercise "$URI" "$TMP/blockd"
compare file
stop_blockd
cmp "$TMP/a.img" "$TMP/b.img" || fail "file: images differ after the same writes"
stop_nbdkit
# Read-only file node: reads match the image, writes are refused.
start_blockd --blockdev driver=file,node-name=f0,filename="$TMP/b.img",read-only=on \
             --export type=nbd,id=e0,node-name=f0
nbdinfo --is read-only "$URI" || fail "read-only file node is writable"
nbdcopy "$URI" "$TMP/ro.data" && cmp "$TMP/ro.data" "$TMP/b.img" || fail "read-only file reads differ"
stop_blockd

# --- null-co (default size 1 GiB, like QEMU) ---
start_nbdkit null size=1G
exercise "$NBD_URI" "$TMP/nbdkit"
start_blockd --blockdev driver=null-co,node-name=n0 \
             --export type=nbd,id=e0,node-name=n0,writable=on
exercise "$URI" "$TMP/blockd"
diff -u "$TMP/nbdkit.map" "$TMP/blockd.map" >&2 || fail "null: maps differ"
[[ $(nbdinfo --size "$URI") == 1073741824 ]] || fail "null-co default size is not 1 GiB"
stop_blockd
stop_nbdkit

# --- two memory nodes from the one built-in plugin are separate disks ---
start_blockd --blockdev driver=memory,node-name=m1,size=1M \
             --blockdev driver=memory,node-name=m2,size=2M \
             --export type=nbd,id=e1,node-name=m1,name=m1,writable=on \
             --export type=nbd,id=e2,node-name=m2,name=m2,writable=on
U1="nbd+unix:///m1?socket=$SOCK"; U2="nbd+unix:///m2?socket=$SOCK"
[[ $(nbdinfo --size "$U1") == 1048576 && $(nbdinfo --size "$U2") == 2097152 ]] ||
    fail "node sizes: $(nbdinfo --size "$U1") $(nbdinfo --size "$U2")"
nbdcopy "$TMP/rand1" "$U1" || fail "write m1"
[[ $(nbdinfo --map "$U2" | awk '{print $1, $2, $3}') == "0 2097152 3" ]] ||
    fail "writing m1 changed m2: $(nbdinfo --map "$U2")"
stop_blockd

# --- option errors name the problem ---
"$BLOCKD" --blockdev driver=memory,node-name=m0 \
    --nbd-server addr.type=unix,addr.path="$SOCK" 2>"$TMP/err" >/dev/null &&
    fail "memory without size was accepted"
grep -q size "$TMP/err" || fail "missing size: $(cat "$TMP/err")"
"$BLOCKD" --blockdev driver=file,node-name=f0,filename="$TMP/missing.img" \
    --nbd-server addr.type=unix,addr.path="$SOCK" 2>"$TMP/err" >/dev/null &&
    fail "missing file was accepted"
grep -q 'missing.img' "$TMP/err" || fail "missing file: $(cat "$TMP/err")"
"$BLOCKD" --blockdev driver=file,node-name=f0,filename="$TMP/b.img",aio=bogus \
    --nbd-server addr.type=unix,addr.path="$SOCK" 2>"$TMP/err" >/dev/null &&
    fail "aio=bogus was accepted"
grep -q "aio" "$TMP/err" || fail "aio=bogus: $(cat "$TMP/err")"
echo PASS
