/* DESIGN: the protobuf messages asynq stores in Redis.
 *
 * A thin layer over the code protoc-c generates from proto/asynq.proto:
 * decoding goes through the library's allocator, and encoding appends to a
 * casynq__buf so callers can build Redis arguments without extra copies.
 * protobuf-c omits proto3 fields that hold their default value and writes
 * fields in ascending number order, which matches what asynq's Go encoder
 * writes (map entries aside, whose order is unspecified in both). */
#include "msg.h"

#include <string.h>

#include "alloc.h"

static void *pb_alloc(void *ud, size_t size)
{
    (void)ud;
    return casynq__malloc(size);
}

static void pb_free(void *ud, void *ptr)
{
    (void)ud;
    casynq__free(ptr);
}

ProtobufCAllocator casynq__pb_allocator = {
        .alloc = pb_alloc,
        .free = pb_free,
        .allocator_data = NULL,
};

Asynq__TaskMessage *casynq__msg_decode(const void *data, size_t len)
{
    return asynq__task_message__unpack(&casynq__pb_allocator, len,
                                       (const uint8_t *)data);
}

void casynq__msg_free(Asynq__TaskMessage *msg)
{
    if (msg != NULL) {
        asynq__task_message__free_unpacked(msg, &casynq__pb_allocator);
    }
}

static int pack_message(const ProtobufCMessage *m, struct casynq__buf *out)
{
    size_t size = protobuf_c_message_get_packed_size(m);

    if (casynq__buf_reserve(out, size) != 0) {
        return CASYNQ_ENOMEM;
    }
    protobuf_c_message_pack(m, (uint8_t *)out->data + out->len);
    out->len += size;
    out->data[out->len] = '\0';
    return 0;
}

int casynq__msg_encode(const Asynq__TaskMessage *msg, struct casynq__buf *out)
{
    return pack_message(&msg->base, out);
}

int casynq__server_info_encode(const Asynq__ServerInfo *info,
                               struct casynq__buf *out)
{
    return pack_message(&info->base, out);
}

int casynq__worker_info_encode(const Asynq__WorkerInfo *info,
                               struct casynq__buf *out)
{
    return pack_message(&info->base, out);
}

const char *casynq__msg_header(const Asynq__TaskMessage *msg, const char *key)
{
    for (size_t i = 0; i < msg->n_headers; i++) {
        const Asynq__TaskMessage__HeadersEntry *e = msg->headers[i];

        if (e->key != NULL && strcmp(e->key, key) == 0) {
            return e->value != NULL ? e->value : "";
        }
    }
    return NULL;
}
