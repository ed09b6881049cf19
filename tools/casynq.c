/* casynq: the command-line tool for casynq's client.
 *
 * Each subcommand is one row of the command table at the bottom of this
 * file: a name, a one-line summary for `casynq --help` and the function
 * that runs it with the arguments that follow its name. A new subcommand
 * adds a function and a row. The tool uses only the public API in
 * casynq.h.
 *
 * Exit status, for every subcommand:
 *   0  success
 *   1  any other failure (cannot connect, authentication, redis error)
 *   2  invalid command line or option value; nothing was written to redis
 *   3  a unique task with the same type, payload and queue exists
 *   4  the task ID is taken by another task
 *   5  a rate limit of --limits rejected the task
 *   6  the queue's backlog is at its cap from --limits
 *   7  the payload is above the maximum from --limits */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <casynq.h>

enum exit_status {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_DUPLICATE = 3,
    EXIT_ID_CONFLICT = 4,
    EXIT_RATE_LIMITED = 5,
    EXIT_BACKLOG = 6,
    EXIT_TOO_LARGE = 7,
};

#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"
#define REDIS_URL_ENV     "CASYNQ_REDIS_URL"

/* The largest number of whole seconds that Go's time.Duration (int64
 * nanoseconds) can represent. asynq multiplies stored timeouts and retentions
 * by time.Second, so a larger value would overflow in every Go reader. */
#define MAX_DURATION_S INT64_C(9223372036)

/* 9999-12-31T23:59:59Z, the last time that RFC 3339 can write. */
#define MAX_UNIX_S INT64_C(253402300799)

#define MAX_COUNT 1000000

/* Redis rejects bulk strings above 512 MiB unless its proto-max-bulk-len
 * setting is raised. */
#define MAX_PAYLOAD_BYTES ((size_t)512 * 1024 * 1024)

/* ------------------------------------------------------------------------
 * Shared helpers
 */

/* Parses `text`, the value of option `flag`, as a whole decimal number in
 * [min, max]. Prints a message naming the flag and value on failure.
 * Returns: true when *out was set. */
static bool parse_int64(const char *cmd, const char *flag, const char *text,
                        int64_t min, int64_t max, int64_t *out)
{
    const char *digits = text[0] == '-' ? text + 1 : text;
    char *end = NULL;
    long long value;

    /* strtoll would skip leading spaces and accept a '+', so check the
     * first character here to keep the format strict. */
    if (digits[0] < '0' || digits[0] > '9') {
        fprintf(stderr,
                "casynq %s: invalid value \"%s\" for %s: expected a whole "
                "number; run 'casynq %s --help'\n",
                cmd, text, flag, cmd);
        return false;
    }
    errno = 0;
    value = strtoll(text, &end, 10);
    if (*end != '\0') {
        fprintf(stderr,
                "casynq %s: invalid value \"%s\" for %s: expected a whole "
                "number; run 'casynq %s --help'\n",
                cmd, text, flag, cmd);
        return false;
    }
    if (errno == ERANGE || value < min || value > max) {
        fprintf(stderr,
                "casynq %s: value %s for %s is out of range: use %lld to "
                "%lld; run 'casynq %s --help'\n",
                cmd, text, flag, (long long)min, (long long)max, cmd);
        return false;
    }
    *out = value;
    return true;
}

/* Writes s as a JSON string, quotes included. Non-ASCII UTF-8 is written
 * as is. */
static void print_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        default:
            if (*p < 0x20) {
                fprintf(out, "\\u%04x", (unsigned)*p);
            } else {
                fputc(*p, out);
            }
        }
    }
    fputc('"', out);
}

/* Formats unix seconds as RFC 3339 UTC into buf, or "none" for 0. */
static const char *format_unix_s(int64_t unix_s, char *buf, size_t len)
{
    time_t t = (time_t)unix_s;
    struct tm tm;

    if (unix_s == 0) {
        return "none";
    }
    if (gmtime_r(&t, &tm) == NULL ||
        strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        snprintf(buf, len, "@%lld", (long long)unix_s);
    }
    return buf;
}

/* Flushes standard output and reports a write failure such as a full
 * disk. Returns: status unchanged, or EXIT_ERROR when writing failed. */
static int finish_output(const char *cmd, int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "casynq %s: cannot write to standard output: %s\n", cmd,
                strerror(errno));
        return status == EXIT_OK ? EXIT_ERROR : status;
    }
    return status;
}

/* ------------------------------------------------------------------------
 * casynq enqueue
 */

enum payload_source {
    PAYLOAD_EMPTY,
    PAYLOAD_NONE,
    PAYLOAD_STRING,
    PAYLOAD_FILE,
    PAYLOAD_HEX,
};

/* Long-only options get values above the char range. */
enum enqueue_flag {
    FLAG_REDIS = 256,
    FLAG_TYPE,
    FLAG_PAYLOAD,
    FLAG_PAYLOAD_FILE,
    FLAG_PAYLOAD_HEX,
    FLAG_NO_PAYLOAD,
    FLAG_HEADER,
    FLAG_QUEUE,
    FLAG_MAX_RETRY,
    FLAG_TIMEOUT,
    FLAG_DEADLINE,
    FLAG_PROCESS_AT,
    FLAG_PROCESS_IN,
    FLAG_UNIQUE,
    FLAG_TASK_ID,
    FLAG_RETENTION,
    FLAG_GROUP,
    FLAG_COUNT,
    FLAG_JSON,
    FLAG_RATE_KEY,
    FLAG_LIMITS,
    FLAG_LIMITER,
};

