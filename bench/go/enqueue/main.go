// Command enqueue is the Go asynq v0.26.0 side of the enqueue throughput
// benchmark. It starts -clients goroutines, each with its own asynq.Client
// limited to one Redis connection, and each enqueues -tasks tasks of
// -payload-size bytes with the default options. Every client enqueues one
// untimed task first, so connecting and loading the script are not timed.
// It prints one JSON line: {"clients":N,"tasks":N,"seconds":S}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

type result struct {
	Clients int     `json:"clients"`
	Tasks   int     `json:"tasks"`
	Seconds float64 `json:"seconds"`
}

func main() {
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address, host:port")
	clients := flag.Int("clients", 1, "number of clients, each on its own goroutine and connection")
	tasks := flag.Int("tasks", 10000, "timed tasks per client")
	payloadSize := flag.Int("payload-size", 100, "payload bytes per task")
	taskType := flag.String("type", "demo:noop", "task type")
	queue := flag.String("queue", "default", "queue name")
	flag.Parse()
	if *clients < 1 || *tasks < 1 || *payloadSize < 0 {
		fmt.Fprintln(os.Stderr, "enqueue: -clients and -tasks must be at least 1 and -payload-size at least 0")
		os.Exit(2)
	}

	payload := []byte(strings.Repeat("a", *payloadSize))
	cs := make([]*asynq.Client, *clients)
	for i := range cs {
		cs[i] = asynq.NewClient(asynq.RedisClientOpt{Addr: *redisAddr, PoolSize: 1})
		defer cs[i].Close()
		if _, err := cs[i].Enqueue(asynq.NewTask(*taskType, payload), asynq.Queue(*queue)); err != nil {
			fmt.Fprintf(os.Stderr, "enqueue: warm-up enqueue to %s failed: %v\n", *redisAddr, err)
			os.Exit(1)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	start := time.Now()
	for _, c := range cs {
		wg.Add(1)
		go func(c *asynq.Client) {
			defer wg.Done()
			for n := 0; n < *tasks; n++ {
				if _, err := c.Enqueue(asynq.NewTask(*taskType, payload), asynq.Queue(*queue)); err != nil {
					errs <- err
					return
				}
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		fmt.Fprintf(os.Stderr, "enqueue: enqueue failed: %v\n", err)
		os.Exit(1)
	}
	out, _ := json.Marshal(result{Clients: *clients, Tasks: *clients * *tasks, Seconds: elapsed.Seconds()})
	fmt.Println(string(out))
}
