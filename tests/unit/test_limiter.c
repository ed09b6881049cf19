/* Unit tests of the limiter's memory backend and of the limit validation
 * that both backends share. They cover GCRA budgets against an injected
 * clock, the all-or-nothing check of several limits, eviction of idle
 * budgets, JSON loading, eight threads sharing one budget on the real
 * clock, and the rejection counts per limit, also under eight threads.
 *
 * No Redis server runs. A counting allocator makes every test fail on a
 * leak, and a failing-allocator mode walks the out-of-memory paths. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <casynq.h>

#include "limiter.h"

#define NS_PER_MS 1000000LL
#define NS_PER_S  1000000000LL

/* ------------------------------------------------------------------------
 * Allocator: the C library's, counting live blocks so that each test fails
 * on a leak, with a budget that makes allocations fail. cmocka's own
 * test_malloc keeps its block list per thread, so blocks that the thread
 * test allocates on one thread and frees on another would corrupt it.
 */

static atomic_long live_blocks;
/* Allocations left before they fail; -1 for no limit. */
static atomic_long alloc_budget = -1;

static bool alloc_should_fail(void)
{
    long budget = atomic_load(&alloc_budget);

    while (budget > 0 &&
           !atomic_compare_exchange_weak(&alloc_budget, &budget, budget - 1)) {
        continue;
    }
    return budget == 0;
}

static void *counting_malloc(size_t size)
{
    void *p = alloc_should_fail() ? NULL : malloc(size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_calloc(size_t count, size_t size)
{
    void *p = alloc_should_fail() ? NULL : calloc(count, size);

    if (p != NULL) {
        atomic_fetch_add(&live_blocks, 1);
    }
    return p;
}

static void *counting_realloc(void *ptr, size_t size)
{
    void *p = alloc_should_fail() ? NULL : realloc(ptr, size);

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

/* Records the live blocks before a test in *state. */
static int leak_setup(void **state)
{
    *state = (void *)(intptr_t)atomic_load(&live_blocks);
    return 0;
}

/* Fails the test when it left blocks allocated. */
static int leak_teardown(void **state)
{
    long leaked = atomic_load(&live_blocks) - (long)(intptr_t)*state;

    if (leaked != 0) {
        fail_msg("the library leaked %ld block(s) during this test", leaked);
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Helpers
 */

/* A clock that moves only when a test moves it. */
struct fake_clock {
    int64_t now_ns;
};

static int64_t fake_now(void *ud)
{
    return ((struct fake_clock *)ud)->now_ns;
}

static struct casynq_limiter *memory_limiter(void)
{
    struct casynq_limiter *l = NULL;

    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL, &l), 0);
    assert_non_null(l);
    return l;
}

/* A memory limiter on a fake clock that starts at 1000 s. */
static struct casynq_limiter *clocked_limiter(struct fake_clock *clock)
{
    struct casynq_limiter *l = memory_limiter();

    clock->now_ns = 1000 * NS_PER_S;
    casynq__limiter_set_clock(l, fake_now, clock);
    return l;
}

static void assert_message_has(const char *message, const char *part)
{
    if (strstr(message, part) == NULL) {
        fail_msg("message \"%s\" does not contain \"%s\"", message, part);
    }
}

/* Asserts that rc is CASYNQ_EINVAL and the limiter's message names
 * field. */
static void assert_rejected(struct casynq_limiter *l, int rc, const char *field)
{
    assert_int_equal(rc, CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), field);
}

/* Checks key on queue "default" with no type and no payload. */
static int check_key(struct casynq_limiter *l, const char *key,
                     int64_t *retry_after_ms)
{
    return casynq_limiter_check(l, key, NULL, NULL, 0, retry_after_ms);
}

/* Returns how many of `attempts` checks of key pass, with no time
 * passing on a fake clock. */
static int count_passes(struct casynq_limiter *l, const char *key,
                        const char *queue, int attempts)
{
    int passed = 0;

    for (int i = 0; i < attempts; i++) {
        int rc = casynq_limiter_check(l, key, queue, NULL, 0, NULL);

        if (rc == 0) {
            passed++;
        } else if (rc != CASYNQ_ERATELIMITED) {
            fail_msg("check of key %s returned %s: %s",
                     key != NULL ? key : "(none)", casynq_err_name(rc),
                     casynq_limiter_last_error(l));
        }
    }
    return passed;
}

static int64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * SipHash
 */

/* The test vector of the SipHash paper (Aumasson and Bernstein, 2012,
 * appendix A): key 00..0f, message 00..0e. */
static void test_siphash24_paper_vector(void **state)
{
    uint8_t key[16];
    uint8_t msg[15];

    (void)state;
    for (int i = 0; i < 16; i++) {
        key[i] = (uint8_t)i;
    }
    for (int i = 0; i < 15; i++) {
        msg[i] = (uint8_t)i;
    }
    assert_true(casynq__siphash24(key, msg, sizeof(msg)) ==
                UINT64_C(0xa129ca6149be45e5));
}

static void test_siphash24_depends_on_key(void **state)
{
    uint8_t key_a[16] = {0};
    uint8_t key_b[16] = {1};

    (void)state;
    assert_true(casynq__siphash24(key_a, "tenant", 6) !=
                casynq__siphash24(key_b, "tenant", 6));
    assert_true(casynq__siphash24(key_a, "", 0) !=
                casynq__siphash24(key_a, "a", 1));
}

/* ------------------------------------------------------------------------
 * Validation
 */

static void test_limiter_create_rejects_bad_arguments(void **state)
{
    struct casynq_limiter *l = (struct casynq_limiter *)&l;

    (void)state;
    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_REDIS, NULL, &l),
                     CASYNQ_EINVAL);
    assert_null(l);
    assert_int_equal(
            casynq_limiter_create((enum casynq_limiter_backend)7, NULL, &l),
            CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL, NULL),
                     CASYNQ_EINVAL);
    casynq_limiter_destroy(NULL);
    assert_string_equal(casynq_limiter_last_error(NULL), "");
}

