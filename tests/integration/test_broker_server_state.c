/* Integration tests of the heartbeat writes: the asynq:servers and
 * asynq:workers sets, the ServerInfo key, the workers hash, and their
 * removal at shutdown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker_helpers.h"

#define HOST "worker-7"
#define PID 4121

struct server_state {
    struct casynq__server_ident who;
    char server_id[CASYNQ__UUID_LEN + 1];
    char server_key[128];
    char workers_key[128];
    struct casynq__buf server_info;
};

static void server_state_init(struct server_state *s)
{
    Asynq__ServerInfo info;
    Asynq__ServerInfo__QueuesEntry queue;
    Asynq__ServerInfo__QueuesEntry *queues[1] = {&queue};
    Google__Protobuf__Timestamp started;

    memset(s, 0, sizeof(*s));
    casynq__uuid(s->server_id);
    s->who.host = HOST;
    s->who.pid = PID;
    s->who.server_id = s->server_id;
    snprintf(s->server_key, sizeof(s->server_key),
             "asynq:servers:{%s:%d:%s}", HOST, PID, s->server_id);
    snprintf(s->workers_key, sizeof(s->workers_key),
             "asynq:workers:{%s:%d:%s}", HOST, PID, s->server_id);

    /* The generated INIT macros cast away const, which -Wcast-qual
     * rejects, so the init functions are used instead. */
    asynq__server_info__init(&info);
    asynq__server_info__queues_entry__init(&queue);
    google__protobuf__timestamp__init(&started);
    queue.key = (char *)(uintptr_t)"default";
    queue.value = 3;
    started.seconds = casynq__now_unix_s();
    info.host = (char *)(uintptr_t)HOST;
    info.pid = PID;
    info.server_id = s->server_id;
    info.concurrency = 10;
    info.n_queues = 1;
    info.queues = queues;
    info.status = (char *)(uintptr_t)"active";
    info.start_time = &started;
    info.active_worker_count = 2;
    assert_int_equal(casynq__server_info_encode(&info, &s->server_info), 0);
}

static void encode_worker(struct casynq__buf *out, const char *server_id,
                          const char *task_id)
{
    Asynq__WorkerInfo info;

    asynq__worker_info__init(&info);
    info.host = (char *)(uintptr_t)HOST;
    info.pid = PID;
    info.server_id = (char *)(uintptr_t)server_id;
    info.task_id = (char *)(uintptr_t)task_id;
    info.task_type = (char *)(uintptr_t)"email:welcome";
    info.queue = (char *)(uintptr_t)"default";
    assert_int_equal(casynq__worker_info_encode(&info, out), 0);
}

/* Runs the heartbeat script with nworkers workers whose task IDs are
 * task_ids. */
static void write_state(struct broker_fixture *fx, struct server_state *s,
                        const char *const *task_ids, int nworkers)
{
    struct casynq__buf workers[4] = {{0}};
    const char *infos[4];
    size_t lens[4];
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";

    assert_true(nworkers <= 4);
    for (int i = 0; i < nworkers; i++) {
        encode_worker(&workers[i], s->server_id, task_ids[i]);
        infos[i] = workers[i].data;
        lens[i] = workers[i].len;
    }
    casynq__broker_write_server_state(&cmd, &s->who, s->server_info.data,
                                      s->server_info.len, task_ids, infos,
                                      lens, nworkers,
                                      CASYNQ__HEARTBEAT_TTL_S);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);
    for (int i = 0; i < nworkers; i++) {
        casynq__buf_free(&workers[i]);
    }
}

static void assert_ttl_within_heartbeat(redisContext *c, const char *key)
{
    long long ttl = redis_ttl(c, key);

    assert_true(ttl > 0);
    assert_true(ttl <= CASYNQ__HEARTBEAT_TTL_S);
}

static void test_heartbeat_zadd_sets_expiry_scores(void **state)
{
    struct broker_fixture *fx = *state;
    struct server_state s;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t expiry_s = casynq__now_unix_s() + CASYNQ__HEARTBEAT_TTL_S;

    server_state_init(&s);
    casynq__broker_servers_zadd(&cmd, &s.who, expiry_s);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_workers_zadd(&cmd, &s.who, expiry_s);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);

    assert_key_type(fx->redis, CASYNQ__SERVERS_KEY, "zset");
    assert_int_equal(redis_zscore(fx->redis, CASYNQ__SERVERS_KEY,
                                  s.server_key),
                     expiry_s);
    assert_key_type(fx->redis, CASYNQ__WORKERS_KEY, "zset");
    assert_int_equal(redis_zscore(fx->redis, CASYNQ__WORKERS_KEY,
                                  s.workers_key),
                     expiry_s);

    /* The next heartbeat moves the expiry without adding members. */
    casynq__broker_servers_zadd(&cmd, &s.who, expiry_s + 5);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 0);
    assert_int_equal(redis_zscore(fx->redis, CASYNQ__SERVERS_KEY,
                                  s.server_key),
                     expiry_s + 5);
    assert_int_equal(redis_zcard(fx->redis, CASYNQ__SERVERS_KEY), 1);

    casynq__buf_free(&s.server_info);
}

