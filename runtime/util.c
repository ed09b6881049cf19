/* DESIGN: small helpers shared by the client and the server.
 *
 * Clocks, identifiers, digests, UTF-8 checks and a growable buffer. Nothing
 * here keeps state, so every function may be called from any thread. UUIDs
 * come from libuuid and MD5 from libmd, both standard Debian libraries, so
 * that no cryptographic or random-number code of our own needs review. */
#include "util.h"

#include <ctype.h>
#include <md5.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "alloc.h"

int64_t casynq__now_unix_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t casynq__now_unix_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

int64_t casynq__mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t casynq__mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void casynq__uuid(char out[CASYNQ__UUID_LEN + 1])
{
    uuid_t id;

    uuid_generate_random(id);
    uuid_unparse_lower(id, out);
}

void casynq__md5_hex(const void *data, size_t len, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t digest[MD5_DIGEST_LENGTH];
    MD5_CTX ctx;

    MD5Init(&ctx);
    MD5Update(&ctx, data, len);
    MD5Final(digest, &ctx);
    for (int i = 0; i < MD5_DIGEST_LENGTH; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0x0f];
    }
    out[32] = '\0';
}

/* Returns the length of the valid UTF-8 sequence at s (at most len bytes
 * available), or 0 when it is invalid. Overlong forms, surrogates and code
 * points above U+10FFFF are invalid, as in Go's utf8.Valid. */
static size_t utf8_seq_len(const unsigned char *s, size_t len)
{
    uint32_t cp;
    size_t n;

    if (s[0] < 0x80) {
        return 1;
    } else if ((s[0] & 0xe0) == 0xc0) {
        n = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        n = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        n = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n > len) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
        (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}

bool casynq__utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < len) {
        size_t n = utf8_seq_len(p + i, len - i);

        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

char *casynq__utf8_sanitize(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    struct casynq__buf out = {0};
    size_t i = 0;

    /* Each invalid run becomes one U+FFFD, as Go's ToValidUTF8 does. */
    while (i < len) {
        size_t n = utf8_seq_len(p + i, len - i);

        if (n > 0) {
            if (casynq__buf_append(&out, p + i, n) != 0) {
                goto out_nomem;
            }
            i += n;
            continue;
        }
        if (casynq__buf_append(&out, "\xef\xbf\xbd", 3) != 0) {
            goto out_nomem;
        }
        while (i < len && utf8_seq_len(p + i, len - i) == 0) {
            i++;
        }
    }
    if (out.data == NULL) {
        return casynq__strdup("");
    }
    return out.data;

out_nomem:
    casynq__buf_free(&out);
    return NULL;
}

bool casynq__is_blank(const char *s)
{
    if (s == NULL) {
        return true;
    }
    for (; *s != '\0'; s++) {
        if (!isspace((unsigned char)*s)) {
            return false;
        }
    }
    return true;
}

int casynq__fail(char *errbuf, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errbuf, CASYNQ__ERRBUF_SIZE, fmt, ap);
    va_end(ap);
    return err;
}

void casynq__utc_date(int64_t unix_s, char out[11])
{
    time_t t = (time_t)unix_s;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

int casynq__buf_reserve(struct casynq__buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    size_t cap = b->cap == 0 ? 64 : b->cap;
    char *data;

    if (need <= b->cap) {
        return 0;
    }
    while (cap < need) {
        cap *= 2;
    }
    data = casynq__realloc(b->data, cap);
    if (data == NULL) {
        return CASYNQ_ENOMEM;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

int casynq__buf_append(struct casynq__buf *b, const void *data, size_t len)
{
    if (casynq__buf_reserve(b, len) != 0) {
        return CASYNQ_ENOMEM;
    }
    if (len > 0) {
        memcpy(b->data + b->len, data, len);
    }
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int casynq__buf_printf(struct casynq__buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || casynq__buf_reserve(b, (size_t)n) != 0) {
        return CASYNQ_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void casynq__buf_free(struct casynq__buf *b)
{
    casynq__free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
