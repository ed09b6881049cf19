/* Integration tests of task outcomes in the worker server: success with
 * and without retention, retry, archive, revoke, a missing handler, the
 * is-failure predicate, the error handler, timeouts, deadlines and
 * cancellation through asynq's cancel channel.
 *
 * Each test runs an in-process server (config, mux and server API) with
 * concurrency 1 against a real redis-server, enqueues tasks with the public
 * client and reads Redis directly to check the outcome. Waits poll Redis
 * or the handlers' records with an upper bound and never assert how long
 * something took. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
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

#define QUEUE "jobs"

/* The name of one of QUEUE's keys, as a string literal. */
#define QUEUE_KEY(suffix) "asynq:{" QUEUE "}:" suffix

/* How long the waiting handler sleeps unless cancelled, and how long the
 * spinning handler keeps its thread while ignoring cancellation. */
#define HANDLER_WAIT_MS 10000
#define HANDLER_SPIN_MS 3000

/* State shared by one test, its handlers, the server's callbacks and the
 * teardown. Handlers run on worker threads and callbacks on the server's
 * loop thread, so scalars are atomic and the rest is guarded by mu. */
struct fixture {
    struct server_fixture base;

    _Atomic int calls;           /* handler calls of any kind */
    _Atomic bool started;        /* a waiting or spinning handler began */
    _Atomic bool returned;       /* that handler returned */
    _Atomic int wait_rc;         /* what casynq_ctx_wait() returned */
    _Atomic bool saw_cancelled;  /* casynq_ctx_is_cancelled() after it */
    _Atomic int64_t deadline_ms; /* casynq_ctx_deadline_unix_ms() */
    _Atomic int64_t woke_ms;     /* unix ms when the wait returned */
    _Atomic int is_failure_calls;

    pthread_mutex_t mu;
    int retry_counts[8];  /* casynq_ctx_retry_count() per call */
    int delay_retried[8]; /* `retried` passed to the delay fn */
    int ndelay;
    int nerrors; /* error handler calls */
    char error_id[64];
    char error_queue[64];
    char error_type[64];
    char error_msg[256];
    int error_code;
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
    rc |= casynq_config_set_queue(fx->base.cfg, QUEUE, 1);
    *state = fx;
    return rc == 0 ? 0 : -1;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;

    if (fx == NULL) {
        return 0;
    }
    /* Destroying a running server shuts it down first, so no handler or
     * callback touches the fixture after this line. */
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

/* Returns new enqueue options for QUEUE. */
static struct casynq_enqueue_options *options_new(void)
{
    struct casynq_enqueue_options *opts = NULL;

    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(opts, QUEUE), 0);
    return opts;
}

/* Enqueues a task through the public client and stores its ID in id_out.
 * Takes opts (NULL for QUEUE with the defaults). */
static void enqueue(struct fixture *fx, const char *type, const void *payload,
                    size_t payload_len, struct casynq_enqueue_options *opts,
                    char id_out[CASYNQ__UUID_LEN + 1])
{
    struct casynq_task *task = NULL;
    struct casynq_task_info *info = NULL;
    int rc;

    if (opts == NULL) {
        opts = options_new();
    }
    assert_int_equal(casynq_task_create(type, payload, payload_len, &task), 0);
    rc = casynq_client_enqueue(fx->base.client, task, opts, &info);
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
    if (rc != 0) {
        fail_msg("enqueue of a %s task returned %s: %s", type,
                 casynq_err_name(rc),
                 casynq_client_last_error(fx->base.client));
    }
    snprintf(id_out, CASYNQ__UUID_LEN + 1, "%s", casynq_task_info_id(info));
    casynq_task_info_destroy(info);
}

/* Returns the key of a task's hash in QUEUE. The text lives in one of
 * keyf()'s rotating buffers, so use it at once and do not keep it. */
static const char *task_key(const char *id)
{
    return keyf("asynq:{%s}:t:%s", QUEUE, id);
}

static bool key_exists(struct fixture *fx, const char *key)
{
    redisReply *r = redis_run(fx->base.redis, "EXISTS %s", key);
    bool found = r->integer == 1;

    freeReplyObject(r);
    return found;
}

static bool zset_has(struct fixture *fx, const char *key, const char *member)
{
    redisReply *r = redis_run(fx->base.redis, "ZSCORE %s %s", key, member);
    bool found = r->type != REDIS_REPLY_NIL;

    freeReplyObject(r);
    return found;
}

