/* DESIGN: admission control at enqueue (rate limits, backlog caps and a
 * payload limit).
 *
 * This file contains the limiter object, the validation of its limits (from
 * the setters and from JSON) and casynq__limiter_admit(), which runs the
 * checks in a fixed order: payload size, queue backlog, rate limits. The
 * cheap checks come first, and none of them consumes anything, so a task
 * rejected by a later check has used up no budget.
 *
 * Rate limits use GCRA, the generic cell rate algorithm. A budget is one
 * number, its theoretical arrival time (TAT): the time at which the budget
 * would be full again if nothing else arrived. An enqueue at time `now`
 * passes when TAT - now <= tolerance, where tolerance = (burst - 1) * T
 * and T = 1 / rate is the emission interval, and then TAT becomes
 * max(TAT, now) + T. GCRA suits this job better than a token bucket with
 * a refill timer or a sliding window log:
 * - one stored value per budget, so memory per key is constant;
 * - the burst is exact: `burst` enqueues pass at once, then one per T;
 * - nothing refills in the background: time passing is the refill, so an
 *   idle budget costs nothing and can be deleted once TAT <= now;
 * - a check is one read, one compare and one write, which makes it atomic
 *   under one mutex (memory backend) or in one Lua script (Redis backend).
 * To check several limits atomically, a backend first computes every
 * budget's verdict and writes the new TATs only when all of them pass.
 * limiter_memory.c and limiter_redis.c hold the two backends.
 *
 * The limits are immutable once checks start, so checks read them without
 * a lock. l->mu guards the memory backend's budgets and the Redis
 * backend's connection; it is the only lock, and no user code runs under
 * it. Failures of casynq_limiter_check() go to a thread-local buffer,
 * because checks from many threads would race on one buffer.
 *
 * Each rejected check adds 1 to one atomic counter, that of the limit its
 * message names, so the counts can be read from any thread (a metrics
 * scrape) while checks run, without the lock. The counters are never
 * reset, and a rate limit keeps its index, and so its counter, when a
 * JSON document adds limits after it. */
#include "limiter.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "alloc.h"
#include "broker.h"

/* The message of the calling thread's last casynq_limiter_check(), and
 * the limiter it came from. */
static _Thread_local struct {
    const struct casynq_limiter *owner;
    char msg[CASYNQ__ERRBUF_SIZE];
} check_error;

/* Key bytes quoted in rejection messages; longer keys are cut. */
#define MESSAGE_KEY_MAX 100

static int64_t monotonic_ns(void *ud)
{
    struct timespec ts;

    (void)ud;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ------------------------------------------------------------------------
 * The limits: copies and validation
 */

static void limits_free(struct casynq__limits *ls)
{
    for (size_t i = 0; i < ls->nrates; i++) {
        casynq__free(ls->rates[i].name);
        casynq__free(ls->rates[i].match);
    }
    for (size_t i = 0; i < ls->ncaps; i++) {
        casynq__free(ls->caps[i].queue);
    }
    casynq__free(ls->rates);
    casynq__free(ls->caps);
    memset(ls, 0, sizeof(*ls));
}

/* Deep-copies src into dst. Returns: 0 or CASYNQ_ENOMEM (dst empty). */
static int limits_copy(struct casynq__limits *dst,
                       const struct casynq__limits *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->max_payload = src->max_payload;
    if (src->nrates > 0) {
        dst->rates = casynq__calloc(src->nrates, sizeof(*dst->rates));
        if (dst->rates == NULL) {
            goto out_nomem;
        }
    }
    for (size_t i = 0; i < src->nrates; i++) {
        dst->rates[i] = src->rates[i];
        dst->rates[i].name = casynq__strdup(src->rates[i].name);
        dst->rates[i].match = casynq__strdup(src->rates[i].match);
        dst->nrates++;
        if (dst->rates[i].name == NULL ||
            (src->rates[i].match != NULL && dst->rates[i].match == NULL)) {
            goto out_nomem;
        }
    }
    if (src->ncaps > 0) {
        dst->caps = casynq__calloc(src->ncaps, sizeof(*dst->caps));
        if (dst->caps == NULL) {
            goto out_nomem;
        }
    }
    for (size_t i = 0; i < src->ncaps; i++) {
        dst->caps[i].max_tasks = src->caps[i].max_tasks;
        dst->caps[i].queue = casynq__strdup(src->caps[i].queue);
        dst->ncaps++;
        if (dst->caps[i].queue == NULL) {
            goto out_nomem;
        }
    }
    return 0;

out_nomem:
    limits_free(dst);
    return CASYNQ_ENOMEM;
}

/* Checks a queue name as enqueue does. `field` names it in messages. */
static int check_queue_name(const char *queue, const char *field, char *errbuf)
{
    if (casynq__is_blank(queue)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is empty: give a queue name with at least "
                            "one character that is not a space",
                            field);
    }
    if (strlen(queue) > CASYNQ__MAX_QUEUE_LEN) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is %zu bytes long: a queue name is at most "
                            "%d bytes",
                            field, strlen(queue), CASYNQ__MAX_QUEUE_LEN);
    }
    if (!casynq__utf8_valid(queue, strlen(queue))) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is not valid UTF-8, which asynq's decoder "
                            "rejects",
                            field);
    }
    return 0;
}

