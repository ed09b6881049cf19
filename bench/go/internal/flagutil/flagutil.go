// Package flagutil parses the command-line values that the benchmark
// programs share.
package flagutil

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseQueues parses "name=weight,..." (the form of casynq-worker's
// --queues flag) into asynq's Config.Queues map.
func ParseQueues(spec string) (map[string]int, error) {
	queues := make(map[string]int)
	for _, item := range strings.Split(spec, ",") {
		name, weight, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("invalid queue %q in %q: write NAME=WEIGHT", item, spec)
		}
		w, err := strconv.Atoi(weight)
		if err != nil || w < 1 {
			return nil, fmt.Errorf("invalid weight %q for queue %q: pass an integer of at least 1", weight, name)
		}
		queues[name] = w
	}
	return queues, nil
}