static const char *daily_key(const char *kind, int64_t now_s)
{
    char date[11];

    utc_date(now_s, date);
    return keyf("asynq:{%s}:%s:%s", QUEUE, kind, date);
}

/* Asserts the processed and failed counters of QUEUE: daily keys with a
 * 90 day expiry and totals that never expire, or no keys at all for 0. */
static void assert_stats(struct fixture *fx, long long processed,
                         long long failed)
{
    int64_t now_s = casynq__now_unix_s();
    char total[64];

    snprintf(total, sizeof(total), "asynq:{%s}:processed", QUEUE);
    if (processed == 0) {
        assert_key_missing(fx->base.redis, daily_key("processed", now_s));
        assert_key_missing(fx->base.redis, total);
    } else {
        assert_counters(fx->base.redis, daily_key("processed", now_s), total,
                        processed, now_s);
    }
    snprintf(total, sizeof(total), "asynq:{%s}:failed", QUEUE);
    if (failed == 0) {
        assert_key_missing(fx->base.redis, daily_key("failed", now_s));
        assert_key_missing(fx->base.redis, total);
    } else {
        assert_counters(fx->base.redis, daily_key("failed", now_s), total,
                        failed, now_s);
    }
}

/* Asserts that a failed task's message records the failure: retried,
 * error_msg, and last_failed_at within [from_s, to_s]. */
static void assert_failure_recorded(struct fixture *fx, const char *id,
                                    int retried, const char *error_msg,
                                    int64_t from_s, int64_t to_s)
{
    Asynq__TaskMessage *msg = redis_hget_msg(fx->base.redis, task_key(id));

    assert_string_equal(msg->id, id);
    assert_int_equal(msg->retried, retried);
    assert_string_equal(msg->error_msg, error_msg);
    assert_in_range(msg->last_failed_at, from_s, to_s);
    casynq__msg_free(msg);
}

/* Asserts that the task left the active list and the lease set. */
static void assert_not_active(struct fixture *fx, const char *id)
{
    redisReply *r =
            redis_run(fx->base.redis, "LPOS asynq:{%s}:active %s", QUEUE, id);

    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    assert_zset_lacks(fx->base.redis, QUEUE_KEY("lease"), id);
}

/* ------------------------------------------------------------------------
 * Handlers. None of them may call a cmocka assertion, because they run on
 * worker threads.
 */

/* Succeeds, and stores the payload as the task's result when there is
 * one. */
static int handle_ok(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    struct fixture *fx = ud;
    size_t len = 0;
    const void *payload = casynq_task_payload(task, &len);

    atomic_fetch_add(&fx->calls, 1);
    if (payload != NULL && len > 0 &&
        casynq_ctx_write_result(ctx, payload, len) != (int64_t)len) {
        return casynq_ctx_fail(ctx, "result write of %zu bytes failed", len);
    }
    return 0;
}

static int handle_boom(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    return casynq_ctx_fail(ctx, "boom %d", 1);
}

/* Fails on its first two calls and succeeds on the third. */
static int handle_flaky(struct casynq_ctx *ctx, const struct casynq_task *task,
                        void *ud)
{
    struct fixture *fx = ud;
    int call = atomic_fetch_add(&fx->calls, 1);

    (void)task;
    pthread_mutex_lock(&fx->mu);
    if (call < 8) {
        fx->retry_counts[call] = casynq_ctx_retry_count(ctx);
    }
    pthread_mutex_unlock(&fx->mu);
    if (call < 2) {
        return casynq_ctx_fail(ctx, "attempt %d failed", call + 1);
    }
    return 0;
}

static int handle_skip(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    return casynq_ctx_skip_retry(ctx, "bad input %s", "x");
}

static int handle_revoke(struct casynq_ctx *ctx, const struct casynq_task *task,
                         void *ud)
{
    struct fixture *fx = ud;

    (void)ctx;
    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    return CASYNQ_EREVOKE;
}

/* Sleeps HANDLER_WAIT_MS unless the context is cancelled, and records
 * what it observed. */
