/* Unit tests of the protobuf layer in runtime/msg.c: the bytes the encoder
 * writes must equal what asynq v0.26.0's Go encoder writes, and the decoder
 * must read every TaskMessage field back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "msg.h"
#include "util.h"

/* cmocka's allocator reports every block still allocated when a test ends,
 * so a leak in the library fails the test that caused it. */
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

/* The test vector: type email:welcome, payload {"user_id":42}, id
 * 0f8fad5b-d9cb-469f-a165-70867728950e, queue default, retry 25 and
 * timeout 1800, every other field at its default. */
static char vector_type[] = "email:welcome";
static uint8_t vector_payload[] = "{\"user_id\":42}";
static char vector_id[] = "0f8fad5b-d9cb-469f-a165-70867728950e";
static char vector_queue[] = "default";

static const uint8_t vector_bytes[83] = {
        0x0a, 0x0d, 0x65, 0x6d, 0x61, 0x69, 0x6c, 0x3a, 0x77, 0x65, 0x6c,
        0x63, 0x6f, 0x6d, 0x65, 0x12, 0x0e, 0x7b, 0x22, 0x75, 0x73, 0x65,
        0x72, 0x5f, 0x69, 0x64, 0x22, 0x3a, 0x34, 0x32, 0x7d, 0x1a, 0x24,
        0x30, 0x66, 0x38, 0x66, 0x61, 0x64, 0x35, 0x62, 0x2d, 0x64, 0x39,
        0x63, 0x62, 0x2d, 0x34, 0x36, 0x39, 0x66, 0x2d, 0x61, 0x31, 0x36,
        0x35, 0x2d, 0x37, 0x30, 0x38, 0x36, 0x37, 0x37, 0x32, 0x38, 0x39,
        0x35, 0x30, 0x65, 0x22, 0x07, 0x64, 0x65, 0x66, 0x61, 0x75, 0x6c,
        0x74, 0x28, 0x19, 0x40, 0x88, 0x0e,
};

/* Field 15 holding one map entry trace: abc. */
static const uint8_t header_trace_bytes[14] = {
        0x7a, 0x0c, 0x0a, 0x05, 0x74, 0x72, 0x61, 0x63,
        0x65, 0x12, 0x03, 0x61, 0x62, 0x63,
};

/* Field 8 holding Timestamp {seconds: 1700000000, nanos: 5}. */
static const uint8_t start_time_bytes[10] = {
        0x42, 0x08, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05,
};

static void vector_message(Asynq__TaskMessage *m)
{
    asynq__task_message__init(m);
    m->type = vector_type;
    m->payload.data = vector_payload;
    m->payload.len = sizeof(vector_payload) - 1;
    m->id = vector_id;
    m->queue = vector_queue;
    m->retry = 25;
    m->timeout = 1800;
}

static void test_msg_encode_vector_matches_asynq(void **state)
{
    Asynq__TaskMessage m;
    struct casynq__buf out = {0};

    (void)state;
    vector_message(&m);

    assert_int_equal(casynq__msg_encode(&m, &out), 0);
    assert_int_equal(out.len, sizeof(vector_bytes));
    assert_memory_equal(out.data, vector_bytes, sizeof(vector_bytes));

    casynq__buf_free(&out);
}

static void test_msg_encode_header_appends_field_15(void **state)
{
    char key[] = "trace";
    char value[] = "abc";
    Asynq__TaskMessage__HeadersEntry entry;
    Asynq__TaskMessage__HeadersEntry *entries[1] = {&entry};
    Asynq__TaskMessage m;
    struct casynq__buf out = {0};

    (void)state;
    vector_message(&m);
    asynq__task_message__headers_entry__init(&entry);
    entry.key = key;
    entry.value = value;
    m.n_headers = 1;
    m.headers = entries;

    assert_int_equal(casynq__msg_encode(&m, &out), 0);
    assert_int_equal(out.len,
                     sizeof(vector_bytes) + sizeof(header_trace_bytes));
    assert_memory_equal(out.data, vector_bytes, sizeof(vector_bytes));
    assert_memory_equal(out.data + sizeof(vector_bytes), header_trace_bytes,
                        sizeof(header_trace_bytes));

    casynq__buf_free(&out);
}

static void test_msg_encode_appends_after_existing_bytes(void **state)
{
    Asynq__TaskMessage m;
    struct casynq__buf out = {0};

    (void)state;
    vector_message(&m);
    assert_int_equal(casynq__buf_append(&out, "prefix", 6), 0);

    assert_int_equal(casynq__msg_encode(&m, &out), 0);
    assert_int_equal(out.len, 6 + sizeof(vector_bytes));
    assert_memory_equal(out.data, "prefix", 6);
    assert_memory_equal(out.data + 6, vector_bytes, sizeof(vector_bytes));

    casynq__buf_free(&out);
}

