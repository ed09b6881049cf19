/* DESIGN: the broker, asynq's Redis operations.
 *
 * This module is the only place that knows asynq's key names and the
 * arguments of the broker's Lua scripts (runtime/lua). Each operation is a
 * builder that fills a casynq__cmd, plus a parser for its reply, so the
 * client's synchronous connection and the server's loop thread send the
 * same bytes. Builders are pure functions of their arguments: they keep no
 * state, take no lock and may run on any thread.
 *
 * Key layout and script contracts follow asynq v0.26.0
 * (internal/base/base.go for keys, internal/rdb/rdb.go for operations).
 * Every multi-key operation is one script, so each is atomic. */
#include "broker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scripts_gen.h"

/* Written as a string because scripts compare it with GET's reply. */
#define MAXINT64_STR "9223372036854775807"

void casynq__broker_register_queue(struct casynq__cmd *cmd, const char *queue)
{
    casynq__cmd_init(cmd, "SADD");
    casynq__cmd_arg_str(cmd, CASYNQ__QUEUES_KEY);
    casynq__cmd_arg_str(cmd, queue);
}

void casynq__broker_enqueue(struct casynq__cmd *cmd, const char *queue,
                            const char *id, const void *msg, size_t msg_len,
                            int64_t now_ns, const char *unique_key,
                            int64_t unique_ttl_s)
{
    if (unique_key == NULL) {
        casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_ENQUEUE);
        casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
        casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
        casynq__cmd_arg(cmd, msg, msg_len);
        casynq__cmd_arg_str(cmd, id);
        casynq__cmd_arg_int(cmd, now_ns);
        return;
    }
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_ENQUEUE_UNIQUE);
    casynq__cmd_keyf(cmd, "%s", unique_key);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg_int(cmd, unique_ttl_s);
    casynq__cmd_arg(cmd, msg, msg_len);
    casynq__cmd_arg_int(cmd, now_ns);
}

void casynq__broker_schedule(struct casynq__cmd *cmd, const char *queue,
                             const char *id, const void *msg, size_t msg_len,
                             int64_t process_at_s, const char *unique_key,
                             int64_t unique_ttl_s)
{
    if (unique_key == NULL) {
        casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_SCHEDULE);
        casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
        casynq__cmd_keyf(cmd, "asynq:{%s}:scheduled", queue);
        casynq__cmd_arg(cmd, msg, msg_len);
        casynq__cmd_arg_int(cmd, process_at_s);
        casynq__cmd_arg_str(cmd, id);
        return;
    }
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_SCHEDULE_UNIQUE);
    casynq__cmd_keyf(cmd, "%s", unique_key);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_keyf(cmd, "asynq:{%s}:scheduled", queue);
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg_int(cmd, unique_ttl_s);
    casynq__cmd_arg_int(cmd, process_at_s);
    casynq__cmd_arg(cmd, msg, msg_len);
}

void casynq__broker_add_to_group(struct casynq__cmd *cmd, const char *queue,
                                 const char *id, const void *msg,
                                 size_t msg_len, const char *group,
                                 int64_t now_s, const char *unique_key,
                                 int64_t unique_ttl_s)
{
    casynq__cmd_init_script(cmd, unique_key == NULL
                                         ? CASYNQ__SCRIPT_ADD_TO_GROUP
                                         : CASYNQ__SCRIPT_ADD_TO_GROUP_UNIQUE);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_keyf(cmd, "asynq:{%s}:g:%s", queue, group);
    casynq__cmd_keyf(cmd, "asynq:{%s}:groups", queue);
    if (unique_key != NULL) {
        casynq__cmd_keyf(cmd, "%s", unique_key);
    }
    casynq__cmd_arg(cmd, msg, msg_len);
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg_int(cmd, now_s);
    casynq__cmd_arg_str(cmd, group);
    if (unique_key != NULL) {
        casynq__cmd_arg_int(cmd, unique_ttl_s);
    }
}

static int reply_error(const redisReply *r, char *errbuf)
{
    if (r == NULL) {
        return casynq__fail(errbuf, CASYNQ_EREDIS, "no reply from redis");
    }
    if (r->type == REDIS_REPLY_ERROR) {
        return casynq__fail(errbuf, CASYNQ_EREDIS, "redis error: %s", r->str);
    }
    return casynq__fail(errbuf, CASYNQ_EREDIS,
                        "unexpected redis reply of type %d", r->type);
}

