package interop

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// plannedTask is one task of the mixed workload with the outcome that
// casynq-worker must give it.
type plannedTask struct {
	typ      string
	payload  []byte
	headers  map[string]string
	queue    string
	opts     []asynq.Option
	archived bool   // ends in the archive
	retried  bool   // ends in the retry set
	retained bool   // ends as completed, with its payload as result
	lastErr  string // error text of an archived or retried task
}

// failed reports whether the single attempt of the task fails.
func (p plannedTask) failed() bool {
	return p.archived || p.retried
}

// mixedWorkload returns the tasks of TestWorkerMixedWorkload, spread over
// the three queues of allQueues.
func mixedWorkload() []plannedTask {
	queues := []string{"critical", "default", "low"}
	var plan []plannedTask

	for i := 0; i < 30; i++ {
		plan = append(plan, plannedTask{typ: "demo:noop",
			payload: []byte(fmt.Sprintf(`{"n":%d}`, i)),
			queue:   queues[i%3]})
	}
	for i := 0; i < 5; i++ {
		plan = append(plan, plannedTask{typ: "demo:echo",
			payload: []byte(fmt.Sprintf(`{"echo":%d,"text":"héllo"}`, i)),
			headers: map[string]string{"trace-id": "echo-" +
				strconv.Itoa(i), "tenant": "acme"},
			queue:    queues[i%3],
			opts:     []asynq.Option{asynq.Retention(time.Hour)},
			retained: true})
	}
	for i := 0; i < 3; i++ {
		plan = append(plan, plannedTask{typ: "demo:fail",
			payload:  []byte(`{"error":"bad input"}`),
			queue:    queues[i%3],
			opts:     []asynq.Option{asynq.MaxRetry(0)},
			archived: true, lastErr: "bad input"})
	}
	for _, q := range []string{"critical", "low"} {
		plan = append(plan, plannedTask{typ: "demo:fail",
			payload: []byte(`{"error":"permanent failure",` +
				`"skip_retry":true}`),
			queue:    q,
			opts:     []asynq.Option{asynq.MaxRetry(5)},
			archived: true, lastErr: "permanent failure"})
	}
	for _, q := range []string{"default", "low"} {
		plan = append(plan, plannedTask{typ: "demo:fail",
			payload: []byte(`{"error":"temporary failure"}`),
			queue:   q,
			opts:    []asynq.Option{asynq.MaxRetry(3)},
			retried: true, lastErr: "temporary failure"})
	}
	// demo:spin ignores cancellation, so the task must be archived at its
	// 1 s timeout while the handler keeps spinning.
	plan = append(plan, plannedTask{typ: "demo:spin",
		payload: []byte(`{"ms":2500}`), queue: "default",
		opts: []asynq.Option{asynq.Timeout(time.Second),
			asynq.MaxRetry(0)},
		archived: true, lastErr: "context deadline exceeded"})
	plan = append(plan, plannedTask{typ: "nosuch:type",
		payload: []byte("x"), queue: "low",
		opts:     []asynq.Option{asynq.MaxRetry(0)},
		archived: true,
		lastErr:  `handler not found for task "nosuch:type"`})
	return plan
}

// uniqueTask returns the unique task number n of the mixed workload with
// the options of every enqueue of it.
func uniqueTask(n int) (*asynq.Task, []asynq.Option) {
	task := asynq.NewTask("demo:noop",
		[]byte(fmt.Sprintf(`{"unique":%d}`, n)))
	opts := []asynq.Option{asynq.Queue([]string{"critical",
		"default"}[n%2]), asynq.Unique(time.Hour)}
	return task, opts
}

