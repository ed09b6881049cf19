/* DESIGN: the metrics HTTP endpoint, served by libmicrohttpd.
 *
 * libmicrohttpd, a maintained HTTP/1.1 server library, parses the
 * requests, so no request parsing is written here. It runs one internal
 * thread that polls every connection (MHD_USE_INTERNAL_POLLING_THREAD),
 * separate from the loop thread and the worker threads. A request handler
 * only formats what struct casynq__metrics contains: atomics, and a copy
 * of the queue statistics taken under a mutex. It never waits for Redis or
 * the loop, so a slow or hostile client can delay other scrapes but not
 * task processing.
 *
 * Limits against misbehaving clients: at most CONNECTION_LIMIT connections
 * at once, CONNECTION_TIMEOUT_S of inactivity before a connection is
 * closed (a client that sends half a request and stalls), and
 * CONNECTION_MEMORY bytes per connection for the request line and headers,
 * so a huge header is answered with an error status or a closed
 * connection instead of growing memory.
 *
 * libmicrohttpd is loaded with dlopen() when an endpoint starts, not
 * linked: its TLS dependencies (GnuTLS and friends) add about 2.5 MiB of
 * resident memory to every process that maps them, and a worker without a
 * metrics address should not pay for that.
 *
 * Routes: GET or HEAD /metrics (Prometheus text format 0.0.4) and
 * /healthz (200 "ok", or 503 and the reason). Any other path gets 404,
 * any other method 405 with an Allow header. */
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "metrics.h"

#define CONNECTION_LIMIT     16
#define CONNECTION_TIMEOUT_S 10
#define CONNECTION_MEMORY    (16 * 1024)
#define DEFAULT_HOST         "127.0.0.1"

#define CONTENT_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CONTENT_TYPE_TEXT    "text/plain; charset=utf-8"

struct casynq__metrics_http {
    struct MHD_Daemon *daemon;
    struct casynq__metrics *m;       /* borrowed */
    const struct casynq__logger *lg; /* borrowed */
    char addr[96];                   /* "host:port" bound, for logs */
};

/* The libmicrohttpd functions this file calls, resolved by load_mhd(). */
struct mhd_api {
    struct MHD_Daemon *(*start_daemon)(unsigned int flags, uint16_t port,
                                       MHD_AcceptPolicyCallback apc,
                                       void *apc_cls,
                                       MHD_AccessHandlerCallback dh,
                                       void *dh_cls, ...);
    void (*stop_daemon)(struct MHD_Daemon *daemon);
    struct MHD_Response *(*create_response_from_buffer)(
            size_t size, void *buffer, enum MHD_ResponseMemoryMode mode);
    struct MHD_Response *(*create_response_from_buffer_with_free_callback)(
            size_t size, void *buffer, MHD_ContentReaderFreeCallback crfc);
    enum MHD_Result (*add_response_header)(struct MHD_Response *response,
                                           const char *header,
                                           const char *content);
    enum MHD_Result (*queue_response)(struct MHD_Connection *connection,
                                      unsigned int status_code,
                                      struct MHD_Response *response);
    void (*destroy_response)(struct MHD_Response *response);
};

static struct mhd_api mhd; /* written once under mhd_once */
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;
static char mhd_error[256]; /* written once under mhd_once */

/* The library's soname on Debian 12 (package libmicrohttpd12), then the
 * development symlink as a fallback for other systems. */
static const char *const mhd_names[] = {"libmicrohttpd.so.12",
                                        "libmicrohttpd.so"};

static void load_mhd_once(void)
{
    void *lib = NULL;

    for (size_t i = 0;
         lib == NULL && i < sizeof(mhd_names) / sizeof(mhd_names[0]); i++) {
        lib = dlopen(mhd_names[i], RTLD_NOW | RTLD_LOCAL);
    }
    if (lib == NULL) {
        snprintf(mhd_error, sizeof(mhd_error),
                 "cannot load libmicrohttpd for the metrics endpoint (%s); "
                 "install the libmicrohttpd12 package",
                 dlerror());
        return;
    }
    /* POSIX dlsym returns void *; converting it to a function pointer is
     * the documented way to use it. */
#define MHD_SYM(field, name)                                                   \
    do {                                                                       \
        void *sym = dlsym(lib, name);                                          \
        if (sym == NULL) {                                                     \
            snprintf(mhd_error, sizeof(mhd_error),                             \
                     "libmicrohttpd lacks %s; install libmicrohttpd 0.9.71 "   \
                     "or later",                                               \
                     name);                                                    \
            return;                                                            \
        }                                                                      \
        memcpy(&mhd.field, &sym, sizeof(sym));                                 \
    } while (0)
    MHD_SYM(start_daemon, "MHD_start_daemon");
    MHD_SYM(stop_daemon, "MHD_stop_daemon");
    MHD_SYM(create_response_from_buffer, "MHD_create_response_from_buffer");
    MHD_SYM(create_response_from_buffer_with_free_callback,
            "MHD_create_response_from_buffer_with_free_callback");
    MHD_SYM(add_response_header, "MHD_add_response_header");
    MHD_SYM(queue_response, "MHD_queue_response");
    MHD_SYM(destroy_response, "MHD_destroy_response");
#undef MHD_SYM
}

