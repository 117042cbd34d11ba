/*
 * cache.c - the tiered page cache: RAM over disk over the store.
 *
 * A page is named by its key: hash(object id) | hash(version, page size) | page index, 32
 * bytes. A changed object has a new version and so new keys: old pages can never be served for
 * it (they age out, or `free` drops every version at once, the pages of a file being adjacent
 * in the index).
 *
 * sl__cache_get() is single flight: the first caller for a page inserts it into the RAM tier
 * as LOADING and fetches it (disk first, then store) without holding the lock; later callers
 * find it there and wait. A page fetched from the store is written to disk by the thread that
 * fetched it, after the waiters have been woken, so readers never wait for the cache disk.
 *
 * What is counted: a miss per page fetched from a store; a hit per page a reader got without a
 * store fetch on its behalf. A page read ahead from the store is its miss; the reader who then
 * reads it counts nothing more. So hits + misses = pages read, and a second read of a file
 * counts only hits.
 *
 * Hits on disk pages also feed the disk tier's policy (LRU order, S3-FIFO frequency). Those
 * updates and the counters are batched and written by a flusher thread four times a second:
 * other processes see this one's figures within a second, and the hot path never waits for an
 * LMDB write.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/cache.h"
#include "cache/tier.h"

#define FLUSH_INTERVAL_NS (250ULL * 1000000ULL)
#define SYNC_INTERVAL_NS (1000ULL * 1000000ULL)
#define MAX_PENDING_HITS 65536

_Static_assert(SL_PREFETCH_MAX_PAGES <= SL_DISK_RUN_MAX, "a prefetched run is one disk run");

struct sl_cache {
    uint32_t page_size;
    uint64_t capacity;
    struct sl_mem mem;
    struct sl_disk *disk; /* NULL: RAM only */
    struct sl_counters *ctr;

    pthread_mutex_t hits_lock; /* guards hits, nhits */
    uint8_t (*hits)[SL_PAGE_KEY_LEN];
    size_t nhits;

    pthread_mutex_t flush_lock; /* guards stopping; serialises flushes */
    pthread_cond_t flush_wake;
    bool stopping;
    bool flusher_started;
    pthread_t flusher;
};

void sl__object_ids(struct sl_object *o, const char *object_id, uint32_t page_size)
{
    sl__hash128(object_id, o->file_id);
    const char *v = o->version ? o->version : "";
    o->version_id = XXH3_64bits_withSeed(v, strlen(v), page_size);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* The first 24 bytes of every key of this version of o. */
static void version_prefix(const struct sl_object *o, uint8_t prefix[24])
{
    memcpy(prefix, o->file_id, 16);
    put_be64(prefix + 16, o->version_id);
}

/* Big-endian numbers, so that the pages of a version sort in order in the index. */
static void make_key(const struct sl_object *o, uint64_t index, uint8_t key[SL_PAGE_KEY_LEN])
{
    version_prefix(o, key);
    put_be64(key + 24, index);
}

static void note_disk_hit(struct sl_cache *c, const uint8_t key[SL_PAGE_KEY_LEN])
{
    if (!c->disk) return;
    pthread_mutex_lock(&c->hits_lock);
    /* Beyond the bound, a hit's only loss is a little recency information. */
    if (c->nhits < MAX_PENDING_HITS &&
        (c->nhits == 0 || memcmp(c->hits[c->nhits - 1], key, SL_PAGE_KEY_LEN) != 0))
        memcpy(c->hits[c->nhits++], key, SL_PAGE_KEY_LEN);
    pthread_mutex_unlock(&c->hits_lock);
}

void sl__cache_flush(struct sl_cache *c)
{
    uint64_t deltas[SL_CTR__COUNT];
    bool any = false;

    if (!c->disk) return;
    pthread_mutex_lock(&c->flush_lock);
    sl__counters_take(c->ctr, deltas);
    for (int i = 0; i < SL_CTR__COUNT; i++) any |= deltas[i] != 0;

    pthread_mutex_lock(&c->hits_lock);
    size_t n = c->nhits;
    uint8_t(*hits)[SL_PAGE_KEY_LEN] = NULL;
    if (n && (hits = malloc(n * SL_PAGE_KEY_LEN))) memcpy(hits, c->hits, n * SL_PAGE_KEY_LEN);
    c->nhits = 0;
    pthread_mutex_unlock(&c->hits_lock);

    if ((any || hits) && sl__disk_apply(c->disk, deltas, (const uint8_t(*)[SL_PAGE_KEY_LEN])hits,
                                        hits ? n : 0) < 0)
        sl__counters_give_back(c->ctr, deltas); /* try again next time */
    free(hits);
    pthread_mutex_unlock(&c->flush_lock);
}

static void *flusher_main(void *arg)
{
    struct sl_cache *c = arg;
    uint64_t last_sync = sl__mono_ns();

    pthread_mutex_lock(&c->flush_lock);
    while (!c->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)FLUSH_INTERVAL_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->flush_wake, &c->flush_lock, &ts);
        if (c->stopping) break;
        pthread_mutex_unlock(&c->flush_lock);
        sl__cache_flush(c);
        if (sl__mono_ns() - last_sync >= SYNC_INTERVAL_NS) {
            sl__disk_sync(c->disk);
            last_sync = sl__mono_ns();
        }
        pthread_mutex_lock(&c->flush_lock);
    }
    pthread_mutex_unlock(&c->flush_lock);
    return NULL;
}

