#!/usr/bin/env python3
"""casynq-worker's metrics endpoint, run as a user would: the scrape passes
`promtool check metrics`, the counters follow known tasks, and bad requests
(a huge header, a client that stalls, an unknown path, other methods) get an
error response or a closed connection while the worker keeps processing
tasks.

Needs CASYNQ_WORKER and CASYNQ_CLI (set by meson), redis-server and
promtool (Debian packages redis-server and prometheus).
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest

import metrics_support as ms

# Problems that `promtool check metrics` reports for asynq's own metric
# names, which the endpoint keeps as asynq's x/metrics exporter has them.
ASYNQ_NAME_LINTS = {
    'asynq_queue_paused_total non-counter metrics should not have "_total" '
    'suffix',
    'asynq_tasks_enqueued_total non-counter metrics should not have '
    '"_total" suffix',
}

NOOP = 'casynq_tasks_succeeded_total{queue="default",type="demo:noop"}'


class MetricsEndpointTest(ms.Fixture):

    def test_scrape_passes_promtool(self):
        promtool = ms.tool("promtool", "prometheus")
        started_key = ('casynq_tasks_started_total{queue="default",'
                       'type="demo:fail"}')
        archived_key = ('asynq_tasks_enqueued_total{queue="default",'
                        'state="archived"}')
        started = self.worker.metrics().get(started_key, 0)
        ms.enqueue(self.redis, "--type", "demo:fail", "--max-retry", "0")

        def failed_task_seen():
            samples = self.worker.metrics()
            return (samples.get(started_key, 0) > started and
                    samples.get(archived_key, 0) > 0)

        ms.wait_until("the failing task is processed and the queue "
                      "statistics are read", failed_task_seen)

        status, headers, body = ms.http_request(self.worker.port, "GET",
                                                "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("content-type"),
                         "text/plain; version=0.0.4; charset=utf-8")

        check = subprocess.run([promtool, "check", "metrics"], input=body,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=60)
        output = check.stdout.decode("utf-8")
        problems = set(line for line in output.splitlines() if line)
        # Exit status 3 means lint problems only; 1 is a parse error.
        self.assertIn(check.returncode, (0, 3), output)
        self.assertEqual(problems - ASYNQ_NAME_LINTS, set(),
                         "promtool reported problems other than asynq's "
                         "names")

        text = body.decode("utf-8")
        for family in ("asynq_tasks_enqueued_total", "asynq_queue_size",
                       "asynq_queue_latency_seconds",
                       "asynq_queue_memory_usage_approx_bytes",
                       "asynq_tasks_processed_total",
                       "asynq_tasks_failed_total",
                       "asynq_queue_paused_total",
                       "casynq_task_duration_seconds",
                       "casynq_queue_wait_seconds",
                       "casynq_worker_utilization_ratio",
                       "process_cpu_seconds_total",
                       "process_resident_memory_bytes",
                       "process_open_fds"):
            self.assertIn("# TYPE %s " % family, text)

    def test_dashboard_covers_every_metric(self):
        with open(os.path.join(ms.SOURCE_ROOT, "monitoring",
                               "grafana-dashboard.json"),
                  encoding="utf-8") as f:
            dashboard = json.load(f)
        exprs = " ".join(target["expr"] for panel in dashboard["panels"]
                         for target in panel.get("targets", []))
        status, _, body = ms.http_request(self.worker.port, "GET",
                                          "/metrics")
        self.assertEqual(status, 200)
        families = re.findall(r"(?m)^# TYPE (\S+) ", body.decode("utf-8"))
        self.assertGreater(len(families), 20)
        for family in families:
            self.assertRegex(exprs, r"\b%s(_bucket)?\b" % family,
                             "no dashboard panel shows %s" % family)

    def test_counters_follow_known_tasks(self):
        before = self.worker.metrics()
        ms.enqueue(self.redis, "--type", "demo:noop", "--queue", "default",
                   "--count", "5")
        ms.enqueue(self.redis, "--type", "demo:fail", "--max-retry", "0",
                   "--count", "2")
        ms.enqueue(self.redis, "--type", "demo:sleep", "--payload",
                   '{"ms":20000}', "--timeout", "1", "--max-retry", "0")

        def delta(key):
            return self.worker.metrics().get(key, 0) - before.get(key, 0)

        sleep_count = 'casynq_task_duration_seconds_count{type="demo:sleep"}'
        ms.wait_until("the demo:sleep handler returns after its timeout",
                      lambda: delta(sleep_count) == 1)
        ms.wait_until("five demo:noop successes",
                      lambda: delta(NOOP) == 5)
        after = self.worker.metrics()
        for key, want in [
                (NOOP, 5),
                ('casynq_tasks_failed_total{queue="default",'
                 'type="demo:fail"}', 2),
                ('casynq_tasks_archived_total{queue="default",'
                 'type="demo:fail"}', 2),
                ('casynq_tasks_deadline_exceeded_total{queue="default",'
                 'type="demo:sleep"}', 1),
                ('casynq_tasks_archived_total{queue="default",'
                 'type="demo:sleep"}', 1),
                ('casynq_tasks_started_total{queue="default",'
                 'type="demo:sleep"}', 1)]:
            self.assertEqual(after.get(key, 0) - before.get(key, 0), want,
                             key)

    def test_head_answers_without_body(self):
        status, headers, body = ms.http_request(self.worker.port, "HEAD",
                                                "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertGreater(int(headers.get("content-length", "0")), 0)

    def test_healthz_reports_ok(self):
        status, _, body = ms.http_request(self.worker.port, "GET",
                                          "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"ok\n")

    def test_unknown_path_is_not_found(self):
        for path in ("/", "/metricsx", "/metrics/", "/../etc/passwd"):
            status, _, _ = ms.http_request(self.worker.port, "GET", path)
            self.assertEqual(status, 404, path)

    def test_other_methods_not_allowed(self):
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, headers, _ = ms.http_request(
                self.worker.port, method, "/metrics", body=b"x=1")
            self.assertEqual(status, 405, method)
            self.assertEqual(headers.get("allow"), "GET, HEAD", method)

    def test_huge_header_rejected(self):
        header = b"X-Padding: " + b"a" * 65536 + b"\r\n"
        try:
            status, _, _ = ms.http_request(self.worker.port, "GET",
                                           "/metrics", extra_headers=header)
        except (BrokenPipeError, ConnectionResetError):
            status = 0
        # An error status, or a connection closed without a response.
        self.assertIn(status, (0, 400, 413, 431))
        self.assert_still_processing()

    def test_garbage_request_line_rejected(self):
        with socket.create_connection(("127.0.0.1", self.worker.port),
                                      timeout=30) as s:
            s.sendall(b"\x00\xff not http at all\r\n\r\n")
            status, _, _ = ms.read_response(s)
        self.assertIn(status, (0, 400))
        self.assert_still_processing()

    def test_stalled_client_is_bounded(self):
        stalled = socket.create_connection(("127.0.0.1", self.worker.port),
                                           timeout=ms.WAIT_S)
        try:
            stalled.sendall(b"GET /metr")
            # Scrapes and tasks go on while the stalled request is open.
            self.assert_still_processing()
            start = time.monotonic()
            try:
                leftover = stalled.recv(65536)
            except ConnectionResetError:
                leftover = b""
            except socket.timeout:
                self.fail("the endpoint kept a stalled connection open "
                          "for %.0f s" % (time.monotonic() - start))
            # Closed without a response, or an error response.
            self.assertTrue(leftover == b"" or
                            leftover.startswith(b"HTTP/1.1 4"), leftover)
        finally:
            stalled.close()

    def test_address_in_use_fails_start(self):
        argv = [ms.binary("CASYNQ_WORKER"), "--redis", self.redis.url,
                "--demo-handlers", "--metrics-addr", self.worker.addr]
        result = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, timeout=60)
        output = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("cannot listen for metrics on %s" % self.worker.addr,
                      output)
        self.assertIn("Address already in use", output)
        self.assert_still_processing()

    def assert_still_processing(self):
        """Enqueue three tasks and wait until the worker succeeded with
        them, scraping the endpoint meanwhile."""
        before = self.worker.metrics().get(NOOP, 0)
        ms.enqueue(self.redis, "--type", "demo:noop", "--count", "3")
        ms.wait_until("three more demo:noop successes",
                      lambda: self.worker.metrics().get(NOOP, 0) >=
                      before + 3)
        self.assertTrue(self.worker.running())


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    print("%d passed, %d failed" % (
        result.testsRun - len(result.failures) - len(result.errors),
        len(result.failures) + len(result.errors)))
    sys.exit(0 if result.wasSuccessful() else 1)
