#!/usr/bin/env bash
# blockd's benchmark: blockd against qemu-nbd and nbdkit, like for like, on
# the same image in /dev/shm, over Unix sockets.
#
#   BLOCKD=build-release/blockd tests/bench/run-bench.sh
#
# Workloads: sequential write and read of the whole disk with nbdcopy
# (src file -> export, export -> null:), and 4 KiB random read and write at
# iodepth 1 and 16 with fio's nbd engine.  Each number is the median of
# BENCH_RUNS (default 3) rounds; a round starts every server of a group in
# turn on a fresh disk and runs each workload once, the order reversed
# every other round, so that the machine's load swings hit all alike.
# Groups:
#   file:   blockd driver=file  vs  nbdkit file  vs  qemu-nbd -f raw  vs
#           qemu-storage-daemon driver=file (QEMU's defaults: writeback
#           cache, aio=threads)
#   memory: blockd driver=memory  vs  nbdkit memory
#   qcow2:  blockd driver=qcow2  vs  qemu-nbd -f qcow2, on a new image made
#           by qemu-img create (64 KiB clusters, no preallocation), so the
#           sequential write includes cluster allocation
# Plus the machine's ceilings: a socketpair stream of 256 KiB writes, a
# memcpy of 256 KiB chunks, dd into a tmpfs file, a socket stream into a
# new tmpfs file (socket-to-file.c), and for the 4 KiB random
# rows blockd and nbdkit over a null backend (null-co, nbdkit null).  With BENCH_ROWS set, the
# medians are also appended there as rows for run-all.sh's summary.
# BENCH_QUICK=1 uses a 256 MiB disk and 1 s fio runs (a smoke test).
set -euo pipefail

BLOCKD=${BLOCKD:-build-release/blockd}
QUICK=${BENCH_QUICK:-0}
RUNS=${BENCH_RUNS:-3}
if [[ $QUICK == 1 ]]; then
    SIZE_MIB=256 FIO_SECONDS=1
else
    SIZE_MIB=2048 FIO_SECONDS=4
fi
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/bench_rows.sh
source "$HERE/bench_rows.sh"

for tool in nbdcopy nbdinfo nbdkit qemu-nbd qemu-storage-daemon qemu-img fio cc; do
    command -v "$tool" >/dev/null || { echo "run-bench: $tool is not installed" >&2; exit 1; }
done
[[ -x $BLOCKD ]] || { echo "run-bench: BLOCKD=$BLOCKD is not executable" >&2; exit 1; }
if ldd "$BLOCKD" 2>/dev/null | grep -q libasan; then
    echo "run-bench: warning: $BLOCKD is built with AddressSanitizer; numbers will be low" >&2
fi

TMP=$(mktemp -d /dev/shm/blockd-bench.XXXXXX)   # data: in RAM
BIN=$(mktemp -d /tmp/blockd-bench-bin.XXXXXX)    # executables: /dev/shm may be noexec
SOCK=$TMP/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
SERVER_PID=

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP" "$BIN"
}
trap cleanup EXIT

# start_server KIND: start one server on $SOCK and wait until it answers.
start_server() {
    local img=$TMP/disk.img
    rm -f "$SOCK"
    case $1 in
    blockd-file)
        "$BLOCKD" --blockdev "driver=file,node-name=f,filename=$img" \
            --export type=nbd,id=e,node-name=f,writable=on \
            --nbd-server "addr.type=unix,addr.path=$SOCK" >/dev/null &
        ;;
    blockd-memory)
        "$BLOCKD" --blockdev "driver=memory,node-name=m,size=${SIZE_MIB}M" \
            --export type=nbd,id=e,node-name=m,writable=on \
            --nbd-server "addr.type=unix,addr.path=$SOCK" >/dev/null &
        ;;
    blockd-qcow2)
        "$BLOCKD" --blockdev "driver=qcow2,node-name=q,file.driver=file,file.filename=$img" \
            --export type=nbd,id=e,node-name=q,writable=on \
            --nbd-server "addr.type=unix,addr.path=$SOCK" >/dev/null &
        ;;
    # No backend at all: what the client and the protocol alone reach.
    blockd-null)
        "$BLOCKD" --blockdev "driver=null-co,node-name=z,size=${SIZE_MIB}M" \
            --export type=nbd,id=e,node-name=z,writable=on \
            --nbd-server "addr.type=unix,addr.path=$SOCK" >/dev/null &
        ;;
    nbdkit-null) nbdkit -f -U "$SOCK" null "${SIZE_MIB}M" & ;;
    qemu-nbd-qcow2) qemu-nbd -t -e 16 -k "$SOCK" -f qcow2 "$img" & ;;
    nbdkit-file)   nbdkit -f -U "$SOCK" file "$img" & ;;
    nbdkit-memory) nbdkit -f -U "$SOCK" memory "${SIZE_MIB}M" & ;;
    qemu-nbd)      qemu-nbd -t -e 16 -k "$SOCK" -f raw "$img" & ;;
    # name= (empty): the default export, as the other servers serve it.
    qsd-file)
        qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$img" \
            --nbd-server "addr.type=unix,addr.path=$SOCK" \
            --export type=nbd,id=e,node-name=f,name=,writable=on >/dev/null &
        ;;
    esac
    SERVER_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        nbdinfo --size "$URI" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "run-bench: $1 died at start-up" >&2; exit 1; }
        sleep 0.1
    done
    echo "run-bench: $1 did not start" >&2
    exit 1
}

stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Measurements set LAST (no subshells, so a failing tool stops the run).
# mibps CMD...: $SIZE_MIB / seconds CMD took.
mibps() {
    local t0=$EPOCHREALTIME t1
    "$@" >/dev/null || { echo "run-bench: failed: $*" >&2; exit 1; }
    t1=$EPOCHREALTIME
    LAST=$(awk -v s="$SIZE_MIB" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", s / (b - a) }')
}

# fio_iops RW DEPTH: IOPS of 4 KiB random RW (randread|randwrite) at DEPTH.
fio_iops() {
    fio --name=bench --ioengine=nbd --uri="$URI" --rw="$1" --bs=4k --iodepth="$2" \
        --size="${SIZE_MIB}M" --runtime="$FIO_SECONDS" --time_based \
        --output-format=json --output="$TMP/fio.json" >/dev/null 2>&1 ||
        { echo "run-bench: fio $1 iodepth=$2 failed" >&2; exit 1; }
    LAST=$(/usr/bin/python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
print("%.0f" % (j["read"]["iops"] + j["write"]["iops"]))' "$TMP/fio.json")
}

LAST=
declare -A RESULT SAMPLES MULTICONN
WORKLOADS=(seq-write seq-read randread-qd1 randread-qd16 randwrite-qd1 randwrite-qd16)
declare -A UNIT=([seq-write]=MiB/s [seq-read]=MiB/s [randread-qd1]=IOPS [randread-qd16]=IOPS
                 [randwrite-qd1]=IOPS [randwrite-qd16]=IOPS)

# bench_round KIND: one sample of every workload against a freshly started
# server on a fresh disk.
bench_round() {
    local kind=$1
    rm -f "$TMP/disk.img"
    case $kind in
    *qcow2) qemu-img create -q -f qcow2 "$TMP/disk.img" "${SIZE_MIB}M" ;;
    *) truncate -s "${SIZE_MIB}M" "$TMP/disk.img" ;;
    esac
    start_server "$kind"
    nbdinfo --can multi-conn "$URI" && MULTICONN[$kind]=yes || MULTICONN[$kind]=no
    # Writes first, so reads and random I/O see a fully written disk.
    mibps nbdcopy --flush "$TMP/src.img" "$URI"; SAMPLES[seq-write,$kind]+=" $LAST"
    mibps nbdcopy "$URI" null:; SAMPLES[seq-read,$kind]+=" $LAST"
    local rw depth
    for rw in randread randwrite; do
        for depth in 1 16; do
            fio_iops "$rw" "$depth"; SAMPLES[$rw-qd$depth,$kind]+=" $LAST"
        done
    done
    stop_server
}

# bench_group KIND...: RUNS alternating rounds over the servers, then
# RESULT[workload,kind] = the median of each one's samples.
bench_group() {
    local r kind w order
    for ((r = 0; r < RUNS; r++)); do
        if ((r % 2 == 0)); then order=("$@"); else order=(); for kind in "$@"; do order=("$kind" "${order[@]}"); done; fi
        echo "  round $((r + 1))/$RUNS: ${order[*]}" >&2
        for kind in "${order[@]}"; do bench_round "$kind"; done
    done
    for kind in "$@"; do
        for w in "${WORKLOADS[@]}"; do
            # shellcheck disable=SC2086  # the samples are a space-separated list
            RESULT[$w,$kind]=$(median ${SAMPLES[$w,$kind]})
        done
    done
}

# table TITLE BLOCKD-KIND PEER...: one row per workload, blockd's ratio to each peer.
table() {
    local title=$1 ours=$2 w p
    shift 2
    local peers=("$@")
    printf '\n%s (%s MiB disk, median of %s runs; ratio > 1 means blockd is faster)\n' \
        "$title" "$SIZE_MIB" "$RUNS"
    printf '%-15s %-6s %14s' workload unit "$ours"
    for p in "${peers[@]}"; do printf ' %14s' "$p"; done
    for p in "${peers[@]}"; do printf ' %16s' "vs $p"; done
    printf '\n'
    for w in "${WORKLOADS[@]}"; do
        printf '%-15s %-6s %14s' "$w" "${UNIT[$w]}" "${RESULT[$w,$ours]}"
        for p in "${peers[@]}"; do printf ' %14s' "${RESULT[$w,$p]}"; done
        for p in "${peers[@]}"; do
            awk -v a="${RESULT[$w,$ours]}" -v b="${RESULT[$w,$p]}" \
                'BEGIN { if (b > 0) printf " %16.2f", a / b; else printf " %16s", "-" }'
        done
        printf '\n'
    done
    printf '%-15s %-6s %14s' multi-conn "" "${MULTICONN[$ours]}"
    for p in "${peers[@]}"; do printf ' %14s' "${MULTICONN[$p]}"; done
    printf '\n'
}

