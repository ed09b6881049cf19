/* Config file, flag values and settings layers of casynq-worker.
 *
 * The worker reads its settings from three layers: the JSON config file,
 * the CASYNQ_REDIS_URL environment variable and the command-line flags.
 * Each layer is a struct worker_config whose fields start "unset". The
 * worker merges the layers in that order, so a later layer wins, and then
 * copies the result into a struct casynq_config. Validation happens while
 * a layer is read, so every message names the file key or flag at fault. */
#include "worker_config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include <casynq.h>

/* Largest integer that a JSON number (an IEEE double) represents exactly,
 * the upper bound of the millisecond settings in the file. */
#define JSON_MAX_EXACT_INT 9007199254740991.0

/* Maximum length of the excerpt of a JSON value, or of the text near a
 * syntax error, that a message quotes. */
#define EXCERPT_MAX 40

struct load_ctx {
    const char *path;
    char *err;
    size_t errlen;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
        CASYNQ_PRINTF(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Writes "config file PATH: " followed by the formatted message into the
 * context's error buffer. Returns CASYNQ_EINVAL, for use in return
 * statements. */
static int fail(const struct load_ctx *ctx, const char *fmt, ...)
        CASYNQ_PRINTF(2, 3);

static int fail(const struct load_ctx *ctx, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    set_err(ctx->err, ctx->errlen, "config file %s: %s", ctx->path, msg);
    return CASYNQ_EINVAL;
}

static char *copy_string(const char *s)
{
    size_t len = strlen(s) + 1;
    char *copy = malloc(len);

    if (copy != NULL) {
        memcpy(copy, s, len);
    }
    return copy;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static void free_queues(struct worker_queue *queues, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(queues[i].name);
    }
    free(queues);
}

void worker_config_init(struct worker_config *c)
{
    memset(c, 0, sizeof(*c));
    c->shutdown_timeout_ms = -1;
    c->log_level = CASYNQ_LOG_INFO;
}

void worker_config_finish(struct worker_config *c)
{
    free(c->redis_url);
    free(c->metrics_addr);
    free_queues(c->queues, c->queue_count);
    worker_config_init(c);
}

/* ------------------------------------------------------------------------
 * Scalar parsers shared by the flags and the file
 */

int worker_config_parse_int(const char *text, int min, int *out)
{
    long long value = 0;

    if (text == NULL || *text == '\0') {
        return CASYNQ_EINVAL;
    }
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return CASYNQ_EINVAL;
        }
        value = value * 10 + (*p - '0');
        if (value > INT_MAX) {
            return CASYNQ_EINVAL;
        }
    }
    if (value < min) {
        return CASYNQ_EINVAL;
    }
    *out = (int)value;
    return 0;
}

int worker_config_parse_seconds(const char *text, int64_t *ms_out)
{
    const char *p = text;
    size_t digits = 0;
    char *end = NULL;
    double seconds;

    if (text == NULL) {
        return CASYNQ_EINVAL;
    }

    /* strtod alone would also take signs, spaces, "inf", "nan" and hex,
     * so the syntax is checked first: digits, then an optional fraction. */
    while (*p >= '0' && *p <= '9') {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            p++;
            digits++;
        }
    }
    if (*p != '\0' || digits == 0) {
        return CASYNQ_EINVAL;
    }

    errno = 0;
    seconds = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !(seconds * 1000.0 < 9.2e18)) {
        return CASYNQ_EINVAL;
    }
    *ms_out = (int64_t)(seconds * 1000.0 + 0.5);
    return 0;
}

/* ------------------------------------------------------------------------
 * Queue lists
 */

/* Checks one queue name. Returns NULL when it is valid, else a static
 * description of the problem. */
static const char *queue_name_problem(const char *name, size_t len)
{
    size_t i;

    if (len == 0) {
        return "is empty";
    }
    if (len > WORKER_QUEUE_NAME_MAX) {
        return "is longer than 255 bytes";
    }
    for (i = 0; i < len && is_space(name[i]); i++) {
    }
    if (i == len) {
        return "is blank";
    }
    if (is_space(name[0]) || is_space(name[len - 1])) {
        return "has a space at its start or end";
    }
    return NULL;
}