static int handle_wait(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;
    int rc;

    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    atomic_store(&fx->deadline_ms, casynq_ctx_deadline_unix_ms(ctx));
    atomic_store(&fx->started, true);
    rc = casynq_ctx_wait(ctx, HANDLER_WAIT_MS);
    atomic_store(&fx->woke_ms, casynq__now_unix_ns() / 1000000);
    atomic_store(&fx->wait_rc, rc);
    atomic_store(&fx->saw_cancelled, casynq_ctx_is_cancelled(ctx));
    atomic_store(&fx->returned, true);
    return rc;
}

/* Keeps its thread busy for HANDLER_SPIN_MS and never looks at the
 * context, as a handler that ignores cancellation does. */
static int handle_spin(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;
    int64_t until = casynq__mono_ms() + HANDLER_SPIN_MS;

    (void)ctx;
    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    atomic_store(&fx->started, true);
    while (casynq__mono_ms() < until) {
        continue;
    }
    atomic_store(&fx->returned, true);
    return 0;
}

static void register_handlers(struct fixture *fx)
{
    assert_int_equal(casynq_mux_handle(fx->base.mux, "ok:", handle_ok, fx), 0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "fail:boom", handle_boom, fx), 0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "fail:flaky", handle_flaky, fx), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "skip:", handle_skip, fx),
                     0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "revoke:", handle_revoke, fx), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "wait:", handle_wait, fx),
                     0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "spin:", handle_spin, fx),
                     0);
}

/* ------------------------------------------------------------------------
 * Success
 */

static void test_success_done_deletes_task_and_counts(void **state)
{
    struct fixture *fx = *state;
    char ids[3][CASYNQ__UUID_LEN + 1];

    register_handlers(fx);
    for (int i = 0; i < 3; i++) {
        enqueue(fx, "ok:plain", NULL, 0, NULL, ids[i]);
    }

    start_server(fx);
    for (int i = 0; i < 3; i++) {
        WAIT_UNTIL(!key_exists(fx, task_key(ids[i])));
    }

    assert_int_equal(atomic_load(&fx->calls), 3);
    for (int i = 0; i < 3; i++) {
        assert_not_active(fx, ids[i]);
    }
    assert_key_missing(fx->base.redis, QUEUE_KEY("completed"));
    assert_stats(fx, 3, 0);
}

static void test_success_with_retention_marks_completed(void **state)
{
    struct fixture *fx = *state;
    static const char result[] = {'r', 'e', 's', 0, 'u', 'l', 't'};
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;
    Asynq__TaskMessage *msg;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_retention_s(opts, 3600), 0);
    before_s = casynq__now_unix_s();
    /* The handler writes the payload back as the result, NUL included. */
    enqueue(fx, "ok:result", result, sizeof(result), opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("completed"), id));
    after_s = casynq__now_unix_s();

    assert_hash_field(fx->base.redis, task_key(id), "state", "completed");
    assert_hash_field_bytes(fx->base.redis, task_key(id), "result", result,
                            sizeof(result));
    assert_in_range(redis_zscore(fx->base.redis, QUEUE_KEY("completed"), id),
                    before_s + 3600, after_s + 3600);
    msg = redis_hget_msg(fx->base.redis, task_key(id));
    assert_in_range(msg->completed_at, before_s, after_s);
    assert_int_equal(msg->retention, 3600);
    casynq__msg_free(msg);
    assert_not_active(fx, id);
    assert_stats(fx, 1, 0);
}

/* ------------------------------------------------------------------------
 * Failure, retry and archive
 */