static const struct option enqueue_options[] = {
        {"redis", required_argument, NULL, FLAG_REDIS},
        {"type", required_argument, NULL, FLAG_TYPE},
        {"payload", required_argument, NULL, FLAG_PAYLOAD},
        {"payload-file", required_argument, NULL, FLAG_PAYLOAD_FILE},
        {"payload-hex", required_argument, NULL, FLAG_PAYLOAD_HEX},
        {"no-payload", no_argument, NULL, FLAG_NO_PAYLOAD},
        {"header", required_argument, NULL, FLAG_HEADER},
        {"queue", required_argument, NULL, FLAG_QUEUE},
        {"max-retry", required_argument, NULL, FLAG_MAX_RETRY},
        {"timeout", required_argument, NULL, FLAG_TIMEOUT},
        {"deadline", required_argument, NULL, FLAG_DEADLINE},
        {"process-at", required_argument, NULL, FLAG_PROCESS_AT},
        {"process-in", required_argument, NULL, FLAG_PROCESS_IN},
        {"unique", required_argument, NULL, FLAG_UNIQUE},
        {"task-id", required_argument, NULL, FLAG_TASK_ID},
        {"retention", required_argument, NULL, FLAG_RETENTION},
        {"group", required_argument, NULL, FLAG_GROUP},
        {"count", required_argument, NULL, FLAG_COUNT},
        {"json", no_argument, NULL, FLAG_JSON},
        {"rate-key", required_argument, NULL, FLAG_RATE_KEY},
        {"limits", required_argument, NULL, FLAG_LIMITS},
        {"limiter", required_argument, NULL, FLAG_LIMITER},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
};

static void enqueue_usage(FILE *out)
{
    fputs("Usage: casynq enqueue --type TYPE [OPTION]...\n"
          "\n"
          "Enqueues a task the way asynq v0.26.0's Client.Enqueue does, so\n"
          "that asynq servers, the asynq CLI and the Inspector see it.\n"
          "\n"
          "Connection:\n"
          "  --redis URL              redis server to write to, as\n"
          "                           redis://[[USER]:PASSWORD@]"
          "HOST[:PORT][/DB]\n"
          "                           or unix://[[USER]:PASSWORD@]"
          "/PATH[?db=DB]\n"
          "                           (default: $" REDIS_URL_ENV ", else\n"
          "                           " DEFAULT_REDIS_URL ")\n"
          "\n",
          out);
    fputs("Task:\n"
          "  --type TYPE              task type name (required)\n"
          "  --payload STRING         payload: the bytes of STRING\n"
          "  --payload-file FILE      payload: the contents of FILE, or\n"
          "                           standard input when FILE is -\n"
          "  --payload-hex HEX        payload: hex digits, two per byte\n"
          "  --no-payload             no payload at all (Go's nil payload);\n"
          "                           it gives another --unique key than an\n"
          "                           empty payload\n"
          "                           (default without a payload option: an\n"
          "                           empty payload of 0 bytes)\n"
          "  --header KEY=VALUE       task header, UTF-8; repeat for more\n"
          "                           (default: none)\n"
          "\n",
          out);
    fputs("Enqueue options:\n"
          "  --queue NAME             queue name (default: default)\n"
          "  --max-retry N            retries after the first attempt\n"
          "                           (default: 25)\n"
          "  --timeout SECONDS        time allowed for each attempt, 0 for\n"
          "                           none (default: 1800 when --deadline is\n"
          "                           not given, else none)\n"
          "  --deadline UNIX_SECONDS  time by which the task must finish, in\n"
          "                           unix seconds, 0 for none\n"
          "                           (default: none)\n"
          "  --process-at UNIX_SECONDS\n"
          "                           time at which the task becomes ready,\n"
          "                           in unix seconds; a future time\n"
          "                           schedules it (default: now)\n"
          "  --process-in SECONDS     delay until the task becomes ready\n"
          "                           (default: 0)\n",
          out);
    fputs("  --unique TTL_SECONDS     reject another task with the same\n"
          "                           type, payload and queue for\n"
          "                           TTL_SECONDS, at least 1\n"
          "                           (default: not unique)\n"
          "  --task-id ID             task ID (default: a new random UUID for\n"
          "                           each task)\n"
          "  --retention SECONDS      time to keep the task as completed\n"
          "                           after it succeeds (default: 0)\n"
          "  --group NAME             group for aggregation (default: none)\n"
          "\n",
          out);
    fputs("Admission control:\n"
          "  --limits FILE            check the task against the rate "
          "limits,\n"
          "                           backlog caps and payload limit in "
          "the\n"
          "                           JSON file FILE before enqueueing "
          "(default:\n"
          "                           no checks); see \"Rate limits and\n"
          "                           admission control\" in README.md\n"
          "  --rate-key KEY           caller key (user, tenant, API key or\n"
          "                           address) that per-key rate limits "
          "count\n"
          "                           against (default: none, so per-key "
          "limits\n"
          "                           do not apply)\n"
          "  --limiter BACKEND        where the budgets of --limits live: "
          "redis\n"
          "                           (shared by every process using the\n"
          "                           redis of --redis) or memory (this "
          "process\n"
          "                           only, useful with --count) "
          "(default:\n"
          "                           redis)\n"
          "\n",
          out);
    fputs("Output:\n"
          "  --count N                enqueue N copies, each with its own\n"
          "                           ID, 1 to 1000000; stops at the first\n"
          "                           failure (default: 1)\n"
          "  --json                   print one JSON object per task instead\n"
          "                           of one line of text\n"
          "  -h, --help               print this help and exit\n"
          "\n"
          "Exit status: 0 enqueued, 1 other failure (connection,\n"
          "authentication, redis), 2 invalid command line or option value,\n"
          "3 a unique task with the same type, payload and queue exists,\n"
          "4 the task ID is taken, 5 a rate limit rejected the task (the\n"
          "message gives retry_after_ms), 6 the queue's backlog is at its\n"
          "cap, 7 the payload is above the maximum.\n",
          out);
}

