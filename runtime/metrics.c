/* DESIGN: the server's metrics, kept for the Prometheus endpoint.
 *
 * Writers and readers: the loop thread decides every task outcome, so it
 * is the only writer of the task counters, histograms and the type table.
 * It updates them with relaxed atomic stores, which cost a plain store on
 * common CPUs, so the hot path takes no lock. The HTTP thread of
 * metrics_http.c reads them with atomic loads while it formats a scrape.
 * A scrape can therefore see one counter of a task's outcome a moment
 * before another; each counter on its own never goes back.
 *
 * Task types: a type gets a slot the first time the loop thread meets it.
 * The slot's name is written first and the slot count is published with a
 * release store, so a reader that loads the count with acquire sees every
 * name below it. After CASYNQ__METRICS_MAX_TYPES types, further types are
 * counted under type="other", which bounds memory and the number of
 * series whatever type names arrive.
 *
 * Queue statistics: the loop thread reads them from Redis every interval
 * (server.c) and stores a copy under `mu`; a scrape formats that copy and
 * never waits for Redis.
 *
 * Limiter rejections are counted by the limiters themselves, in atomics,
 * and a scrape reads them through casynq_limiter_rejections_at().
 *
 * Process metrics are read from /proc/self by the scraping thread. */
#include "metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"

/* Size of the open-addressing type index: a power of two, at least twice
 * the number of slots, so probes stay short. */
#define TYPE_INDEX_SIZE      512
/* Healthy while the last heartbeat write is younger than this. */
#define HEALTHY_HEARTBEAT_MS 15000

/* Bucket bounds of both histograms, in nanoseconds and as printed. */
static const int64_t bucket_ns[CASYNQ__METRICS_BUCKETS] = {
        5000000LL,     10000000LL,     25000000LL,    50000000LL,
        100000000LL,   250000000LL,    500000000LL,   1000000000LL,
        2500000000LL,  5000000000LL,   10000000000LL, 30000000000LL,
        60000000000LL, 300000000000LL,
};
static const char *const bucket_text[CASYNQ__METRICS_BUCKETS] = {
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
        "1",     "2.5",  "5",     "10",   "30",  "60",   "300",
};

static const char *const state_names[6] = {
        "active", "pending", "scheduled", "retry", "archived", "completed",
};