static int check_limit_name(const struct casynq__limits *ls, const char *name,
                            const char *where, char *errbuf)
{
    if (casynq__is_blank(name)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname is empty: give the limit a name, which "
                            "rejection messages show",
                            where);
    }
    if (strlen(name) > CASYNQ__LIMIT_NAME_MAX_LEN) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname is %zu bytes long: the maximum is %d",
                            where, strlen(name), CASYNQ__LIMIT_NAME_MAX_LEN);
    }
    if (!casynq__utf8_valid(name, strlen(name))) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname is not valid UTF-8: use a UTF-8 name",
                            where);
    }
    if (strpbrk(name, "{}") != NULL) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname \"%s\" contains '{' or '}', which would "
                            "break the hash tag of its Redis keys: choose "
                            "another name",
                            where, name);
    }
    if (strcmp(name, CASYNQ__LIMIT_NAME_BACKLOG) == 0 ||
        strcmp(name, CASYNQ__LIMIT_NAME_PAYLOAD) == 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname \"%s\" is reserved: the rejection "
                            "counts use it for the admission limit of that "
                            "name, so choose another name",
                            where, name);
    }
    for (size_t i = 0; i < ls->nrates; i++) {
        if (strcmp(ls->rates[i].name, name) == 0) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "%sname \"%s\" is already used by another "
                                "rate limit: give each limit its own name",
                                where, name);
        }
    }
    return 0;
}

static int check_match(enum casynq_limit_scope scope, const char *match,
                       const char *where, char *errbuf)
{
    char field[96];

    snprintf(field, sizeof(field), "%smatch", where);
    switch (scope) {
    case CASYNQ_LIMIT_PER_KEY:
        if (match == NULL) {
            return 0;
        }
        if (match[0] == '\0') {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "%s is empty: leave it out (NULL) to apply "
                                "the limit to every key",
                                field);
        }
        if (strlen(match) > CASYNQ__RATE_KEY_MAX_LEN) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "%s is %zu bytes long: a key prefix is at "
                                "most %d bytes",
                                field, strlen(match), CASYNQ__RATE_KEY_MAX_LEN);
        }
        return 0;
    case CASYNQ_LIMIT_QUEUE:
        if (match == NULL) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "%s is missing: a queue limit needs the "
                                "name of its queue",
                                field);
        }
        return check_queue_name(match, field, errbuf);
    case CASYNQ_LIMIT_TYPE:
        if (casynq__is_blank(match)) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "%s is missing or empty: a type limit needs "
                                "the task type it applies to",
                                field);
        }
        return 0;
    }
    return casynq__fail(errbuf, CASYNQ_EINVAL,
                        "%sscope is %d: use CASYNQ_LIMIT_PER_KEY (1), "
                        "CASYNQ_LIMIT_QUEUE (2) or CASYNQ_LIMIT_TYPE (3)",
                        where, (int)scope);
}

static int check_rate_numbers(double rate_per_s, double burst,
                              const char *where, char *errbuf)
{
    if (!isfinite(rate_per_s) || rate_per_s <= 0 ||
        rate_per_s > CASYNQ__MAX_RATE_PER_S) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%srate_per_s is %g: it must be a finite number "
                            "above 0 and at most %.0f",
                            where, rate_per_s, CASYNQ__MAX_RATE_PER_S);
    }
    if (!isfinite(burst) || burst < 1) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sburst is %g: it must be a finite number of "
                            "at least 1",
                            where, burst);
    }
    if (burst / rate_per_s > CASYNQ__MAX_REFILL_S) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sburst / rate_per_s is %g s: an empty budget "
                            "must refill within %.0f s (one year), so raise "
                            "rate_per_s or lower burst",
                            where, burst / rate_per_s, CASYNQ__MAX_REFILL_S);
    }
    return 0;
}

