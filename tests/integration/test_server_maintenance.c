/* Integration tests of the worker server's background work and lifecycle:
 * the forwarder, the janitor, archive trimming, the heartbeat, stop and
 * shutdown, and the checks on the configuration and the connection.
 *
 * Each test runs an in-process server (config, mux and server API) against
 * a real redis-server, enqueues tasks with the public client and reads
 * Redis directly to check the outcome. Waits poll Redis or the handlers'
 * records with an upper bound and never assert how long something took. */
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "broker_helpers.h"
#include "server_fixture.h"
#include "util.h"

/* Upper bound for every wait on the server, in milliseconds. The heartbeat
 * runs every 5 s, so waits for it need a few beats of room. */
#define WAIT_MS 20000
#define POLL_MS 10

#define QUEUE "jobs"

/* The name of one of QUEUE's keys, as a string literal. */
#define QUEUE_KEY(suffix) "asynq:{" QUEUE "}:" suffix

/* State shared by one test, its handlers and its teardown. Handlers run on
 * worker threads and touch only the atomics. */
struct fixture {
    struct server_fixture base;

    _Atomic int calls;         /* handler calls of any kind */
    _Atomic int64_t called_ms; /* unix ms of the last handler call */
    _Atomic int retry_count;   /* casynq_ctx_retry_count() of that call */
    _Atomic bool started;      /* the holding handler began */
    _Atomic bool release;      /* the test lets the holding handler end */
    _Atomic bool returned;     /* the holding handler returned */
    _Atomic bool shut_down;    /* casynq_server_shutdown() returned */
};

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    int rc;

    if (fx == NULL) {
        return -1;
    }
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
    /* Destroying a running server shuts it down first, so no handler
     * touches the fixture after this line. */
    atomic_store(&fx->release, true);
    server_fixture_finish(&fx->base);
    free(fx);
    *state = NULL;
    return 0;
}

static void start_server(struct fixture *fx)
{
    server_fixture_start(&fx->base);
}

/* Returns new enqueue options for `queue`. */
static struct casynq_enqueue_options *options_new(const char *queue)
{
    struct casynq_enqueue_options *opts = NULL;

    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(opts, queue), 0);
    return opts;
}

/* Enqueues a task with no payload through the public client and stores
 * its ID in id_out. Takes opts (NULL for QUEUE with the defaults). */
static void enqueue(struct fixture *fx, const char *type,
                    struct casynq_enqueue_options *opts,
                    char id_out[CASYNQ__UUID_LEN + 1])
{
    struct casynq_task *task = NULL;
    struct casynq_task_info *info = NULL;
    int rc;

    if (opts == NULL) {
        opts = options_new(QUEUE);
    }
    assert_int_equal(casynq_task_create(type, NULL, 0, &task), 0);
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

static bool hash_has(struct fixture *fx, const char *key, const char *field)
{
    redisReply *r = redis_run(fx->base.redis, "HEXISTS %s %s", key, field);
    bool found = r->integer == 1;

    freeReplyObject(r);
    return found;
}

/* ------------------------------------------------------------------------
 * Handlers. None of them may call a cmocka assertion, because they run on
 * worker threads.
 */

/* Succeeds and records when it ran. */
static int handle_ok(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    atomic_store(&fx->called_ms, casynq__now_unix_ns() / 1000000);
    atomic_store(&fx->retry_count, casynq_ctx_retry_count(ctx));
    atomic_fetch_add(&fx->calls, 1);
    return 0;
}

/* Fails on the first attempt of each task and succeeds on later ones. */
static int handle_fail_once(struct casynq_ctx *ctx,
                            const struct casynq_task *task, void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    atomic_store(&fx->retry_count, casynq_ctx_retry_count(ctx));
    atomic_fetch_add(&fx->calls, 1);
    if (casynq_ctx_retry_count(ctx) == 0) {
        return casynq_ctx_fail(ctx, "first attempt fails");
    }
    return 0;
}

static int handle_fail(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;

    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    return casynq_ctx_fail(ctx, "always fails");
}

/* Runs until the test sets fx->release or the context is cancelled, with
 * a 60 s limit of its own. */
static int handle_hold(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct fixture *fx = ud;
    int64_t until = casynq__mono_ms() + 60000;

    (void)task;
    atomic_fetch_add(&fx->calls, 1);
    atomic_store(&fx->started, true);
    while (!atomic_load(&fx->release) && casynq__mono_ms() < until) {
        if (casynq_ctx_wait(ctx, 20) != 0) {
            break;
        }
    }
    atomic_store(&fx->returned, true);
    return 0;
}

static void register_handlers(struct fixture *fx)
{
    assert_int_equal(casynq_mux_handle(fx->base.mux, "ok:", handle_ok, fx), 0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "fail:once", handle_fail_once, fx),
            0);
    assert_int_equal(
            casynq_mux_handle(fx->base.mux, "fail:always", handle_fail, fx), 0);
    assert_int_equal(casynq_mux_handle(fx->base.mux, "hold:", handle_hold, fx),
                     0);
}

