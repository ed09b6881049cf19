package interop

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// sharedTaskCount is the number of tasks that a Go server and
// casynq-worker share in TestSharedQueuesGoAndWorker.
const sharedTaskCount = 2000

// sharedWait bounds the wait for both servers to drain the shared queues.
// It is a limit on a hang, not a timing check.
const sharedWait = 60 * time.Second

// idCounter counts how often a handler ran for each task ID.
type idCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *idCounter) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[id]++
}

// snapshot returns a copy of the counts.
func (c *idCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for id, n := range c.counts {
		out[id] = n
	}
	return out
}

// TestSharedQueuesGoAndWorker: an asynq server and casynq-worker consume
// the same queues at once, and every task runs exactly once in total.
//
// Only the Go handler can record IDs, so the check for both servers uses
// the counters. Each completed attempt adds 1 to a queue's processed
// counter, and a task leaves Redis only after an attempt. A processed
// total equal to the number of tasks, with no task left anywhere, thus
// means that each task ran exactly once.
func TestSharedQueuesGoAndWorker(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	queues := []string{"critical", "default", "low"}
	enqueued := map[string]bool{}
	for i := 0; i < sharedTaskCount; i++ {
		info := enqueueGo(t, client,
			asynq.NewTask("demo:noop", []byte(fmt.Sprintf(`{"n":%d}`, i))),
			asynq.Queue(queues[i%len(queues)]))
		enqueued[info.ID] = true
	}

	goSeen := &idCounter{counts: map[string]int{}}
	mux := asynq.NewServeMux()
	mux.HandleFunc("demo:noop", func(ctx context.Context,
		task *asynq.Task) error {
		id, ok := asynq.GetTaskID(ctx)
		if !ok {
			return fmt.Errorf("the handler context has no task ID")
		}
		goSeen.add(id)
		return nil
	})
	stopGo := startGoServer(t, 4, mux)
	w := startWorker(t, "--concurrency", "4", "--queues", queuesFlag)

	waitUntil(t, sharedWait, "processing of every shared task",
		func() (bool, string) {
			w.requireRunning()
			total, left := 0, 0
			for _, q := range queues {
				info := queueInfo(t, in, q)
				total += info.ProcessedTotal
				left += info.Pending + info.Active + info.Retry
			}
			return total >= sharedTaskCount && left == 0, fmt.Sprintf(
				"processed %d, pending+active+retry %d", total, left)
		})

	// Both servers write their state every 5 s while they run.
	waitUntil(t, stateWait, "both servers listed", func() (bool, string) {
		servers, err := in.Servers()
		if err != nil {
			t.Fatalf("Inspector.Servers failed: %v", err)
		}
		return len(servers) == 2, fmt.Sprintf("%d servers", len(servers))
	})

	stopGo()
	w.stop()

	total := 0
	for _, q := range queues {
		info := queueInfo(t, in, q)
		total += info.ProcessedTotal
		if info.FailedTotal != 0 {
			t.Errorf("queue %s: failed total %d, expected 0", q,
				info.FailedTotal)
		}
		if info.Size != 0 {
			t.Errorf("queue %s still holds tasks: %s", q,
				describeQueue(info))
		}
		keys, err := rdb.Keys(context.Background(),
			"asynq:{"+q+"}:t:*").Result()
		if err != nil {
			t.Fatalf("KEYS asynq:{%s}:t:* failed: %v", q, err)
		}
		if len(keys) != 0 {
			sort.Strings(keys)
			t.Errorf("queue %s: %d task hashes remain, such as %s", q,
				len(keys), keys[0])
		}
	}
	if total != sharedTaskCount {
		t.Errorf("processed totals add up to %d, expected %d", total,
			sharedTaskCount)
	}

	counts := goSeen.snapshot()
	for id, n := range counts {
		if !enqueued[id] {
			t.Errorf("the Go handler ran task %s, which was never "+
				"enqueued", id)
		}
		if n != 1 {
			t.Errorf("the Go handler ran task %s %d times", id, n)
		}
	}
	goShare := len(counts)
	casynqShare := total - goShare
	if casynqShare < 0 {
		t.Errorf("the Go handler ran %d tasks, more than the %d the "+
			"counters recorded", goShare, total)
	}
	t.Logf("the Go server ran %d tasks and casynq-worker %d of %d",
		goShare, casynqShare, sharedTaskCount)
}

