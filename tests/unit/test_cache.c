/*
 * test_cache.c - the tiered page cache (RAM over disk over the store) as a reader sees it: the
 * right bytes, one store read per page however many ask, pages that survive a restart, damage
 * that is detected and repaired, versions that never mix, and figures that add up.
 *
 * The store is a real local directory (file://); the cache directory is a real disk tier.
 */
#include "unit.h"

#include <ftw.h>
#include <sys/stat.h>

#include "cache/cache.h"
#include "cache/tier.h"

#define PAGE_SIZE (64u * 1024)
#define FILE_SIZE (5 * PAGE_SIZE + 12345) /* five whole pages and a partial one */
#define NPAGES 6

struct fx {
    char *dir, *store_dir, *cache_dir;
    struct sl_config *cfg;
    struct sl_counters ctr; /* the cache's and the store's, as sl_open() shares them */
    struct sl_ufs *u;
    struct sl_cache *c;
    uint8_t *content;
    size_t size;
    sl_stat_t st;
    char *object_id;
};

static uint8_t *random_bytes(size_t len, uint64_t seed)
{
    uint8_t *d = malloc(len);
    if (!d) return NULL;
    for (size_t i = 0; i < len; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        d[i] = (uint8_t)(seed >> 56);
    }
    return d;
}

/* Replaces store/f with new bytes (a new file renamed over it: a new version). */
static void write_object(struct fx *f, uint64_t seed)
{
    free(f->content);
    f->size = FILE_SIZE;
    f->content = random_bytes(f->size, seed);
    assert_non_null(f->content);
    char *tmp = sl__asprintf("%s/.f.tmp", f->store_dir), *path = sl__asprintf("%s/f", f->store_dir);
    assert_int_equal(unit_write_file(tmp, f->content, f->size), 0);
    assert_int_equal(rename(tmp, path), 0);
    free(tmp);
    free(path);
    if (f->u) assert_int_equal(sl__ufs_stat(f->u, "f", &f->st), 0);
}

static int fixture_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = unit_tmpdir())) return -1;
    *state = f;
    f->store_dir = sl__asprintf("%s/store", f->dir);
    f->cache_dir = sl__asprintf("%s/cache", f->dir);
    if (!f->store_dir || !f->cache_dir || mkdir(f->store_dir, 0755) < 0) return -1;
    write_object(f, 1);
    char *uri = sl__asprintf("file://%s", f->store_dir);
    int rc = sl__ufs_open(uri, NULL, &f->ctr, &f->u);
    free(uri);
    if (rc < 0 || sl__ufs_stat(f->u, "f", &f->st) < 0) return -1;
    f->object_id = sl__ufs_object_id(f->u, "f");
    if (sl__config_defaults(&f->cfg) < 0) return -1;
    free(f->cfg->cache_dir);
    f->cfg->cache_dir = sl__strdup(f->cache_dir);
    f->cfg->cache_size = 64ULL << 20;
    f->cfg->cache_memory = 1ULL << 20;
    f->cfg->page_size = PAGE_SIZE;
    memset(&f->ctr, 0, sizeof(f->ctr)); /* the setup's stat is not the test's */
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fx *f = *state;
    sl__cache_close(f->c);
    sl__ufs_close(f->u);
    sl__config_free(f->cfg);
    free(f->content);
    free(f->object_id);
    free(f->store_dir);
    free(f->cache_dir);
    unit_rmtree(f->dir);
    free(f);
    return 0;
}

static struct sl_cache *cache_open(struct fx *f)
{
    sl__cache_close(f->c);
    f->c = NULL;
    assert_int_equal(sl__cache_open(f->cfg, &f->ctr, &f->c), 0);
    assert_int_equal(sl__cache_page_size(f->c), PAGE_SIZE);
    return f->c;
}

static void cache_close(struct fx *f)
{
    sl__cache_close(f->c);
    f->c = NULL;
}

/* The object at the version last stat'ed. */
static struct sl_object object(struct fx *f, enum sl_policy pol)
{
    struct sl_object o = {.ufs = f->u, .rel = "f", .version = f->st.version, .size = f->st.size,
                          .policy = pol};
    sl__object_ids(&o, f->object_id, PAGE_SIZE);
    return o;
}

