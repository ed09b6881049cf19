/* DESIGN: the limiter's memory backend.
 *
 * Budgets of the queue and type scopes live in their rate limit
 * (shared_tat_ns). Per-key budgets live in a hash table with chaining,
 * keyed by (limit, caller key), one entry per budget holding its
 * theoretical arrival time (GCRA, see limiter.c). Everything here runs
 * under the limiter's mutex, l->mu, the only lock.
 *
 * Caller keys come from outside (API keys, client addresses). The table
 * hashes them with SipHash-2-4 under a random key drawn when the table is
 * created, so a client cannot choose keys that all land in one chain and
 * turn each check into a long scan.
 *
 * Memory stays bounded by the keys active within one refill time. An
 * entry whose TAT is not after now is idle: its budget is full, exactly
 * as if the entry did not exist, so it can be deleted at any time.
 * Deletion is lazy and needs no thread of its own:
 * - each check sweeps a few buckets, walking round the table, and the
 *   table shrinks when a walk finds it mostly empty;
 * - before the table grows, a full sweep runs first, and the table grows
 *   only if that sweep did not free enough. A full sweep runs at most
 *   once per nbuckets / 4 insertions, so its cost is O(1) per insertion
 *   on average. */
#include <string.h>
#include <sys/random.h>

#include "alloc.h"
#include "limiter.h"

#define MIN_BUCKETS             64
#define SWEEP_BUCKETS_PER_CHECK 4

/* One per-key budget. */
struct budget {
    struct budget *next;
    uint64_t hash;  /* SipHash of the key, mixed with the limit */
    int64_t tat_ns; /* theoretical arrival time; INT64_MIN: full */
    uint32_t limit; /* index into casynq__limits.rates */
    uint32_t key_len;
    char key[];
};

struct casynq__budget_table {
    struct budget **buckets;
    size_t nbuckets;  /* a power of two, at least MIN_BUCKETS */
    size_t count;     /* entries in the table */
    size_t cursor;    /* next bucket of the incremental sweep */
    uint8_t seed[16]; /* SipHash key, random */
};

