/* Integration tests of the synchronous connection that carries the
 * broker's commands: script reloading after SCRIPT FLUSH, reconnecting
 * after a server crash, AUTH with the default and an ACL user, the errors
 * for bad credentials and unreachable servers, and SELECT.
 *
 * Each test starts its own redis-server, because several of them kill it
 * or change its configuration. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker_helpers.h"
#include "scripts_gen.h"

#define QUEUE "default"

struct conn_fixture {
    struct test_redis server;
    redisContext *redis;
    struct casynq_redis_options *opts;
    struct casynq__conn conn;
    bool conn_ready;
    long live_allocations_at_start;
    char addr[64];
};

static int conn_fixture_setup(void **state)
{
    struct conn_fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL) {
        return -1;
    }
    fx->live_allocations_at_start = broker_live_allocations();
    if (test_redis_start(&fx->server) != 0) {
        free(fx);
        return -1;
    }
    fx->redis = test_redis_connect(&fx->server);
    if (fx->redis == NULL) {
        test_redis_stop(&fx->server);
        free(fx);
        return -1;
    }
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%d/", fx->server.port);
    *state = fx;
    return 0;
}

static int conn_fixture_teardown(void **state)
{
    struct conn_fixture *fx = *state;
    long leaked;

    if (fx->conn_ready) {
        casynq__conn_finish(&fx->conn);
    }
    if (fx->opts != NULL) {
        casynq_redis_options_destroy(fx->opts);
    }
    if (fx->redis != NULL) {
        redisFree(fx->redis);
    }
    test_redis_stop(&fx->server);
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

/* Creates fx->opts for 127.0.0.1:port. Tests adjust them before
 * open_conn(). */
static void make_options(struct conn_fixture *fx, int port)
{
    fx->opts = broker_tcp_options(port);
}

static void open_conn(struct conn_fixture *fx)
{
    assert_int_equal(casynq__conn_init(&fx->conn, fx->opts), 0);
    fx->conn_ready = true;
}

/* Enqueues a new task through the connection under test.
 * Returns: the casynq__conn_exec() result, or the parsed enqueue result
 * when the transport succeeded. */
static int try_enqueue(struct conn_fixture *fx, struct test_task *task)
{
    struct casynq__cmd cmd;
    char err[CASYNQ__ERRBUF_SIZE] = "";
    redisReply *reply = NULL;
    int rc;

    test_task_init(task, QUEUE, "job", "payload", NULL);
    casynq__broker_enqueue(&cmd, QUEUE, task->id, task->msg.data,
                           task->msg.len, casynq__now_unix_ns(), NULL, 0);
    rc = casynq__conn_exec(&fx->conn, &cmd, &reply);
    casynq__cmd_free(&cmd);
    if (rc != 0) {
        assert_null(reply);
        return rc;
    }
    rc = casynq__broker_parse_enqueue(reply, err);
    freeReplyObject(reply);
    if (rc != 0) {
        fail_msg("enqueue reply mapped to %s: %s", casynq_err_name(rc), err);
    }
    return 0;
}

static void config_set(redisContext *c, const char *name, const char *value)
{
    redisReply *r = redis_run(c, "CONFIG SET %s %s", name, value);

    freeReplyObject(r);
}

static void assert_message_has(const char *message, const char *part)
{
    if (strstr(message, part) == NULL) {
        fail_msg("error message \"%s\" does not contain \"%s\"", message,
                 part);
    }
}

