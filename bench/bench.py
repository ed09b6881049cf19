#!/usr/bin/env python3
"""Run casynq and Go asynq v0.26.0 side by side and write a report.

bench/run.sh builds the programs and calls this script; run that instead.
Every run gets a fresh throwaway redis-server on a free 127.0.0.1 port
(scripts/redis-throwaway.sh), flushed before use. casynq and Go runs
alternate (casynq, Go, casynq, Go, ...) within each figure. The script
writes a Markdown report, and the raw numbers of every run as CSV and JSON
next to it.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# Sizes of the full and the quick (smoke check) run.
FULL = {
    "runs": 5,
    "drain_tasks": 100_000,
    "enqueue_tasks_one": 20_000,  # timed tasks of the single client
    "enqueue_tasks_each": 5_000,  # timed tasks of each of the 8 clients
    "latency_rate": 1_000,
    "latency_seconds": 10,
    "scale_tasks": 100_000,
    "ceiling_lifecycles": 200_000,
    "limiter_seconds": 2,
}
QUICK = {
    "runs": 2,
    "drain_tasks": 20_000,
    "enqueue_tasks_one": 5_000,
    "enqueue_tasks_each": 1_000,
    "latency_rate": 1_000,
    "latency_seconds": 3,
    "scale_tasks": 20_000,
    "ceiling_lifecycles": 50_000,
    "limiter_seconds": 0.5,
}

CONCURRENCY = 10
PAYLOAD_SIZE = 100
ENQUEUE_CLIENTS = 8
SCALE_PROCESSES = (1, 2, 4)
WEIGHTED_QUEUES = (("critical", 6), ("default", 3), ("low", 1))
FAIL_EVERY = 10  # every 10th task fails in case 2
POLL_S = 0.05
# Limits on hangs, not timing checks: a drain or a wait that takes longer
# means a broken run, which is reported as a failure.
DRAIN_LIMIT_S = 600
STOP_LIMIT_S = 30
SERVER_READY_LIMIT_S = 30
# Pause between a server's first heartbeat and the first latency task, so
# the server is idle (polling empty queues) when the producer starts.
IDLE_SETTLE_S = 1.0

SIDES = ("casynq", "go")
SIDE_NAMES = {"casynq": "casynq", "go": "Go asynq"}
CASES = ("drain", "weighted", "enqueue", "latency", "scale", "ceiling",
         "limiter")


class BenchError(Exception):
    """A run failed; the message names the run and the directory of its logs."""


class RedisError(Exception):
    """Redis returned an error reply."""


class Redis:
    """A minimal RESP2 client over one TCP connection to 127.0.0.1."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")

    def close(self):
        self.reader.close()
        self.sock.close()

    @staticmethod
    def _encode(args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def _read(self):
        line = self.reader.readline()
        if not line:
            raise BenchError("redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            raise RedisError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            return self.reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise BenchError(f"unexpected reply from redis: {line!r}")

    def call(self, *args):
        self.sock.sendall(self._encode(args))
        return self._read()

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self._encode(c) for c in commands))
        return [self._read() for _ in commands]

    def info(self, section):
        text = self.call("INFO", section).decode()
        fields = {}
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value
        return fields

    def cpu_seconds(self):
        """Returns Redis's user plus system CPU time in seconds."""
        cpu = self.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def unfinished(self, queues):
        """Returns the number of pending plus active tasks in queues."""
        commands = []
        for q in queues:
            commands.append(("LLEN", f"asynq:{{{q}}}:pending"))
            commands.append(("LLEN", f"asynq:{{{q}}}:active"))
        return sum(self.pipeline(commands))

    def total(self, queues, suffix, command="GET"):
        """Sums GET (or another count command) of asynq:{q}:<suffix>."""
        replies = self.pipeline(
            [(command, f"asynq:{{{q}}}:{suffix}") for q in queues])
        return sum(int(r or 0) for r in replies)


