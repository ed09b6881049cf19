/* casynq: a task-queue worker runtime and client in C that speaks the Redis
 * protocol of the Go library asynq (release v0.26.0).
 *
 * Tasks enqueued through this client are processed by a Go asynq server and
 * the other way round, and asynq's Inspector, CLI and web UI read the state
 * casynq writes.
 *
 * Conventions for the whole API:
 * - Status functions return 0 on success or a negative CASYNQ_E* code.
 * - Constructors that can fail take an out-parameter and set it to NULL on
 *   failure. destroy(NULL) does nothing.
 * - Strings passed in are copied unless a comment says "borrowed".
 * - Every function ends its comment with a Thread: line. "any" means any
 *   thread, "one thread at a time" means the object has no internal lock.
 */
#ifndef CASYNQ_H
#define CASYNQ_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <casynq/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define CASYNQ_API __attribute__((visibility("default")))
#define CASYNQ_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CASYNQ_API
#define CASYNQ_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------------------
 * Errors
 *
 * Codes are negative and append-only: a code is never renumbered, reused or
 * removed. Objects also keep a message for their last failure, which names
 * the value at fault (see the *_last_error functions).
 */
#define CASYNQ_ERRNO_MAP(X)                                                   \
    X(EINVAL, -1, "invalid argument")                                         \
    X(ENOMEM, -2, "out of memory")                                            \
    X(ESTATE, -3, "operation not allowed in the current state")              \
    X(EEXIST, -4, "already exists")                                           \
    X(ENOTFOUND, -5, "not found")                                             \
    X(EREDIS, -6, "redis command failed")                                     \
    X(EPROTO, -7, "undecodable task message")                                 \
    X(ETIMEDOUT, -8, "timed out")                                             \
    X(ECANCELED, -9, "canceled")                                              \
    X(ESHUTDOWN, -10, "shutting down")                                        \
    X(ESYS, -11, "system call failed")                                        \
    X(ECONNECT, -12, "cannot connect to redis")                               \
    X(EAUTH, -13, "redis authentication failed")                              \
    X(ETASKID_CONFLICT, -14, "task ID conflicts with another task")           \
    X(EDUPLICATE, -15, "task already exists")                                 \
    X(EHANDLER, -16, "task handler failed")                                   \
    X(ESKIP_RETRY, -17, "task failed and must not be retried")               \
    X(EREVOKE, -18, "task revoked")                                           \
    X(ENOHANDLER, -19, "handler not found for task type")

enum casynq_errno {
    CASYNQ_OK = 0,
#define CASYNQ_ERRNO_ENUM(name, code, text) CASYNQ_##name = code,
    CASYNQ_ERRNO_MAP(CASYNQ_ERRNO_ENUM)
#undef CASYNQ_ERRNO_ENUM
};

/* Returns a static description of `err`, or "unknown error" for a code this
 * version does not know. Never NULL.
 * Thread: any. */
CASYNQ_API const char *casynq_strerror(int err);

/* Returns the static name of `err` ("CASYNQ_EINVAL"), or "CASYNQ_EUNKNOWN".
 * Thread: any. */
CASYNQ_API const char *casynq_err_name(int err);

/* Returns the library version as "MAJOR.MINOR.PATCH". Thread: any. */
CASYNQ_API const char *casynq_version(void);

/* ------------------------------------------------------------------------
 * Allocator
 */

/* Replaces the allocator used for everything the library allocates,
 * including hiredis, cJSON and protobuf-c buffers it requests. The functions
 * must be thread-safe. Call it before any other casynq function, or not at
 * all. Any of the four may be NULL to keep the C library's function.
 * Thread: setup, before anything else. */
CASYNQ_API void casynq_set_allocator(void *(*malloc_fn)(size_t),
                                     void *(*calloc_fn)(size_t, size_t),
                                     void *(*realloc_fn)(void *, size_t),
                                     void (*free_fn)(void *));

/* Frees memory that the library allocated for the caller, where a function
 * comment says to use it.
 * Thread: any. */
CASYNQ_API void casynq_free(void *ptr);

/* ------------------------------------------------------------------------
 * Logging
 */
enum casynq_log_level {
    CASYNQ_LOG_DEBUG = 0,
    CASYNQ_LOG_INFO = 1,
    CASYNQ_LOG_WARN = 2,
    CASYNQ_LOG_ERROR = 3,
};

/* A log sink. It may be called from any thread, several at once, and must
 * not call back into casynq except casynq_strerror and casynq_err_name.
 * `msg` and `file` are valid only during the call. */
typedef void (*casynq_log_fn)(enum casynq_log_level level, const char *msg,
                              const char *file, int line, void *ud);

