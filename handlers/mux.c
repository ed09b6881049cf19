/* DESIGN: the handler registry (mux) and its middleware chain.
 *
 * The mux maps task types to handlers as asynq v0.26.0's ServeMux does
 * (servemux.go, ServeMux.Handler and match): the longest registered
 * pattern that is a prefix of the task type wins, and an exact match is
 * the longest prefix there can be. Patterns are kept sorted from longest
 * to shortest, so the first prefix found is the match. Two patterns of
 * equal length that are both prefixes of one type would be equal, and
 * duplicates are rejected, so the match never depends on insertion order.
 *
 * Middleware wraps every dispatch, the not-found outcome included, in the
 * order added: the first added is the outermost. asynq builds the chain by
 * wrapping closures. Here a chain step is a small struct on the stack that
 * names the mux, the index of the next middleware and the matched entry,
 * so dispatch allocates nothing.
 *
 * Threads: registration (create, handle, use, destroy) runs during setup
 * on one thread. Dispatch only reads the mux, so any number of worker
 * threads may dispatch at once without a lock, provided no registration
 * runs concurrently. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <casynq.h>

#include "alloc.h"
#include "util.h"

/* Size of the buffer for the quoted type in the not-found message. The
 * context keeps at most 1 KiB of failure text, so a longer quote would be
 * cut there anyway. */
#define QUOTED_TYPE_MAX 1024

struct mux_entry {
    char *pattern; /* owned, NUL-terminated */
    size_t pattern_len;
    casynq_handler_fn fn;
    void *ud; /* borrowed from the caller of handle */
};

struct mux_middleware {
    casynq_middleware_fn fn;
    void *ud; /* borrowed from the caller of use */
};

/* Every field is written only during setup and read-only afterwards. */
struct casynq_mux {
    struct mux_entry *entries; /* sorted by pattern length, longest first */
    size_t entry_count;
    size_t entry_cap;
    struct mux_middleware *middleware; /* in the order added */
    size_t middleware_count;
    size_t middleware_cap;
};

/* One step of a running chain. It lives on the stack of the dispatch or of
 * casynq_next_call() and is valid only while that call runs. */
struct casynq_next {
    const struct casynq_mux *mux;
    size_t middleware_index;       /* next middleware to run */
    const struct mux_entry *entry; /* matched handler, NULL for not found */
};

int casynq_mux_create(struct casynq_mux **out)
{
    if (out == NULL) {
        return CASYNQ_EINVAL;
    }
    *out = casynq__calloc(1, sizeof(**out));
    return *out != NULL ? 0 : CASYNQ_ENOMEM;
}

void casynq_mux_destroy(struct casynq_mux *mux)
{
    if (mux == NULL) {
        return;
    }
    for (size_t i = 0; i < mux->entry_count; i++) {
        casynq__free(mux->entries[i].pattern);
    }
    casynq__free(mux->entries);
    casynq__free(mux->middleware);
    casynq__free(mux);
}

/* Makes room for one more element in an array of cap elem_size-byte slots,
 * count of which are in use.
 * Returns: 0 or CASYNQ_ENOMEM, which leaves the array unchanged. */
static int reserve_one(void **array, size_t *cap, size_t count,
                       size_t elem_size)
{
    size_t new_cap;
    void *grown;

    if (count < *cap) {
        return 0;
    }
    new_cap = *cap == 0 ? 8 : *cap * 2;
    if (new_cap > SIZE_MAX / elem_size) {
        return CASYNQ_ENOMEM;
    }
    grown = casynq__realloc(*array, new_cap * elem_size);
    if (grown == NULL) {
        return CASYNQ_ENOMEM;
    }
    *array = grown;
    *cap = new_cap;
    return 0;
}

static const struct mux_entry *find_pattern(const struct casynq_mux *mux,
                                            const char *pattern)
{
    for (size_t i = 0; i < mux->entry_count; i++) {
        if (strcmp(mux->entries[i].pattern, pattern) == 0) {
            return &mux->entries[i];
        }
    }
    return NULL;
}

