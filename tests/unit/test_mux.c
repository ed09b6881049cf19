/* Tests of the handler registry: pattern matching, registration errors,
 * the middleware chain and concurrent dispatch. Every allocation goes
 * through cmocka's checked allocator, so a leak fails the test. */
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

/* ------------------------------------------------------------------------
 * Allocator: cmocka's checked allocator behind a mutex, because worker
 * threads allocate too, plus a count of allocations and a failure switch.
 */
static pthread_mutex_t alloc_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_long alloc_count;
/* Allocations left before every further one fails, or -1 for no limit. */
static atomic_long alloc_budget = -1;

/* Returns whether the next allocation is to fail, and uses up one unit of
 * the budget otherwise. */
static bool alloc_should_fail(void)
{
    long budget = atomic_load(&alloc_budget);

    while (budget > 0 &&
           !atomic_compare_exchange_weak(&alloc_budget, &budget, budget - 1)) {
        continue;
    }
    return budget == 0;
}

static void *locked_malloc(size_t size)
{
    void *p;

    if (alloc_should_fail()) {
        return NULL;
    }
    pthread_mutex_lock(&alloc_mu);
    p = test_malloc(size);
    pthread_mutex_unlock(&alloc_mu);
    atomic_fetch_add(&alloc_count, 1);
    return p;
}

static void *locked_calloc(size_t count, size_t size)
{
    void *p;

    if (alloc_should_fail()) {
        return NULL;
    }
    pthread_mutex_lock(&alloc_mu);
    p = test_calloc(count, size);
    pthread_mutex_unlock(&alloc_mu);
    atomic_fetch_add(&alloc_count, 1);
    return p;
}

static void *locked_realloc(void *ptr, size_t size)
{
    void *p;

    if (alloc_should_fail()) {
        return NULL;
    }
    pthread_mutex_lock(&alloc_mu);
    p = test_realloc(ptr, size);
    pthread_mutex_unlock(&alloc_mu);
    atomic_fetch_add(&alloc_count, 1);
    return p;
}

static void locked_free(void *ptr)
{
    pthread_mutex_lock(&alloc_mu);
    test_free(ptr);
    pthread_mutex_unlock(&alloc_mu);
}

/* ------------------------------------------------------------------------
 * A task context over a message built in place, as the runtime builds one
 * for each dequeued task.
 */
static const struct casynq__logger quiet_logger = {NULL, NULL,
                                                   CASYNQ_LOG_ERROR};

struct task_fixture {
    Asynq__TaskMessage msg;
    char type[256];
    char id[40];
    char queue[16];
    struct casynq_ctx ctx;
};

static void task_begin(struct task_fixture *f, const char *type)
{
    memset(f, 0, sizeof(*f));
    asynq__task_message__init(&f->msg);
    snprintf(f->type, sizeof(f->type), "%s", type);
    snprintf(f->id, sizeof(f->id), "%s",
             "0f6c5a8e-3b1d-4c62-9a57-2d7e8f1b4c30");
    snprintf(f->queue, sizeof(f->queue), "%s", "default");
    f->msg.type = f->type;
    f->msg.id = f->id;
    f->msg.queue = f->queue;
    f->msg.retry = 25;
    assert_int_equal(casynq__ctx_init(&f->ctx, &f->msg,
                                      (int64_t)time(NULL) * 1000 + 1800000,
                                      &quiet_logger),
                     0);
}

static void task_end(struct task_fixture *f)
{
    casynq__ctx_finish(&f->ctx);
}

static int dispatch(const struct casynq_mux *mux, struct task_fixture *f)
{
    return casynq_mux_dispatch(mux, &f->ctx, &f->ctx.task);
}

/* ------------------------------------------------------------------------
 * A call log shared by the single-threaded tests' handlers and
 * middleware.
 */
#define CALL_LOG_MAX 32

static char call_log[CALL_LOG_MAX][32];
static size_t call_count;

/* Appends name followed by suffix (">" before the rest of a chain, "<"
 * after it) to the call log. */
static void log_call(const char *name, const char *suffix)
{
    if (call_count < CALL_LOG_MAX) {
        snprintf(call_log[call_count], sizeof(call_log[0]), "%s%s", name,
                 suffix);
    }
    call_count++;
}

