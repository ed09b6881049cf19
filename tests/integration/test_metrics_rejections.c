/* Integration test of casynq_enqueue_rejected_total: a process enqueues
 * through clients with memory limiters against a real redis-server, runs
 * an in-process server with a metrics address and both limiters attached,
 * and scrapes GET /metrics over loopback with a plain socket. The series
 * must equal the rejections the clients saw, per limit name.
 *
 * The server serves only a queue that the test never enqueues to, so it
 * processes none of the test's tasks. Rate limits refill in hours, so no check
 * passes because time went by. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "redis_server.h"

/* Attempts to start the server on a port found free, which another process
 * may take between the probe and the bind. */
#define BIND_ATTEMPTS    5
/* Upper bound of one scrape's send or receive, in seconds. */
#define SCRAPE_TIMEOUT_S 10

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
    struct test_redis redis;
    struct casynq_redis_options *opts;
    long live_blocks_at_start;
};

static int fixture_setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));

    if (fx == NULL) {
        return -1;
    }
    *state = fx;
    fx->live_blocks_at_start = atomic_load(&live_blocks);
    if (test_redis_start(&fx->redis) != 0) {
        return -1;
    }
    if (casynq_redis_options_create(&fx->opts) != 0 ||
        casynq_redis_options_set_tcp(fx->opts, "127.0.0.1", fx->redis.port) !=
                0) {
        return -1;
    }
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fixture *fx = *state;
    long leaked;

    if (fx == NULL) {
        return 0;
    }
    casynq_redis_options_destroy(fx->opts);
    test_redis_stop(&fx->redis);
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

static struct casynq_limiter *make_limiter(const char *json)
{
    struct casynq_limiter *l = NULL;
    int rc;

    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL, &l), 0);
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

/* Enqueues a task of `payload_len` bytes into queue as rate key `key` (NULL
 * for none) `times` times, and fails the test unless every enqueue returns
 * `expected`. */
static void enqueue_times(struct casynq_client *c, const char *queue,
                          const char *key, size_t payload_len, int times,
                          int expected)
{
    char payload[256];
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task *task = NULL;

    assert_true(payload_len <= sizeof(payload));
    memset(payload, 'p', sizeof(payload));
    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(opts, queue), 0);
    assert_int_equal(casynq_enqueue_options_set_rate_key(opts, key), 0);
    assert_int_equal(
            casynq_task_create("report:build", payload, payload_len, &task), 0);
    for (int i = 0; i < times; i++) {
        int rc = casynq_client_enqueue(c, task, opts, NULL);

        if (rc != expected) {
            fail_msg("enqueue %d of %d into %s returned %s, expected %s: %s",
                     i + 1, times, queue, casynq_err_name(rc),
                     casynq_err_name(expected), casynq_client_last_error(c));
        }
    }
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
}

/* Returns a TCP port on 127.0.0.1 that was free a moment ago: the port the
 * kernel picked for a socket bound to port 0, which is then closed. */
static int free_loopback_port(void)
{
    struct sockaddr_in addr = {0};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    close(fd);
    return ntohs(addr.sin_port);
}

/* A server with a metrics endpoint on *port that processes only the queue
 * "idle" and exports the rejections of the n limiters. */
struct metrics_server {
    struct casynq_config *cfg;
    struct casynq_mux *mux;
    struct casynq_server *srv;
    int port;
};

static void start_server(struct metrics_server *ms, const struct fixture *fx,
                         struct casynq_limiter *const *limiters, int n)
{
    char addr[32];
    int rc = CASYNQ_ESYS;

