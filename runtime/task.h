#ifndef CASYNQ_RUNTIME_TASK_H
#define CASYNQ_RUNTIME_TASK_H

#include <stdbool.h>
#include <stddef.h>

#include "msg.h"

struct casynq__header {
    char *key;
    char *value;
};

/* A task: owned (made by casynq_task_create, every field allocated) or a
 * view over a decoded TaskMessage (handler side, nothing allocated). */
struct casynq_task {
    char *type;    /* owned tasks only */
    void *payload; /* owned; NULL for no payload */
    size_t payload_len;
    struct casynq__header *headers; /* owned tasks only */
    size_t nheaders;
    size_t cap_headers;
    const Asynq__TaskMessage *view; /* non-NULL for a view */
    bool view_has_payload;
};

/* Makes t a read-only view of msg; t must not be destroyed, and it is
 * valid while msg lives. A message with an empty payload is shown as an
 * empty, non-NULL payload. */
void casynq__task_view_init(struct casynq_task *t,
                            const Asynq__TaskMessage *msg);

#endif