/* Parses a decimal integer string of len bytes into *out. Returns false,
 * with *out set to 0, when the text is not an integer that fits int64. */
static bool parse_int64(const char *s, size_t len, int64_t *out)
{
    char text[24];
    char *end = NULL;
    long long v;

    *out = 0;
    if (len == 0 || len >= sizeof(text)) {
        return false;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    errno = 0;
    v = strtoll(text, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

int casynq__broker_parse_enqueue(const redisReply *r, char *errbuf)
{
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        return reply_error(r, errbuf);
    }
    switch (r->integer) {
    case 1:
        return 0;
    case 0:
        return casynq__fail(errbuf, CASYNQ_ETASKID_CONFLICT,
                            "task ID conflicts with another task");
    case -1:
        return casynq__fail(errbuf, CASYNQ_EDUPLICATE,
                            "task already exists: a unique task with the "
                            "same type, payload and queue holds the lock");
    default:
        return casynq__fail(errbuf, CASYNQ_EREDIS,
                            "unexpected enqueue result %lld", r->integer);
    }
}

void casynq__broker_dequeue(struct casynq__cmd *cmd, const char *const *queues,
                            int nqueues, int64_t lease_expiry_s, int max)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_DEQUEUE);
    for (int i = 0; i < nqueues; i++) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queues[i]);
        casynq__cmd_keyf(cmd, "asynq:{%s}:paused", queues[i]);
        casynq__cmd_keyf(cmd, "asynq:{%s}:active", queues[i]);
        casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queues[i]);
    }
    casynq__cmd_arg_int(cmd, lease_expiry_s);
    casynq__cmd_arg_int(cmd, max);
    for (int i = 0; i < nqueues; i++) {
        casynq__cmd_argf(cmd, "asynq:{%s}:t:", queues[i]);
    }
}

int casynq__broker_parse_dequeue(const redisReply *r,
                                 struct casynq__dequeued *out, int max,
                                 char *errbuf)
{
    int n = 0;

    if (r != NULL && r->type == REDIS_REPLY_NIL) {
        return 0;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 4 != 0) {
        return reply_error(r, errbuf);
    }
    for (size_t i = 0; i + 3 < r->elements && n < max; i += 4) {
        const redisReply *q = r->element[i];
        const redisReply *id = r->element[i + 1];
        const redisReply *msg = r->element[i + 2];
        const redisReply *since = r->element[i + 3];

        if (q->type != REDIS_REPLY_INTEGER || id->type != REDIS_REPLY_STRING) {
            return casynq__fail(errbuf, CASYNQ_EPROTO,
                                "malformed dequeue reply at entry %zu", i / 4);
        }
        out[n].queue_index = (int)q->integer - 1;
        out[n].id = id->str;
        out[n].id_len = id->len;
        out[n].msg = msg->type == REDIS_REPLY_STRING ? msg->str : NULL;
        out[n].msg_len = msg->type == REDIS_REPLY_STRING ? msg->len : 0;
        out[n].pending_since_ns = 0;
        if (since->type == REDIS_REPLY_STRING) {
            parse_int64(since->str, since->len, &out[n].pending_since_ns);
        }
        n++;
    }
    return n;
}

/* Appends the keys of the processed counters for the day of now_s. */
static void stats_keys(struct casynq__cmd *cmd, const char *queue,
                       int64_t now_s, bool with_failed)
{
    char date[11];

    casynq__utc_date(now_s, date);
    casynq__cmd_keyf(cmd, "asynq:{%s}:processed:%s", queue, date);
    if (with_failed) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:failed:%s", queue, date);
    }
    casynq__cmd_keyf(cmd, "asynq:{%s}:processed", queue);
    if (with_failed) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:failed", queue);
    }
}

void casynq__broker_done(struct casynq__cmd *cmd, const char *queue,
                         const char *id, const char *unique_key, int64_t now_s)
{
    bool unique = unique_key != NULL && unique_key[0] != '\0';

    casynq__cmd_init_script(cmd, unique ? CASYNQ__SCRIPT_DONE_UNIQUE
                                        : CASYNQ__SCRIPT_DONE);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    stats_keys(cmd, queue, now_s, false);
    if (unique) {
        casynq__cmd_keyf(cmd, "%s", unique_key);
    }
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg_int(cmd, now_s + CASYNQ__STATS_TTL_S);
    casynq__cmd_arg_str(cmd, MAXINT64_STR);
}

