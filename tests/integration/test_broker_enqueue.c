/* Integration tests of the broker's client-side writes: queue
 * registration, enqueue, schedule and add-to-group, with and without a
 * uniqueness lock. Each test checks the keys, types, fields, scores and
 * TTLs that asynq v0.26.0 writes for the same call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker_helpers.h"

#define QUEUE "default"
#define UNIQUE_TTL_S 300

/* Builds the lock key for the task type and payload used in these tests. */
static void unique_key(struct casynq__buf *out, const char *type,
                       const char *payload)
{
    assert_int_equal(casynq__broker_unique_key(out, QUEUE, type, payload,
                                               strlen(payload)),
                     0);
}

static void assert_lock(redisContext *c, const char *lock_key,
                        const char *owner_id)
{
    long long ttl;

    assert_key_type(c, lock_key, "string");
    assert_string_value(c, lock_key, owner_id);
    ttl = redis_ttl(c, lock_key);
    assert_true(ttl > 0);
    assert_true(ttl <= UNIQUE_TTL_S);
}

static void test_register_queue_adds_to_set(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    casynq__broker_register_queue(&cmd, QUEUE);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_register_queue(&cmd, QUEUE);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 0);
    casynq__broker_register_queue(&cmd, "critical");
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);

    assert_key_type(fx->redis, CASYNQ__QUEUES_KEY, "set");
    assert_true(redis_sismember(fx->redis, CASYNQ__QUEUES_KEY, QUEUE));
    assert_true(redis_sismember(fx->redis, CASYNQ__QUEUES_KEY, "critical"));
}

static void test_enqueue_writes_pending_task(void **state)
{
    struct broker_fixture *fx = *state;
    const char *task_key;
    const char *const fields[] = {"msg", "state", "pending_since"};
    struct test_task first;
    struct test_task second;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    Asynq__TaskMessage *m;
    int64_t now_ns = casynq__now_unix_ns();
    int64_t pending_since;

    test_task_init(&first, QUEUE, "email:welcome", "{\"user_id\":42}", NULL);
    test_task_init(&second, QUEUE, "email:welcome", "{\"user_id\":43}", NULL);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, first.id);

    casynq__broker_enqueue(&cmd, QUEUE, first.id, first.msg.data,
                           first.msg.len, now_ns, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_key_type(fx->redis, task_key, "hash");
    assert_hash_fields(fx->redis, task_key, fields, 3);
    assert_hash_field_bytes(fx->redis, task_key, "msg", first.msg.data,
                            first.msg.len);
    assert_hash_field(fx->redis, task_key, "state", "pending");
    pending_since = redis_hget_int(fx->redis, task_key, "pending_since");
    assert_int_equal(pending_since, now_ns);
    /* The value is in nanoseconds, so it is within a second of the clock. */
    assert_true(casynq__now_unix_ns() - pending_since >= 0);
    assert_true(casynq__now_unix_ns() - pending_since < 1000000000LL);

    m = redis_hget_msg(fx->redis, task_key);
    assert_string_equal(m->type, "email:welcome");
    assert_string_equal(m->id, first.id);
    assert_string_equal(m->queue, QUEUE);
    assert_int_equal(m->payload.len, strlen("{\"user_id\":42}"));
    assert_memory_equal(m->payload.data, "{\"user_id\":42}", m->payload.len);
    assert_int_equal(m->retry, 25);
    casynq__msg_free(m);

    /* asynq pushes new IDs on the left, and workers pop from the right. */
    broker_enqueue_task(fx, &second);
    assert_key_type(fx->redis, keyf("asynq:{%s}:pending", QUEUE), "list");
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){second.id, first.id}, 2);

    test_task_free(&first);
    test_task_free(&second);
}

static void test_enqueue_existing_id_conflicts(void **state)
{
    struct broker_fixture *fx = *state;
    const char *task_key;
    struct test_task task;
    struct test_task clash;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t pending_since;

    test_task_init(&task, QUEUE, "report", "first", NULL);
    test_task_init(&clash, QUEUE, "report", "second", NULL);
    memcpy(clash.id, task.id, sizeof(clash.id));
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    broker_enqueue_task(fx, &task);
    pending_since = redis_hget_int(fx->redis, task_key, "pending_since");

    casynq__broker_enqueue(&cmd, QUEUE, clash.id, clash.msg.data,
                           clash.msg.len, pending_since + 1000, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err),
                     CASYNQ_ETASKID_CONFLICT);
    assert_non_null(strstr(err, "conflict"));

    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    assert_int_equal(redis_hget_int(fx->redis, task_key, "pending_since"),
                     pending_since);
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){task.id}, 1);

    test_task_free(&task);
    test_task_free(&clash);
}

