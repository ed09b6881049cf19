/* Integration tests of what happens to an active task: done, mark as
 * complete, requeue, retry and archive, with their statistics counters,
 * uniqueness locks and the archive's age and size trims. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker_helpers.h"

#define QUEUE "default"
#define MAXINT64_STR "9223372036854775807"

/* Key names of the statistics counters of QUEUE for the day of now_s. */
struct stats_keys {
    char processed_daily[96];
    char failed_daily[96];
    char processed_total[64];
    char failed_total[64];
};

static void stats_keys(struct stats_keys *k, int64_t now_s)
{
    char date[11];

    utc_date(now_s, date);
    snprintf(k->processed_daily, sizeof(k->processed_daily),
             "asynq:{%s}:processed:%s", QUEUE, date);
    snprintf(k->failed_daily, sizeof(k->failed_daily),
             "asynq:{%s}:failed:%s", QUEUE, date);
    snprintf(k->processed_total, sizeof(k->processed_total),
             "asynq:{%s}:processed", QUEUE);
    snprintf(k->failed_total, sizeof(k->failed_total), "asynq:{%s}:failed",
             QUEUE);
}

/* Asserts that the task left active and its lease. */
static void assert_not_active(redisContext *c, const char *id)
{
    redisReply *r = redis_run(c, "LPOS asynq:{%s}:active %s", QUEUE, id);
    int type = r->type;

    freeReplyObject(r);
    assert_int_equal(type, REDIS_REPLY_NIL);
    assert_zset_lacks(c, keyf("asynq:{%s}:lease", QUEUE), id);
}

static int64_t lease_expiry(void)
{
    return casynq__now_unix_s() + CASYNQ__LEASE_S;
}

static void test_done_deletes_task_and_counts(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "done", NULL);
    broker_activate_task(fx, &task, lease_expiry());

    casynq__broker_done(&cmd, QUEUE, task.id, NULL, now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id));
    assert_not_active(fx->redis, task.id);
    assert_counters(fx->redis, k.processed_daily, k.processed_total, 1,
                    now_s);
    assert_key_missing(fx->redis, k.failed_daily);
    assert_key_missing(fx->redis, k.failed_total);

    test_task_free(&task);
}

static void test_done_pending_task_not_found(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "still pending", NULL);
    broker_enqueue_task(fx, &task);

    casynq__broker_done(&cmd, QUEUE, task.id, NULL, now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), CASYNQ_ENOTFOUND);
    assert_non_null(strstr(err, "no longer active"));

    assert_hash_field(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id),
                      "state", "pending");
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){task.id}, 1);
    assert_key_missing(fx->redis, k.processed_daily);
    assert_key_missing(fx->redis, k.processed_total);

    test_task_free(&task);
}

/* Three tasks in one done_batch call: a plain one, one that is still
 * pending (done's NOT FOUND), and one more plain one after it, which must
 * still be done. */
static void test_done_batch_matches_done_per_task(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task first;
    struct test_task pending;
    struct test_task last;
    struct stats_keys k;
    struct casynq__cmd cmd;
    int64_t now_s = casynq__now_unix_s();
    redisReply *reply;

    stats_keys(&k, now_s);
    test_task_init(&first, QUEUE, "job", "first", NULL);
    test_task_init(&pending, QUEUE, "job", "pending", NULL);
    test_task_init(&last, QUEUE, "job", "last", NULL);
    broker_activate_task(fx, &first, lease_expiry());
    broker_activate_task(fx, &last, lease_expiry());
    broker_enqueue_task(fx, &pending);

    const struct casynq__done_item items[] = {
            {first.id, NULL}, {pending.id, ""}, {last.id, NULL}};
    casynq__broker_done_batch(&cmd, QUEUE, items, 3, now_s);
    reply = broker_exec(fx, &cmd);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    assert_int_equal(reply->elements, 3);
    assert_int_equal(reply->element[0]->integer, 1);
    assert_int_equal(reply->element[1]->integer, 0);
    assert_int_equal(reply->element[2]->integer, 1);
    freeReplyObject(reply);

    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, first.id));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, last.id));
    assert_not_active(fx->redis, first.id);
    assert_not_active(fx->redis, last.id);
    assert_hash_field(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, pending.id),
                      "state", "pending");
    assert_counters(fx->redis, k.processed_daily, k.processed_total, 2,
                    now_s);
    assert_key_missing(fx->redis, k.failed_daily);

    test_task_free(&first);
    test_task_free(&pending);
    test_task_free(&last);
}

