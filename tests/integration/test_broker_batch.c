/* Integration tests that the batched scripts leave Redis exactly as the
 * one-task operations do.
 *
 * dequeue takes several tasks with one RPOP and one LPUSH, and done_batch
 * checks a whole batch with one ZMSCORE and one EXISTS. Both fall back to
 * one call per task on a Redis before 6.2, which lacks those forms. Each
 * test builds the same situation in two sets of queues, runs the two ways
 * on them and compares a description of every key involved, in which task
 * IDs are replaced by the role each task plays. The fallbacks run as an
 * ACL user that may not call RPOP and ZMSCORE, which makes the script take
 * the same path as on an old server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "broker_helpers.h"

#define SNAPSHOT_SIZE 4096
#define MAX_ROLES     8

/* An ACL user with every right but RPOP and ZMSCORE, so scripts it runs
 * see those commands fail as on Redis 5 or 6.0. */
#define LEGACY_USER     "legacy"
#define LEGACY_PASSWORD "legacy-password"

/* The tasks of one set of queues, indexed by role. ids[r] is the task ID
 * of role r, which for a role without a task hash is a bare string. */
struct roles {
    struct test_task tasks[MAX_ROLES];
    bool has_task[MAX_ROLES];
    char ids[MAX_ROLES][64];
    char locks[MAX_ROLES][128]; /* uniqueness key, "" for none */
    int n;
};

static void roles_free(struct roles *r)
{
    for (int i = 0; i < r->n; i++) {
        if (r->has_task[i]) {
            test_task_free(&r->tasks[i]);
        }
    }
}

/* Returns the role of id, or -1. */
static int role_of(const struct roles *r, const char *id, size_t len)
{
    for (int i = 0; i < r->n; i++) {
        if (strlen(r->ids[i]) == len && memcmp(r->ids[i], id, len) == 0) {
            return i;
        }
    }
    return -1;
}

/* Appends printf output to the snapshot buffer. */
static void put(char *out, const char *fmt, ...) CASYNQ_PRINTF(2, 3);

static void put(char *out, const char *fmt, ...)
{
    size_t used = strlen(out);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(out + used, SNAPSHOT_SIZE - used, fmt, ap);
    va_end(ap);
}

/* Appends the elements of a list reply by role. */
static void put_members(char *out, const struct roles *r, const redisReply *rep)
{
    for (size_t i = 0; i < rep->elements; i++) {
        put(out, " %d", role_of(r, rep->element[i]->str, rep->element[i]->len));
    }
}

/* Describes the keys of queue and the tasks of r, with task IDs replaced
 * by roles, so that two sets of queues built the same way compare equal. */