static void test_enqueue_unique_takes_lock(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state", "pending_since",
                                  "unique_key"};
    const char *task_key;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_ns = casynq__now_unix_ns();

    unique_key(&lock, "email:welcome", "{\"user_id\":42}");
    test_task_init(&task, QUEUE, "email:welcome", "{\"user_id\":42}",
                   lock.data);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    casynq__broker_enqueue(&cmd, QUEUE, task.id, task.msg.data,
                           task.msg.len, now_ns, lock.data, UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_lock(fx->redis, lock.data, task.id);
    assert_key_type(fx->redis, task_key, "hash");
    assert_hash_fields(fx->redis, task_key, fields, 4);
    assert_hash_field(fx->redis, task_key, "state", "pending");
    assert_hash_field(fx->redis, task_key, "unique_key", lock.data);
    assert_int_equal(redis_hget_int(fx->redis, task_key, "pending_since"),
                     now_ns);
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){task.id}, 1);

    casynq__buf_free(&lock);
    test_task_free(&task);
}

static void test_enqueue_unique_duplicate_rejected(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct test_task dup;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    unique_key(&lock, "sync", "account-7");
    test_task_init(&task, QUEUE, "sync", "account-7", lock.data);
    test_task_init(&dup, QUEUE, "sync", "account-7", lock.data);

    casynq__broker_enqueue(&cmd, QUEUE, task.id, task.msg.data,
                           task.msg.len, casynq__now_unix_ns(), lock.data,
                           UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    casynq__broker_enqueue(&cmd, QUEUE, dup.id, dup.msg.data, dup.msg.len,
                           casynq__now_unix_ns(), lock.data, UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), CASYNQ_EDUPLICATE);
    assert_non_null(strstr(err, "already exists"));

    assert_lock(fx->redis, lock.data, task.id);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, dup.id));
    assert_list(fx->redis, keyf("asynq:{%s}:pending", QUEUE),
                (const char *const[]){task.id}, 1);

    casynq__buf_free(&lock);
    test_task_free(&task);
    test_task_free(&dup);
}

static void test_enqueue_unique_id_conflict_keeps_lock(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__buf lock = {0};
    struct test_task plain;
    struct test_task unique;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    const char *task_key;

    unique_key(&lock, "sync", "account-8");
    test_task_init(&plain, QUEUE, "sync", "plain", NULL);
    test_task_init(&unique, QUEUE, "sync", "account-8", lock.data);
    memcpy(unique.id, plain.id, sizeof(unique.id));
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, plain.id);
    broker_enqueue_task(fx, &plain);

    casynq__broker_enqueue(&cmd, QUEUE, unique.id, unique.msg.data,
                           unique.msg.len, casynq__now_unix_ns(), lock.data,
                           UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err),
                     CASYNQ_ETASKID_CONFLICT);

    /* asynq v0.26.0 takes the lock before the ID check and keeps it. */
    assert_lock(fx->redis, lock.data, plain.id);
    assert_hash_field_bytes(fx->redis, task_key, "msg", plain.msg.data,
                            plain.msg.len);
    assert_hash_field_missing(fx->redis, task_key, "unique_key");
    assert_int_equal(redis_llen(fx->redis,
                                keyf("asynq:{%s}:pending", QUEUE)),
                     1);

    casynq__buf_free(&lock);
    test_task_free(&plain);
    test_task_free(&unique);
}

