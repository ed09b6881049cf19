/* DESIGN: enqueue options and their validation.
 *
 * Options are a value object filled by one thread. Setters only store;
 * casynq__enqueue_plan() validates everything at enqueue time and applies
 * asynq's defaults (asynq v0.26.0, client.go: composeOptions and
 * Client.EnqueueContext), so that every rejection leaves a message naming
 * the field in the client's last error. */
#include <string.h>

#include "alloc.h"
#include "broker.h"
#include "client.h"
#include "limiter.h"

/* asynq's defaults: 25 retries, and a 30 minute timeout when the caller
 * sets neither a timeout nor a deadline. */
#define DEFAULT_MAX_RETRY 25
#define DEFAULT_TIMEOUT_S 1800

int casynq_enqueue_options_create(struct casynq_enqueue_options **out)
{
    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = casynq__calloc(1, sizeof(**out));
    return *out != NULL ? 0 : CASYNQ_ENOMEM;
}

void casynq_enqueue_options_destroy(struct casynq_enqueue_options *o)
{
    if (o == NULL) {
        return;
    }
    casynq__free(o->queue);
    casynq__free(o->task_id);
    casynq__free(o->group);
    casynq__free(o->rate_key);
    casynq__free(o);
}

static int replace_string(char **slot, const char *value)
{
    char *copy = NULL;

    if (value != NULL) {
        copy = casynq__strdup(value);
        if (copy == NULL) {
            return CASYNQ_ENOMEM;
        }
    }
    casynq__free(*slot);
    *slot = copy;
    return 0;
}

int casynq_enqueue_options_set_queue(struct casynq_enqueue_options *o,
                                     const char *queue)
{
    return o != NULL ? replace_string(&o->queue, queue) : CASYNQ_EINVAL;
}

int casynq_enqueue_options_set_max_retry(struct casynq_enqueue_options *o,
                                         int max_retry)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_max_retry = true;
    o->max_retry = max_retry;
    return 0;
}

int casynq_enqueue_options_set_timeout_s(struct casynq_enqueue_options *o,
                                         int64_t timeout_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_timeout = true;
    o->timeout_s = timeout_s;
    return 0;
}

int casynq_enqueue_options_set_deadline_unix_s(struct casynq_enqueue_options *o,
                                               int64_t deadline_unix_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_deadline = true;
    o->deadline_unix_s = deadline_unix_s;
    return 0;
}

int casynq_enqueue_options_set_process_at_unix_s(
        struct casynq_enqueue_options *o, int64_t process_at_unix_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_process_at = true;
    o->has_process_in = false;
    o->process_at_unix_s = process_at_unix_s;
    return 0;
}

int casynq_enqueue_options_set_process_in_s(struct casynq_enqueue_options *o,
                                            int64_t process_in_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_process_in = true;
    o->has_process_at = false;
    o->process_in_s = process_in_s;
    return 0;
}

int casynq_enqueue_options_set_unique_ttl_s(struct casynq_enqueue_options *o,
                                            int64_t ttl_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_unique = true;
    o->unique_ttl_s = ttl_s;
    return 0;
}

int casynq_enqueue_options_set_task_id(struct casynq_enqueue_options *o,
                                       const char *task_id)
{
    return o != NULL ? replace_string(&o->task_id, task_id) : CASYNQ_EINVAL;
}

int casynq_enqueue_options_set_retention_s(struct casynq_enqueue_options *o,
                                           int64_t retention_s)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    o->has_retention = true;
    o->retention_s = retention_s;
    return 0;
}

int casynq_enqueue_options_set_group(struct casynq_enqueue_options *o,
                                     const char *group)
{
    return o != NULL ? replace_string(&o->group, group) : CASYNQ_EINVAL;
}

int casynq_enqueue_options_set_rate_key(struct casynq_enqueue_options *o,
                                        const char *key)
{
    return o != NULL ? replace_string(&o->rate_key, key) : CASYNQ_EINVAL;
}

static int check_name(const char *value, const char *field, char *errbuf)
{
    size_t len = strlen(value);

    if (casynq__is_blank(value)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is empty: it needs at least one character "
                            "that is not a space",
                            field);
    }
    if (!casynq__utf8_valid(value, len)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "%s is not valid UTF-8, which asynq's decoder "
                            "rejects",
                            field);
    }
    return 0;
}

static int plan_names(const struct casynq_enqueue_options *o,
                      struct casynq__enqueue_plan *plan, char *errbuf)
{
    int rc;

