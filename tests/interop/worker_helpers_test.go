package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
)

const (
	// workerStopWait bounds the wait for casynq-worker to exit after
	// SIGTERM. Its shutdown timeout is at most a few seconds in these
	// tests, so a longer wait means a hang.
	workerStopWait = 30 * time.Second
	// workerRunLimit kills a casynq-worker that is still running this
	// long after its start, in case a test never reaches its stop.
	workerRunLimit = 5 * time.Minute
	// stateWait bounds every poll for a state that a server produces. It
	// is a limit on a hang, not a timing check.
	stateWait = 30 * time.Second
	// pollInterval is the pause between two reads of a polled state.
	pollInterval = 100 * time.Millisecond
)

// allQueues are the queues, with their weights, that the worker tests
// configure on every server.
var allQueues = map[string]int{"critical": 6, "default": 3, "low": 1}

// queuesFlag is allQueues in the form of casynq-worker's --queues flag.
const queuesFlag = "critical=6,default=3,low=1"

// lockedBuffer is a bytes.Buffer that the goroutines copying a child's
// output and the test goroutine may use at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// workerProc is one casynq-worker subprocess.
type workerProc struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	output *lockedBuffer
	cancel context.CancelFunc
	// done is closed once the process has exited and waitErr is set.
	done    chan struct{}
	waitErr error
	stopped bool
}

// workerBinary returns the casynq-worker binary next to the casynq tool.
func workerBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(casynqBin), "casynq-worker")
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatalf("casynq-worker not found at %s: %v; build it with "+
			"'meson compile -C BUILDDIR'", bin, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("%s is not an executable file; rebuild it with "+
			"'meson compile -C BUILDDIR'", bin)
	}
	return bin
}

// startWorker starts casynq-worker against the test's redis-server with
// the demo handlers and args. The worker is stopped at cleanup, and its
// output goes to the test log when the test failed.
func startWorker(t *testing.T, args ...string) *workerProc {
	t.Helper()
	full := append([]string{"--redis", redisURL(), "--demo-handlers"},
		args...)
	ctx, cancel := context.WithTimeout(context.Background(),
		workerRunLimit)
	cmd := exec.CommandContext(ctx, workerBinary(t), full...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "CASYNQ_REDIS_URL=") {
			cmd.Env = append(cmd.Env, e)
		}
	}

	w := &workerProc{t: t, args: full, cmd: cmd, output: &lockedBuffer{},
		cancel: cancel, done: make(chan struct{})}
	cmd.Stdout = w.output
	cmd.Stderr = w.output
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("cannot start casynq-worker %s: %v",
			strings.Join(full, " "), err)
	}
	go func() {
		w.waitErr = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			w.logOutput()
		}
	})
	return w
}

func (w *workerProc) pid() int {
	return w.cmd.Process.Pid
}

func (w *workerProc) logOutput() {
	w.t.Logf("casynq-worker %s (pid %d) output:\n%s",
		strings.Join(w.args, " "), w.pid(), w.output.String())
}

// requireRunning fails the test when the worker has already exited.
func (w *workerProc) requireRunning() {
	w.t.Helper()
	select {
	case <-w.done:
		w.logOutput()
		w.t.Fatalf("casynq-worker (pid %d) exited early: %v", w.pid(),
			w.waitErr)
	default:
	}
}

// stop sends SIGTERM and waits up to workerStopWait for the worker to
// exit. It fails the test unless the worker exits with status 0, and
// kills a worker that does not exit in time. Calling it again does
// nothing.
func (w *workerProc) stop() {
	w.t.Helper()
	if w.stopped {
		return
	}
	w.stopped = true
	defer w.cancel()

	select {
	case <-w.done:
		w.logOutput()
		w.t.Errorf("casynq-worker (pid %d) exited before SIGTERM: %v",
			w.pid(), w.waitErr)
		return
	default:
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		w.t.Errorf("cannot send SIGTERM to casynq-worker (pid %d): %v",
			w.pid(), err)
	}
	select {
	case <-w.done:
	case <-time.After(workerStopWait):
		w.logOutput()
		w.t.Errorf("casynq-worker (pid %d) still runs %v after SIGTERM; "+
			"killing it", w.pid(), workerStopWait)
		w.cmd.Process.Kill()
		<-w.done
		return
	}
	var exitErr *exec.ExitError
	if errors.As(w.waitErr, &exitErr) {
		w.logOutput()
		w.t.Errorf("casynq-worker (pid %d) exited with %v after SIGTERM, "+
			"expected status 0", w.pid(), exitErr)
	} else if w.waitErr != nil {
		w.t.Errorf("waiting for casynq-worker (pid %d) failed: %v",
			w.pid(), w.waitErr)
	}
}