/* Enqueues a unique task with the real script and makes it active. */
static void activate_unique(struct broker_fixture *fx, struct test_task *task,
                            struct casynq__buf *lock, const char *payload)
{
    const char *const queues[] = {QUEUE};
    struct casynq__dequeued out[1];
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *reply;

    assert_int_equal(casynq__broker_unique_key(lock, QUEUE, "unique:job",
                                               payload, strlen(payload)),
                     0);
    test_task_init(task, QUEUE, "unique:job", payload, lock->data);
    casynq__broker_enqueue(&cmd, QUEUE, task->id, task->msg.data,
                           task->msg.len, casynq__now_unix_ns(), lock->data,
                           3600);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    casynq__broker_dequeue(&cmd, queues, 1, lease_expiry(), 1);
    reply = broker_exec(fx, &cmd);
    assert_int_equal(casynq__broker_parse_dequeue(reply, out, 1, err), 1);
    freeReplyObject(reply);
}

static void test_done_unique_releases_own_lock(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    activate_unique(fx, &task, &lock, "own lock");
    assert_string_value(fx->redis, lock.data, task.id);

    casynq__broker_done(&cmd, QUEUE, task.id, lock.data,
                        casynq__now_unix_s());
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_key_missing(fx->redis, lock.data);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id));

    casynq__buf_free(&lock);
    test_task_free(&task);
}

/* A batch whose increments pass INT64_MAX wraps the total to 1 at
 * INT64_MAX and goes on counting, as three separate done calls would. */
static void test_done_batch_wraps_processed_total(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task tasks[3];
    struct casynq__done_item items[3];
    struct stats_keys k;
    struct casynq__cmd cmd;
    int64_t now_s = casynq__now_unix_s();
    redisReply *reply;

    stats_keys(&k, now_s);
    for (int i = 0; i < 3; i++) {
        test_task_init(&tasks[i], QUEUE, "job", "wrap", NULL);
        broker_activate_task(fx, &tasks[i], lease_expiry());
        items[i].id = tasks[i].id;
        items[i].unique_key = NULL;
    }
    freeReplyObject(redis_run(fx->redis, "SET %s 9223372036854775806",
                              k.processed_total));

    casynq__broker_done_batch(&cmd, QUEUE, items, 3, now_s);
    reply = broker_exec(fx, &cmd);
    assert_int_equal(reply->elements, 3);
    freeReplyObject(reply);
    /* MAX-1 -> MAX, then wrap to 1, then 2. */
    assert_int_equal(redis_get_int(fx->redis, k.processed_total), 2);
    assert_int_equal(redis_get_int(fx->redis, k.processed_daily), 3);

    for (int i = 0; i < 3; i++) {
        test_task_free(&tasks[i]);
    }
}

/* done_batch releases the lock of a unique task it finishes, as
 * done_unique does, and leaves the plain task beside it alone. */
static void test_done_batch_releases_unique_lock(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__buf lock = {0};
    struct test_task unique;
    struct test_task plain;
    struct casynq__cmd cmd;
    redisReply *reply;

    test_task_init(&plain, QUEUE, "job", "plain", NULL);
    broker_activate_task(fx, &plain, lease_expiry());
    activate_unique(fx, &unique, &lock, "batch lock");
    assert_string_value(fx->redis, lock.data, unique.id);

    const struct casynq__done_item items[] = {{plain.id, NULL},
                                              {unique.id, lock.data}};
    casynq__broker_done_batch(&cmd, QUEUE, items, 2,
                              casynq__now_unix_s());
    reply = broker_exec(fx, &cmd);
    assert_int_equal(reply->elements, 2);
    assert_int_equal(reply->element[0]->integer, 1);
    assert_int_equal(reply->element[1]->integer, 1);
    freeReplyObject(reply);
    assert_key_missing(fx->redis, lock.data);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, unique.id));

    casynq__buf_free(&lock);
    test_task_free(&unique);
    test_task_free(&plain);
}

