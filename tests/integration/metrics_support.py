"""Shared fixtures of the metrics endpoint tests: a throwaway redis-server,
a casynq-worker with --metrics-addr, the casynq tool, and an HTTP client
built on raw sockets so that the tests can also send malformed requests.

Every server listens on 127.0.0.1 on a port that was free a moment before.
Every wait polls with a bound, which only stops a hang; no check depends on
how long something took. Binaries come from environment variables that
meson sets; a missing binary fails the test with the variable to set.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

# Bound of every poll; a limit on a hang, not a timing check.
WAIT_S = 60.0
POLL_S = 0.1
SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REDIS_SCRIPT = os.path.join(SOURCE_ROOT, "scripts", "redis-throwaway.sh")


def binary(variable):
    """Return the executable named by environment variable `variable`."""
    path = os.environ.get(variable, "")
    if not path or not os.access(path, os.X_OK):
        raise AssertionError(
            "%s is %r, not an executable: run this test with 'meson test "
            "-C BUILDDIR', which sets it" % (variable, path))
    return path


def tool(name, package):
    """Return the path of tool `name` on PATH, failing the test with the
    Debian package that provides it when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            "%s not found on PATH: install the Debian package %s "
            "(./scripts/setup.sh does)" % (name, package))
    return path


def free_port():
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, condition):
    """Call condition() until it returns a true value, and return it. Fail
    with `what` after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError("timed out after %.0f s waiting until %s (last "
                         "result: %r)" % (WAIT_S, what, last))


class Redis:
    """A redis-server started by scripts/redis-throwaway.sh."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="casynq-metrics-redis-")
        out = subprocess.run([REDIS_SCRIPT, "start", self.dir],
                             stdout=subprocess.PIPE, check=True,
                             timeout=60)
        self.port = int(out.stdout.decode().strip())
        self.url = "redis://127.0.0.1:%d/0" % self.port

    def stop(self):
        subprocess.run([REDIS_SCRIPT, "stop", self.dir], check=False,
                       timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


class Worker:
    """casynq-worker with the demo handlers and a metrics endpoint."""

    def __init__(self, redis, extra=()):
        self.port = free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.log = tempfile.NamedTemporaryFile(
            prefix="casynq-metrics-worker-", suffix=".log", delete=False)
        argv = [binary("CASYNQ_WORKER"), "--redis", redis.url,
                "--demo-handlers", "--concurrency", "2",
                "--metrics-addr", self.addr] + list(extra)
        env = dict(os.environ)
        env.pop("CASYNQ_REDIS_URL", None)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log,
                                     env=env)
        wait_until("casynq-worker answers /healthz with 200",
                   self._healthy)

    def _healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("casynq-worker exited with %d:\n%s" %
                                 (self.proc.returncode, self.output()))
        try:
            return http_request(self.port, "GET", "/healthz")[0] == 200
        except OSError:
            return False

    def output(self):
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def running(self):
        return self.proc.poll() is None

    def stop(self):
        """Send SIGTERM and return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)
        return self.proc.returncode

    def metrics(self):
        """Scrape /metrics and return the samples keyed by series."""
        status, _, body = http_request(self.port, "GET", "/metrics")
        if status != 200:
            raise AssertionError("GET /metrics returned %d: %r" %
                                 (status, body[:200]))
        return parse_samples(body.decode("utf-8"))


def parse_samples(text):
    """Return {series: value} for the sample lines of a scrape."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        samples[key] = float(value)
    return samples


def enqueue(redis, *args):
    """Run `casynq enqueue` against redis with args."""
    argv = [binary("CASYNQ_CLI"), "enqueue", "--redis", redis.url] + \
        list(args)
    result = subprocess.run(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
    if result.returncode != 0:
        raise AssertionError("%s failed with %d: %s" % (
            " ".join(argv), result.returncode,
            result.stderr.decode("utf-8", "replace")))


STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ")


def read_response(sock):
    """Read until the server closes the connection or a complete response
    with Content-Length arrived. Return (status, headers, body), status 0
    when the server closed the connection without a response."""
    data = b""
    while True:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1")
            match = re.search(r"(?im)^content-length:\s*(\d+)", head)
            if match and len(data) - head_end - 4 >= int(match.group(1)):
                break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    match = STATUS_LINE.match(data)
    if not match:
        return 0, {}, data
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


def http_request(port, method, path, extra_headers=b"", body=b""):
    """Send one HTTP/1.1 request and return (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        request = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Connection: close\r\n" % (method, path)).encode()
        if body:
            request += b"Content-Length: %d\r\n" % len(body)
        s.sendall(request + extra_headers + b"\r\n" + body)
        return read_response(s)


class Fixture(unittest.TestCase):
    """Starts one redis-server and one worker for a test class."""

    worker_args = ()

    @classmethod
    def setUpClass(cls):
        cls.redis = Redis()
        try:
            cls.worker = Worker(cls.redis, cls.worker_args)
        except BaseException:
            cls.redis.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        status = cls.worker.stop()
        cls.redis.stop()
        if status != 0:
            raise AssertionError("casynq-worker exited with %d after "
                                 "SIGTERM, expected 0" % status)