static int setup_test(void **state)
{
    (void)state;
    call_count = 0;
    memset(call_log, 0, sizeof(call_log));
    return 0;
}

/* Returns a handler or middleware name as the ud pointer it is
 * registered with. */
static void *name_ud(const char *name)
{
    return (void *)(uintptr_t)name;
}

/* Records the handler's name (its ud) and returns 0. */
static int named_handler(struct casynq_ctx *ctx, const struct casynq_task *task,
                         void *ud)
{
    (void)ctx;
    (void)task;
    log_call((const char *)ud, "");
    return 0;
}

/* Records the handler's name and returns CASYNQ_EREVOKE, a code no other
 * part of the chain returns. */
static int revoking_handler(struct casynq_ctx *ctx,
                            const struct casynq_task *task, void *ud)
{
    (void)ctx;
    (void)task;
    log_call((const char *)ud, "");
    return CASYNQ_EREVOKE;
}

/* Records its name before and after the rest of the chain and returns what
 * the rest returned. */
static int wrapping_middleware(struct casynq_ctx *ctx,
                               const struct casynq_task *task,
                               const struct casynq_next *next, void *ud)
{
    int rc;

    log_call((const char *)ud, ">");
    rc = casynq_next_call(next, ctx, task);
    log_call((const char *)ud, "<");
    return rc;
}

/* Records its name and returns CASYNQ_ESKIP_RETRY without calling the rest
 * of the chain. */
static int blocking_middleware(struct casynq_ctx *ctx,
                               const struct casynq_task *task,
                               const struct casynq_next *next, void *ud)
{
    (void)ctx;
    (void)task;
    (void)next;
    log_call((const char *)ud, "!");
    return CASYNQ_ESKIP_RETRY;
}

/* Runs the rest of the chain twice, as a retrying middleware would, and
 * returns the second result. */
static int twice_middleware(struct casynq_ctx *ctx,
                            const struct casynq_task *task,
                            const struct casynq_next *next, void *ud)
{
    (void)ud;
    (void)casynq_next_call(next, ctx, task);
    return casynq_next_call(next, ctx, task);
}

/* Dispatches type on mux and asserts which handler ran. */
static void assert_routes_to(const struct casynq_mux *mux, const char *type,
                             const char *expected)
{
    struct task_fixture f;

    call_count = 0;
    task_begin(&f, type);
    assert_int_equal(dispatch(mux, &f), 0);
    assert_int_equal(call_count, 1);
    assert_string_equal(call_log[0], expected);
    assert_false(f.ctx.has_errmsg);
    task_end(&f);
}

/* Dispatches type on mux, whose chain may hold any number of
 * wrapping_middleware entries, and asserts which handler ran. */
static void assert_routes_to_through_middleware(const struct casynq_mux *mux,
                                                const char *type,
                                                const char *expected)
{
    struct task_fixture f;
    size_t handler_calls_seen = 0;

    call_count = 0;
    task_begin(&f, type);
    assert_int_equal(dispatch(mux, &f), 0);
    assert_true(call_count <= CALL_LOG_MAX);
    for (size_t i = 0; i < call_count; i++) {
        if (strcmp(call_log[i], "M>") != 0 && strcmp(call_log[i], "M<") != 0) {
            assert_string_equal(call_log[i], expected);
            handler_calls_seen++;
        }
    }
    assert_int_equal(handler_calls_seen, 1);
    task_end(&f);
}

/* Dispatches type on mux and asserts the not-found outcome and message. */
static void assert_not_found(const struct casynq_mux *mux, const char *type,
                             const char *expected_msg)
{
    struct task_fixture f;

    call_count = 0;
    task_begin(&f, type);
    assert_int_equal(dispatch(mux, &f), CASYNQ_ENOHANDLER);
    assert_int_equal(call_count, 0);
    assert_true(f.ctx.has_errmsg);
    assert_string_equal(f.ctx.errmsg, expected_msg);
    task_end(&f);
}

/* ------------------------------------------------------------------------
 * Matching
 */