int sl__cache_open(const struct sl_config *cfg, struct sl_counters *ctr, struct sl_cache **out)
{
    struct sl_cache *c = calloc(1, sizeof(*c));
    int rc;

    if (!c) return -ENOMEM;
    c->page_size = cfg->page_size;
    c->capacity = cfg->cache_size;
    c->ctr = ctr;
    pthread_mutex_init(&c->hits_lock, NULL);
    pthread_mutex_init(&c->flush_lock, NULL);
    pthread_cond_init(&c->flush_wake, NULL);
    if ((rc = sl__mem_init(&c->mem, cfg->cache_memory, cfg->page_size)) < 0) {
        free(c);
        return rc;
    }

    rc = sl__disk_open(cfg->cache_dir, cfg->cache_size, ctr, &c->disk);
    if (rc == SL_E_CORRUPT || rc == -ENOMEM) {
        sl__cache_close(c);
        return sl__err_ctx(rc, cfg->cache_dir);
    }
    if (rc < 0) {
        sl__warn("cache %s: %s; reading through from the stores without a disk cache "
                 "(set cache.dir to a writable directory)", cfg->cache_dir, sl_strerror(rc));
        c->disk = NULL;
    }
    if (c->disk) {
        c->hits = malloc(MAX_PENDING_HITS * SL_PAGE_KEY_LEN);
        if (!c->hits || pthread_create(&c->flusher, NULL, flusher_main, c) != 0) {
            sl__cache_close(c);
            return -ENOMEM;
        }
        c->flusher_started = true;
    }
    *out = c;
    return 0;
}

void sl__cache_close(struct sl_cache *c)
{
    if (!c) return;
    if (c->flusher_started) {
        pthread_mutex_lock(&c->flush_lock);
        c->stopping = true;
        pthread_cond_signal(&c->flush_wake);
        pthread_mutex_unlock(&c->flush_lock);
        pthread_join(c->flusher, NULL);
    }
    sl__cache_flush(c);
    sl__disk_close(c->disk);
    sl__mem_fini(&c->mem);
    free(c->hits);
    pthread_cond_destroy(&c->flush_wake);
    pthread_mutex_destroy(&c->flush_lock);
    pthread_mutex_destroy(&c->hits_lock);
    free(c);
}

uint32_t sl__cache_page_size(const struct sl_cache *c)
{
    return c->page_size;
}

struct sl_db *sl__cache_db(struct sl_cache *c)
{
    return sl__disk_db(c->disk);
}

struct sl_disk *sl__cache_disk(struct sl_cache *c)
{
    return c->disk;
}

/* Disk, then store. *from_store says which. */
static int load(struct sl_cache *c, const struct sl_object *o, const uint8_t key[SL_PAGE_KEY_LEN],
                uint64_t off, size_t len, uint8_t **out, bool *from_store)
{
    uint8_t *data = sl__mem_buf_alloc(&c->mem, len);
    size_t n = 0;
    int rc;

    if (!data) return -ENOMEM;
    if (c->disk && sl__disk_read(c->disk, key, data, len) == 0) {
        *from_store = false;
        *out = data;
        return 0;
    }
    rc = sl__ufs_read(o->ufs, o->rel, o->version, off, data, len, &n);
    if (rc == 0 && n != len) rc = SL_E_CHANGED; /* shorter than the version we pinned */
    if (rc < 0) {
        sl__mem_buf_free(&c->mem, data, len);
        return rc;
    }
    sl__count(c->ctr, SL_CTR_MISSES, 1);
    *from_store = true;
    *out = data;
    return 0;
}

