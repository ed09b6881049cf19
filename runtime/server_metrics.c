/* DESIGN: the server side of the metrics: the endpoint's lifecycle and the
 * periodic read of the queue statistics.
 *
 * Every metrics interval the loop thread ends a worker utilization
 * interval and sends one queue_stats script call per configured queue on
 * the commands connection. Each reply is parsed on the loop thread and
 * stored in the metrics under their mutex, so a scrape only copies it. A
 * new round starts only when every reply of the previous one came back, so
 * a slow Redis gets at most one call per queue outstanding. When every
 * call of a round succeeds, the "last success" time becomes the moment the
 * round was sent, so a reader knows the numbers are at least that recent.
 *
 * The HTTP thread starts in casynq_server_start(), before the loop thread,
 * so that a port already in use fails the start with its errno, and stops
 * in casynq_server_shutdown() after every other thread has been joined. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "server.h"

/* One queue_stats call in flight. */
struct stats_call {
    struct casynq_server *srv;
    int queue;
};

static void finish_round_call(struct casynq__metrics *m, bool ok)
{
    if (!ok) {
        m->round_failed = true;
    }
    m->round_pending--;
    if (m->round_pending == 0 && !m->round_failed) {
        pthread_mutex_lock(&m->mu);
        m->stats_ok_ms = m->round_sent_ms;
        pthread_mutex_unlock(&m->mu);
    }
}

static void on_stats_reply(struct casynq__aconn *conn, redisReply *r,
                           struct casynq__cmd *cmd, void *ud)
{
    struct stats_call *call = ud;
    struct casynq_server *srv = call->srv;
    struct casynq__queue_stats st;
    char err[CASYNQ__ERRBUF_SIZE];
    int rc;

    (void)conn;
    (void)cmd;
    memset(&st, 0, sizeof(st));
    rc = r != NULL
                 ? casynq__broker_parse_queue_stats(r, &st, err)
                 : casynq__fail(err, CASYNQ_ECONNECT, "redis connection lost");
    if (rc != 0) {
        CASYNQ_LOG(srv->lg, CASYNQ_LOG_WARN,
                   "reading the statistics of queue %s for the metrics "
                   "failed: %s; the asynq_ metrics keep their last values",
                   srv->fetch_queues_all[call->queue], err);
    } else {
        casynq__metrics_store_queue(srv->metrics, call->queue, &st,
                                    casynq__now_unix_ns() / 1000000);
    }
    finish_round_call(srv->metrics, rc == 0);
    casynq__free(call);
}

void casynq__server_metrics_refresh(struct casynq_server *srv)
{
    struct casynq__metrics *m = srv->metrics;

    if (m == NULL || m->round_pending > 0 ||
        !casynq__aconn_ready(&srv->rconn)) {
        return;
    }
    m->round_failed = false;
    m->round_sent_ms = casynq__now_unix_ns() / 1000000;
    for (int q = 0; q < srv->cfg.nqueues; q++) {
        struct stats_call *call = casynq__calloc(1, sizeof(*call));
        struct casynq__cmd cmd;

        if (call == NULL) {
            m->round_failed = true;
            break;
        }
        call->srv = srv;
        call->queue = q;
        casynq__broker_queue_stats(&cmd, srv->fetch_queues_all[q]);
        if (casynq__aconn_send(&srv->rconn, &cmd, on_stats_reply, call) != 0) {
            casynq__cmd_free(&cmd);
            casynq__free(call);
            m->round_failed = true;
            break;
        }
        m->round_pending++;
    }
}

static void on_metrics_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq_server *srv = w->data;

    (void)loop;
    (void)revents;
    casynq__metrics_close_interval(srv->metrics);
    casynq__server_metrics_refresh(srv);
}

void casynq__server_metrics_loop_start(struct casynq_server *srv)
{
    double every;

    if (srv->metrics == NULL) {
        return;
    }
    srv->rconn.counters = &srv->metrics->redis;
    srv->sconn.counters = &srv->metrics->redis;
    every = (double)srv->cfg.metrics_interval_ms / 1000.0;
    ev_timer_init(&srv->metrics_timer, on_metrics_timer, every, every);
    srv->metrics_timer.data = srv;
    ev_timer_start(srv->loop, &srv->metrics_timer);
}

void casynq__server_metrics_loop_stop(struct casynq_server *srv)
{
    if (srv->metrics != NULL) {
        ev_timer_stop(srv->loop, &srv->metrics_timer);
    }
}

int casynq__server_metrics_create(struct casynq_server *srv)
{
    if (srv->cfg.metrics_addr == NULL) {
        return 0;
    }
    srv->metrics = casynq__calloc(1, sizeof(*srv->metrics));
    if (srv->metrics == NULL) {
        return CASYNQ_ENOMEM;
    }
    if (casynq__metrics_init(srv->metrics, srv->fetch_queues_all,
                             srv->cfg.nqueues, srv->cfg.concurrency) != 0) {
        casynq__free(srv->metrics);
        srv->metrics = NULL;
        return CASYNQ_ENOMEM;
    }
    srv->metrics->limiters = srv->cfg.limiters;
    srv->metrics->nlimiters = srv->cfg.nlimiters;
    return 0;
}

int casynq__server_metrics_http_start(struct casynq_server *srv)
{
    if (srv->metrics == NULL) {
        return 0;
    }
    return casynq__metrics_http_start(&srv->http, srv->cfg.metrics_addr,
                                      srv->metrics, srv->lg, srv->err);
}

void casynq__server_metrics_http_stop(struct casynq_server *srv)
{
    casynq__metrics_http_stop(srv->http);
    srv->http = NULL;
}

void casynq__server_metrics_destroy(struct casynq_server *srv)
{
    if (srv->metrics == NULL) {
        return;
    }
    casynq__metrics_finish(srv->metrics);
    casynq__free(srv->metrics);
    srv->metrics = NULL;
}
