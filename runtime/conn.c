/* DESIGN: the synchronous Redis connection.
 *
 * Used by the client (one per client object) and by tests. It owns one
 * hiredis redisContext and reconnects lazily: any I/O failure closes the
 * context, and the next call opens a new one, with AUTH and SELECT sent
 * first. Scripts are loaded with SCRIPT LOAD the first time each is used
 * on a connection; a NOSCRIPT reply (after SCRIPT FLUSH or a failover)
 * clears the loaded bits and the call is retried once. */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>

#include "alloc.h"
#include "scripts_gen.h"

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    return tv;
}

int casynq__conn_init(struct casynq__conn *conn,
                      const struct casynq_redis_options *opts)
{
    memset(conn, 0, sizeof(*conn));
    return casynq__redis_options_copy(&conn->opts, opts);
}

static void conn_close(struct casynq__conn *conn)
{
    if (conn->ctx != NULL) {
        redisFree(conn->ctx);
        conn->ctx = NULL;
    }
    conn->loaded = 0;
}

void casynq__conn_finish(struct casynq__conn *conn)
{
    conn_close(conn);
    casynq__redis_options_finish(&conn->opts);
}

int casynq__conn_error_from_ctx(const struct casynq_redis_options *opts,
                                int ctx_err, const char *ctx_errstr,
                                const char *what, char *errbuf)
{
    char addr[300];

    casynq_redis_options_describe(opts, addr, sizeof(addr));
    if (ctx_err == REDIS_ERR_IO && (errno == EAGAIN || errno == ETIMEDOUT)) {
        return casynq__fail(errbuf, CASYNQ_ETIMEDOUT,
                            "redis %s timed out at %s: %s; check that the "
                            "server is reachable, or raise the timeout",
                            what, addr, ctx_errstr);
    }
    if (strstr(ctx_errstr, "timed out") != NULL) {
        return casynq__fail(errbuf, CASYNQ_ETIMEDOUT,
                            "redis %s timed out at %s: %s; check that the "
                            "server is reachable, or raise the timeout",
                            what, addr, ctx_errstr);
    }
    if (strcmp(what, "connect") == 0) {
        return casynq__fail(errbuf, CASYNQ_ECONNECT,
                            "cannot connect to redis at %s: %s; check that "
                            "redis-server is running and the address is "
                            "right",
                            addr, ctx_errstr);
    }
    return casynq__fail(errbuf, CASYNQ_ECONNECT,
                        "lost the connection to redis at %s during %s: %s",
                        addr, what, ctx_errstr);
}

int casynq__conn_auth_error(const struct casynq_redis_options *opts,
                            const char *reply_text, char *errbuf)
{
    char addr[300];

    casynq_redis_options_describe(opts, addr, sizeof(addr));
    if (strstr(reply_text, "without any password configured") != NULL ||
        strstr(reply_text, "no password is set") != NULL) {
        return casynq__fail(errbuf, CASYNQ_EAUTH,
                            "redis at %s has no password set but one was "
                            "given: remove the password from the redis "
                            "options (%s)",
                            addr, reply_text);
    }
    return casynq__fail(errbuf, CASYNQ_EAUTH,
                        "redis at %s rejected the credentials of user "
                        "\"%s\": %s; check the user name and password",
                        addr,
                        opts->username != NULL ? opts->username : "default",
                        reply_text);
}

/* Runs one setup command (AUTH or SELECT) on a fresh context. */
static int setup_command(struct casynq__conn *conn, int argc, const char **argv,
                         bool is_auth)
{
    redisReply *r = redisCommandArgv(conn->ctx, argc, argv, NULL);
    char addr[300];
    int rc = 0;

    if (r == NULL) {
        return casynq__conn_error_from_ctx(&conn->opts, conn->ctx->err,
                                           conn->ctx->errstr, "connect",
                                           conn->err);
    }
    if (r->type == REDIS_REPLY_ERROR && is_auth) {
        rc = casynq__conn_auth_error(&conn->opts, r->str, conn->err);
    } else if (r->type == REDIS_REPLY_ERROR) {
        casynq_redis_options_describe(&conn->opts, addr, sizeof(addr));
        rc = casynq__fail(conn->err, CASYNQ_EREDIS,
                          "redis at %s rejected %s: %s", addr, argv[0], r->str);
    }
    freeReplyObject(r);
    return rc;
}

/* Returns true when an idle connection was closed by the server. Redis
 * sends nothing unasked to a client that is not subscribed, so a readable
 * or hung-up socket between commands means the server closed it (a
 * restart, a timeout or CLIENT KILL). Checking before the send, rather
 * than resending after a failure, never runs a command twice. */