static void snapshot(struct broker_fixture *fx, const char *queue,
                     const struct roles *r, int64_t now_s, char *out)
{
    static const char *const lists[] = {"pending", "active"};
    char date[11];
    redisReply *rep;

    out[0] = '\0';
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        rep = redis_run(fx->redis, "LRANGE asynq:{%s}:%s 0 -1", queue,
                        lists[i]);
        put(out, "%s:", lists[i]);
        put_members(out, r, rep);
        put(out, "\n");
        freeReplyObject(rep);
    }
    /* Members of equal score come back in byte order, which differs
     * between two sets of random IDs. So each role is looked up. */
    rep = redis_run(fx->redis, "ZCARD asynq:{%s}:lease", queue);
    put(out, "lease: %lld members:", rep->integer);
    freeReplyObject(rep);
    for (int i = 0; i < r->n; i++) {
        rep = redis_run(fx->redis, "ZSCORE asynq:{%s}:lease %s", queue,
                        r->ids[i]);
        if (rep->type == REDIS_REPLY_STRING) {
            put(out, " %d@%s", i, rep->str);
        }
        freeReplyObject(rep);
    }
    put(out, "\n");

    for (int i = 0; i < r->n; i++) {
        /* Field order in a hash is not fixed, so the fields are read one
         * by one. msg differs only by the ID inside it and pending_since
         * by the enqueue time. Their presence is what a script changes. */
        rep = redis_run(fx->redis,
                        "HMGET asynq:{%s}:t:%s state msg pending_since", queue,
                        r->ids[i]);
        put(out, "task %d: state=%s%s%s", i,
            rep->element[0]->type == REDIS_REPLY_STRING ? rep->element[0]->str
                                                        : "-",
            rep->element[1]->type == REDIS_REPLY_STRING ? " msg" : "",
            rep->element[2]->type == REDIS_REPLY_STRING ? " pending_since"
                                                        : "");
        freeReplyObject(rep);
        rep = redis_run(fx->redis, "HLEN asynq:{%s}:t:%s", queue, r->ids[i]);
        put(out, " fields=%lld\n", rep->integer);
        freeReplyObject(rep);
        if (r->locks[i][0] != '\0') {
            rep = redis_run(fx->redis, "GET %s", r->locks[i]);
            put(out, "lock %d: %d\n", i,
                rep->type == REDIS_REPLY_STRING ? role_of(r, rep->str, rep->len)
                                                : -2);
            freeReplyObject(rep);
        }
    }

    utc_date(now_s, date);
    rep = redis_run(fx->redis,
                    "MGET asynq:{%s}:processed:%s "
                    "asynq:{%s}:processed",
                    queue, date, queue);
    put(out, "processed: %s %s\n",
        rep->element[0]->type == REDIS_REPLY_STRING ? rep->element[0]->str
                                                    : "-",
        rep->element[1]->type == REDIS_REPLY_STRING ? rep->element[1]->str
                                                    : "-");
    freeReplyObject(rep);
}

static void create_legacy_user(struct broker_fixture *fx)
{
    freeReplyObject(redis_run(fx->redis,
                              "ACL SETUSER " LEGACY_USER " reset on "
                              ">" LEGACY_PASSWORD " ~* &* +@all -rpop "
                              "-zmscore"));
}

/* Opens a connection as the legacy user. */
static void legacy_conn(struct broker_fixture *fx, struct casynq__conn *conn)
{
    struct casynq_redis_options *opts = broker_tcp_options(fx->server->port);

    assert_int_equal(
            casynq_redis_options_set_auth(opts, LEGACY_USER, LEGACY_PASSWORD),
            0);
    assert_int_equal(casynq__conn_init(conn, opts), 0);
    casynq_redis_options_destroy(opts);
}

static redisReply *exec_on(struct casynq__conn *conn, struct casynq__cmd *cmd)
{
    redisReply *reply = NULL;
    int rc = casynq__conn_exec(conn, cmd, &reply);

    casynq__cmd_free(cmd);
    if (rc != 0) {
        fail_msg("command failed (%d): %s", rc, conn->err);
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        char text[256];

        snprintf(text, sizeof(text), "%s", reply->str);
        freeReplyObject(reply);
        fail_msg("script returned an error: %s", text);
    }
    return reply;
}

/* Roles of the done tests. */
enum {
    DONE_FIRST,    /* active with a lease and a hash: done */
    DONE_NO_LEASE, /* active, its lease gone: only LREM applies */
    DONE_NO_HASH,  /* active with a lease, its hash gone: LREM and ZREM */
    DONE_UNIQUE,   /* done, and its uniqueness lock is released */
    DONE_FOREIGN,  /* done, but its lock belongs to another task */
    DONE_LAST,     /* done after the failures before it */
    DONE_PENDING,  /* still pending: not found, nothing changes */
    DONE_ROLES
};

/* Builds the done situation in queue. Without hash_missing, the task of
 * DONE_NO_HASH keeps its hash and is an ordinary one, so that every task
 * hash the batch reaches exists. */
