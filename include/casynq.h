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
    X(ENOHANDLER, -19, "handler not found for task type")                    \
    X(ERATELIMITED, -20, "enqueue rejected by a rate limit")                  \
    X(EBACKLOG, -21, "queue backlog is at its cap")                           \
    X(ETOOLARGE, -22, "payload exceeds the maximum size")

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
 * Returns: 0, CASYNQ_EINVAL (type NULL, blank or not valid UTF-8),
 *          CASYNQ_ENOMEM.
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

/* ------------------------------------------------------------------------
 * Handler context (handler side)
 *
 * Each running task has a context that its handler (and middleware)
 * receive. It is valid until the handler returns and belongs to the worker
 * thread that runs the handler. Functions marked "Thread: handler" may be
 * called only from that thread while the handler runs, except
 * casynq_ctx_is_cancelled(), which any thread may call while the handler
 * runs.
 */
struct casynq_ctx;

/* Returns the task ID. Ownership: borrowed from the context.
 * Thread: handler. */
CASYNQ_API const char *casynq_ctx_task_id(const struct casynq_ctx *ctx);

/* Returns the queue the task came from. Ownership: borrowed.
 * Thread: handler. */
CASYNQ_API const char *casynq_ctx_queue(const struct casynq_ctx *ctx);

/* Returns how many times the task has been retried so far (asynq's
 * "retry count"). Thread: handler. */
CASYNQ_API int casynq_ctx_retry_count(const struct casynq_ctx *ctx);

/* Returns the task's maximum number of retries. Thread: handler. */
CASYNQ_API int casynq_ctx_max_retry(const struct casynq_ctx *ctx);

/* Returns the time at which the context is cancelled for running too long,
 * in unix milliseconds: the earlier of start + timeout and the task's
 * deadline, or start + 30 min when the task has neither. Thread: handler. */
CASYNQ_API int64_t casynq_ctx_deadline_unix_ms(const struct casynq_ctx *ctx);

/* Returns true once the context is cancelled: the deadline passed, the
 * task was cancelled through asynq's cancel channel, its lease was lost or
 * the server is shutting down. Long handlers should check it and return.
 * Thread: any, while the handler runs. */
CASYNQ_API bool casynq_ctx_is_cancelled(const struct casynq_ctx *ctx);

/* Sleeps up to timeout_ms milliseconds, waking early when the context is
 * cancelled.
 * Returns: 0 after the full sleep, CASYNQ_ECANCELED when cancelled.
 * Thread: handler. */
CASYNQ_API int casynq_ctx_wait(struct casynq_ctx *ctx, int64_t timeout_ms);

/* Stores data as the task's result (the `result` field that asynq's
 * Inspector shows). The data is copied and written by the server's loop
 * thread before the task's outcome.
 * Returns: len, or CASYNQ_ECANCELED when the context is already cancelled
 *          (as asynq refuses a write after its context is done),
 *          CASYNQ_ENOMEM.
 * Ownership: data is copied. Thread: handler. */
CASYNQ_API int64_t casynq_ctx_write_result(struct casynq_ctx *ctx,
                                           const void *data, size_t len);

/* Records a failure message for the task and returns CASYNQ_EHANDLER, so a
 * handler can write `return casynq_ctx_fail(ctx, "bad input %d", x);`.
 * The message becomes the task's error_msg (truncated to 1 KiB; invalid
 * UTF-8 is replaced). Thread: handler. */
CASYNQ_API int casynq_ctx_fail(struct casynq_ctx *ctx, const char *fmt, ...)
        CASYNQ_PRINTF(2, 3);

/* As casynq_ctx_fail(), but returns CASYNQ_ESKIP_RETRY: the task is
 * archived at once instead of retried. Thread: handler. */
CASYNQ_API int casynq_ctx_skip_retry(struct casynq_ctx *ctx, const char *fmt,
                                     ...) CASYNQ_PRINTF(2, 3);

