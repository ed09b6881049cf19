/* Integration tests of admission control at enqueue, end to end: a client
 * with a limiter against a real redis-server, the `casynq enqueue` flags
 * and exit codes, and a flood of tasks that must not hold up other work.
 *
 * Every rejection is checked to leave Redis exactly as it was: the test
 * takes a snapshot of every key and its DUMP before and after.
 *
 * The flood test runs an in-process server with weighted queues
 * (critical 6, low 1) and concurrency 2, while one caller floods "low"
 * through a rate-limited client and another enqueues 50 critical tasks.
 * The handlers record, when each critical task finishes, how many low
 * tasks were still pending and how many had finished, so the assertions
 * count by order of completion, never by wall-clock time. Waits poll with
 * an upper bound that only guards against a hang.
 *
 * CASYNQ_CLI names the casynq binary for the command-line tests. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "broker_helpers.h"
#include "util.h"

#define NS_PER_S 1000000000LL

/* Upper bound of every wait, in milliseconds. */
#define WAIT_MS 60000
#define POLL_MS 10

/* ------------------------------------------------------------------------
 * Leak counting: an allocator safe for the server's threads.
 */

static atomic_long live_blocks;

static void *counting_malloc(size_t size)
{
    void *p = malloc(size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size);

    if (p != NULL && ptr == NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void counting_free(void *ptr)
{
    if (ptr != NULL) {
        atomic_fetch_sub(&live_blocks, 1);
    }
    free(ptr);
}

/* ------------------------------------------------------------------------
 * Fixture
 */

struct fixture {
    struct test_redis server;
    redisContext *redis;
    struct casynq_redis_options *opts;
    char tmp[256]; /* scratch directory for the CLI tests */
    long live_blocks_at_start;
};

static int fixture_setup(void **state)
{
    const char *base = getenv("TMPDIR");
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL) {
        return -1;
    }
    *state = fx;
    fx->live_blocks_at_start = atomic_load(&live_blocks);
    snprintf(fx->tmp, sizeof(fx->tmp), "%s/casynq-starvation-XXXXXX",
             base != NULL && base[0] != '\0' ? base : "/tmp");
    if (mkdtemp(fx->tmp) == NULL) {
        fx->tmp[0] = '\0';
        return -1;
    }
    if (test_redis_start(&fx->server) != 0) {
        return -1;
    }
    fx->redis = test_redis_connect(&fx->server);
    if (fx->redis == NULL || casynq_redis_options_create(&fx->opts) != 0 ||
        casynq_redis_options_set_tcp(fx->opts, "127.0.0.1", fx->server.port) !=
                0) {
        return -1;
    }
    return 0;
}

static void remove_tmp(const char *dir)
{
    static const char *const files[] = {"out.txt", "err.txt", "limits.json"};
    char path[300];

    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;
    long leaked;

    if (fx == NULL) {
        return 0;
    }
    casynq_redis_options_destroy(fx->opts);
    if (fx->redis != NULL) {
        redisFree(fx->redis);
    }
    test_redis_stop(&fx->server);
    if (fx->tmp[0] != '\0') {
        remove_tmp(fx->tmp);
    }
    leaked = atomic_load(&live_blocks) - fx->live_blocks_at_start;
    free(fx);
    *state = NULL;
    if (leaked != 0) {
        fail_msg("the library leaked %ld block(s) during this test", leaked);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Helpers
 */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* Polls cond every POLL_MS and fails the test when it still does not hold
 * after WAIT_MS. */
#define WAIT_UNTIL(cond)                                                       \
    do {                                                                       \
        int64_t wait_end_ = casynq__mono_ms() + WAIT_MS;                       \
        while (!(cond)) {                                                      \
            if (casynq__mono_ms() > wait_end_) {                               \
                fail_msg("timed out after %d ms waiting for: %s", WAIT_MS,     \
                         #cond);                                               \
            }                                                                  \
            sleep_ms(POLL_MS);                                                 \
        }                                                                      \
    } while (0)

static void assert_message_has(const char *message, const char *part)
{
    if (strstr(message, part) == NULL) {
        fail_msg("message \"%s\" does not contain \"%s\"", message, part);
    }
}

static struct casynq_limiter *make_limiter(const struct fixture *fx,
                                           enum casynq_limiter_backend backend,
                                           const char *json)
{
    struct casynq_limiter *l = NULL;
    int rc;

    assert_int_equal(casynq_limiter_create(backend, fx->opts, &l), 0);
    rc = casynq_limiter_load_json(l, json, strlen(json));
    if (rc != 0) {
        fail_msg("limits %s rejected: %s", json, casynq_limiter_last_error(l));
    }
    return l;
}

static struct casynq_client *make_client(const struct fixture *fx,
                                         struct casynq_limiter *l)
{
    struct casynq_client *c = NULL;

    assert_int_equal(casynq_client_create(fx->opts, &c), 0);
    assert_int_equal(casynq_client_set_limiter(c, l), 0);
    return c;
}

/* The options of one enqueue in these tests. */
struct enqueue_spec {
    const char *type;
    const char *queue;
    const char *rate_key; /* NULL for none */
    const char *payload;  /* NULL for none */
    int64_t process_in_s; /* 0 to process at once */
};

static int enqueue(struct casynq_client *c, const struct enqueue_spec *spec)
{
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task *task = NULL;
    size_t len = spec->payload != NULL ? strlen(spec->payload) : 0;
    int rc;

    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(opts, spec->queue), 0);
    assert_int_equal(casynq_enqueue_options_set_rate_key(opts, spec->rate_key),
                     0);
    if (spec->process_in_s > 0) {
        assert_int_equal(casynq_enqueue_options_set_process_in_s(
                                 opts, spec->process_in_s),
                         0);
    }
    assert_int_equal(casynq_task_create(spec->type, spec->payload, len, &task),
                     0);
    rc = casynq_client_enqueue(c, task, opts, NULL);
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
    return rc;
}

/* Enqueues and fails the test unless the enqueue succeeds. */
static void enqueue_ok(struct casynq_client *c, const struct enqueue_spec *spec)
{
    int rc = enqueue(c, spec);

    if (rc != 0) {
        fail_msg("enqueue of %s into %s returned %s: %s", spec->type,
                 spec->queue, casynq_err_name(rc), casynq_client_last_error(c));
    }
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Writes every key, in name order, with its DUMP into out, so that two
 * snapshots are equal exactly when no key was added, removed or
 * changed. TTLs are left out because they count down on their own. */
static void snapshot(redisContext *c, struct casynq__buf *out)
{
    redisReply *keys = redis_run(c, "KEYS *");
    const char **names = calloc(keys->elements + 1, sizeof(*names));

    assert_non_null(names);
    for (size_t i = 0; i < keys->elements; i++) {
        names[i] = keys->element[i]->str;
    }
    qsort(names, keys->elements, sizeof(*names), compare_strings);
    for (size_t i = 0; i < keys->elements; i++) {
        redisReply *dump = redis_run(c, "DUMP %s", names[i]);

        assert_int_equal(
                casynq__buf_printf(out, "%s=%zu:", names[i], dump->len), 0);
        assert_int_equal(casynq__buf_append(out, dump->str, dump->len), 0);
        freeReplyObject(dump);
    }
    assert_int_equal(casynq__buf_printf(out, "#%zu", keys->elements), 0);
    free(names);
    freeReplyObject(keys);
}

static void assert_snapshots_equal(const struct casynq__buf *before,
                                   const struct casynq__buf *after)
{
    if (before->len != after->len ||
        memcmp(before->data, after->data, before->len) != 0) {
        fail_msg("redis changed during a rejected enqueue: %zu bytes of "
                 "keys and values before, %zu after",
                 before->len, after->len);
    }
}

static long long llen(redisContext *c, const char *key)
{
    redisReply *r = redis_run(c, "LLEN %s", key);
    long long n = r->integer;

    freeReplyObject(r);
    return n;
}

/* ------------------------------------------------------------------------
 * Client
 */

static void test_client_rate_limit_rejects_and_writes_nothing(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = make_limiter(
            fx, CASYNQ_LIMITER_REDIS,
            "{\"rate_limits\": [{\"name\": \"per-tenant\", \"scope\": "
            "\"key\", \"rate_per_s\": 0.1, \"burst\": 2}]}");
    struct casynq_client *c = make_client(fx, l);
    struct enqueue_spec acme = {"demo:noop", "default", "acme", "{}", 0};
    struct casynq__buf before = {0};
    struct casynq__buf after = {0};
    char expected[128];
    int64_t retry;

    enqueue_ok(c, &acme);
    enqueue_ok(c, &acme);
    snapshot(fx->redis, &before);
    assert_int_equal(enqueue(c, &acme), CASYNQ_ERATELIMITED);
    snapshot(fx->redis, &after);
    assert_snapshots_equal(&before, &after);

    retry = casynq_client_retry_after_ms(c);
    assert_true(retry >= 1);
    assert_true(retry <= 10000);
    snprintf(expected, sizeof(expected),
             "rate limit \"per-tenant\" exceeded for key \"acme\": retry "
             "after %lld ms",
             (long long)retry);
    assert_string_equal(casynq_client_last_error(c), expected);
    assert_int_equal(llen(fx->redis, "asynq:{default}:pending"), 2);

    /* Another key has its own budget, an enqueue without a key passes
     * the per-key limit, and removing the limiter lifts every limit. */
    acme.rate_key = "globex";
    enqueue_ok(c, &acme);
    assert_int_equal(casynq_client_retry_after_ms(c), 0);
    acme.rate_key = NULL;
    enqueue_ok(c, &acme);
    acme.rate_key = "acme";
    assert_int_equal(casynq_client_set_limiter(c, NULL), 0);
    enqueue_ok(c, &acme);
    assert_int_equal(llen(fx->redis, "asynq:{default}:pending"), 5);

    casynq__buf_free(&before);
    casynq__buf_free(&after);
    casynq_client_destroy(c);
    casynq_limiter_destroy(l);
}

static void test_client_payload_too_large_writes_nothing(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = make_limiter(fx, CASYNQ_LIMITER_MEMORY,
                                            "{\"max_payload_bytes\": 16}");
    struct casynq_client *c = make_client(fx, l);
    struct enqueue_spec big = {"demo:noop", "default", NULL,
                               "seventeen bytes!!", 0};
    redisReply *r;

    assert_int_equal(enqueue(c, &big), CASYNQ_ETOOLARGE);
    assert_string_equal(casynq_client_last_error(c),
                        "payload is 17 bytes, above the maximum of 16 bytes: "
                        "send less, or store the data elsewhere and pass a "
                        "reference");
    /* Not even the queue was registered. */
    r = redis_run(fx->redis, "DBSIZE");
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);

    big.payload = "sixteen bytes!!!";
    enqueue_ok(c, &big);
    casynq_client_destroy(c);
    casynq_limiter_destroy(l);
}

/* Handler context of the drain server: nothing to record. */
static struct casynq_server *start_drain_server(const struct fixture *fx,
                                                struct casynq_config **cfg,
                                                struct casynq_mux **mux)
{
    struct casynq_server *srv = NULL;
    int rc = 0;

    rc |= casynq_config_create(cfg);
    rc |= casynq_config_set_redis(*cfg, fx->opts);
    rc |= casynq_config_set_queue(*cfg, "capped", 1);
    rc |= casynq_config_set_concurrency(*cfg, 2);
    rc |= casynq_config_set_task_check_interval_ms(*cfg, 50);
    rc |= casynq_config_set_log(*cfg, NULL, NULL, CASYNQ_LOG_WARN);
    rc |= casynq_mux_create(mux);
    rc |= casynq_demo_handlers_register(*mux);
    assert_int_equal(rc, 0);
    rc = casynq_server_create(*cfg, *mux, &srv);
    if (rc == 0) {
        rc = casynq_server_start(srv);
    }
    if (rc != 0) {
        fail_msg("the drain server did not start: %s (%s)", casynq_err_name(rc),
                 srv != NULL ? casynq_server_last_error(srv)
                             : casynq_config_last_error(*cfg));
    }
    return srv;
}

/* Pending, scheduled and retry tasks all count towards the cap; once a
 * server has drained the pending ones, the queue accepts again. */
static void test_client_backlog_cap_until_drained(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *l = make_limiter(
            fx, CASYNQ_LIMITER_MEMORY, "{\"max_backlog\": {\"capped\": 3}}");
    struct casynq_client *c = make_client(fx, l);
    struct enqueue_spec now = {"demo:noop", "capped", "acme", NULL, 0};
    struct enqueue_spec later = {"demo:noop", "capped", "acme", NULL, 3600};
    struct casynq__buf before = {0};
    struct casynq__buf after = {0};
    struct casynq_config *cfg = NULL;
    struct casynq_mux *mux = NULL;
    struct casynq_server *srv;

    enqueue_ok(c, &now);
    enqueue_ok(c, &now);
    enqueue_ok(c, &later);
    snapshot(fx->redis, &before);
    assert_int_equal(enqueue(c, &now), CASYNQ_EBACKLOG);
    assert_int_equal(enqueue(c, &later), CASYNQ_EBACKLOG);
    snapshot(fx->redis, &after);
    assert_snapshots_equal(&before, &after);
    assert_int_equal(casynq_client_retry_after_ms(c), 0);
    assert_string_equal(casynq_client_last_error(c),
                        "queue \"capped\" holds 3 pending, scheduled and "
                        "retry tasks, at or above its backlog cap of 3: "
                        "retry once workers have drained it");
    /* The cap is per queue. */
    now.queue = "default";
    enqueue_ok(c, &now);
    now.queue = "capped";

    srv = start_drain_server(fx, &cfg, &mux);
    WAIT_UNTIL(llen(fx->redis, "asynq:{capped}:pending") == 0 &&
               llen(fx->redis, "asynq:{capped}:active") == 0);
    /* One scheduled task is left, so two more fit under the cap. */
    enqueue_ok(c, &now);
    enqueue_ok(c, &later);
    casynq_server_destroy(srv);
    casynq_mux_destroy(mux);
    casynq_config_destroy(cfg);

    casynq__buf_free(&before);
    casynq__buf_free(&after);
    casynq_client_destroy(c);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * casynq enqueue
 */

struct cli_result {
    int status;
    char out[4096];
    char err[4096];
};

static void read_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;

    if (f != NULL) {
        n = fread(buf, 1, len - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
}

static void write_limits(const struct fixture *fx, const char *json)
{
    char path[300];
    FILE *f;

    snprintf(path, sizeof(path), "%s/limits.json", fx->tmp);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(json, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Runs `casynq enqueue --redis URL --type demo:noop ARGS...`, passing the
 * path of the write_limits() file in place of each argument "LIMITS". */
static void run_cli(const struct fixture *fx, struct cli_result *res,
                    const char *const *args)
{
    const char *cli = getenv("CASYNQ_CLI");
    posix_spawn_file_actions_t actions;
    char out_path[300];
    char err_path[300];
    char limits_path[300];
    char *argv[32];
    int argc = 0;
    pid_t pid;
    int status = 0;

    if (cli == NULL || cli[0] == '\0') {
        fail_msg("CASYNQ_CLI is not set: run the test through meson, which "
                 "sets it to the casynq binary");
    }
    snprintf(out_path, sizeof(out_path), "%s/out.txt", fx->tmp);
    snprintf(err_path, sizeof(err_path), "%s/err.txt", fx->tmp);
    snprintf(limits_path, sizeof(limits_path), "%s/limits.json", fx->tmp);
    argv[argc++] = (char *)(uintptr_t)cli;
    argv[argc++] = (char *)(uintptr_t) "enqueue";
    argv[argc++] = (char *)(uintptr_t) "--redis";
    argv[argc++] = (char *)(uintptr_t)fx->server.url;
    argv[argc++] = (char *)(uintptr_t) "--type";
    argv[argc++] = (char *)(uintptr_t) "demo:noop";
    for (size_t i = 0; args[i] != NULL && argc < 31; i++) {
        const char *arg =
                strcmp(args[i], "LIMITS") == 0 ? limits_path : args[i];

        argv[argc++] = (char *)(uintptr_t)arg;
    }
    argv[argc] = NULL;

    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out_path,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&actions, 2, err_path,
                                     O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_int_equal(posix_spawn(&pid, cli, &actions, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    res->status = WEXITSTATUS(status);
    read_file(out_path, res->out, sizeof(res->out));
    read_file(err_path, res->err, sizeof(res->err));
}

static void assert_cli_status(const struct cli_result *res, int expected)
{
    if (res->status != expected) {
        fail_msg("casynq enqueue exited with %d, expected %d; stderr: %s",
                 res->status, expected, res->err);
    }
}

/* Counts the lines of enqueued tasks in the CLI's output. */
static int enqueued_lines(const struct cli_result *res)
{
    int n = 0;

    for (const char *p = res->out; (p = strstr(p, "enqueued task")) != NULL;
         p++) {
        n++;
    }
    return n;
}

static void test_cli_rate_limit_exits_5(void **state)
{
    struct fixture *fx = *state;
    struct cli_result res;

    write_limits(fx, "{\"rate_limits\": [{\"name\": \"per-tenant\", "
                     "\"scope\": \"key\", \"rate_per_s\": 0.1, "
                     "\"burst\": 1}]}");
    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--rate-key", "acme",
                                  "--count", "3", NULL});
    assert_cli_status(&res, 5);
    assert_int_equal(enqueued_lines(&res), 1);
    assert_message_has(res.err, "task 2 of 3: rate limit \"per-tenant\" "
                                "exceeded for key \"acme\": retry after ");
    assert_message_has(res.err, "(retry_after_ms=");

    /* The Redis budget is shared between processes: a new process with
     * the same key is rejected at once. */
    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--rate-key", "acme",
                                  NULL});
    assert_cli_status(&res, 5);
    assert_int_equal(enqueued_lines(&res), 0);

    /* A memory budget belongs to its process alone. */
    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--limiter", "memory",
                                  "--rate-key", "acme", "--count", "2", NULL});
    assert_cli_status(&res, 5);
    assert_int_equal(enqueued_lines(&res), 1);
    assert_int_equal(llen(fx->redis, "asynq:{default}:pending"), 2);
}

static void test_cli_backlog_exits_6_and_payload_exits_7(void **state)
{
    struct fixture *fx = *state;
    struct cli_result res;

    write_limits(fx, "{\"max_backlog\": {\"capq\": 1}, "
                     "\"max_payload_bytes\": 4}");
    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--queue", "capq",
                                  "--count", "2", NULL});
    assert_cli_status(&res, 6);
    assert_int_equal(enqueued_lines(&res), 1);
    assert_message_has(res.err, "queue \"capq\" holds 1 pending");

    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--payload", "12345",
                                  NULL});
    assert_cli_status(&res, 7);
    assert_message_has(res.err, "payload is 5 bytes, above the maximum of 4");
    assert_int_equal(llen(fx->redis, "asynq:{default}:pending"), 0);
}

