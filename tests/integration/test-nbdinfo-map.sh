#!/usr/bin/env bash
# nbdinfo --map: a fresh memory export is one hole+zero extent; written data shows.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

start_blockd --blockdev driver=memory,node-name=m0,size=64M \
             --export type=nbd,id=e0,node-name=m0,writable=on

map=$(nbdinfo --map "$URI") || fail "nbdinfo --map failed"
[[ $(awk '{print $1, $2, $3, $4}' <<<"$map") == "0 67108864 3 hole,zero" ]] ||
    fail "fresh export: want one extent '0 67108864 3 hole,zero', got:
$map"

"$PYTHON" - "$URI" <<'PY' || fail "writing 1 MiB at 4 MiB failed"
import nbd, sys
h = nbd.NBD(); h.connect_uri(sys.argv[1])
h.pwrite(b"\xab" * (1 << 20), 4 << 20)
h.shutdown()
PY

nbdinfo --map=base:allocation "$URI" >"$TMP/map" || fail "nbdinfo --map failed"
# Extents tile [0, size); 4M..5M is data (type 0), everything else hole,zero (3).
awk -v size=67108864 '
    { if ($1 != next_) { print "gap at " next_; bad = 1 } next_ = $1 + $2 }
    { inside = $1 < 5242880 && $1 + $2 > 4194304 }
    inside && $3 != 0 { print "not data inside 4M..5M: " $0; bad = 1 }
    !inside && $3 != 3 { print "not hole,zero outside 4M..5M: " $0; bad = 1 }
    END { if (next_ != size) { print "extents end at " next_; bad = 1 } exit bad }
' next_=0 "$TMP/map" || fail "unexpected map after write:
$(cat "$TMP/map")"

stop_blockd
