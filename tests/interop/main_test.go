// Package interop checks that asynq v0.26.0 (client, Inspector and server)
// and the casynq command-line tool read and write the same Redis state.
//
// TestMain starts one redis-server on a free 127.0.0.1 port in a temporary
// directory and stops it when the tests end. Each test flushes the
// database first. The casynq binary comes from $CASYNQ_BIN_DIR, which
// `meson test` sets to the build's tools directory.
package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Set by TestMain before any test runs.
var (
	// redisAddr is host:port of the test's redis-server.
	redisAddr string
	// casynqBin is the path of the casynq command-line tool.
	casynqBin string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	bin, err := findCasynqBinary()
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: %v\n", err)
		return 1
	}
	casynqBin = bin

	script, err := filepath.Abs(filepath.Join("..", "..", "scripts",
		"redis-throwaway.sh"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: cannot resolve the redis "+
			"launcher path: %v\n", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "casynq-interop-redis-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: cannot create a temporary "+
			"directory for redis-server: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	port, err := startRedis(script, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "interop: %v\n", err)
		return 1
	}
	defer stopRedis(script, dir)
	redisAddr = "127.0.0.1:" + port

	return m.Run()
}

// findCasynqBinary returns the casynq tool in $CASYNQ_BIN_DIR.
func findCasynqBinary() (string, error) {
	dir := os.Getenv("CASYNQ_BIN_DIR")
	if dir == "" {
		return "", fmt.Errorf("CASYNQ_BIN_DIR is not set: run these " +
			"tests with 'meson test -C BUILDDIR --suite interop', or set " +
			"CASYNQ_BIN_DIR to the tools directory of a casynq build")
	}
	bin := filepath.Join(dir, "casynq")
	st, err := os.Stat(bin)
	if err != nil {
		return "", fmt.Errorf("casynq binary not found at %s (from "+
			"CASYNQ_BIN_DIR): %v; build it with 'meson compile -C "+
			"BUILDDIR'", bin, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s (from CASYNQ_BIN_DIR) is not an "+
			"executable file; rebuild it with 'meson compile -C BUILDDIR'",
			bin)
	}
	return bin, nil
}

// startRedis starts redis-server in dir and returns its port.
func startRedis(script, dir string) (string, error) {
	cmd := exec.Command(script, "start", dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s start %s failed: %v; redis-server "+
			"comes from the redis-server package (scripts/setup.sh "+
			"installs it)", script, dir, err)
	}
	port := strings.TrimSpace(string(out))
	if port == "" {
		return "", fmt.Errorf("%s start %s printed no port", script, dir)
	}
	return port, nil
}

func stopRedis(script, dir string) {
	cmd := exec.Command(script, "stop", dir)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "interop: %s stop %s failed: %v\n",
			script, dir, err)
	}
}
