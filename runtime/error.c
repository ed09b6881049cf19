/* DESIGN: error codes and their names.
 *
 * Both tables are generated from CASYNQ_ERRNO_MAP in casynq.h, so a new
 * code needs one line there and nothing here. The strings are static and
 * the functions keep no state, so any thread may call them. */
#include <casynq.h>

const char *casynq_strerror(int err)
{
    switch (err) {
    case CASYNQ_OK:
        return "success";
#define CASYNQ_ERRNO_TEXT(name, code, text)                                    \
    case CASYNQ_##name:                                                        \
        return text;
        CASYNQ_ERRNO_MAP(CASYNQ_ERRNO_TEXT)
#undef CASYNQ_ERRNO_TEXT
    default:
        return "unknown error";
    }
}

const char *casynq_err_name(int err)
{
    switch (err) {
    case CASYNQ_OK:
        return "CASYNQ_OK";
#define CASYNQ_ERRNO_NAME(name, code, text)                                    \
    case CASYNQ_##name:                                                        \
        return "CASYNQ_" #name;
        CASYNQ_ERRNO_MAP(CASYNQ_ERRNO_NAME)
#undef CASYNQ_ERRNO_NAME
    default:
        return "CASYNQ_EUNKNOWN";
    }
}

const char *casynq_version(void)
{
    return CASYNQ_VERSION_STRING;
}
