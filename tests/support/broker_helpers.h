/* Helpers for the broker integration tests.
 *
 * Each test sends broker commands through a real casynq__conn and checks
 * the resulting Redis state through a second, plain hiredis connection to
 * the same redis-server. The assertion helpers fail the running cmocka test
 * with a message that names the key and the value at fault.
 *
 * Nothing here is thread-safe: the tests run on one thread.
 */
#ifndef CASYNQ_TEST_BROKER_HELPERS_H
#define CASYNQ_TEST_BROKER_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "broker.h"
#include "conn.h"
#include "msg.h"
#include "redis_server.h"

/* State of one test: the connection under test, an inspection connection
 * and the number of live library allocations when the test started. */
struct broker_fixture {
    const struct test_redis *server;
    struct casynq__conn conn;
    redisContext *redis;
    long live_allocations_at_start;
};

/* Installs an allocator that counts the library's live allocations, so
 * that broker_fixture_teardown() can report leaks per test. Call it first
 * in main(), before any other casynq function. */
void broker_count_allocations(void);

/* Returns the number of blocks the library has allocated and not freed
 * since broker_count_allocations(). */
long broker_live_allocations(void);

/* Per-test cmocka setup for a group run with test_redis_group_setup():
 * empties the shared server with FLUSHALL, opens both connections and
 * stores a struct broker_fixture in *state.
 * Returns: 0, or -1 when the server or a connection is not usable. */
int broker_fixture_setup(void **state);

/* Per-test cmocka teardown: closes both connections and fails the test
 * when the library leaked allocations during it.
 * Returns: 0. */
int broker_fixture_teardown(void **state);

/* Builds options for 127.0.0.1:port. Returns: the options, which the
 * caller frees with casynq_redis_options_destroy(). Fails the test on
 * error. */
struct casynq_redis_options *broker_tcp_options(int port);

/* Sends cmd on fx->conn, frees cmd and returns the reply. Fails the test
 * when the transport reports an error (the message names conn->err).
 * Ownership: the caller frees the reply with freeReplyObject(). */
redisReply *broker_exec(struct broker_fixture *fx, struct casynq__cmd *cmd);

/* Sends cmd and maps the reply with casynq__broker_parse_enqueue().
 * Returns: its result, with the message in errbuf. */
int broker_exec_enqueue(struct broker_fixture *fx, struct casynq__cmd *cmd,
                        char *errbuf);

/* Sends cmd and maps the reply with casynq__broker_parse_status(). */
int broker_exec_status(struct broker_fixture *fx, struct casynq__cmd *cmd,
                       char *errbuf);

/* Sends cmd and maps the reply with casynq__broker_parse_count(). */
int64_t broker_exec_count(struct broker_fixture *fx, struct casynq__cmd *cmd,
                          char *errbuf);

/* A task message for the tests: a fresh UUID and its encoded TaskMessage. */
struct test_task {
    char id[CASYNQ__UUID_LEN + 1];
    char queue[64];
    struct casynq__buf msg;
};

/* Fills task with a new UUID and a TaskMessage of the given type, payload
 * (NULL for none), queue and unique_key (NULL for none), with retry 25.
 * Ownership: release it with test_task_free(). */
void test_task_init(struct test_task *task, const char *queue,
                    const char *type, const char *payload,
                    const char *unique_key);

/* Re-encodes the task's message with the given error text, retry count
 * and failure time, as a server does before retry or archive. */
void test_task_set_failure(struct test_task *task, const char *error_msg,
                           int retried, int64_t failed_at_s);

/* Re-encodes the task's message with completed_at set. */
void test_task_set_completed(struct test_task *task, int64_t completed_at_s);

void test_task_free(struct test_task *task);

/* Enqueues task with the real enqueue script and asserts that it was
 * stored. */
void broker_enqueue_task(struct broker_fixture *fx, struct test_task *task);

/* Enqueues task and dequeues it again, so it is active with a lease that
 * ends at lease_expiry_s. Fails the test unless exactly this task came
 * out. Use it on a queue with no other pending task. */
void broker_activate_task(struct broker_fixture *fx, struct test_task *task,
                          int64_t lease_expiry_s);

/* Formats a key name into one of 16 rotating static buffers of 512 bytes.
 * A result stays valid for the next 15 calls, so tests keep long-lived key
 * names in buffers of their own. */
const char *keyf(const char *fmt, ...) CASYNQ_PRINTF(1, 2);

/* Runs a command in hiredis format (%s, %b for bytes and length) on the
 * inspection connection and fails the test when hiredis returns no reply
 * or Redis returns an error reply. No printf attribute: the compiler
 * would reject %b.
 * Ownership: the caller frees the reply with freeReplyObject(). */
redisReply *redis_run(redisContext *c, const char *fmt, ...);

/* Inspection helpers. Each fails the test with the key in the message
 * when the check does not hold. */
void assert_key_type(redisContext *c, const char *key, const char *type);
void assert_key_exists(redisContext *c, const char *key);
void assert_key_missing(redisContext *c, const char *key);
void assert_string_value(redisContext *c, const char *key,
                         const char *expected);
/* Returns the integer at key, which must exist. */
long long redis_get_int(redisContext *c, const char *key);
/* Returns TTL (seconds) of key: -2 missing, -1 no expiry. */
long long redis_ttl(redisContext *c, const char *key);

void assert_hash_field(redisContext *c, const char *key, const char *field,
                       const char *expected);
void assert_hash_field_bytes(redisContext *c, const char *key,
                             const char *field, const void *expected,
                             size_t len);
void assert_hash_field_missing(redisContext *c, const char *key,
                               const char *field);
/* Asserts that the hash has exactly these fields, in any order (Redis
 * keeps insertion order only while a hash stays small). */
void assert_hash_fields(redisContext *c, const char *key,
                        const char *const *fields, size_t count);
/* Returns the value of field as an int64, which must exist. */
int64_t redis_hget_int(redisContext *c, const char *key, const char *field);
/* Decodes the msg field of the task hash at key, and fails the test when
 * the field is missing or invalid. Ownership: free with casynq__msg_free(). */
Asynq__TaskMessage *redis_hget_msg(redisContext *c, const char *key);

/* Asserts that LRANGE key 0 -1 returns exactly these items. */
void assert_list(redisContext *c, const char *key, const char *const *items,
                 size_t count);
long long redis_llen(redisContext *c, const char *key);

/* Returns the score of member in the zset at key, which must exist. */
int64_t redis_zscore(redisContext *c, const char *key, const char *member);
void assert_zset_lacks(redisContext *c, const char *key, const char *member);
long long redis_zcard(redisContext *c, const char *key);
bool redis_sismember(redisContext *c, const char *key, const char *member);

/* Writes the UTC date of now_s as YYYY-MM-DD. */
void utc_date(int64_t now_s, char out[11]);

/* Asserts that the daily counter at daily_key contains expected and
 * expires about 90 days after now_s (at most one minute earlier, to allow
 * for a slow test), and that the total counter contains expected and never
 * expires. */
void assert_counters(redisContext *c, const char *daily_key,
                     const char *total_key, long long expected,
                     int64_t now_s);

#endif /* CASYNQ_TEST_BROKER_HELPERS_H */
