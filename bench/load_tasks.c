/* load_tasks: fills Redis with pending asynq tasks for the drain
 * benchmarks, fast, before any server starts.
 *
 * Each task is stored exactly as a client's enqueue stores it: the queue
 * name joins the set asynq:queues, and EVALSHA of runtime/lua/enqueue.lua
 * writes the task hash and pushes the ID onto the pending list. The calls
 * are pipelined in batches, so loading takes a fraction of the drain time
 * and is not part of any figure.
 *
 * Task i goes to queue i mod (number of queues). With --fail-every K,
 * every K-th task (i mod K == K - 1) is demo:fail with the payload
 * {"error":"x",...} and max retry 1, and the others are demo:noop with max
 * retry 25. Payloads are JSON objects padded to exactly --payload-size
 * bytes. Prints one JSON line: {"tasks":N,"seconds":S}. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define MAX_QUEUES        16
#define MSG_CAP           (64 * 1024)
#define NOOP_MAX_RETRY    25
#define FAIL_MAX_RETRY    1
#define NOOP_PREFIX       "{\"pad\":\""
#define FAIL_PREFIX       "{\"error\":\"x\",\"pad\":\""
#define PAYLOAD_SUFFIX    "\"}"
#define PAYLOAD_MAX_BYTES 60000

struct load_args {
    const char *host;
    long port;
    const char *lua_dir;
    long count;
    long payload_size;
    char *queues[MAX_QUEUES];
    int nqueues;
    long fail_every; /* 0: no failing tasks */
    long batch;
};

/* Arguments of one EVALSHA. hiredis copies them into its output buffer
 * when the command is appended, so one instance serves every task. */
struct task_args {
    char task_key[300];
    char pending_key[300];
    char id[BENCH_ID_LEN + 1];
    char now_ns[24];
    uint8_t msg[MSG_CAP];
    size_t msg_len;
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: load_tasks --port N --lua-dir DIR --count N [OPTION]...\n"
            "Stores N pending asynq tasks with pipelined EVALSHA of "
            "enqueue.lua.\n"
            "\n"
            "  --host HOST         redis host (default 127.0.0.1)\n"
            "  --port N            redis port\n"
            "  --lua-dir DIR       directory holding enqueue.lua "
            "(runtime/lua)\n"
            "  --count N           number of tasks\n"
            "  --payload-size N    payload bytes per task (default 100)\n"
            "  --queues A,B,...    queues, filled round robin "
            "(default: default)\n"
            "  --fail-every K      make every K-th task demo:fail with max\n"
            "                      retry 1 (default 0: none)\n"
            "  --batch N           commands per pipeline round trip "
            "(default 1000)\n");
}

static int split_queues(char *list, struct load_args *a)
{
    char *save = NULL;

    a->nqueues = 0;
    for (char *q = strtok_r(list, ",", &save); q != NULL;
         q = strtok_r(NULL, ",", &save)) {
        if (a->nqueues == MAX_QUEUES || strlen(q) > 255) {
            fprintf(stderr, "invalid --queues: pass at most %d names of at "
                            "most 255 bytes\n",
                    MAX_QUEUES);
            return -1;
        }
        a->queues[a->nqueues++] = q;
    }
    if (a->nqueues == 0) {
        fprintf(stderr, "invalid --queues: pass at least one name\n");
        return -1;
    }
    return 0;
}

/* Applies one option returned by getopt_long. Returns: 0, 1 for --help,
 * or -1 after printing why to stderr. */
static int apply_option(int opt, char *value, struct load_args *a)
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
        return bench_parse_long("--count", value, 1, 100000000, &a->count);
    case 's':
        return bench_parse_long("--payload-size", value, 0,
                                PAYLOAD_MAX_BYTES, &a->payload_size);
    case 'q':
        return split_queues(value, a);
    case 'f':
        return bench_parse_long("--fail-every", value, 0, 1000000,
                                &a->fail_every);
    case 'b':
        return bench_parse_long("--batch", value, 1, 100000, &a->batch);
    case 'h':
        usage(stdout);
        return 1;
    default:
        return -1;
    }
}

static int parse_args(int argc, char **argv, struct load_args *a)
{
    static const struct option opts[] = {
            {"host", required_argument, NULL, 'H'},
            {"port", required_argument, NULL, 'p'},
            {"lua-dir", required_argument, NULL, 'l'},
            {"count", required_argument, NULL, 'n'},
            {"payload-size", required_argument, NULL, 's'},
            {"queues", required_argument, NULL, 'q'},
            {"fail-every", required_argument, NULL, 'f'},
            {"batch", required_argument, NULL, 'b'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0},
    };
    static char default_queue[] = "default";
    int opt;
    int rc = 0;

    *a = (struct load_args){.host = "127.0.0.1", .payload_size = 100,
                            .batch = 1000};
    a->queues[0] = default_queue;
    a->nqueues = 1;
    while (rc == 0) {
        opt = getopt_long(argc, argv, "h", opts, NULL);
        if (opt == -1) {
            break;
        }
        rc = apply_option(opt, optarg, a);
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
        rc = -1;
    }
    if (rc == 0 && (a->port == 0 || a->lua_dir == NULL || a->count == 0)) {
        fprintf(stderr, "missing option: --port, --lua-dir and --count are "
                        "required\n");
        rc = -1;
    }
    if (rc == 0 && (size_t)a->payload_size < strlen(FAIL_PREFIX) +
                                                     strlen(PAYLOAD_SUFFIX)) {
        fprintf(stderr, "invalid --payload-size %ld: pass at least %zu so "
                        "the JSON payload fits\n",
                a->payload_size,
                strlen(FAIL_PREFIX) + strlen(PAYLOAD_SUFFIX));
        rc = -1;
    }
    return rc;
}