static void test_done_unique_keeps_foreign_lock(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *r;

    activate_unique(fx, &task, &lock, "foreign lock");
    /* The lock expired and another task took it in the meantime. */
    r = redis_run(fx->redis, "SET %s other-task-id EX 100", lock.data);
    freeReplyObject(r);

    casynq__broker_done(&cmd, QUEUE, task.id, lock.data,
                        casynq__now_unix_s());
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_string_value(fx->redis, lock.data, "other-task-id");
    assert_true(redis_ttl(fx->redis, lock.data) > 0);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id));

    casynq__buf_free(&lock);
    test_task_free(&task);
}

static void test_done_wraps_processed_total(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *r;
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    r = redis_run(fx->redis, "SET %s %s", k.processed_total, MAXINT64_STR);
    freeReplyObject(r);
    test_task_init(&task, QUEUE, "job", "wrap", NULL);
    broker_activate_task(fx, &task, lease_expiry());

    casynq__broker_done(&cmd, QUEUE, task.id, NULL, now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_string_value(fx->redis, k.processed_total, "1");
    assert_string_value(fx->redis, k.processed_daily, "1");

    test_task_free(&task);
}

static void test_mark_complete_moves_to_completed(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state", "result"};
    const char *completed_key = keyf("asynq:{%s}:completed", QUEUE);
    const char *task_key;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    Asynq__TaskMessage *m;
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "keep me", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_activate_task(fx, &task, lease_expiry());
    casynq__broker_write_result(&cmd, QUEUE, task.id, "result bytes", 12);
    freeReplyObject(broker_exec(fx, &cmd));

    test_task_set_completed(&task, now_s);
    casynq__broker_mark_complete(&cmd, QUEUE, task.id, task.msg.data,
                                 task.msg.len, NULL, now_s, 3600);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_not_active(fx->redis, task.id);
    assert_key_type(fx->redis, completed_key, "zset");
    assert_int_equal(redis_zscore(fx->redis, completed_key, task.id),
                     now_s + 3600);
    assert_hash_fields(fx->redis, task_key, fields, 3);
    assert_hash_field(fx->redis, task_key, "state", "completed");
    assert_hash_field(fx->redis, task_key, "result", "result bytes");
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    m = redis_hget_msg(fx->redis, task_key);
    assert_int_equal(m->completed_at, now_s);
    casynq__msg_free(m);
    assert_counters(fx->redis, k.processed_daily, k.processed_total, 1,
                    now_s);
    assert_key_missing(fx->redis, k.failed_total);

    test_task_free(&task);
}

static void test_mark_complete_twice_is_internal_error(void **state)
{
    struct broker_fixture *fx = *state;
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *r;
    int64_t now_s = casynq__now_unix_s();

    test_task_init(&task, QUEUE, "job", "already completed", NULL);
    broker_activate_task(fx, &task, lease_expiry());
    r = redis_run(fx->redis, "ZADD asynq:{%s}:completed %lld %s", QUEUE,
                  (long long)now_s, task.id);
    freeReplyObject(r);

    casynq__broker_mark_complete(&cmd, QUEUE, task.id, task.msg.data,
                                 task.msg.len, NULL, now_s, 60);
    assert_int_equal(broker_exec_status(fx, &cmd, err), CASYNQ_EREDIS);
    assert_non_null(strstr(err, "INTERNAL"));
    assert_hash_field(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id),
                      "state", "active");

    test_task_free(&task);
}

static void test_mark_complete_unique_releases_lock(void **state)
{
    struct broker_fixture *fx = *state;
    const char *task_key;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();

    activate_unique(fx, &task, &lock, "complete unique");
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    test_task_set_completed(&task, now_s);

    casynq__broker_mark_complete(&cmd, QUEUE, task.id, task.msg.data,
                                 task.msg.len, lock.data, now_s, 600);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_key_missing(fx->redis, lock.data);
    assert_hash_field(fx->redis, task_key, "state", "completed");
    assert_hash_field(fx->redis, task_key, "unique_key", lock.data);
    assert_int_equal(redis_zscore(fx->redis,
                                  keyf("asynq:{%s}:completed", QUEUE),
                                  task.id),
                     now_s + 600);

    casynq__buf_free(&lock);
    test_task_free(&task);
}

