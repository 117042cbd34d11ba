/*
 * mem.c - the RAM tier: a hash table of pages, their policy queues, and a ghost list, all under
 * one mutex (held for pointer work only; no I/O and no copying of page data under it).
 *
 * Budget: cache.memory bounds the READY pages the tier keeps. Pages in use (refs > 0) cannot be
 * freed, so the tier can be over budget by what readers hold at that instant; as soon as they
 * release them, the tier evicts back under its budget.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "cache/tier.h"

#include <xxhash.h>

static struct sl_mpage **bucket(struct sl_mem *mem, uint64_t hash)
{
    return &mem->buckets[hash & (mem->nbuckets - 1)];
}

static void q_unlink(struct sl_mem *mem, struct sl_mpage *mp)
{
    if (mp->queue == SL_Q_NONE) return;
    if (mp->qprev)
        mp->qprev->qnext = mp->qnext;
    else
        mem->q[mp->queue].head = mp->qnext;
    if (mp->qnext)
        mp->qnext->qprev = mp->qprev;
    else
        mem->q[mp->queue].tail = mp->qprev;
    mem->q[mp->queue].bytes -= mp->charge;
    mem->q[mp->queue].count--;
    mp->qprev = mp->qnext = NULL;
    mp->queue = SL_Q_NONE;
}

static void q_append(struct sl_mem *mem, struct sl_mpage *mp, int q)
{
    mp->queue = (uint8_t)q;
    mp->seq = ++mem->seq;
    mp->qnext = NULL;
    mp->qprev = mem->q[q].tail;
    if (mem->q[q].tail)
        mem->q[q].tail->qnext = mp;
    else
        mem->q[q].head = mp;
    mem->q[q].tail = mp;
    mem->q[q].bytes += mp->charge;
    mem->q[q].count++;
}

static void table_remove(struct sl_mem *mem, struct sl_mpage *mp)
{
    if (!mp->in_table) return;
    for (struct sl_mpage **p = bucket(mem, mp->hash); *p; p = &(*p)->hnext) {
        if (*p == mp) {
            *p = mp->hnext;
            break;
        }
    }
    mp->in_table = false;
    mem->count--;
    if (mp->state == SL_MP_READY) mem->bytes -= mp->charge;
    q_unlink(mem, mp);
}

/* Page buffers are mapped, not malloc'ed: freed, they go back to the system at once. From
 * malloc, buffers freed by one thread and allocated by another pile up in glibc's per-thread
 * arenas: with a thousand readers on a 64 MiB budget the process held 220 MiB of freed pages
 * (docs/internals/cache.md). Small buffers (the tails of files) stay with malloc. */
#define MAPPED_MIN (64U << 10)

static size_t mapped_len(size_t len)
{
    return (len + SL_BUF_ALIGN - 1) / SL_BUF_ALIGN * SL_BUF_ALIGN;
}

uint8_t *sl__mem_buf_alloc(struct sl_mem *mem, size_t len)
{
    if (len >= MAPPED_MIN) {
        size_t mlen = mapped_len(len);
        uint8_t *buf = NULL;
        pthread_mutex_lock(&mem->buf_lock);
        for (size_t i = mem->nspare; i-- > 0;) { /* the newest first: its bytes are warm */
            if (mem->spare[i].len != mlen) continue;
            buf = mem->spare[i].buf;
            mem->spare_bytes -= mlen;
            memmove(mem->spare + i, mem->spare + i + 1, (--mem->nspare - i) * sizeof(*mem->spare));
            break;
        }
        pthread_mutex_unlock(&mem->buf_lock);
        if (buf) return buf;
        /* Page-aligned, so the disk tier can write it straight (O_DIRECT). */
        void *m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return m == MAP_FAILED ? NULL : m;
    }
    /* Aligned to the block size, so the disk tier can write a page straight from its buffer
     * (O_DIRECT) without a copy into the kernel's page cache. */
    void *buf = NULL;
    return posix_memalign(&buf, SL_BUF_ALIGN, len ? len : 1) == 0 ? buf : NULL;
}