static void build_done(struct broker_fixture *fx, const char *queue,
                       int64_t lease_expiry_s, bool hash_missing,
                       struct roles *r)
{
    memset(r, 0, sizeof(*r));
    r->n = DONE_ROLES;
    for (int i = 0; i < DONE_ROLES; i++) {
        test_task_init(&r->tasks[i], queue, "job", "payload", NULL);
        r->has_task[i] = true;
        snprintf(r->ids[i], sizeof(r->ids[i]), "%s", r->tasks[i].id);
        if (i != DONE_PENDING) {
            broker_activate_task(fx, &r->tasks[i], lease_expiry_s);
        }
    }
    broker_enqueue_task(fx, &r->tasks[DONE_PENDING]);
    freeReplyObject(redis_run(fx->redis, "ZREM asynq:{%s}:lease %s", queue,
                              r->ids[DONE_NO_LEASE]));
    if (hash_missing) {
        freeReplyObject(redis_run(fx->redis, "DEL asynq:{%s}:t:%s", queue,
                                  r->ids[DONE_NO_HASH]));
    }
    snprintf(r->locks[DONE_UNIQUE], sizeof(r->locks[0]),
             "asynq:{%s}:unique:job:own", queue);
    freeReplyObject(redis_run(fx->redis, "SET %s %s EX 3600",
                              r->locks[DONE_UNIQUE], r->ids[DONE_UNIQUE]));
    snprintf(r->locks[DONE_FOREIGN], sizeof(r->locks[0]),
             "asynq:{%s}:unique:job:foreign", queue);
    freeReplyObject(redis_run(fx->redis, "SET %s %s EX 3600",
                              r->locks[DONE_FOREIGN], r->ids[DONE_FIRST]));
}

static void done_items(const struct roles *r, struct casynq__done_item *items)
{
    for (int i = 0; i < r->n; i++) {
        items[i].id = r->ids[i];
        items[i].unique_key = r->locks[i][0] != '\0' ? r->locks[i] : NULL;
    }
}

/* Builds the done situation in two queues, runs one done call per task
 * on per_task_queue and done_batch on queue through conn, and compares
 * the results and the keys. */
static void check_done_batch(struct broker_fixture *fx,
                             struct casynq__conn *conn, const char *queue,
                             const char *per_task_queue, bool hash_missing,
                             int64_t now_s)
{
    struct roles one;
    struct roles batch;
    struct casynq__done_item items[MAX_ROLES];
    struct casynq__cmd cmd;
    char want[SNAPSHOT_SIZE];
    char got[SNAPSHOT_SIZE];
    int results[MAX_ROLES];
    int64_t lease_expiry_s = now_s + CASYNQ__LEASE_S;
    redisReply *rep;

    build_done(fx, per_task_queue, lease_expiry_s, hash_missing, &one);
    build_done(fx, queue, lease_expiry_s, hash_missing, &batch);

    for (int i = 0; i < one.n; i++) {
        char err[CASYNQ__ERRBUF_SIZE] = "";

        casynq__broker_done(&cmd, per_task_queue, one.ids[i],
                            one.locks[i][0] != '\0' ? one.locks[i] : NULL,
                            now_s);
        results[i] = broker_exec_status(fx, &cmd, err) == 0 ? 1 : 0;
    }
    /* The situation must make done fail in each of its ways. */
    assert_int_equal(results[DONE_FIRST], 1);
    assert_int_equal(results[DONE_NO_LEASE], 0);
    assert_int_equal(results[DONE_NO_HASH], hash_missing ? 0 : 1);
    assert_int_equal(results[DONE_PENDING], 0);

    done_items(&batch, items);
    casynq__broker_done_batch(&cmd, queue, items, batch.n, now_s);
    rep = exec_on(conn, &cmd);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, (size_t)batch.n);
    for (int i = 0; i < batch.n; i++) {
        assert_int_equal(rep->element[i]->integer, results[i]);
    }
    freeReplyObject(rep);

    snapshot(fx, per_task_queue, &one, now_s, want);
    snapshot(fx, queue, &batch, now_s, got);
    assert_string_equal(got, want);
    roles_free(&one);
    roles_free(&batch);
}

static void test_done_batch_equals_done_per_task(void **state)
{
    struct broker_fixture *fx = *state;

    check_done_batch(fx, &fx->conn, "batch", "single", true,
                     casynq__now_unix_s());
}

static void test_done_batch_with_all_hashes_equals_done(void **state)
{
    struct broker_fixture *fx = *state;

    check_done_batch(fx, &fx->conn, "batch", "single", false,
                     casynq__now_unix_s());
}

