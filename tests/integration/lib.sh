# shellcheck shell=bash
# Shared helpers for blockd's shell integration tests.  Source it after
# `set -euo pipefail`:
#
#   source "$(dirname "$0")/lib.sh"
#   start_blockd --blockdev driver=memory,node-name=m,size=64M \
#                --export type=nbd,id=e,node-name=m,writable=on
#   nbdinfo "$URI"
#   stop_blockd            # SIGTERM, then asserts exit status 0
#
# start_blockd adds `--nbd-server addr.type=unix,addr.path=$SOCK` unless the
# arguments already name an --nbd-server, and `--pidfile $TMP/blockd.pid`.
# Every helper fails the test with a message on stderr; the EXIT trap kills
# a still-running daemon (by PID) and removes $TMP.

: "${BLOCKD:?BLOCKD must name the blockd binary}"
PYTHON=/usr/bin/python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/blockd-test.XXXXXX")
SOCK=$TMP/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
BLOCKD_PID=
BLOCKD_PIDFILE=$TMP/blockd.pid
BLOCKD_OUT=$TMP/blockd.out
BLOCKD_ERR=$TMP/blockd.err

cleanup() {
    local status=$?
    if [[ -n $BLOCKD_PID ]] && kill -0 "$BLOCKD_PID" 2>/dev/null; then
        kill -KILL "$BLOCKD_PID" 2>/dev/null || true
        wait "$BLOCKD_PID" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && $status -ne 77 && -s $BLOCKD_ERR ]]; then
        echo "--- blockd stderr ---" >&2
        tail -n 40 "$BLOCKD_ERR" >&2
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

# require_tool NAME...: skip when a peer tool is missing.
require_tool() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t is not installed"
    done
}

# start_blockd ARGS...: start the daemon in the background and wait until its
# pidfile exists (exports ready).  Sets BLOCKD_PID.
start_blockd() {
    local args=("$@") a has_server=false
    for a in "${args[@]}"; do [[ $a == --nbd-server ]] && has_server=true; done
    $has_server || args+=(--nbd-server "addr.type=unix,addr.path=$SOCK")
    rm -f "$BLOCKD_PIDFILE"
    "$BLOCKD" "${args[@]}" --pidfile "$BLOCKD_PIDFILE" >"$BLOCKD_OUT" 2>"$BLOCKD_ERR" &
    BLOCKD_PID=$!
    wait_for_pidfile "$BLOCKD_PIDFILE" "$BLOCKD_PID"
}

# wait_for_pidfile FILE [PID]: wait up to 20 s for FILE; fail early if PID dies.
wait_for_pidfile() {
    local file=$1 pid=${2:-} i st
    for ((i = 0; i < 200; i++)); do
        [[ -s $file ]] && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" && st=0 || st=$?
            fail "blockd exited (status $st) before writing $file: $(head -c 500 "$BLOCKD_ERR")"
        fi
        sleep 0.1
    done
    fail "blockd did not write $file within 20 s"
}

# stop_blockd: SIGTERM the daemon and assert it exits with status 0.
stop_blockd() {
    [[ -n $BLOCKD_PID ]] || fail "stop_blockd: no daemon running"
    kill -TERM "$BLOCKD_PID"
    local st=0
    wait "$BLOCKD_PID" || st=$?
    BLOCKD_PID=
    [[ $st -eq 0 ]] || fail "blockd exited with status $st after SIGTERM"
    check_no_sanitizer_report "$BLOCKD_ERR"
}

# check_no_sanitizer_report FILE: fail when FILE (a daemon's stderr) holds
# an ASan or TSan report (the exit status usually tells already, but not
# for a daemon that was expected to fail).
check_no_sanitizer_report() {
    local pattern='ERROR: AddressSanitizer|WARNING: ThreadSanitizer'
    if [[ -f $1 ]] && grep -qE "$pattern" "$1"; then
        fail "sanitizer report in $1:
$(sed -nE "/$pattern/,\$p" "$1" | head -n 120)"
    fi
}

# blockd_inet_uri: the nbd://127.0.0.1:PORT/... URI blockd printed on stdout
# (waits up to 5 s for it: it is printed at start-up).
blockd_inet_uri() {
    local i u
    for ((i = 0; i < 50; i++)); do
        u=$(grep -o 'nbd://127\.0\.0\.1:[0-9]*[^[:space:]]*' "$BLOCKD_OUT" | head -n1 || true)
        if [[ -n $u && ! $u =~ :0(/|$) ]]; then
            echo "$u"
            return 0
        fi
        sleep 0.1
    done
    fail "blockd printed no nbd://127.0.0.1:PORT URI on stdout (got: $(head -c 300 "$BLOCKD_OUT"))"
}

# free_port: a TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# make_random_file PATH MIB: PATH filled with MIB MiB of random bytes.
make_random_file() {
    head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"
}
