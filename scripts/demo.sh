#!/usr/bin/env bash
# Runs casynq's main job from start to end. It installs what is missing,
# builds casynq into build-demo and starts a throwaway redis-server. Then it
# enqueues a mix of demo tasks with the casynq CLI, processes them with
# casynq-worker, stops the worker with SIGTERM and prints what Redis then
# contains.
#
# Progress goes to stderr (lines start with "demo:"), the worker's log lines
# too; the enqueue output and the final summary go to stdout.
set -euo pipefail

LOG_PREFIX=demo
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

BUILD_DIR=build-demo
QUEUES=critical=6,default=3,low=1
CONCURRENCY=4
# How long the worker may take to write its first heartbeat, which asynq
# servers write every 5 s, in seconds.
START_TIMEOUT_S=15
# How long to wait for every pending and active list to empty, in seconds.
DRAIN_TIMEOUT_S=30
# The worker's --shutdown-timeout, and the extra time allowed on top of it
# before the worker is killed, in seconds.
SHUTDOWN_TIMEOUT_S=8
EXIT_GRACE_S=10
JOBS=${CASYNQ_DEMO_JOBS:-2}
REDIS_CLI=${REDIS_CLI:-redis-cli}

usage()
{
    cat <<EOF
Usage: $0 [--skip-setup]

Builds casynq into $BUILD_DIR, starts a throwaway redis-server, enqueues demo
tasks with the casynq CLI, processes them with casynq-worker --demo-handlers
(queues $QUEUES) and prints a summary read from Redis. The exit status is
non-zero when a step fails, the worker cannot start, or the queues do not
drain within $DRAIN_TIMEOUT_S s.

  --skip-setup  do not run ./scripts/setup.sh first
  -h, --help    show this help

CASYNQ_DEMO_JOBS sets the number of compile jobs (default 2).
EOF
}

ROOT=
TMP_DIR=
REDIS_DIR=
PORT=
REDIS_URL=
WORKER_PID=

