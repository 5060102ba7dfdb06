#!/usr/bin/env bash
# --daemonize returns 0 only after a successful start-up; the daemon serves.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

# The daemon is not our child: poll for its exit instead of `wait`.
kill_daemon() {
    local i
    kill -TERM "$BLOCKD_PID"
    for ((i = 0; i < 300; i++)); do
        kill -0 "$BLOCKD_PID" 2>/dev/null || { BLOCKD_PID=; return 0; }
        sleep 0.1
    done
    fail "daemonized blockd did not exit within 30 s of SIGTERM"
}

# Failure: a missing image; the parent must report it and exit non-zero.
st=0
timeout 30 "$BLOCKD" --daemonize --pidfile "$TMP/bad.pid" \
    --blockdev "driver=file,node-name=f0,filename=$TMP/missing.img" \
    --export type=nbd,id=e0,node-name=f0 \
    --nbd-server "addr.type=unix,addr.path=$TMP/bad.sock" >"$TMP/out" 2>"$TMP/err" || st=$?
[[ $st -ne 0 && $st -ne 124 ]] || fail "--daemonize with a missing image: exit $st, want failure"
grep -qF missing.img "$TMP/err" || fail "--daemonize failure not reported on stderr: $(cat "$TMP/err")"
[[ ! -e $TMP/bad.pid ]] || fail "failed --daemonize left a pidfile (pid $(cat "$TMP/bad.pid"))"

# Success: exit 0 once serving; the pidfile names the daemon.
timeout 30 "$BLOCKD" --daemonize --pidfile "$BLOCKD_PIDFILE" \
    --blockdev driver=memory,node-name=m0,size=2M \
    --export type=nbd,id=e0,node-name=m0 \
    --nbd-server "addr.type=unix,addr.path=$SOCK" >"$TMP/out" 2>"$TMP/err" ||
    fail "--daemonize exited $?: $(cat "$TMP/err")"
[[ -s $BLOCKD_PIDFILE ]] || fail "--daemonize returned before writing the pidfile"
BLOCKD_PID=$(cat "$BLOCKD_PIDFILE")   # the EXIT trap kills it if we fail
kill -0 "$BLOCKD_PID" || fail "daemon $BLOCKD_PID is not running"
[[ $(nbdinfo --size "$URI") == 2097152 ]] || fail "daemonized blockd does not serve"
kill_daemon
[[ ! -e $BLOCKD_PIDFILE ]] || fail "pidfile still exists after the daemon exited"