static void test_cli_rejects_bad_limits(void **state)
{
    struct fixture *fx = *state;
    struct cli_result res;

    write_limits(fx, "{\"rate_limits\": [{\"name\": \"a\", \"scope\": "
                     "\"tenant\", \"rate_per_s\": 1, \"burst\": 1}]}");
    run_cli(fx, &res, (const char *const[]){"--limits", "LIMITS", NULL});
    assert_cli_status(&res, 2);
    assert_message_has(res.err, "rate_limits[0].scope is \"tenant\"");

    write_limits(fx, "{\"max_payload\": 10}");
    run_cli(fx, &res, (const char *const[]){"--limits", "LIMITS", NULL});
    assert_cli_status(&res, 2);
    assert_message_has(res.err, "unknown key \"max_payload\"");

    run_cli(fx, &res, (const char *const[]){"--limiter", "memory", NULL});
    assert_cli_status(&res, 2);
    assert_message_has(res.err, "--limiter needs --limits");

    run_cli(fx, &res,
            (const char *const[]){"--limits", "LIMITS", "--limiter", "disk",
                                  NULL});
    assert_cli_status(&res, 2);
    assert_message_has(res.err, "invalid value \"disk\" for --limiter");

    run_cli(fx, &res,
            (const char *const[]){"--limits", "/nonexistent/limits.json",
                                  NULL});
    assert_cli_status(&res, 1);
    assert_message_has(res.err, "cannot open limits file");

    run_cli(fx, &res, (const char *const[]){"--rate-key", " ", NULL});
    assert_cli_status(&res, 2);
    assert_message_has(res.err, "rate key is empty");
    assert_int_equal(llen(fx->redis, "asynq:{default}:pending"), 0);
}

