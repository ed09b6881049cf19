/* Unit tests of Redis connection options: URL parsing, the setters, and
 * describe(), which must never show credentials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "redis_opts.h"

static void *cmocka_malloc(size_t size)
{
    return test_malloc(size);
}

static void *cmocka_calloc(size_t count, size_t size)
{
    return test_calloc(count, size);
}

static void *cmocka_realloc(void *ptr, size_t size)
{
    return test_realloc(ptr, size);
}

static void cmocka_free(void *ptr)
{
    test_free(ptr);
}

static struct casynq_redis_options *new_options(void)
{
    struct casynq_redis_options *o = NULL;

    assert_int_equal(casynq_redis_options_create(&o), 0);
    assert_non_null(o);
    return o;
}

static void assert_names(const char *message, const char *part)
{
    if (strstr(message, part) == NULL) {
        fail_msg("error message \"%s\" does not name %s", message, part);
    }
}

static void assert_not_shown(const char *text, const char *secret)
{
    if (strstr(text, secret) != NULL) {
        fail_msg("\"%s\" shows the secret %s", text, secret);
    }
}

/* Parses url into o and checks that it is rejected with a message that
 * names part. */
static void assert_url_rejected(struct casynq_redis_options *o,
                                const char *url, const char *part)
{
    int rc = casynq_redis_options_set_url(o, url);

    if (rc != CASYNQ_EINVAL) {
        fail_msg("URL \"%s\" returned %d, expected CASYNQ_EINVAL", url, rc);
    }
    assert_names(casynq_redis_options_last_error(o), part);
}

