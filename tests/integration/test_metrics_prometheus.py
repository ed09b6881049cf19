#!/usr/bin/env python3
"""A real Prometheus server scrapes casynq-worker's metrics endpoint, and a
query through Prometheus's HTTP API returns the counters the worker shows.

The test starts Debian's prometheus on a free 127.0.0.1 port with a
configuration and a TSDB directory of its own in a temporary directory,
and stops it afterwards. Needs CASYNQ_WORKER and CASYNQ_CLI (set by
meson), redis-server and prometheus (Debian packages redis-server and
prometheus).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse
import urllib.request

import metrics_support as ms

MONITORING = os.path.join(ms.SOURCE_ROOT, "monitoring")
RULES = os.path.join(MONITORING, "casynq-alerts.yml")
SUCCEEDED = ('casynq_tasks_succeeded_total{queue="default",'
             'type="demo:noop"}')


class Prometheus:
    """A prometheus server that scrapes one target every second."""

    def __init__(self, target):
        binary = ms.tool("prometheus", "prometheus")
        self.dir = tempfile.mkdtemp(prefix="casynq-prometheus-")
        self.port = ms.free_port()
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as f:
            f.write("global:\n"
                    "  scrape_interval: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "rule_files:\n"
                    "  - %s\n"
                    "scrape_configs:\n"
                    "  - job_name: casynq\n"
                    "    static_configs:\n"
                    "      - targets: ['%s']\n" % (RULES, target))
        self.log = open(os.path.join(self.dir, "prometheus.log"), "wb")
        self.proc = subprocess.Popen(
            [binary, "--config.file=" + config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port,
             "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def query(self, expr):
        """Run an instant query and return its vector result, or None
        while Prometheus is not ready."""
        if self.proc.poll() is not None:
            raise AssertionError("prometheus exited with %d:\n%s" % (
                self.proc.returncode, self.output()))
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (
            self.port, urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                reply = json.load(resp)
        except OSError:
            return None
        if reply.get("status") != "success":
            raise AssertionError("query %r failed: %r" % (expr, reply))
        return reply["data"]["result"]

    def output(self):
        with open(os.path.join(self.dir, "prometheus.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def single_value(result):
    """Return the value of a one-sample vector result, else None."""
    if not result or len(result) != 1:
        return None
    return float(result[0]["value"][1])


class PrometheusScrapeTest(ms.Fixture):

    def test_query_returns_worker_counter(self):
        prometheus = Prometheus(self.worker.addr)
        try:
            ms.enqueue(self.redis, "--type", "demo:noop", "--count", "7")
            ms.wait_until("the worker succeeded with 7 tasks",
                          lambda: self.worker.metrics().get(SUCCEEDED) ==
                          7)
            up = ms.wait_until(
                "prometheus scraped the worker",
                lambda: single_value(prometheus.query('up{job="casynq"}')))
            self.assertEqual(up, 1.0)
            value = ms.wait_until(
                "prometheus has the counter at 7",
                lambda: single_value(prometheus.query(
                    'casynq_tasks_succeeded_total{job="casynq",'
                    'queue="default",type="demo:noop"} == 7')))
            self.assertEqual(value, 7.0)
            processed = ms.wait_until(
                "prometheus has asynq_tasks_processed_total",
                lambda: prometheus.query(
                    'asynq_tasks_processed_total{job="casynq",'
                    'queue="default"} >= 7'))
            self.assertEqual(len(processed), 1)
            self.check_dashboard_queries(prometheus)
            self.check_rules_loaded(prometheus)
        except AssertionError:
            sys.stderr.write(prometheus.output())
            raise
        finally:
            prometheus.stop()

    def check_dashboard_queries(self, prometheus):
        """Every query of the Grafana dashboard runs on Prometheus, with
        the dashboard's variables set to match everything."""
        with open(os.path.join(MONITORING, "grafana-dashboard.json"),
                  encoding="utf-8") as f:
            dashboard = json.load(f)
        exprs = [target["expr"] for panel in dashboard["panels"]
                 for target in panel.get("targets", [])]
        self.assertGreater(len(exprs), 20)
        for expr in exprs:
            concrete = (expr.replace("$__rate_interval", "1m")
                        .replace("$queue", ".*")
                        .replace("$instance", ".*"))
            # query() fails the test on an error reply.
            result = prometheus.query(concrete)
            self.assertIsNotNone(result, concrete)

    def check_rules_loaded(self, prometheus):
        """The alert rules loaded, and the recording rule has a value."""
        backlog = ms.wait_until(
            "the recording rule queue:casynq_backlog:max has a value",
            lambda: prometheus.query(
                'queue:casynq_backlog:max{queue="default"}'))
        self.assertEqual(single_value(backlog), 0.0)
        url = "http://127.0.0.1:%d/api/v1/rules" % prometheus.port
        with urllib.request.urlopen(url, timeout=10) as resp:
            groups = json.load(resp)["data"]["groups"]
        alerts = [rule["name"] for group in groups
                  for rule in group["rules"] if rule["type"] == "alerting"]
        self.assertIn("CasynqCriticalQueueBacklog", alerts)
        self.assertIn("CasynqHeartbeatStale", alerts)
        for group in groups:
            for rule in group["rules"]:
                self.assertNotEqual(rule.get("health"), "err",
                                    "rule %s: %s" % (rule["name"],
                                                     rule.get("lastError")))


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    print("%d passed, %d failed" % (
        result.testsRun - len(result.failures) - len(result.errors),
        len(result.failures) + len(result.errors)))
    sys.exit(0 if result.wasSuccessful() else 1)
