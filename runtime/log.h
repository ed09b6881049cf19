#ifndef CASYNQ_RUNTIME_LOG_H
#define CASYNQ_RUNTIME_LOG_H

#include <casynq.h>

/* A log destination: the sink, its user data and the minimum level. Each
 * server and client holds one. The fields are immutable after setup, so
 * any thread may log through it. */
struct casynq__logger {
    casynq_log_fn fn; /* NULL selects the default stderr sink */
    void *ud;
    enum casynq_log_level min_level;
};

/* Formats and sends one message to the logger's sink. Messages longer than
 * 1 KiB are truncated. Thread: any. */
void casynq__log(const struct casynq__logger *lg, enum casynq_log_level lvl,
                 const char *file, int line, const char *fmt, ...)
        CASYNQ_PRINTF(5, 6);

/* The default sink: one line to stderr with the UTC time, level, message
 * and source location, written with a single write(2) so that lines from
 * different threads do not interleave. */
void casynq__log_stderr(enum casynq_log_level level, const char *msg,
                        const char *file, int line, void *ud);

/* Checks the level before the arguments are evaluated, so a disabled debug
 * line costs one comparison. */
#define CASYNQ_LOG(lg, lvl, ...)                                               \
    do {                                                                       \
        if ((lvl) >= (lg)->min_level) {                                        \
            casynq__log((lg), (lvl), __FILE__, __LINE__, __VA_ARGS__);         \
        }                                                                      \
    } while (0)

#endif
