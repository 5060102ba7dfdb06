#!/bin/sh
# Builds the libFuzzer targets (build-fuzz, clang, ASan + UBSan) and runs
# each for FUZZ_SECONDS on its seed corpus (docs/fuzzing.md).
#
#   tests/fuzz/run-fuzz.sh [TARGET...]      (make fuzz FUZZ_SECONDS=N)
#
# Each target starts from tests/fuzz/corpus/TARGET with the dictionary
# tests/fuzz/dict/TARGET.dict.  New interesting inputs go to
# $FUZZ_WORK/TARGET/corpus (kept between runs, never into tests/fuzz/corpus),
# crashing inputs to $FUZZ_WORK/TARGET/crashes, the fuzzer's output to
# $FUZZ_WORK/TARGET/log.  Prints one line per target: executions, executions
# per second, crashes found.  Exits 1 if any target crashed (or leaked, timed
# out, ran out of memory), 2 if it could not run.
set -u
cd "$(dirname "$0")/../.."

SECONDS_EACH=${FUZZ_SECONDS:-60}
BUILD=${BUILD_FUZZ:-build-fuzz}
WORK=${FUZZ_WORK:-$BUILD/fuzz-work}
# One input taking longer than this is reported as a hang (timeout-*).
UNIT_TIMEOUT=${FUZZ_UNIT_TIMEOUT:-30}
# ASan returns NULL for allocations too large to make, as malloc does
# (allocator_may_return_null): the code must cope.  Large allocations that
# succeed are fine while untouched (a bitmap of a big node), so libFuzzer
# only reports memory really used (rss_limit_mb, 2 GiB), not malloc sizes.
MALLOC_LIMIT_MB=${FUZZ_MALLOC_LIMIT_MB:-1048576}
ALL="nbd-handshake nbd-wire qmp keyval qcow2 bitmap-store backing-name"
TARGETS=${*:-$ALL}

for t in $TARGETS; do
    case " $ALL " in
    *" $t "*) ;;
    *) echo "run-fuzz: unknown target '$t' (targets: $ALL)" >&2; exit 2 ;;
    esac
done

if [ ! -f "$BUILD/build.ninja" ]; then
    CC=${FUZZ_CC:-clang-14} meson setup "$BUILD" -Dfuzzing=true \
        --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false > "$BUILD.setup.log" 2>&1 || {
        cat "$BUILD.setup.log" >&2
        echo "run-fuzz: cannot configure $BUILD (needs clang-14 and libclang-rt-14-dev)" >&2
        exit 2
    }
    rm -f "$BUILD.setup.log"
fi
executables=""
for t in $TARGETS; do
    executables="$executables tests/fuzz/fuzz-$t"
done
# shellcheck disable=SC2086
ninja -C "$BUILD" $executables > "$BUILD/fuzz-build.log" 2>&1 || {
    cat "$BUILD/fuzz-build.log" >&2
    exit 2
}

# The harnesses put their files under TMPDIR; a crashing run cannot clean up,
# so each run gets a scratch directory (on tmpfs when there is one) removed here.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    scratch=$(mktemp -d /dev/shm/blockd-fuzz.XXXXXX)
else
    scratch=$(mktemp -d)
fi
trap 'rm -rf "$scratch"' EXIT INT TERM

stat() {
    sed -n "s/^stat::$1: *//p" "$2" | tail -n 1
}

# Runs one target; its report line (and what to do about a failure) goes to
# $scratch/TARGET.report, and $scratch/TARGET.failed marks a failure.
run_one() {
    t=$1
    dir=$WORK/$t
    report=$scratch/$t.report
    mkdir -p "$dir/corpus" "$dir/crashes" "$scratch/$t"
    before=$(ls "$dir/crashes" | wc -l)
    dict=""
    [ -f "tests/fuzz/dict/$t.dict" ] && dict="-dict=tests/fuzz/dict/$t.dict"
    TMPDIR=$scratch/$t \
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        "$BUILD/tests/fuzz/fuzz-$t" -max_total_time="$SECONDS_EACH" -timeout="$UNIT_TIMEOUT" \
        -malloc_limit_mb="$MALLOC_LIMIT_MB" -print_final_stats=1 -artifact_prefix="$dir/crashes/" $dict \
        "$dir/corpus" "tests/fuzz/corpus/$t" > "$dir/log" 2>&1
    rc=$?
    after=$(ls "$dir/crashes" | wc -l)
    crashes=$((after - before))
    execs=$(stat number_of_executed_units "$dir/log")
    rate=$(stat average_exec_per_sec "$dir/log")
    added=$(stat new_units_added "$dir/log")
    printf '%-14s %12s %10s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$crashes" "${added:-?}" > "$report"
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        : > "$scratch/$t.failed"
        {
            grep -m 3 -E 'ERROR|Bail out|SUMMARY|runtime error' "$dir/log" | sed 's/^/    /'
            for f in $(ls -t "$dir/crashes" | head -n "$((crashes > 0 ? crashes : 1))"); do
                echo "    input: $dir/crashes/$f"
                echo "    reproduce: $BUILD/tests/fuzz/fuzz-$t $dir/crashes/$f"
            done
            [ "$crashes" -gt 0 ] || echo "    (exit status $rc, no input saved; see $dir/log)"
        } >> "$report"
    fi
}

# libFuzzer runs on one core: FUZZ_JOBS targets (default: one per CPU) run at
# once, each still for its full FUZZ_SECONDS; reports print in target order.
JOBS=${FUZZ_JOBS:-$(nproc)}
running=0
for t in $TARGETS; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait
        running=0
    fi
done
wait
failed=0
printf '%-14s %12s %10s %8s %s\n' target executions exec/s crashes "new inputs"
for t in $TARGETS; do
    cat "$scratch/$t.report"
    [ -f "$scratch/$t.failed" ] && failed=1
done
if [ "$failed" -ne 0 ]; then
    echo "run-fuzz: crashes found; add each input to tests/fuzz/regressions/TARGET/ with its fix"
fi
exit "$failed"