/* Everything `casynq enqueue` takes from its command line. Strings are
 * borrowed from argv. */
struct enqueue_args {
    const char *redis_url;
    const char *redis_url_origin;
    const char *type;
    enum payload_source payload_source;
    const char *payload_flag;
    const char *payload_value;
    const char **headers;
    size_t header_count;
    int64_t count;
    bool json;
    const char *limits_path;
    const char *limiter_flag; /* the value of --limiter, or NULL */
    enum casynq_limiter_backend limiter_backend;
    const char *task_id;
    const char *process_flag;
};

/* Stores one of the mutually exclusive payload options. */
static bool set_payload_source(struct enqueue_args *args,
                               enum payload_source source, const char *flag,
                               const char *value)
{
    if (args->payload_flag != NULL) {
        fprintf(stderr,
                "casynq enqueue: %s and %s both set the payload: give only "
                "one payload option; run 'casynq enqueue --help'\n",
                args->payload_flag, flag);
        return false;
    }
    args->payload_source = source;
    args->payload_flag = flag;
    args->payload_value = value;
    return true;
}

/* Stores --process-at or --process-in, which exclude each other. */
static bool set_process_flag(struct enqueue_args *args, const char *flag)
{
    if (args->process_flag != NULL && strcmp(args->process_flag, flag) != 0) {
        fprintf(stderr,
                "casynq enqueue: %s and %s both set the process time: give "
                "only one; run 'casynq enqueue --help'\n",
                args->process_flag, flag);
        return false;
    }
    args->process_flag = flag;
    return true;
}

/* Parses a numeric option into the enqueue options.
 * Returns: true on success, false after printing a usage message. */
static bool parse_number_flag(int flag, const char *value,
                              struct casynq_enqueue_options *opts)
{
    int64_t n = 0;

    switch (flag) {
    case FLAG_MAX_RETRY:
        if (!parse_int64("enqueue", "--max-retry", value, 0, INT_MAX, &n)) {
            return false;
        }
        casynq_enqueue_options_set_max_retry(opts, (int)n);
        return true;
    case FLAG_TIMEOUT:
        if (!parse_int64("enqueue", "--timeout", value, 0, MAX_DURATION_S,
                         &n)) {
            return false;
        }
        casynq_enqueue_options_set_timeout_s(opts, n);
        return true;
    case FLAG_DEADLINE:
        if (!parse_int64("enqueue", "--deadline", value, 0, MAX_UNIX_S, &n)) {
            return false;
        }
        casynq_enqueue_options_set_deadline_unix_s(opts, n);
        return true;
    case FLAG_PROCESS_AT:
        if (!parse_int64("enqueue", "--process-at", value, 0, MAX_UNIX_S, &n)) {
            return false;
        }
        casynq_enqueue_options_set_process_at_unix_s(opts, n);
        return true;
    case FLAG_PROCESS_IN:
        if (!parse_int64("enqueue", "--process-in", value, 0, MAX_DURATION_S,
                         &n)) {
            return false;
        }
        casynq_enqueue_options_set_process_in_s(opts, n);
        return true;
    case FLAG_UNIQUE:
        if (!parse_int64("enqueue", "--unique", value, 1, MAX_DURATION_S, &n)) {
            return false;
        }
        casynq_enqueue_options_set_unique_ttl_s(opts, n);
        return true;
    case FLAG_RETENTION:
        if (!parse_int64("enqueue", "--retention", value, 0, MAX_DURATION_S,
                         &n)) {
            return false;
        }
        casynq_enqueue_options_set_retention_s(opts, n);
        return true;
    default:
        return false;
    }
}

/* Parses the value of --limiter. */
static bool parse_limiter(struct enqueue_args *args, const char *value)
{
    if (strcmp(value, "redis") == 0) {
        args->limiter_backend = CASYNQ_LIMITER_REDIS;
    } else if (strcmp(value, "memory") == 0) {
        args->limiter_backend = CASYNQ_LIMITER_MEMORY;
    } else {
        fprintf(stderr,
                "casynq enqueue: invalid value \"%s\" for --limiter: use "
                "redis or memory; run 'casynq enqueue --help'\n",
                value);
        return false;
    }
    args->limiter_flag = value;
    return true;
}