/* ------------------------------------------------------------------------
 * A flood of low-priority tasks
 */

#define CRITICAL_TASKS 50
#define FLOOD_RATE     20.0
#define FLOOD_BURST    1500.0

/* State shared by the flood thread, the handlers and the test. */
struct starvation {
    const struct fixture *fx;
    struct casynq_limiter *limiter;
    atomic_bool stop;
    atomic_long flood_accepted;
    atomic_long flood_limited;
    atomic_long flood_failed;
    pthread_mutex_t mu;
    redisContext *probe;                      /* protected by mu */
    int low_done;                             /* protected by mu */
    int critical_done;                        /* protected by mu */
    long long low_pending_at[CRITICAL_TASKS]; /* protected by mu */
    int low_done_before[CRITICAL_TASKS];      /* protected by mu */
};

/* Enqueues into "low" as key "flood" as fast as it can until s->stop is
 * set. It has its own client, because a client serves one thread. */
static void *flood_main(void *arg)
{
    struct starvation *s = arg;
    struct casynq_client *c = NULL;
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task *task = NULL;

    if (casynq_client_create(s->fx->opts, &c) != 0 ||
        casynq_client_set_limiter(c, s->limiter) != 0 ||
        casynq_enqueue_options_create(&opts) != 0 ||
        casynq_enqueue_options_set_queue(opts, "low") != 0 ||
        casynq_enqueue_options_set_rate_key(opts, "flood") != 0 ||
        casynq_task_create("starve:low", NULL, 0, &task) != 0) {
        atomic_fetch_add(&s->flood_failed, 1);
        goto out;
    }
    while (!atomic_load(&s->stop)) {
        int rc = casynq_client_enqueue(c, task, opts, NULL);

        if (rc == 0) {
            atomic_fetch_add(&s->flood_accepted, 1);
        } else if (rc == CASYNQ_ERATELIMITED) {
            atomic_fetch_add(&s->flood_limited, 1);
        } else {
            atomic_fetch_add(&s->flood_failed, 1);
        }
    }

out:
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
    casynq_client_destroy(c);
    return NULL;
}

