/* Unit tests of the error table and of log level names. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <casynq.h>

struct error_entry {
    int code;
    const char *name;
    const char *text;
};

/* Every code of CASYNQ_ERRNO_MAP with the name and text it declares. */
static const struct error_entry errors[] = {
#define ERROR_ENTRY(name, code, text) {CASYNQ_##name, "CASYNQ_" #name, text},
        CASYNQ_ERRNO_MAP(ERROR_ENTRY)
#undef ERROR_ENTRY
};

#define NERRORS (sizeof(errors) / sizeof(errors[0]))

static void test_strerror_every_code_has_its_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < NERRORS; i++) {
        assert_string_equal(casynq_strerror(errors[i].code), errors[i].text);
    }
}

static void test_err_name_every_code_has_its_name(void **state)
{
    (void)state;
    for (size_t i = 0; i < NERRORS; i++) {
        assert_string_equal(casynq_err_name(errors[i].code), errors[i].name);
    }
}

static void test_strerror_texts_start_lowercase(void **state)
{
    (void)state;
    for (size_t i = 0; i < NERRORS; i++) {
        const char *text = casynq_strerror(errors[i].code);

        if (text[0] < 'a' || text[0] > 'z') {
            fail_msg("text of %s does not start lowercase: \"%s\"",
                     errors[i].name, text);
        }
    }
}

static void test_strerror_success_code(void **state)
{
    (void)state;
    assert_string_equal(casynq_strerror(CASYNQ_OK), "success");
    assert_string_equal(casynq_err_name(CASYNQ_OK), "CASYNQ_OK");
}

static void test_strerror_unknown_code(void **state)
{
    (void)state;
    assert_string_equal(casynq_strerror(-999), "unknown error");
    assert_string_equal(casynq_strerror(1), "unknown error");
    assert_string_equal(casynq_strerror(INT_MIN), "unknown error");
    assert_string_equal(casynq_err_name(-999), "CASYNQ_EUNKNOWN");
    assert_string_equal(casynq_err_name(1), "CASYNQ_EUNKNOWN");
    assert_string_equal(casynq_err_name(INT_MIN), "CASYNQ_EUNKNOWN");
}

static void test_error_codes_negative(void **state)
{
    (void)state;
    for (size_t i = 0; i < NERRORS; i++) {
        if (errors[i].code >= 0) {
            fail_msg("%s is %d, not negative", errors[i].name,
                     errors[i].code);
        }
    }
}

static void test_error_codes_distinct(void **state)
{
    (void)state;
    for (size_t i = 0; i < NERRORS; i++) {
        for (size_t j = i + 1; j < NERRORS; j++) {
            if (errors[i].code == errors[j].code) {
                fail_msg("%s and %s share code %d", errors[i].name,
                         errors[j].name, errors[i].code);
            }
        }
    }
}

/* Codes are part of the ABI and are never renumbered. */
static void test_error_codes_keep_abi_values(void **state)
{
    (void)state;
    assert_int_equal(NERRORS, 22);
    assert_int_equal(CASYNQ_EINVAL, -1);
    assert_int_equal(CASYNQ_ENOMEM, -2);
    assert_int_equal(CASYNQ_ESTATE, -3);
    assert_int_equal(CASYNQ_EEXIST, -4);
    assert_int_equal(CASYNQ_ENOTFOUND, -5);
    assert_int_equal(CASYNQ_EREDIS, -6);
    assert_int_equal(CASYNQ_EPROTO, -7);
    assert_int_equal(CASYNQ_ETIMEDOUT, -8);
    assert_int_equal(CASYNQ_ECANCELED, -9);
    assert_int_equal(CASYNQ_ESHUTDOWN, -10);
    assert_int_equal(CASYNQ_ESYS, -11);
    assert_int_equal(CASYNQ_ECONNECT, -12);
    assert_int_equal(CASYNQ_EAUTH, -13);
    assert_int_equal(CASYNQ_ETASKID_CONFLICT, -14);
    assert_int_equal(CASYNQ_EDUPLICATE, -15);
    assert_int_equal(CASYNQ_EHANDLER, -16);
    assert_int_equal(CASYNQ_ESKIP_RETRY, -17);
    assert_int_equal(CASYNQ_EREVOKE, -18);
    assert_int_equal(CASYNQ_ENOHANDLER, -19);
    assert_int_equal(CASYNQ_ERATELIMITED, -20);
    assert_int_equal(CASYNQ_EBACKLOG, -21);
    assert_int_equal(CASYNQ_ETOOLARGE, -22);
}