static void test_msg_encode_defaults_writes_nothing(void **state)
{
    Asynq__TaskMessage m;
    struct casynq__buf out = {0};

    (void)state;
    asynq__task_message__init(&m);

    assert_int_equal(casynq__msg_encode(&m, &out), 0);
    assert_int_equal(out.len, 0);

    casynq__buf_free(&out);
}

static void test_msg_encode_negative_retry_takes_ten_bytes(void **state)
{
    static const uint8_t expected[11] = {
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0x01,
    };
    Asynq__TaskMessage m;
    struct casynq__buf out = {0};

    (void)state;
    asynq__task_message__init(&m);
    m.retry = -1;

    assert_int_equal(casynq__msg_encode(&m, &out), 0);
    assert_int_equal(out.len, sizeof(expected));
    assert_memory_equal(out.data, expected, sizeof(expected));

    casynq__buf_free(&out);
}

static void test_server_info_encode_start_time_field_8(void **state)
{
    Google__Protobuf__Timestamp ts;
    Asynq__ServerInfo info;
    struct casynq__buf out = {0};

    (void)state;
    google__protobuf__timestamp__init(&ts);
    ts.seconds = 1700000000;
    ts.nanos = 5;
    asynq__server_info__init(&info);
    info.start_time = &ts;

    assert_int_equal(casynq__server_info_encode(&info, &out), 0);
    assert_int_equal(out.len, sizeof(start_time_bytes));
    assert_memory_equal(out.data, start_time_bytes, sizeof(start_time_bytes));

    casynq__buf_free(&out);
}

static void test_server_info_encode_zero_timestamp_still_written(void **state)
{
    static const uint8_t expected[2] = {0x42, 0x00};
    Google__Protobuf__Timestamp ts;
    Asynq__ServerInfo info;
    struct casynq__buf out = {0};

    (void)state;
    google__protobuf__timestamp__init(&ts);
    asynq__server_info__init(&info);
    info.start_time = &ts;

    assert_int_equal(casynq__server_info_encode(&info, &out), 0);
    assert_int_equal(out.len, sizeof(expected));
    assert_memory_equal(out.data, expected, sizeof(expected));

    casynq__buf_free(&out);
}

static void test_worker_info_encode_timestamps_fields_8_and_9(void **state)
{
    /* Field 9 has tag 0x4a, and its Timestamp body is the same as field 8's. */
    static const uint8_t deadline_bytes[10] = {
            0x4a, 0x08, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, 0x10, 0x05,
    };
    Google__Protobuf__Timestamp ts;
    Asynq__WorkerInfo info;
    struct casynq__buf out = {0};

    (void)state;
    google__protobuf__timestamp__init(&ts);
    ts.seconds = 1700000000;
    ts.nanos = 5;
    asynq__worker_info__init(&info);
    info.start_time = &ts;
    info.deadline = &ts;

    assert_int_equal(casynq__worker_info_encode(&info, &out), 0);
    assert_int_equal(out.len,
                     sizeof(start_time_bytes) + sizeof(deadline_bytes));
    assert_memory_equal(out.data, start_time_bytes, sizeof(start_time_bytes));
    assert_memory_equal(out.data + sizeof(start_time_bytes), deadline_bytes,
                        sizeof(deadline_bytes));

    casynq__buf_free(&out);
}

