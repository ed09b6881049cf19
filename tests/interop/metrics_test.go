package interop

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// metricsPlan is one task of TestWorkerMetricsMatchInspector with the
// counters its single attempt must add.
type metricsPlan struct {
	typ       string
	payload   string
	queue     string
	opts      []asynq.Option
	succeeded bool
	retried   bool
	archived  bool
	deadline  bool
}

func metricsWorkload() []metricsPlan {
	var plan []metricsPlan
	for _, q := range []string{"critical", "default", "low"} {
		for i := 0; i < 2; i++ {
			plan = append(plan, metricsPlan{typ: "demo:noop",
				payload: fmt.Sprintf(`{"n":%d}`, i), queue: q,
				succeeded: true})
		}
	}
	for i := 0; i < 2; i++ {
		plan = append(plan, metricsPlan{typ: "demo:echo",
			payload: fmt.Sprintf(`{"echo":%d}`, i), queue: "default",
			opts:      []asynq.Option{asynq.Retention(time.Hour)},
			succeeded: true})
	}
	for _, q := range []string{"critical", "low"} {
		plan = append(plan, metricsPlan{typ: "demo:fail",
			payload: `{"error":"bad input"}`, queue: q,
			opts: []asynq.Option{asynq.MaxRetry(0)}, archived: true})
	}
	plan = append(plan, metricsPlan{typ: "demo:fail",
		payload: `{"error":"permanent","skip_retry":true}`,
		queue:   "default", opts: []asynq.Option{asynq.MaxRetry(5)},
		archived: true})
	for _, q := range []string{"default", "low"} {
		plan = append(plan, metricsPlan{typ: "demo:fail",
			payload: `{"error":"temporary"}`, queue: q,
			opts: []asynq.Option{asynq.MaxRetry(3)}, retried: true})
	}
	// demo:sleep wakes up when its context is cancelled at the 1 s
	// timeout, so its handler returns and its run time is recorded.
	plan = append(plan, metricsPlan{typ: "demo:sleep",
		payload: `{"ms":20000}`, queue: "critical",
		opts: []asynq.Option{asynq.Timeout(time.Second),
			asynq.MaxRetry(0)},
		archived: true, deadline: true})
	return plan
}

// freeLoopbackPort returns a TCP port that was free on 127.0.0.1 a moment
// ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("cannot find a free port on 127.0.0.1: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// scrape fetches url and returns the value of every sample, keyed by the
// series as written ("name{label=\"value\",...}").
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s failed: %v", url, err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body of GET %s failed: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s returned %s: %s", url, resp.Status, body)
	}

	samples := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.LastIndexByte(line, ' ')
		if cut < 0 {
			t.Fatalf("metrics line %q has no value", line)
		}
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q has an invalid value: %v", line,
				err)
		}
		samples[line[:cut]] = v
	}
	return samples
}

