/* Shared set-up for tests that run an in-process casynq server against
 * the harness's redis-server: a client and a server config pointed at it,
 * an empty mux, and bounded waits. */
#ifndef CASYNQ_TEST_SERVER_FIXTURE_H
#define CASYNQ_TEST_SERVER_FIXTURE_H

#include <hiredis/hiredis.h>

#include <casynq.h>

#include "redis_server.h"

/* Upper bound for every wait on the server, in milliseconds. */
#define WAIT_MS 20000
#define POLL_MS 10

/* The objects every server test needs. */
struct server_fixture {
    const struct test_redis *server;
    redisContext *redis; /* for reading Redis directly */
    struct casynq_client *client;
    struct casynq_config *cfg;
    struct casynq_mux *mux;
    struct casynq_server *srv; /* NULL until server_fixture_start() */
};

/* Flushes the shared harness server and fills sf: concurrency 1, short
 * task check, forwarder and janitor intervals (50, 200 and 200 ms) so the
 * tests run fast, a 2000 ms shutdown timeout and warn-level logs. Queues
 * are left to the test.
 * Returns: 0, or -1 when any step failed (sf is then still safe to pass to
 * server_fixture_finish()). */
int server_fixture_init(struct server_fixture *sf);

/* Destroys what init and start made. A running server is shut down first,
 * so no handler or callback runs after this returns. */
void server_fixture_finish(struct server_fixture *sf);

/* Creates and starts the server from sf->cfg and sf->mux, failing the
 * test with the library's message when either step fails. */
void server_fixture_start(struct server_fixture *sf);

/* Sleeps ms milliseconds. */
void sleep_ms(int ms);

/* Returns the monotonic clock in milliseconds. */
long long monotonic_ms(void);

/* Polls cond every POLL_MS until it holds, and fails the test with the
 * condition's text when it still does not hold after WAIT_MS. */
#define WAIT_UNTIL(cond)                                                       \
    do {                                                                       \
        long long wait_end_ = monotonic_ms() + WAIT_MS;                        \
        while (!(cond)) {                                                      \
            if (monotonic_ms() > wait_end_) {                                  \
                fail_msg("timed out after %d ms waiting for: %s", WAIT_MS,     \
                         #cond);                                               \
            }                                                                  \
            sleep_ms(POLL_MS);                                                 \
        }                                                                      \
    } while (0)

#endif