static void test_failure_goes_to_retry_with_error(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    before_s = casynq__now_unix_s();
    enqueue(fx, "fail:boom", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    after_s = casynq__now_unix_s();

    /* asynq's default delay for a task not yet retried is 15 to 44 s. */
    assert_in_range(redis_zscore(fx->base.redis, retry_key, id), before_s + 15,
                    after_s + 44);
    assert_hash_field(fx->base.redis, task_key(id), "state", "retry");
    assert_failure_recorded(fx, id, 1, "boom 1", before_s, after_s);
    assert_not_active(fx, id);
    assert_stats(fx, 1, 1);
    assert_int_equal(atomic_load(&fx->calls), 1);
}

/* A retry delay function that makes every retry due at once, and records
 * the `retried` value it is given. */
static int64_t retry_now(int retried, int err, const char *errmsg,
                         const struct casynq_task *task, void *ud)
{
    struct fixture *fx = ud;

    (void)err;
    (void)errmsg;
    (void)task;
    pthread_mutex_lock(&fx->mu);
    if (fx->ndelay < 8) {
        fx->delay_retried[fx->ndelay] = retried;
    }
    fx->ndelay++;
    pthread_mutex_unlock(&fx->mu);
    return 0;
}

static void test_failure_custom_delay_retries_until_success(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];

    register_handlers(fx);
    assert_int_equal(casynq_config_set_retry_delay(fx->base.cfg, retry_now, fx),
                     0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 3), 0);
    enqueue(fx, "fail:flaky", NULL, 0, opts, id);

    /* The forwarder moves each due retry back to pending. */
    start_server(fx);
    WAIT_UNTIL(!key_exists(fx, task_key(id)));
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    assert_int_equal(atomic_load(&fx->calls), 3);
    assert_int_equal(fx->retry_counts[0], 0);
    assert_int_equal(fx->retry_counts[1], 1);
    assert_int_equal(fx->retry_counts[2], 2);
    assert_int_equal(fx->ndelay, 2);
    assert_int_equal(fx->delay_retried[0], 0);
    assert_int_equal(fx->delay_retried[1], 1);
    assert_zset_lacks(fx->base.redis, QUEUE_KEY("retry"), id);
    assert_not_active(fx, id);
    assert_stats(fx, 3, 2);
}

static void test_failure_max_retry_zero_archives(void **state)
{
    struct fixture *fx = *state;
    const char *archived_key = QUEUE_KEY("archived");
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "fail:boom", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, archived_key, id));
    after_s = casynq__now_unix_s();

    assert_in_range(redis_zscore(fx->base.redis, archived_key, id), before_s,
                    after_s);
    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    /* Archiving leaves retried as it was. */
    assert_failure_recorded(fx, id, 0, "boom 1", before_s, after_s);
    assert_zset_lacks(fx->base.redis, QUEUE_KEY("retry"), id);
    assert_not_active(fx, id);
    assert_stats(fx, 1, 1);
}

static void test_skip_retry_archives_at_once(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 5), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "skip:x", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("archived"), id));
    after_s = casynq__now_unix_s();

    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    assert_failure_recorded(fx, id, 0, "bad input x", before_s, after_s);
    assert_zset_lacks(fx->base.redis, QUEUE_KEY("retry"), id);
    assert_int_equal(atomic_load(&fx->calls), 1);
    assert_stats(fx, 1, 1);
}