/* ------------------------------------------------------------------------
 * SipHash-2-4, written from the specification in J.-P. Aumasson and
 * D. J. Bernstein, "SipHash: a fast short-input PRF" (INDOCRYPT 2012).
 */

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = rotl64(v[1], 13);
    v[1] ^= v[0];
    v[0] = rotl64(v[0], 32);
    v[2] += v[3];
    v[3] = rotl64(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = rotl64(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = rotl64(v[1], 17);
    v[1] ^= v[2];
    v[2] = rotl64(v[2], 32);
}

static void sip_compress(uint64_t v[4], uint64_t m)
{
    v[3] ^= m;
    sip_round(v);
    sip_round(v);
    v[0] ^= m;
}

uint64_t casynq__siphash24(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t k0 = load_le64(key);
    uint64_t k1 = load_le64(key + 8);
    uint64_t v[4] = {
            k0 ^ UINT64_C(0x736f6d6570736575),
            k1 ^ UINT64_C(0x646f72616e646f6d),
            k0 ^ UINT64_C(0x6c7967656e657261),
            k1 ^ UINT64_C(0x7465646279746573),
    };
    size_t whole = len - len % 8;
    uint64_t last = (uint64_t)len << 56;

    for (size_t i = 0; i < whole; i += 8) {
        sip_compress(v, load_le64(p + i));
    }
    for (size_t i = whole; i < len; i++) {
        last |= (uint64_t)p[i] << (8 * (i - whole));
    }
    sip_compress(v, last);
    v[2] ^= 0xff;
    for (int i = 0; i < 4; i++) {
        sip_round(v);
    }
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ------------------------------------------------------------------------
 * The table
 */

int casynq__budget_table_create(struct casynq__budget_table **out)
{
    struct casynq__budget_table *t = casynq__calloc(1, sizeof(*t));

    *out = NULL;
    if (t == NULL) {
        return CASYNQ_ENOMEM;
    }
    t->buckets = casynq__calloc(MIN_BUCKETS, sizeof(*t->buckets));
    if (t->buckets == NULL) {
        casynq__free(t);
        return CASYNQ_ENOMEM;
    }
    t->nbuckets = MIN_BUCKETS;
    if (getrandom(t->seed, sizeof(t->seed), 0) != (ssize_t)sizeof(t->seed)) {
        casynq__budget_table_destroy(t);
        return CASYNQ_ESYS;
    }
    *out = t;
    return 0;
}

void casynq__budget_table_destroy(struct casynq__budget_table *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        while (t->buckets[i] != NULL) {
            struct budget *b = t->buckets[i];

            t->buckets[i] = b->next;
            casynq__free(b);
        }
    }
    casynq__free(t->buckets);
    casynq__free(t);
}

/* Moves every entry into a new bucket array of n buckets. On allocation
 * failure the table keeps its size, which only lengthens the chains. */
static void table_resize(struct casynq__budget_table *t, size_t n)
{
    struct budget **buckets = casynq__calloc(n, sizeof(*buckets));

    if (buckets == NULL) {
        return;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        while (t->buckets[i] != NULL) {
            struct budget *b = t->buckets[i];
            size_t j = b->hash & (n - 1);

            t->buckets[i] = b->next;
            b->next = buckets[j];
            buckets[j] = b;
        }
    }
    casynq__free(t->buckets);
    t->buckets = buckets;
    t->nbuckets = n;
    t->cursor = 0;
}

/* Deletes the idle entries of bucket i. */
static void sweep_bucket(struct casynq__budget_table *t, size_t i, int64_t now)
{
    struct budget **link = &t->buckets[i];

    while (*link != NULL) {
        struct budget *b = *link;

        if (b->tat_ns <= now) {
            *link = b->next;
            casynq__free(b);
            t->count--;
        } else {
            link = &b->next;
        }
    }
}

/* Sweeps the next few buckets. At the end of each walk round the table,
 * shrinks it when at most one bucket in eight is used. */
static void sweep_step(struct casynq__budget_table *t, int64_t now)
{
    size_t target = MIN_BUCKETS;

    for (int k = 0; k < SWEEP_BUCKETS_PER_CHECK; k++) {
        sweep_bucket(t, t->cursor, now);
        t->cursor = (t->cursor + 1) & (t->nbuckets - 1);
        if (t->cursor != 0 || t->count > t->nbuckets / 8 ||
            t->nbuckets <= MIN_BUCKETS) {
            continue;
        }
        while (target < t->count * 2) {
            target *= 2;
        }
        table_resize(t, target);
        return;
    }
}

/* Makes room for n more entries while keeping the load at most 3/4. */
static void make_room(struct casynq__budget_table *t, int64_t now, size_t n)
{
    if (t->count + n <= t->nbuckets / 4 * 3) {
        return;
    }
    for (size_t i = 0; i < t->nbuckets; i++) {
        sweep_bucket(t, i, now);
    }
    if (t->count + n > t->nbuckets / 2) {
        table_resize(t, t->nbuckets * 2);
    }
}

/* Finds the budget of (limit, key), adding a full one when it is absent.
 * Returns: 0 with *out set, or CASYNQ_ENOMEM. */
static int find_or_add(struct casynq__budget_table *t, uint64_t hash,
                       size_t limit, const char *key, size_t key_len,
                       struct budget **out)
{
    size_t i = hash & (t->nbuckets - 1);
    struct budget *b;

    for (b = t->buckets[i]; b != NULL; b = b->next) {
        if (b->hash == hash && b->limit == limit && b->key_len == key_len &&
            memcmp(b->key, key, key_len) == 0) {
            *out = b;
            return 0;
        }
    }
    b = casynq__malloc(sizeof(*b) + key_len);
    if (b == NULL) {
        return CASYNQ_ENOMEM;
    }
    b->hash = hash;
    b->tat_ns = INT64_MIN;
    b->limit = (uint32_t)limit;
    b->key_len = (uint32_t)key_len;
    memcpy(b->key, key, key_len);
    b->next = t->buckets[i];
    t->buckets[i] = b;
    t->count++;
    *out = b;
    return 0;
}

/* ------------------------------------------------------------------------
 * The check
 */

int casynq__limiter_memory_check(struct casynq_limiter *l, const size_t *limits,
                                 size_t n, const char *key, size_t key_len,
                                 struct casynq__verdict *v)
{
    struct budget *entries[CASYNQ__LIMITER_MAX_RATES];
    int64_t tats[CASYNQ__LIMITER_MAX_RATES];
    struct casynq__budget_table *t = l->table;
    uint64_t key_hash = 0;
    int64_t worst_wait = 0;
    int64_t now;
    int rc = 0;

    pthread_mutex_lock(&l->mu);
    now = l->clock(l->clock_ud);
    sweep_step(t, now);
    /* Growing (and its full sweep) happens before any lookup, because a
     * sweep would free the full budgets that this check just found. */
    make_room(t, now, n);
    if (key != NULL) {
        key_hash = casynq__siphash24(t->seed, key, key_len);
    }

    /* Phase 1: the verdict of every budget, without changing any. */
    for (size_t i = 0; i < n; i++) {
        const struct casynq__rate_limit *r = &l->limits.rates[limits[i]];
        int64_t tat = r->shared_tat_ns;
        int64_t wait;

        entries[i] = NULL;
        if (r->scope == CASYNQ_LIMIT_PER_KEY) {
            /* Each limit gets its own budget for the same key. */
            uint64_t hash = key_hash ^ ((uint64_t)(limits[i] + 1) *
                                        UINT64_C(0x9e3779b97f4a7c15));

            rc = find_or_add(t, hash, limits[i], key, key_len, &entries[i]);
            if (rc != 0) {
                goto out_unlock;
            }
            tat = entries[i]->tat_ns;
        }
        if (tat < now) {
            tat = now;
        }
        tats[i] = tat;
        wait = tat - r->tolerance_ns - now;
        if (wait > worst_wait) {
            worst_wait = wait;
            v->worst = i;
        }
    }
    if (worst_wait > 0) {
        v->retry_after_ms = (worst_wait + 999999) / 1000000;
        rc = CASYNQ_ERATELIMITED;
        goto out_unlock;
    }

    /* Phase 2: every limit passed, so each budget takes one unit. */
    for (size_t i = 0; i < n; i++) {
        struct casynq__rate_limit *r = &l->limits.rates[limits[i]];
        int64_t tat = tats[i] + r->interval_ns;

        if (entries[i] != NULL) {
            entries[i]->tat_ns = tat;
        } else {
            r->shared_tat_ns = tat;
        }
    }

out_unlock:
    pthread_mutex_unlock(&l->mu);
    return rc;
}

void casynq__limiter_memory_stats(struct casynq_limiter *l, size_t *budgets,
                                  size_t *buckets)
{
    pthread_mutex_lock(&l->mu);
    *budgets = l->table != NULL ? l->table->count : 0;
    *buckets = l->table != NULL ? l->table->nbuckets : 0;
    pthread_mutex_unlock(&l->mu);
}