func series(name string, labels ...string) string {
	var parts []string
	for i := 0; i+1 < len(labels); i += 2 {
		parts = append(parts, fmt.Sprintf("%s=%q", labels[i],
			labels[i+1]))
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

// requireSample fails the test unless samples holds key with value want.
func requireSample(t *testing.T, samples map[string]float64, key string,
	want float64) {
	t.Helper()
	got, ok := samples[key]
	if !ok {
		t.Errorf("metric %s is missing, expected %v", key, want)
		return
	}
	if got != want {
		t.Errorf("metric %s is %v, expected %v", key, got, want)
	}
}

// TestWorkerMetricsMatchInspector: casynq-worker processes a known mix of
// successes, failures and a timeout with its metrics endpoint on. Its
// casynq_ counters must equal the outcome of every task, and once it
// stopped taking tasks, its asynq_ queue gauges must equal what asynq's
// Inspector reports for the same Redis state.
func TestWorkerMetricsMatchInspector(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	// A one-hour forwarder interval keeps the retry set still while the
	// gauges are compared; the queue statistics refresh every 200 ms.
	config := filepath.Join(t.TempDir(), "worker.json")
	if err := os.WriteFile(config, []byte(`{"metrics_interval_ms": 200,
		"delayed_task_check_interval_ms": 3600000}`), 0o600); err != nil {
		t.Fatalf("cannot write %s: %v", config, err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	url := "http://" + addr + "/metrics"

	plan := metricsWorkload()
	processed := map[string]int{}
	for _, p := range plan {
		opts := append([]asynq.Option{asynq.Queue(p.queue)}, p.opts...)
		enqueueGo(t, client, asynq.NewTask(p.typ, []byte(p.payload)),
			opts...)
		processed[p.queue]++
	}

	w := startWorker(t, "--concurrency", "4", "--queues", queuesFlag,
		"--metrics-addr", addr, "--config", config)

	waitUntil(t, stateWait, "one attempt of every task", func() (bool,
		string) {
		w.requireRunning()
		var states []string
		done := true
		for q := range allQueues {
			info := queueInfo(t, in, q)
			states = append(states, describeQueue(info))
			if info.Pending != 0 || info.Active != 0 ||
				info.ProcessedTotal < processed[q] {
				done = false
			}
		}
		sort.Strings(states)
		return done, fmt.Sprint(states)
	})
	// The sleeping handler returns once its cancellation wakes it, a
	// moment after its task was archived.
	sleepCount := series("casynq_task_duration_seconds_count", "type",
		"demo:sleep")
	waitUntil(t, stateWait, "the demo:sleep handler returns", func() (bool,
		string) {
		v := scrape(t, url)[sleepCount]
		return v == 1, fmt.Sprintf("%s = %v", sleepCount, v)
	})

	checkTaskCounters(t, scrape(t, url), plan)

	// Stop taking tasks, then add tasks that stay where they are: pending
	// tasks in a paused queue, a scheduled one and an aggregating one.
	if err := w.cmd.Process.Signal(syscall.SIGTSTP); err != nil {
		t.Fatalf("cannot send SIGTSTP to casynq-worker: %v", err)
	}
	// SIGTSTP takes effect on the loop thread; asynq's heartbeat then
	// shows the status "stopped".
	waitUntil(t, stateWait, "casynq-worker reports status stopped",
		func() (bool, string) {
			servers, err := in.Servers()
			if err != nil {
				return false, err.Error()
			}
			for _, s := range servers {
				if s.PID == w.pid() && s.Status == "stopped" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%d servers, none stopped",
				len(servers))
		})
	if err := in.PauseQueue("low"); err != nil {
		t.Fatalf("Inspector.PauseQueue(low) failed: %v", err)
	}
	for i := 0; i < 3; i++ {
		enqueueGo(t, client, asynq.NewTask("demo:noop",
			[]byte(fmt.Sprintf(`{"late":%d}`, i))), asynq.Queue("low"))
	}
	enqueueGo(t, client, asynq.NewTask("demo:noop", []byte(`{"s":1}`)),
		asynq.Queue("default"), asynq.ProcessIn(time.Hour))
	enqueueGo(t, client, asynq.NewTask("demo:noop", []byte(`{"g":1}`)),
		asynq.Queue("critical"), asynq.Group("batch"))

	// Wait for a refresh that began after the last change.
	changed := float64(time.Now().UnixMilli()) / 1000
	stamp := "casynq_queue_stats_last_success_timestamp_seconds"
	waitUntil(t, stateWait, "a queue statistics refresh after the "+
		"last enqueue", func() (bool, string) {
		v := scrape(t, url)[stamp]
		return v > changed, fmt.Sprintf("%s = %.3f, waiting for > %.3f",
			stamp, v, changed)
	})
	samples := scrape(t, url)
	for q := range allQueues {
		checkQueueGauges(t, samples, queueInfo(t, in, q))
	}
	w.stop()
}

// checkTaskCounters compares the casynq_ counters with the outcome of
// every task of plan.
func checkTaskCounters(t *testing.T, samples map[string]float64,
	plan []metricsPlan) {
	t.Helper()
	type key struct{ queue, typ string }
	want := map[key]map[string]float64{}
	perType := map[string]float64{}
	perQueue := map[string]float64{}
	for _, p := range plan {
		k := key{p.queue, p.typ}
		if want[k] == nil {
			want[k] = map[string]float64{}
		}
		m := want[k]
		m["casynq_tasks_started_total"]++
		if p.succeeded {
			m["casynq_tasks_succeeded_total"]++
		} else {
			m["casynq_tasks_failed_total"]++
		}
		if p.retried {
			m["casynq_tasks_retried_total"]++
		}
		if p.archived {
			m["casynq_tasks_archived_total"]++
		}
		if p.deadline {
			m["casynq_tasks_deadline_exceeded_total"]++
		}
		perType[p.typ]++
		perQueue[p.queue]++
	}
	names := []string{"casynq_tasks_started_total",
		"casynq_tasks_succeeded_total", "casynq_tasks_failed_total",
		"casynq_tasks_retried_total", "casynq_tasks_archived_total",
		"casynq_tasks_revoked_total",
		"casynq_tasks_deadline_exceeded_total",
		"casynq_tasks_recovered_total"}
	for k, m := range want {
		for _, name := range names {
			requireSample(t, samples, series(name, "queue", k.queue,
				"type", k.typ), m[name])
		}
	}
	for typ, n := range perType {
		requireSample(t, samples, series("casynq_task_duration_seconds_count",
			"type", typ), n)
	}
	for q, n := range perQueue {
		// asynq's client writes pending_since, so every wait is known.
		requireSample(t, samples, series("casynq_queue_wait_seconds_count",
			"queue", q), n)
		requireSample(t, samples, series("casynq_queue_wait_unknown_total",
			"queue", q), 0)
	}
	requireSample(t, samples, "casynq_task_type_overflow_total", 0)
	requireSample(t, samples, "casynq_workers_active", 0)
	requireSample(t, samples, "casynq_workers_idle", 4)
}

// checkQueueGauges compares the asynq_ metrics of one queue with the
// Inspector's statistics of the same moment.
func checkQueueGauges(t *testing.T, samples map[string]float64,
	info *asynq.QueueInfo) {
	t.Helper()
	q := info.Queue
	t.Logf("comparing the metrics with the Inspector's %s, size %d, "+
		"memory %d bytes, paused %v, latency %v", describeQueue(info),
		info.Size, info.MemoryUsage, info.Paused, info.Latency)
	states := map[string]int{"active": info.Active, "pending": info.Pending,
		"scheduled": info.Scheduled, "retry": info.Retry,
		"archived": info.Archived, "completed": info.Completed}
	for state, n := range states {
		requireSample(t, samples, series("asynq_tasks_enqueued_total",
			"queue", q, "state", state), float64(n))
	}
	requireSample(t, samples, series("asynq_queue_size", "queue", q),
		float64(info.Size))
	requireSample(t, samples, series("asynq_queue_memory_usage_approx_bytes",
		"queue", q), float64(info.MemoryUsage))
	requireSample(t, samples, series("asynq_tasks_processed_total",
		"queue", q), float64(info.ProcessedTotal))
	requireSample(t, samples, series("asynq_tasks_failed_total", "queue",
		q), float64(info.FailedTotal))
	paused := 0.0
	if info.Paused {
		paused = 1
	}
	requireSample(t, samples, series("asynq_queue_paused_total", "queue",
		q), paused)

	// The endpoint computed the latency when it read the queue, before
	// the Inspector did, from the same pending_since field.
	key := series("asynq_queue_latency_seconds", "queue", q)
	got, ok := samples[key]
	inspector := info.Latency.Seconds()
	switch {
	case !ok:
		t.Errorf("metric %s is missing", key)
	case info.Pending == 0 && got != 0:
		t.Errorf("%s is %v for a queue with no pending task", key, got)
	case info.Pending > 0 && (got <= 0 || got > inspector+1e-3 ||
		math.IsNaN(got)):
		t.Errorf("%s is %v, expected above 0 and at most the "+
			"Inspector's later reading %v", key, got, inspector)
	}
}
