/* Unit tests of enqueue options: the defaults and checks that
 * casynq__enqueue_plan() applies, and that casynq_client_enqueue() rejects
 * bad options before it opens a connection. No Redis server runs: the
 * client points at a socket path in an empty temporary directory. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <casynq.h>

#include "client.h"
#include "task.h"
#include "util.h"

/* A fixed enqueue time, so that scheduled times can be compared exactly. */
#define NOW_S 1700000000LL

/* Socket path of the client in the tests, in a directory that
 * group_setup() creates empty, so nothing ever listens there. */
static char tmp_dir[256];
static char socket_path[300];

/* What info_out points to before an enqueue, so that a test can see
 * whether the call reset it to NULL. */
static struct casynq_task_info info_not_set;

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

static int group_setup(void **state)
{
    const char *base = getenv("TMPDIR");

    (void)state;
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(tmp_dir, sizeof(tmp_dir), "%s/casynq-unit-options-XXXXXX", base);
    if (mkdtemp(tmp_dir) == NULL) {
        fprintf(stderr,
                "cannot create a temporary directory under %s: %s; set "
                "TMPDIR to a writable directory\n",
                base, strerror(errno));
        return -1;
    }
    snprintf(socket_path, sizeof(socket_path), "%s/absent.sock", tmp_dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return rmdir(tmp_dir);
}

static struct casynq_enqueue_options *new_options(void)
{
    struct casynq_enqueue_options *o = NULL;

    assert_int_equal(casynq_enqueue_options_create(&o), 0);
    assert_non_null(o);
    return o;
}

/* Creates a client whose Redis address is a socket path nothing listens
 * on, so any attempt to reach Redis fails with a connection error. */
static struct casynq_client *new_offline_client(void)
{
    struct casynq_redis_options *redis = NULL;
    struct casynq_client *client = NULL;

    assert_int_equal(casynq_redis_options_create(&redis), 0);
    assert_int_equal(casynq_redis_options_set_unix(redis, socket_path), 0);
    assert_int_equal(casynq_client_create(redis, &client), 0);
    assert_non_null(client);
    casynq_redis_options_destroy(redis);
    return client;
}

static void assert_names(const char *message, const char *field)
{
    if (strstr(message, field) == NULL) {
        fail_msg("error message \"%s\" does not name %s", message, field);
    }
}

static void assert_uuid_v4(const char *id)
{
    assert_int_equal(strlen(id), CASYNQ__UUID_LEN);
    for (int i = 0; i < CASYNQ__UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            assert_int_equal(id[i], '-');
        } else if (strchr("0123456789abcdef", id[i]) == NULL) {
            fail_msg("character %d of \"%s\" is not lowercase hex", i, id);
        }
    }
    assert_int_equal(id[14], '4');
    assert_non_null(strchr("89ab", id[19]));
}

/* Checks that both the plan and a client enqueue reject o with EINVAL and
 * a message naming field, and that the client did not try to connect. */
static void assert_rejected(const struct casynq_enqueue_options *o,
                            const char *field)
{
    struct casynq_task_info *info = &info_not_set;
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";
    struct casynq_client *client;
    struct casynq_task *task = NULL;

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf),
                     CASYNQ_EINVAL);
    assert_names(errbuf, field);

    client = new_offline_client();
    assert_int_equal(casynq_task_create("email:welcome", "{}", 2, &task), 0);
    assert_int_equal(casynq_client_enqueue(client, task, o, &info),
                     CASYNQ_EINVAL);
    assert_null(info);
    assert_names(casynq_client_last_error(client), field);
    assert_null(strstr(casynq_client_last_error(client), "connect"));

    casynq_task_destroy(task);
    casynq_client_destroy(client);
}

static void test_plan_null_options_use_defaults(void **state)
{
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq__enqueue_plan(NULL, NOW_S, &plan, errbuf), 0);

    assert_string_equal(plan.queue, "default");
    assert_int_equal(plan.max_retry, 25);
    assert_int_equal(plan.timeout_s, 1800);
    assert_int_equal(plan.deadline_unix_s, 0);
    assert_int_equal(plan.retention_s, 0);
    assert_int_equal(plan.process_at_unix_s, 0);
    assert_int_equal(plan.unique_ttl_s, 0);
    assert_null(plan.group);
    assert_ptr_equal(plan.task_id, plan.id);
    assert_uuid_v4(plan.task_id);
}