void sl__mem_buf_free(struct sl_mem *mem, uint8_t *buf, size_t len)
{
    if (!buf) return;
    if (len < MAPPED_MIN) {
        free(buf);
        return;
    }
    size_t mlen = mapped_len(len);
    uint8_t *drop = buf;
    pthread_mutex_lock(&mem->buf_lock);
    if (mlen <= mem->max_spare_bytes) {
        /* Full: the oldest spare makes room (a dataset of another size has come). */
        while (mem->nspare &&
               (mem->nspare == mem->max_spare || mem->spare_bytes + mlen > mem->max_spare_bytes)) {
            struct sl_spare old = mem->spare[0];
            memmove(mem->spare, mem->spare + 1, (mem->nspare - 1) * sizeof(*mem->spare));
            mem->nspare--;
            mem->spare_bytes -= old.len;
            pthread_mutex_unlock(&mem->buf_lock);
            munmap(old.buf, old.len);
            pthread_mutex_lock(&mem->buf_lock);
        }
        if (mem->nspare < mem->max_spare && mem->spare_bytes + mlen <= mem->max_spare_bytes) {
            mem->spare[mem->nspare++] = (struct sl_spare){buf, mlen};
            mem->spare_bytes += mlen;
            drop = NULL;
        }
    }
    pthread_mutex_unlock(&mem->buf_lock);
    if (drop) munmap(drop, mlen);
}

static void page_free(struct sl_mem *mem, struct sl_mpage *mp)
{
    sl__mem_buf_free(mem, mp->data, mp->len);
    free(mp);
}

/* ---- the backend the policies see ---- */

static void to_entry(struct sl_mpage *mp, struct sl_evict_entry *e)
{
    memcpy(e->key, mp->key, SL_PAGE_KEY_LEN);
    e->queue = mp->queue;
    e->freq = mp->freq;
    e->seq = mp->seq;
    e->charge = mp->charge;
    e->handle = mp;
}

/* The oldest page of q that nobody holds. Held pages met on the way go to the tail: they are
 * in use, the opposite of a victim, and must not make every later search walk past them again.
 * Each page is looked at most once per call, so a queue of held pages ends the search. */
static int be_head(void *ctx, int q, struct sl_evict_entry *e)
{
    struct sl_mem *mem = ctx;
    uint64_t n = mem->q[q].count;
    for (struct sl_mpage *mp = mem->q[q].head; mp && n > 0; n--) {
        if (mp->refs == 0) {
            to_entry(mp, e);
            return 0;
        }
        struct sl_mpage *next = mp->qnext;
        if (next) {
            uint8_t freq = mp->freq;
            q_unlink(mem, mp);
            mp->freq = freq;
            q_append(mem, mp, q);
        }
        mp = next;
    }
    return -ENOENT;
}

static int be_requeue(void *ctx, struct sl_evict_entry *e, int q, uint8_t freq)
{
    struct sl_mem *mem = ctx;
    struct sl_mpage *mp = e->handle;
    q_unlink(mem, mp);
    mp->freq = freq;
    q_append(mem, mp, q);
    to_entry(mp, e);
    return 0;
}

static int be_set_freq(void *ctx, struct sl_evict_entry *e, uint8_t freq)
{
    (void)ctx;
    ((struct sl_mpage *)e->handle)->freq = freq;
    e->freq = freq;
    return 0;
}

static uint64_t be_queue_bytes(void *ctx, int q)
{
    return ((struct sl_mem *)ctx)->q[q].bytes;
}

/* The ghost list is a table of (key hash, time of eviction) where time counts ghost insertions:
 * an entry is alive while fewer than |MAIN| ghosts were added after it (a FIFO of that length,
 * without the list). Eight probes per key, the oldest slot is overwritten. */
static uint64_t ghost_hash(const uint8_t key[SL_PAGE_KEY_LEN])
{
    /* The whole key: its first half is the same for every page of a file. */
    return XXH3_64bits(key, SL_PAGE_KEY_LEN) | 1; /* 0 marks an empty slot */
}

static bool ghost_alive(struct sl_mem *mem, uint64_t when)
{
    uint64_t limit = mem->q[SL_Q_MAIN].count ? mem->q[SL_Q_MAIN].count : 1;
    return mem->ghost_clock - when < limit;
}

