/* Unit tests of tasks: creation, payload ownership, headers, and the
 * read-only view a handler gets over a decoded TaskMessage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "msg.h"
#include "task.h"
#include "util.h"

/* What the out-parameter points to before a create call, so that a test
 * can see whether a failed call reset it to NULL. */
static struct casynq_task task_not_set;

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

static struct casynq_task *new_task(const char *type, const void *payload,
                                    size_t len)
{
    struct casynq_task *task = NULL;

    assert_int_equal(casynq_task_create(type, payload, len, &task), 0);
    assert_non_null(task);
    return task;
}

/* Encodes a message with the given payload and headers and decodes it
 * again, as the worker does with a dequeued task. */
static Asynq__TaskMessage *decoded_message(const uint8_t *payload, size_t len,
                                           char **keys, char **values,
                                           size_t nheaders)
{
    char type[] = "email:welcome";
    char id[] = "0f8fad5b-d9cb-469f-a165-70867728950e";
    char queue[] = "default";
    Asynq__TaskMessage__HeadersEntry entries[4];
    Asynq__TaskMessage__HeadersEntry *ptrs[4];
    Asynq__TaskMessage m;
    Asynq__TaskMessage *out;
    struct casynq__buf bytes = {0};

    assert_true(nheaders <= 4);
    asynq__task_message__init(&m);
    m.type = type;
    m.payload.data = (uint8_t *)(uintptr_t)payload;
    m.payload.len = len;
    m.id = id;
    m.queue = queue;
    m.retry = 25;
    for (size_t i = 0; i < nheaders; i++) {
        asynq__task_message__headers_entry__init(&entries[i]);
        entries[i].key = keys[i];
        entries[i].value = values[i];
        ptrs[i] = &entries[i];
    }
    m.n_headers = nheaders;
    m.headers = ptrs;

    assert_int_equal(casynq__msg_encode(&m, &bytes), 0);
    out = casynq__msg_decode(bytes.data, bytes.len);
    assert_non_null(out);
    casynq__buf_free(&bytes);
    return out;
}

static void test_task_create_copies_type_and_payload(void **state)
{
    char payload[] = "{\"user_id\":42}";
    struct casynq_task *task = new_task("email:welcome", payload, 14);
    const void *stored;
    size_t len = 0;

    (void)state;
    payload[0] = 'X';
    stored = casynq_task_payload(task, &len);

    assert_string_equal(casynq_task_type(task), "email:welcome");
    assert_int_equal(len, 14);
    assert_ptr_not_equal(stored, payload);
    assert_memory_equal(stored, "{\"user_id\":42}", 14);
    assert_int_equal(casynq_task_header_count(task), 0);

    casynq_task_destroy(task);
}

static void test_task_create_binary_payload(void **state)
{
    const uint8_t payload[4] = {0x00, 0xff, 0x00, 0x7f};
    struct casynq_task *task = new_task("bin", payload, sizeof(payload));
    size_t len = 0;

    (void)state;
    assert_memory_equal(casynq_task_payload(task, &len), payload,
                        sizeof(payload));
    assert_int_equal(len, sizeof(payload));

    casynq_task_destroy(task);
}

static void test_task_create_blank_type_rejected(void **state)
{
    struct casynq_task *task = &task_not_set;

    (void)state;
    assert_int_equal(casynq_task_create(NULL, "x", 1, &task), CASYNQ_EINVAL);
    assert_null(task);

    task = &task_not_set;
    assert_int_equal(casynq_task_create("", "x", 1, &task), CASYNQ_EINVAL);
    assert_null(task);

    task = &task_not_set;
    assert_int_equal(casynq_task_create(" \t", "x", 1, &task), CASYNQ_EINVAL);
    assert_null(task);
}

static void test_task_create_null_payload_with_length_rejected(void **state)
{
    struct casynq_task *task = &task_not_set;

    (void)state;
    assert_int_equal(casynq_task_create("t", NULL, 3, &task), CASYNQ_EINVAL);
    assert_null(task);
}

