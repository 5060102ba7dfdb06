# shellcheck shell=bash
# A real nbdkit beside the daemon under test, for the plugin tests; source
# after lib.sh.  run_nbdkit ARGS... serves on $NBD_SOCK ($NBD_URI) and waits
# for its pidfile; stop_nbdkit (also run at exit) stops it by PID.

NBDKIT_PID=
NBD_SOCK=$TMP/nbdkit.sock
NBD_URI="nbd+unix:///?socket=$NBD_SOCK"
NBDKIT_ENV=()

# nbdkit_sanitizer_env SO: a sanitized .so loads into the (unsanitized)
# nbdkit only with the sanitizer runtimes preloaded.  For the TSan build
# (clang) that is gcc's libtsan: TSan instrumentation is plain calls into
# the runtime (all present there), while clang 14's shared runtime crashes
# when preloaded (a library constructor mallocs before it is initialised).
nbdkit_sanitizer_env() {
    if readelf -d "$1" | grep -q 'libasan'; then
        NBDKIT_ENV=(LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
                    ASAN_OPTIONS=detect_leaks=0)
    elif nm -D --undefined-only "$1" | grep -q ' __tsan_init$'; then
        NBDKIT_ENV=(LD_PRELOAD="$(gcc -print-file-name=libtsan.so)")
    fi
}

# stop_nbdkit: also fails on a sanitizer report from our plugin in nbdkit
# (not when run by the exit trap, which only cleans up).
stop_nbdkit() {
    [[ -n $NBDKIT_PID ]] || return 0
    kill -TERM "$NBDKIT_PID" 2>/dev/null || true
    wait "$NBDKIT_PID" 2>/dev/null || true
    NBDKIT_PID=
    [[ ${1:-} == --at-exit ]] || check_no_sanitizer_report "$TMP/nbdkit.err"
}
trap 'st=$?; stop_nbdkit --at-exit; (exit $st); cleanup' EXIT

run_nbdkit() {
    rm -f "$TMP/nbdkit.pid" "$NBD_SOCK"
    env "${NBDKIT_ENV[@]}" nbdkit -U "$NBD_SOCK" -P "$TMP/nbdkit.pid" -f "$@" \
        2>"$TMP/nbdkit.err" &
    NBDKIT_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        [[ -s $TMP/nbdkit.pid ]] && return 0
        kill -0 "$NBDKIT_PID" 2>/dev/null || fail "nbdkit died: $(cat "$TMP/nbdkit.err")"
        sleep 0.1
    done
    fail "nbdkit did not write its pidfile"
}