class Bench:
    """Holds paths and sizes, runs the cases and collects the samples."""

    def __init__(self, args):
        self.args = args
        self.repo = os.path.abspath(args.repo)
        self.bin = os.path.abspath(args.bin)
        self.sizes = QUICK if args.quick else FULL
        self.runs = args.runs or self.sizes["runs"]
        self.work = tempfile.mkdtemp(prefix="casynq-bench.")
        self.samples = []  # one dict per measured run
        self.started = time.monotonic()
        self.redis_script = os.path.join(self.repo, "scripts",
                                         "redis-throwaway.sh")
        self.lua_dir = os.path.join(self.repo, "runtime", "lua")
        self.run_counter = 0
        self.redis_dirs = set()  # redis-servers started and not stopped

    # ----------------------------------------------------------------
    # Helpers

    def log(self, message):
        elapsed = time.monotonic() - self.started
        print(f"bench [{elapsed:6.0f} s] {message}", file=sys.stderr,
              flush=True)

    def program(self, name):
        return os.path.join(self.bin, name)

    def new_run_dir(self, label):
        self.run_counter += 1
        path = os.path.join(self.work, f"{self.run_counter:03d}-{label}")
        os.makedirs(path)
        return path

    def start_redis(self, run_dir):
        redis_dir = os.path.join(run_dir, "redis")
        proc = subprocess.run([self.redis_script, "start", redis_dir],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"redis-throwaway.sh start failed: "
                             f"{proc.stderr.strip()}")
        self.redis_dirs.add(redis_dir)
        port = int(proc.stdout.strip())
        client = Redis(port)
        client.call("FLUSHALL")
        return port, client

    def stop_redis(self, run_dir, client):
        client.close()
        self.stop_redis_dir(os.path.join(run_dir, "redis"))

    def stop_redis_dir(self, redis_dir):
        subprocess.run([self.redis_script, "stop", redis_dir],
                       capture_output=True, check=False)
        self.redis_dirs.discard(redis_dir)

    def stop_all_redis(self):
        """Stops the redis-servers that an interrupted run left behind."""
        for redis_dir in list(self.redis_dirs):
            self.stop_redis_dir(redis_dir)

    def run_json(self, argv, run_dir, name):
        """Runs a program to completion and parses its JSON stdout line."""
        err_path = os.path.join(run_dir, f"{name}.stderr")
        with open(err_path, "w") as err:
            proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err,
                                  text=True, check=False, timeout=900)
        if proc.returncode != 0:
            raise BenchError(f"{name} exited with {proc.returncode}; read "
                             f"{err_path}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def load_tasks(self, port, run_dir, count, queues, fail_every=0):
        argv = [self.program("load_tasks"), "--port", str(port),
                "--lua-dir", self.lua_dir, "--count", str(count),
                "--payload-size", str(PAYLOAD_SIZE),
                "--queues", ",".join(queues)]
        if fail_every:
            argv += ["--fail-every", str(fail_every)]
        return self.run_json(argv, run_dir, "load_tasks")

    def server_argv(self, side, port, queues_spec):
        if side == "casynq":
            return [os.path.join(self.args.build, "tools", "casynq-worker"),
                    "--demo-handlers", "--concurrency", str(CONCURRENCY),
                    "--queues", queues_spec,
                    "--redis", f"redis://127.0.0.1:{port}/0"]
        return [self.program("asynq-server"), "-redis", f"127.0.0.1:{port}",
                "-concurrency", str(CONCURRENCY), "-queues", queues_spec]

    def spawn(self, argv, run_dir, name, stdout=subprocess.DEVNULL):
        err = open(os.path.join(run_dir, f"{name}.stderr"), "w")
        proc = subprocess.Popen(argv, stdout=stdout, stderr=err,
                                text=True)
        proc.bench_name = name
        proc.bench_err = err
        return proc

    def stop(self, proc, run_dir):
        """Sends SIGTERM and waits; returns the stdout text if piped."""
        out = ""
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise BenchError(f"{proc.bench_name} did not exit within "
                             f"{STOP_LIMIT_S} s of SIGTERM; read {run_dir}")
        finally:
            proc.bench_err.close()
        if proc.returncode != 0:
            raise BenchError(f"{proc.bench_name} exited with "
                             f"{proc.returncode} after SIGTERM; read "
                             f"{run_dir}")
        return out or ""

    @staticmethod
    def proc_usage(pid):
        """Returns (CPU seconds, peak RSS in KiB) of a running process."""
        with open(f"/proc/{pid}/stat") as f:
            # The command name may contain spaces, so split after it.
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        hwm = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return cpu, hwm

    def wait_drained(self, client, queues, procs, run_dir):
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while client.unfinished(queues) > 0:
            for proc in procs:
                if proc.poll() is not None:
                    raise BenchError(f"{proc.bench_name} exited with "
                                     f"{proc.returncode} before the queues "
                                     f"drained; read {run_dir}")
            if time.monotonic() > deadline:
                raise BenchError(f"queues not drained after {DRAIN_LIMIT_S} "
                                 f"s; read {run_dir}")
            time.sleep(POLL_S)
        return time.monotonic()

    def record(self, case, side, metric, value, run, unit, **extra):
        sample = {"case": case, "side": side, "metric": metric,
                  "value": value, "unit": unit, "run": run}
        sample.update(extra)
        self.samples.append(sample)

    # ----------------------------------------------------------------
    # Cases 1, 2 and 5: drains

    def drain_run(self, case, side, run, tasks, queues, processes=1,
                  fail_every=0):
        names = [q for q, _ in queues]
        spec = ",".join(f"{q}={w}" for q, w in queues)
        run_dir = self.new_run_dir(f"{case}-{side}-p{processes}-r{run}")
        port, client = self.start_redis(run_dir)
        procs = []
        try:
            self.load_tasks(port, run_dir, tasks, names, fail_every)
            cpu_before = client.cpu_seconds()
            start = time.monotonic()
            for i in range(processes):
                procs.append(self.spawn(self.server_argv(side, port, spec),
                                        run_dir, f"{side}-server-{i}"))
            end = self.wait_drained(client, names, procs, run_dir)
            redis_cpu = client.cpu_seconds() - cpu_before
            usage = [self.proc_usage(p.pid) for p in procs]
            # Read at the drain: during shutdown a retry that fell due may
            # still move back to pending.
            handled = client.total(names, "processed")
            retry = client.total(names, "retry", "ZCARD")
            archived = client.total(names, "archived", "ZCARD")
            stop_start = time.monotonic()
            while procs:
                self.stop(procs.pop(), run_dir)
            shutdown = time.monotonic() - stop_start
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                proc.bench_err.close()
            self.stop_redis(run_dir, client)

        if handled < tasks:
            raise BenchError(f"{side} counted {handled} processed tasks of "
                             f"{tasks}; read {run_dir}")
        seconds = end - start
        worker_cpu = sum(cpu for cpu, _ in usage)
        extra = {"processes": processes, "tasks": tasks}
        self.record(case, side, "tasks_per_s", tasks / seconds, run,
                    "tasks/s", **extra)
        self.record(case, side, "seconds", seconds, run, "s", **extra)
        self.record(case, side, "redis_cpu_us_per_task",
                    redis_cpu / tasks * 1e6, run, "us/task", **extra)
        self.record(case, side, "worker_cpu_us_per_task",
                    worker_cpu / tasks * 1e6, run, "us/task", **extra)
        self.record(case, side, "worker_peak_rss_mib",
                    max(hwm for _, hwm in usage) / 1024, run, "MiB",
                    **extra)
        self.record(case, side, "shutdown_s", shutdown, run, "s", **extra)
        self.record(case, side, "handled", handled, run, "tasks", **extra)
        self.record(case, side, "retry_set", retry, run, "tasks", **extra)
        self.record(case, side, "archived", archived, run, "tasks", **extra)
        self.log(f"{case} {side} x{processes} run {run}: "
                 f"{tasks / seconds:,.0f} tasks/s")

    def case_drain(self):
        for run in range(1, self.runs + 1):
            for side in SIDES:
                self.drain_run("drain", side, run, self.sizes["drain_tasks"],
                               (("default", 1),))

    def case_weighted(self):
        for run in range(1, self.runs + 1):
            for side in SIDES:
                self.drain_run("weighted", side, run,
                               self.sizes["drain_tasks"], WEIGHTED_QUEUES,
                               fail_every=FAIL_EVERY)

    def case_scale(self):
        for processes in SCALE_PROCESSES:
            for run in range(1, self.runs + 1):
                for side in SIDES:
                    self.drain_run(f"scale{processes}", side, run,
                                   self.sizes["scale_tasks"],
                                   (("default", 1),), processes=processes)

    # ----------------------------------------------------------------
    # Case 3: enqueue throughput

    def enqueue_run(self, side, run, clients, per_client):
        label = f"enqueue{clients}"
        run_dir = self.new_run_dir(f"{label}-{side}-r{run}")
        port, client = self.start_redis(run_dir)
        try:
            if side == "casynq":
                argv = [self.program("enqueue_bench"),
                        "--redis", f"redis://127.0.0.1:{port}/0",
                        "--clients", str(clients),
                        "--tasks", str(per_client),
                        "--payload-size", str(PAYLOAD_SIZE)]
            else:
                argv = [self.program("asynq-enqueue"),
                        "-redis", f"127.0.0.1:{port}",
                        "-clients", str(clients), "-tasks", str(per_client),
                        "-payload-size", str(PAYLOAD_SIZE)]
            result = self.run_json(argv, run_dir, f"{side}-enqueue")
            stored = client.call("LLEN", "asynq:{default}:pending")
        finally:
            self.stop_redis(run_dir, client)
        # Each client also enqueues one untimed warm-up task.
        if stored != result["tasks"] + clients:
            raise BenchError(f"{side} enqueue stored {stored} tasks, "
                             f"expected {result['tasks'] + clients}; read "
                             f"{run_dir}")
        rate = result["tasks"] / result["seconds"]
        self.record(label, side, "tasks_per_s", rate, run, "tasks/s",
                    clients=clients, tasks=result["tasks"])
        self.log(f"{label} {side} run {run}: {rate:,.0f} tasks/s")

    def case_enqueue(self):
        for run in range(1, self.runs + 1):
            for side in SIDES:
                self.enqueue_run(side, run, 1, self.sizes["enqueue_tasks_one"])
        for run in range(1, self.runs + 1):
            for side in SIDES:
                self.enqueue_run(side, run, ENQUEUE_CLIENTS,
                                 self.sizes["enqueue_tasks_each"])

    # ----------------------------------------------------------------
    # Case 4: pickup latency

    def wait_server_ready(self, client, proc, run_dir):
        deadline = time.monotonic() + SERVER_READY_LIMIT_S
        # Both servers add themselves to the sorted set asynq:servers with
        # their first heartbeat.
        while client.call("ZCARD", "asynq:servers") < 1:
            if proc.poll() is not None:
                raise BenchError(f"{proc.bench_name} exited with "
                                 f"{proc.returncode} at start; read "
                                 f"{run_dir}")
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.bench_name} wrote no heartbeat "
                                 f"within {SERVER_READY_LIMIT_S} s; read "
                                 f"{run_dir}")
            time.sleep(POLL_S)

    def latency_argv(self, side, port, capacity):
        if side == "casynq":
            return [self.program("latency_worker"),
                    "--redis", f"redis://127.0.0.1:{port}/0",
                    "--concurrency", str(CONCURRENCY),
                    "--capacity", str(capacity)]
        return [self.program("asynq-latency"), "-redis", f"127.0.0.1:{port}",
                "-concurrency", str(CONCURRENCY),
                "-capacity", str(capacity)]

    def latency_run(self, side, run):
        rate = self.sizes["latency_rate"]
        seconds = self.sizes["latency_seconds"]
        expected = rate * seconds
        run_dir = self.new_run_dir(f"latency-{side}-r{run}")
        port, client = self.start_redis(run_dir)
        proc = None

        try:
            proc = self.spawn(self.latency_argv(side, port, expected + 1000),
                              run_dir, f"{side}-latency",
                              stdout=subprocess.PIPE)
            self.wait_server_ready(client, proc, run_dir)
            time.sleep(IDLE_SETTLE_S)

            producer = self.run_json(
                [self.program("enqueue_bench"),
                 "--redis", f"redis://127.0.0.1:{port}/0",
                 "--rate", str(rate), "--duration-s", str(seconds)],
                run_dir, "producer")
            self.wait_drained(client, ["default"], [proc], run_dir)
            out = self.stop(proc, run_dir)
            proc = None
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
                proc.bench_err.close()
            self.stop_redis(run_dir, client)

        result = json.loads(out.strip().splitlines()[-1])
        if result["count"] != expected or result["dropped"] != 0:
            raise BenchError(f"{side} recorded {result['count']} latencies "
                             f"({result['dropped']} dropped), expected "
                             f"{expected}; read {run_dir}")

        for key, metric in (("p50_ns", "p50_ms"), ("p99_ns", "p99_ms"),
                            ("p999_ns", "p999_ms"), ("max_ns", "max_ms")):
            self.record("latency", side, metric, result[key] / 1e6, run, "ms",
                        tasks=expected)
        self.record("latency", side, "producer_max_lag_ms",
                    producer["max_lag_ms"], run, "ms", tasks=expected)
        self.log(f"latency {side} run {run}: p50 "
                 f"{result['p50_ns'] / 1e6:.2f} ms, p99 "
                 f"{result['p99_ns'] / 1e6:.2f} ms")

    def case_latency(self):
        for run in range(1, self.runs + 1):
            for side in SIDES:
                self.latency_run(side, run)

    # ----------------------------------------------------------------
    # Case 6: ceiling

    def ceiling_run(self, run, drain, per_call=1):
        mode = "drain" if drain else "lifecycle"
        if per_call > 1:
            mode += str(per_call)
        lifecycles = self.sizes["ceiling_lifecycles"]
        run_dir = self.new_run_dir(f"ceiling-{mode}-r{run}")
        port, client = self.start_redis(run_dir)
        try:
            argv = [self.program("ceiling"), "--port", str(port),
                    "--lua-dir", self.lua_dir,
                    "--lifecycles", str(lifecycles),
                    "--payload-size", str(PAYLOAD_SIZE),
                    "--per-call", str(per_call)]
            if drain:
                argv.append("--drain")
            cpu_before = client.cpu_seconds()
            result = self.run_json(argv, run_dir, "ceiling")
            redis_cpu = client.cpu_seconds() - cpu_before
        finally:
            self.stop_redis(run_dir, client)
        rate = lifecycles / result["seconds"]
        case = f"ceiling_{mode}"
        self.record(case, "redis", "tasks_per_s", rate, run, "tasks/s",
                    tasks=lifecycles)
        # With --drain the untimed load is inside the CPU figure, so only
        # the full lifecycle has a meaningful Redis CPU per task.
        if not drain:
            self.record(case, "redis", "redis_cpu_us_per_task",
                        redis_cpu / lifecycles * 1e6, run, "us/task",
                        tasks=lifecycles)
        self.log(f"ceiling {mode} run {run}: {rate:,.0f} per s")

    def case_ceiling(self):
        for run in range(1, self.runs + 1):
            for per_call in (1, CONCURRENCY):
                self.ceiling_run(run, drain=False, per_call=per_call)
                self.ceiling_run(run, drain=True, per_call=per_call)

    # ----------------------------------------------------------------
    # Case 7: the admission check of the limiter (casynq only; asynq has
    # no client-side limiter to compare with)

    def case_limiter(self):
        run_dir = self.new_run_dir("limiter")
        port, client = self.start_redis(run_dir)
        try:
            argv = [self.program("limiter_bench"), "--redis",
                    f"redis://127.0.0.1:{port}/0", "--seconds",
                    str(self.sizes["limiter_seconds"])]
            err_path = os.path.join(run_dir, "limiter_bench.stderr")
            with open(err_path, "w") as err:
                proc = subprocess.run(argv, stdout=subprocess.PIPE,
                                      stderr=err, text=True, check=False,
                                      timeout=600)
        finally:
            self.stop_redis(run_dir, client)
        if proc.returncode != 0:
            raise BenchError(f"limiter_bench exited with {proc.returncode}; "
                             f"read {err_path}")
        self.limiter_output = proc.stdout.strip()
        self.log("limiter: " + str(len(self.limiter_output.splitlines())) +
                 " scenarios")


