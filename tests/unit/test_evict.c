/*
 * test_evict.c - the eviction policies (LRU, S3-FIFO, epoch) as the RAM tier applies them.
 *
 * Every case drives the RAM tier the way cache.c does (insert LOADING, set READY, hit while
 * holding a reference, release), under mem.lock, with page keys laid out as cache.c lays them
 * out: hash(object id) | hash(version, page size) | big-endian page index.
 */
#include "unit.h"

#include <xxhash.h>

#include "cache/cache.h"
#include "cache/tier.h"

#define PAGE 4096u

struct tier {
    struct sl_mem mem;
    bool live;
};

/* Each case's tiers come from its fixture, so that a failed assertion still frees them. */
static int fixture_setup(void **state)
{
    *state = calloc(2, sizeof(struct tier));
    return *state ? 0 : -1;
}

static int fixture_teardown(void **state)
{
    struct tier *t = *state;
    for (int i = 0; i < 2; i++)
        if (t[i].live) sl__mem_fini(&t[i].mem);
    free(t);
    return 0;
}

/* A tier of `pages` pages: the fixture's n-th. */
static struct tier *tier_new(void **state, int n, uint64_t pages)
{
    struct tier *t = &((struct tier *)*state)[n];
    assert_false(t->live);
    assert_int_equal(sl__mem_init(&t->mem, pages * PAGE, PAGE), 0);
    t->live = true;
    return t;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* The key of page `index` of file number `file`, as cache.c's make_key() builds it. */
static void page_key(uint8_t key[SL_PAGE_KEY_LEN], unsigned file, uint64_t index)
{
    char id[64];
    struct sl_object o = {.version = "v1"};
    snprintf(id, sizeof(id), "file:///data/file-%u", file);
    sl__object_ids(&o, id, PAGE);
    memcpy(key, o.file_id, 16);
    put_be64(key + 16, o.version_id);
    put_be64(key + 24, index);
}

static uint64_t key_hash(const uint8_t key[SL_PAGE_KEY_LEN])
{
    return XXH3_64bits(key, SL_PAGE_KEY_LEN);
}

/* A page's bytes: a pattern derived from its key, so that a page freed too early (ASan) or
 * mixed up with another one shows. */
static uint8_t *page_bytes(const uint8_t key[SL_PAGE_KEY_LEN])
{
    uint8_t *d = malloc(PAGE);
    assert_non_null(d);
    for (uint32_t i = 0; i < PAGE; i++) d[i] = (uint8_t)(key[(i % 8) + 24] ^ key[i % 16] ^ i);
    return d;
}

static bool page_intact(const struct sl_mpage *mp)
{
    if (mp->state != SL_MP_READY || mp->len != PAGE) return false;
    for (uint32_t i = 0; i < PAGE; i++)
        if (mp->data[i] != (uint8_t)(mp->key[(i % 8) + 24] ^ mp->key[i % 16] ^ i)) return false;
    return true;
}

/* A reader fetching a page that was not in RAM: inserts it LOADING, fills it, keeps holding it. */
static struct sl_mpage *load_held(struct tier *t, unsigned file, uint64_t index,
                                  enum sl_policy pol)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    pthread_mutex_lock(&t->mem.lock);
    assert_null(sl__mem_find(&t->mem, key, key_hash(key)));
    struct sl_mpage *mp = sl__mem_insert_loading(&t->mem, key, key_hash(key));
    assert_non_null(mp);
    pthread_mutex_unlock(&t->mem.lock);
    uint8_t *data = page_bytes(key); /* the fetch, outside the lock */
    pthread_mutex_lock(&t->mem.lock);
    sl__mem_set_ready(&t->mem, mp, data, PAGE, pol);
    pthread_mutex_unlock(&t->mem.lock);
    return mp;
}

static void release(struct tier *t, struct sl_mpage *mp)
{
    pthread_mutex_lock(&t->mem.lock);
    sl__mem_unref(&t->mem, mp);
    pthread_mutex_unlock(&t->mem.lock);
}

/* Fetches a page and releases it at once. */
static void load(struct tier *t, unsigned file, uint64_t index, enum sl_policy pol)
{
    release(t, load_held(t, file, index, pol));
}

/* A reader reading a page: a hit if it is in RAM (counted against the policy), else a load.
 * Returns whether it was a hit. */