/* Handles one option returned by getopt_long.
 * Returns: true to go on, false after printing a usage message. */
static bool parse_enqueue_flag(int flag, const char *value,
                               struct enqueue_args *args,
                               struct casynq_enqueue_options *opts)
{
    int64_t n = 0;

    switch (flag) {
    case FLAG_REDIS:
        args->redis_url = value;
        args->redis_url_origin = "--redis";
        return true;
    case FLAG_TYPE:
        args->type = value;
        return true;
    case FLAG_PAYLOAD:
        return set_payload_source(args, PAYLOAD_STRING, "--payload", value);
    case FLAG_PAYLOAD_FILE:
        return set_payload_source(args, PAYLOAD_FILE, "--payload-file", value);
    case FLAG_PAYLOAD_HEX:
        return set_payload_source(args, PAYLOAD_HEX, "--payload-hex", value);
    case FLAG_NO_PAYLOAD:
        return set_payload_source(args, PAYLOAD_NONE, "--no-payload", NULL);
    case FLAG_HEADER:
        args->headers[args->header_count++] = value;
        return true;
    case FLAG_QUEUE:
        casynq_enqueue_options_set_queue(opts, value);
        return true;
    case FLAG_TASK_ID:
        casynq_enqueue_options_set_task_id(opts, value);
        args->task_id = value;
        return true;
    case FLAG_GROUP:
        casynq_enqueue_options_set_group(opts, value);
        return true;
    case FLAG_COUNT:
        if (!parse_int64("enqueue", "--count", value, 1, MAX_COUNT, &n)) {
            return false;
        }
        args->count = n;
        return true;
    case FLAG_JSON:
        args->json = true;
        return true;
    case FLAG_RATE_KEY:
        casynq_enqueue_options_set_rate_key(opts, value);
        return true;
    case FLAG_LIMITS:
        args->limits_path = value;
        return true;
    case FLAG_LIMITER:
        return parse_limiter(args, value);
    case FLAG_PROCESS_AT:
        return set_process_flag(args, "--process-at") &&
               parse_number_flag(flag, value, opts);
    case FLAG_PROCESS_IN:
        return set_process_flag(args, "--process-in") &&
               parse_number_flag(flag, value, opts);
    default:
        return parse_number_flag(flag, value, opts);
    }
}

/* Prints the message for an option getopt_long rejected. */
static void report_bad_option(int ch, char **argv)
{
    const char *arg = argv[optind - 1];

    if (ch == ':') {
        fprintf(stderr,
                "casynq enqueue: option %s needs a value; run 'casynq "
                "enqueue --help'\n",
                arg);
    } else if (optopt != 0) {
        fprintf(stderr,
                "casynq enqueue: unknown option -%c; run 'casynq enqueue "
                "--help'\n",
                optopt);
    } else {
        fprintf(stderr,
                "casynq enqueue: unknown option %s; run 'casynq enqueue "
                "--help'\n",
                arg);
    }
}

/* Checks what getopt_long cannot: required and conflicting options. */
static bool check_enqueue_args(const struct enqueue_args *args)
{
    if (args->type == NULL) {
        fputs("casynq enqueue: missing --type: every task needs a type "
              "name; run 'casynq enqueue --help'\n",
              stderr);
        return false;
    }
    if (args->limiter_flag != NULL && args->limits_path == NULL) {
        fputs("casynq enqueue: --limiter needs --limits: give the file of "
              "limits to check; run 'casynq enqueue --help'\n",
              stderr);
        return false;
    }
    if (args->task_id != NULL && args->count > 1) {
        fprintf(stderr,
                "casynq enqueue: --task-id cannot be combined with --count "
                "%lld, because every task needs its own ID; drop one of "
                "them\n",
                (long long)args->count);
        return false;
    }
    return true;
}

/* Parses the command line of `casynq enqueue` into args and opts.
 * Returns: -1 to go on, or the exit status to end with. */
static int parse_enqueue_args(int argc, char **argv, struct enqueue_args *args,
                              struct casynq_enqueue_options *opts)
{
    int ch;

