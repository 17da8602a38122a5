/* test_kv_pool.c - the KV block manager and prefix cache (scheduler/kv_pool.c):
 * allocation and ref counts, the LRU order of released cached blocks, hit verification, pending
 * registrations, and a random walk checked against a model and kv_pool_check after every op. */
#include "scheduler/sched_impl.h"

/* cmocka needs these four headers first, in this order */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BS 4

static struct kv_pool *pool_new(int32_t n, bool cache)
{
    struct kv_pool *p = NULL;
    assert_int_equal(kv_pool_create(n, BS, cache, &p), 0);
    assert_non_null(p);
    return p;
}

static void fill_tokens(int32_t *t, int32_t seed)
{
    for (int i = 0; i < BS; i++) {
        t[i] = seed * 31 + i;
    }
}

static void test_kv_pool_create_rejects_bad_sizes(void **state)
{
    (void)state;
    struct kv_pool *p = NULL;
    assert_int_equal(kv_pool_create(0, BS, true, &p), -EINVAL);
    assert_null(p);
    assert_int_equal(kv_pool_create(4, 0, true, &p), -EINVAL);
    kv_pool_destroy(NULL);
}

static void test_kv_pool_alloc_fails_when_full(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(8, true);
    int32_t ids[9];
    assert_int_equal(kv_pool_alloc(p, 8, ids), 0);
    assert_int_equal(kv_pool_n_free(p), 0);
    int32_t more;
    assert_int_equal(kv_pool_alloc(p, 1, &more), -ENOSPC);
    bool seen[8] = { false };
    for (int i = 0; i < 8; i++) {
        assert_true(ids[i] >= 0 && ids[i] < 8 && !seen[ids[i]]);
        seen[ids[i]] = true;
        assert_int_equal(kv_pool_ref_count(p, ids[i]), 1);
    }
    kv_pool_free(p, ids, 8);
    assert_int_equal(kv_pool_n_free(p), 8);
    assert_int_equal(kv_pool_check(p), 0);
    /* asking for more than is free takes nothing */
    assert_int_equal(kv_pool_alloc(p, 9, ids), -ENOSPC);
    assert_int_equal(kv_pool_n_free(p), 8);
    kv_pool_destroy(p);
}

static void test_kv_pool_hash_chains_parent(void **state)
{
    (void)state;
    int32_t a[BS], b[BS];
    fill_tokens(a, 1);
    fill_tokens(b, 1);
    assert_true(kv_pool_hash(KV_POOL_ROOT_HASH, a, BS) == kv_pool_hash(KV_POOL_ROOT_HASH, b, BS));
    b[BS - 1]++;
    assert_true(kv_pool_hash(KV_POOL_ROOT_HASH, a, BS) != kv_pool_hash(KV_POOL_ROOT_HASH, b, BS));
    /* same tokens under another parent: another hash */
    assert_true(kv_pool_hash(1, a, BS) != kv_pool_hash(2, a, BS));
}

static void test_kv_pool_hit_after_release_and_lru_eviction(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(4, true);
    int32_t ids[4], toks[4][BS];
    uint64_t h[4];
    assert_int_equal(kv_pool_alloc(p, 4, ids), 0);
    for (int i = 0; i < 4; i++) {
        fill_tokens(toks[i], i);
        h[i] = kv_pool_hash(i ? h[i - 1] : KV_POOL_ROOT_HASH, toks[i], BS);
    }
    /* blocks 0..2 cached (a chain), block 3 not */
    for (int i = 0; i < 3; i++) {
        assert_true(
            kv_pool_register(p, ids[i], h[i], i ? h[i - 1] : KV_POOL_ROOT_HASH, toks[i], false));
    }
    assert_int_equal(kv_pool_n_registered(p), 3);
    kv_pool_free(p, ids, 4); /* released last to first: 3 (uncached, head), then 2, 1, 0 */
    assert_int_equal(kv_pool_n_free(p), 4);
    assert_int_equal(kv_pool_n_cached_free(p), 3);
    assert_int_equal(kv_pool_check(p), 0);
    /* a hit takes the block back */
    int32_t hit = kv_pool_lookup(p, h[0], KV_POOL_ROOT_HASH, toks[0]);
    assert_int_equal(hit, ids[0]);
    kv_pool_ref(p, hit);
    assert_int_equal(kv_pool_n_free(p), 3);
    assert_int_equal(kv_pool_n_cached_free(p), 2);
    /* allocation takes the uncached block first, then evicts the least recently released (2) */
    int32_t got;
    assert_int_equal(kv_pool_alloc(p, 1, &got), 0);
    assert_int_equal(got, ids[3]);
    assert_int_equal(kv_pool_alloc(p, 1, &got), 0);
    assert_int_equal(got, ids[2]);
    assert_int_equal(kv_pool_lookup(p, h[2], h[1], toks[2]), -1);
    assert_int_equal(kv_pool_lookup(p, h[1], h[0], toks[1]), ids[1]);
    assert_int_equal(kv_pool_n_registered(p), 2);
    assert_int_equal(kv_pool_check(p), 0);
    kv_pool_destroy(p);
}

