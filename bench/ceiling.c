/* ceiling: measures how many task lifecycles per second this Redis alone
 * can execute, with no worker in the way.
 *
 * A lifecycle is the minimum set of state changes a successful task goes
 * through, made here with the Lua scripts and arguments that casynq sends.
 * EVALSHA of runtime/lua/enqueue.lua stores the task and pushes it to
 * pending. dequeue.lua with a maximum of 1 moves it to active and takes a
 * lease. done.lua deletes it and counts it as processed.
 * Each batch pipelines the enqueues, dequeues and dones of --batch tasks
 * in one round trip, in that order. Redis runs the commands of a
 * connection in order, so each dequeue gets the task that the matching
 * enqueue stored, and the program checks that it does. With --drain,
 * every task is stored first, untimed, and only the dequeue and done calls
 * are timed, which is the work left in a drain of tasks loaded before the
 * server starts. With --per-call N, each dequeue call takes N tasks and
 * done_batch.lua finishes N tasks per call, as a casynq server with N idle
 * workers does. Prints {"mode":"lifecycle"|"drain","lifecycles":N,
 * "seconds":S,"batch":B,"per_call":N}.
 *
 * NOTE: the figure estimates what Redis sustains for a server that moves
 * one task (or N with --per-call) per script call. A server also pays for
 * round trips, its own bookkeeping (heartbeats, lease extension, the
 * forwarder) and handing tasks to its workers. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

#define QUEUE "default"
/* Lease length that casynq's dequeue writes (runtime/broker.h), and the
 * lifetime of a daily statistics key (asynq v0.26.0 base.go, statsTTL:
 * 90 days), in seconds. */
#define LEASE_S     30
#define STATS_TTL_S (90 * 24 * 3600)
#define MAXINT64    "9223372036854775807"
#define MSG_CAP     1024
/* Largest --per-call, the dequeue limit of a casynq server's fetch. */
#define CALL_CAP    64

struct ceiling_args {
    const char *host;
    long port;
    const char *lua_dir;
    long lifecycles;
    long batch;
    long payload_size;
    bool drain;    /* time only dequeue and done, after an untimed load */
    long per_call; /* tasks per dequeue and done call */
};

enum script_call {
    CALL_ENQUEUE = 0,
    CALL_DEQUEUE = 1,
    CALL_DONE = 2,
};

struct scripts {
    char enqueue[41];
    char dequeue[41];
    char done[41];
    char done_batch[41];
};

/* The ID and task key of one task, kept until its replies are read. */
struct lifecycle {
    char id[BENCH_ID_LEN + 1];
    char task_key[128];
};

/* Keys and values that every lifecycle in a batch shares. */
struct batch_consts {
    char now_ns[24];
    char lease_expiry_s[24];
    char stats_expiry_s[24];
    char daily_key[64];
    const void *payload;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: ceiling --port N --lua-dir DIR [OPTION]...\n"
            "Runs pipelined enqueue, dequeue and done script calls and "
            "prints the\n"
            "lifecycles per second.\n"
            "\n"
            "  --host HOST         redis host (default 127.0.0.1)\n"
            "  --port N            redis port\n"
            "  --lua-dir DIR       directory of the broker's Lua scripts "
            "(runtime/lua)\n"
            "  --lifecycles N      tasks taken through their lifecycle "
            "(default 200000)\n"
            "  --batch N           lifecycles per pipeline round trip "
            "(default 100)\n"
            "  --payload-size N    payload bytes per task (default 100)\n"
            "  --drain             store every task first, untimed, then "
            "time only\n"
            "                      the dequeue and done calls\n"
            "  --per-call N        tasks per dequeue call, finished with "
            "one\n"
            "                      done_batch call (default 1: done.lua "
            "per task)\n");
}