/* Writes a page fetched from the store to disk. A tier that is full of pinned (epoch) pages
 * refuses it; if some of them are pages of this object's old versions, which can never be
 * served again, they give way. */
static void insert(struct sl_cache *c, const struct sl_object *o,
                   const uint8_t (*keys)[SL_PAGE_KEY_LEN], const struct iovec *pages, size_t n)
{
    int rc = sl__disk_insert_run(c->disk, keys, o->policy, pages, n);
    if (rc == SL_E_CACHE_FULL && sl__cache_drop_other_versions(c, o) > 0)
        sl__disk_insert_run(c->disk, keys, o->policy, pages, n);
}

/* An access to a READY page (mem lock held): true if it counts as a hit. The last access
 * decides whether the page stays in RAM: a stream that consumed a page read ahead for it lets
 * it go (its buffer is recycled for the next page); any other reader keeps it. */
static bool access_page(struct sl_cache *c, struct sl_mpage *mp, unsigned flags)
{
    if (flags & SL_GET_PREFETCH) {
        /* A read-ahead keeps what a warm-up would drop; a hold leaves it to the reader (one
         * who has read the page already may have let it go). */
        if (!(flags & (SL_GET_NO_RAM | SL_GET_HOLD))) mp->no_keep = false;
        return false;
    }
    mp->no_keep = (flags & SL_GET_NO_RAM) != 0;
    sl__mem_hit(&c->mem, mp);
    if (mp->fresh) {
        mp->fresh = false; /* its miss was counted when it was fetched */
        return false;
    }
    return !(flags & SL_GET_AGAIN);
}

/* Brings page index of o, LOADING in RAM as mp (our reference), in from disk or the store,
 * wakes its waiters, and writes a page from the store to disk. On failure the page is FAILED
 * and our reference dropped; on success it is READY, still ours, and *hit says whether this
 * access counts as a hit. */
static int fill(struct sl_cache *c, const struct sl_object *o, uint64_t index,
                struct sl_mpage *mp, const uint8_t key[SL_PAGE_KEY_LEN], unsigned flags,
                bool *hit)
{
    uint64_t off = index * c->page_size;
    size_t len = (size_t)SL_MIN((uint64_t)c->page_size, o->size - off);
    uint8_t *data = NULL;
    bool from_store = false;
    int rc = load(c, o, key, off, len, &data, &from_store);

    pthread_mutex_lock(&c->mem.lock);
    if (rc < 0) {
        sl__mem_set_failed(&c->mem, mp, rc);
        sl__mem_unref(&c->mem, mp);
        pthread_mutex_unlock(&c->mem.lock);
        return rc;
    }
    sl__mem_set_ready(&c->mem, mp, data, len, o->policy);
    mp->fresh = from_store;
    *hit = access_page(c, mp, flags);
    pthread_mutex_unlock(&c->mem.lock);

    /* The page is pinned by us and immutable: write it down without holding anyone up. */
    if (from_store && c->disk) {
        struct iovec page = {data, len};
        insert(c, o, (const uint8_t(*)[SL_PAGE_KEY_LEN])key, &page, 1);
    }
    return 0;
}

int sl__cache_get(struct sl_cache *c, const struct sl_object *o, uint64_t index, unsigned flags,
                  struct sl_page_ref *ref)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    uint64_t off = index * c->page_size;
    struct sl_mpage *mp;
    bool hit;

    if (off >= o->size) return -EINVAL;
    size_t len = (size_t)SL_MIN((uint64_t)c->page_size, o->size - off);
    make_key(o, index, key);
    uint64_t hash = XXH3_64bits(key, sizeof(key));
    ref->fd = -1;

    bool retried = false, try_fd = (flags & SL_GET_FD) && c->disk;
    pthread_mutex_lock(&c->mem.lock);