static void test_requeue_puts_task_at_right_end(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state"};
    const char *task_key;
    struct test_task task;
    struct test_task waiting;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    stats_keys(&k, casynq__now_unix_s());
    test_task_init(&task, QUEUE, "job", "interrupted", NULL);
    test_task_init(&waiting, QUEUE, "job", "waiting", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_activate_task(fx, &task, lease_expiry());
    broker_enqueue_task(fx, &waiting);

    casynq__broker_requeue(&cmd, QUEUE, task.id);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_not_active(fx->redis, task.id);
    /* The right end is the next one dequeued. */
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){waiting.id, task.id}, 2);
    assert_hash_fields(fx->redis, task_key, fields, 2);
    assert_hash_field(fx->redis, task_key, "state", "pending");
    assert_hash_field_missing(fx->redis, task_key, "pending_since");
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    assert_key_missing(fx->redis, k.processed_daily);
    assert_key_missing(fx->redis, k.processed_total);

    test_task_free(&task);
    test_task_free(&waiting);
}

static void test_retry_failure_counts_failed(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state"};
    const char *retry_key = keyf("asynq:{%s}:retry", QUEUE);
    const char *task_key;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    Asynq__TaskMessage *m;
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "flaky", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_activate_task(fx, &task, lease_expiry());

    test_task_set_failure(&task, "connection reset", 1, now_s);
    casynq__broker_retry(&cmd, QUEUE, task.id, task.msg.data, task.msg.len,
                         now_s + 42, true, now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_not_active(fx->redis, task.id);
    assert_key_type(fx->redis, retry_key, "zset");
    assert_int_equal(redis_zscore(fx->redis, retry_key, task.id), now_s + 42);
    assert_hash_fields(fx->redis, task_key, fields, 2);
    assert_hash_field(fx->redis, task_key, "state", "retry");
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    m = redis_hget_msg(fx->redis, task_key);
    assert_string_equal(m->error_msg, "connection reset");
    assert_int_equal(m->retried, 1);
    assert_int_equal(m->last_failed_at, now_s);
    casynq__msg_free(m);
    assert_counters(fx->redis, k.processed_daily, k.processed_total, 1,
                    now_s);
    assert_counters(fx->redis, k.failed_daily, k.failed_total, 1, now_s);

    test_task_free(&task);
}

static void test_retry_non_failure_counts_nothing(void **state)
{
    struct broker_fixture *fx = *state;
    const char *task_key;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "rate limited", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_activate_task(fx, &task, lease_expiry());

    test_task_set_failure(&task, "rate limited", 0, now_s);
    casynq__broker_retry(&cmd, QUEUE, task.id, task.msg.data, task.msg.len,
                         now_s + 5, false, now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_int_equal(redis_zscore(fx->redis,
                                  keyf("asynq:{%s}:retry", QUEUE), task.id),
                     now_s + 5);
    assert_hash_field(fx->redis, task_key, "state", "retry");
    assert_key_missing(fx->redis, k.processed_daily);
    assert_key_missing(fx->redis, k.failed_daily);
    assert_key_missing(fx->redis, k.processed_total);
    assert_key_missing(fx->redis, k.failed_total);

    test_task_free(&task);
}

static void test_archive_moves_task_and_counts(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state"};
    const char *archived_key = keyf("asynq:{%s}:archived", QUEUE);
    const char *task_key;
    struct test_task task;
    struct stats_keys k;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    Asynq__TaskMessage *m;
    int64_t now_s = casynq__now_unix_s();

    stats_keys(&k, now_s);
    test_task_init(&task, QUEUE, "job", "hopeless", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_activate_task(fx, &task, lease_expiry());

    test_task_set_failure(&task, "bad input", 0, now_s);
    casynq__broker_archive(&cmd, QUEUE, task.id, task.msg.data, task.msg.len,
                           now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_not_active(fx->redis, task.id);
    assert_key_type(fx->redis, archived_key, "zset");
    assert_int_equal(redis_zscore(fx->redis, archived_key, task.id), now_s);
    assert_hash_fields(fx->redis, task_key, fields, 2);
    assert_hash_field(fx->redis, task_key, "state", "archived");
    m = redis_hget_msg(fx->redis, task_key);
    assert_string_equal(m->error_msg, "bad input");
    assert_int_equal(m->last_failed_at, now_s);
    casynq__msg_free(m);
    assert_counters(fx->redis, k.processed_daily, k.processed_total, 1,
                    now_s);
    assert_counters(fx->redis, k.failed_daily, k.failed_total, 1, now_s);

    test_task_free(&task);
}

/* Adds an archived member with a task hash, as an earlier archive left. */
static void add_archived(redisContext *c, const char *id, int64_t score)
{
    redisReply *r;

    r = redis_run(c, "ZADD asynq:{%s}:archived %lld %s", QUEUE,
                  (long long)score, id);
    freeReplyObject(r);
    r = redis_run(c, "HSET asynq:{%s}:t:%s msg old state archived", QUEUE,
                  id);
    freeReplyObject(r);
}

static void test_archive_trims_by_age(void **state)
{
    struct broker_fixture *fx = *state;
    const char *archived_key = keyf("asynq:{%s}:archived", QUEUE);
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();
    int64_t cutoff_s = now_s - CASYNQ__ARCHIVE_MAX_AGE_S;

    add_archived(fx->redis, "too-old", cutoff_s - 10);
    add_archived(fx->redis, "at-cutoff", cutoff_s);
    add_archived(fx->redis, "young", cutoff_s + 1);
    test_task_init(&task, QUEUE, "job", "archive me", NULL);
    broker_activate_task(fx, &task, lease_expiry());

    casynq__broker_archive(&cmd, QUEUE, task.id, task.msg.data, task.msg.len,
                           now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_zset_lacks(fx->redis, archived_key, "too-old");
    assert_zset_lacks(fx->redis, archived_key, "at-cutoff");
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:too-old", QUEUE));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:at-cutoff", QUEUE));
    assert_int_equal(redis_zscore(fx->redis, archived_key, "young"),
                     cutoff_s + 1);
    assert_key_exists(fx->redis, keyf("asynq:{%s}:t:young", QUEUE));
    assert_int_equal(redis_zscore(fx->redis, archived_key, task.id), now_s);
    assert_int_equal(redis_zcard(fx->redis, archived_key), 2);

    test_task_free(&task);
}

static void test_archive_trims_by_size(void **state)
{
    struct broker_fixture *fx = *state;
    char archived_key[64];
    char id[32];
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *r;
    int64_t now_s = casynq__now_unix_s();
    /* Well inside the 90-day window, one second apart, oldest first. */
    int64_t base_s = now_s - 100000;

    snprintf(archived_key, sizeof(archived_key), "asynq:{%s}:archived",
             QUEUE);
    for (int i = 0; i < CASYNQ__ARCHIVE_MAX_SIZE; i++) {
        snprintf(id, sizeof(id), "old-%05d", i);
        assert_int_equal(redisAppendCommand(fx->redis, "ZADD %s %lld %s",
                                            archived_key,
                                            (long long)(base_s + i), id),
                         REDIS_OK);
        assert_int_equal(redisAppendCommand(fx->redis,
                                            "HSET asynq:{%s}:t:%s msg old "
                                            "state archived",
                                            QUEUE, id),
                         REDIS_OK);
    }
    for (int i = 0; i < 2 * CASYNQ__ARCHIVE_MAX_SIZE; i++) {
        assert_int_equal(redisGetReply(fx->redis, (void **)&r), REDIS_OK);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        freeReplyObject(r);
    }
    assert_int_equal(redis_zcard(fx->redis, archived_key),
                     CASYNQ__ARCHIVE_MAX_SIZE);

    test_task_init(&task, QUEUE, "job", "one too many", NULL);
    broker_activate_task(fx, &task, lease_expiry());
    casynq__broker_archive(&cmd, QUEUE, task.id, task.msg.data, task.msg.len,
                           now_s);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    /* 10,001 members minus ranks 0 to -10000 leaves 9,999 (asynq v0.26.0
     * keeps one fewer than its limit). */
    assert_int_equal(redis_zcard(fx->redis, archived_key),
                     CASYNQ__ARCHIVE_MAX_SIZE - 1);
    assert_zset_lacks(fx->redis, archived_key, "old-00000");
    assert_zset_lacks(fx->redis, archived_key, "old-00001");
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:old-00000", QUEUE));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:old-00001", QUEUE));
    assert_int_equal(redis_zscore(fx->redis, archived_key, "old-00002"),
                     base_s + 2);
    assert_key_exists(fx->redis, keyf("asynq:{%s}:t:old-00002", QUEUE));
    assert_int_equal(redis_zscore(fx->redis, archived_key, task.id), now_s);
    assert_hash_field(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id),
                      "state", "archived");

    test_task_free(&task);
}