static void test_limiter_rate_must_be_positive_and_finite(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    const enum casynq_limit_scope key = CASYNQ_LIMIT_PER_KEY;

    (void)state;
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 0, 10),
                    "rate_per_s");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, -5, 10),
                    "rate_per_s");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, NAN, 10),
                    "rate_per_s");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, INFINITY, 10),
                    "rate_per_s");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 2e6, 10),
                    "rate_per_s");
    assert_int_equal(casynq_limiter_add_rate(l, "a", key, NULL, 1e6, 10), 0);
    assert_string_equal(casynq_limiter_last_error(l), "");
    casynq_limiter_destroy(l);
}

static void test_limiter_burst_must_be_at_least_one(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    const enum casynq_limit_scope key = CASYNQ_LIMIT_PER_KEY;

    (void)state;
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 10, 0.5),
                    "burst");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 10, 0),
                    "burst");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 10, NAN),
                    "burst");
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 10, INFINITY),
                    "burst");
    /* An empty budget would take two years to refill. */
    assert_rejected(l, casynq_limiter_add_rate(l, "a", key, NULL, 1e-6, 63.1),
                    "burst / rate_per_s");
    assert_int_equal(casynq_limiter_add_rate(l, "a", key, NULL, 10, 1), 0);
    casynq_limiter_destroy(l);
}

static void test_limiter_name_rules(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    const enum casynq_limit_scope key = CASYNQ_LIMIT_PER_KEY;
    char long_name[CASYNQ__LIMIT_NAME_MAX_LEN + 2];

    (void)state;
    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_rejected(l, casynq_limiter_add_rate(l, NULL, key, NULL, 1, 1),
                    "name");
    assert_rejected(l, casynq_limiter_add_rate(l, "", key, NULL, 1, 1), "name");
    assert_rejected(l, casynq_limiter_add_rate(l, " \t", key, NULL, 1, 1),
                    "name");
    assert_rejected(l, casynq_limiter_add_rate(l, "a{b}", key, NULL, 1, 1),
                    "name \"a{b}\"");
    assert_rejected(l, casynq_limiter_add_rate(l, long_name, key, NULL, 1, 1),
                    "name is 129 bytes");
    assert_rejected(l, casynq_limiter_add_rate(l, "bad\xff", key, NULL, 1, 1),
                    "UTF-8");
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant", key, NULL, 1, 1),
                     0);
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "per-tenant", CASYNQ_LIMIT_QUEUE,
                                            "low", 1, 1),
                    "name \"per-tenant\" is already used");
    /* The admission limits' names are taken in the rejection counts. */
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "max_backlog", key, NULL, 1, 1),
                    "name \"max_backlog\" is reserved");
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "max_payload", key, NULL, 1, 1),
                    "name \"max_payload\" is reserved");
    assert_int_equal(casynq_limiter_limit_count(l), 1);
    casynq_limiter_destroy(l);
}

static void test_limiter_match_rules(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    char long_queue[300];

    (void)state;
    memset(long_queue, 'q', sizeof(long_queue) - 1);
    long_queue[sizeof(long_queue) - 1] = '\0';
    assert_rejected(
            l, casynq_limiter_add_rate(l, "q", CASYNQ_LIMIT_QUEUE, NULL, 1, 1),
            "match is missing");
    assert_rejected(
            l, casynq_limiter_add_rate(l, "q", CASYNQ_LIMIT_QUEUE, "  ", 1, 1),
            "match is empty");
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "q", CASYNQ_LIMIT_QUEUE,
                                            long_queue, 1, 1),
                    "match is 299 bytes");
    assert_rejected(
            l, casynq_limiter_add_rate(l, "t", CASYNQ_LIMIT_TYPE, NULL, 1, 1),
            "match");
    assert_rejected(
            l, casynq_limiter_add_rate(l, "k", CASYNQ_LIMIT_PER_KEY, "", 1, 1),
            "match is empty");
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "s", (enum casynq_limit_scope)9,
                                            "x", 1, 1),
                    "scope is 9");
    casynq_limiter_destroy(l);
}

static void test_limiter_at_most_64_rates(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    char name[16];

    (void)state;
    for (int i = 0; i < CASYNQ__LIMITER_MAX_RATES; i++) {
        snprintf(name, sizeof(name), "limit-%d", i);
        assert_int_equal(casynq_limiter_add_rate(l, name, CASYNQ_LIMIT_PER_KEY,
                                                 NULL, 10, 10),
                         0);
    }
    assert_rejected(l,
                    casynq_limiter_add_rate(l, "one-more", CASYNQ_LIMIT_PER_KEY,
                                            NULL, 10, 10),
                    "64 rate limits");
    casynq_limiter_destroy(l);
}

