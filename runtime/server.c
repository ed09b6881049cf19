/* DESIGN: the server: threads, timers and lifecycle.
 *
 * Threads: the caller's setup thread (create, start, shutdown, destroy),
 * one loop thread that owns the libev loop, the three Redis connections
 * and every timer, and cfg.concurrency worker threads that run handlers.
 * Workers take jobs from the run queue and put them on the done queue,
 * both under srv->mu, then wake the loop with ev_async_send. API calls from
 * other threads (stop, shutdown) set an atomic flag and wake the loop the
 * same way. Lock order: srv->mu, then a context's mutex; no user code runs
 * under either.
 *
 * Timers on the loop thread, with asynq v0.26.0's cadence: heartbeat every
 * 5 s (server state and lease extension, heartbeat.go), forwarder every
 * delayed-task interval (forwarder.go), recoverer at start and every 60 s
 * (recoverer.go), janitor every janitor interval (janitor.go), the
 * optional health check and, with a metrics address, the refresh of the
 * queue statistics (server_metrics.c). The cancel channel has its own
 * connection, because a subscribed Redis connection accepts no other
 * commands, and so has the blocking wait of an idle server (wconn).
 *
 * Shutdown (server.go, Shutdown): status "closed", no more fetching, wait
 * up to the shutdown timeout for running handlers, put the tasks of those
 * still running back to pending, send the writes that are still queued,
 * clear the heartbeat keys, then wait for every worker thread to return.
 * NOTE: a handler that ignores cancellation keeps its thread until it
 * returns, so shutdown waits for it after its task was already requeued. */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "conn.h"

#define HEARTBEAT_S     5.0
#define RECOVER_S       60.0
#define SHUTDOWN_POLL_S 0.05

static const char *status_text(enum casynq__status st)
{
    switch (st) {
    case CASYNQ__STATUS_ACTIVE:
        return "active";
    case CASYNQ__STATUS_STOPPED:
        return "stopped";
    case CASYNQ__STATUS_CLOSED:
        return "closed";
    }
    return "active";
}

/* Appends job to the queue of head and tail. The caller holds srv->mu. */
static void queue_push(struct casynq__job **head, struct casynq__job **tail,
                       struct casynq__job *job)
{
    job->qnext = NULL;
    if (*tail != NULL) {
        (*tail)->qnext = job;
    } else {
        *head = job;
    }
    *tail = job;
}

/* Wakes one idle worker when jobs are queued and no wake-up is under way.
 * Each woken worker that takes a job and leaves more behind wakes the next
 * one, so a batch of jobs wakes workers one after another rather than all
 * at once. Short jobs are then often all taken by the first workers before
 * the others wake, which saves a context switch per job. Call with srv->mu
 * held. */
static void wake_worker_locked(struct casynq_server *srv)
{
    if (srv->run_head != NULL && srv->wakes_pending == 0 &&
        srv->idle_workers > 0) {
        srv->wakes_pending = 1;
        pthread_cond_signal(&srv->run_cond);
    }
}

void casynq__server_submit(struct casynq_server *srv, struct casynq__job *job)
{
    pthread_mutex_lock(&srv->mu);
    queue_push(&srv->run_head, &srv->run_tail, job);
    wake_worker_locked(srv);
    pthread_mutex_unlock(&srv->mu);
}

static void *worker_main(void *arg)
{
    struct casynq_server *srv = arg;

    for (;;) {
        struct casynq__job *job;

        pthread_mutex_lock(&srv->mu);
        while (srv->run_head == NULL && !srv->workers_exit) {
            srv->idle_workers++;
            pthread_cond_wait(&srv->run_cond, &srv->mu);
            srv->idle_workers--;
            srv->wakes_pending = 0;
        }
        if (srv->run_head == NULL) {
            pthread_mutex_unlock(&srv->mu);
            return NULL;
        }
        job = srv->run_head;
        srv->run_head = job->qnext;
        if (srv->run_head == NULL) {
            srv->run_tail = NULL;
        }
        wake_worker_locked(srv);
        pthread_mutex_unlock(&srv->mu);

        int64_t begin_ns = casynq__mono_ns();

        if (casynq_ctx_is_cancelled(&job->ctx)) {
            job->result = CASYNQ_ECANCELED;
        } else {
            job->result =
                    casynq_mux_dispatch(srv->mux, &job->ctx, &job->ctx.task);
        }
        job->run_ns = casynq__mono_ns() - begin_ns;

        pthread_mutex_lock(&srv->mu);
        queue_push(&srv->done_head, &srv->done_tail, job);
        pthread_mutex_unlock(&srv->mu);
        ev_async_send(srv->loop, &srv->wake);
    }
}