void casynq__broker_done_batch(struct casynq__cmd *cmd, const char *queue,
                               const struct casynq__done_item *items, int n,
                               int64_t now_s)
{
    int next_unique_key = 4 + n + 1;
    char date[11];

    casynq__utc_date(now_s, date);
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_DONE_BATCH);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:processed:%s", queue, date);
    casynq__cmd_keyf(cmd, "asynq:{%s}:processed", queue);
    for (int i = 0; i < n; i++) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, items[i].id);
    }
    for (int i = 0; i < n; i++) {
        if (items[i].unique_key != NULL && items[i].unique_key[0] != '\0') {
            casynq__cmd_keyf(cmd, "%s", items[i].unique_key);
        }
    }
    casynq__cmd_arg_int(cmd, now_s + CASYNQ__STATS_TTL_S);
    casynq__cmd_arg_str(cmd, MAXINT64_STR);
    casynq__cmd_arg_int(cmd, n);
    for (int i = 0; i < n; i++) {
        bool unique =
                items[i].unique_key != NULL && items[i].unique_key[0] != '\0';

        casynq__cmd_arg_str(cmd, items[i].id);
        casynq__cmd_arg_int(cmd, unique ? next_unique_key++ : 0);
    }
}

void casynq__broker_mark_complete(struct casynq__cmd *cmd, const char *queue,
                                  const char *id, const void *msg,
                                  size_t msg_len, const char *unique_key,
                                  int64_t now_s, int64_t retention_s)
{
    bool unique = unique_key != NULL && unique_key[0] != '\0';

    casynq__cmd_init_script(cmd, unique ? CASYNQ__SCRIPT_MARK_COMPLETE_UNIQUE
                                        : CASYNQ__SCRIPT_MARK_COMPLETE);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:completed", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    stats_keys(cmd, queue, now_s, false);
    if (unique) {
        casynq__cmd_keyf(cmd, "%s", unique_key);
    }
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg_int(cmd, now_s + CASYNQ__STATS_TTL_S);
    casynq__cmd_arg_int(cmd, now_s + retention_s);
    casynq__cmd_arg(cmd, msg, msg_len);
    casynq__cmd_arg_str(cmd, MAXINT64_STR);
}

void casynq__broker_requeue(struct casynq__cmd *cmd, const char *queue,
                            const char *id)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_REQUEUE);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_arg_str(cmd, id);
}

void casynq__broker_retry(struct casynq__cmd *cmd, const char *queue,
                          const char *id, const void *msg, size_t msg_len,
                          int64_t retry_at_s, bool is_failure, int64_t now_s)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_RETRY);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:retry", queue);
    stats_keys(cmd, queue, now_s, true);
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg(cmd, msg, msg_len);
    casynq__cmd_arg_int(cmd, retry_at_s);
    casynq__cmd_arg_int(cmd, now_s + CASYNQ__STATS_TTL_S);
    casynq__cmd_arg_int(cmd, is_failure ? 1 : 0);
    casynq__cmd_arg_str(cmd, MAXINT64_STR);
}

void casynq__broker_archive(struct casynq__cmd *cmd, const char *queue,
                            const char *id, const void *msg, size_t msg_len,
                            int64_t now_s)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_ARCHIVE);
    casynq__cmd_keyf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_keyf(cmd, "asynq:{%s}:active", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:archived", queue);
    stats_keys(cmd, queue, now_s, true);
    casynq__cmd_arg_str(cmd, id);
    casynq__cmd_arg(cmd, msg, msg_len);
    casynq__cmd_arg_int(cmd, now_s);
    casynq__cmd_arg_int(cmd, now_s - CASYNQ__ARCHIVE_MAX_AGE_S);
    casynq__cmd_arg_int(cmd, CASYNQ__ARCHIVE_MAX_SIZE);
    casynq__cmd_arg_int(cmd, now_s + CASYNQ__STATS_TTL_S);
    casynq__cmd_arg_str(cmd, MAXINT64_STR);
    casynq__cmd_argf(cmd, "asynq:{%s}:t:", queue);
}

int casynq__broker_parse_status(const redisReply *r, char *errbuf)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR &&
        strcmp(r->str, "NOT FOUND") == 0) {
        return casynq__fail(errbuf, CASYNQ_ENOTFOUND,
                            "task is no longer active: another server or "
                            "the recoverer moved it");
    }
    if (r != NULL &&
        (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING) &&
        strcmp(r->str, "OK") == 0) {
        return 0;
    }
    return reply_error(r, errbuf);
}

