/* DESIGN: the processor, on the loop thread.
 *
 * Fetching, dispatch and outcomes follow asynq v0.26.0 (processor.go,
 * heartbeat.go, recoverer.go). Every function here runs on the loop
 * thread. A dequeue asks for as many tasks as there are idle workers, in
 * one script call across the queues in the order drawn for this fetch
 * (strict: by weight; weighted: drawn without replacement in proportion to
 * the weights). Each task becomes a job with a deadline timer and is handed
 * to the worker threads; finished jobs come back through the done queue.
 * When handlers are much shorter than a round trip to Redis, a fetch waits
 * briefly for more running tasks to finish (gather). The done writes of
 * finished tasks travel with the next dequeue, so each round trip serves
 * many tasks.
 *
 * After a fetch finds the queues empty, the server polls again after a
 * wait that starts at 1 ms and doubles up to the task check interval. In
 * the meantime a third connection blocks in BLMOVE on the pending list of
 * the highest-weight queue (arm_wake), so a task enqueued there starts at
 * once.
 *
 * Outcomes are decided here, never on a worker thread: success, retry,
 * archive, revoke, or nothing at all when the local lease expired (the
 * recoverer then owns the task). A deadline, a cancel request or a lost
 * lease decides the outcome at once, even when the handler ignores the
 * cancellation and keeps its worker busy: the task is retried or archived
 * on time, and the worker slot stays taken until the handler returns.
 *
 * Completion writes that cannot reach Redis are kept in srv->unsent and
 * sent again after the reconnect. A late write for a task that another
 * server's recoverer has already moved gets NOT FOUND and is dropped, so
 * a write never undoes someone else's decision. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "server.h"

#define DEFAULT_TIMEOUT_MS  (30 * 60 * 1000)
#define FETCH_ERROR_RETRY_S 1.0
#define ERROR_LOG_PERIOD_MS 3000
#define LEASE_MS            (CASYNQ__LEASE_S * 1000)
#define LEASE_CHUNK         256
/* Maximum wait for more free workers before a fetch (gather). */
#define GATHER_MAX_NS       1000000

uint64_t casynq__proc_random(struct casynq_server *srv)
{
    /* xorshift64*: fast, and good enough to shuffle queue order. */
    srv->rng ^= srv->rng >> 12;
    srv->rng ^= srv->rng << 25;
    srv->rng ^= srv->rng >> 27;
    return srv->rng * UINT64_C(2685821657736338717);
}

/* Writes the queue order for one fetch into order[]. */
static void queue_order(struct casynq_server *srv, int *order)
{
    int n = srv->cfg.nqueues;
    int64_t total = 0;
    bool *used = srv->used;

    if (srv->cfg.strict || n == 1) {
        memcpy(order, srv->strict_order, (size_t)n * sizeof(*order));
        return;
    }
    for (int i = 0; i < n; i++) {
        used[i] = false;
        total += srv->cfg.queues[i].weight;
    }
    for (int k = 0; k < n; k++) {
        int64_t pick = (int64_t)(casynq__proc_random(srv) % (uint64_t)total);

        for (int i = 0; i < n; i++) {
            if (used[i]) {
                continue;
            }
            pick -= srv->cfg.queues[i].weight;
            if (pick < 0) {
                order[k] = i;
                used[i] = true;
                total -= srv->cfg.queues[i].weight;
                break;
            }
        }
    }
}

static void active_add(struct casynq_server *srv, struct casynq__job *job)
{
    job->prev = NULL;
    job->next = srv->active;
    if (srv->active != NULL) {
        srv->active->prev = job;
    }
    srv->active = job;
    job->in_active_list = true;
    srv->nactive++;
}

static void active_remove(struct casynq_server *srv, struct casynq__job *job)
{
    if (!job->in_active_list) {
        return;
    }
    if (job->prev != NULL) {
        job->prev->next = job->next;
    } else {
        srv->active = job->next;
    }
    if (job->next != NULL) {
        job->next->prev = job->prev;
    }
    job->prev = NULL;
    job->next = NULL;
    job->in_active_list = false;
    srv->nactive--;
}

static void on_write_reply(struct casynq__aconn *conn, redisReply *r,
                           struct casynq__cmd *cmd, void *ud);

static void keep_unsent(struct casynq_server *srv,
                        struct casynq__pending_write *pw)
{
    pw->next = srv->unsent;
    srv->unsent = pw;
}

static void dispatch_write(struct casynq_server *srv,
                           struct casynq__pending_write *pw)
{
    if (casynq__aconn_send(&srv->rconn, &pw->cmd, on_write_reply, pw) != 0) {
        keep_unsent(srv, pw);
    }
}

void casynq__proc_send_write(struct casynq_server *srv, struct casynq__cmd *cmd,
                             const char *id, const char *queue,
                             const char *what)
{
    struct casynq__pending_write *pw = casynq__calloc(1, sizeof(*pw));

    if (pw == NULL) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
                   "out of memory: %s of task id=%s queue=%s not written; "
                   "the recoverer will retry the task",
                   what, id, queue);
        casynq__cmd_free(cmd);
        return;
    }
    snprintf(pw->id, sizeof(pw->id), "%s", id);
    snprintf(pw->queue, sizeof(pw->queue), "%s", queue);
    pw->what = what;
    pw->srv = srv;
    pw->cmd = *cmd;
    memset(cmd, 0, sizeof(*cmd));
    cmd->script = -1;
    dispatch_write(srv, pw);
}

