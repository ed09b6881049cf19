/* Unit tests of runtime/metrics.c and the address parser of
 * runtime/metrics_http.c: the type table and its bound, counters and
 * histograms as rendered in the Prometheus text format, label escaping,
 * the asynq_ queue metrics and the metrics settings of the configuration.
 * Limiter rejections are rendered by limit name, summed across limiters.
 * The endpoint itself is tested against a running casynq-worker in
 * tests/integration/test_metrics_endpoint.py. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "alloc.h"
#include "config.h"
#include "metrics.h"

static const char *const queues[] = {"critical", "low"};

static void *cmocka_malloc(size_t size)
{
    return test_malloc(size);
}

static void *cmocka_calloc(size_t count, size_t size)
{
    return test_calloc(count, size);
}

static void *cmocka_realloc(void *ptr, size_t size)
{
    return test_realloc(ptr, size);
}

static void cmocka_free(void *ptr)
{
    test_free(ptr);
}

/* Prepares m for the queues "critical" and "low" and concurrency 4. Each
 * test finishes its own metrics, because cmocka counts what a test leaves
 * allocated before its teardown runs. */
static struct casynq__metrics *start(struct casynq__metrics *m)
{
    assert_int_equal(casynq__metrics_init(m, queues, 2, 4), 0);
    return m;
}

/* Renders m and returns the text. Free it with casynq__buf_free(). */
static struct casynq__buf render(struct casynq__metrics *m)
{
    struct casynq__buf out = {0};

    assert_int_equal(casynq__metrics_render(m, &out), 0);
    assert_non_null(out.data);
    return out;
}

/* Asserts that text contains `line` as a whole line. */
static void assert_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[len] == '\n') {
            return;
        }
        p += len;
    }
    fail_msg("line \"%s\" is missing from the rendered metrics", line);
}

static void assert_no_text(const char *text, const char *needle)
{
    if (strstr(text, needle) != NULL) {
        fail_msg("\"%s\" is in the rendered metrics but should not be", needle);
    }
}

static void test_type_slot_same_type_same_slot(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    int a = casynq__metrics_type_slot(m, "email:welcome");
    int b = casynq__metrics_type_slot(m, "email:reset");

    (void)state;

    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    assert_int_equal(casynq__metrics_type_slot(m, "email:welcome"), a);
    assert_int_equal(casynq__metrics_type_slot(m, "email:reset"), b);
    casynq__metrics_finish(m);
}