/* Operations that require an active task, tried on a pending one. */
enum status_op { OP_MARK_COMPLETE, OP_REQUEUE, OP_RETRY, OP_ARCHIVE };

static void test_status_ops_on_pending_task_not_found(void **state)
{
    static const enum status_op ops[] = {OP_MARK_COMPLETE, OP_REQUEUE,
                                         OP_RETRY, OP_ARCHIVE};
    struct broker_fixture *fx = *state;
    const char *task_key;
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE];
    int64_t now_s = casynq__now_unix_s();

    test_task_init(&task, QUEUE, "job", "not active", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);
    broker_enqueue_task(fx, &task);

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        switch (ops[i]) {
        case OP_MARK_COMPLETE:
            casynq__broker_mark_complete(&cmd, QUEUE, task.id, task.msg.data,
                                         task.msg.len, NULL, now_s, 60);
            break;
        case OP_REQUEUE:
            casynq__broker_requeue(&cmd, QUEUE, task.id);
            break;
        case OP_RETRY:
            casynq__broker_retry(&cmd, QUEUE, task.id, task.msg.data,
                                 task.msg.len, now_s + 10, true, now_s);
            break;
        case OP_ARCHIVE:
            casynq__broker_archive(&cmd, QUEUE, task.id, task.msg.data,
                                   task.msg.len, now_s);
            break;
        }
        err[0] = '\0';
        assert_int_equal(broker_exec_status(fx, &cmd, err),
                         CASYNQ_ENOTFOUND);
        assert_hash_field(fx->redis, task_key, "state", "pending");
    }

    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){task.id}, 1);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:completed", QUEUE));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:retry", QUEUE));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:archived", QUEUE));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:processed", QUEUE));

    test_task_free(&task);
}