/* Logs a message through the server's log sink with the task ID, type and
 * queue attached. Thread: handler. */
CASYNQ_API void casynq_task_log(const struct casynq_ctx *ctx,
                                enum casynq_log_level level, const char *fmt,
                                ...) CASYNQ_PRINTF(3, 4);

/* ------------------------------------------------------------------------
 * Handlers, middleware and the handler registry (mux)
 *
 * A handler returns 0 on success, CASYNQ_ESKIP_RETRY to archive the task
 * at once, CASYNQ_EREVOKE to delete it without retry or archive, or any
 * other negative code for an ordinary failure that is retried while
 * retries remain. The failure text is the message set with
 * casynq_ctx_fail(), or else casynq_strerror() of the code.
 *
 * The mux matches task types as asynq's ServeMux does: the longest
 * registered pattern that is a prefix of the type wins. It is filled
 * during setup and read-only once a server uses it.
 */
typedef int (*casynq_handler_fn)(struct casynq_ctx *ctx,
                                 const struct casynq_task *task, void *ud);

/* The rest of a middleware chain, passed to each middleware. */
struct casynq_next;

/* Middleware wraps the handler: it may act before and after calling
 * casynq_next_call(next, ...), or return without calling it. */
typedef int (*casynq_middleware_fn)(struct casynq_ctx *ctx,
                                    const struct casynq_task *task,
                                    const struct casynq_next *next, void *ud);

/* Runs the rest of the chain (the next middleware, then the handler).
 * Returns: what the rest of the chain returns. Thread: handler. */
CASYNQ_API int casynq_next_call(const struct casynq_next *next,
                                struct casynq_ctx *ctx,
                                const struct casynq_task *task);

struct casynq_mux;

/* Creates an empty registry. Returns: 0 or CASYNQ_ENOMEM.
 * Ownership: free with casynq_mux_destroy() after every server using it
 * is destroyed. Thread: setup. */
CASYNQ_API int casynq_mux_create(struct casynq_mux **out);

/* Frees the registry. Thread: setup. */
CASYNQ_API void casynq_mux_destroy(struct casynq_mux *mux);

/* Registers fn for task types that start with `pattern`.
 * Returns: 0, CASYNQ_EINVAL (blank pattern or NULL fn), CASYNQ_EEXIST
 *          (pattern already registered), CASYNQ_ENOMEM.
 * Ownership: pattern is copied; ud is borrowed and must outlive the mux.
 * Thread: setup. */
CASYNQ_API int casynq_mux_handle(struct casynq_mux *mux, const char *pattern,
                                 casynq_handler_fn fn, void *ud);

/* Adds middleware around every handler of the mux, including the
 * not-found outcome. The first added is the outermost.
 * Returns: 0, CASYNQ_EINVAL, CASYNQ_ENOMEM.
 * Ownership: ud is borrowed and must outlive the mux. Thread: setup. */
CASYNQ_API int casynq_mux_use(struct casynq_mux *mux, casynq_middleware_fn fn,
                              void *ud);

/* Runs the middleware chain and the handler that matches the task type.
 * When no pattern matches, the chain ends in a not-found outcome that
 * records the message `handler not found for task "<type>"` (asynq's
 * text) and returns CASYNQ_ENOHANDLER.
 * Returns: the chain's result. Thread: handler. */
CASYNQ_API int casynq_mux_dispatch(const struct casynq_mux *mux,
                                   struct casynq_ctx *ctx,
                                   const struct casynq_task *task);

/* Registers the bundled demo handlers (demo:noop, demo:echo, demo:sleep,
 * demo:fail, demo:spin) described in README.md.
 * Returns: as casynq_mux_handle(). Thread: setup. */
CASYNQ_API int casynq_demo_handlers_register(struct casynq_mux *mux);