/* Returns the lowercase name of `level` ("debug", "info", "warn", "error"),
 * or "unknown".
 * Thread: any. */
CASYNQ_API const char *casynq_log_level_name(enum casynq_log_level level);

/* Parses "debug", "info", "warn"/"warning" or "error" (any case) into *out.
 * Returns: 0, or CASYNQ_EINVAL for any other string.
 * Thread: any. */
CASYNQ_API int casynq_log_level_parse(const char *name,
                                      enum casynq_log_level *out);

/* ------------------------------------------------------------------------
 * Redis connection options
 *
 * A plain value object: create it, set what differs from the defaults
 * (127.0.0.1:6379, database 0, no password, 5000 ms connect timeout,
 * 5000 ms command timeout), pass it to a client or server, which copy it,
 * then destroy it. One thread at a time.
 */
struct casynq_redis_options;

/* Creates options holding the defaults.
 * Returns: 0 or CASYNQ_ENOMEM.
 * Ownership: free *out with casynq_redis_options_destroy().
 * Thread: any. */
CASYNQ_API int casynq_redis_options_create(struct casynq_redis_options **out);

/* Frees the options. Thread: one thread at a time. */
CASYNQ_API void casynq_redis_options_destroy(struct casynq_redis_options *o);

/* Sets every field from a URL of the form
 * redis://[[user]:password@]host[:port][/db] or
 * unix://[[user]:password@]/path/to/socket[?db=N]. Percent-escapes in the
 * user and password are decoded. Fields the URL does not name are reset to
 * their defaults, except the timeouts.
 * Returns: 0, or CASYNQ_EINVAL with a message in
 *          casynq_redis_options_last_error() naming the bad part.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_redis_options_set_url(struct casynq_redis_options *o,
                                            const char *url);

/* Sets a TCP address. Returns: 0, CASYNQ_EINVAL (empty host, port outside
 * 1..65535), CASYNQ_ENOMEM. Thread: one thread at a time. */
CASYNQ_API int casynq_redis_options_set_tcp(struct casynq_redis_options *o,
                                            const char *host, int port);

/* Sets a Unix socket path, which replaces any TCP address.
 * Returns: 0, CASYNQ_EINVAL (empty path), CASYNQ_ENOMEM.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_redis_options_set_unix(struct casynq_redis_options *o,
                                             const char *path);

/* Sets the database number. Returns: 0 or CASYNQ_EINVAL when db < 0.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_redis_options_set_db(struct casynq_redis_options *o,
                                           int db);

/* Sets the credentials sent with AUTH. `username` may be NULL for the
 * default user (plain "AUTH password"); `password` NULL clears both.
 * Returns: 0, CASYNQ_EINVAL (username without password), CASYNQ_ENOMEM.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_redis_options_set_auth(struct casynq_redis_options *o,
                                             const char *username,
                                             const char *password);

/* Sets the connect and command timeouts in milliseconds; 0 keeps the
 * current value. Returns: 0 or CASYNQ_EINVAL when one is negative.
 * Thread: one thread at a time. */
CASYNQ_API int
casynq_redis_options_set_timeouts(struct casynq_redis_options *o,
                                  int connect_timeout_ms,
                                  int command_timeout_ms);

/* Writes a description of the address ("127.0.0.1:6379/0" or
 * "unix:/path?db=0") without credentials into buf, truncated to len.
 * Returns: the length the full text needs, as snprintf does.
 * Thread: one thread at a time. */
CASYNQ_API int
casynq_redis_options_describe(const struct casynq_redis_options *o, char *buf,
                              size_t len);

/* Returns the message of the last failed call on `o`, or "" if none.
 * Ownership: valid until the next call on `o`.
 * Thread: one thread at a time. */
CASYNQ_API const char *
casynq_redis_options_last_error(const struct casynq_redis_options *o);

/* ------------------------------------------------------------------------
 * Tasks
 *
 * A task is a type name, an optional payload and optional headers. The
 * client copies what it needs, so a task may be destroyed or reused right
 * after enqueue. Handlers receive a read-only task that is valid until they
 * return.
 */
struct casynq_task;

/* Creates a task. A NULL payload means "no payload"; a non-NULL payload of
 * length 0 means "empty payload". asynq stores both the same way, but they
 * give different uniqueness keys.
 * Returns: 0, CASYNQ_EINVAL (type NULL or blank), CASYNQ_ENOMEM.
 * Ownership: type and payload are copied; free *out with
 *            casynq_task_destroy().
 * Thread: any. */
CASYNQ_API int casynq_task_create(const char *type, const void *payload,
                                  size_t payload_len, struct casynq_task **out);

/* Frees a task made by casynq_task_create(). Thread: one thread at a time. */
CASYNQ_API void casynq_task_destroy(struct casynq_task *task);

