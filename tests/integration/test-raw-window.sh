#!/usr/bin/env bash
# The raw driver's offset/size window: the export is exactly that slice of
# the file; writes land at the offset; out-of-window requests are rejected.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo nbdcopy

make_random_file "$TMP/disk.img" 16
cp "$TMP/disk.img" "$TMP/orig.img"
start_blockd --blockdev "driver=file,node-name=f,filename=$TMP/disk.img" \
             --blockdev driver=raw,node-name=r,file=f,offset=1M,size=4M \
             --export type=nbd,id=e,node-name=r,writable=on

[[ $(nbdinfo --size "$URI") == 4194304 ]] || fail "window size is not 4 MiB"
nbdcopy "$URI" "$TMP/window.img" || fail "nbdcopy from the window failed"
cmp "$TMP/window.img" <(dd if="$TMP/orig.img" bs=1M skip=1 count=4 status=none) ||
    fail "export content is not bytes 1M..5M of the image"

LIBDIR=$(dirname "$0") "$PYTHON" - "$URI" <<'PY' || fail "I/O on the window failed"
import errno, os, sys
sys.path.insert(0, os.environ["LIBDIR"])
from lib import check, errno_of, fail
import nbd
h = nbd.NBD(); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
h.pwrite(b"\x55" * 65536, 0)
h.pwrite(b"\xaa" * 65536, (4 << 20) - 65536)
h.flush()
for what, want, call in [("read", errno.EINVAL, lambda: h.pread(512, 4 << 20)),
                         ("write", errno.ENOSPC, lambda: h.pwrite(b"x" * 512, 4 << 20)),
                         ("straddling write", errno.ENOSPC, lambda: h.pwrite(b"x" * 1024, (4 << 20) - 512))]:
    try:
        call()
        fail("out-of-window %s succeeded" % what)
    except nbd.Error as e:
        check(errno_of(e) == want, "out-of-window %s: %s, want %s" % (what, e, errno.errorcode[want]))
h.shutdown()
PY

# The image: the writes are at 1M and 5M-64K; everything else is untouched.
"$PYTHON" - "$TMP/disk.img" "$TMP/orig.img" <<'PY' || fail "image content is wrong"
import sys
new, old = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
M, K64 = 1 << 20, 65536
assert len(new) == len(old) == 16 * M, "image size changed to %d" % len(new)
assert new[M:M + K64] == b"\x55" * K64, "first window write is not at 1M"
assert new[5 * M - K64:5 * M] == b"\xaa" * K64, "last window write is not at 5M-64K"
assert new[:M] == old[:M], "bytes before the window changed"
assert new[5 * M:] == old[5 * M:], "bytes after the window changed"
assert new[M + K64:5 * M - K64] == old[M + K64:5 * M - K64], "window middle changed"
PY

stop_blockd