/* Adds 1 to a counter that only the loop thread writes. */
static void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static uint64_t load(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

int casynq__metrics_init(struct casynq__metrics *m, const char *const *queues,
                         int nqueues, int concurrency)
{
    size_t ncells = (size_t)nqueues * (CASYNQ__METRICS_MAX_TYPES + 1);

    memset(m, 0, sizeof(*m));
    m->nqueues = nqueues;
    m->queue_names = queues;
    m->concurrency = concurrency;
    pthread_mutex_init(&m->mu, NULL);
    m->type_index = casynq__malloc(TYPE_INDEX_SIZE * sizeof(int16_t));
    m->type_hashes =
            casynq__calloc(CASYNQ__METRICS_MAX_TYPES, sizeof(uint64_t));
    m->cells = casynq__calloc(ncells, sizeof(*m->cells));
    m->durations = casynq__calloc(CASYNQ__METRICS_MAX_TYPES + 1,
                                  sizeof(*m->durations));
    m->waits = casynq__calloc((size_t)nqueues, sizeof(*m->waits));
    m->wait_unknown = casynq__calloc((size_t)nqueues, sizeof(uint64_t));
    m->qstats = casynq__calloc((size_t)nqueues, sizeof(*m->qstats));
    m->qstats_unix_ms = casynq__calloc((size_t)nqueues, sizeof(int64_t));
    if (m->type_index == NULL || m->type_hashes == NULL || m->cells == NULL ||
        m->durations == NULL || m->waits == NULL || m->wait_unknown == NULL ||
        m->qstats == NULL || m->qstats_unix_ms == NULL) {
        casynq__metrics_finish(m);
        return CASYNQ_ENOMEM;
    }
    for (int i = 0; i < TYPE_INDEX_SIZE; i++) {
        m->type_index[i] = -1;
    }
    m->interval_start_ns = casynq__mono_ns();
    m->busy_since_ns = m->interval_start_ns;
    return 0;
}

void casynq__metrics_finish(struct casynq__metrics *m)
{
    int n = atomic_load(&m->ntypes);

    for (int i = 0; i < n; i++) {
        casynq__free(m->type_names[i]);
    }
    casynq__free(m->type_index);
    casynq__free(m->type_hashes);
    casynq__free(m->cells);
    casynq__free(m->durations);
    casynq__free(m->waits);
    casynq__free((void *)(uintptr_t)m->wait_unknown);
    casynq__free(m->qstats);
    casynq__free(m->qstats_unix_ms);
    pthread_mutex_destroy(&m->mu);
    memset(m, 0, sizeof(*m));
}

/* FNV-1a, 64 bit. Type names come from task messages, so a client could
 * pick names that collide; a collision costs only a longer probe. */
static uint64_t hash_name(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

int casynq__metrics_type_slot(struct casynq__metrics *m, const char *type)
{
    uint64_t h = hash_name(type);
    int n = atomic_load_explicit(&m->ntypes, memory_order_relaxed);
    size_t pos = (size_t)h & (TYPE_INDEX_SIZE - 1);
    char *name;

    for (;;) {
        int slot = m->type_index[pos];

        if (slot < 0) {
            break;
        }
        if (m->type_hashes[slot] == h &&
            strcmp(m->type_names[slot], type) == 0) {
            return slot;
        }
        pos = (pos + 1) & (TYPE_INDEX_SIZE - 1);
    }
    if (n >= CASYNQ__METRICS_MAX_TYPES) {
        bump(&m->types_overflow);
        return CASYNQ__METRICS_OTHER;
    }
    /* Prometheus label values must be UTF-8; the task message decoder does
     * not check every producer. */
    name = casynq__utf8_sanitize(type, strlen(type));
    if (name == NULL) {
        bump(&m->types_overflow);
        return CASYNQ__METRICS_OTHER;
    }
    m->type_names[n] = name;
    m->type_hashes[n] = h;
    m->type_index[pos] = (int16_t)n;
    atomic_store_explicit(&m->ntypes, n + 1, memory_order_release);
    return n;
}

void casynq__metrics_count(struct casynq__metrics *m, int queue, int slot,
                           enum casynq__task_counter c)
{
    if (m == NULL || queue < 0 || queue >= m->nqueues || slot < 0 ||
        slot > CASYNQ__METRICS_OTHER) {
        return;
    }
    bump(&m->cells[(size_t)queue * (CASYNQ__METRICS_MAX_TYPES + 1) +
                   (size_t)slot]
                  .n[c]);
}

static void observe(struct casynq__histogram *h, int64_t ns)
{
    int i = 0;

    if (ns < 0) {
        ns = 0;
    }
    while (i < CASYNQ__METRICS_BUCKETS && ns > bucket_ns[i]) {
        i++;
    }
    bump(&h->bucket[i]);
    atomic_store_explicit(&h->sum_ns, load(&h->sum_ns) + (uint64_t)ns,
                          memory_order_relaxed);
}

void casynq__metrics_observe_duration(struct casynq__metrics *m, int slot,
                                      int64_t ns)
{
    if (m == NULL || slot < 0 || slot > CASYNQ__METRICS_OTHER) {
        return;
    }
    observe(&m->durations[slot], ns);
}

void casynq__metrics_observe_wait(struct casynq__metrics *m, int queue,
                                  int64_t pending_since_ns, int64_t now_ns)
{
    if (m == NULL || queue < 0 || queue >= m->nqueues) {
        return;
    }
    if (pending_since_ns <= 0) {
        bump(&m->wait_unknown[queue]);
        return;
    }
    observe(&m->waits[queue], now_ns - pending_since_ns);
}

void casynq__metrics_set_busy(struct casynq__metrics *m, int busy)
{
    int64_t now;

    if (m == NULL) {
        return;
    }
    now = casynq__mono_ns();
    m->busy_integral_ns +=
            (int64_t)atomic_load(&m->busy) * (now - m->busy_since_ns);
    m->busy_since_ns = now;
    atomic_store_explicit(&m->busy, busy, memory_order_relaxed);
}

void casynq__metrics_close_interval(struct casynq__metrics *m)
{
    int64_t now = casynq__mono_ns();
    int64_t wall = now - m->interval_start_ns;
    double ratio = 0.0;
    uint64_t bits;

    casynq__metrics_set_busy(m, atomic_load(&m->busy));
    if (wall > 0 && m->concurrency > 0) {
        ratio = (double)m->busy_integral_ns /
                ((double)wall * (double)m->concurrency);
    }
    if (ratio > 1.0) {
        ratio = 1.0;
    }
    memcpy(&bits, &ratio, sizeof(bits));
    atomic_store_explicit(&m->utilization_bits, bits, memory_order_relaxed);
    m->busy_integral_ns = 0;
    m->interval_start_ns = now;
}

void casynq__metrics_store_queue(struct casynq__metrics *m, int q,
                                 const struct casynq__queue_stats *st,
                                 int64_t unix_ms)
{
    pthread_mutex_lock(&m->mu);
    m->qstats[q] = *st;
    m->qstats_unix_ms[q] = unix_ms;
    pthread_mutex_unlock(&m->mu);
}

bool casynq__metrics_healthy(struct casynq__metrics *m, char *health,
                             size_t len)
{
    int64_t beat = atomic_load(&m->heartbeat_ok_ms);
    int64_t age = casynq__now_unix_ns() / 1000000 - beat;

    if (atomic_load(&m->stopping)) {
        snprintf(health, len, "shutting down");
        return false;
    }
    if (beat == 0) {
        snprintf(health, len, "no heartbeat written to redis yet");
        return false;
    }
    if (age > HEALTHY_HEARTBEAT_MS) {
        snprintf(health, len,
                 "last heartbeat written to redis %lld ms ago; check the "
                 "redis connection",
                 (long long)age);
        return false;
    }
    snprintf(health, len, "ok");
    return true;
}

/* ------------------------------------------------------------------------
 * Rendering
 */

int casynq__metrics_escape_label(struct casynq__buf *out, const char *value)
{
    const char *run = value;
    const char *p;
    int rc = 0;

    for (p = value; *p != '\0' && rc == 0; p++) {
        const char *esc = NULL;

        if (*p == '\\') {
            esc = "\\\\";
        } else if (*p == '"') {
            esc = "\\\"";
        } else if (*p == '\n') {
            esc = "\\n";
        }
        if (esc != NULL) {
            rc = casynq__buf_append(out, run, (size_t)(p - run));
            if (rc == 0) {
                rc = casynq__buf_append(out, esc, strlen(esc));
            }
            run = p + 1;
        }
    }
    if (rc == 0) {
        rc = casynq__buf_append(out, run, strlen(run));
    }
    return rc;
}

/* A scrape in progress: the output and the first error. */
struct render {
    struct casynq__buf *out;
    int err;
};

static void put(struct render *r, const char *fmt, ...) CASYNQ_PRINTF(2, 3);

static void put(struct render *r, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    if (r->err != 0) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line)) {
        r->err = CASYNQ_ENOMEM;
        return;
    }
    r->err = casynq__buf_append(r->out, line, (size_t)n);
}