/* Records a heartbeat that Redis accepted, for the metrics endpoint. */
static void on_heartbeat_reply(struct casynq__aconn *conn, redisReply *r,
                               struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;

    (void)conn;
    (void)cmd;
    if (r != NULL && r->type != REDIS_REPLY_ERROR) {
        atomic_store(&srv->metrics->heartbeat_ok_ms,
                     casynq__now_unix_ns() / 1000000);
    }
}

/* Heartbeat: ServerInfo, one WorkerInfo per active task, lease extension
 * and a flush of writes kept during an outage. */
static void write_heartbeat(struct casynq_server *srv)
{
    struct casynq__server_ident who = {srv->host, srv->pid, srv->server_id};
    Asynq__ServerInfo info;
    Google__Protobuf__Timestamp start;
    Asynq__ServerInfo__QueuesEntry *entries =
            casynq__calloc((size_t)srv->cfg.nqueues, sizeof(*entries));
    Asynq__ServerInfo__QueuesEntry **eptrs =
            casynq__calloc((size_t)srv->cfg.nqueues, sizeof(*eptrs));
    struct casynq__buf sbuf = {0};
    struct casynq__buf wbuf = {0};
    int n = srv->nactive;
    const char **ids = casynq__calloc((size_t)n + 1, sizeof(*ids));
    const char **infos = casynq__calloc((size_t)n + 1, sizeof(*infos));
    size_t *lens = casynq__calloc((size_t)n + 1, sizeof(*lens));
    size_t *offs = casynq__calloc((size_t)n + 1, sizeof(*offs));
    int64_t now_s = casynq__now_unix_s();
    struct casynq__cmd cmd;
    int i = 0;

    if (ids == NULL || infos == NULL || lens == NULL || offs == NULL ||
        entries == NULL || eptrs == NULL) {
        goto out;
    }
    asynq__server_info__init(&info);
    google__protobuf__timestamp__init(&start);
    start.seconds = srv->start_unix_s;
    info.host = srv->host;
    info.pid = srv->pid;
    info.server_id = srv->server_id;
    info.concurrency = srv->cfg.concurrency;
    for (int q = 0; q < srv->cfg.nqueues; q++) {
        asynq__server_info__queues_entry__init(&entries[q]);
        entries[q].key = srv->cfg.queues[q].name;
        entries[q].value = srv->cfg.queues[q].weight;
        eptrs[q] = &entries[q];
    }
    info.n_queues = (size_t)srv->cfg.nqueues;
    info.queues = eptrs;
    info.strict_priority = srv->cfg.strict;
    info.status = (char *)(uintptr_t)status_text(srv->status);
    info.start_time = &start;
    info.active_worker_count = n;
    if (casynq__server_info_encode(&info, &sbuf) != 0) {
        goto out;
    }
    for (struct casynq__job *job = srv->active; job != NULL && i < n;
         job = job->next, i++) {
        Asynq__WorkerInfo w;
        Google__Protobuf__Timestamp ts;
        Google__Protobuf__Timestamp dl;

        asynq__worker_info__init(&w);
        google__protobuf__timestamp__init(&ts);
        google__protobuf__timestamp__init(&dl);
        ts.seconds = job->start_unix_ms / 1000;
        ts.nanos = (int32_t)(job->start_unix_ms % 1000) * 1000000;
        dl.seconds = job->ctx.deadline_unix_ms / 1000;
        dl.nanos = (int32_t)(job->ctx.deadline_unix_ms % 1000) * 1000000;
        w.host = srv->host;
        w.pid = srv->pid;
        w.server_id = srv->server_id;
        w.task_id = job->msg->id;
        w.task_type = job->msg->type;
        w.task_payload = job->msg->payload;
        w.queue = job->msg->queue;
        w.start_time = &ts;
        w.deadline = &dl;
        ids[i] = job->msg->id;
        offs[i] = wbuf.len;
        if (casynq__worker_info_encode(&w, &wbuf) != 0) {
            goto out;
        }
        lens[i] = wbuf.len - offs[i];
    }
    for (int k = 0; k < i; k++) {
        infos[k] = wbuf.data + offs[k];
    }
    /* A heartbeat lost to an outage is not resent: the next one, 5 s
     * later, replaces it. */
    casynq__broker_servers_zadd(&cmd, &who, now_s + CASYNQ__HEARTBEAT_TTL_S);
    if (casynq__aconn_send(&srv->rconn, &cmd, NULL, NULL) != 0) {
        casynq__cmd_free(&cmd);
    }
    casynq__broker_workers_zadd(&cmd, &who, now_s + CASYNQ__HEARTBEAT_TTL_S);
    if (casynq__aconn_send(&srv->rconn, &cmd, NULL, NULL) != 0) {
        casynq__cmd_free(&cmd);
    }
    casynq__broker_write_server_state(&cmd, &who, sbuf.data, sbuf.len, ids,
                                      infos, lens, i, CASYNQ__HEARTBEAT_TTL_S);
    if (casynq__aconn_send(&srv->rconn, &cmd,
                           srv->metrics != NULL ? on_heartbeat_reply : NULL,
                           srv) != 0) {
        casynq__cmd_free(&cmd);
    }

out:
    casynq__free(entries);
    casynq__free(eptrs);
    casynq__free(ids);
    casynq__free(infos);
    casynq__free(lens);
    casynq__free(offs);
    casynq__buf_free(&sbuf);
    casynq__buf_free(&wbuf);
}

