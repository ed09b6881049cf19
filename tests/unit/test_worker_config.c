/* Tests of casynq-worker's settings code: the JSON config file, the
 * parsers of flag values, merging layers and copying them into a
 * struct casynq_config. Config files are written to a temporary directory
 * that each test removes. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "worker_config.h"

struct fixture {
    char dir[64];   /* temporary directory */
    char path[128]; /* dir/worker.json */
    char err[1024];
    struct worker_config cfg;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (f == NULL) {
        return -1;
    }
    snprintf(f->dir, sizeof(f->dir), "/tmp/casynq-worker-config-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/worker.json", f->dir);
    worker_config_init(&f->cfg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    worker_config_finish(&f->cfg);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void write_bytes(const struct fixture *f, const void *data, size_t len)
{
    FILE *out = fopen(f->path, "wb");

    assert_non_null(out);
    assert_int_equal(fwrite(data, 1, len, out), len);
    assert_int_equal(fclose(out), 0);
}

static void write_text(const struct fixture *f, const char *text)
{
    write_bytes(f, text, strlen(text));
}

/* Writes text to the fixture's file, loads it and returns the code. */
static int load_text(struct fixture *f, const char *text)
{
    write_text(f, text);
    return worker_config_load(f->path, &f->cfg, f->err, sizeof(f->err));
}

static void assert_err_contains(const struct fixture *f, const char *part)
{
    if (strstr(f->err, part) == NULL) {
        fail_msg("message \"%s\" does not contain \"%s\"", f->err, part);
    }
}

/* Asserts that the loaded settings are all unset. */
static void assert_all_unset(const struct worker_config *c)
{
    assert_null(c->redis_url);
    assert_int_equal(c->concurrency, 0);
    assert_null(c->queues);
    assert_int_equal(c->queue_count, 0);
    assert_false(c->strict_priority_set);
    assert_int_equal(c->shutdown_timeout_ms, -1);
    assert_int_equal(c->task_check_interval_ms, 0);
    assert_int_equal(c->delayed_task_check_interval_ms, 0);
    assert_int_equal(c->janitor_interval_ms, 0);
    assert_int_equal(c->janitor_batch_size, 0);
    assert_false(c->log_level_set);
}

/* ------------------------------------------------------------------------
 * Loading valid files
 */

static void test_load_every_field_sets_all(void **state)
{
    struct fixture *f = *state;
    int rc = load_text(f, "{\n"
                          "  \"redis\": \"redis://127.0.0.1:6380/2\",\n"
                          "  \"concurrency\": 4,\n"
                          "  \"queues\": {\"critical\": 6, \"default\": 3,"
                          " \"low\": 1},\n"
                          "  \"strict_priority\": true,\n"
                          "  \"shutdown_timeout_s\": 2.5,\n"
                          "  \"task_check_interval_ms\": 1000,\n"
                          "  \"delayed_task_check_interval_ms\": 5000,\n"
                          "  \"janitor_interval_ms\": 8000,\n"
                          "  \"janitor_batch_size\": 50,\n"
                          "  \"log_level\": \"debug\"\n"
                          "}\n");

    assert_int_equal(rc, 0);
    assert_string_equal(f->err, "");
    assert_string_equal(f->cfg.redis_url, "redis://127.0.0.1:6380/2");
    assert_int_equal(f->cfg.concurrency, 4);
    assert_int_equal(f->cfg.queue_count, 3);
    assert_string_equal(f->cfg.queues[0].name, "critical");
    assert_int_equal(f->cfg.queues[0].weight, 6);
    assert_string_equal(f->cfg.queues[1].name, "default");
    assert_int_equal(f->cfg.queues[1].weight, 3);
    assert_string_equal(f->cfg.queues[2].name, "low");
    assert_int_equal(f->cfg.queues[2].weight, 1);
    assert_true(f->cfg.strict_priority_set);
    assert_true(f->cfg.strict_priority);
    assert_int_equal(f->cfg.shutdown_timeout_ms, 2500);
    assert_int_equal(f->cfg.task_check_interval_ms, 1000);
    assert_int_equal(f->cfg.delayed_task_check_interval_ms, 5000);
    assert_int_equal(f->cfg.janitor_interval_ms, 8000);
    assert_int_equal(f->cfg.janitor_batch_size, 50);
    assert_true(f->cfg.log_level_set);
    assert_int_equal(f->cfg.log_level, CASYNQ_LOG_DEBUG);
}

static void test_load_empty_object_sets_nothing(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "  {}\n"), 0);
    assert_all_unset(&f->cfg);
}