again:
    mp = sl__mem_find(&c->mem, key, hash);
    if (!mp && try_fd && !sl__mem_has_room(&c->mem, len)) {
        /* On disk, not in RAM, and RAM is full: the reader's file system reads just what it
         * needs from the page file, instead of the whole page pushing another out of RAM
         * (where a random reader's pages churn through the policy's probation queue before
         * their next read). The kernel keeps the page file's bytes it read in its page cache,
         * so a hot page read this way is read from memory all the same. While RAM has room,
         * a page comes into it: the next reads of it are hits. */
        try_fd = false;
        pthread_mutex_unlock(&c->mem.lock);
        if (sl__disk_hold(c->disk, key, len, &ref->fd, &ref->fd_off) == 0) {
            if (!(flags & (SL_GET_PREFETCH | SL_GET_AGAIN))) {
                sl__count(c->ctr, SL_CTR_HITS, 1);
                note_disk_hit(c, key);
            }
            ref->page = NULL;
            ref->data = NULL;
            ref->len = len;
            return 0;
        }
        pthread_mutex_lock(&c->mem.lock);
        goto again;
    }
    if (mp) {
        mp->refs++;
        while (mp->state == SL_MP_LOADING) pthread_cond_wait(&c->mem.changed, &c->mem.lock);
        if (mp->state == SL_MP_FAILED) {
            int rc = mp->err;
            bool ahead = mp->ahead;
            sl__mem_unref(&c->mem, mp);
            /* A read-ahead failed on another thread: fetch it here, where an error can be
             * reported with its detail (and a passing fault may be gone). Once. */
            if (ahead && !retried && !(flags & SL_GET_PREFETCH)) {
                retried = true;
                goto again;
            }
            pthread_mutex_unlock(&c->mem.lock);
            return rc;
        }
        hit = access_page(c, mp, flags);
        pthread_mutex_unlock(&c->mem.lock);
    } else {
        mp = sl__mem_insert_loading(&c->mem, key, hash);
        if (!mp) {
            pthread_mutex_unlock(&c->mem.lock);
            return -ENOMEM;
        }
        mp->no_keep = (flags & SL_GET_NO_RAM) != 0;
        pthread_mutex_unlock(&c->mem.lock);
        int rc = fill(c, o, index, mp, key, flags, &hit);
        if (rc < 0) return rc;
    }
    if (hit) {
        sl__count(c->ctr, SL_CTR_HITS, 1);
        note_disk_hit(c, key);
    }
    ref->page = mp;
    ref->data = mp->data;
    ref->len = mp->len;
    return 0;
}

/* Fetches pages [first, first + n) of o, already LOADING in RAM as mps[], with one store
 * read; wakes their waiters, then writes them to disk. Drops our references, or on success
 * hands them over as holds[] when that is not NULL. */
static void fetch_run(struct sl_cache *c, const struct sl_object *o, uint64_t first, unsigned n,
                      struct sl_mpage **mps, const uint8_t (*keys)[SL_PAGE_KEY_LEN],
                      struct sl_page_ref *holds)
{
    struct iovec iov[SL_PREFETCH_MAX_PAGES];
    size_t total = 0, got = 0;
    int rc = 0;

    for (unsigned i = 0; i < n; i++) {
        uint64_t off = (first + i) * c->page_size;
        iov[i].iov_len = (size_t)SL_MIN((uint64_t)c->page_size, o->size - off);
        iov[i].iov_base = NULL;
        total += iov[i].iov_len;
    }
    /* The run's buffers come out of cache.memory, as the pages they become do: with many
     * streams at once, read-ahead gives way (its pages fail, and their readers fetch them
     * themselves) before memory grows past the budget. */
    pthread_mutex_lock(&c->mem.lock);
    bool budget = sl__mem_loading_take(&c->mem, total);
    pthread_mutex_unlock(&c->mem.lock);
    for (unsigned i = 0; i < n && budget; i++)
        if (!(iov[i].iov_base = sl__mem_buf_alloc(&c->mem, iov[i].iov_len))) rc = -ENOMEM;
    if (!budget) rc = -ENOMEM;
    if (rc == 0)
        rc = sl__ufs_readv(o->ufs, o->rel, o->version, first * c->page_size, iov, (int)n, &got);
    if (rc == 0 && got != total) rc = SL_E_CHANGED; /* shorter than the version we pinned */

    pthread_mutex_lock(&c->mem.lock);
    if (budget) sl__mem_loading_done(&c->mem, total); /* charged as READY pages from here */
    for (unsigned i = 0; i < n; i++) {
        if (rc < 0) {
            sl__mem_set_failed(&c->mem, mps[i], rc);
            sl__mem_unref(&c->mem, mps[i]);
            continue;
        }
        sl__mem_set_ready(&c->mem, mps[i], iov[i].iov_base, iov[i].iov_len, o->policy);
        mps[i]->fresh = true;
        access_page(c, mps[i], SL_GET_PREFETCH);
    }
    pthread_mutex_unlock(&c->mem.lock);
    if (rc < 0) {
        for (unsigned i = 0; i < n; i++) sl__mem_buf_free(&c->mem, iov[i].iov_base, iov[i].iov_len);
        return;
    }
    sl__count(c->ctr, SL_CTR_MISSES, n);