/* Returns a new JSON object of exactly size bytes that starts with
 * prefix, or NULL when out of memory. Free with free(). */
static char *make_payload(const char *prefix, size_t size)
{
    char *p = malloc(size + 1);
    size_t head = strlen(prefix);
    size_t tail = strlen(PAYLOAD_SUFFIX);

    if (p == NULL) {
        return NULL;
    }
    memcpy(p, prefix, head);
    memset(p + head, 'a', size - head - tail);
    memcpy(p + size - tail, PAYLOAD_SUFFIX, tail);
    p[size] = '\0';
    return p;
}

/* Fills call with task number i and appends its EVALSHA to the pipeline. */
static int append_task(redisContext *c, const struct load_args *a,
                       const char *sha, long i, const char *noop_payload,
                       const char *fail_payload, struct task_args *call)
{
    bool fails = a->fail_every > 0 && i % a->fail_every == a->fail_every - 1;
    const char *queue = a->queues[i % a->nqueues];
    struct bench_task_fields f = {
            .type = fails ? "demo:fail" : "demo:noop",
            .payload = fails ? fail_payload : noop_payload,
            .payload_len = (size_t)a->payload_size,
            .id = call->id,
            .queue = queue,
            .max_retry = fails ? FAIL_MAX_RETRY : NOOP_MAX_RETRY,
            .timeout_s = BENCH_DEFAULT_TIMEOUT_S,
    };
    const char *argv[8];
    size_t lens[8];

    bench_new_id(call->id);
    snprintf(call->task_key, sizeof(call->task_key), "asynq:{%s}:t:%s", queue,
             call->id);
    snprintf(call->pending_key, sizeof(call->pending_key),
             "asynq:{%s}:pending", queue);
    snprintf(call->now_ns, sizeof(call->now_ns), "%lld",
             (long long)bench_unix_ns());
    call->msg_len = bench_encode_task(&f, call->msg, sizeof(call->msg));
    if (call->msg_len == 0) {
        fprintf(stderr, "task message for %s does not fit in %d bytes\n",
                call->id, MSG_CAP);
        return -1;
    }

    /* KEYS: task hash, pending list. ARGV: message, ID, enqueue time in
     * unix ns. */
    argv[0] = "EVALSHA";
    argv[1] = sha;
    argv[2] = "2";
    argv[3] = call->task_key;
    argv[4] = call->pending_key;
    argv[5] = (const char *)call->msg;
    argv[6] = call->id;
    argv[7] = call->now_ns;
    /* The message is binary, so its length is the encoded one. */
    for (int k = 0; k < 8; k++) {
        lens[k] = k == 5 ? call->msg_len : strlen(argv[k]);
    }
    return redisAppendCommandArgv(c, 8, argv, lens) == REDIS_OK ? 0 : -1;
}

/* Reads n enqueue replies and checks that each stored its task. */
static int read_replies(redisContext *c, long n)
{
    int rc = 0;

    for (long k = 0; k < n; k++) {
        redisReply *r = NULL;

        if (redisGetReply(c, (void **)&r) != REDIS_OK) {
            fprintf(stderr, "enqueue pipeline failed: %s\n", c->errstr);
            return -1;
        }
        if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
            fprintf(stderr, "enqueue.lua did not store a task: %s\n",
                    r->type == REDIS_REPLY_ERROR ? r->str
                                                 : "unexpected reply");
            rc = -1;
        }
        freeReplyObject(r);
    }
    return rc;
}

static int register_queues(redisContext *c, const struct load_args *a)
{
    for (int q = 0; q < a->nqueues; q++) {
        redisReply *r = redisCommand(c, "SADD asynq:queues %s", a->queues[q]);

        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "SADD asynq:queues %s failed: %s\n", a->queues[q],
                    r != NULL ? r->str : c->errstr);
            freeReplyObject(r);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

static int load(redisContext *c, const struct load_args *a, const char *sha)
{
    struct task_args *call = malloc(sizeof(*call));
    char *noop = make_payload(NOOP_PREFIX, (size_t)a->payload_size);
    char *fail = make_payload(FAIL_PREFIX, (size_t)a->payload_size);
    int rc = -1;

    if (call == NULL || noop == NULL || fail == NULL) {
        fprintf(stderr, "out of memory for the task arguments\n");
        goto out;
    }
    for (long done = 0; done < a->count;) {
        long n = a->count - done < a->batch ? a->count - done : a->batch;

        for (long k = 0; k < n; k++) {
            if (append_task(c, a, sha, done + k, noop, fail, call) != 0) {
                goto out;
            }
        }
        if (read_replies(c, n) != 0) {
            goto out;
        }
        done += n;
    }
    rc = 0;
out:
    free(fail);
    free(noop);
    free(call);
    return rc;
}

int main(int argc, char **argv)
{
    struct load_args a;
    char sha[41];
    redisContext *c;
    int64_t start_ns;
    int rc;

    rc = parse_args(argc, argv, &a);
    if (rc != 0) {
        if (rc > 0) {
            return 0;
        }
        fprintf(stderr, "run load_tasks --help for the options\n");
        return 2;
    }
    c = bench_connect(a.host, (int)a.port);
    if (c == NULL) {
        return 1;
    }
    rc = bench_load_script(c, a.lua_dir, "enqueue.lua", sha);
    if (rc == 0) {
        rc = register_queues(c, &a);
    }
    start_ns = bench_mono_ns();
    if (rc == 0) {
        rc = load(c, &a, sha);
    }
    if (rc == 0) {
        printf("{\"tasks\":%ld,\"seconds\":%.6f}\n", a.count,
               (double)(bench_mono_ns() - start_ns) / 1e9);
    }
    redisFree(c);
    return rc == 0 ? 0 : 1;
}