static void test_mux_longest_prefix_wins(void **state)
{
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    /* Registered out of length order, so the result cannot come from the
     * order of registration. */
    assert_int_equal(casynq_mux_handle(mux, "email:welcome", named_handler,
                                       name_ud("welcome")),
                     0);
    assert_int_equal(casynq_mux_handle(mux, "email:welcome:v2", named_handler,
                                       name_ud("v2")),
                     0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("email")),
            0);

    assert_routes_to(mux, "email:welcome:v2:beta", "v2");
    assert_routes_to(mux, "email:welcome:v1", "welcome");
    assert_routes_to(mux, "email:welcomeback", "welcome");
    assert_routes_to(mux, "email:reminder", "email");
    assert_routes_to(mux, "email:", "email");
    assert_not_found(mux, "email", "handler not found for task \"email\"");
    casynq_mux_destroy(mux);
}

static void test_mux_exact_match_wins(void **state)
{
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(casynq_mux_handle(mux, "report:daily", named_handler,
                                       name_ud("daily")),
                     0);
    assert_int_equal(
            casynq_mux_handle(mux, "report", named_handler, name_ud("report")),
            0);

    assert_routes_to(mux, "report:daily", "daily");
    assert_routes_to(mux, "report", "report");
    assert_routes_to(mux, "report:weekly", "report");
    casynq_mux_destroy(mux);
}

static void test_mux_many_patterns_route(void **state)
{
    static char patterns[200][16];
    struct casynq_mux *mux = NULL;
    char type[32];

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    /* Enough patterns to grow the table several times. "t:1" is a prefix
     * of "t:10" to "t:19", so each type must reach its own pattern. */
    for (int i = 0; i < 200; i++) {
        snprintf(patterns[i], sizeof(patterns[i]), "t:%d", i);
        assert_int_equal(
                casynq_mux_handle(mux, patterns[i], named_handler, patterns[i]),
                0);
    }
    assert_int_equal(casynq_mux_handle(mux, "t:", named_handler, name_ud("t:")),
                     0);

    for (int i = 0; i < 200; i++) {
        assert_routes_to(mux, patterns[i], patterns[i]);
    }
    snprintf(type, sizeof(type), "t:%dx", 42);
    assert_routes_to(mux, type, "t:42");
    assert_routes_to(mux, "t:x", "t:");
    casynq_mux_destroy(mux);
}

static void test_mux_no_match_reports_asynq_text(void **state)
{
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_not_found(mux, "sms:send",
                     "handler not found for task "
                     "\"sms:send\"");
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("email")),
            0);
    assert_not_found(mux, "sms:send",
                     "handler not found for task "
                     "\"sms:send\"");
    assert_not_found(mux, "emai", "handler not found for task \"emai\"");
    assert_not_found(mux, "", "handler not found for task \"\"");
    casynq_mux_destroy(mux);
}

/* The type is quoted as Go's %q does, which asynq's NotFound uses. The
 * expected strings were printed by Go's fmt.Errorf("%w %q", ...). */
static void test_mux_not_found_quotes_like_go(void **state)
{
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_not_found(mux, "a\"b\tc\xff",
                     "handler not found for task \"a\\\"b\\tc\\xff\"");
    assert_not_found(mux,
                     "x\\y\x7f\xc2\xa0\xc3\xa9\xe2\x80\x8b\xf0\x9f\x98\x80"
                     "\xed\xa0\x80\x01\xc2\x85\xf3\xa0\x80\x81",
                     "handler not found for task \"x\\\\y\\x7f\\u00a0"
                     "\xc3\xa9\\u200b\xf0\x9f\x98\x80\\xed\\xa0\\x80\\x01"
                     "\\u0085\\U000e0001\"");
    casynq_mux_destroy(mux);
}

static void test_mux_long_type_message_is_bounded(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;
    char type[255];
    size_t len;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    /* Each control byte takes four bytes quoted, more than the context
     * keeps, so the message is cut and must stay a C string. */
    memset(type, '\x01', sizeof(type) - 1);
    type[sizeof(type) - 1] = '\0';
    task_begin(&f, type);
    assert_int_equal(dispatch(mux, &f), CASYNQ_ENOHANDLER);
    len = strlen(f.ctx.errmsg);
    assert_true(len < sizeof(f.ctx.errmsg));
    assert_true(len > 900);
    assert_memory_equal(f.ctx.errmsg, "handler not found for task \"\\x01",
                        strlen("handler not found for task \"\\x01"));
    task_end(&f);
    casynq_mux_destroy(mux);
}

