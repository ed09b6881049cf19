/* Helpers shared by the hiredis-based benchmark programs; see
 * bench_util.h. */
#include "bench_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

/* Largest Lua script file the programs read; the broker's are a few KiB. */
#define SCRIPT_MAX_BYTES (64 * 1024)

enum wire_type {
    WIRE_VARINT = 0,
    WIRE_LEN = 2,
};

int64_t bench_unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_new_id(char *out)
{
    uuid_t uuid;

    uuid_generate_random(uuid);
    uuid_unparse_lower(uuid, out);
}

/* Appends v as a protobuf varint at buf[*pos]. Returns -1 when it does not
 * fit. */
static int put_varint(uint8_t *buf, size_t cap, size_t *pos, uint64_t v)
{
    do {
        if (*pos >= cap) {
            return -1;
        }
        buf[(*pos)++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v != 0);
    return 0;
}

static int put_tag(uint8_t *buf, size_t cap, size_t *pos, int field,
                   enum wire_type wt)
{
    return put_varint(buf, cap, pos, ((uint64_t)field << 3) | wt);
}

/* Appends a length-delimited field unless it is empty. */
static int put_bytes(uint8_t *buf, size_t cap, size_t *pos, int field,
                     const void *data, size_t len)
{
    if (len == 0) {
        return 0;
    }
    if (put_tag(buf, cap, pos, field, WIRE_LEN) != 0 ||
        put_varint(buf, cap, pos, len) != 0 || cap - *pos < len) {
        return -1;
    }
    memcpy(buf + *pos, data, len);
    *pos += len;
    return 0;
}

/* Appends a varint field unless it is zero. Negative values take ten
 * bytes, as protobuf encodes int32 and int64. */
static int put_int(uint8_t *buf, size_t cap, size_t *pos, int field,
                   int64_t v)
{
    if (v == 0) {
        return 0;
    }
    if (put_tag(buf, cap, pos, field, WIRE_VARINT) != 0) {
        return -1;
    }
    return put_varint(buf, cap, pos, (uint64_t)v);
}

size_t bench_encode_task(const struct bench_task_fields *f, uint8_t *buf,
                         size_t cap)
{
    size_t pos = 0;

    /* Field numbers of TaskMessage in proto/asynq.proto. */
    if (put_bytes(buf, cap, &pos, 1, f->type, strlen(f->type)) != 0 ||
        put_bytes(buf, cap, &pos, 2, f->payload, f->payload_len) != 0 ||
        put_bytes(buf, cap, &pos, 3, f->id, strlen(f->id)) != 0 ||
        put_bytes(buf, cap, &pos, 4, f->queue, strlen(f->queue)) != 0 ||
        put_int(buf, cap, &pos, 5, f->max_retry) != 0 ||
        put_int(buf, cap, &pos, 8, f->timeout_s) != 0) {
        return 0;
    }
    return pos;
}

redisContext *bench_connect(const char *host, int port)
{
    struct timeval timeout = {.tv_sec = 5, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout(host, port, timeout);

    if (c == NULL) {
        fprintf(stderr, "cannot allocate a redis context for %s:%d\n", host,
                port);
        return NULL;
    }
    if (c->err != 0) {
        fprintf(stderr, "cannot connect to redis at %s:%d: %s; check that "
                        "redis-server listens there\n",
                host, port, c->errstr);
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Reads the whole file at path into a new NUL-terminated buffer.
 * Returns: the buffer (free with free()) and its length in *len, or NULL
 *          after printing why to stderr. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;

    if (f == NULL) {
        fprintf(stderr, "cannot open %s: %s; pass the runtime/lua directory "
                        "of the source tree with --lua-dir\n",
                path, strerror(errno));
        return NULL;
    }
    text = malloc(SCRIPT_MAX_BYTES + 1);
    if (text == NULL) {
        fprintf(stderr, "out of memory reading %s\n", path);
        fclose(f);
        return NULL;
    }
    *len = fread(text, 1, SCRIPT_MAX_BYTES + 1, f);
    if (ferror(f) || *len > SCRIPT_MAX_BYTES) {
        fprintf(stderr, "cannot read %s: read error or larger than %d "
                        "bytes\n",
                path, SCRIPT_MAX_BYTES);
        free(text);
        fclose(f);
        return NULL;
    }
    text[*len] = '\0';
    fclose(f);
    return text;
}

int bench_load_script(redisContext *c, const char *lua_dir, const char *name,
                      char *sha)
{
    char path[4096];
    size_t len = 0;
    char *text;
    redisReply *r;
    int rc = -1;

    snprintf(path, sizeof(path), "%s/%s", lua_dir, name);
    text = read_file(path, &len);
    if (text == NULL) {
        return -1;
    }
    r = redisCommand(c, "SCRIPT LOAD %b", text, len);
    if (r == NULL) {
        fprintf(stderr, "SCRIPT LOAD of %s failed: %s\n", path, c->errstr);
    } else if (r->type != REDIS_REPLY_STRING || r->len != 40) {
        fprintf(stderr, "SCRIPT LOAD of %s failed: %s\n", path,
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    } else {
        memcpy(sha, r->str, 40);
        sha[40] = '\0';
        rc = 0;
    }
    freeReplyObject(r);
    free(text);
    return rc;
}

int bench_parse_long(const char *name, const char *text, long min, long max,
                     long *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "invalid value '%s' for %s: pass an integer from "
                        "%ld to %ld\n",
                text, name, min, max);
        return -1;
    }
    *out = v;
    return 0;
}