/* ------------------------------------------------------------------------
 * Server configuration
 *
 * A value object with asynq's settings and defaults: concurrency = number
 * of CPUs, queues {"default": 1}, weighted priority, asynq's retry delay
 * formula, every error counts as a failure, 8000 ms shutdown timeout,
 * 1000 ms task check interval, 5000 ms delayed task check interval,
 * 8000 ms janitor interval, janitor batch size 100, log level info to
 * stderr. Setters reject bad values with CASYNQ_EINVAL and a message in
 * casynq_config_last_error() naming the field. One thread at a time.
 */
struct casynq_config;

/* Returns the delay before the next attempt, in milliseconds, for a task
 * that failed with err / errmsg after `retried` earlier retries. */
typedef int64_t (*casynq_retry_delay_fn)(int retried, int err,
                                         const char *errmsg,
                                         const struct casynq_task *task,
                                         void *ud);

/* Returns whether an error counts as a failure. A non-failure retries the
 * task without using up a retry and without counting it as failed. */
typedef bool (*casynq_is_failure_fn)(int err, const char *errmsg, void *ud);

/* Called for every failed attempt, before the retry or archive is
 * written. task_id and queue are borrowed for the call. */
typedef void (*casynq_error_handler_fn)(const struct casynq_task *task,
                                        const char *task_id,
                                        const char *queue, int err,
                                        const char *errmsg, void *ud);

/* Called after each health check with 0 (Redis replied to PING) or the
 * error and its message. */
typedef void (*casynq_health_check_fn)(int err, const char *errmsg, void *ud);

/* Creates a configuration holding the defaults. Returns: 0, CASYNQ_ENOMEM.
 * Ownership: free with casynq_config_destroy(). Thread: any. */
CASYNQ_API int casynq_config_create(struct casynq_config **out);

/* Frees the configuration. Thread: one thread at a time. */
CASYNQ_API void casynq_config_destroy(struct casynq_config *cfg);

/* Returns the message of the last rejected setter or server creation, or
 * "". Ownership: valid until the next call on cfg.
 * Thread: one thread at a time. */
CASYNQ_API const char *casynq_config_last_error(const struct casynq_config *cfg);

/* Sets where Redis is. Ownership: redis is copied.
 * Returns: 0, CASYNQ_EINVAL, CASYNQ_ENOMEM. Thread: one thread at a time. */
CASYNQ_API int casynq_config_set_redis(struct casynq_config *cfg,
                                       const struct casynq_redis_options *redis);

/* Sets the number of worker threads (>= 1). Thread: one thread at a time. */
CASYNQ_API int casynq_config_set_concurrency(struct casynq_config *cfg,
                                             int concurrency);

/* Adds queue `name` with `weight` (>= 1), or changes its weight. The first
 * call replaces the default queue set. Names are 1 to 255 bytes and not
 * blank. Returns: 0, CASYNQ_EINVAL, CASYNQ_ENOMEM.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_config_set_queue(struct casynq_config *cfg,
                                       const char *name, int weight);

/* Removes every queue, including the default one; a server needs at least
 * one queue to be created. Thread: one thread at a time. */
CASYNQ_API int casynq_config_clear_queues(struct casynq_config *cfg);

/* Strict priority: always serve the highest-weight non-empty queue first
 * (ties broken by name). Thread: one thread at a time. */
CASYNQ_API int casynq_config_set_strict_priority(struct casynq_config *cfg,
                                                 bool strict);

/* Replaces the retry delay function; NULL restores asynq's formula,
 * retried^4 + 15 + rand(0..29) * (retried + 1) seconds.
 * Ownership: ud is borrowed and must outlive the server. Thread: setup. */
CASYNQ_API int casynq_config_set_retry_delay(struct casynq_config *cfg,
                                             casynq_retry_delay_fn fn,
                                             void *ud);

/* Replaces the is-failure predicate; NULL restores "every error is a
 * failure". Thread: setup. The predicate runs on the loop thread. */
