#ifndef CASYNQ_RUNTIME_CMD_H
#define CASYNQ_RUNTIME_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* One Redis command under construction: a plain command, or a call of one
 * of the broker's Lua scripts by SHA-1. Arguments are copied into one
 * buffer, so building a command costs a handful of allocations whatever
 * its size. A command is owned by one thread at a time. */
struct casynq__cmd {
    struct casynq__buf store; /* argument bytes, back to back */
    size_t *offs;             /* offset of each argument in store */
    size_t *lens;             /* length of each argument */
    int argc;
    int cap;
    int script;        /* script id, or -1 for a plain command */
    int nkeys;         /* keys given so far (scripts only) */
    int err;           /* first failure while building, or 0 */
    const char **argv; /* set by casynq__cmd_finish() */
    size_t *argvlen;
};

/* Starts a plain command whose first word is name (as "ZADD"). */
void casynq__cmd_init(struct casynq__cmd *c, const char *name);

/* Starts a call of script id; add its keys first, then its arguments. */
void casynq__cmd_init_script(struct casynq__cmd *c, int script);

/* Appends a key (scripts) or an argument built from a format. */
void casynq__cmd_keyf(struct casynq__cmd *c, const char *fmt, ...)
        CASYNQ_PRINTF(2, 3);
void casynq__cmd_argf(struct casynq__cmd *c, const char *fmt, ...)
        CASYNQ_PRINTF(2, 3);
/* Appends len raw bytes as one argument. */
void casynq__cmd_arg(struct casynq__cmd *c, const void *data, size_t len);
void casynq__cmd_arg_str(struct casynq__cmd *c, const char *s);
void casynq__cmd_arg_int(struct casynq__cmd *c, int64_t v);

/* Builds argv and argvlen from what was added. For a script the command is
 * EVALSHA <sha1> <numkeys> keys... args.... A second call does nothing,
 * so a finished command can be sent again.
 * Returns: 0, or the first error met while building (CASYNQ_ENOMEM). */
int casynq__cmd_finish(struct casynq__cmd *c);

/* Frees everything the command holds; the command may be inited again. */
void casynq__cmd_free(struct casynq__cmd *c);

#endif