/* Validates a rate limit and appends it to ls. `where` prefixes field
 * names in messages ("" or "rate_limits[2]."). */
static int limits_add_rate(struct casynq__limits *ls, const char *name,
                           enum casynq_limit_scope scope, const char *match,
                           double rate_per_s, double burst, const char *where,
                           char *errbuf)
{
    struct casynq__rate_limit *rates;
    struct casynq__rate_limit *r;
    int rc;

    rc = check_limit_name(ls, name, where, errbuf);
    if (rc == 0) {
        rc = check_match(scope, match, where, errbuf);
    }
    if (rc == 0) {
        rc = check_rate_numbers(rate_per_s, burst, where, errbuf);
    }
    if (rc != 0) {
        return rc;
    }
    if (ls->nrates >= CASYNQ__LIMITER_MAX_RATES) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sname \"%s\": the limiter already has %d rate "
                            "limits, the maximum; merge some of them",
                            where, name, CASYNQ__LIMITER_MAX_RATES);
    }
    rates = casynq__realloc(ls->rates, (ls->nrates + 1) * sizeof(*rates));
    if (rates == NULL) {
        return CASYNQ_ENOMEM;
    }
    ls->rates = rates;
    r = &rates[ls->nrates];
    memset(r, 0, sizeof(*r));
    r->name = casynq__strdup(name);
    r->match = casynq__strdup(match);
    if (r->name == NULL || (match != NULL && r->match == NULL)) {
        casynq__free(r->name);
        casynq__free(r->match);
        return CASYNQ_ENOMEM;
    }
    r->scope = scope;
    r->match_len = match != NULL ? strlen(match) : 0;
    r->rate_per_s = rate_per_s;
    r->burst = burst;
    r->interval_us = 1e6 / rate_per_s;
    r->tolerance_us = (burst - 1) * r->interval_us;
    r->interval_ns = llround(1e9 / rate_per_s);
    r->tolerance_ns = llround((burst - 1) * 1e9 / rate_per_s);
    r->shared_tat_ns = INT64_MIN;
    ls->nrates++;
    return 0;
}

static int limits_set_backlog(struct casynq__limits *ls, const char *queue,
                              int64_t max_tasks, const char *field,
                              char *errbuf)
{
    struct casynq__backlog_cap *caps;
    int rc;

    rc = check_queue_name(queue, field, errbuf);
    if (rc != 0) {
        return rc;
    }
    if (max_tasks < 1) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "max_tasks of queue \"%s\" is %lld: a backlog "
                            "cap is at least 1",
                            queue, (long long)max_tasks);
    }
    for (size_t i = 0; i < ls->ncaps; i++) {
        if (strcmp(ls->caps[i].queue, queue) == 0) {
            ls->caps[i].max_tasks = max_tasks;
            return 0;
        }
    }
    caps = casynq__realloc(ls->caps, (ls->ncaps + 1) * sizeof(*caps));
    if (caps == NULL) {
        return CASYNQ_ENOMEM;
    }
    ls->caps = caps;
    caps[ls->ncaps].queue = casynq__strdup(queue);
    if (caps[ls->ncaps].queue == NULL) {
        return CASYNQ_ENOMEM;
    }
    caps[ls->ncaps].max_tasks = max_tasks;
    ls->ncaps++;
    return 0;
}

/* ------------------------------------------------------------------------
 * Public setup functions
 */

int casynq_limiter_create(enum casynq_limiter_backend backend,
                          const struct casynq_redis_options *redis,
                          struct casynq_limiter **out)
{
    struct casynq_limiter *l;
    int rc;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    if (backend != CASYNQ_LIMITER_MEMORY && backend != CASYNQ_LIMITER_REDIS) {
        return CASYNQ_EINVAL;
    }
    if (backend == CASYNQ_LIMITER_REDIS && redis == NULL) {
        return CASYNQ_EINVAL;
    }
    l = casynq__calloc(1, sizeof(*l));
    if (l == NULL) {
        return CASYNQ_ENOMEM;
    }
    l->backend = backend;
    l->clock = monotonic_ns;
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        casynq__free(l);
        return CASYNQ_ESYS;
    }
    if (backend == CASYNQ_LIMITER_MEMORY) {
        rc = casynq__budget_table_create(&l->table);
    } else {
        rc = casynq__conn_init(&l->conn, redis);
        l->has_conn = rc == 0;
    }
    if (rc != 0) {
        casynq_limiter_destroy(l);
        return rc;
    }
    *out = l;
    return 0;
}