static void on_heartbeat(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;

    (void)loop;
    (void)revents;
    /* The idle-wait connection is unused while the server is busy. A PING
     * keeps a Redis with a client `timeout` from closing it. */
    if (!srv->wake_off && !srv->wake_waiting &&
        casynq__aconn_ready(&srv->wconn)) {
        struct casynq__cmd ping;

        casynq__cmd_init(&ping, "PING");
        if (casynq__aconn_send(&srv->wconn, &ping, NULL, NULL) != 0) {
            casynq__cmd_free(&ping);
        }
    }
    if (!casynq__aconn_ready(&srv->rconn)) {
        casynq__proc_extend_leases(srv);
        return;
    }
    casynq__proc_flush_unsent(srv);
    casynq__proc_extend_leases(srv);
    if (!srv->cleared) {
        write_heartbeat(srv);
    }
}

/* One queue's step of the forwarder or janitor, repeated until the script
 * reports 0 (nothing more due). */
struct sweep {
    struct casynq_server *srv;
    int queue;
    int phase; /* forwarder: 0 scheduled, 1 retry; janitor: 2 */
};

static void send_sweep(struct sweep *sw);

static void on_sweep_reply(struct casynq__aconn *conn, redisReply *r,
                           struct casynq__cmd *cmd, void *ud)
{
    struct sweep *sw = ud;
    struct casynq_server *srv = sw->srv;
    char err[CASYNQ__ERRBUF_SIZE];
    int64_t n;

    (void)conn;
    (void)cmd;
    n = r != NULL ? casynq__broker_parse_count(r, err) : -1;
    if (n < 0) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN, "%s of queue %s failed: %s",
                   sw->phase == 2 ? "janitor" : "forwarder",
                   srv->fetch_queues_all[sw->queue],
                   r != NULL ? err : "redis connection lost");
        casynq__free(sw);
        return;
    }
    if (n > 0) {
        if (sw->phase != 2) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_DEBUG,
                       "forwarded %lld %s tasks of queue %s to pending",
                       (long long)n, sw->phase == 0 ? "scheduled" : "retry",
                       srv->fetch_queues_all[sw->queue]);
            casynq__proc_try_fetch(srv);
        }
        send_sweep(sw);
        return;
    }
    if (sw->phase == 0) {
        sw->phase = 1;
        send_sweep(sw);
        return;
    }
    casynq__free(sw);
}

