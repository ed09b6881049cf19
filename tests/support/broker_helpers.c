/* Helpers for the broker integration tests, declared in broker_helpers.h. */
#include "broker_helpers.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "alloc.h"
#include "util.h"

static long live_allocations;

static void *counting_malloc(size_t size)
{
    void *p = malloc(size);

    if (p != NULL) {
        live_allocations++;
    }
    return p;
}

static void *counting_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);

    if (p != NULL) {
        live_allocations++;
    }
    return p;
}

static void *counting_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);

    if (ptr == NULL && p != NULL) {
        live_allocations++;
    }
    return p;
}

static void counting_free(void *ptr)
{
    if (ptr != NULL) {
        live_allocations--;
    }
    free(ptr);
}

void broker_count_allocations(void)
{
    casynq_set_allocator(counting_malloc, counting_calloc, counting_realloc,
                         counting_free);
}

long broker_live_allocations(void)
{
    return live_allocations;
}

struct casynq_redis_options *broker_tcp_options(int port)
{
    struct casynq_redis_options *opts = NULL;

    assert_int_equal(casynq_redis_options_create(&opts), 0);
    assert_int_equal(casynq_redis_options_set_tcp(opts, "127.0.0.1", port), 0);
    return opts;
}

int broker_fixture_setup(void **state)
{
    const struct test_redis *server = test_redis_shared();
    struct broker_fixture *fx;
    struct casynq_redis_options *opts;

    if (server->pid == 0 || test_redis_flushall(server) != 0) {
        return -1;
    }
    fx = calloc(1, sizeof(*fx));
    if (fx == NULL) {
        return -1;
    }
    fx->server = server;
    fx->live_allocations_at_start = broker_live_allocations();
    opts = broker_tcp_options(server->port);
    if (casynq__conn_init(&fx->conn, opts) != 0) {
        casynq_redis_options_destroy(opts);
        free(fx);
        return -1;
    }
    casynq_redis_options_destroy(opts);
    fx->redis = test_redis_connect(server);
    if (fx->redis == NULL) {
        casynq__conn_finish(&fx->conn);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

int broker_fixture_teardown(void **state)
{
    struct broker_fixture *fx = *state;
    long leaked;

    casynq__conn_finish(&fx->conn);
    redisFree(fx->redis);
    leaked = broker_live_allocations() - fx->live_allocations_at_start;
    free(fx);
    *state = NULL;
    if (leaked != 0) {
        fail_msg("the library leaked %ld allocation(s) during this test "
                 "(a failed assertion also skips the test's own frees)",
                 leaked);
    }
    return 0;
}

redisReply *broker_exec(struct broker_fixture *fx, struct casynq__cmd *cmd)
{
    redisReply *reply = NULL;
    int rc = casynq__conn_exec(&fx->conn, cmd, &reply);

    casynq__cmd_free(cmd);
    if (rc != 0) {
        fail_msg("casynq__conn_exec failed with %s: %s", casynq_err_name(rc),
                 fx->conn.err);
    }
    assert_non_null(reply);
    return reply;
}

int broker_exec_enqueue(struct broker_fixture *fx, struct casynq__cmd *cmd,
                        char *errbuf)
{
    redisReply *reply = broker_exec(fx, cmd);
    int rc = casynq__broker_parse_enqueue(reply, errbuf);

    freeReplyObject(reply);
    return rc;
}

int broker_exec_status(struct broker_fixture *fx, struct casynq__cmd *cmd,
                       char *errbuf)
{
    redisReply *reply = broker_exec(fx, cmd);
    int rc = casynq__broker_parse_status(reply, errbuf);

    freeReplyObject(reply);
    return rc;
}

int64_t broker_exec_count(struct broker_fixture *fx, struct casynq__cmd *cmd,
                          char *errbuf)
{
    redisReply *reply = broker_exec(fx, cmd);
    int64_t n = casynq__broker_parse_count(reply, errbuf);

    freeReplyObject(reply);
    return n;
}

static void encode_task(struct test_task *task, const Asynq__TaskMessage *m)
{
    casynq__buf_free(&task->msg);
    assert_int_equal(casynq__msg_encode(m, &task->msg), 0);
}

void test_task_init(struct test_task *task, const char *queue,
                    const char *type, const char *payload,
                    const char *unique_key)
{
    Asynq__TaskMessage m;

    /* The generated INIT macro casts away const, which -Wcast-qual
     * rejects, so the init function is used instead. */
    asynq__task_message__init(&m);
    memset(task, 0, sizeof(*task));
    casynq__uuid(task->id);
    assert_true(strlen(queue) < sizeof(task->queue));
    strcpy(task->queue, queue);

    m.type = (char *)(uintptr_t)type;
    if (payload != NULL) {
        m.payload.data = (uint8_t *)(uintptr_t)payload;
        m.payload.len = strlen(payload);
    }
    m.id = task->id;
    m.queue = task->queue;
    m.retry = 25;
    m.timeout = 1800;
    if (unique_key != NULL) {
        m.unique_key = (char *)(uintptr_t)unique_key;
    }
    encode_task(task, &m);
}

/* Decodes the task's message, sets the failure fields (when error_msg is
 * not NULL) or completed_at, and encodes it again. */
static void reencode(struct test_task *task, const char *error_msg,
                     int retried, int64_t failed_at_s, int64_t completed_at_s)
{
    Asynq__TaskMessage *m = casynq__msg_decode(task->msg.data, task->msg.len);

    assert_non_null(m);
    if (error_msg != NULL) {
        /* The decoded string belongs to the message, so swap it in only
         * for the encoding and put the original back before freeing. */
        char *saved = m->error_msg;

        m->error_msg = (char *)(uintptr_t)error_msg;
        m->retried = retried;
        m->last_failed_at = failed_at_s;
        encode_task(task, m);
        m->error_msg = saved;
    } else {
        m->completed_at = completed_at_s;
        encode_task(task, m);
    }
    casynq__msg_free(m);
}

void test_task_set_failure(struct test_task *task, const char *error_msg,
                           int retried, int64_t failed_at_s)
{
    reencode(task, error_msg, retried, failed_at_s, 0);
}

void test_task_set_completed(struct test_task *task, int64_t completed_at_s)
{
    reencode(task, NULL, 0, 0, completed_at_s);
}

void test_task_free(struct test_task *task)
{
    casynq__buf_free(&task->msg);
}

void broker_enqueue_task(struct broker_fixture *fx, struct test_task *task)
{
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    casynq__broker_enqueue(&cmd, task->queue, task->id, task->msg.data,
                           task->msg.len, casynq__now_unix_ns(), NULL, 0);
    if (broker_exec_enqueue(fx, &cmd, err) != 0) {
        fail_msg("enqueue of task %s failed: %s", task->id, err);
    }
}

void broker_activate_task(struct broker_fixture *fx, struct test_task *task,
                          int64_t lease_expiry_s)
{
    const char *queues[1] = {task->queue};
    struct casynq__dequeued out[2];
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *reply;
    int n;

    broker_enqueue_task(fx, task);
    casynq__broker_dequeue(&cmd, queues, 1, lease_expiry_s, 2);
    reply = broker_exec(fx, &cmd);
    n = casynq__broker_parse_dequeue(reply, out, 2, err);
    if (n != 1) {
        freeReplyObject(reply);
        fail_msg("dequeue of task %s returned %d (%s)", task->id, n, err);
    }
    assert_int_equal(out[0].id_len, strlen(task->id));
    assert_memory_equal(out[0].id, task->id, out[0].id_len);
    freeReplyObject(reply);
}

const char *keyf(const char *fmt, ...)
{
    static char buffers[16][512];
    static unsigned next;
    char *buf = buffers[next++ % 16];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buffers[0]), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(buffers[0]));
    return buf;
}