static size_t page_len(uint64_t index)
{
    uint64_t off = index * PAGE_SIZE;
    return (size_t)SL_MIN((uint64_t)PAGE_SIZE, FILE_SIZE - off);
}

/* Gets page index and checks its bytes against `want` (the file's bytes of that version). */
static void get_check(struct fx *f, const struct sl_object *o, uint64_t index, unsigned flags,
                      const uint8_t *want)
{
    struct sl_page_ref ref = {0};
    assert_int_equal(sl__cache_get(f->c, o, index, flags, &ref), 0);
    assert_non_null(ref.page);
    assert_int_equal(ref.len, page_len(index));
    assert_memory_equal(ref.data, want + index * PAGE_SIZE, ref.len);
    sl__cache_release(f->c, &ref);
    assert_null(ref.page);
}

static sl_cache_stats_t stats(struct fx *f)
{
    /* The flusher moves counts from this process to the index four times a second; sample until
     * two readings 2 ms apart agree (see stats_do_not_dip_during_a_flush for the why). */
    sl_cache_stats_t a, b;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(sl__cache_stats(f->c, &a), 0);
        usleep(2000);
        assert_int_equal(sl__cache_stats(f->c, &b), 0);
        if (memcmp(&a, &b, sizeof(a)) == 0) return a;
    }
    fail_msg("cache stats never settled");
    return a;
}

static uint64_t stable_field(struct fx *f, size_t offset)
{
    sl_cache_stats_t s = stats(f);
    uint64_t v;
    memcpy(&v, (const char *)&s + offset, sizeof(v));
    return v;
}

#define STAT(f, field) stable_field((f), offsetof(sl_cache_stats_t, field))

/* Total size and number of the files under <cache>/pages. */
static uint64_t walk_bytes, walk_files;
static char walk_last[4096];
static int walk_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_F && S_ISREG(sb->st_mode)) {
        walk_bytes += (uint64_t)sb->st_size;
        walk_files++;
        snprintf(walk_last, sizeof(walk_last), "%s", path);
    }
    return 0;
}

static uint64_t page_files(struct fx *f, uint64_t *bytes)
{
    char *p = sl__asprintf("%s/pages", f->cache_dir);
    walk_bytes = walk_files = 0;
    walk_last[0] = '\0';
    assert_int_equal(nftw(p, walk_cb, 16, FTW_PHYS), 0);
    free(p);
    if (bytes) *bytes = walk_bytes;
    return walk_files;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void pages_equal_the_file(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    /* Backwards, from RAM or disk now: the same bytes. */
    for (uint64_t i = NPAGES; i-- > 0;) get_check(f, &o, i, 0, f->content);
    /* Past the end: no page. */
    struct sl_page_ref ref = {0};
    assert_int_equal(sl__cache_get(f->c, &o, NPAGES, 0, &ref), -EINVAL);
    assert_null(ref.page);
    /* Every page went to disk once, with exactly its bytes. */
    uint64_t bytes;
    assert_int_equal(page_files(f, &bytes), NPAGES);
    assert_int_equal(bytes, FILE_SIZE);
    for (uint64_t i = 0; i < NPAGES; i++) assert_true(sl__cache_on_disk(f->c, &o, i));
    uint64_t cached;
    assert_int_equal(sl__cache_cached_bytes(f->c, &o, &cached), 0);
    assert_int_equal(cached, FILE_SIZE);
}

static void second_get_is_a_hit(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    get_check(f, &o, 0, 0, f->content);
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.ufs_requests, 1);
    assert_int_equal(s.ufs_bytes_read, PAGE_SIZE);

    get_check(f, &o, 0, 0, f->content);
    s = stats(f);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.ufs_requests, 1);

    /* A read-ahead fetch is its page's miss; the reader who then reads it counts nothing more:
     * hits + misses = pages read. */
    get_check(f, &o, 1, SL_GET_PREFETCH, f->content);
    s = stats(f);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.hits, 1);
    get_check(f, &o, 1, 0, f->content);
    s = stats(f);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.ufs_requests, 2);
    get_check(f, &o, 1, 0, f->content);
    assert_int_equal(STAT(f, hits), 2);
}

