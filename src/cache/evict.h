/*
 * evict.h - eviction policies, written once for both tiers.
 *
 * A policy decides; a tier stores. Each tier (RAM: linked lists; disk: LMDB tables) implements
 * the small queue backend below, and the policies (LRU, S3-FIFO, epoch) are written against it
 * alone. A tier may hold pages of several policies at once (mounts choose their own): each
 * policy has its own queues, and the victim comes from the policy whose oldest page is oldest.
 */
#ifndef SL_EVICT_H
#define SL_EVICT_H

#include "core/core.h"

#define SL_PAGE_KEY_LEN 32

enum sl_queue {
    SL_Q_NONE = 0,
    SL_Q_LRU = 1,    /* lru: one queue, a hit moves the page to the tail */
    SL_Q_SMALL = 2,  /* s3fifo: new pages, 10% of the tier */
    SL_Q_MAIN = 3,   /* s3fifo: pages seen again, 2-bit clock */
    SL_Q_PINNED = 4, /* epoch: filled once, never evicted */
    SL_Q_GHOST = 5,  /* s3fifo: keys recently evicted from SMALL (no data) */
    SL_Q__COUNT
};

/* What a policy sees of one cached page. */
struct sl_evict_entry {
    uint8_t key[SL_PAGE_KEY_LEN];
    uint8_t queue;
    uint8_t freq;    /* S3-FIFO's access counter, 0..3 */
    uint64_t seq;    /* position in its queue: smaller is older */
    uint64_t charge; /* bytes it holds in the tier */
    void *handle;    /* the tier's own pointer to it */
};

struct sl_evict_backend {
    void *ctx;
    uint64_t capacity; /* bytes the tier may hold */
    /* The oldest entry of queue q that may be evicted now; -ENOENT when there is none. */
    int (*head)(void *ctx, int q, struct sl_evict_entry *e);
    /* Moves e to the tail of queue q (q may be e->queue: a reinsertion) with frequency freq. */
    int (*requeue)(void *ctx, struct sl_evict_entry *e, int q, uint8_t freq);
    int (*set_freq)(void *ctx, struct sl_evict_entry *e, uint8_t freq);
    uint64_t (*queue_bytes)(void *ctx, int q);
    /* Remembers a key evicted from SMALL; forgets the oldest beyond the size of MAIN. */
    int (*ghost_add)(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN]);
    /* True (and forgets it) if key is a ghost. */
    bool (*ghost_take)(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN]);
};

/* The queue a new page of policy pol enters. */
int sl__evict_queue_for_insert(const struct sl_evict_backend *be, enum sl_policy pol,
                               const uint8_t key[SL_PAGE_KEY_LEN]);

/* Records a hit on e. */
int sl__evict_hit(const struct sl_evict_backend *be, struct sl_evict_entry *e);

/* Chooses the next page to evict (moving others between queues as the policy says) and leaves
 * it in *victim, still stored: the tier removes it. -ENOENT when nothing can be evicted. */
int sl__evict_victim(const struct sl_evict_backend *be, struct sl_evict_entry *victim);

#endif /* SL_EVICT_H */