    opterr = 0;
    optind = 1;
    for (;;) {
        ch = getopt_long(argc, argv, ":h", enqueue_options, NULL);
        if (ch == -1) {
            break;
        }
        if (ch == 'h') {
            enqueue_usage(stdout);
            return finish_output("enqueue", EXIT_OK);
        }
        if (ch == '?' || ch == ':') {
            report_bad_option(ch, argv);
            return EXIT_USAGE;
        }
        if (!parse_enqueue_flag(ch, optarg, args, opts)) {
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr,
                "casynq enqueue: unexpected argument \"%s\": every value "
                "belongs to an option; run 'casynq enqueue --help'\n",
                argv[optind]);
        return EXIT_USAGE;
    }
    return check_enqueue_args(args) ? -1 : EXIT_USAGE;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes --payload-hex into a new buffer in *out.
 * Returns: EXIT_OK, EXIT_USAGE or EXIT_ERROR (out of memory). */
static int decode_hex(const char *hex, unsigned char **out, size_t *len)
{
    size_t digits = strlen(hex);
    unsigned char *buf;

    if (digits % 2 != 0) {
        fprintf(stderr,
                "casynq enqueue: --payload-hex has an odd number of hex "
                "digits (%zu): give two digits per byte\n",
                digits);
        return EXIT_USAGE;
    }
    buf = malloc(digits / 2 + 1);
    if (buf == NULL) {
        fputs("casynq enqueue: out of memory for the payload\n", stderr);
        return EXIT_ERROR;
    }
    for (size_t i = 0; i < digits; i += 2) {
        int hi = hex_digit(hex[i]);
        int lo = hex_digit(hex[i + 1]);

        if (hi < 0 || lo < 0) {
            fprintf(stderr,
                    "casynq enqueue: --payload-hex has \"%c%c\" at offset "
                    "%zu, which is not a hex byte; use the digits 0-9 and "
                    "a-f\n",
                    hex[i], hex[i + 1], i);
            free(buf);
            return EXIT_USAGE;
        }
        buf[i / 2] = (unsigned char)(hi * 16 + lo);
    }
    *out = buf;
    *len = digits / 2;
    return EXIT_OK;
}

/* Reads all of stream into a new buffer in *out.
 * Returns: 0, or an errno value (EFBIG above MAX_PAYLOAD_BYTES). */
static int read_stream(FILE *stream, unsigned char **out, size_t *len)
{
    unsigned char *buf = NULL;
    size_t cap = 0;
    size_t used = 0;

    for (;;) {
        size_t got;

        if (used == cap) {
            size_t new_cap = cap == 0 ? 65536 : cap * 2;
            unsigned char *grown;

            /* One byte past the limit is enough to tell a file of exactly
             * MAX_PAYLOAD_BYTES from a larger one. */
            if (cap > MAX_PAYLOAD_BYTES) {
                free(buf);
                return EFBIG;
            }
            if (new_cap > MAX_PAYLOAD_BYTES + 1) {
                new_cap = MAX_PAYLOAD_BYTES + 1;
            }
            grown = realloc(buf, new_cap);
            if (grown == NULL) {
                free(buf);
                return ENOMEM;
            }
            buf = grown;
            cap = new_cap;
        }
        got = fread(buf + used, 1, cap - used, stream);
        used += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(stream)) {
        int err = errno != 0 ? errno : EIO;

        free(buf);
        return err;
    }
    if (used > MAX_PAYLOAD_BYTES) {
        free(buf);
        return EFBIG;
    }
    *out = buf;
    *len = used;
    return 0;
}

/* Reads --payload-file into a new buffer in *out.
 * Returns: EXIT_OK or EXIT_ERROR. */
static int read_payload_file(const char *path, unsigned char **out, size_t *len)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *stream = is_stdin ? stdin : fopen(path, "rb");
    int err;