static int be_ghost_add(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN])
{
    struct sl_mem *mem = ctx;
    uint64_t h = ghost_hash(key);
    size_t best = h & mem->ghost_mask;
    for (size_t i = 0; i < 8; i++) {
        size_t s = (h + i) & mem->ghost_mask;
        if (!mem->ghost[s].hash || !ghost_alive(mem, mem->ghost[s].when)) {
            best = s;
            break;
        }
        if (mem->ghost[s].when < mem->ghost[best].when) best = s;
    }
    mem->ghost[best].hash = h;
    mem->ghost[best].when = ++mem->ghost_clock;
    return 0;
}

static bool be_ghost_take(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN])
{
    struct sl_mem *mem = ctx;
    uint64_t h = ghost_hash(key);
    for (size_t i = 0; i < 8; i++) {
        size_t s = (h + i) & mem->ghost_mask;
        if (mem->ghost[s].hash == h && ghost_alive(mem, mem->ghost[s].when)) {
            mem->ghost[s].hash = 0;
            return true;
        }
    }
    return false;
}

int sl__mem_init(struct sl_mem *mem, uint64_t capacity, uint32_t page_size)
{
    memset(mem, 0, sizeof(*mem));
    mem->capacity = capacity;
    mem->nbuckets = 1024;
    mem->buckets = calloc(mem->nbuckets, sizeof(*mem->buckets));
    /* Room for about as many ghosts as pages fit in the tier (at least 4096). */
    size_t ghosts = 4096;
    while (ghosts < capacity / page_size * 2 && ghosts < (1U << 22)) ghosts *= 2;
    mem->ghost = calloc(ghosts, sizeof(*mem->ghost));
    mem->ghost_mask = ghosts - 1;
    mem->page_size = page_size;
    /* Spare buffers are memory too: a sixteenth of the budget at most, and 32 pages. */
    mem->max_spare_bytes = SL_MIN(32ULL * page_size, capacity / 16);
    mem->max_spare = 256;
    mem->spare = calloc(mem->max_spare, sizeof(*mem->spare));
    if (!mem->buckets || !mem->ghost || !mem->spare) {
        free(mem->buckets);
        free(mem->ghost);
        free(mem->spare);
        return -ENOMEM;
    }
    pthread_mutex_init(&mem->lock, NULL);
    pthread_mutex_init(&mem->buf_lock, NULL);
    pthread_cond_init(&mem->changed, NULL);
    mem->be = (struct sl_evict_backend){
        .ctx = mem,
        .capacity = capacity,
        .head = be_head,
        .requeue = be_requeue,
        .set_freq = be_set_freq,
        .queue_bytes = be_queue_bytes,
        .ghost_add = be_ghost_add,
        .ghost_take = be_ghost_take,
    };
    return 0;
}

void sl__mem_fini(struct sl_mem *mem)
{
    for (size_t i = 0; i < mem->nbuckets; i++) {
        struct sl_mpage *mp = mem->buckets[i];
        while (mp) {
            struct sl_mpage *next = mp->hnext;
            page_free(mem, mp);
            mp = next;
        }
    }
    free(mem->buckets);
    free(mem->ghost);
    for (size_t i = 0; i < mem->nspare; i++) munmap(mem->spare[i].buf, mem->spare[i].len);
    mem->nspare = 0;
    free(mem->spare);
    pthread_mutex_destroy(&mem->buf_lock);
    pthread_cond_destroy(&mem->changed);
    pthread_mutex_destroy(&mem->lock);
}

struct sl_mpage *sl__mem_find(struct sl_mem *mem, const uint8_t key[SL_PAGE_KEY_LEN], uint64_t hash)
{
    for (struct sl_mpage *mp = *bucket(mem, hash); mp; mp = mp->hnext)
        if (mp->hash == hash && memcmp(mp->key, key, SL_PAGE_KEY_LEN) == 0) return mp;
    return NULL;
}

static void grow(struct sl_mem *mem)
{
    size_t n = mem->nbuckets * 2;
    struct sl_mpage **b = calloc(n, sizeof(*b));
    if (!b) return; /* longer chains; still correct */
    for (size_t i = 0; i < mem->nbuckets; i++) {
        struct sl_mpage *mp = mem->buckets[i];
        while (mp) {
            struct sl_mpage *next = mp->hnext;
            mp->hnext = b[mp->hash & (n - 1)];
            b[mp->hash & (n - 1)] = mp;
            mp = next;
        }
    }
    free(mem->buckets);
    mem->buckets = b;
    mem->nbuckets = n;
}

