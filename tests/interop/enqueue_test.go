package interop

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// enqueueCase is one option set, written once for asynq's client and once
// for `casynq enqueue`.
type enqueueCase struct {
	name    string
	typ     string
	payload []byte
	headers map[string]string
	goOpts  []asynq.Option
	cliArgs []string
	// fixedID is the task ID that the options set, or "" for a random
	// UUID.
	fixedID string
}

// enqueueCases returns the option sets, with times relative to now.
func enqueueCases(t *testing.T, now time.Time) []enqueueCase {
	deadline := now.Add(2 * time.Hour).Unix()
	future := now.Add(3 * time.Hour).Unix()
	past := now.Add(-time.Minute).Unix()
	binary := []byte{0x00, 0xff, 0x80, 0x0a, 0x0d, 0x7f, 0xc3, 0x28, 0x00}
	filePayload := []byte("line 1\nline 2\x00\xfe\xff")
	path := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(path, filePayload, 0o600); err != nil {
		t.Fatalf("cannot write payload file %s: %v", path, err)
	}
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	doc := []byte(`{"user_id":42}`)

	return []enqueueCase{
		{name: "defaults", typ: "email:welcome", payload: doc,
			cliArgs: []string{"--payload", string(doc)}},
		{name: "queue", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.Queue("critical")},
			cliArgs: []string{"--payload", string(doc), "--queue", "critical"}},
		{name: "max retry 3", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.MaxRetry(3)},
			cliArgs: []string{"--payload", string(doc), "--max-retry", "3"}},
		{name: "max retry 0", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.MaxRetry(0)},
			cliArgs: []string{"--payload", string(doc), "--max-retry", "0"}},
		{name: "timeout 90", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.Timeout(90 * time.Second)},
			cliArgs: []string{"--payload", string(doc), "--timeout", "90"}},
		{name: "deadline", typ: "email:welcome", payload: doc,
			goOpts: []asynq.Option{asynq.Deadline(time.Unix(deadline, 0))},
			cliArgs: []string{"--payload", string(doc),
				"--deadline", itoa(deadline)}},
		{name: "timeout and deadline", typ: "email:welcome", payload: doc,
			goOpts: []asynq.Option{asynq.Timeout(time.Hour),
				asynq.Deadline(time.Unix(deadline, 0))},
			cliArgs: []string{"--payload", string(doc), "--timeout",
				"3600", "--deadline", itoa(deadline)}},
		{name: "process in 3600", typ: "report:daily", payload: doc,
			goOpts:  []asynq.Option{asynq.ProcessIn(time.Hour)},
			cliArgs: []string{"--payload", string(doc), "--process-in", "3600"}},
		{name: "process at future", typ: "report:daily", payload: doc,
			goOpts: []asynq.Option{asynq.ProcessAt(time.Unix(future, 0))},
			cliArgs: []string{"--payload", string(doc),
				"--process-at", itoa(future)}},
		{name: "process at past", typ: "report:daily", payload: doc,
			goOpts: []asynq.Option{asynq.ProcessAt(time.Unix(past, 0))},
			cliArgs: []string{"--payload", string(doc),
				"--process-at", itoa(past)}},
		{name: "unique 60", typ: "email:unique", payload: doc,
			goOpts:  []asynq.Option{asynq.Unique(time.Minute)},
			cliArgs: []string{"--payload", string(doc), "--unique", "60"}},
		{name: "unique scheduled", typ: "email:unique", payload: doc,
			goOpts: []asynq.Option{asynq.Unique(time.Minute),
				asynq.ProcessIn(time.Hour)},
			cliArgs: []string{"--payload", string(doc), "--unique", "60",
				"--process-in", "3600"}},
		{name: "task id", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.TaskID("order-42")},
			cliArgs: []string{"--payload", string(doc), "--task-id", "order-42"},
			fixedID: "order-42"},
		{name: "retention 3600", typ: "email:welcome", payload: doc,
			goOpts:  []asynq.Option{asynq.Retention(time.Hour)},
			cliArgs: []string{"--payload", string(doc), "--retention", "3600"}},
		{name: "group", typ: "email:digest", payload: doc,
			goOpts:  []asynq.Option{asynq.Group("batch")},
			cliArgs: []string{"--payload", string(doc), "--group", "batch"}},
		{name: "headers", typ: "email:welcome", payload: doc,
			headers: map[string]string{"trace": "abc", "tenant": "ünïcødé",
				"empty": "", "kv": "a=b"},
			cliArgs: []string{"--payload", string(doc),
				"--header", "trace=abc", "--header", "tenant=ünïcødé",
				"--header", "empty=", "--header", "kv=a=b"}},
		{name: "empty payload", typ: "ping", payload: []byte{}},
		{name: "no payload", typ: "ping", payload: nil,
			cliArgs: []string{"--no-payload"}},
		{name: "empty payload unique", typ: "ping", payload: []byte{},
			goOpts:  []asynq.Option{asynq.Unique(time.Minute)},
			cliArgs: []string{"--unique", "60"}},
		{name: "no payload unique", typ: "ping", payload: nil,
			goOpts:  []asynq.Option{asynq.Unique(time.Minute)},
			cliArgs: []string{"--no-payload", "--unique", "60"}},
		{name: "binary payload hex", typ: "blob:store", payload: binary,
			cliArgs: []string{"--payload-hex", hex.EncodeToString(binary)}},
		{name: "binary payload file", typ: "blob:store", payload: filePayload,
			cliArgs: []string{"--payload-file", path}},
		{name: "unicode names", typ: "émail:wëlcome", payload: doc,
			goOpts: []asynq.Option{asynq.Queue("qüeue"),
				asynq.Group("grüppe")},
			cliArgs: []string{"--payload", string(doc), "--queue", "qüeue",
				"--group", "grüppe"}},
		{name: "all options", typ: "invoice:send", payload: binary,
			headers: map[string]string{"trace": "xyz"},
			goOpts: []asynq.Option{asynq.Queue("billing"),
				asynq.MaxRetry(7), asynq.Timeout(2 * time.Minute),
				asynq.Deadline(time.Unix(deadline, 0)),
				asynq.Retention(10 * time.Minute),
				asynq.Unique(5 * time.Minute),
				asynq.TaskID("invoice-7")},
			cliArgs: []string{"--payload-hex", hex.EncodeToString(binary),
				"--header", "trace=xyz", "--queue", "billing",
				"--max-retry", "7", "--timeout", "120",
				"--deadline", itoa(deadline), "--retention", "600",
				"--unique", "300", "--task-id", "invoice-7"},
			fixedID: "invoice-7"},
	}
}