    if (stream == NULL) {
        fprintf(stderr,
                "casynq enqueue: cannot open payload file %s: %s; check "
                "the path given to --payload-file\n",
                path, strerror(errno));
        return EXIT_ERROR;
    }
    errno = 0;
    err = read_stream(stream, out, len);
    if (!is_stdin) {
        fclose(stream);
    }
    if (err == EFBIG) {
        fprintf(stderr,
                "casynq enqueue: payload file %s is larger than %zu bytes, "
                "the most that redis stores in one value\n",
                is_stdin ? "(standard input)" : path, MAX_PAYLOAD_BYTES);
        return EXIT_ERROR;
    }
    if (err != 0) {
        fprintf(stderr, "casynq enqueue: cannot read payload file %s: %s\n",
                is_stdin ? "(standard input)" : path, strerror(err));
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

/* Builds the task from type, payload options and headers.
 * Returns: EXIT_OK with *out set, or the exit status to end with. */
static int build_task(const struct enqueue_args *args, struct casynq_task **out)
{
    static const unsigned char empty[1] = {0};
    unsigned char *data = NULL;
    const void *payload = empty;
    size_t len = 0;
    int status = EXIT_OK;
    int rc;

    switch (args->payload_source) {
    case PAYLOAD_EMPTY:
        break;
    case PAYLOAD_NONE:
        payload = NULL;
        break;
    case PAYLOAD_STRING:
        payload = args->payload_value;
        len = strlen(args->payload_value);
        break;
    case PAYLOAD_FILE:
        status = read_payload_file(args->payload_value, &data, &len);
        payload = data;
        break;
    case PAYLOAD_HEX:
        status = decode_hex(args->payload_value, &data, &len);
        payload = data;
        break;
    }
    if (status != EXIT_OK) {
        return status;
    }
    /* An empty file or hex string still means "empty payload", not "no
     * payload", so never pass NULL for those. */
    if (payload == NULL && args->payload_source != PAYLOAD_NONE) {
        payload = empty;
    }
    rc = casynq_task_create(args->type, payload, len, out);
    free(data);
    if (rc == CASYNQ_EINVAL) {
        fprintf(stderr,
                "casynq enqueue: invalid value \"%s\" for --type: a type "
                "name needs a character that is not a space and must be "
                "valid UTF-8, which asynq's decoder requires\n",
                args->type);
        return EXIT_USAGE;
    }
    if (rc != 0) {
        fprintf(stderr, "casynq enqueue: cannot create the task: %s\n",
                casynq_strerror(rc));
        return EXIT_ERROR;
    }
    return EXIT_OK;
}

/* Adds every --header KEY=VALUE to task.
 * Returns: EXIT_OK or the exit status to end with. */
static int add_headers(const struct enqueue_args *args,
                       struct casynq_task *task)
{
    for (size_t i = 0; i < args->header_count; i++) {
        const char *arg = args->headers[i];
        const char *eq = strchr(arg, '=');
        char *key;
        int rc;

        if (eq == NULL || eq == arg) {
            fprintf(stderr,
                    "casynq enqueue: invalid value \"%s\" for --header: "
                    "expected KEY=VALUE with a non-empty KEY; run 'casynq "
                    "enqueue --help'\n",
                    arg);
            return EXIT_USAGE;
        }
        key = strndup(arg, (size_t)(eq - arg));
        if (key == NULL) {
            fputs("casynq enqueue: out of memory for a header\n", stderr);
            return EXIT_ERROR;
        }
        rc = casynq_task_set_header(task, key, eq + 1);
        free(key);
        if (rc == CASYNQ_EINVAL) {
            fprintf(stderr,
                    "casynq enqueue: invalid value for --header %s: keys "
                    "and values must be valid UTF-8, which asynq's decoder "
                    "requires\n",
                    arg);
            return EXIT_USAGE;
        }
        if (rc != 0) {
            fprintf(stderr, "casynq enqueue: cannot add header %s: %s\n", arg,
                    casynq_strerror(rc));
            return EXIT_ERROR;
        }
    }
    return EXIT_OK;
}

/* Creates the limiter of --limits, keeping its budgets in the redis of
 * ro or in memory. Returns: EXIT_OK with *out set (NULL without
 * --limits), or the exit status. */
static int open_limiter(const struct enqueue_args *args,
                        const struct casynq_redis_options *ro,
                        struct casynq_limiter **out)
{
    const char *path = args->limits_path;
    unsigned char *json = NULL;
    size_t len = 0;
    FILE *stream;
    int err;
    int rc;

    *out = NULL;
    if (path == NULL) {
        return EXIT_OK;
    }
    stream = fopen(path, "rb");
    if (stream == NULL) {
        fprintf(stderr,
                "casynq enqueue: cannot open limits file %s: %s; check the "
                "path given to --limits\n",
                path, strerror(errno));
        return EXIT_ERROR;
    }
    errno = 0;
    err = read_stream(stream, &json, &len);
    fclose(stream);
    if (err != 0) {
        fprintf(stderr, "casynq enqueue: cannot read limits file %s: %s\n",
                path, strerror(err));
        return EXIT_ERROR;
    }
    rc = casynq_limiter_create(args->limiter_backend, ro, out);
    if (rc != 0) {
        free(json);
        fprintf(stderr, "casynq enqueue: cannot create the limiter: %s\n",
                casynq_strerror(rc));
        return EXIT_ERROR;
    }
    rc = casynq_limiter_load_json(*out, (const char *)json, len);
    free(json);
    if (rc != 0) {
        fprintf(stderr, "casynq enqueue: limits file %s: %s\n", path,
                casynq_limiter_last_error(*out));
        casynq_limiter_destroy(*out);
        *out = NULL;
        return rc == CASYNQ_EINVAL ? EXIT_USAGE : EXIT_ERROR;
    }
    return EXIT_OK;
}

/* Creates a client for the URL from --redis, the environment or the
 * default, with the limiter of --limits when given.
 * Returns: EXIT_OK with *out and *limiter set, or the exit status.
 * Ownership: destroy the client before the limiter. */
static int open_client(const struct enqueue_args *args,
                       struct casynq_client **out,
                       struct casynq_limiter **limiter)
{
    struct casynq_redis_options *ro = NULL;
    int status = EXIT_OK;
    int rc;

    rc = casynq_redis_options_create(&ro);
    if (rc != 0) {
        fprintf(stderr, "casynq enqueue: %s\n", casynq_strerror(rc));
        return EXIT_ERROR;
    }
    rc = casynq_redis_options_set_url(ro, args->redis_url);
    if (rc != 0) {
        /* The library's message names the bad part of the URL without
         * repeating it, so a password in it is not printed. */
        fprintf(stderr, "casynq enqueue: %s (the URL comes from %s)\n",
                casynq_redis_options_last_error(ro), args->redis_url_origin);
        status = rc == CASYNQ_EINVAL ? EXIT_USAGE : EXIT_ERROR;
        goto out;
    }
    rc = casynq_client_create(ro, out);
    if (rc != 0) {
        fprintf(stderr, "casynq enqueue: cannot create the client: %s\n",
                casynq_strerror(rc));
        status = EXIT_ERROR;
        goto out;
    }
    status = open_limiter(args, ro, limiter);
    if (status == EXIT_OK) {
        casynq_client_set_limiter(*out, *limiter);
    }

out:
    casynq_redis_options_destroy(ro);
    return status;
}

static void print_info_json(const struct casynq_task_info *info)
{
    const char *group = casynq_task_info_group(info);

    fputs("{\"id\":", stdout);
    print_json_string(stdout, casynq_task_info_id(info));
    fputs(",\"queue\":", stdout);
    print_json_string(stdout, casynq_task_info_queue(info));
    fputs(",\"type\":", stdout);
    print_json_string(stdout, casynq_task_info_type(info));
    printf(",\"state\":\"%s\"",
           casynq_task_state_name(casynq_task_info_state(info)));
    printf(",\"max_retry\":%d", casynq_task_info_max_retry(info));
    printf(",\"timeout_s\":%lld", (long long)casynq_task_info_timeout_s(info));
    printf(",\"deadline_unix_s\":%lld",
           (long long)casynq_task_info_deadline_unix_s(info));
    printf(",\"next_process_at_unix_s\":%lld",
           (long long)casynq_task_info_next_process_at_unix_s(info));
    printf(",\"retention_s\":%lld",
           (long long)casynq_task_info_retention_s(info));
    fputs(",\"group\":", stdout);
    if (group != NULL) {
        print_json_string(stdout, group);
    } else {
        fputs("null", stdout);
    }
    fputs("}\n", stdout);
}

static void print_info_text(const struct casynq_task_info *info)
{
    const char *group = casynq_task_info_group(info);
    char deadline[64];
    char next[64];

    printf("enqueued task %s type=%s queue=%s state=%s max_retry=%d "
           "timeout=%llds deadline=%s next_process_at=%s retention=%llds "
           "group=%s\n",
           casynq_task_info_id(info), casynq_task_info_type(info),
           casynq_task_info_queue(info),
           casynq_task_state_name(casynq_task_info_state(info)),
           casynq_task_info_max_retry(info),
           (long long)casynq_task_info_timeout_s(info),
           format_unix_s(casynq_task_info_deadline_unix_s(info), deadline,
                         sizeof(deadline)),
           format_unix_s(casynq_task_info_next_process_at_unix_s(info), next,
                         sizeof(next)),
           (long long)casynq_task_info_retention_s(info),
           group != NULL ? group : "none");
}

/* Maps a failed casynq_client_enqueue to a message and an exit status. */
static int report_enqueue_error(const struct enqueue_args *args,
                                struct casynq_client *client, int rc,
                                int64_t index)
{
    char where[64] = "";

    /* Tasks already reported on a buffered stdout come first, so the
     * error stays the last line when both streams go to one pipe. */
    fflush(stdout);

    if (args->count > 1) {
        snprintf(where, sizeof(where),
                 "task %lld of %lld: ", (long long)index + 1,
                 (long long)args->count);
    }
    switch (rc) {
    case CASYNQ_EDUPLICATE:
        fprintf(stderr,
                "casynq enqueue: %s%s; the lock lasts until the --unique "
                "TTL ends or the task succeeds\n",
                where, casynq_client_last_error(client));
        return EXIT_DUPLICATE;
    case CASYNQ_ETASKID_CONFLICT:
        fprintf(stderr,
                "casynq enqueue: %s%s (task ID \"%s\"); choose another "
                "--task-id\n",
                where, casynq_client_last_error(client), args->task_id);
        return EXIT_ID_CONFLICT;
    case CASYNQ_EINVAL:
        fprintf(stderr, "casynq enqueue: %s%s; run 'casynq enqueue --help'\n",
                where, casynq_client_last_error(client));
        return EXIT_USAGE;
    case CASYNQ_ERATELIMITED:
        fprintf(stderr, "casynq enqueue: %s%s (retry_after_ms=%lld)\n", where,
                casynq_client_last_error(client),
                (long long)casynq_client_retry_after_ms(client));
        return EXIT_RATE_LIMITED;
    case CASYNQ_EBACKLOG:
        fprintf(stderr, "casynq enqueue: %s%s\n", where,
                casynq_client_last_error(client));
        return EXIT_BACKLOG;
    case CASYNQ_ETOOLARGE:
        fprintf(stderr, "casynq enqueue: %s%s\n", where,
                casynq_client_last_error(client));
        return EXIT_TOO_LARGE;
    default:
        fprintf(stderr, "casynq enqueue: %s%s (%s)\n", where,
                casynq_client_last_error(client), casynq_err_name(rc));
        return EXIT_ERROR;
    }
}

/* Enqueues args->count copies of task and prints each. */
static int enqueue_all(const struct enqueue_args *args,
                       struct casynq_client *client,
                       const struct casynq_task *task,
                       const struct casynq_enqueue_options *opts)
{
    for (int64_t i = 0; i < args->count; i++) {
        struct casynq_task_info *info = NULL;
        int rc = casynq_client_enqueue(client, task, opts, &info);

        if (rc != 0) {
            return report_enqueue_error(args, client, rc, i);
        }
        if (args->json) {
            print_info_json(info);
        } else {
            print_info_text(info);
        }
        casynq_task_info_destroy(info);
    }
    return EXIT_OK;
}

static int cmd_enqueue(int argc, char **argv)
{
    struct enqueue_args args = {0};
    struct casynq_enqueue_options *opts = NULL;
    struct casynq_client *client = NULL;
    struct casynq_limiter *limiter = NULL;
    struct casynq_task *task = NULL;
    int status;

    args.redis_url = DEFAULT_REDIS_URL;
    args.limiter_backend = CASYNQ_LIMITER_REDIS;
    args.redis_url_origin = "the default URL";
    /* An empty CASYNQ_REDIS_URL counts as unset. */
    if (getenv(REDIS_URL_ENV) != NULL && getenv(REDIS_URL_ENV)[0] != '\0') {
        args.redis_url = getenv(REDIS_URL_ENV);
        args.redis_url_origin = "$" REDIS_URL_ENV;
    }
    args.count = 1;
    /* Every argument could be a --header, so argc slots always suffice. */
    args.headers = calloc((size_t)argc, sizeof(*args.headers));
    if (args.headers == NULL || casynq_enqueue_options_create(&opts) != 0) {
        fputs("casynq enqueue: out of memory\n", stderr);
        status = EXIT_ERROR;
        goto out;
    }

    status = parse_enqueue_args(argc, argv, &args, opts);
    if (status != -1) {
        goto out;
    }
    status = build_task(&args, &task);
    if (status != EXIT_OK) {
        goto out;
    }
    status = add_headers(&args, task);
    if (status != EXIT_OK) {
        goto out;
    }
    status = open_client(&args, &client, &limiter);
    if (status != EXIT_OK) {
        goto out;
    }
    status = finish_output("enqueue", enqueue_all(&args, client, task, opts));

out:
    casynq_client_destroy(client);
    casynq_limiter_destroy(limiter);
    casynq_task_destroy(task);
    casynq_enqueue_options_destroy(opts);
    free(args.headers);
    return status;
}

/* ------------------------------------------------------------------------
 * casynq version
 */

static int cmd_version(int argc, char **argv)
{
    if (argc > 1) {
        fprintf(stderr,
                "casynq version: unexpected argument \"%s\": the command "
                "takes none\n",
                argv[1]);
        return EXIT_USAGE;
    }
    printf("casynq %s (asynq v0.26.0 protocol)\n", casynq_version());
    return finish_output("version", EXIT_OK);
}

/* ------------------------------------------------------------------------
 * Command table and main
 */

static int cmd_help(int argc, char **argv);

struct command {
    /* Name typed after "casynq". */
    const char *name;
    /* One line for the command list in `casynq --help`. */
    const char *summary;
    /* Runs the command; argv[0] is the command name. Returns the exit
     * status. */
    int (*run)(int argc, char **argv);
};

static const struct command commands[] = {
        {"enqueue", "enqueue tasks into an asynq queue", cmd_enqueue},
        {"version", "print the version of casynq", cmd_version},
        {"help", "print help for casynq or for one command", cmd_help},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static void main_usage(FILE *out)
{
    fputs("Usage: casynq COMMAND [OPTION]...\n"
          "\n"
          "A command-line tool for casynq, a C client and worker runtime\n"
          "for the Go task queue asynq (v0.26.0).\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    }
    fputs("\n"
          "Options:\n"
          "  -h, --help     print this help and exit\n"
          "  --version      print the version and exit\n"
          "\n"
          "Run 'casynq COMMAND --help' for the options of one command.\n",
          out);
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static int unknown_command(const char *name)
{
    fprintf(stderr,
            "casynq: unknown command \"%s\"; run 'casynq --help' for the "
            "list of commands\n",
            name);
    return EXIT_USAGE;
}

/* `casynq help [COMMAND]`: prints the tool's help, or runs COMMAND with
 * --help. */
static int cmd_help(int argc, char **argv)
{
    static char help_flag[] = "--help";
    char *sub_argv[] = {NULL, help_flag, NULL};
    const struct command *cmd;

    if (argc < 2) {
        main_usage(stdout);
        return finish_output("help", EXIT_OK);
    }
    if (argc > 2) {
        fprintf(stderr,
                "casynq help: unexpected argument \"%s\": give at most one "
                "command name\n",
                argv[2]);
        return EXIT_USAGE;
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        return unknown_command(argv[1]);
    }
    if (cmd->run == cmd_help || cmd->run == cmd_version) {
        printf("Usage: casynq %s\n  %s\n", cmd->name, cmd->summary);
        return finish_output("help", EXIT_OK);
    }
    sub_argv[0] = argv[1];
    return cmd->run(2, sub_argv);
}

int main(int argc, char **argv)
{
    const struct command *cmd;

    if (argc < 2) {
        main_usage(stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        main_usage(stdout);
        return finish_output("help", EXIT_OK);
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        return cmd_version(1, argv + 1);
    }
    if (argv[1][0] == '-') {
        fprintf(stderr,
                "casynq: unknown option %s; give a command first, and run "
                "'casynq --help' for the list\n",
                argv[1]);
        return EXIT_USAGE;
    }
    cmd = find_command(argv[1]);
    if (cmd == NULL) {
        return unknown_command(argv[1]);
    }
    return cmd->run(argc - 1, argv + 1);
}