static void test_limiter_backlog_and_payload_rules(void **state)
{
    struct casynq_limiter *l = memory_limiter();

    (void)state;
    assert_rejected(l, casynq_limiter_set_max_backlog(l, "low", 0),
                    "max_tasks");
    assert_rejected(l, casynq_limiter_set_max_backlog(l, "low", -1),
                    "max_tasks");
    assert_rejected(l, casynq_limiter_set_max_backlog(l, "", 10), "queue");
    assert_rejected(l, casynq_limiter_set_max_backlog(l, NULL, 10), "queue");
    assert_rejected(l, casynq_limiter_set_max_payload(l, 0), "max_bytes");
    assert_int_equal(casynq_limiter_set_max_backlog(l, "low", 10), 0);
    assert_int_equal(casynq_limiter_set_max_payload(l, 1), 0);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * JSON
 */

static int load(struct casynq_limiter *l, const char *json)
{
    return casynq_limiter_load_json(l, json, strlen(json));
}

static void test_limiter_json_applies_every_key(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    static const char json[] =
            "{\"rate_limits\": ["
            "  {\"name\": \"per-tenant\", \"scope\": \"key\","
            "   \"match\": \"tenant:\", \"rate_per_s\": 1, \"burst\": 3},"
            "  {\"name\": \"mail\", \"scope\": \"type\","
            "   \"match\": \"email:send\", \"rate_per_s\": 1, \"burst\": 2},"
            "  {\"name\": \"bulk\", \"scope\": \"queue\", \"match\": \"bulk\","
            "   \"rate_per_s\": 0.5, \"burst\": 1}],"
            " \"max_backlog\": {\"low\": 100000},"
            " \"max_payload_bytes\": 16}";

    (void)state;
    assert_int_equal(load(l, json), 0);
    assert_int_equal(count_passes(l, "tenant:acme", NULL, 10), 3);
    assert_int_equal(count_passes(l, "user:bob", NULL, 10), 10);
    assert_int_equal(count_passes(l, NULL, "bulk", 10), 1);
    assert_int_equal(casynq_limiter_check(l, NULL, NULL, "email:send", 0, NULL),
                     0);
    assert_int_equal(casynq_limiter_check(l, NULL, NULL, "email:send", 0, NULL),
                     0);
    assert_int_equal(casynq_limiter_check(l, NULL, NULL, "email:send", 0, NULL),
                     CASYNQ_ERATELIMITED);
    assert_int_equal(casynq_limiter_check(l, NULL, NULL, NULL, 17, NULL),
                     CASYNQ_ETOOLARGE);
    /* A memory limiter cannot count the backlog of "low" on its own. */
    assert_int_equal(casynq_limiter_check(l, NULL, "low", NULL, 0, NULL),
                     CASYNQ_ESTATE);
    assert_message_has(casynq_limiter_last_error(l), "\"low\"");
    casynq_limiter_destroy(l);
}

static void test_limiter_json_rejects_with_key_named(void **state)
{
    static const struct {
        const char *json;
        const char *named;
    } cases[] = {
            {"{\"rate_limit\": []}", "unknown key \"rate_limit\""},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"tenant\", "
             "\"rate_per_s\": 1, \"burst\": 1}]}",
             "rate_limits[0].scope is \"tenant\""},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": 1, \"burst\": 1, \"bursts\": 2}]}",
             "unknown key \"bursts\" in rate_limits[0]"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": 0, \"burst\": 1}]}",
             "rate_limits[0].rate_per_s is 0"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": -3, \"burst\": 1}]}",
             "rate_limits[0].rate_per_s is -3"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": 1, \"burst\": 0.5}]}",
             "rate_limits[0].burst is 0.5"},
            {"{\"rate_limits\": [{\"name\": \" \", \"scope\": \"key\", "
             "\"rate_per_s\": 1, \"burst\": 1}]}",
             "rate_limits[0].name is empty"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": \"50\", \"burst\": 1}]}",
             "rate_limits[0].rate_per_s must be a number"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"burst\": 1}]}",
             "rate_limits[0] needs the keys"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"queue\", "
             "\"rate_per_s\": 1, \"burst\": 1}]}",
             "rate_limits[0].match is missing"},
            {"{\"rate_limits\": [{\"name\": \"a\", \"scope\": \"key\", "
             "\"rate_per_s\": 1, \"burst\": 1}, {\"name\": \"a\", "
             "\"scope\": \"key\", \"rate_per_s\": 1, \"burst\": 1}]}",
             "rate_limits[1].name \"a\" is already used"},
            {"{\"rate_limits\": [{\"name\": \"max_payload\", \"scope\": "
             "\"key\", \"rate_per_s\": 1, \"burst\": 1}]}",
             "rate_limits[0].name \"max_payload\" is reserved"},
            {"{\"rate_limits\": {}}", "rate_limits must be an array"},
            {"{\"rate_limits\": [7]}", "rate_limits[0] must be an object"},
            {"{\"max_backlog\": {\"low\": 0}}", "max_backlog.low is 0"},
            {"{\"max_backlog\": {\"low\": 2.5}}", "max_backlog.low is 2.5"},
            {"{\"max_backlog\": {\"low\": \"9\"}}",
             "max_backlog.low must be a number"},
            {"{\"max_backlog\": [1]}", "max_backlog must be an object"},
            {"{\"max_payload_bytes\": 0}", "max_payload_bytes is 0"},
            {"{\"max_payload_bytes\": 1, \"max_payload_bytes\": 2}",
             "key \"max_payload_bytes\" appears twice"},
            {"[]", "must be a JSON object"},
            {"{\"max_payload_bytes\": 1,\n  oops}", "line 2, column"},
    };
    struct casynq_limiter *l = memory_limiter();

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = load(l, cases[i].json);

        if (rc != CASYNQ_EINVAL) {
            fail_msg("case %zu returned %s, expected CASYNQ_EINVAL", i,
                     casynq_err_name(rc));
        }
        assert_message_has(casynq_limiter_last_error(l), cases[i].named);
    }
    casynq_limiter_destroy(l);
}