static void test_task_create_null_out_rejected(void **state)
{
    (void)state;
    assert_int_equal(casynq_task_create("t", NULL, 0, NULL), CASYNQ_EINVAL);
}

static void test_task_null_payload_is_absent(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);
    size_t len = 99;

    (void)state;
    assert_null(casynq_task_payload(task, &len));
    assert_int_equal(len, 0);
    assert_null(casynq_task_payload(task, NULL));

    casynq_task_destroy(task);
}

static void test_task_empty_payload_is_present(void **state)
{
    struct casynq_task *task = new_task("t", "", 0);
    size_t len = 99;

    (void)state;
    assert_non_null(casynq_task_payload(task, &len));
    assert_int_equal(len, 0);

    casynq_task_destroy(task);
}

static void test_task_headers_set_and_lookup(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);

    (void)state;
    assert_int_equal(casynq_task_set_header(task, "trace", "abc"), 0);
    assert_int_equal(casynq_task_set_header(task, "tenant", "acme"), 0);
    assert_int_equal(casynq_task_set_header(task, "empty", ""), 0);

    assert_int_equal(casynq_task_header_count(task), 3);
    assert_string_equal(casynq_task_header(task, "trace"), "abc");
    assert_string_equal(casynq_task_header(task, "tenant"), "acme");
    assert_string_equal(casynq_task_header(task, "empty"), "");
    assert_null(casynq_task_header(task, "missing"));
    assert_null(casynq_task_header(task, "Trace"));

    casynq_task_destroy(task);
}

static void test_task_headers_set_copies_strings(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);
    char key[] = "trace";
    char value[] = "abc";

    (void)state;
    assert_int_equal(casynq_task_set_header(task, key, value), 0);
    key[0] = 'X';
    value[0] = 'X';

    assert_string_equal(casynq_task_header(task, "trace"), "abc");

    casynq_task_destroy(task);
}

static void test_task_headers_set_replaces_value(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);

    (void)state;
    assert_int_equal(casynq_task_set_header(task, "trace", "first"), 0);
    assert_int_equal(casynq_task_set_header(task, "trace", "second"), 0);

    assert_int_equal(casynq_task_header_count(task), 1);
    assert_string_equal(casynq_task_header(task, "trace"), "second");

    casynq_task_destroy(task);
}

static void test_task_headers_iterate_all(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);
    char key[16];
    char value[16];
    bool seen[20] = {false};
    const char *k;
    const char *v;

    (void)state;
    /* Twenty headers make the header array grow several times. */
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        snprintf(value, sizeof(value), "value-%d", i);
        assert_int_equal(casynq_task_set_header(task, key, value), 0);
    }

    assert_int_equal(casynq_task_header_count(task), 20);
    for (size_t i = 0; i < 20; i++) {
        int n = -1;

        k = NULL;
        v = NULL;
        assert_int_equal(casynq_task_header_at(task, i, &k, &v), 0);
        assert_non_null(k);
        assert_non_null(v);
        assert_int_equal(sscanf(k, "key-%d", &n), 1);
        assert_in_range(n, 0, 19);
        assert_false(seen[n]);
        seen[n] = true;
        snprintf(value, sizeof(value), "value-%d", n);
        assert_string_equal(v, value);
    }
    assert_int_equal(casynq_task_header_at(task, 20, &k, &v), CASYNQ_EINVAL);

    casynq_task_destroy(task);
}