/* A claimed page that reached disk before its fetch ran (another reader fetched it between the
 * claim's look at the disk and its claim in RAM, and, a stream, let it leave RAM) is read from
 * disk: each page comes from the store once. */
static void claimed_page_on_disk_by_now_is_not_fetched_again(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    struct sl_prefetch pf;
    assert_true(sl__cache_claim(f->c, &o, 0, NPAGES, &pf));
    assert_int_equal(pf.n, NPAGES);
    for (unsigned i = 0; i < NPAGES; i++) assert_true(pf.mine[i]);
    /* What the other reader wrote: pages 1 and 3, by their keys. */
    for (unsigned i = 1; i <= 3; i += 2) {
        uint8_t *buf = malloc(page_len(i));
        assert_non_null(buf);
        memcpy(buf, f->content + i * PAGE_SIZE, page_len(i));
        struct iovec page = {buf, page_len(i)};
        assert_int_equal(sl__disk_insert_run(sl__cache_disk(f->c),
                                             (const uint8_t(*)[SL_PAGE_KEY_LEN])pf.keys[i],
                                             o.policy, &page, 1), 0);
        free(buf);
    }
    struct sl_page_ref holds[NPAGES];
    sl__cache_prefetch(f->c, &o, &pf, holds);
    for (unsigned i = 0; i < NPAGES; i++) {
        assert_non_null(holds[i].page);
        assert_int_equal(holds[i].len, page_len(i));
        assert_memory_equal(holds[i].data, f->content + i * PAGE_SIZE, holds[i].len);
        sl__cache_release(f->c, &holds[i]);
    }
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.misses, NPAGES - 2);
    assert_int_equal(s.ufs_requests, 3); /* pages 0, 2 and 4-5: one request per run */
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    assert_int_equal(STAT(f, misses), NPAGES - 2);
}

/* An epoch page that arrives with RAM over its budget (full of pinned pages, both tiers full) is
 * read through, but not before its last user lets it go: while one holds it (an order's hold
 * for the reader to come), the reader who comes for it finds it. Detached on arrival, it was
 * fetched from the store again (bench train, unet3d at 50%: 0.78 GiB an epoch, floor 0.50). */
static void epoch_page_read_through_is_found_while_held(void **state)
{
    struct fx *f = *state;
    f->cfg->cache_memory = 2 * PAGE_SIZE;
    f->cfg->cache_size = 2 * PAGE_SIZE;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_EPOCH);
    for (uint64_t i = 0; i < 2; i++) get_check(f, &o, i, 0, f->content); /* pinned in both */
    struct sl_page_ref held = {0}, reader = {0};
    assert_int_equal(sl__cache_get(f->c, &o, 2, 0, &held), 0);
    assert_false(sl__cache_on_disk(f->c, &o, 2)); /* the disk is full: RAM is all there is */
    assert_int_equal(sl__cache_get(f->c, &o, 2, 0, &reader), 0);
    assert_int_equal(STAT(f, misses), 3); /* 2 was fetched once */
    assert_ptr_equal(reader.page, held.page);
    assert_memory_equal(reader.data, f->content + 2 * PAGE_SIZE, reader.len);
    sl__cache_release(f->c, &reader);
    sl__cache_release(f->c, &held);
    /* Released, it is not kept: RAM is back within its budget, and the next read fetches it. */
    get_check(f, &o, 2, 0, f->content);
    assert_int_equal(STAT(f, misses), 4);
    get_check(f, &o, 0, 0, f->content);
    assert_int_equal(STAT(f, misses), 4);
}

/* With RAM too small for the file, pages come back from disk: hits, no store reads. */
static void pages_evicted_from_ram_come_from_disk(void **state)
{
    struct fx *f = *state;
    f->cfg->cache_memory = 2 * PAGE_SIZE;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_LRU);
    for (int pass = 0; pass < 3; pass++)
        for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.misses, NPAGES);
    assert_int_equal(s.ufs_requests, NPAGES);
    assert_int_equal(s.hits, 2 * NPAGES);
    assert_int_equal(s.checksum_failures, 0);
}