/* A document with an error changes nothing, even the parts before the
 * error. */
static void test_limiter_json_all_or_nothing(void **state)
{
    struct casynq_limiter *l = memory_limiter();

    (void)state;
    assert_int_equal(load(l, "{\"max_payload_bytes\": 4, \"rate_limits\": "
                             "[{\"name\": \"first\", \"scope\": \"key\", "
                             "\"rate_per_s\": 1, \"burst\": 1}, "
                             "{\"name\": \"second\"}]}"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_add_rate(l, "first", CASYNQ_LIMIT_PER_KEY,
                                             NULL, 1, 1),
                     0);
    assert_int_equal(casynq_limiter_check(l, NULL, NULL, NULL, 100, NULL), 0);
    assert_int_equal(casynq_limiter_load_json(l, NULL, 0), CASYNQ_EINVAL);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * GCRA on a fake clock
 */

static void test_gcra_burst_then_one_per_interval(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    int64_t retry = -1;

    (void)state;
    /* 10 per second: one every 100 ms, up to 5 at once. */
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 10, 5),
                     0);
    assert_int_equal(count_passes(l, "acme", NULL, 5), 5);
    assert_int_equal(check_key(l, "acme", &retry), CASYNQ_ERATELIMITED);
    assert_int_equal(retry, 100);
    assert_string_equal(casynq_limiter_last_error(l),
                        "rate limit \"per-tenant\" exceeded for key "
                        "\"acme\": retry after 100 ms");

    clock.now_ns += 40 * NS_PER_MS;
    assert_int_equal(check_key(l, "acme", &retry), CASYNQ_ERATELIMITED);
    assert_int_equal(retry, 60);

    /* Retrying after the reported wait passes, and only once. */
    clock.now_ns += retry * NS_PER_MS;
    assert_int_equal(check_key(l, "acme", &retry), 0);
    assert_int_equal(retry, 0);
    assert_int_equal(check_key(l, "acme", &retry), CASYNQ_ERATELIMITED);

    /* After a full refill time the whole burst is back. */
    clock.now_ns += 500 * NS_PER_MS;
    assert_int_equal(count_passes(l, "acme", NULL, 10), 5);
    casynq_limiter_destroy(l);
}

static void test_gcra_keys_have_separate_budgets(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 1, 3),
                     0);
    assert_int_equal(count_passes(l, "flood", NULL, 1000), 3);
    assert_int_equal(count_passes(l, "quiet", NULL, 10), 3);
    casynq_limiter_destroy(l);
}

static void test_gcra_no_key_passes_key_limits(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 1, 1),
                     0);
    assert_int_equal(count_passes(l, NULL, NULL, 100), 100);
    casynq_limiter_destroy(l);
}

static void test_gcra_prefix_match_selects_keys(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "anonymous",
                                             CASYNQ_LIMIT_PER_KEY, "ip:", 1, 2),
                     0);
    assert_int_equal(count_passes(l, "ip:10.0.0.1", NULL, 10), 2);
    assert_int_equal(count_passes(l, "ip:10.0.0.2", NULL, 10), 2);
    assert_int_equal(count_passes(l, "user:42", NULL, 10), 10);
    assert_int_equal(count_passes(l, "ip", NULL, 10), 10);
    casynq_limiter_destroy(l);
}

/* A limit that rejects must not consume the budgets of the limits that
 * passed. */
static void test_gcra_rejection_consumes_nothing(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 1, 5),
                     0);
    assert_int_equal(casynq_limiter_add_rate(l, "low-queue", CASYNQ_LIMIT_QUEUE,
                                             "low", 1, 2),
                     0);
    assert_int_equal(count_passes(l, "acme", "low", 2), 2);
    /* "low-queue" is empty now: these fail, and must leave "per-tenant"
     * with 3 units. */
    assert_int_equal(count_passes(l, "acme", "low", 50), 0);
    assert_message_has(casynq_limiter_last_error(l),
                       "rate limit \"low-queue\" exceeded for queue \"low\"");
    assert_int_equal(count_passes(l, "acme", "default", 50), 3);
    casynq_limiter_destroy(l);
}

/* When two limits reject, the retry time is the longer wait, and the
 * message names the limit with that wait. */
static void test_gcra_retry_after_is_longest_wait(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    int64_t retry = 0;

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "fast", CASYNQ_LIMIT_PER_KEY,
                                             NULL, 100, 1),
                     0);
    assert_int_equal(casynq_limiter_add_rate(l, "mail", CASYNQ_LIMIT_TYPE,
                                             "email:send", 2, 1),
                     0);
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 0, &retry), 0);
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 0, &retry),
            CASYNQ_ERATELIMITED);
    assert_int_equal(retry, 500);
    assert_string_equal(casynq_limiter_last_error(l),
                        "rate limit \"mail\" exceeded for task type "
                        "\"email:send\": retry after 500 ms");
    casynq_limiter_destroy(l);
}

static void test_gcra_fractional_burst(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    int64_t retry = 0;

    (void)state;
    /* Burst 1.5: one at once, the next half an interval later. */
    assert_int_equal(casynq_limiter_add_rate(l, "half", CASYNQ_LIMIT_PER_KEY,
                                             NULL, 1, 1.5),
                     0);
    assert_int_equal(check_key(l, "k", &retry), 0);
    assert_int_equal(check_key(l, "k", &retry), CASYNQ_ERATELIMITED);
    assert_int_equal(retry, 500);
    clock.now_ns += 500 * NS_PER_MS;
    assert_int_equal(check_key(l, "k", &retry), 0);
    casynq_limiter_destroy(l);
}

