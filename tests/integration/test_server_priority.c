/* Integration tests of the worker server's queue order: strict priority,
 * weighted priority and paused queues.
 *
 * Each test runs an in-process server (config, mux and server API) against
 * a real redis-server, enqueues tasks with the public client and reads
 * Redis directly to check the outcome. Handlers record the queue of every
 * task they see. With concurrency 1 each fetch takes one task, so the
 * recorded order is the server's fetch order. Waits poll Redis or the
 * records with an upper bound and never assert how long something took. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <casynq.h>

#include "broker_helpers.h"
#include "server_fixture.h"
#include "util.h"

/* Number of handled tasks whose queue is recorded. Later ones are only
 * counted. */
#define MAX_SEEN 1000

/* State shared by one test, its handlers and its teardown. Handlers run on
 * worker threads and touch only the records, under mu. */
struct fixture {
    struct server_fixture base;
    pthread_mutex_t mu;
    char seen[MAX_SEEN][32]; /* queue of each handled task, in order */
    int nseen;               /* handled tasks, including those not kept */
    bool hold;               /* hold_until_released keeps running */
    int hold_calls;          /* hold_until_released calls started */
};

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    int rc;

    if (fx == NULL) {
        return -1;
    }
    pthread_mutex_init(&fx->mu, NULL);
    rc = server_fixture_init(&fx->base);
    *state = fx;
    return rc == 0 ? 0 : -1;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;

    if (fx == NULL) {
        return 0;
    }
    /* Destroying a running server shuts it down first, so no handler
     * touches the fixture after this line. */
    server_fixture_finish(&fx->base);
    pthread_mutex_destroy(&fx->mu);
    free(fx);
    *state = NULL;
    return 0;
}

static void start_server(struct fixture *fx)
{
    server_fixture_start(&fx->base);
}

/* Enqueues a task of `type` with no payload into `queue` through the
 * public client, and stores its ID in id_out when that is not NULL. */
static void enqueue(struct fixture *fx, const char *type, const char *queue,
                    char *id_out)
{
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task *task = NULL;
    struct casynq_task_info *info = NULL;
    int rc;

    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(opts, queue), 0);
    assert_int_equal(casynq_task_create(type, NULL, 0, &task), 0);
    rc = casynq_client_enqueue(fx->base.client, task, opts, &info);
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
    if (rc != 0) {
        fail_msg("enqueue of a %s task into queue %s returned %s: %s", type,
                 queue, casynq_err_name(rc),
                 casynq_client_last_error(fx->base.client));
    }
    if (id_out != NULL) {
        snprintf(id_out, CASYNQ__UUID_LEN + 1, "%s", casynq_task_info_id(info));
    }
    casynq_task_info_destroy(info);
}

/* Handler: records the task's queue and succeeds. */
static int record_queue(struct casynq_ctx *ctx, const struct casynq_task *task,
                        void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    pthread_mutex_lock(&fx->mu);
    if (fx->nseen < MAX_SEEN) {
        snprintf(fx->seen[fx->nseen], sizeof(fx->seen[0]), "%s",
                 casynq_ctx_queue(ctx));
    }
    fx->nseen++;
    pthread_mutex_unlock(&fx->mu);
    return 0;
}

/* Handler: runs until the test clears fx->hold or the task is cancelled. */
static int hold_until_released(struct casynq_ctx *ctx,
                               const struct casynq_task *task, void *ud)
{
    struct fixture *fx = ud;
    bool hold;

    (void)task;
    pthread_mutex_lock(&fx->mu);
    fx->hold_calls++;
    pthread_mutex_unlock(&fx->mu);
    do {
        if (casynq_ctx_wait(ctx, POLL_MS) != 0) {
            return CASYNQ_ECANCELED;
        }
        pthread_mutex_lock(&fx->mu);
        hold = fx->hold;
        pthread_mutex_unlock(&fx->mu);
    } while (hold);
    return 0;
}

static int hold_call_count(struct fixture *fx)
{
    int n;

    pthread_mutex_lock(&fx->mu);
    n = fx->hold_calls;
    pthread_mutex_unlock(&fx->mu);
    return n;
}

