/* Tests of the bundled demo handlers, dispatched through a mux as a
 * server would, with bad payloads and cancellation from another thread.
 * Every allocation goes through cmocka's checked allocator, so a leak
 * fails the test. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <casynq.h>

#include "ctx.h"

/* cmocka's checked allocator behind a mutex, as the cancelling thread and
 * the handler thread may both allocate. */
static pthread_mutex_t alloc_mu = PTHREAD_MUTEX_INITIALIZER;

static void *locked_malloc(size_t size)
{
    void *p;

    pthread_mutex_lock(&alloc_mu);
    p = test_malloc(size);
    pthread_mutex_unlock(&alloc_mu);
    return p;
}

static void *locked_calloc(size_t count, size_t size)
{
    void *p;

    pthread_mutex_lock(&alloc_mu);
    p = test_calloc(count, size);
    pthread_mutex_unlock(&alloc_mu);
    return p;
}

static void *locked_realloc(void *ptr, size_t size)
{
    void *p;

    pthread_mutex_lock(&alloc_mu);
    p = test_realloc(ptr, size);
    pthread_mutex_unlock(&alloc_mu);
    return p;
}

static void locked_free(void *ptr)
{
    pthread_mutex_lock(&alloc_mu);
    test_free(ptr);
    pthread_mutex_unlock(&alloc_mu);
}

/* ------------------------------------------------------------------------
 * A task context over a message built in place, and a mux holding the
 * demo handlers behind a middleware that flags the start of each handler.
 */
static const struct casynq__logger quiet_logger = {NULL, NULL,
                                                   CASYNQ_LOG_ERROR};

struct task_fixture {
    Asynq__TaskMessage msg;
    char type[64];
    char id[40];
    char queue[16];
    uint8_t payload[512];
    struct casynq_ctx ctx;
};

/* Builds a task of `type` with payload_len bytes of payload. A NULL
 * payload means none. */
static void task_begin_bytes(struct task_fixture *f, const char *type,
                             const void *payload, size_t payload_len)
{
    memset(f, 0, sizeof(*f));
    asynq__task_message__init(&f->msg);
    snprintf(f->type, sizeof(f->type), "%s", type);
    snprintf(f->id, sizeof(f->id), "%s",
             "6b0f2d1c-8a4e-4f57-b3c9-0e1d2a3b4c5d");
    snprintf(f->queue, sizeof(f->queue), "%s", "default");
    f->msg.type = f->type;
    f->msg.id = f->id;
    f->msg.queue = f->queue;
    f->msg.retry = 25;
    assert_true(payload_len <= sizeof(f->payload));
    if (payload != NULL) {
        memcpy(f->payload, payload, payload_len);
        f->msg.payload.data = f->payload;
        f->msg.payload.len = payload_len;
    }
    assert_int_equal(casynq__ctx_init(&f->ctx, &f->msg,
                                      (int64_t)time(NULL) * 1000 + 1800000,
                                      &quiet_logger),
                     0);
}

static void task_begin(struct task_fixture *f, const char *type,
                       const char *payload)
{
    task_begin_bytes(f, type, payload, payload != NULL ? strlen(payload) : 0);
}

static void task_end(struct task_fixture *f)
{
    casynq__ctx_finish(&f->ctx);
}

static atomic_bool handler_started;

static int flag_start(struct casynq_ctx *ctx, const struct casynq_task *task,
                      const struct casynq_next *next, void *ud)
{
    (void)ud;
    atomic_store(&handler_started, true);
    return casynq_next_call(next, ctx, task);
}

static int setup_mux(void **state)
{
    struct casynq_mux *mux = NULL;

    if (casynq_mux_create(&mux) != 0) {
        return -1;
    }
    if (casynq_demo_handlers_register(mux) != 0 ||
        casynq_mux_use(mux, flag_start, NULL) != 0) {
        casynq_mux_destroy(mux);
        return -1;
    }
    atomic_store(&handler_started, false);
    *state = mux;
    return 0;
}

static int teardown_mux(void **state)
{
    casynq_mux_destroy(*state);
    return 0;
}

static int dispatch(void **state, struct task_fixture *f)
{
    return casynq_mux_dispatch(*state, &f->ctx, &f->ctx.task);
}

