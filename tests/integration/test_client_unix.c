/* The client over a Unix socket: a redis-server that listens on a socket
 * file only (port 0), reached with a unix:// URL that also selects a
 * database. */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

struct unix_redis {
    char dir[256];
    char sock[300];
    pid_t pid;
};

static struct unix_redis server;

static redisContext *connect_socket(void)
{
    redisContext *c = redisConnectUnix(server.sock);

    if (c != NULL && c->err != 0) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static int start_unix_redis(void **state)
{
    (void)state;
    snprintf(server.dir, sizeof(server.dir), "%s/casynq-unix-XXXXXX",
             getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(server.dir) == NULL) {
        return -1;
    }
    snprintf(server.sock, sizeof(server.sock), "%s/redis.sock", server.dir);
    server.pid = fork();
    if (server.pid < 0) {
        return -1;
    }
    if (server.pid == 0) {
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket",
               server.sock, "--dir", server.dir, "--save", "",
               "--appendonly", "no", (char *)NULL);
        fprintf(stderr,
                "cannot run redis-server: %s; run ./scripts/setup.sh\n",
                strerror(errno));
        _exit(127);
    }
    /* Wait, with a bound, until the socket responds. */
    for (int i = 0; i < 200; i++) {
        redisContext *c = connect_socket();

        if (c != NULL) {
            redisFree(c);
            return 0;
        }
        struct timespec pause = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
        nanosleep(&pause, NULL);
    }
    return -1;
}

static int stop_unix_redis(void **state)
{
    char cmd[400];

    (void)state;
    if (server.pid > 0) {
        kill(server.pid, SIGTERM);
        waitpid(server.pid, NULL, 0);
    }
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", server.dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_client_unix_socket_enqueues_into_db(void **state)
{
    struct casynq_redis_options *ro = NULL;
    struct casynq_client *client = NULL;
    struct casynq_task_info *info = NULL;
    struct casynq_task *task = NULL;
    char url[400];
    redisContext *c;
    redisReply *r;

    (void)state;
    snprintf(url, sizeof(url), "unix://%s?db=2", server.sock);
    assert_int_equal(casynq_redis_options_create(&ro), 0);
    assert_int_equal(casynq_redis_options_set_url(ro, url), 0);
    assert_int_equal(casynq_client_create(ro, &client), 0);
    assert_int_equal(casynq_client_ping(client), 0);
    assert_int_equal(casynq_task_create("unix:check", "x", 1, &task), 0);
    assert_int_equal(casynq_client_enqueue(client, task, NULL, &info), 0);

    c = connect_socket();
    assert_non_null(c);
    r = redisCommand(c, "SELECT 2");
    freeReplyObject(r);
    r = redisCommand(c, "LRANGE asynq:{default}:pending 0 -1");
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    assert_string_equal(r->element[0]->str, casynq_task_info_id(info));
    freeReplyObject(r);
    /* Database 0 stays empty. */
    r = redisCommand(c, "SELECT 0");
    freeReplyObject(r);
    r = redisCommand(c, "DBSIZE");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    redisFree(c);

    casynq_task_info_destroy(info);
    casynq_task_destroy(task);
    casynq_client_destroy(client);
    casynq_redis_options_destroy(ro);
}

static void test_client_missing_socket_names_path(void **state)
{
    struct casynq_redis_options *ro = NULL;
    struct casynq_client *client = NULL;
    char path[400];

    (void)state;
    snprintf(path, sizeof(path), "%s/absent.sock", server.dir);
    assert_int_equal(casynq_redis_options_create(&ro), 0);
    assert_int_equal(casynq_redis_options_set_unix(ro, path), 0);
    assert_int_equal(casynq_client_create(ro, &client), 0);
    assert_int_equal(casynq_client_ping(client), CASYNQ_ECONNECT);
    assert_non_null(strstr(casynq_client_last_error(client), path));
    assert_non_null(
            strstr(casynq_client_last_error(client), "redis-server is running"));
    casynq_client_destroy(client);
    casynq_redis_options_destroy(ro);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_client_unix_socket_enqueues_into_db),
            cmocka_unit_test(test_client_missing_socket_names_path),
    };

    return cmocka_run_group_tests(tests, start_unix_redis, stop_unix_redis);
}
