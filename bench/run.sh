#!/usr/bin/env bash
# Builds the benchmark programs and runs casynq and Go asynq v0.26.0 side by
# side on throwaway redis-servers, then writes a Markdown report and the raw
# numbers.
#
#   bench/run.sh [--quick] [--out FILE] [--cases LIST] [--runs N] [--keep]
#
#   --quick       2 runs per side and smaller sizes, a smoke check of about
#                 2.5 minutes (the full run took 13.3 minutes on 2 cores)
#   --out FILE    report path (default bench/report.md); the raw numbers go
#                 to FILE's name with -raw.csv and -raw.json
#   --cases LIST  comma-separated subset of drain,weighted,enqueue,latency,
#                 scale,ceiling,limiter (default: all)
#   --runs N      runs per side and figure (default 5, or 2 with --quick)
#   --keep        keep the run directories (logs, redis files) in /tmp
#
# casynq is built in build-bench (release, no tests); the C benchmark
# programs and the Go programs of bench/go go to build-bench/bench. Needs
# the packages of scripts/setup.sh and Go 1.24 or later.
set -euo pipefail

LOG_PREFIX=bench
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

BUILD=$ROOT/build-bench
BIN=$BUILD/bench
WARNINGS=(-Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes
    -Wmissing-prototypes -Wformat=2 -Wcast-qual -Wwrite-strings -Werror)

usage()
{
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

OUT=$ROOT/bench/report.md
PASS=()
COMMAND="bench/run.sh${*:+ $*}"
while (($# > 0)); do
    case $1 in
    --quick | --keep)
        PASS+=("$1")
        shift
        ;;
    --out | --cases | --runs)
        (($# >= 2)) || die "$1 needs a value; run bench/run.sh --help"
        if [[ $1 == --out ]]; then
            OUT=$(realpath -m -- "$2")
        else
            PASS+=("$1" "$2")
        fi
        shift 2
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown option '$1'"
        ;;
    esac
done

build_casynq()
{
    if [[ ! -f $BUILD/build.ninja ]]; then
        # No -Dwerror: GCC 12 at -O3 warns about maybe-uninitialized
        # values in tools/worker_config.c that -O2 does not see.
        meson setup "$BUILD" "$ROOT" --buildtype=release -Dtests=false \
            >"$BUILD.setup.log" 2>&1 ||
            die "meson setup failed; read $BUILD.setup.log"
        rm -f -- "$BUILD.setup.log"
    else
        meson configure "$BUILD" --buildtype=release -Dtests=false \
            -Dwerror=false >/dev/null ||
            die "meson configure of $BUILD failed; delete $BUILD and retry"
    fi
    ninja -C "$BUILD" -j2 >/dev/null ||
        die "building casynq in $BUILD failed; run 'ninja -C $BUILD'"
}

build_c_programs()
{
    local casynq_libs hiredis_flags hiredis_libs prog

    mkdir -p -- "$BIN"
    hiredis_flags=$(pkg-config --cflags hiredis uuid)
    hiredis_libs=$(pkg-config --libs hiredis uuid)
    # The shared library, as casynq-worker uses it. It names its own
    # dependencies, so this list stays right when they change.
    casynq_libs="-L$BUILD -lcasynq -Wl,-rpath,$BUILD -lpthread -lm"
    # shellcheck disable=SC2086 # the pkg-config output is a word list
    for prog in load_tasks ceiling; do
        cc -std=c11 -O2 -D_GNU_SOURCE "${WARNINGS[@]}" $hiredis_flags \
            -o "$BIN/$prog" "$ROOT/bench/$prog.c" "$ROOT/bench/bench_util.c" \
            $hiredis_libs || die "compiling bench/$prog.c failed"
    done
    # shellcheck disable=SC2086
    for prog in enqueue_bench latency_worker limiter_bench; do
        cc -std=c11 -O2 -D_GNU_SOURCE "${WARNINGS[@]}" \
            -I"$ROOT/include" -I"$BUILD/include" \
            -o "$BIN/$prog" "$ROOT/bench/$prog.c" $casynq_libs ||
            die "compiling bench/$prog.c failed"
    done
}

build_go_programs()
{
    local go prog

    go=$(find_go)
    [[ -n $go ]] || die "go not found; install Go 1.24 or later (see" \
        "scripts/setup.sh)"
    for prog in server enqueue latency; do
        (cd -- "$ROOT/bench/go" &&
            "$go" build -o "$BIN/asynq-$prog" "./$prog") ||
            die "go build of bench/go/$prog failed"
    done
    add_go_to_path
}

log "building casynq (release) in $BUILD"
build_casynq
log "building the C benchmark programs"
build_c_programs
log "building the Go programs"
build_go_programs

exec python3 "$ROOT/bench/bench.py" --repo "$ROOT" --build "$BUILD" \
    --bin "$BIN" --out "$OUT" --command "$COMMAND" "${PASS[@]}"