static int seen_count(struct fixture *fx)
{
    int n;

    pthread_mutex_lock(&fx->mu);
    n = fx->nseen;
    pthread_mutex_unlock(&fx->mu);
    return n;
}

/* Returns how many of the first `limit` kept records name `queue`. */
static int seen_in_queue(struct fixture *fx, const char *queue, int limit)
{
    int n = 0;

    pthread_mutex_lock(&fx->mu);
    for (int i = 0; i < fx->nseen && i < MAX_SEEN && i < limit; i++) {
        if (strcmp(fx->seen[i], queue) == 0) {
            n++;
        }
    }
    pthread_mutex_unlock(&fx->mu);
    return n;
}

/* Fails unless every record of `first` comes before every record of
 * `second` among the first `total` records. Call it after shutdown, as it
 * reads the records without the lock. */
static void assert_drained_before(struct fixture *fx, const char *first,
                                  const char *second, int total)
{
    int last_first = -1;
    int first_second = total;

    for (int i = 0; i < total; i++) {
        if (strcmp(fx->seen[i], first) == 0) {
            last_first = i;
        } else if (strcmp(fx->seen[i], second) == 0 && first_second == total) {
            first_second = i;
        } else if (strcmp(fx->seen[i], second) != 0) {
            fail_msg("task %d came from queue \"%s\", which the test never "
                     "used",
                     i, fx->seen[i]);
        }
    }
    if (last_first > first_second) {
        fail_msg("a %s task ran at position %d after a %s task at position "
                 "%d: %s should drain first",
                 first, last_first, second, first_second, first);
    }
}

static void test_strict_priority_critical_before_low(void **state)
{
    struct fixture *fx = *state;
    enum { PER_QUEUE = 20 };

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "critical", 6), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "low", 1), 0);
    assert_int_equal(casynq_config_set_strict_priority(fx->base.cfg, true), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    /* The low tasks are older, so a server that ignored priority and took
     * tasks by age would run them first. */
    for (int i = 0; i < PER_QUEUE; i++) {
        enqueue(fx, "prio:job", "low", NULL);
    }
    for (int i = 0; i < PER_QUEUE; i++) {
        enqueue(fx, "prio:job", "critical", NULL);
    }

    start_server(fx);
    WAIT_UNTIL(seen_count(fx) >= 2 * PER_QUEUE);
    /* After shutdown no worker writes the records any more. */
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    assert_int_equal(seen_count(fx), 2 * PER_QUEUE);
    assert_int_equal(seen_in_queue(fx, "critical", 2 * PER_QUEUE), PER_QUEUE);
    assert_int_equal(seen_in_queue(fx, "low", 2 * PER_QUEUE), PER_QUEUE);
    assert_drained_before(fx, "critical", "low", 2 * PER_QUEUE);
}

static void test_strict_priority_equal_weights_by_name(void **state)
{
    struct fixture *fx = *state;
    enum { PER_QUEUE = 10 };

    /* Equal weights are ordered by name, so "alpha" drains before "beta"
     * even though "beta" is configured first and its tasks are older. */
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "beta", 2), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "alpha", 2), 0);
    assert_int_equal(casynq_config_set_strict_priority(fx->base.cfg, true), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    for (int i = 0; i < PER_QUEUE; i++) {
        enqueue(fx, "prio:job", "beta", NULL);
    }
    for (int i = 0; i < PER_QUEUE; i++) {
        enqueue(fx, "prio:job", "alpha", NULL);
    }

    start_server(fx);
    WAIT_UNTIL(seen_count(fx) >= 2 * PER_QUEUE);
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    assert_int_equal(seen_count(fx), 2 * PER_QUEUE);
    assert_drained_before(fx, "alpha", "beta", 2 * PER_QUEUE);
}

/* Fails unless `count` of `n` draws lies within expected_pct +- tol_pct
 * percent. */
static void assert_share(const char *queue, int count, int n,
                         double expected_pct, double tol_pct)
{
    double pct = 100.0 * count / n;

    if (pct < expected_pct - tol_pct || pct > expected_pct + tol_pct) {
        fail_msg("queue %s got %d of %d tasks (%.1f %%), expected %.0f %% "
                 "+- %.1f",
                 queue, count, n, pct, expected_pct, tol_pct);
    }
}