int casynq_mux_handle(struct casynq_mux *mux, const char *pattern,
                      casynq_handler_fn fn, void *ud)
{
    size_t len;
    size_t pos;
    char *copy;
    void *entries;

    /* asynq's ServeMux.Handle rejects a pattern that is empty after
     * strings.TrimSpace, and a nil handler. Only ASCII white space counts
     * here, the same rule casynq applies to task types. */
    if (mux == NULL || fn == NULL || casynq__is_blank(pattern)) {
        return CASYNQ_EINVAL;
    }
    if (find_pattern(mux, pattern) != NULL) {
        return CASYNQ_EEXIST;
    }
    entries = mux->entries;
    if (reserve_one(&entries, &mux->entry_cap, mux->entry_count,
                    sizeof(*mux->entries)) != 0) {
        return CASYNQ_ENOMEM;
    }
    mux->entries = entries;
    len = strlen(pattern);
    copy = casynq__strndup(pattern, len);
    if (copy == NULL) {
        return CASYNQ_ENOMEM;
    }

    /* Insert after every pattern at least as long, which keeps the array
     * sorted longest first. */
    pos = 0;
    while (pos < mux->entry_count && mux->entries[pos].pattern_len >= len) {
        pos++;
    }
    memmove(&mux->entries[pos + 1], &mux->entries[pos],
            (mux->entry_count - pos) * sizeof(*mux->entries));
    mux->entries[pos] = (struct mux_entry){
            .pattern = copy,
            .pattern_len = len,
            .fn = fn,
            .ud = ud,
    };
    mux->entry_count++;
    return 0;
}

int casynq_mux_use(struct casynq_mux *mux, casynq_middleware_fn fn, void *ud)
{
    void *middleware;

    if (mux == NULL || fn == NULL) {
        return CASYNQ_EINVAL;
    }
    middleware = mux->middleware;
    if (reserve_one(&middleware, &mux->middleware_cap, mux->middleware_count,
                    sizeof(*mux->middleware)) != 0) {
        return CASYNQ_ENOMEM;
    }
    mux->middleware = middleware;
    mux->middleware[mux->middleware_count++] = (struct mux_middleware){
            .fn = fn,
            .ud = ud,
    };
    return 0;
}

/* Returns the entry whose pattern is the longest prefix of type, or NULL.
 */