/* The payload comes first and a rejected payload uses up no budget. */
static void test_limiter_payload_checked_first(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(
            casynq_limiter_add_rate(l, "one", CASYNQ_LIMIT_PER_KEY, NULL, 1, 1),
            0);
    assert_int_equal(casynq_limiter_set_max_payload(l, 1024), 0);
    assert_int_equal(casynq_limiter_check(l, "k", NULL, NULL, 1025, NULL),
                     CASYNQ_ETOOLARGE);
    assert_string_equal(casynq_limiter_last_error(l),
                        "payload is 1025 bytes, above the maximum of 1024 "
                        "bytes: send less, or store the data elsewhere and "
                        "pass a reference");
    assert_int_equal(casynq_limiter_check(l, "k", NULL, NULL, 1024, NULL), 0);
    casynq_limiter_destroy(l);
}

static void test_limiter_check_rejects_bad_key_and_queue(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    char long_key[CASYNQ__RATE_KEY_MAX_LEN + 2];

    (void)state;
    memset(long_key, 'k', sizeof(long_key) - 1);
    long_key[sizeof(long_key) - 1] = '\0';
    assert_int_equal(check_key(l, " ", NULL), CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), "rate key is empty");
    assert_int_equal(check_key(l, long_key, NULL), CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), "rate key is 513 bytes");
    assert_int_equal(casynq_limiter_check(l, NULL, "", NULL, 0, NULL),
                     CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), "queue name");
    assert_int_equal(casynq_limiter_check(NULL, NULL, NULL, NULL, 0, NULL),
                     CASYNQ_EINVAL);
    casynq_limiter_destroy(l);
}

/* A setter failure after a failed check is what last_error returns. */
static void test_limiter_last_error_tracks_latest_call(void **state)
{
    struct casynq_limiter *l = memory_limiter();

    (void)state;
    assert_int_equal(check_key(l, " ", NULL), CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), "rate key");
    assert_int_equal(casynq_limiter_set_max_payload(l, 0), CASYNQ_EINVAL);
    assert_message_has(casynq_limiter_last_error(l), "max_bytes");
    assert_int_equal(check_key(l, "fine", NULL), 0);
    assert_string_equal(casynq_limiter_last_error(l), "");
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * Rejection counts
 */

/* Returns the rejection count of the limit named name, failing the test
 * when l has no such limit. */
static uint64_t rejections_of(const struct casynq_limiter *l, const char *name)
{
    size_t n = casynq_limiter_limit_count(l);

    for (size_t i = 0; i < n; i++) {
        const char *limit = NULL;
        uint64_t rejected = 0;

        assert_int_equal(casynq_limiter_rejections_at(l, i, &limit, &rejected),
                         0);
        if (strcmp(limit, name) == 0) {
            return rejected;
        }
    }
    fail_msg("the limiter has no limit named \"%s\"", name);
    return 0;
}

/* Asserts that limit `index` of l is named `name`. */
static void assert_limit_name(const struct casynq_limiter *l, size_t index,
                              const char *name)
{
    const char *limit = NULL;

    assert_int_equal(casynq_limiter_rejections_at(l, index, &limit, NULL), 0);
    assert_string_equal(limit, name);
}

static void test_rejections_listed_in_order(void **state)
{
    struct casynq_limiter *l = memory_limiter();
    uint64_t rejected = 99;

    (void)state;
    assert_int_equal(casynq_limiter_limit_count(l), 0);
    assert_int_equal(casynq_limiter_rejections_at(l, 0, NULL, NULL),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_set_max_payload(l, 16), 0);
    assert_int_equal(casynq_limiter_limit_count(l), 1);
    assert_limit_name(l, 0, "max_payload");
    assert_int_equal(
            load(l, "{\"rate_limits\": [{\"name\": \"per-tenant\", \"scope\": "
                    "\"key\", \"rate_per_s\": 1, \"burst\": 1}, {\"name\": "
                    "\"mail\", \"scope\": \"type\", \"match\": \"email\", "
                    "\"rate_per_s\": 1, \"burst\": 1}], \"max_backlog\": "
                    "{\"low\": 10, \"bulk\": 20}}"),
            0);

    /* Rate limits in the order added, then one entry for every backlog
     * cap together, then the payload. */
    assert_int_equal(casynq_limiter_limit_count(l), 4);
    assert_limit_name(l, 0, "per-tenant");
    assert_limit_name(l, 1, "mail");
    assert_limit_name(l, 2, "max_backlog");
    assert_limit_name(l, 3, "max_payload");
    assert_int_equal(casynq_limiter_rejections_at(l, 3, NULL, &rejected), 0);
    assert_int_equal(rejected, 0);
    assert_int_equal(casynq_limiter_rejections_at(l, 4, NULL, &rejected),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_rejections_at(NULL, 0, NULL, &rejected),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_limit_count(NULL), 0);
    casynq_limiter_destroy(l);
}

/* Each rejected check counts once, under the limit it was rejected by;
 * admitted checks and checks that fail for another reason count nowhere. */