/* Loads libmicrohttpd once per process.
 * Returns: 0, or CASYNQ_ESYS with the reason in errbuf. */
static int load_mhd(char *errbuf)
{
    pthread_once(&mhd_once, load_mhd_once);
    if (mhd_error[0] != '\0') {
        return casynq__fail(errbuf, CASYNQ_ESYS, "%s", mhd_error);
    }
    return 0;
}

/* Parses a decimal port of 1 to 65535. */
static bool parse_port(const char *text, uint16_t *out)
{
    long v = 0;

    if (*text == '\0' || strlen(text) > 5) {
        return false;
    }
    for (const char *p = text; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535) {
        return false;
    }
    *out = (uint16_t)v;
    return true;
}

int casynq__metrics_parse_addr(const char *addr, struct sockaddr_storage *out,
                               socklen_t *out_len, char *errbuf)
{
    char host[64];
    const char *port;
    uint16_t portnum;

    if (addr == NULL || *addr == '\0') {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "metrics address is empty: give host:port, "
                            ":port or a port, such as 127.0.0.1:9464");
    }
    memset(out, 0, sizeof(*out));
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');

        if (close == NULL || close[1] != ':' ||
            (size_t)(close - addr - 1) >= sizeof(host)) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "metrics address \"%.64s\" is invalid: write "
                                "an IPv6 address as [addr]:port, such as "
                                "[::1]:9464",
                                addr);
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - addr - 1), addr + 1);
        port = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');

        if (colon == NULL) {
            snprintf(host, sizeof(host), "%s", DEFAULT_HOST);
            port = addr;
        } else if (colon == addr) {
            snprintf(host, sizeof(host), "%s", DEFAULT_HOST);
            port = colon + 1;
        } else if ((size_t)(colon - addr) < sizeof(host)) {
            snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
            port = colon + 1;
        } else {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "metrics address \"%.64s\" has a host that "
                                "is too long: use a numeric IP address",
                                addr);
        }
    }
    if (!parse_port(port, &portnum)) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "metrics address \"%.64s\" has an invalid port "
                            "\"%.16s\": use a number from 1 to 65535",
                            addr, port);
    }
    if (addr[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;

        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            return casynq__fail(errbuf, CASYNQ_EINVAL,
                                "metrics address \"%.64s\": \"%s\" is not "
                                "an IPv6 address",
                                addr, host);
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(portnum);
        *out_len = sizeof(*sin6);
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out;

    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
        return casynq__fail(errbuf, CASYNQ_EINVAL,
                            "metrics address \"%.64s\": host \"%s\" is not "
                            "a numeric IPv4 address; use 127.0.0.1 for this "
                            "host only, 0.0.0.0 for every interface, or "
                            "[addr] for IPv6",
                            addr, host);
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons(portnum);
    *out_len = sizeof(*sin);
    return 0;
}

/* libmicrohttpd's messages are about single bad connections, so they go
 * to the debug level, where a misbehaving client cannot flood the log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct casynq__metrics_http *h = cls;
    char msg[256];
    size_t len;

    if (CASYNQ_LOG_DEBUG < h->lg->min_level) {
        return;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r')) {
        msg[--len] = '\0';
    }
    CASYNQ_LOG(h->lg, CASYNQ_LOG_DEBUG, "metrics endpoint %s: %s", h->addr,
               msg);
}

static enum MHD_Result send_text(struct MHD_Connection *conn,
                                 unsigned int status, const char *text,
                                 const char *allow)
{
    struct MHD_Response *resp = mhd.create_response_from_buffer(
            strlen(text), (void *)(uintptr_t)text, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result rc;

    if (resp == NULL) {
        return MHD_NO;
    }
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            CONTENT_TYPE_TEXT);
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow != NULL) {
        mhd.add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    }
    rc = mhd.queue_response(conn, status, resp);
    mhd.destroy_response(resp);
    return rc;
}

static enum MHD_Result send_metrics(struct casynq__metrics_http *h,
                                    struct MHD_Connection *conn)
{
    struct casynq__buf body = {0};
    struct MHD_Response *resp;
    enum MHD_Result rc;

    if (casynq__metrics_render(h->m, &body) != 0) {
        casynq__buf_free(&body);
        return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                         "out of memory while formatting the metrics\n", NULL);
    }
    resp = mhd.create_response_from_buffer_with_free_callback(
            body.len, body.data, casynq__free);
    if (resp == NULL) {
        casynq__buf_free(&body);
        return MHD_NO;
    }
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            CONTENT_TYPE_METRICS);
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    rc = mhd.queue_response(conn, MHD_HTTP_OK, resp);
    mhd.destroy_response(resp);
    return rc;
}

static enum MHD_Result send_health(struct casynq__metrics_http *h,
                                   struct MHD_Connection *conn)
{
    char text[192];
    struct MHD_Response *resp;
    bool ok = casynq__metrics_healthy(h->m, text, sizeof(text) - 1);
    enum MHD_Result rc;

    strcat(text, "\n");
    resp = mhd.create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        return MHD_NO;
    }
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            CONTENT_TYPE_TEXT);
    mhd.add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    rc = mhd.queue_response(
            conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, resp);
    mhd.destroy_response(resp);
    return rc;
}

/* Responds to every request on its first call. The routes take no body,
 * so a request that has one gets its response without the body being
 * read, and libmicrohttpd closes the connection afterwards. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    struct casynq__metrics_http *h = cls;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        return send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                         "method not allowed: use GET or HEAD\n", "GET, HEAD");
    }
    if (strcmp(url, "/metrics") == 0) {
        return send_metrics(h, conn);
    }
    if (strcmp(url, "/healthz") == 0) {
        return send_health(h, conn);
    }
    return send_text(conn, MHD_HTTP_NOT_FOUND,
                     "not found: this endpoint serves /metrics and "
                     "/healthz\n",
                     NULL);
}

/* Writes sa as "1.2.3.4:port" or "[v6]:port" into buf. */
static void describe_addr(const struct sockaddr_storage *sa, char *buf,
                          size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
        return;
    }
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
    snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
}