# --------------------------------------------------------------------
# Machine description


def command_output(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True,
                              check=False, timeout=30)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


def read_field(path, key):
    try:
        with open(path) as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return "unknown"


def machine_info(repo):
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    commit = command_output(["git", "-C", repo, "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", repo, "diff", "--quiet", "HEAD",
                            "--"], capture_output=True,
                           check=False).returncode != 0
    return {
        "nproc": os.cpu_count(),
        "memory": read_field("/proc/meminfo", "MemTotal"),
        "cpu": read_field("/proc/cpuinfo", "model name"),
        "kernel": platform.release(),
        "redis": command_output(["redis-server", "--version"]),
        "go": command_output(["go", "version"]),
        "cc": command_output(["cc", "--version"]),
        "python": platform.python_version(),
        "commit": commit + (" with uncommitted changes" if dirty else ""),
        "loadavg_start": load,
    }


# --------------------------------------------------------------------
# Report


def values(samples, case, side, metric):
    return [s["value"] for s in samples
            if s["case"] == case and s["side"] == side
            and s["metric"] == metric]


def fmt(value, digits):
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def summary(vals, digits):
    """Formats the median and the min-max range of vals."""
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(vals), digits)}–" \
           f"{fmt(max(vals), digits)})"


def ratio(samples, case, metric):
    a = values(samples, case, "casynq", metric)
    b = values(samples, case, "go", metric)
    if not a or not b or statistics.median(b) == 0:
        return "n/a"
    value = statistics.median(a) / statistics.median(b)
    # Two significant digits keep a small ratio from showing as 0.00.
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def side_table(samples, case, rows):
    """Returns a Markdown table of casynq and Go figures for one case.

    rows contains (metric, label, digits) tuples.
    """
    lines = ["| Figure | casynq | Go asynq | casynq/Go |",
             "| --- | ---: | ---: | ---: |"]
    for metric, label, digits in rows:
        a = values(samples, case, "casynq", metric)
        b = values(samples, case, "go", metric)
        if not a and not b:
            continue
        lines.append(f"| {label} | {summary(a, digits)} | "
                     f"{summary(b, digits)} | "
                     f"{ratio(samples, case, metric)} |")
    return "\n".join(lines)