static void test_redis_options_defaults(void **state)
{
    struct casynq_redis_options *o = new_options();
    char text[64];

    (void)state;
    assert_string_equal(o->host, "127.0.0.1");
    assert_int_equal(o->port, 6379);
    assert_null(o->unix_path);
    assert_int_equal(o->db, 0);
    assert_null(o->username);
    assert_null(o->password);
    assert_int_equal(o->connect_timeout_ms, 5000);
    assert_int_equal(o->command_timeout_ms, 5000);
    assert_string_equal(casynq_redis_options_last_error(o), "");
    casynq_redis_options_describe(o, text, sizeof(text));
    assert_string_equal(text, "127.0.0.1:6379/0");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_host_only_uses_default_port(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o, "redis://cache.local"), 0);

    assert_string_equal(o->host, "cache.local");
    assert_int_equal(o->port, 6379);
    assert_int_equal(o->db, 0);
    assert_null(o->unix_path);
    assert_null(o->username);
    assert_null(o->password);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_host_port(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o, "redis://10.0.0.5:6380"),
                     0);

    assert_string_equal(o->host, "10.0.0.5");
    assert_int_equal(o->port, 6380);
    assert_int_equal(o->db, 0);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_db_path(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o,
                                                  "redis://localhost:6380/2"),
                     0);
    assert_string_equal(o->host, "localhost");
    assert_int_equal(o->port, 6380);
    assert_int_equal(o->db, 2);

    assert_int_equal(casynq_redis_options_set_url(o, "redis://localhost/15"),
                     0);
    assert_int_equal(o->port, 6379);
    assert_int_equal(o->db, 15);

    assert_int_equal(casynq_redis_options_set_url(o, "redis://localhost/"), 0);
    assert_int_equal(o->db, 0);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_user_and_password(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://alice:s3cret@localhost:6379/1"),
                     0);

    assert_string_equal(o->username, "alice");
    assert_string_equal(o->password, "s3cret");
    assert_string_equal(o->host, "localhost");
    assert_int_equal(o->port, 6379);
    assert_int_equal(o->db, 1);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_colon_password_has_no_user(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o,
                                                  "redis://:s3cret@localhost"),
                     0);

    assert_null(o->username);
    assert_string_equal(o->password, "s3cret");
    assert_string_equal(o->host, "localhost");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_single_userinfo_is_password(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o,
                                                  "redis://s3cret@localhost"),
                     0);

    assert_null(o->username);
    assert_string_equal(o->password, "s3cret");
    assert_string_equal(o->host, "localhost");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_percent_escapes_decoded(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://al%69ce:p%40ss%2Fw%3a%25@localhost"),
                     0);

    assert_string_equal(o->username, "alice");
    assert_string_equal(o->password, "p@ss/w:%");
    assert_string_equal(o->host, "localhost");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_password_with_at_sign(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://bob:p@ss@w0rd@localhost:6390/4"),
                     0);

    assert_string_equal(o->username, "bob");
    assert_string_equal(o->password, "p@ss@w0rd");
    assert_string_equal(o->host, "localhost");
    assert_int_equal(o->port, 6390);
    assert_int_equal(o->db, 4);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_ipv6_literal(void **state)
{
    struct casynq_redis_options *o = new_options();
    char text[64];

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o, "redis://[::1]:6380"), 0);
    assert_string_equal(o->host, "::1");
    assert_int_equal(o->port, 6380);
    casynq_redis_options_describe(o, text, sizeof(text));
    assert_string_equal(text, "[::1]:6380/0");

    assert_int_equal(casynq_redis_options_set_url(o, "redis://[::1]/2"), 0);
    assert_string_equal(o->host, "::1");
    assert_int_equal(o->port, 6379);
    assert_int_equal(o->db, 2);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_unix_socket_with_db(void **state)
{
    struct casynq_redis_options *o = new_options();
    char text[64];

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "unix:///run/redis/redis.sock?db=3"),
                     0);

    assert_string_equal(o->unix_path, "/run/redis/redis.sock");
    assert_null(o->host);
    assert_int_equal(o->db, 3);
    assert_null(o->password);
    casynq_redis_options_describe(o, text, sizeof(text));
    assert_string_equal(text, "unix:/run/redis/redis.sock?db=3");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_unix_socket_without_db(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(o, "unix:///tmp/r.sock"),
                     0);

    assert_string_equal(o->unix_path, "/tmp/r.sock");
    assert_int_equal(o->db, 0);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_unix_socket_with_credentials(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "unix://user:pw@/run/redis.sock"),
                     0);

    assert_string_equal(o->username, "user");
    assert_string_equal(o->password, "pw");
    assert_string_equal(o->unix_path, "/run/redis.sock");
    assert_null(o->host);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_resets_unnamed_fields(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://u:p@example.test:7000/9"),
                     0);
    assert_int_equal(casynq_redis_options_set_timeouts(o, 1500, 2500), 0);

    assert_int_equal(casynq_redis_options_set_url(o, "redis://other.test"),
                     0);
    assert_string_equal(o->host, "other.test");
    assert_int_equal(o->port, 6379);
    assert_int_equal(o->db, 0);
    assert_null(o->username);
    assert_null(o->password);
    assert_int_equal(o->connect_timeout_ms, 1500);
    assert_int_equal(o->command_timeout_ms, 2500);

    assert_int_equal(casynq_redis_options_set_url(o, "unix:///tmp/r.sock"),
                     0);
    assert_int_equal(casynq_redis_options_set_url(o, "redis://third.test"),
                     0);
    assert_null(o->unix_path);
    assert_string_equal(o->host, "third.test");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_empty_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "", "empty");
    assert_int_equal(casynq_redis_options_set_url(o, NULL), CASYNQ_EINVAL);

    casynq_redis_options_destroy(o);
}

