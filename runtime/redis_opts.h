#ifndef CASYNQ_RUNTIME_REDIS_OPTS_H
#define CASYNQ_RUNTIME_REDIS_OPTS_H

#include "util.h"

/* Where and how to reach Redis. A value object: clients and servers keep
 * their own copy, so it is never shared between threads. */
struct casynq_redis_options {
    char *host; /* NULL when unix_path is set */
    int port;
    char *unix_path; /* NULL for TCP */
    int db;
    char *username; /* NULL for the default user */
    char *password; /* NULL for no AUTH */
    int connect_timeout_ms;
    int command_timeout_ms;
    char err[CASYNQ__ERRBUF_SIZE];
};

#define CASYNQ__DEFAULT_REDIS_HOST         "127.0.0.1"
#define CASYNQ__DEFAULT_REDIS_PORT         6379
#define CASYNQ__DEFAULT_CONNECT_TIMEOUT_MS 5000
#define CASYNQ__DEFAULT_COMMAND_TIMEOUT_MS 5000

/* Copies src into dst, which must be zeroed or freed with
 * casynq__redis_options_finish() first.
 * Returns: 0 or CASYNQ_ENOMEM (dst is left empty). */
int casynq__redis_options_copy(struct casynq_redis_options *dst,
                               const struct casynq_redis_options *src);

/* Frees the strings of an embedded options value. */
void casynq__redis_options_finish(struct casynq_redis_options *o);

#endif