void casynq_limiter_destroy(struct casynq_limiter *l)
{
    if (l == NULL) {
        return;
    }
    if (check_error.owner == l) {
        check_error.owner = NULL;
    }
    casynq__budget_table_destroy(l->table);
    if (l->has_conn) {
        casynq__conn_finish(&l->conn);
    }
    limits_free(&l->limits);
    pthread_mutex_destroy(&l->mu);
    casynq__free(l);
}

const char *casynq_limiter_last_error(const struct casynq_limiter *l)
{
    if (l == NULL) {
        return "";
    }
    return check_error.owner == l ? check_error.msg : l->err;
}

/* Starts a setter: clears the messages that casynq_limiter_last_error()
 * would return for l on this thread. */
static void begin_setter(struct casynq_limiter *l)
{
    l->err[0] = '\0';
    if (check_error.owner == l) {
        check_error.owner = NULL;
    }
}

static int nomem(struct casynq_limiter *l, int rc)
{
    if (rc == CASYNQ_ENOMEM) {
        casynq__fail(l->err, rc, "out of memory while adding a limit");
    }
    return rc;
}

int casynq_limiter_add_rate(struct casynq_limiter *l, const char *name,
                            enum casynq_limit_scope scope, const char *match,
                            double rate_per_s, double burst)
{
    if (l == NULL) {
        return CASYNQ_EINVAL;
    }
    begin_setter(l);
    return nomem(l, limits_add_rate(&l->limits, name, scope, match, rate_per_s,
                                    burst, "", l->err));
}

int casynq_limiter_set_max_backlog(struct casynq_limiter *l, const char *queue,
                                   int64_t max_tasks)
{
    if (l == NULL) {
        return CASYNQ_EINVAL;
    }
    begin_setter(l);
    return nomem(l, limits_set_backlog(&l->limits, queue, max_tasks, "queue",
                                       l->err));
}

int casynq_limiter_set_max_payload(struct casynq_limiter *l, size_t max_bytes)
{
    if (l == NULL) {
        return CASYNQ_EINVAL;
    }
    begin_setter(l);
    if (max_bytes < 1) {
        return casynq__fail(l->err, CASYNQ_EINVAL,
                            "max_bytes is 0: the payload limit is at least "
                            "1 byte");
    }
    l->limits.max_payload = max_bytes;
    return 0;
}

void casynq__limiter_set_clock(struct casynq_limiter *l, casynq__clock_fn fn,
                               void *ud)
{
    l->clock = fn != NULL ? fn : monotonic_ns;
    l->clock_ud = ud;
}

/* ------------------------------------------------------------------------
 * JSON
 */

/* JSON numbers are doubles; integers above this lose precision. */
#define JSON_MAX_EXACT_INT 9007199254740991.0

/* Fails when an object has the same key twice, which cJSON accepts. */
static int check_duplicate_keys(const cJSON *object, const char *where,
                                char *errbuf)
{
    for (const cJSON *a = object->child; a != NULL; a = a->next) {
        for (const cJSON *b = a->next; b != NULL; b = b->next) {
            if (strcmp(a->string, b->string) == 0) {
                return casynq__fail(errbuf, CASYNQ_EINVAL,
                                    "key \"%s\" appears twice in %s: give "
                                    "each key once",
                                    a->string, where);
            }
        }
    }
    return 0;
}

/* Reads a whole number of at least 1 from item into *out. */
static int json_positive_int(const cJSON *item, const char *field, int64_t *out,
                             char *errbuf)
{
    double v;

    if (!cJSON_IsNumber(item)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s must be a number, a whole number of at "
                            "least 1",
                            field);
    }
    v = item->valuedouble;
    if (v != floor(v) || v < 1 || v > JSON_MAX_EXACT_INT) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is %g: it must be a whole number from 1 to "
                            "%.0f",
                            field, v, JSON_MAX_EXACT_INT);
    }
    *out = (int64_t)v;
    return 0;
}

static int json_scope(const cJSON *item, const char *where,
                      enum casynq_limit_scope *out, char *errbuf)
{
    const char *s = cJSON_GetStringValue(item);

    if (s != NULL && strcmp(s, "key") == 0) {
        *out = CASYNQ_LIMIT_PER_KEY;
    } else if (s != NULL && strcmp(s, "queue") == 0) {
        *out = CASYNQ_LIMIT_QUEUE;
    } else if (s != NULL && strcmp(s, "type") == 0) {
        *out = CASYNQ_LIMIT_TYPE;
    } else if (s != NULL) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sscope is \"%s\": use \"key\", \"queue\" or "
                            "\"type\"",
                            where, s);
    } else {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%sscope must be a string: \"key\", \"queue\" "
                            "or \"type\"",
                            where);
    }
    return 0;
}

