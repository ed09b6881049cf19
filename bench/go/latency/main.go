// Command latency is the Go asynq v0.26.0 side of the pickup latency
// benchmark: an asynq server whose bench:latency handler reads the
// enqueue time (unix ns, decimal text) from the payload and records
// now - enqueue time when the handler starts. After SIGTERM or SIGINT
// shut the server down, it prints one JSON line with the count and the
// nearest-rank percentiles in nanoseconds:
// {"count":N,"dropped":N,"p50_ns":N,"p99_ns":N,"p999_ns":N,"max_ns":N}.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"casynq.invalid/bench/internal/flagutil"
	"github.com/hibiken/asynq"
)

// recorder keeps latencies in a slice allocated up front, so recording
// costs one atomic add and one store.
type recorder struct {
	samples []int64
	next    atomic.Int64
	dropped atomic.Int64
}

func (r *recorder) handle(_ context.Context, t *asynq.Task) error {
	now := time.Now().UnixNano()
	sent, err := strconv.ParseInt(string(t.Payload()), 10, 64)
	if err != nil {
		return fmt.Errorf("bench:latency payload %q is not unix ns: %w: %w", t.Payload(), err, asynq.SkipRetry)
	}
	i := r.next.Add(1) - 1
	if i >= int64(len(r.samples)) {
		r.dropped.Add(1)
		return nil
	}
	r.samples[i] = now - sent
	return nil
}

type summary struct {
	Count   int   `json:"count"`
	Dropped int64 `json:"dropped"`
	P50     int64 `json:"p50_ns"`
	P99     int64 `json:"p99_ns"`
	P999    int64 `json:"p999_ns"`
	Max     int64 `json:"max_ns"`
}

// percentile returns the nearest-rank percentile p (0 < p <= 1) of the
// sorted samples.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

func main() {
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address, host:port")
	concurrency := flag.Int("concurrency", 10, "number of tasks processed at once")
	queueSpec := flag.String("queues", "default=1", "queues and weights, NAME=WEIGHT,...")
	capacity := flag.Int("capacity", 1000000, "maximum number of latencies kept")
	flag.Parse()

	queues, err := flagutil.ParseQueues(*queueSpec)
	if err != nil || *capacity < 1 {
		fmt.Fprintf(os.Stderr, "latency: invalid flags: queues %v, capacity %d\n", err, *capacity)
		os.Exit(2)
	}
	rec := &recorder{samples: make([]int64, *capacity)}
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: *redisAddr}, asynq.Config{
		Concurrency: *concurrency,
		Queues:      queues,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:latency", rec.handle)
	if err := srv.Run(mux); err != nil {
		log.Fatalf("latency: asynq server failed: %v", err)
	}

	n := min(int(rec.next.Load()), len(rec.samples))
	sorted := rec.samples[:n]
	slices.Sort(sorted)
	s := summary{
		Count:   n,
		Dropped: rec.dropped.Load(),
		P50:     percentile(sorted, 0.50),
		P99:     percentile(sorted, 0.99),
		P999:    percentile(sorted, 0.999),
	}
	if n > 0 {
		s.Max = sorted[n-1]
	}
	out, _ := json.Marshal(s)
	fmt.Println(string(out))
}