static void test_conn_reloads_script_after_flush(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task first;
    struct test_task second;
    redisReply *r;

    make_options(fx, fx->server.port);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &first), 0);

    r = redis_run(fx->redis, "SCRIPT FLUSH");
    freeReplyObject(r);
    r = redis_run(fx->redis, "SCRIPT EXISTS %s",
                  casynq__script_sha1[CASYNQ__SCRIPT_ENQUEUE]);
    assert_int_equal(r->element[0]->integer, 0);
    freeReplyObject(r);

    /* EVALSHA now gets NOSCRIPT; the connection loads the script again
     * and retries once. */
    assert_int_equal(try_enqueue(fx, &second), 0);
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){second.id, first.id}, 2);
    r = redis_run(fx->redis, "SCRIPT EXISTS %s",
                  casynq__script_sha1[CASYNQ__SCRIPT_ENQUEUE]);
    assert_int_equal(r->element[0]->integer, 1);
    freeReplyObject(r);

    test_task_free(&first);
    test_task_free(&second);
}

static void test_conn_reconnects_after_restart(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task before;
    struct test_task after;
    struct test_task retried;

    make_options(fx, fx->server.port);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &before), 0);
    test_task_free(&before);

    redisFree(fx->redis);
    fx->redis = NULL;
    assert_int_equal(test_redis_kill(&fx->server), 0);
    assert_int_equal(test_redis_restart(&fx->server), 0);
    fx->redis = test_redis_connect(&fx->server);
    assert_non_null(fx->redis);

    /* The first call after the restart sees that the server closed the
     * idle socket and connects again before sending, so it succeeds. */
    assert_int_equal(try_enqueue(fx, &after), 0);
    assert_non_null(fx->conn.ctx);
    assert_int_equal(try_enqueue(fx, &retried), 0);
    /* The restarted server is empty, so only the new tasks are there. */
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){retried.id, after.id}, 2);

    test_task_free(&after);
    test_task_free(&retried);
}

static void test_conn_server_down_is_connect_error(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task task;
    int rc;

    make_options(fx, fx->server.port);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &task), 0);
    test_task_free(&task);

    redisFree(fx->redis);
    fx->redis = NULL;
    assert_int_equal(test_redis_kill(&fx->server), 0);

    /* The first call finds the broken connection, the second cannot
     * connect at all. Both name the address. */
    rc = try_enqueue(fx, &task);
    test_task_free(&task);
    assert_int_equal(rc, CASYNQ_ECONNECT);
    assert_message_has(fx->conn.err, fx->addr);
    assert_null(fx->conn.ctx);

    rc = try_enqueue(fx, &task);
    test_task_free(&task);
    assert_int_equal(rc, CASYNQ_ECONNECT);
    assert_message_has(fx->conn.err, "cannot connect to redis at");
    assert_message_has(fx->conn.err, fx->addr);

    assert_int_equal(test_redis_restart(&fx->server), 0);
    fx->redis = test_redis_connect(&fx->server);
    assert_non_null(fx->redis);
    assert_int_equal(try_enqueue(fx, &task), 0);
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){task.id}, 1);
    test_task_free(&task);
}

static void test_conn_wrong_password_is_auth_error(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task task;
    int rc;

    config_set(fx->redis, "requirepass", "s3cret");

    make_options(fx, fx->server.port);
    assert_int_equal(casynq_redis_options_set_auth(fx->opts, NULL, "wrong"),
                     0);
    open_conn(fx);
    rc = try_enqueue(fx, &task);
    test_task_free(&task);
    assert_int_equal(rc, CASYNQ_EAUTH);
    assert_message_has(fx->conn.err, "user \"default\"");
    assert_message_has(fx->conn.err, "check the user name and password");
    assert_message_has(fx->conn.err, fx->addr);
    assert_null(strstr(fx->conn.err, "wrong"));
    assert_null(fx->conn.ctx);

    /* The right password works on a new connection. */
    casynq__conn_finish(&fx->conn);
    fx->conn_ready = false;
    assert_int_equal(casynq_redis_options_set_auth(fx->opts, NULL, "s3cret"),
                     0);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &task), 0);
    test_task_free(&task);

    config_set(fx->redis, "requirepass", "");
}