static void on_write_reply(struct casynq__aconn *conn, redisReply *r,
                           struct casynq__cmd *cmd, void *ud)
{
    struct casynq__pending_write *pw = ud;
    struct casynq_server *srv = pw->srv;
    char err[CASYNQ__ERRBUF_SIZE];
    int rc;

    (void)conn;
    if (r == NULL) {
        /* Keep the command for the resend after the reconnect. */
        pw->cmd = *cmd;
        memset(cmd, 0, sizeof(*cmd));
        cmd->script = -1;
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "%s of task id=%s queue=%s not written: redis connection "
                   "lost; it will be written after the reconnect",
                   pw->what, pw->id, pw->queue);
        keep_unsent(srv, pw);
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER) {
        rc = 0;
    } else if (r->type == REDIS_REPLY_ARRAY) {
        /* done_batch: 0 marks a task another actor already moved. */
        size_t gone = 0;

        for (size_t i = 0; i < r->elements; i++) {
            gone += r->element[i]->type == REDIS_REPLY_INTEGER &&
                    r->element[i]->integer == 0;
        }
        rc = 0;
        if (gone > 0) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                       "%s of %zu tasks in queue %s: %zu were no longer "
                       "active (another server or the recoverer moved them)",
                       pw->what, r->elements, pw->queue, gone);
        }
    } else {
        rc = casynq__broker_parse_status(r, err);
    }
    if (rc == CASYNQ_ENOTFOUND) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "%s of task id=%s queue=%s skipped: %s", pw->what, pw->id,
                   pw->queue, err);
    } else if (rc != 0) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
                   "%s of task id=%s queue=%s failed: %s", pw->what, pw->id,
                   pw->queue, err);
    }
    casynq__free(pw);
}

void casynq__proc_flush_unsent(struct casynq_server *srv)
{
    struct casynq__pending_write *list = srv->unsent;

    if (list == NULL || !casynq__aconn_ready(&srv->rconn)) {
        return;
    }
    srv->unsent = NULL;
    /* The list is newest first; send oldest first to keep the order. */
    struct casynq__pending_write *rev = NULL;
    while (list != NULL) {
        struct casynq__pending_write *next = list->next;

        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev != NULL) {
        struct casynq__pending_write *next = rev->next;

        rev->next = NULL;
        dispatch_write(srv, rev);
        rev = next;
    }
}

/* Encodes msg with error_msg and last_failed_at replaced, without changing
 * the decoded message the job keeps. */
static int encode_failed(Asynq__TaskMessage *msg, const char *errtext,
                         int64_t now_s, bool count_retry,
                         struct casynq__buf *out)
{
    char *saved_err = msg->error_msg;
    int64_t saved_failed = msg->last_failed_at;
    int32_t saved_retried = msg->retried;
    int rc;

    msg->error_msg = (char *)(uintptr_t)errtext;
    msg->last_failed_at = now_s;
    if (count_retry) {
        msg->retried++;
    }
    rc = casynq__msg_encode(msg, out);
    msg->error_msg = saved_err;
    msg->last_failed_at = saved_failed;
    msg->retried = saved_retried;
    return rc;
}

static int64_t retry_delay_ms(struct casynq_server *srv,
                              const Asynq__TaskMessage *msg, int err,
                              const char *errtext)
{
    struct casynq_task view;

    if (srv->cfg.retry_delay == NULL) {
        return casynq__default_retry_delay_ms(msg->retried,
                                              casynq__proc_random(srv));
    }
    casynq__task_view_init(&view, msg);
    int64_t ms = srv->cfg.retry_delay(msg->retried, err, errtext, &view,
                                      srv->cfg.retry_delay_ud);
    return ms < 0 ? 0 : ms;
}

static bool is_failure(struct casynq_server *srv, int err, const char *errtext)
{
    if (srv->cfg.is_failure == NULL) {
        return true;
    }
    return srv->cfg.is_failure(err, errtext, srv->cfg.is_failure_ud);
}

/* The outcome of write_failure() for a task. */
enum failure_outcome {
    OUTCOME_RETRIED,            /* retried, counted as a failure */
    OUTCOME_RETRIED_NO_FAILURE, /* retried, not a failure (is_failure) */
    OUTCOME_ARCHIVED,
    OUTCOME_NOT_WRITTEN, /* out of memory: the recoverer retries it */
};

/* Retries or archives a failed task. Shared by the processor and the
 * recoverer; msg is only read. */