/* ------------------------------------------------------------------------
 * Forwarder, janitor and archive trimming
 */

static void test_forwarder_scheduled_task_runs_when_due(void **state)
{
    struct fixture *fx = *state;
    const char *scheduled_key = QUEUE_KEY("scheduled");
    struct casynq_enqueue_options *opts = options_new(QUEUE);
    char id[CASYNQ__UUID_LEN + 1];
    int64_t due_s;

    register_handlers(fx);
    assert_int_equal(casynq_enqueue_options_set_process_in_s(opts, 1), 0);
    enqueue(fx, "ok:later", opts, id);
    assert_hash_field(fx->base.redis, task_key(id), "state", "scheduled");
    due_s = redis_zscore(fx->base.redis, scheduled_key, id);

    start_server(fx);
    WAIT_UNTIL(!key_exists(fx, task_key(id)));

    assert_int_equal(atomic_load(&fx->calls), 1);
    /* The task ran once its second was reached, never before (an ordering
     * check against the wall clock). */
    assert_true(atomic_load(&fx->called_ms) >= due_s * 1000);
    assert_key_missing(fx->base.redis, scheduled_key);
}

static void test_forwarder_due_retry_task_runs(void **state)
{
    struct fixture *fx = *state;
    const char *retry_key = QUEUE_KEY("retry");
    char id[CASYNQ__UUID_LEN + 1];
    redisReply *r;

    register_handlers(fx);
    enqueue(fx, "fail:once", NULL, id);

    start_server(fx);
    /* The first failure schedules the retry 15 to 44 s ahead. */
    WAIT_UNTIL(zset_has(fx, retry_key, id));
    assert_int_equal(atomic_load(&fx->calls), 1);
    /* Make it due now, as if that time had passed. */
    r = redis_run(fx->base.redis, "ZADD %s XX %lld %s", retry_key,
                  (long long)casynq__now_unix_s() - 1, id);
    freeReplyObject(r);
    WAIT_UNTIL(!key_exists(fx, task_key(id)));

    assert_int_equal(atomic_load(&fx->calls), 2);
    assert_int_equal(atomic_load(&fx->retry_count), 1);
    assert_key_missing(fx->base.redis, retry_key);
}

static void test_janitor_deletes_expired_completed_task(void **state)
{
    struct fixture *fx = *state;
    const char *completed_key = QUEUE_KEY("completed");
    char expired[CASYNQ__UUID_LEN + 1];
    char kept[CASYNQ__UUID_LEN + 1];
    struct casynq_enqueue_options *opts;
    redisReply *r;

    register_handlers(fx);
    opts = options_new(QUEUE);
    assert_int_equal(casynq_enqueue_options_set_retention_s(opts, 3600), 0);
    enqueue(fx, "ok:expired", opts, expired);
    opts = options_new(QUEUE);
    assert_int_equal(casynq_enqueue_options_set_retention_s(opts, 3600), 0);
    enqueue(fx, "ok:kept", opts, kept);

    start_server(fx);
    WAIT_UNTIL(zset_has(fx, completed_key, expired));
    WAIT_UNTIL(zset_has(fx, completed_key, kept));
    /* Let one retention run out, as if its hour had passed. */
    r = redis_run(fx->base.redis, "ZADD %s XX %lld %s", completed_key,
                  (long long)casynq__now_unix_s() - 1, expired);
    freeReplyObject(r);
    WAIT_UNTIL(!key_exists(fx, task_key(expired)));

    assert_zset_lacks(fx->base.redis, completed_key, expired);
    assert_true(zset_has(fx, completed_key, kept));
    assert_hash_field(fx->base.redis, task_key(kept), "state", "completed");
}