struct flight {
    struct fx *f;
    const struct sl_object *o;
    pthread_barrier_t *go;
    int rc;
    uint8_t *copy;
};

static void *flight_main(void *arg)
{
    struct flight *fl = arg;
    struct sl_page_ref ref = {0};
    pthread_barrier_wait(fl->go);
    fl->rc = sl__cache_get(fl->f->c, fl->o, 3, 0, &ref);
    if (fl->rc == 0) {
        fl->copy = malloc(ref.len);
        if (fl->copy) memcpy(fl->copy, ref.data, ref.len);
        sl__cache_release(fl->f->c, &ref);
    }
    return NULL;
}

/* Sixteen readers of one cold page at once: one store read, everyone gets the bytes. */
static void single_flight(void **state)
{
    struct fx *f = *state;
    enum { N = 16 };
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    pthread_barrier_t go;
    pthread_t th[N];
    struct flight fl[N];
    pthread_barrier_init(&go, NULL, N);
    for (int i = 0; i < N; i++) {
        fl[i] = (struct flight){.f = f, .o = &o, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, flight_main, &fl[i]), 0);
    }
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < N; i++) {
        assert_int_equal(fl[i].rc, 0);
        assert_non_null(fl[i].copy);
        assert_memory_equal(fl[i].copy, f->content + 3 * PAGE_SIZE, PAGE_SIZE);
        free(fl[i].copy);
    }
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.ufs_requests, 1);
    assert_int_equal(s.misses, 1);
    assert_int_equal(s.hits, N - 1);
    assert_int_equal(page_files(f, NULL), 1);
}

/* A new process (a new cache, RAM empty) finds the pages on disk. */
static void reopened_cache_serves_from_disk(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    assert_int_equal(STAT(f, ufs_requests), NPAGES);
    cache_close(f);

    cache_open(f);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.ufs_requests, NPAGES); /* none since the restart */
    assert_int_equal(s.misses, NPAGES);
    assert_int_equal(s.hits, NPAGES);
    assert_int_equal(s.pages_cached, NPAGES);
}

/* A page damaged on disk is detected, fetched again from the store, and repaired on disk. */
static void corrupted_page_is_refetched(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    get_check(f, &o, 2, 0, f->content);
    cache_close(f);

    /* The only page file: flip one byte in the middle. */
    assert_int_equal(page_files(f, NULL), 1);
    FILE *fp = fopen(walk_last, "r+b");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 1000, SEEK_SET), 0);
    int c = fgetc(fp);
    assert_true(c != EOF);
    assert_int_equal(fseek(fp, 1000, SEEK_SET), 0);
    assert_int_equal(fputc(c ^ 0x40, fp), c ^ 0x40);
    assert_int_equal(fclose(fp), 0);

    cache_open(f);
    get_check(f, &o, 2, 0, f->content);
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.checksum_failures, 1);
    assert_int_equal(s.ufs_requests, 2);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.pages_cached, 1);
    cache_close(f);

    /* Repaired: the next process reads it from disk, with no store read and no failure. */
    cache_open(f);
    get_check(f, &o, 2, 0, f->content);
    s = stats(f);
    assert_int_equal(s.checksum_failures, 1);
    assert_int_equal(s.ufs_requests, 2);
}