static void test_weighted_priority_shares_follow_weights(void **state)
{
    struct fixture *fx = *state;
    enum { PER_QUEUE = 3000, SAMPLE = 1000 };
    int a;
    int b;
    int c;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "a", 6), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "b", 3), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "c", 1), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    /* No queue can run dry within the sample, so the queue tried first
     * always yields the task and each fetch is one weighted draw. */
    for (int i = 0; i < PER_QUEUE; i++) {
        enqueue(fx, "prio:noop", "a", NULL);
        enqueue(fx, "prio:noop", "b", NULL);
        enqueue(fx, "prio:noop", "c", NULL);
    }

    start_server(fx);
    WAIT_UNTIL(seen_count(fx) >= SAMPLE);
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    a = seen_in_queue(fx, "a", SAMPLE);
    b = seen_in_queue(fx, "b", SAMPLE);
    c = seen_in_queue(fx, "c", SAMPLE);
    assert_int_equal(a + b + c, SAMPLE);
    /* Each draw picks a with p = 0.6, b with 0.3 and c with 0.1. For
     * n = 1000 the standard deviation of a share is sqrt(p(1-p)/n):
     * 1.55 points for a, 1.45 for b and 0.95 for c. The tolerances
     * (8, 8 and 5 points) are 5.2, 5.5 and 5.3 standard deviations. The
     * exact binomial tails outside them sum to 5.1e-7, so a correct server
     * fails this test about once in two million runs. */
    assert_share("a", a, SAMPLE, 60.0, 8.0);
    assert_share("b", b, SAMPLE, 30.0, 8.0);
    assert_share("c", c, SAMPLE, 10.0, 5.0);
}

static long long list_length(struct fixture *fx, const char *key)
{
    redisReply *r = redisCommand(fx->base.redis, "LLEN %s", key);
    long long n;

    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        if (r != NULL) {
            freeReplyObject(r);
        }
        fail_msg("LLEN %s failed", key);
    }
    n = r->integer;
    freeReplyObject(r);
    return n;
}

static void test_paused_queue_tasks_stay_pending(void **state)
{
    struct fixture *fx = *state;
    const char *paused_key = "asynq:{held}:paused";
    const char *held_pending = "asynq:{held}:pending";
    char held_ids[3][CASYNQ__UUID_LEN + 1];
    redisReply *r;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "held", 1), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "open", 1), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    /* Pause as asynq's Inspector does. */
    r = redis_run(fx->base.redis, "SETNX %s %lld", paused_key,
                  (long long)casynq__now_unix_s());
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    for (int i = 0; i < 3; i++) {
        enqueue(fx, "prio:job", "held", held_ids[i]);
    }
    for (int i = 0; i < 3; i++) {
        enqueue(fx, "prio:job", "open", NULL);
    }

    start_server(fx);
    WAIT_UNTIL(seen_in_queue(fx, "open", MAX_SEEN) == 3);
    /* One more open task makes the server fetch again after the first
     * three, trying the paused queue on the way. */
    enqueue(fx, "prio:job", "open", NULL);
    WAIT_UNTIL(seen_in_queue(fx, "open", MAX_SEEN) == 4);

    assert_int_equal(seen_in_queue(fx, "held", MAX_SEEN), 0);
    assert_int_equal(list_length(fx, held_pending), 3);
    for (int i = 0; i < 3; i++) {
        assert_hash_field(fx->base.redis,
                          keyf("asynq:{held}:t:%s", held_ids[i]), "state",
                          "pending");
    }

    /* Unpause as the Inspector does, and the held tasks run. */
    r = redis_run(fx->base.redis, "DEL %s", paused_key);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    WAIT_UNTIL(seen_in_queue(fx, "held", MAX_SEEN) == 3);
    WAIT_UNTIL(redis_zcard(fx->base.redis, "asynq:{held}:lease") == 0);

    assert_int_equal(list_length(fx, held_pending), 0);
    for (int i = 0; i < 3; i++) {
        assert_key_missing(fx->base.redis,
                           keyf("asynq:{held}:t:%s", held_ids[i]));
    }
}

