package interop

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestCLIRejectsBadArguments checks that invalid command lines exit with 2,
// name the flag at fault and write nothing to Redis.
func TestCLIRejectsBadArguments(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing type", []string{}, "--type"},
		{"blank type", []string{"--type", "  "}, "--type"},
		{"type not utf-8", []string{"--type", "bad\xff"}, "--type"},
		{"unknown flag", []string{"--type", "t", "--bogus"}, "--bogus"},
		{"flag without value", []string{"--type"}, "--type"},
		{"stray argument", []string{"--type", "t", "extra"}, "extra"},
		{"max retry not a number", []string{"--type", "t", "--max-retry",
			"3x"}, "--max-retry"},
		{"max retry negative", []string{"--type", "t", "--max-retry",
			"-1"}, "--max-retry"},
		{"max retry too large", []string{"--type", "t", "--max-retry",
			"2147483648"}, "--max-retry"},
		{"timeout with space", []string{"--type", "t", "--timeout",
			" 5"}, "--timeout"},
		{"timeout overflow", []string{"--type", "t", "--timeout",
			"99999999999999999999"}, "--timeout"},
		{"unique zero", []string{"--type", "t", "--unique", "0"},
			"--unique"},
		{"count zero", []string{"--type", "t", "--count", "0"}, "--count"},
		{"two payloads", []string{"--type", "t", "--payload", "a",
			"--payload-hex", "00"}, "--payload-hex"},
		{"odd hex", []string{"--type", "t", "--payload-hex", "abc"},
			"--payload-hex"},
		{"bad hex", []string{"--type", "t", "--payload-hex", "zz"},
			"--payload-hex"},
		{"header without equals", []string{"--type", "t", "--header",
			"novalue"}, "--header"},
		{"header not utf-8", []string{"--type", "t", "--header",
			"k=\xff"}, "--header"},
		{"process at and in", []string{"--type", "t", "--process-at",
			"1", "--process-in", "1"}, "--process-in"},
		{"task id with count", []string{"--type", "t", "--task-id", "x",
			"--count", "2"}, "--task-id"},
		{"blank queue", []string{"--type", "t", "--queue", " "},
			"queue name"},
		{"timeout and deadline zero", []string{"--type", "t",
			"--timeout", "0"}, "timeout"},
		{"bad redis url", []string{"--type", "t", "--redis",
			"http://127.0.0.1"}, "--redis"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"enqueue"}
			if !containsFlag(tc.args, "--redis") {
				args = append(args, "--redis", redisURL())
			}
			args = append(args, tc.args...)
			res := runCasynq(t, args...)
			if res.code != exitUsage {
				t.Errorf("casynq %q exited with %d, expected %d; "+
					"stderr: %s", args, res.code, exitUsage, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.want) {
				t.Errorf("stderr %q does not mention %q", res.stderr,
					tc.want)
			}
			if res.stdout != "" {
				t.Errorf("stdout is %q, expected nothing", res.stdout)
			}
		})
	}

	keys, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatalf("KEYS * failed: %v", err)
	}
	if len(keys) != 0 {
		t.Errorf("rejected command lines wrote keys: %v", keys)
	}
}

func containsFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

// TestCLIConnectionFailures checks exit status 1 with the library's
// message when Redis is unreachable or rejects the credentials.
func TestCLIConnectionFailures(t *testing.T) {
	rdb := newRedis(t)
	flushAll(t, rdb)

	missing := "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	res := runCasynq(t, "enqueue", "--redis", missing, "--type", "t")
	if res.code != exitError {
		t.Errorf("enqueue to %s exited with %d, expected %d; stderr: %s",
			missing, res.code, exitError, res.stderr)
	}
	if !strings.Contains(res.stderr, "cannot connect") {
		t.Errorf("stderr %q does not say that it cannot connect",
			res.stderr)
	}

	// The URL from the environment is used when --redis is absent.
	res = runCasynqEnv(t, []string{"CASYNQ_REDIS_URL=" + missing},
		"enqueue", "--type", "t")
	if res.code != exitError || !strings.Contains(res.stderr, "missing.sock") {
		t.Errorf("enqueue with CASYNQ_REDIS_URL=%s exited with %d, "+
			"stderr %q; expected 1 and the socket path", missing,
			res.code, res.stderr)
	}
	res = runCasynqEnv(t, []string{"CASYNQ_REDIS_URL=" + redisURL()},
		"enqueue", "--type", "env:task", "--json")
	if res.code != exitOK {
		t.Errorf("enqueue with CASYNQ_REDIS_URL=%s exited with %d; "+
			"stderr: %s", redisURL(), res.code, res.stderr)
	}

	// Require a password on the test server, then restore it.
	ctx := context.Background()
	if err := rdb.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatalf("CONFIG SET requirepass failed: %v", err)
	}
	t.Cleanup(func() {
		admin := redis.NewClient(&redis.Options{Addr: redisAddr,
			Password: "s3cret"})
		defer admin.Close()
		if err := admin.ConfigSet(ctx, "requirepass", "").Err(); err != nil {
			t.Errorf("cannot remove requirepass from the test server: %v",
				err)
		}
	})

	for _, url := range []string{redisURL(),
		"redis://:wrong@" + redisAddr + "/0"} {
		res = runCasynq(t, "enqueue", "--redis", url, "--type", "t")
		if res.code != exitError {
			t.Errorf("enqueue to %s exited with %d, expected %d; "+
				"stderr: %s", url, res.code, exitError, res.stderr)
		}
		if strings.Contains(res.stderr, "wrong") {
			t.Errorf("stderr %q repeats the password", res.stderr)
		}
	}
	res = runCasynq(t, "enqueue", "--redis",
		"redis://:s3cret@"+redisAddr+"/0", "--type", "auth:ok")
	if res.code != exitOK {
		t.Errorf("enqueue with the right password exited with %d; "+
			"stderr: %s", res.code, res.stderr)
	}
}

// TestCLIHelpAndVersion checks that the help lists every enqueue flag and
// that version and help exit with 0.
func TestCLIHelpAndVersion(t *testing.T) {
	res := runCasynq(t, "enqueue", "--help")
	if res.code != exitOK {
		t.Fatalf("casynq enqueue --help exited with %d", res.code)
	}
	for _, flag := range []string{"--redis", "--type", "--payload ",
		"--payload-file", "--payload-hex", "--no-payload", "--header",
		"--queue", "--max-retry", "--timeout", "--deadline",
		"--process-at", "--process-in", "--unique", "--task-id",
		"--retention", "--group", "--count", "--json", "CASYNQ_REDIS_URL",
		"redis://127.0.0.1:6379/0"} {
		if !strings.Contains(res.stdout, flag) {
			t.Errorf("casynq enqueue --help does not mention %s", flag)
		}
	}

	res = runCasynq(t, "--help")
	if res.code != exitOK || !strings.Contains(res.stdout, "enqueue") {
		t.Errorf("casynq --help exited with %d and printed %q", res.code,
			res.stdout)
	}
	res = runCasynq(t, "version")
	if res.code != exitOK || !strings.HasPrefix(res.stdout, "casynq ") {
		t.Errorf("casynq version exited with %d and printed %q", res.code,
			res.stdout)
	}
	res = runCasynq(t, "no-such-command")
	if res.code != exitUsage {
		t.Errorf("casynq no-such-command exited with %d, expected %d",
			res.code, exitUsage)
	}
}