static void test_revoke_deletes_without_failure(void **state)
{
    struct fixture *fx = *state;
    char id[CASYNQ__UUID_LEN + 1];

    register_handlers(fx);
    enqueue(fx, "revoke:x", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(!key_exists(fx, task_key(id)));

    assert_int_equal(atomic_load(&fx->calls), 1);
    assert_not_active(fx, id);
    assert_key_missing(fx->base.redis, QUEUE_KEY("archived"));
    assert_key_missing(fx->base.redis, QUEUE_KEY("retry"));
    assert_stats(fx, 1, 0);
}

static void test_unknown_type_retries_with_not_found_error(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    before_s = casynq__now_unix_s();
    enqueue(fx, "nope:x", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    after_s = casynq__now_unix_s();

    assert_failure_recorded(fx, id, 1, "handler not found for task \"nope:x\"",
                            before_s, after_s);
    assert_in_range(redis_zscore(fx->base.redis, retry_key, id), before_s + 15,
                    after_s + 44);
    assert_int_equal(atomic_load(&fx->calls), 0);
    assert_stats(fx, 1, 1);
}

/* An is-failure predicate that counts nothing as a failure. */
static bool never_failure(int err, const char *errmsg, void *ud)
{
    struct fixture *fx = ud;

    (void)err;
    (void)errmsg;
    atomic_fetch_add(&fx->is_failure_calls, 1);
    return false;
}

static void test_is_failure_false_keeps_retried_and_counters(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(
            casynq_config_set_is_failure(fx->base.cfg, never_failure, fx), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "fail:boom", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    after_s = casynq__now_unix_s();

    assert_hash_field(fx->base.redis, task_key(id), "state", "retry");
    assert_failure_recorded(fx, id, 0, "boom 1", before_s, after_s);
    assert_in_range(redis_zscore(fx->base.redis, retry_key, id), before_s + 15,
                    after_s + 44);
    assert_int_equal(atomic_load(&fx->is_failure_calls), 1);
    assert_stats(fx, 0, 0);
}

/* An error handler that records its arguments. */
static void record_error(const struct casynq_task *task, const char *task_id,
                         const char *queue, int err, const char *errmsg,
                         void *ud)
{
    struct fixture *fx = ud;

    pthread_mutex_lock(&fx->mu);
    fx->nerrors++;
    snprintf(fx->error_id, sizeof(fx->error_id), "%s", task_id);
    snprintf(fx->error_queue, sizeof(fx->error_queue), "%s", queue);
    snprintf(fx->error_type, sizeof(fx->error_type), "%s",
             casynq_task_type(task));
    snprintf(fx->error_msg, sizeof(fx->error_msg), "%s", errmsg);
    fx->error_code = err;
    pthread_mutex_unlock(&fx->mu);
}

static void test_error_handler_receives_task_and_error(void **state)
{
    struct fixture *fx = *state;
    char id[CASYNQ__UUID_LEN + 1];

    register_handlers(fx);
    assert_int_equal(
            casynq_config_set_error_handler(fx->base.cfg, record_error, fx), 0);
    enqueue(fx, "fail:boom", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("retry"), id));
    /* The error handler runs before the retry is written. After shutdown
     * its records are safe to read without the lock. */
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    assert_int_equal(fx->nerrors, 1);
    assert_string_equal(fx->error_id, id);
    assert_string_equal(fx->error_queue, QUEUE);
    assert_string_equal(fx->error_type, "fail:boom");
    assert_string_equal(fx->error_msg, "boom 1");
    assert_int_equal(fx->error_code, CASYNQ_EHANDLER);
}

/* ------------------------------------------------------------------------
 * Timeouts, deadlines and cancellation
 */

static void test_timeout_cooperative_handler_retries(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(opts, 1), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "wait:x", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    after_s = casynq__now_unix_s();
    WAIT_UNTIL(atomic_load(&fx->returned));

    assert_hash_field(fx->base.redis, task_key(id), "state", "retry");
    assert_failure_recorded(fx, id, 1, "context deadline exceeded", before_s,
                            after_s);
    assert_int_equal(atomic_load(&fx->wait_rc), CASYNQ_ECANCELED);
    assert_true(atomic_load(&fx->saw_cancelled));
    assert_stats(fx, 1, 1);
}

static void test_timeout_cooperative_max_retry_zero_archives(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(opts, 1), 0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "wait:x", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("archived"), id));
    after_s = casynq__now_unix_s();
    WAIT_UNTIL(atomic_load(&fx->returned));

    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    assert_failure_recorded(fx, id, 0, "context deadline exceeded", before_s,
                            after_s);
    assert_int_equal(atomic_load(&fx->wait_rc), CASYNQ_ECANCELED);
    assert_stats(fx, 1, 1);
}

static void test_timeout_spinning_handler_archived_while_running(void **state)
{
    struct fixture *fx = *state;
    const char *archived_key = QUEUE_KEY("archived");
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    char next_id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(opts, 1), 0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    before_s = casynq__now_unix_s();
    enqueue(fx, "spin:x", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, archived_key, id));
    after_s = casynq__now_unix_s();
    /* This checks ordering, not timing. The outcome is written at the
     * deadline, before the handler that ignores cancellation returns. */
    assert_false(atomic_load(&fx->returned));
    assert_true(atomic_load(&fx->started));
    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    assert_failure_recorded(fx, id, 0, "context deadline exceeded", before_s,
                            after_s);

    /* Once the handler returns, its worker takes the next task, and the
     * late success changes nothing about the archived task. */
    WAIT_UNTIL(atomic_load(&fx->returned));
    enqueue(fx, "ok:after", NULL, 0, NULL, next_id);
    WAIT_UNTIL(!key_exists(fx, task_key(next_id)));

    assert_int_equal(atomic_load(&fx->calls), 2);
    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    assert_true(zset_has(fx, archived_key, id));
    assert_stats(fx, 2, 1);
}