static void test_done_batch_without_zmscore_equals_done(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__conn conn;

    create_legacy_user(fx);
    legacy_conn(fx, &conn);
    check_done_batch(fx, &conn, "batch", "single", true, casynq__now_unix_s());
    casynq__conn_finish(&conn);
}

/* A batch of only missing tasks changes nothing and counts nothing. */
static void test_done_batch_of_unknown_ids_changes_nothing(void **state)
{
    struct broker_fixture *fx = *state;
    const struct casynq__done_item items[] = {{"no-such-id", NULL},
                                              {"other-id", "lock"}};
    struct casynq__cmd cmd;
    redisReply *rep;

    casynq__broker_done_batch(&cmd, "q", items, 2, casynq__now_unix_s());
    rep = broker_exec(fx, &cmd);
    assert_int_equal(rep->elements, 2);
    assert_int_equal(rep->element[0]->integer, 0);
    assert_int_equal(rep->element[1]->integer, 0);
    freeReplyObject(rep);
    rep = redis_run(fx->redis, "DBSIZE");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
}

/* Roles of the dequeue tests: tasks of a high and a low queue, a bare ID
 * without a task hash among the high queue's pending ones, and a task that
 * was already active before. */
enum {
    DQ_EARLIER, /* high, active before the test */
    DQ_HIGH_1,
    DQ_HIGH_2,
    DQ_GHOST, /* bare ID in high's pending list */
    DQ_HIGH_3,
    DQ_LOW_1,
    DQ_LOW_2,
    DQ_ROLES
};

static void build_dequeue(struct broker_fixture *fx, const char *high,
                          const char *low, int64_t lease_expiry_s,
                          struct roles *r)
{
    memset(r, 0, sizeof(*r));
    r->n = DQ_ROLES;
    for (int i = 0; i < DQ_ROLES; i++) {
        const char *queue = i >= DQ_LOW_1 ? low : high;

        if (i == DQ_GHOST) {
            snprintf(r->ids[i], sizeof(r->ids[i]), "ghost-%s", high);
            freeReplyObject(redis_run(fx->redis, "LPUSH asynq:{%s}:pending %s",
                                      high, r->ids[i]));
            continue;
        }
        test_task_init(&r->tasks[i], queue, "job", "payload", NULL);
        r->has_task[i] = true;
        snprintf(r->ids[i], sizeof(r->ids[i]), "%s", r->tasks[i].id);
        if (i == DQ_EARLIER) {
            broker_activate_task(fx, &r->tasks[i], lease_expiry_s);
        } else {
            broker_enqueue_task(fx, &r->tasks[i]);
        }
    }
}

/* Describes the reply of one dequeue by role. */
static void describe_dequeue(const struct roles *r, const redisReply *rep,
                             char *out)
{
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements % 4, 0);
    put(out, "reply:");
    for (size_t i = 0; i + 4 <= rep->elements; i += 4) {
        put(out, " q%lld:%d:%s:%s", rep->element[i]->integer,
            role_of(r, rep->element[i + 1]->str, rep->element[i + 1]->len),
            rep->element[i + 2]->type == REDIS_REPLY_STRING ? "msg" : "nil",
            rep->element[i + 3]->type == REDIS_REPLY_STRING ? "since" : "nil");
    }
    put(out, "\n");
}

/* Dequeues twice (5 tasks, then 5 more) from high and low through conn
 * and describes the replies and the keys after each call. */
static void run_dequeues(struct broker_fixture *fx, struct casynq__conn *conn,
                         const char *high, const char *low, int64_t now_s,
                         struct roles *r, char *out)
{
    const char *const queues[] = {high, low};
    int64_t lease_expiry_s = now_s + CASYNQ__LEASE_S;
    char part[SNAPSHOT_SIZE];

    out[0] = '\0';
    build_dequeue(fx, high, low, lease_expiry_s, r);
    for (int call = 0; call < 2; call++) {
        struct casynq__cmd cmd;
        redisReply *rep;

        casynq__broker_dequeue(&cmd, queues, 2, lease_expiry_s, 5);
        rep = exec_on(conn, &cmd);
        describe_dequeue(r, rep, out);
        freeReplyObject(rep);
        for (int q = 0; q < 2; q++) {
            snapshot(fx, queues[q], r, now_s, part);
            put(out, "%s", part);
        }
    }
}