static bool queue_listed(const struct worker_queue *queues, size_t count,
                         const char *name)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(queues[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

/* Parses one "name=weight" entry of length len into queues[*count]. */
static int parse_queue_entry(const char *entry, size_t len,
                             struct worker_queue *queues, size_t *count,
                             char *err, size_t errlen)
{
    const char *eq = memchr(entry, '=', len);
    const char *problem;
    char weight_text[32];
    size_t name_len, weight_len;
    int weight;
    char *name;

    if (eq == NULL) {
        set_err(err, errlen,
                "entry \"%.*s\" has no '='; write it as name=weight, "
                "e.g. default=1",
                (int)len, entry);
        return CASYNQ_EINVAL;
    }
    name_len = (size_t)(eq - entry);
    weight_len = len - name_len - 1;
    problem = queue_name_problem(entry, name_len);
    if (problem != NULL) {
        set_err(err, errlen, "queue name in entry \"%.*s\" %s", (int)len, entry,
                problem);
        return CASYNQ_EINVAL;
    }
    if (weight_len >= sizeof(weight_text)) {
        weight_len = sizeof(weight_text) - 1;
    }
    memcpy(weight_text, eq + 1, weight_len);
    weight_text[weight_len] = '\0';
    if (worker_config_parse_int(weight_text, 1, &weight) != 0 ||
        eq + 1 + weight_len != entry + len) {
        set_err(err, errlen,
                "weight in entry \"%.*s\" must be an integer from 1 to %d",
                (int)len, entry, INT_MAX);
        return CASYNQ_EINVAL;
    }

    name = malloc(name_len + 1);
    if (name == NULL) {
        return CASYNQ_ENOMEM;
    }
    memcpy(name, entry, name_len);
    name[name_len] = '\0';
    if (queue_listed(queues, *count, name)) {
        set_err(err, errlen, "queue \"%s\" is listed twice", name);
        free(name);
        return CASYNQ_EINVAL;
    }
    queues[*count].name = name;
    queues[*count].weight = weight;
    (*count)++;
    return 0;
}

int worker_config_parse_queues(const char *spec, struct worker_config *c,
                               char *err, size_t errlen)
{
    struct worker_queue *queues;
    size_t max = 1, count = 0;
    const char *p;
    int rc = 0;

    if (spec == NULL || *spec == '\0') {
        set_err(err, errlen,
                "the queue list is empty; give at least one name=weight");
        return CASYNQ_EINVAL;
    }
    for (p = spec; *p != '\0'; p++) {
        max += *p == ',';
    }
    queues = calloc(max, sizeof(*queues));
    if (queues == NULL) {
        return CASYNQ_ENOMEM;
    }

    p = spec;
    while (rc == 0) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);

        if (len == 0) {
            set_err(err, errlen,
                    "the queue list has an empty entry; separate "
                    "name=weight entries with single commas");
            rc = CASYNQ_EINVAL;
            break;
        }
        rc = parse_queue_entry(p, len, queues, &count, err, errlen);
        if (comma == NULL) {
            break;
        }
        p = comma + 1;
    }
    if (rc != 0) {
        free_queues(queues, count);
        return rc;
    }

    free_queues(c->queues, c->queue_count);
    c->queues = queues;
    c->queue_count = count;
    return 0;
}

void worker_config_describe_queues(const struct worker_config *c, char *buf,
                                   size_t len)
{
    size_t used = 0;

    if (len == 0) {
        return;
    }
    buf[0] = '\0';
    if (c->queues == NULL) {
        snprintf(buf, len, "default=1");
        return;
    }
    for (size_t i = 0; i < c->queue_count && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s=%d", i > 0 ? "," : "",
                         c->queues[i].name, c->queues[i].weight);

        if (n < 0) {
            return;
        }
        used += (size_t)n;
    }
}

/* Replaces *slot with a copy of value after the caller has validated it.
 * Returns: 0 or CASYNQ_ENOMEM (the old value stays). */