static void test_conn_password_without_server_password(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task task;
    int rc;

    make_options(fx, fx->server.port);
    assert_int_equal(casynq_redis_options_set_auth(fx->opts, NULL, "unused"),
                     0);
    open_conn(fx);
    rc = try_enqueue(fx, &task);
    test_task_free(&task);
    assert_int_equal(rc, CASYNQ_EAUTH);
    assert_message_has(fx->conn.err, "no password set");
    assert_message_has(fx->conn.err, fx->addr);
}

static void test_conn_acl_user_authenticates(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task task;
    redisReply *reply = NULL;
    redisReply *r;
    int rc;

    r = redis_run(fx->redis, "ACL SETUSER alice on >pw ~* +@all");
    freeReplyObject(r);

    make_options(fx, fx->server.port);
    assert_int_equal(casynq_redis_options_set_auth(fx->opts, "alice", "pw"),
                     0);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &task), 0);
    assert_key_exists(fx->redis, keyf("asynq:{%s}:t:%s", QUEUE, task.id));
    test_task_free(&task);

    assert_int_equal(casynq__conn_command(&fx->conn, &reply, "ACL WHOAMI"),
                     0);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "alice");
    freeReplyObject(reply);

    /* A wrong password for the same user names that user. */
    casynq__conn_finish(&fx->conn);
    fx->conn_ready = false;
    assert_int_equal(casynq_redis_options_set_auth(fx->opts, "alice", "bad"),
                     0);
    open_conn(fx);
    rc = try_enqueue(fx, &task);
    test_task_free(&task);
    assert_int_equal(rc, CASYNQ_EAUTH);
    assert_message_has(fx->conn.err, "user \"alice\"");
    assert_message_has(fx->conn.err, "check the user name and password");
}

/* Returns a loopback TCP port that nothing listens on: the kernel picks a
 * free one, and the socket is closed again without listening. */
static int unused_port(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    assert_true(fd >= 0);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

static void test_conn_unreachable_port_is_connect_error(void **state)
{
    struct conn_fixture *fx = *state;
    struct test_task task;
    char addr[64];
    int port = unused_port();
    int rc;

    make_options(fx, port);
    open_conn(fx);
    rc = try_enqueue(fx, &task);
    test_task_free(&task);

    assert_int_equal(rc, CASYNQ_ECONNECT);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d/0", port);
    assert_message_has(fx->conn.err, "cannot connect to redis at");
    assert_message_has(fx->conn.err, addr);
    assert_null(fx->conn.ctx);
}

static void test_conn_select_uses_database(void **state)
{
    struct conn_fixture *fx = *state;
    const char *task_key;
    struct test_task task;
    redisReply *r;

    make_options(fx, fx->server.port);
    assert_int_equal(casynq_redis_options_set_db(fx->opts, 3), 0);
    open_conn(fx);
    assert_int_equal(try_enqueue(fx, &task), 0);
    task_key = keyf("asynq:{%s}:t:%s", QUEUE, task.id);

    assert_key_missing(fx->redis, task_key);
    r = redis_run(fx->redis, "SELECT 3");
    freeReplyObject(r);
    assert_key_type(fx->redis, task_key, "hash");
    assert_list(fx->redis, "asynq:{default}:pending",
                (const char *const[]){task.id}, 1);

    test_task_free(&task);
}

#define CONN_TEST(fn)                                                         \
    cmocka_unit_test_setup_teardown(fn, conn_fixture_setup,                   \
                                    conn_fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CONN_TEST(test_conn_reloads_script_after_flush),
        CONN_TEST(test_conn_reconnects_after_restart),
        CONN_TEST(test_conn_server_down_is_connect_error),
        CONN_TEST(test_conn_wrong_password_is_auth_error),
        CONN_TEST(test_conn_password_without_server_password),
        CONN_TEST(test_conn_acl_user_authenticates),
        CONN_TEST(test_conn_unreachable_port_is_connect_error),
        CONN_TEST(test_conn_select_uses_database),
    };

    broker_count_allocations();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