/* ------------------------------------------------------------------------
 * Registration errors
 */
static void test_mux_duplicate_pattern_rejected(void **state)
{
    struct casynq_mux *mux = NULL;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("first")),
            0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("second")),
            CASYNQ_EEXIST);
    assert_routes_to(mux, "email:welcome", "first");
    casynq_mux_destroy(mux);
}

static void test_mux_invalid_arguments_rejected(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;

    (void)state;
    assert_int_equal(casynq_mux_create(NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_create(&mux), 0);

    assert_int_equal(casynq_mux_handle(mux, "", named_handler, name_ud("x")),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_handle(mux, "   ", named_handler, name_ud("x")),
                     CASYNQ_EINVAL);
    assert_int_equal(
            casynq_mux_handle(mux, "\t\n", named_handler, name_ud("x")),
            CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_handle(mux, NULL, named_handler, name_ud("x")),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_handle(mux, "email:", NULL, name_ud("x")),
                     CASYNQ_EINVAL);
    assert_int_equal(
            casynq_mux_handle(NULL, "email:", named_handler, name_ud("x")),
            CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_use(mux, NULL, NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_use(NULL, wrapping_middleware, name_ud("a")),
                     CASYNQ_EINVAL);

    /* A rejected registration leaves nothing behind. */
    assert_not_found(mux, "email:welcome",
                     "handler not found for task \"email:welcome\"");

    task_begin(&f, "email:welcome");
    assert_int_equal(casynq_mux_dispatch(NULL, &f.ctx, &f.ctx.task),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_dispatch(mux, NULL, &f.ctx.task),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_mux_dispatch(mux, &f.ctx, NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_next_call(NULL, &f.ctx, &f.ctx.task),
                     CASYNQ_EINVAL);
    task_end(&f);

    casynq_mux_destroy(mux);
    casynq_mux_destroy(NULL);
}

/* Walks every allocation of the registration calls with a budget that
 * runs out one allocation later each round, until a round needs no more
 * than the budget. A failed call must report CASYNQ_ENOMEM and leave the
 * mux usable, and nothing may leak. */
static void test_mux_out_of_memory_reports_enomem(void **state)
{
    static char patterns[12][16];
    bool completed = false;

    (void)state;
    for (int i = 0; i < 12; i++) {
        snprintf(patterns[i], sizeof(patterns[i]), "p:%d", i);
    }
    for (long budget = 0; !completed; budget++) {
        struct casynq_mux *mux = NULL;
        int rc;

        completed = true;
        atomic_store(&alloc_budget, budget);
        rc = casynq_mux_create(&mux);
        if (rc != 0) {
            atomic_store(&alloc_budget, -1);
            assert_int_equal(rc, CASYNQ_ENOMEM);
            assert_null(mux);
            completed = false;
            continue;
        }
        for (int i = 0; i < 12; i++) {
            rc = casynq_mux_handle(mux, patterns[i], named_handler,
                                   patterns[i]);
            if (rc != 0) {
                assert_int_equal(rc, CASYNQ_ENOMEM);
                completed = false;
            }
            rc = casynq_mux_use(mux, wrapping_middleware, name_ud("M"));
            if (rc != 0) {
                assert_int_equal(rc, CASYNQ_ENOMEM);
                completed = false;
            }
        }
        atomic_store(&alloc_budget, -1);

        /* Whatever was registered still works, and what failed can be
         * registered now. */
        for (int i = 0; i < 12; i++) {
            rc = casynq_mux_handle(mux, patterns[i], named_handler,
                                   patterns[i]);
            assert_true(rc == 0 || rc == CASYNQ_EEXIST);
        }
        assert_routes_to_through_middleware(mux, "p:11", "p:11");
        casynq_mux_destroy(mux);
    }
}

/* ------------------------------------------------------------------------
 * Middleware
 */
static void test_mux_middleware_runs_outer_first(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", revoking_handler, name_ud("H")),
            0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("A")), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("B")), 0);

    task_begin(&f, "email:welcome");
    assert_int_equal(dispatch(mux, &f), CASYNQ_EREVOKE);
    assert_int_equal(call_count, 5);
    assert_string_equal(call_log[0], "A>");
    assert_string_equal(call_log[1], "B>");
    assert_string_equal(call_log[2], "H");
    assert_string_equal(call_log[3], "B<");
    assert_string_equal(call_log[4], "A<");
    task_end(&f);
    casynq_mux_destroy(mux);
}

