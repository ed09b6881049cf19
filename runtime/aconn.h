#ifndef CASYNQ_RUNTIME_ACONN_H
#define CASYNQ_RUNTIME_ACONN_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>
#include <hiredis/async.h>

#include "cmd.h"
#include "log.h"
#include "metrics.h"
#include "redis_opts.h"

struct casynq__aconn;

/* Receives the reply of one command, or NULL when the connection failed
 * before the reply came. The reply is freed when the callback returns.
 * cmd is the command that was sent: the callback may take it (copy the
 * struct and zero the original) to send it again later. */
typedef void (*casynq__areply_fn)(struct casynq__aconn *conn, redisReply *r,
                                  struct casynq__cmd *cmd, void *ud);

/* Called on the loop thread after every successful (re)connect. */
typedef void (*casynq__aconn_event_fn)(struct casynq__aconn *conn, void *ud);

/* An asynchronous Redis connection owned by the loop thread. It connects
 * in the background, sends AUTH and SELECT first, loads a broker script
 * the first time it is used on a connection, retries once after NOSCRIPT,
 * reconnects with exponential backoff (100 ms doubling to 5 s) and drops
 * the connection when a command gets no reply within the command timeout
 * (hiredis 0.14 has no asynchronous timeouts of its own). */
struct casynq__aconn {
    struct ev_loop *loop;                    /* loop thread only, all fields */
    const struct casynq_redis_options *opts; /* borrowed from the server */
    const struct casynq__logger *lg;
    const char *name;         /* for logs: "commands" */
    redisAsyncContext *ac;    /* NULL while disconnected */
    bool connected;           /* the connect callback reported success */
    bool closing;             /* no reconnect after close */
    uint64_t loaded;          /* scripts loaded on ac */
    int pending;              /* commands awaiting replies */
    int64_t last_progress_ms; /* last reply or send, mono */
    int64_t backoff_ms;
    int64_t down_since_ms; /* mono time of the drop, or 0 */
    int64_t last_down_log_ms;
    int failures_since_log;
    ev_timer reconnect_timer;
    ev_timer watchdog;
    casynq__aconn_event_fn on_connect;
    void *ud;
    /* Error and reconnect counters for the metrics, or NULL. Set by the
     * owner after init, before the loop runs. */
    struct casynq__redis_counters *counters;
};

/* Prepares conn and starts connecting. Returns: 0. Thread: loop. */
int casynq__aconn_init(struct casynq__aconn *conn, struct ev_loop *loop,
                       const struct casynq_redis_options *opts,
                       const struct casynq__logger *lg, const char *name,
                       casynq__aconn_event_fn on_connect, void *ud);

/* Closes the connection and stops its timers. With no command pending, it
 * sends what is still buffered first. Otherwise it closes at once, and the
 * callbacks of pending commands get NULL inside this call. */
void casynq__aconn_close(struct casynq__aconn *conn);

/* Returns true when commands can be sent now. */
bool casynq__aconn_ready(const struct casynq__aconn *conn);

/* Sends cmd and calls cb (unless NULL) once with its reply or NULL. On success
 * the connection takes the command and leaves *cmd empty. Returns: 0, or
 * CASYNQ_ECONNECT / CASYNQ_ENOMEM without calling cb; the command then stays
 * with the caller. Thread: loop. */
int casynq__aconn_send(struct casynq__aconn *conn, struct casynq__cmd *cmd,
                       casynq__areply_fn cb, void *ud);

/* Sends a raw command whose callback hiredis keeps for every reply (for
 * SUBSCRIBE). Returns: 0 or CASYNQ_ECONNECT. Thread: loop. */
int casynq__aconn_subscribe(struct casynq__aconn *conn, const char *channel,
                            redisCallbackFn *cb, void *ud);

#endif
