/* DESIGN: the loop thread's asynchronous Redis connection.
 *
 * Every field is touched only by the loop thread. A request carries its
 * built command, so that a NOSCRIPT reply can be answered by loading the
 * script and sending the same EVALSHA again. hiredis calls every pending
 * callback with a NULL reply when the connection drops, and the request
 * then reports NULL to its owner, which decides whether to retry (the
 * processor keeps failed completion writes and sends them again after the
 * reconnect).
 *
 * Scripts are loaded lazily: the first EVALSHA of a script on a connection
 * is preceded by a pipelined SCRIPT LOAD on the same connection, which
 * Redis runs first because one connection's commands run in order.
 *
 * Connection drops are logged once at WARN with the reason, then at most
 * once every 30 s with the number of failed attempts, so a long outage does
 * not flood the log. */
#include "aconn.h"

#include <string.h>

#include <hiredis/adapters/libev.h>

#include "alloc.h"
#include "scripts_gen.h"

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     5000
#define WATCHDOG_PERIOD_S  0.5
#define DOWN_LOG_PERIOD_MS 30000

struct areq {
    struct casynq__aconn *conn;
    struct casynq__cmd cmd;
    casynq__areply_fn cb;
    void *ud;
    bool retried;
};

static void start_connect(struct casynq__aconn *conn);

static void schedule_reconnect(struct casynq__aconn *conn)
{
    if (conn->closing || ev_is_active(&conn->reconnect_timer)) {
        return;
    }
    ev_timer_set(&conn->reconnect_timer, (double)conn->backoff_ms / 1000.0,
                 0.0);
    ev_timer_start(conn->loop, &conn->reconnect_timer);
    conn->backoff_ms *= 2;
    if (conn->backoff_ms > BACKOFF_MAX_MS) {
        conn->backoff_ms = BACKOFF_MAX_MS;
    }
}

/* Adds 1 to a counter of conn's metrics, if it has any. Only the loop
 * thread writes them. */
static void count(struct casynq__aconn *conn, bool reconnect)
{
    _Atomic uint64_t *c;

    if (conn->counters == NULL) {
        return;
    }
    c = reconnect ? &conn->counters->reconnects : &conn->counters->errors;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static void note_down(struct casynq__aconn *conn, const char *why)
{
    int64_t now = casynq__mono_ms();
    char addr[300];

    count(conn, false);
    conn->failures_since_log++;
    if (conn->down_since_ms == 0) {
        conn->down_since_ms = now;
    }
    if (conn->last_down_log_ms != 0 &&
        now - conn->last_down_log_ms < DOWN_LOG_PERIOD_MS) {
        return;
    }
    casynq_redis_options_describe(conn->opts, addr, sizeof(addr));
    CASYNQ_LOG(conn->lg, CASYNQ_LOG_WARN,
               "redis %s connection to %s is down (%s), %d failed attempts "
               "so far; retrying with backoff",
               conn->name, addr, why, conn->failures_since_log);
    conn->last_down_log_ms = now;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct casynq__aconn *conn = ac->data;
    char addr[300];

    if (conn == NULL || conn->ac != ac) {
        return;
    }
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        conn->ac = NULL;
        conn->loaded = 0;
        note_down(conn, ac->errstr);
        schedule_reconnect(conn);
        return;
    }
    conn->connected = true;
    conn->backoff_ms = BACKOFF_MIN_MS;
    conn->last_progress_ms = casynq__mono_ms();
    if (conn->down_since_ms != 0) {
        count(conn, true);
        casynq_redis_options_describe(conn->opts, addr, sizeof(addr));
        CASYNQ_LOG(conn->lg, CASYNQ_LOG_INFO,
                   "redis %s connection to %s is back after %lld ms",
                   conn->name, addr,
                   (long long)(casynq__mono_ms() - conn->down_since_ms));
    }
    conn->down_since_ms = 0;
    conn->last_down_log_ms = 0;
    conn->failures_since_log = 0;
    if (conn->on_connect != NULL) {
        conn->on_connect(conn, conn->ud);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct casynq__aconn *conn = ac->data;

    if (conn == NULL || conn->ac != ac) {
        return;
    }
    conn->ac = NULL;
    conn->connected = false;
    conn->loaded = 0;
    conn->pending = 0;
    if (conn->closing) {
        return;
    }
    note_down(conn, status == REDIS_OK ? "closed" : ac->errstr);
    schedule_reconnect(conn);
}

/* Logs the reply of AUTH or SELECT when Redis rejects it, then drops the
 * connection so the failure is retried with backoff. */
static void on_setup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct casynq__aconn *conn = ac->data;
    redisReply *r = reply;
    char addr[300];

    (void)privdata;
    if (conn == NULL || r == NULL || r->type != REDIS_REPLY_ERROR) {
        return;
    }
    casynq_redis_options_describe(conn->opts, addr, sizeof(addr));
    CASYNQ_LOG(conn->lg, CASYNQ_LOG_ERROR,
               "redis at %s rejected the %s connection setup: %s; check the "
               "password, user and database in the redis options",
               addr, conn->name, r->str);
    redisAsyncDisconnect(ac);
}

