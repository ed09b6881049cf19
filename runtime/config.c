/* DESIGN: the server configuration.
 *
 * A value object filled on one thread during setup. Defaults and limits
 * follow asynq v0.26.0 (server.go, Config and NewServer). Each setter
 * checks its value and leaves a message naming the field in cfg->err, so
 * bad settings are caught where they are made rather than when the server
 * starts. casynq_server_create() copies the whole object. */
#include "config.h"

#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "metrics.h"

#define DEFAULT_SHUTDOWN_TIMEOUT_MS       8000
#define DEFAULT_TASK_CHECK_INTERVAL_MS    1000
#define DEFAULT_DELAYED_CHECK_INTERVAL_MS 5000
#define DEFAULT_JANITOR_INTERVAL_MS       8000
#define DEFAULT_JANITOR_BATCH_SIZE        100
#define DEFAULT_HEALTH_CHECK_INTERVAL_MS  15000

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n >= 1 ? (int)n : 1;
}

static int set_default_queues(struct casynq_config *cfg)
{
    cfg->queues = casynq__calloc(1, sizeof(*cfg->queues));
    if (cfg->queues == NULL) {
        return CASYNQ_ENOMEM;
    }
    cfg->queues[0].name = casynq__strdup("default");
    if (cfg->queues[0].name == NULL) {
        return CASYNQ_ENOMEM;
    }
    cfg->queues[0].weight = 1;
    cfg->nqueues = 1;
    cfg->queues_set = false;
    return 0;
}

int casynq_config_create(struct casynq_config **out)
{
    struct casynq_config *cfg;
    struct casynq_redis_options *ro = NULL;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    cfg = casynq__calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return CASYNQ_ENOMEM;
    }
    if (casynq_redis_options_create(&ro) != 0 ||
        casynq__redis_options_copy(&cfg->redis, ro) != 0 ||
        set_default_queues(cfg) != 0) {
        casynq_redis_options_destroy(ro);
        casynq_config_destroy(cfg);
        return CASYNQ_ENOMEM;
    }
    casynq_redis_options_destroy(ro);
    cfg->concurrency = cpu_count();
    cfg->shutdown_timeout_ms = DEFAULT_SHUTDOWN_TIMEOUT_MS;
    cfg->task_check_interval_ms = DEFAULT_TASK_CHECK_INTERVAL_MS;
    cfg->delayed_task_check_interval_ms = DEFAULT_DELAYED_CHECK_INTERVAL_MS;
    cfg->janitor_interval_ms = DEFAULT_JANITOR_INTERVAL_MS;
    cfg->janitor_batch_size = DEFAULT_JANITOR_BATCH_SIZE;
    cfg->health_check_interval_ms = DEFAULT_HEALTH_CHECK_INTERVAL_MS;
    cfg->log.min_level = CASYNQ_LOG_INFO;
    cfg->metrics_interval_ms = CASYNQ__METRICS_DEFAULT_INTERVAL_MS;
    *out = cfg;
    return 0;
}

static void free_queues(struct casynq_config *cfg)
{
    for (int i = 0; i < cfg->nqueues; i++) {
        casynq__free(cfg->queues[i].name);
    }
    casynq__free(cfg->queues);
    cfg->queues = NULL;
    cfg->nqueues = 0;
}

void casynq__config_finish(struct casynq_config *cfg)
{
    free_queues(cfg);
    casynq__redis_options_finish(&cfg->redis);
    casynq__free(cfg->metrics_addr);
    cfg->metrics_addr = NULL;
}

void casynq_config_destroy(struct casynq_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    casynq__config_finish(cfg);
    casynq__free(cfg);
}

int casynq__config_copy(struct casynq_config *dst,
                        const struct casynq_config *src)
{
    memcpy(dst, src, sizeof(*dst));
    dst->queues = NULL;
    dst->nqueues = 0;
    dst->metrics_addr = NULL;
    memset(&dst->redis, 0, sizeof(dst->redis));
    if (casynq__redis_options_copy(&dst->redis, &src->redis) != 0) {
        return CASYNQ_ENOMEM;
    }
    if (src->metrics_addr != NULL) {
        dst->metrics_addr = casynq__strdup(src->metrics_addr);
        if (dst->metrics_addr == NULL) {
            casynq__config_finish(dst);
            return CASYNQ_ENOMEM;
        }
    }
    dst->queues =
            casynq__calloc((size_t)src->nqueues + 1, sizeof(*dst->queues));
    if (dst->queues == NULL) {
        casynq__config_finish(dst);
        return CASYNQ_ENOMEM;
    }
    for (int i = 0; i < src->nqueues; i++) {
        dst->queues[i].name = casynq__strdup(src->queues[i].name);
        dst->queues[i].weight = src->queues[i].weight;
        dst->nqueues++;
        if (dst->queues[i].name == NULL) {
            casynq__config_finish(dst);
            return CASYNQ_ENOMEM;
        }
    }
    return 0;
}