// TestGoServerRunsWorkerRetry: casynq-worker fails a task once, and an
// asynq server then runs the retry that casynq wrote, with the retry
// count, max retry, payload and headers intact.
func TestGoServerRunsWorkerRetry(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	payload := []byte(`{"error":"first attempt fails"}`)
	headers := map[string]string{"trace-id": "retry-7", "tenant": "ünï"}
	task := enqueueGo(t, client,
		asynq.NewTaskWithHeaders("demo:fail", payload, headers),
		asynq.Queue("critical"), asynq.MaxRetry(2))

	w := startWorker(t, "--concurrency", "1", "--queues", queuesFlag)
	waitUntil(t, stateWait, "the first failure", func() (bool, string) {
		w.requireRunning()
		info := taskInfo(t, in, "critical", task.ID)
		return info.State == asynq.TaskStateRetry, fmt.Sprintf(
			"state %v, retried %d", info.State, info.Retried)
	})
	w.stop()

	info := taskInfo(t, in, "critical", task.ID)
	if info.Retried != 1 {
		t.Errorf("retried %d after one failure, expected 1", info.Retried)
	}
	if info.LastErr != "first attempt fails" {
		t.Errorf("last error %q, expected \"first attempt fails\"",
			info.LastErr)
	}
	if !sameHeaders(info.Headers, headers) {
		t.Errorf("headers in retry %v, expected %v", info.Headers, headers)
	}

	// The retry delay is at least 15 s, so the task is made due now.
	if err := in.RunTask("critical", task.ID); err != nil {
		t.Fatalf("Inspector.RunTask(\"critical\", %q) failed: %v", task.ID,
			err)
	}

	s := runOnGoServer(t, "demo:fail")
	checkRetriedRun(t, s, task.ID, "critical", payload, headers, 2)
	checkDoneAfterRetry(t, rdb, in, "critical", task.ID)
}

// TestGoServerRunsRecoveredTask: casynq-worker is killed while it runs a
// task, a second casynq-worker's recoverer moves the orphaned task to
// retry, and an asynq server then runs that retry.
//
// The recoverer takes only tasks whose lease (30 s, extended every 5 s)
// ran out more than 30 s ago, so this test waits about a minute.
func TestGoServerRunsRecoveredTask(t *testing.T) {
	if testing.Short() {
		t.Skip("waits about a minute for a lease to expire")
	}
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	payload := []byte(`{"ms":600000}`)
	headers := map[string]string{"trace-id": "orphan-3", "tenant": "acme"}
	task := enqueueGo(t, client,
		asynq.NewTaskWithHeaders("demo:sleep", payload, headers),
		asynq.Queue("low"), asynq.MaxRetry(4))

	first := startWorker(t, "--concurrency", "1", "--queues", queuesFlag)
	waitUntil(t, stateWait, "dequeue of the task", func() (bool, string) {
		first.requireRunning()
		info := taskInfo(t, in, "low", task.ID)
		return info.State == asynq.TaskStateActive, info.State.String()
	})
	first.kill()

	// Wait until the lease is older than the recoverer's 30 s cutoff, with
	// 1 s to spare for the recoverer's clock.
	ctx := context.Background()
	leaseKey := "asynq:{low}:lease"
	waitUntil(t, 2*time.Minute, "expiry of the killed worker's lease",
		func() (bool, string) {
			score, err := rdb.ZScore(ctx, leaseKey, task.ID).Result()
			if err != nil {
				t.Fatalf("ZSCORE %s %s failed: %v", leaseKey, task.ID,
					err)
			}
			cutoff := time.Now().Add(-31 * time.Second).Unix()
			return int64(score) < cutoff, fmt.Sprintf(
				"lease score %d, recoverer cutoff %d", int64(score),
				cutoff)
		})

	second := startWorker(t, "--concurrency", "1", "--queues", queuesFlag)
	waitUntil(t, stateWait, "recovery of the task", func() (bool, string) {
		second.requireRunning()
		info := taskInfo(t, in, "low", task.ID)
		return info.State == asynq.TaskStateRetry, info.State.String()
	})
	second.stop()

	info := taskInfo(t, in, "low", task.ID)
	if info.Retried != 1 {
		t.Errorf("retried %d after recovery, expected 1", info.Retried)
	}
	if info.LastErr != "asynq: task lease expired" {
		t.Errorf("last error after recovery %q, expected \"asynq: task "+
			"lease expired\"", info.LastErr)
	}
	if !sameHeaders(info.Headers, headers) {
		t.Errorf("headers in retry %v, expected %v", info.Headers, headers)
	}

	if err := in.RunTask("low", task.ID); err != nil {
		t.Fatalf("Inspector.RunTask(\"low\", %q) failed: %v", task.ID,
			err)
	}
	s := runOnGoServer(t, "demo:sleep")
	checkRetriedRun(t, s, task.ID, "low", payload, headers, 4)
	checkDoneAfterRetry(t, rdb, in, "low", task.ID)
}