static void test_type_slot_overflow_counts_as_other(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    char type[32];
    struct casynq__buf out;

    (void)state;

    for (int i = 0; i < CASYNQ__METRICS_MAX_TYPES; i++) {
        snprintf(type, sizeof(type), "type:%d", i);
        assert_int_equal(casynq__metrics_type_slot(m, type), i);
    }
    assert_int_equal(casynq__metrics_type_slot(m, "one:too:many"),
                     CASYNQ__METRICS_OTHER);
    assert_int_equal(casynq__metrics_type_slot(m, "another"),
                     CASYNQ__METRICS_OTHER);
    /* Types already in the table keep their slot. */
    assert_int_equal(casynq__metrics_type_slot(m, "type:7"), 7);
    casynq__metrics_count(m, 1, CASYNQ__METRICS_OTHER, CASYNQ__TC_STARTED);
    casynq__metrics_count(m, 1, CASYNQ__METRICS_OTHER, CASYNQ__TC_STARTED);

    out = render(m);
    assert_line(out.data, "casynq_task_type_overflow_total 2");
    assert_line(out.data,
                "casynq_tasks_started_total{queue=\"low\",type=\"other\"} 2");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_type_invalid_utf8_is_replaced(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    int slot = casynq__metrics_type_slot(m, "bad\xff");
    struct casynq__buf out;

    (void)state;

    casynq__metrics_count(m, 0, slot, CASYNQ__TC_STARTED);
    out = render(m);
    assert_line(out.data, "casynq_tasks_started_total{queue=\"critical\","
                          "type=\"bad\xef\xbf\xbd\"} 1");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_escape_label_backslash_quote_newline(void **state)
{
    struct casynq__buf out = {0};

    (void)state;
    assert_int_equal(casynq__metrics_escape_label(&out, "a\"b\\c\nd"), 0);
    assert_string_equal(out.data, "a\\\"b\\\\c\\nd");
    casynq__buf_free(&out);
}

static void test_counters_render_per_queue_and_type(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    int noop = casynq__metrics_type_slot(m, "demo:noop");
    int fail = casynq__metrics_type_slot(m, "demo:fail");
    struct casynq__buf out;

    (void)state;

    for (int i = 0; i < 3; i++) {
        casynq__metrics_count(m, 0, noop, CASYNQ__TC_STARTED);
        casynq__metrics_count(m, 0, noop, CASYNQ__TC_SUCCEEDED);
    }
    casynq__metrics_count(m, 1, fail, CASYNQ__TC_STARTED);
    casynq__metrics_count(m, 1, fail, CASYNQ__TC_FAILED);
    casynq__metrics_count(m, 1, fail, CASYNQ__TC_RETRIED);
    /* Out-of-range queue or slot and NULL metrics are ignored. */
    casynq__metrics_count(m, 2, noop, CASYNQ__TC_STARTED);
    casynq__metrics_count(m, -1, noop, CASYNQ__TC_STARTED);
    casynq__metrics_count(NULL, 0, noop, CASYNQ__TC_STARTED);

    out = render(m);
    assert_line(out.data, "# TYPE casynq_tasks_started_total counter");
    assert_line(out.data, "casynq_tasks_started_total{queue=\"critical\","
                          "type=\"demo:noop\"} 3");
    assert_line(out.data, "casynq_tasks_succeeded_total{queue=\"critical\","
                          "type=\"demo:noop\"} 3");
    /* A used pair shows every counter, zeros included. */
    assert_line(out.data, "casynq_tasks_failed_total{queue=\"critical\","
                          "type=\"demo:noop\"} 0");
    assert_line(out.data, "casynq_tasks_retried_total{queue=\"low\","
                          "type=\"demo:fail\"} 1");
    /* Pairs never used do not appear. */
    assert_no_text(out.data, "{queue=\"low\",type=\"demo:noop\"}");
    assert_no_text(out.data, "{queue=\"critical\",type=\"demo:fail\"}");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_duration_histogram_buckets(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    int slot = casynq__metrics_type_slot(m, "report");
    struct casynq__buf out;

    (void)state;

    /* A bound belongs to its own bucket (le means "less or equal"). */
    casynq__metrics_observe_duration(m, slot, 5000000);
    casynq__metrics_observe_duration(m, slot, 5000001);
    casynq__metrics_observe_duration(m, slot, 2000000000);
    casynq__metrics_observe_duration(m, slot, 400000000000LL);

    out = render(m);
    assert_line(out.data, "# TYPE casynq_task_duration_seconds histogram");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"0.005\"} 1");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"0.01\"} 2");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"1\"} 2");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"2.5\"} 3");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"300\"} 3");
    assert_line(out.data, "casynq_task_duration_seconds_bucket{type=\"report\","
                          "le=\"+Inf\"} 4");
    assert_line(out.data,
                "casynq_task_duration_seconds_count{type=\"report\"} 4");
    assert_line(out.data, "casynq_task_duration_seconds_sum{type=\"report\"} "
                          "402.010000001");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_wait_unknown_without_pending_since(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    int64_t now = INT64_C(1700000000000000000);
    struct casynq__buf out;

    (void)state;

    casynq__metrics_observe_wait(m, 0, now - 30000000, now);
    casynq__metrics_observe_wait(m, 0, 0, now);
    casynq__metrics_observe_wait(m, 1, 0, now);

    out = render(m);
    assert_line(out.data, "casynq_queue_wait_seconds_bucket{queue=\"critical\","
                          "le=\"0.025\"} 0");
    assert_line(out.data, "casynq_queue_wait_seconds_bucket{queue=\"critical\","
                          "le=\"0.05\"} 1");
    assert_line(out.data,
                "casynq_queue_wait_seconds_count{queue=\"critical\"} 1");
    assert_line(out.data, "casynq_queue_wait_seconds_count{queue=\"low\"} 0");
    assert_line(out.data,
                "casynq_queue_wait_unknown_total{queue=\"critical\"} 1");
    assert_line(out.data, "casynq_queue_wait_unknown_total{queue=\"low\"} 1");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_queue_metrics_only_after_a_read(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    struct casynq__queue_stats st = {
            .pending = 4,
            .active = 1,
            .scheduled = 2,
            .retry = 3,
            .archived = 5,
            .completed = 6,
            .aggregating = 7,
            .processed_total = 100,
            .failed_total = 9,
            .paused = true,
            .memory_bytes = 4096,
    };
    int64_t read_ms = INT64_C(1700000000000);
    struct casynq__buf out;

    (void)state;

    out = render(m);
    assert_line(out.data, "# TYPE asynq_queue_size gauge");
    assert_no_text(out.data, "asynq_queue_size{");
    assert_line(out.data,
                "casynq_queue_stats_last_success_timestamp_seconds 0.000");
    casynq__buf_free(&out);

    /* The next pending task has waited 2.5 s at the time of the read. */
    st.oldest_pending_ns = read_ms * 1000000 - 2500000000LL;
    casynq__metrics_store_queue(m, 1, &st, read_ms);
    out = render(m);
    assert_line(out.data, "# TYPE asynq_tasks_enqueued_total gauge");
    assert_line(
            out.data,
            "asynq_tasks_enqueued_total{queue=\"low\",state=\"pending\"} 4");
    assert_line(out.data, "asynq_tasks_enqueued_total{queue=\"low\","
                          "state=\"completed\"} 6");
    assert_line(out.data, "asynq_queue_size{queue=\"low\"} 28");
    assert_line(out.data, "asynq_queue_latency_seconds{queue=\"low\"} "
                          "2.500000");
    assert_line(out.data,
                "asynq_queue_memory_usage_approx_bytes{queue=\"low\"} 4096");
    assert_line(out.data, "# TYPE asynq_tasks_processed_total counter");
    assert_line(out.data, "asynq_tasks_processed_total{queue=\"low\"} 100");
    assert_line(out.data, "asynq_tasks_failed_total{queue=\"low\"} 9");
    assert_line(out.data, "asynq_queue_paused_total{queue=\"low\"} 1");
    /* The other queue has not been read yet. */
    assert_no_text(out.data, "asynq_queue_size{queue=\"critical\"}");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_workers_and_utilization(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    struct casynq__buf out;

    (void)state;

    casynq__metrics_set_busy(m, 3);
    out = render(m);
    assert_line(out.data, "casynq_workers_active 3");
    assert_line(out.data, "casynq_workers_idle 1");
    casynq__buf_free(&out);

    /* With every worker idle since the start of the interval, the ratio
     * of the next interval is 0. */
    casynq__metrics_set_busy(m, 0);
    casynq__metrics_close_interval(m);
    casynq__metrics_close_interval(m);
    out = render(m);
    assert_line(out.data, "casynq_worker_utilization_ratio 0.000000");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

static void test_health_needs_recent_heartbeat(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    char text[128];

    (void)state;

    assert_false(casynq__metrics_healthy(m, text, sizeof(text)));
    assert_non_null(strstr(text, "no heartbeat"));
    atomic_store(&m->heartbeat_ok_ms, casynq__now_unix_ns() / 1000000);
    assert_true(casynq__metrics_healthy(m, text, sizeof(text)));
    assert_string_equal(text, "ok");
    atomic_store(&m->heartbeat_ok_ms, casynq__now_unix_ns() / 1000000 - 60000);
    assert_false(casynq__metrics_healthy(m, text, sizeof(text)));
    atomic_store(&m->heartbeat_ok_ms, casynq__now_unix_ns() / 1000000);
    atomic_store(&m->stopping, true);
    assert_false(casynq__metrics_healthy(m, text, sizeof(text)));
    assert_string_equal(text, "shutting down");
    casynq__metrics_finish(m);
}

static void test_process_metrics_rendered(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    struct casynq__buf out = render(m);

    (void)state;

    assert_line(out.data, "# TYPE process_cpu_seconds_total counter");
    assert_line(out.data, "# TYPE process_resident_memory_bytes gauge");
    assert_line(out.data, "# TYPE process_open_fds gauge");
    assert_line(out.data, "# TYPE casynq_cpus_available gauge");
    casynq__buf_free(&out);
    casynq__metrics_finish(m);
}

/* Parses addr and returns its port, or -1 when it is rejected. host gets
 * the numeric host. */
static int parse(const char *addr, char *host, size_t len)
{
    struct sockaddr_storage sa;
    socklen_t sa_len = 0;
    char err[CASYNQ__ERRBUF_SIZE];

    if (casynq__metrics_parse_addr(addr, &sa, &sa_len, err) != 0) {
        assert_true(strlen(err) > 0);
        return -1;
    }
    if (sa.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, (socklen_t)len);
        return ntohs(sin6->sin6_port);
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)&sa;

    inet_ntop(AF_INET, &sin->sin_addr, host, (socklen_t)len);
    return ntohs(sin->sin_port);
}

static void test_parse_addr_forms(void **state)
{
    char host[64];

    (void)state;
    assert_int_equal(parse("9464", host, sizeof(host)), 9464);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(parse(":9464", host, sizeof(host)), 9464);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(parse("0.0.0.0:80", host, sizeof(host)), 80);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(parse("10.1.2.3:65535", host, sizeof(host)), 65535);
    assert_string_equal(host, "10.1.2.3");
    assert_int_equal(parse("[::1]:9464", host, sizeof(host)), 9464);
    assert_string_equal(host, "::1");
}

static void test_parse_addr_rejects_bad_input(void **state)
{
    static const char *const bad[] = {
            "",
            "localhost:9464",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:",
            "[::1]9464",
            "[::1]",
            "abc",
            "1.2.3.4:12x",
            "::1:9464",
            "[1.2.3.4]:80",
            "-1",
    };
    char host[64];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (parse(bad[i], host, sizeof(host)) != -1) {
            fail_msg("address \"%s\" was accepted", bad[i]);
        }
    }
}

/* Creates a memory limiter with one rate limit that admits one check and
 * then rejects for hours. */
static struct casynq_limiter *limiter_with_rate(const char *name,
                                                enum casynq_limit_scope scope,
                                                const char *match)
{
    struct casynq_limiter *l = NULL;

    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL, &l), 0);
    assert_int_equal(casynq_limiter_add_rate(l, name, scope, match, 1e-4, 1),
                     0);
    return l;
}

