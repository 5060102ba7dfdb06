#!/bin/bash
# Runs every benchmark against the release build, one after another (each
# measures blockd and its peers alternately, in the same run), then prints
# one summary table over all of them (summary.py): issue 18's rows first,
# with their targets, then the others.  `make bench` calls this.
#
# Environment:
#   BLOCKD=PATH        the blockd to measure (make bench: build-release/blockd)
#   BENCH_QUICK=1      quick mode for development: 256 MiB images, short fio
#                      runs, fewer rounds (a few minutes for run-bench,
#                      bitmaps, map, backup and mirror).  Unset: the full
#                      mode for the record (2 GiB images, medians of 3).
#   BENCH_SCRIPTS="run-bench bench-map ..."
#                      run only these scripts (names with or without their
#                      .sh/.py); default: all of them.  Not BENCH_ONLY, which
#                      bench-bitmaps.py reads to pick its parts.
#   BENCH_ROWS=PATH    keep the machine-readable rows (JSON lines, format in
#                      bench_rows.py) in PATH; it is emptied first.  Default:
#                      a temporary file.  `summary.py PATH` prints the table
#                      again.
#   BENCH_RUNS, BENCH_ROUNDS, BENCH_SIZE, BLOCKD_BEFORE, BENCH_NO_QSD
#                      passed on to the scripts (see each one's header).
set -u
here=$(cd "$(dirname "$0")" && pwd)
ALL=(run-bench.sh bench-bitmaps.py bench-map.py bench-backup.py bench-mirror.py bench-chain.py
     bench-tls.sh bench-rbd.py)

selected() {
    local want
    [[ -z ${BENCH_SCRIPTS:-} ]] && return 0
    for want in $BENCH_SCRIPTS; do
        [[ $1 == "$want" || ${1%.*} == "$want" || ${1%.*} == "bench-$want" ]] && return 0
    done
    return 1
}
for want in ${BENCH_SCRIPTS:-}; do
    found=
    for s in "${ALL[@]}"; do
        BENCH_SCRIPTS=$want selected "$s" && found=1
    done
    [[ -n $found ]] || { echo "run-all: BENCH_SCRIPTS: no script called $want (${ALL[*]})" >&2; exit 2; }
done

if [[ -n ${BENCH_ROWS:-} ]]; then
    : >"$BENCH_ROWS"
else
    BENCH_ROWS=$(mktemp /tmp/blockd-bench-rows.XXXXXX)
    trap 'rm -f "$BENCH_ROWS"' EXIT
fi
export BENCH_ROWS

status=0
failed=()
timings=()
for s in "${ALL[@]}"; do
    selected "$s" || continue
    echo
    echo "=== $s ==="
    start=$SECONDS
    case $s in
        *.py) /usr/bin/python3 "$here/$s" ;;
        *) bash "$here/$s" ;;
    esac || { status=1; failed+=("$s"); }
    # How long each took: quick mode is meant to stay a few minutes.
    timings+=("$s $((SECONDS - start)) s")
done

echo
echo "=== summary ==="
/usr/bin/python3 "$here/summary.py" "$BENCH_ROWS" || status=1
echo
echo "run-all: time per script: $(printf '%s, ' "${timings[@]}" | sed 's/, $//')"
[[ ${#failed[@]} == 0 ]] || echo "run-all: failed: ${failed[*]} (their rows are missing above)"
exit $status