/* The fields of one object of "rate_limits". */
struct json_rate {
    const cJSON *name;
    const cJSON *scope;
    const cJSON *match;
    const cJSON *rate_per_s;
    const cJSON *burst;
};

static int json_rate_fields(const cJSON *object, const char *where,
                            struct json_rate *f, char *errbuf)
{
    memset(f, 0, sizeof(*f));
    for (const cJSON *item = object->child; item != NULL; item = item->next) {
        if (strcmp(item->string, "name") == 0) {
            f->name = item;
        } else if (strcmp(item->string, "scope") == 0) {
            f->scope = item;
        } else if (strcmp(item->string, "match") == 0) {
            f->match = item;
        } else if (strcmp(item->string, "rate_per_s") == 0) {
            f->rate_per_s = item;
        } else if (strcmp(item->string, "burst") == 0) {
            f->burst = item;
        } else {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "unknown key \"%s\" in %.*s: the keys are "
                                "name, scope, match, rate_per_s and burst",
                                item->string, (int)strlen(where) - 1, where);
        }
    }
    if (f->name == NULL || f->scope == NULL || f->rate_per_s == NULL ||
        f->burst == NULL) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%.*s needs the keys name, scope, rate_per_s "
                            "and burst (match is optional for scope "
                            "\"key\")",
                            (int)strlen(where) - 1, where);
    }
    return 0;
}

static int json_rate(struct casynq__limits *ls, const cJSON *object,
                     size_t index, char *errbuf)
{
    enum casynq_limit_scope scope = CASYNQ_LIMIT_PER_KEY;
    struct json_rate f;
    char where[48];
    int rc;

    snprintf(where, sizeof(where), "rate_limits[%zu].", index);
    if (!cJSON_IsObject(object)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "rate_limits[%zu] must be an object with name, "
                            "scope, rate_per_s and burst",
                            index);
    }
    rc = check_duplicate_keys(object, where, errbuf);
    if (rc == 0) {
        rc = json_rate_fields(object, where, &f, errbuf);
    }
    if (rc == 0) {
        rc = json_scope(f.scope, where, &scope, errbuf);
    }
    if (rc != 0) {
        return rc;
    }
    if (!cJSON_IsString(f.name)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL, "%sname must be a string",
                            where);
    }
    if (f.match != NULL && !cJSON_IsString(f.match) && !cJSON_IsNull(f.match)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL, "%smatch must be a string",
                            where);
    }
    if (!cJSON_IsNumber(f.rate_per_s) || !cJSON_IsNumber(f.burst)) {
        return casynq__fail(
                errbuf, CASYNQ_EINVAL, "%s%s must be a number", where,
                cJSON_IsNumber(f.rate_per_s) ? "burst" : "rate_per_s");
    }
    return limits_add_rate(
            ls, f.name->valuestring, scope, cJSON_GetStringValue(f.match),
            f.rate_per_s->valuedouble, f.burst->valuedouble, where, errbuf);
}

