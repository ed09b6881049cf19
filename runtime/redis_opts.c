/* DESIGN: Redis connection options and URL parsing.
 *
 * The options are a plain value that callers fill on one thread and hand
 * to a client or server, which copy them. The URL forms follow the ones
 * go-redis accepts for asynq's RedisConnOpt (redis://user:pass@host:port/db
 * and unix:///path?db=N), so operators can reuse the URLs they already
 * have. Errors name the part of the URL at fault and never echo the
 * password. */
#include "redis_opts.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

static void options_reset(struct casynq_redis_options *o)
{
    casynq__free(o->host);
    casynq__free(o->unix_path);
    casynq__free(o->username);
    casynq__free(o->password);
    o->host = NULL;
    o->unix_path = NULL;
    o->username = NULL;
    o->password = NULL;
    o->port = CASYNQ__DEFAULT_REDIS_PORT;
    o->db = 0;
}

int casynq_redis_options_create(struct casynq_redis_options **out)
{
    struct casynq_redis_options *o;

    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = NULL;
    o = casynq__calloc(1, sizeof(*o));
    if (o == NULL) {
        return CASYNQ_ENOMEM;
    }
    o->host = casynq__strdup(CASYNQ__DEFAULT_REDIS_HOST);
    if (o->host == NULL) {
        casynq__free(o);
        return CASYNQ_ENOMEM;
    }
    o->port = CASYNQ__DEFAULT_REDIS_PORT;
    o->connect_timeout_ms = CASYNQ__DEFAULT_CONNECT_TIMEOUT_MS;
    o->command_timeout_ms = CASYNQ__DEFAULT_COMMAND_TIMEOUT_MS;
    *out = o;
    return 0;
}

void casynq__redis_options_finish(struct casynq_redis_options *o)
{
    if (o != NULL) {
        options_reset(o);
    }
}

void casynq_redis_options_destroy(struct casynq_redis_options *o)
{
    if (o == NULL) {
        return;
    }
    options_reset(o);
    casynq__free(o);
}

int casynq__redis_options_copy(struct casynq_redis_options *dst,
                               const struct casynq_redis_options *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->port = src->port;
    dst->db = src->db;
    dst->connect_timeout_ms = src->connect_timeout_ms;
    dst->command_timeout_ms = src->command_timeout_ms;
    if ((src->host != NULL &&
         (dst->host = casynq__strdup(src->host)) == NULL) ||
        (src->unix_path != NULL &&
         (dst->unix_path = casynq__strdup(src->unix_path)) == NULL) ||
        (src->username != NULL &&
         (dst->username = casynq__strdup(src->username)) == NULL) ||
        (src->password != NULL &&
         (dst->password = casynq__strdup(src->password)) == NULL)) {
        options_reset(dst);
        return CASYNQ_ENOMEM;
    }
    return 0;
}

int casynq_redis_options_set_tcp(struct casynq_redis_options *o,
                                 const char *host, int port)
{
    char *copy;

    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (host == NULL || host[0] == '\0') {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis host is empty: give a host name or IP "
                            "address");
    }
    if (port < 1 || port > 65535) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis port %d is out of range: use 1 to 65535",
                            port);
    }
    copy = casynq__strdup(host);
    if (copy == NULL) {
        return CASYNQ_ENOMEM;
    }
    casynq__free(o->host);
    casynq__free(o->unix_path);
    o->unix_path = NULL;
    o->host = copy;
    o->port = port;
    return 0;
}

int casynq_redis_options_set_unix(struct casynq_redis_options *o,
                                  const char *path)
{
    char *copy;

    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (path == NULL || path[0] == '\0') {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis unix socket path is empty");
    }
    copy = casynq__strdup(path);
    if (copy == NULL) {
        return CASYNQ_ENOMEM;
    }
    casynq__free(o->host);
    casynq__free(o->unix_path);
    o->host = NULL;
    o->unix_path = copy;
    return 0;
}

int casynq_redis_options_set_db(struct casynq_redis_options *o, int db)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (db < 0) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis database %d is negative: use 0 or above",
                            db);
    }
    o->db = db;
    return 0;
}

int casynq_redis_options_set_auth(struct casynq_redis_options *o,
                                  const char *username, const char *password)
{
    char *user = NULL;
    char *pass = NULL;

    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (password == NULL && username != NULL) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis username \"%s\" given without a password",
                            username);
    }
    if ((username != NULL && (user = casynq__strdup(username)) == NULL) ||
        (password != NULL && (pass = casynq__strdup(password)) == NULL)) {
        casynq__free(user);
        return CASYNQ_ENOMEM;
    }
    casynq__free(o->username);
    casynq__free(o->password);
    o->username = user;
    o->password = pass;
    return 0;
}

