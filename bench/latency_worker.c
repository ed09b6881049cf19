/* latency_worker: the casynq side of the pickup latency benchmark, a
 * program that embeds the library as an application would.
 *
 * Its bench:latency handler reads the enqueue time (unix ns, decimal
 * text) from the payload and records now - enqueue time when the handler
 * starts, into an array allocated up front. After SIGTERM or SIGINT shut
 * the server down, it prints one JSON line with the count and the
 * nearest-rank percentiles in nanoseconds:
 * {"count":N,"dropped":N,"p50_ns":N,"p99_ns":N,"p999_ns":N,"max_ns":N}. */
#include <getopt.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <casynq.h>

/* Latencies kept in an array sized at start, so that a handler records
 * one with an atomic add and a store. */
struct recorder {
    int64_t *samples; /* immutable after start; slots written once */
    size_t capacity;  /* immutable after start */
    atomic_size_t next;
    atomic_size_t dropped;
};

struct worker_args {
    const char *redis_url;
    long concurrency;
    long capacity;
};

static int64_t unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int handle_latency(struct casynq_ctx *ctx,
                          const struct casynq_task *task, void *ud)
{
    int64_t now = unix_ns();
    struct recorder *rec = ud;
    size_t len = 0;
    const char *payload = casynq_task_payload(task, &len);
    char text[24];
    char *end = NULL;
    long long sent;
    size_t slot;

    if (payload == NULL || len == 0 || len >= sizeof(text)) {
        return casynq_ctx_skip_retry(ctx, "bench:latency payload of %zu "
                                          "bytes is not unix ns",
                                     len);
    }
    memcpy(text, payload, len);
    text[len] = '\0';
    sent = strtoll(text, &end, 10);
    if (*end != '\0') {
        return casynq_ctx_skip_retry(ctx, "bench:latency payload '%s' is not "
                                          "unix ns",
                                     text);
    }

    slot = atomic_fetch_add(&rec->next, 1);
    if (slot >= rec->capacity) {
        atomic_fetch_add(&rec->dropped, 1);
        return 0;
    }
    rec->samples[slot] = now - (int64_t)sent;
    return 0;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Returns the nearest-rank percentile p (0 < p <= 1) of n sorted
 * samples, or 0 when there are none. */
static int64_t percentile(const int64_t *sorted, size_t n, double p)
{
    size_t rank;

    if (n == 0) {
        return 0;
    }
    rank = (size_t)ceil(p * (double)n);
    return sorted[(rank < 1 ? 1 : rank) - 1];
}

static void print_summary(struct recorder *rec)
{
    size_t n = atomic_load(&rec->next);

    n = n < rec->capacity ? n : rec->capacity;
    qsort(rec->samples, n, sizeof(*rec->samples), compare_int64);
    printf("{\"count\":%zu,\"dropped\":%zu,\"p50_ns\":%lld,\"p99_ns\":%lld,"
           "\"p999_ns\":%lld,\"max_ns\":%lld}\n",
           n, atomic_load(&rec->dropped),
           (long long)percentile(rec->samples, n, 0.50),
           (long long)percentile(rec->samples, n, 0.99),
           (long long)percentile(rec->samples, n, 0.999),
           (long long)(n > 0 ? rec->samples[n - 1] : 0));
}

static long parse_long(const char *name, const char *text, long min,
                       long max)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "invalid value '%s' for %s: pass an integer from "
                        "%ld to %ld\n",
                text, name, min, max);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv, struct worker_args *a)
{
    static const struct option opts[] = {
            {"redis", required_argument, NULL, 'r'},
            {"concurrency", required_argument, NULL, 'c'},
            {"capacity", required_argument, NULL, 'n'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };

    *a = (struct worker_args){.concurrency = 10, .capacity = 1000000};
    for (;;) {
        int opt = getopt_long(argc, argv, "h", opts, NULL);

        if (opt == -1) {
            break;
        }
        if (opt == 'r') {
            a->redis_url = optarg;
        } else if (opt == 'c') {
            a->concurrency = parse_long("--concurrency", optarg, 1, 10000);
        } else if (opt == 'n') {
            a->capacity = parse_long("--capacity", optarg, 1, 100000000);
        } else if (opt == 'h') {
            printf("Usage: latency_worker --redis URL [--concurrency N] "
                   "[--capacity N]\n"
                   "Processes bench:latency tasks from the queue default "
                   "until SIGTERM, then\n"
                   "prints the pickup latency percentiles as JSON.\n");
            exit(0);
        } else {
            exit(2);
        }
    }
    if (a->redis_url == NULL || optind < argc) {
        fprintf(stderr, "missing --redis URL or unexpected argument; run "
                        "latency_worker --help\n");
        exit(2);
    }
}

/* Builds the configuration and the mux, and runs the server until a
 * signal stops it. Returns: 0 after a clean shutdown, else 1. */
static int serve(const struct worker_args *a, struct recorder *rec)
{
    struct casynq_redis_options *redis = NULL;
    struct casynq_config *cfg = NULL;
    struct casynq_mux *mux = NULL;
    struct casynq_server *srv = NULL;
    int rc = casynq_redis_options_create(&redis);

    if (rc == 0) {
        rc = casynq_redis_options_set_url(redis, a->redis_url);
    }
    if (rc == 0) {
        rc = casynq_config_create(&cfg);
    }
    if (rc == 0) {
        rc = casynq_config_set_redis(cfg, redis);
    }
    if (rc == 0) {
        rc = casynq_config_set_concurrency(cfg, (int)a->concurrency);
    }
    if (rc == 0) {
        rc = casynq_mux_create(&mux);
    }
    if (rc == 0) {
        rc = casynq_mux_handle(mux, "bench:latency", handle_latency, rec);
    }
    if (rc == 0) {
        rc = casynq_server_create(cfg, mux, &srv);
    }
    if (rc != 0) {
        fprintf(stderr, "latency_worker setup failed: %s %s\n",
                casynq_strerror(rc),
                cfg != NULL ? casynq_config_last_error(cfg) : "");
        goto out;
    }
    rc = casynq_server_run(srv);
    if (rc != 0) {
        fprintf(stderr, "latency_worker server failed: %s\n",
                casynq_server_last_error(srv));
    }
out:
    casynq_server_destroy(srv);
    casynq_mux_destroy(mux);
    casynq_config_destroy(cfg);
    casynq_redis_options_destroy(redis);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct worker_args a;
    struct recorder rec;
    int rc;

    parse_args(argc, argv, &a);
    rec.capacity = (size_t)a.capacity;
    rec.samples = calloc(rec.capacity, sizeof(*rec.samples));
    atomic_init(&rec.next, 0);
    atomic_init(&rec.dropped, 0);
    if (rec.samples == NULL) {
        fprintf(stderr, "out of memory for %zu latencies; lower "
                        "--capacity\n",
                rec.capacity);
        return 1;
    }
    rc = serve(&a, &rec);
    if (rc == 0) {
        print_summary(&rec);
    }
    free(rec.samples);
    return rc;
}