static enum failure_outcome write_failure(struct casynq_server *srv,
                                          Asynq__TaskMessage *msg, int err,
                                          const char *errtext, bool skip_retry)
{
    struct casynq__buf buf = {0};
    struct casynq__cmd cmd;
    int64_t now_s = casynq__now_unix_s();

    if (skip_retry || msg->retried >= msg->retry) {
        if (encode_failed(msg, errtext, now_s, false, &buf) != 0) {
            goto out_nomem;
        }
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "task id=%s type=%s queue=%s archived after %d retries%s: "
                   "%s",
                   msg->id, msg->type, msg->queue, msg->retried,
                   skip_retry ? " (retry skipped)" : "", errtext);
        casynq__broker_archive(&cmd, msg->queue, msg->id, buf.data, buf.len,
                               now_s);
        casynq__proc_send_write(srv, &cmd, msg->id, msg->queue, "archive");
        casynq__buf_free(&buf);
        return OUTCOME_ARCHIVED;
    }

    bool failure = is_failure(srv, err, errtext);
    int64_t delay_ms = retry_delay_ms(srv, msg, err, errtext);
    int64_t retry_at = now_s + (delay_ms + 999) / 1000;

    if (encode_failed(msg, errtext, now_s, failure, &buf) != 0) {
        goto out_nomem;
    }
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
               "task id=%s type=%s queue=%s failed (retry %d of %d in %lld "
               "s): %s",
               msg->id, msg->type, msg->queue, msg->retried + (failure ? 1 : 0),
               msg->retry, (long long)(retry_at - now_s), errtext);
    casynq__broker_retry(&cmd, msg->queue, msg->id, buf.data, buf.len, retry_at,
                         failure, now_s);
    casynq__proc_send_write(srv, &cmd, msg->id, msg->queue, "retry");
    casynq__buf_free(&buf);
    return failure ? OUTCOME_RETRIED : OUTCOME_RETRIED_NO_FAILURE;

out_nomem:
    casynq__buf_free(&buf);
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
               "out of memory recording the failure of task id=%s queue=%s; "
               "the recoverer will retry it",
               msg->id, msg->queue);
    return OUTCOME_NOT_WRITTEN;
}

/* Counts a failed attempt of a task of queue q (index into cfg.queues)
 * and metrics type slot, with what write_failure() did with it. A retry
 * that is no failure (the is_failure predicate) uses up no retry, and
 * asynq does not count it as failed either. */
static void count_failure(struct casynq_server *srv, int q, int slot,
                          enum failure_outcome outcome)
{
    if (outcome != OUTCOME_RETRIED_NO_FAILURE) {
        casynq__metrics_count(srv->metrics, q, slot, CASYNQ__TC_FAILED);
    }
    if (outcome == OUTCOME_RETRIED || outcome == OUTCOME_RETRIED_NO_FAILURE) {
        casynq__metrics_count(srv->metrics, q, slot, CASYNQ__TC_RETRIED);
    } else if (outcome == OUTCOME_ARCHIVED) {
        casynq__metrics_count(srv->metrics, q, slot, CASYNQ__TC_ARCHIVED);
    }
}

/* Returns the metrics type slot of type, or -1 when metrics are off. */
static int type_slot(struct casynq_server *srv, const char *type)
{
    if (srv->metrics == NULL) {
        return -1;
    }
    return casynq__metrics_type_slot(srv->metrics, type);
}

/* Ends a job's claim on its task: no more lease extension, no deadline. */
static void release_job(struct casynq_server *srv, struct casynq__job *job)
{
    job->decided = true;
    ev_timer_stop(srv->loop, &job->deadline_timer);
    active_remove(srv, job);
}

static bool lease_valid(const struct casynq__job *job)
{
    return casynq__now_unix_ns() / 1000000 <= job->lease_expiry_unix_ms;
}

static void decide_failure(struct casynq_server *srv, struct casynq__job *job,
                           int err, const char *errtext)
{
    struct casynq__cmd cmd;
    struct casynq_task view;

    release_job(srv, job);
    if (!lease_valid(job)) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "task id=%s type=%s queue=%s failed (%s) after its lease "
                   "expired; leaving it to the recoverer",
                   job->msg->id, job->msg->type, job->msg->queue, errtext);
        casynq__metrics_count(srv->metrics, job->queue_index, job->type_slot,
                              CASYNQ__TC_FAILED);
        return;
    }
    if (srv->cfg.error_handler != NULL) {
        casynq__task_view_init(&view, job->msg);
        srv->cfg.error_handler(&view, job->msg->id, job->msg->queue, err,
                               errtext, srv->cfg.error_handler_ud);
    }
    if (err == CASYNQ_EREVOKE) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
                   "task id=%s type=%s queue=%s revoked by its handler: "
                   "deleted without retry or archive",
                   job->msg->id, job->msg->type, job->msg->queue);
        casynq__broker_done(&cmd, job->msg->queue, job->msg->id,
                            job->msg->unique_key, casynq__now_unix_s());
        casynq__proc_send_write(srv, &cmd, job->msg->id, job->msg->queue,
                                "revoke");
        casynq__metrics_count(srv->metrics, job->queue_index, job->type_slot,
                              CASYNQ__TC_REVOKED);
        return;
    }
    count_failure(srv, job->queue_index, job->type_slot,
                  write_failure(srv, job->msg, err, errtext,
                                err == CASYNQ_ESKIP_RETRY));
}

