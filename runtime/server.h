#ifndef CASYNQ_RUNTIME_SERVER_H
#define CASYNQ_RUNTIME_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "aconn.h"
#include "broker.h"
#include "config.h"
#include "ctx.h"
#include "metrics.h"
#include "msg.h"

/* First wait after an empty fetch, in ms; it doubles up to the task check
 * interval. */
#define CASYNQ__IDLE_WAIT_MIN_MS 1

/* Heartbeat status strings, as asynq writes them in ServerInfo. */
enum casynq__status {
    CASYNQ__STATUS_ACTIVE,
    CASYNQ__STATUS_STOPPED,
    CASYNQ__STATUS_CLOSED,
};

/* One dequeued task. The loop thread creates it; while the handler runs
 * the job is also reachable from its worker thread, which touches only
 * ctx and `result`, then hands the job back through the done queue. */
struct casynq__job {
    struct casynq__job *prev;  /* active list, loop thread only */
    struct casynq__job *next;  /* active list, loop thread only */
    struct casynq__job *qnext; /* run or done queue, under srv->mu */
    struct casynq_server *srv; /* immutable */
    Asynq__TaskMessage *msg;   /* owned; immutable while running */
    int queue_index;           /* index into cfg.queues; immutable */
    int type_slot;             /* metrics type slot; immutable */
    struct casynq_ctx ctx;
    int64_t start_unix_ms;        /* immutable */
    int64_t start_mono_ns;        /* immutable */
    int64_t lease_expiry_unix_ms; /* loop thread only */
    ev_timer deadline_timer;      /* loop thread only */
    bool decided;                 /* loop thread: outcome already sent */
    bool done_queued;             /* loop thread: in srv->done_batch */
    bool in_active_list;          /* loop thread only */
    int result;                   /* written by the worker before done */
    int64_t run_ns;               /* handler run time, written by the
                                   * worker before done */
};

struct casynq_server {
    struct casynq_config cfg;             /* immutable after create */
    const struct casynq_mux *mux;         /* borrowed, immutable */
    const struct casynq__logger *lg;      /* points at cfg.log */
    char host[256];                       /* immutable */
    int pid;                              /* immutable */
    char server_id[CASYNQ__UUID_LEN + 1]; /* immutable */
    int *strict_order;             /* queue indexes by weight; immutable */
    const char **fetch_queues_all; /* queue names in config order;
                                    * immutable */
    int *order;                    /* scratch for queue order, loop only */
    bool *used;                    /* scratch for queue order, loop only */
    const char **fetch_queues;     /* queue names of the fetch in flight,
                                    * loop thread only */
    char err[CASYNQ__ERRBUF_SIZE]; /* setup thread only */

    /* Threads. */
    pthread_t loop_thread;
    pthread_t *workers; /* cfg.concurrency threads */
    int nworkers;       /* threads actually started */
    bool started;       /* setup thread only */
    bool shut;          /* setup thread only */

    /* Hand-off between threads. */
    pthread_mutex_t mu;
    pthread_cond_t run_cond;         /* workers wait here for jobs */
    struct casynq__job *run_head;    /* protected by mu */
    struct casynq__job *run_tail;    /* protected by mu */
    int idle_workers;                /* protected by mu: waiting workers */
    int wakes_pending; /* protected by mu: 1 while a woken worker has not
                        * yet taken its job */
    struct casynq__job *done_head;   /* protected by mu */
    struct casynq__job *done_tail;   /* protected by mu */
    bool workers_exit;               /* protected by mu */
    _Atomic bool stop_requested;     /* atomic */
    _Atomic bool shutdown_requested; /* atomic */
    _Atomic bool loop_finished;      /* atomic */
    pthread_mutex_t finish_mu;       /* guards finish_cond only */
    pthread_cond_t finish_cond;      /* signalled when the loop exits */