static int json_rates(struct casynq__limits *ls, const cJSON *array,
                      char *errbuf)
{
    size_t index = 0;
    int rc;

    if (!cJSON_IsArray(array)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "rate_limits must be an array of objects");
    }
    for (const cJSON *item = array->child; item != NULL; item = item->next) {
        rc = json_rate(ls, item, index++, errbuf);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int json_backlog(struct casynq__limits *ls, const cJSON *object,
                        char *errbuf)
{
    char field[CASYNQ__MAX_QUEUE_LEN + 32];
    int64_t max_tasks = 0;
    int rc;

    if (!cJSON_IsObject(object)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "max_backlog must be an object of queue name "
                            "to maximum task count");
    }
    rc = check_duplicate_keys(object, "max_backlog", errbuf);
    if (rc != 0) {
        return rc;
    }
    for (const cJSON *item = object->child; item != NULL; item = item->next) {
        snprintf(field, sizeof(field), "max_backlog.%s", item->string);
        rc = json_positive_int(item, field, &max_tasks, errbuf);
        if (rc == 0) {
            rc = limits_set_backlog(ls, item->string, max_tasks,
                                    "a queue name in max_backlog", errbuf);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int json_document(struct casynq__limits *ls, const cJSON *root,
                         char *errbuf)
{
    int64_t max_payload = 0;
    int rc = 0;

    if (!cJSON_IsObject(root)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "the limits must be a JSON object with the keys "
                            "rate_limits, max_backlog and max_payload_bytes");
    }
    rc = check_duplicate_keys(root, "the top-level object", errbuf);
    for (const cJSON *item = root->child; rc == 0 && item != NULL;
         item = item->next) {
        if (strcmp(item->string, "rate_limits") == 0) {
            rc = json_rates(ls, item, errbuf);
        } else if (strcmp(item->string, "max_backlog") == 0) {
            rc = json_backlog(ls, item, errbuf);
        } else if (strcmp(item->string, "max_payload_bytes") == 0) {
            rc = json_positive_int(item, "max_payload_bytes", &max_payload,
                                   errbuf);
            ls->max_payload = (size_t)max_payload;
        } else {
            rc = casynq__fail(errbuf, CASYNQ_EINVAL,
                              "unknown key \"%s\" at the top level: the keys "
                              "are rate_limits, max_backlog and "
                              "max_payload_bytes",
                              item->string);
        }
    }
    return rc;
}

/* Writes the line and column of offset into json as a syntax error. */
static int json_syntax_error(const char *json, size_t len, size_t offset,
                             char *errbuf)
{
    size_t line = 1;
    size_t column = 1;

    for (size_t i = 0; i < offset && i < len; i++) {
        if (json[i] == '\n') {
            line++;
            column = 1;
        } else {
            column++;
        }
    }
    return casynq__fail(errbuf, CASYNQ_EINVAL,
                        "the limits are not valid JSON: syntax error at "
                        "line %zu, column %zu",
                        line, column);
}

/* Reports a failed cJSON parse. cJSON returns the same result for an
 * allocation failure as for a syntax error, so an allocation of the
 * document's size distinguishes the two.
 * NOTE: memory that runs out only for a moment during the parse is
 * reported as a syntax error. */
static int json_parse_failed(struct casynq_limiter *l, const char *json,
                             size_t len, const char *end)
{
    void *probe = casynq__malloc(len + 1);

    if (probe == NULL || end == NULL) {
        casynq__free(probe);
        return nomem(l, CASYNQ_ENOMEM);
    }
    casynq__free(probe);
    return json_syntax_error(json, len, (size_t)(end - json), l->err);
}

int casynq_limiter_load_json(struct casynq_limiter *l, const char *json,
                             size_t len)
{
    struct casynq__limits next;
    const char *end = NULL;
    cJSON *root;
    int rc;

    if (l == NULL) {
        return CASYNQ_EINVAL;
    }
    begin_setter(l);
    if (json == NULL) {
        return casynq__fail(l->err, CASYNQ_EINVAL, "the JSON text is NULL");
    }
    /* The document applies to a copy, which replaces the limits only when
     * every part of it is valid. */
    rc = limits_copy(&next, &l->limits);
    if (rc != 0) {
        return nomem(l, rc);
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (root == NULL) {
        limits_free(&next);
        return json_parse_failed(l, json, len, end);
    }
    rc = json_document(&next, root, l->err);
    cJSON_Delete(root);
    if (rc != 0) {
        limits_free(&next);
        return nomem(l, rc);
    }
    limits_free(&l->limits);
    l->limits = next;
    return 0;
}

/* ------------------------------------------------------------------------
 * Checks
 */

static const struct casynq__backlog_cap *
find_cap(const struct casynq__limits *ls, const char *queue)
{
    for (size_t i = 0; i < ls->ncaps; i++) {
        if (strcmp(ls->caps[i].queue, queue) == 0) {
            return &ls->caps[i];
        }
    }
    return NULL;
}

/* Writes the indexes of the rate limits that apply into refs.
 * Returns: their number. */
static size_t applicable_rates(const struct casynq__limits *ls, const char *key,
                               size_t key_len, const char *queue,
                               const char *type, size_t *refs)
{
    size_t n = 0;

    for (size_t i = 0; i < ls->nrates; i++) {
        const struct casynq__rate_limit *r = &ls->rates[i];
        bool applies = false;

        switch (r->scope) {
        case CASYNQ_LIMIT_PER_KEY:
            applies =
                    key != NULL && (r->match == NULL ||
                                    (key_len >= r->match_len &&
                                     memcmp(key, r->match, r->match_len) == 0));
            break;
        case CASYNQ_LIMIT_QUEUE:
            applies = strcmp(queue, r->match) == 0;
            break;
        case CASYNQ_LIMIT_TYPE:
            applies = type != NULL && strcmp(type, r->match) == 0;
            break;
        }
        if (applies) {
            refs[n++] = i;
        }
    }
    return n;
}

/* A rate key is only compared and put into Redis key names, so any bytes
 * will do, but a blank key is almost surely a caller's bug, and the length
 * bounds the memory per key. */
int casynq__limiter_check_key(const char *key, char *errbuf)
{
    if (key == NULL) {
        return 0;
    }
    if (casynq__is_blank(key)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "rate key is empty: set a key with a character "
                            "that is not a space, or none (NULL)");
    }
    if (strlen(key) > CASYNQ__RATE_KEY_MAX_LEN) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "rate key is %zu bytes long: the maximum is %d, "
                            "so pass a shorter identifier or a digest of it",
                            strlen(key), CASYNQ__RATE_KEY_MAX_LEN);
    }
    return 0;
}