/* A new version of the object never gets the old version's pages, from RAM or from disk. */
static void new_version_never_gets_old_pages(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o1 = object(f, SL_POLICY_S3FIFO);
    char v1[SL_VERSION_MAX];
    snprintf(v1, sizeof(v1), "%s", f->st.version);
    uint8_t *old = malloc(FILE_SIZE);
    assert_non_null(old);
    memcpy(old, f->content, FILE_SIZE);
    o1.version = v1;
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o1, i, 0, old);

    write_object(f, 2); /* same size, other bytes, a new version */
    assert_string_not_equal(f->st.version, v1);
    assert_memory_not_equal(old, f->content, PAGE_SIZE);
    struct sl_object o2 = object(f, SL_POLICY_S3FIFO);
    uint64_t before = STAT(f, ufs_requests);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o2, i, 0, f->content);
    assert_int_equal(STAT(f, ufs_requests) - before, NPAGES); /* all fetched anew */
    /* Both versions' pages are on disk now; each object sees its own. */
    uint64_t c1, c2;
    assert_int_equal(sl__cache_cached_bytes(f->c, &o1, &c1), 0);
    assert_int_equal(sl__cache_cached_bytes(f->c, &o2, &c2), 0);
    assert_int_equal(c1, FILE_SIZE);
    assert_int_equal(c2, FILE_SIZE);
    cache_close(f);

    /* From disk only (RAM empty): still the new bytes for the new version. */
    cache_open(f);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o2, i, 0, f->content);
    free(old);
}

/* epoch pages are pinned "until freed or their object changes" (evict.c, docs/internals/
 * cache.md): when a file of an epoch mount is rewritten, the old version's pages, which can never
 * be served again, must not keep the new version out of the disk cache. */
static void epoch_pages_of_an_old_version_give_way(void **state)
{
    struct fx *f = *state;
    f->cfg->cache_size = 3 * PAGE_SIZE;
    cache_open(f);
    struct sl_object o1 = object(f, SL_POLICY_EPOCH);
    char v1[SL_VERSION_MAX];
    snprintf(v1, sizeof(v1), "%s", f->st.version);
    o1.version = v1;
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o1, i, 0, f->content);
    uint64_t c1, c2;
    assert_int_equal(sl__cache_cached_bytes(f->c, &o1, &c1), 0);
    assert_int_equal(c1, 3 * PAGE_SIZE); /* the tier is full of pinned pages */

    write_object(f, 4);
    struct sl_object o2 = object(f, SL_POLICY_EPOCH);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o2, i, 0, f->content);
    assert_int_equal(sl__cache_cached_bytes(f->c, &o1, &c1), 0);
    assert_int_equal(sl__cache_cached_bytes(f->c, &o2, &c2), 0);
    print_message("after the rewrite: old version %llu bytes cached, new version %llu\n",
                  (unsigned long long)c1, (unsigned long long)c2);
    assert_int_equal(c2, 3 * PAGE_SIZE);
    assert_int_equal(c1, 0);
    cache_close(f);

    /* The next epoch (a new process) finds half of the new version on disk. */
    cache_open(f);
    uint64_t before = STAT(f, ufs_requests);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o2, i, 0, f->content);
    assert_int_equal(STAT(f, ufs_requests) - before, NPAGES - 3);
}

/* A fetch that fails is not cached: the error reaches the reader, and the next read tries the
 * store again. */
static void failed_fetch_is_not_cached(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o1 = object(f, SL_POLICY_S3FIFO);
    char v1[SL_VERSION_MAX];
    snprintf(v1, sizeof(v1), "%s", f->st.version);
    o1.version = v1;
    write_object(f, 3); /* the pinned version is gone from the store */
    struct sl_page_ref ref = {0};
    assert_int_equal(sl__cache_get(f->c, &o1, 0, 0, &ref), SL_E_CHANGED);
    assert_int_equal(sl__cache_get(f->c, &o1, 0, 0, &ref), SL_E_CHANGED);
    assert_null(ref.page);
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.misses, 0);
    assert_int_equal(s.hits, 0);
    assert_false(sl__cache_on_disk(f->c, &o1, 0));
    assert_int_equal(page_files(f, NULL), 0);
    struct sl_object o2 = object(f, SL_POLICY_S3FIFO);
    get_check(f, &o2, 0, 0, f->content);
}

/* ---- without a disk tier -------------------------------------------------------------------- */

