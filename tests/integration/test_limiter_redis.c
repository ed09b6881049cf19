/* Integration tests of the limiter's Redis backend against a real
 * redis-server: budgets shared by eight processes, key expiry, retry at the
 * reported time, all-or-nothing checks that write nothing when they
 * reject, backlog caps, and a Redis restart between checks. The rejection
 * counts are checked along the way.
 *
 * Each test starts its own redis-server, because one of them kills it.
 * Rate bounds compare counts with rate * elapsed + burst, where elapsed is
 * measured around the run on the monotonic clock. No test asserts how
 * long anything took. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "broker_helpers.h"
#include "limiter.h"

#define NS_PER_S 1000000000LL

/* ------------------------------------------------------------------------
 * Leak counting: an allocator safe for several threads.
 */

static atomic_long live_blocks;

static void *counting_malloc(size_t size)
{
    void *p = malloc(size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);

    if (p != NULL && ptr == NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void counting_free(void *ptr)
{
    if (ptr != NULL) {
        atomic_fetch_sub(&live_blocks, 1);
    }
    free(ptr);
}

/* ------------------------------------------------------------------------
 * Fixture: a private redis-server, an inspection connection and options.
 */

struct fixture {
    struct test_redis server;
    redisContext *redis;
    struct casynq_redis_options *opts;
    long live_blocks_at_start;
};

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL) {
        return -1;
    }
    fx->live_blocks_at_start = atomic_load(&live_blocks);
    if (test_redis_start(&fx->server) != 0) {
        free(fx);
        return -1;
    }
    fx->redis = test_redis_connect(&fx->server);
    if (fx->redis == NULL || casynq_redis_options_create(&fx->opts) != 0 ||
        casynq_redis_options_set_tcp(fx->opts, "127.0.0.1", fx->server.port) !=
                0) {
        return -1;
    }
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;
    long leaked;

    if (fx == NULL) {
        return 0;
    }
    casynq_redis_options_destroy(fx->opts);
    if (fx->redis != NULL) {
        redisFree(fx->redis);
    }
    test_redis_stop(&fx->server);
    leaked = atomic_load(&live_blocks) - fx->live_blocks_at_start;
    free(fx);
    *state = NULL;
    if (leaked != 0) {
        fail_msg("the library leaked %ld block(s) during this test", leaked);
    }
    return 0;
}

static struct casynq_limiter *redis_limiter(const struct fixture *fx)
{
    struct casynq_limiter *l = NULL;

    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_REDIS, fx->opts, &l),
                     0);
    return l;
}

static void add_rate(struct casynq_limiter *l, const char *name,
                     enum casynq_limit_scope scope, const char *match,
                     double rate_per_s, double burst)
{
    int rc = casynq_limiter_add_rate(l, name, scope, match, rate_per_s, burst);

    if (rc != 0) {
        fail_msg("add_rate %s returned %s: %s", name, casynq_err_name(rc),
                 casynq_limiter_last_error(l));
    }
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        continue;
    }
}

static void assert_message_has(const char *message, const char *part)
{
    if (strstr(message, part) == NULL) {
        fail_msg("message \"%s\" does not contain \"%s\"", message, part);
    }
}

/* Checks and fails the test on anything but a pass or a rate limit. */
static int check(struct casynq_limiter *l, const char *key, const char *queue,
                 int64_t *retry_after_ms)
{
    int rc = casynq_limiter_check(l, key, queue, "job", 10, retry_after_ms);

    if (rc != 0 && rc != CASYNQ_ERATELIMITED) {
        fail_msg("check of key %s returned %s: %s",
                 key != NULL ? key : "(none)", casynq_err_name(rc),
                 casynq_limiter_last_error(l));
    }
    return rc;
}

static int count_passes(struct casynq_limiter *l, const char *key,
                        const char *queue, int attempts)
{
    int passed = 0;

    for (int i = 0; i < attempts; i++) {
        if (check(l, key, queue, NULL) == 0) {
            passed++;
        }
    }
    return passed;
}

