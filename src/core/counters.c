/*
 * counters.c - the cache's event counters. Counting is one relaxed atomic add on the hot path;
 * the cache's flusher takes the deltas and adds them to the shared totals in LMDB.
 */
#include "core/core.h"

const char *const sl__counter_names[SL_CTR__COUNT] = {
#define SL__CTR_NAME(id, name) [SL_CTR_##id] = name,
    SL_COUNTERS(SL__CTR_NAME)
#undef SL__CTR_NAME
};

void sl__counters_take(struct sl_counters *c, uint64_t out[SL_CTR__COUNT])
{
    for (int i = 0; i < SL_CTR__COUNT; i++) out[i] = atomic_exchange(&c->v[i], 0);
}

void sl__counters_give_back(struct sl_counters *c, const uint64_t in[SL_CTR__COUNT])
{
    for (int i = 0; i < SL_CTR__COUNT; i++) atomic_fetch_add(&c->v[i], in[i]);
}