static void test_schedule_writes_scheduled_task(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state"};
    const char *task_key;
    const char *scheduled_key = keyf("asynq:{%s}:scheduled", QUEUE);
    struct test_task task;
    struct test_task clash;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t process_at_s = casynq__now_unix_s() + 3600;

    test_task_init(&task, QUEUE, "reminder", "in an hour", NULL);
    test_task_init(&clash, QUEUE, "reminder", "other", NULL);
    memcpy(clash.id, task.id, sizeof(clash.id));
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    casynq__broker_schedule(&cmd, QUEUE, task.id, task.msg.data,
                            task.msg.len, process_at_s, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_key_type(fx->redis, task_key, "hash");
    assert_hash_fields(fx->redis, task_key, fields, 2);
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    assert_hash_field(fx->redis, task_key, "state", "scheduled");
    assert_key_type(fx->redis, scheduled_key, "zset");
    assert_int_equal(redis_zscore(fx->redis, scheduled_key, task.id),
                     process_at_s);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:pending", QUEUE));

    casynq__broker_schedule(&cmd, QUEUE, clash.id, clash.msg.data,
                            clash.msg.len, process_at_s + 60, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err),
                     CASYNQ_ETASKID_CONFLICT);
    assert_int_equal(redis_zscore(fx->redis, scheduled_key, task.id),
                     process_at_s);
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);

    test_task_free(&task);
    test_task_free(&clash);
}

static void test_schedule_unique_takes_lock(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state", "unique_key"};
    const char *scheduled_key = keyf("asynq:{%s}:scheduled", QUEUE);
    const char *task_key;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct test_task dup;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t process_at_s = casynq__now_unix_s() + 600;

    unique_key(&lock, "invoice", "order-1");
    test_task_init(&task, QUEUE, "invoice", "order-1", lock.data);
    test_task_init(&dup, QUEUE, "invoice", "order-1", lock.data);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    casynq__broker_schedule(&cmd, QUEUE, task.id, task.msg.data,
                            task.msg.len, process_at_s, lock.data,
                            UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_lock(fx->redis, lock.data, task.id);
    assert_hash_fields(fx->redis, task_key, fields, 3);
    assert_hash_field(fx->redis, task_key, "state", "scheduled");
    assert_hash_field(fx->redis, task_key, "unique_key", lock.data);
    assert_int_equal(redis_zscore(fx->redis, scheduled_key, task.id),
                     process_at_s);

    casynq__broker_schedule(&cmd, QUEUE, dup.id, dup.msg.data, dup.msg.len,
                            process_at_s, lock.data, UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), CASYNQ_EDUPLICATE);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, dup.id));
    assert_int_equal(redis_zcard(fx->redis, scheduled_key), 1);
    assert_lock(fx->redis, lock.data, task.id);

    casynq__buf_free(&lock);
    test_task_free(&task);
    test_task_free(&dup);
}

static void test_add_to_group_writes_aggregating_task(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state", "group"};
    const char *group_key = keyf("asynq:{%s}:g:%s", QUEUE, "digest");
    const char *groups_key = keyf("asynq:{%s}:groups", QUEUE);
    const char *task_key;
    struct test_task task;
    struct test_task clash;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t now_s = casynq__now_unix_s();

    test_task_init(&task, QUEUE, "digest:add", "item-1", NULL);
    test_task_init(&clash, QUEUE, "digest:add", "item-2", NULL);
    memcpy(clash.id, task.id, sizeof(clash.id));
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    casynq__broker_add_to_group(&cmd, QUEUE, task.id, task.msg.data,
                                task.msg.len, "digest", now_s, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_key_type(fx->redis, task_key, "hash");
    assert_hash_fields(fx->redis, task_key, fields, 3);
    assert_hash_field_bytes(fx->redis, task_key, "msg", task.msg.data,
                            task.msg.len);
    assert_hash_field(fx->redis, task_key, "state", "aggregating");
    assert_hash_field(fx->redis, task_key, "group", "digest");
    assert_key_type(fx->redis, group_key, "zset");
    assert_int_equal(redis_zscore(fx->redis, group_key, task.id), now_s);
    assert_key_type(fx->redis, groups_key, "set");
    assert_true(redis_sismember(fx->redis, groups_key, "digest"));
    assert_key_missing(fx->redis, keyf("asynq:{%s}:pending", QUEUE));

    casynq__broker_add_to_group(&cmd, QUEUE, clash.id, clash.msg.data,
                                clash.msg.len, "digest", now_s + 5, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err),
                     CASYNQ_ETASKID_CONFLICT);
    assert_int_equal(redis_zscore(fx->redis, group_key, task.id), now_s);
    assert_int_equal(redis_zcard(fx->redis, group_key), 1);

    test_task_free(&task);
    test_task_free(&clash);
}

