/* casynq-worker: runs a casynq server that processes asynq tasks from
 * Redis with the bundled demo handlers.
 *
 * Settings come from three layers, each overriding the one before: the
 * JSON file named by --config, the CASYNQ_REDIS_URL environment variable
 * (the Redis address only), and the flags. All flags are parsed before the
 * file is read, so a flag wins whatever its position on the command line.
 *
 * Exit status: 0 after a clean shutdown (SIGTERM or SIGINT), 1 when the
 * server cannot be created or started, 2 for invalid flags, an invalid
 * config file or a worker with no handlers. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <casynq.h>

#include "worker_config.h"

#define PROG                   "casynq-worker"
#define EXIT_USAGE             2
#define DEFAULT_REDIS_URL      "redis://127.0.0.1:6379/0"
#define REDIS_URL_ENV          "CASYNQ_REDIS_URL"
/* The asynq release whose Redis protocol this build speaks. */
#define ASYNQ_PROTOCOL_VERSION "v0.26.0"

struct worker_args {
    struct worker_config flags; /* settings given as flags */
    const char *config_path;    /* borrowed from argv; NULL: no file */
    bool demo_handlers;
    bool help;
    bool version;
};

enum {
    OPT_REDIS = 256,
    OPT_CONFIG,
    OPT_CONCURRENCY,
    OPT_QUEUES,
    OPT_STRICT,
    OPT_SHUTDOWN_TIMEOUT,
    OPT_LOG_LEVEL,
    OPT_DEMO_HANDLERS,
    OPT_METRICS_ADDR,
};

static const struct option long_options[] = {
        {"redis", required_argument, NULL, OPT_REDIS},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"queues", required_argument, NULL, OPT_QUEUES},
        {"strict", no_argument, NULL, OPT_STRICT},
        {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN_TIMEOUT},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"demo-handlers", no_argument, NULL, OPT_DEMO_HANDLERS},
        {"metrics-addr", required_argument, NULL, OPT_METRICS_ADDR},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
};

static void print_help(FILE *out)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    fprintf(out,
            "Usage: " PROG " [OPTION]...\n"
            "Processes asynq tasks from Redis with casynq until SIGTERM or "
            "SIGINT.\n"
            "\n"
            "  --redis URL              Redis to connect to, as\n"
            "                           redis://[[user]:password@]host[:port]"
            "[/db]\n"
            "                           or unix://[[user]:password@]/path"
            "[?db=N]\n"
            "                           (default: $" REDIS_URL_ENV
            ", else the\n"
            "                           config file, else " DEFAULT_REDIS_URL
            ")\n"
            "  --config FILE            read settings from the JSON file "
            "FILE;\n"
            "                           flags override its values\n"
            "  --concurrency N          number of worker threads, >= 1\n"
            "                           (default: number of CPUs, %ld here)\n"
            "  --queues NAME=WEIGHT,... queues to process and their integer\n"
            "                           weights >= 1 (default: default=1)\n"
            "  --strict                 strict priority: always serve the\n"
            "                           highest-weight non-empty queue "
            "first\n"
            "                           (default: weighted random order)\n"
            "  --shutdown-timeout SECONDS\n"
            "                           time to wait for running handlers at\n"
            "                           shutdown, in seconds, decimals "
            "allowed,\n"
            "                           >= 0 (default: 8)\n"
            "  --log-level LEVEL        debug, info, warn or error "
            "(default: info)\n"
            "  --demo-handlers          register the bundled demo handlers\n"
            "                           (demo:noop, demo:echo, demo:sleep,\n"
            "                           demo:fail, demo:spin)\n"
            "  --metrics-addr ADDR      serve Prometheus metrics at\n"
            "                           http://ADDR/metrics and a health "
            "check\n"
            "                           at /healthz; ADDR is host:port, "
            ":port\n"
            "                           or port, and without a host only\n"
            "                           127.0.0.1 is used (default: off)\n"
            "  -h, --help               print this help and exit\n"
            "  -V, --version            print the version and exit\n"
            "\n"
            "Signals: SIGTERM and SIGINT shut down gracefully; SIGTSTP stops\n"
            "fetching new tasks and keeps running the current ones.\n"
            "\n"
            "Exit status: 0 after a clean shutdown, 1 when the server cannot\n"
            "start (e.g. Redis is unreachable), 2 for invalid options or an\n"
            "invalid config file.\n",
            cpus > 0 ? cpus : 1L);
}

static int usage_error(const char *fmt, ...) CASYNQ_PRINTF(1, 2);

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, PROG ": ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return EXIT_USAGE;
}

/* Copies url into buf with the credentials, the text between "://" and the
 * last '@' before the first '/' or '?', replaced by "***", so that messages
 * never show a password. Returns buf. */