static int replace_string(char **slot, const char *value)
{
    char *copy = copy_string(value);

    if (copy == NULL) {
        return CASYNQ_ENOMEM;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

int worker_config_set_redis_url(struct worker_config *c, const char *url,
                                char *err, size_t errlen)
{
    struct casynq_redis_options *opts = NULL;
    int rc;

    rc = casynq_redis_options_create(&opts);
    if (rc != 0) {
        return rc;
    }
    rc = casynq_redis_options_set_url(opts, url);
    if (rc != 0) {
        set_err(err, errlen, "%s", casynq_redis_options_last_error(opts));
        casynq_redis_options_destroy(opts);
        return rc;
    }
    casynq_redis_options_destroy(opts);

    return replace_string(&c->redis_url, url);
}

int worker_config_set_metrics_addr(struct worker_config *c, const char *addr,
                                   char *err, size_t errlen)
{
    struct casynq_config *cfg = NULL;
    int rc;

    rc = casynq_config_create(&cfg);
    if (rc != 0) {
        return rc;
    }
    rc = casynq_config_set_metrics_addr(cfg, addr);
    if (rc != 0) {
        set_err(err, errlen, "%s", casynq_config_last_error(cfg));
        casynq_config_destroy(cfg);
        return rc;
    }
    casynq_config_destroy(cfg);

    return replace_string(&c->metrics_addr, addr);
}

/* ------------------------------------------------------------------------
 * JSON keys
 */

/* Writes a short excerpt of the JSON text of item into buf, for messages. */
static void describe_json(const cJSON *item, char *buf, size_t len)
{
    char *text = cJSON_PrintUnformatted(item);

    if (text == NULL) {
        snprintf(buf, len, "a value that cannot be printed");
        return;
    }
    if (strlen(text) > EXCERPT_MAX) {
        snprintf(buf, len, "%.*s...", EXCERPT_MAX, text);
    } else {
        snprintf(buf, len, "%s", text);
    }
    cJSON_free(text);
}

/* Returns whether v is a whole number in [min, max], which lie inside the
 * int64 range. The negated comparison also rejects NaN. */
static bool is_int_in(double v, double min, double max)
{
    if (!(v >= min && v <= max)) {
        return false;
    }
    return (double)(int64_t)v == v;
}

/* Reads an integer JSON number in [min, max]. Numbers with an exponent or
 * a fraction of zero ("4.0", "1e3") count as integers. */
static int json_int(const struct load_ctx *ctx, const cJSON *item,
                    const char *key, double min, double max, double *out)
{
    char got[EXCERPT_MAX + 8];
    double v = item->valuedouble;

    if (!cJSON_IsNumber(item) || !is_int_in(v, min, max)) {
        describe_json(item, got, sizeof(got));
        return fail(ctx,
                    "key \"%s\" must be an integer from %.0f to %.0f, "
                    "got %s",
                    key, min, max, got);
    }
    *out = v;
    return 0;
}

static int key_redis(const struct load_ctx *ctx, const cJSON *item,
                     struct worker_config *c)
{
    char msg[512];
    int rc;

    if (!cJSON_IsString(item)) {
        describe_json(item, msg, sizeof(msg));
        return fail(ctx,
                    "key \"redis\" must be a string such as "
                    "\"redis://127.0.0.1:6379/0\", got %s",
                    msg);
    }
    rc = worker_config_set_redis_url(c, item->valuestring, msg, sizeof(msg));
    if (rc == CASYNQ_EINVAL) {
        return fail(ctx, "key \"redis\": %s", msg);
    }
    return rc;
}

static int key_concurrency(const struct load_ctx *ctx, const cJSON *item,
                           struct worker_config *c)
{
    double v = 0;
    int rc = json_int(ctx, item, "concurrency", 1, INT_MAX, &v);

    if (rc == 0) {
        c->concurrency = (int)v;
    }
    return rc;
}

static int key_queues(const struct load_ctx *ctx, const cJSON *item,
                      struct worker_config *c)
{
    struct worker_queue *queues;
    size_t count = 0, max;
    const cJSON *q;
    char got[EXCERPT_MAX + 8];
    int rc = 0;

    if (!cJSON_IsObject(item) || item->child == NULL) {
        describe_json(item, got, sizeof(got));
        return fail(ctx,
                    "key \"queues\" must be a non-empty object of "
                    "queue name to weight, such as {\"default\": 1}, "
                    "got %s",
                    got);
    }
    max = (size_t)cJSON_GetArraySize(item);
    queues = calloc(max, sizeof(*queues));
    if (queues == NULL) {
        return CASYNQ_ENOMEM;
    }

    cJSON_ArrayForEach(q, item)
    {
        const char *problem = queue_name_problem(q->string, strlen(q->string));
        double weight;

        if (problem != NULL) {
            rc = fail(ctx, "key \"queues\": queue name \"%s\" %s", q->string,
                      problem);
            break;
        }
        if (queue_listed(queues, count, q->string)) {
            rc = fail(ctx, "key \"queues\": queue \"%s\" is listed twice",
                      q->string);
            break;
        }
        if (!cJSON_IsNumber(q) || !is_int_in(q->valuedouble, 1, INT_MAX)) {
            describe_json(q, got, sizeof(got));
            rc = fail(ctx,
                      "key \"queues\": weight of queue \"%s\" must be "
                      "an integer from 1 to %d, got %s",
                      q->string, INT_MAX, got);
            break;
        }
        weight = q->valuedouble;
        queues[count].name = copy_string(q->string);
        if (queues[count].name == NULL) {
            rc = CASYNQ_ENOMEM;
            break;
        }
        queues[count].weight = (int)weight;
        count++;
    }
    if (rc != 0) {
        free_queues(queues, count);
        return rc;
    }
    free_queues(c->queues, c->queue_count);
    c->queues = queues;
    c->queue_count = count;
    return 0;
}

static int key_strict_priority(const struct load_ctx *ctx, const cJSON *item,
                               struct worker_config *c)
{
    char got[EXCERPT_MAX + 8];

    if (!cJSON_IsBool(item)) {
        describe_json(item, got, sizeof(got));
        return fail(ctx,
                    "key \"strict_priority\" must be true or false, "
                    "got %s",
                    got);
    }
    c->strict_priority_set = true;
    c->strict_priority = cJSON_IsTrue(item);
    return 0;
}

static int key_shutdown_timeout_s(const struct load_ctx *ctx, const cJSON *item,
                                  struct worker_config *c)
{
    char got[EXCERPT_MAX + 8];
    double v = item->valuedouble;

    /* The bound keeps the value in milliseconds inside int64. */
    if (!cJSON_IsNumber(item) || !(v >= 0 && v <= 9.2e15)) {
        describe_json(item, got, sizeof(got));
        return fail(ctx,
                    "key \"shutdown_timeout_s\" must be a number of "
                    "seconds >= 0, such as 8 or 0.5, got %s",
                    got);
    }
    c->shutdown_timeout_ms = (int64_t)(v * 1000.0 + 0.5);
    return 0;
}

static int key_interval_ms(const struct load_ctx *ctx, const cJSON *item,
                           const char *key, int64_t *out)
{
    double v = 0;
    int rc = json_int(ctx, item, key, 1, JSON_MAX_EXACT_INT, &v);

    if (rc == 0) {
        *out = (int64_t)v;
    }
    return rc;
}

static int key_task_check_interval_ms(const struct load_ctx *ctx,
                                      const cJSON *item,
                                      struct worker_config *c)
{
    return key_interval_ms(ctx, item, "task_check_interval_ms",
                           &c->task_check_interval_ms);
}

static int key_delayed_task_check_interval_ms(const struct load_ctx *ctx,
                                              const cJSON *item,
                                              struct worker_config *c)
{
    return key_interval_ms(ctx, item, "delayed_task_check_interval_ms",
                           &c->delayed_task_check_interval_ms);
}

static int key_janitor_interval_ms(const struct load_ctx *ctx,
                                   const cJSON *item, struct worker_config *c)
{
    return key_interval_ms(ctx, item, "janitor_interval_ms",
                           &c->janitor_interval_ms);
}

static int key_janitor_batch_size(const struct load_ctx *ctx, const cJSON *item,
                                  struct worker_config *c)
{
    double v = 0;
    int rc = json_int(ctx, item, "janitor_batch_size", 1, INT_MAX, &v);

    if (rc == 0) {
        c->janitor_batch_size = (int)v;
    }
    return rc;
}

static int key_log_level(const struct load_ctx *ctx, const cJSON *item,
                         struct worker_config *c)
{
    char got[EXCERPT_MAX + 8];

    if (!cJSON_IsString(item) ||
        casynq_log_level_parse(item->valuestring, &c->log_level) != 0) {
        describe_json(item, got, sizeof(got));
        return fail(ctx,
                    "key \"log_level\" must be one of \"debug\", "
                    "\"info\", \"warn\" or \"error\", got %s",
                    got);
    }
    c->log_level_set = true;
    return 0;
}

static int key_metrics_addr(const struct load_ctx *ctx, const cJSON *item,
                            struct worker_config *c)
{
    char msg[512];
    int rc;

    if (!cJSON_IsString(item)) {
        describe_json(item, msg, sizeof(msg));
        return fail(ctx,
                    "key \"metrics_addr\" must be a string such as "
                    "\"127.0.0.1:9464\", got %s",
                    msg);
    }
    rc = worker_config_set_metrics_addr(c, item->valuestring, msg, sizeof(msg));
    if (rc == CASYNQ_EINVAL) {
        return fail(ctx, "key \"metrics_addr\": %s", msg);
    }
    return rc;
}

static int key_metrics_interval_ms(const struct load_ctx *ctx,
                                   const cJSON *item, struct worker_config *c)
{
    double v = 0;
    int rc = json_int(ctx, item, "metrics_interval_ms",
                      WORKER_MIN_METRICS_INTERVAL_MS, JSON_MAX_EXACT_INT, &v);

    if (rc == 0) {
        c->metrics_interval_ms = (int64_t)v;
    }
    return rc;
}

static const struct {
    const char *key;
    int (*read)(const struct load_ctx *ctx, const cJSON *item,
                struct worker_config *c);
} config_keys[] = {
        {"redis", key_redis},
        {"concurrency", key_concurrency},
        {"queues", key_queues},
        {"strict_priority", key_strict_priority},
        {"shutdown_timeout_s", key_shutdown_timeout_s},
        {"task_check_interval_ms", key_task_check_interval_ms},
        {"delayed_task_check_interval_ms", key_delayed_task_check_interval_ms},
        {"janitor_interval_ms", key_janitor_interval_ms},
        {"janitor_batch_size", key_janitor_batch_size},
        {"log_level", key_log_level},
        {"metrics_addr", key_metrics_addr},
        {"metrics_interval_ms", key_metrics_interval_ms},
};

#define CONFIG_KEY_COUNT (sizeof(config_keys) / sizeof(config_keys[0]))

/* Returns the Levenshtein distance between a and b, capped at 9, which is
 * enough to decide whether an unknown key is a typo of a known one. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t row[64];

    if (la >= 64 || lb >= 64) {
        return 9;
    }
    for (size_t j = 0; j <= lb; j++) {
        row[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];

        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);

            if (row[j] + 1 < best) {
                best = row[j] + 1;
            }
            if (row[j - 1] + 1 < best) {
                best = row[j - 1] + 1;
            }
            row[j] = best;
            diag = up;
        }
    }
    return row[lb] < 9 ? row[lb] : 9;
}

static int unknown_key(const struct load_ctx *ctx, const char *key)
{
    const char *closest = NULL;
    size_t best = 3; /* suggest only keys at most 2 edits away */
    char list[512];
    size_t used = 0;

    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        size_t d = edit_distance(key, config_keys[i].key);

        if (d < best) {
            best = d;
            closest = config_keys[i].key;
        }
    }
    if (closest != NULL) {
        return fail(ctx, "unknown key \"%s\"; did you mean \"%s\"?", key,
                    closest);
    }
    list[0] = '\0';
    for (size_t i = 0; i < CONFIG_KEY_COUNT && used < sizeof(list); i++) {
        int n = snprintf(list + used, sizeof(list) - used, "%s%s",
                         i > 0 ? ", " : "", config_keys[i].key);

        if (n < 0) {
            break;
        }
        used += (size_t)n;
    }
    return fail(ctx, "unknown key \"%s\"; the known keys are %s", key, list);
}

