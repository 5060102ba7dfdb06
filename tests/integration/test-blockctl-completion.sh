#!/usr/bin/env bash
# The bash completion of blockctl (tools/blockctl.bash-completion): command
# names, backup/mirror/stream/pull/commit flags and job verbs are those of `blockctl --help`, and
# node names, export ids and QMP commands come from the running daemon.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
: "${BUILD_DIR:?}" "${SOURCE_DIR:?}"
BLOCKCTL=$BUILD_DIR/tools/blockctl
COMPLETION=$SOURCE_DIR/tools/blockctl.bash-completion
QMP=$TMP/qmp.sock

# complete WORD...: what the completion offers for the command line WORD...
# (the last word is the one being completed), sorted, one line.
complete_line() {
    PATH=$(dirname "$BLOCKCTL"):$PATH bash -c 'source "$1"; shift
        COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=()
        _blockctl blockctl "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
        printf "%s\n" "${COMPREPLY[@]}" | sort | xargs' _ "$COMPLETION" "$@"
}

# expect WANT WORD...: the completion of WORD... must be WANT (sorted words).
expect() {
    local want got
    want=$(printf '%s\n' $1 | sort | xargs)
    shift
    got=$(complete_line "$@")
    [[ $got == "$want" ]] || fail "completing '$*': want '$want', got '$got'"
}

help=$("$BLOCKCTL" --help)
commands=$(sed -n '/^Commands/,/^$/s/^  \([a-z][a-z-]*\).*/\1/p' <<<"$help" | sort -u)
[[ $(wc -w <<<"$commands") -ge 10 ]] || fail "cannot read the commands of blockctl --help: $help"
expect "$commands" blockctl ""
expect "backup" blockctl ba
expect "--json" blockctl --js

# flags_of COMMAND: the --flags in COMMAND's usage line, and --help.
flags_of() {
    grep -E "^  $1 " <<<"$help" | grep -oE -- '--[a-z-]+' | sort -u | xargs echo --help
}
expect "$(flags_of backup)" blockctl -s "$QMP" backup n0 --
expect "$(flags_of mirror)" blockctl -s "$QMP" mirror n0 --
expect "$(flags_of stream)" blockctl -s "$QMP" stream n0 --
expect "$(flags_of pull)" blockctl -s "$QMP" pull n0 --
expect "$(flags_of commit)" blockctl -s "$QMP" commit n0 --
expect "$(flags_of restore)" blockctl restore full.img --
expect "$(flags_of create)" blockctl create new.qcow2 1G --
expect "raw qcow2" blockctl create new.qcow2 1G --format ""
expect "off falloc full" blockctl create new.img 1G --preallocation ""
bitmap_subs=$(grep -E '^  bitmap ' <<<"$help" | awk '{print $2}' | sort -u | xargs)
expect "$bitmap_subs" blockctl bitmap ""
verbs=$(grep -E '^  job ' <<<"$help" | grep -oE '[a-z]+(\|[a-z]+)+' | tr '|' ' ')
expect "$verbs" blockctl job ""

# From the daemon, through -s PATH or $BLOCKCTL_SOCKET.
start_blockd --chardev "socket,id=m0,path=$QMP,server=on,wait=off" --monitor chardev=m0 \
    --blockdev driver=memory,node-name=mem0,size=1M \
    --blockdev driver=null-co,node-name=null1 \
    --export type=nbd,id=exp0,node-name=mem0
expect "mem0 null1" blockctl -s "$QMP" backup ""
expect "mem0 null1" blockctl -s "$QMP" mirror mem0 --to ""
expect "mem0 null1" blockctl -s "$QMP" resize ""
expect "mem0 null1" blockctl -s "$QMP" stream ""
expect "mem0 null1" blockctl -s "$QMP" pull mem0 --base ""
expect "mem0 null1" blockctl -s "$QMP" commit ""
expect "mem0 null1" blockctl -s "$QMP" commit mem0 --top ""
"$BLOCKCTL" -s "$QMP" bitmap add mem0 bm0 || fail "bitmap add"
expect "mem0 null1" blockctl -s "$QMP" bitmap remove ""
expect "bm0" blockctl -s "$QMP" bitmap remove mem0 ""
expect "exp0" blockctl -s "$QMP" unexport ""
expect "writable" blockctl -s "$QMP" export mem0 ""
got=$(BLOCKCTL_SOCKET=$QMP complete_line blockctl export m)
[[ $got == mem0 ]] || fail "completing with BLOCKCTL_SOCKET: '$got'"
got=$(complete_line blockctl -s "$QMP" qmp query-)
[[ " $got " == *" query-named-block-nodes "* && " $got " == *" query-block-exports "* ]] ||
    fail "QMP command names: '$got'"
# No daemon behind the socket: nothing, quickly, and no error output.
got=$(complete_line blockctl -s "$TMP/none.sock" backup "" 2>&1)
[[ -z $got ]] || fail "completing without a daemon printed '$got'"
stop_blockd
echo PASS