/* Turns a rate limit rejection into its message. */
static int rate_limited(const struct casynq__rate_limit *r, const char *key,
                        const char *queue, const char *type,
                        int64_t retry_after_ms, char *errbuf)
{
    const char *subject = "key";
    const char *value = key;

    if (r->scope == CASYNQ_LIMIT_QUEUE) {
        subject = "queue";
        value = queue;
    } else if (r->scope == CASYNQ_LIMIT_TYPE) {
        subject = "task type";
        value = type;
    }
    return casynq__fail(errbuf, CASYNQ_ERATELIMITED,
                        "rate limit \"%s\" exceeded for %s \"%.*s\": retry "
                        "after %lld ms",
                        r->name, subject, MESSAGE_KEY_MAX, value,
                        (long long)retry_after_ms);
}

static int backlog_full(const struct casynq__backlog_cap *cap, int64_t backlog,
                        char *errbuf)
{
    return casynq__fail(errbuf, CASYNQ_EBACKLOG,
                        "queue \"%s\" holds %lld pending, scheduled and "
                        "retry tasks, at or above its backlog cap of %lld: "
                        "retry once workers have drained it",
                        cap->queue, (long long)backlog,
                        (long long)cap->max_tasks);
}

/* Adds 1 to a rejection count. Relaxed order is enough, because readers
 * use a count on its own and order nothing else by it. */
static void count_rejection(_Atomic uint64_t *counter)
{
    atomic_fetch_add_explicit(counter, 1, memory_order_relaxed);
}

/* Runs the rate limits, and the backlog count when count_cap is not
 * NULL, on the limiter's backend. */
static int check_backend(struct casynq_limiter *l, const size_t *refs, size_t n,
                         const char *key, const char *queue,
                         const struct casynq__backlog_cap *count_cap,
                         struct casynq__verdict *v, char *errbuf)
{
    int rc;