/* Dispatches type with payload and asserts the return code and the exact
 * failure message. */
static void assert_outcome(void **state, const char *type, const char *payload,
                           int expected_rc, const char *expected_msg)
{
    struct task_fixture f;

    task_begin(&f, type, payload);
    assert_int_equal(dispatch(state, &f), expected_rc);
    assert_true(f.ctx.has_errmsg);
    assert_string_equal(f.ctx.errmsg, expected_msg);
    assert_false(f.ctx.has_result);
    task_end(&f);
}

/* ------------------------------------------------------------------------
 * A thread that cancels a context once its handler has started, so that
 * the cancel arrives while the handler runs.
 */
struct canceller {
    struct casynq_ctx *ctx;
    pthread_t thread;
};

static void *canceller_run(void *arg)
{
    struct canceller *c = arg;
    const struct timespec poll = {0, 1000000};
    const struct timespec settle = {0, 20000000};

    while (!atomic_load(&handler_started)) {
        nanosleep(&poll, NULL);
    }
    /* A short pause, so the handler is most likely inside its wait or loop.
     * The assertions hold wherever the cancel lands. */
    nanosleep(&settle, NULL);
    casynq__ctx_cancel(c->ctx, CASYNQ__CANCEL_REQUEST);
    return NULL;
}

static void canceller_start(struct canceller *c, struct casynq_ctx *ctx)
{
    atomic_store(&handler_started, false);
    c->ctx = ctx;
    assert_int_equal(pthread_create(&c->thread, NULL, canceller_run, c), 0);
}

static void canceller_join(struct canceller *c)
{
    assert_int_equal(pthread_join(c->thread, NULL), 0);
}

/* ------------------------------------------------------------------------
 * Registration
 */
static void test_demo_register_adds_every_type(void **state)
{
    static const char *const types[] = {"demo:noop", "demo:echo", "demo:sleep",
                                        "demo:fail", "demo:spin"};
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(casynq_demo_handlers_register(mux), 0);
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct task_fixture f;

        /* Without a payload every demo handler returns at once. */
        task_begin(&f, types[i], NULL);
        assert_int_not_equal(casynq_mux_dispatch(mux, &f.ctx, &f.ctx.task),
                             CASYNQ_ENOHANDLER);
        task_end(&f);
    }
    assert_int_equal(casynq_demo_handlers_register(mux), CASYNQ_EEXIST);
    assert_int_equal(casynq_demo_handlers_register(NULL), CASYNQ_EINVAL);
    casynq_mux_destroy(mux);
}

/* ------------------------------------------------------------------------
 * demo:noop and demo:echo
 */
static void test_demo_noop_succeeds(void **state)
{
    struct task_fixture f;

    task_begin(&f, "demo:noop", "{\"anything\": true}");
    assert_int_equal(dispatch(state, &f), 0);
    assert_false(f.ctx.has_errmsg);
    assert_false(f.ctx.has_result);
    task_end(&f);
}

static void test_demo_echo_result_equals_payload(void **state)
{
    static const uint8_t payload[] = {'h', 'i', 0x00, 0xff, 0x7f, '\n', 'x'};
    struct task_fixture f;

    task_begin_bytes(&f, "demo:echo", payload, sizeof(payload));
    assert_int_equal(dispatch(state, &f), 0);
    assert_false(f.ctx.has_errmsg);
    assert_true(f.ctx.has_result);
    assert_int_equal(f.ctx.result.len, sizeof(payload));
    assert_memory_equal(f.ctx.result.data, payload, sizeof(payload));
    task_end(&f);
}

static void test_demo_echo_empty_payload_empty_result(void **state)
{
    struct task_fixture f;

    task_begin(&f, "demo:echo", NULL);
    assert_int_equal(dispatch(state, &f), 0);
    assert_true(f.ctx.has_result);
    assert_int_equal(f.ctx.result.len, 0);
    task_end(&f);
}

static void test_demo_echo_cancelled_returns_canceled(void **state)
{
    struct task_fixture f;

    task_begin(&f, "demo:echo", "hello");
    casynq__ctx_cancel(&f.ctx, CASYNQ__CANCEL_DEADLINE);
    assert_int_equal(dispatch(state, &f), CASYNQ_ECANCELED);
    assert_false(f.ctx.has_result);
    task_end(&f);
}