static void test_deadline_option_cancels_at_deadline(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;
    int64_t deadline_s;

    register_handlers(fx);
    /* Two seconds ahead, so that the deadline cannot pass before dispatch
     * even when the current second is nearly over. */
    before_s = casynq__now_unix_s();
    deadline_s = before_s + 2;
    assert_int_equal(
            casynq_enqueue_options_set_deadline_unix_s(opts, deadline_s), 0);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(opts, 3600), 0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    enqueue(fx, "wait:x", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("archived"), id));
    after_s = casynq__now_unix_s();
    WAIT_UNTIL(atomic_load(&fx->returned));

    /* The earlier of start + timeout and the deadline applies. */
    assert_int_equal(atomic_load(&fx->deadline_ms), deadline_s * 1000);
    assert_int_equal(atomic_load(&fx->wait_rc), CASYNQ_ECANCELED);
    /* The context is never cancelled before its deadline (an ordering
     * check against the wall clock). */
    assert_true(atomic_load(&fx->woke_ms) >= deadline_s * 1000);
    assert_true(after_s >= deadline_s);
    assert_failure_recorded(fx, id, 0, "context deadline exceeded", deadline_s,
                            after_s);
}

static void test_deadline_passed_at_dispatch_skips_handler(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new();
    char id[CASYNQ__UUID_LEN + 1];
    char next_id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;

    register_handlers(fx);
    before_s = casynq__now_unix_s();
    /* The client accepts a deadline in the past, as asynq's does. */
    assert_int_equal(
            casynq_enqueue_options_set_deadline_unix_s(opts, before_s - 10), 0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    enqueue(fx, "ok:late", NULL, 0, opts, id);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, QUEUE_KEY("archived"), id));
    after_s = casynq__now_unix_s();

    assert_int_equal(atomic_load(&fx->calls), 0);
    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    assert_failure_recorded(fx, id, 0, "context deadline exceeded", before_s,
                            after_s);
    assert_not_active(fx, id);
    assert_stats(fx, 1, 1);

    /* The worker slot was never taken, so the next task runs. */
    enqueue(fx, "ok:next", NULL, 0, NULL, next_id);
    WAIT_UNTIL(!key_exists(fx, task_key(next_id)));
    assert_int_equal(atomic_load(&fx->calls), 1);
}

/* Returns how many clients subscribe to asynq's cancel channel. */
static long long cancel_subscribers(struct fixture *fx)
{
    redisReply *r = redis_run(fx->base.redis, "PUBSUB NUMSUB asynq:cancel");
    long long n = -1;

    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        n = r->element[1]->integer;
    }
    freeReplyObject(r);
    return n;
}

static void test_cancel_request_retries_with_context_canceled(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_s;
    int64_t after_s;
    redisReply *r;

    register_handlers(fx);
    before_s = casynq__now_unix_s();
    enqueue(fx, "wait:x", NULL, 0, NULL, id);

    start_server(fx);
    WAIT_UNTIL(atomic_load(&fx->started));
    WAIT_UNTIL(cancel_subscribers(fx) >= 1);
    /* Cancel as asynq's Inspector does: publish the bare task ID. */
    r = redis_run(fx->base.redis, "PUBLISH asynq:cancel %s", id);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    after_s = casynq__now_unix_s();
    WAIT_UNTIL(atomic_load(&fx->returned));

    assert_hash_field(fx->base.redis, task_key(id), "state", "retry");
    assert_failure_recorded(fx, id, 1, "context canceled", before_s, after_s);
    assert_true(atomic_load(&fx->saw_cancelled));
    assert_int_equal(atomic_load(&fx->wait_rc), CASYNQ_ECANCELED);
    assert_stats(fx, 1, 1);
}

#define SERVER_TEST(fn)                                                        \
    cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
            SERVER_TEST(test_success_done_deletes_task_and_counts),
            SERVER_TEST(test_success_with_retention_marks_completed),
            SERVER_TEST(test_failure_goes_to_retry_with_error),
            SERVER_TEST(test_failure_custom_delay_retries_until_success),
            SERVER_TEST(test_failure_max_retry_zero_archives),
            SERVER_TEST(test_skip_retry_archives_at_once),
            SERVER_TEST(test_revoke_deletes_without_failure),
            SERVER_TEST(test_unknown_type_retries_with_not_found_error),
            SERVER_TEST(test_is_failure_false_keeps_retried_and_counters),
            SERVER_TEST(test_error_handler_receives_task_and_error),
            SERVER_TEST(test_timeout_cooperative_handler_retries),
            SERVER_TEST(test_timeout_cooperative_max_retry_zero_archives),
            SERVER_TEST(test_timeout_spinning_handler_archived_while_running),
            SERVER_TEST(test_deadline_option_cancels_at_deadline),
            SERVER_TEST(test_deadline_passed_at_dispatch_skips_handler),
            SERVER_TEST(test_cancel_request_retries_with_context_canceled),
    };

    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