    if (l->backend == CASYNQ_LIMITER_MEMORY) {
        return casynq__limiter_memory_check(l, refs, n, key,
                                            key != NULL ? strlen(key) : 0, v);
    }
    pthread_mutex_lock(&l->mu);
    rc = casynq__limiter_redis_run(&l->limits, &l->conn, refs, n, key, queue,
                                   count_cap != NULL ? count_cap->max_tasks : 0,
                                   v, errbuf);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* Counts the backlog of a queue that has a cap: on task_conn when there is
 * one, or else in the Redis limiter's own script call, which *count_cap
 * then names. A memory limiter has no Redis to count in. */
static int check_backlog(struct casynq_limiter *l,
                         struct casynq__conn *task_conn, const char *queue,
                         const struct casynq__backlog_cap **count_cap,
                         char *errbuf)
{
    const struct casynq__backlog_cap *cap = find_cap(&l->limits, queue);
    struct casynq__verdict v = {0};
    int rc;

    *count_cap = NULL;
    if (cap == NULL) {
        return 0;
    }
    if (task_conn != NULL) {
        rc = casynq__limiter_redis_run(&l->limits, task_conn, NULL, 0, NULL,
                                       queue, cap->max_tasks, &v, errbuf);
        return rc == CASYNQ_EBACKLOG ? backlog_full(cap, v.backlog, errbuf)
                                     : rc;
    }
    if (l->backend == CASYNQ_LIMITER_MEMORY) {
        return casynq__fail(errbuf, CASYNQ_ESTATE,
                            "queue \"%s\" has a backlog cap, which a memory "
                            "limiter cannot count without a Redis "
                            "connection: check through a client with "
                            "casynq_client_set_limiter, or use a Redis "
                            "limiter",
                            queue);
    }
    *count_cap = cap;
    return 0;
}

int casynq__limiter_admit(struct casynq_limiter *l,
                          struct casynq__conn *task_conn, const char *key,
                          const char *queue, const char *type,
                          size_t payload_len, int64_t *retry_after_ms,
                          char *errbuf)
{
    size_t refs[CASYNQ__LIMITER_MAX_RATES];
    const struct casynq__limits *ls = &l->limits;
    const struct casynq__backlog_cap *count_cap = NULL;
    struct casynq__verdict v = {0};
    size_t n;
    int rc;

    if (retry_after_ms != NULL) {
        *retry_after_ms = 0;
    }
    queue = queue != NULL ? queue : "default";
    rc = casynq__limiter_check_key(key, errbuf);
    if (rc == 0) {
        rc = check_queue_name(queue, "queue name", errbuf);
    }
    if (rc != 0) {
        return rc;
    }
    if (ls->max_payload > 0 && payload_len > ls->max_payload) {
        count_rejection(&l->payload_rejected);
        return casynq__fail(errbuf, CASYNQ_ETOOLARGE,
                            "payload is %zu bytes, above the maximum of %zu "
                            "bytes: send less, or store the data elsewhere "
                            "and pass a reference",
                            payload_len, ls->max_payload);
    }

    /* The backlog comes before the rate limits, so that a task rejected
     * by a full queue uses up no budget. */
    rc = check_backlog(l, task_conn, queue, &count_cap, errbuf);
    if (rc == CASYNQ_EBACKLOG) {
        count_rejection(&l->backlog_rejected);
    }
    if (rc != 0) {
        return rc;
    }
    n = applicable_rates(ls, key, key != NULL ? strlen(key) : 0, queue, type,
                         refs);
    if (n == 0 && count_cap == NULL) {
        return 0;
    }

    rc = check_backend(l, refs, n, key, queue, count_cap, &v, errbuf);
    switch (rc) {
    case CASYNQ_ERATELIMITED:
        count_rejection(&l->rate_rejected[refs[v.worst]]);
        if (retry_after_ms != NULL) {
            *retry_after_ms = v.retry_after_ms;
        }
        return rate_limited(&ls->rates[refs[v.worst]], key, queue, type,
                            v.retry_after_ms, errbuf);
    case CASYNQ_EBACKLOG:
        count_rejection(&l->backlog_rejected);
        return backlog_full(count_cap, v.backlog, errbuf);
    case CASYNQ_ENOMEM:
        return casynq__fail(errbuf, rc,
                            "out of memory while checking the rate limits");
    default:
        return rc;
    }
}

int casynq_limiter_check(struct casynq_limiter *l, const char *key,
                         const char *queue, const char *type,
                         size_t payload_len, int64_t *retry_after_ms)
{
    if (retry_after_ms != NULL) {
        *retry_after_ms = 0;
    }
    if (l == NULL) {
        return CASYNQ_EINVAL;
    }
    check_error.owner = l;
    check_error.msg[0] = '\0';
    return casynq__limiter_admit(l, NULL, key, queue, type, payload_len,
                                 retry_after_ms, check_error.msg);
}

/* ------------------------------------------------------------------------
 * Rejection counts
 */

size_t casynq_limiter_limit_count(const struct casynq_limiter *l)
{
    size_t n;

    if (l == NULL) {
        return 0;
    }
    n = l->limits.nrates;
    if (l->limits.ncaps > 0) {
        n++;
    }
    if (l->limits.max_payload > 0) {
        n++;
    }
    return n;
}

int casynq_limiter_rejections_at(const struct casynq_limiter *l, size_t index,
                                 const char **name, uint64_t *rejected)
{
    const _Atomic uint64_t *counter = NULL;
    const char *limit_name = NULL;

    if (l == NULL) {
        return CASYNQ_EINVAL;
    }

    /* The rate limits come first, then "max_backlog" when a queue has a
     * cap, then "max_payload" when a maximum is set. */
    if (index < l->limits.nrates) {
        limit_name = l->limits.rates[index].name;
        counter = &l->rate_rejected[index];
    } else {
        index -= l->limits.nrates;
        if (l->limits.ncaps > 0 && index == 0) {
            limit_name = CASYNQ__LIMIT_NAME_BACKLOG;
            counter = &l->backlog_rejected;
        } else if (l->limits.ncaps > 0) {
            index--;
        }
        if (counter == NULL && l->limits.max_payload > 0 && index == 0) {
            limit_name = CASYNQ__LIMIT_NAME_PAYLOAD;
            counter = &l->payload_rejected;
        }
    }
    if (counter == NULL) {
        return CASYNQ_EINVAL;
    }
    if (name != NULL) {
        *name = limit_name;
    }
    if (rejected != NULL) {
        *rejected = atomic_load_explicit(counter, memory_order_relaxed);
    }
    return 0;
}
