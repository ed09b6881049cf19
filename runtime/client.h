#ifndef CASYNQ_RUNTIME_CLIENT_H
#define CASYNQ_RUNTIME_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct casynq_enqueue_options {
    char *queue; /* NULL: "default" */
    bool has_max_retry;
    int max_retry;
    bool has_timeout;
    int64_t timeout_s;
    bool has_deadline;
    int64_t deadline_unix_s;
    bool has_process_at; /* process_at and process_in replace each other */
    int64_t process_at_unix_s;
    bool has_process_in;
    int64_t process_in_s;
    bool has_unique;
    int64_t unique_ttl_s;
    char *task_id; /* NULL: a new UUID */
    bool has_retention;
    int64_t retention_s;
    char *group;    /* NULL: no group */
    char *rate_key; /* NULL: per-key rate limits do not apply */
};

struct casynq_task_info {
    char *id;
    char *queue;
    char *type;
    char *group; /* NULL when none */
    enum casynq_task_state state;
    int max_retry;
    int64_t timeout_s;
    int64_t deadline_unix_s;
    int64_t next_process_at_unix_s;
    int64_t retention_s;
};

/* The fields of a task message that enqueue computes from the options,
 * after validation. */
struct casynq__enqueue_plan {
    const char *queue;
    char id[CASYNQ__UUID_LEN + 1]; /* generated IDs only */
    const char *task_id;           /* id, or the caller's ID */
    int max_retry;
    int64_t timeout_s;
    int64_t deadline_unix_s;
    int64_t retention_s;
    int64_t process_at_unix_s; /* 0 when processed at once */
    int64_t unique_ttl_s;      /* 0 when not unique */
    const char *group;         /* NULL when none */
    const char *rate_key;      /* NULL when none */
};

/* Validates opts (NULL means defaults) against asynq's rules and fills
 * plan. now_s is the enqueue time. Borrowed strings in plan point into
 * opts and stay valid while opts does.
 * Returns: 0, or CASYNQ_EINVAL with a message naming the field in errbuf.
 * Thread: any. */
int casynq__enqueue_plan(const struct casynq_enqueue_options *opts,
                         int64_t now_s, struct casynq__enqueue_plan *plan,
                         char *errbuf);

#endif