static void test_load_false_and_zero_are_set(void **state)
{
    struct fixture *f = *state;

    /* false and a zero timeout are values, not "unset". */
    assert_int_equal(load_text(f, "{\"strict_priority\": false,"
                                  " \"shutdown_timeout_s\": 0}"),
                     0);
    assert_true(f->cfg.strict_priority_set);
    assert_false(f->cfg.strict_priority);
    assert_int_equal(f->cfg.shutdown_timeout_ms, 0);
}

static void test_load_integral_float_accepted(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{\"concurrency\": 4.0,"
                                  " \"janitor_interval_ms\": 1e3}"),
                     0);
    assert_int_equal(f->cfg.concurrency, 4);
    assert_int_equal(f->cfg.janitor_interval_ms, 1000);
}

static void test_load_byte_order_mark_skipped(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "\xEF\xBB\xBF{\"concurrency\": 3}"), 0);
    assert_int_equal(f->cfg.concurrency, 3);
}

static void test_load_example_file_valid(void **state)
{
    struct fixture *f = *state;
    const char *example = getenv("CASYNQ_EXAMPLE_WORKER_JSON");
    int rc;

    /* meson passes the path of examples/worker.json, which must show every
     * key, so each one has to come back set. */
    assert_non_null(example);
    rc = worker_config_load(example, &f->cfg, f->err, sizeof(f->err));
    if (rc != 0) {
        fail_msg("%s", f->err);
    }
    assert_non_null(f->cfg.redis_url);
    assert_int_not_equal(f->cfg.concurrency, 0);
    assert_non_null(f->cfg.queues);
    assert_true(f->cfg.strict_priority_set);
    assert_true(f->cfg.shutdown_timeout_ms >= 0);
    assert_int_not_equal(f->cfg.task_check_interval_ms, 0);
    assert_int_not_equal(f->cfg.delayed_task_check_interval_ms, 0);
    assert_int_not_equal(f->cfg.janitor_interval_ms, 0);
    assert_int_not_equal(f->cfg.janitor_batch_size, 0);
    assert_true(f->cfg.log_level_set);
    assert_non_null(f->cfg.metrics_addr);
    assert_int_not_equal(f->cfg.metrics_interval_ms, 0);
}

/* ------------------------------------------------------------------------
 * Rejected files
 */

static void test_load_unknown_key_suggests_close(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{\"concurency\": 4}"), CASYNQ_EINVAL);
    assert_err_contains(f, f->path);
    assert_err_contains(f, "unknown key \"concurency\"");
    assert_err_contains(f, "did you mean \"concurrency\"");
    assert_all_unset(&f->cfg);
}

static void test_load_unknown_key_lists_known(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{\"concurrency\": 2, \"threads\": 4}"),
                     CASYNQ_EINVAL);
    assert_err_contains(f, "unknown key \"threads\"");
    assert_err_contains(f, "redis, concurrency, queues");
    assert_err_contains(f, "log_level");
    /* A failed load keeps nothing of what it read before the error. */
    assert_all_unset(&f->cfg);
}

static void test_load_duplicate_key_rejected(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{\"concurrency\": 2, \"concurrency\": 3}"),
                     CASYNQ_EINVAL);
    assert_err_contains(f, "key \"concurrency\" appears twice");
}

struct bad_value {
    const char *json;     /* the whole file */
    const char *expected; /* part of the message */
};