static void test_rejections_counted_per_limit(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 1, 2),
                     0);
    assert_int_equal(casynq_limiter_add_rate(l, "low-queue", CASYNQ_LIMIT_QUEUE,
                                             "low", 1, 1),
                     0);
    assert_int_equal(casynq_limiter_set_max_payload(l, 16), 0);
    assert_int_equal(casynq_limiter_set_max_backlog(l, "capped", 5), 0);

    assert_int_equal(count_passes(l, "acme", NULL, 5), 2);
    assert_int_equal(count_passes(l, NULL, "low", 4), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(casynq_limiter_check(l, NULL, NULL, NULL, 17, NULL),
                         CASYNQ_ETOOLARGE);
    }
    /* A blank key, a bad queue name and a memory limiter asked for a
     * backlog it cannot count are errors, not rejections. */
    assert_int_equal(check_key(l, " ", NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_check(l, NULL, "", NULL, 0, NULL),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_limiter_check(l, NULL, "capped", NULL, 0, NULL),
                     CASYNQ_ESTATE);

    assert_int_equal(rejections_of(l, "per-tenant"), 3);
    assert_int_equal(rejections_of(l, "low-queue"), 3);
    assert_int_equal(rejections_of(l, "max_payload"), 3);
    assert_int_equal(rejections_of(l, "max_backlog"), 0);
    casynq_limiter_destroy(l);
}

/* A check that several limits would reject counts once: under the payload
 * maximum, which is checked first, else under the rate limit that the
 * message names, the one with the longest wait. */
static void test_rejection_counted_once_under_reported_limit(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(l, "fast", CASYNQ_LIMIT_PER_KEY,
                                             NULL, 100, 1),
                     0);
    assert_int_equal(casynq_limiter_add_rate(l, "mail", CASYNQ_LIMIT_TYPE,
                                             "email:send", 2, 1),
                     0);
    assert_int_equal(casynq_limiter_set_max_payload(l, 8), 0);
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 0, NULL), 0);

    /* Both budgets are empty: "mail" refills in 500 ms, "fast" in 10 ms. */
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 0, NULL),
            CASYNQ_ERATELIMITED);
    assert_message_has(casynq_limiter_last_error(l), "\"mail\"");
    assert_int_equal(rejections_of(l, "mail"), 1);
    assert_int_equal(rejections_of(l, "fast"), 0);

    /* Too large and rate limited: only the payload counts. */
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 9, NULL),
            CASYNQ_ETOOLARGE);
    assert_int_equal(rejections_of(l, "max_payload"), 1);
    assert_int_equal(rejections_of(l, "mail"), 1);
    assert_int_equal(rejections_of(l, "fast"), 0);

    /* Once "mail" has refilled, "fast" alone rejects. */
    clock.now_ns += 500 * NS_PER_MS;
    assert_int_equal(
            casynq_limiter_check(l, "acme", NULL, "email:send", 0, NULL), 0);
    assert_int_equal(check_key(l, "acme", NULL), CASYNQ_ERATELIMITED);
    assert_message_has(casynq_limiter_last_error(l), "\"fast\"");
    assert_int_equal(rejections_of(l, "fast"), 1);
    assert_int_equal(rejections_of(l, "mail"), 1);
    casynq_limiter_destroy(l);
}

/* Counts survive a JSON document that adds limits after the first
 * checks: a rate limit keeps its index. */
static void test_rejections_kept_when_limits_added(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);

    (void)state;
    assert_int_equal(
            casynq_limiter_add_rate(l, "one", CASYNQ_LIMIT_PER_KEY, NULL, 1, 1),
            0);
    assert_int_equal(count_passes(l, "k", NULL, 3), 1);
    assert_int_equal(load(l, "{\"rate_limits\": [{\"name\": \"two\", "
                             "\"scope\": \"queue\", \"match\": \"q\", "
                             "\"rate_per_s\": 1, \"burst\": 1}]}"),
                     0);
    assert_limit_name(l, 0, "one");
    assert_int_equal(rejections_of(l, "one"), 2);
    assert_int_equal(rejections_of(l, "two"), 0);
    casynq_limiter_destroy(l);
}

#define COUNT_THREADS  8
#define COUNT_ATTEMPTS 5000
#define COUNT_BURST_A  3
#define COUNT_BURST_B  2

struct rejection_run {
    struct casynq_limiter *l;
    atomic_long rejected_a; /* rejections seen by the threads, per limit */
    atomic_long rejected_b;
    atomic_long failed;
};

/* Alternates between a check that only limit "a" applies to and one that
 * only limit "b" applies to. */
static void *rejection_main(void *arg)
{
    struct rejection_run *run = arg;

    for (int i = 0; i < COUNT_ATTEMPTS; i++) {
        bool on_a = i % 2 == 0;
        int rc = on_a ? casynq_limiter_check(run->l, "hot", NULL, NULL, 0, NULL)
                      : casynq_limiter_check(run->l, NULL, NULL, "email", 0,
                                             NULL);

        if (rc == CASYNQ_ERATELIMITED) {
            atomic_fetch_add(on_a ? &run->rejected_a : &run->rejected_b, 1);
        } else if (rc != 0) {
            atomic_fetch_add(&run->failed, 1);
        }
    }
    return NULL;
}

/* Eight threads check two limits whose budgets run out at once. The clock
 * does not move, so exactly the bursts pass, and each count must equal the
 * rejections the threads saw: no increment may be lost. */
