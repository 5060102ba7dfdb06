# Sourced by the bash benchmarks: bench_row appends one machine-readable
# row to $BENCH_ROWS through bench_rows.py (the one writer of the format;
# its docstring describes the arguments), and does nothing when BENCH_ROWS
# is unset, so the scripts still run alone.
BENCH_ROWS_PY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/bench_rows.py"
bench_row() {
    [[ -n ${BENCH_ROWS:-} ]] || return 0
    /usr/bin/python3 "$BENCH_ROWS_PY" "$@"
}