static bool idle_conn_closed(const redisContext *ctx)
{
    struct pollfd pfd = {.fd = ctx->fd, .events = POLLIN};

    return poll(&pfd, 1, 0) > 0 &&
           (pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

int casynq__conn_connect(struct casynq__conn *conn)
{
    struct timeval tv = ms_to_tv(conn->opts.connect_timeout_ms);
    char db[16];
    int rc;

    if (conn->ctx != NULL && idle_conn_closed(conn->ctx)) {
        conn_close(conn);
    }
    if (conn->ctx != NULL) {
        return 0;
    }
    if (conn->opts.unix_path != NULL) {
        conn->ctx = redisConnectUnixWithTimeout(conn->opts.unix_path, tv);
    } else {
        conn->ctx =
                redisConnectWithTimeout(conn->opts.host, conn->opts.port, tv);
    }
    if (conn->ctx == NULL) {
        return casynq__fail(conn->err, CASYNQ_ENOMEM,
                            "cannot allocate a redis context");
    }
    if (conn->ctx->err != 0) {
        rc = casynq__conn_error_from_ctx(&conn->opts, conn->ctx->err,
                                         conn->ctx->errstr, "connect",
                                         conn->err);
        goto out_close;
    }
    redisSetTimeout(conn->ctx, ms_to_tv(conn->opts.command_timeout_ms));

    if (conn->opts.password != NULL) {
        const char *argv[3] = {"AUTH", conn->opts.username,
                               conn->opts.password};

        rc = conn->opts.username != NULL
                     ? setup_command(conn, 3, argv, true)
                     : setup_command(
                               conn, 2,
                               (const char *[]){"AUTH", conn->opts.password},
                               true);
        if (rc != 0) {
            goto out_close;
        }
    }
    if (conn->opts.db != 0) {
        snprintf(db, sizeof(db), "%d", conn->opts.db);
        rc = setup_command(conn, 2, (const char *[]){"SELECT", db}, false);
        if (rc != 0) {
            goto out_close;
        }
    }
    return 0;

out_close:
    conn_close(conn);
    return rc;
}

static int load_script(struct casynq__conn *conn, int script)
{
    const char *argv[3] = {"SCRIPT", "LOAD", casynq__script_source[script]};
    redisReply *r = redisCommandArgv(conn->ctx, 3, argv, NULL);
    int rc = 0;

    if (r == NULL) {
        rc = casynq__conn_error_from_ctx(&conn->opts, conn->ctx->err,
                                         conn->ctx->errstr, "SCRIPT LOAD",
                                         conn->err);
        conn_close(conn);
        return rc;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        rc = casynq__fail(conn->err, CASYNQ_EREDIS,
                          "redis rejected broker script %s: %s",
                          casynq__script_name[script], r->str);
    } else {
        conn->loaded |= UINT64_C(1) << script;
    }
    freeReplyObject(r);
    return rc;
}

static bool is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0;
}

int casynq__conn_exec(struct casynq__conn *conn, struct casynq__cmd *cmd,
                      redisReply **reply)
{
    int rc;

    *reply = NULL;
    if (cmd->argv == NULL) {
        rc = casynq__cmd_finish(cmd);
        if (rc != 0) {
            return rc;
        }
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = casynq__conn_connect(conn);
        if (rc != 0) {
            return rc;
        }
        if (cmd->script >= 0 &&
            (conn->loaded & (UINT64_C(1) << cmd->script)) == 0) {
            rc = load_script(conn, cmd->script);
            if (rc != 0) {
                return rc;
            }
        }
        redisReply *r =
                redisCommandArgv(conn->ctx, cmd->argc, cmd->argv, cmd->argvlen);
        if (r == NULL) {
            rc = casynq__conn_error_from_ctx(&conn->opts, conn->ctx->err,
                                             conn->ctx->errstr, "command",
                                             conn->err);
            conn_close(conn);
            return rc;
        }
        if (cmd->script >= 0 && is_noscript(r) && attempt == 0) {
            freeReplyObject(r);
            conn->loaded = 0;
            continue;
        }
        *reply = r;
        return 0;
    }
    return casynq__fail(conn->err, CASYNQ_EREDIS,
                        "redis kept answering NOSCRIPT for script %s",
                        casynq__script_name[cmd->script]);
}

int casynq__conn_command(struct casynq__conn *conn, redisReply **reply,
                         const char *fmt, ...)
{
    va_list ap;
    int rc;

    *reply = NULL;
    rc = casynq__conn_connect(conn);
    if (rc != 0) {
        return rc;
    }
    va_start(ap, fmt);
    *reply = redisvCommand(conn->ctx, fmt, ap);
    va_end(ap);
    if (*reply == NULL) {
        rc = casynq__conn_error_from_ctx(&conn->opts, conn->ctx->err,
                                         conn->ctx->errstr, "command",
                                         conn->err);
        conn_close(conn);
    }
    return rc;
}
