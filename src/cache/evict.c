/*
 * evict.c - LRU, S3-FIFO and epoch, over the queue backend of evict.h.
 *
 * LRU: one queue; a hit moves the page to the tail; the head is the victim. It is the baseline,
 * and the policy that fails training: an epoch that reads every sample once, in a new order,
 * evicts exactly what the next epoch will want first.
 *
 * S3-FIFO (Yang et al., SOSP 2023): a small FIFO S (10% of the tier) takes new pages, a main
 * FIFO M the rest, and a ghost list G remembers keys recently evicted from S.
 *   insert:  key in G ? M : S                       (freq = 0)
 *   hit:     freq = min(freq + 1, 3)                 (no queue movement: cheap on the hot path)
 *   evict:   if |S| >= 10% or M is empty:
 *              head of S: freq > 0 ? move to M (freq 0) : evict it, remember it in G
 *            else head of M: freq > 0 ? reinsert at M's tail with freq - 1 : evict it
 * One-hit wonders (a scan, a single epoch's pass) leave through S without disturbing M.
 *
 * Epoch: pages are pinned (filled once, never evicted) until freed or their object changes;
 * when the tier is full of them, new pages are read through without being cached. With every
 * sample read once per epoch in a new order, that keeps the hit rate at cache / dataset, the
 * best any policy can do.
 */
#include "cache/evict.h"

#define S3FIFO_SMALL_PERCENT 10

int sl__evict_queue_for_insert(const struct sl_evict_backend *be, enum sl_policy pol,
                               const uint8_t key[SL_PAGE_KEY_LEN])
{
    switch (pol) {
    case SL_POLICY_LRU:
        return SL_Q_LRU;
    case SL_POLICY_EPOCH:
        return SL_Q_PINNED;
    default:
        return be->ghost_take(be->ctx, key) ? SL_Q_MAIN : SL_Q_SMALL;
    }
}

int sl__evict_hit(const struct sl_evict_backend *be, struct sl_evict_entry *e)
{
    switch (e->queue) {
    case SL_Q_LRU:
        return be->requeue(be->ctx, e, SL_Q_LRU, 0);
    case SL_Q_SMALL:
    case SL_Q_MAIN:
        if (e->freq >= 3) return 0;
        return be->set_freq(be->ctx, e, (uint8_t)(e->freq + 1));
    default:
        return 0;
    }
}

static int s3fifo_victim(const struct sl_evict_backend *be, struct sl_evict_entry *victim)
{
    /* Each step moves a page S -> M or lowers a frequency, so this ends; the bound only guards
     * against a backend that does not do what it says. */
    for (int steps = 0; steps < 100000; steps++) {
        struct sl_evict_entry m, s;
        bool have_main = be->head(be->ctx, SL_Q_MAIN, &m) == 0;
        bool small_big = be->queue_bytes(be->ctx, SL_Q_SMALL) * 100 >=
                         be->capacity * S3FIFO_SMALL_PERCENT;
        int rc;

        if ((small_big || !have_main) && be->head(be->ctx, SL_Q_SMALL, &s) == 0) {
            if (s.freq > 0) {
                if ((rc = be->requeue(be->ctx, &s, SL_Q_MAIN, 0)) < 0) return rc;
                continue;
            }
            if ((rc = be->ghost_add(be->ctx, s.key)) < 0) return rc;
            *victim = s;
            return 0;
        }
        if (!have_main) return -ENOENT;
        if (m.freq > 0) {
            if ((rc = be->requeue(be->ctx, &m, SL_Q_MAIN, (uint8_t)(m.freq - 1))) < 0) return rc;
            continue;
        }
        *victim = m;
        return 0;
    }
    return be->head(be->ctx, SL_Q_MAIN, victim);
}

int sl__evict_victim(const struct sl_evict_backend *be, struct sl_evict_entry *victim)
{
    struct sl_evict_entry lru, small, main;
    bool has_lru = be->head(be->ctx, SL_Q_LRU, &lru) == 0;
    bool has_small = be->head(be->ctx, SL_Q_SMALL, &small) == 0;
    bool has_main = be->head(be->ctx, SL_Q_MAIN, &main) == 0;

    if (!has_small && !has_main) {
        if (!has_lru) return -ENOENT;
        *victim = lru;
        return 0;
    }
    /* Both policies hold pages: the one whose oldest page is older gives up a page. */
    if (has_lru) {
        uint64_t s3_oldest = has_small && (!has_main || small.seq < main.seq) ? small.seq
                                                                               : main.seq;
        if (lru.seq < s3_oldest) {
            *victim = lru;
            return 0;
        }
    }
    return s3fifo_victim(be, victim);
}