static void decide_success(struct casynq_server *srv, struct casynq__job *job)
{
    Asynq__TaskMessage *msg = job->msg;
    int64_t now_s = casynq__now_unix_s();
    struct casynq__buf buf = {0};
    struct casynq__cmd cmd;

    release_job(srv, job);
    if (!lease_valid(job)) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "task id=%s type=%s queue=%s succeeded after its lease "
                   "expired; leaving it to the recoverer",
                   msg->id, msg->type, msg->queue);
        /* The recoverer records this attempt as a failure. */
        casynq__metrics_count(srv->metrics, job->queue_index, job->type_slot,
                              CASYNQ__TC_FAILED);
        return;
    }
    casynq__metrics_count(srv->metrics, job->queue_index, job->type_slot,
                          CASYNQ__TC_SUCCEEDED);
    if (job->ctx.has_result) {
        casynq__broker_write_result(&cmd, msg->queue, msg->id,
                                    job->ctx.result.data, job->ctx.result.len);
        casynq__proc_send_write(srv, &cmd, msg->id, msg->queue, "result write");
    }
    if (msg->retention <= 0) {
        /* Sent with the other queued done writes, in one script call per
         * queue, just before the next dequeue or at once when no fetch
         * follows (flush_done_batch). */
        job->done_queued = true;
        job->qnext = srv->done_batch;
        srv->done_batch = job;
        return;
    }
    int64_t saved = msg->completed_at;
    msg->completed_at = now_s;
    int rc = casynq__msg_encode(msg, &buf);
    msg->completed_at = saved;
    if (rc != 0) {
        casynq__buf_free(&buf);
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
                   "out of memory completing task id=%s queue=%s", msg->id,
                   msg->queue);
        return;
    }
    casynq__broker_mark_complete(&cmd, msg->queue, msg->id, buf.data, buf.len,
                                 msg->unique_key, now_s, msg->retention);
    casynq__proc_send_write(srv, &cmd, msg->id, msg->queue, "complete");
    casynq__buf_free(&buf);
}

/* Decides the outcome at once for a task cancelled by its deadline, a
 * cancel request or lease loss, whether or not its handler returned. */
static void cancel_and_decide(struct casynq_server *srv,
                              struct casynq__job *job,
                              enum casynq__cancel_reason reason)
{
    if (job->decided) {
        return;
    }
    casynq__ctx_cancel(&job->ctx, reason);
    if (reason == CASYNQ__CANCEL_DEADLINE) {
        casynq__metrics_count(srv->metrics, job->queue_index, job->type_slot,
                              CASYNQ__TC_DEADLINE);
    }
    decide_failure(srv, job,
                   reason == CASYNQ__CANCEL_REQUEST ? CASYNQ_ECANCELED
                                                    : CASYNQ_ETIMEDOUT,
                   casynq__cancel_text(reason));
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq__job *job = w->data;

    (void)loop;
    (void)revents;
    cancel_and_decide(job->srv, job, CASYNQ__CANCEL_DEADLINE);
}

void casynq__proc_cancel_task(struct casynq_server *srv, const char *id,
                              size_t id_len)
{
    for (struct casynq__job *job = srv->active; job != NULL; job = job->next) {
        if (strlen(job->msg->id) == id_len &&
            memcmp(job->msg->id, id, id_len) == 0) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
                       "task id=%s type=%s queue=%s canceled by request",
                       job->msg->id, job->msg->type, job->msg->queue);
            cancel_and_decide(srv, job, CASYNQ__CANCEL_REQUEST);
            return;
        }
    }
}

/* asynq's effective deadline (processor.go, perform): the earlier of
 * start + timeout and the message deadline, 30 minutes when neither. */
static int64_t task_deadline_ms(const Asynq__TaskMessage *msg, int64_t now_ms)
{
    int64_t by_timeout = msg->timeout > 0 ? now_ms + msg->timeout * 1000 : 0;
    int64_t by_deadline = msg->deadline > 0 ? msg->deadline * 1000 : 0;

    if (by_timeout == 0 && by_deadline == 0) {
        return now_ms + DEFAULT_TIMEOUT_MS;
    }
    if (by_timeout == 0) {
        return by_deadline;
    }
    if (by_deadline == 0) {
        return by_timeout;
    }
    return by_timeout < by_deadline ? by_timeout : by_deadline;
}

void casynq__job_free(struct casynq__job *job)
{
    if (job == NULL) {
        return;
    }
    casynq__ctx_finish(&job->ctx);
    casynq__msg_free(job->msg);
    casynq__free(job);
}

/* Archives a task whose message cannot be decoded, keeping the original
 * bytes as the payload of a replacement message that asynq's tools can
 * read, so the queue's recovery is not blocked by it. */
static void archive_undecodable(struct casynq_server *srv, int q,
                                const char *queue, const char *id,
                                size_t id_len, const char *raw, size_t raw_len)
{
    Asynq__TaskMessage msg;
    char idbuf[256];
    char *clean_id;
    int slot;

    snprintf(idbuf, sizeof(idbuf), "%.*s", (int)id_len, id);
    clean_id = casynq__utf8_sanitize(idbuf, strlen(idbuf));
    asynq__task_message__init(&msg);
    msg.type = (char *)(uintptr_t) "casynq:undecodable";
    msg.id = clean_id != NULL ? clean_id : idbuf;
    msg.queue = (char *)(uintptr_t)queue;
    msg.payload.data = (uint8_t *)(uintptr_t)raw;
    msg.payload.len = raw_len;
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
               "task id=%s queue=%s has an undecodable message (%zu bytes); "
               "archiving it with the original bytes as its payload",
               idbuf, queue, raw_len);
    slot = type_slot(srv, msg.type);
    count_failure(srv, q, slot,
                  write_failure(srv, &msg, CASYNQ_EPROTO,
                                "casynq: cannot decode the task message; "
                                "the original bytes are kept as the payload",
                                true));
    casynq__free(clean_id);
}

