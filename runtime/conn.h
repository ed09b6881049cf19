#ifndef CASYNQ_RUNTIME_CONN_H
#define CASYNQ_RUNTIME_CONN_H

#include <stdint.h>

#include <hiredis/hiredis.h>

#include "cmd.h"
#include "redis_opts.h"

/* A synchronous Redis connection that connects on first use, sends AUTH
 * and SELECT, loads each broker script the first time it is called on this
 * connection and loads it again when Redis answers NOSCRIPT. It has no
 * lock: one thread at a time. */
struct casynq__conn {
    struct casynq_redis_options opts;
    redisContext *ctx; /* NULL while disconnected */
    uint64_t loaded;   /* bit i set once script i is loaded here */
    char err[CASYNQ__ERRBUF_SIZE];
};

/* Copies opts into conn. Returns: 0 or CASYNQ_ENOMEM. */
int casynq__conn_init(struct casynq__conn *conn,
                      const struct casynq_redis_options *opts);

/* Closes the connection and frees what init copied. */
void casynq__conn_finish(struct casynq__conn *conn);

/* Connects when not connected, or when the server closed the idle
 * connection since the last command.
 * Returns: 0, CASYNQ_ECONNECT, CASYNQ_ETIMEDOUT, CASYNQ_EAUTH, CASYNQ_EREDIS
 *          (SELECT rejected), CASYNQ_ENOMEM; the message is in conn->err. */
int casynq__conn_connect(struct casynq__conn *conn);

/* Finishes and sends cmd and stores the reply in *reply. Redis error
 * replies are replies, not failures, except NOSCRIPT, which is handled
 * here. After an I/O error or timeout the connection is closed, so the
 * next call connects again.
 * Returns: 0 with *reply set (free with freeReplyObject), or an error as
 *          casynq__conn_connect() returns, with *reply NULL. */
int casynq__conn_exec(struct casynq__conn *conn, struct casynq__cmd *cmd,
                      redisReply **reply);

/* Sends a printf-style command (hiredis format) and returns its reply as
 * casynq__conn_exec() does. For tests and one-off commands. */
int casynq__conn_command(struct casynq__conn *conn, redisReply **reply,
                         const char *fmt, ...);

/* Maps a failed hiredis context to an error code and writes a message
 * naming the address into errbuf. `what` says what was being done
 * ("connect", "command"). */
int casynq__conn_error_from_ctx(const struct casynq_redis_options *opts,
                                int ctx_err, const char *ctx_errstr,
                                const char *what, char *errbuf);

/* Maps the error reply of an AUTH command to CASYNQ_EAUTH with a message
 * that says whether the password, the user or the server set-up is at
 * fault. */
int casynq__conn_auth_error(const struct casynq_redis_options *opts,
                            const char *reply_text, char *errbuf);

#endif
