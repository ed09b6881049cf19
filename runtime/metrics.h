#ifndef CASYNQ_RUNTIME_METRICS_H
#define CASYNQ_RUNTIME_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "broker.h"
#include "log.h"
#include "util.h"

/* Distinct task types that get their own `type` label. Later types are
 * counted under type="other", so a flood of random type names cannot grow
 * the memory or the number of series without bound. */
#define CASYNQ__METRICS_MAX_TYPES           256
/* Index of the type="other" slot in the per-type tables. */
#define CASYNQ__METRICS_OTHER               CASYNQ__METRICS_MAX_TYPES
/* Finite upper bounds of the histograms. One more bucket counts the
 * observations above the last bound. */
#define CASYNQ__METRICS_BUCKETS             14
/* Default refresh period of the queue statistics, in milliseconds. */
#define CASYNQ__METRICS_DEFAULT_INTERVAL_MS 5000

/* Counters kept per (queue, task type). */
enum casynq__task_counter {
    CASYNQ__TC_STARTED,   /* handed to a worker thread */
    CASYNQ__TC_SUCCEEDED, /* handler returned 0, outcome written */
    CASYNQ__TC_FAILED,    /* attempt failed and counts as a failure */
    CASYNQ__TC_RETRIED,   /* written to the retry set */
    CASYNQ__TC_ARCHIVED,  /* written to the archive */
    CASYNQ__TC_REVOKED,   /* handler returned CASYNQ_EREVOKE */
    CASYNQ__TC_DEADLINE,  /* failed at its deadline */
    CASYNQ__TC_RECOVERED, /* lease expired, moved by this recoverer */
    CASYNQ__TC_COUNT,
};

/* Counters of one (queue, type) pair. Written by the loop thread only and
 * read by the HTTP thread, so plain relaxed atomics suffice. */
struct casynq__task_cell {
    _Atomic uint64_t n[CASYNQ__TC_COUNT];
};

/* A histogram with the fixed bounds of metrics.c. bucket[i] counts the
 * observations that fell in bucket i alone; the cumulative counts are
 * formed when rendering. Written by the loop thread only. */
struct casynq__histogram {
    _Atomic uint64_t bucket[CASYNQ__METRICS_BUCKETS + 1];
    _Atomic uint64_t sum_ns;
};

/* Counters of the server's Redis connections, written by the loop thread
 * (which owns both connections) and read by the HTTP thread. */
struct casynq__redis_counters {
    _Atomic uint64_t errors;     /* error replies, lost replies, failed
                                  * connection attempts */
    _Atomic uint64_t reconnects; /* connections made again after a drop */
};

/* Everything the metrics endpoint shows for one server.
 *
 * The loop thread is the only writer of the counters, histograms and the
 * type table. The HTTP thread reads them with atomics while it formats a
 * scrape. The queue statistics, read from Redis every interval, are kept
 * under `mu`. */
struct casynq__metrics {
    int nqueues;                    /* immutable */
    const char *const *queue_names; /* borrowed from the server; immutable */
    int concurrency;                /* immutable */

    /* Type table. Slots below ntypes hold immutable names; the loop thread
     * fills the next slot, then publishes it with a release store. */
    char *type_names[CASYNQ__METRICS_MAX_TYPES];
    _Atomic int ntypes;
    int16_t *type_index;   /* open-addressing table of slots, loop only */
    uint64_t *type_hashes; /* hash of each slot's name, loop only */
    _Atomic uint64_t types_overflow; /* tasks counted as type "other" */

    struct casynq__task_cell *cells;     /* nqueues x (MAX_TYPES + 1) */
    struct casynq__histogram *durations; /* MAX_TYPES + 1, by type */
    struct casynq__histogram *waits;     /* nqueues, by queue */
    _Atomic uint64_t *wait_unknown;      /* nqueues */

    struct casynq__redis_counters redis;

    /* Worker state. busy is the number of jobs handed to worker threads
     * and not yet back; utilization is a double stored as its bits. */
    _Atomic int busy;
    _Atomic uint64_t utilization_bits;
    int64_t busy_since_ns;     /* mono time of the last busy change, loop */
    int64_t busy_integral_ns;  /* busy x ns since interval start, loop */
    int64_t interval_start_ns; /* mono, loop */

    /* Limiters whose rejection counts a scrape exports, read through
     * casynq_limiter_rejections_at(); borrowed from the server's
     * configuration, immutable after init. */
    const struct casynq_limiter *const *limiters;
    int nlimiters;

    _Atomic int64_t heartbeat_ok_ms; /* unix ms of the last heartbeat write
                                      * Redis accepted; 0 for none */
    _Atomic bool stopping;           /* shutdown began */