CASYNQ_API int casynq_config_set_is_failure(struct casynq_config *cfg,
                                            casynq_is_failure_fn fn, void *ud);

/* Sets the error handler (NULL for none). It runs on the loop thread and
 * must not block. Thread: setup. */
CASYNQ_API int casynq_config_set_error_handler(struct casynq_config *cfg,
                                               casynq_error_handler_fn fn,
                                               void *ud);

/* Sets how long shutdown waits for running handlers before it puts their
 * tasks back to pending, in milliseconds (>= 0). Thread: setup. */
CASYNQ_API int casynq_config_set_shutdown_timeout_ms(struct casynq_config *cfg,
                                                     int64_t ms);

/* Sets the longest wait after finding every queue empty, in milliseconds
 * (>= 1, default 1000). The first wait is 1 ms and doubles while the
 * queues stay empty, until it reaches a value drawn from [ms/2, 3ms/2),
 * as asynq's fixed wait is. Thread: setup. */
CASYNQ_API int
casynq_config_set_task_check_interval_ms(struct casynq_config *cfg,
                                         int64_t ms);

/* Sets how often scheduled and retry tasks that are due move to pending,
 * in milliseconds (>= 1). Thread: setup. */
CASYNQ_API int
casynq_config_set_delayed_task_check_interval_ms(struct casynq_config *cfg,
                                                 int64_t ms);

/* Sets how often expired completed tasks are deleted, in milliseconds
 * (>= 1), and how many per script call (>= 1). Thread: setup. */
CASYNQ_API int casynq_config_set_janitor(struct casynq_config *cfg,
                                         int64_t interval_ms, int batch_size);

/* Sets a health check that PINGs Redis every interval_ms (>= 1) and
 * reports to fn on the loop thread; fn NULL disables it. Thread: setup. */
CASYNQ_API int casynq_config_set_health_check(struct casynq_config *cfg,
                                              casynq_health_check_fn fn,
                                              void *ud, int64_t interval_ms);

/* Sets the log sink (NULL for stderr) and the lowest level logged.
 * Ownership: ud is borrowed and must outlive the server. Thread: setup. */
CASYNQ_API int casynq_config_set_log(struct casynq_config *cfg,
                                     casynq_log_fn fn, void *ud,
                                     enum casynq_log_level min_level);

/* Serves Prometheus metrics over HTTP at GET /metrics (text format 0.0.4)
 * and a health check at GET /healthz, on a thread of its own, from
 * casynq_server_start() until shutdown. `addr` is "host:port",
 * "[ipv6]:port", ":port" or "port". Without a host the endpoint listens on
 * 127.0.0.1 only, so other hosts reach it only with an explicit
 * "0.0.0.0:port". The host must be a numeric address. NULL (the default)
 * turns the endpoint off. The metrics are listed in README.md.
 * Returns: 0, CASYNQ_EINVAL (unparsable address; the message names it),
 *          CASYNQ_ENOMEM. casynq_server_start() returns CASYNQ_ESYS when
 *          the address cannot be bound.
 * Ownership: addr is copied.
 * Thread: one thread at a time. */
CASYNQ_API int casynq_config_set_metrics_addr(struct casynq_config *cfg,
                                              const char *addr);

/* Described in the section "Rate limits and admission" below. */
struct casynq_limiter;

/* Makes the metrics endpoint export the rejection counts of lim as
 * casynq_enqueue_rejected_total{limit="<limit name>"}, one series per
 * limit that casynq_limiter_rejections_at() lists, read at each scrape.
 * Limits of different limiters that share a name are summed into one
 * series. Use it in a process that enqueues through lim and also runs this
 * server with a metrics address; without one, nothing is exported. At most
 * 8 limiters per configuration, each attached once.
 * Returns: 0, CASYNQ_EINVAL (NULL lim, lim already attached, or 8
 *          limiters attached already; the message names the cause).
 * Ownership: lim is borrowed and must outlive every server created from
 *            cfg. Configure lim before casynq_server_start() and change
 *            it no more afterwards, because a scrape reads its limit names.
 * Thread: setup. */