static void test_mux_middleware_short_circuits(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("H")), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("A")), 0);
    assert_int_equal(casynq_mux_use(mux, blocking_middleware, name_ud("B")), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("C")), 0);

    task_begin(&f, "email:welcome");
    assert_int_equal(dispatch(mux, &f), CASYNQ_ESKIP_RETRY);
    assert_int_equal(call_count, 3);
    assert_string_equal(call_log[0], "A>");
    assert_string_equal(call_log[1], "B!");
    assert_string_equal(call_log[2], "A<");
    task_end(&f);
    casynq_mux_destroy(mux);
}

static void test_mux_middleware_wraps_not_found(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("H")), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("A")), 0);

    task_begin(&f, "sms:send");
    assert_int_equal(dispatch(mux, &f), CASYNQ_ENOHANDLER);
    assert_int_equal(call_count, 2);
    assert_string_equal(call_log[0], "A>");
    assert_string_equal(call_log[1], "A<");
    assert_true(f.ctx.has_errmsg);
    assert_string_equal(f.ctx.errmsg,
                        "handler not found for task \"sms:send\"");
    task_end(&f);
    casynq_mux_destroy(mux);
}

static void test_mux_middleware_can_call_next_twice(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("H")), 0);
    assert_int_equal(casynq_mux_use(mux, twice_middleware, NULL), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("B")), 0);

    task_begin(&f, "email:welcome");
    assert_int_equal(dispatch(mux, &f), 0);
    assert_int_equal(call_count, 6);
    assert_string_equal(call_log[0], "B>");
    assert_string_equal(call_log[1], "H");
    assert_string_equal(call_log[2], "B<");
    assert_string_equal(call_log[3], "B>");
    assert_string_equal(call_log[4], "H");
    assert_string_equal(call_log[5], "B<");
    task_end(&f);
    casynq_mux_destroy(mux);
}

static void test_mux_dispatch_allocates_nothing(void **state)
{
    struct casynq_mux *mux = NULL;
    struct task_fixture f;
    long before;

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(
            casynq_mux_handle(mux, "email:", named_handler, name_ud("H")), 0);
    assert_int_equal(casynq_mux_handle(mux, "email:welcome", named_handler,
                                       name_ud("W")),
                     0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("A")), 0);
    assert_int_equal(casynq_mux_use(mux, wrapping_middleware, name_ud("B")), 0);
    task_begin(&f, "email:welcome:v3");

    before = atomic_load(&alloc_count);
    assert_int_equal(dispatch(mux, &f), 0);
    assert_int_equal(atomic_load(&alloc_count), before);
    assert_string_equal(call_log[2], "W");
    task_end(&f);
    casynq_mux_destroy(mux);
}

/* ------------------------------------------------------------------------
 * Concurrent dispatch: worker threads share one mux. Threads other than
 * the main one record mismatches instead of asserting, because cmocka's
 * asserts work only on the main thread.
 */
#define DISPATCH_THREADS      8
#define DISPATCHES_PER_THREAD 2000

static _Thread_local int last_handler_id;
static atomic_long handler_calls[4];
static atomic_long middleware_calls;

static int counting_handler(struct casynq_ctx *ctx,
                            const struct casynq_task *task, void *ud)
{
    int id = *(const int *)ud;

    (void)ctx;
    (void)task;
    last_handler_id = id;
    atomic_fetch_add(&handler_calls[id], 1);
    return 0;
}

static int counting_middleware(struct casynq_ctx *ctx,
                               const struct casynq_task *task,
                               const struct casynq_next *next, void *ud)
{
    (void)ud;
    atomic_fetch_add(&middleware_calls, 1);
    return casynq_next_call(next, ctx, task);
}

struct dispatch_worker {
    const struct casynq_mux *mux;
    int index;
    long mismatches;
};

static const struct {
    const char *type;
    int handler_id; /* -1 for not found */
} dispatch_cases[] = {
        {"email:welcome:v2:beta", 3},
        {"email:welcome", 2},
        {"email:reminder", 1},
        {"sms:send", -1},
};

