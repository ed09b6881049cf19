/* limiter_bench: the cost of one admission check, per limiter backend.
 *
 * Each scenario calls casynq_limiter_check() in a loop for --seconds and
 * prints one line: the backend, the number of threads, the number of
 * distinct keys, how many checks passed and were rejected, checks per
 * second and the wall-clock nanoseconds per check. The last is the run
 * time divided by the checks of all threads together, so with several
 * threads it is the cost per check of the whole limiter, not of one
 * call.
 *
 * The memory scenarios need nothing else. The Redis scenarios need the
 * redis-server of --redis, whose keys casynq:rl:{bench-*} they write;
 * they are skipped with a message when it does not answer. Nothing here
 * is a test: the program only measures. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <casynq.h>

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"
#define MAX_THREADS       64
#define KEY_LEN           32

struct bench_args {
    const char *redis_url;
    double seconds;
    long threads;
    long keys;
};

/* One scenario: a limiter, and how its checks pick their key. */
struct scenario {
    const char *backend;
    struct casynq_limiter *limiter;
    long threads;
    long keys; /* distinct keys, used round robin */
    double seconds;
};

/* Arguments and counts of one thread. */
struct worker {
    pthread_t thread;
    const struct scenario *s;
    long first_key;
    long passed;
    long rejected;
    long failed;
    char error[256];
};

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: limiter_bench [OPTION]...\n"
            "Measures the cost of casynq_limiter_check() for the memory and\n"
            "Redis backends.\n"
            "\n"
            "  --redis URL     redis server for the Redis backend\n"
            "                  (default: $CASYNQ_REDIS_URL, "
            "else " DEFAULT_REDIS_URL ")\n"
            "  --seconds S     run time of each scenario, in seconds\n"
            "                  (default 1)\n"
            "  --threads N     threads of the multi-threaded scenarios, 2 to\n"
            "                  %d (default 4)\n"
            "  --keys N        distinct keys of the many-keys scenarios\n"
            "                  (default 100000)\n"
            "  -h, --help      print this help and exit\n",
            MAX_THREADS);
}