static void test_redis_url_missing_scheme_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "localhost:6379", "scheme");
    assert_url_rejected(o, "//localhost:6379", "scheme");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_http_scheme_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "http://localhost:6379", "scheme");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_tls_scheme_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "rediss://localhost:6380", "TLS");
    assert_names(casynq_redis_options_last_error(o), "not supported");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_bad_port_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://localhost:0", "port \"0\"");
    assert_url_rejected(o, "redis://localhost:70000", "port \"70000\"");
    assert_url_rejected(o, "redis://localhost:abc", "port \"abc\"");
    assert_url_rejected(o, "redis://localhost:", "port");
    assert_url_rejected(o, "redis://localhost:-1", "port \"-1\"");
    assert_url_rejected(o, "redis://[::1]:99999", "port \"99999\"");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_bad_db_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://localhost/-1", "database \"-1\"");
    assert_url_rejected(o, "redis://localhost/abc", "database \"abc\"");
    assert_url_rejected(o, "redis://localhost/99999999999",
                        "database \"99999999999\"");
    assert_url_rejected(o, "unix:///tmp/r.sock?db=x", "database \"x\"");
    assert_url_rejected(o, "unix:///tmp/r.sock?db=", "database");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_bad_percent_escape_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://user:p%zzss@localhost", "escape");
    assert_url_rejected(o, "redis://user:pass%4@localhost", "escape");
    assert_url_rejected(o, "redis://us%g1er:pass@localhost", "escape");

    casynq_redis_options_destroy(o);
}

/* A %00 escape would cut the user name or password short, so AUTH would
 * later fail with a credential the caller never wrote. */
static void test_redis_url_nul_escape_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://user:ab%00cd@localhost", "password");
    assert_url_rejected(o, "redis://us%00er:pass@localhost", "user");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_trailing_junk_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://localhost:6379?timeout=5",
                        "?timeout=5");
    assert_url_rejected(o, "redis://localhost#frag", "#frag");
    assert_url_rejected(o, "redis://localhost/0/extra", "0/extra");
    assert_url_rejected(o, "redis://[::1]x", "]");
    assert_url_rejected(o, "redis://[::1", "]");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_unix_path_missing_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "unix://", "socket path");
    assert_url_rejected(o, "unix://redis.sock", "socket path");
    assert_url_rejected(o, "unix://user:pw@", "socket path");
    assert_url_rejected(o, "unix://user:pw@run/redis.sock", "socket path");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_unix_unknown_query_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "unix:///tmp/r.sock?timeout=5", "?timeout=5");
    assert_names(casynq_redis_options_last_error(o), "?db=N");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_user_without_password_rejected(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://alice:@localhost", "alice");
    assert_names(casynq_redis_options_last_error(o), "password");

    casynq_redis_options_destroy(o);
}

static void test_redis_url_errors_hide_password(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_url_rejected(o, "redis://u:hunter2@localhost:abc", "port");
    assert_not_shown(casynq_redis_options_last_error(o), "hunter2");

    assert_url_rejected(o, "redis://u:hunter2%zz@localhost", "escape");
    assert_not_shown(casynq_redis_options_last_error(o), "hunter2");

    assert_url_rejected(o, "redis://u:hunter2@localhost/x", "database");
    assert_not_shown(casynq_redis_options_last_error(o), "hunter2");

    casynq_redis_options_destroy(o);
}

static void test_redis_describe_hides_credentials(void **state)
{
    struct casynq_redis_options *o = new_options();
    char text[128];

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://alice:hunter2@db.test:6380/3"),
                     0);
    casynq_redis_options_describe(o, text, sizeof(text));
    assert_string_equal(text, "db.test:6380/3");
    assert_not_shown(text, "hunter2");
    assert_not_shown(text, "alice");

    assert_int_equal(casynq_redis_options_set_url(
                             o, "unix://alice:hunter2@/run/redis.sock?db=1"),
                     0);
    casynq_redis_options_describe(o, text, sizeof(text));
    assert_string_equal(text, "unix:/run/redis.sock?db=1");
    assert_not_shown(text, "hunter2");
    assert_not_shown(text, "alice");

    casynq_redis_options_destroy(o);
}

static void test_redis_describe_truncates_like_snprintf(void **state)
{
    struct casynq_redis_options *o = new_options();
    char text[8];

    (void)state;
    memset(text, 'x', sizeof(text));
    assert_int_equal(casynq_redis_options_describe(o, text, sizeof(text)),
                     (int)strlen("127.0.0.1:6379/0"));
    assert_string_equal(text, "127.0.0");
    assert_int_equal(casynq_redis_options_describe(o, NULL, 0),
                     (int)strlen("127.0.0.1:6379/0"));

    casynq_redis_options_destroy(o);
}