static void test_kv_pool_lookup_verifies_tokens_and_parent(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(4, true);
    int32_t id, toks[BS], other[BS];
    fill_tokens(toks, 7);
    fill_tokens(other, 8);
    assert_int_equal(kv_pool_alloc(p, 1, &id), 0);
    uint64_t h = kv_pool_hash(KV_POOL_ROOT_HASH, toks, BS);
    assert_true(kv_pool_register(p, id, h, KV_POOL_ROOT_HASH, toks, false));
    assert_int_equal(kv_pool_lookup(p, h, KV_POOL_ROOT_HASH, toks), id);
    /* a colliding hash with other tokens or another parent is not a hit */
    assert_int_equal(kv_pool_lookup(p, h, KV_POOL_ROOT_HASH, other), -1);
    assert_int_equal(kv_pool_lookup(p, h, 12345, toks), -1);
    assert_int_equal(kv_pool_lookup(p, h + 1, KV_POOL_ROOT_HASH, toks), -1);
    kv_pool_free(p, &id, 1);
    kv_pool_destroy(p);
}

static void test_kv_pool_shared_block_ref_counts(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(2, true);
    int32_t id, toks[BS];
    fill_tokens(toks, 3);
    assert_int_equal(kv_pool_alloc(p, 1, &id), 0);
    uint64_t h = kv_pool_hash(KV_POOL_ROOT_HASH, toks, BS);
    assert_true(kv_pool_register(p, id, h, KV_POOL_ROOT_HASH, toks, false));
    kv_pool_ref(p, id); /* a second sequence shares it */
    assert_int_equal(kv_pool_ref_count(p, id), 2);
    kv_pool_free(p, &id, 1);
    assert_int_equal(kv_pool_ref_count(p, id), 1);
    assert_int_equal(kv_pool_n_free(p), 1);
    kv_pool_free(p, &id, 1);
    assert_int_equal(kv_pool_n_free(p), 2);
    assert_int_equal(kv_pool_n_cached_free(p), 1);
    assert_int_equal(kv_pool_check(p), 0);
    kv_pool_destroy(p);
}

static void test_kv_pool_pending_dropped_on_free(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(2, true);
    int32_t ids[2], toks[BS];
    fill_tokens(toks, 5);
    uint64_t h = kv_pool_hash(KV_POOL_ROOT_HASH, toks, BS);
    assert_int_equal(kv_pool_alloc(p, 2, ids), 0);
    assert_true(kv_pool_register(p, ids[0], h, KV_POOL_ROOT_HASH, toks, true));
    assert_int_equal(kv_pool_lookup(p, h, KV_POOL_ROOT_HASH, toks), ids[0]);
    assert_true(kv_pool_is_pending(p, ids[0]));
    /* a duplicate of a registered hash stays uncached */
    assert_false(kv_pool_register(p, ids[1], h, KV_POOL_ROOT_HASH, toks, false));
    assert_false(kv_pool_register(p, ids[0], h + 1, KV_POOL_ROOT_HASH, toks, false));
    kv_pool_free(p, ids, 2); /* never computed: not cached */
    assert_int_equal(kv_pool_lookup(p, h, KV_POOL_ROOT_HASH, toks), -1);
    assert_int_equal(kv_pool_n_registered(p), 0);
    assert_int_equal(kv_pool_n_cached_free(p), 0);
    /* committed, it survives release */
    assert_int_equal(kv_pool_alloc(p, 1, ids), 0);
    assert_true(kv_pool_register(p, ids[0], h, KV_POOL_ROOT_HASH, toks, true));
    kv_pool_commit(p, ids[0]);
    assert_false(kv_pool_is_pending(p, ids[0]));
    kv_pool_free(p, ids, 1);
    assert_int_equal(kv_pool_lookup(p, h, KV_POOL_ROOT_HASH, toks), ids[0]);
    assert_int_equal(kv_pool_check(p), 0);
    kv_pool_destroy(p);
}

