/* enqueue_bench: the casynq side of the enqueue throughput benchmark, and
 * the steady-rate producer of the pickup latency benchmark.
 *
 * Throughput mode (the default) starts --clients threads, each with its
 * own casynq_client and so its own Redis connection, and each enqueues
 * --tasks tasks of --payload-size bytes with the default options. Every
 * client enqueues one untimed task first, so connecting and loading the
 * script are not timed. Prints {"clients":N,"tasks":N,"seconds":S}.
 *
 * Rate mode (--rate R --duration-s S) enqueues from one client on a fixed
 * schedule of R tasks per second for S seconds. Each payload is the unix
 * time in nanoseconds, as decimal text, taken just before the enqueue
 * call. Prints {"tasks":N,"seconds":S,"max_lag_ms":L}, where L is how far
 * the producer fell behind its schedule at worst. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <casynq.h>

#define PAYLOAD_MAX_BYTES 60000

struct bench_args {
    const char *redis_url;
    long clients;
    long tasks;
    long payload_size;
    const char *type;
    const char *queue;
    long rate;       /* tasks per second; 0: throughput mode */
    long duration_s; /* rate mode only */
};

/* Arguments and result of one throughput thread. */
struct worker {
    pthread_t thread;
    const struct bench_args *args;
    pthread_barrier_t *start;
    const char *payload;
    int rc;
    char error[256];
};

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: enqueue_bench --redis URL [OPTION]...\n"
            "Measures casynq's enqueue rate, or enqueues at a fixed rate.\n"
            "\n"
            "  --redis URL         redis://host:port/db to enqueue into\n"
            "  --clients N         threads, one client each (default 1)\n"
            "  --tasks N           timed tasks per client (default 10000)\n"
            "  --payload-size N    payload bytes per task (default 100)\n"
            "  --type TYPE         task type (default demo:noop, or\n"
            "                      bench:latency with --rate)\n"
            "  --queue NAME        queue (default: default)\n"
            "  --rate R            rate mode: R tasks per second from one\n"
            "                      client, payload = enqueue time in unix ns\n"
            "  --duration-s S      rate mode: seconds to enqueue for "
            "(default 10)\n");
}