static bool read_page(struct tier *t, unsigned file, uint64_t index, enum sl_policy pol)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    pthread_mutex_lock(&t->mem.lock);
    struct sl_mpage *mp = sl__mem_find(&t->mem, key, key_hash(key));
    if (mp) {
        mp->refs++;
        assert_int_equal(mp->state, SL_MP_READY);
        sl__mem_hit(&t->mem, mp);
        assert_true(page_intact(mp));
        sl__mem_unref(&t->mem, mp);
        pthread_mutex_unlock(&t->mem.lock);
        return true;
    }
    pthread_mutex_unlock(&t->mem.lock);
    load(t, file, index, pol);
    return false;
}

static bool cached(struct tier *t, unsigned file, uint64_t index)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    pthread_mutex_lock(&t->mem.lock);
    struct sl_mpage *mp = sl__mem_find(&t->mem, key, key_hash(key));
    bool found = mp && mp->state == SL_MP_READY;
    if (found) assert_true(page_intact(mp));
    pthread_mutex_unlock(&t->mem.lock);
    return found;
}

static int queue_of(struct tier *t, unsigned file, uint64_t index)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    pthread_mutex_lock(&t->mem.lock);
    struct sl_mpage *mp = sl__mem_find(&t->mem, key, key_hash(key));
    int q = mp ? mp->queue : -1;
    pthread_mutex_unlock(&t->mem.lock);
    return q;
}

static uint64_t tier_bytes(struct tier *t)
{
    pthread_mutex_lock(&t->mem.lock);
    uint64_t b = t->mem.bytes;
    pthread_mutex_unlock(&t->mem.lock);
    return b;
}

/* ---- LRU ------------------------------------------------------------------------------------ */

static void lru_evicts_least_recently_used(void **state)
{
        struct tier *t = tier_new(state, 0, 4);
    for (uint64_t i = 0; i < 4; i++) load(t, 1, i, SL_POLICY_LRU);
    assert_int_equal(tier_bytes(t), 4 * PAGE);

    /* Page 0 is the oldest, but a hit makes it the most recently used: page 1 goes instead. */
    assert_true(read_page(t, 1, 0, SL_POLICY_LRU));
    load(t, 1, 4, SL_POLICY_LRU);
    assert_false(cached(t, 1, 1));
    assert_true(cached(t, 1, 0));
    assert_true(cached(t, 1, 2));
    assert_true(cached(t, 1, 3));
    assert_true(cached(t, 1, 4));

    /* Next in line: 2, then 3, then 0 (hit before 4 was loaded). */
    load(t, 1, 5, SL_POLICY_LRU);
    assert_false(cached(t, 1, 2));
    load(t, 1, 6, SL_POLICY_LRU);
    assert_false(cached(t, 1, 3));
    load(t, 1, 7, SL_POLICY_LRU);
    assert_false(cached(t, 1, 0));
    for (uint64_t i = 4; i < 8; i++) assert_true(cached(t, 1, i));
    assert_int_equal(tier_bytes(t), 4 * PAGE);
}

/* ---- S3-FIFO -------------------------------------------------------------------------------- */

/* A working set that was read twice survives a scan of pages read once; under LRU the same scan
 * wipes it out (which is why S3-FIFO is the default). */
static void s3fifo_scan_keeps_pages_that_were_hit(void **state)
{
        const uint64_t cap = 20, hot = 5, scan = 200;
    enum sl_policy pols[2] = {SL_POLICY_S3FIFO, SL_POLICY_LRU};
    for (int p = 0; p < 2; p++) {
        struct tier *t = tier_new(state, p, cap);
        for (uint64_t i = 0; i < hot; i++) load(t, 1, i, pols[p]);
        for (uint64_t i = 0; i < hot; i++) assert_true(read_page(t, 1, i, pols[p]));
        for (uint64_t i = 0; i < scan; i++) assert_false(read_page(t, 2, i, pols[p]));

        uint64_t kept = 0;
        for (uint64_t i = 0; i < hot; i++) kept += cached(t, 1, i);
        if (pols[p] == SL_POLICY_S3FIFO) {
            assert_int_equal(kept, hot);
            for (uint64_t i = 0; i < hot; i++) assert_int_equal(queue_of(t, 1, i), SL_Q_MAIN);
            /* The scan itself went through SMALL: its last pages are there, its first are gone. */
            assert_false(cached(t, 2, 0));
            assert_true(cached(t, 2, scan - 1));
            assert_int_equal(queue_of(t, 2, scan - 1), SL_Q_SMALL);
        } else {
            assert_int_equal(kept, 0);
        }
        assert_true(tier_bytes(t) <= cap * PAGE);
    }
}