static void send_sweep(struct sweep *sw)
{
    struct casynq_server *srv = sw->srv;
    const char *queue = srv->fetch_queues_all[sw->queue];
    int64_t now_ns = casynq__now_unix_ns();
    struct casynq__cmd cmd;

    if (sw->phase == 2) {
        casynq__broker_delete_expired_completed(&cmd, queue,
                                                now_ns / 1000000000LL,
                                                srv->cfg.janitor_batch_size);
    } else {
        casynq__broker_forward(&cmd, queue,
                               sw->phase == 0 ? "scheduled" : "retry",
                               now_ns / 1000000000LL, now_ns);
    }
    if (casynq__aconn_send(&srv->rconn, &cmd, on_sweep_reply, sw) != 0) {
        casynq__cmd_free(&cmd);
        casynq__free(sw);
    }
}

static void start_sweeps(struct casynq_server *srv, int phase)
{
    for (int q = 0; q < srv->cfg.nqueues; q++) {
        struct sweep *sw = casynq__calloc(1, sizeof(*sw));

        if (sw == NULL) {
            return;
        }
        sw->srv = srv;
        sw->queue = q;
        sw->phase = phase;
        send_sweep(sw);
    }
}

static void on_forward_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;

    (void)loop;
    (void)revents;
    if (!srv->shutting_down) {
        start_sweeps(srv, 0);
    }
}

static void on_janitor_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    start_sweeps(w->data, 2);
}

static void on_recover_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;

    (void)loop;
    (void)revents;
    if (!srv->shutting_down) {
        casynq__proc_recover(srv);
    }
}

static void on_health_reply(struct casynq__aconn *conn, redisReply *r,
                            struct casynq__cmd *cmd, void *ud)
{
    struct casynq_server *srv = ud;

    (void)conn;
    (void)cmd;
    if (r != NULL && r->type != REDIS_REPLY_ERROR) {
        srv->cfg.health_check(0, "", srv->cfg.health_check_ud);
    } else {
        srv->cfg.health_check(CASYNQ_EREDIS,
                              r != NULL ? r->str : "redis connection lost",
                              srv->cfg.health_check_ud);
    }
}

static void on_health_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;
    struct casynq__cmd cmd;

    (void)loop;
    (void)revents;
    casynq__cmd_init(&cmd, "PING");
    if (casynq__aconn_send(&srv->rconn, &cmd, on_health_reply, srv) != 0) {
        casynq__cmd_free(&cmd);
        srv->cfg.health_check(CASYNQ_ECONNECT, "redis is not connected",
                              srv->cfg.health_check_ud);
    }
}

static void on_fetch_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    casynq__proc_try_fetch(w->data);
}

/* Messages on asynq:cancel carry the ID of a task to cancel. */
static void on_cancel_message(redisAsyncContext *ac, void *reply, void *ud)
{
    struct casynq_server *srv = ud;
    redisReply *r = reply;

    (void)ac;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING) {
        return;
    }
    casynq__proc_cancel_task(srv, r->element[2]->str, r->element[2]->len);
}

static void on_sub_connect(struct casynq__aconn *conn, void *ud)
{
    struct casynq_server *srv = ud;

    if (casynq__aconn_subscribe(conn, CASYNQ__CANCEL_CHANNEL, on_cancel_message,
                                srv) != 0) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "cannot subscribe to %s; cancel requests are ignored "
                   "until the next reconnect",
                   CASYNQ__CANCEL_CHANNEL);
    }
}

static void on_cmd_connect(struct casynq__aconn *conn, void *ud)
{
    struct casynq_server *srv = ud;

    (void)conn;
    /* Writes kept during the outage go first, then leases, so that a
     * recoverer elsewhere does not take tasks we still own. */
    casynq__proc_flush_unsent(srv);
    casynq__proc_extend_leases(srv);
    /* asynq writes the server state at start; the timer's first beat may
     * have come before the connection was up. */
    if (!srv->cleared) {
        write_heartbeat(srv);
    }
    casynq__server_metrics_refresh(srv);
    casynq__proc_try_fetch(srv);
}