static void unwritable_cache_dir_reads_through(void **state)
{
    struct fx *f = *state;
    char *blocker = sl__asprintf("%s/file", f->dir);
    assert_int_equal(unit_write_file(blocker, "x", 1), 0);
    free(f->cfg->cache_dir);
    f->cfg->cache_dir = sl__asprintf("%s/cache", blocker);

    /* Open with stderr captured: the user is told why there is no disk cache. */
    char *errpath = sl__asprintf("%s/stderr.txt", f->dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *errf = fopen(errpath, "w");
    assert_non_null(errf);
    dup2(fileno(errf), 2);
    int rc = sl__cache_open(f->cfg, &f->ctr, &f->c);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(errf);
    assert_int_equal(rc, 0);
    assert_non_null(f->c);
    char msg[4096] = {0};
    FILE *rf = fopen(errpath, "r");
    assert_non_null(rf);
    size_t n = fread(msg, 1, sizeof(msg) - 1, rf);
    fclose(rf);
    msg[n] = '\0';
    assert_non_null(strstr(msg, "warning"));
    assert_non_null(strstr(msg, f->cfg->cache_dir));
    free(errpath);

    assert_null(sl__cache_db(f->c));
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);
    get_check(f, &o, 0, 0, f->content); /* from RAM */
    assert_false(sl__cache_on_disk(f->c, &o, 0));
    uint64_t cached = 1, freed = 1;
    assert_int_equal(sl__cache_cached_bytes(f->c, &o, &cached), 0);
    assert_int_equal(cached, 0);
    sl_cache_stats_t s;
    assert_int_equal(sl__cache_stats(f->c, &s), 0);
    assert_int_equal(s.misses, NPAGES);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.ufs_requests, NPAGES);
    assert_int_equal(s.pages_cached, 0);
    assert_int_equal(s.capacity_bytes, f->cfg->cache_size);
    sl__cache_flush(f->c); /* nothing to flush to: the counts stay */
    assert_int_equal(sl__cache_stats(f->c, &s), 0);
    assert_int_equal(s.misses, NPAGES);
    /* Freeing drops the RAM pages: the next read goes to the store. */
    assert_int_equal(sl__cache_free_object(f->c, o.file_id, &freed), 0);
    assert_int_equal(freed, 0);
    get_check(f, &o, 0, 0, f->content);
    assert_int_equal(sl__cache_stats(f->c, &s), 0);
    assert_int_equal(s.ufs_requests, NPAGES + 1);
    /* Nothing was created under the blocking file. */
    struct stat sb;
    assert_int_equal(stat(blocker, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    free(blocker);
}

/* ---- freeing -------------------------------------------------------------------------------- */

static void free_object_drops_its_pages(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < NPAGES; i++) get_check(f, &o, i, 0, f->content);

    /* Another object in the same cache stays. */
    char *other = sl__asprintf("%s/g", f->store_dir);
    uint8_t *g = random_bytes(PAGE_SIZE, 9);
    assert_int_equal(unit_write_file(other, g, PAGE_SIZE), 0);
    sl_stat_t gst;
    assert_int_equal(sl__ufs_stat(f->u, "g", &gst), 0);
    char *gid = sl__ufs_object_id(f->u, "g");
    struct sl_object og = {.ufs = f->u, .rel = "g", .version = gst.version, .size = PAGE_SIZE,
                           .policy = SL_POLICY_S3FIFO};
    sl__object_ids(&og, gid, PAGE_SIZE);
    struct sl_page_ref ref = {0};
    assert_int_equal(sl__cache_get(f->c, &og, 0, 0, &ref), 0);
    sl__cache_release(f->c, &ref);

    uint64_t before = STAT(f, bytes_cached), freed = 0;
    assert_int_equal(sl__cache_free_object(f->c, o.file_id, &freed), 0);
    assert_int_equal(freed, 5 * PAGE_SIZE + 16384); /* 12345 bytes take 16 KiB of blocks */
    sl_cache_stats_t s = stats(f);
    assert_int_equal(before - s.bytes_cached, freed);
    assert_int_equal(s.pages_cached, 1);
    for (uint64_t i = 0; i < NPAGES; i++) assert_false(sl__cache_on_disk(f->c, &o, i));
    assert_true(sl__cache_on_disk(f->c, &og, 0));
    uint64_t cached = 1;
    assert_int_equal(sl__cache_cached_bytes(f->c, &o, &cached), 0);
    assert_int_equal(cached, 0);
    assert_int_equal(page_files(f, NULL), 1);

    /* Gone from RAM too: reading it again goes to the store. */
    uint64_t reqs = s.ufs_requests;
    get_check(f, &o, 0, 0, f->content);
    assert_int_equal(STAT(f, ufs_requests), reqs + 1);
    assert_int_equal(sl__cache_get(f->c, &og, 0, 0, &ref), 0); /* the other: still a hit */
    sl__cache_release(f->c, &ref);
    assert_int_equal(STAT(f, ufs_requests), reqs + 1);
    free(other);
    free(g);
    free(gid);
}