static void start_job(struct casynq_server *srv, int queue_index,
                      Asynq__TaskMessage *msg, int64_t pending_since_ns)
{
    int64_t now_ns = casynq__now_unix_ns();
    int64_t now_ms = now_ns / 1000000;
    struct casynq__job *job = casynq__calloc(1, sizeof(*job));
    int64_t deadline_ms = task_deadline_ms(msg, now_ms);

    if (job == NULL ||
        casynq__ctx_init(&job->ctx, msg, deadline_ms, srv->lg) != 0) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
                   "cannot start task id=%s queue=%s (out of memory); the "
                   "recoverer will retry it after its lease expires",
                   msg->id, msg->queue);
        casynq__free(job);
        casynq__msg_free(msg);
        return;
    }
    job->srv = srv;
    job->msg = msg;
    job->queue_index = queue_index;
    job->type_slot = type_slot(srv, msg->type);
    job->start_unix_ms = now_ms;
    job->start_mono_ns = casynq__mono_ns();
    job->lease_expiry_unix_ms = now_ms + LEASE_MS;
    active_add(srv, job);
    casynq__metrics_count(srv->metrics, queue_index, job->type_slot,
                          CASYNQ__TC_STARTED);
    casynq__metrics_observe_wait(srv->metrics, queue_index, pending_since_ns,
                                 now_ns);
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_DEBUG,
               "task id=%s type=%s queue=%s started, deadline in %lld ms",
               msg->id, msg->type, msg->queue,
               (long long)(deadline_ms - now_ms));
    if (deadline_ms <= now_ms) {
        /* asynq fails a task whose deadline already passed without
         * running its handler. */
        cancel_and_decide(srv, job, CASYNQ__CANCEL_DEADLINE);
        casynq__job_free(job);
        return;
    }
    /* libev counts the delay from its cached loop time, which may be
     * older than now_ms; refresh it so the timer cannot fire early. */
    ev_now_update(srv->loop);
    ev_timer_init(&job->deadline_timer, on_deadline,
                  (double)(deadline_ms - now_ms) / 1000.0, 0.0);
    job->deadline_timer.data = job;
    ev_timer_start(srv->loop, &job->deadline_timer);
    srv->busy++;
    casynq__metrics_set_busy(srv->metrics, srv->busy);
    casynq__server_submit(srv, job);
}

static void flush_done_batch(struct casynq_server *srv);
static void arm_wake(struct casynq_server *srv, double wait_s);

/* Moves the moving average *avg an eighth of the way to sample; the first
 * sample sets it. */
static void update_average(int64_t *avg, int64_t sample)
{
    *avg = *avg == 0 ? sample : *avg + (sample - *avg) / 8;
}

static void on_dequeue(struct casynq__aconn *conn, redisReply *r,
                       struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;
    struct casynq__dequeued got[64];
    char err[CASYNQ__ERRBUF_SIZE];
    bool woken = srv->fetch_woken;
    int n;

    (void)conn;
    (void)cmd;
    srv->fetching = false;
    srv->fetch_woken = false;
    if (r != NULL) {
        update_average(&srv->rtt_avg_ns,
                       casynq__mono_ns() - srv->fetch_sent_ns);
    }
    n = r != NULL ? casynq__broker_parse_dequeue(r, got, 64, err)
                  : casynq__fail(err, CASYNQ_ECONNECT, "redis connection lost");
    if (n < 0) {
        int64_t now = casynq__mono_ms();

        /* NOTE: when the connection dropped after Redis ran the script,
         * the tasks it moved are active under a lease that no server extends;
         * the recoverer retries them later, as asynq's would. */

        if (now - srv->last_fetch_error_log_ms >= ERROR_LOG_PERIOD_MS) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR, "dequeue failed: %s", err);
            srv->last_fetch_error_log_ms = now;
        }
        ev_timer_set(&srv->fetch_timer, FETCH_ERROR_RETRY_S, 0.0);
        ev_timer_start(srv->loop, &srv->fetch_timer);
        srv->idle_timer = false;
        flush_done_batch(srv);
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *queue = srv->fetch_queues[got[i].queue_index];
        /* The script numbers queues in this fetch's order; jobs keep the
         * index into cfg.queues, which the lease extension and the
         * metrics use. */
        int q = srv->order[got[i].queue_index];

        if (got[i].msg == NULL) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                       "task id=%.*s queue=%s was pending without a task "
                       "record; dropped it from the active list",
                       (int)got[i].id_len, got[i].id, queue);
            continue;
        }
        Asynq__TaskMessage *msg =
                casynq__msg_decode(got[i].msg, got[i].msg_len);
        if (msg == NULL) {
            archive_undecodable(srv, q, queue, got[i].id, got[i].id_len,
                                got[i].msg, got[i].msg_len);
            continue;
        }
        start_job(srv, q, msg, got[i].pending_since_ns);
    }
    if (n == 0) {
        /* asynq sleeps a random time in [interval/2, 3*interval/2) after
         * every empty fetch, which puts up to 1.5 s between a task's
         * arrival and its start. casynq checks again after 1 ms and
         * doubles the wait while the queues stay empty, up to that same
         * jittered interval. A task arriving soon after the last one is
         * picked up at once, and an idle server still polls about once a
         * second. */
        double base = (double)srv->cfg.task_check_interval_ms / 1000.0;
        double jitter = (double)(casynq__proc_random(srv) % 1000) / 1000.0;
        double wait = base * (0.5 + jitter);
        double backoff = (double)srv->idle_wait_ms / 1000.0;

        if (backoff < wait) {
            wait = backoff;
            srv->idle_wait_ms *= 2;
        }
        ev_timer_set(&srv->fetch_timer, wait, 0.0);
        ev_timer_start(srv->loop, &srv->fetch_timer);
        srv->idle_timer = true;
        /* After a wake that found nothing (another server took the task,
         * or the queue is paused), the next wait is the timer's alone. So a
         * paused queue with pending tasks cannot wake the server in a loop. */
        if (!woken) {
            arm_wake(srv, wait);
        }
        flush_done_batch(srv);
        return;
    }
    srv->idle_wait_ms = CASYNQ__IDLE_WAIT_MIN_MS;
    casynq__proc_try_fetch(srv);
}