static void test_redis_set_tcp_validates(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_tcp(o, NULL, 6379),
                     CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "host");
    assert_int_equal(casynq_redis_options_set_tcp(o, "", 6379), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "host");
    assert_int_equal(casynq_redis_options_set_tcp(o, "h", 0), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "port 0");
    assert_int_equal(casynq_redis_options_set_tcp(o, "h", -1), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "port -1");
    assert_int_equal(casynq_redis_options_set_tcp(o, "h", 65536),
                     CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "port 65536");

    /* A rejected call keeps the earlier address. */
    assert_string_equal(o->host, "127.0.0.1");
    assert_int_equal(o->port, 6379);

    assert_int_equal(casynq_redis_options_set_tcp(o, "low.test", 1), 0);
    assert_string_equal(o->host, "low.test");
    assert_int_equal(o->port, 1);
    assert_int_equal(casynq_redis_options_set_tcp(o, "high.test", 65535), 0);
    assert_string_equal(o->host, "high.test");
    assert_int_equal(o->port, 65535);

    casynq_redis_options_destroy(o);
}

static void test_redis_set_unix_replaces_tcp(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_unix(o, NULL), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "path");
    assert_int_equal(casynq_redis_options_set_unix(o, ""), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "path");
    assert_string_equal(o->host, "127.0.0.1");

    assert_int_equal(casynq_redis_options_set_unix(o, "/tmp/r.sock"), 0);
    assert_string_equal(o->unix_path, "/tmp/r.sock");
    assert_null(o->host);

    assert_int_equal(casynq_redis_options_set_tcp(o, "back.test", 6379), 0);
    assert_null(o->unix_path);
    assert_string_equal(o->host, "back.test");

    casynq_redis_options_destroy(o);
}

static void test_redis_set_db_validates(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_db(o, -1), CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "-1");
    assert_int_equal(o->db, 0);

    assert_int_equal(casynq_redis_options_set_db(o, 15), 0);
    assert_int_equal(o->db, 15);
    assert_int_equal(casynq_redis_options_set_db(o, 0), 0);
    assert_int_equal(o->db, 0);

    casynq_redis_options_destroy(o);
}

static void test_redis_set_auth_validates(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_auth(o, "alice", NULL),
                     CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "alice");
    assert_null(o->username);
    assert_null(o->password);

    assert_int_equal(casynq_redis_options_set_auth(o, NULL, "pw"), 0);
    assert_null(o->username);
    assert_string_equal(o->password, "pw");

    assert_int_equal(casynq_redis_options_set_auth(o, "alice", "pw2"), 0);
    assert_string_equal(o->username, "alice");
    assert_string_equal(o->password, "pw2");

    assert_int_equal(casynq_redis_options_set_auth(o, NULL, NULL), 0);
    assert_null(o->username);
    assert_null(o->password);

    casynq_redis_options_destroy(o);
}

static void test_redis_set_timeouts_validates(void **state)
{
    struct casynq_redis_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_redis_options_set_timeouts(o, -1, 100),
                     CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "-1");
    assert_int_equal(casynq_redis_options_set_timeouts(o, 100, -2),
                     CASYNQ_EINVAL);
    assert_names(casynq_redis_options_last_error(o), "-2");
    assert_int_equal(o->connect_timeout_ms, 5000);
    assert_int_equal(o->command_timeout_ms, 5000);

    assert_int_equal(casynq_redis_options_set_timeouts(o, 250, 0), 0);
    assert_int_equal(o->connect_timeout_ms, 250);
    assert_int_equal(o->command_timeout_ms, 5000);
    assert_int_equal(casynq_redis_options_set_timeouts(o, 0, 750), 0);
    assert_int_equal(o->connect_timeout_ms, 250);
    assert_int_equal(o->command_timeout_ms, 750);

    casynq_redis_options_destroy(o);
}