/* A page evicted from SMALL (read once) and read again soon enters MAIN directly. */
static void s3fifo_ghost_readmits_to_main(void **state)
{
        struct tier *t = tier_new(state, 0, 20);
    /* Ten pages read twice: they will go to MAIN, which makes room for ten ghosts. */
    for (uint64_t i = 0; i < 10; i++) load(t, 1, i, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < 10; i++) assert_true(read_page(t, 1, i, SL_POLICY_S3FIFO));
    /* Ten pages of another file read once fill the tier; then file 3's page 0, read once. */
    for (uint64_t i = 0; i < 10; i++) load(t, 2, i, SL_POLICY_S3FIFO);
    load(t, 3, 0, SL_POLICY_S3FIFO);
    assert_int_equal(queue_of(t, 3, 0), SL_Q_SMALL);
    for (uint64_t i = 0; i < 10; i++) assert_int_equal(queue_of(t, 1, i), SL_Q_MAIN);
    /* Ten more one-hit pages push file 2 and then file 3's page out of SMALL. */
    for (uint64_t i = 0; i < 10; i++) load(t, 4, i, SL_POLICY_S3FIFO);
    assert_false(cached(t, 3, 0));
    for (uint64_t i = 0; i < 10; i++) assert_false(cached(t, 2, i));

    /* Read again: it is remembered, and goes to MAIN; a page never seen goes to SMALL. */
    assert_false(read_page(t, 3, 0, SL_POLICY_S3FIFO));
    assert_int_equal(queue_of(t, 3, 0), SL_Q_MAIN);
    assert_false(read_page(t, 5, 0, SL_POLICY_S3FIFO));
    assert_int_equal(queue_of(t, 5, 0), SL_Q_SMALL);
    assert_true(tier_bytes(t) <= 20 * PAGE);
}

/* The ghost list must remember keys, not something many keys share: a page never read before
 * is new, whichever page of its file was evicted last. */
static void s3fifo_new_page_is_not_a_ghost(void **state)
{
        struct tier *t = tier_new(state, 0, 4);
    for (uint64_t i = 0; i < 5; i++) load(t, 1, i, SL_POLICY_S3FIFO);
    assert_false(cached(t, 1, 0)); /* evicted from SMALL: a ghost now */

    static const uint64_t never_read[] = {256, 512, 65536 + 256};
    for (size_t i = 0; i < SL_ARRAY_LEN(never_read); i++) {
        load(t, 1, never_read[i], SL_POLICY_S3FIFO);
        assert_int_equal(queue_of(t, 1, never_read[i]), SL_Q_SMALL);
    }
}

/* What the ghost list is for, at the default shape (1 GiB of RAM, 1 MiB pages: 1024 pages): a
 * pass over one large file, each page read once, must not push out pages that were read again. */
static void s3fifo_scan_of_one_large_file_keeps_hot_pages(void **state)
{
        const uint64_t cap = 1024, hot = 20, scan = 8192;
    struct tier *t = tier_new(state, 0, cap);
    for (uint64_t i = 0; i < hot; i++) load(t, 1, i, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < hot; i++) assert_true(read_page(t, 1, i, SL_POLICY_S3FIFO));
    for (uint64_t i = 0; i < scan; i++) read_page(t, 2, i, SL_POLICY_S3FIFO);
    uint64_t kept = 0;
    for (uint64_t i = 0; i < hot; i++) kept += cached(t, 1, i);
    pthread_mutex_lock(&t->mem.lock);
    uint64_t main_pages = t->mem.q[SL_Q_MAIN].count;
    pthread_mutex_unlock(&t->mem.lock);
    print_message("hot pages kept after a %llu-page scan of one file: %llu of %llu "
                  "(MAIN holds %llu pages)\n",
                  (unsigned long long)scan, (unsigned long long)kept, (unsigned long long)hot,
                  (unsigned long long)main_pages);
    assert_int_equal(kept, hot);
    assert_int_equal(main_pages, hot); /* nothing of the scan entered MAIN */
    assert_true(tier_bytes(t) <= cap * PAGE);
}

/* ---- pages in use --------------------------------------------------------------------------- */

/* Pages held by readers are never freed, even when the tier is over budget; once released, the
 * tier goes back under budget. */
