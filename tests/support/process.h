/* Child processes for tests that drive a program such as casynq-worker.
 *
 * A test starts the program with test_process_spawn(), which sends its
 * stdout and stderr to a log file, then signals it and waits for it with a
 * bound. On Linux the child gets SIGKILL when the thread that started it
 * exits, so a crashed test leaves no process behind.
 *
 * All functions print the reason for a failure on stderr. None of them is
 * thread-safe: call them from the thread that runs the tests.
 */
#ifndef CASYNQ_TEST_PROCESS_H
#define CASYNQ_TEST_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct test_process {
    pid_t pid;          /* child process id, 0 once it was reaped */
    int wait_status;    /* status from waitpid(), valid once reaped */
    char log_path[512]; /* file that receives the child's stdout and stderr */
};

/* Returns the value of environment variable `name` when it names an
 * executable file. Otherwise prints which variable to set and returns
 * NULL, so that the caller can fail the test instead of skipping it.
 * Ownership: the string belongs to the environment. */
const char *test_process_binary(const char *name);

/* Starts argv[0] with the arguments argv (NULL-terminated), stdin from
 * /dev/null and stdout and stderr appended to log_path, which is created or
 * truncated first. The child starts with no blocked signals and the default
 * action for every signal.
 * Returns: 0, or -1 with *p zeroed when the log file cannot be opened or
 *          fork() fails. An exec failure shows as exit status 127.
 * Ownership: *p is overwritten. Release it with test_process_kill() or by
 *            waiting until the child exits. */
int test_process_spawn(struct test_process *p, const char *const argv[],
                       const char *log_path);

/* Sends sig to the child.
 * Returns: 0, or -1 when the child was already reaped or kill() fails. */
int test_process_signal(const struct test_process *p, int sig);

/* Reaps the child if it has exited.
 * Returns: true while the child runs, false once it has exited (its status
 *          is then in p->wait_status). */
bool test_process_running(struct test_process *p);

/* Waits up to timeout_ms for the child to exit and reaps it.
 * Returns: 0 when it exited (status in p->wait_status), -1 when it still
 *          runs at the timeout or was never started. */
int test_process_wait(struct test_process *p, long timeout_ms);

/* Kills the child with SIGKILL and reaps it. Does nothing when it was
 * already reaped. */
void test_process_kill(struct test_process *p);

/* Writes a description of p->wait_status ("exit status 1", "killed by
 * signal 9 (Killed)") into buf, truncated to len. */
void test_process_describe_status(const struct test_process *p, char *buf,
                                  size_t len);

/* Reads the whole log file.
 * Returns: a NUL-terminated copy, or NULL when the file cannot be read.
 * Ownership: the caller frees it with free(). */
char *test_process_read_log(const struct test_process *p);

/* Returns whether the log file contains `needle`. */
bool test_process_log_contains(const struct test_process *p,
                               const char *needle);

/* Prints the last max_bytes of the log file to stderr under a header that
 * names the file, for a test that failed. */
void test_process_print_log(const struct test_process *p, long max_bytes);

#endif /* CASYNQ_TEST_PROCESS_H */