/* Sets header `key` to `value`, replacing an earlier value of the key.
 * Returns: 0, CASYNQ_EINVAL (NULL key or value, or not valid UTF-8, which
 *          asynq's Go decoder would reject), CASYNQ_ENOMEM.
 * Ownership: key and value are copied.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_task_set_header(struct casynq_task *task,
                                      const char *key, const char *value);

/* Returns the type name. Ownership: borrowed from the task.
 * Thread: any, while the task lives. */
CASYNQ_API const char *casynq_task_type(const struct casynq_task *task);

/* Returns the payload and stores its length in *len (if len is not NULL).
 * Returns NULL when the task has no payload.
 * Ownership: borrowed from the task. Thread: any, while the task lives. */
CASYNQ_API const void *casynq_task_payload(const struct casynq_task *task,
                                           size_t *len);

/* Returns the value of header `key`, or NULL when it is absent.
 * Ownership: borrowed from the task. Thread: any, while the task lives. */
CASYNQ_API const char *casynq_task_header(const struct casynq_task *task,
                                          const char *key);

/* Returns the number of headers. Thread: any, while the task lives. */
CASYNQ_API size_t casynq_task_header_count(const struct casynq_task *task);

/* Stores the key and value of header number `index` (0-based, in no
 * particular order) in *key and *value.
 * Returns: 0 or CASYNQ_EINVAL when index is out of range.
 * Ownership: borrowed from the task. Thread: any, while the task lives. */
CASYNQ_API int casynq_task_header_at(const struct casynq_task *task,
                                     size_t index, const char **key,
                                     const char **value);

/* ------------------------------------------------------------------------
 * Enqueue options
 *
 * The options of asynq's client. Unset options take asynq's defaults: queue
 * "default", max retry 25, a 1800 s timeout when neither timeout nor
 * deadline is set, no retention, processed at once, not unique. Setters
 * store values; the enqueue call validates them, so that the message lands
 * in the client's last error. One thread at a time.
 */
struct casynq_enqueue_options;

/* Creates an empty option set. Returns: 0 or CASYNQ_ENOMEM.
 * Ownership: free *out with casynq_enqueue_options_destroy().
 * Thread: any. */
CASYNQ_API int
casynq_enqueue_options_create(struct casynq_enqueue_options **out);

/* Frees the options. Thread: one thread at a time. */
CASYNQ_API void
casynq_enqueue_options_destroy(struct casynq_enqueue_options *o);

/* The setters below return 0, or CASYNQ_ENOMEM when copying a string
 * fails, or CASYNQ_EINVAL for a NULL object. Values are checked at enqueue.
 * Thread: one thread at a time. */

/* Queue name; must contain a non-space character and be at most 255 bytes.
 */
CASYNQ_API int casynq_enqueue_options_set_queue(
        struct casynq_enqueue_options *o, const char *queue);
/* Maximum number of retries after the first attempt; must be >= 0. */
CASYNQ_API int casynq_enqueue_options_set_max_retry(
        struct casynq_enqueue_options *o, int max_retry);
/* Per-attempt timeout in seconds; 0 means no timeout. */
CASYNQ_API int casynq_enqueue_options_set_timeout_s(
        struct casynq_enqueue_options *o, int64_t timeout_s);
/* Absolute deadline in unix seconds; 0 means no deadline. */
CASYNQ_API int casynq_enqueue_options_set_deadline_unix_s(
        struct casynq_enqueue_options *o, int64_t deadline_unix_s);
/* Time at which the task becomes ready, in unix seconds. A time in the
 * future schedules the task. Replaces an earlier process-in value. */
CASYNQ_API int casynq_enqueue_options_set_process_at_unix_s(
        struct casynq_enqueue_options *o, int64_t process_at_unix_s);
/* Delay in seconds from the enqueue call until the task is ready. Replaces
 * an earlier process-at value. */
CASYNQ_API int casynq_enqueue_options_set_process_in_s(
        struct casynq_enqueue_options *o, int64_t process_in_s);
/* Makes the task unique for ttl_s seconds (>= 1) by type, payload and
 * queue. */
CASYNQ_API int casynq_enqueue_options_set_unique_ttl_s(
        struct casynq_enqueue_options *o, int64_t ttl_s);
/* Task ID; must not be blank. Default: a new random UUID. */
CASYNQ_API int casynq_enqueue_options_set_task_id(
        struct casynq_enqueue_options *o, const char *task_id);
/* Seconds to keep the task as completed after success; must be >= 0. */
CASYNQ_API int casynq_enqueue_options_set_retention_s(
        struct casynq_enqueue_options *o, int64_t retention_s);
/* Group name for aggregation; must not be blank. */
CASYNQ_API int casynq_enqueue_options_set_group(
        struct casynq_enqueue_options *o, const char *group);

