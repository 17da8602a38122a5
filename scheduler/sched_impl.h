/* sched_impl.h - internals of scheduler/, shared by its .c files and its unit tests only:
 * an intrusive list, the KV block manager with its prefix cache (kv_pool.c), and the
 * incremental detokenizer that produces completion text and finds stop strings (sched_text.c).
 * Everything here is single-threaded: it belongs to the engine thread that owns the scheduler. */
#ifndef SCHEDULER_SCHED_IMPL_H
#define SCHEDULER_SCHED_IMPL_H

#include "common/log.h"
#include "engine/tokenizer.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Invariant check that stays on in release builds: logs file and line, then aborts. */
#define SCHED_ASSERT(x)                                                                       \
    do {                                                                                      \
        if (!(x)) {                                                                           \
            log_write(LOG_LEVEL_ERROR, "sched", "assertion failed: %s (%s:%d)", #x, __FILE__, \
                      __LINE__);                                                              \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

#define SCHED_CONTAINER_OF(ptr, type, member) \
    ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* --- intrusive circular doubly linked list with a sentinel head ---------------------------- */

struct sched_link {
    struct sched_link *prev, *next;
};

static inline void sched_list_init(struct sched_link *head)
{
    head->prev = head->next = head;
}

static inline bool sched_list_empty(const struct sched_link *head)
{
    return head->next == head;
}

/* Inserts `node` after `pos` (pos may be the head: push front). */
static inline void sched_list_insert_after(struct sched_link *pos, struct sched_link *node)
{
    node->prev = pos;
    node->next = pos->next;
    pos->next->prev = node;
    pos->next = node;
}

static inline void sched_list_push_back(struct sched_link *head, struct sched_link *node)
{
    sched_list_insert_after(head->prev, node);
}

static inline void sched_list_remove(struct sched_link *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    node->prev = node->next = node;
}

/* --- KV block manager and prefix cache (kv_pool.c) ------------------------------------------ *
 *
 * A fixed pool of blocks with reference counts. A block whose tokens are all computed may be
 * registered in the prefix cache under the hash of its chain (parent block's hash, its tokens).
 * Blocks with ref 0 sit on one free list: uncached ones at the head, cached ones appended at the
 * tail in release order, so allocation takes uncached blocks first and then evicts the least
 * recently released cached block. A lookup that hits a cached block on the free list takes it
 * back (kv_pool_ref). The hash map is open addressing with linear probing, preallocated at twice
 * the block count, with backward-shift deletion. A hit compares the stored parent hash and
 * tokens, so a 64-bit hash collision can only alias two chains whose parents already collided.
 * Nothing allocates after kv_pool_create. */

struct kv_pool;

/* The hash of the first block of every chain uses this as its parent. */
#define KV_POOL_ROOT_HASH 0x6a09e667f3bcc909ull

/* Creates a pool of n_blocks blocks of block_size tokens; with enable_cache false every
 * register is refused, so nothing is ever cached. Returns 0, -EINVAL (sizes <= 0) or -ENOMEM.
 * Caller owns *out; free with kv_pool_destroy. */
int kv_pool_create(int32_t n_blocks, int32_t block_size, bool enable_cache, struct kv_pool **out);

/* No-op on NULL. */
void kv_pool_destroy(struct kv_pool *p);

/* The chained hash of one block: its parent's hash (KV_POOL_ROOT_HASH for the first block) and
 * its block_size tokens. Pure. */
uint64_t kv_pool_hash(uint64_t parent, const int32_t *tokens, int32_t n_tokens);

/* Takes n free blocks (uncached ones first, then the least recently released cached ones, whose
 * hashes are evicted) with ref 1 and writes their ids to ids[n]. Returns 0, or -ENOSPC when
 * fewer than n blocks are free (nothing taken). */
int kv_pool_alloc(struct kv_pool *p, int32_t n, int32_t *ids);

/* Adds a reference to a block, taking it off the free list when it had none (a cache hit). */
void kv_pool_ref(struct kv_pool *p, int32_t id);

/* Drops one reference from each of ids[n], last id first. A block left with no reference goes
 * to the tail of the free list when it is cached (so a sequence's tail blocks are evicted before
 * its head) and to the head otherwise; a pending (uncommitted) registration is dropped. */
void kv_pool_free(struct kv_pool *p, const int32_t *ids, int32_t n);

/* Finds the block cached under `hash` whose parent hash and tokens match. Returns its id, or -1.
 * The block may still be pending (see kv_pool_is_pending). */
int32_t kv_pool_lookup(const struct kv_pool *p, uint64_t hash, uint64_t parent,
                       const int32_t *tokens);

/* Registers block `id` (held, ref > 0) under `hash`, copying its parent hash and tokens.
 * `pending` marks a block whose K/V are being computed in the current step: lookups still find
 * it (so the caller can wait for it) but its content is not usable until kv_pool_commit.
 * Returns true when registered; false when the cache is off, the block is already registered,
 * or another block holds the hash (this one then stays uncached). */
bool kv_pool_register(struct kv_pool *p, int32_t id, uint64_t hash, uint64_t parent,
                      const int32_t *tokens, bool pending);

/* Marks a pending block computed. No-op on a block that is not pending. */
void kv_pool_commit(struct kv_pool *p, int32_t id);

/* True when the block is registered but not yet committed. */
bool kv_pool_is_pending(const struct kv_pool *p, int32_t id);

/* Counts: blocks with no reference (cached ones included), cached blocks with no reference,
 * and blocks registered in the cache (held or not). */
int32_t kv_pool_n_blocks(const struct kv_pool *p);
int32_t kv_pool_n_free(const struct kv_pool *p);
int32_t kv_pool_n_cached_free(const struct kv_pool *p);
int32_t kv_pool_n_registered(const struct kv_pool *p);

/* A block's reference count (tests and assertions). */
int32_t kv_pool_ref_count(const struct kv_pool *p, int32_t id);

/* Walks every structure and checks it against the others: free list links and counts, ref
 * counts, map entries. Returns 0 or -EPROTO. O(n_blocks); for tests. */
int kv_pool_check(const struct kv_pool *p);

/* --- incremental detokenizer (sched_text.c) ------------------------------------------------- *
 *
 * Produces the text tok_decode gives for a stream of ids, one id at a time, without allocating:
 * byte pieces are reassembled into UTF-8 as soon as a character is complete (or known to be
 * invalid, which gives U+FFFD exactly where tok_decode puts it), and the leading-space rule of
 * the first piece is applied as tok_decode does. A request's completion text is what the stream
 * emits after its prompt: decode(prompt + generated) minus decode(prompt), except that an
 * incomplete UTF-8 sequence at the end of the prompt is completed by the generated bytes rather
 * than replaced. */

/* Vocabulary facts the decoder needs, computed once per tokenizer. */
struct sched_text_vocab {
    const struct tok *tok;
    int32_t n_vocab;
    bool strip_leading_space;  /* the first piece's leading U+2581 is dropped */
    bool strip_repeated_space; /* ... and again after a first piece that was only U+2581 */
    char unk_surface[32];      /* the text of an UNKNOWN piece */
    size_t unk_surface_len;
    size_t max_piece_bytes; /* most bytes one id adds to a stream, at least 3 (U+FFFD) */
};

/* Derives the facts from the tokenizer's public API. Returns 0, or -EINVAL (vocabulary too
 * odd: an unknown piece's text longer than 31 bytes). Allocates only transiently. */
int sched_text_vocab_init(struct sched_text_vocab *v, const struct tok *t);

/* Most bytes a pending incomplete UTF-8 sequence can turn into (three U+FFFD). */
#define SCHED_TEXT_CARRY_BYTES 9

/* The decoder's state between ids. Plain data. */
struct sched_text_state {
    bool is_bos_ws;  /* still at the start of the text for the leading-space rule */
    bool has_bos_ws; /* the previous piece had its leading space dropped */
    bool any_output; /* some text has been emitted since the start of the stream */
    uint8_t n_pending;
    uint8_t pending[4]; /* bytes of an incomplete UTF-8 sequence from byte pieces (<= 3) */
};

void sched_text_state_init(struct sched_text_state *st);

/* Feeds one id and appends its text (if any) at out + *len, advancing *len. A stream that
 * starts from a prompt's state emits at most SCHED_TEXT_CARRY_BYTES plus v->max_piece_bytes per
 * id fed, the final flush included, so the caller sizes out once. Pass out NULL to
 * only advance the state (a prompt). An id outside the tokenizer's vocabulary (a model padded
 * past it) emits nothing, like a control piece. */
void sched_text_feed(const struct sched_text_vocab *v, struct sched_text_state *st, int32_t id,
                     char *out, size_t *len);

/* Ends the stream: emits what is left of an incomplete UTF-8 sequence (as U+FFFD) at
 * out + *len. */
void sched_text_flush(struct sched_text_state *st, char *out, size_t *len);

/* --- scheduler self-check (sched.c) --------------------------------------------------------- */

struct sched;

/* Checks the scheduler's structures against each other: the block manager (kv_pool_check), each
 * block's reference count against the running requests' block tables, list lengths against the
 * counters. Returns 0 or -EPROTO (logged). Allocates; for tests, between steps. */
int sched_check(const struct sched *s);

#endif