// runOnGoServer starts an asynq server with a handler for typ that
// succeeds, waits until it has run one task, shuts the server down and
// returns what the handler saw.
func runOnGoServer(t *testing.T, typ string) seenTask {
	t.Helper()
	seen := make(chan seenTask, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc(typ, func(ctx context.Context, task *asynq.Task) error {
		var s seenTask
		s.typ = task.Type()
		s.payload = append([]byte(nil), task.Payload()...)
		s.headers = map[string]string{}
		for k, v := range task.Headers() {
			s.headers[k] = v
		}
		s.id, s.idOK = asynq.GetTaskID(ctx)
		s.maxRetry, s.maxOK = asynq.GetMaxRetry(ctx)
		s.queue, s.queueOK = asynq.GetQueueName(ctx)
		s.retryCount, s.retryOK = asynq.GetRetryCount(ctx)
		select {
		case seen <- s:
		default:
		}
		return nil
	})
	stopGo := startGoServer(t, 1, mux)
	defer stopGo()

	select {
	case s := <-seen:
		return s
	case <-time.After(stateWait):
		t.Fatalf("the asynq server did not run the %s task within %v",
			typ, stateWait)
	}
	return seenTask{}
}

// checkRetriedRun checks what the Go handler saw of a task that failed
// once before.
func checkRetriedRun(t *testing.T, s seenTask, id, queue string,
	payload []byte, headers map[string]string, maxRetry int) {
	t.Helper()
	if !s.idOK || s.id != id {
		t.Errorf("GetTaskID returned %q, %v; expected %q", s.id, s.idOK,
			id)
	}
	if !s.retryOK || s.retryCount != 1 {
		t.Errorf("GetRetryCount returned %d, %v; expected 1", s.retryCount,
			s.retryOK)
	}
	if !s.maxOK || s.maxRetry != maxRetry {
		t.Errorf("GetMaxRetry returned %d, %v; expected %d", s.maxRetry,
			s.maxOK, maxRetry)
	}
	if !s.queueOK || s.queue != queue {
		t.Errorf("GetQueueName returned %q, %v; expected %q", s.queue,
			s.queueOK, queue)
	}
	if !bytes.Equal(s.payload, payload) {
		t.Errorf("payload %q, expected %q", s.payload, payload)
	}
	if !sameHeaders(s.headers, headers) {
		t.Errorf("headers %v, expected %v", s.headers, headers)
	}
}

// checkDoneAfterRetry checks that a task which failed once and then
// succeeded on an asynq server is gone and that both attempts are
// counted. asynq's Shutdown waits for the handler and its done write.
func checkDoneAfterRetry(t *testing.T, rdb *redis.Client,
	in *asynq.Inspector, queue, id string) {
	t.Helper()
	key := taskKey(queue, id)
	n, err := rdb.Exists(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s failed: %v", key, err)
	}
	if n != 0 {
		t.Errorf("task hash %s still exists after success", key)
	}
	qi := queueInfo(t, in, queue)
	if qi.ProcessedTotal != 2 {
		t.Errorf("queue %s: processed total %d, expected 2", queue,
			qi.ProcessedTotal)
	}
	if qi.FailedTotal != 1 {
		t.Errorf("queue %s: failed total %d, expected 1", queue,
			qi.FailedTotal)
	}
	if qi.Size != 0 {
		t.Errorf("queue %s still holds tasks: %s", queue,
			describeQueue(qi))
	}
}
