#!/usr/bin/env bash
# Starts and stops a throwaway redis-server for demos and the interop tests.
#
#   redis-throwaway.sh start DIR   prints the port of a new server
#   redis-throwaway.sh stop DIR    shuts that server down
#
# The server listens on 127.0.0.1 only, on a free port, with DIR as its working
# directory and persistence disabled. DIR receives redis.pid, redis.port and
# redis.log. Set REDIS_SERVER or REDIS_CLI to use binaries other than the ones
# on PATH.
set -euo pipefail

LOG_PREFIX=redis-throwaway
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
# Attempts with a new port when another process takes the chosen port before
# redis-server binds it.
START_ATTEMPTS=5
# Time allowed for a new server to reply to PING, in tenths of a second.
READY_TIMEOUT_TENTHS=100
# Time allowed for SHUTDOWN NOSAVE before the process is killed, in tenths of a
# second.
STOP_TIMEOUT_TENTHS=50

usage()
{
    cat <<EOF
Usage: $0 start DIR | stop DIR

  start DIR  start redis-server on a free 127.0.0.1 port in DIR (created if
             missing) and print the port; waits up to 10 s for a reply to
             PING
  stop DIR   shut down the server started in DIR; DIR itself is kept
EOF
}

# Prints a TCP port that was free on 127.0.0.1 a moment ago. The kernel picks
# it, so it may be taken again before redis-server binds it.
pick_free_port()
{
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Prints the pid in DIR/redis.pid when that process is still alive.
running_pid()
{
    local dir=$1 pid

    [[ -f $dir/redis.pid ]] || return 1
    pid=$(<"$dir/redis.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # A stale pidfile may name a pid that the kernel gave to another program.
    if [[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") != redis-server* ]]; then
        return 1
    fi
    printf '%s\n' "$pid"
}

# Prints the process_id field of INFO server from the server on port $1.
server_process_id()
{
    "$REDIS_CLI" -h 127.0.0.1 -p "$1" info server 2>/dev/null |
        tr -d '\r' | sed -n 's/^process_id://p'
}

# Waits until the server in $1 on port $2 replies to PING. Returns 1 when it
# exits or does not reply within READY_TIMEOUT_TENTHS.
wait_ready()
{
    local dir=$1 port=$2 tenths pid reply

    for ((tenths = 0; tenths < READY_TIMEOUT_TENTHS; tenths++)); do
        sleep 0.1
        # redis-server 7.0 writes its pidfile after it has bound the port,
        # and never when binding fails, so the loop waits for the file.
        pid=$(running_pid "$dir") || continue
        reply=$("$REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null) || true
        if [[ $reply == PONG ]]; then
            # Another process might own the port, so the server that replied
            # has to report the pid that DIR/redis.pid contains.
            [[ $(server_process_id "$port") == "$pid" ]] && return 0
            return 1
        fi
    done
    return 1
}

start()
{
    local dir=$1 port attempt pid

    command -v "$REDIS_SERVER" >/dev/null 2>&1 ||
        die "$REDIS_SERVER not found; run ./scripts/setup.sh to install" \
            "redis-server"
    command -v "$REDIS_CLI" >/dev/null 2>&1 ||
        die "$REDIS_CLI not found; run ./scripts/setup.sh to install" \
            "redis-server, which contains redis-cli"
    mkdir -p -- "$dir"
    dir=$(cd -- "$dir" && pwd)
    if pid=$(running_pid "$dir"); then
        die "a redis-server with pid $pid already runs in $dir; run" \
            "'$0 stop $dir' first"
    fi

    for ((attempt = 1; attempt <= START_ATTEMPTS; attempt++)); do
        port=$(pick_free_port)
        rm -f -- "$dir/redis.pid"
        "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --save '' --appendonly no --daemonize yes \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
            die "$REDIS_SERVER failed to start; read $dir/redis.log"
        if wait_ready "$dir" "$port"; then
            printf '%s\n' "$port" >"$dir/redis.port"
            log "redis-server pid $(running_pid "$dir") listens on" \
                "127.0.0.1:$port"
            printf '%s\n' "$port"
            return 0
        fi
        log "redis-server did not become ready on port $port within" \
            "$((READY_TIMEOUT_TENTHS / 10)) s (attempt $attempt of" \
            "$START_ATTEMPTS); read $dir/redis.log"
        stop_pid "$dir" "$port"
    done
    die "redis-server did not start after $START_ATTEMPTS attempts; read" \
        "$dir/redis.log"
}

# Shuts down the server whose pidfile is in $1 and that listens on port $2.
stop_pid()
{
    local dir=$1 port=$2 pid tenths

    pid=$(running_pid "$dir") || return 0
    if [[ -n $port && $(server_process_id "$port") == "$pid" ]]; then
        "$REDIS_CLI" -h 127.0.0.1 -p "$port" shutdown nosave \
            >/dev/null 2>&1 || true
    else
        kill -TERM "$pid" 2>/dev/null || true
    fi
    for ((tenths = 0; tenths < STOP_TIMEOUT_TENTHS; tenths++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "redis-server pid $pid still runs after SHUTDOWN NOSAVE, killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

stop()
{
    local dir=$1 port=

    [[ -d $dir ]] || die "directory $dir not found; pass the DIR given to start"
    if ! running_pid "$dir" >/dev/null; then
        log "no redis-server runs in $dir"
        return 0
    fi
    if [[ -f $dir/redis.port ]]; then
        port=$(<"$dir/redis.port")
    fi
    stop_pid "$dir" "$port"
    log "stopped redis-server in $dir"
}

main()
{
    if (($# != 2)); then
        usage >&2
        exit 2
    fi
    case $1 in
    start) start "$2" ;;
    stop) stop "$2" ;;
    *)
        usage >&2
        die "unknown command: $1"
        ;;
    esac
}

main "$@"
