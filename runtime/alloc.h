#ifndef CASYNQ_RUNTIME_ALLOC_H
#define CASYNQ_RUNTIME_ALLOC_H

#include <stddef.h>

/* Allocation wrappers that go through the allocator installed with
 * casynq_set_allocator(). They return NULL on failure and never abort.
 * Thread: any. */
void *casynq__malloc(size_t size);
/* Returns NULL when count * size overflows, as a user allocator may not
 * check it. */
void *casynq__calloc(size_t count, size_t size);
void *casynq__realloc(void *ptr, size_t size);
void casynq__free(void *ptr);

/* Returns a copy of the first len bytes of s with a NUL appended, or NULL.
 * Ownership: free with casynq__free(). */
char *casynq__strndup(const char *s, size_t len);
/* Returns a copy of s, or NULL when s is NULL or allocation fails. */
char *casynq__strdup(const char *s);

#endif
