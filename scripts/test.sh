#!/usr/bin/env bash
# Builds casynq and runs its tests in a debug build, then in a build with
# AddressSanitizer and UndefinedBehaviorSanitizer, then runs the unit and
# integration suites under ThreadSanitizer (which cannot be combined with
# AddressSanitizer). The README's test command and CI (.ci/run) both run
# this script.
set -euo pipefail

LOG_PREFIX=test
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# Parallel compile jobs and test processes.
JOBS=${CASYNQ_TEST_JOBS:-2}
DEBUG_BUILD=build-test
ASAN_BUILD=build-asan
DEBUG_OPTIONS=(-Dwerror=true --buildtype=debug)
SANITIZE_OPTIONS=(
    -Dwerror=true
    -Db_sanitize=address,undefined
    -Dc_args=-fno-sanitize-recover=all
    -Db_lundef=false
)
# Sanitizer builds run slower, so meson test multiplies their timeouts.
ASAN_TIMEOUT_MULTIPLIER=3
TSAN_BUILD=build-tsan
TSAN_MESON_OPTIONS=(-Dwerror=true -Db_sanitize=thread)
TSAN_TIMEOUT_MULTIPLIER=4

usage()
{
    cat <<EOF
Usage: $0 [--no-asan] [--no-tsan] [--suite NAME]...

Runs ./scripts/setup.sh, builds $DEBUG_BUILD and runs its tests, then builds
$ASAN_BUILD with AddressSanitizer and UndefinedBehaviorSanitizer and runs the
tests again, then builds $TSAN_BUILD with ThreadSanitizer and runs the unit
and integration suites. The last line of output is "N passed, N failed",
and the exit status is non-zero when any step or test fails.

  --no-asan      skip the AddressSanitizer build, for quick local runs
  --no-tsan      skip the ThreadSanitizer build, for quick local runs
  --suite NAME   run only the tests of suite NAME (unit, integration,
                 interop); may be repeated
  -h, --help     show this help

CASYNQ_TEST_JOBS sets the number of compile jobs and test processes
(default 2).
EOF
}

TOTAL_PASSED=0
TOTAL_FAILED=0
FAILED_STEPS=()
BUILT_DIRS=()

# Prints the final summary line on every exit path, so that CI logs always
# end with it.
print_summary()
{
    local status=$? joined

    if ((${#FAILED_STEPS[@]})); then
        joined=$(printf '%s, ' "${FAILED_STEPS[@]}")
        log "failed steps: ${joined%, }"
    fi
    printf '%d passed, %d failed\n' "$TOTAL_PASSED" "$TOTAL_FAILED"
    exit "$status"
}

# Runs a step and records its name when it fails. Returns its exit status.
step()
{
    local name=$1 status=0

    shift
    # Functions log the commands they run themselves.
    if [[ $(type -t "$1") != function ]]; then
        log "running: $*"
    fi
    "$@" || status=$?
    if ((status != 0)); then
        log "$name failed with exit status $status"
        FAILED_STEPS+=("$name")
    fi
    return "$status"
}

# Configures build directory $1 with the meson options that follow. An
# existing build directory is reconfigured, and wiped if that fails.
configure()
{
    local dir=$1

    shift
    if [[ -f $dir/meson-private/coredata.dat ]]; then
        log "running: meson setup --reconfigure $dir $*"
        if meson setup --reconfigure "$dir" "$@"; then
            return 0
        fi
        log "reconfiguring $dir failed, so it is wiped and configured again"
        log "running: meson setup --wipe $dir $*"
        meson setup --wipe "$dir" "$@"
    else
        log "running: meson setup $dir $*"
        meson setup "$dir" "$@"
    fi
}

# Prints "PASSED FAILED" counted from the meson test log in build dir $1.
# Expected failures count as passed. Skips count as failed, because a skipped
# test means something the suite needs is missing.
count_results()
{
    python3 - "$1/meson-logs/testlog.json" <<'EOF'
import json
import sys

passed = failed = 0
try:
    with open(sys.argv[1], encoding="utf-8") as log:
        for line in log:
            if not line.strip():
                continue
            result = json.loads(line).get("result")
            if result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            else:
                failed += 1
except FileNotFoundError:
    pass
print(passed, failed)
EOF
}

# Runs meson test in build dir $1 with the extra options that follow, and adds
# its results to the totals. Returns non-zero when a test failed or none ran.
run_tests()
{
    local dir=$1 status=0 counts passed failed

    shift
    rm -f -- "$dir/meson-logs/testlog.json"
    step "meson test -C $dir" meson test -C "$dir" --print-errorlogs \
        --num-processes "$JOBS" "$@" "${SUITE_ARGS[@]}" || status=$?

    counts=$(count_results "$dir")
    read -r passed failed <<<"$counts"
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    log "$dir: $passed passed, $failed failed"
    if ((passed + failed == 0)); then
        log "no tests ran in $dir; check that the tests are registered in" \
            "tests/*/meson.build and that --suite names an existing suite"
        FAILED_STEPS+=("no tests in $dir")
        return 1
    fi
    return "$status"
}

# Configures, compiles and tests one build directory.
build_and_test()
{
    local dir=$1 timeout_multiplier=$2

    shift 2
    step "meson setup $dir" configure "$dir" "$@" || return 1
    step "meson compile -C $dir" meson compile -C "$dir" -j "$JOBS" ||
        return 1
    BUILT_DIRS+=("$dir")
    run_tests "$dir" --timeout-multiplier "$timeout_multiplier"
}

main()
{
    local run_asan=1 run_tsan=1 status=0 root saved_suites

    SUITE_ARGS=()
    while (($#)); do
        case $1 in
        --no-asan) run_asan=0 ;;
        --no-tsan) run_tsan=0 ;;
        --suite)
            (($# >= 2)) || die "--suite needs a suite name"
            SUITE_ARGS+=(--suite "$2")
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown option: $1"
            ;;
        esac
        shift
    done

    root=$(repo_root)
    cd -- "$root"
    trap print_summary EXIT

    step "set-up" ./scripts/setup.sh || exit 1
    add_go_to_path

    build_and_test "$DEBUG_BUILD" 1 "${DEBUG_OPTIONS[@]}" || status=1

    # A failing debug build would fail here too, so only test failures let
    # the sanitizer build run.
    if ((run_asan)) && [[ " ${BUILT_DIRS[*]} " == *" $DEBUG_BUILD "* ]]; then
        export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        build_and_test "$ASAN_BUILD" "$ASAN_TIMEOUT_MULTIPLIER" \
            "${SANITIZE_OPTIONS[@]}" || status=1
    elif ((run_asan)); then
        log "skipping $ASAN_BUILD because $DEBUG_BUILD did not build"
    fi

    # The interop suite drives Go programs and whole processes; races in
    # the library show up in the unit and integration suites already.
    if ((run_tsan)) && [[ " ${BUILT_DIRS[*]} " == *" $DEBUG_BUILD "* ]]; then
        export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
        saved_suites=("${SUITE_ARGS[@]}")
        if ((${#SUITE_ARGS[@]} == 0)); then
            SUITE_ARGS=(--suite unit --suite integration)
        fi
        build_and_test "$TSAN_BUILD" "$TSAN_TIMEOUT_MULTIPLIER" \
            "${TSAN_MESON_OPTIONS[@]}" || status=1
        SUITE_ARGS=("${saved_suites[@]}")
    elif ((run_tsan)); then
        log "skipping $TSAN_BUILD because $DEBUG_BUILD did not build"
    fi

    exit "$status"
}

main "$@"