static void finish_loop(struct casynq_server *srv)
{
    struct casynq__server_ident who = {srv->host, srv->pid, srv->server_id};
    struct casynq__cmd cmd;

    if (!srv->cleared) {
        srv->cleared = true;
        casynq__broker_servers_zrem(&cmd, &who);
        if (casynq__aconn_send(&srv->rconn, &cmd, NULL, NULL) != 0) {
            casynq__cmd_free(&cmd);
        }
        casynq__broker_workers_zrem(&cmd, &who);
        if (casynq__aconn_send(&srv->rconn, &cmd, NULL, NULL) != 0) {
            casynq__cmd_free(&cmd);
        }
        casynq__broker_clear_server_state(&cmd, &who);
        if (casynq__aconn_send(&srv->rconn, &cmd, NULL, NULL) != 0) {
            casynq__cmd_free(&cmd);
        }
    }
}

/* Runs every SHUTDOWN_POLL_S during shutdown until the work is done. */
static void on_shutdown_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;
    int64_t now = casynq__mono_ms();

    (void)revents;
    casynq__proc_drain_done(srv);
    if (srv->nactive > 0 && now < srv->shutdown_deadline_ms) {
        return;
    }
    if (srv->nactive > 0) {
        casynq__proc_requeue_all(srv);
    }
    casynq__proc_flush_unsent(srv);
    finish_loop(srv);
    /* Wait for the writes above and for every worker to return. A handler
     * that ignores cancellation holds this until it returns. */
    if (srv->busy > 0 || srv->rconn.pending > 0 ||
        (srv->unsent != NULL && casynq__aconn_ready(&srv->rconn) &&
         now < srv->shutdown_deadline_ms + 5000)) {
        return;
    }
    if (srv->unsent != NULL) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_ERROR,
                   "shutting down with unwritten task outcomes (redis is "
                   "unreachable); the recoverer will retry those tasks");
    }
    ev_timer_stop(loop, w);
    ev_timer_stop(loop, &srv->heartbeat_timer);
    ev_timer_stop(loop, &srv->janitor_timer);
    ev_timer_stop(loop, &srv->health_timer);
    ev_timer_stop(loop, &srv->fetch_timer);
    ev_timer_stop(loop, &srv->gather_timer);
    casynq__server_metrics_loop_stop(srv);
    casynq__aconn_close(&srv->wconn);
    casynq__aconn_close(&srv->sconn);
    casynq__aconn_close(&srv->rconn);
    ev_async_stop(loop, &srv->wake);
}

static void begin_shutdown(struct casynq_server *srv)
{
    if (srv->shutting_down) {
        return;
    }
    srv->shutting_down = true;
    srv->status = CASYNQ__STATUS_CLOSED;
    if (srv->metrics != NULL) {
        atomic_store(&srv->metrics->stopping, true);
    }
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
               "shutting down: waiting up to %lld ms for %d running tasks "
               "(%d handlers busy, including those whose task was already "
               "failed at its deadline)",
               (long long)srv->cfg.shutdown_timeout_ms, srv->nactive,
               srv->busy);
    ev_timer_stop(srv->loop, &srv->forward_timer);
    ev_timer_stop(srv->loop, &srv->recover_timer);
    ev_timer_stop(srv->loop, &srv->fetch_timer);
    srv->shutdown_deadline_ms =
            casynq__mono_ms() + srv->cfg.shutdown_timeout_ms;
    ev_timer_init(&srv->shutdown_timer, on_shutdown_timer, 0.0,
                  SHUTDOWN_POLL_S);
    srv->shutdown_timer.data = srv;
    ev_timer_start(srv->loop, &srv->shutdown_timer);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct casynq_server *srv = w->data;

    (void)loop;
    (void)revents;
    if (atomic_load(&srv->stop_requested) &&
        srv->status == CASYNQ__STATUS_ACTIVE) {
        srv->status = CASYNQ__STATUS_STOPPED;
        ev_timer_stop(srv->loop, &srv->fetch_timer);
        /* Show the new status now rather than at the next beat. */
        if (casynq__aconn_ready(&srv->rconn) && !srv->cleared) {
            write_heartbeat(srv);
        }
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
                   "stopped: no new tasks will be taken; %d running",
                   srv->nactive);
    }
    if (atomic_load(&srv->shutdown_requested)) {
        begin_shutdown(srv);
    }
    casynq__proc_drain_done(srv);
}