struct sl_mpage *sl__mem_insert_loading(struct sl_mem *mem, const uint8_t key[SL_PAGE_KEY_LEN],
                                        uint64_t hash)
{
    struct sl_mpage *mp = calloc(1, sizeof(*mp));
    if (!mp) return NULL;
    memcpy(mp->key, key, SL_PAGE_KEY_LEN);
    mp->hash = hash;
    mp->state = SL_MP_LOADING;
    mp->refs = 1;
    mp->in_table = true;
    if (mem->count >= mem->nbuckets) grow(mem);
    struct sl_mpage **b = bucket(mem, hash);
    mp->hnext = *b;
    *b = mp;
    mem->count++;
    return mp;
}

static void evict_to_fit(struct sl_mem *mem)
{
    while (mem->bytes + mem->loading > mem->capacity) {
        struct sl_evict_entry e;
        if (sl__evict_victim(&mem->be, &e) < 0) return; /* all pinned: over budget for now */
        struct sl_mpage *mp = e.handle;
        table_remove(mem, mp);
        if (mp->refs == 0) page_free(mem, mp);
    }
}

bool sl__mem_loading_take(struct sl_mem *mem, uint64_t len)
{
    mem->loading += len;
    evict_to_fit(mem);
    if (mem->bytes + mem->loading <= mem->capacity) return true;
    mem->loading -= len;
    return false;
}

bool sl__mem_has_room(const struct sl_mem *mem, uint64_t len)
{
    return mem->bytes + mem->loading + len <= mem->capacity;
}

void sl__mem_loading_done(struct sl_mem *mem, uint64_t len)
{
    mem->loading -= len;
}

void sl__mem_set_ready(struct sl_mem *mem, struct sl_mpage *mp, uint8_t *data, size_t len,
                       enum sl_policy pol)
{
    mp->data = data;
    mp->len = len;
    mp->charge = len;
    mp->state = SL_MP_READY;
    if (mp->in_table) {
        mem->bytes += mp->charge;
        q_append(mem, mp, sl__evict_queue_for_insert(&mem->be, pol, mp->key));
        evict_to_fit(mem);
        /* Still over budget, a page that may not be evicted later (epoch) is read through:
         * it leaves at its last release (sl__mem_unref), not now. It is in use, and costs
         * its memory found or not; while it can be found, whoever comes for it (the reader
         * an order's hold keeps it for, another piece of a page being read) gets it instead
         * of fetching it from the store again. */
    }
    pthread_cond_broadcast(&mem->changed);
}

void sl__mem_set_failed(struct sl_mem *mem, struct sl_mpage *mp, int err)
{
    table_remove(mem, mp);
    mp->state = SL_MP_FAILED;
    mp->err = err;
    pthread_cond_broadcast(&mem->changed);
}

void sl__mem_hit(struct sl_mem *mem, struct sl_mpage *mp)
{
    if (mp->queue == SL_Q_NONE) return;
    struct sl_evict_entry e;
    to_entry(mp, &e);
    sl__evict_hit(&mem->be, &e);
}

void sl__mem_unref(struct sl_mem *mem, struct sl_mpage *mp)
{
    if (--mp->refs > 0) return;
    /* Over budget, an epoch page is read through (see sl__mem_set_ready). */
    bool through = mem->bytes > mem->capacity && mp->queue == SL_Q_PINNED;
    if ((mp->no_keep || through) && mp->state == SL_MP_READY) table_remove(mem, mp);
    if (!mp->in_table) {
        page_free(mem, mp);
        return;
    }
    if (mem->bytes > mem->capacity) evict_to_fit(mem);
}

void sl__mem_drop_prefix(struct sl_mem *mem, const uint8_t *prefix, size_t len)
{
    for (size_t i = 0; i < mem->nbuckets; i++) {
        struct sl_mpage *mp = mem->buckets[i];
        while (mp) {
            struct sl_mpage *next = mp->hnext;
            if (memcmp(mp->key, prefix, len) == 0 && mp->state == SL_MP_READY) {
                table_remove(mem, mp);
                if (mp->refs == 0) page_free(mem, mp);
            }
            mp = next;
        }
    }
}
