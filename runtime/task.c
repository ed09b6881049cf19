/* DESIGN: task objects.
 *
 * A task made by the caller owns copies of its type, payload and headers.
 * A task handed to a handler is a view over the decoded TaskMessage that
 * the worker already holds, so running a handler copies nothing. Both
 * kinds answer the same accessors. A task is used by one thread at a time;
 * accessors only read, so a task that nobody modifies may be read from
 * several threads. */
#include "task.h"

#include <string.h>

#include "alloc.h"
#include "util.h"

static const char empty_payload[1] = {0};

int casynq_task_create(const char *type, const void *payload,
                       size_t payload_len, struct casynq_task **out)
{
    struct casynq_task *t;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    /* asynq's Go decoder rejects a message whose type is not UTF-8. */
    if (casynq__is_blank(type) || !casynq__utf8_valid(type, strlen(type)) ||
        (payload == NULL && payload_len != 0)) {
        return CASYNQ_EINVAL;
    }
    t = casynq__calloc(1, sizeof(*t));
    if (t == NULL) {
        return CASYNQ_ENOMEM;
    }
    t->type = casynq__strdup(type);
    if (t->type == NULL) {
        goto out_nomem;
    }
    if (payload != NULL) {
        t->payload = casynq__malloc(payload_len);
        if (t->payload == NULL) {
            goto out_nomem;
        }
        memcpy(t->payload, payload, payload_len);
        t->payload_len = payload_len;
    }
    *out = t;
    return 0;

out_nomem:
    casynq_task_destroy(t);
    return CASYNQ_ENOMEM;
}

void casynq_task_destroy(struct casynq_task *task)
{
    if (task == NULL || task->view != NULL) {
        return;
    }
    for (size_t i = 0; i < task->nheaders; i++) {
        casynq__free(task->headers[i].key);
        casynq__free(task->headers[i].value);
    }
    casynq__free(task->headers);
    casynq__free(task->type);
    casynq__free(task->payload);
    casynq__free(task);
}

void casynq__task_view_init(struct casynq_task *t,
                            const Asynq__TaskMessage *msg)
{
    memset(t, 0, sizeof(*t));
    t->view = msg;
    t->view_has_payload = true;
}

int casynq_task_set_header(struct casynq_task *task, const char *key,
                           const char *value)
{
    char *k;
    char *v;

    if (task == NULL || task->view != NULL || key == NULL || value == NULL ||
        !casynq__utf8_valid(key, strlen(key)) ||
        !casynq__utf8_valid(value, strlen(value))) {
        return CASYNQ_EINVAL;
    }
    v = casynq__strdup(value);
    if (v == NULL) {
        return CASYNQ_ENOMEM;
    }
    for (size_t i = 0; i < task->nheaders; i++) {
        if (strcmp(task->headers[i].key, key) == 0) {
            casynq__free(task->headers[i].value);
            task->headers[i].value = v;
            return 0;
        }
    }
    if (task->nheaders == task->cap_headers) {
        size_t cap = task->cap_headers == 0 ? 4 : task->cap_headers * 2;
        struct casynq__header *h =
                casynq__realloc(task->headers, cap * sizeof(*h));

        if (h == NULL) {
            casynq__free(v);
            return CASYNQ_ENOMEM;
        }
        task->headers = h;
        task->cap_headers = cap;
    }
    k = casynq__strdup(key);
    if (k == NULL) {
        casynq__free(v);
        return CASYNQ_ENOMEM;
    }
    task->headers[task->nheaders].key = k;
    task->headers[task->nheaders].value = v;
    task->nheaders++;
    return 0;
}

const char *casynq_task_type(const struct casynq_task *task)
{
    if (task->view != NULL) {
        return task->view->type;
    }
    return task->type;
}

const void *casynq_task_payload(const struct casynq_task *task, size_t *len)
{
    if (task->view != NULL) {
        if (len != NULL) {
            *len = task->view->payload.len;
        }
        return task->view->payload.len > 0 ? task->view->payload.data
                                           : (const void *)empty_payload;
    }
    if (len != NULL) {
        *len = task->payload_len;
    }
    return task->payload;
}

const char *casynq_task_header(const struct casynq_task *task, const char *key)
{
    if (task->view != NULL) {
        return casynq__msg_header(task->view, key);
    }
    for (size_t i = 0; i < task->nheaders; i++) {
        if (strcmp(task->headers[i].key, key) == 0) {
            return task->headers[i].value;
        }
    }
    return NULL;
}

size_t casynq_task_header_count(const struct casynq_task *task)
{
    return task->view != NULL ? task->view->n_headers : task->nheaders;
}

int casynq_task_header_at(const struct casynq_task *task, size_t index,
                          const char **key, const char **value)
{
    if (index >= casynq_task_header_count(task)) {
        return CASYNQ_EINVAL;
    }
    if (task->view != NULL) {
        const Asynq__TaskMessage__HeadersEntry *e = task->view->headers[index];

        *key = e->key != NULL ? e->key : "";
        *value = e->value != NULL ? e->value : "";
        return 0;
    }
    *key = task->headers[index].key;
    *value = task->headers[index].value;
    return 0;
}