    assert_int_equal(casynq_config_create(&ms->cfg), 0);
    assert_int_equal(casynq_config_set_redis(ms->cfg, fx->opts), 0);
    assert_int_equal(casynq_config_set_queue(ms->cfg, "idle", 1), 0);
    assert_int_equal(casynq_config_set_concurrency(ms->cfg, 1), 0);
    assert_int_equal(
            casynq_config_set_log(ms->cfg, NULL, NULL, CASYNQ_LOG_WARN), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(casynq_config_add_limiter(ms->cfg, limiters[i]), 0);
    }
    assert_int_equal(casynq_mux_create(&ms->mux), 0);

    for (int attempt = 0; attempt < BIND_ATTEMPTS && rc == CASYNQ_ESYS;
         attempt++) {
        ms->port = free_loopback_port();
        snprintf(addr, sizeof(addr), "127.0.0.1:%d", ms->port);
        assert_int_equal(casynq_config_set_metrics_addr(ms->cfg, addr), 0);
        casynq_server_destroy(ms->srv);
        ms->srv = NULL;
        assert_int_equal(casynq_server_create(ms->cfg, ms->mux, &ms->srv), 0);
        rc = casynq_server_start(ms->srv);
    }
    if (rc != 0) {
        fail_msg("the server did not start with metrics on port %d: %s (%s)",
                 ms->port, casynq_err_name(rc),
                 casynq_server_last_error(ms->srv));
    }
}

static void stop_server(struct metrics_server *ms)
{
    casynq_server_destroy(ms->srv);
    casynq_mux_destroy(ms->mux);
    casynq_config_destroy(ms->cfg);
}

/* Sends GET /metrics to 127.0.0.1:port over HTTP/1.0 and returns the whole
 * response, headers included, or fails the test.
 * Ownership: the caller frees the text with free(). */
static char *scrape(int port)
{
    static const char request[] = "GET /metrics HTTP/1.0\r\n"
                                  "Host: 127.0.0.1\r\n\r\n";
    struct timeval timeout = {SCRAPE_TIMEOUT_S, 0};
    struct sockaddr_in addr = {0};
    size_t cap = 65536;
    size_t len = 0;
    char *text = malloc(cap);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ssize_t n;

    assert_non_null(text);
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        fail_msg("cannot connect to the metrics endpoint on port %d", port);
    }
    assert_int_equal(send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL),
                     (ssize_t)(sizeof(request) - 1));

    /* HTTP/1.0 without keep-alive: the server closes after the body. */
    while ((n = recv(fd, text + len, cap - len - 1, 0)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) {
            cap *= 2;
            text = realloc(text, cap);
            assert_non_null(text);
        }
    }
    if (n < 0) {
        fail_msg("reading the scrape on port %d failed or timed out after "
                 "%zu bytes",
                 port, len);
    }
    close(fd);
    text[len] = '\0';
    if (strncmp(text, "HTTP/1.", 7) != 0 || strstr(text, " 200 ") == NULL) {
        fail_msg("the scrape did not return 200: %.80s", text);
    }
    return text;
}

/* Asserts that text contains `line` as a whole line; the body's lines end
 * in "\n". */
static void assert_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if (p != text && p[-1] == '\n' && p[len] == '\n') {
            return;
        }
        p += len;
    }
    fail_msg("line \"%s\" is missing from the scrape", line);
}

/* Asserts that the scrape has the series of limit `name` with value n. */
static void assert_rejected(const char *text, const char *name, long n)
{
    char line[256];

    snprintf(line, sizeof(line),
             "casynq_enqueue_rejected_total{limit=\"%s\"} %ld", name, n);
    assert_line(text, line);
}

static int count_lines_starting(const char *text, const char *prefix)
{
    size_t len = strlen(prefix);
    const char *p = text;
    int n = 0;

    while (p != NULL) {
        if (strncmp(p, prefix, len) == 0) {
            n++;
        }
        p = strchr(p, '\n');
        if (p != NULL) {
            p++;
        }
    }
    return n;
}

/* ------------------------------------------------------------------------
 * Tests
 */

/* Two limiters, each used by its own client, share the rate limit name
 * "per-tenant", so the scrape shows one series with their sum, next to
 * max_backlog and max_payload. Rejections after the first scrape show in
 * the next one. */