static int read_keys(const struct load_ctx *ctx, const cJSON *root,
                     struct worker_config *out)
{
    bool seen[CONFIG_KEY_COUNT] = {false};
    const cJSON *item;

    cJSON_ArrayForEach(item, root)
    {
        size_t i;
        int rc;

        for (i = 0; i < CONFIG_KEY_COUNT; i++) {
            if (strcmp(item->string, config_keys[i].key) == 0) {
                break;
            }
        }
        if (i == CONFIG_KEY_COUNT) {
            return unknown_key(ctx, item->string);
        }
        /* cJSON keeps both members of a duplicated key; a silent "last
         * wins" would hide an edit made to the wrong copy. */
        if (seen[i]) {
            return fail(ctx, "key \"%s\" appears twice; keep one",
                        item->string);
        }
        seen[i] = true;
        rc = config_keys[i].read(ctx, item, out);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Loading a file
 */

/* Reads the whole file into a NUL-terminated buffer. */
static int read_file(const struct load_ctx *ctx, char **buf_out,
                     size_t *len_out)
{
    FILE *f = fopen(ctx->path, "rb");
    size_t cap = 4096, len = 0;
    char *buf = NULL;
    int rc = 0;

    if (f == NULL) {
        int saved = errno;

        set_err(ctx->err, ctx->errlen,
                "cannot open config file %s: %s; check the --config path",
                ctx->path, strerror(saved));
        return CASYNQ_ESYS;
    }
    buf = malloc(cap);
    if (buf == NULL) {
        rc = CASYNQ_ENOMEM;
        goto out;
    }
    for (;;) {
        size_t n;

        if (cap - len < 2) {
            char *grown = realloc(buf, cap * 2);

            if (grown == NULL) {
                rc = CASYNQ_ENOMEM;
                goto out;
            }
            buf = grown;
            cap *= 2;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (len > WORKER_CONFIG_FILE_MAX) {
            rc = fail(ctx,
                      "file is larger than %d bytes; a worker config "
                      "is a small JSON object",
                      WORKER_CONFIG_FILE_MAX);
            goto out;
        }
        if (n == 0) {
            break;
        }
    }
    if (ferror(f)) {
        int saved = errno;

        set_err(ctx->err, ctx->errlen,
                "cannot read config file %s: %s; check the --config path",
                ctx->path, strerror(saved));
        rc = CASYNQ_ESYS;
        goto out;
    }
    buf[len] = '\0';
    *buf_out = buf;
    *len_out = len;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* Reports a JSON syntax error at byte offset `at` of text with its line,
 * column and the text that follows. */
static int syntax_error(const struct load_ctx *ctx, const char *text, size_t at)
{
    size_t line = 1, column = 1;
    char near[EXCERPT_MAX + 1];
    size_t n = 0;

    for (size_t i = 0; i < at; i++) {
        if (text[i] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    while (n < EXCERPT_MAX && text[at + n] != '\0' && text[at + n] != '\n') {
        near[n] = text[at + n];
        n++;
    }
    near[n] = '\0';
    if (n == 0) {
        return fail(ctx,
                    "invalid JSON at line %zu, column %zu (byte %zu), "
                    "the end of the file; check for a missing or "
                    "extra bracket, brace, comma or quote",
                    line, column, at);
    }
    return fail(ctx,
                "invalid JSON at line %zu, column %zu (byte %zu) near "
                "\"%s\"",
                line, column, at, near);
}

int worker_config_load(const char *path, struct worker_config *out, char *err,
                       size_t errlen)
{
    struct load_ctx ctx = {.path = path, .err = err, .errlen = errlen};
    const char *text, *end = NULL;
    cJSON *root = NULL;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    worker_config_init(out);
    set_err(err, errlen, "%s", "");
    if (path == NULL) {
        set_err(err, errlen, "no config file path given");
        return CASYNQ_EINVAL;
    }
    rc = read_file(&ctx, &buf, &len);
    if (rc != 0) {
        return rc;
    }

    text = buf;
    if (memchr(buf, '\0', len) != NULL) {
        rc = fail(&ctx,
                  "contains a NUL byte at offset %zu; save it as "
                  "UTF-8 text",
                  (size_t)((const char *)memchr(buf, '\0', len) - buf));
        goto out_free_buf;
    }
    /* Editors on some systems start UTF-8 files with a byte-order mark,
     * which cJSON does not accept. */
    if (len >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
        text += 3;
    }

    root = cJSON_ParseWithOpts(text, &end, 1);
    if (root == NULL) {
        size_t at = end != NULL ? (size_t)(end - text) : 0;

        rc = syntax_error(&ctx, text, at);
        goto out_free_buf;
    }
    if (!cJSON_IsObject(root)) {
        char got[EXCERPT_MAX + 8];

        describe_json(root, got, sizeof(got));
        rc = fail(&ctx,
                  "the top level must be a JSON object such as "
                  "{\"concurrency\": 4}, got %s",
                  got);
        goto out_free_json;
    }
    rc = read_keys(&ctx, root, out);

out_free_json:
    cJSON_Delete(root);
out_free_buf:
    free(buf);
    if (rc != 0) {
        worker_config_finish(out);
    }
    return rc;
}

/* ------------------------------------------------------------------------
 * Merging and applying
 */

int worker_config_merge(struct worker_config *base,
                        const struct worker_config *over)
{
    if (over->redis_url != NULL) {
        char *copy = copy_string(over->redis_url);

        if (copy == NULL) {
            return CASYNQ_ENOMEM;
        }
        free(base->redis_url);
        base->redis_url = copy;
    }
    if (over->queues != NULL) {
        struct worker_queue *queues =
                calloc(over->queue_count, sizeof(*queues));

        if (queues == NULL) {
            return CASYNQ_ENOMEM;
        }
        for (size_t i = 0; i < over->queue_count; i++) {
            queues[i].name = copy_string(over->queues[i].name);
            if (queues[i].name == NULL) {
                free_queues(queues, i);
                return CASYNQ_ENOMEM;
            }
            queues[i].weight = over->queues[i].weight;
        }
        free_queues(base->queues, base->queue_count);
        base->queues = queues;
        base->queue_count = over->queue_count;
    }
    if (over->concurrency != 0) {
        base->concurrency = over->concurrency;
    }
    if (over->strict_priority_set) {
        base->strict_priority_set = true;
        base->strict_priority = over->strict_priority;
    }
    if (over->shutdown_timeout_ms >= 0) {
        base->shutdown_timeout_ms = over->shutdown_timeout_ms;
    }
    if (over->task_check_interval_ms != 0) {
        base->task_check_interval_ms = over->task_check_interval_ms;
    }
    if (over->delayed_task_check_interval_ms != 0) {
        base->delayed_task_check_interval_ms =
                over->delayed_task_check_interval_ms;
    }
    if (over->janitor_interval_ms != 0) {
        base->janitor_interval_ms = over->janitor_interval_ms;
    }
    if (over->janitor_batch_size != 0) {
        base->janitor_batch_size = over->janitor_batch_size;
    }
    if (over->log_level_set) {
        base->log_level_set = true;
        base->log_level = over->log_level;
    }
    if (over->metrics_addr != NULL) {
        char *copy = copy_string(over->metrics_addr);

        if (copy == NULL) {
            return CASYNQ_ENOMEM;
        }
        free(base->metrics_addr);
        base->metrics_addr = copy;
    }
    if (over->metrics_interval_ms != 0) {
        base->metrics_interval_ms = over->metrics_interval_ms;
    }
    return 0;
}

/* Copies the redis URL of c into cfg. */
static int apply_redis(const struct worker_config *c, struct casynq_config *cfg,
                       char *err, size_t errlen)
{
    struct casynq_redis_options *opts = NULL;
    int rc;

    rc = casynq_redis_options_create(&opts);
    if (rc != 0) {
        set_err(err, errlen, "cannot create redis options: %s",
                casynq_strerror(rc));
        return rc;
    }
    rc = casynq_redis_options_set_url(opts, c->redis_url);
    if (rc != 0) {
        set_err(err, errlen, "invalid redis URL: %s",
                casynq_redis_options_last_error(opts));
        goto out;
    }
    rc = casynq_config_set_redis(cfg, opts);
    if (rc != 0) {
        set_err(err, errlen, "%s", casynq_config_last_error(cfg));
    }
out:
    casynq_redis_options_destroy(opts);
    return rc;
}

static int apply_queues(const struct worker_config *c,
                        struct casynq_config *cfg)
{
    int rc = casynq_config_clear_queues(cfg);

    for (size_t i = 0; rc == 0 && i < c->queue_count; i++) {
        rc = casynq_config_set_queue(cfg, c->queues[i].name,
                                     c->queues[i].weight);
    }
    return rc;
}

/* Copies the timing settings of c into cfg. */
static int apply_intervals(const struct worker_config *c,
                           struct casynq_config *cfg)
{
    int rc = 0;

    if (rc == 0 && c->shutdown_timeout_ms >= 0) {
        rc = casynq_config_set_shutdown_timeout_ms(cfg, c->shutdown_timeout_ms);
    }
    if (rc == 0 && c->task_check_interval_ms != 0) {
        rc = casynq_config_set_task_check_interval_ms(
                cfg, c->task_check_interval_ms);
    }
    if (rc == 0 && c->delayed_task_check_interval_ms != 0) {
        rc = casynq_config_set_delayed_task_check_interval_ms(
                cfg, c->delayed_task_check_interval_ms);
    }
    if (rc == 0 &&
        (c->janitor_interval_ms != 0 || c->janitor_batch_size != 0)) {
        int64_t interval_ms = c->janitor_interval_ms != 0
                                      ? c->janitor_interval_ms
                                      : WORKER_DEFAULT_JANITOR_INTERVAL_MS;
        int batch = c->janitor_batch_size != 0
                            ? c->janitor_batch_size
                            : WORKER_DEFAULT_JANITOR_BATCH_SIZE;

        rc = casynq_config_set_janitor(cfg, interval_ms, batch);
    }
    return rc;
}

int worker_config_apply(const struct worker_config *c,
                        struct casynq_config *cfg, char *err, size_t errlen)
{
    int rc = 0;

    set_err(err, errlen, "%s", "");
    if (c->redis_url != NULL) {
        rc = apply_redis(c, cfg, err, errlen);
        if (rc != 0) {
            return rc;
        }
    }
    if (c->concurrency != 0) {
        rc = casynq_config_set_concurrency(cfg, c->concurrency);
    }
    if (rc == 0 && c->queues != NULL) {
        rc = apply_queues(c, cfg);
    }
    if (rc == 0 && c->strict_priority_set) {
        rc = casynq_config_set_strict_priority(cfg, c->strict_priority);
    }
    if (rc == 0) {
        rc = apply_intervals(c, cfg);
    }
    if (rc == 0 && c->log_level_set) {
        rc = casynq_config_set_log(cfg, NULL, NULL, c->log_level);
    }
    if (rc == 0 && c->metrics_addr != NULL) {
        rc = casynq_config_set_metrics_addr(cfg, c->metrics_addr);
    }
    if (rc == 0 && c->metrics_interval_ms != 0) {
        rc = casynq_config_set_metrics_interval_ms(cfg, c->metrics_interval_ms);
    }
    if (rc != 0) {
        const char *msg = casynq_config_last_error(cfg);

        set_err(err, errlen, "%s",
                msg != NULL && *msg != '\0' ? msg : casynq_strerror(rc));
    }
    return rc;
}
