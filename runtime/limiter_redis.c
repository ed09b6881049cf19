/* DESIGN: the limiter's Redis backend.
 *
 * One call of the rate_limit script (runtime/lua/rate_limit.lua) checks
 * every budget of an enqueue against the Redis server's clock. It writes
 * the new theoretical arrival times only when all of them pass, so the
 * check and the commit are one atomic step for every process sharing the
 * Redis. The same script with no budgets counts a queue's backlog, which
 * lets a client count on its own connection.
 *
 * Times are microseconds, as TIME returns them, held in Lua numbers
 * (doubles). A unix time in microseconds (about 1.7e15) is exact in a
 * double, whose step at that size is 0.25 us, so the rounding error of
 * one emission interval is at most 0.125 us: 0.0125 % of the interval at
 * 1000 enqueues per second per budget, and up to 12.5 % at the maximum
 * rate of 1000000 per second.
 *
 * The caller owns the connection for the duration of the call (the
 * limiter holds its mutex, or a client uses its own connection). */
#include <string.h>

#include "alloc.h"
#include "limiter.h"
#include "scripts_gen.h"

/* Reply codes of rate_limit.lua. */
#define REPLY_ADMITTED   0
#define REPLY_RATE_LIMIT 1
#define REPLY_BACKLOG    2

static void build_call(struct casynq__cmd *cmd,
                       const struct casynq__limits *limits, const size_t *refs,
                       size_t n, const char *key, const char *queue,
                       int64_t max_backlog)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_RATE_LIMIT);
    for (size_t i = 0; i < n; i++) {
        const struct casynq__rate_limit *r = &limits->rates[refs[i]];

        if (r->scope == CASYNQ_LIMIT_PER_KEY) {
            casynq__cmd_keyf(cmd, "casynq:rl:{%s}:%s", r->name, key);
        } else {
            casynq__cmd_keyf(cmd, "casynq:rl:{%s}", r->name);
        }
    }
    if (max_backlog > 0) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
        casynq__cmd_keyf(cmd, "asynq:{%s}:scheduled", queue);
        casynq__cmd_keyf(cmd, "asynq:{%s}:retry", queue);
    }
    casynq__cmd_arg_int(cmd, (int64_t)n);
    casynq__cmd_arg_int(cmd, max_backlog);
    for (size_t i = 0; i < n; i++) {
        const struct casynq__rate_limit *r = &limits->rates[refs[i]];

        casynq__cmd_argf(cmd, "%.6f", r->interval_us);
        casynq__cmd_argf(cmd, "%.6f", r->tolerance_us);
    }
}

static bool is_integer(const redisReply *r)
{
    return r != NULL && r->type == REDIS_REPLY_INTEGER;
}

/* Maps the script's reply to a result and the verdict. */
static int parse_reply(const redisReply *r, size_t n, struct casynq__verdict *v,
                       char *errbuf)
{
    if (r->type == REDIS_REPLY_ERROR) {
        return casynq__fail(errbuf, CASYNQ_EREDIS,
                            "redis rejected the rate_limit script: %s", r->str);
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        !is_integer(r->element[0])) {
        return casynq__fail(errbuf, CASYNQ_EREDIS,
                            "unexpected reply of type %d from the "
                            "rate_limit script",
                            r->type);
    }
    switch (r->element[0]->integer) {
    case REPLY_ADMITTED:
        return 0;
    case REPLY_BACKLOG:
        if (r->elements == 2 && is_integer(r->element[1])) {
            v->backlog = r->element[1]->integer;
            return CASYNQ_EBACKLOG;
        }
        break;
    case REPLY_RATE_LIMIT:
        if (r->elements == 3 && is_integer(r->element[1]) &&
            is_integer(r->element[2]) && r->element[1]->integer >= 1 &&
            (size_t)r->element[1]->integer <= n) {
            int64_t wait_us = r->element[2]->integer;

            v->worst = (size_t)r->element[1]->integer - 1;
            v->retry_after_ms = wait_us > 0 ? (wait_us + 999) / 1000 : 1;
            return CASYNQ_ERATELIMITED;
        }
        break;
    default:
        break;
    }
    return casynq__fail(errbuf, CASYNQ_EREDIS,
                        "unexpected reply %lld from the rate_limit script",
                        (long long)r->element[0]->integer);
}

int casynq__limiter_redis_run(const struct casynq__limits *limits,
                              struct casynq__conn *conn, const size_t *refs,
                              size_t n, const char *key, const char *queue,
                              int64_t max_backlog, struct casynq__verdict *v,
                              char *errbuf)
{
    struct casynq__cmd cmd;
    redisReply *reply = NULL;
    int rc;

    build_call(&cmd, limits, refs, n, key, queue, max_backlog);
    rc = casynq__conn_exec(conn, &cmd, &reply);
    casynq__cmd_free(&cmd);
    if (rc == CASYNQ_ENOMEM) {
        return casynq__fail(errbuf, rc,
                            "out of memory while building the rate_limit "
                            "call");
    }
    if (rc != 0) {
        memcpy(errbuf, conn->err, CASYNQ__ERRBUF_SIZE);
        return rc;
    }
    rc = parse_reply(reply, n, v, errbuf);
    freeReplyObject(reply);
    return rc;
}
