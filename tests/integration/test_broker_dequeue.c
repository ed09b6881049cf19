/* Integration tests of the broker's dequeue script: queue order, paused
 * queues, batches, the active state and lease, IDs whose task hash is
 * gone, and the pending_since it returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "broker_helpers.h"

#define MAX_OUT 8

/* Result of one dequeue call. The entries borrow from reply. */
struct dequeue_result {
    redisReply *reply;
    struct casynq__dequeued out[MAX_OUT];
    int n;
    char err[CASYNQ__ERRBUF_SIZE];
};

static void dequeue(struct broker_fixture *fx, const char *const *queues,
                    int nqueues, int64_t lease_expiry_s, int max,
                    struct dequeue_result *res)
{
    struct casynq__cmd cmd;

    assert_true(max <= MAX_OUT);
    memset(res, 0, sizeof(*res));
    casynq__broker_dequeue(&cmd, queues, nqueues, lease_expiry_s, max);
    res->reply = broker_exec(fx, &cmd);
    res->n = casynq__broker_parse_dequeue(res->reply, res->out, max,
                                          res->err);
}

static void assert_dequeued(const struct dequeue_result *res, int i,
                            int queue_index, const struct test_task *task)
{
    const struct casynq__dequeued *d = &res->out[i];

    assert_true(i < res->n);
    assert_int_equal(d->queue_index, queue_index);
    assert_int_equal(d->id_len, strlen(task->id));
    assert_memory_equal(d->id, task->id, d->id_len);
    assert_non_null(d->msg);
    assert_int_equal(d->msg_len, task->msg.len);
    assert_memory_equal(d->msg, task->msg.data, d->msg_len);
}

/* Checks everything dequeue writes for one task. */
static void assert_active(redisContext *c, const struct test_task *task,
                          int64_t lease_expiry_s)
{
    const char *task_key = keyf("asynq:{%s}:t:%s", task->queue, task->id);
    const char *const fields[] = {"msg", "state"};

    assert_hash_field(c, task_key, "state", "active");
    assert_hash_field_missing(c, task_key, "pending_since");
    assert_hash_fields(c, task_key, fields, 2);
    assert_hash_field_bytes(c, task_key, "msg", task->msg.data,
                            task->msg.len);
    assert_key_type(c, keyf("asynq:{%s}:lease", task->queue), "zset");
    assert_int_equal(redis_zscore(c, keyf("asynq:{%s}:lease", task->queue),
                                  task->id),
                     lease_expiry_s);
}

static void test_dequeue_single_queue_takes_oldest(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"default"};
    struct dequeue_result res;
    struct test_task first;
    struct test_task second;
    int64_t lease_expiry_s = casynq__now_unix_s() + CASYNQ__LEASE_S;

    test_task_init(&first, "default", "job", "1", NULL);
    test_task_init(&second, "default", "job", "2", NULL);
    broker_enqueue_task(fx, &first);
    broker_enqueue_task(fx, &second);

    dequeue(fx, queues, 1, lease_expiry_s, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 0, &first);
    freeReplyObject(res.reply);

    assert_active(fx->redis, &first, lease_expiry_s);
    assert_key_type(fx->redis, "asynq:{default}:active", "list");
    assert_list(fx->redis, "asynq:{default}:active",
                (const char *const[]){first.id}, 1);
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){second.id}, 1);
    assert_hash_field(fx->redis, keyf("asynq:{default}:t:%s", second.id),
                      "state", "pending");
    assert_int_equal(redis_zcard(fx->redis, "asynq:{default}:lease"), 1);

    test_task_free(&first);
    test_task_free(&second);
}

static void test_dequeue_tries_queues_in_order(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"critical", "default", "low"};
    struct dequeue_result res;
    struct test_task low;
    struct test_task critical;
    int64_t lease_expiry_s = casynq__now_unix_s() + CASYNQ__LEASE_S;

    test_task_init(&low, "low", "job", "low", NULL);
    test_task_init(&critical, "critical", "job", "critical", NULL);

    /* Only the last queue has a task, so the script falls through to it. */
    broker_enqueue_task(fx, &low);
    dequeue(fx, queues, 3, lease_expiry_s, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 2, &low);
    freeReplyObject(res.reply);
    assert_active(fx->redis, &low, lease_expiry_s);

    /* With tasks in the first and last queues, the first one wins. */
    broker_enqueue_task(fx, &critical);
    test_task_free(&low);
    test_task_init(&low, "low", "job", "low again", NULL);
    broker_enqueue_task(fx, &low);
    dequeue(fx, queues, 3, lease_expiry_s, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 0, &critical);
    freeReplyObject(res.reply);
    assert_active(fx->redis, &critical, lease_expiry_s);
    assert_list(fx->redis, "asynq:{low}:pending",
                (const char *const[]){low.id}, 1);
    assert_key_missing(fx->redis, "asynq:{default}:active");

    test_task_free(&low);
    test_task_free(&critical);
}