static void test_log_level_name_each_level(void **state)
{
    (void)state;
    assert_string_equal(casynq_log_level_name(CASYNQ_LOG_DEBUG), "debug");
    assert_string_equal(casynq_log_level_name(CASYNQ_LOG_INFO), "info");
    assert_string_equal(casynq_log_level_name(CASYNQ_LOG_WARN), "warn");
    assert_string_equal(casynq_log_level_name(CASYNQ_LOG_ERROR), "error");
    assert_string_equal(casynq_log_level_name((enum casynq_log_level)42),
                        "unknown");
}

static void test_log_level_parse_accepts_names(void **state)
{
    enum casynq_log_level level = CASYNQ_LOG_ERROR;

    (void)state;
    assert_int_equal(casynq_log_level_parse("debug", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_DEBUG);
    assert_int_equal(casynq_log_level_parse("info", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_INFO);
    assert_int_equal(casynq_log_level_parse("warn", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_WARN);
    assert_int_equal(casynq_log_level_parse("error", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_ERROR);
    assert_int_equal(casynq_log_level_parse("warning", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_WARN);
}

static void test_log_level_parse_ignores_case(void **state)
{
    enum casynq_log_level level = CASYNQ_LOG_ERROR;

    (void)state;
    assert_int_equal(casynq_log_level_parse("DEBUG", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_DEBUG);
    assert_int_equal(casynq_log_level_parse("Warning", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_WARN);
    assert_int_equal(casynq_log_level_parse("InFo", &level), 0);
    assert_int_equal(level, CASYNQ_LOG_INFO);
}

static void test_log_level_parse_rejects_other_strings(void **state)
{
    enum casynq_log_level level = CASYNQ_LOG_INFO;

    (void)state;
    assert_int_equal(casynq_log_level_parse("fatal", &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse("", &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse("warn ", &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse("err", &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse("0", &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse(NULL, &level), CASYNQ_EINVAL);
    assert_int_equal(casynq_log_level_parse("info", NULL), CASYNQ_EINVAL);
}

static void test_log_level_name_parses_back(void **state)
{
    const enum casynq_log_level levels[] = {
            CASYNQ_LOG_DEBUG, CASYNQ_LOG_INFO, CASYNQ_LOG_WARN,
            CASYNQ_LOG_ERROR,
    };

    (void)state;
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        enum casynq_log_level parsed = (enum casynq_log_level)-1;

        assert_int_equal(
                casynq_log_level_parse(casynq_log_level_name(levels[i]),
                                       &parsed),
                0);
        assert_int_equal(parsed, levels[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_strerror_every_code_has_its_text),
            cmocka_unit_test(test_err_name_every_code_has_its_name),
            cmocka_unit_test(test_strerror_texts_start_lowercase),
            cmocka_unit_test(test_strerror_success_code),
            cmocka_unit_test(test_strerror_unknown_code),
            cmocka_unit_test(test_error_codes_negative),
            cmocka_unit_test(test_error_codes_distinct),
            cmocka_unit_test(test_error_codes_keep_abi_values),
            cmocka_unit_test(test_log_level_name_each_level),
            cmocka_unit_test(test_log_level_parse_accepts_names),
            cmocka_unit_test(test_log_level_parse_ignores_case),
            cmocka_unit_test(test_log_level_parse_rejects_other_strings),
            cmocka_unit_test(test_log_level_name_parses_back),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