static void start_timer(struct casynq_server *srv, ev_timer *t,
                        void (*cb)(struct ev_loop *, ev_timer *, int),
                        double first_s, double every_s)
{
    ev_timer_init(t, cb, first_s, every_s);
    t->data = srv;
    ev_timer_start(srv->loop, t);
}

static void *loop_main(void *arg)
{
    struct casynq_server *srv = arg;
    char addr[300];

    casynq__aconn_init(&srv->rconn, srv->loop, &srv->cfg.redis, srv->lg,
                       "commands", on_cmd_connect, srv);
    casynq__aconn_init(&srv->sconn, srv->loop, &srv->cfg.redis, srv->lg,
                       "cancel channel", on_sub_connect, srv);
    casynq__aconn_init(&srv->wconn, srv->loop, &srv->cfg.redis, srv->lg,
                       "idle wake", NULL, NULL);
    ev_timer_init(&srv->fetch_timer, on_fetch_timer, 0.0, 0.0);
    srv->fetch_timer.data = srv;
    ev_timer_init(&srv->gather_timer, on_fetch_timer, 0.0, 0.0);
    srv->gather_timer.data = srv;
    start_timer(srv, &srv->heartbeat_timer, on_heartbeat, 0.0, HEARTBEAT_S);
    start_timer(srv, &srv->forward_timer, on_forward_timer,
                (double)srv->cfg.delayed_task_check_interval_ms / 1000.0,
                (double)srv->cfg.delayed_task_check_interval_ms / 1000.0);
    /* The first recovery runs once the connection is up. */
    start_timer(srv, &srv->recover_timer, on_recover_timer, 1.0, RECOVER_S);
    start_timer(srv, &srv->janitor_timer, on_janitor_timer,
                (double)srv->cfg.janitor_interval_ms / 1000.0,
                (double)srv->cfg.janitor_interval_ms / 1000.0);
    if (srv->cfg.health_check != NULL) {
        double every = (double)srv->cfg.health_check_interval_ms / 1000.0;

        start_timer(srv, &srv->health_timer, on_health_timer, every, every);
    }
    casynq__server_metrics_loop_start(srv);
    casynq_redis_options_describe(&srv->cfg.redis, addr, sizeof(addr));
    CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
               "server %s started: redis %s, concurrency %d, %d queues, %s "
               "priority",
               srv->server_id, addr, srv->cfg.concurrency, srv->cfg.nqueues,
               srv->cfg.strict ? "strict" : "weighted");

    ev_run(srv->loop, 0);

    CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO, "server %s shut down", srv->server_id);
    pthread_mutex_lock(&srv->finish_mu);
    atomic_store(&srv->loop_finished, true);
    pthread_cond_broadcast(&srv->finish_cond);
    pthread_mutex_unlock(&srv->finish_mu);
    return NULL;
}

static int compare_weight_desc(const void *a, const void *b, void *ud)
{
    const struct casynq_config *cfg = ud;
    const struct casynq__queue_cfg *qa = &cfg->queues[*(const int *)a];
    const struct casynq__queue_cfg *qb = &cfg->queues[*(const int *)b];

    if (qa->weight != qb->weight) {
        return qb->weight - qa->weight;
    }
    /* asynq leaves equal weights unordered; a fixed rule by name makes
     * strict mode predictable. */
    return strcmp(qa->name, qb->name);
}