static void test_dequeue_skips_paused_queue(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"critical", "default"};
    struct dequeue_result res;
    struct test_task paused;
    struct test_task open;
    redisReply *r;
    int64_t lease_expiry_s = casynq__now_unix_s() + CASYNQ__LEASE_S;

    test_task_init(&paused, "critical", "job", "paused", NULL);
    test_task_init(&open, "default", "job", "open", NULL);
    broker_enqueue_task(fx, &paused);
    broker_enqueue_task(fx, &open);
    /* The asynq Inspector pauses a queue by storing the time in unix s. */
    r = redis_run(fx->redis, "SET asynq:{critical}:paused %lld",
                  (long long)casynq__now_unix_s());
    freeReplyObject(r);

    dequeue(fx, queues, 2, lease_expiry_s, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 1, &open);
    freeReplyObject(res.reply);

    assert_list(fx->redis, "asynq:{critical}:pending",
                (const char *const[]){paused.id}, 1);
    assert_hash_field(fx->redis, keyf("asynq:{critical}:t:%s", paused.id),
                      "state", "pending");
    assert_key_missing(fx->redis, "asynq:{critical}:active");
    assert_key_missing(fx->redis, "asynq:{critical}:lease");

    /* Every remaining queue is paused or empty now. */
    dequeue(fx, queues, 2, lease_expiry_s, 1, &res);
    assert_int_equal(res.n, 0);
    freeReplyObject(res.reply);

    test_task_free(&paused);
    test_task_free(&open);
}

static void test_dequeue_batch_takes_several(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"high", "default"};
    struct dequeue_result res;
    struct test_task high;
    struct test_task tasks[3];
    int64_t lease_expiry_s = casynq__now_unix_s() + CASYNQ__LEASE_S;

    test_task_init(&high, "high", "job", "high", NULL);
    broker_enqueue_task(fx, &high);
    for (int i = 0; i < 3; i++) {
        test_task_init(&tasks[i], "default", "job", "batch", NULL);
        broker_enqueue_task(fx, &tasks[i]);
    }

    /* One from the first queue, then the two oldest of the second. */
    dequeue(fx, queues, 2, lease_expiry_s, 3, &res);
    assert_int_equal(res.n, 3);
    assert_dequeued(&res, 0, 0, &high);
    assert_dequeued(&res, 1, 1, &tasks[0]);
    assert_dequeued(&res, 2, 1, &tasks[1]);
    freeReplyObject(res.reply);

    assert_active(fx->redis, &high, lease_expiry_s);
    assert_active(fx->redis, &tasks[0], lease_expiry_s);
    assert_active(fx->redis, &tasks[1], lease_expiry_s);
    assert_list(fx->redis, "asynq:{default}:active",
                (const char *const[]){tasks[1].id, tasks[0].id}, 2);
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){tasks[2].id}, 1);
    assert_hash_field(fx->redis, keyf("asynq:{default}:t:%s", tasks[2].id),
                      "state", "pending");

    /* A larger maximum stops when the queues run dry. */
    dequeue(fx, queues, 2, lease_expiry_s, 5, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 1, &tasks[2]);
    freeReplyObject(res.reply);

    test_task_free(&high);
    for (int i = 0; i < 3; i++) {
        test_task_free(&tasks[i]);
    }
}

