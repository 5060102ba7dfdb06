#!/usr/bin/env bash
# Bad command lines exit non-zero with exactly one stderr line naming the culprit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

server=(--nbd-server "addr.type=unix,addr.path=$SOCK")
mem=(--blockdev driver=memory,node-name=m0,size=1M)
exp=(--export type=nbd,id=e0,node-name=m0)

# expect_error CULPRIT ARGS...: blockd ARGS fails with one line mentioning CULPRIT.
expect_error() {
    local culprit=$1 st=0
    shift
    timeout 20 "$BLOCKD" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null || st=$?
    [[ $st -ne 0 && $st -ne 124 ]] || fail "blockd $*: exit status $st, want a failure"
    [[ $(wc -l <"$TMP/err") -eq 1 ]] ||
        fail "blockd $*: want exactly one line on stderr, got:
$(cat "$TMP/err")"
    # Echoing the option back is not enough: the explanation must name the culprit.
    local msg arg
    msg=$(cat "$TMP/err")
    for arg in "$@"; do [[ $arg == "$culprit" ]] || msg=${msg//"$arg"/}; done
    grep -qF -- "$culprit" <<<"$msg" || fail "blockd $*: stderr does not name '$culprit': $(cat "$TMP/err")"
    [[ ! -e $SOCK ]] || fail "blockd $*: left $SOCK behind"
}

expect_error --no-such-option --no-such-option "${mem[@]}" "${exp[@]}" "${server[@]}"
expect_error foo --blockdev driver=memory,node-name=m0,size=1M,foo=1 "${exp[@]}" "${server[@]}"
expect_error nosuchnode "${mem[@]}" --export type=nbd,id=e0,node-name=nosuchnode "${server[@]}"
expect_error size --blockdev driver=memory,node-name=m0,size=12Q "${exp[@]}" "${server[@]}"
expect_error m0 "${mem[@]}" --blockdev driver=memory,node-name=m0,size=2M "${exp[@]}" "${server[@]}"
expect_error nosuchdriver --blockdev driver=nosuchdriver,node-name=m0 "${exp[@]}" "${server[@]}"
expect_error "$TMP/missing.img" --blockdev "driver=file,node-name=f0,filename=$TMP/missing.img" \
    --export type=nbd,id=e0,node-name=f0 "${server[@]}"
expect_error --log --log=console "${mem[@]}" "${exp[@]}" "${server[@]}"
expect_error --daemonize --run true --daemonize "${mem[@]}" "${exp[@]}" "${server[@]}"
# An export that no NBD server could ever serve is refused (qemu-storage-daemon's message).
expect_error "NBD server not running" "${mem[@]}" "${exp[@]}"

# A second daemon naming the first one's live sockets fails and leaves them
# alone: the first keeps serving on both, and still removes them at exit.
QMP_SOCK=$TMP/qmp.sock
monitor=(--chardev "socket,id=m,path=$QMP_SOCK,server=on,wait=off" --monitor chardev=m)
start_blockd "${mem[@]}" "${exp[@]}" "${server[@]}" "${monitor[@]}"
st=0
timeout 20 "$BLOCKD" "${mem[@]}" "${exp[@]}" "${server[@]}" </dev/null >"$TMP/out" 2>"$TMP/err" || st=$?
[[ $st -ne 0 && $st -ne 124 ]] || fail "a second blockd on a live NBD socket: exit status $st"
grep -q "Address already in use" "$TMP/err" || fail "second blockd, NBD socket: $(cat "$TMP/err")"
st=0
timeout 20 "$BLOCKD" "${mem[@]}" "${monitor[@]}" </dev/null >"$TMP/out" 2>"$TMP/err" || st=$?
[[ $st -ne 0 && $st -ne 124 ]] || fail "a second blockd on a live QMP socket: exit status $st"
grep -q "Address already in use" "$TMP/err" || fail "second blockd, QMP socket: $(cat "$TMP/err")"
[[ -S $SOCK && -S $QMP_SOCK ]] || fail "the second blockd removed the first one's sockets"
nbdinfo --size "nbd+unix:///?socket=$SOCK" >/dev/null || fail "the first blockd no longer serves NBD"
stop_blockd
[[ ! -e $SOCK && ! -e $QMP_SOCK ]] || fail "the first blockd left its sockets behind"
# A stale socket file (no one listening) is replaced.
$PYTHON -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$SOCK"
start_blockd "${mem[@]}" "${exp[@]}" "${server[@]}"
nbdinfo --size "nbd+unix:///?socket=$SOCK" >/dev/null || fail "no service after replacing a stale socket"
stop_blockd
echo "PASS"