static void test_archive_trims_to_max_size(void **state)
{
    struct fixture *fx = *state;
    const char *archived_key = QUEUE_KEY("archived");
    struct casynq_enqueue_options *opts = options_new(QUEUE);
    int64_t oldest_s = casynq__now_unix_s() - 20000;
    char id[CASYNQ__UUID_LEN + 1];
    redisReply *r;

    register_handlers(fx);
    /* 10,000 archived tasks, one second apart and all younger than the
     * 90 day age limit, sent as one pipeline. */
    for (int i = 0; i < 10000; i++) {
        redisAppendCommand(fx->base.redis, "ZADD %s %lld old-%d", archived_key,
                           (long long)(oldest_s + i), i);
        redisAppendCommand(fx->base.redis,
                           "HSET asynq:{%s}:t:old-%d state archived", QUEUE, i);
    }
    for (int i = 0; i < 20000; i++) {
        void *reply = NULL;

        assert_int_equal(redisGetReply(fx->base.redis, &reply), REDIS_OK);
        assert_int_not_equal(((redisReply *)reply)->type, REDIS_REPLY_ERROR);
        freeReplyObject(reply);
    }
    assert_int_equal(redis_zcard(fx->base.redis, archived_key), 10000);

    assert_int_equal(casynq_enqueue_options_set_max_retry(opts, 0), 0);
    enqueue(fx, "fail:always", opts, id);
    start_server(fx);
    WAIT_UNTIL(zset_has(fx, archived_key, id));

    /* The 10,001 members are trimmed to 9,999, so the two oldest go, with
     * their task hashes. */
    assert_int_equal(redis_zcard(fx->base.redis, archived_key), 9999);
    assert_zset_lacks(fx->base.redis, archived_key, "old-0");
    assert_zset_lacks(fx->base.redis, archived_key, "old-1");
    assert_key_missing(fx->base.redis, task_key("old-0"));
    assert_key_missing(fx->base.redis, task_key("old-1"));
    assert_true(zset_has(fx, archived_key, "old-2"));
    assert_key_exists(fx->base.redis, task_key("old-2"));
    assert_hash_field(fx->base.redis, task_key(id), "state", "archived");
    r = redis_run(fx->base.redis, "ZRANGE %s -1 -1", archived_key);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, id);
    freeReplyObject(r);
}

/* ------------------------------------------------------------------------
 * Heartbeat, stop and shutdown
 */

/* The keys a server writes in its heartbeat. */
struct server_keys {
    char server_key[512];  /* asynq:servers:{host:pid:id}, also the member */
    char workers_key[512]; /* asynq:workers:{host:pid:id}, also the member */
    char server_id[128];
};

/* Waits for the single member of asynq:servers and fills keys from it,
 * checking that it names this host and process. */
static void find_server_keys(struct fixture *fx, struct server_keys *keys)
{
    char host[256] = "";
    char prefix[300];
    redisReply *r;
    size_t len;

    WAIT_UNTIL(redis_zcard(fx->base.redis, "asynq:servers") == 1);
    r = redis_run(fx->base.redis, "ZRANGE asynq:servers 0 -1");
    assert_int_equal(r->elements, 1);
    snprintf(keys->server_key, sizeof(keys->server_key), "%s",
             r->element[0]->str);
    freeReplyObject(r);

    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    snprintf(prefix, sizeof(prefix), "asynq:servers:{%s:%d:", host,
             (int)getpid());
    len = strlen(keys->server_key);
    if (strncmp(keys->server_key, prefix, strlen(prefix)) != 0 ||
        keys->server_key[len - 1] != '}') {
        fail_msg("server key %s does not start with %s and end with }",
                 keys->server_key, prefix);
    }
    snprintf(keys->server_id, sizeof(keys->server_id), "%.*s",
             (int)(len - strlen(prefix) - 1),
             keys->server_key + strlen(prefix));
    snprintf(keys->workers_key, sizeof(keys->workers_key),
             "asynq:workers:{%s:%d:%s}", host, (int)getpid(), keys->server_id);
}