echo "run-bench: preparing a ${SIZE_MIB} MiB random source in $TMP" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$TMP/src.img"
cc -O2 -o "$BIN/socketpair-limit" "$HERE/socketpair-limit.c"
cc -O2 -o "$BIN/memcpy-rate" "$HERE/memcpy-rate.c"
cc -O2 -o "$BIN/socket-to-file" "$HERE/socket-to-file.c"
# The limit swings with the machine's load (3 100 to 11 000 MiB/s seen on
# the same box), so it is sampled before, between and after the servers
# and the median is printed.
LIMITS=()
MEMCPY=()
sample_limit() { LIMITS+=("$("$BIN/socketpair-limit" 4096)"); MEMCPY+=("$("$BIN/memcpy-rate" 4096)"); }
sample_limit; sample_limit

echo "run-bench: file-backed servers" >&2
bench_group blockd-file nbdkit-file qemu-nbd qsd-file
sample_limit
echo "run-bench: memory servers" >&2
bench_group blockd-memory nbdkit-memory
sample_limit
echo "run-bench: qcow2 servers" >&2
bench_group blockd-qcow2 qemu-nbd-qcow2
echo "run-bench: servers with no backend (the random I/O rows' ceiling)" >&2
bench_group blockd-null nbdkit-null
# The kernel's ceiling for the sequential write: dd of the source into a
# new file on the same tmpfs, 256 KiB writes, no NBD and no format.
# And the sequential write file rows' ceiling: the source streamed through
# a socketpair into a new file there by a second process (socket-to-file.c),
# the least any server and client could do together, in alternation with it.
v=(); s=(); for ((i = 0; i < RUNS; i++)); do
    rm -f "$TMP/dd.img"; mibps dd if="$TMP/src.img" of="$TMP/dd.img" bs=256K conv=fsync status=none; v+=("$LAST")
    s+=("$("$BIN/socket-to-file" "$TMP/src.img" "$TMP/dd.img")")
done
rm -f "$TMP/dd.img"
DD_CEILING=$(median "${v[@]}")
S2F_CEILING=$(median "${s[@]}")
sample_limit
LIMIT=$(median "${LIMITS[@]}")
MEMCPY_RATE=$(median "${MEMCPY[@]}")

echo
echo "blockd benchmark: $("$BLOCKD" --version 2>/dev/null | head -n1), $(nbdkit --version | head -n1)," \
     "$(qemu-nbd --version | head -n1), fio ${FIO_SECONDS}s per run, $(nproc) CPUs"
printf 'machine limit: socketpair stream of 256 KiB writes: %s MiB/s (median of %s: %s)\n' \
    "$LIMIT" "${#LIMITS[@]}" "${LIMITS[*]}"
printf 'machine limit: memcpy of 256 KiB chunks, one thread: %s MiB/s (median of %s: %s)\n' \
    "$MEMCPY_RATE" "${#MEMCPY[@]}" "${MEMCPY[*]}"
awk -v r="${RESULT[seq-read,blockd-file]}" -v m="${RESULT[seq-read,blockd-memory]}" -v l="$LIMIT" \
    'BEGIN { printf "blockd sequential read: file %.0f%%, memory %.0f%% of the limit\n", 100 * r / l, 100 * m / l }'
echo "qemu-nbd runs with its defaults (cache=writeback, aio=threads) plus -t -e 16;"
echo "nbdkit file with its defaults (page cache); blockd driver=file with its defaults."
table "file-backed image in /dev/shm" blockd-file nbdkit-file qemu-nbd qsd-file
table "memory" blockd-memory nbdkit-memory
table "qcow2 image in /dev/shm (issue 15's target: 1.3x qemu-nbd)" blockd-qcow2 qemu-nbd-qcow2
table "no backend (null-co, nbdkit null): the random I/O rows' ceiling" blockd-null nbdkit-null
awk -v c="$DD_CEILING" -v b="${RESULT[seq-write,blockd-qcow2]}" -v q="${RESULT[seq-write,qemu-nbd-qcow2]}" \
    'BEGIN { printf "ceiling: dd into a new tmpfs file %.0f MiB/s; qcow2 seq-write blockd %.0f%%, qemu-nbd %.0f%% of it\n", c, 100 * b / c, 100 * q / c }'
