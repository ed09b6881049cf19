/* DESIGN: logging.
 *
 * The loop thread, worker threads and client callers all log through a
 * struct casynq__logger that is immutable once its owner is set up, so no
 * lock is taken here. Formatting happens into a stack buffer and the sink
 * is called without any internal lock held. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define LOG_MAX_LEN 1024

const char *casynq_log_level_name(enum casynq_log_level level)
{
    switch (level) {
    case CASYNQ_LOG_DEBUG:
        return "debug";
    case CASYNQ_LOG_INFO:
        return "info";
    case CASYNQ_LOG_WARN:
        return "warn";
    case CASYNQ_LOG_ERROR:
        return "error";
    }
    return "unknown";
}

int casynq_log_level_parse(const char *name, enum casynq_log_level *out)
{
    static const struct {
        const char *name;
        enum casynq_log_level level;
    } names[] = {
            {"debug", CASYNQ_LOG_DEBUG}, {"info", CASYNQ_LOG_INFO},
            {"warn", CASYNQ_LOG_WARN},   {"warning", CASYNQ_LOG_WARN},
            {"error", CASYNQ_LOG_ERROR},
    };

    if (name == NULL || out == NULL) {
        return CASYNQ_EINVAL;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return CASYNQ_EINVAL;
}

void casynq__log_stderr(enum casynq_log_level level, const char *msg,
                        const char *file, int line, void *ud)
{
    char out[LOG_MAX_LEN + 256];
    struct timespec ts;
    struct tm tm;
    int n;

    (void)ud;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(
            out, sizeof(out),
            "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s casynq: %s (%s:%d)\n",
            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000L, casynq_log_level_name(level), msg,
            file, line);
    if (n < 0) {
        return;
    }
    if ((size_t)n >= sizeof(out)) {
        n = (int)sizeof(out) - 1;
        out[n - 1] = '\n';
    }
    /* A failed write to stderr has nowhere else to be reported. */
    if (write(STDERR_FILENO, out, (size_t)n) < 0) {
        return;
    }
}

void casynq__log(const struct casynq__logger *lg, enum casynq_log_level lvl,
                 const char *file, int line, const char *fmt, ...)
{
    char msg[LOG_MAX_LEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (lg->fn != NULL) {
        lg->fn(lvl, msg, file, line, lg->ud);
    } else {
        casynq__log_stderr(lvl, msg, file, line, NULL);
    }
}
