/* Helpers shared by the benchmark programs that talk to Redis through
 * hiredis directly (load_tasks.c, ceiling.c): clocks, task IDs, the asynq
 * TaskMessage encoding and loading the broker's Lua scripts. */
#ifndef CASYNQ_BENCH_UTIL_H
#define CASYNQ_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

/* Length of a task ID: a UUID in its 36-character text form. */
#define BENCH_ID_LEN 36

/* Default per-attempt timeout that asynq v0.26.0's client writes into a
 * task without a timeout or deadline (client.go, defaultTimeout), in
 * seconds. */
#define BENCH_DEFAULT_TIMEOUT_S 1800

/* Returns the wall-clock time in unix nanoseconds. */
int64_t bench_unix_ns(void);

/* Returns a monotonic clock reading in nanoseconds. */
int64_t bench_mono_ns(void);

/* Writes a new random UUID in lowercase text form and a NUL into
 * out[BENCH_ID_LEN + 1]. */
void bench_new_id(char *out);

/* Fields of asynq's TaskMessage (proto/asynq.proto) that the benchmarks
 * set. Zero values are left out of the encoding, as proto3 does. */
struct bench_task_fields {
    const char *type;
    const void *payload;
    size_t payload_len;
    const char *id;
    const char *queue;
    int32_t max_retry;
    int64_t timeout_s;
};

/* Encodes f as a protobuf TaskMessage into buf.
 * Returns: the encoded length, or 0 when it does not fit in cap bytes. */
size_t bench_encode_task(const struct bench_task_fields *f, uint8_t *buf,
                         size_t cap);

/* Connects to Redis at host:port with a 5 s timeout.
 * Returns: the context, or NULL after printing why to stderr.
 * Ownership: free with redisFree(). */
redisContext *bench_connect(const char *host, int port);

/* Reads lua_dir/name, sends it with SCRIPT LOAD and writes the SHA1 that
 * Redis returns, NUL-terminated, into sha[41].
 * Returns: 0, or -1 after printing why to stderr. */
int bench_load_script(redisContext *c, const char *lua_dir, const char *name,
                      char *sha);

/* Parses a decimal integer from min to max for option `name`.
 * Returns: 0, or -1 after printing why to stderr. */
int bench_parse_long(const char *name, const char *text, long min, long max,
                     long *out);

#endif
