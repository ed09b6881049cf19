/* DESIGN: the allocator hook.
 *
 * Every allocation the library makes goes through these wrappers, so that
 * an application (or a test that wants to see every allocation) can swap
 * the allocator once at start-up. hiredis, cJSON and protobuf-c are pointed
 * at the same functions. The hook pointers are written only by
 * casynq_set_allocator(), which must run before any other casynq call, so
 * plain reads from any thread afterwards are safe. */
#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <hiredis/alloc.h>
#include <hiredis/hiredis.h>

#include <casynq.h>

static void *(*alloc_malloc)(size_t) = malloc; /* immutable after setup */
static void *(*alloc_calloc)(size_t, size_t) = calloc;
static void *(*alloc_realloc)(void *, size_t) = realloc;
static void (*alloc_free)(void *) = free;

static char *hiredis_strdup(const char *s)
{
    return casynq__strdup(s);
}

void casynq_set_allocator(void *(*malloc_fn)(size_t),
                          void *(*calloc_fn)(size_t, size_t),
                          void *(*realloc_fn)(void *, size_t),
                          void (*free_fn)(void *))
{
    cJSON_Hooks hooks;

    alloc_malloc = malloc_fn != NULL ? malloc_fn : malloc;
    alloc_calloc = calloc_fn != NULL ? calloc_fn : calloc;
    alloc_realloc = realloc_fn != NULL ? realloc_fn : realloc;
    alloc_free = free_fn != NULL ? free_fn : free;

    hooks.malloc_fn = casynq__malloc;
    hooks.free_fn = casynq__free;
    cJSON_InitHooks(&hooks);

#if HIREDIS_MAJOR >= 1
    hiredisAllocFuncs funcs = {
            .mallocFn = casynq__malloc,
            .callocFn = casynq__calloc,
            .reallocFn = casynq__realloc,
            .strdupFn = hiredis_strdup,
            .freeFn = casynq__free,
    };
    hiredisSetAllocators(&funcs);
#else
    /* NOTE: hiredis 0.14 allocates with the C library directly and offers
     * no hook, so its buffers bypass a replaced allocator there. */
    (void)hiredis_strdup;
#endif
}

void *casynq__malloc(size_t size)
{
    return alloc_malloc(size == 0 ? 1 : size);
}

void *casynq__calloc(size_t count, size_t size)
{
    if (size != 0 && count > SIZE_MAX / size) {
        return NULL;
    }
    if (count == 0 || size == 0) {
        count = 1;
        size = 1;
    }
    return alloc_calloc(count, size);
}

void *casynq__realloc(void *ptr, size_t size)
{
    return alloc_realloc(ptr, size == 0 ? 1 : size);
}

void casynq__free(void *ptr)
{
    if (ptr != NULL) {
        alloc_free(ptr);
    }
}

void casynq_free(void *ptr)
{
    casynq__free(ptr);
}

char *casynq__strndup(const char *s, size_t len)
{
    char *copy = casynq__malloc(len + 1);

    if (copy == NULL) {
        return NULL;
    }
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *casynq__strdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    return casynq__strndup(s, strlen(s));
}
