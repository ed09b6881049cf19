package interop

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

// processWait bounds the wait for the Go server to run every task. It is
// a limit on a hang, not a timing check.
const processWait = 20 * time.Second

// seenTask is what a Go handler observed for one task.
type seenTask struct {
	id         string
	typ        string
	payload    []byte
	headers    map[string]string
	maxRetry   int
	retryCount int
	queue      string
	idOK       bool
	maxOK      bool
	queueOK    bool
	retryOK    bool
}

// sentTask is one task that casynq enqueued, with what the handler must
// see.
type sentTask struct {
	payload  []byte
	headers  map[string]string
	maxRetry int
	queue    string
	typ      string
}

// TestGoServerProcessesCasynqTasks enqueues tasks with casynq and checks
// that an asynq server hands each handler the same type, payload bytes,
// headers, task ID, max retry and queue.
func TestGoServerProcessesCasynqTasks(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	inputs := []struct {
		payload  []byte
		headers  []string
		maxRetry int
		queue    string
		typ      string
		// viaFile passes the payload with --payload-file instead of
		// --payload-hex, for payloads too long for one argument.
		viaFile bool
	}{
		{payload: []byte{0x00, 0x01, 0xfe, 0xff}, headers: []string{"a=1"},
			maxRetry: 3, queue: "critical", typ: "image:resize"},
		{payload: []byte("\xc3\x28 not utf-8 \x00"),
			headers:  []string{"trace=abc", "tenant=ünï", "empty="},
			maxRetry: 0, queue: "default", typ: "image:resize"},
		{payload: bytes.Repeat([]byte{0xab, 0x00, 0xcd}, 40000),
			headers:  []string{"size=large"},
			maxRetry: 25, queue: "default", typ: "blob:store",
			viaFile: true},
		{payload: []byte{}, headers: nil, maxRetry: 1, queue: "critical",
			typ: "ping"},
		{payload: []byte(`{"user_id":42}`), headers: []string{"k=v=w"},
			maxRetry: 12, queue: "low", typ: "email:welcome"},
	}

	sent := map[string]sentTask{}
	for i, in := range inputs {
		args := []string{"--type", in.typ, "--queue", in.queue,
			"--max-retry", strconv.Itoa(in.maxRetry)}
		if in.viaFile {
			path := filepath.Join(t.TempDir(),
				"payload-"+strconv.Itoa(i)+".bin")
			if err := os.WriteFile(path, in.payload, 0o600); err != nil {
				t.Fatalf("cannot write payload file %s: %v", path, err)
			}
			args = append(args, "--payload-file", path)
		} else {
			args = append(args, "--payload-hex",
				hex.EncodeToString(in.payload))
		}
		headers := map[string]string{}
		for _, h := range in.headers {
			args = append(args, "--header", h)
			// casynq splits KEY=VALUE at the first '='.
			k, v, _ := strings.Cut(h, "=")
			headers[k] = v
		}
		out := enqueueCLIOne(t, args...)
		sent[out.ID] = sentTask{payload: in.payload, headers: headers,
			maxRetry: in.maxRetry, queue: in.queue, typ: in.typ}
	}

	seen := make(chan seenTask, len(sent))
	handler := asynq.HandlerFunc(func(ctx context.Context,
		task *asynq.Task) error {
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
		seen <- s
		return nil
	})

	srv := asynq.NewServer(redisClientOpt(), asynq.Config{
		Concurrency: 2,
		Queues: map[string]int{"critical": 6, "default": 3,
			"low": 1},
		LogLevel:        asynq.WarnLevel,
		ShutdownTimeout: 5 * time.Second,
	})
	if err := srv.Start(handler); err != nil {
		t.Fatalf("asynq Server.Start failed: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			srv.Shutdown()
		}
	}
	defer stop()

	got := map[string]seenTask{}
	timeout := time.After(processWait)
	for len(got) < len(sent) {
		select {
		case s := <-seen:
			if _, dup := got[s.id]; dup {
				t.Errorf("task %s ran twice", s.id)
			}
			got[s.id] = s
		case <-timeout:
			t.Fatalf("the asynq server ran %d of %d tasks within %v",
				len(got), len(sent), processWait)
		}
	}

	for id, want := range sent {
		s, ok := got[id]
		if !ok {
			t.Errorf("task %s never reached a handler", id)
			continue
		}
		checkSeenTask(t, id, want, s)
	}

	// Shutdown waits for the workers, which mark each task done before
	// they finish, so every task hash is gone afterwards.
	stop()
	ctx := context.Background()
	for id, want := range sent {
		key := taskKey(want.queue, id)
		n, err := rdb.Exists(ctx, key).Result()
		if err != nil {
			t.Fatalf("EXISTS %s failed: %v", key, err)
		}
		if n != 0 {
			t.Errorf("task hash %s still exists after success", key)
		}
	}
	total := 0
	for _, q := range []string{"critical", "default", "low"} {
		v, err := rdb.Get(ctx, "asynq:{"+q+"}:processed").Int()
		if err != nil {
			t.Fatalf("GET asynq:{%s}:processed failed: %v", q, err)
		}
		total += v
	}
	if total != len(sent) {
		t.Errorf("processed counters add up to %d, expected %d", total,
			len(sent))
	}
}

func checkSeenTask(t *testing.T, id string, want sentTask, s seenTask) {
	t.Helper()
	if !s.idOK || s.id != id {
		t.Errorf("task %s: GetTaskID returned %q, %v", id, s.id, s.idOK)
	}
	if s.typ != want.typ {
		t.Errorf("task %s: type %q, expected %q", id, s.typ, want.typ)
	}
	if !bytes.Equal(s.payload, want.payload) {
		t.Errorf("task %s: payload of %d bytes differs from the %d bytes "+
			"enqueued", id, len(s.payload), len(want.payload))
	}
	if !sameHeaders(s.headers, want.headers) {
		t.Errorf("task %s: headers %v, expected %v", id, s.headers,
			want.headers)
	}
	if !s.maxOK || s.maxRetry != want.maxRetry {
		t.Errorf("task %s: GetMaxRetry returned %d, %v; expected %d", id,
			s.maxRetry, s.maxOK, want.maxRetry)
	}
	if !s.queueOK || s.queue != want.queue {
		t.Errorf("task %s: GetQueueName returned %q, %v; expected %q", id,
			s.queue, s.queueOK, want.queue)
	}
	if !s.retryOK || s.retryCount != 0 {
		t.Errorf("task %s: GetRetryCount returned %d, %v; expected 0", id,
			s.retryCount, s.retryOK)
	}
}