static void held_pages_are_never_freed(void **state)
{
        enum sl_policy pols[2] = {SL_POLICY_S3FIFO, SL_POLICY_LRU};
    for (int p = 0; p < 2; p++) {
        struct sl_mpage *held[15];
        struct tier *t = tier_new(state, p, 10);
        for (int i = 0; i < 15; i++) held[i] = load_held(t, 1, (uint64_t)i, pols[p]);
        /* Nothing could be evicted: over budget by what readers hold, every byte intact. */
        assert_int_equal(tier_bytes(t), 15 * PAGE);
        for (int i = 0; i < 15; i++) {
            assert_true(page_intact(held[i]));
            assert_true(cached(t, 1, (uint64_t)i));
        }
        /* Each page released while the tier is over budget is evicted at once. */
        for (int i = 0; i < 15; i++) {
            pthread_mutex_lock(&t->mem.lock);
            assert_true(page_intact(held[i]));
            pthread_mutex_unlock(&t->mem.lock);
            release(t, held[i]);
            assert_true(tier_bytes(t) <= SL_MAX(10 * PAGE, (uint64_t)(14 - i) * PAGE));
        }
        assert_true(tier_bytes(t) <= 10 * PAGE);
        uint64_t n = 0;
        for (int i = 0; i < 15; i++) n += cached(t, 1, (uint64_t)i);
        assert_int_equal(n, 10);
    }
}

/* The budget holds up to what readers hold: pages nobody holds are evicted even when many held
 * pages sit at the head of the queue. */
static void many_held_pages_do_not_stop_eviction(void **state)
{
        const uint64_t cap = 100, nheld = 70, more = 200;
    struct sl_mpage *held[70];
    struct tier *t = tier_new(state, 0, cap);
    for (uint64_t i = 0; i < nheld; i++) held[i] = load_held(t, 1, i, SL_POLICY_LRU);
    uint64_t worst = 0;
    for (uint64_t i = 0; i < more; i++) {
        load(t, 2, i, SL_POLICY_LRU);
        worst = SL_MAX(worst, tier_bytes(t));
    }
    print_message("with %llu pages held, the tier of %llu pages grew to %llu pages\n",
                  (unsigned long long)nheld, (unsigned long long)cap,
                  (unsigned long long)(worst / PAGE));
    /* mem.c: "the tier can be over budget by what readers hold at that instant". */
    assert_true(worst <= (cap + nheld) * PAGE);
    for (uint64_t i = 0; i < nheld; i++) release(t, held[i]);
    assert_true(tier_bytes(t) <= cap * PAGE);
}

/* ---- epoch ---------------------------------------------------------------------------------- */

/* Epoch pages are never evicted; once they fill the tier, new pages are read through (the reader
 * gets them) without being kept, and the tier stays within its budget. Other policies' pages
 * give way to them. Freeing the object makes room again. */
static void epoch_pages_stay_and_new_ones_read_through(void **state)
{
        const uint64_t cap = 10;
    struct tier *t = tier_new(state, 0, cap);
    /* Two LRU pages, then epoch pages: the LRU pages give way. */
    load(t, 9, 0, SL_POLICY_LRU);
    load(t, 9, 1, SL_POLICY_LRU);
    for (uint64_t i = 0; i < cap; i++) load(t, 1, i, SL_POLICY_EPOCH);
    assert_false(cached(t, 9, 0));
    assert_false(cached(t, 9, 1));
    for (uint64_t i = 0; i < cap; i++) {
        assert_true(cached(t, 1, i));
        assert_int_equal(queue_of(t, 1, i), SL_Q_PINNED);
    }
    assert_int_equal(tier_bytes(t), cap * PAGE);

    /* The tier is full of epoch pages: the next ones reach their reader, but are not kept. */
    for (uint64_t i = cap; i < cap + 5; i++) {
        struct sl_mpage *mp = load_held(t, 1, i, SL_POLICY_EPOCH);
        pthread_mutex_lock(&t->mem.lock);
        assert_true(page_intact(mp));
        pthread_mutex_unlock(&t->mem.lock);
        release(t, mp);
        assert_false(cached(t, 1, i));
        assert_true(tier_bytes(t) <= cap * PAGE);
    }
    /* An LRU page read now is read through as well: nothing can make room for it. */
    load(t, 9, 2, SL_POLICY_LRU);
    assert_true(tier_bytes(t) <= cap * PAGE);
    for (uint64_t i = 0; i < cap; i++) assert_true(cached(t, 1, i));

    /* Freed (or a new version): the pages leave and new ones are cached again. */
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, 1, 0);
    pthread_mutex_lock(&t->mem.lock);
    sl__mem_drop_prefix(&t->mem, key, 16);
    pthread_mutex_unlock(&t->mem.lock);
    assert_int_equal(tier_bytes(t), 0);
    for (uint64_t i = 0; i < cap; i++) assert_false(cached(t, 1, i));
    load(t, 2, 0, SL_POLICY_EPOCH);
    assert_true(cached(t, 2, 0));
}

/* ---- why the epoch policy exists ------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Training: a dataset of 100 pages, a tier of 50, each epoch reads every page once in a new
 * random order. Hits per epoch (out of 100). */