int casynq_redis_options_set_timeouts(struct casynq_redis_options *o,
                                      int connect_timeout_ms,
                                      int command_timeout_ms)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (connect_timeout_ms < 0 || command_timeout_ms < 0) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis timeouts must not be negative (connect "
                            "%d ms, command %d ms)",
                            connect_timeout_ms, command_timeout_ms);
    }
    if (connect_timeout_ms > 0) {
        o->connect_timeout_ms = connect_timeout_ms;
    }
    if (command_timeout_ms > 0) {
        o->command_timeout_ms = command_timeout_ms;
    }
    return 0;
}

int casynq_redis_options_describe(const struct casynq_redis_options *o,
                                  char *buf, size_t len)
{
    if (o->unix_path != NULL) {
        return snprintf(buf, len, "unix:%s?db=%d", o->unix_path, o->db);
    }
    if (o->host != NULL && strchr(o->host, ':') != NULL) {
        return snprintf(buf, len, "[%s]:%d/%d", o->host, o->port, o->db);
    }
    return snprintf(buf, len, "%s:%d/%d", o->host != NULL ? o->host : "",
                    o->port, o->db);
}

const char *
casynq_redis_options_last_error(const struct casynq_redis_options *o)
{
    return o != NULL ? o->err : "";
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* Decodes %XX escapes of the len bytes at s into a new string, or returns
 * NULL with *bad set when an escape is malformed (or on ENOMEM). */
static char *percent_decode(const char *s, size_t len, bool *bad)
{
    char *out = casynq__malloc(len + 1);
    size_t n = 0;

    *bad = false;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[n++] = s[i];
            continue;
        }
        if (i + 2 >= len) {
            goto out_bad;
        }
        int hi = hex_value(s[i + 1]);
        int lo = hex_value(s[i + 2]);
        /* A NUL would cut the credential short without a word. */
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            goto out_bad;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return out;

out_bad:
    *bad = true;
    casynq__free(out);
    return NULL;
}

/* Parses a decimal integer in [min, max] from the len bytes at s. */
static bool parse_int_range(const char *s, size_t len, long min, long max,
                            long *out)
{
    char tmp[24];
    char *end;
    long v;

    if (len == 0 || len >= sizeof(tmp)) {
        return false;
    }
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)tmp[i])) {
            return false;
        }
    }
    errno = 0;
    v = strtol(tmp, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* Parses "[user][:password]@" at the start of authority into o. */
static int parse_userinfo(struct casynq_redis_options *o, const char *info,
                          size_t len)
{
    const char *colon = memchr(info, ':', len);
    char *user = NULL;
    char *pass = NULL;
    bool bad = false;
    int rc;

    if (colon == NULL) {
        /* "redis://secret@host" is read as a password, as go-redis does
         * when only one part is given. */
        pass = percent_decode(info, len, &bad);
    } else {
        size_t ulen = (size_t)(colon - info);

        if (ulen > 0) {
            user = percent_decode(info, ulen, &bad);
        }
        if (!bad) {
            pass = percent_decode(colon + 1, len - ulen - 1, &bad);
        }
    }
    if (bad) {
        casynq__free(user);
        casynq__free(pass);
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "invalid redis URL: bad %%-escape in the "
                            "user or password part");
    }
    if (pass == NULL) {
        casynq__free(user);
        return CASYNQ_ENOMEM;
    }
    rc = casynq_redis_options_set_auth(o, user, pass[0] != '\0' ? pass : NULL);
    if (rc != 0 && user != NULL && pass[0] == '\0') {
        rc = casynq__fail(o->err, CASYNQ_EINVAL,
                          "invalid redis URL: user \"%s\" has no password",
                          user);
    }
    casynq__free(user);
    casynq__free(pass);
    return rc;
}

/* Parses host[:port] or [v6]:port. */
static int parse_hostport(struct casynq_redis_options *o, const char *hp,
                          size_t len)
{
    const char *host = hp;
    size_t hlen = len;
    long port = CASYNQ__DEFAULT_REDIS_PORT;
    const char *colon;
    char hostbuf[256];

    if (len > 0 && hp[0] == '[') {
        const char *close = memchr(hp, ']', len);

        if (close == NULL) {
            return casynq__fail(o->err, CASYNQ_EINVAL,
                                "invalid redis URL: '[' without ']' in host");
        }
        host = hp + 1;
        hlen = (size_t)(close - host);
        colon = close + 1 < hp + len && close[1] == ':' ? close + 1 : NULL;
        if (colon == NULL && close + 1 != hp + len) {
            return casynq__fail(o->err, CASYNQ_EINVAL,
                                "invalid redis URL: unexpected text after "
                                "']' in host");
        }
    } else {
        colon = memchr(hp, ':', len);
        if (colon != NULL) {
            hlen = (size_t)(colon - hp);
        }
    }
    if (colon != NULL) {
        size_t plen = (size_t)(hp + len - colon - 1);

        if (!parse_int_range(colon + 1, plen, 1, 65535, &port)) {
            return casynq__fail(o->err, CASYNQ_EINVAL,
                                "invalid redis URL: port \"%.*s\" is not a "
                                "number from 1 to 65535",
                                (int)plen, colon + 1);
        }
    }
    if (hlen == 0) {
        host = CASYNQ__DEFAULT_REDIS_HOST;
        hlen = strlen(host);
    }
    if (hlen >= sizeof(hostbuf)) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "invalid redis URL: host name longer than %zu "
                            "bytes",
                            sizeof(hostbuf) - 1);
    }
    memcpy(hostbuf, host, hlen);
    hostbuf[hlen] = '\0';
    return casynq_redis_options_set_tcp(o, hostbuf, (int)port);
}

