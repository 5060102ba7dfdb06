#!/usr/bin/env bash
# blockd's benchmark: blockd against qemu-nbd and nbdkit, like for like, on
# the same image in /dev/shm, over Unix sockets.
#
#   BLOCKD=build-release/blockd tests/bench/run-bench.sh
#
# Workloads: sequential write and read of the whole disk with nbdcopy
# (src file -> export, export -> null:), and 4 KiB random read and write at
# iodepth 1 and 16 with fio's nbd engine.  Each number is the median of
# BENCH_RUNS (default 3) runs.  Pairs:
#   file:   blockd driver=file  vs  nbdkit file  vs  qemu-nbd -f raw
#           (qemu-nbd's default cache mode, writeback, and aio=threads)
#   memory: blockd driver=memory  vs  nbdkit memory
#   qcow2:  blockd driver=qcow2  vs  qemu-nbd -f qcow2, on a new image made
#           by qemu-img create (64 KiB clusters, no preallocation), so the
#           sequential write includes cluster allocation
# Plus the machine's ceiling: a socketpair stream of 256 KiB writes.
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

for tool in nbdcopy nbdinfo nbdkit qemu-nbd qemu-img fio cc; do
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
    qemu-nbd-qcow2) qemu-nbd -t -e 16 -k "$SOCK" -f qcow2 "$img" & ;;
    nbdkit-file)   nbdkit -f -U "$SOCK" file "$img" & ;;
    nbdkit-memory) nbdkit -f -U "$SOCK" memory "${SIZE_MIB}M" & ;;
    qemu-nbd)      qemu-nbd -t -e 16 -k "$SOCK" -f raw "$img" & ;;
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
declare -A RESULT MULTICONN
WORKLOADS=(seq-write seq-read randread-qd1 randread-qd16 randwrite-qd1 randwrite-qd16)
declare -A UNIT=([seq-write]=MiB/s [seq-read]=MiB/s [randread-qd1]=IOPS [randread-qd16]=IOPS
                 [randwrite-qd1]=IOPS [randwrite-qd16]=IOPS)

# bench_server KIND: every workload against one freshly started server.
bench_server() {
    local kind=$1 i v
    echo "  $kind ..." >&2
    rm -f "$TMP/disk.img"
    case $kind in
    *qcow2) qemu-img create -q -f qcow2 "$TMP/disk.img" "${SIZE_MIB}M" ;;
    *) truncate -s "${SIZE_MIB}M" "$TMP/disk.img" ;;
    esac
    start_server "$kind"
    nbdinfo --can multi-conn "$URI" && MULTICONN[$kind]=yes || MULTICONN[$kind]=no
    # Writes first, so reads and random I/O see a fully written disk.
    v=(); for ((i = 0; i < RUNS; i++)); do mibps nbdcopy --flush "$TMP/src.img" "$URI"; v+=("$LAST"); done
    RESULT[seq-write,$kind]=$(median "${v[@]}")
    v=(); for ((i = 0; i < RUNS; i++)); do mibps nbdcopy "$URI" null:; v+=("$LAST"); done
    RESULT[seq-read,$kind]=$(median "${v[@]}")
    local rw depth
    for rw in randread randwrite; do
        for depth in 1 16; do
            v=(); for ((i = 0; i < RUNS; i++)); do fio_iops "$rw" "$depth"; v+=("$LAST"); done
            RESULT[$rw-qd$depth,$kind]=$(median "${v[@]}")
        done
    done
    stop_server
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
# The limit swings with the machine's load (3 100 to 11 000 MiB/s seen on
# the same box), so it is sampled before, between and after the servers
# and the median is printed.
LIMITS=()
sample_limit() { LIMITS+=("$("$BIN/socketpair-limit" 4096)"); }
sample_limit; sample_limit

echo "run-bench: file-backed servers" >&2
for kind in blockd-file nbdkit-file qemu-nbd; do bench_server "$kind"; done
sample_limit
echo "run-bench: memory servers" >&2
for kind in blockd-memory nbdkit-memory; do bench_server "$kind"; done
sample_limit
echo "run-bench: qcow2 servers" >&2
for kind in blockd-qcow2 qemu-nbd-qcow2; do bench_server "$kind"; done
# The kernel's ceiling for the sequential write: dd of the source into a
# new file on the same tmpfs, 256 KiB writes, no NBD and no format.
v=(); for ((i = 0; i < RUNS; i++)); do
    rm -f "$TMP/dd.img"; mibps dd if="$TMP/src.img" of="$TMP/dd.img" bs=256K conv=fsync status=none; v+=("$LAST")
done
rm -f "$TMP/dd.img"
DD_CEILING=$(median "${v[@]}")
sample_limit
LIMIT=$(median "${LIMITS[@]}")

echo
echo "blockd benchmark: $("$BLOCKD" --version 2>/dev/null | head -n1), $(nbdkit --version | head -n1)," \
     "$(qemu-nbd --version | head -n1), fio ${FIO_SECONDS}s per run, $(nproc) CPUs"
printf 'machine limit: socketpair stream of 256 KiB writes: %s MiB/s (median of %s: %s)\n' \
    "$LIMIT" "${#LIMITS[@]}" "${LIMITS[*]}"
awk -v r="${RESULT[seq-read,blockd-file]}" -v m="${RESULT[seq-read,blockd-memory]}" -v l="$LIMIT" \
    'BEGIN { printf "blockd sequential read: file %.0f%%, memory %.0f%% of the limit\n", 100 * r / l, 100 * m / l }'
echo "qemu-nbd runs with its defaults (cache=writeback, aio=threads) plus -t -e 16;"
echo "nbdkit file with its defaults (page cache); blockd driver=file with its defaults."
table "file-backed image in /dev/shm" blockd-file nbdkit-file qemu-nbd
table "memory" blockd-memory nbdkit-memory
table "qcow2 image in /dev/shm (issue 15's target: 1.3x qemu-nbd)" blockd-qcow2 qemu-nbd-qcow2
awk -v c="$DD_CEILING" -v b="${RESULT[seq-write,blockd-qcow2]}" -v q="${RESULT[seq-write,qemu-nbd-qcow2]}" \
    'BEGIN { printf "ceiling: dd into a new tmpfs file %.0f MiB/s; qcow2 seq-write blockd %.0f%%, qemu-nbd %.0f%% of it\n", c, 100 * b / c, 100 * q / c }'