// kill sends SIGKILL and waits for the worker to exit, as a crash would
// end it. The worker's tasks stay active in Redis until their leases
// expire.
func (w *workerProc) kill() {
	w.t.Helper()
	if w.stopped {
		return
	}
	w.stopped = true
	defer w.cancel()
	w.requireRunning()
	if err := w.cmd.Process.Kill(); err != nil {
		w.t.Fatalf("cannot send SIGKILL to casynq-worker (pid %d): %v",
			w.pid(), err)
	}
	select {
	case <-w.done:
	case <-time.After(workerStopWait):
		w.t.Fatalf("casynq-worker (pid %d) still runs %v after SIGKILL",
			w.pid(), workerStopWait)
	}
}

// waitUntil calls cond every pollInterval until it returns true, and fails
// the test with what and cond's last status text after limit.
func waitUntil(t *testing.T, limit time.Duration, what string,
	cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, status := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v; last state: %s", what,
				limit, status)
		}
		time.Sleep(pollInterval)
	}
}

// queueInfo returns the Inspector's statistics of queue.
func queueInfo(t *testing.T, in *asynq.Inspector,
	queue string) *asynq.QueueInfo {
	t.Helper()
	info, err := in.GetQueueInfo(queue)
	if err != nil {
		t.Fatalf("Inspector.GetQueueInfo(%q) failed: %v", queue, err)
	}
	return info
}

// describeQueue returns the counts of info for a failure message.
func describeQueue(info *asynq.QueueInfo) string {
	return fmt.Sprintf("%s: pending %d, active %d, scheduled %d, "+
		"retry %d, archived %d, completed %d, processed total %d, "+
		"failed total %d", info.Queue, info.Pending, info.Active,
		info.Scheduled, info.Retry, info.Archived, info.Completed,
		info.ProcessedTotal, info.FailedTotal)
}

// taskInfo returns the Inspector's view of one task.
func taskInfo(t *testing.T, in *asynq.Inspector, queue,
	id string) *asynq.TaskInfo {
	t.Helper()
	info, err := in.GetTaskInfo(queue, id)
	if err != nil {
		t.Fatalf("Inspector.GetTaskInfo(%q, %q) failed: %v", queue, id,
			err)
	}
	return info
}

// enqueueGo enqueues task with asynq's client and fails the test on error.
func enqueueGo(t *testing.T, client *asynq.Client, task *asynq.Task,
	opts ...asynq.Option) *asynq.TaskInfo {
	t.Helper()
	info, err := client.Enqueue(task, opts...)
	if err != nil {
		t.Fatalf("asynq Client.Enqueue of a %s task failed: %v",
			task.Type(), err)
	}
	return info
}

// startGoServer starts an asynq server on allQueues with handler and
// shuts it down at cleanup. The returned function shuts it down earlier;
// calling it again does nothing.
func startGoServer(t *testing.T, concurrency int,
	handler asynq.Handler) func() {
	t.Helper()
	srv := asynq.NewServer(redisClientOpt(), asynq.Config{
		Concurrency:     concurrency,
		Queues:          allQueues,
		LogLevel:        asynq.WarnLevel,
		ShutdownTimeout: 5 * time.Second,
	})
	if err := srv.Start(handler); err != nil {
		t.Fatalf("asynq Server.Start failed: %v", err)
	}
	var once sync.Once
	stop := func() { once.Do(srv.Shutdown) }
	t.Cleanup(stop)
	return stop
}
