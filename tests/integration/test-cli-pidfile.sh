#!/usr/bin/env bash
# --pidfile holds the daemon's PID while it runs and is removed at exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
require_tool nbdinfo

start_blockd --blockdev driver=memory,node-name=m0,size=1M \
             --export type=nbd,id=e0,node-name=m0
[[ $(cat "$BLOCKD_PIDFILE") -eq $BLOCKD_PID ]] ||
    fail "pidfile holds '$(cat "$BLOCKD_PIDFILE")', daemon PID is $BLOCKD_PID"
# Written once the exports are ready: a client gets in right away.
[[ $(nbdinfo --size "$URI") == 1048576 ]] || fail "not serving when the pidfile appeared"
stop_blockd
[[ ! -e $BLOCKD_PIDFILE ]] || fail "pidfile still exists after exit"
[[ ! -e $SOCK ]] || fail "unix socket still exists after exit"