static const struct mux_entry *match(const struct casynq_mux *mux,
                                     const char *type)
{
    size_t type_len = strlen(type);

    for (size_t i = 0; i < mux->entry_count; i++) {
        const struct mux_entry *e = &mux->entries[i];

        if (e->pattern_len <= type_len &&
            memcmp(type, e->pattern, e->pattern_len) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Decodes the UTF-8 sequence at s, of which n bytes remain, with the rules
 * of Go's utf8.DecodeRuneInString: overlong forms, surrogates and code
 * points above U+10FFFF are invalid.
 * Returns: the sequence length, storing the code point in *cp, or 1 with
 *          *cp = -1 for a byte that starts no valid sequence. */
static size_t decode_rune(const unsigned char *s, size_t n, int32_t *cp)
{
    unsigned char b = s[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xbf;
    size_t len;

    *cp = -1;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        lo = b == 0xe0 ? 0xa0 : 0x80;
        hi = b == 0xed ? 0x9f : 0xbf;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        lo = b == 0xf0 ? 0x90 : 0x80;
        hi = b == 0xf4 ? 0x8f : 0xbf;
    } else {
        return 1;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 1;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf) {
            return 1;
        }
    }
    *cp = (int32_t)(b & (0xff >> (len + 1)));
    for (size_t i = 1; i < len; i++) {
        *cp = (*cp << 6) | (s[i] & 0x3f);
    }
    return len;
}

/* Returns whether Go's strconv.IsPrint holds for the non-ASCII code point
 * cp: letters, marks, numbers, punctuation and symbols are printable, while
 * spaces other than U+0020, controls, format characters and private-use
 * code points are not.
 * NOTE: Go also escapes unassigned code points, which would need Unicode's
 * tables. This check treats them as printable, so for a type containing
 * one the not-found message differs from asynq's in that character. */
static bool is_print_non_ascii(int32_t cp)
{
    static const int32_t unprintable[][2] = {
            {0x0080, 0x00a0},    {0x00ad, 0x00ad},   {0x0600, 0x0605},
            {0x061c, 0x061c},    {0x06dd, 0x06dd},   {0x070f, 0x070f},
            {0x0890, 0x0891},    {0x08e2, 0x08e2},   {0x1680, 0x1680},
            {0x180e, 0x180e},    {0x2000, 0x200f},   {0x2028, 0x202f},
            {0x205f, 0x206f},    {0x3000, 0x3000},   {0xd800, 0xf8ff},
            {0xfeff, 0xfeff},    {0xfff9, 0xfffb},   {0xfffe, 0xffff},
            {0x110bd, 0x110bd},  {0x110cd, 0x110cd}, {0x13430, 0x1343f},
            {0x1bca0, 0x1bca3},  {0x1d173, 0x1d17a}, {0xe0000, 0xe00ff},
            {0xf0000, 0x10ffff},
    };

    for (size_t i = 0; i < sizeof(unprintable) / sizeof(unprintable[0]); i++) {
        if (cp >= unprintable[i][0] && cp <= unprintable[i][1]) {
            return false;
        }
    }
    return true;
}

/* Returns the letter of Go's backslash escape for a control character
 * (\a \b \f \n \r \t \v), or 0 when cp has none. */
static char escape_letter(int32_t cp)
{
    switch (cp) {
    case '\a':
        return 'a';
    case '\b':
        return 'b';
    case '\f':
        return 'f';
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    case '\v':
        return 'v';
    default:
        return 0;
    }
}

/* Writes the escape of one rune, or of one invalid byte when cp < 0, into
 * out as Go's strconv.Quote writes it.
 * Returns: the number of bytes written, or 0 when it does not fit in room
 *          bytes with a NUL. */
static int quote_rune(char *out, size_t room, const unsigned char *s,
                      size_t len, int32_t cp)
{
    int written;

    if (cp < 0) {
        written = snprintf(out, room, "\\x%02x", s[0]);
    } else if (cp == '"' || cp == '\\') {
        written = snprintf(out, room, "\\%c", (char)cp);
    } else if (cp >= 0x20 && cp < 0x7f) {
        written = snprintf(out, room, "%c", (char)cp);
    } else if (cp >= 0x80 && is_print_non_ascii(cp)) {
        written = snprintf(out, room, "%.*s", (int)len, (const char *)s);
    } else if (escape_letter(cp) != 0) {
        written = snprintf(out, room, "\\%c", escape_letter(cp));
    } else if (cp < 0x20 || cp == 0x7f) {
        written = snprintf(out, room, "\\x%02x", (unsigned)cp);
    } else if (cp < 0x10000) {
        written = snprintf(out, room, "\\u%04x", (unsigned)cp);
    } else {
        written = snprintf(out, room, "\\U%08x", (unsigned)cp);
    }
    return written > 0 && (size_t)written < room ? written : 0;
}

/* Writes type into out in double quotes with Go's %q escapes, which asynq
 * uses in its not-found error. A type too long for out is cut at a rune
 * boundary and still closed with a quote. */
static void quote_type(const char *type, char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)type;
    size_t n = strlen(type);
    size_t used = 1;

    out[0] = '"';
    while (n > 0) {
        int32_t cp;
        size_t len = decode_rune(s, n, &cp);
        /* Two bytes stay free for the closing quote and the NUL. */
        int written = quote_rune(out + used, cap - used - 1, s, len, cp);

        if (written == 0) {
            break;
        }
        used += (size_t)written;
        s += len;
        n -= len;
    }
    out[used] = '"';
    out[used + 1] = '\0';
}

/* The end of the chain when no pattern matches, as asynq's NotFound:
 * the task fails with `handler not found for task "<type>"`. */
static int handle_not_found(struct casynq_ctx *ctx,
                            const struct casynq_task *task)
{
    const char *type = casynq_task_type(task);
    char quoted[QUOTED_TYPE_MAX];

    quote_type(type != NULL ? type : "", quoted, sizeof(quoted));
    /* casynq_ctx_fail() returns CASYNQ_EHANDLER, but the not-found outcome
     * has its own code, so only the message is kept. */
    (void)casynq_ctx_fail(ctx, "handler not found for task %s", quoted);
    return CASYNQ_ENOHANDLER;
}

int casynq_next_call(const struct casynq_next *next, struct casynq_ctx *ctx,
                     const struct casynq_task *task)
{
    const struct casynq_mux *mux;

    if (next == NULL || ctx == NULL || task == NULL) {
        return CASYNQ_EINVAL;
    }
    mux = next->mux;
    if (next->middleware_index < mux->middleware_count) {
        const struct mux_middleware *mw =
                &mux->middleware[next->middleware_index];
        struct casynq_next rest = {
                .mux = mux,
                .middleware_index = next->middleware_index + 1,
                .entry = next->entry,
        };

        return mw->fn(ctx, task, &rest, mw->ud);
    }
    if (next->entry == NULL) {
        return handle_not_found(ctx, task);
    }
    return next->entry->fn(ctx, task, next->entry->ud);
}

int casynq_mux_dispatch(const struct casynq_mux *mux, struct casynq_ctx *ctx,
                        const struct casynq_task *task)
{
    const char *type;
    struct casynq_next chain;

    if (mux == NULL || ctx == NULL || task == NULL) {
        return CASYNQ_EINVAL;
    }
    type = casynq_task_type(task);
    chain = (struct casynq_next){
            .mux = mux,
            .middleware_index = 0,
            .entry = match(mux, type != NULL ? type : ""),
    };
    return casynq_next_call(&chain, ctx, task);
}