static void *dispatch_worker_run(void *arg)
{
    struct dispatch_worker *w = arg;
    struct task_fixture f;

    for (int i = 0; i < DISPATCHES_PER_THREAD; i++) {
        size_t c = (size_t)(i + w->index) % 4;
        int rc;

        last_handler_id = 0;
        memset(&f, 0, sizeof(f));
        asynq__task_message__init(&f.msg);
        snprintf(f.type, sizeof(f.type), "%s", dispatch_cases[c].type);
        f.msg.type = f.type;
        if (casynq__ctx_init(&f.ctx, &f.msg, 0, &quiet_logger) != 0) {
            w->mismatches++;
            continue;
        }
        rc = dispatch(w->mux, &f);
        if (dispatch_cases[c].handler_id < 0) {
            if (rc != CASYNQ_ENOHANDLER || last_handler_id != 0 ||
                strstr(f.ctx.errmsg, dispatch_cases[c].type) == NULL) {
                w->mismatches++;
            }
        } else if (rc != 0 || last_handler_id != dispatch_cases[c].handler_id) {
            w->mismatches++;
        }
        casynq__ctx_finish(&f.ctx);
    }
    return NULL;
}

static void test_mux_concurrent_dispatch_consistent(void **state)
{
    static const int ids[] = {0, 1, 2, 3};
    struct casynq_mux *mux = NULL;
    struct dispatch_worker workers[DISPATCH_THREADS];
    pthread_t threads[DISPATCH_THREADS];
    long expected[4] = {0};

    (void)state;
    assert_int_equal(casynq_mux_create(&mux), 0);
    assert_int_equal(casynq_mux_handle(mux, "email:", counting_handler,
                                       (void *)(uintptr_t)&ids[1]),
                     0);
    assert_int_equal(casynq_mux_handle(mux, "email:welcome", counting_handler,
                                       (void *)(uintptr_t)&ids[2]),
                     0);
    assert_int_equal(casynq_mux_handle(mux, "email:welcome:v2",
                                       counting_handler,
                                       (void *)(uintptr_t)&ids[3]),
                     0);
    assert_int_equal(casynq_mux_use(mux, counting_middleware, NULL), 0);
    for (int i = 0; i < 4; i++) {
        atomic_store(&handler_calls[i], 0);
    }
    atomic_store(&middleware_calls, 0);

    for (int t = 0; t < DISPATCH_THREADS; t++) {
        workers[t] = (struct dispatch_worker){mux, t, 0};
        assert_int_equal(pthread_create(&threads[t], NULL, dispatch_worker_run,
                                        &workers[t]),
                         0);
    }
    for (int t = 0; t < DISPATCH_THREADS; t++) {
        assert_int_equal(pthread_join(threads[t], NULL), 0);
    }

    for (int t = 0; t < DISPATCH_THREADS; t++) {
        assert_int_equal(workers[t].mismatches, 0);
        for (int i = 0; i < DISPATCHES_PER_THREAD; i++) {
            int id = dispatch_cases[(size_t)(i + t) % 4].handler_id;

            expected[id < 0 ? 0 : id]++;
        }
    }
    assert_int_equal(atomic_load(&middleware_calls),
                     DISPATCH_THREADS * DISPATCHES_PER_THREAD);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(atomic_load(&handler_calls[i]), expected[i]);
    }
    assert_int_equal(atomic_load(&handler_calls[0]), 0);
    casynq_mux_destroy(mux);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test_setup(test_mux_longest_prefix_wins, setup_test),
            cmocka_unit_test_setup(test_mux_exact_match_wins, setup_test),
            cmocka_unit_test_setup(test_mux_many_patterns_route, setup_test),
            cmocka_unit_test_setup(test_mux_no_match_reports_asynq_text,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_not_found_quotes_like_go,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_long_type_message_is_bounded,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_duplicate_pattern_rejected,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_invalid_arguments_rejected,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_out_of_memory_reports_enomem,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_middleware_runs_outer_first,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_middleware_short_circuits,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_middleware_wraps_not_found,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_middleware_can_call_next_twice,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_dispatch_allocates_nothing,
                                   setup_test),
            cmocka_unit_test_setup(test_mux_concurrent_dispatch_consistent,
                                   setup_test),
    };

    casynq_set_allocator(locked_malloc, locked_calloc, locked_realloc,
                         locked_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