static int parse_long(const char *name, const char *text, long min, long max,
                      long *out)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);

    if (end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "invalid value '%s' for %s: pass an integer from "
                        "%ld to %ld\n",
                text, name, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Applies one option returned by getopt_long. Returns: 0, 1 for --help,
 * or -1 after printing why to stderr. */
static int apply_option(int opt, const char *value, struct bench_args *a)
{
    switch (opt) {
    case 'r':
        a->redis_url = value;
        return 0;
    case 'c':
        return parse_long("--clients", value, 1, 1024, &a->clients);
    case 'n':
        return parse_long("--tasks", value, 1, 100000000, &a->tasks);
    case 's':
        return parse_long("--payload-size", value, 0, PAYLOAD_MAX_BYTES,
                          &a->payload_size);
    case 't':
        a->type = value;
        return 0;
    case 'q':
        a->queue = value;
        return 0;
    case 'R':
        return parse_long("--rate", value, 1, 1000000, &a->rate);
    case 'd':
        return parse_long("--duration-s", value, 1, 86400, &a->duration_s);
    case 'h':
        usage(stdout);
        return 1;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct bench_args *a)
{
    static const struct option opts[] = {
            {"redis", required_argument, NULL, 'r'},
            {"clients", required_argument, NULL, 'c'},
            {"tasks", required_argument, NULL, 'n'},
            {"payload-size", required_argument, NULL, 's'},
            {"type", required_argument, NULL, 't'},
            {"queue", required_argument, NULL, 'q'},
            {"rate", required_argument, NULL, 'R'},
            {"duration-s", required_argument, NULL, 'd'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    int rc = 0;

    *a = (struct bench_args){.clients = 1, .tasks = 10000,
                             .payload_size = 100, .queue = "default",
                             .duration_s = 10};
    while (rc == 0) {
        int opt = getopt_long(argc, argv, "h", opts, NULL);

        if (opt == -1) {
            break;
        }
        rc = apply_option(opt, optarg, a);
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        rc = -1;
    }
    if (rc == 0 && a->redis_url == NULL) {
        fprintf(stderr, "missing option --redis\n");
        rc = -1;
    }
    if (a->type == NULL) {
        a->type = a->rate > 0 ? "bench:latency" : "demo:noop";
    }
    return rc;
}

/* Creates a client for a->redis_url and checks the connection.
 * Returns: 0, or a casynq error code with a message in err. */
static int open_client(const struct bench_args *a,
                       struct casynq_client **client, char *err,
                       size_t errlen)
{
    struct casynq_redis_options *redis = NULL;
    int rc = casynq_redis_options_create(&redis);

    *client = NULL;
    if (rc == 0) {
        rc = casynq_redis_options_set_url(redis, a->redis_url);
        if (rc != 0) {
            snprintf(err, errlen, "invalid --redis %s: %s", a->redis_url,
                     casynq_redis_options_last_error(redis));
        }
    }
    if (rc == 0) {
        rc = casynq_client_create(redis, client);
    }
    if (rc == 0) {
        rc = casynq_client_ping(*client);
        if (rc != 0) {
            snprintf(err, errlen, "cannot reach redis at %s: %s",
                     a->redis_url, casynq_client_last_error(*client));
        }
    }
    if (rc != 0 && err[0] == '\0') {
        snprintf(err, errlen, "client setup failed: %s", casynq_strerror(rc));
    }
    casynq_redis_options_destroy(redis);
    return rc;
}

/* Enqueues `count` copies of task and stops at the first failure.
 * Returns: 0, or the failing casynq error code with a message in err. */
static int enqueue_many(struct casynq_client *client,
                        const struct casynq_task *task,
                        const struct casynq_enqueue_options *opts, long count,
                        char *err, size_t errlen)
{
    for (long i = 0; i < count; i++) {
        int rc = casynq_client_enqueue(client, task, opts, NULL);

        if (rc != 0) {
            snprintf(err, errlen, "enqueue failed: %s",
                     casynq_client_last_error(client));
            return rc;
        }
    }
    return 0;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct bench_args *a = w->args;
    struct casynq_client *client = NULL;
    struct casynq_task *task = NULL;
    struct casynq_enqueue_options *opts = NULL;
    int rc = open_client(a, &client, w->error, sizeof(w->error));

    if (rc == 0) {
        rc = casynq_task_create(a->type, w->payload, (size_t)a->payload_size,
                                &task);
    }
    if (rc == 0) {
        rc = casynq_enqueue_options_create(&opts);
    }
    if (rc == 0) {
        rc = casynq_enqueue_options_set_queue(opts, a->queue);
    }
    /* The warm-up task connects and loads the script before the clock
     * starts. */
    if (rc == 0) {
        rc = enqueue_many(client, task, opts, 1, w->error, sizeof(w->error));
    }

    /* Every thread reaches the barrier, even after a failure, so that the
     * main thread never waits forever. */
    pthread_barrier_wait(w->start);
    if (rc == 0) {
        rc = enqueue_many(client, task, opts, a->tasks, w->error,
                          sizeof(w->error));
    }
    w->rc = rc;
    casynq_enqueue_options_destroy(opts);
    casynq_task_destroy(task);
    casynq_client_destroy(client);
    return NULL;
}

static int run_throughput(const struct bench_args *a)
{
    struct worker *workers = calloc((size_t)a->clients, sizeof(*workers));
    char *payload = malloc((size_t)a->payload_size + 1);
    pthread_barrier_t start;
    int64_t t0;
    int64_t t1;
    int rc = 0;

    if (workers == NULL || payload == NULL) {
        fprintf(stderr, "out of memory for %ld clients\n", a->clients);
        free(payload);
        free(workers);
        return 1;
    }
    memset(payload, 'a', (size_t)a->payload_size);
    pthread_barrier_init(&start, NULL, (unsigned)a->clients + 1);
    for (long i = 0; i < a->clients; i++) {
        workers[i] = (struct worker){.args = a, .start = &start,
                                     .payload = payload};
        if (pthread_create(&workers[i].thread, NULL, run_worker,
                           &workers[i]) != 0) {
            /* The barrier counts every thread, so a missing one would
             * block the others forever. */
            fprintf(stderr, "cannot create client thread %ld\n", i);
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    t0 = mono_ns();
    for (long i = 0; i < a->clients; i++) {
        pthread_join(workers[i].thread, NULL);
    }
    t1 = mono_ns();
    for (long i = 0; i < a->clients; i++) {
        if (workers[i].rc != 0) {
            fprintf(stderr, "client %ld: %s\n", i, workers[i].error);
            rc = 1;
        }
    }
    if (rc == 0) {
        printf("{\"clients\":%ld,\"tasks\":%ld,\"seconds\":%.6f}\n",
               a->clients, a->clients * a->tasks, (double)(t1 - t0) / 1e9);
    }
    pthread_barrier_destroy(&start);
    free(payload);
    free(workers);
    return rc;
}

/* Enqueues one task whose payload is the current unix time in ns. */
static int enqueue_stamped(struct casynq_client *client, const char *type,
                           const struct casynq_enqueue_options *opts)
{
    struct casynq_task *task = NULL;
    char stamp[24];
    int len = snprintf(stamp, sizeof(stamp), "%lld", (long long)unix_ns());
    int rc = casynq_task_create(type, stamp, (size_t)len, &task);

    if (rc == 0) {
        rc = casynq_client_enqueue(client, task, opts, NULL);
        if (rc != 0) {
            fprintf(stderr, "enqueue failed: %s\n",
                    casynq_client_last_error(client));
        }
    }
    casynq_task_destroy(task);
    return rc;
}

static int run_rate(const struct bench_args *a)
{
    struct casynq_client *client = NULL;
    struct casynq_enqueue_options *opts = NULL;
    char err[256] = "";
    int64_t interval_ns = 1000000000 / a->rate;
    int64_t count = a->rate * a->duration_s;
    int64_t max_lag_ns = 0;
    int64_t t0;
    int rc = open_client(a, &client, err, sizeof(err));

    if (rc == 0) {
        rc = casynq_enqueue_options_create(&opts);
    }
    if (rc == 0) {
        rc = casynq_enqueue_options_set_queue(opts, a->queue);
    }
    if (rc != 0) {
        fprintf(stderr, "%s\n", err[0] != '\0' ? err : casynq_strerror(rc));
        goto out;
    }

    t0 = mono_ns();
    for (int64_t i = 0; i < count && rc == 0; i++) {
        int64_t due = t0 + i * interval_ns;
        struct timespec ts = {.tv_sec = due / 1000000000,
                              .tv_nsec = due % 1000000000};
        int64_t lag;

        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        lag = mono_ns() - due;
        max_lag_ns = lag > max_lag_ns ? lag : max_lag_ns;
        rc = enqueue_stamped(client, a->type, opts);
    }
    if (rc == 0) {
        printf("{\"tasks\":%lld,\"seconds\":%.6f,\"max_lag_ms\":%.3f}\n",
               (long long)count, (double)(mono_ns() - t0) / 1e9,
               (double)max_lag_ns / 1e6);
    }
out:
    casynq_enqueue_options_destroy(opts);
    casynq_client_destroy(client);
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct bench_args a;
    int rc = parse_args(argc, argv, &a);

    if (rc != 0) {
        if (rc > 0) {
            return 0;
        }
        fprintf(stderr, "run enqueue_bench --help for the options\n");
        return 2;
    }
    return a.rate > 0 ? run_rate(&a) : run_throughput(&a);
}