redisReply *redis_run(redisContext *c, const char *fmt, ...)
{
    redisReply *reply;
    va_list ap;

    va_start(ap, fmt);
    reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (reply == NULL) {
        fail_msg("inspection command \"%s\" failed: %s", fmt, c->errstr);
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char text[256];

        snprintf(text, sizeof(text), "%s", reply->str);
        freeReplyObject(reply);
        fail_msg("inspection command \"%s\" got error: %s", fmt, text);
    }
    return reply;
}

void assert_key_type(redisContext *c, const char *key, const char *type)
{
    redisReply *r = redis_run(c, "TYPE %s", key);

    if (strcmp(r->str, type) != 0) {
        char actual[32];

        snprintf(actual, sizeof(actual), "%s", r->str);
        freeReplyObject(r);
        fail_msg("key %s has type %s, expected %s", key, actual, type);
    }
    freeReplyObject(r);
}

static long long exists(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "EXISTS %s", key);
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

void assert_key_exists(redisContext *c, const char *key)
{
    if (exists(c, key) != 1) {
        fail_msg("key %s is missing", key);
    }
}

void assert_key_missing(redisContext *c, const char *key)
{
    if (exists(c, key) != 0) {
        fail_msg("key %s exists but should not", key);
    }
}

void assert_string_value(redisContext *c, const char *key,
                         const char *expected)
{
    redisReply *r = redis_run(c, "GET %s", key);

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("key %s is missing or not a string, expected \"%s\"", key,
                 expected);
    }
    if (strcmp(r->str, expected) != 0) {
        char actual[256];

        snprintf(actual, sizeof(actual), "%s", r->str);
        freeReplyObject(r);
        fail_msg("key %s contains \"%s\", expected \"%s\"", key, actual,
                 expected);
    }
    freeReplyObject(r);
}

