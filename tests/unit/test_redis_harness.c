/* Tests of the redis-server harness in tests/support, run against real
 * redis-server processes. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700 /* setenv() and unsetenv() */
#endif

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis_server.h"

/* Copies into out the 40-character run_id that redis-server draws at each
 * start. */
static void read_run_id(redisContext *c, char out[41])
{
    redisReply *reply = redisCommand(c, "INFO server");
    const char *field;

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    field = strstr(reply->str, "run_id:");
    assert_non_null(field);
    memcpy(out, field + strlen("run_id:"), 40);
    out[40] = '\0';
    freeReplyObject(reply);
}

static void set_key(redisContext *c, const char *key, const char *value)
{
    redisReply *reply = redisCommand(c, "SET %s %s", key, value);

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    assert_string_equal(reply->str, "OK");
    freeReplyObject(reply);
}

static void assert_key_equals(redisContext *c, const char *key,
                              const char *expected)
{
    redisReply *reply = redisCommand(c, "GET %s", key);

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, expected);
    freeReplyObject(reply);
}

static void assert_key_missing(redisContext *c, const char *key)
{
    redisReply *reply = redisCommand(c, "GET %s", key);

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
}

static void assert_config_equals(redisContext *c, const char *name,
                                 const char *expected)
{
    redisReply *reply = redisCommand(c, "CONFIG GET %s", name);

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
    assert_int_equal(reply->elements, 2);
    assert_string_equal(reply->element[1]->str, expected);
    freeReplyObject(reply);
}

static long long dbsize(redisContext *c, int db)
{
    redisReply *reply = redisCommand(c, "SELECT %d", db);
    long long size;

    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    freeReplyObject(reply);
    reply = redisCommand(c, "DBSIZE");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
    size = reply->integer;
    freeReplyObject(reply);
    return size;
}

static void assert_is_directory(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
}

/* Servers of one lifecycle test. The teardown stops them even when an assert
 * fails halfway, and restores REDIS_SERVER. */
struct fixture {
    struct test_redis a;
    struct test_redis b;
    char *saved_redis_server;
};

static int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *redis_server = getenv("REDIS_SERVER");

    if (f == NULL) {
        return -1;
    }
    if (redis_server != NULL) {
        f->saved_redis_server = strdup(redis_server);
        if (f->saved_redis_server == NULL) {
            free(f);
            return -1;
        }
    }
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    int result = 0;

    if (test_redis_stop(&f->a) != 0 || test_redis_stop(&f->b) != 0) {
        result = -1;
    }
    if (f->saved_redis_server != NULL) {
        setenv("REDIS_SERVER", f->saved_redis_server, 1);
    } else {
        unsetenv("REDIS_SERVER");
    }
    free(f->saved_redis_server);
    free(f);
    return result;
}

