/* DESIGN: building Redis commands.
 *
 * The broker describes each operation as a casynq__cmd and hands it to a
 * transport: the synchronous connection of the client, or the loop
 * thread's asynchronous connection in the server. Keeping construction
 * apart from sending lets both transports run the same operations, and the
 * integration tests check the same bytes the server sends. */
#include "cmd.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "scripts_gen.h"

/* Index of the numkeys argument in an EVALSHA command. */
#define SCRIPT_NUMKEYS_ARG 2

static void push_arg(struct casynq__cmd *c, const void *data, size_t len)
{
    if (c->err != 0) {
        return;
    }
    if (c->argc == c->cap) {
        int cap = c->cap == 0 ? 16 : c->cap * 2;
        size_t *offs = casynq__realloc(c->offs, (size_t)cap * sizeof(*offs));

        if (offs == NULL) {
            c->err = CASYNQ_ENOMEM;
            return;
        }
        c->offs = offs;
        size_t *lens = casynq__realloc(c->lens, (size_t)cap * sizeof(*lens));
        if (lens == NULL) {
            c->err = CASYNQ_ENOMEM;
            return;
        }
        c->lens = lens;
        c->cap = cap;
    }
    c->offs[c->argc] = c->store.len;
    c->lens[c->argc] = len;
    if (casynq__buf_append(&c->store, data, len) != 0) {
        c->err = CASYNQ_ENOMEM;
        return;
    }
    c->argc++;
}

static void push_vformat(struct casynq__cmd *c, const char *fmt, va_list ap)
{
    char small[256];
    va_list copy;
    int n;

    va_copy(copy, ap);
    n = vsnprintf(small, sizeof(small), fmt, copy);
    va_end(copy);
    if (n < 0) {
        c->err = CASYNQ_EINVAL;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        push_arg(c, small, (size_t)n);
        return;
    }

    char *big = casynq__malloc((size_t)n + 1);
    if (big == NULL) {
        c->err = CASYNQ_ENOMEM;
        return;
    }
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    push_arg(c, big, (size_t)n);
    casynq__free(big);
}

void casynq__cmd_init(struct casynq__cmd *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    c->script = -1;
    push_arg(c, name, strlen(name));
}

void casynq__cmd_init_script(struct casynq__cmd *c, int script)
{
    memset(c, 0, sizeof(*c));
    c->script = script;
    push_arg(c, "EVALSHA", 7);
    push_arg(c, casynq__script_sha1[script], 40);
    /* The key count is patched in by casynq__cmd_finish(). */
    push_arg(c, "", 0);
}

void casynq__cmd_keyf(struct casynq__cmd *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    push_vformat(c, fmt, ap);
    va_end(ap);
    c->nkeys++;
}

void casynq__cmd_argf(struct casynq__cmd *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    push_vformat(c, fmt, ap);
    va_end(ap);
}

void casynq__cmd_arg(struct casynq__cmd *c, const void *data, size_t len)
{
    push_arg(c, data, len);
}

void casynq__cmd_arg_str(struct casynq__cmd *c, const char *s)
{
    push_arg(c, s, strlen(s));
}

void casynq__cmd_arg_int(struct casynq__cmd *c, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRId64, v);

    push_arg(c, num, (size_t)n);
}

int casynq__cmd_finish(struct casynq__cmd *c)
{
    char numkeys[16];
    int n;

    if (c->err != 0) {
        return c->err;
    }
    if (c->argv != NULL) {
        return 0;
    }
    c->argv = casynq__calloc((size_t)c->argc, sizeof(*c->argv));
    c->argvlen = casynq__calloc((size_t)c->argc, sizeof(*c->argvlen));
    if (c->argv == NULL || c->argvlen == NULL) {
        c->err = CASYNQ_ENOMEM;
        return c->err;
    }
    for (int i = 0; i < c->argc; i++) {
        c->argv[i] = c->store.data + c->offs[i];
        c->argvlen[i] = c->lens[i];
    }
    if (c->script >= 0) {
        /* numkeys cannot live in the shared store: it is written after
         * the keys, so it gets a small buffer of its own. */
        n = snprintf(numkeys, sizeof(numkeys), "%d", c->nkeys);
        char *copy = casynq__strndup(numkeys, (size_t)n);
        if (copy == NULL) {
            c->err = CASYNQ_ENOMEM;
            return c->err;
        }
        c->argv[SCRIPT_NUMKEYS_ARG] = copy;
        c->argvlen[SCRIPT_NUMKEYS_ARG] = (size_t)n;
    }
    return 0;
}

void casynq__cmd_free(struct casynq__cmd *c)
{
    if (c->script >= 0 && c->argv != NULL) {
        casynq__free((void *)(uintptr_t)c->argv[SCRIPT_NUMKEYS_ARG]);
    }
    casynq__free((void *)c->argv);
    casynq__free(c->argvlen);
    casynq__free(c->offs);
    casynq__free(c->lens);
    casynq__buf_free(&c->store);
    memset(c, 0, sizeof(*c));
    c->script = -1;
}