CASYNQ_API int casynq_config_add_limiter(struct casynq_config *cfg,
                                         const struct casynq_limiter *lim);

/* Sets how often the server reads the queue statistics (the asynq_
 * metrics) from Redis and ends a worker utilization interval, in
 * milliseconds (>= 100, default 5000). A scrape never reads Redis itself.
 * Returns: 0, CASYNQ_EINVAL.
 * Thread: one thread at a time. */
CASYNQ_API int
casynq_config_set_metrics_interval_ms(struct casynq_config *cfg, int64_t ms);

/* ------------------------------------------------------------------------
 * Server
 *
 * A server owns one event-loop thread, which owns every Redis connection
 * and timer, and `concurrency` worker threads that run handlers. Lifecycle:
 * create, start (or run), stop (optional), shutdown, destroy.
 */
struct casynq_server;

/* Creates a server from cfg and mux, copying the configuration.
 * Returns: 0, CASYNQ_EINVAL (invalid configuration: the message is in
 *          casynq_config_last_error(cfg)), CASYNQ_ENOMEM, CASYNQ_ESYS.
 * Ownership: cfg is copied; mux is borrowed and must outlive the server.
 *            Free *out with casynq_server_destroy().
 * Thread: setup. */
CASYNQ_API int casynq_server_create(struct casynq_config *cfg,
                                    const struct casynq_mux *mux,
                                    struct casynq_server **out);

/* Checks that Redis responds, then starts the loop and worker threads and
 * begins processing. Returns at once.
 * Returns: 0, CASYNQ_ESTATE (already started), CASYNQ_ECONNECT,
 *          CASYNQ_EAUTH, CASYNQ_ETIMEDOUT (message in
 *          casynq_server_last_error()), CASYNQ_ESYS.
 * Thread: setup. */
CASYNQ_API int casynq_server_start(struct casynq_server *srv);

/* Stops taking new tasks; running tasks finish and are recorded, and the
 * heartbeat reports the status "stopped". Only posts a request.
 * Returns: 0 or CASYNQ_ESTATE when the server is not running.
 * Thread: any, including handlers. */
CASYNQ_API int casynq_server_stop(struct casynq_server *srv);

/* Stops fetching, waits up to the shutdown timeout for running handlers,
 * puts the tasks of handlers still running back to pending, removes the
 * server's heartbeat and joins every thread. Blocks until done.
 * Returns: 0 or CASYNQ_ESTATE when the server was never started.
 * Thread: setup (never a handler or a callback). */
CASYNQ_API int casynq_server_shutdown(struct casynq_server *srv);

/* Starts the server and blocks until SIGTERM or SIGINT, which shut it down;
 * SIGTSTP stops it from taking new tasks. Blocks those signals in every
 * thread the server creates.
 * Returns: as casynq_server_start(), or 0 after a clean shutdown.
 * Thread: setup (usually the main thread). */
CASYNQ_API int casynq_server_run(struct casynq_server *srv);

/* Shuts the server down if it is running and frees it.
 * Thread: setup. */
CASYNQ_API void casynq_server_destroy(struct casynq_server *srv);

/* Returns the message of the last failed call on srv, or "".
 * Thread: setup. */
CASYNQ_API const char *casynq_server_last_error(const struct casynq_server *srv);