/* ------------------------------------------------------------------------
 * Task info
 *
 * What the client returns for an enqueued task. Immutable; any thread may
 * read it while it lives.
 */
struct casynq_task_info;

enum casynq_task_state {
    CASYNQ_STATE_ACTIVE = 1,
    CASYNQ_STATE_PENDING = 2,
    CASYNQ_STATE_SCHEDULED = 3,
    CASYNQ_STATE_RETRY = 4,
    CASYNQ_STATE_ARCHIVED = 5,
    CASYNQ_STATE_COMPLETED = 6,
    CASYNQ_STATE_AGGREGATING = 7,
};

/* Returns the state's name as asynq writes it in Redis ("pending", ...), or
 * "unknown". Thread: any. */
CASYNQ_API const char *casynq_task_state_name(enum casynq_task_state state);

/* Frees the info. Thread: one thread at a time. */
CASYNQ_API void casynq_task_info_destroy(struct casynq_task_info *info);

/* Accessors. Strings are borrowed from the info. Thread: any. */
CASYNQ_API const char *
casynq_task_info_id(const struct casynq_task_info *info);
CASYNQ_API const char *
casynq_task_info_queue(const struct casynq_task_info *info);
CASYNQ_API const char *
casynq_task_info_type(const struct casynq_task_info *info);
/* Returns the group name, or NULL when the task has none. */
CASYNQ_API const char *
casynq_task_info_group(const struct casynq_task_info *info);
CASYNQ_API enum casynq_task_state
casynq_task_info_state(const struct casynq_task_info *info);
CASYNQ_API int casynq_task_info_max_retry(const struct casynq_task_info *info);
/* 0 means no timeout. */
CASYNQ_API int64_t
casynq_task_info_timeout_s(const struct casynq_task_info *info);
/* 0 means no deadline. */
CASYNQ_API int64_t
casynq_task_info_deadline_unix_s(const struct casynq_task_info *info);
/* 0 means none: the task is aggregating. */
CASYNQ_API int64_t
casynq_task_info_next_process_at_unix_s(const struct casynq_task_info *info);
CASYNQ_API int64_t
casynq_task_info_retention_s(const struct casynq_task_info *info);

/* ------------------------------------------------------------------------
 * Client
 *
 * Enqueues tasks over one synchronous Redis connection, which it opens on
 * first use and opens again after a failure. A client has no internal lock:
 * use it from one thread at a time, or make one client per thread.
 */
struct casynq_client;

/* Creates a client. It does not connect yet; call casynq_client_ping() to
 * check the connection up front.
 * Returns: 0, CASYNQ_EINVAL (NULL options), CASYNQ_ENOMEM.
 * Ownership: `redis` is copied. Free *out with casynq_client_destroy().
 * Thread: any. */
CASYNQ_API int casynq_client_create(const struct casynq_redis_options *redis,
                                    struct casynq_client **out);

/* Closes the connection and frees the client.
 * Thread: one thread at a time. */
CASYNQ_API void casynq_client_destroy(struct casynq_client *client);

/* Connects if needed and sends PING.
 * Returns: 0, CASYNQ_ECONNECT (unreachable), CASYNQ_EAUTH (bad credentials),
 *          CASYNQ_ETIMEDOUT, CASYNQ_EREDIS; the message is in
 *          casynq_client_last_error().
 * Thread: one thread at a time. */
CASYNQ_API int casynq_client_ping(struct casynq_client *client);

/* Enqueues `task` with `opts` (NULL for the defaults), as asynq's
 * Client.Enqueue does: a future process time schedules the task, a group
 * adds it to that group, anything else makes it pending.
 * Returns: 0, CASYNQ_EINVAL (bad option, message names it),
 *          CASYNQ_ETASKID_CONFLICT (the task ID is taken),
 *          CASYNQ_EDUPLICATE (a unique task holds the lock), CASYNQ_ENOMEM,
 *          or a connection error as casynq_client_ping() returns.
 *          Nothing is written to Redis when validation fails.
 * Ownership: task and opts are only read. When info_out is not NULL and the
 *            call succeeds, *info_out is set to a new info freed with
 *            casynq_task_info_destroy(); on failure it is set to NULL.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_client_enqueue(struct casynq_client *client,
                                     const struct casynq_task *task,
                                     const struct casynq_enqueue_options *opts,
                                     struct casynq_task_info **info_out);

/* Returns the message of the last failed call on `client`, or "".
 * Ownership: valid until the next call on `client`.
 * Thread: one thread at a time. */
CASYNQ_API const char *
casynq_client_last_error(const struct casynq_client *client);

#ifdef __cplusplus
}
#endif

#endif