static void test_rejections_from_threads_sum_exactly(void **state)
{
    struct fake_clock clock;
    struct rejection_run run = {.l = clocked_limiter(&clock)};
    pthread_t threads[COUNT_THREADS];
    long per_limit = (long)COUNT_THREADS * COUNT_ATTEMPTS / 2;

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(run.l, "a", CASYNQ_LIMIT_PER_KEY,
                                             NULL, 1, COUNT_BURST_A),
                     0);
    assert_int_equal(casynq_limiter_add_rate(run.l, "b", CASYNQ_LIMIT_TYPE,
                                             "email", 1, COUNT_BURST_B),
                     0);
    for (int i = 0; i < COUNT_THREADS; i++) {
        assert_int_equal(
                pthread_create(&threads[i], NULL, rejection_main, &run), 0);
    }
    for (int i = 0; i < COUNT_THREADS; i++) {
        pthread_join(threads[i], NULL);
    }

    assert_int_equal(atomic_load(&run.failed), 0);
    assert_int_equal(atomic_load(&run.rejected_a), per_limit - COUNT_BURST_A);
    assert_int_equal(atomic_load(&run.rejected_b), per_limit - COUNT_BURST_B);
    assert_int_equal(rejections_of(run.l, "a"), per_limit - COUNT_BURST_A);
    assert_int_equal(rejections_of(run.l, "b"), per_limit - COUNT_BURST_B);
    casynq_limiter_destroy(run.l);
}

/* ------------------------------------------------------------------------
 * Eviction
 */

static void test_memory_idle_budgets_are_evicted(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    size_t budgets = 0;
    size_t buckets = 0;
    char key[32];

    (void)state;
    /* Each budget refills 1 ms after its only enqueue. */
    assert_int_equal(casynq_limiter_add_rate(l, "per-client",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 1000,
                                             1),
                     0);
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "client-%d", i);
        assert_int_equal(check_key(l, key, NULL), 0);
    }
    casynq__limiter_memory_stats(l, &budgets, &buckets);
    assert_int_equal(budgets, 100000);
    assert_true(buckets >= 100000);

    /* Once every budget is full again, the sweep that each check does
     * empties the table and then shrinks it. */
    clock.now_ns += NS_PER_S;
    for (size_t i = 0; i < buckets / 2; i++) {
        assert_int_equal(check_key(l, "client-0", NULL), 0);
        clock.now_ns += 2 * NS_PER_MS;
    }
    casynq__limiter_memory_stats(l, &budgets, &buckets);
    assert_true(budgets <= 1);
    assert_int_equal(buckets, 64);
    casynq_limiter_destroy(l);
}

/* A stream of new keys, each idle soon after, keeps the table small. */
static void test_memory_key_churn_stays_bounded(void **state)
{
    struct fake_clock clock;
    struct casynq_limiter *l = clocked_limiter(&clock);
    size_t budgets = 0;
    size_t buckets = 0;
    size_t max_buckets = 0;
    char key[32];

    (void)state;
    /* A budget refills 10 ms after its enqueue; one key arrives per ms. */
    assert_int_equal(casynq_limiter_add_rate(l, "per-client",
                                             CASYNQ_LIMIT_PER_KEY, NULL, 100,
                                             1),
                     0);
    for (int i = 0; i < 200000; i++) {
        snprintf(key, sizeof(key), "10.%d.%d.%d", i >> 16, (i >> 8) & 255,
                 i & 255);
        assert_int_equal(check_key(l, key, NULL), 0);
        clock.now_ns += NS_PER_MS;
        casynq__limiter_memory_stats(l, &budgets, &buckets);
        if (buckets > max_buckets) {
            max_buckets = buckets;
        }
    }
    assert_true(budgets <= 48);
    assert_int_equal(max_buckets, 64);
    casynq_limiter_destroy(l);
}

/* ------------------------------------------------------------------------
 * Threads on the real clock
 */

#define HAMMER_THREADS  8
#define HAMMER_ATTEMPTS 20000
#define HAMMER_RATE     200.0
#define HAMMER_BURST    50.0

struct hammer {
    struct casynq_limiter *l;
    atomic_long accepted;
    atomic_long rejected;
    atomic_long failed;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;

    for (int i = 0; i < HAMMER_ATTEMPTS; i++) {
        int rc = casynq_limiter_check(h->l, "hot", "default", "job", 10, NULL);

        if (rc == 0) {
            atomic_fetch_add(&h->accepted, 1);
        } else if (rc == CASYNQ_ERATELIMITED) {
            atomic_fetch_add(&h->rejected, 1);
        } else {
            atomic_fetch_add(&h->failed, 1);
        }
    }
    return NULL;
}

/* Eight threads share one key's budget. Whatever the interleaving, no
 * more than rate * elapsed + burst checks pass. */