DRAIN_ROWS = (
    ("tasks_per_s", "Tasks/s", 0),
    ("seconds", "Drain time, s", 2),
    ("redis_cpu_us_per_task", "Redis CPU per task, µs", 1),
    ("worker_cpu_us_per_task", "Worker CPU per task, µs", 1),
    ("worker_peak_rss_mib", "Worker peak RSS (VmHWM), MiB", 1),
    ("shutdown_s", "Shutdown after SIGTERM, s", 2),
    ("handled", "Tasks handled (processed counter)", 0),
    ("retry_set", "Tasks left in the retry set", 0),
    ("archived", "Tasks archived", 0),
)


def ceiling_fraction_table(samples):
    modes = ("lifecycle", "drain", f"lifecycle{CONCURRENCY}",
             f"drain{CONCURRENCY}")
    medians = []
    for mode in modes:
        vals = values(samples, f"ceiling_{mode}", "redis", "tasks_per_s")
        if not vals:
            return ""
        medians.append(statistics.median(vals))
    lines = ["| Drain | Side | Median tasks/s | Of lifecycle ceiling | "
             "Of dequeue+done ceiling | Of lifecycle ceiling, "
             f"{CONCURRENCY} per call | Of dequeue+done ceiling, "
             f"{CONCURRENCY} per call |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    cases = [("drain", "1. one queue"), ("weighted", "2. weighted, 10 % fail")]
    cases += [(f"scale{n}", f"5. {n} process{'es' if n > 1 else ''}")
              for n in SCALE_PROCESSES]
    for case, label in cases:
        for side in SIDES:
            vals = values(samples, case, side, "tasks_per_s")
            if not vals:
                continue
            med = statistics.median(vals)
            shares = " | ".join(f"{med / ceiling:.0%}" for ceiling in medians)
            lines.append(f"| {label} | {SIDE_NAMES[side]} | {fmt(med, 0)} | "
                         f"{shares} |")
    return "\n".join(lines)


def scale_table(samples):
    lines = ["| Processes | casynq total tasks/s | casynq per process | "
             "Go asynq total tasks/s | Go asynq per process | casynq/Go |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in SCALE_PROCESSES:
        case = f"scale{n}"
        a = values(samples, case, "casynq", "tasks_per_s")
        b = values(samples, case, "go", "tasks_per_s")
        if not a and not b:
            continue
        lines.append(f"| {n} | {summary(a, 0)} | "
                     f"{summary([v / n for v in a], 0)} | {summary(b, 0)} | "
                     f"{summary([v / n for v in b], 0)} | "
                     f"{ratio(samples, case, 'tasks_per_s')} |")
    return "\n".join(lines)


def write_report(path, raw, raw_csv, raw_json):
    """Writes the Markdown report for the raw results of a whole run.

    raw_csv and raw_json are the paths of the raw files the report names.
    """
    s = raw["samples"]
    sizes = raw["sizes"]
    info = raw["machine"]
    failures = raw.get("failures", [])
    mode = "quick" if raw.get("quick", sizes == QUICK) else "full"
    wall_s = raw.get("wall_s")
    wall = f", {wall_s / 60:.1f} min in all" if wall_s else ""
    out = []
    out.append("# casynq and Go asynq v0.26.0: benchmark report\n")
    out.append(f"Generated {info['date']} by `{raw['command']}` "
               f"({mode} mode, {raw['runs']} "
               f"run{'s' if raw['runs'] != 1 else ''} per side and "
               f"figure{wall}).\n")
    out.append("Each figure is the median over the runs, with the minimum "
               "and maximum in brackets. casynq/Go is the ratio of the "
               "medians: above 1 means casynq has the larger value, which "
               "is better for rates and worse for CPU, memory and "
               "latency.\n")
    if failures:
        out.append("**Failed runs** (their figures are missing):\n")
        out += [f"- {f}" for f in failures]
        out.append("")

    out.append("## Machine\n")
    out.append("| Item | Value |\n| --- | --- |")
    for key, label in (("cpu", "CPU"), ("nproc", "Cores (nproc)"),
                       ("memory", "Memory (MemTotal)"),
                       ("kernel", "Linux kernel"), ("redis", "Redis"),
                       ("go", "Go"), ("cc", "C compiler"),
                       ("python", "Python (harness)"),
                       ("commit", "casynq commit"),
                       ("loadavg_start", "Load average at start"),
                       ("loadavg_end", "Load average at end")):
        out.append(f"| {label} | {info[key]} |")
    out.append("")
    out.append("casynq is a release build (`meson setup build-bench "
               "--buildtype=release -Dtests=false`, GCC -O3), and "
               "casynq-worker and the C benchmark programs link its shared "
               "libcasynq. The Go "
               "programs are built with `go build` against "
               "github.com/hibiken/asynq v0.26.0 (bench/go/go.mod).\n")

    out.append("## Method\n")
    out.append(
        f"- Every run starts its own redis-server "
        f"(scripts/redis-throwaway.sh: 127.0.0.1, free port, no "
        f"persistence) and sends FLUSHALL before use. Within each figure "
        f"the runs alternate casynq, Go asynq, casynq, Go asynq, and so "
        f"on.\n"
        f"- Drains (cases 1, 2, 5): load_tasks stores the tasks with "
        f"pipelined EVALSHA of runtime/lua/enqueue.lua before any server "
        f"starts ({PAYLOAD_SIZE}-byte JSON payloads; loading is not "
        f"timed). The clock starts when the server processes are spawned "
        f"and stops when a poll every {POLL_S * 1000:.0f} ms finds no "
        f"pending or active task, so process start-up is inside the "
        f"figure. Redis CPU is INFO cpu (user + sys) before the spawn and "
        f"at the drain; worker CPU is utime + stime from /proc/PID/stat "
        f"and peak RSS is VmHWM from /proc/PID/status, both read at the "
        f"drain, before SIGTERM.\n"
        f"- casynq runs `casynq-worker --demo-handlers --concurrency "
        f"{CONCURRENCY}`; Go runs bench/go/server (asynq.Server, "
        f"Concurrency {CONCURRENCY}, the same queues and weights, default "
        f"retry delay). Both handle demo:noop by returning success and "
        f"demo:fail by decoding the JSON payload and failing with its "
        f"error text.\n"
        f"- Enqueue (case 3): each client has one connection (casynq: one "
        f"casynq_client per thread; Go: one asynq.Client per goroutine "
        f"with PoolSize 1) and enqueues {PAYLOAD_SIZE}-byte tasks with "
        f"the default options after one untimed warm-up task.\n"
        f"- Latency (case 4): after the server's first heartbeat and "
        f"{IDLE_SETTLE_S:.0f} s of idling, bench/enqueue_bench (the "
        f"casynq client, for both sides) enqueues "
        f"{sizes['latency_rate']:,} tasks/s for "
        f"{sizes['latency_seconds']} s, each payload carrying its enqueue "
        f"time in unix ns. The handler records now minus that time when "
        f"it starts. Percentiles are nearest-rank over all tasks of a "
        f"run.\n"
        f"- Ceiling (case 6): bench/ceiling pipelines EVALSHA of "
        f"enqueue.lua, dequeue.lua (maximum 1) and done.lua in batches "
        f"of 100 tasks on one connection. The lifecycle ceiling times all "
        f"three calls; the dequeue+done ceiling stores the tasks first, "
        f"untimed, and times the other two, which is the work left in a "
        f"drain. The ceilings with {CONCURRENCY} per call take "
        f"{CONCURRENCY} tasks per dequeue call and finish them with one "
        f"done_batch.lua call, as a casynq server with {CONCURRENCY} idle "
        f"workers does.\n")

    out.append("## 1. Drain, one queue\n")
    out.append(f"{sizes['drain_tasks']:,} demo:noop tasks in queue "
               f"default, one server with concurrency {CONCURRENCY}.\n")
    out.append(side_table(s, "drain", DRAIN_ROWS[:6]) + "\n")

    out.append("## 2. Drain, weighted queues with 10 % failures\n")
    out.append(f"{sizes['drain_tasks']:,} tasks spread evenly over "
               f"critical=6, default=3, low=1; every {FAIL_EVERY}th task is "
               f"demo:fail with max retry 1 and stays in the retry set. A "
               f"run is drained when no queue has pending or active tasks. "
               f"A failed task becomes due for its retry 15 to 44 s after "
               f"the failure (asynq's default delay for the first retry), "
               f"so in a drain longer than 15 s a few retries may run and "
               f"be archived; the handled and archived rows show it.\n")
    out.append(side_table(s, "weighted", DRAIN_ROWS) + "\n")

    out.append("## 3. Enqueue throughput\n")
    lines = ["| Clients | casynq tasks/s | Go asynq tasks/s | casynq/Go |",
             "| ---: | ---: | ---: | ---: |"]
    for clients, per in ((1, sizes["enqueue_tasks_one"]),
                         (ENQUEUE_CLIENTS, sizes["enqueue_tasks_each"])):
        case = f"enqueue{clients}"
        lines.append(
            f"| {clients} × {per:,} tasks | "
            f"{summary(values(s, case, 'casynq', 'tasks_per_s'), 0)} | "
            f"{summary(values(s, case, 'go', 'tasks_per_s'), 0)} | "
            f"{ratio(s, case, 'tasks_per_s')} |")
    out.append("\n".join(lines) + "\n")

    out.append("## 4. Pickup latency\n")
    out.append(f"{sizes['latency_rate']:,} tasks/s for "
               f"{sizes['latency_seconds']} s into an idle server with "
               f"concurrency {CONCURRENCY}; milliseconds from the enqueue "
               f"call to the handler's start.\n")
    out.append(side_table(s, "latency", (
        ("p50_ms", "p50, ms", 2), ("p99_ms", "p99, ms", 2),
        ("p999_ms", "p99.9, ms", 2), ("max_ms", "max, ms", 2),
        ("producer_max_lag_ms", "Producer's worst lag behind schedule, ms",
         2))) + "\n")

    out.append("## 5. Scale-out\n")
    out.append(f"{sizes['scale_tasks']:,} demo:noop tasks in one queue, "
               f"drained by 1, 2 and 4 server processes with concurrency "
               f"{CONCURRENCY} each on the same Redis. Per process is the "
               f"total divided by the number of processes.\n")
    out.append(scale_table(s) + "\n")

    out.append("## 6. Ceiling\n")
    lines = ["| Figure | Redis alone |", "| --- | ---: |"]
    lines.append("| Lifecycles/s (enqueue + dequeue + done) | " + summary(
        values(s, "ceiling_lifecycle", "redis", "tasks_per_s"), 0) + " |")
    lines.append("| Dequeue + done per s (tasks stored first) | " + summary(
        values(s, "ceiling_drain", "redis", "tasks_per_s"), 0) + " |")
    lines.append(f"| Lifecycles/s, {CONCURRENCY} tasks per dequeue and done "
                 f"call | " + summary(values(
                     s, f"ceiling_lifecycle{CONCURRENCY}", "redis",
                     "tasks_per_s"), 0) + " |")
    lines.append(f"| Dequeue + done per s, {CONCURRENCY} tasks per call | " +
                 summary(values(s, f"ceiling_drain{CONCURRENCY}", "redis",
                                "tasks_per_s"), 0) + " |")
    lines.append("| Redis CPU per lifecycle, µs | " + summary(
        values(s, "ceiling_lifecycle", "redis", "redis_cpu_us_per_task"),
        1) + " |")
    lines.append(f"| Redis CPU per lifecycle, {CONCURRENCY} per call, µs | " +
                 summary(values(s, f"ceiling_lifecycle{CONCURRENCY}", "redis",
                                "redis_cpu_us_per_task"), 1) + " |")
    out.append("\n".join(lines) + "\n")
    out.append(f"Lifecycles per run: {sizes['ceiling_lifecycles']:,}. "
               f"Each server's drain rate as a fraction of the ceilings "
               f"(medians):\n")
    out.append(ceiling_fraction_table(s) + "\n")
    out.append("A fraction above 100 % is possible against the one-per-call "
               "ceilings: casynq's dequeue asks for as many tasks as it has "
               "idle workers in one script call, while those ceilings (like "
               "Go asynq) move one task per call, and a drain does no "
               "enqueue work.\n")

    out.append("## 7. Limiter cost per enqueue check\n")
    if raw.get("limiter_output"):
        out.append(f"bench/limiter_bench runs casynq_limiter_check() in a "
                   f"loop for {sizes.get('limiter_seconds', '?')} s per "
                   f"scenario, against the memory backend and against the "
                   f"Redis backend on a throwaway redis-server. Go asynq "
                   f"has no client-side limiter, so there is no Go "
                   f"column.\n")
        out.append("```\n" + raw["limiter_output"] + "\n```\n")
    else:
        out.append("Not run.\n")
    out.append("## Caveats\n")
    out.append(
        "- The machine has "
        f"{info['nproc']} cores shared by Redis, the server under test, "
        "the poller and anything else running; the load averages above "
        "show how busy it was. Spread between runs is the noise to expect "
        "on it.\n"
        "- casynq-worker logs one warn line per failed attempt (to a "
        "file here), while asynq v0.26.0 logs a failure only when the "
        "retries are exhausted, so in case 2 casynq writes about one log "
        "line per failing task and Go asynq none.\n"
        "- The latency producer is casynq's client for both sides, so "
        "only the server differs. Go asynq v0.26.0 waits a random 0.5 to "
        "1.5 s after every fetch that finds all queues empty "
        "(processor.go, task check interval 1 s), and at this rate that "
        "wait dominates its pickup latency. An idle casynq server waits "
        "in BLMOVE on the pending list instead, so a task starts as soon "
        "as it is enqueued.\n"
        "- The single-client enqueue figure waits for one round trip per "
        "task, so any delay in scheduling the client or Redis on the 2 "
        "cores shows in full. Between runs of this suite on the machine it "
        "was written on, it varied by up to a factor of four for both "
        "clients, so compare the ranges, not only the medians.\n"
        "- Raw numbers of every run: "
        f"`{os.path.basename(raw_csv)}` and "
        f"`{os.path.basename(raw_json)}` next to this report.\n")
    with open(path, "w") as f:
        f.write("\n".join(out))


def write_raw(raw, raw_csv, raw_json):
    with open(raw_json, "w") as f:
        json.dump(raw, f, indent=1)
    fields = ["case", "side", "run", "metric", "value", "unit", "processes",
              "clients", "tasks"]
    with open(raw_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for sample in raw["samples"]:
            writer.writerow(sample)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo",
                        help="casynq source tree (for scripts/ and "
                             "runtime/lua)")
    parser.add_argument("--build",
                        help="casynq build directory with "
                             "tools/casynq-worker")
    parser.add_argument("--bin",
                        help="directory with the benchmark programs")
    parser.add_argument("--out", required=True, help="Markdown report path")
    parser.add_argument("--quick", action="store_true",
                        help="2 runs per side and smaller sizes")
    parser.add_argument("--runs", type=int, default=0,
                        help="runs per side and figure (default 5, quick 2)")
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated subset of " + ",".join(CASES))
    parser.add_argument("--command", default="bench/run.sh",
                        help="command line to quote in the report")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run directories with the logs")
    parser.add_argument("--from-raw", metavar="RAW_JSON",
                        help="run nothing: write the report for the raw "
                             "JSON of an earlier run")
    args = parser.parse_args()

    if not args.from_raw and not (args.repo and args.build and args.bin):
        parser.error("--repo, --build and --bin are required unless "
                     "--from-raw is given")
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}: pick from "
                     f"{', '.join(CASES)}")
    args.case_list = cases
    return args


