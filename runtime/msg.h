#ifndef CASYNQ_RUNTIME_MSG_H
#define CASYNQ_RUNTIME_MSG_H

#include <stddef.h>

#include "asynq.pb-c.h"
#include "util.h"

/* A protobuf-c allocator that goes through casynq__malloc and
 * casynq__free, so decoded messages count against the user's allocator. */
extern ProtobufCAllocator casynq__pb_allocator;

/* Decodes a TaskMessage as stored in a task hash's `msg` field.
 * Returns NULL when the bytes are not a valid TaskMessage or on ENOMEM.
 * Ownership: free with casynq__msg_free(). Thread: any. */
Asynq__TaskMessage *casynq__msg_decode(const void *data, size_t len);

/* Frees a message from casynq__msg_decode(); NULL does nothing. */
void casynq__msg_free(Asynq__TaskMessage *msg);

/* Appends the encoding of msg to out. Fields equal to their proto3
 * default are left out, as Go's encoder does.
 * Returns: 0 or CASYNQ_ENOMEM. Thread: any. */
int casynq__msg_encode(const Asynq__TaskMessage *msg, struct casynq__buf *out);

/* Returns the value of header key in msg, or NULL. */
const char *casynq__msg_header(const Asynq__TaskMessage *msg, const char *key);

/* Appends the encoding of a ServerInfo or WorkerInfo to out.
 * Returns: 0 or CASYNQ_ENOMEM. */
int casynq__server_info_encode(const Asynq__ServerInfo *info,
                               struct casynq__buf *out);
int casynq__worker_info_encode(const Asynq__WorkerInfo *info,
                               struct casynq__buf *out);

#endif