/* ------------------------------------------------------------------------
 * Rate limits and admission
 *
 * A limiter decides whether an enqueue may go ahead, so that a flood of
 * tasks from one caller cannot crowd out everyone else's work. It checks,
 * in this order:
 * 1. the payload size against a maximum (CASYNQ_ETOOLARGE);
 * 2. the backlog of the target queue, that is its pending, scheduled and
 *    retry tasks, against a cap (CASYNQ_EBACKLOG);
 * 3. every rate limit that applies to the enqueue (CASYNQ_ERATELIMITED).
 *
 * Rate limits use the generic cell rate algorithm (GCRA): a budget allows
 * `burst` enqueues at once and then `rate_per_s` per second. An enqueue
 * must pass every limit that applies to it. A rejection moves no budget,
 * including the budgets of the limits that passed, and writes nothing to
 * Redis.
 *
 * Each limit has a scope:
 * - CASYNQ_LIMIT_PER_KEY gives every caller key its own budget. The key
 *   is whatever identifies the caller: a user, a tenant, an API key or a
 *   client address, set with casynq_enqueue_options_set_rate_key(). A
 *   limit with a `match` applies only to keys that start with it. An
 *   enqueue without a key passes every per-key limit, so a front end that
 *   relies on these limits must set a key on every enqueue.
 * - CASYNQ_LIMIT_QUEUE gives the queue named `match` one budget shared by
 *   all callers.
 * - CASYNQ_LIMIT_TYPE gives the task type `match` one shared budget.
 *
 * Backends:
 * - CASYNQ_LIMITER_MEMORY keeps budgets in this process, against the
 *   monotonic clock. Each process has its own budgets. Budgets that have
 *   refilled completely are deleted, so memory grows with the number of
 *   keys active within one refill time (burst / rate_per_s), not with the
 *   number of keys ever seen.
 * - CASYNQ_LIMITER_REDIS keeps budgets in Redis under
 *   casynq:rl:{<limit name>}:<key> (casynq:rl:{<limit name>} for a shared
 *   budget) and reads the Redis server's clock, so every process that uses
 *   the same Redis shares the budgets, whatever its own clock says. A
 *   budget key expires once the budget has refilled. The limiter holds one
 *   connection, guarded by a mutex, and reconnects after a failure.
 *   Redis errors are returned as errors (CASYNQ_ECONNECT, CASYNQ_EREDIS,
 *   ...), never as rejections.
 *
 * Configure a limiter before the first check, from one thread; checks may
 * then run from any number of threads. The setters reject a bad value with
 * CASYNQ_EINVAL and a message in casynq_limiter_last_error() that names
 * the field.
 *
 * NOTE: the backlog is counted just before the enqueue, not in the same
 * atomic step, so clients that enqueue at the same moment can pass a cap
 * by at most one task each.
 */
struct casynq_limiter;

enum casynq_limiter_backend {
    CASYNQ_LIMITER_MEMORY = 1,
    CASYNQ_LIMITER_REDIS = 2,
};

enum casynq_limit_scope {
    /* One budget per caller key; match is NULL (every key) or a prefix. */
    CASYNQ_LIMIT_PER_KEY = 1,
    /* One budget shared by every enqueue to the queue named by match. */
    CASYNQ_LIMIT_QUEUE = 2,
    /* One budget shared by every enqueue of the task type match. */
    CASYNQ_LIMIT_TYPE = 3,
};

/* Creates a limiter with no limits, which admits everything. `redis` says
 * where the budgets live and is required for CASYNQ_LIMITER_REDIS; it is
 * ignored for CASYNQ_LIMITER_MEMORY. No connection is opened yet.
 * Returns: 0, CASYNQ_EINVAL (unknown backend, or NULL redis for the Redis
 *          backend), CASYNQ_ENOMEM, CASYNQ_ESYS.
 * Ownership: redis is copied. Free *out with casynq_limiter_destroy() after
 *            every client that uses it.
 * Thread: any. */
CASYNQ_API int casynq_limiter_create(enum casynq_limiter_backend backend,
                                     const struct casynq_redis_options *redis,
                                     struct casynq_limiter **out);

/* Closes the connection, if any, and frees the limiter.
 * Thread: one thread, once no other thread uses the limiter. */
CASYNQ_API void casynq_limiter_destroy(struct casynq_limiter *l);