/* ---- figures -------------------------------------------------------------------------------- */

/* Stats include this process's unflushed counts, survive a flush and a restart, and reset. */
static void stats_include_unflushed_counts(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < 3; i++) get_check(f, &o, i, 0, f->content);
    for (uint64_t i = 0; i < 3; i++) get_check(f, &o, i, 0, f->content);
    /* Most likely before the flusher's first round (a quarter of a second): all counted. */
    sl_cache_stats_t s = stats(f);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.hits, 3);
    assert_int_equal(s.ufs_requests, 3);
    assert_int_equal(s.ufs_bytes_read, 3 * PAGE_SIZE);
    assert_int_equal(s.pages_cached, 3);
    assert_int_equal(s.bytes_cached, 3 * PAGE_SIZE);
    assert_int_equal(s.capacity_bytes, f->cfg->cache_size);

    sl__cache_flush(f->c);
    s = stats(f);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.hits, 3);
    cache_close(f);
    cache_open(f);
    s = stats(f);
    assert_int_equal(s.misses, 3);
    assert_int_equal(s.hits, 3);
    assert_int_equal(s.ufs_requests, 3);

    get_check(f, &o, 0, 0, f->content); /* from disk: a hit */
    assert_int_equal(STAT(f, hits), 4);
    assert_int_equal(sl__cache_stats_reset(f->c), 0);
    s = stats(f);
    assert_int_equal(s.hits + s.misses + s.ufs_requests + s.ufs_bytes_read, 0);
    assert_int_equal(s.pages_cached, 3);
}

struct flush_arg {
    struct sl_cache *c;
    sl_cache_stats_t out;
    int rc;
    _Atomic bool done;
};

static void *flush_main(void *arg)
{
    struct flush_arg *a = arg;
    sl__cache_flush(a->c);
    atomic_store(&a->done, true);
    return NULL;
}

static void *stats_main(void *arg)
{
    struct flush_arg *a = arg;
    a->rc = sl__cache_stats(a->c, &a->out);
    atomic_store(&a->done, true);
    return NULL;
}

/* A flush moves counts from this process to the index. Stats read during that move must not
 * lose them: a monitor computing "hits since last time" would see the count go backwards.
 * Made deterministic by holding the index's write lock, so the flush stops half-way (counts
 * taken, not yet written). */
