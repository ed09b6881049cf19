#ifndef CASYNQ_RUNTIME_UTIL_H
#define CASYNQ_RUNTIME_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <casynq.h>

/* Length of a UUID in its text form, without the NUL. */
#define CASYNQ__UUID_LEN 36

/* Size of the per-object buffer that stores the last error message. */
#define CASYNQ__ERRBUF_SIZE 512

/* Wall-clock time (CLOCK_REALTIME) in nanoseconds and seconds since the
 * Unix epoch. asynq writes wall-clock times into Redis. Thread: any. */
int64_t casynq__now_unix_ns(void);
int64_t casynq__now_unix_s(void);

/* Monotonic time in milliseconds, for the runtime's own timers. */
int64_t casynq__mono_ms(void);

/* Monotonic time in nanoseconds, for durations. Thread: any. */
int64_t casynq__mono_ns(void);

/* Writes a random (version 4) UUID in lowercase 8-4-4-4-12 form and a NUL
 * into out, which must hold CASYNQ__UUID_LEN + 1 bytes. Thread: any. */
void casynq__uuid(char out[CASYNQ__UUID_LEN + 1]);

/* Writes the lowercase hex MD5 digest of data and a NUL into out.
 * Thread: any. */
void casynq__md5_hex(const void *data, size_t len, char out[33]);

/* Returns true when the len bytes at s are valid UTF-8, the condition
 * asynq's Go protobuf decoder checks on every string field. */
bool casynq__utf8_valid(const char *s, size_t len);

/* Copies s into a new NUL-terminated string in which every invalid UTF-8
 * sequence is replaced by U+FFFD, as Go's strings.ToValidUTF8 would.
 * Returns NULL on allocation failure.
 * Ownership: free with casynq__free(). */
char *casynq__utf8_sanitize(const char *s, size_t len);

/* Returns true when s is NULL or holds only ASCII white space: asynq
 * rejects such names as empty. */
bool casynq__is_blank(const char *s);

/* Formats a message into an object's error buffer of CASYNQ__ERRBUF_SIZE
 * bytes and returns err, so that callers can write
 * `return casynq__fail(c->err, CASYNQ_EINVAL, "...")`. */
int casynq__fail(char *errbuf, int err, const char *fmt, ...)
        CASYNQ_PRINTF(3, 4);

/* The UTC calendar date of unix time t as YYYY-MM-DD into out[11]. */
void casynq__utc_date(int64_t unix_s, char out[11]);

/* A growable byte buffer. data is NUL-terminated whenever len > 0 or after
 * any append, so text can be read with plain string functions. */
struct casynq__buf {
    char *data;
    size_t len;
    size_t cap;
};

/* Appends len bytes. Returns: 0 or CASYNQ_ENOMEM. */
int casynq__buf_append(struct casynq__buf *b, const void *data, size_t len);
/* Appends formatted text. Returns: 0 or CASYNQ_ENOMEM. */
int casynq__buf_printf(struct casynq__buf *b, const char *fmt, ...)
        CASYNQ_PRINTF(2, 3);
/* Makes room for extra more bytes. Returns: 0 or CASYNQ_ENOMEM. */
int casynq__buf_reserve(struct casynq__buf *b, size_t extra);
/* Frees the data and empties the buffer. */
void casynq__buf_free(struct casynq__buf *b);

#endif