#define BROKER_TEST(fn)                                                       \
    cmocka_unit_test_setup_teardown(fn, broker_fixture_setup,                 \
                                    broker_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BROKER_TEST(test_done_deletes_task_and_counts),
        BROKER_TEST(test_done_pending_task_not_found),
        BROKER_TEST(test_done_batch_matches_done_per_task),
        BROKER_TEST(test_done_batch_releases_unique_lock),
        BROKER_TEST(test_done_batch_wraps_processed_total),
        BROKER_TEST(test_done_unique_releases_own_lock),
        BROKER_TEST(test_done_unique_keeps_foreign_lock),
        BROKER_TEST(test_done_wraps_processed_total),
        BROKER_TEST(test_mark_complete_moves_to_completed),
        BROKER_TEST(test_mark_complete_twice_is_internal_error),
        BROKER_TEST(test_mark_complete_unique_releases_lock),
        BROKER_TEST(test_requeue_puts_task_at_right_end),
        BROKER_TEST(test_retry_failure_counts_failed),
        BROKER_TEST(test_retry_non_failure_counts_nothing),
        BROKER_TEST(test_archive_moves_task_and_counts),
        BROKER_TEST(test_archive_trims_by_age),
        BROKER_TEST(test_archive_trims_by_size),
        BROKER_TEST(test_status_ops_on_pending_task_not_found),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
