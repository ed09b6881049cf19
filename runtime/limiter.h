#ifndef CASYNQ_RUNTIME_LIMITER_H
#define CASYNQ_RUNTIME_LIMITER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conn.h"
#include "util.h"

/* Bounds of the limiter's configuration, as documented in casynq.h. */
#define CASYNQ__LIMITER_MAX_RATES  64
#define CASYNQ__LIMIT_NAME_MAX_LEN 128
#define CASYNQ__RATE_KEY_MAX_LEN   512
#define CASYNQ__MAX_RATE_PER_S     1000000.0
#define CASYNQ__MAX_REFILL_S       31536000.0

/* Names of the admission limits in the rejection counts, which rate limits
 * may not use. */
#define CASYNQ__LIMIT_NAME_BACKLOG "max_backlog"
#define CASYNQ__LIMIT_NAME_PAYLOAD "max_payload"

/* One rate limit. Every field except shared_tat_ns is immutable after
 * setup. */
struct casynq__rate_limit {
    char *name;
    enum casynq_limit_scope scope;
    char *match; /* NULL: every key (per-key scope only) */
    size_t match_len;
    double rate_per_s;
    double burst;
    double interval_us;    /* emission interval T = 1 / rate, in us */
    double tolerance_us;   /* (burst - 1) * T, in us */
    int64_t interval_ns;   /* T rounded to ns, memory backend */
    int64_t tolerance_ns;  /* (burst - 1) * T rounded to ns */
    int64_t shared_tat_ns; /* memory backend, queue and type scopes:
                            * the budget's theoretical arrival time;
                            * protected by casynq_limiter.mu */
};

/* The backlog cap of one queue. */
struct casynq__backlog_cap {
    char *queue;
    int64_t max_tasks;
};

/* Everything a limiter checks. Immutable after setup. */
struct casynq__limits {
    struct casynq__rate_limit *rates;
    size_t nrates;
    struct casynq__backlog_cap *caps;
    size_t ncaps;
    size_t max_payload; /* bytes; 0 for no maximum */
};

/* The outcome of a backend check. */
struct casynq__verdict {
    size_t worst;           /* CASYNQ_ERATELIMITED: index into the refs of
                             * the limit with the longest wait */
    int64_t retry_after_ms; /* CASYNQ_ERATELIMITED: >= 1 */
    int64_t backlog;        /* CASYNQ_EBACKLOG: tasks counted */
};

/* The memory backend's table of per-key budgets (limiter_memory.c). */
struct casynq__budget_table;

/* Returns the current time in nanoseconds on a clock that never goes
 * back. */
typedef int64_t (*casynq__clock_fn)(void *ud);

struct casynq_limiter {
    enum casynq_limiter_backend backend; /* immutable */
    struct casynq__limits limits;        /* immutable after setup */
    pthread_mutex_t mu;
    /* memory backend: */
    struct casynq__budget_table *table; /* protected by mu */
    casynq__clock_fn clock;             /* immutable after setup */
    void *clock_ud;                     /* immutable after setup */
    /* Redis backend: */
    struct casynq__conn conn;      /* protected by mu */
    bool has_conn;                 /* immutable */
    char err[CASYNQ__ERRBUF_SIZE]; /* setters: setup thread only */
    /* Rejected checks, one count per check under the limit that rejected
     * it. rate_rejected is indexed like limits.rates. All atomic. */
    _Atomic uint64_t rate_rejected[CASYNQ__LIMITER_MAX_RATES];
    _Atomic uint64_t backlog_rejected;
    _Atomic uint64_t payload_rejected;
};

/* Checks an enqueue as casynq_limiter_check() documents and writes the
 * message of a failure into errbuf (CASYNQ__ERRBUF_SIZE bytes). A rejection
 * adds 1 to the count of the limit that the message names. When
 * task_conn is not NULL, a backlog is counted on it instead of in the
 * limiter's Redis, which lets a client count in the Redis its tasks go to.
 * Returns: as casynq_limiter_check().
 * Ownership: everything is borrowed for the call.
 * Thread: any; task_conn must belong to the calling thread. */
int casynq__limiter_admit(struct casynq_limiter *l,
                          struct casynq__conn *task_conn, const char *key,
                          const char *queue, const char *type,
                          size_t payload_len, int64_t *retry_after_ms,
                          char *errbuf);

/* Checks a caller key: NULL, or 1 to CASYNQ__RATE_KEY_MAX_LEN bytes and
 * not blank.
 * Returns: 0, or CASYNQ_EINVAL with a message in errbuf. Thread: any. */
int casynq__limiter_check_key(const char *key, char *errbuf);

/* Memory backend (limiter_memory.c). */

/* Creates the budget table with a random hash key.
 * Returns: 0, CASYNQ_ENOMEM or CASYNQ_ESYS (no random bytes). */
int casynq__budget_table_create(struct casynq__budget_table **out);

/* Frees the table and every budget in it; NULL does nothing. */
void casynq__budget_table_destroy(struct casynq__budget_table *t);

/* Checks the n limits in `limits` (indexes into l->limits.rates) for key
 * (NULL when no per-key limit is among them) and consumes one unit of
 * each when all pass, atomically under l->mu.
 * Returns: 0, CASYNQ_ERATELIMITED with *v set, or CASYNQ_ENOMEM (no
 *          budget moved).
 * Thread: any. */
int casynq__limiter_memory_check(struct casynq_limiter *l, const size_t *limits,
                                 size_t n, const char *key, size_t key_len,
                                 struct casynq__verdict *v);

/* Stores the number of per-key budgets and hash buckets in the table, for
 * tests. Thread: any. */
void casynq__limiter_memory_stats(struct casynq_limiter *l, size_t *budgets,
                                  size_t *buckets);

/* Replaces the memory backend's clock, for tests. Thread: setup. */
void casynq__limiter_set_clock(struct casynq_limiter *l, casynq__clock_fn fn,
                               void *ud);

/* SipHash-2-4 of data under a 16-byte key, exposed for its test vector.
 * Thread: any. */
uint64_t casynq__siphash24(const uint8_t key[16], const void *data, size_t len);

/* Redis backend (limiter_redis.c). */

/* Runs the rate_limit script on conn: counts the backlog of `queue` when
 * max_backlog > 0, then checks the n limits for key and consumes one unit
 * of each when everything passes. n may be 0 for a backlog count alone.
 * Returns: 0, CASYNQ_EBACKLOG or CASYNQ_ERATELIMITED with *v set, a
 *          connection error, CASYNQ_EREDIS or CASYNQ_ENOMEM, with the
 *          message in errbuf.
 * Thread: the caller owns conn for the call. */
int casynq__limiter_redis_run(const struct casynq__limits *limits,
                              struct casynq__conn *conn, const size_t *refs,
                              size_t n, const char *key, const char *queue,
                              int64_t max_backlog, struct casynq__verdict *v,
                              char *errbuf);

#endif