long long redis_get_int(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "GET %s", key);
    long long v;

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("key %s is missing, expected an integer", key);
    }
    v = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return v;
}

long long redis_ttl(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "TTL %s", key);
    long long v = r->integer;

    freeReplyObject(r);
    return v;
}

/* Returns the HGET reply for field, which the caller frees. */
static redisReply *hget(redisContext *c, const char *key, const char *field)
{
    return redis_run(c, "HGET %s %s", key, field);
}

void assert_hash_field(redisContext *c, const char *key, const char *field,
                       const char *expected)
{
    assert_hash_field_bytes(c, key, field, expected, strlen(expected));
}

void assert_hash_field_bytes(redisContext *c, const char *key,
                             const char *field, const void *expected,
                             size_t len)
{
    redisReply *r = hget(c, key, field);

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("hash %s has no field %s", key, field);
    }
    if (r->len != len || memcmp(r->str, expected, len) != 0) {
        size_t r_len = r->len;
        char actual[128];

        snprintf(actual, sizeof(actual), "%.*s",
                 (int)(r->len < 100 ? r->len : 100), r->str);
        freeReplyObject(r);
        fail_msg("hash %s field %s has %zu bytes starting \"%s\", "
                 "expected %zu other bytes",
                 key, field, r_len, actual, len);
    }
    freeReplyObject(r);
}

void assert_hash_field_missing(redisContext *c, const char *key,
                               const char *field)
{
    redisReply *r = redis_run(c, "HEXISTS %s %s", key, field);
    long long n = r->integer;

    freeReplyObject(r);
    if (n != 0) {
        fail_msg("hash %s has field %s but should not", key, field);
    }
}

void assert_hash_fields(redisContext *c, const char *key,
                        const char *const *fields, size_t count)
{
    redisReply *r = redis_run(c, "HKEYS %s", key);
    char listed[512] = "";
    size_t used = 0;
    bool same = r->elements == count;

    for (size_t i = 0; i < r->elements; i++) {
        bool expected = false;
        int n = snprintf(listed + used, sizeof(listed) - used, "%s%s",
                         i == 0 ? "" : ",", r->element[i]->str);

        if (n > 0 && (size_t)n < sizeof(listed) - used) {
            used += (size_t)n;
        }
        for (size_t j = 0; j < count; j++) {
            if (strcmp(r->element[i]->str, fields[j]) == 0) {
                expected = true;
            }
        }
        if (!expected) {
            same = false;
        }
    }
    freeReplyObject(r);
    if (!same) {
        fail_msg("hash %s has fields [%s], expected exactly %zu field(s): "
                 "%s%s",
                 key, listed, count, count > 0 ? fields[0] : "(none)",
                 count > 1 ? " and the others listed by the test" : "");
    }
}