/* The server waits a little for running tasks to finish before a fetch,
 * so that one dequeue serves several workers. A task that keeps running
 * must not hold back the fetches of the other workers: short tasks
 * enqueued behind a long one all run while it still runs. */
static void test_long_task_does_not_hold_back_short_ones(void **state)
{
    struct fixture *fx = *state;
    enum { SHORT_TASKS = 300 };

    fx->hold = true;
    assert_int_equal(casynq_config_set_concurrency(fx->base.cfg, 4), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "mixed", 1), 0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "long:", hold_until_released, fx),
            0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "short:", record_queue, fx), 0);
    enqueue(fx, "long:job", "mixed", NULL);
    start_server(fx);
    WAIT_UNTIL(hold_call_count(fx) == 1);

    for (int i = 0; i < SHORT_TASKS; i++) {
        enqueue(fx, "short:job", "mixed", NULL);
    }
    WAIT_UNTIL(seen_count(fx) == SHORT_TASKS);
    /* A handler counts itself before it returns, and its done write
     * follows from the loop thread, so the active list is waited for. */
    WAIT_UNTIL(redis_llen(fx->base.redis, "asynq:{mixed}:active") == 1);
    assert_int_equal(hold_call_count(fx), 1);

    pthread_mutex_lock(&fx->mu);
    fx->hold = false;
    pthread_mutex_unlock(&fx->mu);
    WAIT_UNTIL(redis_llen(fx->base.redis, "asynq:{mixed}:active") == 0);
    assert_int_equal(hold_call_count(fx), 1);
    assert_int_equal(redis_get_int(fx->base.redis, "asynq:{mixed}:processed"),
                     SHORT_TASKS + 1);
}

/* A batch of jobs wakes the workers one after another. Tasks that keep
 * running must still end up on all workers at once. */
static void test_long_tasks_fill_every_worker(void **state)
{
    struct fixture *fx = *state;
    enum { WORKERS = 6 };

    fx->hold = true;
    assert_int_equal(casynq_config_set_concurrency(fx->base.cfg, WORKERS), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "long", 1), 0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "long:", hold_until_released, fx),
            0);
    for (int i = 0; i < WORKERS + 2; i++) {
        enqueue(fx, "long:job", "long", NULL);
    }
    start_server(fx);
    WAIT_UNTIL(hold_call_count(fx) == WORKERS);
    assert_int_equal(redis_llen(fx->base.redis, "asynq:{long}:active"),
                     WORKERS);
    assert_int_equal(redis_llen(fx->base.redis, "asynq:{long}:pending"), 2);

    pthread_mutex_lock(&fx->mu);
    fx->hold = false;
    pthread_mutex_unlock(&fx->mu);
    WAIT_UNTIL(redis_llen(fx->base.redis, "asynq:{long}:active") == 0 &&
               redis_llen(fx->base.redis, "asynq:{long}:pending") == 0);
    assert_int_equal(hold_call_count(fx), WORKERS + 2);
}

/* Returns how many clients CLIENT LIST shows blocked in BLMOVE. */
static int blocked_in_blmove(struct fixture *fx)
{
    redisReply *r = redis_run(fx->base.redis, "CLIENT LIST");
    int n = 0;

    for (const char *line = r->str; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        char buf[1024];

        snprintf(buf, sizeof(buf), "%.*s", (int)len, line);
        if (strstr(buf, " cmd=blmove") != NULL &&
            strstr(buf, " flags=b") != NULL) {
            n++;
        }
        line = end != NULL ? end + 1 : NULL;
    }
    freeReplyObject(r);
    return n;
}

/* Returns the number of BLMOVE calls Redis has run. */
static long long blmove_calls(struct fixture *fx)
{
    redisReply *r = redis_run(fx->base.redis, "INFO commandstats");
    const char *at = strstr(r->str, "cmdstat_blmove:calls=");
    long long calls =
            at != NULL ? atoll(at + strlen("cmdstat_blmove:calls=")) : 0;

    freeReplyObject(r);
    return calls;
}