static void send_setup(struct casynq__aconn *conn)
{
    char db[16];

    if (conn->opts->password != NULL && conn->opts->username != NULL) {
        redisAsyncCommand(conn->ac, on_setup_reply, NULL, "AUTH %s %s",
                          conn->opts->username, conn->opts->password);
    } else if (conn->opts->password != NULL) {
        redisAsyncCommand(conn->ac, on_setup_reply, NULL, "AUTH %s",
                          conn->opts->password);
    }
    if (conn->opts->db != 0) {
        snprintf(db, sizeof(db), "%d", conn->opts->db);
        redisAsyncCommand(conn->ac, on_setup_reply, NULL, "SELECT %s", db);
    }
}

static void start_connect(struct casynq__aconn *conn)
{
    redisAsyncContext *ac;

    if (conn->opts->unix_path != NULL) {
        ac = redisAsyncConnectUnix(conn->opts->unix_path);
    } else {
        ac = redisAsyncConnect(conn->opts->host, conn->opts->port);
    }
    if (ac == NULL) {
        note_down(conn, "out of memory");
        schedule_reconnect(conn);
        return;
    }
    if (ac->err != 0) {
        note_down(conn, ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(conn);
        return;
    }
    ac->data = conn;
    conn->ac = ac;
    conn->connected = false;
    conn->loaded = 0;
    conn->pending = 0;
    conn->last_progress_ms = casynq__mono_ms();
    redisLibevAttach(conn->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Commands written before the connection completes are buffered by
     * hiredis and go out first, so AUTH and SELECT precede everything. */
    send_setup(conn);
}

static void on_reconnect_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq__aconn *conn = w->data;

    (void)loop;
    (void)revents;
    if (conn->ac == NULL && !conn->closing) {
        start_connect(conn);
    }
}

/* Frees the context of conn at once, and pending callbacks run with a
 * NULL reply inside this call. redisAsyncDisconnect() instead waits for
 * the replies of pending commands. So it cannot end a connection to a
 * Redis that stopped responding, nor a blocking command still waiting. */
static void free_context(struct casynq__aconn *conn)
{
    redisAsyncContext *ac = conn->ac;

    conn->ac = NULL;
    conn->connected = false;
    conn->loaded = 0;
    /* With data cleared, on_disconnect() ignores this context. */
    ac->data = NULL;
    redisAsyncFree(ac);
    conn->pending = 0;
}

/* Drops a connection that stopped responding: a connect that never
 * completes, or commands that get no reply within the command timeout. */
static void on_watchdog(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct casynq__aconn *conn = w->data;
    int64_t now = casynq__mono_ms();
    int64_t limit;

    (void)loop;
    (void)revents;
    if (conn->ac == NULL) {
        return;
    }
    limit = conn->connected ? conn->opts->command_timeout_ms
                            : conn->opts->connect_timeout_ms;
    if ((conn->pending > 0 || !conn->connected) &&
        now - conn->last_progress_ms > limit) {
        note_down(conn,
                  conn->connected ? "command timed out" : "connect timed out");
        free_context(conn);
        schedule_reconnect(conn);
    }
}

int casynq__aconn_init(struct casynq__aconn *conn, struct ev_loop *loop,
                       const struct casynq_redis_options *opts,
                       const struct casynq__logger *lg, const char *name,
                       casynq__aconn_event_fn on_connect_fn, void *ud)
{
    memset(conn, 0, sizeof(*conn));
    conn->loop = loop;
    conn->opts = opts;
    conn->lg = lg;
    conn->name = name;
    conn->backoff_ms = BACKOFF_MIN_MS;
    conn->on_connect = on_connect_fn;
    conn->ud = ud;
    ev_timer_init(&conn->reconnect_timer, on_reconnect_timer, 0.0, 0.0);
    conn->reconnect_timer.data = conn;
    ev_timer_init(&conn->watchdog, on_watchdog, WATCHDOG_PERIOD_S,
                  WATCHDOG_PERIOD_S);
    conn->watchdog.data = conn;
    ev_timer_start(loop, &conn->watchdog);
    start_connect(conn);
    return 0;
}

void casynq__aconn_close(struct casynq__aconn *conn)
{
    conn->closing = true;
    ev_timer_stop(conn->loop, &conn->reconnect_timer);
    ev_timer_stop(conn->loop, &conn->watchdog);
    if (conn->ac != NULL) {
        /* A connection with nothing pending is closed after its unsent
         * output. One with pending commands, such as a blocking wait, is
         * freed at once, and their callbacks get NULL. */
        if (conn->connected && conn->pending == 0) {
            redisAsyncDisconnect(conn->ac);
        } else {
            free_context(conn);
        }
    }
}

bool casynq__aconn_ready(const struct casynq__aconn *conn)
{
    return conn->ac != NULL && conn->connected && !conn->closing;
}

static int write_request(struct areq *req);

static void on_request_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct areq *req = privdata;
    struct casynq__aconn *conn = req->conn;
    redisReply *r = reply;

    if (conn->pending > 0) {
        conn->pending--;
    }
    conn->last_progress_ms = casynq__mono_ms();
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        count(conn, false);
    }
    if (r != NULL && r->type == REDIS_REPLY_ERROR && req->cmd.script >= 0 &&
        strncmp(r->str, "NOSCRIPT", 8) == 0 && !req->retried &&
        conn->ac == ac) {
        /* The script cache was flushed: load it again and resend. */
        req->retried = true;
        conn->loaded &= ~(UINT64_C(1) << req->cmd.script);
        if (write_request(req) == 0) {
            return;
        }
        r = NULL;
    }
    if (req->cb != NULL) {
        req->cb(conn, r, &req->cmd, req->ud);
    }
    casynq__cmd_free(&req->cmd);
    casynq__free(req);
}

