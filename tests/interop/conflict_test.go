package interop

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// pendingLen returns the length of a queue's pending list.
func pendingLen(t *testing.T, rdb *redis.Client, queue string) int64 {
	t.Helper()
	key := "asynq:{" + queue + "}:pending"
	n, err := rdb.LLen(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("LLEN %s failed: %v", key, err)
	}
	return n
}

// requireCLIExit runs casynq enqueue with args and checks its exit status
// and that stderr mentions want.
func requireCLIExit(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	full := append([]string{"enqueue", "--redis", redisURL()}, args...)
	res := runCasynq(t, full...)
	if res.code != code {
		t.Fatalf("casynq %s exited with %d, expected %d; stderr: %s",
			strings.Join(full, " "), res.code, code, res.stderr)
	}
	if !strings.Contains(res.stderr, want) {
		t.Errorf("casynq %s wrote %q to stderr, expected it to contain %q",
			strings.Join(full, " "), res.stderr, want)
	}
	if res.stdout != "" {
		t.Errorf("casynq %s printed %q for a task it did not enqueue",
			strings.Join(full, " "), res.stdout)
	}
}

// TestUniqueConflictCasynqFirst: casynq holds the unique lock, so both a
// second casynq enqueue and asynq's client get a duplicate-task error.
func TestUniqueConflictCasynqFirst(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	first := enqueueCLIOne(t, "--type", "report:unique", "--payload", "p1",
		"--unique", "60")
	before := snapshotRedis(t, rdb)

	requireCLIExit(t, exitDuplicate, "task already exists",
		"--type", "report:unique", "--payload", "p1", "--unique", "60")
	requireSameSnapshot(t, "after the duplicate casynq enqueue", before,
		snapshotRedis(t, rdb))

	client := newAsynqClient(t)
	_, err := client.Enqueue(asynq.NewTask("report:unique", []byte("p1")),
		asynq.Unique(time.Minute))
	if !errors.Is(err, asynq.ErrDuplicateTask) {
		t.Errorf("asynq Client.Enqueue after casynq returned %v, "+
			"expected ErrDuplicateTask", err)
	}
	requireSameSnapshot(t, "after the duplicate asynq enqueue", before,
		snapshotRedis(t, rdb))
	if n := pendingLen(t, rdb, "default"); n != 1 {
		t.Errorf("pending has %d tasks, expected only %s", n, first.ID)
	}
}

// TestUniqueConflictGoFirst: asynq's client holds the unique lock, so
// casynq exits with 3 and writes nothing.
func TestUniqueConflictGoFirst(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	client := newAsynqClient(t)
	_, err := client.Enqueue(asynq.NewTask("report:unique", []byte("p1")),
		asynq.Unique(time.Minute))
	if err != nil {
		t.Fatalf("asynq Client.Enqueue failed: %v", err)
	}
	before := snapshotRedis(t, rdb)

	requireCLIExit(t, exitDuplicate, "task already exists",
		"--type", "report:unique", "--payload", "p1", "--unique", "60")
	requireSameSnapshot(t, "after the duplicate casynq enqueue", before,
		snapshotRedis(t, rdb))
	if n := pendingLen(t, rdb, "default"); n != 1 {
		t.Errorf("pending has %d tasks, expected 1", n)
	}
}