/* Shortest wait arm_wake() requests from Redis, in seconds, because 0
 * would block forever. The longest is half of the command timeout less
 * WAKE_LATE_S, an estimate of how late Redis may reply to a wait that
 * timed out. So the connection's watchdog never mistakes a wait for a
 * dead connection. */
#define WAKE_MIN_S  0.01
#define WAKE_LATE_S 0.25

/* Returns whether a wait's error reply means this Redis never runs BLMOVE
 * for us: an unknown command (before 6.2) or an ACL denial. Errors such as
 * OOM, MISCONF or READONLY pass, and the next idle poll tries again. */
static bool wake_rejected_for_good(const char *err)
{
    return strncmp(err, "ERR unknown command", 19) == 0 ||
           strncmp(err, "NOPERM", 6) == 0;
}

static void on_wake(struct casynq__aconn *conn, redisReply *r,
                    struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;
    bool idle = srv->idle_timer && ev_is_active(&srv->fetch_timer);

    (void)conn;
    (void)cmd;
    srv->wake_waiting = false;
    if (r == NULL) {
        /* The connection dropped or closed, and the timer still polls. */
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && wake_rejected_for_good(r->str)) {
        srv->wake_off = true;
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
                   "redis rejected BLMOVE (%s); an idle server now picks up "
                   "new tasks at its next poll, within the task check "
                   "interval (BLMOVE needs Redis 6.2 or later and the ACL "
                   "permission to run it)",
                   r->str);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        int64_t now = casynq__mono_ms();

        if (now - srv->last_wake_error_log_ms >= ERROR_LOG_PERIOD_MS) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                       "waiting for new tasks with BLMOVE failed: %s; the "
                       "idle poll goes on and tries the wait again",
                       r->str);
            srv->last_wake_error_log_ms = now;
        }
        return;
    }
    if (!idle) {
        return;
    }
    if (r->type == REDIS_REPLY_NIL) {
        /* The wait ended before the timer; wait again for the rest. */
        arm_wake(srv, ev_timer_remaining(srv->loop, &srv->fetch_timer));
        return;
    }
    ev_timer_stop(srv->loop, &srv->fetch_timer);
    srv->idle_timer = false;
    srv->fetch_woken = true;
    casynq__proc_try_fetch(srv);
    if (!srv->fetching) {
        srv->fetch_woken = false;
    }
}

/* While the server is idle, blocks on the pending list of its
 * highest-weight queue for up to wait_s, so that a task enqueued there
 * starts at once instead of at the next poll. BLMOVE from the list's
 * right end to its right end leaves the list as it was, although Redis
 * counts it as a write (replicated and appended to the AOF) when the list
 * has a task. Other queues are still found by the poll. */
static void arm_wake(struct casynq_server *srv, double wait_s)
{
    double max_s =
            ((double)srv->cfg.redis.command_timeout_ms / 1000.0 - WAKE_LATE_S) /
            2.0;
    struct casynq__cmd cmd;

    if (srv->wake_off || srv->wake_waiting || max_s < WAKE_MIN_S ||
        !casynq__aconn_ready(&srv->wconn)) {
        return;
    }
    if (wait_s > max_s) {
        wait_s = max_s;
    }
    if (wait_s < WAKE_MIN_S) {
        wait_s = WAKE_MIN_S;
    }
    casynq__broker_wait_pending(
            &cmd, srv->fetch_queues_all[srv->strict_order[0]], wait_s);
    if (casynq__aconn_send(&srv->wconn, &cmd, on_wake, srv) != 0) {
        casynq__cmd_free(&cmd);
        return;
    }
    srv->wake_waiting = true;
}

/* Returns whether a fetch should wait for more running tasks to finish
 * first, so that one dequeue serves several idle workers. Tasks with
 * handlers much shorter than a dequeue round trip finish together when
 * they start together. Fetching at the first one's end would send a
 * dequeue for one or two tasks, and each round trip costs Redis a read, a
 * write and a wake-up whatever its size.
 *
 * The wait ends when all running tasks are back, or one average round
 * trip (at most GATHER_MAX_NS) after the newest task started. Tasks still
 * running then count as slow, and the free workers fetch without them.
 * When handlers run for a quarter of a round trip or longer, no fetch
 * waits. */
static bool gather(struct casynq_server *srv, int free_slots)
{
    const struct casynq__job *newest = srv->active;
    int64_t window = srv->rtt_avg_ns;
    int64_t left;

    if (srv->busy == 0 || free_slots >= srv->cfg.concurrency ||
        newest == NULL || 4 * srv->run_avg_ns >= srv->rtt_avg_ns) {
        return false;
    }
    if (window > GATHER_MAX_NS) {
        window = GATHER_MAX_NS;
    }
    left = newest->start_mono_ns + window - casynq__mono_ns();
    if (left <= 0) {
        return false;
    }
    if (!ev_is_active(&srv->gather_timer)) {
        ev_timer_set(&srv->gather_timer, (double)left / 1e9, 0.0);
        ev_timer_start(srv->loop, &srv->gather_timer);
    }
    return true;
}