/* Returns the decoded ServerInfo at the server key, or NULL when it is
 * missing. Ownership: free with asynq__server_info__free_unpacked(). */
static Asynq__ServerInfo *read_server_info(struct fixture *fx,
                                           const struct server_keys *keys)
{
    redisReply *r = redis_run(fx->base.redis, "GET %s", keys->server_key);
    Asynq__ServerInfo *info = NULL;

    if (r->type == REDIS_REPLY_STRING) {
        info = asynq__server_info__unpack(NULL, r->len,
                                          (const uint8_t *)r->str);
        if (info == NULL) {
            freeReplyObject(r);
            fail_msg("the value at %s is not a valid ServerInfo",
                     keys->server_key);
        }
    }
    freeReplyObject(r);
    return info;
}

/* Returns whether the ServerInfo at the server key has status `status`. */
static bool server_status_is(struct fixture *fx, const struct server_keys *keys,
                             const char *status)
{
    Asynq__ServerInfo *info = read_server_info(fx, keys);
    bool same = info != NULL && strcmp(info->status, status) == 0;

    asynq__server_info__free_unpacked(info, NULL);
    return same;
}

static int64_t timestamp_ms(const Google__Protobuf__Timestamp *ts)
{
    assert_non_null(ts);
    return ts->seconds * 1000 + ts->nanos / 1000000;
}

static void assert_server_info(const Asynq__ServerInfo *info,
                               const struct server_keys *keys,
                               int64_t started_from_s, int64_t started_to_s)
{
    char host[256] = "";
    bool saw_high = false;
    bool saw_low = false;

    assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
    assert_string_equal(info->host, host);
    assert_int_equal(info->pid, (int)getpid());
    assert_string_equal(info->server_id, keys->server_id);
    assert_int_equal(info->concurrency, 2);
    assert_int_equal(info->n_queues, 2);
    for (size_t i = 0; i < info->n_queues; i++) {
        if (strcmp(info->queues[i]->key, "hb-high") == 0) {
            assert_int_equal(info->queues[i]->value, 3);
            saw_high = true;
        } else if (strcmp(info->queues[i]->key, "hb-low") == 0) {
            assert_int_equal(info->queues[i]->value, 1);
            saw_low = true;
        } else {
            fail_msg("ServerInfo lists queue \"%s\", which is not configured",
                     info->queues[i]->key);
        }
    }
    assert_true(saw_high);
    assert_true(saw_low);
    assert_true(info->strict_priority);
    assert_string_equal(info->status, "active");
    assert_non_null(info->start_time);
    assert_in_range(info->start_time->seconds, started_from_s, started_to_s);
    assert_int_equal(info->active_worker_count, 1);
}

static void assert_worker_info(struct fixture *fx,
                               const struct server_keys *keys, const char *id,
                               int64_t enqueued_s)
{
    redisReply *r =
            redis_run(fx->base.redis, "HGET %s %s", keys->workers_key, id);
    Asynq__WorkerInfo *w;

    assert_int_equal(r->type, REDIS_REPLY_STRING);
    w = asynq__worker_info__unpack(NULL, r->len, (const uint8_t *)r->str);
    freeReplyObject(r);
    assert_non_null(w);
    assert_int_equal(w->pid, (int)getpid());
    assert_string_equal(w->server_id, keys->server_id);
    assert_string_equal(w->task_id, id);
    assert_string_equal(w->task_type, "hold:x");
    assert_string_equal(w->queue, "hb-low");
    assert_in_range(w->start_time->seconds, enqueued_s, casynq__now_unix_s());
    /* The task has a 600 s timeout and no deadline. */
    assert_int_equal(timestamp_ms(w->deadline),
                     timestamp_ms(w->start_time) + 600 * 1000);
    asynq__worker_info__free_unpacked(w, NULL);
}