void casynq__broker_forward(struct casynq__cmd *cmd, const char *queue,
                            const char *set, int64_t now_s, int64_t now_ns)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_FORWARD);
    casynq__cmd_keyf(cmd, "asynq:{%s}:%s", queue, set);
    casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
    casynq__cmd_arg_int(cmd, now_s);
    casynq__cmd_argf(cmd, "asynq:{%s}:t:", queue);
    casynq__cmd_arg_int(cmd, now_ns);
    casynq__cmd_argf(cmd, "asynq:{%s}:g:", queue);
}

void casynq__broker_delete_expired_completed(struct casynq__cmd *cmd,
                                             const char *queue, int64_t now_s,
                                             int batch)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_DELETE_EXPIRED_COMPLETED);
    casynq__cmd_keyf(cmd, "asynq:{%s}:completed", queue);
    casynq__cmd_arg_int(cmd, now_s);
    casynq__cmd_argf(cmd, "asynq:{%s}:t:", queue);
    casynq__cmd_arg_int(cmd, batch);
}

int64_t casynq__broker_parse_count(const redisReply *r, char *errbuf)
{
    if (r == NULL || r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
        return reply_error(r, errbuf);
    }
    return r->integer;
}

void casynq__broker_extend_lease(struct casynq__cmd *cmd, const char *queue,
                                 const char *const *ids, int nids,
                                 int64_t expiry_s)
{
    casynq__cmd_init(cmd, "ZADD");
    casynq__cmd_argf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_arg_str(cmd, "XX");
    for (int i = 0; i < nids; i++) {
        casynq__cmd_arg_int(cmd, expiry_s);
        casynq__cmd_arg_str(cmd, ids[i]);
    }
}

void casynq__broker_list_lease_expired(struct casynq__cmd *cmd,
                                       const char *queue, int64_t cutoff_s)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_LIST_LEASE_EXPIRED);
    casynq__cmd_keyf(cmd, "asynq:{%s}:lease", queue);
    casynq__cmd_arg_int(cmd, cutoff_s);
    casynq__cmd_argf(cmd, "asynq:{%s}:t:", queue);
}

void casynq__broker_write_result(struct casynq__cmd *cmd, const char *queue,
                                 const char *id, const void *data, size_t len)
{
    casynq__cmd_init(cmd, "HSET");
    casynq__cmd_argf(cmd, "asynq:{%s}:t:%s", queue, id);
    casynq__cmd_arg_str(cmd, "result");
    casynq__cmd_arg(cmd, data, len);
}