/* An idle server waits in BLMOVE on its queue's pending list, runs a task
 * enqueued there, and waits again afterwards.
 * NOTE: the poll would find the task too within the bounded wait, so the
 * pickup alone does not prove that the wake started it. The BLMOVE checks
 * do, and the latency benchmark shows the effect. */
static void test_idle_server_waits_on_pending(void **state)
{
    struct fixture *fx = *state;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "wake", 1), 0);
    assert_int_equal(
            casynq_config_set_task_check_interval_ms(fx->base.cfg, 60000), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    start_server(fx);
    WAIT_UNTIL(blocked_in_blmove(fx) == 1);

    enqueue(fx, "prio:job", "wake", NULL);
    WAIT_UNTIL(seen_count(fx) == 1);
    WAIT_UNTIL(redis_llen(fx->base.redis, "asynq:{wake}:active") == 0);
    WAIT_UNTIL(blocked_in_blmove(fx) == 1);
}

/* A paused queue with pending tasks ends every wait at once. The server
 * must then fall back to its poll instead of waiting again in a loop,
 * and the waits must leave the pending list as it was. */
static void test_paused_queue_does_not_spin_the_wait(void **state)
{
    struct fixture *fx = *state;
    char ids[3][CASYNQ__UUID_LEN + 1];
    long long before;
    long long after;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "stuck", 1), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    for (int i = 0; i < 3; i++) {
        enqueue(fx, "prio:job", "stuck", ids[i]);
    }
    freeReplyObject(redis_run(fx->base.redis, "SET asynq:{stuck}:paused 1"));
    start_server(fx);
    WAIT_UNTIL(blmove_calls(fx) > 0);
    before = blmove_calls(fx);
    sleep_ms(1000);
    after = blmove_calls(fx);

    /* The poll runs every 50 ms here and each poll may add one wait, so
     * a second allows about 20; a loop would run thousands. */
    if (after - before > 200) {
        fail_msg("%lld BLMOVE calls in one second on a paused queue",
                 after - before);
    }
    assert_int_equal(seen_count(fx), 0);
    assert_list(fx->base.redis, "asynq:{stuck}:pending",
                (const char *const[]){ids[2], ids[1], ids[0]}, 3);
}

/* Without BLMOVE (Redis before 6.2, here an ACL user without it) the
 * server still finds tasks by polling. */
static void test_server_without_blmove_still_polls(void **state)
{
    struct fixture *fx = *state;
    struct casynq_redis_options *opts =
            broker_tcp_options(fx->base.server->port);

    freeReplyObject(redis_run(fx->base.redis,
                              "ACL SETUSER noblock reset on >noblock-pw ~* "
                              "&* +@all -blmove"));
    assert_int_equal(
            casynq_redis_options_set_auth(opts, "noblock", "noblock-pw"), 0);
    assert_int_equal(casynq_config_set_redis(fx->base.cfg, opts), 0);
    casynq_redis_options_destroy(opts);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "poll", 1), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "prio:", record_queue, fx),
                     0);
    start_server(fx);
    sleep_ms(200);
    enqueue(fx, "prio:job", "poll", NULL);
    WAIT_UNTIL(seen_count(fx) == 1);
    assert_int_equal(blocked_in_blmove(fx), 0);
    /* Redis drops the user's connections with it, so shut down first. */
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);
    freeReplyObject(redis_run(fx->base.redis, "ACL DELUSER noblock"));
}

#define SERVER_TEST(fn)                                                        \
    cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
            SERVER_TEST(test_strict_priority_critical_before_low),
            SERVER_TEST(test_strict_priority_equal_weights_by_name),
            SERVER_TEST(test_weighted_priority_shares_follow_weights),
            SERVER_TEST(test_paused_queue_tasks_stay_pending),
            SERVER_TEST(test_long_task_does_not_hold_back_short_ones),
            SERVER_TEST(test_long_tasks_fill_every_worker),
            SERVER_TEST(test_idle_server_waits_on_pending),
            SERVER_TEST(test_paused_queue_does_not_spin_the_wait),
            SERVER_TEST(test_server_without_blmove_still_polls),
    };

    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