static void test_plan_empty_options_use_defaults(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);

    assert_string_equal(plan.queue, "default");
    assert_int_equal(plan.max_retry, 25);
    assert_int_equal(plan.timeout_s, 1800);
    assert_int_equal(plan.deadline_unix_s, 0);
    assert_int_equal(plan.retention_s, 0);
    assert_int_equal(plan.process_at_unix_s, 0);
    assert_int_equal(plan.unique_ttl_s, 0);
    assert_null(plan.group);
    assert_uuid_v4(plan.task_id);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_generated_ids_differ(void **state)
{
    struct casynq__enqueue_plan first;
    struct casynq__enqueue_plan second;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq__enqueue_plan(NULL, NOW_S, &first, errbuf), 0);
    assert_int_equal(casynq__enqueue_plan(NULL, NOW_S, &second, errbuf), 0);

    assert_string_not_equal(first.task_id, second.task_id);
}

static void test_plan_each_option_applied(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_queue(o, "critical"), 0);
    assert_int_equal(casynq_enqueue_options_set_max_retry(o, 3), 0);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, 60), 0);
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(o,
                                                                NOW_S + 3600),
                     0);
    assert_int_equal(casynq_enqueue_options_set_unique_ttl_s(o, 600), 0);
    assert_int_equal(casynq_enqueue_options_set_task_id(o, "order-17"), 0);
    assert_int_equal(casynq_enqueue_options_set_retention_s(o, 86400), 0);
    assert_int_equal(casynq_enqueue_options_set_group(o, "digest"), 0);
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S + 90),
                     0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_string_equal(plan.queue, "critical");
    assert_int_equal(plan.max_retry, 3);
    assert_int_equal(plan.timeout_s, 60);
    assert_int_equal(plan.deadline_unix_s, NOW_S + 3600);
    assert_int_equal(plan.unique_ttl_s, 600);
    assert_string_equal(plan.task_id, "order-17");
    assert_int_equal(plan.retention_s, 86400);
    assert_string_equal(plan.group, "digest");
    assert_int_equal(plan.process_at_unix_s, NOW_S + 90);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_max_retry_zero_kept(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_max_retry(o, 0), 0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.max_retry, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_timeout_only_has_no_deadline(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, 60), 0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.timeout_s, 60);
    assert_int_equal(plan.deadline_unix_s, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_deadline_only_drops_default_timeout(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(o,
                                                                NOW_S + 60),
                     0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.timeout_s, 0);
    assert_int_equal(plan.deadline_unix_s, NOW_S + 60);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_timeout_zero_with_deadline_accepted(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, 0), 0);
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(o,
                                                                NOW_S + 60),
                     0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.timeout_s, 0);
    assert_int_equal(plan.deadline_unix_s, NOW_S + 60);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_queue_of_255_bytes_accepted(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";
    char name[256];

    (void)state;
    memset(name, 'q', 255);
    name[255] = '\0';
    assert_int_equal(casynq_enqueue_options_set_queue(o, name), 0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_string_equal(plan.queue, name);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_utf8_queue_accepted(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_queue(o, "caf\xc3\xa9"), 0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_string_equal(plan.queue, "caf\xc3\xa9");

    casynq_enqueue_options_destroy(o);
}

static void test_plan_setter_replaces_string(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_queue(o, "first"), 0);
    assert_int_equal(casynq_enqueue_options_set_queue(o, "second"), 0);
    assert_int_equal(casynq_enqueue_options_set_task_id(o, "id-1"), 0);
    assert_int_equal(casynq_enqueue_options_set_task_id(o, "id-2"), 0);
    assert_int_equal(casynq_enqueue_options_set_group(o, "g-1"), 0);
    assert_int_equal(casynq_enqueue_options_set_group(o, "g-2"), 0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_string_equal(plan.queue, "second");
    assert_string_equal(plan.task_id, "id-2");
    assert_string_equal(plan.group, "g-2");

    casynq_enqueue_options_destroy(o);
}

static void test_plan_process_at_future_schedules(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S + 1),
                     0);

    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, NOW_S + 1);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_process_at_past_is_immediate(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S - 100),
                     0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o, NOW_S),
                     0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o, 0), 0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_process_in_adds_to_now(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 120), 0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, NOW_S + 120);

    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 0), 0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_process_in_replaces_process_at(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S + 500),
                     0);
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 10), 0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, NOW_S + 10);

    /* Process-in 0 after a future process-at means "now". */
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S + 500),
                     0);
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 0), 0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_plan_process_at_replaces_process_in(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    struct casynq__enqueue_plan plan;
    char errbuf[CASYNQ__ERRBUF_SIZE] = "";

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 10), 0);
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S + 500),
                     0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, NOW_S + 500);

    /* A past process-at after a process-in means "now". */
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, 10), 0);
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(o,
                                                                  NOW_S - 1),
                     0);
    assert_int_equal(casynq__enqueue_plan(o, NOW_S, &plan, errbuf), 0);
    assert_int_equal(plan.process_at_unix_s, 0);

    casynq_enqueue_options_destroy(o);
}