# Stops the worker and the redis-server this script started, on every exit.
cleanup()
{
    local status=$?

    if [[ -n $WORKER_PID ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
        log "killing casynq-worker pid $WORKER_PID"
        kill -KILL "$WORKER_PID" 2>/dev/null || true
        wait "$WORKER_PID" 2>/dev/null || true
    fi
    if [[ -n $REDIS_DIR ]]; then
        "$ROOT/scripts/redis-throwaway.sh" stop "$REDIS_DIR" || true
    fi
    if [[ -n $TMP_DIR ]]; then
        rm -rf -- "$TMP_DIR"
    fi
    exit "$status"
}

rcli()
{
    "$REDIS_CLI" -h 127.0.0.1 -p "$PORT" "$@"
}

# Enqueues one task with the casynq CLI; the arguments are its options.
enqueue()
{
    "$ROOT/$BUILD_DIR/tools/casynq" enqueue --redis "$REDIS_URL" "$@" ||
        die "casynq enqueue $* failed; read its message above"
}

build()
{
    if [[ -f $BUILD_DIR/build.ninja ]]; then
        log "step 2/7: building casynq in the existing $BUILD_DIR"
    else
        log "step 2/7: configuring and building casynq in $BUILD_DIR"
        meson setup "$BUILD_DIR" -Dwerror=true -Dtests=false >&2 ||
            die "meson setup $BUILD_DIR failed; read the output above," \
                "or delete $BUILD_DIR and rerun"
    fi
    meson compile -C "$BUILD_DIR" -j "$JOBS" >&2 ||
        die "building $BUILD_DIR failed; read the compiler output above"
}

enqueue_tasks()
{
    log "step 4/7: enqueueing demo tasks into queues critical, default and low"
    log "  3 x demo:noop: succeed at once and are deleted"
    enqueue --type demo:noop --queue default --count 3
    log "  2 x demo:echo with --retention 3600: succeed and stay as" \
        "completed, with their payload as the result"
    enqueue --type demo:echo --queue critical --retention 3600 \
        --payload 'hello from casynq'
    enqueue --type demo:echo --queue low --retention 3600 \
        --payload '{"greeting": "hi"}'
    log "  demo:sleep for 1500 ms: succeeds"
    enqueue --type demo:sleep --queue default --payload '{"ms": 1500}'
    log "  demo:fail with --max-retry 1: fails and moves to the retry set," \
        "whose first delay is 15 s or more"
    enqueue --type demo:fail --queue critical --max-retry 1 \
        --payload '{"error": "payment gateway timed out"}'
    log "  demo:fail with skip_retry: archived at once"
    enqueue --type demo:fail --queue default \
        --payload '{"error": "card number is invalid", "skip_retry": true}'
    log "  demo:fail with --max-retry 0: archived after its only attempt"
    enqueue --type demo:fail --queue low --max-retry 0 \
        --payload '{"error": "disk full on /srv"}'
    log "  demo:spin for 3000 ms with --timeout 1 and --max-retry 0: it" \
        "ignores cancellation, so it is archived at its 1 s deadline while" \
        "its thread spins on"
    enqueue --type demo:spin --queue default --timeout 1 --max-retry 0 \
        --payload '{"ms": 3000}'
    log "  demo:unknown with --max-retry 0: no handler, archived"
    enqueue --type demo:unknown --queue low --max-retry 0
}

start_worker()
{
    local tenths

    log "step 5/7: starting casynq-worker --demo-handlers --queues $QUEUES" \
        "--concurrency $CONCURRENCY --log-level info"
    "$ROOT/$BUILD_DIR/tools/casynq-worker" --demo-handlers \
        --redis "$REDIS_URL" --queues "$QUEUES" \
        --concurrency "$CONCURRENCY" --log-level info \
        --shutdown-timeout "$SHUTDOWN_TIMEOUT_S" &
    WORKER_PID=$!

    # The worker is up once its heartbeat is in asynq:servers, where
    # asynq's Inspector looks for servers.
    for ((tenths = 0; tenths < START_TIMEOUT_S * 10; tenths++)); do
        if ! kill -0 "$WORKER_PID" 2>/dev/null; then
            local status=0

            wait "$WORKER_PID" || status=$?
            WORKER_PID=
            die "casynq-worker exited with status $status before it" \
                "started; read its message above"
        fi
        if (($(rcli zcard asynq:servers) > 0)); then
            log "casynq-worker pid $WORKER_PID is running and wrote its" \
                "heartbeat"
            return 0
        fi
        sleep 0.1
    done
    die "casynq-worker pid $WORKER_PID wrote no heartbeat to" \
        "asynq:servers within $START_TIMEOUT_S s; read its log above"
}

# Prints the total length of the pending and active lists of every queue.
unfinished_count()
{
    local queue total=0 n

    while IFS= read -r queue; do
        [[ -n $queue ]] || continue
        n=$(rcli llen "asynq:{$queue}:pending")
        total=$((total + n))
        n=$(rcli llen "asynq:{$queue}:active")
        total=$((total + n))
    done < <(rcli smembers asynq:queues)
    printf '%s\n' "$total"
}

# Returns 1 when the queues still hold pending or active tasks after
# DRAIN_TIMEOUT_S.
wait_for_drain()
{
    local tenths left

    log "step 6/7: waiting up to $DRAIN_TIMEOUT_S s until no queue has" \
        "pending or active tasks"
    for ((tenths = 0; tenths <= DRAIN_TIMEOUT_S * 10; tenths += 5)); do
        kill -0 "$WORKER_PID" 2>/dev/null ||
            die "casynq-worker pid $WORKER_PID exited while tasks were" \
                "still running; read its log above"
        left=$(unfinished_count)
        if ((left == 0)); then
            log "every queue is drained after about $((tenths / 10)) s"
            return 0
        fi
        if ((tenths % 50 == 0)); then
            log "  $left tasks still pending or active"
        fi
        sleep 0.5
    done
    log "$left tasks are still pending or active after $DRAIN_TIMEOUT_S s;" \
        "the summary shows where they are"
    return 1
}

# Sends SIGTERM and waits for the worker to exit. Returns its exit status.
stop_worker()
{
    local tenths status=0

    log "step 7/7: sending SIGTERM to casynq-worker pid $WORKER_PID; it" \
        "waits up to $SHUTDOWN_TIMEOUT_S s for running handlers"
    kill -TERM "$WORKER_PID"
    for ((tenths = 0; tenths < (SHUTDOWN_TIMEOUT_S + EXIT_GRACE_S) * 10; \
        tenths++)); do
        if ! kill -0 "$WORKER_PID" 2>/dev/null; then
            wait "$WORKER_PID" || status=$?
            WORKER_PID=
            log "casynq-worker exited with status $status"
            return "$status"
        fi
        sleep 0.1
    done
    log "casynq-worker pid $WORKER_PID still runs" \
        "$((SHUTDOWN_TIMEOUT_S + EXIT_GRACE_S)) s after SIGTERM; killing it"
    kill -KILL "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
    WORKER_PID=
    return 1
}

# Prints what Redis contains after the run: counters, archived tasks with
# their errors, the retry set and completed tasks with their results. The
# task messages are asynq's protobuf TaskMessage, decoded here by hand so
# that the demo needs no protobuf package.
print_summary()
{
    python3 - "$REDIS_CLI" "$PORT" <<'PY'
import subprocess
import sys
import time

cli, port = sys.argv[1], sys.argv[2]


def redis(*args):
    """Runs one redis-cli command and returns its raw output bytes."""
    out = subprocess.run([cli, "-h", "127.0.0.1", "-p", port, "--raw"]
                         + list(args), check=True,
                         stdout=subprocess.PIPE).stdout
    return out[:-1] if out.endswith(b"\n") else out


def lines(*args):
    return [x.decode() for x in redis(*args).split(b"\n") if x]


def varint(buf, i):
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def decode_task_message(buf):
    """Returns the scalar fields of an encoded asynq TaskMessage."""
    names = {1: "type", 3: "id", 4: "queue", 5: "retry", 6: "retried",
             7: "error_msg", 8: "timeout", 9: "deadline",
             11: "last_failed_at", 12: "retention", 13: "completed_at"}
    fields = {"type": "", "error_msg": "", "retry": 0, "retried": 0}
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 2:
            size, i = varint(buf, i)
            value = buf[i:i + size].decode("utf-8", "replace")
            i += size
        else:
            raise ValueError("unexpected wire type %d" % wire)
        if number in names:
            fields[names[number]] = value
    return fields


def text(data):
    """Shows bytes as text when they are printable UTF-8."""
    try:
        s = data.decode("utf-8")
        if s.isprintable():
            return s
    except UnicodeDecodeError:
        pass
    return repr(data)


def task(queue, task_id):
    return decode_task_message(redis("hget", "asynq:{%s}:t:%s"
                                     % (queue, task_id), "msg"))


queues = sorted(lines("smembers", "asynq:queues"))
now = time.time()

print()
print("== summary, read from redis at 127.0.0.1:%s ==" % port)
print()
print("%-10s %9s %6s %7s %6s %5s %8s %9s" % ("queue", "processed", "failed",
      "pending", "active", "retry", "archived", "completed"))
for q in queues:
    def count(kind):
        return int(redis("get", "asynq:{%s}:%s" % (q, kind)) or 0)

    def size(kind, cmd="zcard"):
        return int(redis(cmd, "asynq:{%s}:%s" % (q, kind)))
    print("%-10s %9d %6d %7d %6d %5d %8d %9d" % (
        q, count("processed"), count("failed"), size("pending", "llen"),
        size("active", "llen"), size("retry"), size("archived"),
        size("completed")))
print("(processed counts every finished attempt, failed the failed ones)")

print()
print("archived tasks (failed for good):")
found = False
for q in queues:
    for tid in lines("zrange", "asynq:{%s}:archived" % q, "0", "-1"):
        m = task(q, tid)
        print("  %-8s %-12s %s  error: %s" % (q, m["type"], tid,
                                              m["error_msg"]))
        found = True
if not found:
    print("  (none)")

print()
print("retry set (failed, to be tried again):")
found = False
for q in queues:
    pairs = lines("zrange", "asynq:{%s}:retry" % q, "0", "-1", "withscores")
    for tid, score in zip(pairs[0::2], pairs[1::2]):
        m = task(q, tid)
        print("  %-8s %-12s %s  retried %d of %d, next attempt in %d s,"
              " error: %s" % (q, m["type"], tid, m["retried"], m["retry"],
                              int(float(score) - now), m["error_msg"]))
        found = True
if not found:
    print("  (none)")

print()
print("completed tasks (kept for their retention):")
found = False
for q in queues:
    for tid in lines("zrange", "asynq:{%s}:completed" % q, "0", "-1"):
        m = task(q, tid)
        result = redis("hget", "asynq:{%s}:t:%s" % (q, tid), "result")
        print("  %-8s %-12s %s  result: %s" % (q, m["type"], tid,
                                               text(result)))
        found = True
if not found:
    print("  (none)")
PY
}

main()
{
    local skip_setup=0 drained=0 worker_status=0

    while (($#)); do
        case $1 in
        --skip-setup) skip_setup=1 ;;
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
    ROOT=$(repo_root)
    cd -- "$ROOT"
    trap cleanup EXIT

    if ((skip_setup)); then
        log "step 1/7: skipping ./scripts/setup.sh (--skip-setup)"
    else
        log "step 1/7: installing what is missing with ./scripts/setup.sh"
        ./scripts/setup.sh || die "./scripts/setup.sh failed; read its" \
            "output above"
    fi
    build

    log "step 3/7: starting a throwaway redis-server"
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/casynq-demo.XXXXXX")
    REDIS_DIR=$TMP_DIR/redis
    PORT=$(./scripts/redis-throwaway.sh start "$REDIS_DIR") ||
        die "the throwaway redis-server did not start; read the message" \
            "above"
    REDIS_URL=redis://127.0.0.1:$PORT/0

    enqueue_tasks
    start_worker
    wait_for_drain || drained=1
    stop_worker || worker_status=$?
    print_summary

    if ((worker_status != 0)); then
        die "casynq-worker exited with status $worker_status after" \
            "SIGTERM instead of 0; read its log above"
    fi
    if ((drained != 0)); then
        die "the queues did not drain within $DRAIN_TIMEOUT_S s"
    fi
    log "done"
}

main "$@"