int casynq_server_create(struct casynq_config *cfg,
                         const struct casynq_mux *mux,
                         struct casynq_server **out)
{
    struct casynq_server *srv;
    int n;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    if (cfg == NULL || mux == NULL) {
        return CASYNQ_EINVAL;
    }
    if (casynq__config_validate(cfg) != 0) {
        return CASYNQ_EINVAL;
    }
    srv = casynq__calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return CASYNQ_ENOMEM;
    }
    if (casynq__config_copy(&srv->cfg, cfg) != 0) {
        casynq__free(srv);
        return CASYNQ_ENOMEM;
    }
    n = srv->cfg.nqueues;
    srv->mux = mux;
    srv->lg = &srv->cfg.log;
    srv->strict_order = casynq__calloc((size_t)n, sizeof(int));
    srv->fetch_queues = casynq__calloc((size_t)n, sizeof(char *));
    srv->fetch_queues_all = casynq__calloc((size_t)n, sizeof(char *));
    srv->workers =
            casynq__calloc((size_t)srv->cfg.concurrency, sizeof(pthread_t));
    srv->order = casynq__calloc((size_t)n, sizeof(int));
    srv->used = casynq__calloc((size_t)n, sizeof(bool));
    if (srv->order == NULL || srv->used == NULL || srv->strict_order == NULL ||
        srv->fetch_queues == NULL || srv->fetch_queues_all == NULL ||
        srv->workers == NULL) {
        casynq_server_destroy(srv);
        return CASYNQ_ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        srv->strict_order[i] = i;
        srv->fetch_queues_all[i] = srv->cfg.queues[i].name;
    }
    qsort_r(srv->strict_order, (size_t)n, sizeof(int), compare_weight_desc,
            &srv->cfg);
    if (gethostname(srv->host, sizeof(srv->host) - 1) != 0 ||
        srv->host[0] == '\0') {
        snprintf(srv->host, sizeof(srv->host), "unknown-host");
    }
    if (casynq__server_metrics_create(srv) != 0) {
        casynq_server_destroy(srv);
        return CASYNQ_ENOMEM;
    }
    srv->pid = (int)getpid();
    casynq__uuid(srv->server_id);
    for (int i = 0; i < 8; i++) {
        srv->rng = (srv->rng << 8) ^
                   (uint64_t)(unsigned char)srv->server_id[i * 4];
    }
    srv->rng ^= (uint64_t)casynq__now_unix_ns() | 1;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->run_cond, NULL);
    pthread_mutex_init(&srv->finish_mu, NULL);
    pthread_cond_init(&srv->finish_cond, NULL);
    *out = srv;
    return 0;
}

/* Checks that Redis responds before any thread starts, as asynq's Start
 * pings Redis and fails when it cannot. */
static int ping_redis(struct casynq_server *srv)
{
    struct casynq__conn conn;
    redisReply *r = NULL;
    int rc;

    if (casynq__conn_init(&conn, &srv->cfg.redis) != 0) {
        return CASYNQ_ENOMEM;
    }
    rc = casynq__conn_command(&conn, &r, "PING");
    if (rc != 0) {
        memcpy(srv->err, conn.err, sizeof(srv->err));
    } else if (r->type == REDIS_REPLY_ERROR) {
        rc = casynq__fail(srv->err, CASYNQ_EREDIS, "redis PING failed: %s",
                          r->str);
    }
    if (r != NULL) {
        freeReplyObject(r);
    }
    casynq__conn_finish(&conn);
    return rc;
}

int casynq_server_start(struct casynq_server *srv)
{
    int rc;

    if (srv == NULL) {
        return CASYNQ_EINVAL;
    }
    if (srv->started) {
        return casynq__fail(srv->err, CASYNQ_ESTATE, "server already started");
    }
    rc = ping_redis(srv);
    if (rc != 0) {
        return rc;
    }
    rc = casynq__server_metrics_http_start(srv);
    if (rc != 0) {
        return rc;
    }
    srv->loop = ev_loop_new(EVFLAG_AUTO);
    if (srv->loop == NULL) {
        casynq__server_metrics_http_stop(srv);
        return casynq__fail(srv->err, CASYNQ_ESYS,
                            "cannot create the event loop");
    }
    ev_async_init(&srv->wake, on_wake);
    srv->wake.data = srv;
    ev_async_start(srv->loop, &srv->wake);
    srv->status = CASYNQ__STATUS_ACTIVE;
    srv->idle_wait_ms = CASYNQ__IDLE_WAIT_MIN_MS;
    srv->start_unix_s = casynq__now_unix_s();
    for (int i = 0; i < srv->cfg.concurrency; i++) {
        if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0) {
            rc = casynq__fail(srv->err, CASYNQ_ESYS,
                              "cannot start worker thread %d of %d: %s", i + 1,
                              srv->cfg.concurrency, strerror(errno));
            goto out_join;
        }
        srv->nworkers++;
    }
    if (pthread_create(&srv->loop_thread, NULL, loop_main, srv) != 0) {
        rc = casynq__fail(srv->err, CASYNQ_ESYS,
                          "cannot start the event loop thread: %s",
                          strerror(errno));
        goto out_join;
    }
    srv->started = true;
    return 0;