// TestEnqueueMatchesGoClient enqueues each option set with asynq's client
// and with `casynq enqueue`, and checks that asynq's Inspector reads the
// same task back from both.
func TestEnqueueMatchesGoClient(t *testing.T) {
	rdb := newRedis(t)
	inspector := newInspector(t)

	for _, tc := range enqueueCases(t, time.Now()) {
		t.Run(tc.name, func(t *testing.T) {
			// Each side runs on an empty database, because unique and
			// task ID options would make the second enqueue collide.
			flushAll(t, rdb)
			goInfo, goHash := enqueueWithGo(t, rdb, inspector, tc)

			flushAll(t, rdb)
			args := append([]string{"--type", tc.typ}, tc.cliArgs...)
			out := enqueueCLIOne(t, args...)
			cInfo, err := inspector.GetTaskInfo(out.Queue, out.ID)
			if err != nil {
				t.Fatalf("Inspector.GetTaskInfo(%q, %q) for the casynq "+
					"task failed: %v", out.Queue, out.ID, err)
			}
			cHash := readTaskHash(t, rdb, cInfo.Queue, cInfo.ID)
			requireQueueListed(t, rdb, cInfo.Queue)
			checkID(t, "casynq", cInfo.ID, tc.fixedID)

			compareTaskInfo(t, goInfo, cInfo)
			compareCLIOutput(t, out, cInfo)
			compareTaskHashes(t, goHash, cHash)
		})
	}
}

// enqueueWithGo enqueues tc with asynq's client and returns the task as
// the Inspector reads it, and the task hash's fields without msg.
func enqueueWithGo(t *testing.T, rdb *redis.Client, inspector *asynq.Inspector,
	tc enqueueCase) (*asynq.TaskInfo, map[string]string) {
	t.Helper()
	client := newAsynqClient(t)
	var task *asynq.Task
	if tc.headers != nil {
		task = asynq.NewTaskWithHeaders(tc.typ, tc.payload, tc.headers)
	} else {
		task = asynq.NewTask(tc.typ, tc.payload)
	}
	enq, err := client.Enqueue(task, tc.goOpts...)
	if err != nil {
		t.Fatalf("asynq Client.Enqueue failed: %v", err)
	}
	info, err := inspector.GetTaskInfo(enq.Queue, enq.ID)
	if err != nil {
		t.Fatalf("Inspector.GetTaskInfo(%q, %q) for the asynq task "+
			"failed: %v", enq.Queue, enq.ID, err)
	}
	requireQueueListed(t, rdb, info.Queue)
	checkID(t, "asynq", info.ID, tc.fixedID)
	return info, readTaskHash(t, rdb, info.Queue, info.ID)
}