// TestWorkerMixedWorkload: asynq's client enqueues successes, failures,
// a timeout, an unknown type and unique tasks over three weighted queues,
// casynq-worker processes them, and asynq's Inspector sees the outcome of
// each task and the counters of each queue.
func TestWorkerMixedWorkload(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)
	dayBefore := time.Now().UTC().Format("2006-01-02")

	plan := mixedWorkload()
	byID := map[string]plannedTask{}
	processed := map[string]int{}
	failed := map[string]int{}
	for _, p := range plan {
		opts := append([]asynq.Option{asynq.Queue(p.queue)}, p.opts...)
		var task *asynq.Task
		if p.headers != nil {
			task = asynq.NewTaskWithHeaders(p.typ, p.payload, p.headers)
		} else {
			task = asynq.NewTask(p.typ, p.payload)
		}
		info := enqueueGo(t, client, task, opts...)
		byID[info.ID] = p
		processed[p.queue]++
		if p.failed() {
			failed[p.queue]++
		}
	}

	for n := 0; n < 2; n++ {
		task, opts := uniqueTask(n)
		info := enqueueGo(t, client, task, opts...)
		byID[info.ID] = plannedTask{typ: task.Type(),
			payload: task.Payload(), queue: info.Queue}
		processed[info.Queue]++
		_, err := client.Enqueue(task, opts...)
		if !errors.Is(err, asynq.ErrDuplicateTask) {
			t.Errorf("second enqueue of unique task %d returned %v, "+
				"expected asynq.ErrDuplicateTask", n, err)
		}
	}

	w := startWorker(t, "--concurrency", "4", "--queues", queuesFlag)

	// The retried tasks come back after at least 15 s (asynq's retry
	// delay), so the worker is stopped as soon as every task has had its
	// one attempt.
	waitUntil(t, stateWait, "processing of every task", func() (bool,
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
	w.stop()

	checkQueueCounters(t, in, processed, failed, dayBefore)
	checkArchived(t, in, byID)
	checkRetried(t, in, byID)
	checkCompleted(t, in, byID)

	// Success releases the unique lock, so the same enqueue succeeds now.
	for n := 0; n < 2; n++ {
		task, opts := uniqueTask(n)
		if _, err := client.Enqueue(task, opts...); err != nil {
			t.Errorf("enqueue of unique task %d after its success "+
				"failed: %v; the worker kept its unique lock", n, err)
		}
	}
}

func checkQueueCounters(t *testing.T, in *asynq.Inspector, processed,
	failed map[string]int, dayBefore string) {
	t.Helper()
	// The daily counters start from 0 at midnight UTC, so they are
	// compared only when the whole test ran on one UTC day.
	sameDay := time.Now().UTC().Format("2006-01-02") == dayBefore
	if !sameDay {
		t.Log("the UTC date changed during the test; daily counters " +
			"are not compared")
	}
	for q := range allQueues {
		info := queueInfo(t, in, q)
		if info.ProcessedTotal != processed[q] {
			t.Errorf("queue %s: processed total %d, expected %d", q,
				info.ProcessedTotal, processed[q])
		}
		if info.FailedTotal != failed[q] {
			t.Errorf("queue %s: failed total %d, expected %d", q,
				info.FailedTotal, failed[q])
		}
		if sameDay && info.Processed != processed[q] {
			t.Errorf("queue %s: processed today %d, expected %d", q,
				info.Processed, processed[q])
		}
		if sameDay && info.Failed != failed[q] {
			t.Errorf("queue %s: failed today %d, expected %d", q,
				info.Failed, failed[q])
		}
		if info.Pending != 0 || info.Active != 0 || info.Scheduled != 0 {
			t.Errorf("queue %s has tasks left to run: %s", q,
				describeQueue(info))
		}
	}
}

// checkListed compares the tasks a list call returned for every queue
// with the planned tasks for which want returns true.
func checkListed(t *testing.T, state string, byID map[string]plannedTask,
	want func(plannedTask) bool,
	list func(queue string) ([]*asynq.TaskInfo, error),
	check func(*asynq.TaskInfo, plannedTask)) {
	t.Helper()
	seen := map[string]bool{}
	for q := range allQueues {
		tasks, err := list(q)
		if err != nil {
			t.Fatalf("listing %s tasks of queue %s failed: %v", state, q,
				err)
		}
		for _, info := range tasks {
			p, ok := byID[info.ID]
			if !ok || !want(p) {
				t.Errorf("queue %s: unexpected %s task %s of type %s "+
					"(last error %q)", q, state, info.ID, info.Type,
					info.LastErr)
				continue
			}
			seen[info.ID] = true
			if info.Queue != p.queue {
				t.Errorf("%s task %s is in queue %s, expected %s", state,
					info.ID, info.Queue, p.queue)
			}
			if info.Type != p.typ {
				t.Errorf("%s task %s has type %q, expected %q", state,
					info.ID, info.Type, p.typ)
			}
			if !bytes.Equal(info.Payload, p.payload) {
				t.Errorf("%s task %s has payload %q, expected %q", state,
					info.ID, info.Payload, p.payload)
			}
			check(info, p)
		}
	}
	for id, p := range byID {
		if want(p) && !seen[id] {
			t.Errorf("%s task %s is not %s in queue %s", p.typ, id, state,
				p.queue)
		}
	}
}

func checkArchived(t *testing.T, in *asynq.Inspector,
	byID map[string]plannedTask) {
	t.Helper()
	checkListed(t, "archived", byID,
		func(p plannedTask) bool { return p.archived },
		func(q string) ([]*asynq.TaskInfo, error) {
			return in.ListArchivedTasks(q)
		},
		func(info *asynq.TaskInfo, p plannedTask) {
			if info.LastErr != p.lastErr {
				t.Errorf("archived %s task %s: last error %q, expected %q",
					p.typ, info.ID, info.LastErr, p.lastErr)
			}
			if info.Retried != 0 {
				t.Errorf("archived %s task %s: retried %d, expected 0",
					p.typ, info.ID, info.Retried)
			}
			if info.LastFailedAt.IsZero() {
				t.Errorf("archived %s task %s has no last failure time",
					p.typ, info.ID)
			}
		})
}

func checkRetried(t *testing.T, in *asynq.Inspector,
	byID map[string]plannedTask) {
	t.Helper()
	checkListed(t, "retry", byID,
		func(p plannedTask) bool { return p.retried },
		func(q string) ([]*asynq.TaskInfo, error) {
			return in.ListRetryTasks(q)
		},
		func(info *asynq.TaskInfo, p plannedTask) {
			if info.Retried != 1 {
				t.Errorf("retry task %s: retried %d, expected 1", info.ID,
					info.Retried)
			}
			if info.LastErr != p.lastErr {
				t.Errorf("retry task %s: last error %q, expected %q",
					info.ID, info.LastErr, p.lastErr)
			}
			if info.LastFailedAt.IsZero() {
				t.Errorf("retry task %s has no last failure time",
					info.ID)
			}
			if info.MaxRetry != 3 {
				t.Errorf("retry task %s: max retry %d, expected 3",
					info.ID, info.MaxRetry)
			}
		})
}

func checkCompleted(t *testing.T, in *asynq.Inspector,
	byID map[string]plannedTask) {
	t.Helper()
	checkListed(t, "completed", byID,
		func(p plannedTask) bool { return p.retained },
		func(q string) ([]*asynq.TaskInfo, error) {
			return in.ListCompletedTasks(q)
		},
		func(info *asynq.TaskInfo, p plannedTask) {
			if !bytes.Equal(info.Result, p.payload) {
				t.Errorf("completed task %s: result %q, expected the "+
					"payload %q", info.ID, info.Result, p.payload)
			}
			if !sameHeaders(info.Headers, p.headers) {
				t.Errorf("completed task %s: headers %v, expected %v",
					info.ID, info.Headers, p.headers)
			}
			if info.Retention != time.Hour {
				t.Errorf("completed task %s: retention %v, expected 1h",
					info.ID, info.Retention)
			}
			if info.CompletedAt.IsZero() {
				t.Errorf("completed task %s has no completion time",
					info.ID)
			}
		})
}

// TestWorkerListedByInspector: while casynq-worker runs a long task,
// asynq's Inspector lists the worker with its settings and the task, and
// after SIGTERM the server is gone.
func TestWorkerListedByInspector(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)
	host, err := os.Hostname()
	if err != nil {
		t.Fatalf("os.Hostname failed: %v", err)
	}

	payload := []byte(`{"ms":60000}`)
	task := enqueueGo(t, client, asynq.NewTask("demo:sleep", payload),
		asynq.Queue("low"), asynq.MaxRetry(2))
	// Start times travel as protobuf timestamps, so allow 1 s of rounding
	// around the observed start.
	beforeStart := time.Now().Add(-time.Second)
	w := startWorker(t, "--concurrency", "3", "--queues", queuesFlag,
		"--strict", "--shutdown-timeout", "1")

	var servers []*asynq.ServerInfo
	waitUntil(t, stateWait, "a listed worker running the task",
		func() (bool, string) {
			w.requireRunning()
			servers, err = in.Servers()
			if err != nil {
				t.Fatalf("Inspector.Servers failed: %v", err)
			}
			if len(servers) != 1 {
				return false, fmt.Sprintf("%d servers", len(servers))
			}
			return len(servers[0].ActiveWorkers) == 1, fmt.Sprintf(
				"%d active workers", len(servers[0].ActiveWorkers))
		})
	afterListed := time.Now().Add(time.Second)

	srv := servers[0]
	if srv.Host != host {
		t.Errorf("server host %q, expected %q", srv.Host, host)
	}
	if srv.PID != w.pid() {
		t.Errorf("server PID %d, expected the worker's pid %d", srv.PID,
			w.pid())
	}
	if srv.ID == "" {
		t.Errorf("server ID is empty")
	}
	if srv.Concurrency != 3 {
		t.Errorf("server concurrency %d, expected 3", srv.Concurrency)
	}
	if !maps.Equal(srv.Queues, allQueues) {
		t.Errorf("server queues %v, expected %v", srv.Queues, allQueues)
	}
	if !srv.StrictPriority {
		t.Errorf("server strict priority is false, expected true")
	}
	if srv.Status != "active" {
		t.Errorf("server status %q, expected \"active\"", srv.Status)
	}
	if srv.Started.Before(beforeStart) || srv.Started.After(afterListed) {
		t.Errorf("server start time %v is outside [%v, %v]", srv.Started,
			beforeStart, afterListed)
	}

	active := srv.ActiveWorkers[0]
	if active.TaskID != task.ID {
		t.Errorf("active worker task ID %q, expected %q", active.TaskID,
			task.ID)
	}
	if active.TaskType != "demo:sleep" {
		t.Errorf("active worker task type %q, expected \"demo:sleep\"",
			active.TaskType)
	}
	if !bytes.Equal(active.TaskPayload, payload) {
		t.Errorf("active worker payload %q, expected %q", active.TaskPayload,
			payload)
	}
	if active.Queue != "low" {
		t.Errorf("active worker queue %q, expected \"low\"", active.Queue)
	}
	if active.Started.Before(beforeStart) || active.Started.After(afterListed) {
		t.Errorf("active worker start time %v is outside [%v, %v]",
			active.Started, beforeStart, afterListed)
	}
	// The task has asynq's default timeout of 1800 s and no deadline.
	if d := active.Deadline.Sub(active.Started); d < 1799*time.Second ||
		d > 1801*time.Second {
		t.Errorf("active worker deadline %v is %v after its start, "+
			"expected 1800 s", active.Deadline, d)
	}

	w.stop()
	servers, err = in.Servers()
	if err != nil {
		t.Fatalf("Inspector.Servers after shutdown failed: %v", err)
	}
	if len(servers) != 0 {
		t.Errorf("Inspector.Servers lists %d servers after the worker "+
			"exited, expected none", len(servers))
	}

	// The 60 s handler outlives the 1 s shutdown timeout, so the task
	// goes back to pending without using up a retry.
	info := taskInfo(t, in, "low", task.ID)
	if info.State != asynq.TaskStatePending {
		t.Errorf("task state after shutdown %v, expected pending "+
			"(last error %q)", info.State, info.LastErr)
	}
	if info.Retried != 0 {
		t.Errorf("task retried %d after shutdown, expected 0",
			info.Retried)
	}
}