/* Runs `times` checks and asserts that each returns rc. */
static void check_times(struct casynq_limiter *l, const char *key,
                        const char *type, size_t payload_len, int times, int rc)
{
    for (int i = 0; i < times; i++) {
        assert_int_equal(
                casynq_limiter_check(l, key, NULL, type, payload_len, NULL),
                rc);
    }
}

static int count_text(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(text, needle); p != NULL;
         p = strstr(p + 1, needle)) {
        n++;
    }
    return n;
}

static void test_rejections_render_by_limit_name(void **state)
{
    struct casynq__metrics storage;
    struct casynq__metrics *m = start(&storage);
    struct casynq_limiter *a =
            limiter_with_rate("shared", CASYNQ_LIMIT_PER_KEY, NULL);
    struct casynq_limiter *b =
            limiter_with_rate("shared", CASYNQ_LIMIT_TYPE, "email");
    const struct casynq_limiter *limiters[2] = {a, b};
    struct casynq__buf out;

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(a, "quote\"d\\", CASYNQ_LIMIT_TYPE,
                                             "report", 1e-4, 1),
                     0);
    assert_int_equal(casynq_limiter_set_max_payload(b, 4), 0);
    check_times(a, "tenant:acme", NULL, 0, 1, 0);
    check_times(a, "tenant:acme", NULL, 0, 2, CASYNQ_ERATELIMITED);
    check_times(a, NULL, "report", 0, 1, 0);
    check_times(a, NULL, "report", 0, 1, CASYNQ_ERATELIMITED);
    check_times(b, NULL, "email", 0, 1, 0);
    check_times(b, NULL, "email", 0, 3, CASYNQ_ERATELIMITED);
    check_times(b, NULL, NULL, 5, 1, CASYNQ_ETOOLARGE);

    /* Without attached limiters the family is left out. */
    out = render(m);
    assert_no_text(out.data, "casynq_enqueue_rejected_total");
    casynq__buf_free(&out);

    m->limiters = limiters;
    m->nlimiters = 2;
    out = render(m);
    assert_line(out.data, "# TYPE casynq_enqueue_rejected_total counter");
    /* "shared" of both limiters is one series with the sum. */
    assert_line(out.data, "casynq_enqueue_rejected_total{limit=\"shared\"} 5");
    assert_int_equal(count_text(out.data, "{limit=\"shared\"}"), 1);
    assert_line(out.data,
                "casynq_enqueue_rejected_total{limit=\"quote\\\"d\\\\\"} 1");
    assert_line(out.data,
                "casynq_enqueue_rejected_total{limit=\"max_payload\"} 1");
    assert_int_equal(count_text(out.data, "casynq_enqueue_rejected_total{"), 3);
    /* Caller keys never become labels. */
    assert_no_text(out.data, "tenant:acme");
    casynq__buf_free(&out);

    /* A scrape reads the counts as they are now. */
    check_times(b, NULL, "email", 0, 1, CASYNQ_ERATELIMITED);
    out = render(m);
    assert_line(out.data, "casynq_enqueue_rejected_total{limit=\"shared\"} 6");
    casynq__buf_free(&out);

    casynq__metrics_finish(m);
    casynq_limiter_destroy(a);
    casynq_limiter_destroy(b);
}