    pthread_mutex_t mu;
    struct casynq__queue_stats *qstats; /* nqueues, protected by mu */
    int64_t *qstats_unix_ms;            /* nqueues, time of the read that
                                         * filled each entry; 0 for none;
                                         * protected by mu */
    int64_t stats_ok_ms;                /* unix ms at which the last round
                                         * that fully succeeded was sent;
                                         * protected by mu */

    /* Refresh rounds, loop thread only. */
    int round_pending;     /* replies still expected */
    bool round_failed;     /* a reply of the round failed */
    int64_t round_sent_ms; /* unix ms */
};

/* Prepares m for queues (borrowed, nqueues of them) and concurrency.
 * Returns: 0 or CASYNQ_ENOMEM (m is then finished already).
 * Thread: setup. */
int casynq__metrics_init(struct casynq__metrics *m, const char *const *queues,
                         int nqueues, int concurrency);

/* Frees what init allocated. Thread: setup, after every reader stopped. */
void casynq__metrics_finish(struct casynq__metrics *m);

/* Returns the slot of task type `type`, adding it to the table while there
 * is room, else CASYNQ__METRICS_OTHER. Invalid UTF-8 is stored with the
 * bad bytes replaced. Thread: loop. */
int casynq__metrics_type_slot(struct casynq__metrics *m, const char *type);

/* Adds 1 to counter c of (queue, slot). m may be NULL (metrics off).
 * Thread: loop. */
void casynq__metrics_count(struct casynq__metrics *m, int queue, int slot,
                           enum casynq__task_counter c);

/* Records a handler's run time for type slot. Thread: loop. */
void casynq__metrics_observe_duration(struct casynq__metrics *m, int slot,
                                      int64_t ns);

/* Records how long a task waited in pending before it was handed to a
 * worker, or counts it as unknown when pending_since_ns is 0.
 * Thread: loop. */
void casynq__metrics_observe_wait(struct casynq__metrics *m, int queue,
                                  int64_t pending_since_ns, int64_t now_ns);

/* Records that the number of busy workers changed to busy.
 * Thread: loop. */
void casynq__metrics_set_busy(struct casynq__metrics *m, int busy);

/* Ends a utilization interval: the busy worker time since the last call
 * divided by concurrency times the elapsed time. Thread: loop. */
void casynq__metrics_close_interval(struct casynq__metrics *m);

/* Stores the statistics of queue q read at unix_ms. Thread: loop. */
void casynq__metrics_store_queue(struct casynq__metrics *m, int q,
                                 const struct casynq__queue_stats *st,
                                 int64_t unix_ms);

/* Formats every metric in the Prometheus text format 0.0.4 into out.
 * Returns: 0 or CASYNQ_ENOMEM. Thread: any. */
int casynq__metrics_render(struct casynq__metrics *m, struct casynq__buf *out);

/* Writes the Prometheus form of a label value (backslash, double quote and
 * newline escaped) into out. Returns: 0 or CASYNQ_ENOMEM. Thread: any. */
int casynq__metrics_escape_label(struct casynq__buf *out, const char *value);

/* Returns true and writes "ok" into health when the server is healthy:
 * not shutting down, and its last heartbeat write succeeded within the
 * last 15 s (three heartbeat periods). Otherwise it writes the reason.
 * Thread: any. */
bool casynq__metrics_healthy(struct casynq__metrics *m, char *health,
                             size_t len);

/* metrics_http.c: the HTTP endpoint. */
struct casynq__metrics_http;

/* Parses a listen address: "host:port", "[v6]:port", ":port" or "port".
 * A missing host means 127.0.0.1. The host must be a numeric IPv4 or IPv6
 * address, and the port 1 to 65535.
 * Returns: 0, or CASYNQ_EINVAL with a message naming the address in
 *          errbuf (CASYNQ__ERRBUF_SIZE bytes). Thread: any. */
int casynq__metrics_parse_addr(const char *addr, struct sockaddr_storage *out,
                               socklen_t *out_len, char *errbuf);

/* Binds addr and starts serving m on a thread of libmicrohttpd.
 * Returns: 0, CASYNQ_EINVAL (bad address), CASYNQ_ESYS (the address
 *          cannot be bound or the server thread cannot start) or
 *          CASYNQ_ENOMEM, with a message in errbuf.
 * Ownership: m and lg are borrowed until casynq__metrics_http_stop().
 * Thread: setup. */
int casynq__metrics_http_start(struct casynq__metrics_http **out,
                               const char *addr, struct casynq__metrics *m,
                               const struct casynq__logger *lg, char *errbuf);

/* Stops the HTTP thread, closes the socket and frees h; NULL does nothing.
 * Thread: setup. */
void casynq__metrics_http_stop(struct casynq__metrics_http *h);

#endif