static const char *redact_url(const char *url, char *buf, size_t len)
{
    const char *scheme_end = strstr(url, "://");
    const char *host, *at = NULL;

    if (scheme_end == NULL) {
        snprintf(buf, len, "%s", url);
        return buf;
    }
    host = scheme_end + 3;
    for (const char *p = host; *p != '\0' && *p != '/' && *p != '?'; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    if (at == NULL) {
        snprintf(buf, len, "%s", url);
        return buf;
    }
    snprintf(buf, len, "%.*s***%s", (int)(host - url), url, at);
    return buf;
}

/* Handles one recognized option and its argument. Returns 0 or an exit
 * status after printing a message. */
static int handle_option(int opt, const char *arg, struct worker_args *args)
{
    char err[512];
    int rc;

    switch (opt) {
    case OPT_REDIS:
        rc = worker_config_set_redis_url(&args->flags, arg, err, sizeof(err));
        if (rc != 0) {
            char shown[256];

            return usage_error("invalid --redis value \"%s\": %s",
                               redact_url(arg, shown, sizeof(shown)), err);
        }
        return 0;
    case OPT_CONFIG:
        args->config_path = arg;
        return 0;
    case OPT_CONCURRENCY:
        if (worker_config_parse_int(arg, 1, &args->flags.concurrency) != 0) {
            return usage_error("invalid --concurrency value \"%s\": expected "
                               "an integer from 1 to 2147483647",
                               arg);
        }
        return 0;
    case OPT_QUEUES:
        if (worker_config_parse_queues(arg, &args->flags, err, sizeof(err)) !=
            0) {
            return usage_error("invalid --queues value \"%s\": %s", arg, err);
        }
        return 0;
    case OPT_STRICT:
        args->flags.strict_priority_set = true;
        args->flags.strict_priority = true;
        return 0;
    case OPT_SHUTDOWN_TIMEOUT:
        if (worker_config_parse_seconds(
                    arg, &args->flags.shutdown_timeout_ms) != 0) {
            return usage_error("invalid --shutdown-timeout value \"%s\": "
                               "expected seconds >= 0, such as 8 or 2.5",
                               arg);
        }
        return 0;
    case OPT_LOG_LEVEL:
        if (casynq_log_level_parse(arg, &args->flags.log_level) != 0) {
            return usage_error("invalid --log-level value \"%s\": expected "
                               "debug, info, warn or error",
                               arg);
        }
        args->flags.log_level_set = true;
        return 0;
    case OPT_DEMO_HANDLERS:
        args->demo_handlers = true;
        return 0;
    case OPT_METRICS_ADDR:
        rc = worker_config_set_metrics_addr(&args->flags, arg, err,
                                            sizeof(err));
        if (rc != 0) {
            return usage_error("invalid --metrics-addr value: %s", err);
        }
        return 0;
    case 'h':
        args->help = true;
        return 0;
    case 'V':
        args->version = true;
        return 0;
    default:
        return usage_error("internal error: option %d has no handler", opt);
    }
}

/* Returns the option of long_options whose val is `val`, or NULL. */
static const struct option *option_by_val(int val)
{
    for (const struct option *o = long_options; o->name != NULL; o++) {
        if (o->val == val) {
            return o;
        }
    }
    return NULL;
}

/* Prints the message for an option that getopt_long rejected. */
static int bad_option(int opt, char *const argv[])
{
    const char *text = argv[optind - 1];
    const struct option *o = option_by_val(optopt);

    if (opt == ':' && o != NULL) {
        return usage_error("option --%s needs a value; run " PROG
                           " --help for its form",
                           o->name);
    }
    if (opt == ':') {
        return usage_error("option -%c needs a value", optopt);
    }
    if (o != NULL && strchr(text, '=') != NULL) {
        return usage_error("option --%s takes no value, got \"%s\"", o->name,
                           text);
    }
    if (optopt != 0 && strncmp(text, "--", 2) != 0) {
        return usage_error("unknown option -%c; run " PROG
                           " --help to list the options",
                           optopt);
    }
    return usage_error("unknown or ambiguous option \"%s\"; run " PROG
                       " --help to list the options",
                       text);
}

/* Parses argv into args, which the caller has initialized. Returns 0, or
 * an exit status after printing a message. */
static int parse_args(int argc, char *argv[], struct worker_args *args)
{
    int opt;

    /* Messages come from bad_option(), which names the option and value
     * in the same style as every other message of the worker. */
    opterr = 0;
    for (;;) {
        int rc;

        opt = getopt_long(argc, argv, ":hV", long_options, NULL);
        if (opt == -1) {
            break;
        }
        if (opt == '?' || opt == ':') {
            return bad_option(opt, argv);
        }
        rc = handle_option(opt, optarg, args);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind < argc) {
        return usage_error("unexpected argument \"%s\"; " PROG
                           " takes options only, run " PROG " --help",
                           argv[optind]);
    }
    return 0;
}

/* Merges the file, the environment and the flags, in that order, into
 * *merged. Returns 0 or an exit status after printing a message. */
static int load_settings(const struct worker_args *args,
                         struct worker_config *merged)
{
    struct worker_config env;
    const char *url = getenv(REDIS_URL_ENV);
    char err[1024];
    int rc;

    worker_config_init(merged);
    if (args->config_path != NULL) {
        rc = worker_config_load(args->config_path, merged, err, sizeof(err));
        if (rc != 0) {
            return usage_error("%s", err);
        }
    }

    worker_config_init(&env);
    if (url != NULL && *url != '\0' && args->flags.redis_url == NULL) {
        rc = worker_config_set_redis_url(&env, url, err, sizeof(err));
        if (rc != 0) {
            char shown[256];

            return usage_error("invalid %s value \"%s\": %s; fix or unset "
                               "it, or pass --redis",
                               REDIS_URL_ENV,
                               redact_url(url, shown, sizeof(shown)), err);
        }
    }
    rc = worker_config_merge(merged, &env);
    worker_config_finish(&env);
    if (rc == 0) {
        rc = worker_config_merge(merged, &args->flags);
    }
    if (rc != 0) {
        fprintf(stderr, PROG ": %s\n", casynq_strerror(rc));
        return 1;
    }
    return 0;
}

/* Prints the worker's version and queue weights, which the server's own
 * start-up line (address, concurrency, priority mode) does not list. */
static void print_start_line(const struct worker_config *c)
{
    char queues[512];

    if (c->log_level_set && c->log_level > CASYNQ_LOG_INFO) {
        return;
    }
    worker_config_describe_queues(c, queues, sizeof(queues));
    fprintf(stderr, PROG " %s: starting with queues %s\n", casynq_version(),
            queues);
}

/* Builds the server from the merged settings and runs it until a signal
 * shuts it down. Returns the exit status. */
static int run_worker(const struct worker_args *args,
                      const struct worker_config *settings)
{
    struct casynq_config *cfg = NULL;
    struct casynq_server *srv = NULL;
    struct casynq_mux *mux = NULL;
    char err[1024];
    int status = 1;
    int rc;

    rc = casynq_config_create(&cfg);
    if (rc == 0) {
        rc = casynq_mux_create(&mux);
    }
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot set up the server: %s\n",
                casynq_strerror(rc));
        goto out;
    }
    rc = worker_config_apply(settings, cfg, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, PROG ": invalid settings: %s\n", err);
        status = EXIT_USAGE;
        goto out;
    }
    if (args->demo_handlers) {
        rc = casynq_demo_handlers_register(mux);
        if (rc != 0) {
            fprintf(stderr, PROG ": cannot register the demo handlers: %s\n",
                    casynq_strerror(rc));
            goto out;
        }
    }

    rc = casynq_server_create(cfg, mux, &srv);
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot create the server: %s\n",
                *casynq_config_last_error(cfg) != '\0'
                        ? casynq_config_last_error(cfg)
                        : casynq_strerror(rc));
        goto out;
    }
    print_start_line(settings);
    rc = casynq_server_run(srv);
    if (rc != 0) {
        fprintf(stderr, PROG ": cannot start the server: %s (%s)\n",
                *casynq_server_last_error(srv) != '\0'
                        ? casynq_server_last_error(srv)
                        : casynq_strerror(rc),
                casynq_err_name(rc));
        goto out;
    }
    status = 0;

out:
    casynq_server_destroy(srv);
    casynq_mux_destroy(mux);
    casynq_config_destroy(cfg);
    return status;
}

int main(int argc, char *argv[])
{
    struct worker_config settings;
    struct worker_args args = {0};
    int status;

    worker_config_init(&args.flags);
    worker_config_init(&settings);
    status = parse_args(argc, argv, &args);
    if (status != 0) {
        goto out;
    }
    if (args.help) {
        print_help(stdout);
        goto out;
    }
    if (args.version) {
        printf(PROG " %s (asynq %s Redis protocol)\n", casynq_version(),
               ASYNQ_PROTOCOL_VERSION);
        goto out;
    }

    status = load_settings(&args, &settings);
    if (status != 0) {
        goto out;
    }
    /* A mux without handlers would fail every task with "handler not
     * found", so starting such a worker is always a mistake. */
    if (!args.demo_handlers) {
        status = usage_error("no task handlers: pass --demo-handlers to run "
                             "the bundled demo handlers, or embed libcasynq "
                             "in a program that registers its own with "
                             "casynq_mux_handle()");
        goto out;
    }
    status = run_worker(&args, &settings);

out:
    worker_config_finish(&settings);
    worker_config_finish(&args.flags);
    return status;
}