static void test_config_add_limiter_bounds(void **state)
{
    struct casynq_config *cfg = NULL;
    struct casynq_limiter *limiters[CASYNQ__CONFIG_MAX_LIMITERS + 1];

    (void)state;
    assert_int_equal(casynq_config_create(&cfg), 0);
    for (int i = 0; i <= CASYNQ__CONFIG_MAX_LIMITERS; i++) {
        assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL,
                                               &limiters[i]),
                         0);
    }
    assert_int_equal(casynq_config_add_limiter(NULL, limiters[0]),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_config_add_limiter(cfg, NULL), CASYNQ_EINVAL);
    assert_non_null(strstr(casynq_config_last_error(cfg), "limiter is NULL"));
    assert_int_equal(casynq_config_add_limiter(cfg, limiters[0]), 0);
    assert_int_equal(casynq_config_add_limiter(cfg, limiters[0]),
                     CASYNQ_EINVAL);
    assert_non_null(strstr(casynq_config_last_error(cfg), "already attached"));
    for (int i = 1; i < CASYNQ__CONFIG_MAX_LIMITERS; i++) {
        assert_int_equal(casynq_config_add_limiter(cfg, limiters[i]), 0);
    }
    assert_int_equal(casynq_config_add_limiter(
                             cfg, limiters[CASYNQ__CONFIG_MAX_LIMITERS]),
                     CASYNQ_EINVAL);
    assert_non_null(strstr(casynq_config_last_error(cfg), "8 limiters"));
    casynq_config_destroy(cfg);
    for (int i = 0; i <= CASYNQ__CONFIG_MAX_LIMITERS; i++) {
        casynq_limiter_destroy(limiters[i]);
    }
}