static void test_heartbeat_writes_and_clears_server_state(void **state)
{
    struct fixture *fx = *state;
    struct casynq_enqueue_options *opts = options_new("hb-low");
    struct server_keys keys;
    Asynq__ServerInfo *info;
    char id[CASYNQ__UUID_LEN + 1];
    int64_t before_start_s;
    int64_t after_start_s;
    int64_t enqueued_s;
    long long ttl;
    redisReply *r;

    register_handlers(fx);
    assert_int_equal(casynq_config_clear_queues(fx->base.cfg), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "hb-high", 3), 0);
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "hb-low", 1), 0);
    assert_int_equal(casynq_config_set_strict_priority(fx->base.cfg, true), 0);
    assert_int_equal(casynq_config_set_concurrency(fx->base.cfg, 2), 0);
    before_start_s = casynq__now_unix_s();
    start_server(fx);
    after_start_s = casynq__now_unix_s();
    find_server_keys(fx, &keys);

    assert_int_equal(casynq_enqueue_options_set_timeout_s(opts, 600), 0);
    enqueued_s = casynq__now_unix_s();
    enqueue(fx, "hold:x", opts, id);
    WAIT_UNTIL(atomic_load(&fx->started));
    /* A later beat lists the running task. */
    WAIT_UNTIL(hash_has(fx, keys.workers_key, id));

    r = redis_run(fx->base.redis, "HLEN %s", keys.workers_key);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);

    assert_true(redis_zscore(fx->base.redis, "asynq:servers", keys.server_key) >
                casynq__now_unix_s());
    assert_true(redis_zscore(fx->base.redis, "asynq:workers",
                             keys.workers_key) > casynq__now_unix_s());
    ttl = redis_ttl(fx->base.redis, keys.server_key);
    assert_in_range(ttl, 1, 10);
    ttl = redis_ttl(fx->base.redis, keys.workers_key);
    assert_in_range(ttl, 1, 10);
    info = read_server_info(fx, &keys);
    assert_non_null(info);
    assert_server_info(info, &keys, before_start_s, after_start_s);
    asynq__server_info__free_unpacked(info, NULL);
    assert_worker_info(fx, &keys, id, enqueued_s);

    atomic_store(&fx->release, true);
    WAIT_UNTIL(!key_exists(fx, keyf("asynq:{hb-low}:t:%s", id)));
    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);

    assert_key_missing(fx->base.redis, keys.server_key);
    assert_key_missing(fx->base.redis, keys.workers_key);
    assert_zset_lacks(fx->base.redis, "asynq:servers", keys.server_key);
    assert_zset_lacks(fx->base.redis, "asynq:workers", keys.workers_key);
}

static void test_server_stop_reports_stopped_and_takes_no_tasks(void **state)
{
    struct fixture *fx = *state;
    const char *pending_key = QUEUE_KEY("pending");
    struct server_keys keys;
    char held[CASYNQ__UUID_LEN + 1];
    char later[CASYNQ__UUID_LEN + 1];
    int64_t beat;

    register_handlers(fx);
    enqueue(fx, "hold:x", NULL, held);
    start_server(fx);
    find_server_keys(fx, &keys);
    WAIT_UNTIL(atomic_load(&fx->started));

    assert_int_equal(casynq_server_stop(fx->base.srv), 0);
    WAIT_UNTIL(server_status_is(fx, &keys, "stopped"));

    /* The running task still finishes and is recorded. */
    atomic_store(&fx->release, true);
    WAIT_UNTIL(!key_exists(fx, task_key(held)));

    /* A task enqueued now stays pending. Two more heartbeats give the
     * server at least one full 5 s beat interval in which an active server
     * would have fetched it many times over. */
    enqueue(fx, "ok:later", NULL, later);
    beat = redis_zscore(fx->base.redis, "asynq:servers", keys.server_key);
    WAIT_UNTIL(redis_zscore(fx->base.redis, "asynq:servers", keys.server_key) >
               beat);
    beat = redis_zscore(fx->base.redis, "asynq:servers", keys.server_key);
    WAIT_UNTIL(redis_zscore(fx->base.redis, "asynq:servers", keys.server_key) >
               beat);

    assert_true(server_status_is(fx, &keys, "stopped"));
    assert_int_equal(atomic_load(&fx->calls), 1);
    assert_hash_field(fx->base.redis, task_key(later), "state", "pending");
    assert_list(fx->base.redis, pending_key, (const char *const[]){later}, 1);

    assert_int_equal(casynq_server_shutdown(fx->base.srv), 0);
    assert_list(fx->base.redis, pending_key, (const char *const[]){later}, 1);
    assert_key_missing(fx->base.redis, keys.server_key);
}