static long long dbsize(redisContext *c)
{
    redisReply *r = redis_run(c, "DBSIZE");
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

static long long pttl(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "PTTL %s", key);
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

/* Copies the string value of key into out, or "" when it is missing. */
static void get_string(redisContext *c, const char *key, char *out, size_t len)
{
    redisReply *r = redis_run(c, "GET %s", key);

    snprintf(out, len, "%s", r->type == REDIS_REPLY_STRING ? r->str : "");
    freeReplyObject(r);
}

/* ------------------------------------------------------------------------
 * Eight processes, one budget
 */

#define PROCESSES    8
#define ATTEMPTS     300
#define SHARED_RATE  50.0
#define SHARED_BURST 20.0

struct child_counts {
    long accepted;
    long rejected;
    long failed;
};

/* Returns the rejection count of limit `index` of l. */
static uint64_t rejections_at(const struct casynq_limiter *l, size_t index)
{
    uint64_t rejected = 0;

    assert_int_equal(casynq_limiter_rejections_at(l, index, NULL, &rejected),
                     0);
    return rejected;
}

/* Runs in a forked child: hammers key "hot" with its own limiter and
 * connection, writes its counts to fd and exits. Uses no cmocka call. */
static void child_hammer(const struct casynq_redis_options *opts, int fd)
{
    struct child_counts counts = {0};
    struct casynq_limiter *l = NULL;
    int status = 0;

    if (casynq_limiter_create(CASYNQ_LIMITER_REDIS, opts, &l) != 0 ||
        casynq_limiter_add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL,
                                SHARED_RATE, SHARED_BURST) != 0) {
        _exit(2);
    }
    for (int i = 0; i < ATTEMPTS; i++) {
        int rc = casynq_limiter_check(l, "hot", NULL, NULL, 0, NULL);

        if (rc == 0) {
            counts.accepted++;
        } else if (rc == CASYNQ_ERATELIMITED) {
            counts.rejected++;
        } else {
            counts.failed++;
        }
    }
    casynq_limiter_destroy(l);
    if (write(fd, &counts, sizeof(counts)) != (ssize_t)sizeof(counts)) {
        status = 3;
    }
    _exit(status);
}

static void test_redis_processes_share_one_budget(void **state)
{
    struct fixture *fx = *state;
    struct child_counts total = {0};
    struct casynq_limiter *l;
    pid_t pids[PROCESSES];
    int fds[2];
    int64_t start;
    double elapsed_s;
    double bound;
    long long ttl_ms;

    assert_int_equal(pipe(fds), 0);
    start = monotonic_ns();
    for (int i = 0; i < PROCESSES; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            close(fds[0]);
            child_hammer(fx->opts, fds[1]);
        }
    }
    close(fds[1]);
    for (int i = 0; i < PROCESSES; i++) {
        int status = 0;

        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    elapsed_s = (double)(monotonic_ns() - start) / NS_PER_S;
    for (int i = 0; i < PROCESSES; i++) {
        struct child_counts counts;

        assert_int_equal(read(fds[0], &counts, sizeof(counts)), sizeof(counts));
        total.accepted += counts.accepted;
        total.rejected += counts.rejected;
        total.failed += counts.failed;
    }
    close(fds[0]);

    assert_int_equal(total.failed, 0);
    assert_int_equal(total.accepted + total.rejected, PROCESSES * ATTEMPTS);
    bound = SHARED_RATE * elapsed_s + SHARED_BURST;
    if ((double)total.accepted > bound) {
        fail_msg("%ld checks passed in %.3f s, above the bound of %.1f",
                 total.accepted, elapsed_s, bound);
    }
    assert_true(total.accepted >= (long)SHARED_BURST);

    /* The budget key expires when it would be full again: at most one
     * burst of intervals from now. */
    ttl_ms = pttl(fx->redis, "casynq:rl:{per-tenant}:hot");
    assert_true(ttl_ms > 0);
    assert_true(ttl_ms <= (long long)ceil(SHARED_BURST / SHARED_RATE * 1000));

    /* A second key still has its whole burst. */
    l = redis_limiter(fx);
    add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL, SHARED_RATE,
             SHARED_BURST);
    for (int i = 0; i < (int)SHARED_BURST; i++) {
        assert_int_equal(check(l, "cold", NULL, NULL), 0);
    }
    assert_true(pttl(fx->redis, "casynq:rl:{per-tenant}:cold") > 0);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * Retry after, rejections, backlog
 */