/* Returns the message of the calling thread's last failed
 * casynq_limiter_check() on l, or else of the last failed setter on l, or
 * "" if none.
 * Ownership: valid until the next call on l from the same thread.
 * Thread: any. */
CASYNQ_API const char *
casynq_limiter_last_error(const struct casynq_limiter *l);

/* Adds a rate limit named `name`: bursts of up to `burst` enqueues, and
 * `rate_per_s` enqueues per second on average. `match` is described with
 * enum casynq_limit_scope. Names are 1 to 128 bytes of UTF-8, not blank,
 * without '{' or '}', unique within the limiter, and neither "max_backlog"
 * nor "max_payload", which name the admission limits in the rejection
 * counts. Names appear in rejection messages, in the Redis key names and
 * in the rejection counts. rate_per_s is above 0 and at most
 * 1000000, burst is at least 1, and burst / rate_per_s (the time to
 * refill an empty budget) is at most one year. A limiter holds at most 64
 * rate limits.
 * Returns: 0, CASYNQ_EINVAL (a bad value or a name already taken; the
 *          message names the field), CASYNQ_ENOMEM.
 * Ownership: name and match are copied.
 * Thread: setup, before the first check. */
CASYNQ_API int casynq_limiter_add_rate(struct casynq_limiter *l,
                                       const char *name,
                                       enum casynq_limit_scope scope,
                                       const char *match, double rate_per_s,
                                       double burst);

/* Caps the backlog of `queue`: an enqueue is rejected while the queue
 * holds max_tasks (>= 1) or more pending, scheduled and retry tasks.
 * Setting a queue again replaces its cap.
 * Returns: 0, CASYNQ_EINVAL, CASYNQ_ENOMEM.
 * Thread: setup, before the first check. */
CASYNQ_API int casynq_limiter_set_max_backlog(struct casynq_limiter *l,
                                              const char *queue,
                                              int64_t max_tasks);

/* Rejects payloads larger than max_bytes (>= 1).
 * Returns: 0, CASYNQ_EINVAL. Thread: setup, before the first check. */
CASYNQ_API int casynq_limiter_set_max_payload(struct casynq_limiter *l,
                                              size_t max_bytes);

/* Adds the limits of a JSON document of this form, every key optional:
 *
 *   {"rate_limits": [{"name": "per-tenant", "scope": "key",
 *                     "match": "tenant:", "rate_per_s": 50,
 *                     "burst": 100}],
 *    "max_backlog": {"low": 100000},
 *    "max_payload_bytes": 1048576}
 *
 * scope is "key", "queue" or "type"; match is optional for "key". The
 * document is applied completely or not at all.
 * Returns: 0, CASYNQ_EINVAL (invalid JSON, an unknown key or a bad value;
 *          a name already taken; the message names the key and its
 *          position), CASYNQ_ENOMEM.
 * Thread: setup, before the first check. */
CASYNQ_API int casynq_limiter_load_json(struct casynq_limiter *l,
                                        const char *json, size_t len);

/* Checks an enqueue against every limit, as casynq_client_enqueue() does
 * for a client with a limiter, for servers that write tasks by other
 * means. `key` may be NULL (per-key limits then pass), `queue` NULL means
 * "default" and `type` NULL skips the type limits. An admitted check
 * consumes one unit of each budget that applies.
 * On CASYNQ_ERATELIMITED, *retry_after_ms (when not NULL) is set to the
 * milliseconds (>= 1) after which the same check would pass if nothing
 * else consumes the budgets in between; it is 0 otherwise. A front end
 * can answer HTTP 429 with Retry-After set from it (rounded up to whole
 * seconds).
 * The backlog is counted in the limiter's Redis, so a Redis limiter must
 * point at the Redis that holds the tasks. A memory limiter has no Redis
 * and returns CASYNQ_ESTATE when a backlog cap applies to the queue: use
 * it through casynq_client_set_limiter(), which counts the backlog on the
 * client's connection.
 * Returns: 0, CASYNQ_ETOOLARGE, CASYNQ_EBACKLOG, CASYNQ_ERATELIMITED,
 *          CASYNQ_EINVAL (blank or over-long key), CASYNQ_ESTATE,
 *          CASYNQ_ENOMEM, or a connection error as casynq_client_ping()
 *          returns; the message is in casynq_limiter_last_error().
 * Thread: any. Checks on one Redis limiter run one at a time. */
