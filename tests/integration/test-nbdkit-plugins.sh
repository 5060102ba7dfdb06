#!/usr/bin/env bash
# driver=nbdkit: Debian's installed nbdkit plugins (memory, data, pattern,
# null, sparse-random, file, and split for API version 1) served by blockd
# give the same data (nbdcopy checksums), the same nbdinfo --map and the
# same size as the same plugin with the same parameters served by nbdkit.
# Parameters are given both as bare keys and as args.KEY.  Two nodes of one
# plugin with different parameters are independent instances.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nbdkit-lib.sh"
require_tool nbdkit nbdinfo nbdcopy
PLUGINDIR=$(nbdkit --dump-config | sed -n 's/^plugindir=//p')
for p in memory data pattern null sparse-random file split; do
    [[ -f $PLUGINDIR/nbdkit-$p-plugin.so ]] || skip "nbdkit $p plugin is not installed"
done

# start_nbdkit PLUGIN ARGS...: real nbdkit on $NBD_SOCK.
start_nbdkit() { run_nbdkit "$@"; }

# snapshot URI OUT: OUT.map, OUT.sum, OUT.size, OUT.can.
COPY_FLAGS=
snapshot() {
    nbdinfo --map "$1" >"$2.map" || fail "nbdinfo --map $1"
    nbdcopy $COPY_FLAGS "$1" - | md5sum >"$2.sum" || fail "nbdcopy from $1"
    nbdinfo --size "$1" >"$2.size"
    local c
    for c in read-only flush trim zero fua cache; do
        nbdinfo --can "$c" "$1" && echo "$c" || true
    done >"$2.can"
}

# compare NAME: identical size, data and map; capabilities too unless told.
compare() {
    cmp -s "$TMP/nbdkit.size" "$TMP/blockd.size" ||
        fail "$1: sizes differ: $(cat "$TMP/nbdkit.size") vs $(cat "$TMP/blockd.size")"
    cmp -s "$TMP/nbdkit.sum" "$TMP/blockd.sum" || fail "$1: data differs"
    diff -u "$TMP/nbdkit.map" "$TMP/blockd.map" >&2 || fail "$1: maps differ"
}

# check PLUGIN BLOCKD-KEYVAL-PARAMS -- NBDKIT-PARAMS...: serve both ways, compare.
check() {
    local plugin=$1 params=$2; shift 3
    start_nbdkit "$plugin" "$@"
    snapshot "$NBD_URI" "$TMP/nbdkit"
    start_blockd --blockdev "driver=nbdkit,node-name=n0,plugin=$plugin${params:+,$params}" \
                 --export type=nbd,id=e0,node-name=n0
    snapshot "$URI" "$TMP/blockd"
    compare "$plugin"
    stop_blockd
    stop_nbdkit
}

check memory "size=64M" -- size=64M
check data "data=1 2 3 *1000 @1048576 0x55 *70000 @^65536 \"hello\",size=4M" -- \
    "data=1 2 3 *1000 @1048576 0x55 *70000 @^65536 \"hello\"" size=4M
check data "args.data=0xff *300000,args.size=1M" -- "data=0xff *300000" size=1M
check pattern "size=3M" -- size=3M
check null "args.size=5M" -- size=5M
check sparse-random "size=64M,seed=42,percent=25,runlength=65536" -- \
    size=64M seed=42 percent=25 runlength=65536
grep -q ' 0  data' "$TMP/blockd.map" && grep -q ' 3  hole,zero' "$TMP/blockd.map" ||
    fail "sparse-random map lacks data or holes: $(head "$TMP/blockd.map")"

# file: a sparse image with data in the middle.
truncate -s 16M "$TMP/a.img"
make_random_file "$TMP/rand" 2
dd if="$TMP/rand" of="$TMP/a.img" bs=1M seek=5 conv=notrunc status=none
check file "file=$TMP/a.img" -- file="$TMP/a.img"
# split is an API version 1 plugin (no flags; FUA emulated by flush).
# nbdkit 1.32's split crashes in .extents on a request shorter than the
# file (in nbdkit too), so nbdcopy must not ask for extents here; the whole
# disk map (one request from offset 0) is fine.
COPY_FLAGS=--no-extents
head -c 1M "$TMP/rand" >"$TMP/part1"
check split "file=$TMP/part1" -- file="$TMP/part1"
COPY_FLAGS=

# --- writable: the same writes through both give the same disk and caps ---
exercise() {
    "$PYTHON" - "$1" "$TMP/rand" <<'PY' || fail "exercise $1"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
r = open(sys.argv[2], "rb").read()
h.pwrite(r[:1 << 20], 0)
h.pwrite(r[1 << 20:], 8 << 20, nbd.CMD_FLAG_FUA if h.can_fua() else 0)
h.zero(65536, 0)
h.trim(65536, 65536) if h.can_trim() else None
h.zero(1 << 20, 9 << 20, nbd.CMD_FLAG_NO_HOLE)
h.flush() if h.can_flush() else None
h.shutdown()
PY
}
start_nbdkit memory size=16M
exercise "$NBD_URI"
snapshot "$NBD_URI" "$TMP/nbdkit"
start_blockd --blockdev driver=nbdkit,node-name=m,plugin=memory,size=16M \
             --export type=nbd,id=e0,node-name=m,writable=on