awk -v c="$S2F_CEILING" -v runs="${s[*]}" -v b="${RESULT[seq-write,blockd-file]}" -v n="${RESULT[seq-write,nbdkit-file]}" \
    'BEGIN { printf "ceiling: a socket stream into a new tmpfs file %.0f MiB/s (runs: %s); file seq-write blockd %.0f%%, nbdkit %.0f%% of it\n", c, runs, 100 * b / c, 100 * n / c }'

# Rows for run-all.sh's summary (bench_rows.py describes the format).
bench_row --info socketpair "$LIMIT" MiB/s "socketpair stream of 256 KiB writes, median of ${#LIMITS[@]}"
bench_row --info memcpy "$MEMCPY_RATE" MiB/s "memcpy of 256 KiB chunks, one thread, median of ${#MEMCPY[@]}"
bench_row --info "dd into tmpfs" "$DD_CEILING" MiB/s "dd bs=256K conv=fsync into a new tmpfs file"
bench_row --info "socket into tmpfs" "$S2F_CEILING" MiB/s "a socketpair stream of the source written into a new tmpfs file"
# The sequential read rows' ceiling, the lower of: the socketpair stream (every
# byte crosses one) and the memcpy rate (every byte is copied out of a page
# cache or buffer larger than the caches; the socketpair's own buffer stays
# in cache, so it can be the higher of the two).  dd into tmpfs is not one:
# a single thread doing both copies, sampled once, it came out below what
# the servers reach (593 MiB/s against blockd's 1086 in one run).
lowest() { printf '%s\n' "$@" | sort -g | head -n1; }
highest() { printf '%s\n' "$@" | sort -g | tail -n1; }
read -r -a SEQ_CEILING <<<"$(lowest "$LIMIT socketpair" "$MEMCPY_RATE memcpy")"
declare -A TARGET=([seq-read]='>=1.3x best peer' [seq-write]='>=1.3x best peer'
                   [randwrite-qd16]='>=1.2x best peer' [randread-qd16]='keep (>=1.0x)'
                   [randread-qd1]='keep (>=1.0x)')
declare -A GOAL=([seq-read]=1.3 [seq-write]=1.3 [randwrite-qd16]=1.2 [randread-qd16]=1.0 [randread-qd1]=1.0)
# emit_rows SUFFIX BLOCKD-KIND COLUMN=KIND...: one row per workload, blockd's
# median against each peer's under the summary's column name.
emit_rows() {
    local suffix=$1 ours=$2 w col group target goal
    shift 2
    for w in "${WORKLOADS[@]}"; do
        local args=("$w-$suffix" "$w, $suffix" "${UNIT[$w]}" higher "blockd=${RESULT[$w,$ours]}")
        for col in "$@"; do args+=("${col%%=*}=${RESULT[$w,${col#*=}]}"); done
        case $w,$suffix in
        seq-read,*) args+=(--ceiling "${SEQ_CEILING[@]}") ;;
        # 4 KiB requests cost the client and the protocol more than any
        # backend here, and every written byte is also read from the source
        # file and sent by the client: what the better of blockd and nbdkit
        # reach over a null backend bounds any server's backend.
        # A file backend adds the file's own cost: the socket stream into a
        # new file bounds the sequential writes into one, if lower.
        seq-write,file | seq-write,qcow2)
            read -r -a c <<<"$(lowest "$(highest "${RESULT[$w,blockd-null]}" "${RESULT[$w,nbdkit-null]}") null backend" \
                                      "$S2F_CEILING socket into file")"
            args+=(--ceiling "${c[0]}" "${c[*]:1}") ;;
        seq-write,* | rand*) args+=(--ceiling "$(highest "${RESULT[$w,blockd-null]}" "${RESULT[$w,nbdkit-null]}")" "null backend") ;;
        esac
        if [[ $suffix == qcow2 ]]; then
            group='qcow2 (issue 15)' target='>=1.3x qemu-nbd' goal='{"ratio": 1.3, "vs": "qemu-nbd"}'
        elif [[ -n ${GOAL[$w]:-} ]]; then
            group='issue 18' target=${TARGET[$w]} goal="{\"ratio\": ${GOAL[$w]}}"
        else
            group='NBD, no issue-18 target' target='' goal='{}'
        fi
        bench_row "${args[@]}" --target "$target" --goal "$goal" --group "$group"
    done
}
emit_rows file blockd-file nbdkit-file=nbdkit-file qemu-nbd=qemu-nbd qemu-storage-daemon=qsd-file
emit_rows memory blockd-memory nbdkit-memory=nbdkit-memory
emit_rows qcow2 blockd-qcow2 qemu-nbd=qemu-nbd-qcow2