    plan->queue = o->queue != NULL ? o->queue : "default";
    rc = check_name(plan->queue, "queue name", errbuf);
    if (rc != 0) {
        return rc;
    }
    if (strlen(plan->queue) > CASYNQ__MAX_QUEUE_LEN) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "queue name is %zu bytes long: the maximum is %d",
                            strlen(plan->queue), CASYNQ__MAX_QUEUE_LEN);
    }
    if (o->task_id != NULL) {
        rc = check_name(o->task_id, "task ID", errbuf);
        if (rc != 0) {
            return rc;
        }
        plan->task_id = o->task_id;
    }
    if (o->group != NULL) {
        rc = check_name(o->group, "group name", errbuf);
        if (rc != 0) {
            return rc;
        }
        plan->group = o->group;
    }
    if (o->rate_key != NULL) {
        rc = casynq__limiter_check_key(o->rate_key, errbuf);
        if (rc != 0) {
            return rc;
        }
        plan->rate_key = o->rate_key;
    }
    return 0;
}

static int plan_times(const struct casynq_enqueue_options *o, int64_t now_s,
                      struct casynq__enqueue_plan *plan, char *errbuf)
{
    if (o->has_timeout && o->timeout_s < 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "timeout_s is %lld: it must be 0 (none) or more",
                            (long long)o->timeout_s);
    }
    if (o->has_deadline && o->deadline_unix_s < 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "deadline_unix_s is %lld: it must be 0 (none) "
                            "or a unix time",
                            (long long)o->deadline_unix_s);
    }
    /* asynq silently turns "no timeout and no deadline" into a 30 minute
     * timeout. A caller who explicitly set both to zero asked for
     * something else, so say so instead of guessing. */
    if ((o->has_timeout || o->has_deadline) &&
        (!o->has_timeout || o->timeout_s == 0) &&
        (!o->has_deadline || o->deadline_unix_s == 0)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "timeout_s and deadline_unix_s are both 0, which "
                            "asynq would replace with a %d s timeout: set a "
                            "timeout above 0 or a deadline, or set neither "
                            "to get the default",
                            DEFAULT_TIMEOUT_S);
    }
    plan->timeout_s = o->has_timeout ? o->timeout_s : 0;
    plan->deadline_unix_s = o->has_deadline ? o->deadline_unix_s : 0;
    if (!o->has_timeout && !o->has_deadline) {
        plan->timeout_s = DEFAULT_TIMEOUT_S;
    }
    if (o->has_retention && o->retention_s < 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "retention_s is %lld: it must be 0 or more",
                            (long long)o->retention_s);
    }
    plan->retention_s = o->has_retention ? o->retention_s : 0;
    if (o->has_unique && o->unique_ttl_s < 1) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "unique_ttl_s is %lld: a unique TTL cannot be "
                            "less than 1 s",
                            (long long)o->unique_ttl_s);
    }
    plan->unique_ttl_s = o->has_unique ? o->unique_ttl_s : 0;
    if (o->has_process_in && o->process_in_s < 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "process_in_s is %lld: it must be 0 or more",
                            (long long)o->process_in_s);
    }
    if (o->has_process_at && o->process_at_unix_s > now_s) {
        plan->process_at_unix_s = o->process_at_unix_s;
    } else if (o->has_process_in && o->process_in_s > 0) {
        plan->process_at_unix_s = now_s + o->process_in_s;
    }
    return 0;
}

int casynq__enqueue_plan(const struct casynq_enqueue_options *opts,
                         int64_t now_s, struct casynq__enqueue_plan *plan,
                         char *errbuf)
{
    static const struct casynq_enqueue_options defaults;
    const struct casynq_enqueue_options *o = opts != NULL ? opts : &defaults;
    int rc;

    memset(plan, 0, sizeof(*plan));
    rc = plan_names(o, plan, errbuf);
    if (rc != 0) {
        return rc;
    }
    if (o->has_max_retry && o->max_retry < 0) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "max_retry is %d: it must be 0 or more",
                            o->max_retry);
    }
    plan->max_retry = o->has_max_retry ? o->max_retry : DEFAULT_MAX_RETRY;
    rc = plan_times(o, now_s, plan, errbuf);
    if (rc != 0) {
        return rc;
    }
    if (plan->task_id == NULL) {
        casynq__uuid(plan->id);
        plan->task_id = plan->id;
    }
    return 0;
}