exercise "$URI"
snapshot "$URI" "$TMP/blockd"
compare "memory (writable)"
diff -u "$TMP/nbdkit.can" "$TMP/blockd.can" >&2 || fail "memory: capabilities differ"
stop_blockd
stop_nbdkit

# API 1, writable: split over a copy of the part, FUA becomes a flush.
COPY_FLAGS=--no-extents
head -c 16M /dev/zero >"$TMP/big1"; cp "$TMP/big1" "$TMP/big2"
start_nbdkit split file="$TMP/big1"
exercise "$NBD_URI"
snapshot "$NBD_URI" "$TMP/nbdkit"
start_blockd --blockdev driver=nbdkit,node-name=s,plugin=split,file="$TMP/big2" \
             --export type=nbd,id=e0,node-name=s,writable=on
exercise "$URI"
snapshot "$URI" "$TMP/blockd"
compare "split (writable)"
diff -u "$TMP/nbdkit.can" "$TMP/blockd.can" >&2 || fail "split: capabilities differ"
stop_blockd
stop_nbdkit
cmp "$TMP/big1" "$TMP/big2" || fail "split: files differ after the same writes"
COPY_FLAGS=

# --- two nodes of one plugin with different parameters ---
start_blockd --blockdev driver=nbdkit,node-name=d1,plugin=data,data="1 2 3",size=1M \
             --blockdev driver=nbdkit,node-name=d2,plugin=data,data="9 8 7 6",size=2M \
             --blockdev driver=nbdkit,node-name=m1,plugin=memory,size=1M \
             --blockdev driver=nbdkit,node-name=m2,plugin=memory,size=3M \
             --export type=nbd,id=e1,node-name=d1,name=d1 \
             --export type=nbd,id=e2,node-name=d2,name=d2 \
             --export type=nbd,id=e3,node-name=m1,name=m1,writable=on \
             --export type=nbd,id=e4,node-name=m2,name=m2,writable=on
u() { echo "nbd+unix:///$1?socket=$SOCK"; }
[[ $(nbdinfo --size "$(u d1)") == 1048576 && $(nbdinfo --size "$(u d2)") == 2097152 ]] ||
    fail "data node sizes: $(nbdinfo --size "$(u d1)") $(nbdinfo --size "$(u d2)")"
[[ $(nbdcopy "$(u d1)" - | head -c 4 | od -An -tu1 | tr -s ' ') == " 1 2 3 0" ]] || fail "d1 content"
[[ $(nbdcopy "$(u d2)" - | head -c 4 | od -An -tu1 | tr -s ' ') == " 9 8 7 6" ]] || fail "d2 content"
[[ $(nbdinfo --size "$(u m1)") == 1048576 && $(nbdinfo --size "$(u m2)") == 3145728 ]] ||
    fail "memory node sizes"
nbdcopy "$TMP/part1" "$(u m1)" || fail "write m1"
[[ $(nbdinfo --map "$(u m2)" | awk '{print $1, $2, $3}') == "0 3145728 3" ]] ||
    fail "writing m1 changed m2: $(nbdinfo --map "$(u m2)")"
cmp <(nbdcopy "$(u m1)" -) "$TMP/part1" || fail "m1 reads back wrong"
stop_blockd

# --- eval keeps pointers to its parameters until it is unloaded (nbdkit
# passes argv, which outlives the plugin): its close script still runs, and
# stop_blockd's clean exit (no ASan report) shows the strings were alive ---
if [[ -f $PLUGINDIR/nbdkit-eval-plugin.so ]]; then
    start_blockd --blockdev "driver=nbdkit,node-name=ev,plugin=eval,get_size=echo 65536,pread=head -c \$3 /dev/zero,close=touch $TMP/eval-closed" \
                 --export type=nbd,id=e0,node-name=ev,name=ev
    [[ $(nbdinfo --size "nbd+unix:///ev?socket=$SOCK") == 65536 ]] || fail "eval node size"
    stop_blockd
    [[ -f $TMP/eval-closed ]] || fail "eval's close script did not run"
fi

# --- command-line errors name the plugin and the parameter ---
cli_error() {   # cli_error EXPECTED BLOCKDEV-OPTIONS
    "$BLOCKD" --blockdev "$2" --nbd-server addr.type=unix,addr.path="$SOCK" \
        >/dev/null 2>"$TMP/err" && fail "accepted: $2"
    grep -qF -- "$1" "$TMP/err" || fail "$2: expected '$1' in: $(cat "$TMP/err")"
}
cli_error "Parameter 'size' is given twice" driver=nbdkit,node-name=n,plugin=memory,args.size=1M,size=2M
cli_error "data: parameter 'size'" "driver=nbdkit,node-name=n,plugin=data,data=1,size=huge"
cli_error "cannot load nbdkit plugin 'no-such-plugin-xyz'" driver=nbdkit,node-name=n,plugin=no-such-plugin-xyz
cli_error "Parameter 'plugin' is missing" driver=nbdkit,node-name=n,size=1M
echo PASS