static void test_add_to_group_unique_takes_lock(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const fields[] = {"msg", "state", "group"};
    const char *group_key = keyf("asynq:{%s}:g:%s", QUEUE, "batch");
    const char *task_key;
    struct casynq__buf lock = {0};
    struct test_task task;
    struct test_task dup;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    Asynq__TaskMessage *m;
    int64_t now_s = casynq__now_unix_s();

    unique_key(&lock, "batch:add", "row-9");
    test_task_init(&task, QUEUE, "batch:add", "row-9", lock.data);
    test_task_init(&dup, QUEUE, "batch:add", "row-9", lock.data);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    casynq__broker_add_to_group(&cmd, QUEUE, task.id, task.msg.data,
                                task.msg.len, "batch", now_s, lock.data,
                                UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    assert_lock(fx->redis, lock.data, task.id);
    /* asynq's unique add-to-group writes no unique_key field, so the lock
     * key is only inside msg. */
    assert_hash_fields(fx->redis, task_key, fields, 3);
    assert_hash_field_missing(fx->redis, task_key, "unique_key");
    assert_hash_field(fx->redis, task_key, "state", "aggregating");
    assert_hash_field(fx->redis, task_key, "group", "batch");
    m = redis_hget_msg(fx->redis, task_key);
    assert_string_equal(m->unique_key, lock.data);
    casynq__msg_free(m);
    assert_int_equal(redis_zscore(fx->redis, group_key, task.id), now_s);
    assert_true(redis_sismember(fx->redis,
                                keyf("asynq:{%s}:groups", QUEUE), "batch"));

    casynq__broker_add_to_group(&cmd, QUEUE, dup.id, dup.msg.data,
                                dup.msg.len, "batch", now_s, lock.data,
                                UNIQUE_TTL_S);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), CASYNQ_EDUPLICATE);
    assert_key_missing(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, dup.id));
    assert_int_equal(redis_zcard(fx->redis, group_key), 1);
    assert_lock(fx->redis, lock.data, task.id);

    casynq__buf_free(&lock);
    test_task_free(&task);
    test_task_free(&dup);
}

static void test_unique_key_matches_asynq_layout(void **state)
{
    struct casynq__buf key = {0};

    (void)state;
    unique_key(&key, "email:welcome", "{\"user_id\":42}");
    assert_string_equal(key.data, "asynq:{default}:unique:email:welcome:"
                                  "1181f89307fa271072c095747d5813cc");
    casynq__buf_free(&key);

    assert_int_equal(casynq__broker_unique_key(&key, QUEUE, "ping", "", 0),
                     0);
    assert_string_equal(key.data, "asynq:{default}:unique:ping:"
                                  "d41d8cd98f00b204e9800998ecf8427e");
    casynq__buf_free(&key);

    assert_int_equal(casynq__broker_unique_key(&key, QUEUE, "ping", NULL, 0),
                     0);
    assert_string_equal(key.data, "asynq:{default}:unique:ping:");
    casynq__buf_free(&key);
}

static void test_enqueue_queue_name_used_verbatim(void **state)
{
    struct broker_fixture *fx = *state;
    const char *queue = "reports: eu west";
    struct test_task task;

    test_task_init(&task, queue, "report", NULL, NULL);
    broker_enqueue_task(fx, &task);

    assert_key_type(fx->redis, keyf("asynq:{%s}:t:%s", queue, task.id),
                    "hash");
    assert_list(fx->redis, keyf("asynq:{%s}:pending", queue),
                (const char *const[]){task.id}, 1);

    test_task_free(&task);
}

#define BROKER_TEST(fn)                                                       \
    cmocka_unit_test_setup_teardown(fn, broker_fixture_setup,                 \
                                    broker_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BROKER_TEST(test_register_queue_adds_to_set),
        BROKER_TEST(test_enqueue_writes_pending_task),
        BROKER_TEST(test_enqueue_existing_id_conflicts),
        BROKER_TEST(test_enqueue_unique_takes_lock),
        BROKER_TEST(test_enqueue_unique_duplicate_rejected),
        BROKER_TEST(test_enqueue_unique_id_conflict_keeps_lock),
        BROKER_TEST(test_schedule_writes_scheduled_task),
        BROKER_TEST(test_schedule_unique_takes_lock),
        BROKER_TEST(test_add_to_group_writes_aggregating_task),
        BROKER_TEST(test_add_to_group_unique_takes_lock),
        BROKER_TEST(test_unique_key_matches_asynq_layout),
        BROKER_TEST(test_enqueue_queue_name_used_verbatim),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