static void test_write_server_state_stores_info(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const task_ids[] = {"task-a", "task-b"};
    struct server_state s;
    Asynq__ServerInfo *info;
    Asynq__WorkerInfo *worker;
    redisReply *r;

    server_state_init(&s);
    write_state(fx, &s, task_ids, 2);

    assert_key_type(fx->redis, s.server_key, "string");
    assert_ttl_within_heartbeat(fx->redis, s.server_key);
    r = redis_run(fx->redis, "GET %s", s.server_key);
    assert_int_equal(r->len, s.server_info.len);
    assert_memory_equal(r->str, s.server_info.data, r->len);
    info = asynq__server_info__unpack(NULL, r->len, (const uint8_t *)r->str);
    freeReplyObject(r);
    assert_non_null(info);
    assert_string_equal(info->host, HOST);
    assert_int_equal(info->pid, PID);
    assert_string_equal(info->server_id, s.server_id);
    assert_int_equal(info->concurrency, 10);
    assert_string_equal(info->status, "active");
    assert_int_equal(info->n_queues, 1);
    assert_string_equal(info->queues[0]->key, "default");
    assert_int_equal(info->queues[0]->value, 3);
    assert_non_null(info->start_time);
    assert_int_equal(info->active_worker_count, 2);
    asynq__server_info__free_unpacked(info, NULL);

    assert_key_type(fx->redis, s.workers_key, "hash");
    assert_ttl_within_heartbeat(fx->redis, s.workers_key);
    assert_hash_fields(fx->redis, s.workers_key, task_ids, 2);
    for (int i = 0; i < 2; i++) {
        r = redis_run(fx->redis, "HGET %s %s", s.workers_key, task_ids[i]);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        worker = asynq__worker_info__unpack(NULL, r->len,
                                            (const uint8_t *)r->str);
        freeReplyObject(r);
        assert_non_null(worker);
        assert_string_equal(worker->task_id, task_ids[i]);
        assert_string_equal(worker->server_id, s.server_id);
        assert_string_equal(worker->task_type, "email:welcome");
        assert_string_equal(worker->queue, "default");
        asynq__worker_info__free_unpacked(worker, NULL);
    }

    casynq__buf_free(&s.server_info);
}

static void test_write_server_state_replaces_workers(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const before[] = {"task-a", "task-b"};
    const char *const after[] = {"task-c"};
    struct server_state s;

    server_state_init(&s);
    write_state(fx, &s, before, 2);
    write_state(fx, &s, after, 1);

    assert_hash_fields(fx->redis, s.workers_key, after, 1);
    assert_ttl_within_heartbeat(fx->redis, s.workers_key);

    /* With no task in flight the hash is deleted and not recreated. */
    write_state(fx, &s, NULL, 0);
    assert_key_missing(fx->redis, s.workers_key);
    assert_key_type(fx->redis, s.server_key, "string");
    assert_ttl_within_heartbeat(fx->redis, s.server_key);

    casynq__buf_free(&s.server_info);
}

static void test_clear_server_state_removes_all(void **state)
{
    struct broker_fixture *fx = *state;
    const char *const task_ids[] = {"task-a"};
    struct server_state s;
    struct server_state other;
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    int64_t expiry_s = casynq__now_unix_s() + CASYNQ__HEARTBEAT_TTL_S;

    server_state_init(&s);
    server_state_init(&other);
    casynq__broker_servers_zadd(&cmd, &s.who, expiry_s);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_workers_zadd(&cmd, &s.who, expiry_s);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_servers_zadd(&cmd, &other.who, expiry_s);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    write_state(fx, &s, task_ids, 1);
    write_state(fx, &other, task_ids, 1);

    casynq__broker_servers_zrem(&cmd, &s.who);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_workers_zrem(&cmd, &s.who);
    assert_int_equal(broker_exec_count(fx, &cmd, err), 1);
    casynq__broker_clear_server_state(&cmd, &s.who);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    assert_zset_lacks(fx->redis, CASYNQ__SERVERS_KEY, s.server_key);
    assert_key_missing(fx->redis, CASYNQ__WORKERS_KEY);
    assert_key_missing(fx->redis, s.server_key);
    assert_key_missing(fx->redis, s.workers_key);

    /* Another server's entries stay. */
    assert_int_equal(redis_zscore(fx->redis, CASYNQ__SERVERS_KEY,
                                  other.server_key),
                     expiry_s);
    assert_key_exists(fx->redis, other.server_key);
    assert_key_exists(fx->redis, other.workers_key);

    /* Clearing again finds nothing and still succeeds. */
    casynq__broker_clear_server_state(&cmd, &s.who);
    assert_int_equal(broker_exec_status(fx, &cmd, err), 0);

    casynq__buf_free(&s.server_info);
    casynq__buf_free(&other.server_info);
}

#define BROKER_TEST(fn)                                                       \
    cmocka_unit_test_setup_teardown(fn, broker_fixture_setup,                 \
                                    broker_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        BROKER_TEST(test_heartbeat_zadd_sets_expiry_scores),
        BROKER_TEST(test_write_server_state_stores_info),
        BROKER_TEST(test_write_server_state_replaces_workers),
        BROKER_TEST(test_clear_server_state_removes_all),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