static void test_scrape_shows_rejections_by_limit(void **state)
{
    struct fixture *fx = *state;
    struct casynq_limiter *limiters[2];
    struct casynq_client *first;
    struct casynq_client *second;
    struct metrics_server ms = {0};
    char *text;

    limiters[0] = make_limiter(
            "{\"rate_limits\": [{\"name\": \"per-tenant\", \"scope\": "
            "\"key\", \"match\": \"tenant:\", \"rate_per_s\": 0.0001, "
            "\"burst\": 2}], \"max_backlog\": {\"capped\": 1}, "
            "\"max_payload_bytes\": 64}");
    limiters[1] = make_limiter(
            "{\"rate_limits\": [{\"name\": \"per-tenant\", \"scope\": "
            "\"key\", \"rate_per_s\": 0.0001, \"burst\": 1}]}");
    first = make_client(fx, limiters[0]);
    second = make_client(fx, limiters[1]);

    /* Before the server starts: 5 rate limited, 3 too large, 2 over the
     * backlog cap, and 1 more rate limited through the second limiter. */
    enqueue_times(first, "default", "tenant:acme", 8, 2, 0);
    enqueue_times(first, "default", "tenant:acme", 8, 5, CASYNQ_ERATELIMITED);
    enqueue_times(first, "default", NULL, 65, 3, CASYNQ_ETOOLARGE);
    enqueue_times(first, "capped", NULL, 8, 1, 0);
    enqueue_times(first, "capped", NULL, 8, 2, CASYNQ_EBACKLOG);
    enqueue_times(second, "default", "tenant:acme", 8, 1, 0);
    enqueue_times(second, "default", "tenant:acme", 8, 1, CASYNQ_ERATELIMITED);

    start_server(&ms, fx, limiters, 2);
    text = scrape(ms.port);
    assert_line(text, "# TYPE casynq_enqueue_rejected_total counter");
    assert_rejected(text, "per-tenant", 6);
    assert_rejected(text, "max_backlog", 2);
    assert_rejected(text, "max_payload", 3);
    assert_int_equal(
            count_lines_starting(text, "casynq_enqueue_rejected_total"), 3);
    /* The caller key never becomes a label. */
    assert_null(strstr(text, "tenant:acme"));
    free(text);

    /* While the server runs, the next scrape reads the counts anew. */
    enqueue_times(second, "default", "tenant:acme", 8, 4, CASYNQ_ERATELIMITED);
    enqueue_times(first, "default", NULL, 100, 1, CASYNQ_ETOOLARGE);
    text = scrape(ms.port);
    assert_rejected(text, "per-tenant", 10);
    assert_rejected(text, "max_backlog", 2);
    assert_rejected(text, "max_payload", 4);
    free(text);

    stop_server(&ms);
    casynq_client_destroy(first);
    casynq_client_destroy(second);
    casynq_limiter_destroy(limiters[0]);
    casynq_limiter_destroy(limiters[1]);
}

/* A server without attached limiters has no rejection series. */
static void test_scrape_without_limiter_has_no_series(void **state)
{
    struct fixture *fx = *state;
    struct metrics_server ms = {0};
    char *text;

    start_server(&ms, fx, NULL, 0);
    text = scrape(ms.port);
    assert_line(text, "# TYPE casynq_workers_active gauge");
    assert_null(strstr(text, "casynq_enqueue_rejected_total"));
    free(text);
    stop_server(&ms);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(
                    test_scrape_shows_rejections_by_limit, fixture_setup,
                    fixture_teardown),
            cmocka_unit_test_setup_teardown(
                    test_scrape_without_limiter_has_no_series, fixture_setup,
                    fixture_teardown),
    };

    casynq_set_allocator(counting_malloc, counting_calloc, counting_realloc,
                         counting_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
