#ifndef CASYNQ_RUNTIME_CONFIG_H
#define CASYNQ_RUNTIME_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "redis_opts.h"

/* Limiters whose rejection counts one configuration may export. */
#define CASYNQ__CONFIG_MAX_LIMITERS 8

struct casynq__queue_cfg {
    char *name;
    int weight;
};

/* The server settings. A value object: casynq_server_create() copies it
 * and the copy is immutable afterwards. */
struct casynq_config {
    struct casynq_redis_options redis;
    int concurrency;
    struct casynq__queue_cfg *queues;
    int nqueues;
    bool queues_set; /* false while the default {"default": 1} applies */
    bool strict;
    casynq_retry_delay_fn retry_delay;
    void *retry_delay_ud;
    casynq_is_failure_fn is_failure;
    void *is_failure_ud;
    casynq_error_handler_fn error_handler;
    void *error_handler_ud;
    int64_t shutdown_timeout_ms;
    int64_t task_check_interval_ms;
    int64_t delayed_task_check_interval_ms;
    int64_t janitor_interval_ms;
    int janitor_batch_size;
    casynq_health_check_fn health_check;
    void *health_check_ud;
    int64_t health_check_interval_ms;
    struct casynq__logger log;
    char *metrics_addr;          /* owned; NULL: no metrics endpoint */
    int64_t metrics_interval_ms; /* queue statistics refresh period */
    /* Limiters whose rejection counts the metrics endpoint exports;
     * borrowed, and copied by pointer with the configuration. */
    const struct casynq_limiter *limiters[CASYNQ__CONFIG_MAX_LIMITERS];
    int nlimiters;
    char err[CASYNQ__ERRBUF_SIZE];
};

/* Copies src into dst (zeroed first). Returns: 0 or CASYNQ_ENOMEM. */
int casynq__config_copy(struct casynq_config *dst,
                        const struct casynq_config *src);

/* Frees what a copy holds. */
void casynq__config_finish(struct casynq_config *cfg);

/* Checks the settings as a whole (at least one queue).
 * Returns: 0 or CASYNQ_EINVAL with a message in cfg->err. */
int casynq__config_validate(struct casynq_config *cfg);

/* asynq's default retry delay in milliseconds for a task retried `retried`
 * times: retried^4 + 15 + r * (retried + 1) seconds with r uniform in
 * [0, 29] drawn from `random`. */
int64_t casynq__default_retry_delay_ms(int retried, uint64_t random);

#endif