static int write_request(struct areq *req)
{
    struct casynq__aconn *conn = req->conn;
    int script = req->cmd.script;

    if (script >= 0 && (conn->loaded & (UINT64_C(1) << script)) == 0) {
        if (redisAsyncCommand(conn->ac, NULL, NULL, "SCRIPT LOAD %s",
                              casynq__script_source[script]) != REDIS_OK) {
            return CASYNQ_ECONNECT;
        }
        conn->loaded |= UINT64_C(1) << script;
    }
    if (redisAsyncCommandArgv(conn->ac, on_request_reply, req, req->cmd.argc,
                              req->cmd.argv, req->cmd.argvlen) != REDIS_OK) {
        return CASYNQ_ECONNECT;
    }
    if (conn->pending == 0) {
        conn->last_progress_ms = casynq__mono_ms();
    }
    conn->pending++;
    return 0;
}

int casynq__aconn_send(struct casynq__aconn *conn, struct casynq__cmd *cmd,
                       casynq__areply_fn cb, void *ud)
{
    struct areq *req;
    int rc;

    if (!casynq__aconn_ready(conn)) {
        return CASYNQ_ECONNECT;
    }
    rc = casynq__cmd_finish(cmd);
    if (rc != 0) {
        return rc;
    }
    req = casynq__calloc(1, sizeof(*req));
    if (req == NULL) {
        return CASYNQ_ENOMEM;
    }
    req->conn = conn;
    req->cmd = *cmd;
    req->cb = cb;
    req->ud = ud;
    /* The request owns the command's buffers now. */
    memset(cmd, 0, sizeof(*cmd));
    cmd->script = -1;
    rc = write_request(req);
    if (rc != 0) {
        /* Give the command back untouched, as the contract in aconn.h requires. */
        *cmd = req->cmd;
        casynq__free(req);
    }
    return rc;
}

int casynq__aconn_subscribe(struct casynq__aconn *conn, const char *channel,
                            redisCallbackFn *cb, void *ud)
{
    if (!casynq__aconn_ready(conn)) {
        return CASYNQ_ECONNECT;
    }
    if (redisAsyncCommand(conn->ac, cb, ud, "SUBSCRIBE %s", channel) !=
        REDIS_OK) {
        return CASYNQ_ECONNECT;
    }
    return 0;
}