const char *casynq_config_last_error(const struct casynq_config *cfg)
{
    return cfg != NULL ? cfg->err : "";
}

int casynq_config_set_redis(struct casynq_config *cfg,
                            const struct casynq_redis_options *redis)
{
    struct casynq_redis_options copy;

    if (cfg == NULL || redis == NULL) {
        return CASYNQ_EINVAL;
    }
    if (casynq__redis_options_copy(&copy, redis) != 0) {
        return CASYNQ_ENOMEM;
    }
    casynq__redis_options_finish(&cfg->redis);
    cfg->redis = copy;
    return 0;
}

int casynq_config_set_concurrency(struct casynq_config *cfg, int concurrency)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (concurrency < 1) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "concurrency is %d: it must be 1 or more",
                            concurrency);
    }
    cfg->concurrency = concurrency;
    return 0;
}

int casynq_config_set_queue(struct casynq_config *cfg, const char *name,
                            int weight)
{
    struct casynq__queue_cfg *grown;
    char *copy;

    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (casynq__is_blank(name)) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "queue name is empty: give a name with at least "
                            "one character that is not a space");
    }
    if (strlen(name) > CASYNQ__MAX_QUEUE_LEN ||
        !casynq__utf8_valid(name, strlen(name))) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "queue name \"%.64s\" is longer than %d bytes or "
                            "not valid UTF-8",
                            name, CASYNQ__MAX_QUEUE_LEN);
    }
    if (weight < 1) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "weight of queue \"%s\" is %d: it must be 1 or "
                            "more",
                            name, weight);
    }
    if (!cfg->queues_set) {
        free_queues(cfg);
        cfg->queues_set = true;
    }
    for (int i = 0; i < cfg->nqueues; i++) {
        if (strcmp(cfg->queues[i].name, name) == 0) {
            cfg->queues[i].weight = weight;
            return 0;
        }
    }
    copy = casynq__strdup(name);
    grown = casynq__realloc(cfg->queues,
                            ((size_t)cfg->nqueues + 1) * sizeof(*grown));
    if (copy == NULL || grown == NULL) {
        casynq__free(copy);
        if (grown != NULL) {
            cfg->queues = grown;
        }
        return CASYNQ_ENOMEM;
    }
    cfg->queues = grown;
    cfg->queues[cfg->nqueues].name = copy;
    cfg->queues[cfg->nqueues].weight = weight;
    cfg->nqueues++;
    return 0;
}

int casynq_config_clear_queues(struct casynq_config *cfg)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    free_queues(cfg);
    cfg->queues_set = true;
    return 0;
}

int casynq_config_set_strict_priority(struct casynq_config *cfg, bool strict)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    cfg->strict = strict;
    return 0;
}

int casynq_config_set_retry_delay(struct casynq_config *cfg,
                                  casynq_retry_delay_fn fn, void *ud)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    cfg->retry_delay = fn;
    cfg->retry_delay_ud = ud;
    return 0;
}

int casynq_config_set_is_failure(struct casynq_config *cfg,
                                 casynq_is_failure_fn fn, void *ud)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    cfg->is_failure = fn;
    cfg->is_failure_ud = ud;
    return 0;
}

int casynq_config_set_error_handler(struct casynq_config *cfg,
                                    casynq_error_handler_fn fn, void *ud)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    cfg->error_handler = fn;
    cfg->error_handler_ud = ud;
    return 0;
}

static int check_interval(struct casynq_config *cfg, const char *field,
                          int64_t ms, int64_t min)
{
    if (ms < min) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "%s is %lld ms: it must be %lld ms or more", field,
                            (long long)ms, (long long)min);
    }
    return 0;
}

int casynq_config_set_shutdown_timeout_ms(struct casynq_config *cfg, int64_t ms)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "shutdown timeout", ms, 0) != 0) {
        return CASYNQ_EINVAL;
    }
    cfg->shutdown_timeout_ms = ms;
    return 0;
}

