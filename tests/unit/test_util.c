/* Unit tests of runtime/util.c (identifiers, digests, UTF-8, dates, the
 * growable buffer) and of the uniqueness key name built from them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

#include "alloc.h"
#include "broker.h"
#include "util.h"

/* Number of UUIDs generated to check that they differ. */
#define UUID_SAMPLE 1000

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

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static void test_uuid_has_36_chars(void **state)
{
    char id[CASYNQ__UUID_LEN + 1];

    (void)state;
    casynq__uuid(id);

    assert_int_equal(strlen(id), 36);
}

static void test_uuid_has_dashes_and_lowercase_hex(void **state)
{
    char id[CASYNQ__UUID_LEN + 1];

    (void)state;
    casynq__uuid(id);

    for (int i = 0; i < CASYNQ__UUID_LEN; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (id[i] != '-') {
                fail_msg("character %d of %s is not '-'", i, id);
            }
        } else if (!is_lower_hex(id[i])) {
            fail_msg("character %d of %s is not lowercase hex", i, id);
        }
    }
}

static void test_uuid_version_nibble_is_4(void **state)
{
    char id[CASYNQ__UUID_LEN + 1];

    (void)state;
    for (int i = 0; i < 100; i++) {
        casynq__uuid(id);
        assert_int_equal(id[14], '4');
    }
}

static void test_uuid_variant_nibble_is_rfc4122(void **state)
{
    char id[CASYNQ__UUID_LEN + 1];

    (void)state;
    for (int i = 0; i < 100; i++) {
        casynq__uuid(id);
        if (strchr("89ab", id[19]) == NULL) {
            fail_msg("variant nibble of %s is '%c', not 8, 9, a or b", id,
                     id[19]);
        }
    }
}

static int compare_ids(const void *a, const void *b)
{
    return memcmp(a, b, CASYNQ__UUID_LEN + 1);
}

static void test_uuid_thousand_ids_distinct(void **state)
{
    char(*ids)[CASYNQ__UUID_LEN + 1] = test_calloc(UUID_SAMPLE, sizeof(*ids));

    (void)state;
    assert_non_null(ids);
    for (int i = 0; i < UUID_SAMPLE; i++) {
        casynq__uuid(ids[i]);
    }
    qsort(ids, UUID_SAMPLE, sizeof(*ids), compare_ids);

    for (int i = 1; i < UUID_SAMPLE; i++) {
        assert_string_not_equal(ids[i - 1], ids[i]);
    }

    test_free(ids);
}

static void test_md5_hex_of_empty_input(void **state)
{
    char hex[33];

    (void)state;
    casynq__md5_hex("", 0, hex);

    assert_string_equal(hex, "d41d8cd98f00b204e9800998ecf8427e");
}

static void test_md5_hex_of_payload(void **state)
{
    const char payload[] = "{\"user_id\":42}";
    char hex[33];

    (void)state;
    casynq__md5_hex(payload, strlen(payload), hex);

    assert_string_equal(hex, "1181f89307fa271072c095747d5813cc");
}

static void test_md5_hex_of_rfc1321_abc(void **state)
{
    char hex[33];

    (void)state;
    casynq__md5_hex("abc", 3, hex);

    assert_string_equal(hex, "900150983cd24fb0d6963f7d28e17f72");
}

static void test_md5_hex_covers_binary_bytes(void **state)
{
    const uint8_t bytes[3] = {0x00, 0xff, 0x00};
    char with_nul[33];
    char without_tail[33];

    (void)state;
    casynq__md5_hex(bytes, sizeof(bytes), with_nul);
    casynq__md5_hex(bytes, 2, without_tail);

    assert_int_equal(strlen(with_nul), 32);
    assert_string_not_equal(with_nul, without_tail);
}