/* ------------------------------------------------------------------------
 * demo:sleep
 */
static void test_demo_sleep_full_returns_zero(void **state)
{
    static const char *const payloads[] = {
            "{\"ms\": 0}",
            "{\"ms\":1}",
            " {\"ms\": 2, \"note\": \"x\"}\r\n",
            "{\"ms\": 1e0}",
    };

    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        struct task_fixture f;

        task_begin(&f, "demo:sleep", payloads[i]);
        assert_int_equal(dispatch(state, &f), 0);
        assert_false(f.ctx.has_errmsg);
        task_end(&f);
    }
}

static void test_demo_sleep_cancel_wakes_early(void **state)
{
    struct task_fixture f;
    struct canceller c;

    /* One hour: the dispatch can only end this test through the cancel. */
    task_begin(&f, "demo:sleep", "{\"ms\": 3600000}");
    canceller_start(&c, &f.ctx);
    assert_int_equal(dispatch(state, &f), CASYNQ_ECANCELED);
    canceller_join(&c);
    assert_int_equal(casynq__ctx_cancel_reason(&f.ctx), CASYNQ__CANCEL_REQUEST);
    assert_false(f.ctx.has_errmsg);
    task_end(&f);
}

static void test_demo_sleep_cancelled_before_returns_canceled(void **state)
{
    struct task_fixture f;

    /* The maximum is accepted: ECANCELED, not a bad-payload failure. */
    task_begin(&f, "demo:sleep", "{\"ms\": 86400000}");
    casynq__ctx_cancel(&f.ctx, CASYNQ__CANCEL_SHUTDOWN);
    assert_int_equal(dispatch(state, &f), CASYNQ_ECANCELED);
    assert_false(f.ctx.has_errmsg);
    task_end(&f);
}

#define SLEEP_FORM                                                             \
    "demo:sleep payload must be JSON {\"ms\": N} with N an integer from 0 "    \
    "to 86400000, got "

static void test_demo_sleep_bad_payload_skips_retry(void **state)
{
    static const char *const payloads[] = {
            "not json",
            "[]",
            "{}",
            "{\"ms\":-1}",
            "{\"ms\":1.5}",
            "{\"ms\":\"10\"}",
            "{\"ms\":null}",
            "{\"ms\":true}",
            "{\"ms\":86400001}",
            "{\"ms\":1e999}",
            "{\"ms\":10} x",
            "{\"MS\":10}",
            "5",
    };
    char expected[256];

    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        snprintf(expected, sizeof(expected), SLEEP_FORM "%s", payloads[i]);
        assert_outcome(state, "demo:sleep", payloads[i], CASYNQ_ESKIP_RETRY,
                       expected);
    }
    assert_outcome(state, "demo:sleep", NULL, CASYNQ_ESKIP_RETRY,
                   SLEEP_FORM "an empty payload");
}

static void test_demo_bad_payload_echo_truncated(void **state)
{
    char payload[128];
    char expected[256];

    /* 100 payload bytes: the message repeats the first 64 and "...". */
    memset(payload, 'a', 100);
    payload[100] = '\0';
    snprintf(expected, sizeof(expected), SLEEP_FORM "%.64s...", payload);
    assert_outcome(state, "demo:sleep", payload, CASYNQ_ESKIP_RETRY, expected);

    /* Exactly 64 bytes are repeated whole, with no "...". */
    payload[64] = '\0';
    snprintf(expected, sizeof(expected), SLEEP_FORM "%s", payload);
    assert_outcome(state, "demo:sleep", payload, CASYNQ_ESKIP_RETRY, expected);
}

/* ------------------------------------------------------------------------
 * demo:fail
 */
static void test_demo_fail_default_message(void **state)
{
    assert_outcome(state, "demo:fail", NULL, CASYNQ_EHANDLER, "demo failure");
    assert_outcome(state, "demo:fail", "{}", CASYNQ_EHANDLER, "demo failure");
    assert_outcome(state, "demo:fail", "{\"skip_retry\": false}",
                   CASYNQ_EHANDLER, "demo failure");
}