static void test_dequeue_missing_hash_drops_id(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"default"};
    struct dequeue_result res;
    struct test_task task;
    redisReply *r;
    int64_t lease_expiry_s = casynq__now_unix_s() + CASYNQ__LEASE_S;

    /* The ghost ID is older than the real task, so it comes out first. */
    r = redis_run(fx->redis, "LPUSH asynq:{default}:pending ghost-id");
    freeReplyObject(r);
    test_task_init(&task, "default", "job", "real", NULL);
    broker_enqueue_task(fx, &task);

    dequeue(fx, queues, 1, lease_expiry_s, 2, &res);
    assert_int_equal(res.n, 2);
    assert_int_equal(res.out[0].queue_index, 0);
    assert_int_equal(res.out[0].id_len, strlen("ghost-id"));
    assert_memory_equal(res.out[0].id, "ghost-id", res.out[0].id_len);
    assert_null(res.out[0].msg);
    assert_int_equal(res.out[0].msg_len, 0);
    assert_dequeued(&res, 1, 0, &task);
    freeReplyObject(res.reply);

    assert_list(fx->redis, "asynq:{default}:active",
                (const char *const[]){task.id}, 1);
    assert_zset_lacks(fx->redis, "asynq:{default}:lease", "ghost-id");
    assert_key_missing(fx->redis, "asynq:{default}:t:ghost-id");
    assert_active(fx->redis, &task, lease_expiry_s);

    test_task_free(&task);
}

static void test_dequeue_empty_queues_return_zero(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"default", "low"};
    struct dequeue_result res;

    dequeue(fx, queues, 2, casynq__now_unix_s() + CASYNQ__LEASE_S, 4, &res);
    assert_int_equal(res.n, 0);
    freeReplyObject(res.reply);

    assert_key_missing(fx->redis, "asynq:{default}:active");
    assert_key_missing(fx->redis, "asynq:{default}:lease");
    assert_key_missing(fx->redis, "asynq:{low}:active");
}

static void test_dequeue_zero_max_rejected(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"default"};
    struct dequeue_result res;
    struct test_task task;

    test_task_init(&task, "default", "job", "kept", NULL);
    broker_enqueue_task(fx, &task);

    dequeue(fx, queues, 1, casynq__now_unix_s() + CASYNQ__LEASE_S, 0, &res);
    assert_int_equal(res.n, CASYNQ_EREDIS);
    assert_non_null(strstr(res.err, "invalid maximum task count"));
    freeReplyObject(res.reply);

    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){task.id}, 1);
    assert_key_missing(fx->redis, "asynq:{default}:active");

    test_task_free(&task);
}

static void test_dequeue_returns_pending_since(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const queues[] = {"default"};
    int64_t since_ns = INT64_C(1700000000123456789);
    char err[CASYNQ__ERRBUF_SIZE] = "";
    struct dequeue_result res;
    struct test_task task;
    struct casynq__cmd cmd;

    test_task_init(&task, "default", "job", "waited", NULL);
    casynq__broker_enqueue(&cmd, task.queue, task.id, task.msg.data,
                           task.msg.len, since_ns, NULL, 0);
    assert_int_equal(broker_exec_enqueue(fx, &cmd, err), 0);

    dequeue(fx, queues, 1, casynq__now_unix_s() + CASYNQ__LEASE_S, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 0, &task);
    assert_int_equal(res.out[0].pending_since_ns, since_ns);
    freeReplyObject(res.reply);

    /* A requeue at shutdown writes no pending_since, as asynq's does, so
     * the next dequeue reports none. */
    casynq__broker_requeue(&cmd, task.queue, task.id);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);
    dequeue(fx, queues, 1, casynq__now_unix_s() + CASYNQ__LEASE_S, 1, &res);
    assert_int_equal(res.n, 1);
    assert_dequeued(&res, 0, 0, &task);
    assert_int_equal(res.out[0].pending_since_ns, 0);
    freeReplyObject(res.reply);

    test_task_free(&task);
}

#define BROKER_TEST(fn)                                                       \
    cmocka_unit_test_setup_teardown(fn, broker_fixture_setup,                 \
                                    broker_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BROKER_TEST(test_dequeue_single_queue_takes_oldest),
        BROKER_TEST(test_dequeue_tries_queues_in_order),
        BROKER_TEST(test_dequeue_skips_paused_queue),
        BROKER_TEST(test_dequeue_batch_takes_several),
        BROKER_TEST(test_dequeue_missing_hash_drops_id),
        BROKER_TEST(test_dequeue_empty_queues_return_zero),
        BROKER_TEST(test_dequeue_zero_max_rejected),
        BROKER_TEST(test_dequeue_returns_pending_since),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
