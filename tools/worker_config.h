/* Settings of the casynq-worker binary: its JSON config file, the parsers of
 * its flag values, and the step that copies the settings into a
 * struct casynq_config. Kept apart from worker.c so that a unit test can
 * drive it without starting a server. */
#ifndef CASYNQ_TOOLS_WORKER_CONFIG_H
#define CASYNQ_TOOLS_WORKER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <casynq.h>

/* Maximum length of a queue name, in bytes, that the library accepts. */
#define WORKER_QUEUE_NAME_MAX 255

/* Largest config file read, in bytes, so that a path such as /dev/zero
 * fails instead of filling memory. */
#define WORKER_CONFIG_FILE_MAX (1024 * 1024)

/* Smallest metrics interval the library accepts, in milliseconds. */
#define WORKER_MIN_METRICS_INTERVAL_MS 100

/* Library defaults restated here because casynq_config_set_janitor() sets
 * the janitor interval and batch size together and struct casynq_config
 * has no getters. They match the defaults documented in casynq.h. */
#define WORKER_DEFAULT_JANITOR_INTERVAL_MS 8000
#define WORKER_DEFAULT_JANITOR_BATCH_SIZE  100

struct worker_queue {
    char *name; /* owned; 1 to WORKER_QUEUE_NAME_MAX bytes, not blank */
    int weight; /* >= 1 */
};

/* One layer of settings: the config file, the environment or the flags.
 * A field contains its "unset" value (given in its comment) when the layer
 * does not set it, so that layers can be merged. */
struct worker_config {
    char *redis_url;                        /* owned; NULL: unset */
    int concurrency;                        /* >= 1; 0: unset */
    struct worker_queue *queues;            /* owned; NULL: unset */
    size_t queue_count;                     /* >= 1 when queues is set */
    bool strict_priority_set;               /* false: unset */
    bool strict_priority;                   /* read when _set is true */
    int64_t shutdown_timeout_ms;            /* >= 0; -1: unset */
    int64_t task_check_interval_ms;         /* >= 1; 0: unset */
    int64_t delayed_task_check_interval_ms; /* >= 1; 0: unset */
    int64_t janitor_interval_ms;            /* >= 1; 0: unset */
    int janitor_batch_size;                 /* >= 1; 0: unset */
    bool log_level_set;                     /* false: unset */
    enum casynq_log_level log_level;        /* read when _set is true */
    char *metrics_addr;                     /* owned; NULL: unset */
    int64_t metrics_interval_ms;            /* >= 100; 0: unset */
};

/* Sets every field of c to "unset". Thread: any. */
void worker_config_init(struct worker_config *c);

/* Frees what c owns and sets every field to "unset" again.
 * Thread: one thread at a time. */
void worker_config_finish(struct worker_config *c);

/* Reads the JSON config file at path into out, which this function
 * initializes first. Every key is optional. An unknown key, a value of the
 * wrong type or out of range, or a key given twice is an error, and the
 * message names the key and the expected form.
 * Returns: 0; CASYNQ_ESYS when the file cannot be read; CASYNQ_EINVAL for
 *          invalid JSON (the message gives the line and column) or an
 *          invalid setting; CASYNQ_ENOMEM. On failure err contains a message
 *          naming the file, and out is left empty.
 * Ownership: free out with worker_config_finish().
 * Thread: one thread at a time (cJSON keeps its error position in a global). */
int worker_config_load(const char *path, struct worker_config *out, char *err,
                       size_t errlen);

/* Copies every field that `over` sets into base, replacing base's value.
 * Returns: 0 or CASYNQ_ENOMEM (base keeps a consistent mix of old and new
 *          values). Thread: one thread at a time. */
int worker_config_merge(struct worker_config *base,
                        const struct worker_config *over);

/* Copies every field that c sets into cfg. Queues, when set, replace the
 * queues cfg had. Setting only one of the janitor interval and batch size
 * keeps the library default for the other.
 * Returns: 0, or the code of the casynq_config setter that rejected a value
 *          (CASYNQ_EINVAL, CASYNQ_ENOMEM) with its message in err.
 * Thread: setup. */
int worker_config_apply(const struct worker_config *c,
                        struct casynq_config *cfg, char *err, size_t errlen);

/* Checks that url is a Redis URL that casynq_redis_options_set_url()
 * accepts and stores a copy in c->redis_url.
 * Returns: 0, CASYNQ_EINVAL (the library's message, without the URL, in
 *          err), CASYNQ_ENOMEM.
 * Thread: one thread at a time. */
int worker_config_set_redis_url(struct worker_config *c, const char *url,
                                char *err, size_t errlen);

/* Parses a queue list of the form "name=weight,name=weight" into
 * c->queues, replacing any earlier list. Weights are decimal integers
 * >= 1; names are not blank, have no space at either end, are at most
 * WORKER_QUEUE_NAME_MAX bytes and appear once.
 * Returns: 0, CASYNQ_EINVAL (message in err names the entry),
 *          CASYNQ_ENOMEM. On failure c->queues is unchanged.
 * Thread: one thread at a time. */
int worker_config_parse_queues(const char *spec, struct worker_config *c,
                               char *err, size_t errlen);

/* Checks that addr is a metrics address that
 * casynq_config_set_metrics_addr() accepts and stores a copy in
 * c->metrics_addr.
 * Returns: 0, CASYNQ_EINVAL (the library's message in err),
 *          CASYNQ_ENOMEM.
 * Thread: one thread at a time. */
int worker_config_set_metrics_addr(struct worker_config *c, const char *addr,
                                   char *err, size_t errlen);

/* Parses a decimal integer in [min, INT_MAX] with no sign, space or other
 * characters. Returns: 0 or CASYNQ_EINVAL. Thread: any. */
int worker_config_parse_int(const char *text, int min, int *out);

/* Parses a non-negative number of seconds written as digits with an
 * optional fraction ("8", "0.5", ".25") and stores it in milliseconds,
 * rounded to the nearest millisecond.
 * Returns: 0, or CASYNQ_EINVAL for any other text or a value too large
 *          for int64 milliseconds. Thread: any. */
int worker_config_parse_seconds(const char *text, int64_t *ms_out);

/* Writes the queue list of c as "name=weight,..." into buf, truncated to
 * len, or the library default "default=1" when c sets no queues.
 * Thread: any. */
void worker_config_describe_queues(const struct worker_config *c, char *buf,
                                   size_t len);

#endif