static int parse_args(int argc, char **argv, struct bench_args *a)
{
    static const struct option options[] = {
            {"redis", required_argument, NULL, 'r'},
            {"seconds", required_argument, NULL, 's'},
            {"threads", required_argument, NULL, 't'},
            {"keys", required_argument, NULL, 'k'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    const char *env = getenv("CASYNQ_REDIS_URL");
    int ch;

    a->redis_url = env != NULL && env[0] != '\0' ? env : DEFAULT_REDIS_URL;
    a->seconds = 1;
    a->threads = 4;
    a->keys = 100000;
    while ((ch = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (ch) {
        case 'r':
            a->redis_url = optarg;
            break;
        case 's':
            a->seconds = atof(optarg);
            break;
        case 't':
            a->threads = atol(optarg);
            break;
        case 'k':
            a->keys = atol(optarg);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (a->seconds <= 0 || a->threads < 2 || a->threads > MAX_THREADS ||
        a->keys < 1) {
        fprintf(stderr, "limiter_bench: --seconds must be above 0, "
                        "--threads from 2 to 64 and --keys at least 1; run "
                        "limiter_bench --help\n");
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const struct scenario *s = w->s;
    int64_t end = mono_ns() + (int64_t)(s->seconds * 1e9);
    long key = w->first_key;
    char name[KEY_LEN];

    for (long i = 0;; i++) {
        int rc;

        /* Reading the clock every 256 checks keeps it out of the cost. */
        if ((i & 255) == 0 && mono_ns() >= end) {
            break;
        }
        snprintf(name, sizeof(name), "tenant-%ld", key);
        key = key + 1 < s->keys ? key + 1 : 0;
        rc = casynq_limiter_check(s->limiter, name, "default", "bench:noop",
                                  100, NULL);
        if (rc == 0) {
            w->passed++;
        } else if (rc == CASYNQ_ERATELIMITED) {
            w->rejected++;
        } else {
            w->failed++;
            snprintf(w->error, sizeof(w->error), "%s",
                     casynq_limiter_last_error(s->limiter));
            break;
        }
    }
    return NULL;
}

/* Runs one scenario and prints its line.
 * Returns: 0, or -1 when a check failed (the error is printed). */
static int run(const struct scenario *s)
{
    struct worker workers[MAX_THREADS];
    long passed = 0;
    long rejected = 0;
    long total;
    double elapsed;
    int64_t start;
    int rc = 0;

    memset(workers, 0, sizeof(workers));
    start = mono_ns();
    for (long i = 0; i < s->threads; i++) {
        workers[i].s = s;
        workers[i].first_key = i * (s->keys / s->threads);
        pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
    }
    for (long i = 0; i < s->threads; i++) {
        pthread_join(workers[i].thread, NULL);
        passed += workers[i].passed;
        rejected += workers[i].rejected;
        if (workers[i].failed > 0) {
            fprintf(stderr, "limiter_bench: %s check failed: %s\n", s->backend,
                    workers[i].error);
            rc = -1;
        }
    }
    elapsed = (double)(mono_ns() - start) / 1e9;
    total = passed + rejected;
    if (rc != 0 || total == 0) {
        return -1;
    }
    printf("%-7s %7ld %9ld %11ld %11ld %12.0f %10.1f\n", s->backend, s->threads,
           s->keys, passed, rejected, (double)total / elapsed,
           elapsed * 1e9 / (double)total);
    fflush(stdout);
    return 0;
}

/* Creates a limiter with one per-key limit that admits almost every
 * check (`generous`) or rejects almost every check. */
static struct casynq_limiter *
make_limiter(enum casynq_limiter_backend b,
             const struct casynq_redis_options *redis, const char *name,
             bool generous)
{
    struct casynq_limiter *l = NULL;
    double rate = generous ? 1000000 : 1;
    double burst = generous ? 1000000 : 1;

    if (casynq_limiter_create(b, redis, &l) != 0 ||
        casynq_limiter_add_rate(l, name, CASYNQ_LIMIT_PER_KEY, NULL, rate,
                                burst) != 0) {
        fprintf(stderr, "limiter_bench: cannot set up the limiter: %s\n",
                l != NULL ? casynq_limiter_last_error(l) : "out of memory");
        casynq_limiter_destroy(l);
        return NULL;
    }
    return l;
}

/* Runs the scenarios of one backend. */
static int run_backend(const char *backend, enum casynq_limiter_backend b,
                       const struct casynq_redis_options *redis,
                       const struct bench_args *a)
{
    static const struct {
        const char *name;
        bool generous;
        bool many_keys;
        bool threaded;
    } plans[] = {
            {"bench-pass", true, false, false},
            {"bench-reject", false, false, false},
            {"bench-keys", true, true, false},
            {"bench-threads", true, true, true},
    };

    for (size_t i = 0; i < sizeof(plans) / sizeof(plans[0]); i++) {
        struct scenario s = {
                .backend = backend,
                .threads = plans[i].threaded ? a->threads : 1,
                .keys = plans[i].many_keys ? a->keys : 1,
                .seconds = a->seconds,
        };
        int rc;

        s.limiter = make_limiter(b, redis, plans[i].name, plans[i].generous);
        if (s.limiter == NULL) {
            return -1;
        }
        rc = run(&s);
        casynq_limiter_destroy(s.limiter);
        if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct casynq_redis_options *redis = NULL;
    struct bench_args a;
    int status = 0;

    if (parse_args(argc, argv, &a) != 0) {
        return 2;
    }
    printf("%-7s %7s %9s %11s %11s %12s %10s\n", "backend", "threads", "keys",
           "passed", "rejected", "checks/s", "ns/check");
    if (run_backend("memory", CASYNQ_LIMITER_MEMORY, NULL, &a) != 0) {
        status = 1;
    }
    if (casynq_redis_options_create(&redis) != 0 ||
        casynq_redis_options_set_url(redis, a.redis_url) != 0) {
        fprintf(stderr, "limiter_bench: invalid --redis URL: %s\n",
                redis != NULL ? casynq_redis_options_last_error(redis)
                              : "out of memory");
        casynq_redis_options_destroy(redis);
        return 2;
    }
    if (run_backend("redis", CASYNQ_LIMITER_REDIS, redis, &a) != 0) {
        fprintf(stderr, "limiter_bench: the Redis scenarios did not run; "
                        "start redis-server or pass --redis URL\n");
        status = 1;
    }
    casynq_redis_options_destroy(redis);
    return status;
}
