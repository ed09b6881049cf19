// Command server is the Go asynq v0.26.0 side of the drain benchmarks: an
// asynq server with the two task types that the benchmarks enqueue.
//
//	demo:noop  succeeds at once.
//	demo:fail  decodes the JSON payload {"error": "text"} and fails with the
//	           text, as casynq's demo:fail handler does.
//
// The server runs until SIGTERM or SIGINT, which asynq's Server.Run turns
// into a graceful shutdown.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"

	"casynq.invalid/bench/internal/flagutil"
	"github.com/hibiken/asynq"
)

func main() {
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address, host:port")
	concurrency := flag.Int("concurrency", 10, "number of tasks processed at once")
	queueSpec := flag.String("queues", "default=1", "queues and weights, NAME=WEIGHT,...")
	flag.Parse()

	queues, err := flagutil.ParseQueues(*queueSpec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "server: %v\n", err)
		os.Exit(2)
	}
	srv := asynq.NewServer(asynq.RedisClientOpt{Addr: *redisAddr}, asynq.Config{
		Concurrency: *concurrency,
		Queues:      queues,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("demo:noop", handleNoop)
	mux.HandleFunc("demo:fail", handleFail)
	if err := srv.Run(mux); err != nil {
		log.Fatalf("server: asynq server failed: %v", err)
	}
}

func handleNoop(context.Context, *asynq.Task) error {
	return nil
}

// failPayload is the payload of demo:fail; other fields are ignored.
type failPayload struct {
	Error string `json:"error"`
}

func handleFail(_ context.Context, t *asynq.Task) error {
	var p failPayload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return fmt.Errorf("demo:fail payload is not JSON: %w: %w", err, asynq.SkipRetry)
	}
	if p.Error == "" {
		return errors.New("demo failure")
	}
	return errors.New(p.Error)
}