static void test_demo_fail_custom_message(void **state)
{
    assert_outcome(state, "demo:fail", "{\"error\": \"disk full on /srv\"}",
                   CASYNQ_EHANDLER, "disk full on /srv");
    /* A '%' in the text is data, not a format directive. */
    assert_outcome(state, "demo:fail", "{\"error\": \"100%s done\"}",
                   CASYNQ_EHANDLER, "100%s done");
}

static void test_demo_fail_skip_retry(void **state)
{
    assert_outcome(state, "demo:fail",
                   "{\"error\": \"bad input\", \"skip_retry\": true}",
                   CASYNQ_ESKIP_RETRY, "bad input");
    assert_outcome(state, "demo:fail", "{\"skip_retry\": true}",
                   CASYNQ_ESKIP_RETRY, "demo failure");
}

#define FAIL_FORM                                                              \
    "demo:fail payload must be empty or a JSON object {\"error\": "            \
    "\"text\", \"skip_retry\": true|false} with both fields optional, got "

static void test_demo_fail_bad_payload_skips_retry(void **state)
{
    static const char *const payloads[] = {
            "nope",
            "[1]",
            "\"text\"",
            "{\"error\": 5}",
            "{\"error\": null}",
            "{\"skip_retry\": \"yes\"}",
            "{\"skip_retry\": 1}",
            "{} {}",
    };
    char expected[256];

    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        snprintf(expected, sizeof(expected), FAIL_FORM "%s", payloads[i]);
        assert_outcome(state, "demo:fail", payloads[i], CASYNQ_ESKIP_RETRY,
                       expected);
    }
}

/* ------------------------------------------------------------------------
 * demo:spin
 */
static void test_demo_spin_ignores_cancel_before(void **state)
{
    struct task_fixture f;

    task_begin(&f, "demo:spin", "{\"ms\": 5}");
    casynq__ctx_cancel(&f.ctx, CASYNQ__CANCEL_DEADLINE);
    assert_int_equal(dispatch(state, &f), 0);
    assert_false(f.ctx.has_errmsg);
    task_end(&f);
}

static void test_demo_spin_ignores_cancel_while_running(void **state)
{
    struct task_fixture f;
    struct canceller c;

    task_begin(&f, "demo:spin", "{\"ms\": 300}");
    canceller_start(&c, &f.ctx);
    assert_int_equal(dispatch(state, &f), 0);
    canceller_join(&c);
    assert_true(casynq_ctx_is_cancelled(&f.ctx));
    assert_false(f.ctx.has_errmsg);
    task_end(&f);
}

static void test_demo_spin_bad_payload_skips_retry(void **state)
{
    assert_outcome(state, "demo:spin", "{\"ms\": -5}", CASYNQ_ESKIP_RETRY,
                   "demo:spin payload must be JSON {\"ms\": N} with N an "
                   "integer from 0 to 86400000, got {\"ms\": -5}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_demo_register_adds_every_type),
#define DEMO_TEST(fn)                                                          \
    cmocka_unit_test_setup_teardown(fn, setup_mux, teardown_mux)
            DEMO_TEST(test_demo_noop_succeeds),
            DEMO_TEST(test_demo_echo_result_equals_payload),
            DEMO_TEST(test_demo_echo_empty_payload_empty_result),
            DEMO_TEST(test_demo_echo_cancelled_returns_canceled),
            DEMO_TEST(test_demo_sleep_full_returns_zero),
            DEMO_TEST(test_demo_sleep_cancel_wakes_early),
            DEMO_TEST(test_demo_sleep_cancelled_before_returns_canceled),
            DEMO_TEST(test_demo_sleep_bad_payload_skips_retry),
            DEMO_TEST(test_demo_bad_payload_echo_truncated),
            DEMO_TEST(test_demo_fail_default_message),
            DEMO_TEST(test_demo_fail_custom_message),
            DEMO_TEST(test_demo_fail_skip_retry),
            DEMO_TEST(test_demo_fail_bad_payload_skips_retry),
            DEMO_TEST(test_demo_spin_ignores_cancel_before),
            DEMO_TEST(test_demo_spin_ignores_cancel_while_running),
            DEMO_TEST(test_demo_spin_bad_payload_skips_retry),
#undef DEMO_TEST
    };

    casynq_set_allocator(locked_malloc, locked_calloc, locked_realloc,
                         locked_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