int64_t redis_hget_int(redisContext *c, const char *key, const char *field)
{
    redisReply *r = hget(c, key, field);
    int64_t v;

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("hash %s has no field %s", key, field);
    }
    v = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return v;
}

Asynq__TaskMessage *redis_hget_msg(redisContext *c, const char *key)
{
    redisReply *r = hget(c, key, "msg");
    Asynq__TaskMessage *m;

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("hash %s has no msg field", key);
    }
    m = casynq__msg_decode(r->str, r->len);
    freeReplyObject(r);
    if (m == NULL) {
        fail_msg("the msg field of hash %s is not a valid TaskMessage", key);
    }
    return m;
}

void assert_list(redisContext *c, const char *key, const char *const *items,
                 size_t count)
{
    redisReply *r = redis_run(c, "LRANGE %s 0 -1", key);
    size_t elements = r->elements;

    for (size_t i = 0; i < elements && i < count; i++) {
        if (strcmp(r->element[i]->str, items[i]) != 0) {
            char actual[64];

            snprintf(actual, sizeof(actual), "%s", r->element[i]->str);
            freeReplyObject(r);
            fail_msg("list %s has %s at index %zu, expected %s", key,
                     actual, i, items[i]);
        }
    }
    freeReplyObject(r);
    if (elements != count) {
        fail_msg("list %s has %zu items, expected %zu", key, elements, count);
    }
}

long long redis_llen(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "LLEN %s", key);
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

int64_t redis_zscore(redisContext *c, const char *key, const char *member)
{
    redisReply *r = redis_run(c, "ZSCORE %s %s", key, member);
    int64_t v;

    if (r->type != REDIS_REPLY_STRING) {
        freeReplyObject(r);
        fail_msg("zset %s has no member %s", key, member);
    }
    v = strtoll(r->str, NULL, 10);
    freeReplyObject(r);
    return v;
}

void assert_zset_lacks(redisContext *c, const char *key, const char *member)
{
    redisReply *r = redis_run(c, "ZSCORE %s %s", key, member);
    int type = r->type;

    freeReplyObject(r);
    if (type != REDIS_REPLY_NIL) {
        fail_msg("zset %s has member %s but should not", key, member);
    }
}

long long redis_zcard(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "ZCARD %s", key);
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

bool redis_sismember(redisContext *c, const char *key, const char *member)
{
    redisReply *r = redis_run(c, "SISMEMBER %s %s", key, member);
    bool is_member = r->integer == 1;

    freeReplyObject(r);
    return is_member;
}

void utc_date(int64_t now_s, char out[11])
{
    casynq__utc_date(now_s, out);
}

void assert_counters(redisContext *c, const char *daily_key,
                     const char *total_key, long long expected,
                     int64_t now_s)
{
    int64_t expiry_s = now_s + CASYNQ__STATS_TTL_S;
    long long ttl;
    long long lowest;

    assert_key_type(c, daily_key, "string");
    assert_int_equal(redis_get_int(c, daily_key), expected);
    ttl = redis_ttl(c, daily_key);
    /* TTL counts from the server's clock, which has moved on since now_s.
     * A minute is far more than any test here takes. */
    lowest = (long long)(expiry_s - casynq__now_unix_s()) - 60;
    if (ttl > CASYNQ__STATS_TTL_S || ttl < lowest) {
        fail_msg("daily counter %s has TTL %lld s, expected about %d s",
                 daily_key, ttl, CASYNQ__STATS_TTL_S);
    }

    assert_key_type(c, total_key, "string");
    assert_int_equal(redis_get_int(c, total_key), expected);
    assert_int_equal(redis_ttl(c, total_key), -1);
}