static void *shutdown_thread(void *arg)
{
    struct fixture *fx = arg;

    casynq_server_shutdown(fx->base.srv);
    atomic_store(&fx->shut_down, true);
    return NULL;
}

/* Shutdown must return while Redis sends no replies (a stopped process),
 * although the idle server has a BLMOVE in flight and its last writes get
 * no reply. Each connection is dropped after the command timeout. */
static void test_shutdown_returns_while_redis_is_frozen(void **state)
{
    struct fixture *fx = *state;
    struct casynq_redis_options *opts =
            broker_tcp_options(fx->base.server->port);
    pthread_t thread;
    long long end;
    bool returned;

    assert_int_equal(casynq_redis_options_set_timeouts(opts, 0, 500), 0);
    assert_int_equal(casynq_config_set_redis(fx->base.cfg, opts), 0);
    casynq_redis_options_destroy(opts);
    start_server(fx);
    WAIT_UNTIL(redis_zcard(fx->base.redis, "asynq:servers") == 1);
    sleep_ms(200);

    assert_int_equal(kill(fx->base.server->pid, SIGSTOP), 0);
    assert_int_equal(pthread_create(&thread, NULL, shutdown_thread, fx), 0);
    end = monotonic_ms() + WAIT_MS;
    while (!atomic_load(&fx->shut_down) && monotonic_ms() < end) {
        sleep_ms(POLL_MS);
    }
    returned = atomic_load(&fx->shut_down);
    /* Wake Redis before any assert, so that the other tests can use it
     * and a shutdown still blocked on it can finish. */
    assert_int_equal(kill(fx->base.server->pid, SIGCONT), 0);
    pthread_join(thread, NULL);
    if (!returned) {
        fail_msg("shutdown did not return within %d ms while redis was "
                 "stopped",
                 WAIT_MS);
    }
}

/* ------------------------------------------------------------------------
 * Configuration and connection checks
 */

/* Fails unless the config's last error contains `text`. */
static void assert_config_error(struct fixture *fx, const char *text)
{
    const char *msg = casynq_config_last_error(fx->base.cfg);

    if (strstr(msg, text) == NULL) {
        fail_msg("config error \"%s\" does not mention \"%s\"", msg, text);
    }
}

static void test_config_bad_queue_weight_rejected(void **state)
{
    struct fixture *fx = *state;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "zero", 0),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "weight");
    assert_config_error(fx, "zero");
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "negative", -1),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "weight");
    assert_config_error(fx, "negative");
}

static void test_config_empty_queue_name_rejected(void **state)
{
    struct fixture *fx = *state;

    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "", 1),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "queue name");
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "   ", 1),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "queue name");
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, NULL, 1),
                     CASYNQ_EINVAL);
}

static void test_config_zero_concurrency_rejected(void **state)
{
    struct fixture *fx = *state;

    assert_int_equal(casynq_config_set_concurrency(fx->base.cfg, 0),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "concurrency");
    assert_int_equal(casynq_config_set_concurrency(fx->base.cfg, -3),
                     CASYNQ_EINVAL);
    assert_config_error(fx, "concurrency");
}

static void test_server_create_without_queues_rejected(void **state)
{
    struct fixture *fx = *state;
    /* Any non-NULL value shows that create clears *out on failure. */
    struct casynq_server *srv = (struct casynq_server *)(uintptr_t)1;

    register_handlers(fx);
    assert_int_equal(casynq_config_clear_queues(fx->base.cfg), 0);
    assert_int_equal(casynq_server_create(fx->base.cfg, fx->base.mux, &srv),
                     CASYNQ_EINVAL);
    assert_null(srv);
    assert_config_error(fx, "no queues");
}