    /* Loop thread state. */
    struct ev_loop *loop;
    ev_async wake;
    struct casynq__aconn rconn; /* commands */
    struct casynq__aconn sconn; /* cancel channel subscription */
    struct casynq__aconn wconn; /* blocking wait while idle (wake) */
    bool wake_waiting;          /* a wait is in flight on wconn */
    bool wake_off;              /* Redis rejected the wait: poll only */
    bool fetch_woken;           /* the fetch in flight follows a wake */
    bool idle_timer;            /* fetch_timer is an idle wait */
    int64_t last_wake_error_log_ms; /* mono */
    enum casynq__status status;
    int64_t start_unix_s;
    int busy;                       /* jobs handed to workers, not back */
    bool fetching;                  /* a dequeue is in flight */
    int64_t fetch_sent_ns;          /* mono time the dequeue was sent */
    int64_t rtt_avg_ns;   /* moving average of the dequeue round trip */
    int64_t run_avg_ns;   /* moving average of the handler run time */
    struct casynq__job *done_batch; /* done writes not yet sent, loop */
    int64_t idle_wait_ms; /* next wait after an empty fetch, loop only */
    bool shutting_down;
    int64_t shutdown_deadline_ms; /* mono */
    struct casynq__job *active;   /* jobs whose lease we hold */
    int nactive;
    uint64_t rng;         /* xorshift state for queue order */
    ev_timer fetch_timer; /* idle wait after empty queues */
    ev_timer gather_timer; /* end of the wait for more free workers */
    ev_timer heartbeat_timer;
    ev_timer forward_timer;
    ev_timer recover_timer;
    ev_timer janitor_timer;
    ev_timer health_timer;
    ev_timer shutdown_timer;
    struct casynq__pending_write *unsent; /* completion writes to resend */
    int64_t last_fetch_error_log_ms;
    bool cleared; /* heartbeat keys removed */

    /* Metrics, when cfg.metrics_addr is set; NULL otherwise. The HTTP
     * thread reads `metrics` from casynq_server_start() until
     * casynq_server_shutdown() stops it. */
    struct casynq__metrics *metrics;
    struct casynq__metrics_http *http; /* setup thread only */
    ev_timer metrics_timer;            /* loop thread only */
};

/* A completion write that failed for lack of a connection, kept until it
 * can be sent again (asynq's syncer, without its give-up time: a late
 * write that finds the task gone is answered NOT FOUND and dropped). */
struct casynq__pending_write {
    struct casynq__pending_write *next;
    struct casynq_server *srv;
    struct casynq__cmd cmd;
    char id[64];
    char queue[CASYNQ__MAX_QUEUE_LEN + 1];
    const char *what;
};

/* processor.c: fetching, dispatch and outcomes. Thread: loop. */
void casynq__proc_try_fetch(struct casynq_server *srv);
void casynq__proc_drain_done(struct casynq_server *srv);
void casynq__proc_cancel_task(struct casynq_server *srv, const char *id,
                              size_t id_len);
void casynq__proc_extend_leases(struct casynq_server *srv);
void casynq__proc_requeue_all(struct casynq_server *srv);
void casynq__proc_flush_unsent(struct casynq_server *srv);
void casynq__proc_recover(struct casynq_server *srv);
uint64_t casynq__proc_random(struct casynq_server *srv);

/* Sends a completion write and keeps it for a later resend when the
 * connection is down. Takes cmd. Thread: loop. */
void casynq__proc_send_write(struct casynq_server *srv, struct casynq__cmd *cmd,
                             const char *id, const char *queue,
                             const char *what);

/* server_metrics.c: the metrics endpoint and the queue statistics. Each
 * does nothing when the server has no metrics address. */

/* Allocates srv->metrics. Returns: 0 or CASYNQ_ENOMEM. Thread: setup. */
int casynq__server_metrics_create(struct casynq_server *srv);
/* Frees srv->metrics. Thread: setup, after the HTTP thread stopped. */
void casynq__server_metrics_destroy(struct casynq_server *srv);
/* Starts the HTTP endpoint.
 * Returns: 0, or CASYNQ_ESYS / CASYNQ_ENOMEM with a message in srv->err.
 * Thread: setup. */
int casynq__server_metrics_http_start(struct casynq_server *srv);
/* Stops the HTTP endpoint. Thread: setup. */
void casynq__server_metrics_http_stop(struct casynq_server *srv);
/* Attaches the connection counters and starts the refresh timer.
 * Thread: loop, before ev_run. */
void casynq__server_metrics_loop_start(struct casynq_server *srv);
/* Stops the refresh timer. Thread: loop. */
void casynq__server_metrics_loop_stop(struct casynq_server *srv);
/* Reads the queue statistics now unless a read is in flight or Redis is
 * not connected. Thread: loop. */
void casynq__server_metrics_refresh(struct casynq_server *srv);

/* server.c: puts a job on the run queue for the workers. Thread: loop. */
void casynq__server_submit(struct casynq_server *srv, struct casynq__job *job);

/* Frees a job once no thread uses it. Thread: loop. */
void casynq__job_free(struct casynq__job *job);

#endif
