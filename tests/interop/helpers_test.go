package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Exit statuses of the casynq tool.
const (
	exitOK         = 0
	exitError      = 1
	exitUsage      = 2
	exitDuplicate  = 3
	exitIDConflict = 4
)

// cliTimeout bounds one run of the casynq tool so that a hang fails the
// test instead of stalling the suite.
const cliTimeout = 30 * time.Second

// uuidV4 matches a lowercase random (version 4) UUID, the ID format of
// asynq's client.
var uuidV4 = regexp.MustCompile(
	`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func redisURL() string {
	return "redis://" + redisAddr + "/0"
}

func redisClientOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: redisAddr}
}

// newRedis returns a go-redis client for direct reads, closed at cleanup.
func newRedis(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// flushAll empties the test's redis-server.
func flushAll(t *testing.T, rdb *redis.Client) {
	t.Helper()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("FLUSHALL on %s failed: %v", redisAddr, err)
	}
}

// newAsynqClient returns a fresh asynq client. asynq's client remembers
// which queues it has added to asynq:queues, so a client must not outlive
// a FLUSHALL.
func newAsynqClient(t *testing.T) *asynq.Client {
	t.Helper()
	c := asynq.NewClient(redisClientOpt())
	t.Cleanup(func() { c.Close() })
	return c
}

func newInspector(t *testing.T) *asynq.Inspector {
	t.Helper()
	in := asynq.NewInspector(redisClientOpt())
	t.Cleanup(func() { in.Close() })
	return in
}

// cliResult is the outcome of one casynq run.
type cliResult struct {
	stdout string
	stderr string
	code   int
}

// runCasynq runs the casynq tool with args and returns its output and
// exit status. It fails the test when the tool cannot be started.
func runCasynq(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCasynqEnv(t, nil, args...)
}

// runCasynqEnv is runCasynq with extra NAME=VALUE environment entries.
// CASYNQ_REDIS_URL from the caller's environment is never passed on.
func runCasynqEnv(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, casynqBin, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CASYNQ_REDIS_URL=") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		res.code = 0
	case errors.As(err, &exitErr) && exitErr.Exited():
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("casynq %s did not run to completion: %v (stderr: %s)",
			strings.Join(args, " "), err, res.stderr)
	}
	return res
}

// cliTask is one line of `casynq enqueue --json`.
type cliTask struct {
	ID                 string  `json:"id"`
	Queue              string  `json:"queue"`
	Type               string  `json:"type"`
	State              string  `json:"state"`
	MaxRetry           int     `json:"max_retry"`
	TimeoutS           int64   `json:"timeout_s"`
	DeadlineUnixS      int64   `json:"deadline_unix_s"`
	NextProcessAtUnixS int64   `json:"next_process_at_unix_s"`
	RetentionS         int64   `json:"retention_s"`
	Group              *string `json:"group"`
}

// enqueueCLI runs `casynq enqueue --json` against the test's redis with
// args and returns the tasks it printed. It fails the test unless the
// tool exits with 0.
func enqueueCLI(t *testing.T, args ...string) []cliTask {
	t.Helper()
	full := append([]string{"enqueue", "--redis", redisURL(), "--json"},
		args...)
	res := runCasynq(t, full...)
	if res.code != exitOK {
		t.Fatalf("casynq %s exited with %d, expected 0; stderr: %s",
			strings.Join(full, " "), res.code, res.stderr)
	}
	var tasks []cliTask
	sc := bufio.NewScanner(strings.NewReader(res.stdout))
	for sc.Scan() {
		var task cliTask
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&task); err != nil {
			t.Fatalf("casynq printed a line that is not the expected "+
				"JSON object: %q: %v", sc.Text(), err)
		}
		tasks = append(tasks, task)
	}
	return tasks
}

// enqueueCLIOne is enqueueCLI for a command that enqueues one task.
func enqueueCLIOne(t *testing.T, args ...string) cliTask {
	t.Helper()
	tasks := enqueueCLI(t, args...)
	if len(tasks) != 1 {
		t.Fatalf("casynq enqueue printed %d tasks, expected 1", len(tasks))
	}
	return tasks[0]
}

// taskKey is the Redis key of a task hash.
func taskKey(queue, id string) string {
	return "asynq:{" + queue + "}:t:" + id
}

// requireQueueListed checks that asynq:queues contains queue.
func requireQueueListed(t *testing.T, rdb *redis.Client, queue string) {
	t.Helper()
	ok, err := rdb.SIsMember(context.Background(), "asynq:queues",
		queue).Result()
	if err != nil {
		t.Fatalf("SISMEMBER asynq:queues %s failed: %v", queue, err)
	}
	if !ok {
		t.Errorf("asynq:queues does not contain queue %q", queue)
	}
}

// sameHeaders treats a nil and an empty header map as equal, because
// asynq's decoder returns either for a message without headers.
func sameHeaders(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// timesClose reports whether a and b are both zero, or within tolerance.
func timesClose(a, b time.Time, tolerance time.Duration) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() && b.IsZero()
	}
	d := a.Sub(b)
	return d <= tolerance && d >= -tolerance
}

// compareTaskInfo checks every field that an enqueue sets, comparing the
// task asynq's client wrote (want) with the one casynq wrote (got).
func compareTaskInfo(t *testing.T, want, got *asynq.TaskInfo) {
	t.Helper()
	if got.Type != want.Type {
		t.Errorf("type: casynq %q, asynq %q", got.Type, want.Type)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("payload: casynq %x, asynq %x", got.Payload, want.Payload)
	}
	if !sameHeaders(got.Headers, want.Headers) {
		t.Errorf("headers: casynq %v, asynq %v", got.Headers, want.Headers)
	}
	if got.Queue != want.Queue {
		t.Errorf("queue: casynq %q, asynq %q", got.Queue, want.Queue)
	}
	if got.MaxRetry != want.MaxRetry {
		t.Errorf("max retry: casynq %d, asynq %d", got.MaxRetry,
			want.MaxRetry)
	}
	if got.Retried != want.Retried {
		t.Errorf("retried: casynq %d, asynq %d", got.Retried, want.Retried)
	}
	if got.Timeout != want.Timeout {
		t.Errorf("timeout: casynq %v, asynq %v", got.Timeout, want.Timeout)
	}
	if !got.Deadline.Equal(want.Deadline) {
		t.Errorf("deadline: casynq %v, asynq %v", got.Deadline,
			want.Deadline)
	}
	if got.State != want.State {
		t.Errorf("state: casynq %v, asynq %v", got.State, want.State)
	}
	if !timesClose(got.NextProcessAt, want.NextProcessAt, time.Second) {
		t.Errorf("next process time: casynq %v, asynq %v (allowed "+
			"difference 1 s)", got.NextProcessAt, want.NextProcessAt)
	}
	if got.Retention != want.Retention {
		t.Errorf("retention: casynq %v, asynq %v", got.Retention,
			want.Retention)
	}
	if got.Group != want.Group {
		t.Errorf("group: casynq %q, asynq %q", got.Group, want.Group)
	}
	if got.LastErr != want.LastErr {
		t.Errorf("last error: casynq %q, asynq %q", got.LastErr,
			want.LastErr)
	}
	if !got.LastFailedAt.Equal(want.LastFailedAt) {
		t.Errorf("last failed at: casynq %v, asynq %v", got.LastFailedAt,
			want.LastFailedAt)
	}
	if !got.CompletedAt.Equal(want.CompletedAt) {
		t.Errorf("completed at: casynq %v, asynq %v", got.CompletedAt,
			want.CompletedAt)
	}
}

// compareCLIOutput checks casynq's JSON line against what the Inspector
// read back for the same task.
func compareCLIOutput(t *testing.T, out cliTask, info *asynq.TaskInfo) {
	t.Helper()
	if out.ID != info.ID {
		t.Errorf("JSON id %q, Inspector %q", out.ID, info.ID)
	}
	if out.Queue != info.Queue {
		t.Errorf("JSON queue %q, Inspector %q", out.Queue, info.Queue)
	}
	if out.Type != info.Type {
		t.Errorf("JSON type %q, Inspector %q", out.Type, info.Type)
	}
	if out.State != info.State.String() {
		t.Errorf("JSON state %q, Inspector %q", out.State, info.State)
	}
	if out.MaxRetry != info.MaxRetry {
		t.Errorf("JSON max_retry %d, Inspector %d", out.MaxRetry,
			info.MaxRetry)
	}
	if time.Duration(out.TimeoutS)*time.Second != info.Timeout {
		t.Errorf("JSON timeout_s %d, Inspector %v", out.TimeoutS,
			info.Timeout)
	}
	if !unixOrZero(out.DeadlineUnixS).Equal(info.Deadline) {
		t.Errorf("JSON deadline_unix_s %d, Inspector %v",
			out.DeadlineUnixS, info.Deadline)
	}
	// The Inspector reports "now" as the next process time of a pending
	// task, so allow 1 s between the enqueue and the read.
	if !timesClose(unixOrZero(out.NextProcessAtUnixS), info.NextProcessAt,
		time.Second) {
		t.Errorf("JSON next_process_at_unix_s %d, Inspector %v",
			out.NextProcessAtUnixS, info.NextProcessAt)
	}
	if time.Duration(out.RetentionS)*time.Second != info.Retention {
		t.Errorf("JSON retention_s %d, Inspector %v", out.RetentionS,
			info.Retention)
	}
	group := ""
	if out.Group != nil {
		group = *out.Group
		if group == "" {
			t.Errorf("JSON group is \"\", expected null for no group")
		}
	}
	if group != info.Group {
		t.Errorf("JSON group %q, Inspector %q", group, info.Group)
	}
}

func unixOrZero(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

// snapshotRedis returns every key of the database with its DUMP
// serialization and TTL, to show that a rejected enqueue changed nothing.
func snapshotRedis(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("KEYS * failed: %v", err)
	}
	sort.Strings(keys)
	snap := make(map[string]string, len(keys))
	for _, k := range keys {
		dump, err := rdb.Dump(ctx, k).Result()
		if err != nil {
			t.Fatalf("DUMP %s failed: %v", k, err)
		}
		ttl, err := rdb.TTL(ctx, k).Result()
		if err != nil {
			t.Fatalf("TTL %s failed: %v", k, err)
		}
		// A key with a TTL loses up to a second between two snapshots,
		// so record only whether it has one.
		snap[k] = dump + "|ttl=" + map[bool]string{true: "yes",
			false: "no"}[ttl > 0]
	}
	return snap
}

// requireSameSnapshot fails when two snapshots differ, naming the keys.
func requireSameSnapshot(t *testing.T, what string, before,
	after map[string]string) {
	t.Helper()
	for k, v := range before {
		w, ok := after[k]
		if !ok {
			t.Errorf("%s: key %s was removed", what, k)
		} else if w != v {
			t.Errorf("%s: key %s changed", what, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: key %s was added", what, k)
		}
	}
}