out_join:
    pthread_mutex_lock(&srv->mu);
    srv->workers_exit = true;
    pthread_cond_broadcast(&srv->run_cond);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i], NULL);
    }
    srv->nworkers = 0;
    ev_loop_destroy(srv->loop);
    srv->loop = NULL;
    casynq__server_metrics_http_stop(srv);
    return rc;
}

int casynq_server_stop(struct casynq_server *srv)
{
    if (srv == NULL) {
        return CASYNQ_EINVAL;
    }
    if (!srv->started || atomic_load(&srv->loop_finished)) {
        return CASYNQ_ESTATE;
    }
    atomic_store(&srv->stop_requested, true);
    ev_async_send(srv->loop, &srv->wake);
    return 0;
}

int casynq_server_shutdown(struct casynq_server *srv)
{
    if (srv == NULL) {
        return CASYNQ_EINVAL;
    }
    if (!srv->started) {
        return CASYNQ_ESTATE;
    }
    if (srv->shut) {
        return 0;
    }
    atomic_store(&srv->shutdown_requested, true);
    ev_async_send(srv->loop, &srv->wake);
    pthread_join(srv->loop_thread, NULL);
    pthread_mutex_lock(&srv->mu);
    srv->workers_exit = true;
    pthread_cond_broadcast(&srv->run_cond);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->nworkers; i++) {
        pthread_join(srv->workers[i], NULL);
    }
    srv->nworkers = 0;
    /* Jobs never picked up by a worker (none after a clean drain). */
    while (srv->run_head != NULL) {
        struct casynq__job *job = srv->run_head;

        srv->run_head = job->qnext;
        casynq__job_free(job);
    }
    while (srv->unsent != NULL) {
        struct casynq__pending_write *pw = srv->unsent;

        srv->unsent = pw->next;
        casynq__cmd_free(&pw->cmd);
        casynq__free(pw);
    }
    ev_loop_destroy(srv->loop);
    srv->loop = NULL;
    casynq__server_metrics_http_stop(srv);
    srv->shut = true;
    return 0;
}

int casynq_server_run(struct casynq_server *srv)
{
    sigset_t set;
    sigset_t old;
    int rc;

    if (srv == NULL) {
        return CASYNQ_EINVAL;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTSTP);
    /* Threads inherit the mask, so only sigwait below sees these. */
    pthread_sigmask(SIG_BLOCK, &set, &old);
    rc = casynq_server_start(srv);
    if (rc != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        return rc;
    }
    for (;;) {
        int sig = 0;

        if (sigwait(&set, &sig) != 0) {
            continue;
        }
        if (sig == SIGTSTP) {
            CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO,
                       "received SIGTSTP: stop taking new tasks");
            casynq_server_stop(srv);
            continue;
        }
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_INFO, "received %s: shutting down",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    rc = casynq_server_shutdown(srv);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void casynq_server_destroy(struct casynq_server *srv)
{
    if (srv == NULL) {
        return;
    }
    if (srv->started && !srv->shut) {
        casynq_server_shutdown(srv);
    }
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->run_cond);
    pthread_mutex_destroy(&srv->finish_mu);
    pthread_cond_destroy(&srv->finish_cond);
    casynq__free(srv->strict_order);
    casynq__free(srv->order);
    casynq__free(srv->used);
    casynq__free((void *)srv->fetch_queues);
    casynq__free((void *)srv->fetch_queues_all);
    casynq__free(srv->workers);
    casynq__server_metrics_destroy(srv);
    casynq__config_finish(&srv->cfg);
    casynq__free(srv);
}

const char *casynq_server_last_error(const struct casynq_server *srv)
{
    return srv != NULL ? srv->err : "";
}