// checkID checks a task ID against the fixed ID, or the UUID v4 format.
func checkID(t *testing.T, writer, id, fixedID string) {
	t.Helper()
	if fixedID != "" {
		if id != fixedID {
			t.Errorf("%s task ID %q, expected %q", writer, id, fixedID)
		}
		return
	}
	if !uuidV4.MatchString(id) {
		t.Errorf("%s task ID %q is not a lowercase UUID v4", writer, id)
	}
}

// readTaskHash returns the fields of the task hash other than msg, which
// the Inspector already decoded, with pending_since reduced to its
// presence because it holds the enqueue time in nanoseconds.
func readTaskHash(t *testing.T, rdb *redis.Client, queue,
	id string) map[string]string {
	t.Helper()
	key := taskKey(queue, id)
	fields, err := rdb.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("HGETALL %s failed: %v", key, err)
	}
	if _, ok := fields["msg"]; !ok {
		t.Fatalf("task hash %s has no msg field: %v", key, fields)
	}
	delete(fields, "msg")
	if v, ok := fields["pending_since"]; ok {
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			t.Errorf("%s pending_since %q is not an integer", key, v)
		}
		fields["pending_since"] = "(set)"
	}
	if v, ok := fields["unique_key"]; ok {
		checkUniqueLock(t, rdb, v, id)
	}
	return fields
}

// checkUniqueLock checks that the unique lock key exists, contains the task
// ID and expires.
func checkUniqueLock(t *testing.T, rdb *redis.Client, key, id string) {
	t.Helper()
	ctx := context.Background()
	owner, err := rdb.Get(ctx, key).Result()
	if err != nil {
		t.Errorf("GET %s (unique lock) failed: %v", key, err)
		return
	}
	if owner != id {
		t.Errorf("unique lock %s contains %q, expected task ID %q", key,
			owner, id)
	}
	ttl, err := rdb.TTL(ctx, key).Result()
	if err != nil {
		t.Errorf("TTL %s failed: %v", key, err)
	} else if ttl <= 0 {
		t.Errorf("unique lock %s has TTL %v, expected one that expires",
			key, ttl)
	}
}

// compareTaskHashes compares the hash fields besides msg: state,
// pending_since (presence), unique_key and group.
func compareTaskHashes(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, v := range want {
		w, ok := got[k]
		if !ok {
			t.Errorf("task hash field %s: missing from casynq's hash, "+
				"asynq wrote %q", k, v)
		} else if w != v {
			t.Errorf("task hash field %s: casynq %q, asynq %q", k, w, v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("task hash field %s: casynq wrote %q, asynq wrote "+
				"no such field", k, v)
		}
	}
}

// TestEnqueueCountGivesDistinctIDs checks --count: every task gets its own
// random ID and is readable by the Inspector.
func TestEnqueueCountGivesDistinctIDs(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	inspector := newInspector(t)

	tasks := enqueueCLI(t, "--type", "bulk:item", "--payload", "x",
		"--count", "5")
	if len(tasks) != 5 {
		t.Fatalf("casynq --count 5 printed %d tasks", len(tasks))
	}
	seen := map[string]bool{}
	for _, task := range tasks {
		if seen[task.ID] {
			t.Errorf("task ID %s printed twice", task.ID)
		}
		seen[task.ID] = true
		checkID(t, "casynq", task.ID, "")
		info, err := inspector.GetTaskInfo("default", task.ID)
		if err != nil {
			t.Errorf("Inspector.GetTaskInfo(default, %s) failed: %v",
				task.ID, err)
			continue
		}
		if string(info.Payload) != "x" {
			t.Errorf("task %s payload %q, expected \"x\"", task.ID,
				info.Payload)
		}
	}
	n, err := rdb.LLen(context.Background(), "asynq:{default}:pending").Result()
	if err != nil {
		t.Fatalf("LLEN asynq:{default}:pending failed: %v", err)
	}
	if n != 5 {
		t.Errorf("pending list has %d tasks, expected 5", n)
	}
}