    /* Pinned by us and immutable: written down without holding any reader up. */
    if (c->disk) insert(c, o, keys, iov, n);
    if (holds) {
        for (unsigned i = 0; i < n; i++)
            holds[i] = (struct sl_page_ref){.page = mps[i], .data = mps[i]->data,
                                            .len = mps[i]->len, .fd = -1};
        return;
    }
    pthread_mutex_lock(&c->mem.lock);
    for (unsigned i = 0; i < n; i++) sl__mem_unref(&c->mem, mps[i]);
    pthread_mutex_unlock(&c->mem.lock);
}

bool sl__cache_claim(struct sl_cache *c, const struct sl_object *o, uint64_t first, unsigned n,
                     struct sl_prefetch *pf)
{
    uint64_t npages = o->size / c->page_size + (o->size % c->page_size != 0);
    bool work = false;

    pf->first = first;
    pf->n = first >= npages ? 0 : (unsigned)SL_MIN((uint64_t)SL_MIN(n, SL_PREFETCH_MAX_PAGES),
                                                   npages - first);
    for (unsigned i = 0; i < pf->n; i++) {
        make_key(o, first + i, pf->keys[i]);
        /* Looked up before taking the RAM tier's lock: no index reads under it. */
        pf->on_disk[i] = c->disk && sl__disk_contains(c->disk, pf->keys[i]);
        pf->mine[i] = false;
    }

    pthread_mutex_lock(&c->mem.lock);
    for (unsigned i = 0; i < pf->n; i++) {
        uint64_t hash = XXH3_64bits(pf->keys[i], SL_PAGE_KEY_LEN);
        if (sl__mem_find(&c->mem, pf->keys[i], hash)) {
            pf->on_disk[i] = false; /* in RAM already, or being fetched by someone else */
            continue;
        }
        if (!pf->on_disk[i]) {
            pf->mps[i] = sl__mem_insert_loading(&c->mem, pf->keys[i], hash);
            pf->mine[i] = pf->mps[i] != NULL;
            if (pf->mine[i]) pf->mps[i]->ahead = true;
        }
        work |= pf->mine[i] || pf->on_disk[i];
    }
    pthread_mutex_unlock(&c->mem.lock);
    return work;
}

void sl__cache_prefetch(struct sl_cache *c, const struct sl_object *o, struct sl_prefetch *pf,
                        struct sl_page_ref *holds)
{
    for (unsigned i = 0; i < pf->n;) {
        if (!pf->mine[i]) {
            struct sl_page_ref ref = {.fd = -1};
            bool get = pf->on_disk[i] || holds;
            unsigned flags = SL_GET_PREFETCH | (holds ? SL_GET_HOLD : 0);
            if (get && sl__cache_get(c, o, pf->first + i, flags, &ref) < 0) ref.page = NULL;
            if (holds)
                holds[i] = ref;
            else if (get)
                sl__cache_release(c, &ref);
            i++;
            continue;
        }
        /* Not on disk when claimed, but a reader may have fetched it between that look and
         * the claim (its page left RAM, for a stream, once it was on disk). Looked at again
         * now that our LOADING page stands in RAM: nobody fetches it behind our back any
         * more, so what is not on disk now is truly the store's. */
        if (c->disk && sl__disk_contains(c->disk, pf->keys[i])) {
            bool hit;
            unsigned flags = SL_GET_PREFETCH | (holds ? SL_GET_HOLD : 0);
            int rc = fill(c, o, pf->first + i, pf->mps[i], pf->keys[i], flags, &hit);
            struct sl_mpage *mp = pf->mps[i];
            struct sl_page_ref ref = {.fd = -1};
            if (rc == 0) ref = (struct sl_page_ref){.page = mp, .data = mp->data, .len = mp->len,
                                                    .fd = -1};
            if (holds)
                holds[i] = ref;
            else
                sl__cache_release(c, &ref);
            i++;
            continue;
        }
        unsigned run = 1;
        while (i + run < pf->n && pf->mine[i + run] &&
               !(c->disk && sl__disk_contains(c->disk, pf->keys[i + run])))
            run++;
        if (holds) memset(holds + i, 0, run * sizeof(*holds));
        fetch_run(c, o, pf->first + i, run, pf->mps + i,
                  (const uint8_t(*)[SL_PAGE_KEY_LEN])pf->keys + i, holds ? holds + i : NULL);
        i += run;
    }
}