static int apply_option(int opt, const char *value, struct ceiling_args *a)
{
    switch (opt) {
    case 'H':
        a->host = value;
        return 0;
    case 'p':
        return bench_parse_long("--port", value, 1, 65535, &a->port);
    case 'l':
        a->lua_dir = value;
        return 0;
    case 'n':
        return bench_parse_long("--lifecycles", value, 1, 1000000000,
                                &a->lifecycles);
    case 'b':
        return bench_parse_long("--batch", value, 1, 100000, &a->batch);
    case 's':
        return bench_parse_long("--payload-size", value, 0, 512,
                                &a->payload_size);
    case 'd':
        a->drain = true;
        return 0;
    case 'c':
        return bench_parse_long("--per-call", value, 1, CALL_CAP,
                                &a->per_call);
    case 'h':
        usage(stdout);
        return 1;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct ceiling_args *a)
{
    static const struct option opts[] = {
            {"host", required_argument, NULL, 'H'},
            {"port", required_argument, NULL, 'p'},
            {"lua-dir", required_argument, NULL, 'l'},
            {"lifecycles", required_argument, NULL, 'n'},
            {"batch", required_argument, NULL, 'b'},
            {"payload-size", required_argument, NULL, 's'},
            {"drain", no_argument, NULL, 'd'},
            {"per-call", required_argument, NULL, 'c'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    int rc = 0;

    *a = (struct ceiling_args){.host = "127.0.0.1", .lifecycles = 200000,
                               .batch = 100, .payload_size = 100,
                               .per_call = 1};
    while (rc == 0) {
        int opt = getopt_long(argc, argv, "h", opts, NULL);

        if (opt == -1) {
            break;
        }
        rc = apply_option(opt, optarg, a);
    }
    if (rc == 0 && (a->port == 0 || a->lua_dir == NULL || optind < argc)) {
        fprintf(stderr, "missing --port or --lua-dir, or an unexpected "
                        "argument\n");
        rc = -1;
    }
    return rc;
}

static void fill_consts(struct batch_consts *k)
{
    time_t now_s = time(NULL);
    struct tm day;

    gmtime_r(&now_s, &day);
    snprintf(k->now_ns, sizeof(k->now_ns), "%lld",
             (long long)bench_unix_ns());
    snprintf(k->lease_expiry_s, sizeof(k->lease_expiry_s), "%lld",
             (long long)now_s + LEASE_S);
    snprintf(k->stats_expiry_s, sizeof(k->stats_expiry_s), "%lld",
             (long long)now_s + STATS_TTL_S);
    /* Daily counters are named by the UTC date, as asynq's are. */
    strftime(k->daily_key, sizeof(k->daily_key),
             "asynq:{" QUEUE "}:processed:%Y-%m-%d", &day);
}

static int append_enqueue(redisContext *c, const struct scripts *s,
                          const struct batch_consts *k, size_t payload_len,
                          struct lifecycle *t)
{
    struct bench_task_fields f = {
            .type = "demo:noop",
            .payload = k->payload,
            .payload_len = payload_len,
            .id = t->id,
            .queue = QUEUE,
            .max_retry = 25,
            .timeout_s = BENCH_DEFAULT_TIMEOUT_S,
    };
    /* hiredis copies the arguments into its output buffer at once, so one
     * message buffer serves every call. */
    static uint8_t msg[MSG_CAP];
    const char *argv[8];
    size_t lens[8];

    bench_new_id(t->id);
    snprintf(t->task_key, sizeof(t->task_key), "asynq:{" QUEUE "}:t:%s",
             t->id);
    argv[0] = "EVALSHA";
    argv[1] = s->enqueue;
    argv[2] = "2";
    argv[3] = t->task_key;
    argv[4] = "asynq:{" QUEUE "}:pending";
    argv[5] = (const char *)msg;
    argv[6] = t->id;
    argv[7] = k->now_ns;
    /* The message is binary, so its length is the encoded one. */
    lens[5] = bench_encode_task(&f, msg, sizeof(msg));
    for (int i = 0; i < 8; i++) {
        lens[i] = i == 5 ? lens[5] : strlen(argv[i]);
    }
    return redisAppendCommandArgv(c, 8, argv, lens);
}

static int append_dequeue(redisContext *c, const struct scripts *s,
                          const struct batch_consts *k, long max)
{
    return redisAppendCommand(c,
                              "EVALSHA %s 4 asynq:{" QUEUE "}:pending "
                              "asynq:{" QUEUE "}:paused "
                              "asynq:{" QUEUE "}:active "
                              "asynq:{" QUEUE "}:lease %s %ld "
                              "asynq:{" QUEUE "}:t:",
                              s->dequeue, k->lease_expiry_s, max);
}

static int append_done(redisContext *c, const struct scripts *s,
                       const struct batch_consts *k,
                       const struct lifecycle *t)
{
    return redisAppendCommand(c,
                              "EVALSHA %s 5 asynq:{" QUEUE "}:active "
                              "asynq:{" QUEUE "}:lease %s %s "
                              "asynq:{" QUEUE "}:processed %s %s " MAXINT64,
                              s->done, t->task_key, k->daily_key, t->id,
                              k->stats_expiry_s);
}

/* Appends one done_batch call for the n tasks at t. */
static int append_done_batch(redisContext *c, const struct scripts *s,
                             const struct batch_consts *k,
                             const struct lifecycle *t, long n)
{
    /* EVALSHA, sha, numkeys, 4 keys, the task keys, 3 ARGV, 2 per task. */
    const char *argv[10 + 3 * CALL_CAP];
    char count[24];
    int argc = 0;
    char numkeys[24];

    snprintf(numkeys, sizeof(numkeys), "%ld", 4 + n);
    snprintf(count, sizeof(count), "%ld", n);
    argv[argc++] = "EVALSHA";
    argv[argc++] = s->done_batch;
    argv[argc++] = numkeys;
    argv[argc++] = "asynq:{" QUEUE "}:active";
    argv[argc++] = "asynq:{" QUEUE "}:lease";
    argv[argc++] = k->daily_key;
    argv[argc++] = "asynq:{" QUEUE "}:processed";
    for (long i = 0; i < n; i++) {
        argv[argc++] = t[i].task_key;
    }
    argv[argc++] = k->stats_expiry_s;
    argv[argc++] = MAXINT64;
    argv[argc++] = count;
    for (long i = 0; i < n; i++) {
        argv[argc++] = t[i].id;
        argv[argc++] = "0";
    }
    return redisAppendCommandArgv(c, argc, argv, NULL);
}

/* Writes a short description of reply r into out, for error messages. */
static void describe_reply(const redisReply *r, char *out, size_t len)
{
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(out, len, "the error %s", r->str);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        snprintf(out, len, "the integer %lld", r->integer);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(out, len, "task %s", r->element[1]->str);
    } else if (r->type == REDIS_REPLY_ARRAY) {
        snprintf(out, len, "an array of %zu elements", r->elements);
    } else {
        snprintf(out, len, "a reply of type %d", r->type);
    }
}

/* Checks the reply of script call `call` for the n tasks at t, which one
 * call handled. Returns: 0, or -1 after printing why. */
static int check_reply(const redisReply *r, int call,
                       const struct lifecycle *t, long n, bool batched)
{
    const char *names[] = {"enqueue.lua", "dequeue.lua",
                           batched ? "done_batch.lua" : "done.lua"};
    char got[160];
    bool ok;

    if (call == CALL_ENQUEUE) {
        ok = r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    } else if (call == CALL_DEQUEUE) {
        /* The reply has four fields per task, the second being the task
         * ID. Only the IDs are checked. */
        ok = r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)(4 * n);
        for (long i = 0; ok && i < n; i++) {
            const redisReply *id = r->element[4 * i + 1];

            ok = id->type == REDIS_REPLY_STRING &&
                 strcmp(id->str, t[i].id) == 0;
        }
    } else if (batched) {
        ok = r->type == REDIS_REPLY_ARRAY && r->elements == (size_t)n;
        for (long i = 0; ok && i < n; i++) {
            ok = r->element[i]->type == REDIS_REPLY_INTEGER &&
                 r->element[i]->integer == 1;
        }
    } else {
        ok = r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0;
    }
    if (!ok) {
        describe_reply(r, got, sizeof(got));
        fprintf(stderr, "%s for task %s (one of %ld) returned %s\n",
                names[call], t->id, n, got);
    }
    return ok ? 0 : -1;
}

/* Appends the call of kind `call` for the n tasks at t. */
static int append_call(redisContext *c, const struct scripts *s,
                       const struct ceiling_args *a,
                       const struct batch_consts *k, int call,
                       struct lifecycle *t, long n)
{
    if (call == CALL_ENQUEUE) {
        return append_enqueue(c, s, k, (size_t)a->payload_size, t);
    }
    if (call == CALL_DEQUEUE) {
        return append_dequeue(c, s, k, n);
    }
    return a->per_call > 1 ? append_done_batch(c, s, k, t, n)
                           : append_done(c, s, k, t);
}

/* Appends script calls first..last (CALL_ENQUEUE, CALL_DEQUEUE,
 * CALL_DONE) for n tasks to the pipeline, sends it and checks every
 * reply. Enqueue takes one call per task, dequeue and done one call per
 * a->per_call tasks. Returns: 0, or -1 after printing why. */
static int run_calls(redisContext *c, const struct scripts *s,
                     const struct ceiling_args *a, const void *payload,
                     struct lifecycle *tasks, long n, int first, int last)
{
    struct batch_consts k = {.payload = payload};
    int appended = REDIS_OK;

    fill_consts(&k);
    for (int call = first; call <= last; call++) {
        long group = call == CALL_ENQUEUE ? 1 : a->per_call;

        for (long i = 0; i < n && appended == REDIS_OK; i += group) {
            long m = n - i < group ? n - i : group;

            appended = append_call(c, s, a, &k, call, &tasks[i], m);
        }
    }
    if (appended != REDIS_OK) {
        fprintf(stderr, "cannot build the pipeline: %s\n", c->errstr);
        return -1;
    }
    for (int call = first; call <= last; call++) {
        long group = call == CALL_ENQUEUE ? 1 : a->per_call;

        for (long i = 0; i < n; i += group) {
            long m = n - i < group ? n - i : group;
            redisReply *r = NULL;
            int rc;

            if (redisGetReply(c, (void **)&r) != REDIS_OK) {
                fprintf(stderr, "pipeline failed: %s\n", c->errstr);
                return -1;
            }
            rc = check_reply(r, call, &tasks[i], m, a->per_call > 1);
            freeReplyObject(r);
            if (rc != 0) {
                return -1;
            }
        }
    }
    return 0;
}

/* Runs calls first..last for every task, a batch per round trip. */
static int run_all(redisContext *c, const struct scripts *s,
                   const struct ceiling_args *a, const void *payload,
                   struct lifecycle *tasks, int first, int last)
{
    int rc = 0;

    for (long done = 0; rc == 0 && done < a->lifecycles;) {
        long n = a->lifecycles - done < a->batch ? a->lifecycles - done
                                                 : a->batch;

        rc = run_calls(c, s, a, payload, tasks + done, n, first, last);
        done += n;
    }
    return rc;
}

static int load_scripts(redisContext *c, const char *lua_dir,
                        struct scripts *s)
{
    if (bench_load_script(c, lua_dir, "enqueue.lua", s->enqueue) != 0 ||
        bench_load_script(c, lua_dir, "dequeue.lua", s->dequeue) != 0 ||
        bench_load_script(c, lua_dir, "done.lua", s->done) != 0 ||
        bench_load_script(c, lua_dir, "done_batch.lua", s->done_batch) !=
                0) {
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct ceiling_args a;
    struct scripts s;
    struct lifecycle *tasks = NULL;
    char payload[512];
    redisContext *c = NULL;
    int64_t start_ns = 0;
    int rc = parse_args(argc, argv, &a);

    if (rc != 0) {
        return rc > 0 ? 0 : 2;
    }
    memset(payload, 'a', sizeof(payload));
    tasks = calloc((size_t)a.lifecycles, sizeof(*tasks));
    c = bench_connect(a.host, (int)a.port);
    if (tasks == NULL || c == NULL) {
        rc = -1;
        goto out;
    }
    rc = load_scripts(c, a.lua_dir, &s);

    if (rc == 0 && a.drain) {
        /* Only the dequeues and dones are timed, as in a drain of tasks
         * loaded before the server starts. */
        rc = run_all(c, &s, &a, payload, tasks, CALL_ENQUEUE, CALL_ENQUEUE);
        start_ns = bench_mono_ns();
        if (rc == 0) {
            rc = run_all(c, &s, &a, payload, tasks, CALL_DEQUEUE, CALL_DONE);
        }
    } else if (rc == 0) {
        start_ns = bench_mono_ns();
        rc = run_all(c, &s, &a, payload, tasks, CALL_ENQUEUE, CALL_DONE);
    }
    if (rc == 0) {
        printf("{\"mode\":\"%s\",\"lifecycles\":%ld,\"seconds\":%.6f,"
               "\"batch\":%ld,\"per_call\":%ld}\n",
               a.drain ? "drain" : "lifecycle", a.lifecycles,
               (double)(bench_mono_ns() - start_ns) / 1e9, a.batch,
               a.per_call);
    }
out:
    if (c != NULL) {
        redisFree(c);
    }
    free(tasks);
    return rc == 0 ? 0 : 1;
}
