/* DESIGN: the enqueueing client.
 *
 * A client owns one synchronous connection (conn.c) and enqueues the way
 * asynq's Go client does (asynq v0.26.0, client.go): validate the options
 * before touching Redis, register the queue in asynq:queues once per
 * client, then run exactly one broker script, chosen by the process time
 * and group (schedule, add to group or enqueue, each with a unique
 * variant). A client with a limiter (limiter.c) asks it, after the
 * validation and before any write, whether the task may go ahead. A
 * client has no lock; callers use it from one thread at a time. */
#include "client.h"

#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "conn.h"
#include "limiter.h"
#include "msg.h"
#include "task.h"

/* Queue names already registered with SADD by this client. */
struct known_queue {
    char *name;
    struct known_queue *next;
};

struct casynq_client {
    struct casynq__conn conn;
    struct known_queue *known;
    struct casynq_limiter *limiter; /* borrowed; NULL for none */
    int64_t retry_after_ms;         /* of the last enqueue, or 0 */
    char err[CASYNQ__ERRBUF_SIZE];
};

int casynq_client_create(const struct casynq_redis_options *redis,
                         struct casynq_client **out)
{
    struct casynq_client *c;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    if (redis == NULL) {
        return CASYNQ_EINVAL;
    }
    c = casynq__calloc(1, sizeof(*c));
    if (c == NULL) {
        return CASYNQ_ENOMEM;
    }
    if (casynq__conn_init(&c->conn, redis) != 0) {
        casynq__free(c);
        return CASYNQ_ENOMEM;
    }
    *out = c;
    return 0;
}

void casynq_client_destroy(struct casynq_client *client)
{
    struct known_queue *q;

    if (client == NULL) {
        return;
    }
    while (client->known != NULL) {
        q = client->known;
        client->known = q->next;
        casynq__free(q->name);
        casynq__free(q);
    }
    casynq__conn_finish(&client->conn);
    casynq__free(client);
}

int casynq_client_set_limiter(struct casynq_client *c, struct casynq_limiter *l)
{
    if (c == NULL) {
        return CASYNQ_EINVAL;
    }
    c->limiter = l;
    return 0;
}

int64_t casynq_client_retry_after_ms(const struct casynq_client *c)
{
    return c != NULL ? c->retry_after_ms : 0;
}

const char *casynq_client_last_error(const struct casynq_client *client)
{
    return client != NULL ? client->err : "";
}

/* Copies a connection failure's message into the client's error. */
static int conn_failed(struct casynq_client *c, int rc)
{
    memcpy(c->err, c->conn.err, sizeof(c->err));
    return rc;
}

int casynq_client_ping(struct casynq_client *client)
{
    redisReply *r = NULL;
    int rc;

    if (client == NULL) {
        return CASYNQ_EINVAL;
    }
    rc = casynq__conn_command(&client->conn, &r, "PING");
    if (rc != 0) {
        return conn_failed(client, rc);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        rc = casynq__fail(client->err, CASYNQ_EREDIS, "redis PING failed: %s",
                          r->str);
    }
    freeReplyObject(r);
    return rc;
}

/* Runs one built command and hands its reply to the caller. */
static int run(struct casynq_client *c, struct casynq__cmd *cmd,
               redisReply **reply)
{
    int rc = casynq__conn_exec(&c->conn, cmd, reply);

    casynq__cmd_free(cmd);
    if (rc != 0) {
        return rc == CASYNQ_ENOMEM ? rc : conn_failed(c, rc);
    }
    return 0;
}

static int register_queue(struct casynq_client *c, const char *queue)
{
    struct casynq__cmd cmd;
    struct known_queue *q;
    redisReply *r;
    int rc;

    for (q = c->known; q != NULL; q = q->next) {
        if (strcmp(q->name, queue) == 0) {
            return 0;
        }
    }
    casynq__broker_register_queue(&cmd, queue);
    rc = run(c, &cmd, &r);
    if (rc != 0) {
        return rc;
    }
    rc = casynq__broker_parse_count(r, c->err) < 0 ? CASYNQ_EREDIS : 0;
    freeReplyObject(r);
    if (rc != 0) {
        return rc;
    }
    q = casynq__calloc(1, sizeof(*q));
    if (q == NULL) {
        return CASYNQ_ENOMEM;
    }
    q->name = casynq__strdup(queue);
    if (q->name == NULL) {
        casynq__free(q);
        return CASYNQ_ENOMEM;
    }
    q->next = c->known;
    c->known = q;
    return 0;
}

