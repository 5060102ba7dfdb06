#!/usr/bin/env bash
# A block device (a loop device) served by the file driver: size from the
# device, nbdcopy both ways, qemu-img convert, nbdinfo --map (all data: a
# block device has no SEEK_DATA), write-zeroes and trim through the device.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdcopy nbdinfo qemu-img losetup sha256sum
[[ $(id -u) -eq 0 ]] || skip "loop devices need root"

truncate -s 64M "$TMP/backing.img"
LOOP=$(losetup -f --show "$TMP/backing.img" 2>/dev/null) || skip "no loop device available"
# On any exit: the daemon goes first (it holds the device open), then the
# device, then lib.sh's cleanup with the test's exit status.
detach() {
    local st=$?
    if [[ -n $BLOCKD_PID ]] && kill -0 "$BLOCKD_PID" 2>/dev/null; then
        kill -KILL "$BLOCKD_PID" 2>/dev/null || true
        wait "$BLOCKD_PID" 2>/dev/null || true
    fi
    for _ in 1 2 3 4 5 6 7 8 9 10; do losetup -d "$LOOP" 2>/dev/null && break; sleep 0.2; done
    return "$st"
}
trap 'detach; cleanup' EXIT

make_random_file "$TMP/src.img" 64
start_blockd --blockdev "driver=file,node-name=f0,filename=$LOOP" \
             --export type=nbd,id=e0,node-name=f0,writable=on
[[ $(nbdinfo --size "$URI") -eq $((64 << 20)) ]] || fail "size of the device: $(nbdinfo --size "$URI")"
nbdcopy "$TMP/src.img" "$URI" || fail "nbdcopy to the device export failed"
nbdcopy "$URI" "$TMP/out.img" || fail "nbdcopy from the device export failed"
cmp "$TMP/src.img" "$TMP/out.img" || fail "nbdcopy round trip differs"
qemu-img convert -f raw -O raw "$URI" "$TMP/conv.img" || fail "qemu-img convert from the export failed"
cmp "$TMP/src.img" "$TMP/conv.img" || fail "qemu-img convert copy differs"
map=$(nbdinfo --map "$URI") || fail "nbdinfo --map failed"
[[ $(wc -l <<<"$map") -eq 1 && $map == *"67108864"*"0"*"data"* ]] || fail "map of a block device: $map"
# Write-zeroes and trim reach the device; what was zeroed reads as zeroes.
$PYTHON - "$URI" <<'PY' || fail "zero/trim on the device export"
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
h.zero(1 << 20, 4 << 20)
h.zero(1 << 20, 8 << 20, nbd.CMD_FLAG_NO_HOLE)
h.trim(1 << 20, 16 << 20)
h.flush()
assert h.pread(1 << 20, 4 << 20) == bytes(1 << 20), "zeroed range is not zero"
assert h.pread(1 << 20, 8 << 20) == bytes(1 << 20), "NO_HOLE zeroed range is not zero"
h.shutdown()
PY
stop_blockd
cmp -n $((4 << 20)) "$TMP/src.img" "$LOOP" || fail "the device does not hold the data"
echo "PASS"