void sl__cache_release(struct sl_cache *c, struct sl_page_ref *ref)
{
    if (ref->fd >= 0) close(ref->fd); /* and with it the hold on the page */
    ref->fd = -1;
    if (!ref->page) return;
    pthread_mutex_lock(&c->mem.lock);
    sl__mem_unref(&c->mem, ref->page);
    pthread_mutex_unlock(&c->mem.lock);
    ref->page = NULL;
    ref->data = NULL;
}

bool sl__cache_on_disk(struct sl_cache *c, const struct sl_object *o, uint64_t index)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    if (!c->disk) return false;
    make_key(o, index, key);
    return sl__disk_contains(c->disk, key);
}

int sl__cache_hold_on_disk(struct sl_cache *c, const struct sl_object *o, uint64_t index,
                           struct sl_page_ref *ref)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    uint64_t off = index * c->page_size;
    *ref = (struct sl_page_ref){.fd = -1};
    if (!c->disk || off >= o->size) return -ENOENT;
    size_t len = (size_t)SL_MIN((uint64_t)c->page_size, o->size - off);
    make_key(o, index, key);
    int rc = sl__disk_hold(c->disk, key, len, &ref->fd, &ref->fd_off);
    if (rc < 0) return rc;
    /* Advice only: a kernel that ignores it leaves the read to the reader. */
    (void)posix_fadvise(ref->fd, (off_t)ref->fd_off, (off_t)len, POSIX_FADV_WILLNEED);
    ref->len = len;
    return 0;
}

int sl__cache_free_object(struct sl_cache *c, const uint8_t file_id[16], uint64_t *freed)
{
    pthread_mutex_lock(&c->mem.lock);
    sl__mem_drop_prefix(&c->mem, file_id, 16);
    pthread_mutex_unlock(&c->mem.lock);
    *freed = 0;
    return c->disk ? sl__disk_free_prefix(c->disk, file_id, 16, freed) : 0;
}

int sl__cache_drop_other_versions(struct sl_cache *c, const struct sl_object *o)
{
    uint8_t keep[24];
    if (!c->disk) return 0;
    version_prefix(o, keep);
    return sl__disk_free_other_versions(c->disk, keep);
}

int sl__cache_cached_bytes(struct sl_cache *c, const struct sl_object *o, uint64_t *bytes)
{
    uint8_t prefix[24];
    *bytes = 0;
    if (!c->disk) return 0;
    version_prefix(o, prefix);
    return sl__disk_sum_prefix(c->disk, prefix, sizeof(prefix), bytes);
}

int sl__cache_stats(struct sl_cache *c, sl_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->capacity_bytes = c->capacity;
    /* A flush moves counts from the atomics to the index: never read between the two. */
    pthread_mutex_lock(&c->flush_lock);
    if (c->disk) {
        int rc = sl__disk_stats(c->disk, out);
        if (rc < 0) {
            pthread_mutex_unlock(&c->flush_lock);
            return rc;
        }
    }
    /* Plus what this process counted and has not flushed yet. */
    uint64_t *fields[SL_CTR__COUNT] = {
        [SL_CTR_HITS] = &out->hits,
        [SL_CTR_MISSES] = &out->misses,
        [SL_CTR_UFS_BYTES_READ] = &out->ufs_bytes_read,
        [SL_CTR_UFS_REQUESTS] = &out->ufs_requests,
        [SL_CTR_EVICTIONS] = &out->evictions,
        [SL_CTR_CHECKSUM_FAILURES] = &out->checksum_failures,
    };
    for (int i = 0; i < SL_CTR__COUNT; i++) *fields[i] += atomic_load(&c->ctr->v[i]);
    pthread_mutex_unlock(&c->flush_lock);
    return 0;
}

int sl__cache_stats_reset(struct sl_cache *c)
{
    uint64_t dropped[SL_CTR__COUNT];
    pthread_mutex_lock(&c->flush_lock);
    sl__counters_take(c->ctr, dropped);
    int rc = c->disk ? sl__disk_reset_counters(c->disk) : 0;
    pthread_mutex_unlock(&c->flush_lock);
    return rc;
}