static int low_handler(struct casynq_ctx *ctx, const struct casynq_task *task,
                       void *ud)
{
    struct starvation *s = ud;

    (void)ctx;
    (void)task;
    pthread_mutex_lock(&s->mu);
    s->low_done++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Records the low backlog and the low tasks done so far. */
static int critical_handler(struct casynq_ctx *ctx,
                            const struct casynq_task *task, void *ud)
{
    struct starvation *s = ud;
    redisReply *r;

    (void)ctx;
    (void)task;
    pthread_mutex_lock(&s->mu);
    if (s->critical_done < CRITICAL_TASKS) {
        r = redisCommand(s->probe, "LLEN asynq:{low}:pending");
        s->low_pending_at[s->critical_done] =
                r != NULL && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        s->low_done_before[s->critical_done] = s->low_done;
        if (r != NULL) {
            freeReplyObject(r);
        }
    }
    s->critical_done++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int critical_done(struct starvation *s)
{
    int n;

    pthread_mutex_lock(&s->mu);
    n = s->critical_done;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static struct casynq_server *start_weighted_server(struct starvation *s,
                                                   struct casynq_config **cfg,
                                                   struct casynq_mux **mux)
{
    struct casynq_server *srv = NULL;
    int rc = 0;

    rc |= casynq_config_create(cfg);
    rc |= casynq_config_set_redis(*cfg, s->fx->opts);
    rc |= casynq_config_set_queue(*cfg, "critical", 6);
    rc |= casynq_config_set_queue(*cfg, "low", 1);
    rc |= casynq_config_set_concurrency(*cfg, 2);
    rc |= casynq_config_set_task_check_interval_ms(*cfg, 50);
    rc |= casynq_config_set_log(*cfg, NULL, NULL, CASYNQ_LOG_WARN);
    rc |= casynq_mux_create(mux);
    rc |= casynq_mux_handle(*mux, "starve:low", low_handler, s);
    rc |= casynq_mux_handle(*mux, "starve:critical", critical_handler, s);
    assert_int_equal(rc, 0);
    rc = casynq_server_create(*cfg, *mux, &srv);
    if (rc == 0) {
        rc = casynq_server_start(srv);
    }
    if (rc != 0) {
        fail_msg("the weighted server did not start: %s (%s)",
                 casynq_err_name(rc),
                 srv != NULL ? casynq_server_last_error(srv)
                             : casynq_config_last_error(*cfg));
    }
    return srv;
}

/* One caller floods "low" through a rate-limited client while another
 * enqueues critical work. The flood key is throttled after its burst, so
 * the low backlog stays large but bounded, and every critical task runs
 * while most of that backlog is still waiting. */
static void test_flood_does_not_starve_critical(void **state)
{
    struct fixture *fx = *state;
    struct starvation *s = calloc(1, sizeof(*s));
    struct enqueue_spec critical = {"starve:critical", "critical", "acme", NULL,
                                    0};
    struct casynq_config *cfg = NULL;
    struct casynq_mux *mux = NULL;
    struct casynq_server *srv;
    struct casynq_client *c;
    pthread_t flood;
    long long low_at_start;
    int64_t start;
    double elapsed_s;
    long accepted;

    assert_non_null(s);
    s->fx = fx;
    pthread_mutex_init(&s->mu, NULL);
    s->probe = test_redis_connect(&fx->server);
    assert_non_null(s->probe);
    s->limiter = make_limiter(
            fx, CASYNQ_LIMITER_REDIS,
            "{\"rate_limits\": [{\"name\": \"per-tenant\", \"scope\": "
            "\"key\", \"rate_per_s\": 20, \"burst\": 1500}], "
            "\"max_backlog\": {\"low\": 100000}}");

    /* The flood spends its burst, building a large low backlog before
     * any worker runs, then goes on at the limited rate. */
    start = monotonic_ns();
    assert_int_equal(pthread_create(&flood, NULL, flood_main, s), 0);
    WAIT_UNTIL(atomic_load(&s->flood_accepted) >= (long)FLOOD_BURST ||
               atomic_load(&s->flood_failed) > 0);
    assert_int_equal(atomic_load(&s->flood_failed), 0);

    c = make_client(fx, s->limiter);
    for (int i = 0; i < CRITICAL_TASKS; i++) {
        enqueue_ok(c, &critical);
    }
    low_at_start = llen(fx->redis, "asynq:{low}:pending");
    assert_true(low_at_start >= (long long)FLOOD_BURST);

    srv = start_weighted_server(s, &cfg, &mux);
    WAIT_UNTIL(critical_done(s) >= CRITICAL_TASKS);
    atomic_store(&s->stop, true);
    pthread_join(flood, NULL);
    elapsed_s = (double)(monotonic_ns() - start) / NS_PER_S;
    casynq_server_destroy(srv);

    accepted = atomic_load(&s->flood_accepted);
    print_message("flood: %ld accepted, %ld rate limited in %.3f s; low "
                  "backlog %lld at the start, %lld when the last critical "
                  "task finished, after %d low tasks\n",
                  accepted, atomic_load(&s->flood_limited), elapsed_s,
                  low_at_start, s->low_pending_at[CRITICAL_TASKS - 1],
                  s->low_done_before[CRITICAL_TASKS - 1]);

    /* The flood key was throttled, and its accepted count obeys the
     * limit. */
    assert_int_equal(atomic_load(&s->flood_failed), 0);
    assert_true(atomic_load(&s->flood_limited) > 0);
    if ((double)accepted > FLOOD_RATE * elapsed_s + FLOOD_BURST) {
        fail_msg("the flood enqueued %ld tasks in %.3f s, above the bound "
                 "of %.1f",
                 accepted, elapsed_s, FLOOD_RATE * elapsed_s + FLOOD_BURST);
    }

    /* Every critical task finished while at least half of the low
     * backlog was still pending. */
    for (int i = 0; i < CRITICAL_TASKS; i++) {
        if (s->low_pending_at[i] < low_at_start / 2) {
            fail_msg("critical task %d of %d finished with %lld low tasks "
                     "pending, below half of the %lld at the start",
                     i + 1, CRITICAL_TASKS, s->low_pending_at[i], low_at_start);
        }
    }
    if (s->low_done_before[CRITICAL_TASKS - 1] > low_at_start / 2) {
        fail_msg("%d low tasks finished before the last critical task, "
                 "more than half of the %lld low backlog",
                 s->low_done_before[CRITICAL_TASKS - 1], low_at_start);
    }

    casynq_mux_destroy(mux);
    casynq_config_destroy(cfg);
    casynq_client_destroy(c);
    casynq_limiter_destroy(s->limiter);
    redisFree(s->probe);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(
                    test_client_rate_limit_rejects_and_writes_nothing,
                    fixture_setup, fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_client_payload_too_large_writes_nothing, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_client_backlog_cap_until_drained, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(test_cli_rate_limit_exits_5,
                                            fixture_setup, fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_cli_backlog_exits_6_and_payload_exits_7, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(test_cli_rejects_bad_limits,
                                            fixture_setup, fixture_teardown),
            cmocka_unit_test_setup_teardown(test_flood_does_not_starve_critical,
                                            fixture_setup, fixture_teardown),
    };

    casynq_set_allocator(counting_malloc, counting_calloc, counting_realloc,
                         counting_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