// TestUniqueLockScope: the lock covers one type, payload and queue only.
// A nil payload (--no-payload) and an empty payload have different lock
// keys, and each collides with asynq's client using the same payload.
func TestUniqueLockScope(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	enqueueCLIOne(t, "--type", "report:unique", "--payload", "p1",
		"--unique", "60")
	enqueueCLIOne(t, "--type", "report:unique", "--payload", "p1",
		"--unique", "60", "--queue", "other")
	enqueueCLIOne(t, "--type", "report:unique", "--payload", "p2",
		"--unique", "60")
	enqueueCLIOne(t, "--type", "report:other", "--payload", "p1",
		"--unique", "60")
	enqueueCLIOne(t, "--type", "report:unique", "--unique", "60")
	enqueueCLIOne(t, "--type", "report:unique", "--no-payload",
		"--unique", "60")

	if n := pendingLen(t, rdb, "default"); n != 5 {
		t.Errorf("default pending has %d tasks, expected 5", n)
	}
	if n := pendingLen(t, rdb, "other"); n != 1 {
		t.Errorf("other pending has %d tasks, expected 1", n)
	}

	client := newAsynqClient(t)
	for _, payload := range [][]byte{nil, {}} {
		_, err := client.Enqueue(asynq.NewTask("report:unique", payload),
			asynq.Unique(time.Minute))
		if !errors.Is(err, asynq.ErrDuplicateTask) {
			t.Errorf("asynq Client.Enqueue with payload %#v returned %v, "+
				"expected ErrDuplicateTask", payload, err)
		}
	}
	requireCLIExit(t, exitDuplicate, "task already exists",
		"--type", "report:unique", "--no-payload", "--unique", "60")
	requireCLIExit(t, exitDuplicate, "task already exists",
		"--type", "report:unique", "--payload-hex", "", "--unique", "60")
}

// TestTaskIDConflictCasynqFirst: casynq wrote task ID dup-1, so a second
// casynq enqueue exits with 4, asynq's client gets ErrTaskIDConflict, and
// Redis is unchanged.
func TestTaskIDConflictCasynqFirst(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	enqueueCLIOne(t, "--type", "order:ship", "--payload", "first",
		"--task-id", "dup-1")
	before := snapshotRedis(t, rdb)

	requireCLIExit(t, exitIDConflict, "task ID conflicts",
		"--type", "order:ship", "--payload", "second", "--task-id", "dup-1")
	requireSameSnapshot(t, "after the conflicting casynq enqueue", before,
		snapshotRedis(t, rdb))

	requireCLIExit(t, exitIDConflict, "task ID conflicts",
		"--type", "order:ship", "--payload", "third", "--task-id", "dup-1",
		"--process-in", "3600")
	requireSameSnapshot(t, "after the conflicting scheduled casynq "+
		"enqueue", before, snapshotRedis(t, rdb))

	client := newAsynqClient(t)
	_, err := client.Enqueue(asynq.NewTask("order:ship", []byte("fourth")),
		asynq.TaskID("dup-1"))
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("asynq Client.Enqueue after casynq returned %v, "+
			"expected ErrTaskIDConflict", err)
	}
	requireSameSnapshot(t, "after the conflicting asynq enqueue", before,
		snapshotRedis(t, rdb))

	info, err := newInspector(t).GetTaskInfo("default", "dup-1")
	if err != nil {
		t.Fatalf("Inspector.GetTaskInfo(default, dup-1) failed: %v", err)
	}
	if string(info.Payload) != "first" {
		t.Errorf("task dup-1 has payload %q, expected the first one",
			info.Payload)
	}
}

// TestTaskIDConflictGoFirst: asynq's client wrote task ID dup-2, so
// casynq exits with 4 and Redis is unchanged.
func TestTaskIDConflictGoFirst(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	client := newAsynqClient(t)
	_, err := client.Enqueue(asynq.NewTask("order:ship", []byte("first")),
		asynq.TaskID("dup-2"))
	if err != nil {
		t.Fatalf("asynq Client.Enqueue failed: %v", err)
	}
	before := snapshotRedis(t, rdb)

	requireCLIExit(t, exitIDConflict, "task ID conflicts",
		"--type", "order:ship", "--payload", "second", "--task-id", "dup-2")
	requireSameSnapshot(t, "after the conflicting casynq enqueue", before,
		snapshotRedis(t, rdb))

	requireCLIExit(t, exitIDConflict, "task ID conflicts",
		"--type", "order:ship", "--payload", "third", "--task-id", "dup-2",
		"--group", "g")
	requireSameSnapshot(t, "after the conflicting grouped casynq enqueue",
		before, snapshotRedis(t, rdb))

	_, err = client.Enqueue(asynq.NewTask("order:ship", []byte("fourth")),
		asynq.TaskID("dup-2"))
	if !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("second asynq Client.Enqueue returned %v, expected "+
			"ErrTaskIDConflict", err)
	}
}