void casynq__proc_try_fetch(struct casynq_server *srv)
{
    int *order = srv->order;
    struct casynq__cmd cmd;
    int free_slots = srv->cfg.concurrency - srv->busy;

    /* Done writes wait for the next fetch, so that both reach Redis in one
     * write. While a dequeue is in flight, they go with the next one, which
     * its reply sends. */
    if (srv->fetching) {
        return;
    }
    if (srv->shutting_down || srv->status != CASYNQ__STATUS_ACTIVE ||
        free_slots <= 0 || ev_is_active(&srv->fetch_timer) ||
        !casynq__aconn_ready(&srv->rconn)) {
        flush_done_batch(srv);
        return;
    }
    if (gather(srv, free_slots)) {
        return;
    }
    ev_timer_stop(srv->loop, &srv->gather_timer);
    flush_done_batch(srv);
    if (free_slots > 64) {
        free_slots = 64;
    }
    queue_order(srv, order);
    for (int i = 0; i < srv->cfg.nqueues; i++) {
        srv->fetch_queues[i] = srv->cfg.queues[order[i]].name;
    }
    casynq__broker_dequeue(&cmd, srv->fetch_queues, srv->cfg.nqueues,
                           casynq__now_unix_s() + CASYNQ__LEASE_S, free_slots);
    if (casynq__aconn_send(&srv->rconn, &cmd, on_dequeue, srv) != 0) {
        casynq__cmd_free(&cmd);
        return;
    }
    srv->fetching = true;
    srv->fetch_sent_ns = casynq__mono_ns();
}

/* Largest number of tasks in one done_batch call. */
#define DONE_BATCH_MAX 64

/* Sends the done writes queued by decide_success(), grouped by queue,
 * then frees their jobs. The list is newest first; reversing it
 * keeps the completion order within each queue. */
static void flush_done_batch(struct casynq_server *srv)
{
    struct casynq__done_item items[DONE_BATCH_MAX];
    struct casynq__job *todo = NULL;
    int64_t now_s = casynq__now_unix_s();

    while (srv->done_batch != NULL) {
        struct casynq__job *job = srv->done_batch;

        srv->done_batch = job->qnext;
        job->qnext = todo;
        todo = job;
    }
    while (todo != NULL) {
        int queue = todo->queue_index;
        struct casynq__job **link = &todo;
        struct casynq__job *taken = NULL;
        struct casynq__job **taken_tail = &taken;
        struct casynq__cmd cmd;
        int n = 0;

        /* Take up to DONE_BATCH_MAX jobs of the first job's queue. */
        while (*link != NULL && n < DONE_BATCH_MAX) {
            struct casynq__job *job = *link;

            if (job->queue_index != queue) {
                link = &job->qnext;
                continue;
            }
            *link = job->qnext;
            job->qnext = NULL;
            *taken_tail = job;
            taken_tail = &job->qnext;
            items[n].id = job->msg->id;
            items[n].unique_key = job->msg->unique_key;
            n++;
        }
        casynq__broker_done_batch(&cmd, srv->fetch_queues_all[queue], items, n,
                                  now_s);
        casynq__proc_send_write(srv, &cmd, n == 1 ? items[0].id : "-",
                                srv->fetch_queues_all[queue], "done");
        while (taken != NULL) {
            struct casynq__job *job = taken;

            taken = job->qnext;
            casynq__job_free(job);
        }
    }
}

void casynq__proc_drain_done(struct casynq_server *srv)
{
    struct casynq__job *list;

    pthread_mutex_lock(&srv->mu);
    list = srv->done_head;
    srv->done_head = NULL;
    srv->done_tail = NULL;
    pthread_mutex_unlock(&srv->mu);

    while (list != NULL) {
        struct casynq__job *job = list;
        char text[CASYNQ__ERRMSG_MAX];

        list = job->qnext;
        srv->busy--;
        update_average(&srv->run_avg_ns, job->run_ns);
        casynq__metrics_set_busy(srv->metrics, srv->busy);
        casynq__metrics_observe_duration(srv->metrics, job->type_slot,
                                         job->run_ns);
        if (job->decided) {
            casynq__job_free(job);
            continue;
        }
        if (job->result == 0) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_DEBUG,
                       "task id=%s type=%s queue=%s succeeded in %lld ms",
                       job->msg->id, job->msg->type, job->msg->queue,
                       (long long)(casynq__now_unix_ns() / 1000000 -
                                   job->start_unix_ms));
            decide_success(srv, job);
        } else {
            snprintf(text, sizeof(text), "%s",
                     job->ctx.has_errmsg ? job->ctx.errmsg
                                         : casynq_strerror(job->result));
            decide_failure(srv, job, job->result, text);
        }
        if (!job->done_queued) {
            casynq__job_free(job);
        }
    }
    casynq__proc_try_fetch(srv);
}

static void on_lease_reply(struct casynq__aconn *conn, redisReply *r,
                           struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;
    int64_t expiry_ms;

    (void)conn;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "lease extension failed: %s; retrying on the next beat",
                   r != NULL ? r->str : "redis connection lost");
        return;
    }
    /* The command is ZADD key XX <expiry> <id> ...: every id in it now
     * holds its lease until expiry. Arguments are not NUL-terminated. */
    char num[24];
    snprintf(num, sizeof(num), "%.*s", (int)cmd->argvlen[3], cmd->argv[3]);
    expiry_ms = (int64_t)strtoll(num, NULL, 10) * 1000;
    for (int i = 4; i < cmd->argc; i += 2) {
        for (struct casynq__job *job = srv->active; job != NULL;
             job = job->next) {
            if (strlen(job->msg->id) == cmd->argvlen[i] &&
                memcmp(job->msg->id, cmd->argv[i], cmd->argvlen[i]) == 0 &&
                expiry_ms > job->lease_expiry_unix_ms) {
                job->lease_expiry_unix_ms = expiry_ms;
            }
        }
    }
}