static void assert_bad_values(struct fixture *f, const struct bad_value *cases,
                              size_t count)
{
    for (size_t i = 0; i < count; i++) {
        int rc = load_text(f, cases[i].json);

        if (rc != CASYNQ_EINVAL) {
            fail_msg("%s: expected CASYNQ_EINVAL, got %d", cases[i].json, rc);
        }
        assert_err_contains(f, f->path);
        assert_err_contains(f, cases[i].expected);
        assert_all_unset(&f->cfg);
    }
}

static void test_load_wrong_types_name_key(void **state)
{
    static const struct bad_value cases[] = {
            {"{\"redis\": 6379}", "key \"redis\" must be a string"},
            {"{\"concurrency\": \"4\"}",
             "key \"concurrency\" must be an integer from 1 to 2147483647, "
             "got \"4\""},
            {"{\"queues\": [\"default\"]}", "key \"queues\" must be a "
                                            "non-empty object"},
            {"{\"queues\": {\"default\": \"1\"}}",
             "weight of queue \"default\" must be an integer"},
            {"{\"strict_priority\": 1}",
             "key \"strict_priority\" must be true or false, got 1"},
            {"{\"strict_priority\": \"true\"}",
             "key \"strict_priority\" must be true or false"},
            {"{\"shutdown_timeout_s\": \"8s\"}",
             "key \"shutdown_timeout_s\" must be a number of seconds >= 0"},
            {"{\"task_check_interval_ms\": null}",
             "key \"task_check_interval_ms\" must be an integer"},
            {"{\"log_level\": 1}", "key \"log_level\" must be one of"},
    };

    assert_bad_values(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_load_out_of_range_names_key(void **state)
{
    static const struct bad_value cases[] = {
            {"{\"concurrency\": 0}",
             "key \"concurrency\" must be an integer from 1"},
            {"{\"concurrency\": -2}", "got -2"},
            {"{\"concurrency\": 2.5}", "got 2.5"},
            {"{\"concurrency\": 3000000000}", "key \"concurrency\""},
            {"{\"shutdown_timeout_s\": -1}", "key \"shutdown_timeout_s\""},
            {"{\"shutdown_timeout_s\": 1e300}", "key \"shutdown_timeout_s\""},
            {"{\"task_check_interval_ms\": 0}",
             "key \"task_check_interval_ms\" must be an integer from 1"},
            {"{\"delayed_task_check_interval_ms\": 0.5}",
             "key \"delayed_task_check_interval_ms\""},
            {"{\"janitor_interval_ms\": -1}", "key \"janitor_interval_ms\""},
            {"{\"janitor_batch_size\": 0}", "key \"janitor_batch_size\""},
            {"{\"log_level\": \"verbose\"}",
             "key \"log_level\" must be one of \"debug\", \"info\", "
             "\"warn\" or \"error\", got \"verbose\""},
            {"{\"redis\": \"http://example\"}", "key \"redis\""},
            {"{\"metrics_addr\": \"localhost:9464\"}",
             "key \"metrics_addr\": metrics address \"localhost:9464\""},
            {"{\"metrics_addr\": 9464}",
             "key \"metrics_addr\" must be a string"},
            {"{\"metrics_interval_ms\": 99}",
             "key \"metrics_interval_ms\" must be an integer from 100"},
    };

    assert_bad_values(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_load_bad_queues_name_queue(void **state)
{
    static const struct bad_value cases[] = {
            {"{\"queues\": {}}", "key \"queues\" must be a non-empty object"},
            {"{\"queues\": {\"\": 1}}", "queue name \"\" is empty"},
            {"{\"queues\": {\"  \": 1}}", "queue name \"  \" is blank"},
            {"{\"queues\": {\"low \": 1}}",
             "queue name \"low \" has a space at its start or end"},
            {"{\"queues\": {\"low\": 0}}",
             "weight of queue \"low\" must be an integer from 1"},
            {"{\"queues\": {\"low\": 1.5}}", "got 1.5"},
            {"{\"queues\": {\"low\": 1, \"low\": 2}}",
             "queue \"low\" is listed twice"},
    };

    assert_bad_values(*state, cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_load_long_queue_name_rejected(void **state)
{
    struct fixture *f = *state;
    char json[600];
    char name[WORKER_QUEUE_NAME_MAX + 2];

    memset(name, 'q', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    snprintf(json, sizeof(json), "{\"queues\": {\"%s\": 1}}", name);
    assert_int_equal(load_text(f, json), CASYNQ_EINVAL);
    assert_err_contains(f, "is longer than 255 bytes");

    /* 255 bytes is the maximum and is accepted. */
    name[WORKER_QUEUE_NAME_MAX] = '\0';
    snprintf(json, sizeof(json), "{\"queues\": {\"%s\": 1}}", name);
    assert_int_equal(load_text(f, json), 0);
    assert_int_equal(strlen(f->cfg.queues[0].name), WORKER_QUEUE_NAME_MAX);
}

static void test_load_invalid_json_gives_position(void **state)
{
    struct fixture *f = *state;

    /* The value on line 3 is cut off: cJSON stops at "oops". */
    assert_int_equal(load_text(f, "{\n  \"concurrency\": 4,\n"
                                  "  \"log_level\": oops\n}\n"),
                     CASYNQ_EINVAL);
    assert_err_contains(f, f->path);
    assert_err_contains(f, "invalid JSON at line 3, column 16");
    assert_err_contains(f, "near \"oops\"");
}

static void test_load_truncated_json_reports_end(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{\"concurrency\": 4"), CASYNQ_EINVAL);
    assert_err_contains(f, "invalid JSON at line 1, column 18 (byte 17), "
                           "the end of the file");
}

static void test_load_empty_file_rejected(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, ""), CASYNQ_EINVAL);
    assert_err_contains(f, "invalid JSON at line 1, column 1 (byte 0), "
                           "the end of the file");
}

static void test_load_trailing_text_rejected(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "{} {}"), CASYNQ_EINVAL);
    assert_err_contains(f, "invalid JSON at line 1, column 4 (byte 3) "
                           "near \"{}\"");
}

static void test_load_top_level_array_rejected(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(load_text(f, "[1, 2]"), CASYNQ_EINVAL);
    assert_err_contains(f, "the top level must be a JSON object");
    assert_err_contains(f, "got [1,2]");
}

static void test_load_nul_byte_rejected(void **state)
{
    struct fixture *f = *state;
    static const char text[] = "{\"concurrency\": 4}\0{}";

    write_bytes(f, text, sizeof(text) - 1);
    assert_int_equal(
            worker_config_load(f->path, &f->cfg, f->err, sizeof(f->err)),
            CASYNQ_EINVAL);
    assert_err_contains(f, "contains a NUL byte at offset 18");
}

static void test_load_oversized_file_rejected(void **state)
{
    struct fixture *f = *state;
    size_t len = WORKER_CONFIG_FILE_MAX + 1;
    char *text = malloc(len);

    assert_non_null(text);
    memset(text, ' ', len);
    text[0] = '{';
    text[len - 1] = '}';
    write_bytes(f, text, len);
    free(text);
    assert_int_equal(
            worker_config_load(f->path, &f->cfg, f->err, sizeof(f->err)),
            CASYNQ_EINVAL);
    assert_err_contains(f, "file is larger than 1048576 bytes");
}

static void test_load_missing_file_names_path(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(
            worker_config_load(f->path, &f->cfg, f->err, sizeof(f->err)),
            CASYNQ_ESYS);
    assert_err_contains(f, "cannot open config file");
    assert_err_contains(f, f->path);
    assert_err_contains(f, "No such file or directory");
    assert_all_unset(&f->cfg);
}

static void test_load_directory_names_path(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(
            worker_config_load(f->dir, &f->cfg, f->err, sizeof(f->err)),
            CASYNQ_ESYS);
    assert_err_contains(f, f->dir);
    assert_err_contains(f, "Is a directory");
}

/* ------------------------------------------------------------------------
 * Flag value parsers
 */

static void test_parse_queues_valid(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(worker_config_parse_queues("critical=6,default=3,low=1",
                                                &f->cfg, f->err,
                                                sizeof(f->err)),
                     0);
    assert_int_equal(f->cfg.queue_count, 3);
    assert_string_equal(f->cfg.queues[0].name, "critical");
    assert_int_equal(f->cfg.queues[0].weight, 6);
    assert_string_equal(f->cfg.queues[2].name, "low");
    assert_int_equal(f->cfg.queues[2].weight, 1);

    /* A second list replaces the first; names may hold ':' and spaces. */
    assert_int_equal(worker_config_parse_queues("email:high prio=2", &f->cfg,
                                                f->err, sizeof(f->err)),
                     0);
    assert_int_equal(f->cfg.queue_count, 1);
    assert_string_equal(f->cfg.queues[0].name, "email:high prio");
    assert_int_equal(f->cfg.queues[0].weight, 2);
}

static void test_parse_queues_invalid_keeps_old(void **state)
{
    static const struct {
        const char *spec;
        const char *expected;
    } cases[] = {
            {"", "the queue list is empty"},
            {"default", "entry \"default\" has no '='"},
            {"=1", "queue name in entry \"=1\" is empty"},
            {" =1", "is blank"},
            {"a=1, b=2", "entry \" b=2\" has a space at its start or end"},
            {"a=0", "weight in entry \"a=0\" must be an integer from 1"},
            {"a=-1", "weight in entry \"a=-1\""},
            {"a=", "weight in entry \"a=\""},
            {"a=1x", "weight in entry \"a=1x\""},
            {"a= 1", "weight in entry \"a= 1\""},
            {"a=99999999999", "weight in entry \"a=99999999999\""},
            {"a=1234567890123456789012345678901234567890", "weight in entry"},
            {"a=1,,b=2", "empty entry"},
            {"a=1,", "empty entry"},
            {",a=1", "empty entry"},
            {"a=1,b=2,a=3", "queue \"a\" is listed twice"},
            {"a=1=2", "weight in entry \"a=1=2\""},
    };
    struct fixture *f = *state;

    assert_int_equal(worker_config_parse_queues("keep=5", &f->cfg, f->err,
                                                sizeof(f->err)),
                     0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = worker_config_parse_queues(cases[i].spec, &f->cfg, f->err,
                                            sizeof(f->err));

        if (rc != CASYNQ_EINVAL) {
            fail_msg("\"%s\": expected CASYNQ_EINVAL, got %d", cases[i].spec,
                     rc);
        }
        assert_err_contains(f, cases[i].expected);
        assert_int_equal(f->cfg.queue_count, 1);
        assert_string_equal(f->cfg.queues[0].name, "keep");
    }
}

static void test_parse_queues_long_name_rejected(void **state)
{
    struct fixture *f = *state;
    char spec[300];

    memset(spec, 'q', WORKER_QUEUE_NAME_MAX + 1);
    snprintf(spec + WORKER_QUEUE_NAME_MAX + 1, 8, "=1");
    assert_int_equal(
            worker_config_parse_queues(spec, &f->cfg, f->err, sizeof(f->err)),
            CASYNQ_EINVAL);
    assert_err_contains(f, "is longer than 255 bytes");
}

static void test_parse_int_bounds(void **state)
{
    int v = -1;

    (void)state;
    assert_int_equal(worker_config_parse_int("1", 1, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(worker_config_parse_int("2147483647", 1, &v), 0);
    assert_int_equal(v, INT_MAX);
    assert_int_equal(worker_config_parse_int("0", 0, &v), 0);
    assert_int_equal(v, 0);

    v = 7;
    assert_int_equal(worker_config_parse_int("0", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("2147483648", 1, &v),
                     CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("-3", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("+3", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int(" 3", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("3 ", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("4x", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(worker_config_parse_int("0x10", 1, &v), CASYNQ_EINVAL);
    assert_int_equal(v, 7);
}

static void test_parse_seconds_forms(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } valid[] = {
            {"8", 8000},   {"0", 0},      {"0.5", 500},
            {".25", 250},  {"2.", 2000},  {"1.25", 1250},
            {"0.0004", 0}, {"0.0006", 1}, {"3600", 3600000},
    };
    static const char *const invalid[] = {
            "",
            ".",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1s",
            "inf",
            "nan",
            "0x10",
            "1e3",
            "1,5",
            "99999999999999999999",
    };
    int64_t ms;

    (void)state;
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        ms = -1;
        if (worker_config_parse_seconds(valid[i].text, &ms) != 0) {
            fail_msg("\"%s\" was rejected", valid[i].text);
        }
        assert_int_equal(ms, valid[i].ms);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        ms = -1;
        if (worker_config_parse_seconds(invalid[i], &ms) != CASYNQ_EINVAL) {
            fail_msg("\"%s\" was accepted", invalid[i]);
        }
        assert_int_equal(ms, -1);
    }
}

static void test_set_redis_url_checks_form(void **state)
{
    struct fixture *f = *state;

    assert_int_equal(worker_config_set_redis_url(&f->cfg,
                                                 "redis://10.0.0.1:7000/3",
                                                 f->err, sizeof(f->err)),
                     0);
    assert_string_equal(f->cfg.redis_url, "redis://10.0.0.1:7000/3");

    assert_int_equal(worker_config_set_redis_url(&f->cfg, "localhost:6379",
                                                 f->err, sizeof(f->err)),
                     CASYNQ_EINVAL);
    assert_err_contains(f, "redis://");
    /* The earlier value stays. */
    assert_string_equal(f->cfg.redis_url, "redis://10.0.0.1:7000/3");
}

/* ------------------------------------------------------------------------
 * Merging and applying
 */

static void test_merge_later_layer_wins(void **state)
{
    struct fixture *f = *state;
    struct worker_config flags;

    assert_int_equal(load_text(f, "{\"concurrency\": 4,"
                                  " \"queues\": {\"a\": 1},"
                                  " \"strict_priority\": true,"
                                  " \"shutdown_timeout_s\": 3,"
                                  " \"janitor_batch_size\": 7,"
                                  " \"log_level\": \"warn\"}"),
                     0);
    worker_config_init(&flags);
    flags.concurrency = 9;
    flags.strict_priority_set = true;
    flags.strict_priority = false;
    flags.shutdown_timeout_ms = 0;
    assert_int_equal(worker_config_parse_queues("b=2,c=3", &flags, f->err,
                                                sizeof(f->err)),
                     0);

    assert_int_equal(worker_config_merge(&f->cfg, &flags), 0);
    worker_config_finish(&flags);

    /* Set in the later layer: replaced. */
    assert_int_equal(f->cfg.concurrency, 9);
    assert_false(f->cfg.strict_priority);
    assert_int_equal(f->cfg.shutdown_timeout_ms, 0);
    assert_int_equal(f->cfg.queue_count, 2);
    assert_string_equal(f->cfg.queues[0].name, "b");
    assert_string_equal(f->cfg.queues[1].name, "c");
    /* Unset in the later layer: kept. */
    assert_int_equal(f->cfg.janitor_batch_size, 7);
    assert_true(f->cfg.log_level_set);
    assert_int_equal(f->cfg.log_level, CASYNQ_LOG_WARN);
    assert_null(f->cfg.redis_url);
}

static void test_describe_queues_lists_all(void **state)
{
    struct fixture *f = *state;
    char buf[64];

    worker_config_describe_queues(&f->cfg, buf, sizeof(buf));
    assert_string_equal(buf, "default=1");
    assert_int_equal(worker_config_parse_queues("critical=6,low=1", &f->cfg,
                                                f->err, sizeof(f->err)),
                     0);
    worker_config_describe_queues(&f->cfg, buf, sizeof(buf));
    assert_string_equal(buf, "critical=6,low=1");
    worker_config_describe_queues(&f->cfg, buf, 8);
    assert_string_equal(buf, "critica");
}

static void test_apply_full_config_accepted(void **state)
{
    struct fixture *f = *state;
    struct casynq_config *cfg = NULL;

    assert_int_equal(load_text(f, "{\"redis\": \"redis://127.0.0.1:1/0\","
                                  " \"concurrency\": 2,"
                                  " \"queues\": {\"a\": 2, \"b\": 1},"
                                  " \"strict_priority\": true,"
                                  " \"shutdown_timeout_s\": 0.5,"
                                  " \"task_check_interval_ms\": 100,"
                                  " \"delayed_task_check_interval_ms\": 200,"
                                  " \"janitor_interval_ms\": 300,"
                                  " \"log_level\": \"error\"}"),
                     0);
    assert_int_equal(casynq_config_create(&cfg), 0);
    assert_int_equal(worker_config_apply(&f->cfg, cfg, f->err, sizeof(f->err)),
                     0);
    assert_string_equal(f->err, "");
    casynq_config_destroy(cfg);
}

static void test_apply_unset_config_accepted(void **state)
{
    struct fixture *f = *state;
    struct casynq_config *cfg = NULL;

    assert_int_equal(casynq_config_create(&cfg), 0);
    assert_int_equal(worker_config_apply(&f->cfg, cfg, f->err, sizeof(f->err)),
                     0);
    casynq_config_destroy(cfg);
}

static void test_apply_rejected_value_reports(void **state)
{
    struct fixture *f = *state;
    struct casynq_config *cfg = NULL;

    /* The parsers never produce a negative concurrency; this checks that
     * a value the library rejects comes back with the library's message. */
    f->cfg.concurrency = -3;
    assert_int_equal(casynq_config_create(&cfg), 0);
    assert_int_equal(worker_config_apply(&f->cfg, cfg, f->err, sizeof(f->err)),
                     CASYNQ_EINVAL);
    assert_true(strlen(f->err) > 0);
    assert_err_contains(f, "-3");
    casynq_config_destroy(cfg);
}

#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
            TEST(test_load_every_field_sets_all),
            TEST(test_load_empty_object_sets_nothing),
            TEST(test_load_false_and_zero_are_set),
            TEST(test_load_integral_float_accepted),
            TEST(test_load_byte_order_mark_skipped),
            TEST(test_load_example_file_valid),
            TEST(test_load_unknown_key_suggests_close),
            TEST(test_load_unknown_key_lists_known),
            TEST(test_load_duplicate_key_rejected),
            TEST(test_load_wrong_types_name_key),
            TEST(test_load_out_of_range_names_key),
            TEST(test_load_bad_queues_name_queue),
            TEST(test_load_long_queue_name_rejected),
            TEST(test_load_invalid_json_gives_position),
            TEST(test_load_truncated_json_reports_end),
            TEST(test_load_empty_file_rejected),
            TEST(test_load_trailing_text_rejected),
            TEST(test_load_top_level_array_rejected),
            TEST(test_load_nul_byte_rejected),
            TEST(test_load_oversized_file_rejected),
            TEST(test_load_missing_file_names_path),
            TEST(test_load_directory_names_path),
            TEST(test_parse_queues_valid),
            TEST(test_parse_queues_invalid_keeps_old),
            TEST(test_parse_queues_long_name_rejected),
            TEST(test_parse_int_bounds),
            TEST(test_parse_seconds_forms),
            TEST(test_set_redis_url_checks_form),
            TEST(test_merge_later_layer_wins),
            TEST(test_describe_queues_lists_all),
            TEST(test_apply_full_config_accepted),
            TEST(test_apply_unset_config_accepted),
            TEST(test_apply_rejected_value_reports),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