static void test_dequeue_batch_equals_rpoplpush_fallback(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__conn conn;
    struct roles fast;
    struct roles legacy;
    char want[SNAPSHOT_SIZE];
    char got[SNAPSHOT_SIZE];
    int64_t now_s = casynq__now_unix_s();

    create_legacy_user(fx);
    legacy_conn(fx, &conn);
    run_dequeues(fx, &conn, "old-high", "old-low", now_s, &legacy, want);
    run_dequeues(fx, &fx->conn, "new-high", "new-low", now_s, &fast, got);
    assert_string_equal(got, want);

    /* The first call took high's four entries, among them the bare ID
     * without a msg, and low's first task. The second took low's last. */
    assert_non_null(strstr(got, "reply: q1:1:msg:since q1:2:msg:since "
                                "q1:3:nil:nil q1:4:msg:since "
                                "q2:5:msg:since\n"));
    assert_non_null(strstr(got, "reply: q2:6:msg:since\n"));
    /* After the second call, high's active list is its three tasks, the
     * newest first, then the task that was active before. */
    assert_non_null(strstr(got, "active: 4 2 1 0\n"));
    assert_non_null(strstr(got, "task 3: state=- fields=0\n"));

    casynq__conn_finish(&conn);
    roles_free(&fast);
    roles_free(&legacy);
}

/* A dequeue that fails on an active list of the wrong type leaves every
 * task ID in pending, in the same order, as RPOPLPUSH does. */
static void check_wrong_type_active(struct broker_fixture *fx,
                                    struct casynq__conn *conn,
                                    const char *queue)
{
    const char *const queues[] = {queue};
    const char *pending = keyf("asynq:{%s}:pending", queue);
    struct test_task tasks[3];
    struct casynq__cmd cmd;
    redisReply *rep = NULL;

    for (int i = 0; i < 3; i++) {
        test_task_init(&tasks[i], queue, "job", "payload", NULL);
        broker_enqueue_task(fx, &tasks[i]);
    }
    freeReplyObject(
            redis_run(fx->redis, "SET asynq:{%s}:active not-a-list", queue));
    casynq__broker_dequeue(&cmd, queues, 1,
                           casynq__now_unix_s() + CASYNQ__LEASE_S, 5);
    assert_int_equal(casynq__conn_exec(conn, &cmd, &rep), 0);
    casynq__cmd_free(&cmd);
    assert_int_equal(rep->type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(rep->str, "WRONGTYPE"));
    freeReplyObject(rep);
    /* LPUSH put the newest task at the head. */
    assert_list(fx->redis, pending,
                (const char *const[]){tasks[2].id, tasks[1].id, tasks[0].id},
                3);
    for (int i = 0; i < 3; i++) {
        test_task_free(&tasks[i]);
    }
}

static void test_dequeue_wrong_type_active_keeps_pending(void **state)
{
    struct broker_fixture *fx = *state;
    struct casynq__conn conn;

    check_wrong_type_active(fx, &fx->conn, "batched");
    create_legacy_user(fx);
    legacy_conn(fx, &conn);
    check_wrong_type_active(fx, &conn, "fallback");
    casynq__conn_finish(&conn);
}

#define BROKER_TEST(fn)                                                        \
    cmocka_unit_test_setup_teardown(fn, broker_fixture_setup,                  \
                                    broker_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
            BROKER_TEST(test_done_batch_equals_done_per_task),
            BROKER_TEST(test_done_batch_with_all_hashes_equals_done),
            BROKER_TEST(test_done_batch_without_zmscore_equals_done),
            BROKER_TEST(test_done_batch_of_unknown_ids_changes_nothing),
            BROKER_TEST(test_dequeue_batch_equals_rpoplpush_fallback),
            BROKER_TEST(test_dequeue_wrong_type_active_keeps_pending),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, test_redis_group_setup,
                                  test_redis_group_teardown);
}