static void run_epochs(void **state, int n, enum sl_policy pol, uint64_t seed, unsigned hits[5],
                       uint64_t *max_bytes)
{
    const unsigned dataset = 100, epochs = 5;
    unsigned order[100];
    struct tier *t = tier_new(state, n, 50);
    for (unsigned e = 0; e < epochs; e++) {
        for (unsigned i = 0; i < dataset; i++) order[i] = i;
        for (unsigned i = dataset - 1; i > 0; i--) { /* Fisher-Yates */
            unsigned j = (unsigned)(rng_next(&seed) % (i + 1));
            unsigned x = order[i];
            order[i] = order[j];
            order[j] = x;
        }
        hits[e] = 0;
        for (unsigned i = 0; i < dataset; i++) {
            hits[e] += read_page(t, 7, order[i], pol);
            *max_bytes = SL_MAX(*max_bytes, tier_bytes(t));
        }
    }
}

static void epoch_beats_lru_on_shuffled_epochs(void **state)
{
        unsigned lru[5], epoch[5];
    uint64_t lru_max = 0, epoch_max = 0;
    run_epochs(state, 0, SL_POLICY_LRU, 42, lru, &lru_max);
    run_epochs(state, 1, SL_POLICY_EPOCH, 42, epoch, &epoch_max);
    print_message("hit rate per epoch (dataset 100 pages, tier 50 pages, seed 42)\n");
    print_message("  epoch:  %3u%% %3u%% %3u%% %3u%% %3u%%\n", epoch[0], epoch[1], epoch[2],
                  epoch[3], epoch[4]);
    print_message("  LRU:    %3u%% %3u%% %3u%% %3u%% %3u%%\n", lru[0], lru[1], lru[2], lru[3],
                  lru[4]);
    print_message("  most RAM held: epoch %llu pages, LRU %llu pages (budget 50)\n",
                  (unsigned long long)(epoch_max / PAGE), (unsigned long long)(lru_max / PAGE));
    /* The first epoch finds nothing either way. */
    assert_int_equal(epoch[0], 0);
    assert_int_equal(lru[0], 0);
    unsigned lru_sum = 0;
    for (int e = 1; e < 5; e++) {
        /* Epoch keeps half of the dataset: a hit rate of cache / dataset, the best possible. */
        assert_true(epoch[e] >= 48 && epoch[e] <= 52);
        /* LRU evicts what the next epoch wants first. */
        assert_true(lru[e] < 40);
        lru_sum += lru[e];
    }
    assert_true(lru_sum / 4 < 35);
    assert_true(lru_max <= 50 * PAGE);
    assert_true(epoch_max <= 50 * PAGE);
}

/* ---- policies side by side ------------------------------------------------------------------ */

/* Mounts may use different policies in one tier: the policy whose oldest page is oldest gives
 * up a page. */
static void mixed_policies_oldest_gives_way(void **state)
{
        struct tier *t = tier_new(state, 0, 4);
    load(t, 1, 0, SL_POLICY_LRU);
    load(t, 2, 0, SL_POLICY_S3FIFO);
    load(t, 1, 1, SL_POLICY_LRU);
    load(t, 2, 1, SL_POLICY_S3FIFO);
    load(t, 3, 0, SL_POLICY_S3FIFO); /* LRU's page 0 is the oldest */
    assert_false(cached(t, 1, 0));
    load(t, 3, 1, SL_POLICY_S3FIFO); /* S3-FIFO's page (2,0) is now the oldest */
    assert_false(cached(t, 2, 0));
    assert_true(cached(t, 1, 1));
    load(t, 3, 2, SL_POLICY_LRU); /* LRU's page 1 */
    assert_false(cached(t, 1, 1));
    assert_true(cached(t, 2, 1));
    assert_true(cached(t, 3, 0));
    assert_true(cached(t, 3, 1));
    assert_true(cached(t, 3, 2));
    assert_int_equal(tier_bytes(t), 4 * PAGE);
}

#define CASE(f) cmocka_unit_test_setup_teardown(f, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(lru_evicts_least_recently_used),
        CASE(s3fifo_scan_keeps_pages_that_were_hit),
        CASE(s3fifo_ghost_readmits_to_main),
        CASE(s3fifo_new_page_is_not_a_ghost),
        CASE(s3fifo_scan_of_one_large_file_keeps_hot_pages),
        CASE(held_pages_are_never_freed),
        CASE(many_held_pages_do_not_stop_eviction),
        CASE(epoch_pages_stay_and_new_ones_read_through),
        CASE(epoch_beats_lru_on_shuffled_epochs),
        CASE(mixed_policies_oldest_gives_way),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