static int parse_db(struct casynq_redis_options *o, const char *s, size_t len)
{
    long db;

    if (!parse_int_range(s, len, 0, INT_MAX, &db)) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "invalid redis URL: database \"%.*s\" is not a "
                            "number of 0 or more",
                            (int)len, s);
    }
    o->db = (int)db;
    return 0;
}

static int parse_redis_url(struct casynq_redis_options *o, const char *rest)
{
    size_t auth_len = strcspn(rest, "/?#");
    const char *at = NULL;
    int rc;

    /* The last '@' ends the user info, so a password may contain '@'. */
    for (size_t i = 0; i < auth_len; i++) {
        if (rest[i] == '@') {
            at = rest + i;
        }
    }
    if (at != NULL) {
        rc = parse_userinfo(o, rest, (size_t)(at - rest));
        if (rc != 0) {
            return rc;
        }
        auth_len -= (size_t)(at + 1 - rest);
        rest = at + 1;
    }
    rc = parse_hostport(o, rest, auth_len);
    if (rc != 0) {
        return rc;
    }
    rest += auth_len;
    if (*rest == '/' && rest[1] != '\0') {
        rest++;
        return parse_db(o, rest, strlen(rest));
    }
    if (*rest == '/' || *rest == '\0') {
        return 0;
    }
    return casynq__fail(o->err, CASYNQ_EINVAL,
                        "invalid redis URL: unexpected \"%s\" after the "
                        "address; expected /db",
                        rest);
}

static int parse_unix_url(struct casynq_redis_options *o, const char *rest)
{
    const char *path = rest;
    const char *at = NULL;
    const char *query;
    char *copy;
    int rc;

    /* unix://user:pass@/path: user info ends at the last '@' before the
     * path's first '/'. */
    if (rest[0] != '/') {
        at = strchr(rest, '@');
        if (at == NULL || at[1] != '/') {
            return casynq__fail(o->err, CASYNQ_EINVAL,
                                "invalid redis URL: a unix:// URL needs an "
                                "absolute socket path, as in "
                                "unix:///run/redis.sock");
        }
        rc = parse_userinfo(o, rest, (size_t)(at - rest));
        if (rc != 0) {
            return rc;
        }
        path = at + 1;
    }
    query = strchr(path, '?');
    copy = casynq__strndup(path, query != NULL ? (size_t)(query - path)
                                               : strlen(path));
    if (copy == NULL) {
        return CASYNQ_ENOMEM;
    }
    rc = casynq_redis_options_set_unix(o, copy);
    casynq__free(copy);
    if (rc != 0 || query == NULL) {
        return rc;
    }
    if (strncmp(query, "?db=", 4) != 0) {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "invalid redis URL: unknown query \"%s\"; only "
                            "?db=N is supported",
                            query);
    }
    return parse_db(o, query + 4, strlen(query + 4));
}

int casynq_redis_options_set_url(struct casynq_redis_options *o,
                                 const char *url)
{
    if (o == NULL) {
        return CASYNQ_EINVAL;
    }
    if (url == NULL || url[0] == '\0') {
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "redis URL is empty: use "
                            "redis://[user:password@]host:port/db");
    }
    options_reset(o);
    o->host = casynq__strdup(CASYNQ__DEFAULT_REDIS_HOST);
    if (o->host == NULL) {
        return CASYNQ_ENOMEM;
    }
    if (strncmp(url, "redis://", 8) == 0) {
        return parse_redis_url(o, url + 8);
    }
    if (strncmp(url, "unix://", 7) == 0) {
        return parse_unix_url(o, url + 7);
    }
    if (strncmp(url, "rediss://", 9) == 0) {
        /* TODO(limit): TLS is not supported, because Debian 12's hiredis
         * 0.14 has no TLS support. Fix: build against hiredis >= 1.0 with
         * hiredis_ssl and add a TLS context to the connection code. */
        return casynq__fail(o->err, CASYNQ_EINVAL,
                            "invalid redis URL: rediss:// (TLS) is not "
                            "supported by this build; use redis:// or "
                            "unix://");
    }
    return casynq__fail(o->err, CASYNQ_EINVAL,
                        "invalid redis URL: scheme must be redis:// or "
                        "unix://, as in redis://127.0.0.1:6379/0");
}