static void test_memory_threads_share_one_budget(void **state)
{
    struct hammer h = {.l = memory_limiter()};
    pthread_t threads[HAMMER_THREADS];
    int64_t start;
    double elapsed_s;
    long accepted;

    (void)state;
    assert_int_equal(casynq_limiter_add_rate(h.l, "per-tenant",
                                             CASYNQ_LIMIT_PER_KEY, NULL,
                                             HAMMER_RATE, HAMMER_BURST),
                     0);
    start = monotonic_ns();
    for (int i = 0; i < HAMMER_THREADS; i++) {
        assert_int_equal(pthread_create(&threads[i], NULL, hammer_main, &h), 0);
    }
    for (int i = 0; i < HAMMER_THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    elapsed_s = (double)(monotonic_ns() - start) / NS_PER_S;

    accepted = atomic_load(&h.accepted);
    assert_int_equal(atomic_load(&h.failed), 0);
    assert_int_equal(accepted + atomic_load(&h.rejected),
                     HAMMER_THREADS * HAMMER_ATTEMPTS);
    if ((double)accepted > HAMMER_RATE * elapsed_s + HAMMER_BURST) {
        fail_msg("%ld checks passed in %.3f s, above the bound of %.1f",
                 accepted, elapsed_s, HAMMER_RATE * elapsed_s + HAMMER_BURST);
    }
    assert_true(accepted >= (long)HAMMER_BURST);

    /* Another key still has its whole burst. */
    for (int i = 0; i < (int)HAMMER_BURST; i++) {
        assert_int_equal(
                casynq_limiter_check(h.l, "cold", "default", "job", 10, NULL),
                0);
    }
    casynq_limiter_destroy(h.l);
}

/* ------------------------------------------------------------------------
 * Out of memory
 */

/* Runs a full set-up and a few checks; returns the first failure. */
static int limiter_scenario(void)
{
    struct casynq_limiter *l = NULL;
    int rc;

    rc = casynq_limiter_create(CASYNQ_LIMITER_MEMORY, NULL, &l);
    if (rc == 0) {
        rc = casynq_limiter_add_rate(l, "a", CASYNQ_LIMIT_PER_KEY, NULL, 10,
                                     10);
    }
    if (rc == 0) {
        rc = load(l, "{\"rate_limits\": [{\"name\": \"b\", \"scope\": "
                     "\"queue\", \"match\": \"q\", \"rate_per_s\": 1, "
                     "\"burst\": 9}], \"max_backlog\": {\"x\": 5}}");
    }
    for (int i = 0; rc == 0 && i < 100; i++) {
        char key[16];

        snprintf(key, sizeof(key), "key-%d", i);
        rc = casynq_limiter_check(l, key, "q", NULL, 0, NULL);
        if (rc == CASYNQ_ERATELIMITED) {
            rc = 0;
        }
    }
    casynq_limiter_destroy(l);
    return rc;
}

static void test_limiter_out_of_memory_fails_cleanly(void **state)
{
    bool finished = false;

    (void)state;
    for (long budget = 0; budget < 1000 && !finished; budget++) {
        int rc;

        atomic_store(&alloc_budget, budget);
        rc = limiter_scenario();
        atomic_store(&alloc_budget, -1);
        if (rc == 0) {
            finished = true;
        } else if (rc != CASYNQ_ENOMEM) {
            fail_msg("with %ld allocations allowed the scenario returned %s",
                     budget, casynq_err_name(rc));
        }
    }
    assert_true(finished);
}

/* ------------------------------------------------------------------------
 * Client
 */

/* The client rejects a blank rate key before it connects: the address is
 * a socket path where nothing listens. */
static void test_client_blank_rate_key_rejected(void **state)
{
    struct casynq_redis_options *redis = NULL;
    struct casynq_client *client = NULL;
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_task *task = NULL;

    (void)state;
    assert_int_equal(casynq_redis_options_create(&redis), 0);
    assert_int_equal(casynq_redis_options_set_unix(
                             redis, "/nonexistent/casynq-limiter.sock"),
                     0);
    assert_int_equal(casynq_client_create(redis, &client), 0);
    assert_int_equal(casynq_task_create("job", "x", 1, &task), 0);
    assert_int_equal(casynq_enqueue_options_create(&opts), 0);
    assert_int_equal(casynq_enqueue_options_set_rate_key(opts, "  "), 0);

    assert_int_equal(casynq_client_enqueue(client, task, opts, NULL),
                     CASYNQ_EINVAL);
    assert_message_has(casynq_client_last_error(client), "rate key");
    assert_int_equal(casynq_client_retry_after_ms(client), 0);
    assert_int_equal(casynq_enqueue_options_set_rate_key(NULL, "k"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_client_set_limiter(NULL, NULL), CASYNQ_EINVAL);

    casynq_enqueue_options_destroy(opts);
    casynq_task_destroy(task);
    casynq_client_destroy(client);
    casynq_redis_options_destroy(redis);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup_teardown(test_siphash24_paper_vector,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(test_siphash24_depends_on_key,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_create_rejects_bad_arguments, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_rate_must_be_positive_and_finite, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_burst_must_be_at_least_one, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_name_rules, leak_setup,
                                            leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_match_rules,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_at_most_64_rates,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_backlog_and_payload_rules, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_json_applies_every_key,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_json_rejects_with_key_named, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_json_all_or_nothing,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_gcra_burst_then_one_per_interval, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_gcra_keys_have_separate_budgets, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_gcra_no_key_passes_key_limits,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(test_gcra_prefix_match_selects_keys,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_gcra_rejection_consumes_nothing, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_gcra_retry_after_is_longest_wait, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_gcra_fractional_burst,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(test_limiter_payload_checked_first,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_check_rejects_bad_key_and_queue, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_last_error_tracks_latest_call, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_rejections_listed_in_order,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(test_rejections_counted_per_limit,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_rejection_counted_once_under_reported_limit,
                    leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_rejections_kept_when_limits_added, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_rejections_from_threads_sum_exactly, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_memory_idle_budgets_are_evicted, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_memory_key_churn_stays_bounded,
                                            leak_setup, leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_memory_threads_share_one_budget, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(
                    test_limiter_out_of_memory_fails_cleanly, leak_setup,
                    leak_teardown),
            cmocka_unit_test_setup_teardown(test_client_blank_rate_key_rejected,
                                            leak_setup, leak_teardown),
    };

    casynq_set_allocator(counting_malloc, counting_calloc, counting_realloc,
                         counting_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