static void test_redis_options_null_object_rejected(void **state)
{
    (void)state;
    assert_int_equal(casynq_redis_options_create(NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_url(NULL, "redis://h"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_tcp(NULL, "h", 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_unix(NULL, "/p"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_db(NULL, 0), CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_auth(NULL, NULL, "p"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_redis_options_set_timeouts(NULL, 1, 1),
                     CASYNQ_EINVAL);
    assert_string_equal(casynq_redis_options_last_error(NULL), "");
    casynq_redis_options_destroy(NULL);
}

static void test_redis_options_copy_is_deep(void **state)
{
    struct casynq_redis_options *o = new_options();
    struct casynq_redis_options copy;

    (void)state;
    assert_int_equal(casynq_redis_options_set_url(
                             o, "redis://alice:pw@copy.test:7001/5"),
                     0);
    assert_int_equal(casynq__redis_options_copy(&copy, o), 0);
    assert_int_equal(casynq_redis_options_set_url(o, "redis://changed.test"),
                     0);

    assert_string_equal(copy.host, "copy.test");
    assert_int_equal(copy.port, 7001);
    assert_int_equal(copy.db, 5);
    assert_string_equal(copy.username, "alice");
    assert_string_equal(copy.password, "pw");

    casynq__redis_options_finish(&copy);

    casynq_redis_options_destroy(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_redis_options_defaults),
            cmocka_unit_test(test_redis_url_host_only_uses_default_port),
            cmocka_unit_test(test_redis_url_host_port),
            cmocka_unit_test(test_redis_url_db_path),
            cmocka_unit_test(test_redis_url_user_and_password),
            cmocka_unit_test(test_redis_url_colon_password_has_no_user),
            cmocka_unit_test(test_redis_url_single_userinfo_is_password),
            cmocka_unit_test(test_redis_url_percent_escapes_decoded),
            cmocka_unit_test(test_redis_url_password_with_at_sign),
            cmocka_unit_test(test_redis_url_ipv6_literal),
            cmocka_unit_test(test_redis_url_unix_socket_with_db),
            cmocka_unit_test(test_redis_url_unix_socket_without_db),
            cmocka_unit_test(test_redis_url_unix_socket_with_credentials),
            cmocka_unit_test(test_redis_url_resets_unnamed_fields),
            cmocka_unit_test(test_redis_url_empty_rejected),
            cmocka_unit_test(test_redis_url_missing_scheme_rejected),
            cmocka_unit_test(test_redis_url_http_scheme_rejected),
            cmocka_unit_test(test_redis_url_tls_scheme_rejected),
            cmocka_unit_test(test_redis_url_bad_port_rejected),
            cmocka_unit_test(test_redis_url_bad_db_rejected),
            cmocka_unit_test(test_redis_url_bad_percent_escape_rejected),
            cmocka_unit_test(test_redis_url_nul_escape_rejected),
            cmocka_unit_test(test_redis_url_trailing_junk_rejected),
            cmocka_unit_test(test_redis_url_unix_path_missing_rejected),
            cmocka_unit_test(test_redis_url_unix_unknown_query_rejected),
            cmocka_unit_test(test_redis_url_user_without_password_rejected),
            cmocka_unit_test(test_redis_url_errors_hide_password),
            cmocka_unit_test(test_redis_describe_hides_credentials),
            cmocka_unit_test(test_redis_describe_truncates_like_snprintf),
            cmocka_unit_test(test_redis_set_tcp_validates),
            cmocka_unit_test(test_redis_set_unix_replaces_tcp),
            cmocka_unit_test(test_redis_set_db_validates),
            cmocka_unit_test(test_redis_set_auth_validates),
            cmocka_unit_test(test_redis_set_timeouts_validates),
            cmocka_unit_test(test_redis_options_null_object_rejected),
            cmocka_unit_test(test_redis_options_copy_is_deep),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