/* Binds a socket to the address and closes it again, so that a port in
 * use or a missing interface is reported with its errno before
 * libmicrohttpd, which reports no reason, binds the same address. */
static int probe_bind(const struct sockaddr_storage *sa, socklen_t len,
                      const char *addr, char *errbuf)
{
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    int rc = 0;

    if (fd < 0) {
        return casynq__fail(errbuf, CASYNQ_ESYS,
                            "cannot create a socket for the metrics "
                            "endpoint %s: %s",
                            addr, strerror(errno));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, (const struct sockaddr *)sa, len) != 0) {
        rc = casynq__fail(errbuf, CASYNQ_ESYS,
                          "cannot listen for metrics on %s: %s; choose "
                          "another address or port",
                          addr, strerror(errno));
    }
    close(fd);
    return rc;
}

int casynq__metrics_http_start(struct casynq__metrics_http **out,
                               const char *addr, struct casynq__metrics *m,
                               const struct casynq__logger *lg, char *errbuf)
{
    struct casynq__metrics_http *h;
    struct sockaddr_storage sa;
    socklen_t len = 0;
    unsigned int flags =
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    int rc;

    *out = NULL;
    rc = casynq__metrics_parse_addr(addr, &sa, &len, errbuf);
    if (rc != 0) {
        return rc;
    }
    rc = probe_bind(&sa, len, addr, errbuf);
    if (rc != 0) {
        return rc;
    }
    rc = load_mhd(errbuf);
    if (rc != 0) {
        return rc;
    }
    h = casynq__calloc(1, sizeof(*h));
    if (h == NULL) {
        return CASYNQ_ENOMEM;
    }
    h->m = m;
    h->lg = lg;
    describe_addr(&sa, h->addr, sizeof(h->addr));
    if (sa.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    h->daemon = mhd.start_daemon(
            flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
            on_mhd_log, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONNECTION_LIMIT,
            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONNECTION_TIMEOUT_S,
            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY,
            MHD_OPTION_END);
    if (h->daemon == NULL) {
        casynq__free(h);
        return casynq__fail(errbuf, CASYNQ_ESYS,
                            "cannot start the metrics endpoint on %s: "
                            "libmicrohttpd failed to bind the address or "
                            "to start its thread; run with log level debug "
                            "for its messages",
                            addr);
    }
    CASYNQ_LOG(lg, CASYNQ_LOG_INFO,
               "metrics endpoint listening on http://%s/metrics and "
               "http://%s/healthz",
               h->addr, h->addr);
    *out = h;
    return 0;
}

void casynq__metrics_http_stop(struct casynq__metrics_http *h)
{
    if (h == NULL) {
        return;
    }
    mhd.stop_daemon(h->daemon);
    casynq__free(h);
}