CASYNQ_API int casynq_limiter_check(struct casynq_limiter *l, const char *key,
                                    const char *queue, const char *type,
                                    size_t payload_len,
                                    int64_t *retry_after_ms);

/* Makes the client check every enqueue with l (NULL removes the limiter).
 * casynq_client_enqueue() then returns CASYNQ_ETOOLARGE, CASYNQ_EBACKLOG
 * or CASYNQ_ERATELIMITED, with a message naming the limit, before it
 * writes anything. The backlog is counted on the client's own connection.
 * Returns: 0 or CASYNQ_EINVAL (NULL client).
 * Ownership: l is borrowed and must outlive the client; one limiter may
 *            serve many clients.
 * Thread: one thread at a time (the client's). */
CASYNQ_API int casynq_client_set_limiter(struct casynq_client *c,
                                         struct casynq_limiter *l);

/* Returns the number of limits whose rejections l counts: its rate limits,
 * plus "max_backlog" when a queue has a backlog cap and "max_payload" when
 * a payload maximum is set; 0 for NULL. These are the indexes of
 * casynq_limiter_rejections_at().
 * Thread: any, once setup is over. */
CASYNQ_API size_t casynq_limiter_limit_count(const struct casynq_limiter *l);

/* Reads the name and rejection count of limit `index`, from 0 to
 * casynq_limiter_limit_count() - 1: the rate limits in the order they were
 * added, then "max_backlog" and "max_payload" when the limiter has them.
 * Each rejected check, by casynq_limiter_check() or by a client's enqueue,
 * adds 1 to exactly one count: that of the limit its message names. That
 * is the payload maximum, else the backlog cap, else the rate limit with
 * the longest wait among those that rejected it. Checks that fail for
 * another reason (a bad key, a Redis error) count nowhere. Counts start
 * at 0 when the limiter is created and only grow, as Prometheus counters
 * do. The counts are per limit name, never per caller key, so their
 * number stays bounded by the configuration.
 * `name` and `rejected` may be NULL when not needed.
 * Returns: 0, or CASYNQ_EINVAL (NULL l or index out of range).
 * Ownership: *name is borrowed from l and stays valid until l is destroyed
 *            or a setter changes its limits.
 * Thread: any, once setup is over; counts are read atomically, so a reader
 *         may run while other threads check. */
CASYNQ_API int casynq_limiter_rejections_at(const struct casynq_limiter *l,
                                            size_t index, const char **name,
                                            uint64_t *rejected);

/* Returns the milliseconds (>= 1) to wait before retrying after the last
 * enqueue on c failed with CASYNQ_ERATELIMITED, or 0 after any other
 * outcome. Thread: one thread at a time. */
CASYNQ_API int64_t casynq_client_retry_after_ms(const struct casynq_client *c);

/* Sets the caller key that per-key rate limits count against: a user,
 * tenant, API key or client address. NULL removes it. Without a key, an
 * enqueue passes every per-key limit. At enqueue, the key must not be
 * blank and may be at most 512 bytes.
 * Returns: 0, CASYNQ_EINVAL (NULL options), CASYNQ_ENOMEM.
 * Ownership: key is copied. Thread: one thread at a time. */
CASYNQ_API int
casynq_enqueue_options_set_rate_key(struct casynq_enqueue_options *o,
                                    const char *key);

#ifdef __cplusplus
}
#endif

#endif
