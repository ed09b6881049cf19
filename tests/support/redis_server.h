/* Private redis-server processes for cmocka tests.
 *
 * Each server is a child process of the test. It listens on 127.0.0.1 only,
 * on a port the kernel reported free, runs in a new temporary directory under
 * $TMPDIR (or /tmp) and has persistence disabled, unless it was started with
 * test_redis_start_persistent(). The binary is $REDIS_SERVER
 * when that variable is set, else /usr/bin/redis-server, else redis-server on
 * PATH. When it is missing, test_redis_start() prints what to install and
 * returns -1, so the test fails instead of being skipped.
 *
 * All functions print the reason for a failure on stderr. None of them is
 * thread-safe: call them from the thread that runs the tests. On Linux the
 * server gets SIGTERM when the thread that started it exits, so a crashed
 * test leaves no server behind, but it does leave its temporary directory.
 */
#ifndef CASYNQ_TEST_REDIS_SERVER_H
#define CASYNQ_TEST_REDIS_SERVER_H

#include <sys/types.h>

#include <hiredis/hiredis.h>

struct test_redis {
    int port;      /* TCP port on 127.0.0.1, kept across kill and restart */
    pid_t pid;     /* redis-server process id, 0 while no server runs */
    char dir[256]; /* temporary working directory, "" after stop */
    char url[64];  /* "redis://127.0.0.1:<port>/0" */
    /* 1 when the append-only file is on, 0 when persistence is off */
    int persistent;
};

/* Starts redis-server in a new temporary directory on a free port and waits
 * up to 10 s until it replies to PING. When another process takes the port
 * first, it retries with another port.
 * Returns: 0, or -1 with *r zeroed and the temporary directory removed.
 * Ownership: *r is overwritten, so it must not describe a running server.
 * Release it with test_redis_stop(). */
int test_redis_start(struct test_redis *r);

/* Starts redis-server like test_redis_start(), but with the append-only file
 * on and fsynced before every reply (--appendonly yes --appendfsync always),
 * so that a server started again with test_redis_restart() after
 * test_redis_kill() holds every write the killed one acknowledged.
 * Returns: 0, or -1 as test_redis_start().
 * Ownership: as test_redis_start(). */
int test_redis_start_persistent(struct test_redis *r);

/* Stops the server with SIGTERM, sends SIGKILL if it still runs after 5 s,
 * then removes its temporary directory and zeroes *r. Calling it on a zeroed
 * or already stopped struct does nothing.
 * Returns: 0, or -1 when SIGKILL was needed or the directory could not be
 * removed. */
int test_redis_stop(struct test_redis *r);

/* Stops the server like test_redis_stop() but keeps the directory and the
 * port, so that test_redis_restart() can start it again.
 * Returns: 0, or -1 when no server runs or SIGKILL was needed. */
int test_redis_shutdown(struct test_redis *r);

/* Kills the server with SIGKILL and reaps it, keeping the directory and the
 * port for test_redis_restart(). Use it to simulate a crash.
 * Returns: 0, or -1 when no server runs. */
int test_redis_kill(struct test_redis *r);

/* Starts a new server on the same port and directory after
 * test_redis_shutdown() or test_redis_kill(), and waits up to 10 s until it
 * replies to PING. The new server starts empty, unless the first one was
 * started with test_redis_start_persistent(): then it loads the append-only
 * file and holds every write that the old server acknowledged.
 * NOTE: another process can take the port while no server runs, and then
 * the restart fails.
 * Returns: 0, or -1 when a server still runs or the new one did not start. */
int test_redis_restart(struct test_redis *r);

/* Opens a blocking hiredis connection to the server, with a 2 s connect
 * timeout and no command timeout.
 * Returns: the context, or NULL when the connection failed.
 * Ownership: the caller frees the context with redisFree(). */
redisContext *test_redis_connect(const struct test_redis *r);

/* Deletes every key in every database of the server with FLUSHALL.
 * Returns: 0, or -1 when the connection or the command failed. */
int test_redis_flushall(const struct test_redis *r);

/* cmocka group setup that starts one server for the whole group and stores
 * its struct in *state. Pass it to cmocka_run_group_tests() together with
 * test_redis_group_teardown().
 * Returns: 0, or -1 when the server did not start. */
int test_redis_group_setup(void **state);

/* cmocka group teardown that stops the server of test_redis_group_setup().
 * Returns: the result of test_redis_stop(). */
int test_redis_group_teardown(void **state);

/* Returns the server of test_redis_group_setup(), whose fields are zero
 * outside a group that uses it. */
const struct test_redis *test_redis_shared(void);

#endif /* CASYNQ_TEST_REDIS_SERVER_H */