static void test_options_blank_queue_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_queue(o, ""), 0);
    assert_rejected(o, "queue");

    assert_int_equal(casynq_enqueue_options_set_queue(o, " \t\n"), 0);
    assert_rejected(o, "queue");

    casynq_enqueue_options_destroy(o);
}

static void test_options_long_queue_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();
    char name[257];

    (void)state;
    memset(name, 'q', 256);
    name[256] = '\0';
    assert_int_equal(casynq_enqueue_options_set_queue(o, name), 0);

    assert_rejected(o, "queue");

    casynq_enqueue_options_destroy(o);
}

static void test_options_invalid_utf8_queue_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_queue(o, "q\xff"), 0);
    assert_rejected(o, "queue");
    assert_rejected(o, "UTF-8");

    casynq_enqueue_options_destroy(o);
}

static void test_options_negative_max_retry_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_max_retry(o, -1), 0);

    assert_rejected(o, "max_retry");

    casynq_enqueue_options_destroy(o);
}

static void test_options_negative_timeout_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, -1), 0);

    assert_rejected(o, "timeout_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_negative_deadline_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(o, -1), 0);

    assert_rejected(o, "deadline_unix_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_timeout_zero_without_deadline_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, 0), 0);

    assert_rejected(o, "timeout_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_timeout_and_deadline_zero_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_timeout_s(o, 0), 0);
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(o, 0), 0);

    assert_rejected(o, "timeout_s");
    assert_rejected(o, "deadline_unix_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_unique_ttl_below_one_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_unique_ttl_s(o, 0), 0);
    assert_rejected(o, "unique_ttl_s");

    assert_int_equal(casynq_enqueue_options_set_unique_ttl_s(o, -5), 0);
    assert_rejected(o, "unique_ttl_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_blank_task_id_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_task_id(o, ""), 0);
    assert_rejected(o, "task ID");

    assert_int_equal(casynq_enqueue_options_set_task_id(o, "  "), 0);
    assert_rejected(o, "task ID");

    casynq_enqueue_options_destroy(o);
}

static void test_options_invalid_utf8_task_id_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_task_id(o, "id-\xc0\xaf"), 0);

    assert_rejected(o, "task ID");

    casynq_enqueue_options_destroy(o);
}

static void test_options_blank_group_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_group(o, ""), 0);
    assert_rejected(o, "group");

    assert_int_equal(casynq_enqueue_options_set_group(o, "\t"), 0);
    assert_rejected(o, "group");

    casynq_enqueue_options_destroy(o);
}