// TestWorkerCancelFromInspector: Inspector.CancelProcessing stops a
// running demo:sleep task on casynq-worker, and the task goes to retry
// with asynq's cancellation text.
func TestWorkerCancelFromInspector(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	task := enqueueGo(t, client,
		asynq.NewTask("demo:sleep", []byte(`{"ms":60000}`)),
		asynq.Queue("default"), asynq.MaxRetry(3))
	w := startWorker(t, "--concurrency", "2", "--queues", queuesFlag)

	waitUntil(t, stateWait, "dequeue of the task", func() (bool, string) {
		w.requireRunning()
		info := taskInfo(t, in, "default", task.ID)
		return info.State == asynq.TaskStateActive, info.State.String()
	})

	// A cancel request is a Pub/Sub message, which is lost when it comes
	// before the handler starts, so it is sent again until the task
	// leaves the active state.
	polls, cancels := 0, 0
	var info *asynq.TaskInfo
	waitUntil(t, stateWait, "cancellation of the task", func() (bool,
		string) {
		w.requireRunning()
		info = taskInfo(t, in, "default", task.ID)
		if info.State != asynq.TaskStateActive {
			return true, info.State.String()
		}
		if polls%5 == 0 {
			if err := in.CancelProcessing(task.ID); err != nil {
				t.Fatalf("Inspector.CancelProcessing(%q) failed: %v",
					task.ID, err)
			}
			cancels++
		}
		polls++
		return false, info.State.String()
	})
	t.Logf("the task left the active state after %d cancel requests",
		cancels)

	if info.State != asynq.TaskStateRetry {
		t.Errorf("task state after cancellation %v, expected retry",
			info.State)
	}
	if info.LastErr != "context canceled" {
		t.Errorf("last error after cancellation %q, expected "+
			"\"context canceled\"", info.LastErr)
	}
	if info.Retried != 1 {
		t.Errorf("retried %d after cancellation, expected 1",
			info.Retried)
	}
	w.stop()
}