void casynq__proc_extend_leases(struct casynq_server *srv)
{
    int64_t now_ms = casynq__now_unix_ns() / 1000000;
    int64_t expiry_s = now_ms / 1000 + CASYNQ__LEASE_S;
    struct casynq__job *job = srv->active;

    /* Tasks whose local lease already ran out lose it: the recoverer of
     * some server owns them now (asynq heartbeat.go, beat). */
    while (job != NULL) {
        struct casynq__job *next = job->next;

        if (now_ms > job->lease_expiry_unix_ms) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                       "task id=%s type=%s queue=%s lost its lease; "
                       "canceling it",
                       job->msg->id, job->msg->type, job->msg->queue);
            cancel_and_decide(srv, job, CASYNQ__CANCEL_LEASE);
        }
        job = next;
    }
    /* One ZADD XX per queue, in chunks so a command stays small. */
    for (int q = 0; q < srv->cfg.nqueues; q++) {
        job = srv->active;
        while (job != NULL) {
            const char *ids[LEASE_CHUNK];
            struct casynq__cmd cmd;
            int n = 0;

            for (; job != NULL && n < LEASE_CHUNK; job = job->next) {
                if (job->queue_index == q) {
                    ids[n++] = job->msg->id;
                }
            }
            if (n == 0) {
                break;
            }
            casynq__broker_extend_lease(&cmd, srv->fetch_queues_all[q], ids, n,
                                        expiry_s);
            if (casynq__aconn_send(&srv->rconn, &cmd, on_lease_reply, srv) !=
                0) {
                casynq__cmd_free(&cmd);
            }
        }
    }
}

void casynq__proc_requeue_all(struct casynq_server *srv)
{
    struct casynq__job *job = srv->active;

    while (job != NULL) {
        struct casynq__job *next = job->next;
        struct casynq__cmd cmd;

        casynq__ctx_cancel(&job->ctx, CASYNQ__CANCEL_SHUTDOWN);
        release_job(srv, job);
        if (lease_valid(job)) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                       "task id=%s type=%s queue=%s still running at the "
                       "shutdown timeout; put back to pending",
                       job->msg->id, job->msg->type, job->msg->queue);
            casynq__broker_requeue(&cmd, job->msg->queue, job->msg->id);
            casynq__proc_send_write(srv, &cmd, job->msg->id, job->msg->queue,
                                    "requeue");
        }
        job = next;
    }
}

/* Returns the index in cfg.queues of the queue named name, or -1. */
static int queue_index_of(struct casynq_server *srv, const char *name)
{
    for (int q = 0; q < srv->cfg.nqueues; q++) {
        if (strcmp(srv->fetch_queues_all[q], name) == 0) {
            return q;
        }
    }
    return -1;
}

static void on_lease_expired_list(struct casynq__aconn *conn, redisReply *r,
                                  struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;
    char queue[CASYNQ__MAX_QUEUE_LEN + 1];
    /* KEYS[1] is asynq:{<queue>}:lease; arguments are not NUL-terminated. */
    size_t prefix = strlen("asynq:{");
    size_t qlen = cmd->argvlen[3] - prefix - strlen("}:lease");

    snprintf(queue, sizeof(queue), "%.*s", (int)qlen, cmd->argv[3] + prefix);
    (void)conn;
    int q = queue_index_of(srv, queue);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "recoverer could not list expired leases: %s",
                   r != NULL && r->type == REDIS_REPLY_ERROR
                           ? r->str
                           : "redis connection lost");
        return;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *id = r->element[i];
        redisReply *raw = r->element[i + 1];
        Asynq__TaskMessage *msg = casynq__msg_decode(raw->str, raw->len);

        if (msg == NULL) {
            archive_undecodable(srv, q, queue, id->str, id->len, raw->str,
                                raw->len);
            continue;
        }
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "recovering task id=%s type=%s queue=%s whose lease "
                   "expired",
                   msg->id, msg->type, msg->queue);
        casynq__metrics_count(srv->metrics, q, type_slot(srv, msg->type),
                              CASYNQ__TC_RECOVERED);
        write_failure(srv, msg, CASYNQ_ETIMEDOUT,
                      casynq__cancel_text(CASYNQ__CANCEL_LEASE), false);
        casynq__msg_free(msg);
    }
}

void casynq__proc_recover(struct casynq_server *srv)
{
    /* The 30 s margin absorbs clock skew between hosts (asynq
     * recoverer.go). */
    int64_t cutoff = casynq__now_unix_s() - CASYNQ__LEASE_S;

    for (int q = 0; q < srv->cfg.nqueues; q++) {
        struct casynq__cmd cmd;

        casynq__broker_list_lease_expired(&cmd, srv->fetch_queues_all[q],
                                          cutoff);
        if (casynq__aconn_send(&srv->rconn, &cmd, on_lease_expired_list, srv) !=
            0) {
            casynq__cmd_free(&cmd);
        }
    }
}