static void test_options_negative_retention_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_retention_s(o, -1), 0);

    assert_rejected(o, "retention_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_negative_process_in_rejected(void **state)
{
    struct casynq_enqueue_options *o = new_options();

    (void)state;
    assert_int_equal(casynq_enqueue_options_set_process_in_s(o, -1), 0);

    assert_rejected(o, "process_in_s");

    casynq_enqueue_options_destroy(o);
}

static void test_options_null_object_rejected(void **state)
{
    (void)state;
    assert_int_equal(casynq_enqueue_options_create(NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_queue(NULL, "q"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_max_retry(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_timeout_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_deadline_unix_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_process_at_unix_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_process_in_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_unique_ttl_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_task_id(NULL, "id"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_retention_s(NULL, 1),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_enqueue_options_set_group(NULL, "g"),
                     CASYNQ_EINVAL);
    casynq_enqueue_options_destroy(NULL);
}

static void test_client_enqueue_null_task_rejected(void **state)
{
    struct casynq_client *client = new_offline_client();
    struct casynq_task_info *info = &info_not_set;

    (void)state;
    assert_int_equal(casynq_client_enqueue(client, NULL, NULL, &info),
                     CASYNQ_EINVAL);
    assert_null(info);
    assert_names(casynq_client_last_error(client), "task");

    casynq_client_destroy(client);
}

static void test_client_enqueue_task_view_rejected(void **state)
{
    struct casynq_client *client = new_offline_client();
    Asynq__TaskMessage msg;
    struct casynq_task view;

    (void)state;
    asynq__task_message__init(&msg);
    casynq__task_view_init(&view, &msg);

    assert_int_equal(casynq_client_enqueue(client, &view, NULL, NULL),
                     CASYNQ_EINVAL);
    assert_names(casynq_client_last_error(client), "casynq_task_create");

    casynq_client_destroy(client);
}

static void test_client_enqueue_null_client_rejected(void **state)
{
    struct casynq_task_info *info = &info_not_set;
    struct casynq_task *task = NULL;

    (void)state;
    assert_int_equal(casynq_task_create("email:welcome", NULL, 0, &task), 0);

    assert_int_equal(casynq_client_enqueue(NULL, task, NULL, &info),
                     CASYNQ_EINVAL);
    assert_null(info);

    casynq_task_destroy(task);
}

/* asynq's Go decoder requires every string field of a TaskMessage to be
 * valid UTF-8, so a bad type must be rejected before Redis is touched. The
 * test accepts a rejection at task creation or at enqueue. */
static void test_client_enqueue_invalid_utf8_type_rejected(void **state)
{
    struct casynq_client *client = new_offline_client();
    struct casynq_task_info *info = &info_not_set;
    struct casynq_task *task = NULL;
    int rc;

    (void)state;
    rc = casynq_task_create("email\xff", "{}", 2, &task);
    if (rc == CASYNQ_EINVAL) {
        assert_null(task);
        casynq_client_destroy(client);
        return;
    }
    assert_int_equal(rc, 0);

    assert_int_equal(casynq_client_enqueue(client, task, NULL, &info),
                     CASYNQ_EINVAL);
    assert_null(info);
    assert_names(casynq_client_last_error(client), "type");

    casynq_task_destroy(task);
    casynq_client_destroy(client);
}

/* The control for the rejection tests: with valid input the same client
 * does try to reach Redis, so an EINVAL there came from validation. */
static void test_client_enqueue_valid_input_reaches_connection(void **state)
{
    struct casynq_client *client = new_offline_client();
    struct casynq_task_info *info = &info_not_set;
    struct casynq_task *task = NULL;

    (void)state;
    assert_int_equal(casynq_task_create("email:welcome", "{}", 2, &task), 0);

    assert_int_equal(casynq_client_enqueue(client, task, NULL, &info),
                     CASYNQ_ECONNECT);
    assert_null(info);
    assert_names(casynq_client_last_error(client), socket_path);

    casynq_task_destroy(task);
    casynq_client_destroy(client);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_plan_null_options_use_defaults),
            cmocka_unit_test(test_plan_empty_options_use_defaults),
            cmocka_unit_test(test_plan_generated_ids_differ),
            cmocka_unit_test(test_plan_each_option_applied),
            cmocka_unit_test(test_plan_max_retry_zero_kept),
            cmocka_unit_test(test_plan_timeout_only_has_no_deadline),
            cmocka_unit_test(test_plan_deadline_only_drops_default_timeout),
            cmocka_unit_test(test_plan_timeout_zero_with_deadline_accepted),
            cmocka_unit_test(test_plan_queue_of_255_bytes_accepted),
            cmocka_unit_test(test_plan_utf8_queue_accepted),
            cmocka_unit_test(test_plan_setter_replaces_string),
            cmocka_unit_test(test_plan_process_at_future_schedules),
            cmocka_unit_test(test_plan_process_at_past_is_immediate),
            cmocka_unit_test(test_plan_process_in_adds_to_now),
            cmocka_unit_test(test_plan_process_in_replaces_process_at),
            cmocka_unit_test(test_plan_process_at_replaces_process_in),
            cmocka_unit_test(test_options_blank_queue_rejected),
            cmocka_unit_test(test_options_long_queue_rejected),
            cmocka_unit_test(test_options_invalid_utf8_queue_rejected),
            cmocka_unit_test(test_options_negative_max_retry_rejected),
            cmocka_unit_test(test_options_negative_timeout_rejected),
            cmocka_unit_test(test_options_negative_deadline_rejected),
            cmocka_unit_test(
                    test_options_timeout_zero_without_deadline_rejected),
            cmocka_unit_test(test_options_timeout_and_deadline_zero_rejected),
            cmocka_unit_test(test_options_unique_ttl_below_one_rejected),
            cmocka_unit_test(test_options_blank_task_id_rejected),
            cmocka_unit_test(test_options_invalid_utf8_task_id_rejected),
            cmocka_unit_test(test_options_blank_group_rejected),
            cmocka_unit_test(test_options_negative_retention_rejected),
            cmocka_unit_test(test_options_negative_process_in_rejected),
            cmocka_unit_test(test_options_null_object_rejected),
            cmocka_unit_test(test_client_enqueue_null_task_rejected),
            cmocka_unit_test(test_client_enqueue_task_view_rejected),
            cmocka_unit_test(test_client_enqueue_null_client_rejected),
            cmocka_unit_test(test_client_enqueue_invalid_utf8_type_rejected),
            cmocka_unit_test(
                    test_client_enqueue_valid_input_reaches_connection),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