static void test_msg_decode_vector_reads_fields(void **state)
{
    Asynq__TaskMessage *m;

    (void)state;
    m = casynq__msg_decode(vector_bytes, sizeof(vector_bytes));
    assert_non_null(m);

    assert_string_equal(m->type, "email:welcome");
    assert_int_equal(m->payload.len, 14);
    assert_memory_equal(m->payload.data, "{\"user_id\":42}", 14);
    assert_string_equal(m->id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    assert_string_equal(m->queue, "default");
    assert_int_equal(m->retry, 25);
    assert_int_equal(m->timeout, 1800);
    assert_int_equal(m->retried, 0);
    assert_string_equal(m->error_msg, "");
    assert_int_equal(m->deadline, 0);
    assert_string_equal(m->unique_key, "");
    assert_int_equal(m->last_failed_at, 0);
    assert_int_equal(m->retention, 0);
    assert_int_equal(m->completed_at, 0);
    assert_string_equal(m->group_key, "");
    assert_int_equal(m->n_headers, 0);

    casynq__msg_free(m);
}

static void test_msg_decode_all_fields_round_trip(void **state)
{
    char type[] = "email:welcome";
    uint8_t payload[] = {0x00, 0x01, 0xfe, 0xff};
    char id[] = "custom-id";
    char queue[] = "critical";
    char error_msg[] = "smtp: connection refused";
    char unique_key[] = "asynq:{critical}:unique:email:welcome:abc";
    char group_key[] = "daily-digest";
    char key1[] = "trace";
    char value1[] = "abc";
    char key2[] = "tenant";
    char value2[] = "h\xc3\xa9llo";
    Asynq__TaskMessage__HeadersEntry h1;
    Asynq__TaskMessage__HeadersEntry h2;
    Asynq__TaskMessage__HeadersEntry *headers[2] = {&h1, &h2};
    Asynq__TaskMessage in;
    Asynq__TaskMessage *out;
    struct casynq__buf bytes = {0};

    (void)state;
    asynq__task_message__init(&in);
    in.type = type;
    in.payload.data = payload;
    in.payload.len = sizeof(payload);
    in.id = id;
    in.queue = queue;
    in.retry = -3;
    in.retried = 7;
    in.error_msg = error_msg;
    in.timeout = 60;
    in.deadline = 4102444800LL;
    in.unique_key = unique_key;
    in.last_failed_at = 1700000100;
    in.retention = 1LL << 40;
    in.completed_at = 1700000200;
    in.group_key = group_key;
    asynq__task_message__headers_entry__init(&h1);
    h1.key = key1;
    h1.value = value1;
    asynq__task_message__headers_entry__init(&h2);
    h2.key = key2;
    h2.value = value2;
    in.n_headers = 2;
    in.headers = headers;

    assert_int_equal(casynq__msg_encode(&in, &bytes), 0);
    out = casynq__msg_decode(bytes.data, bytes.len);
    assert_non_null(out);

    assert_string_equal(out->type, "email:welcome");
    assert_int_equal(out->payload.len, sizeof(payload));
    assert_memory_equal(out->payload.data, payload, sizeof(payload));
    assert_string_equal(out->id, "custom-id");
    assert_string_equal(out->queue, "critical");
    assert_int_equal(out->retry, -3);
    assert_int_equal(out->retried, 7);
    assert_string_equal(out->error_msg, "smtp: connection refused");
    assert_int_equal(out->timeout, 60);
    assert_int_equal(out->deadline, 4102444800LL);
    assert_string_equal(out->unique_key,
                        "asynq:{critical}:unique:email:welcome:abc");
    assert_int_equal(out->last_failed_at, 1700000100);
    assert_int_equal(out->retention, 1LL << 40);
    assert_int_equal(out->completed_at, 1700000200);
    assert_string_equal(out->group_key, "daily-digest");
    assert_int_equal(out->n_headers, 2);
    assert_string_equal(casynq__msg_header(out, "trace"), "abc");
    assert_string_equal(casynq__msg_header(out, "tenant"), "h\xc3\xa9llo");

    casynq__msg_free(out);
    casynq__buf_free(&bytes);
}

static void test_msg_decode_empty_input_gives_defaults(void **state)
{
    static const uint8_t nothing[1] = {0};
    Asynq__TaskMessage *m;

    (void)state;
    m = casynq__msg_decode(nothing, 0);
    assert_non_null(m);

    assert_string_equal(m->type, "");
    assert_int_equal(m->payload.len, 0);
    assert_int_equal(m->retry, 0);
    assert_int_equal(m->n_headers, 0);

    casynq__msg_free(m);
}

static void test_msg_decode_garbage_returns_null(void **state)
{
    /* An unfinished varint tag. */
    static const uint8_t unfinished_tag[4] = {0xff, 0xff, 0xff, 0xff};
    /* Field 1 announces 127 bytes but one follows. */
    static const uint8_t length_overrun[3] = {0x0a, 0x7f, 0x61};
    /* Field 1 with wire type 7, which does not exist. */
    static const uint8_t bad_wire_type[2] = {0x0f, 0x00};
    /* Field 5 (retry) whose varint runs past 10 bytes. */
    static const uint8_t long_varint[12] = {
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff,
    };

    (void)state;
    assert_null(casynq__msg_decode(unfinished_tag, sizeof(unfinished_tag)));
    assert_null(casynq__msg_decode(length_overrun, sizeof(length_overrun)));
    assert_null(casynq__msg_decode(bad_wire_type, sizeof(bad_wire_type)));
    assert_null(casynq__msg_decode(long_varint, sizeof(long_varint)));
    assert_null(casynq__msg_decode(vector_bytes, 20));
    assert_null(casynq__msg_decode(vector_bytes, sizeof(vector_bytes) - 1));
}

static void test_msg_decode_unknown_fields_skipped(void **state)
{
    /* Field 16 varint 42. */
    static const uint8_t unknown_varint[3] = {0x80, 0x01, 0x2a};
    /* Field 20 length-delimited "xyz". */
    static const uint8_t unknown_bytes[6] = {0xa2, 0x01, 0x03, 'x', 'y', 'z'};
    /* Field 21 fixed64 and field 22 fixed32. */
    static const uint8_t unknown_fixed[16] = {
            0xa9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0xb5, 0x01, 1, 2, 3, 4,
    };
    /* The vector's field 1 is its first 15 bytes. */
    const size_t type_field_len = 15;
    struct casynq__buf bytes = {0};
    Asynq__TaskMessage *m;

    (void)state;
    assert_int_equal(casynq__buf_append(&bytes, unknown_varint,
                                        sizeof(unknown_varint)),
                     0);
    assert_int_equal(casynq__buf_append(&bytes, vector_bytes, type_field_len),
                     0);
    assert_int_equal(casynq__buf_append(&bytes, unknown_bytes,
                                        sizeof(unknown_bytes)),
                     0);
    assert_int_equal(casynq__buf_append(&bytes, vector_bytes + type_field_len,
                                        sizeof(vector_bytes) -
                                                type_field_len),
                     0);
    assert_int_equal(casynq__buf_append(&bytes, unknown_fixed,
                                        sizeof(unknown_fixed)),
                     0);

    m = casynq__msg_decode(bytes.data, bytes.len);
    assert_non_null(m);
    assert_string_equal(m->type, "email:welcome");
    assert_int_equal(m->payload.len, 14);
    assert_memory_equal(m->payload.data, "{\"user_id\":42}", 14);
    assert_string_equal(m->id, "0f8fad5b-d9cb-469f-a165-70867728950e");
    assert_string_equal(m->queue, "default");
    assert_int_equal(m->retry, 25);
    assert_int_equal(m->timeout, 1800);

    casynq__msg_free(m);
    casynq__buf_free(&bytes);
}

static void test_msg_header_finds_decoded_header(void **state)
{
    struct casynq__buf bytes = {0};
    Asynq__TaskMessage *m;

    (void)state;
    assert_int_equal(casynq__buf_append(&bytes, vector_bytes,
                                        sizeof(vector_bytes)),
                     0);
    assert_int_equal(casynq__buf_append(&bytes, header_trace_bytes,
                                        sizeof(header_trace_bytes)),
                     0);

    m = casynq__msg_decode(bytes.data, bytes.len);
    assert_non_null(m);
    assert_int_equal(m->n_headers, 1);
    assert_string_equal(casynq__msg_header(m, "trace"), "abc");
    assert_null(casynq__msg_header(m, "Trace"));
    assert_null(casynq__msg_header(m, "missing"));

    casynq__msg_free(m);
    casynq__buf_free(&bytes);
}

static void test_msg_header_entry_missing_key_or_value(void **state)
{
    /* Two map entries: key "key" with no value, and value "val" with no
     * key. Go writes both parts of every entry, but a decoder must accept
     * either part missing. */
    static const uint8_t entries[14] = {
            0x7a, 0x05, 0x0a, 0x03, 'k', 'e', 'y',
            0x7a, 0x05, 0x12, 0x03, 'v', 'a', 'l',
    };
    Asynq__TaskMessage *m;

    (void)state;
    m = casynq__msg_decode(entries, sizeof(entries));
    assert_non_null(m);

    assert_int_equal(m->n_headers, 2);
    assert_string_equal(casynq__msg_header(m, "key"), "");
    assert_string_equal(casynq__msg_header(m, ""), "val");

    casynq__msg_free(m);
}

static void test_msg_header_without_headers_returns_null(void **state)
{
    Asynq__TaskMessage m;

    (void)state;
    vector_message(&m);

    assert_null(casynq__msg_header(&m, "trace"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_msg_encode_vector_matches_asynq),
            cmocka_unit_test(test_msg_encode_header_appends_field_15),
            cmocka_unit_test(test_msg_encode_appends_after_existing_bytes),
            cmocka_unit_test(test_msg_encode_defaults_writes_nothing),
            cmocka_unit_test(test_msg_encode_negative_retry_takes_ten_bytes),
            cmocka_unit_test(test_server_info_encode_start_time_field_8),
            cmocka_unit_test(
                    test_server_info_encode_zero_timestamp_still_written),
            cmocka_unit_test(
                    test_worker_info_encode_timestamps_fields_8_and_9),
            cmocka_unit_test(test_msg_decode_vector_reads_fields),
            cmocka_unit_test(test_msg_decode_all_fields_round_trip),
            cmocka_unit_test(test_msg_decode_empty_input_gives_defaults),
            cmocka_unit_test(test_msg_decode_garbage_returns_null),
            cmocka_unit_test(test_msg_decode_unknown_fields_skipped),
            cmocka_unit_test(test_msg_header_finds_decoded_header),
            cmocka_unit_test(test_msg_header_entry_missing_key_or_value),
            cmocka_unit_test(test_msg_header_without_headers_returns_null),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
