#ifndef CASYNQ_RUNTIME_CTX_H
#define CASYNQ_RUNTIME_CTX_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "msg.h"
#include "task.h"

/* Maximum length of the failure message kept as a task's error_msg, in
 * bytes. */
#define CASYNQ__ERRMSG_MAX 1024

/* Reason a context was cancelled. The first reason set wins. */
enum casynq__cancel_reason {
    CASYNQ__CANCEL_NONE = 0,
    CASYNQ__CANCEL_DEADLINE = 1, /* "context deadline exceeded" */
    CASYNQ__CANCEL_REQUEST = 2,  /* asynq:cancel message: "context canceled" */
    CASYNQ__CANCEL_LEASE = 3,    /* "asynq: task lease expired" */
    CASYNQ__CANCEL_SHUTDOWN = 4, /* shutdown timeout: task is requeued */
};

/* The context of one running task. The loop thread fills it before the
 * handler starts and reads it after the handler returns; while the handler
 * runs, the worker thread owns every field except `cancel` (atomic) and
 * the wait condition, which the loop thread uses to cancel. */
struct casynq_ctx {
    const Asynq__TaskMessage *msg;   /* immutable while the handler runs */
    struct casynq_task task;         /* view over msg */
    int64_t deadline_unix_ms;        /* immutable while the handler runs */
    _Atomic int cancel;              /* enum casynq__cancel_reason, atomic */
    pthread_mutex_t mu;              /* guards nothing but the wait below */
    pthread_cond_t cond;             /* signalled on cancel */
    char errmsg[CASYNQ__ERRMSG_MAX]; /* worker thread while running */
    bool has_errmsg;
    struct casynq__buf result; /* worker thread while running */
    bool has_result;
    const struct casynq__logger *lg; /* immutable */
};

/* Prepares ctx for a task: a view over msg, the deadline, no cancel.
 * Returns: 0 or CASYNQ_ESYS when the condition variable cannot be made.
 * Thread: loop. */
int casynq__ctx_init(struct casynq_ctx *ctx, const Asynq__TaskMessage *msg,
                     int64_t deadline_unix_ms, const struct casynq__logger *lg);

/* Releases what init made and the result buffer. */
void casynq__ctx_finish(struct casynq_ctx *ctx);

/* Cancels the context for `reason` unless it is already cancelled, and
 * wakes a handler sleeping in casynq_ctx_wait().
 * Returns: true when this call cancelled it. Thread: any. */
bool casynq__ctx_cancel(struct casynq_ctx *ctx,
                        enum casynq__cancel_reason reason);

/* Returns the cancel reason, CASYNQ__CANCEL_NONE if not cancelled. */
enum casynq__cancel_reason casynq__ctx_cancel_reason(struct casynq_ctx *ctx);

/* Returns asynq's error text for a cancel reason. */
const char *casynq__cancel_text(enum casynq__cancel_reason reason);

#endif