/* Encodes the TaskMessage for task under plan into out. */
static int encode_message(const struct casynq_task *task,
                          const struct casynq__enqueue_plan *plan,
                          const char *unique_key, struct casynq__buf *out)
{
    Asynq__TaskMessage__HeadersEntry *entries = NULL;
    Asynq__TaskMessage__HeadersEntry **ptrs = NULL;
    Asynq__TaskMessage msg;
    int rc;

    /* The generated INIT macro casts away const, which -Wcast-qual
     * rejects, so the init function fills the defaults instead. */
    asynq__task_message__init(&msg);
    msg.type = task->type;
    msg.payload.data = task->payload;
    msg.payload.len = task->payload_len;
    msg.id = (char *)(uintptr_t)plan->task_id;
    msg.queue = (char *)(uintptr_t)plan->queue;
    msg.retry = plan->max_retry;
    msg.timeout = plan->timeout_s;
    msg.deadline = plan->deadline_unix_s;
    msg.retention = plan->retention_s;
    if (unique_key != NULL) {
        msg.unique_key = (char *)(uintptr_t)unique_key;
    }
    if (plan->group != NULL) {
        msg.group_key = (char *)(uintptr_t)plan->group;
    }
    if (task->nheaders > 0) {
        entries = casynq__calloc(task->nheaders, sizeof(*entries));
        ptrs = casynq__calloc(task->nheaders, sizeof(*ptrs));
        if (entries == NULL || ptrs == NULL) {
            rc = CASYNQ_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < task->nheaders; i++) {
            asynq__task_message__headers_entry__init(&entries[i]);
            entries[i].key = task->headers[i].key;
            entries[i].value = task->headers[i].value;
            ptrs[i] = &entries[i];
        }
        msg.n_headers = task->nheaders;
        msg.headers = ptrs;
    }
    rc = casynq__msg_encode(&msg, out);

out:
    casynq__free(entries);
    casynq__free(ptrs);
    return rc;
}

static int make_info(const struct casynq_task *task,
                     const struct casynq__enqueue_plan *plan, int64_t now_s,
                     struct casynq_task_info **out)
{
    struct casynq_task_info *info = casynq__calloc(1, sizeof(*info));

    if (info == NULL) {
        return CASYNQ_ENOMEM;
    }
    info->id = casynq__strdup(plan->task_id);
    info->queue = casynq__strdup(plan->queue);
    info->type = casynq__strdup(task->type);
    info->group = casynq__strdup(plan->group);
    if (info->id == NULL || info->queue == NULL || info->type == NULL ||
        (plan->group != NULL && info->group == NULL)) {
        casynq_task_info_destroy(info);
        return CASYNQ_ENOMEM;
    }
    info->max_retry = plan->max_retry;
    info->timeout_s = plan->timeout_s;
    info->deadline_unix_s = plan->deadline_unix_s;
    info->retention_s = plan->retention_s;
    if (plan->process_at_unix_s > 0) {
        info->state = CASYNQ_STATE_SCHEDULED;
        info->next_process_at_unix_s = plan->process_at_unix_s;
    } else if (plan->group != NULL) {
        info->state = CASYNQ_STATE_AGGREGATING;
    } else {
        info->state = CASYNQ_STATE_PENDING;
        info->next_process_at_unix_s = now_s;
    }
    *out = info;
    return 0;
}

/* Builds the one script call that stores the task, as asynq routes it. */
static void build_store(struct casynq__cmd *cmd,
                        const struct casynq__enqueue_plan *plan,
                        const struct casynq__buf *msg, const char *unique_key,
                        int64_t now_ns, int64_t now_s)
{
    if (plan->process_at_unix_s > 0) {
        /* The lock lasts from now until ttl after the process time. */
        casynq__broker_schedule(cmd, plan->queue, plan->task_id, msg->data,
                                msg->len, plan->process_at_unix_s, unique_key,
                                plan->process_at_unix_s + plan->unique_ttl_s -
                                        now_s);
    } else if (plan->group != NULL) {
        casynq__broker_add_to_group(cmd, plan->queue, plan->task_id,
                                    msg->data, msg->len, plan->group, now_s,
                                    unique_key, plan->unique_ttl_s);
    } else {
        casynq__broker_enqueue(cmd, plan->queue, plan->task_id, msg->data,
                               msg->len, now_ns, unique_key,
                               plan->unique_ttl_s);
    }
}