static void test_server_start_unreachable_redis_fails(void **state)
{
    struct fixture *fx = *state;
    struct casynq_redis_options *opts = NULL;
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX];
    char url[PATH_MAX + 32];
    int rc;

    /* Nothing listens on a socket path in a new empty directory, and no
     * other process's socket can be reached by mistake. */
    snprintf(dir, sizeof(dir), "%s/casynq-server-test-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    snprintf(url, sizeof(url), "unix://%s/redis.sock", dir);
    assert_int_equal(casynq_redis_options_create(&opts), 0);
    assert_int_equal(casynq_redis_options_set_url(opts, url), 0);
    assert_int_equal(casynq_config_set_redis(fx->base.cfg, opts), 0);
    casynq_redis_options_destroy(opts);
    register_handlers(fx);
    assert_int_equal(
            casynq_server_create(fx->base.cfg, fx->base.mux, &fx->base.srv), 0);

    rc = casynq_server_start(fx->base.srv);
    assert_int_equal(rmdir(dir), 0);

    assert_int_equal(rc, CASYNQ_ECONNECT);
    if (strstr(casynq_server_last_error(fx->base.srv), dir) == NULL) {
        fail_msg("server error \"%s\" does not name the socket in %s",
                 casynq_server_last_error(fx->base.srv), dir);
    }
    /* A server that never started cannot be shut down. */
    assert_int_equal(casynq_server_shutdown(fx->base.srv), CASYNQ_ESTATE);
}

#define SERVER_TEST(fn)                                                        \
    cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

static void test_lease_extended_in_task_queue(void **state)
{
    struct fixture *fx = *state;
    char id[CASYNQ__UUID_LEN + 1];
    const char *lease_key = "asynq:{urgent}:lease";
    int64_t first;
    int64_t deadline;

    /* Strict priority fetches "urgent" first although it is the second
     * queue of the configuration, so the queue's position in the dequeue
     * differs from its index in the configuration. */
    assert_int_equal(casynq_config_set_queue(fx->base.cfg, "urgent", 5), 0);
    assert_int_equal(casynq_config_set_strict_priority(fx->base.cfg, true), 0);
    register_handlers(fx);
    enqueue(fx, "hold:lease", options_new("urgent"), id);
    start_server(fx);

    deadline = casynq__mono_ms() + WAIT_MS;
    while (!atomic_load(&fx->started) && casynq__mono_ms() < deadline) {
        sleep_ms(POLL_MS);
    }
    assert_true(atomic_load(&fx->started));
    first = redis_zscore(fx->base.redis, lease_key, id);
    assert_true(first > 0);

    /* The heartbeat extends the lease every 5 s, in the task's own queue. */
    deadline = casynq__mono_ms() + WAIT_MS;
    while (redis_zscore(fx->base.redis, lease_key, id) <= first &&
           casynq__mono_ms() < deadline) {
        sleep_ms(100);
    }
    if (redis_zscore(fx->base.redis, lease_key, id) <= first) {
        fail_msg("the lease of task %s in %s stayed at %lld for %d ms", id,
                 lease_key, (long long)first, WAIT_MS);
    }
    atomic_store(&fx->release, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            SERVER_TEST(test_forwarder_scheduled_task_runs_when_due),
            SERVER_TEST(test_forwarder_due_retry_task_runs),
            SERVER_TEST(test_janitor_deletes_expired_completed_task),
            SERVER_TEST(test_archive_trims_to_max_size),
            SERVER_TEST(test_heartbeat_writes_and_clears_server_state),
            SERVER_TEST(test_lease_extended_in_task_queue),
            SERVER_TEST(test_server_stop_reports_stopped_and_takes_no_tasks),
            SERVER_TEST(test_shutdown_returns_while_redis_is_frozen),
            SERVER_TEST(test_config_bad_queue_weight_rejected),
            SERVER_TEST(test_config_empty_queue_name_rejected),
            SERVER_TEST(test_config_zero_concurrency_rejected),
            SERVER_TEST(test_server_create_without_queues_rejected),
            SERVER_TEST(test_server_start_unreachable_redis_fails),
    };

    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