static void test_redis_retry_at_reported_time_passes(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);
    int64_t retry = 0;
    char expected[128];

    add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL, 5, 2);
    assert_int_equal(count_passes(l, "acme", NULL, 2), 2);
    assert_int_equal(check(l, "acme", NULL, &retry), CASYNQ_ERATELIMITED);
    assert_true(retry >= 1);
    assert_true(retry <= 200);
    snprintf(expected, sizeof(expected),
             "rate limit \"per-tenant\" exceeded for key \"acme\": retry "
             "after %lld ms",
             (long long)retry);
    assert_string_equal(casynq_limiter_last_error(l), expected);

    sleep_ms(retry);
    assert_int_equal(check(l, "acme", NULL, &retry), 0);
    assert_int_equal(retry, 0);
    casynq_limiter_destroy(l);
}

/* A rejected check writes nothing: the stored times of every budget,
 * including those that passed, stay as they were. */
static void test_redis_rejection_writes_nothing(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);
    char tenant_before[64];
    char queue_before[64];
    char tenant_after[64];
    char queue_after[64];

    /* One unit every 10 s, so the budgets do not refill during the test. */
    add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL, 0.1, 5);
    add_rate(l, "low-queue", CASYNQ_LIMIT_QUEUE, "low", 0.1, 2);
    assert_int_equal(count_passes(l, "acme", "low", 2), 2);
    assert_int_equal(dbsize(fx->redis), 2);
    get_string(fx->redis, "casynq:rl:{per-tenant}:acme", tenant_before,
               sizeof(tenant_before));
    get_string(fx->redis, "casynq:rl:{low-queue}", queue_before,
               sizeof(queue_before));
    assert_true(tenant_before[0] != '\0');
    assert_true(queue_before[0] != '\0');

    assert_int_equal(count_passes(l, "acme", "low", 20), 0);
    assert_message_has(casynq_limiter_last_error(l),
                       "rate limit \"low-queue\" exceeded for queue \"low\"");
    get_string(fx->redis, "casynq:rl:{per-tenant}:acme", tenant_after,
               sizeof(tenant_after));
    get_string(fx->redis, "casynq:rl:{low-queue}", queue_after,
               sizeof(queue_after));
    assert_string_equal(tenant_after, tenant_before);
    assert_string_equal(queue_after, queue_before);
    assert_int_equal(dbsize(fx->redis), 2);
    /* Each rejection counts once, under "low-queue" (index 1). */
    assert_int_equal(rejections_at(l, 0), 0);
    assert_int_equal(rejections_at(l, 1), 20);

    /* "per-tenant" kept its 3 remaining units. */
    assert_int_equal(count_passes(l, "acme", "default", 10), 3);
    casynq_limiter_destroy(l);
}

static void test_redis_backlog_cap_counts_three_sets(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);
    redisReply *r;
    int64_t retry = -1;

    assert_int_equal(casynq_limiter_set_max_backlog(l, "low", 3), 0);
    add_rate(l, "low-queue", CASYNQ_LIMIT_QUEUE, "low", 0.1, 1);
    freeReplyObject(redis_run(fx->redis, "LPUSH asynq:{low}:pending a"));
    freeReplyObject(redis_run(fx->redis, "ZADD asynq:{low}:scheduled 1 b"));
    freeReplyObject(redis_run(fx->redis, "ZADD asynq:{low}:retry 1 c"));

    for (int i = 0; i < 5; i++) {
        assert_int_equal(casynq_limiter_check(l, NULL, "low", NULL, 0, &retry),
                         CASYNQ_EBACKLOG);
        assert_int_equal(retry, 0);
    }
    assert_string_equal(casynq_limiter_last_error(l),
                        "queue \"low\" holds 3 pending, scheduled and retry "
                        "tasks, at or above its backlog cap of 3: retry "
                        "once workers have drained it");
    /* Index 0 is "low-queue", 1 is "max_backlog". */
    assert_int_equal(rejections_at(l, 0), 0);
    assert_int_equal(rejections_at(l, 1), 5);
    /* Other queues have no cap. */
    assert_int_equal(casynq_limiter_check(l, NULL, "high", NULL, 0, NULL), 0);

    /* Once a task leaves, the queue accepts again, and the rejections
     * left the queue's rate budget untouched. */
    r = redis_run(fx->redis, "LPOP asynq:{low}:pending");
    freeReplyObject(r);
    assert_int_equal(casynq_limiter_check(l, NULL, "low", NULL, 0, NULL), 0);
    assert_int_equal(casynq_limiter_check(l, NULL, "low", NULL, 0, NULL),
                     CASYNQ_ERATELIMITED);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * Failures of Redis
 */