void casynq__broker_servers_zadd(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who,
                                 int64_t expiry_s)
{
    casynq__cmd_init(cmd, "ZADD");
    casynq__cmd_arg_str(cmd, CASYNQ__SERVERS_KEY);
    casynq__cmd_arg_int(cmd, expiry_s);
    casynq__cmd_argf(cmd, "asynq:servers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
}

void casynq__broker_workers_zadd(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who,
                                 int64_t expiry_s)
{
    casynq__cmd_init(cmd, "ZADD");
    casynq__cmd_arg_str(cmd, CASYNQ__WORKERS_KEY);
    casynq__cmd_arg_int(cmd, expiry_s);
    casynq__cmd_argf(cmd, "asynq:workers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
}

void casynq__broker_write_server_state(
        struct casynq__cmd *cmd, const struct casynq__server_ident *who,
        const void *server_info, size_t server_info_len,
        const char *const *worker_ids, const char *const *worker_infos,
        const size_t *worker_lens, int nworkers, int ttl_s)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_WRITE_SERVER_STATE);
    casynq__cmd_keyf(cmd, "asynq:servers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
    casynq__cmd_keyf(cmd, "asynq:workers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
    casynq__cmd_arg_int(cmd, ttl_s);
    casynq__cmd_arg(cmd, server_info, server_info_len);
    for (int i = 0; i < nworkers; i++) {
        casynq__cmd_arg_str(cmd, worker_ids[i]);
        casynq__cmd_arg(cmd, worker_infos[i], worker_lens[i]);
    }
}

void casynq__broker_wait_pending(struct casynq__cmd *cmd, const char *queue,
                                 double timeout_s)
{
    /* Whole milliseconds, formatted without %f, whose decimal point
     * follows the process's locale. */
    long long ms = (long long)(timeout_s * 1000.0 + 0.5);

    casynq__cmd_init(cmd, "BLMOVE");
    casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
    casynq__cmd_keyf(cmd, "asynq:{%s}:pending", queue);
    casynq__cmd_arg_str(cmd, "RIGHT");
    casynq__cmd_arg_str(cmd, "RIGHT");
    casynq__cmd_argf(cmd, "%lld.%03lld", ms / 1000, ms % 1000);
}

void casynq__broker_servers_zrem(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who)
{
    casynq__cmd_init(cmd, "ZREM");
    casynq__cmd_arg_str(cmd, CASYNQ__SERVERS_KEY);
    casynq__cmd_argf(cmd, "asynq:servers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
}

void casynq__broker_workers_zrem(struct casynq__cmd *cmd,
                                 const struct casynq__server_ident *who)
{
    casynq__cmd_init(cmd, "ZREM");
    casynq__cmd_arg_str(cmd, CASYNQ__WORKERS_KEY);
    casynq__cmd_argf(cmd, "asynq:workers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
}

void casynq__broker_clear_server_state(struct casynq__cmd *cmd,
                                       const struct casynq__server_ident *who)
{
    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_CLEAR_SERVER_STATE);
    casynq__cmd_keyf(cmd, "asynq:servers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
    casynq__cmd_keyf(cmd, "asynq:workers:{%s:%d:%s}", who->host, who->pid,
                     who->server_id);
}

int casynq__broker_unique_key(struct casynq__buf *out, const char *queue,
                              const char *type, const void *payload,
                              size_t payload_len)
{
    char hex[33];

    if (payload == NULL) {
        return casynq__buf_printf(out, "asynq:{%s}:unique:%s:", queue, type);
    }
    casynq__md5_hex(payload, payload_len, hex);
    return casynq__buf_printf(out, "asynq:{%s}:unique:%s:%s", queue, type, hex);
}

void casynq__broker_queue_stats(struct casynq__cmd *cmd, const char *queue)
{
    static const char *const keys[] = {
            "pending",   "active",    "scheduled", "retry",  "archived",
            "completed", "processed", "failed",    "paused", "groups",
    };

    casynq__cmd_init_script(cmd, CASYNQ__SCRIPT_QUEUE_STATS);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        casynq__cmd_keyf(cmd, "asynq:{%s}:%s", queue, keys[i]);
    }
    casynq__cmd_argf(cmd, "asynq:{%s}:t:", queue);
    casynq__cmd_argf(cmd, "asynq:{%s}:g:", queue);
    casynq__cmd_arg_int(cmd, CASYNQ__STATS_TASK_SAMPLE);
    casynq__cmd_arg_int(cmd, CASYNQ__STATS_GROUP_SAMPLE);
}

/* Reads element i of a queue_stats reply, an integer or a decimal string,
 * into *out. Returns false when it is neither. */
static bool stats_value(const redisReply *r, size_t i, int64_t *out)
{
    const redisReply *e = r->element[i];

    if (e->type == REDIS_REPLY_INTEGER) {
        *out = (int64_t)e->integer;
        return true;
    }
    if (e->type == REDIS_REPLY_NIL) {
        *out = 0;
        return true;
    }
    if (e->type == REDIS_REPLY_STRING) {
        return parse_int64(e->str, e->len, out);
    }
    return false;
}

int casynq__broker_parse_queue_stats(const redisReply *r,
                                     struct casynq__queue_stats *out,
                                     char *errbuf)
{
    int64_t v[13];

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 13) {
        return reply_error(r, errbuf);
    }
    for (size_t i = 0; i < 13; i++) {
        if (!stats_value(r, i, &v[i])) {
            return casynq__fail(errbuf, CASYNQ_EPROTO,
                                "malformed queue_stats reply: element %zu "
                                "is not a number",
                                i);
        }
    }
    out->pending = v[0];
    out->active = v[1];
    out->scheduled = v[2];
    out->retry = v[3];
    out->archived = v[4];
    out->completed = v[5];
    out->processed_total = v[6];
    out->failed_total = v[7];
    out->paused = v[8] != 0;
    out->groups = v[9];
    out->aggregating = v[10];
    out->oldest_pending_ns = v[11];
    out->memory_bytes = v[12];
    return 0;
}