static void stats_do_not_dip_during_a_flush(void **state)
{
    struct fx *f = *state;
    cache_open(f);
    struct sl_object o = object(f, SL_POLICY_S3FIFO);
    for (uint64_t i = 0; i < 3; i++) get_check(f, &o, i, 0, f->content);
    sl__cache_flush(f->c);
    for (uint64_t i = 0; i < 3; i++) get_check(f, &o, i, 0, f->content);
    sl_cache_stats_t want = stats(f);
    assert_int_equal(want.hits, 3);
    assert_int_equal(want.misses, 3);

    MDB_txn *txn;
    assert_int_equal(sl__db_begin(sl__cache_db(f->c), true, &txn), 0);
    struct flush_arg fa = {.c = f->c}, sa = {.c = f->c};
    pthread_t ft, st;
    assert_int_equal(pthread_create(&ft, NULL, flush_main, &fa), 0);
    /* Wait until a flush (ours or the flusher's) has taken this process's counts. */
    for (int i = 0; i < 2000 && atomic_load(&f->ctr.v[SL_CTR_HITS]) != 0; i++) usleep(1000);
    bool taken = atomic_load(&f->ctr.v[SL_CTR_HITS]) == 0;
    assert_int_equal(pthread_create(&st, NULL, stats_main, &sa), 0);
    for (int i = 0; i < 300 && !atomic_load(&sa.done); i++) usleep(1000);
    mdb_txn_abort(txn); /* let the flush finish (and stats, if it waits for the flush) */
    pthread_join(st, NULL);
    pthread_join(ft, NULL);
    assert_true(taken);
    assert_int_equal(sa.rc, 0);
    print_message("stats during a flush: hits %llu misses %llu (want %llu and %llu)\n",
                  (unsigned long long)sa.out.hits, (unsigned long long)sa.out.misses,
                  (unsigned long long)want.hits, (unsigned long long)want.misses);
    assert_int_equal(sa.out.hits, want.hits);
    assert_int_equal(sa.out.misses, want.misses);
    assert_int_equal(sa.out.ufs_requests, want.ufs_requests);
    /* And once the flush is through, the same figures. */
    sl_cache_stats_t after = stats(f);
    assert_int_equal(after.hits, want.hits);
    assert_int_equal(after.misses, want.misses);
}

/* A page buffer freed is reused for the next page of its mapped length (whole pages, and the
 * tails of a dataset's samples, all of one size), never for another length, and what is kept
 * stays within its byte bound. */
static void freed_buffers_are_reused_by_length(void **state)
{
    (void)state;
    struct sl_mem mem;
    const size_t page = 1u << 20, sample = 114660; /* a resnet sample: a page's tail */
    assert_int_equal(sl__mem_init(&mem, 64u << 20, (uint32_t)page), 0);

    uint8_t *a = sl__mem_buf_alloc(&mem, sample);
    assert_non_null(a);
    memset(a, 7, sample);
    sl__mem_buf_free(&mem, a, sample);
    assert_ptr_equal(sl__mem_buf_alloc(&mem, sample), a); /* no new mapping */
    uint8_t *p = sl__mem_buf_alloc(&mem, page);
    assert_ptr_not_equal(p, a);
    sl__mem_buf_free(&mem, a, sample);
    uint8_t *other = sl__mem_buf_alloc(&mem, 300000);
    assert_ptr_not_equal(other, a); /* another length: not a */
    sl__mem_buf_free(&mem, other, 300000);
    sl__mem_buf_free(&mem, p, page);
    assert_ptr_equal(sl__mem_buf_alloc(&mem, page), p);

    /* Many freed at once: the spares never go past their bound (a sixteenth of RAM). */
    uint8_t *bufs[64];
    for (int i = 0; i < 64; i++) assert_non_null(bufs[i] = sl__mem_buf_alloc(&mem, sample));
    for (int i = 0; i < 64; i++) {
        sl__mem_buf_free(&mem, bufs[i], sample);
        assert_true(mem.spare_bytes <= mem.max_spare_bytes);
        assert_true(mem.nspare <= mem.max_spare);
    }
    assert_true(mem.spare_bytes > (4u << 20) - page); /* and they are kept up to it */
    sl__mem_buf_free(&mem, p, page);
    sl__mem_fini(&mem);
}

#define CASE(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(pages_equal_the_file),
        CASE(second_get_is_a_hit),
        CASE(pages_evicted_from_ram_come_from_disk),
        CASE(single_flight),
        CASE(claimed_page_on_disk_by_now_is_not_fetched_again),
        CASE(epoch_page_read_through_is_found_while_held),
        CASE(reopened_cache_serves_from_disk),
        CASE(corrupted_page_is_refetched),
        CASE(new_version_never_gets_old_pages),
        CASE(epoch_pages_of_an_old_version_give_way),
        CASE(failed_fetch_is_not_cached),
        CASE(unwritable_cache_dir_reads_through),
        CASE(free_object_drops_its_pages),
        CASE(stats_include_unflushed_counts),
        CASE(stats_do_not_dip_during_a_flush),
        cmocka_unit_test(freed_buffers_are_reused_by_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