static void put_label(struct render *r, const char *value)
{
    if (r->err == 0) {
        r->err = casynq__metrics_escape_label(r->out, value);
    }
}

static void family(struct render *r, const char *name, const char *type,
                   const char *help)
{
    put(r, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Writes `name{queue="q"`, leaving the brace open for more labels. */
static void open_queue_sample(struct render *r, const char *name,
                              const char *queue)
{
    put(r, "%s{queue=\"", name);
    put_label(r, queue);
    put(r, "\"");
}

static const char *type_label(struct casynq__metrics *m, int slot)
{
    return slot == CASYNQ__METRICS_OTHER ? "other" : m->type_names[slot];
}

/* Writes one histogram's buckets, sum and count. label_name and
 * label_value name its one label. */
static void put_histogram(struct render *r, const char *name,
                          const char *label_name, const char *label_value,
                          struct casynq__histogram *h)
{
    uint64_t cumulative = 0;

    for (int i = 0; i <= CASYNQ__METRICS_BUCKETS; i++) {
        cumulative += load(&h->bucket[i]);
        put(r, "%s_bucket{%s=\"", name, label_name);
        put_label(r, label_value);
        put(r, "\",le=\"%s\"} %" PRIu64 "\n",
            i < CASYNQ__METRICS_BUCKETS ? bucket_text[i] : "+Inf", cumulative);
    }
    put(r, "%s_sum{%s=\"", name, label_name);
    put_label(r, label_value);
    put(r, "\"} %.9f\n", (double)load(&h->sum_ns) / 1e9);
    put(r, "%s_count{%s=\"", name, label_name);
    put_label(r, label_value);
    put(r, "\"} %" PRIu64 "\n", cumulative);
}

/* asynq's queue metrics, from the last statistics read from Redis. Queues
 * not read yet are left out. */
static void render_queues(struct render *r, struct casynq__metrics *m)
{
    size_t n = (size_t)m->nqueues;
    struct casynq__queue_stats *st = casynq__calloc(n, sizeof(*st));
    int64_t *at = casynq__calloc(n, sizeof(*at));
    int64_t stats_ok_ms;

    if (st == NULL || at == NULL) {
        r->err = CASYNQ_ENOMEM;
        goto out;
    }
    pthread_mutex_lock(&m->mu);
    memcpy(st, m->qstats, n * sizeof(*st));
    memcpy(at, m->qstats_unix_ms, n * sizeof(*at));
    stats_ok_ms = m->stats_ok_ms;
    pthread_mutex_unlock(&m->mu);

    family(r, "asynq_tasks_enqueued_total", "gauge",
           "Number of tasks in each state of the queue.");
    for (size_t q = 0; q < n; q++) {
        int64_t v[6] = {st[q].active, st[q].pending,  st[q].scheduled,
                        st[q].retry,  st[q].archived, st[q].completed};

        for (int s = 0; at[q] != 0 && s < 6; s++) {
            open_queue_sample(r, "asynq_tasks_enqueued_total",
                              m->queue_names[q]);
            put(r, ",state=\"%s\"} %" PRId64 "\n", state_names[s], v[s]);
        }
    }
    family(r, "asynq_queue_size", "gauge",
           "Number of tasks in the queue, in every state including "
           "aggregating.");
    for (size_t q = 0; q < n; q++) {
        if (at[q] != 0) {
            open_queue_sample(r, "asynq_queue_size", m->queue_names[q]);
            put(r, "} %" PRId64 "\n",
                st[q].pending + st[q].active + st[q].scheduled + st[q].retry +
                        st[q].archived + st[q].completed + st[q].aggregating);
        }
    }
    family(r, "asynq_queue_latency_seconds", "gauge",
           "Time the next pending task has been waiting, at the last read "
           "of the queue statistics.");
    for (size_t q = 0; q < n; q++) {
        double latency = 0.0;

        if (at[q] == 0) {
            continue;
        }
        if (st[q].oldest_pending_ns > 0) {
            latency =
                    (double)(at[q] * 1000000LL - st[q].oldest_pending_ns) / 1e9;
        }
        open_queue_sample(r, "asynq_queue_latency_seconds", m->queue_names[q]);
        put(r, "} %.6f\n", latency > 0.0 ? latency : 0.0);
    }
    family(r, "asynq_queue_memory_usage_approx_bytes", "gauge",
           "Memory the queue's keys use in Redis, estimated from a sample "
           "of its tasks.");
    for (size_t q = 0; q < n; q++) {
        if (at[q] != 0) {
            open_queue_sample(r, "asynq_queue_memory_usage_approx_bytes",
                              m->queue_names[q]);
            put(r, "} %" PRId64 "\n", st[q].memory_bytes);
        }
    }
    family(r, "asynq_tasks_processed_total", "counter",
           "Tasks of the queue processed by any server, successes and "
           "failures, since the queue was created.");
    for (size_t q = 0; q < n; q++) {
        if (at[q] != 0) {
            open_queue_sample(r, "asynq_tasks_processed_total",
                              m->queue_names[q]);
            put(r, "} %" PRId64 "\n", st[q].processed_total);
        }
    }
    family(r, "asynq_tasks_failed_total", "counter",
           "Task attempts of the queue that failed, on any server, since "
           "the queue was created.");
    for (size_t q = 0; q < n; q++) {
        if (at[q] != 0) {
            open_queue_sample(r, "asynq_tasks_failed_total", m->queue_names[q]);
            put(r, "} %" PRId64 "\n", st[q].failed_total);
        }
    }
    family(r, "asynq_queue_paused_total", "gauge",
           "1 when the queue is paused, else 0.");
    for (size_t q = 0; q < n; q++) {
        if (at[q] != 0) {
            open_queue_sample(r, "asynq_queue_paused_total", m->queue_names[q]);
            put(r, "} %d\n", st[q].paused ? 1 : 0);
        }
    }
    family(r, "casynq_queue_stats_last_success_timestamp_seconds", "gauge",
           "Unix time at which the last complete read of the asynq_ queue "
           "metrics from Redis began; 0 before the first.");
    put(r, "casynq_queue_stats_last_success_timestamp_seconds %.3f\n",
        (double)stats_ok_ms / 1000.0);
out:
    casynq__free(st);
    casynq__free(at);
}

static const struct {
    enum casynq__task_counter c;
    const char *name;
    const char *help;
} task_families[] = {
        {CASYNQ__TC_STARTED, "casynq_tasks_started_total",
         "Tasks this server dequeued and started."},
        {CASYNQ__TC_SUCCEEDED, "casynq_tasks_succeeded_total",
         "Tasks whose handler succeeded and whose success was recorded."},
        {CASYNQ__TC_FAILED, "casynq_tasks_failed_total",
         "Task attempts that failed and count as failures, including "
         "deadlines, cancellations and outcomes that came after the lease "
         "expired."},
        {CASYNQ__TC_RETRIED, "casynq_tasks_retried_total",
         "Failed attempts of this server's tasks that went to the retry "
         "set."},
        {CASYNQ__TC_ARCHIVED, "casynq_tasks_archived_total",
         "Failed attempts of this server's tasks that went to the "
         "archive."},
        {CASYNQ__TC_REVOKED, "casynq_tasks_revoked_total",
         "Tasks whose handler revoked them; they are deleted."},
        {CASYNQ__TC_DEADLINE, "casynq_tasks_deadline_exceeded_total",
         "Task attempts failed because their timeout or deadline passed."},
        {CASYNQ__TC_RECOVERED, "casynq_tasks_recovered_total",
         "Tasks whose lease expired on some server and that this server's "
         "recoverer retried or archived."},
};

static bool cell_used(struct casynq__task_cell *cell)
{
    for (int c = 0; c < CASYNQ__TC_COUNT; c++) {
        if (load(&cell->n[c]) != 0) {
            return true;
        }
    }
    return false;
}

/* Per (queue, type) counters. A pair appears once any of its counters is
 * above 0, and then in every family, so that rate() can measure from its start. */
static void render_tasks(struct render *r, struct casynq__metrics *m,
                         int ntypes)
{
    size_t width = CASYNQ__METRICS_MAX_TYPES + 1;

    for (size_t f = 0; f < sizeof(task_families) / sizeof(task_families[0]);
         f++) {
        family(r, task_families[f].name, "counter", task_families[f].help);
        for (int q = 0; q < m->nqueues; q++) {
            for (int t = 0; t <= CASYNQ__METRICS_OTHER; t++) {
                struct casynq__task_cell *cell =
                        &m->cells[(size_t)q * width + (size_t)t];

                if (t >= ntypes && t != CASYNQ__METRICS_OTHER) {
                    continue;
                }
                if (!cell_used(cell)) {
                    continue;
                }
                open_queue_sample(r, task_families[f].name, m->queue_names[q]);
                put(r, ",type=\"");
                put_label(r, type_label(m, t));
                put(r, "\"} %" PRIu64 "\n", load(&cell->n[task_families[f].c]));
            }
        }
    }
    family(r, "casynq_task_type_overflow_total", "counter",
           "Tasks counted under type=\"other\" because the table of "
           "distinct task types was full.");
    put(r, "casynq_task_type_overflow_total %" PRIu64 "\n",
        load(&m->types_overflow));
}

static void render_histograms(struct render *r, struct casynq__metrics *m,
                              int ntypes)
{
    family(r, "casynq_task_duration_seconds", "histogram",
           "Time handlers ran, by task type.");
    for (int t = 0; t <= CASYNQ__METRICS_OTHER; t++) {
        if (t >= ntypes && t != CASYNQ__METRICS_OTHER) {
            continue;
        }
        if (t == CASYNQ__METRICS_OTHER && load(&m->types_overflow) == 0) {
            continue;
        }
        put_histogram(r, "casynq_task_duration_seconds", "type",
                      type_label(m, t), &m->durations[t]);
    }
    family(r, "casynq_queue_wait_seconds", "histogram",
           "Time tasks waited in pending before a worker took them, from "
           "their pending_since field.");
    for (int q = 0; q < m->nqueues; q++) {
        put_histogram(r, "casynq_queue_wait_seconds", "queue",
                      m->queue_names[q], &m->waits[q]);
    }
    family(r, "casynq_queue_wait_unknown_total", "counter",
           "Tasks started whose hash had no pending_since field, so their "
           "wait was not measured.");
    for (int q = 0; q < m->nqueues; q++) {
        open_queue_sample(r, "casynq_queue_wait_unknown_total",
                          m->queue_names[q]);
        put(r, "} %" PRIu64 "\n", load(&m->wait_unknown[q]));
    }
}

static void render_server(struct render *r, struct casynq__metrics *m)
{
    int busy = atomic_load_explicit(&m->busy, memory_order_relaxed);
    uint64_t bits = load(&m->utilization_bits);
    double utilization;

    memcpy(&utilization, &bits, sizeof(utilization));
    family(r, "casynq_workers_active", "gauge",
           "Worker threads running a handler, including handlers that keep "
           "running after their task failed at its deadline.");
    put(r, "casynq_workers_active %d\n", busy);
    family(r, "casynq_workers_idle", "gauge",
           "Worker threads waiting for a task.");
    put(r, "casynq_workers_idle %d\n",
        m->concurrency > busy ? m->concurrency - busy : 0);
    family(r, "casynq_worker_utilization_ratio", "gauge",
           "Busy worker time divided by concurrency times wall time, over "
           "the last metrics interval.");
    put(r, "casynq_worker_utilization_ratio %.6f\n", utilization);
    family(r, "casynq_redis_errors_total", "counter",
           "Redis error replies, replies lost with a dropped connection and "
           "failed connection attempts of this server.");
    put(r, "casynq_redis_errors_total %" PRIu64 "\n", load(&m->redis.errors));
    family(r, "casynq_redis_reconnects_total", "counter",
           "Redis connections of this server made again after a drop.");
    put(r, "casynq_redis_reconnects_total %" PRIu64 "\n",
        load(&m->redis.reconnects));
    family(r, "casynq_heartbeat_last_success_timestamp_seconds", "gauge",
           "Unix time of the last heartbeat that Redis accepted; 0 before "
           "the first.");
    put(r, "casynq_heartbeat_last_success_timestamp_seconds %.3f\n",
        (double)atomic_load(&m->heartbeat_ok_ms) / 1000.0);
}

/* Returns true when a limiter before limiters[before] has a limit named
 * name, whose series then already holds this limit's count. */
static bool limit_name_seen(struct casynq__metrics *m, int before,
                            const char *name)
{
    for (int i = 0; i < before; i++) {
        size_t n = casynq_limiter_limit_count(m->limiters[i]);

        for (size_t j = 0; j < n; j++) {
            const char *other = NULL;

            casynq_limiter_rejections_at(m->limiters[i], j, &other, NULL);
            if (strcmp(other, name) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Sums the rejections of the limits named name in limiters[from] and
 * after. A limiter has each name at most once. */
static uint64_t rejections_named(struct casynq__metrics *m, int from,
                                 const char *name)
{
    uint64_t total = 0;

    for (int i = from; i < m->nlimiters; i++) {
        size_t n = casynq_limiter_limit_count(m->limiters[i]);

        for (size_t j = 0; j < n; j++) {
            const char *other = NULL;
            uint64_t rejected = 0;

            casynq_limiter_rejections_at(m->limiters[i], j, &other, &rejected);
            if (strcmp(other, name) == 0) {
                total += rejected;
                break;
            }
        }
    }
    return total;
}

/* One series per limit name of the attached limiters. The label is the
 * limit's name, never a caller key, so the series are bounded by the
 * configuration: at most 8 limiters of 66 limits each. */
static void render_rejections(struct render *r, struct casynq__metrics *m)
{
    if (m->nlimiters == 0) {
        return;
    }
    family(r, "casynq_enqueue_rejected_total", "counter",
           "Enqueues rejected by a limiter of this process, by the limit "
           "that rejected them: a rate limit's name, max_backlog or "
           "max_payload.");
    for (int i = 0; i < m->nlimiters; i++) {
        size_t n = casynq_limiter_limit_count(m->limiters[i]);

        for (size_t j = 0; j < n; j++) {
            const char *name = NULL;

            casynq_limiter_rejections_at(m->limiters[i], j, &name, NULL);
            if (limit_name_seen(m, i, name)) {
                continue;
            }
            put(r, "casynq_enqueue_rejected_total{limit=\"");
            put_label(r, name);
            put(r, "\"} %" PRIu64 "\n", rejections_named(m, i, name));
        }
    }
}

/* Reads utime and stime (clock ticks) and rss (pages) from
 * /proc/self/stat. Returns false when the file cannot be parsed. */
static bool read_proc_stat(unsigned long long *ticks, long long *rss_pages)
{
    char buf[1024];
    unsigned long long utime, stime;
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n;
    char *p;

    if (f == NULL) {
        return false;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name in field 2 may hold spaces and parentheses, so the
     * fields are counted from its closing parenthesis. */
    p = strrchr(buf, ')');
    if (p == NULL) {
        return false;
    }
    /* After ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime(14) stime(15) cutime cstime priority nice
     * num_threads itrealvalue starttime vsize rss(24). */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d "
               "%*d %*d %*d %*d %*d %*u %*u %lld",
               &utime, &stime, rss_pages) != 3) {
        return false;
    }
    *ticks = utime + stime;
    return true;
}

static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    if (d == NULL) {
        return -1;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    /* opendir's own descriptor is listed too. */
    return n > 0 ? n - 1 : 0;
}

static void render_process(struct render *r)
{
    unsigned long long ticks = 0;
    long long rss_pages = 0;
    long hz = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    long fds = count_open_fds();
    cpu_set_t cpus;

    if (read_proc_stat(&ticks, &rss_pages) && hz > 0 && page > 0) {
        family(r, "process_cpu_seconds_total", "counter",
               "Total user and system CPU time spent in seconds.");
        put(r, "process_cpu_seconds_total %.2f\n", (double)ticks / (double)hz);
        family(r, "process_resident_memory_bytes", "gauge",
               "Resident memory size in bytes.");
        put(r, "process_resident_memory_bytes %lld\n", rss_pages * page);
    }
    if (fds >= 0) {
        family(r, "process_open_fds", "gauge",
               "Number of open file descriptors.");
        put(r, "process_open_fds %ld\n", fds);
    }
    if (sched_getaffinity(0, sizeof(cpus), &cpus) == 0) {
        family(r, "casynq_cpus_available", "gauge",
               "CPUs this process may run on (its affinity mask); a "
               "cgroup CPU quota is not reflected.");
        put(r, "casynq_cpus_available %d\n", CPU_COUNT(&cpus));
    }
}

int casynq__metrics_render(struct casynq__metrics *m, struct casynq__buf *out)
{
    struct render r = {out, 0};
    int ntypes = atomic_load_explicit(&m->ntypes, memory_order_acquire);

    render_queues(&r, m);
    render_tasks(&r, m, ntypes);
    render_histograms(&r, m, ntypes);
    render_server(&r, m);
    render_rejections(&r, m);
    render_process(&r);
    return r.err;
}
