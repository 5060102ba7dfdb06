#!/usr/bin/env bash
# Real nbdkit loads our standalone plugins (nbdkit-blockd-{memory,file,null}-plugin.so):
# data written with nbdcopy reads back identical and nbdinfo --map shows holes and data.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdkit nbdinfo nbdcopy
: "${BUILD_DIR:?BUILD_DIR must name the build directory}"
PLUGINS=$BUILD_DIR/plugins
source "$(dirname "$0")/nbdkit-lib.sh"
nbdkit_sanitizer_env "$PLUGINS/nbdkit-blockd-memory-plugin.so"
export PATH=/usr/bin:$PATH             # nbdsh etc. need Debian's python3

# start_nbdkit PLUGIN ARGS...: serve our PLUGIN .so on $NBD_SOCK.
start_nbdkit() {
    local so=$PLUGINS/nbdkit-blockd-$1-plugin.so; shift
    [[ -f $so ]] || fail "$so was not built"
    run_nbdkit "$so" "$@"
}

# expect_map WANT: nbdinfo --map (offset length type) must equal WANT.
expect_map() {
    local got
    got=$(nbdinfo --map "$NBD_URI" | awk '{print $1, $2, $3}') || fail "nbdinfo --map failed"
    [[ $got == "$1" ]] || fail "map: want
$1
got
$got"
}

# read_range OFFSET LENGTH: the export's bytes on stdout.
read_range() {
    "$PYTHON" -c 'import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
sys.stdout.buffer.write(h.pread(int(sys.argv[3]), int(sys.argv[2])))
h.shutdown()' "$NBD_URI" "$1" "$2"
}

make_random_file "$TMP/rand" 1

# --- memory ---
env "${NBDKIT_ENV[@]}" nbdkit --dump-plugin "$PLUGINS/nbdkit-blockd-memory-plugin.so" |
    grep -q '^thread_model=parallel' || fail "memory plugin is not parallel"
start_nbdkit memory size=64M
[[ $(nbdinfo --size "$NBD_URI") == 67108864 ]] || fail "memory size"
nbdinfo --can multi-conn "$NBD_URI" || fail "memory: no multi-conn"
expect_map "0 67108864 3"
nbdcopy "$TMP/rand" "$NBD_URI" || fail "nbdcopy to memory"
read_range 0 1048576 | cmp - "$TMP/rand" || fail "memory read-back differs"
expect_map "0 1048576 0
1048576 66060288 3"
# A second connection sees the same store (one instance under nbdkit).
"$PYTHON" - "$NBD_URI" <<'PY' || fail "memory: zero/trim via libnbd"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.zero(65536, 0)                    # frees the first page again
h.trim(65536, 65536)
assert h.pread(131072, 0) == bytes(131072)
h.shutdown()
PY
expect_map "0 131072 3
131072 917504 0
1048576 66060288 3"
stop_nbdkit
env "${NBDKIT_ENV[@]}" nbdkit -U "$NBD_SOCK" "$PLUGINS/nbdkit-blockd-memory-plugin.so" \
    --run true 2>"$TMP/err" && fail "memory without size must fail"
grep -q 'size parameter is required' "$TMP/err" || fail "missing-size message: $(cat "$TMP/err")"

# --- file ---
truncate -s 16M "$TMP/disk.img"
dd if="$TMP/rand" of="$TMP/disk.img" bs=1M seek=4 conv=notrunc status=none
start_nbdkit file file="$TMP/disk.img"
expect_map "0 4194304 3
4194304 1048576 0
5242880 11534336 3"
nbdcopy "$NBD_URI" "$TMP/copy.img" || fail "nbdcopy from file"
cmp "$TMP/copy.img" "$TMP/disk.img" || fail "file read differs"
# Write through nbdkit, check the file itself.
make_random_file "$TMP/rand2" 2
"$PYTHON" - "$NBD_URI" "$TMP/rand2" <<'PY' || fail "file: writes via libnbd"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
data = open(sys.argv[2], "rb").read()
h.pwrite(data, 8 << 20, nbd.CMD_FLAG_FUA)
h.zero(1 << 20, 4 << 20)                                   # may punch a hole
h.zero(65536, 12 << 20, nbd.CMD_FLAG_NO_HOLE)
h.flush()
h.shutdown()
PY
cmp <(dd if="$TMP/disk.img" bs=1M skip=8 count=2 status=none) "$TMP/rand2" ||
    fail "file contents after write differ"
cmp <(dd if="$TMP/disk.img" bs=1M skip=4 count=1 status=none) <(head -c 1048576 /dev/zero) ||
    fail "zeroed range is not zero"
nbdinfo --map "$NBD_URI" | awk '$1 <= 4194304 && $1 + $2 >= 5242880 && $3 == 3 {found=1} END {exit !found}' ||
    fail "zero with MAY_TRIM did not leave a hole: $(nbdinfo --map "$NBD_URI")"
stop_nbdkit
start_nbdkit file file="$TMP/disk.img" -r
nbdinfo --is read-only "$NBD_URI" || fail "file -r is not read-only"
stop_nbdkit

# --- null ---
start_nbdkit null size=1G
[[ $(nbdinfo --size "$NBD_URI") == 1073741824 ]] || fail "null size"
expect_map "0 1073741824 3"
nbdcopy "$TMP/rand" "$NBD_URI" || fail "nbdcopy to null"
read_range 0 1048576 | cmp - <(head -c 1048576 /dev/zero) ||
    fail "null does not read zeroes"
nbdinfo --can fast-zero "$NBD_URI" || fail "null: no fast zero"
stop_nbdkit
echo PASS