def run_cases(bench, cases):
    """Runs the cases in order and returns the messages of failed ones."""
    failures = []
    for case in cases:
        bench.log(f"case {case}")
        try:
            getattr(bench, f"case_{case}")()
        except (BenchError, RedisError, OSError, ValueError,
                subprocess.TimeoutExpired) as exc:
            failures.append(f"case {case}: {exc}")
            bench.log(f"case {case} failed: {exc}")
    return failures


def report_from_raw(args):
    """Writes the report for an earlier run's raw JSON, which stays as it
    is."""
    raw_json = os.path.abspath(args.from_raw)
    with open(raw_json) as f:
        raw = json.load(f)
    raw_csv = raw_json.removesuffix(".json") + ".csv"
    write_report(args.out, raw, raw_csv, raw_json)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 0


def interrupt(signum, frame):
    """Turns SIGTERM into KeyboardInterrupt, so that both clean up."""
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    args = parse_args()
    if args.from_raw:
        return report_from_raw(args)
    signal.signal(signal.SIGTERM, interrupt)

    bench = Bench(args)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    stem = os.path.splitext(os.path.abspath(args.out))[0]
    raw_csv = stem + "-raw.csv"
    raw_json = stem + "-raw.json"
    info = machine_info(bench.repo)
    info["date"] = datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC")

    bench.log(f"run directories in {bench.work}")
    try:
        failures = run_cases(bench, args.case_list)
    except KeyboardInterrupt:
        bench.log(f"interrupted; the run directories stay in {bench.work}")
        return 130
    finally:
        bench.stop_all_redis()

    with open("/proc/loadavg") as f:
        info["loadavg_end"] = " ".join(f.read().split()[:3])
    raw = {"machine": info, "command": args.command, "quick": args.quick,
           "sizes": bench.sizes, "runs": bench.runs, "failures": failures,
           "wall_s": time.monotonic() - bench.started,
           "samples": bench.samples,
           "limiter_output": getattr(bench, "limiter_output", "")}
    write_raw(raw, raw_csv, raw_json)
    write_report(args.out, raw, raw_csv, raw_json)
    bench.log(f"wrote {args.out}, {raw_csv} and {raw_json}")

    if failures or args.keep:
        bench.log(f"kept the run directories in {bench.work}")
    else:
        shutil.rmtree(bench.work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
