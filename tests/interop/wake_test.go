package interop

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// blmoveCalls returns how many BLMOVE calls Redis has run.
func blmoveCalls(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	stats, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats failed: %v", err)
	}
	const prefix = "cmdstat_blmove:calls="
	at := strings.Index(stats, prefix)
	if at < 0 {
		return 0
	}
	rest := stats[at+len(prefix):]
	if end := strings.IndexByte(rest, ','); end >= 0 {
		rest = rest[:end]
	}
	calls, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		t.Fatalf("invalid cmdstat_blmove line in INFO: %q", rest)
	}
	return calls
}

// pendingIDs returns the IDs of queue's pending tasks in the Inspector's
// order.
func pendingIDs(t *testing.T, in *asynq.Inspector, queue string) []string {
	t.Helper()
	tasks, err := in.ListPendingTasks(queue)
	if err != nil {
		t.Fatalf("Inspector.ListPendingTasks(%q) failed: %v", queue, err)
	}
	ids := make([]string, len(tasks))
	for i, task := range tasks {
		ids[i] = task.ID
	}
	return ids
}

// TestIdleWorkerWaitKeepsPendingOrder: an idle casynq-worker waits for new
// tasks with BLMOVE on the pending list of its highest-weight queue. With
// that queue paused and holding tasks, every wait returns at once. The
// Inspector must still list the same pending tasks in the same order, and
// after an unpause the worker runs each of them once.
func TestIdleWorkerWaitKeepsPendingOrder(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)
	client := newAsynqClient(t)
	in := newInspector(t)

	for i := 0; i < 3; i++ {
		enqueueGo(t, client,
			asynq.NewTask("demo:noop", []byte(fmt.Sprintf("wake %d", i))),
			asynq.Queue("critical"))
	}
	if err := in.PauseQueue("critical"); err != nil {
		t.Fatalf("Inspector.PauseQueue(critical) failed: %v", err)
	}
	before := pendingIDs(t, in, "critical")
	callsBefore := blmoveCalls(t, rdb)

	w := startWorker(t, "--queues", queuesFlag, "--concurrency", "2")
	waitUntil(t, stateWait, "the worker's BLMOVE waits on critical",
		func() (bool, string) {
			calls := blmoveCalls(t, rdb)
			return calls >= callsBefore+3,
				fmt.Sprintf("%d BLMOVE calls", calls-callsBefore)
		})
	w.requireRunning()

	after := pendingIDs(t, in, "critical")
	if strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("pending tasks of critical changed while the worker "+
			"waited: before %v, after %v", before, after)
	}
	info := queueInfo(t, in, "critical")
	if info.Pending != 3 || info.Active != 0 || info.Processed != 0 {
		t.Fatalf("paused queue changed while the worker waited: %s",
			describeQueue(info))
	}

	if err := in.UnpauseQueue("critical"); err != nil {
		t.Fatalf("Inspector.UnpauseQueue(critical) failed: %v", err)
	}
	waitUntil(t, stateWait, "the worker runs the unpaused tasks",
		func() (bool, string) {
			info := queueInfo(t, in, "critical")
			return info.Pending == 0 && info.Active == 0 &&
				info.ProcessedTotal == 3, describeQueue(info)
		})
}
