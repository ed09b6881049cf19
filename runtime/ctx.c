/* DESIGN: the handler context.
 *
 * A context is created by the loop thread for each dispatched task and
 * handed to a worker thread with the task. The handler reads the task's
 * metadata, records a failure message or a result, and may sleep in
 * casynq_ctx_wait(). Cancellation is the only cross-thread traffic while
 * the handler runs: the loop thread (deadline timer, cancel channel, lease
 * loss, shutdown) stores a reason atomically and signals the condition
 * variable; no other field is touched from two threads at once. The
 * context's mutex guards only the condition wait, and no user code runs
 * while it is held. */
#include "ctx.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "alloc.h"

int casynq__ctx_init(struct casynq_ctx *ctx, const Asynq__TaskMessage *msg,
                     int64_t deadline_unix_ms, const struct casynq__logger *lg)
{
    pthread_condattr_t attr;

    memset(ctx, 0, sizeof(*ctx));
    ctx->msg = msg;
    casynq__task_view_init(&ctx->task, msg);
    ctx->deadline_unix_ms = deadline_unix_ms;
    atomic_init(&ctx->cancel, CASYNQ__CANCEL_NONE);
    ctx->lg = lg;
    if (pthread_mutex_init(&ctx->mu, NULL) != 0) {
        return CASYNQ_ESYS;
    }
    /* The wait uses the monotonic clock so a wall-clock step cannot make
     * a handler sleep too long or too short. */
    if (pthread_condattr_init(&attr) != 0 ||
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&ctx->cond, &attr) != 0) {
        pthread_mutex_destroy(&ctx->mu);
        return CASYNQ_ESYS;
    }
    pthread_condattr_destroy(&attr);
    return 0;
}

void casynq__ctx_finish(struct casynq_ctx *ctx)
{
    pthread_cond_destroy(&ctx->cond);
    pthread_mutex_destroy(&ctx->mu);
    casynq__buf_free(&ctx->result);
}

bool casynq__ctx_cancel(struct casynq_ctx *ctx,
                        enum casynq__cancel_reason reason)
{
    int expected = CASYNQ__CANCEL_NONE;

    if (!atomic_compare_exchange_strong(&ctx->cancel, &expected, (int)reason)) {
        return false;
    }
    pthread_mutex_lock(&ctx->mu);
    pthread_cond_broadcast(&ctx->cond);
    pthread_mutex_unlock(&ctx->mu);
    return true;
}

enum casynq__cancel_reason casynq__ctx_cancel_reason(struct casynq_ctx *ctx)
{
    return (enum casynq__cancel_reason)atomic_load(&ctx->cancel);
}

const char *casynq__cancel_text(enum casynq__cancel_reason reason)
{
    switch (reason) {
    case CASYNQ__CANCEL_DEADLINE:
        return "context deadline exceeded";
    case CASYNQ__CANCEL_REQUEST:
    case CASYNQ__CANCEL_SHUTDOWN:
        return "context canceled";
    case CASYNQ__CANCEL_LEASE:
        return "asynq: task lease expired";
    case CASYNQ__CANCEL_NONE:
        break;
    }
    return "";
}

const char *casynq_ctx_task_id(const struct casynq_ctx *ctx)
{
    return ctx->msg->id;
}

const char *casynq_ctx_queue(const struct casynq_ctx *ctx)
{
    return ctx->msg->queue;
}

int casynq_ctx_retry_count(const struct casynq_ctx *ctx)
{
    return ctx->msg->retried;
}

int casynq_ctx_max_retry(const struct casynq_ctx *ctx)
{
    return ctx->msg->retry;
}

int64_t casynq_ctx_deadline_unix_ms(const struct casynq_ctx *ctx)
{
    return ctx->deadline_unix_ms;
}

bool casynq_ctx_is_cancelled(const struct casynq_ctx *ctx)
{
    struct casynq_ctx *c = (struct casynq_ctx *)(uintptr_t)ctx;

    return atomic_load(&c->cancel) != CASYNQ__CANCEL_NONE;
}

int casynq_ctx_wait(struct casynq_ctx *ctx, int64_t timeout_ms)
{
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ctx->mu);
    while (atomic_load(&ctx->cancel) == CASYNQ__CANCEL_NONE && rc == 0) {
        rc = pthread_cond_timedwait(&ctx->cond, &ctx->mu, &until);
    }
    pthread_mutex_unlock(&ctx->mu);
    return atomic_load(&ctx->cancel) != CASYNQ__CANCEL_NONE ? CASYNQ_ECANCELED
                                                            : 0;
}

int64_t casynq_ctx_write_result(struct casynq_ctx *ctx, const void *data,
                                size_t len)
{
    if (ctx == NULL || (data == NULL && len > 0)) {
        return CASYNQ_EINVAL;
    }
    if (casynq_ctx_is_cancelled(ctx)) {
        return CASYNQ_ECANCELED;
    }
    ctx->result.len = 0;
    if (casynq__buf_append(&ctx->result, data, len) != 0) {
        return CASYNQ_ENOMEM;
    }
    ctx->has_result = true;
    return (int64_t)len;
}

static int record_failure(struct casynq_ctx *ctx, int code, const char *fmt,
                          va_list ap)
{
    char raw[CASYNQ__ERRMSG_MAX];
    char *clean;

    vsnprintf(raw, sizeof(raw), fmt, ap);
    /* asynq's Go decoder rejects a message whose strings are not UTF-8,
     * so invalid bytes are replaced before they reach error_msg. */
    clean = casynq__utf8_sanitize(raw, strlen(raw));
    snprintf(ctx->errmsg, sizeof(ctx->errmsg), "%s",
             clean != NULL ? clean : "task failed");
    casynq__free(clean);
    ctx->has_errmsg = true;
    return code;
}

int casynq_ctx_fail(struct casynq_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = record_failure(ctx, CASYNQ_EHANDLER, fmt, ap);
    va_end(ap);
    return rc;
}

int casynq_ctx_skip_retry(struct casynq_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = record_failure(ctx, CASYNQ_ESKIP_RETRY, fmt, ap);
    va_end(ap);
    return rc;
}

void casynq_task_log(const struct casynq_ctx *ctx, enum casynq_log_level level,
                     const char *fmt, ...)
{
    char msg[CASYNQ__ERRMSG_MAX];
    va_list ap;

    if (level < ctx->lg->min_level) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    casynq__log(ctx->lg, level, __FILE__, __LINE__,
                "task id=%s type=%s queue=%s: %s", ctx->msg->id, ctx->msg->type,
                ctx->msg->queue, msg);
}
