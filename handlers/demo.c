/* DESIGN: the bundled demo handlers.
 *
 * Five handlers for trying the worker and for benchmarks, registered by
 * casynq_demo_handlers_register():
 *
 *   demo:noop   does nothing and succeeds.
 *   demo:echo   stores its payload as the task's result.
 *   demo:sleep  {"ms": N}: sleeps N ms, waking early when the context is
 *               cancelled, in which case it returns CASYNQ_ECANCELED.
 *   demo:fail   {"error": "text", "skip_retry": bool}, both optional:
 *               fails with the text ("demo failure" by default), and
 *               skips the retries when skip_retry is true.
 *   demo:spin   {"ms": N}: keeps a CPU busy for N ms and ignores
 *               cancellation, to show what a handler that never checks
 *               its context does at a deadline or shutdown.
 *
 * N is an integer from 0 to 86400000 (24 h). A payload that does not
 * have the documented form fails with CASYNQ_ESKIP_RETRY, because a retry
 * would get the same payload. The handlers keep no state, so any number of
 * workers may run them at once.
 *
 * This file uses only the public header and libc (plus cJSON for the
 * payloads), like an application's handlers would. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include <casynq.h>

/* Maximum duration a payload may request, in milliseconds (24 h). */
#define DEMO_MAX_MS 86400000

/* How many payload bytes a bad-payload message repeats. */
#define ECHOED_PAYLOAD_MAX 64

/* Describes the payload for a bad-payload message into out: its first
 * ECHOED_PAYLOAD_MAX bytes followed by "..." when it is longer, or a
 * phrase for an empty payload. */
static void describe_payload(const struct casynq_task *task, char *out,
                             size_t cap)
{
    size_t len = 0;
    const char *payload = casynq_task_payload(task, &len);

    if (payload == NULL || len == 0) {
        snprintf(out, cap, "an empty payload");
        return;
    }
    snprintf(out, cap, "%.*s%s",
             (int)(len < ECHOED_PAYLOAD_MAX ? len : ECHOED_PAYLOAD_MAX),
             payload, len > ECHOED_PAYLOAD_MAX ? "..." : "");
}

/* Parses the payload as one JSON value, which only white space may follow,
 * as Go's json.Unmarshal requires.
 * Returns: the parsed value, or NULL when the payload is empty or not
 *          JSON.
 * Ownership: free with cJSON_Delete(). */
static cJSON *parse_payload(const struct casynq_task *task)
{
    size_t len = 0;
    const char *payload = casynq_task_payload(task, &len);
    const char *end = NULL;
    cJSON *root;

    if (payload == NULL || len == 0) {
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(payload, len, &end, false);
    if (root == NULL) {
        return NULL;
    }
    while (end < payload + len &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) {
        end++;
    }
    if (end != payload + len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Reads the "ms" member of the JSON object payload of task into *ms.
 * `name` is the handler's task type, for the message.
 * Returns: 0, or the result of casynq_ctx_skip_retry() naming the field
 *          and the expected form when the payload lacks a valid "ms". */
static int parse_duration_ms(struct casynq_ctx *ctx,
                             const struct casynq_task *task, const char *name,
                             int64_t *ms)
{
    char got[ECHOED_PAYLOAD_MAX + 16];
    cJSON *root = parse_payload(task);
    const cJSON *field = cJSON_GetObjectItemCaseSensitive(root, "ms");
    double value = cJSON_IsNumber(field) ? field->valuedouble : -1.0;

    cJSON_Delete(root);
    /* The range check comes first so that the cast below is defined. */
    if (value >= 0 && value <= DEMO_MAX_MS && (double)(int64_t)value == value) {
        *ms = (int64_t)value;
        return 0;
    }
    describe_payload(task, got, sizeof(got));
    return casynq_ctx_skip_retry(ctx,
                                 "%s payload must be JSON {\"ms\": N} with N "
                                 "an integer from 0 to %d, got %s",
                                 name, DEMO_MAX_MS, got);
}

static int demo_noop(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    (void)ctx;
    (void)task;
    (void)ud;
    return 0;
}

static int demo_echo(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    size_t len = 0;
    const void *payload = casynq_task_payload(task, &len);
    int64_t written;

    (void)ud;
    written = casynq_ctx_write_result(ctx, payload, len);
    return written < 0 ? (int)written : 0;
}

static int demo_sleep(struct casynq_ctx *ctx, const struct casynq_task *task,
                      void *ud)
{
    int64_t ms = 0;
    int rc = parse_duration_ms(ctx, task, "demo:sleep", &ms);

    (void)ud;
    if (rc != 0) {
        return rc;
    }
    /* casynq_ctx_wait() returns 0 after the full sleep and
     * CASYNQ_ECANCELED when woken by cancellation. For the latter the
     * runtime records the cancel reason's text as the failure. */
    return casynq_ctx_wait(ctx, ms);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int demo_spin(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    int64_t ms = 0;
    int rc = parse_duration_ms(ctx, task, "demo:spin", &ms);
    int64_t until;

    (void)ud;
    if (rc != 0) {
        return rc;
    }
    /* The loop never looks at the context on purpose: this handler stands
     * for user code that ignores cancellation. */
    until = mono_ms() + ms;
    while (mono_ms() < until) {
        continue;
    }
    return 0;
}

static int demo_fail(struct casynq_ctx *ctx, const struct casynq_task *task,
                     void *ud)
{
    char got[ECHOED_PAYLOAD_MAX + 16];
    size_t len = 0;
    cJSON *root = NULL;
    const cJSON *error;
    const cJSON *skip;
    int rc;

    (void)ud;
    /* Every field is optional, so an empty payload means the defaults. */
    (void)casynq_task_payload(task, &len);
    if (len > 0) {
        root = parse_payload(task);
        if (!cJSON_IsObject(root)) {
            goto bad_payload;
        }
    }
    error = cJSON_GetObjectItemCaseSensitive(root, "error");
    skip = cJSON_GetObjectItemCaseSensitive(root, "skip_retry");
    if ((error != NULL && !cJSON_IsString(error)) ||
        (skip != NULL && !cJSON_IsBool(skip))) {
        goto bad_payload;
    }
    if (cJSON_IsTrue(skip)) {
        rc = casynq_ctx_skip_retry(
                ctx, "%s", error != NULL ? error->valuestring : "demo failure");
    } else {
        rc = casynq_ctx_fail(
                ctx, "%s", error != NULL ? error->valuestring : "demo failure");
    }
    cJSON_Delete(root);
    return rc;

bad_payload:
    cJSON_Delete(root);
    describe_payload(task, got, sizeof(got));
    return casynq_ctx_skip_retry(ctx,
                                 "demo:fail payload must be empty or a JSON "
                                 "object {\"error\": \"text\", "
                                 "\"skip_retry\": true|false} with both "
                                 "fields optional, got %s",
                                 got);
}

int casynq_demo_handlers_register(struct casynq_mux *mux)
{
    static const struct {
        const char *type;
        casynq_handler_fn fn;
    } handlers[] = {
            {"demo:noop", demo_noop},   {"demo:echo", demo_echo},
            {"demo:sleep", demo_sleep}, {"demo:fail", demo_fail},
            {"demo:spin", demo_spin},
    };

    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        int rc = casynq_mux_handle(mux, handlers[i].type, handlers[i].fn, NULL);

        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}
