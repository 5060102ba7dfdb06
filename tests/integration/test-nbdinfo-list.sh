#!/usr/bin/env bash
# nbdinfo --list shows every export with its description; --json parses.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

start_blockd \
    --blockdev driver=memory,node-name=m0,size=64M \
    --blockdev driver=memory,node-name=m1,size=32M \
    --export type=nbd,id=e0,node-name=m0,name=alpha,writable=on,description=first-disk \
    --export "type=nbd,id=e1,node-name=m1,name=beta,description=second disk"

out=$(nbdinfo --list "$URI") || fail "nbdinfo --list failed"
for want in 'export="alpha"' 'description: first-disk' \
            'export="beta"' 'description: second disk' \
            'export-size: 67108864' 'export-size: 33554432'; do
    grep -qF "$want" <<<"$out" || fail "nbdinfo --list lacks '$want':
$out"
done

# JSON: both exports, in creation order, with their descriptions and sizes.
nbdinfo --list --json "$URI" >"$TMP/list.json" || fail "nbdinfo --list --json failed"
"$PYTHON" - "$TMP/list.json" <<'PY' || fail "nbdinfo --list --json output is wrong"
import json, sys
doc = json.load(open(sys.argv[1]))
got = [(e["export-name"], e.get("description"), e["export-size"]) for e in doc["exports"]]
want = [("alpha", "first-disk", 64 << 20), ("beta", "second disk", 32 << 20)]
if got != want:
    sys.exit("got %r, want %r" % (got, want))
PY

# The default export "" is the first one.
[[ $(nbdinfo --size "$URI") == 67108864 ]] || fail "export \"\" is not the first export"

stop_blockd