static void test_harness_start_sets_fields(void **state)
{
    struct fixture *f = *state;
    char url[64];

    assert_int_equal(test_redis_start(&f->a), 0);

    assert_in_range(f->a.port, 1, 65535);
    assert_true(f->a.pid > 0);
    assert_is_directory(f->a.dir);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", f->a.port);
    assert_string_equal(f->a.url, url);

    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_server_is_loopback_without_persistence(void **state)
{
    struct fixture *f = *state;
    redisContext *c;

    assert_int_equal(test_redis_start(&f->a), 0);
    c = test_redis_connect(&f->a);
    assert_non_null(c);

    assert_config_equals(c, "bind", "127.0.0.1");
    assert_config_equals(c, "save", "");
    assert_config_equals(c, "appendonly", "no");
    assert_config_equals(c, "dir", f->a.dir);

    redisFree(c);
    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_set_get_roundtrip(void **state)
{
    struct fixture *f = *state;
    redisContext *c;

    assert_int_equal(test_redis_start(&f->a), 0);
    c = test_redis_connect(&f->a);
    assert_non_null(c);

    set_key(c, "harness:key", "value with spaces");
    assert_key_equals(c, "harness:key", "value with spaces");

    redisFree(c);
    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_stop_removes_dir(void **state)
{
    struct fixture *f = *state;
    struct test_redis before;
    struct stat st;

    assert_int_equal(test_redis_start(&f->a), 0);
    before = f->a;

    assert_int_equal(test_redis_stop(&f->a), 0);

    assert_int_equal(stat(before.dir, &st), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(f->a.pid, 0);
    assert_int_equal(f->a.port, 0);
    assert_string_equal(f->a.dir, "");
    assert_null(test_redis_connect(&before));
}

static void test_harness_stop_twice_succeeds(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(test_redis_start(&f->a), 0);

    assert_int_equal(test_redis_stop(&f->a), 0);
    assert_int_equal(test_redis_stop(&f->a), 0);
    assert_int_equal(test_redis_stop(NULL), 0);
}

static void test_harness_kill_restart_keeps_port(void **state)
{
    struct fixture *f = *state;
    redisContext *c;
    char first_run_id[41];
    char second_run_id[41];
    int port;

    assert_int_equal(test_redis_start(&f->a), 0);
    port = f->a.port;
    c = test_redis_connect(&f->a);
    assert_non_null(c);
    set_key(c, "harness:lost", "1");
    read_run_id(c, first_run_id);
    redisFree(c);

    assert_int_equal(test_redis_kill(&f->a), 0);
    assert_int_equal(f->a.pid, 0);
    assert_int_equal(f->a.port, port);
    assert_is_directory(f->a.dir);
    assert_null(test_redis_connect(&f->a));

    assert_int_equal(test_redis_restart(&f->a), 0);
    assert_int_equal(f->a.port, port);
    assert_true(f->a.pid > 0);
    c = test_redis_connect(&f->a);
    assert_non_null(c);
    read_run_id(c, second_run_id);
    assert_string_not_equal(first_run_id, second_run_id);
    /* Persistence is off, so the restarted server starts empty. */
    assert_key_missing(c, "harness:lost");
    set_key(c, "harness:after", "2");
    assert_key_equals(c, "harness:after", "2");

    redisFree(c);
    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_shutdown_restart_keeps_port(void **state)
{
    struct fixture *f = *state;
    redisContext *c;
    char dir[sizeof(f->a.dir)];
    int port;

    assert_int_equal(test_redis_start(&f->a), 0);
    port = f->a.port;
    snprintf(dir, sizeof(dir), "%s", f->a.dir);

    assert_int_equal(test_redis_shutdown(&f->a), 0);
    assert_int_equal(f->a.pid, 0);
    assert_is_directory(dir);
    assert_null(test_redis_connect(&f->a));

    assert_int_equal(test_redis_restart(&f->a), 0);
    assert_int_equal(f->a.port, port);
    assert_string_equal(f->a.dir, dir);
    c = test_redis_connect(&f->a);
    assert_non_null(c);
    set_key(c, "harness:key", "1");
    assert_key_equals(c, "harness:key", "1");

    redisFree(c);
    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_restart_while_running_fails(void **state)
{
    struct fixture *f = *state;
    redisContext *c;
    pid_t pid;

    assert_int_equal(test_redis_start(&f->a), 0);
    pid = f->a.pid;

    assert_int_equal(test_redis_restart(&f->a), -1);
    assert_int_equal(f->a.pid, pid);
    c = test_redis_connect(&f->a);
    assert_non_null(c);
    set_key(c, "harness:key", "still up");

    redisFree(c);
    assert_int_equal(test_redis_stop(&f->a), 0);
}

static void test_harness_calls_without_server_fail(void **state)
{
    struct fixture *f = *state;

    memset(&f->a, 0, sizeof(f->a));

    assert_int_equal(test_redis_kill(&f->a), -1);
    assert_int_equal(test_redis_shutdown(&f->a), -1);
    assert_int_equal(test_redis_restart(&f->a), -1);
    assert_null(test_redis_connect(&f->a));
    assert_int_equal(test_redis_flushall(&f->a), -1);
    assert_int_equal(test_redis_start(NULL), -1);
    assert_int_equal(test_redis_kill(NULL), -1);
    assert_int_equal(test_redis_restart(NULL), -1);
    assert_null(test_redis_connect(NULL));
}

static void test_harness_two_servers_differ(void **state)
{
    struct fixture *f = *state;
    redisContext *ca;
    redisContext *cb;

    assert_int_equal(test_redis_start(&f->a), 0);
    assert_int_equal(test_redis_start(&f->b), 0);

    assert_int_not_equal(f->a.port, f->b.port);
    assert_int_not_equal(f->a.pid, f->b.pid);
    assert_string_not_equal(f->a.dir, f->b.dir);
    ca = test_redis_connect(&f->a);
    assert_non_null(ca);
    cb = test_redis_connect(&f->b);
    assert_non_null(cb);
    set_key(ca, "harness:only-in-a", "a");
    assert_key_missing(cb, "harness:only-in-a");

    redisFree(ca);
    redisFree(cb);
    assert_int_equal(test_redis_stop(&f->a), 0);
    assert_int_equal(test_redis_stop(&f->b), 0);
}

static void test_harness_missing_binary_fails(void **state)
{
    struct fixture *f = *state;

    /* The fixture teardown restores REDIS_SERVER. */
    assert_int_equal(setenv("REDIS_SERVER", "/nonexistent/redis-server", 1), 0);

    assert_int_equal(test_redis_start(&f->a), -1);
    assert_int_equal(f->a.pid, 0);
    assert_string_equal(f->a.dir, "");
}

static void test_harness_shared_server_in_state(void **state)
{
    const struct test_redis *shared = test_redis_shared();

    assert_ptr_equal(*state, shared);
    assert_true(shared->pid > 0);
    assert_in_range(shared->port, 1, 65535);
}

static void test_harness_shared_set_get(void **state)
{
    redisContext *c = test_redis_connect(*state);

    assert_non_null(c);
    set_key(c, "harness:shared", "v");
    assert_key_equals(c, "harness:shared", "v");
    redisFree(c);
}

static void test_harness_flushall_empties_all_dbs(void **state)
{
    redisContext *c = test_redis_connect(*state);

    assert_non_null(c);
    set_key(c, "harness:db0", "0");
    assert_int_equal(dbsize(c, 1), 0);
    set_key(c, "harness:db1", "1");
    assert_int_equal(dbsize(c, 1), 1);
    assert_true(dbsize(c, 0) >= 1);

    assert_int_equal(test_redis_flushall(*state), 0);

    assert_int_equal(dbsize(c, 0), 0);
    assert_int_equal(dbsize(c, 1), 0);
    redisFree(c);
}

#define LIFECYCLE_TEST(fn)                                                     \
    cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest lifecycle_tests[] = {
            LIFECYCLE_TEST(test_harness_start_sets_fields),
            LIFECYCLE_TEST(test_harness_server_is_loopback_without_persistence),
            LIFECYCLE_TEST(test_harness_set_get_roundtrip),
            LIFECYCLE_TEST(test_harness_stop_removes_dir),
            LIFECYCLE_TEST(test_harness_stop_twice_succeeds),
            LIFECYCLE_TEST(test_harness_kill_restart_keeps_port),
            LIFECYCLE_TEST(test_harness_shutdown_restart_keeps_port),
            LIFECYCLE_TEST(test_harness_restart_while_running_fails),
            LIFECYCLE_TEST(test_harness_calls_without_server_fail),
            LIFECYCLE_TEST(test_harness_two_servers_differ),
            LIFECYCLE_TEST(test_harness_missing_binary_fails),
    };
    const struct CMUnitTest shared_tests[] = {
            cmocka_unit_test(test_harness_shared_server_in_state),
            cmocka_unit_test(test_harness_shared_set_get),
            cmocka_unit_test(test_harness_flushall_empties_all_dbs),
    };
    int failures = 0;

    failures += cmocka_run_group_tests_name("redis harness lifecycle",
                                            lifecycle_tests, NULL, NULL);
    failures += cmocka_run_group_tests_name(
            "redis harness shared server", shared_tests, test_redis_group_setup,
            test_redis_group_teardown);
    return failures == 0 ? 0 : 1;
}