int casynq_client_enqueue(struct casynq_client *client,
                          const struct casynq_task *task,
                          const struct casynq_enqueue_options *opts,
                          struct casynq_task_info **info_out)
{
    struct casynq__enqueue_plan plan;
    struct casynq__buf unique = {0};
    struct casynq__buf msg = {0};
    struct casynq__cmd cmd;
    redisReply *r = NULL;
    int64_t now_ns = casynq__now_unix_ns();
    int64_t now_s = now_ns / 1000000000LL;
    int rc;

    if (info_out != NULL) {
        *info_out = NULL;
    }
    if (client == NULL) {
        return CASYNQ_EINVAL;
    }
    client->err[0] = '\0';
    if (task == NULL || task->view != NULL) {
        return casynq__fail(client->err, CASYNQ_EINVAL,
                            "task is NULL or not made by casynq_task_create");
    }
    client->retry_after_ms = 0;
    rc = casynq__enqueue_plan(opts, now_s, &plan, client->err);
    if (rc != 0) {
        return rc;
    }
    /* Admission control comes after validation, so a malformed request
     * uses up no budget, and before anything is written: a rejected task
     * leaves Redis as it was. The backlog is counted on this client's
     * connection, which reaches the Redis the task would go to. */
    if (client->limiter != NULL) {
        rc = casynq__limiter_admit(client->limiter, &client->conn,
                                   plan.rate_key, plan.queue, task->type,
                                   task->payload_len, &client->retry_after_ms,
                                   client->err);
        if (rc != 0) {
            return rc;
        }
    }
    if (plan.unique_ttl_s > 0 &&
        casynq__broker_unique_key(&unique, plan.queue, task->type,
                                  task->payload, task->payload_len) != 0) {
        rc = CASYNQ_ENOMEM;
        goto out;
    }
    rc = encode_message(task, &plan, unique.data, &msg);
    if (rc != 0) {
        goto out;
    }
    rc = register_queue(client, plan.queue);
    if (rc != 0) {
        goto out;
    }
    build_store(&cmd, &plan, &msg, unique.data, now_ns, now_s);
    rc = run(client, &cmd, &r);
    if (rc != 0) {
        goto out;
    }
    rc = casynq__broker_parse_enqueue(r, client->err);
    if (rc == 0 && info_out != NULL) {
        rc = make_info(task, &plan, now_s, info_out);
    }

out:
    if (r != NULL) {
        freeReplyObject(r);
    }
    casynq__buf_free(&unique);
    casynq__buf_free(&msg);
    if (rc == CASYNQ_ENOMEM && client->err[0] == '\0') {
        casynq__fail(client->err, rc, "out of memory while enqueueing");
    }
    return rc;
}

const char *casynq_task_state_name(enum casynq_task_state state)
{
    switch (state) {
    case CASYNQ_STATE_ACTIVE:
        return "active";
    case CASYNQ_STATE_PENDING:
        return "pending";
    case CASYNQ_STATE_SCHEDULED:
        return "scheduled";
    case CASYNQ_STATE_RETRY:
        return "retry";
    case CASYNQ_STATE_ARCHIVED:
        return "archived";
    case CASYNQ_STATE_COMPLETED:
        return "completed";
    case CASYNQ_STATE_AGGREGATING:
        return "aggregating";
    }
    return "unknown";
}

void casynq_task_info_destroy(struct casynq_task_info *info)
{
    if (info == NULL) {
        return;
    }
    casynq__free(info->id);
    casynq__free(info->queue);
    casynq__free(info->type);
    casynq__free(info->group);
    casynq__free(info);
}

const char *casynq_task_info_id(const struct casynq_task_info *info)
{
    return info->id;
}

const char *casynq_task_info_queue(const struct casynq_task_info *info)
{
    return info->queue;
}

const char *casynq_task_info_type(const struct casynq_task_info *info)
{
    return info->type;
}

const char *casynq_task_info_group(const struct casynq_task_info *info)
{
    return info->group;
}

enum casynq_task_state
casynq_task_info_state(const struct casynq_task_info *info)
{
    return info->state;
}

int casynq_task_info_max_retry(const struct casynq_task_info *info)
{
    return info->max_retry;
}

int64_t casynq_task_info_timeout_s(const struct casynq_task_info *info)
{
    return info->timeout_s;
}

int64_t casynq_task_info_deadline_unix_s(const struct casynq_task_info *info)
{
    return info->deadline_unix_s;
}

int64_t
casynq_task_info_next_process_at_unix_s(const struct casynq_task_info *info)
{
    return info->next_process_at_unix_s;
}

int64_t casynq_task_info_retention_s(const struct casynq_task_info *info)
{
    return info->retention_s;
}
