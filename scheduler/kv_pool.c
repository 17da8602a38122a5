/* kv_pool.c - the KV block manager: a preallocated pool of ref-counted blocks, an intrusive LRU
 * free list, and the prefix cache (a map from chained block hash to block). See sched_impl.h
 * for the contract; the design follows vLLM's block pool (research/engines.md §1.2). */
#include "scheduler/sched_impl.h"

#include <errno.h>
#include <string.h>

struct kv_block {
    int32_t prev, next; /* free list links (block ids), -1 at the ends */
    int32_t ref;
    bool on_free_list;
    bool hashed;  /* registered in the map */
    bool pending; /* registered, K/V not yet computed */
    uint64_t hash;
    uint64_t parent; /* the parent's hash, compared on a hit */
};

struct kv_pool {
    int32_t n_blocks;
    int32_t block_size;
    bool enable_cache;
    struct kv_block *blocks; /* [n_blocks] */
    int32_t *tokens;         /* [n_blocks * block_size] tokens of registered blocks */
    int32_t free_head, free_tail;
    int32_t n_free;        /* blocks with ref 0 */
    int32_t n_cached_free; /* of those, registered ones */
    int32_t n_registered;
    int32_t *map; /* [map_mask + 1] block ids, -1 empty */
    uint32_t map_mask;
};

int kv_pool_create(int32_t n_blocks, int32_t block_size, bool enable_cache, struct kv_pool **out)
{
    *out = NULL;
    if (n_blocks <= 0 || block_size <= 0 || n_blocks > (1 << 28)) {
        return -EINVAL;
    }
    struct kv_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks) {
        cap <<= 1;
    }
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->enable_cache = enable_cache;
    p->blocks = calloc((size_t)n_blocks, sizeof(*p->blocks));
    p->tokens = calloc((size_t)n_blocks * (size_t)block_size, sizeof(*p->tokens));
    p->map = malloc((size_t)cap * sizeof(*p->map));
    if (!p->blocks || !p->tokens || !p->map) {
        kv_pool_destroy(p);
        return -ENOMEM;
    }
    p->map_mask = cap - 1;
    for (uint32_t i = 0; i < cap; i++) {
        p->map[i] = -1;
    }
    for (int32_t i = 0; i < n_blocks; i++) {
        struct kv_block *b = &p->blocks[i];
        b->prev = i - 1;
        b->next = i + 1 < n_blocks ? i + 1 : -1;
        b->on_free_list = true;
    }
    p->free_head = 0;
    p->free_tail = n_blocks - 1;
    p->n_free = n_blocks;
    *out = p;
    return 0;
}

void kv_pool_destroy(struct kv_pool *p)
{
    if (!p) {
        return;
    }
    free(p->blocks);
    free(p->tokens);
    free(p->map);
    free(p);
}

static uint64_t kv_pool_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t kv_pool_hash(uint64_t parent, const int32_t *tokens, int32_t n_tokens)
{
    uint64_t h = kv_pool_mix(parent + 0x9e3779b97f4a7c15ull * (uint64_t)(n_tokens + 1));
    for (int32_t i = 0; i < n_tokens; i++) {
        h = kv_pool_mix(h ^ ((uint64_t)(uint32_t)tokens[i] + 0x9e3779b97f4a7c15ull));
    }
    return h;
}

/* --- free list ------------------------------------------------------------------------------ */

static void kv_pool_unlink(struct kv_pool *p, int32_t id)
{
    struct kv_block *b = &p->blocks[id];
    if (b->prev >= 0) {
        p->blocks[b->prev].next = b->next;
    } else {
        p->free_head = b->next;
    }
    if (b->next >= 0) {
        p->blocks[b->next].prev = b->prev;
    } else {
        p->free_tail = b->prev;
    }
    b->prev = b->next = -1;
    b->on_free_list = false;
    p->n_free--;
    if (b->hashed) {
        p->n_cached_free--;
    }
}

static void kv_pool_link_head(struct kv_pool *p, int32_t id)
{
    struct kv_block *b = &p->blocks[id];
    b->prev = -1;
    b->next = p->free_head;
    if (p->free_head >= 0) {
        p->blocks[p->free_head].prev = id;
    } else {
        p->free_tail = id;
    }
    p->free_head = id;
    b->on_free_list = true;
    p->n_free++;
}

static void kv_pool_link_tail(struct kv_pool *p, int32_t id)
{
    struct kv_block *b = &p->blocks[id];
    b->next = -1;
    b->prev = p->free_tail;
    if (p->free_tail >= 0) {
        p->blocks[p->free_tail].next = id;
    } else {
        p->free_head = id;
    }
    p->free_tail = id;
    b->on_free_list = true;
    p->n_free++;
    p->n_cached_free++;
}

/* --- hash map --------------------------------------------------------------------------------- */

static uint32_t kv_pool_slot(const struct kv_pool *p, uint64_t hash)
{
    return (uint32_t)(hash ^ (hash >> 32)) & p->map_mask;
}

static int32_t kv_pool_map_find(const struct kv_pool *p, uint64_t hash)
{
    for (uint32_t i = kv_pool_slot(p, hash);; i = (i + 1) & p->map_mask) {
        int32_t id = p->map[i];
        if (id < 0) {
            return -1;
        }
        if (p->blocks[id].hash == hash) {
            return id;
        }
    }
}

/* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
static void kv_pool_unhash(struct kv_pool *p, int32_t id)
{
    struct kv_block *b = &p->blocks[id];
    uint32_t i = kv_pool_slot(p, b->hash);
    while (p->map[i] != id) {
        SCHED_ASSERT(p->map[i] >= 0);
        i = (i + 1) & p->map_mask;
    }
    for (uint32_t j = (i + 1) & p->map_mask;; j = (j + 1) & p->map_mask) {
        int32_t other = p->map[j];
        if (other < 0) {
            break;
        }
        uint32_t home = kv_pool_slot(p, p->blocks[other].hash);
        /* move `other` into the hole at i unless its home lies cyclically in (i, j] */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            p->map[i] = other;
            i = j;
        }
    }
    p->map[i] = -1;
    if (b->on_free_list) {
        p->n_cached_free--;
    }
    b->hashed = false;
    b->pending = false;
    p->n_registered--;
}

/* --- public ----------------------------------------------------------------------------------- */

int kv_pool_alloc(struct kv_pool *p, int32_t n, int32_t *ids)
{
    if (n > p->n_free) {
        return -ENOSPC;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = p->free_head;
        kv_pool_unlink(p, id);
        if (p->blocks[id].hashed) {
            kv_pool_unhash(p, id); /* evict the least recently released cached block */
        }
        p->blocks[id].ref = 1;
        ids[i] = id;
    }
    return 0;
}

void kv_pool_ref(struct kv_pool *p, int32_t id)
{
    struct kv_block *b = &p->blocks[id];
    if (b->ref == 0) {
        SCHED_ASSERT(b->on_free_list);
        kv_pool_unlink(p, id);
    }
    b->ref++;
}

void kv_pool_free(struct kv_pool *p, const int32_t *ids, int32_t n)
{
    for (int32_t i = n - 1; i >= 0; i--) {
        int32_t id = ids[i];
        struct kv_block *b = &p->blocks[id];
        SCHED_ASSERT(b->ref > 0);
        if (--b->ref > 0) {
            continue;
        }
        if (b->hashed && b->pending) {
            kv_pool_unhash(p, id); /* its K/V were never computed */
        }
        if (b->hashed) {
            kv_pool_link_tail(p, id);
        } else {
            kv_pool_link_head(p, id);
        }
    }
}

int32_t kv_pool_lookup(const struct kv_pool *p, uint64_t hash, uint64_t parent,
                       const int32_t *tokens)
{
    int32_t id = kv_pool_map_find(p, hash);
    if (id < 0 || p->blocks[id].parent != parent ||
        memcmp(p->tokens + (size_t)id * (size_t)p->block_size, tokens,
               (size_t)p->block_size * sizeof(*tokens)) != 0) {
        return -1;
    }
    return id;
}

bool kv_pool_register(struct kv_pool *p, int32_t id, uint64_t hash, uint64_t parent,
                      const int32_t *tokens, bool pending)
{
    struct kv_block *b = &p->blocks[id];
    SCHED_ASSERT(b->ref > 0);
    if (!p->enable_cache || b->hashed || kv_pool_map_find(p, hash) >= 0) {
        return false;
    }
    uint32_t i = kv_pool_slot(p, hash);
    while (p->map[i] >= 0) {
        i = (i + 1) & p->map_mask;
    }
    p->map[i] = id;
    b->hash = hash;
    b->parent = parent;
    b->hashed = true;
    b->pending = pending;
    memcpy(p->tokens + (size_t)id * (size_t)p->block_size, tokens,
           (size_t)p->block_size * sizeof(*tokens));
    p->n_registered++;
    return true;
}

void kv_pool_commit(struct kv_pool *p, int32_t id)
{
    p->blocks[id].pending = false;
}

bool kv_pool_is_pending(const struct kv_pool *p, int32_t id)
{
    return p->blocks[id].pending;
}

int32_t kv_pool_n_blocks(const struct kv_pool *p)
{
    return p->n_blocks;
}

int32_t kv_pool_n_free(const struct kv_pool *p)
{
    return p->n_free;
}

int32_t kv_pool_n_cached_free(const struct kv_pool *p)
{
    return p->n_cached_free;
}

int32_t kv_pool_n_registered(const struct kv_pool *p)
{
    return p->n_registered;
}

int32_t kv_pool_ref_count(const struct kv_pool *p, int32_t id)
{
    return p->blocks[id].ref;
}

int kv_pool_check(const struct kv_pool *p)
{
    int32_t n_free = 0, n_cached_free = 0, n_registered = 0, prev = -1;
    for (int32_t id = p->free_head; id >= 0; id = p->blocks[id].next) {
        const struct kv_block *b = &p->blocks[id];
        if (b->prev != prev || !b->on_free_list || b->ref != 0 || b->pending ||
            n_free > p->n_blocks) {
            return -EPROTO;
        }
        n_free++;
        n_cached_free += b->hashed;
        prev = id;
    }
    if (prev != p->free_tail || n_free != p->n_free || n_cached_free != p->n_cached_free) {
        return -EPROTO;
    }
    for (int32_t id = 0; id < p->n_blocks; id++) {
        const struct kv_block *b = &p->blocks[id];
        if (b->ref < 0 || (b->ref == 0) != b->on_free_list) {
            return -EPROTO;
        }
        if (b->hashed) {
            n_registered++;
            if (kv_pool_map_find(p, b->hash) != id) {
                return -EPROTO;
            }
        }
    }
    int32_t in_map = 0;
    for (uint32_t i = 0; i <= p->map_mask; i++) {
        in_map += p->map[i] >= 0;
        if (p->map[i] >= 0 && !p->blocks[p->map[i]].hashed) {
            return -EPROTO;
        }
    }
    if (n_registered != p->n_registered || in_map != n_registered) {
        return -EPROTO;
    }
    return 0;
}