static void test_utf8_valid_accepts_well_formed(void **state)
{
    (void)state;
    assert_true(casynq__utf8_valid("", 0));
    assert_true(casynq__utf8_valid("plain ascii", 11));
    assert_true(casynq__utf8_valid("a\0b", 3));
    assert_true(casynq__utf8_valid("\xc3\xa9", 2));         /* U+00E9 */
    assert_true(casynq__utf8_valid("\xdf\xbf", 2));         /* U+07FF */
    assert_true(casynq__utf8_valid("\xe2\x82\xac", 3));     /* U+20AC */
    assert_true(casynq__utf8_valid("\xed\x9f\xbf", 3));     /* U+D7FF */
    assert_true(casynq__utf8_valid("\xee\x80\x80", 3));     /* U+E000 */
    assert_true(casynq__utf8_valid("\xef\xbf\xbd", 3));     /* U+FFFD */
    assert_true(casynq__utf8_valid("\xf0\x9f\x98\x80", 4)); /* U+1F600 */
    assert_true(casynq__utf8_valid("\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
}

static void test_utf8_valid_rejects_overlong(void **state)
{
    (void)state;
    assert_false(casynq__utf8_valid("\xc0\xaf", 2));
    assert_false(casynq__utf8_valid("\xc1\xbf", 2));
    assert_false(casynq__utf8_valid("\xe0\x80\xaf", 3));
    assert_false(casynq__utf8_valid("\xe0\x9f\xbf", 3));
    assert_false(casynq__utf8_valid("\xf0\x80\x80\xaf", 4));
    assert_false(casynq__utf8_valid("\xf0\x8f\xbf\xbf", 4));
}

static void test_utf8_valid_rejects_surrogates(void **state)
{
    (void)state;
    assert_false(casynq__utf8_valid("\xed\xa0\x80", 3)); /* U+D800 */
    assert_false(casynq__utf8_valid("\xed\xbf\xbf", 3)); /* U+DFFF */
}

static void test_utf8_valid_rejects_truncated(void **state)
{
    (void)state;
    assert_false(casynq__utf8_valid("\xc3", 1));
    assert_false(casynq__utf8_valid("\xe2\x82", 2));
    assert_false(casynq__utf8_valid("\xf0\x9f\x98", 3));
    assert_false(casynq__utf8_valid("ok\xe2\x82", 4));
    /* The length cuts a valid sequence short. */
    assert_false(casynq__utf8_valid("\xc3\xa9", 1));
}

static void test_utf8_valid_rejects_above_max_code_point(void **state)
{
    (void)state;
    assert_false(casynq__utf8_valid("\xf4\x90\x80\x80", 4)); /* U+110000 */
    assert_false(casynq__utf8_valid("\xf7\xbf\xbf\xbf", 4));
    assert_false(casynq__utf8_valid("\xf8\x88\x80\x80\x80", 5));
}

static void test_utf8_valid_rejects_stray_bytes(void **state)
{
    (void)state;
    assert_false(casynq__utf8_valid("\x80", 1));
    assert_false(casynq__utf8_valid("a\xbf" "b", 3));
    assert_false(casynq__utf8_valid("\xff", 1));
    assert_false(casynq__utf8_valid("\xfe", 1));
    assert_false(casynq__utf8_valid("\xc3" "a", 2));
}

static void test_utf8_sanitize_keeps_valid_text(void **state)
{
    const char text[] = "caf\xc3\xa9 \xf0\x9f\x98\x80";
    char *out;

    (void)state;
    out = casynq__utf8_sanitize(text, strlen(text));

    assert_non_null(out);
    assert_string_equal(out, text);

    casynq__free(out);
}

static void test_utf8_sanitize_replaces_invalid_byte(void **state)
{
    char *out;

    (void)state;
    out = casynq__utf8_sanitize("a\xff" "b", 3);

    assert_non_null(out);
    assert_string_equal(out, "a\xef\xbf\xbd" "b");

    casynq__free(out);
}

static void test_utf8_sanitize_replaces_run_once(void **state)
{
    char *out;

    (void)state;
    out = casynq__utf8_sanitize("a\xff\xfe\xc0\xaf" "b", 6);

    assert_non_null(out);
    assert_string_equal(out, "a\xef\xbf\xbd" "b");

    casynq__free(out);
}

static void test_utf8_sanitize_replaces_separate_runs(void **state)
{
    char *out;

    (void)state;
    out = casynq__utf8_sanitize("\xff" "a\xed\xa0\x80" "b\xe2\x82", 8);

    assert_non_null(out);
    assert_string_equal(out, "\xef\xbf\xbd" "a\xef\xbf\xbd"
                             "b\xef\xbf\xbd");

    casynq__free(out);
}

static void test_utf8_sanitize_keeps_valid_after_run(void **state)
{
    char *out;

    (void)state;
    out = casynq__utf8_sanitize("\xff\xc3\xa9", 3);

    assert_non_null(out);
    assert_string_equal(out, "\xef\xbf\xbd\xc3\xa9");

    casynq__free(out);
}

static void test_utf8_sanitize_empty_input_gives_empty_string(void **state)
{
    char *out;

    (void)state;
    out = casynq__utf8_sanitize("", 0);

    assert_non_null(out);
    assert_string_equal(out, "");

    casynq__free(out);
}

static void test_utc_date_formats_epoch(void **state)
{
    char date[11];

    (void)state;
    casynq__utc_date(0, date);
    assert_string_equal(date, "1970-01-01");

    casynq__utc_date(86399, date);
    assert_string_equal(date, "1970-01-01");

    casynq__utc_date(86400, date);
    assert_string_equal(date, "1970-01-02");
}

static void test_utc_date_formats_later_dates(void **state)
{
    char date[11];

    (void)state;
    casynq__utc_date(1700000000, date);
    assert_string_equal(date, "2023-11-14");

    casynq__utc_date(951782400, date);
    assert_string_equal(date, "2000-02-29");

    casynq__utc_date(4102444799LL, date);
    assert_string_equal(date, "2099-12-31");
}

static void test_is_blank_detects_white_space(void **state)
{
    (void)state;
    assert_true(casynq__is_blank(NULL));
    assert_true(casynq__is_blank(""));
    assert_true(casynq__is_blank(" "));
    assert_true(casynq__is_blank(" \t\n\r\v\f"));
    assert_false(casynq__is_blank("a"));
    assert_false(casynq__is_blank("  a  "));
    assert_false(casynq__is_blank("\xc3\xa9"));
}

static void test_fail_formats_and_returns_code(void **state)
{
    char errbuf[CASYNQ__ERRBUF_SIZE];

    (void)state;
    assert_int_equal(casynq__fail(errbuf, CASYNQ_EINVAL, "bad %s %d", "x", 7),
                     CASYNQ_EINVAL);
    assert_string_equal(errbuf, "bad x 7");
}

static void test_fail_truncates_to_buffer(void **state)
{
    char errbuf[CASYNQ__ERRBUF_SIZE + 8];
    char long_text[CASYNQ__ERRBUF_SIZE * 2];

    (void)state;
    memset(errbuf, 'z', sizeof(errbuf));
    memset(long_text, 'y', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';

    casynq__fail(errbuf, CASYNQ_EINVAL, "%s", long_text);

    assert_int_equal(strlen(errbuf), CASYNQ__ERRBUF_SIZE - 1);
    assert_int_equal(errbuf[CASYNQ__ERRBUF_SIZE], 'z');
}

static void test_buf_append_grows_and_terminates(void **state)
{
    struct casynq__buf b = {0};
    char expected[1000];

    (void)state;
    for (int i = 0; i < 100; i++) {
        memset(expected + i * 10, 'a' + i % 26, 10);
        assert_int_equal(casynq__buf_append(&b, expected + i * 10, 10), 0);
    }

    assert_int_equal(b.len, 1000);
    assert_true(b.cap > b.len);
    assert_memory_equal(b.data, expected, sizeof(expected));
    assert_int_equal(b.data[b.len], '\0');

    casynq__buf_free(&b);
}

static void test_buf_append_empty_makes_empty_string(void **state)
{
    struct casynq__buf b = {0};

    (void)state;
    assert_int_equal(casynq__buf_append(&b, "", 0), 0);

    assert_non_null(b.data);
    assert_int_equal(b.len, 0);
    assert_string_equal(b.data, "");

    casynq__buf_free(&b);
}

static void test_buf_append_keeps_embedded_nul(void **state)
{
    struct casynq__buf b = {0};

    (void)state;
    assert_int_equal(casynq__buf_append(&b, "a\0b", 3), 0);

    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "a\0b", 4);

    casynq__buf_free(&b);
}

static void test_buf_printf_appends_formatted(void **state)
{
    struct casynq__buf b = {0};

    (void)state;
    assert_int_equal(casynq__buf_printf(&b, "%s:%d", "queue", 7), 0);
    assert_int_equal(casynq__buf_printf(&b, "/%lld", 1700000000LL), 0);

    assert_string_equal(b.data, "queue:7/1700000000");
    assert_int_equal(b.len, strlen("queue:7/1700000000"));

    casynq__buf_free(&b);
}

static void test_buf_printf_grows_past_capacity(void **state)
{
    struct casynq__buf b = {0};
    char word[301];

    (void)state;
    memset(word, 'w', 300);
    word[300] = '\0';
    assert_int_equal(casynq__buf_printf(&b, "<%s>", "x"), 0);

    assert_int_equal(casynq__buf_printf(&b, "%s|%s", word, word), 0);
    assert_int_equal(b.len, 3 + 601);
    assert_true(b.cap > b.len);
    assert_memory_equal(b.data, "<x>", 3);
    assert_memory_equal(b.data + 3, word, 300);
    assert_int_equal(b.data[303], '|');
    assert_memory_equal(b.data + 304, word, 300);
    assert_int_equal(b.data[b.len], '\0');

    casynq__buf_free(&b);
}

static void test_buf_reserve_keeps_length(void **state)
{
    struct casynq__buf b = {0};

    (void)state;
    assert_int_equal(casynq__buf_append(&b, "abc", 3), 0);
    assert_int_equal(casynq__buf_reserve(&b, 500), 0);

    assert_int_equal(b.len, 3);
    assert_true(b.cap >= 3 + 500 + 1);
    assert_string_equal(b.data, "abc");

    casynq__buf_free(&b);
}

static void test_buf_free_resets_fields(void **state)
{
    struct casynq__buf b = {0};

    (void)state;
    assert_int_equal(casynq__buf_append(&b, "abc", 3), 0);
    casynq__buf_free(&b);

    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
}

static void test_alloc_calloc_overflow_returns_null(void **state)
{
    (void)state;
    assert_null(casynq__calloc(SIZE_MAX / 2, 4));
}

static void test_alloc_strdup_copies(void **state)
{
    const char text[] = "copy me";
    char *copy;
    char *part;

    (void)state;
    assert_null(casynq__strdup(NULL));
    copy = casynq__strdup(text);
    part = casynq__strndup(text, 4);

    assert_non_null(copy);
    assert_ptr_not_equal(copy, text);
    assert_string_equal(copy, "copy me");
    assert_non_null(part);
    assert_string_equal(part, "copy");

    casynq__free(copy);
    casynq__free(part);
}

static void test_unique_key_matches_asynq_example(void **state)
{
    const char payload[] = "{\"user_id\":42}";
    struct casynq__buf key = {0};

    (void)state;
    assert_int_equal(casynq__broker_unique_key(&key, "default", "email:welcome",
                                               payload, strlen(payload)),
                     0);

    assert_string_equal(key.data, "asynq:{default}:unique:email:welcome:"
                                  "1181f89307fa271072c095747d5813cc");

    casynq__buf_free(&key);
}

static void test_unique_key_nil_payload_ends_with_colon(void **state)
{
    struct casynq__buf key = {0};

    (void)state;
    assert_int_equal(casynq__broker_unique_key(&key, "default", "email:welcome",
                                               NULL, 0),
                     0);

    assert_string_equal(key.data, "asynq:{default}:unique:email:welcome:");

    casynq__buf_free(&key);
}

static void test_unique_key_empty_payload_uses_empty_md5(void **state)
{
    struct casynq__buf key = {0};

    (void)state;
    assert_int_equal(casynq__broker_unique_key(&key, "critical", "report", "",
                                               0),
                     0);

    assert_string_equal(key.data, "asynq:{critical}:unique:report:"
                                  "d41d8cd98f00b204e9800998ecf8427e");

    casynq__buf_free(&key);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_uuid_has_36_chars),
            cmocka_unit_test(test_uuid_has_dashes_and_lowercase_hex),
            cmocka_unit_test(test_uuid_version_nibble_is_4),
            cmocka_unit_test(test_uuid_variant_nibble_is_rfc4122),
            cmocka_unit_test(test_uuid_thousand_ids_distinct),
            cmocka_unit_test(test_md5_hex_of_empty_input),
            cmocka_unit_test(test_md5_hex_of_payload),
            cmocka_unit_test(test_md5_hex_of_rfc1321_abc),
            cmocka_unit_test(test_md5_hex_covers_binary_bytes),
            cmocka_unit_test(test_utf8_valid_accepts_well_formed),
            cmocka_unit_test(test_utf8_valid_rejects_overlong),
            cmocka_unit_test(test_utf8_valid_rejects_surrogates),
            cmocka_unit_test(test_utf8_valid_rejects_truncated),
            cmocka_unit_test(test_utf8_valid_rejects_above_max_code_point),
            cmocka_unit_test(test_utf8_valid_rejects_stray_bytes),
            cmocka_unit_test(test_utf8_sanitize_keeps_valid_text),
            cmocka_unit_test(test_utf8_sanitize_replaces_invalid_byte),
            cmocka_unit_test(test_utf8_sanitize_replaces_run_once),
            cmocka_unit_test(test_utf8_sanitize_replaces_separate_runs),
            cmocka_unit_test(test_utf8_sanitize_keeps_valid_after_run),
            cmocka_unit_test(
                    test_utf8_sanitize_empty_input_gives_empty_string),
            cmocka_unit_test(test_utc_date_formats_epoch),
            cmocka_unit_test(test_utc_date_formats_later_dates),
            cmocka_unit_test(test_is_blank_detects_white_space),
            cmocka_unit_test(test_fail_formats_and_returns_code),
            cmocka_unit_test(test_fail_truncates_to_buffer),
            cmocka_unit_test(test_buf_append_grows_and_terminates),
            cmocka_unit_test(test_buf_append_empty_makes_empty_string),
            cmocka_unit_test(test_buf_append_keeps_embedded_nul),
            cmocka_unit_test(test_buf_printf_appends_formatted),
            cmocka_unit_test(test_buf_printf_grows_past_capacity),
            cmocka_unit_test(test_buf_reserve_keeps_length),
            cmocka_unit_test(test_buf_free_resets_fields),
            cmocka_unit_test(test_alloc_calloc_overflow_returns_null),
            cmocka_unit_test(test_alloc_strdup_copies),
            cmocka_unit_test(test_unique_key_matches_asynq_example),
            cmocka_unit_test(test_unique_key_nil_payload_ends_with_colon),
            cmocka_unit_test(test_unique_key_empty_payload_uses_empty_md5),
    };

    casynq_set_allocator(cmocka_malloc, cmocka_calloc, cmocka_realloc,
                         cmocka_free);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