int casynq_config_set_task_check_interval_ms(struct casynq_config *cfg,
                                             int64_t ms)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "task check interval", ms, 1) != 0) {
        return CASYNQ_EINVAL;
    }
    cfg->task_check_interval_ms = ms;
    return 0;
}

int casynq_config_set_delayed_task_check_interval_ms(struct casynq_config *cfg,
                                                     int64_t ms)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "delayed task check interval", ms, 1) != 0) {
        return CASYNQ_EINVAL;
    }
    cfg->delayed_task_check_interval_ms = ms;
    return 0;
}

int casynq_config_set_janitor(struct casynq_config *cfg, int64_t interval_ms,
                              int batch_size)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "janitor interval", interval_ms, 1) != 0) {
        return CASYNQ_EINVAL;
    }
    if (batch_size < 1) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "janitor batch size is %d: it must be 1 or more",
                            batch_size);
    }
    cfg->janitor_interval_ms = interval_ms;
    cfg->janitor_batch_size = batch_size;
    return 0;
}

int casynq_config_set_health_check(struct casynq_config *cfg,
                                   casynq_health_check_fn fn, void *ud,
                                   int64_t interval_ms)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "health check interval", interval_ms, 1) != 0) {
        return CASYNQ_EINVAL;
    }
    cfg->health_check = fn;
    cfg->health_check_ud = ud;
    cfg->health_check_interval_ms = interval_ms;
    return 0;
}

int casynq_config_set_log(struct casynq_config *cfg, casynq_log_fn fn, void *ud,
                          enum casynq_log_level min_level)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (min_level < CASYNQ_LOG_DEBUG || min_level > CASYNQ_LOG_ERROR) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "log level %d is unknown: use CASYNQ_LOG_DEBUG "
                            "to CASYNQ_LOG_ERROR",
                            (int)min_level);
    }
    cfg->log.fn = fn;
    cfg->log.ud = ud;
    cfg->log.min_level = min_level;
    return 0;
}

int casynq_config_set_metrics_addr(struct casynq_config *cfg, const char *addr)
{
    struct sockaddr_storage sa;
    socklen_t len;
    char *copy = NULL;

    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (addr != NULL) {
        if (casynq__metrics_parse_addr(addr, &sa, &len, cfg->err) != 0) {
            return CASYNQ_EINVAL;
        }
        copy = casynq__strdup(addr);
        if (copy == NULL) {
            return CASYNQ_ENOMEM;
        }
    }
    casynq__free(cfg->metrics_addr);
    cfg->metrics_addr = copy;
    return 0;
}

int casynq_config_add_limiter(struct casynq_config *cfg,
                              const struct casynq_limiter *lim)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (lim == NULL) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "limiter is NULL: pass one created with "
                            "casynq_limiter_create()");
    }
    for (int i = 0; i < cfg->nlimiters; i++) {
        if (cfg->limiters[i] == lim) {
            return casynq__fail(cfg->err, CASYNQ_EINVAL,
                                "the limiter is already attached as limiter "
                                "%d: attach each limiter once, or its "
                                "rejections would be counted twice",
                                i + 1);
        }
    }
    if (cfg->nlimiters >= CASYNQ__CONFIG_MAX_LIMITERS) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "%d limiters are attached already, the "
                            "maximum: share one limiter between clients "
                            "instead of creating more",
                            CASYNQ__CONFIG_MAX_LIMITERS);
    }
    cfg->limiters[cfg->nlimiters] = lim;
    cfg->nlimiters++;
    return 0;
}

int casynq_config_set_metrics_interval_ms(struct casynq_config *cfg, int64_t ms)
{
    if (cfg == NULL) {
        return CASYNQ_EINVAL;
    }
    if (check_interval(cfg, "metrics interval", ms, 100) != 0) {
        return CASYNQ_EINVAL;
    }
    cfg->metrics_interval_ms = ms;
    return 0;
}

int casynq__config_validate(struct casynq_config *cfg)
{
    if (cfg->nqueues == 0) {
        return casynq__fail(cfg->err, CASYNQ_EINVAL,
                            "no queues are configured: add at least one with "
                            "casynq_config_set_queue()");
    }
    return 0;
}

int64_t casynq__default_retry_delay_ms(int retried, uint64_t random)
{
    /* Capping n keeps n^4 inside int64; any n this large already means a
     * delay of centuries. */
    int64_t n = retried < 0 ? 0 : (retried > 10000 ? 10000 : retried);
    int64_t r = (int64_t)(random % 30);

    return (n * n * n * n + 15 + r * (n + 1)) * 1000;
}
