#!/usr/bin/env bash
# TLS benchmark: sequential read of a whole disk with nbdcopy (export ->
# null:) over a Unix socket, in one run:
#   blockd plaintext  |  blockd TLS (X.509)  |  qemu-nbd TLS  |  qemu-nbd plaintext
# same image in /dev/shm, same client, same certificates (made with
# certtool).  Each number is the median of BENCH_RUNS (default 3) rounds,
# a round starting each server in turn for one read, the order reversed
# every other round (run one after the other, a load swing on the shared
# machine once put blockd's TLS above its plaintext); BENCH_QUICK=1 uses a
# 256 MiB disk.  With BENCH_ROWS set, the medians are
# also appended there for run-all.sh's summary (bench_rows.py).
#
#   BLOCKD=build-release/blockd tests/bench/bench-tls.sh
set -euo pipefail
# shellcheck source=tests/bench/bench_rows.sh
source "$(dirname "$0")/bench_rows.sh"

BLOCKD=${BLOCKD:-build-release/blockd}
RUNS=${BENCH_RUNS:-3}
SIZE_MIB=$([[ ${BENCH_QUICK:-0} == 1 ]] && echo 256 || echo 2048)

for tool in nbdcopy qemu-nbd certtool; do
    command -v "$tool" >/dev/null || { echo "bench-tls: $tool is not installed" >&2; exit 1; }
done
[[ -x $BLOCKD ]] || { echo "bench-tls: BLOCKD=$BLOCKD is not executable" >&2; exit 1; }
if ldd "$BLOCKD" 2>/dev/null | grep -q libasan; then
    echo "bench-tls: warning: $BLOCKD is built with AddressSanitizer; numbers will be low" >&2
fi

TMP=$(mktemp -d /dev/shm/blockd-bench-tls.XXXXXX)
SOCK=$TMP/nbd.sock
SERVER_PID=
cleanup() {
    stop_server
    rm -rf "$TMP"
}
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap cleanup EXIT

# Certificates: a CA, a server certificate for localhost, a client certificate.
make_certs() {
    local d=$TMP/pki
    mkdir -p "$d/server" "$d/client"
    printf 'cn = "bench CA"\nca\ncert_signing_key\nexpiration_days = 2\n' >"$d/ca.info"
    printf 'cn = "localhost"\ndns_name = "localhost"\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/server.info"
    printf 'country = "GB"\norganization = "Example"\ncn = "client1"\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >"$d/client.info"
    certtool --generate-privkey --outfile "$d/ca-key.pem" 2>/dev/null
    certtool --generate-self-signed --load-privkey "$d/ca-key.pem" --template "$d/ca.info" \
        --outfile "$d/ca-cert.pem" 2>/dev/null
    local role
    for role in server client; do
        certtool --generate-privkey --outfile "$d/$role/$role-key.pem" 2>/dev/null
        certtool --generate-certificate --load-privkey "$d/$role/$role-key.pem" \
            --load-ca-certificate "$d/ca-cert.pem" --load-ca-privkey "$d/ca-key.pem" \
            --template "$d/$role.info" --outfile "$d/$role/$role-cert.pem" 2>/dev/null
        cp "$d/ca-cert.pem" "$d/$role/"
    done
}

# start_server KIND: one server on $SOCK serving $TMP/disk.img.
start_server() {
    local img=$TMP/disk.img server_creds="dir=$TMP/pki/server,endpoint=server"
    rm -f "$SOCK"
    case $1 in
    blockd-plain|blockd-tls)
        local tls=
        [[ $1 == blockd-tls ]] && tls=,tls-creds=tls0
        "$BLOCKD" --object "tls-creds-x509,id=tls0,$server_creds" \
            --blockdev "driver=file,node-name=f,filename=$img" \
            --export type=nbd,id=e,node-name=f \
            --nbd-server "addr.type=unix,addr.path=$SOCK$tls" >/dev/null &
        ;;
    qemu-nbd-plain)
        qemu-nbd -f raw -t -e 16 -r -k "$SOCK" "$img" &
        ;;
    qemu-nbd-tls)
        qemu-nbd --object "tls-creds-x509,id=tls0,$server_creds" --tls-creds tls0 \
            -f raw -t -e 16 -r -k "$SOCK" "$img" &
        ;;
    esac
    SERVER_PID=$!
    local i
    for i in $(seq 200); do
        [[ -S $SOCK ]] && return 0
        sleep 0.05
    done
    echo "bench-tls: $1 did not start" >&2
    exit 1
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# read_mibs URI: MiB/s of one nbdcopy URI null:.
read_mibs() {
    local start end
    start=$(date +%s.%N)
    nbdcopy "$1" null:
    end=$(date +%s.%N)
    echo "$SIZE_MIB $start $end" | awk '{ printf "%.0f\n", $1 / ($3 - $2) }'
}

make_certs
# Random data: encryption cost must not shrink with compressible content.
head -c $((SIZE_MIB << 20)) /dev/urandom >"$TMP/disk.img"
PLAIN="nbd+unix:///?socket=$SOCK"
TLS="nbds+unix:///?socket=$SOCK&tls-certificates=$TMP/pki/client"

printf 'Sequential read, %d MiB, nbdcopy -> null:, Unix socket (MiB/s, median of %d)\n' "$SIZE_MIB" "$RUNS"
declare -A result samples
KINDS=(blockd-plain blockd-tls qemu-nbd-tls qemu-nbd-plain)
for ((r = 0; r < RUNS; r++)); do
    order=("${KINDS[@]}")
    ((r % 2 == 0)) || order=(qemu-nbd-plain qemu-nbd-tls blockd-tls blockd-plain)
    for kind in "${order[@]}"; do
        start_server "$kind"
        if [[ $kind == *-tls ]]; then uri=$TLS; else uri=$PLAIN; fi
        samples[$kind]+="$(read_mibs "$uri") "
        stop_server
    done
done
for kind in "${KINDS[@]}"; do
    # shellcheck disable=SC2086  # the samples are a space-separated list
    result[$kind]=$(printf '%s\n' ${samples[$kind]} | median)
    printf '  %-16s %8s   (runs: %s)\n' "$kind" "${result[$kind]}" "${samples[$kind]% }"
done
awk -v t="${result[blockd-tls]}" -v p="${result[blockd-plain]}" -v q="${result[qemu-nbd-tls]}" \
    'BEGIN { printf "  blockd TLS / blockd plaintext: %.2f   blockd TLS / qemu-nbd TLS: %.2f\n", t / p, t / q }'
# TLS against plaintext as the ceiling: what the same server does without encryption.
bench_row tls-seq-read "seq-read over TLS, $SIZE_MIB MiB" MiB/s higher \
    "blockd=${result[blockd-tls]}" "qemu-nbd=${result[qemu-nbd-tls]}" \
    --ceiling "${result[blockd-plain]}" "blockd plain" --group TLS
bench_row tls-plain-seq-read "seq-read, read-only, plaintext" MiB/s higher \
    "blockd=${result[blockd-plain]}" "qemu-nbd=${result[qemu-nbd-plain]}" --group TLS