static void test_config_metrics_setters(void **state)
{
    struct casynq_config *cfg = NULL;

    (void)state;
    assert_int_equal(casynq_config_create(&cfg), 0);
    assert_int_equal(casynq_config_set_metrics_addr(cfg, "127.0.0.1:9464"), 0);
    assert_int_equal(casynq_config_set_metrics_addr(cfg, "localhost:9464"),
                     CASYNQ_EINVAL);
    assert_non_null(strstr(casynq_config_last_error(cfg), "localhost"));
    assert_int_equal(casynq_config_set_metrics_addr(cfg, NULL), 0);
    assert_int_equal(casynq_config_set_metrics_interval_ms(cfg, 99),
                     CASYNQ_EINVAL);
    assert_non_null(strstr(casynq_config_last_error(cfg), "metrics interval"));
    assert_int_equal(casynq_config_set_metrics_interval_ms(cfg, 100), 0);
    assert_int_equal(casynq_config_set_metrics_addr(NULL, "9464"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_config_set_metrics_addr(cfg, ":9464"), 0);
    casynq_config_destroy(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_type_slot_same_type_same_slot),
            cmocka_unit_test(test_type_slot_overflow_counts_as_other),
            cmocka_unit_test(test_type_invalid_utf8_is_replaced),
            cmocka_unit_test(test_escape_label_backslash_quote_newline),
            cmocka_unit_test(test_counters_render_per_queue_and_type),
            cmocka_unit_test(test_duration_histogram_buckets),
            cmocka_unit_test(test_wait_unknown_without_pending_since),
            cmocka_unit_test(test_queue_metrics_only_after_a_read),
            cmocka_unit_test(test_workers_and_utilization),
            cmocka_unit_test(test_health_needs_recent_heartbeat),
            cmocka_unit_test(test_process_metrics_rendered),
            cmocka_unit_test(test_parse_addr_forms),
            cmocka_unit_test(test_parse_addr_rejects_bad_input),
            cmocka_unit_test(test_config_metrics_setters),
            cmocka_unit_test(test_rejections_render_by_limit_name),
            cmocka_unit_test(test_config_add_limiter_bounds),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