static void test_task_headers_invalid_input_rejected(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);

    (void)state;
    assert_int_equal(casynq_task_set_header(task, "k\xff", "v"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_task_set_header(task, "k", "v\xc0\xaf"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_task_set_header(task, "k", "\xed\xa0\x80"),
                     CASYNQ_EINVAL);
    assert_int_equal(casynq_task_set_header(task, NULL, "v"), CASYNQ_EINVAL);
    assert_int_equal(casynq_task_set_header(task, "k", NULL), CASYNQ_EINVAL);
    assert_int_equal(casynq_task_set_header(NULL, "k", "v"), CASYNQ_EINVAL);

    assert_int_equal(casynq_task_header_count(task), 0);

    casynq_task_destroy(task);
}

static void test_task_headers_invalid_replacement_keeps_value(void **state)
{
    struct casynq_task *task = new_task("t", NULL, 0);

    (void)state;
    assert_int_equal(casynq_task_set_header(task, "k", "good"), 0);
    assert_int_equal(casynq_task_set_header(task, "k", "bad\xff"),
                     CASYNQ_EINVAL);

    assert_string_equal(casynq_task_header(task, "k"), "good");

    casynq_task_destroy(task);
}

static void test_task_destroy_null_is_noop(void **state)
{
    (void)state;
    casynq_task_destroy(NULL);
}

static void test_task_view_reads_decoded_message(void **state)
{
    const uint8_t payload[] = "{\"user_id\":42}";
    char key1[] = "trace";
    char value1[] = "abc";
    char key2[] = "tenant";
    char value2[] = "acme";
    char *keys[2] = {key1, key2};
    char *values[2] = {value1, value2};
    Asynq__TaskMessage *m = decoded_message(payload, 14, keys, values, 2);
    struct casynq_task view;
    const char *k = NULL;
    const char *v = NULL;
    size_t len = 0;

    (void)state;
    casynq__task_view_init(&view, m);

    assert_string_equal(casynq_task_type(&view), "email:welcome");
    assert_memory_equal(casynq_task_payload(&view, &len), payload, 14);
    assert_int_equal(len, 14);
    assert_int_equal(casynq_task_header_count(&view), 2);
    assert_string_equal(casynq_task_header(&view, "trace"), "abc");
    assert_string_equal(casynq_task_header(&view, "tenant"), "acme");
    assert_null(casynq_task_header(&view, "missing"));
    assert_int_equal(casynq_task_header_at(&view, 0, &k, &v), 0);
    assert_true((strcmp(k, "trace") == 0 && strcmp(v, "abc") == 0) ||
                (strcmp(k, "tenant") == 0 && strcmp(v, "acme") == 0));
    assert_int_equal(casynq_task_header_at(&view, 2, &k, &v), CASYNQ_EINVAL);

    casynq__msg_free(m);
}

static void test_task_view_empty_payload_is_present(void **state)
{
    Asynq__TaskMessage *m = decoded_message(NULL, 0, NULL, NULL, 0);
    struct casynq_task view;
    size_t len = 99;

    (void)state;
    casynq__task_view_init(&view, m);

    assert_non_null(casynq_task_payload(&view, &len));
    assert_int_equal(len, 0);
    assert_int_equal(casynq_task_header_count(&view), 0);

    casynq__msg_free(m);
}

static void test_task_view_is_read_only(void **state)
{
    Asynq__TaskMessage *m = decoded_message(NULL, 0, NULL, NULL, 0);
    struct casynq_task view;

    (void)state;
    casynq__task_view_init(&view, m);

    assert_int_equal(casynq_task_set_header(&view, "k", "v"), CASYNQ_EINVAL);
    assert_int_equal(casynq_task_header_count(&view), 0);

    casynq__msg_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_task_create_copies_type_and_payload),
            cmocka_unit_test(test_task_create_binary_payload),
            cmocka_unit_test(test_task_create_blank_type_rejected),
            cmocka_unit_test(
                    test_task_create_null_payload_with_length_rejected),
            cmocka_unit_test(test_task_create_null_out_rejected),
            cmocka_unit_test(test_task_null_payload_is_absent),
            cmocka_unit_test(test_task_empty_payload_is_present),
            cmocka_unit_test(test_task_headers_set_and_lookup),
            cmocka_unit_test(test_task_headers_set_copies_strings),
            cmocka_unit_test(test_task_headers_set_replaces_value),
            cmocka_unit_test(test_task_headers_iterate_all),
            cmocka_unit_test(test_task_headers_invalid_input_rejected),
            cmocka_unit_test(
                    test_task_headers_invalid_replacement_keeps_value),
            cmocka_unit_test(test_task_destroy_null_is_noop),
            cmocka_unit_test(test_task_view_reads_decoded_message),
            cmocka_unit_test(test_task_view_empty_payload_is_present),
            cmocka_unit_test(test_task_view_is_read_only),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