static void test_kv_pool_cache_off_registers_nothing(void **state)
{
    (void)state;
    struct kv_pool *p = pool_new(2, false);
    int32_t id, toks[BS];
    fill_tokens(toks, 9);
    assert_int_equal(kv_pool_alloc(p, 1, &id), 0);
    assert_false(kv_pool_register(p, id, 42, KV_POOL_ROOT_HASH, toks, false));
    kv_pool_free(p, &id, 1);
    assert_int_equal(kv_pool_n_cached_free(p), 0);
    kv_pool_destroy(p);
}

/* Random operations on a 64-block pool, many of them on hashes forced into one probe chain
 * (h = x << 32 | x lands every key in slot 0), checked against a model after every one. */
static void test_kv_pool_random_walk(void **state)
{
    (void)state;
    enum { N = 64, HELD = 48 };
    struct kv_pool *p = pool_new(N, true);
    uint32_t rng = 12345;
#define RAND() (rng = rng * 1664525u + 1013904223u, rng >> 8)
    int32_t held[HELD];
    int n_held = 0;
    int32_t ref_model[N] = { 0 };
    for (int iter = 0; iter < 20000; iter++) {
        uint32_t op = RAND() % 4;
        if (op == 0 && n_held < HELD) {
            int32_t n = 1 + (int32_t)(RAND() % 4);
            n = n_held + n > HELD ? HELD - n_held : n;
            int32_t free_before = kv_pool_n_free(p);
            int rc = kv_pool_alloc(p, n, held + n_held);
            if (n > free_before) {
                assert_int_equal(rc, -ENOSPC);
            } else {
                assert_int_equal(rc, 0);
                for (int32_t k = 0; k < n; k++) {
                    assert_int_equal(ref_model[held[n_held + k]], 0);
                    ref_model[held[n_held + k]] = 1;
                }
                n_held += n;
            }
        } else if (op == 1 && n_held > 0) {
            int i = (int)(RAND() % (uint32_t)n_held);
            int32_t id = held[i];
            kv_pool_free(p, &id, 1);
            ref_model[id]--;
            held[i] = held[--n_held];
        } else if (op == 2 && n_held > 0) {
            /* register a held block under a key drawn from a small set */
            int32_t id = held[RAND() % (uint32_t)n_held];
            uint32_t x = 1 + RAND() % 96;
            int32_t toks[BS];
            fill_tokens(toks, (int32_t)x);
            uint64_t h = RAND() % 2 ? ((uint64_t)x << 32) | x : kv_pool_hash(x, toks, BS);
            kv_pool_register(p, id, h, x, toks, RAND() % 8 == 0);
        } else if (op == 3) {
            /* look up a key and take a hit */
            uint32_t x = 1 + RAND() % 96;
            int32_t toks[BS];
            fill_tokens(toks, (int32_t)x);
            uint64_t h = RAND() % 2 ? ((uint64_t)x << 32) | x : kv_pool_hash(x, toks, BS);
            int32_t id = kv_pool_lookup(p, h, x, toks);
            if (id >= 0 && !kv_pool_is_pending(p, id) && n_held < HELD) {
                kv_pool_ref(p, id);
                ref_model[id]++;
                held[n_held++] = id;
            }
        }
        int32_t n_free = 0;
        for (int32_t id = 0; id < N; id++) {
            assert_int_equal(kv_pool_ref_count(p, id), ref_model[id]);
            n_free += ref_model[id] == 0;
        }
        assert_int_equal(kv_pool_n_free(p), n_free);
        assert_int_equal(kv_pool_check(p), 0);
    }
    kv_pool_free(p, held, n_held);
    assert_int_equal(kv_pool_n_free(p), N);
    assert_int_equal(kv_pool_check(p), 0);
#undef RAND
    kv_pool_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kv_pool_create_rejects_bad_sizes),
        cmocka_unit_test(test_kv_pool_alloc_fails_when_full),
        cmocka_unit_test(test_kv_pool_hash_chains_parent),
        cmocka_unit_test(test_kv_pool_hit_after_release_and_lru_eviction),
        cmocka_unit_test(test_kv_pool_lookup_verifies_tokens_and_parent),
        cmocka_unit_test(test_kv_pool_shared_block_ref_counts),
        cmocka_unit_test(test_kv_pool_pending_dropped_on_free),
        cmocka_unit_test(test_kv_pool_cache_off_registers_nothing),
        cmocka_unit_test(test_kv_pool_random_walk),
    };
    return cmocka_run_group_tests_name("kv_pool", tests, NULL, NULL);
}