static void test_redis_restart_between_checks(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);
    int64_t retry = -1;
    int rc;

    add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL, 0.1, 1);
    assert_int_equal(check(l, "acme", NULL, NULL), 0);
    assert_int_equal(check(l, "acme", NULL, NULL), CASYNQ_ERATELIMITED);

    redisFree(fx->redis);
    fx->redis = NULL;
    assert_int_equal(test_redis_kill(&fx->server), 0);

    /* With Redis down, the check fails with a connection error, never
     * with a rate limit. */
    rc = casynq_limiter_check(l, "acme", NULL, NULL, 0, &retry);
    assert_int_equal(rc, CASYNQ_ECONNECT);
    assert_int_equal(retry, 0);
    assert_message_has(casynq_limiter_last_error(l), "cannot connect");
    assert_int_equal(casynq_limiter_check(l, "other", NULL, NULL, 0, NULL),
                     CASYNQ_ECONNECT);
    /* Connection errors are not rejections. */
    assert_int_equal(rejections_at(l, 0), 1);

    /* The restarted server is empty, so the budget is full again, and the
     * limiter reconnects and loads its script by itself. */
    assert_int_equal(test_redis_restart(&fx->server), 0);
    fx->redis = test_redis_connect(&fx->server);
    assert_non_null(fx->redis);
    assert_int_equal(check(l, "acme", NULL, NULL), 0);
    assert_int_equal(check(l, "acme", NULL, NULL), CASYNQ_ERATELIMITED);
    casynq_limiter_destroy(l);
}

/* The payload limit needs no Redis, so it applies even when Redis is
 * unreachable, and it comes before any Redis call. */
static void test_redis_payload_checked_before_redis(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);

    add_rate(l, "per-tenant", CASYNQ_LIMIT_PER_KEY, NULL, 10, 10);
    assert_int_equal(casynq_limiter_set_max_payload(l, 64), 0);
    assert_int_equal(casynq_limiter_check(l, "acme", NULL, NULL, 65, NULL),
                     CASYNQ_ETOOLARGE);
    assert_int_equal(dbsize(fx->redis), 0);

    assert_int_equal(test_redis_kill(&fx->server), 0);
    assert_int_equal(casynq_limiter_check(l, "acme", NULL, NULL, 65, NULL),
                     CASYNQ_ETOOLARGE);
    assert_int_equal(casynq_limiter_check(l, "acme", NULL, NULL, 64, NULL),
                     CASYNQ_ECONNECT);
    casynq_limiter_destroy(l);
}

/* A script error reply is an error, not a rejection: a string where the
 * pending list should be makes LLEN fail inside the script. */
static void test_redis_script_error_is_eredis(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = redis_limiter(fx);

    assert_int_equal(casynq_limiter_set_max_backlog(l, "low", 3), 0);
    freeReplyObject(redis_run(fx->redis, "SET asynq:{low}:pending oops"));
    assert_int_equal(casynq_limiter_check(l, NULL, "low", NULL, 0, NULL),
                     CASYNQ_EREDIS);
    assert_message_has(casynq_limiter_last_error(l), "rate_limit script");
    casynq_limiter_destroy(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(
                    test_redis_processes_share_one_budget, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_redis_retry_at_reported_time_passes, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(test_redis_rejection_writes_nothing,
                                            fixture_setup, fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_redis_backlog_cap_counts_three_sets, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(test_redis_restart_between_checks,
                                            fixture_setup, fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_redis_payload_checked_before_redis, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(test_redis_script_error_is_eredis,
                                            fixture_setup, fixture_teardown),
    };

    casynq_set_allocator(counting_malloc, counting_calloc, counting_realloc,
                         counting_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
