/*
 * test_disk.c - the disk tier: pages survive and come back byte for byte, never take more than
 * the hard limit, damaged or lost pages are misses (never wrong bytes), and what killed
 * processes leave behind is cleaned up by the next one to open the cache.
 */
#include "unit.h"

#include <fcntl.h>
#include <sys/file.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "cache/tier.h"

#define MiB (1ULL << 20)

struct fx {
    char *dir;
    struct sl_disk *d;
    struct sl_counters ctr;
    pid_t kids[8];
    int nkids;
};

static int fixture_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f || !(f->dir = unit_tmpdir())) return -1;
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < f->nkids; i++) {
        if (f->kids[i] > 0) {
            kill(f->kids[i], SIGKILL);
            waitpid(f->kids[i], NULL, 0);
        }
    }
    sl__disk_close(f->d);
    unit_rmtree(f->dir);
    free(f);
    return 0;
}

static struct sl_disk *disk_open(struct fx *f, uint64_t capacity)
{
    sl__disk_close(f->d);
    f->d = NULL;
    assert_int_equal(sl__disk_open(f->dir, capacity, &f->ctr, &f->d), 0);
    return f->d;
}

static void disk_close(struct fx *f)
{
    sl__disk_close(f->d);
    f->d = NULL;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Page `index` of file number `file`, laid out as cache.c lays out keys. */
static void page_key(uint8_t key[SL_PAGE_KEY_LEN], unsigned file, uint64_t index)
{
    char id[64];
    snprintf(id, sizeof(id), "file:///data/file-%u", file);
    sl__hash128(id, key);
    put_be64(key + 16, 0x5eed);
    put_be64(key + 24, index);
}

/* The bytes of a page: different for every key and length. */
static uint8_t *page_data(unsigned file, uint64_t index, size_t len)
{
    uint8_t *d = malloc(len ? len : 1);
    assert_non_null(d);
    uint64_t s = (uint64_t)file * 1000003 + index * 7919 + len;
    for (size_t i = 0; i < len; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        d[i] = (uint8_t)(s >> 56);
    }
    return d;
}

/* One page, a run of one. */
static int insert_one(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], enum sl_policy pol,
                      const void *data, size_t len)
{
    struct iovec page = {(void *)data, len};
    return sl__disk_insert_run(d, (const uint8_t(*)[SL_PAGE_KEY_LEN])key, pol, &page, 1);
}

static int insert(struct sl_disk *d, unsigned file, uint64_t index, size_t len,
                  enum sl_policy pol)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    uint8_t *data = page_data(file, index, len);
    int rc = insert_one(d, key, pol, data, len);
    free(data);
    return rc;
}

/* 0 when the page reads back exactly; else what sl__disk_read said (or 1: wrong bytes). */
static int read_back(struct sl_disk *d, unsigned file, uint64_t index, size_t len)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    uint8_t *want = page_data(file, index, len), *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    int rc = sl__disk_read(d, key, buf, len);
    if (rc == 0 && memcmp(buf, want, len) != 0) rc = 1;
    free(want);
    free(buf);
    return rc;
}

static bool contains(struct sl_disk *d, unsigned file, uint64_t index)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    return sl__disk_contains(d, key);
}

/* The page file of a cached page (and its offset in it). */
static char *page_path_at(struct sl_disk *d, unsigned file, uint64_t index, uint64_t *off)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    char *p = NULL;
    assert_int_equal(sl__disk_page_file(d, key, &p, off), 0);
    return p;
}

static char *page_path(struct sl_disk *d, unsigned file, uint64_t index)
{
    uint64_t off;
    return page_path_at(d, file, index, &off);
}

/* Inserts pages [first, first + n) of `file` as one run (one store read's worth), all of len
 * bytes but the last, of last_len. */
static int insert_run(struct sl_disk *d, unsigned file, uint64_t first, size_t n, size_t len,
                      size_t last_len, enum sl_policy pol)
{
    uint8_t keys[SL_DISK_RUN_MAX][SL_PAGE_KEY_LEN];
    struct iovec pages[SL_DISK_RUN_MAX];
    assert_true(n <= SL_DISK_RUN_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t l = i + 1 == n ? last_len : len;
        page_key(keys[i], file, first + i);
        /* Aligned, as the cache's page buffers are: the direct-I/O path. */
        void *buf = NULL;
        assert_int_equal(posix_memalign(&buf, SL_BUF_ALIGN, l ? l : 1), 0);
        uint8_t *data = page_data(file, first + i, l);
        memcpy(buf, data, l);
        free(data);
        pages[i] = (struct iovec){buf, l};
    }
    int rc = sl__disk_insert_run(d, (const uint8_t(*)[SL_PAGE_KEY_LEN])keys, pol, pages, n);
    for (size_t i = 0; i < n; i++) free(pages[i].iov_base);
    return rc;
}

static bool exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

static sl_cache_stats_t stats(struct sl_disk *d)
{
    sl_cache_stats_t s;
    memset(&s, 0xff, sizeof(s));
    assert_int_equal(sl__disk_stats(d, &s), 0);
    return s;
}

static uint64_t state_u64(struct sl_disk *d, const char *name)
{
    MDB_txn *txn;
    assert_int_equal(sl__db_begin(sl__disk_db(d), false, &txn), 0);
    uint64_t v = sl__db_get_u64(sl__disk_db(d), txn, name);
    mdb_txn_abort(txn);
    return v;
}

/* The bytes of a file's data extents, in whole blocks (SEEK_DATA/SEEK_HOLE): not st_blocks,
 * which also counts ext4's extent-tree block of a fragmented file (a 4 KiB block no page owns). */
static uint64_t data_bytes(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    uint64_t total = 0;
    off_t pos = 0, data, hole;
    while ((data = lseek(fd, pos, SEEK_DATA)) >= 0) {
        hole = lseek(fd, data, SEEK_HOLE);
        if (hole <= data) break;
        off_t from = data / 4096 * 4096, to = (hole + 4095) / 4096 * 4096;
        total += (uint64_t)(to - from);
        pos = hole;
    }
    close(fd);
    return total;
}

/* Total size and number of the regular files under a directory. */
static uint64_t walk_bytes, walk_alloc, walk_files;
static int walk_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_F && S_ISREG(sb->st_mode)) {
        walk_bytes += (uint64_t)sb->st_size;
        walk_alloc += data_bytes(path);
        walk_files++;
    }
    return 0;
}

static uint64_t tree_bytes(const char *dir, const char *sub, uint64_t *files)
{
    char *p = sl__asprintf("%s/%s", dir, sub);
    walk_bytes = walk_alloc = walk_files = 0;
    assert_int_equal(nftw(p, walk_cb, 16, FTW_PHYS), 0);
    free(p);
    if (files) *files = walk_files;
    return walk_bytes;
}

/* The space the files under dir/sub take (blocks, holes excluded). */
static uint64_t tree_alloc(const char *dir, const char *sub)
{
    tree_bytes(dir, sub, NULL);
    return walk_alloc;
}

/* ---- round trip ----------------------------------------------------------------------------- */

static void bytes_round_trip(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 64 * MiB);
    static const size_t sizes[] = {MiB, 5000, 1, 4096, 3 * MiB + 17};
    uint64_t charge = 0;
    for (size_t i = 0; i < SL_ARRAY_LEN(sizes); i++) {
        assert_false(contains(d, 1, i));
        assert_int_equal(read_back(d, 1, i, sizes[i]), -ENOENT);
        assert_int_equal(insert(d, 1, i, sizes[i], SL_POLICY_S3FIFO), 0);
        charge += (sizes[i] + 4095) / 4096 * 4096;
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(sizes); i++) {
        assert_true(contains(d, 1, i));
        assert_int_equal(read_back(d, 1, i, sizes[i]), 0);
        /* The file holds the page's bytes and nothing else. */
        char *p = page_path(d, 1, i);
        struct stat sb;
        assert_int_equal(stat(p, &sb), 0);
        assert_int_equal(sb.st_size, sizes[i]);
        free(p);
    }
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.pages_cached, SL_ARRAY_LEN(sizes));
    assert_int_equal(s.bytes_cached, charge);
    assert_int_equal(s.capacity_bytes, 64 * MiB);

    /* Inserting a cached page again changes nothing. */
    assert_int_equal(insert(d, 1, 0, MiB, SL_POLICY_S3FIFO), 0);
    assert_int_equal(stats(d).pages_cached, SL_ARRAY_LEN(sizes));
    assert_int_equal(stats(d).bytes_cached, charge);

    /* Reads do not disturb other pages, and no other file stays behind. */
    uint64_t files;
    tree_bytes(f->dir, "pages", &files);
    assert_int_equal(files, SL_ARRAY_LEN(sizes));
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 0);
}

/* A page larger than the whole tier is not cached (and nothing is evicted for it). */
static void page_larger_than_tier_is_skipped(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 256 * 1024);
    assert_int_equal(insert(d, 1, 0, 64 * 1024, SL_POLICY_LRU), 0);
    assert_int_equal(insert(d, 1, 1, MiB, SL_POLICY_LRU), 0);
    assert_false(contains(d, 1, 1));
    assert_true(contains(d, 1, 0));
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    assert_true(tree_bytes(f->dir, "pages", NULL) <= 256 * 1024);
}

/* ---- the hard limit ------------------------------------------------------------------------- */

static void hard_limit_never_exceeded(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 32 * MiB, n = 200;
    enum sl_policy pols[2] = {SL_POLICY_S3FIFO, SL_POLICY_LRU};
    for (int p = 0; p < 2; p++) {
        struct sl_disk *d = disk_open(f, cap);
        memset(&f->ctr, 0, sizeof(f->ctr));
        for (uint64_t i = 0; i < n; i++) {
            assert_int_equal(insert(d, 10 + (unsigned)p, i, MiB, pols[p]), 0);
            assert_true(contains(d, 10 + (unsigned)p, i));
            uint64_t files;
            uint64_t on_disk = tree_bytes(f->dir, "pages", &files);
            sl_cache_stats_t s = stats(d);
            assert_true(on_disk <= cap);
            assert_true(s.bytes_cached <= cap);
            /* Every file is an indexed page, and every indexed page a file. */
            assert_int_equal(on_disk, s.bytes_cached);
            assert_int_equal(files, s.pages_cached);
            assert_int_equal(state_u64(d, "bytes_reserved"), 0);
        }
        sl_cache_stats_t s = stats(d);
        assert_int_equal(s.pages_cached, 32);
        assert_int_equal(s.bytes_cached, cap);
        assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], n - 32);
        /* Read once each, the newest pages are the ones kept. */
        for (uint64_t i = n - 32; i < n; i++)
            assert_int_equal(read_back(d, 10 + (unsigned)p, i, MiB), 0);
        assert_int_equal(read_back(d, 10 + (unsigned)p, 0, MiB), -ENOENT);
        /* Empty the tier for the next policy. */
        uint8_t key[SL_PAGE_KEY_LEN];
        page_key(key, 10 + (unsigned)p, 0);
        assert_int_equal(sl__disk_free_prefix(d, key, 16, NULL), 0);
        assert_int_equal(stats(d).bytes_cached, 0);
    }
}

/* Epoch pages are never evicted: once they fill the tier, new pages are not cached. */
static void epoch_pages_fill_then_are_skipped(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 8 * MiB);
    /* The first 8 fit; the rest are refused as SL_E_CACHE_FULL (the caller reads through). */
    for (uint64_t i = 0; i < 12; i++)
        assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_EPOCH), i < 8 ? 0 : SL_E_CACHE_FULL);
    for (uint64_t i = 0; i < 8; i++) assert_int_equal(read_back(d, 1, i, MiB), 0);
    for (uint64_t i = 8; i < 12; i++) assert_false(contains(d, 1, i));
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    assert_int_equal(stats(d).bytes_cached, 8 * MiB);
    assert_true(tree_bytes(f->dir, "pages", NULL) <= 8 * MiB);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
    /* Pages of other policies are read through as well. */
    assert_int_equal(insert(d, 2, 0, MiB, SL_POLICY_LRU), SL_E_CACHE_FULL);
    assert_false(contains(d, 2, 0));
    assert_int_equal(stats(d).bytes_cached, 8 * MiB);
}

/* A page that cannot fit even after evicting everything evictable is refused up front, and
 * nothing is evicted for it: a refused reservation must not delete other pages' files. */
static void refused_reservation_evicts_nothing(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 8 * MiB);
    for (uint64_t i = 0; i < 6; i++) assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_EPOCH), 0);
    for (uint64_t i = 0; i < 2; i++) assert_int_equal(insert(d, 2, i, MiB, SL_POLICY_LRU), 0);
    /* 6 pinned + 2 evictable: a 3 MiB page cannot fit. */
    assert_int_equal(insert(d, 3, 0, 3 * MiB, SL_POLICY_LRU), SL_E_CACHE_FULL);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    for (uint64_t i = 0; i < 2; i++) assert_int_equal(read_back(d, 2, i, MiB), 0);
    for (uint64_t i = 0; i < 6; i++) assert_int_equal(read_back(d, 1, i, MiB), 0);
    assert_int_equal(stats(d).pages_cached, 8);
    assert_int_equal(tree_bytes(f->dir, "pages", NULL), 8 * MiB);
    /* A 2 MiB page can: both LRU pages go. */
    assert_int_equal(insert(d, 3, 0, 2 * MiB, SL_POLICY_LRU), 0);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 2);
    assert_int_equal(read_back(d, 3, 0, 2 * MiB), 0);
}

/* Two instances on one cache directory in one process (two sl_open calls) share one LMDB
 * environment: closing one leaves the other working, and a second process still sees a
 * consistent cache. */
static void two_instances_in_one_process(void **state)
{
    struct fx *f = *state;
    struct sl_counters ctr2 = {0};
    struct sl_disk *a = disk_open(f, 16 * MiB), *b;
    assert_int_equal(sl__disk_open(f->dir, 16 * MiB, &ctr2, &b), 0);
    assert_ptr_equal(sl__disk_db(a), sl__disk_db(b));
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(insert(a, 1, i, MiB, SL_POLICY_LRU), 0);
        assert_int_equal(insert(b, 2, i, MiB, SL_POLICY_LRU), 0);
    }
    assert_int_equal(read_back(b, 1, 3, MiB), 0);
    disk_close(f); /* a */
    assert_int_equal(read_back(b, 1, 0, MiB), 0);
    assert_int_equal(insert(b, 3, 0, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(stats(b).pages_cached, 9);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Its own environment (opened after the fork): it sees the same pages. */
        struct sl_counters c = {0};
        struct sl_disk *d;
        uint8_t key[SL_PAGE_KEY_LEN];
        uint8_t *buf = malloc(MiB);
        page_key(key, 3, 0);
        int ok = sl__disk_open(f->dir, 16 * MiB, &c, &d) == 0 && sl__disk_read(d, key, buf, MiB) == 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    sl__disk_close(b);
}

/* ---- damaged and lost pages ----------------------------------------------------------------- */

static void flipped_byte_is_detected_and_dropped(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 16 * MiB);
    assert_int_equal(insert(d, 1, 0, MiB, SL_POLICY_S3FIFO), 0);
    assert_int_equal(insert(d, 1, 1, MiB, SL_POLICY_S3FIFO), 0);
    assert_int_equal(insert(d, 1, 2, 5000, SL_POLICY_S3FIFO), 0);

    char *p = page_path(d, 1, 0);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, 123456), 1);
    b ^= 0x01;
    assert_int_equal(pwrite(fd, &b, 1, 123456), 1);
    close(fd);

    assert_int_equal(read_back(d, 1, 0, MiB), SL_E_CHECKSUM);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 1);
    /* Dropped: a miss from now on, its file gone, its space given back. */
    assert_false(exists(p));
    assert_false(contains(d, 1, 0));
    assert_int_equal(read_back(d, 1, 0, MiB), -ENOENT);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 1);
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.pages_cached, 2);
    assert_int_equal(s.bytes_cached, MiB + 8192);
    free(p);

    /* A truncated page is damaged too. */
    p = page_path(d, 1, 2);
    assert_int_equal(truncate(p, 4999), 0);
    assert_int_equal(read_back(d, 1, 2, 5000), SL_E_CHECKSUM);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 2);
    assert_false(exists(p));
    free(p);

    /* The others are untouched, and the damaged one can be cached again. */
    assert_int_equal(read_back(d, 1, 1, MiB), 0);
    assert_int_equal(insert(d, 1, 0, MiB, SL_POLICY_S3FIFO), 0);
    assert_int_equal(read_back(d, 1, 0, MiB), 0);
    assert_int_equal(stats(d).pages_cached, 2);
}

static void file_deleted_behind_the_index_is_a_miss(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 16 * MiB);
    assert_int_equal(insert(d, 1, 0, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(insert(d, 1, 1, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(stats(d).bytes_cached, 2 * MiB);

    char *p = page_path(d, 1, 0);
    assert_int_equal(unlink(p), 0);
    free(p);
    assert_int_equal(read_back(d, 1, 0, MiB), -ENOENT);
    assert_false(contains(d, 1, 0));
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.bytes_cached, MiB);
    assert_int_equal(s.pages_cached, 1);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 0);
    assert_int_equal(read_back(d, 1, 1, MiB), 0);
    /* And it can be cached again. */
    assert_int_equal(insert(d, 1, 0, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(read_back(d, 1, 0, MiB), 0);
}

/* ---- persistence ----------------------------------------------------------------------------- */

static void reopen_keeps_pages_and_smaller_capacity_evicts(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 16 * MiB);
    for (uint64_t i = 0; i < 10; i++) assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_LRU), 0);
    disk_close(f);

    d = disk_open(f, 16 * MiB);
    for (uint64_t i = 0; i < 10; i++) assert_int_equal(read_back(d, 1, i, MiB), 0);
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.pages_cached, 10);
    assert_int_equal(s.bytes_cached, 10 * MiB);
    /* A hit on page 0 makes it the most recently used (LRU). */
    uint8_t hit[1][SL_PAGE_KEY_LEN];
    page_key(hit[0], 1, 0);
    uint64_t deltas[SL_CTR__COUNT] = {[SL_CTR_HITS] = 1};
    assert_int_equal(sl__disk_apply(d, deltas, (const uint8_t(*)[SL_PAGE_KEY_LEN])hit, 1), 0);
    disk_close(f);

    /* Smaller: opening evicts nothing (a process with another config, say `cache stats` run
     * elsewhere, must not shrink a shared cache to its own limit)... */
    memset(&f->ctr, 0, sizeof(f->ctr));
    d = disk_open(f, 4 * MiB);
    s = stats(d);
    assert_int_equal(s.capacity_bytes, 4 * MiB);
    assert_int_equal(s.pages_cached, 10);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    /* ...its first write evicts down to its limit, least recently used first. */
    assert_int_equal(insert(d, 2, 0, MiB, SL_POLICY_LRU), 0);
    s = stats(d);
    assert_int_equal(s.pages_cached, 4);
    assert_int_equal(s.bytes_cached, 4 * MiB);
    assert_int_equal(s.hits, 1);
    assert_true(tree_bytes(f->dir, "pages", NULL) <= 4 * MiB);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 7);
    assert_int_equal(read_back(d, 2, 0, MiB), 0);
    static const uint64_t kept[] = {0, 8, 9};
    for (size_t i = 0; i < SL_ARRAY_LEN(kept); i++)
        assert_int_equal(read_back(d, 1, kept[i], MiB), 0);
    for (uint64_t i = 1; i < 8; i++) assert_false(contains(d, 1, i));
    disk_close(f);

    /* Larger again: nothing comes back, nothing more goes. */
    d = disk_open(f, 16 * MiB);
    assert_int_equal(stats(d).pages_cached, 4);
}

/* ---- crash recovery -------------------------------------------------------------------------- */

/* Layout of a reservation record (disk.c's struct sl_reservation), to stage what a process killed
 * between its rename and its commit leaves behind. */
struct reservation {
    uint64_t owner;
    uint64_t charge;
    uint64_t file;
};

static void put_reservation(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], uint64_t owner,
                            uint64_t file, uint64_t charge)
{
    struct sl_db *db = sl__disk_db(d);
    struct reservation r = {.owner = owner, .charge = charge, .file = file};
    MDB_txn *txn;
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key}, v = {sizeof(r), &r};
    assert_int_equal(sl__db_begin(db, true, &txn), 0);
    assert_int_equal(mdb_put(txn, db->dbi[SL_DB_RESERVE], &k, &v, 0), 0);
    assert_int_equal(sl__db_add_u64(db, txn, "bytes_reserved", (int64_t)charge), 0);
    assert_int_equal(sl__db_commit(txn), 0);
}

/* A child that is the live owner `owner` of the cache (it holds owners/<owner> locked, as a
 * sluice process does) until it is killed. */
static pid_t sleeper(struct fx *f, uint64_t owner)
{
    int ready[2];
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *path = sl__asprintf("%s/owners/%016llx", f->dir, (unsigned long long)owner);
        int fd = open(path, O_RDWR | O_CREAT, 0644);
        if (fd < 0 || flock(fd, LOCK_EX) < 0) _exit(2);
        if (write(ready[1], "x", 1) != 1) _exit(3);
        for (;;) pause();
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    close(ready[1]);
    f->kids[f->nkids++] = pid;
    return pid;
}

static void reap(struct fx *f, pid_t pid, int *status)
{
    assert_int_equal(waitpid(pid, status, 0), pid);
    for (int i = 0; i < f->nkids; i++)
        if (f->kids[i] == pid) f->kids[i] = 0;
}

/* Writes a page file by hand, making its fan-out folder as the tier would. */
static void touch(const char *path, size_t len)
{
    char folder[PATH_MAX];
    snprintf(folder, sizeof(folder), "%s", path);
    *strrchr(folder, '/') = '\0';
    assert_true(mkdir(folder, 0755) == 0 || errno == EEXIST);
    uint8_t *d = page_data(99, 99, len);
    assert_int_equal(unit_write_file(path, d, len), 0);
    free(d);
}

/* A writer killed in the middle of a page (here by SIGXFSZ, deterministically, after its
 * reservation was committed): the next open gives the space back and removes its page file. */
static void killed_writer_is_cleaned_up(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 8 * MiB;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sl_counters ctr = {0};
        struct sl_disk *d;
        struct rlimit core = {0, 0}, fsize = {MiB, MiB};
        setrlimit(RLIMIT_CORE, &core);
        if (sl__disk_open(f->dir, cap, &ctr, &d) < 0) _exit(2);
        setrlimit(RLIMIT_FSIZE, &fsize); /* the page's temp file stops at 1 MiB */
        uint8_t key[SL_PAGE_KEY_LEN];
        page_key(key, 1, 0);
        uint8_t *data = page_data(1, 0, 4 * MiB);
        insert_one(d, key, SL_POLICY_LRU, data, 4 * MiB);
        _exit(3); /* not reached: SIGXFSZ */
    }
    f->kids[f->nkids++] = pid;
    int status;
    reap(f, pid, &status);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGXFSZ);
    /* It left a partial, unindexed page file (and a reservation of 4 MiB) behind. */
    uint64_t files;
    tree_bytes(f->dir, "pages", &files);
    assert_int_equal(files, 1);

    struct sl_disk *d = disk_open(f, cap);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
    tree_bytes(f->dir, "pages", &files);
    assert_int_equal(files, 0);
    assert_false(contains(d, 1, 0));
    /* All the space is usable again: the page it was writing, and a full tier without evicting. */
    assert_int_equal(insert(d, 1, 0, 4 * MiB, SL_POLICY_LRU), 0);
    assert_int_equal(read_back(d, 1, 0, 4 * MiB), 0);
    for (uint64_t i = 1; i < 5; i++) assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    assert_int_equal(stats(d).bytes_cached, cap);
}

/* A process killed after writing its pages but before indexing them: the next open removes the
 * unindexed page file and gives its reservations back; a live writer's reservations and file
 * are left alone, whoever opens the cache. */
static void dead_reservations_undone_live_ones_kept(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 8 * MiB;
    const uint64_t dead_owner = 0x1111111111111111ULL, live_owner = 0x2222222222222222ULL;
    char *owners = sl__asprintf("%s/owners", f->dir);
    assert_int_equal(sl__mkdirs(owners, 0755), 0);
    free(owners);
    pid_t dead = sleeper(f, dead_owner);
    pid_t live = sleeper(f, live_owner);

    struct sl_disk *d = disk_open(f, cap);
    uint8_t kdead[2][SL_PAGE_KEY_LEN], klive[SL_PAGE_KEY_LEN];
    page_key(kdead[0], 1, 0);
    page_key(kdead[1], 1, 2);
    page_key(klive, 1, 1);
    /* File numbers far above what this cache hands out itself. */
    char *pdead = sl__disk_file_path(d, 1000), *plive = sl__disk_file_path(d, 1001);
    put_reservation(d, kdead[0], dead_owner, 1000, MiB); /* a run of two pages in one file */
    put_reservation(d, kdead[1], dead_owner, 1000, MiB);
    put_reservation(d, klive, live_owner, 1001, 2 * MiB);
    touch(pdead, 2 * MiB);
    touch(plive, 2 * MiB);
    disk_close(f);

    /* The first sleeper dies; the second lives on. */
    kill(dead, SIGKILL);
    int status;
    reap(f, dead, &status);

    d = disk_open(f, cap);
    assert_int_equal(state_u64(d, "bytes_reserved"), 2 * MiB);
    assert_false(exists(pdead));
    assert_false(contains(d, 1, 0));
    assert_false(contains(d, 1, 2));
    assert_true(exists(plive));
    /* The live writer's page is its own to finish: another process does not write it... */
    assert_int_equal(insert(d, 1, 1, 2 * MiB, SL_POLICY_LRU), 0);
    assert_false(contains(d, 1, 1));
    /* ...and its space stays promised: 6 MiB of pages fit, the 7th evicts. */
    for (uint64_t i = 10; i < 16; i++) assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 0);
    assert_int_equal(insert(d, 1, 16, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 1);
    assert_true(tree_alloc(f->dir, "pages") <= cap);
    disk_close(f);

    /* Now it dies too. */
    kill(live, SIGKILL);
    reap(f, live, &status);
    d = disk_open(f, cap);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
    assert_false(exists(plive));
    assert_int_equal(insert(d, 1, 1, 2 * MiB, SL_POLICY_LRU), 0);
    assert_int_equal(read_back(d, 1, 1, 2 * MiB), 0);
    assert_true(tree_alloc(f->dir, "pages") <= cap);
    free(pdead);
    free(plive);
}

/* ---- runs of pages in one file -------------------------------------------------------------- */

/* A run shares one file; evicting a page punches its hole (the space is free at once), the last
 * one takes the file; a damaged page costs only itself. */
static void run_shares_a_file_and_frees_page_by_page(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 8 * MiB;
    struct sl_disk *d = disk_open(f, cap);
    /* 7 full pages and a short last one, as the end of an object. */
    assert_int_equal(insert_run(d, 1, 0, 8, MiB, 5000, SL_POLICY_LRU), 0);
    uint64_t files;
    tree_bytes(f->dir, "pages", &files);
    assert_int_equal(files, 1);
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.pages_cached, 8);
    assert_int_equal(s.bytes_cached, 7 * MiB + 8192);
    assert_int_equal(tree_alloc(f->dir, "pages"), 7 * MiB + 8192);
    for (uint64_t i = 0; i < 8; i++) {
        uint64_t off;
        char *p = page_path_at(d, 1, i, &off);
        assert_int_equal(off, i * MiB); /* block-aligned, one after the other */
        free(p);
        assert_int_equal(read_back(d, 1, i, i == 7 ? 5000 : MiB), 0);
    }

    /* A new page evicts the least recently used (page 0): its hole, not the file. */
    assert_int_equal(insert(d, 2, 0, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(f->ctr.v[SL_CTR_EVICTIONS], 1);
    assert_false(contains(d, 1, 0));
    assert_true(tree_alloc(f->dir, "pages") <= cap);
    for (uint64_t i = 1; i < 8; i++) assert_int_equal(read_back(d, 1, i, i == 7 ? 5000 : MiB), 0);

    /* A flipped byte in page 3 drops page 3 only. */
    uint64_t off;
    char *p = page_path_at(d, 1, 3, &off);
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off + 99), 1);
    b ^= 0x80;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off + 99), 1);
    close(fd);
    assert_int_equal(read_back(d, 1, 3, MiB), SL_E_CHECKSUM);
    assert_false(contains(d, 1, 3));
    for (uint64_t i = 4; i < 8; i++) assert_int_equal(read_back(d, 1, i, i == 7 ? 5000 : MiB), 0);

    /* A page of the run cached again goes to a file of its own. */
    assert_int_equal(insert_run(d, 1, 3, 1, MiB, MiB, SL_POLICY_LRU), 0);
    char *p3 = page_path(d, 1, 3);
    assert_string_not_equal(p3, p);
    free(p3);
    assert_int_equal(read_back(d, 1, 3, MiB), 0);

    /* Freeing the object removes the run's file with its last page. */
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, 1, 0);
    assert_int_equal(sl__disk_free_prefix(d, key, 16, NULL), 0);
    assert_false(exists(p));
    free(p);
    tree_bytes(f->dir, "pages", &files);
    assert_int_equal(files, 1); /* page 0 of file 2 */
    assert_int_equal(stats(d).bytes_cached, MiB);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
}

/* sl__disk_hold of page `index` of `file`: 0 with *fd set, or what it said. */
static int hold(struct sl_disk *d, unsigned file, uint64_t index, size_t len, int *fd,
                uint64_t *off)
{
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, file, index);
    return sl__disk_hold(d, key, len, fd, off);
}

/* The len bytes at off of fd are page `index` of `file`. */
static bool fd_holds(int fd, uint64_t off, unsigned file, uint64_t index, size_t len)
{
    uint8_t *want = page_data(file, index, len), *buf = malloc(len);
    assert_non_null(buf);
    bool same = pread(fd, buf, len, (off_t)off) == (ssize_t)len && memcmp(buf, want, len) == 0;
    free(want);
    free(buf);
    return same;
}

/* A page served by descriptor: only once this process has checked it (or written it); nobody
 * punches it out while it is held (eviction passes over its file, a free leaves its bytes);
 * let go, it is evicted like any other. */
static void held_page_is_never_punched_out(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 8 * MiB;
    struct sl_disk *d = disk_open(f, cap);
    int fd;
    uint64_t off;

    assert_int_equal(hold(d, 1, 0, MiB, &fd, &off), -ENOENT);
    assert_int_equal(insert_run(d, 1, 0, 4, MiB, MiB, SL_POLICY_LRU), 0);
    assert_int_equal(hold(d, 1, 1, 5000, &fd, &off), -EAGAIN); /* not that page's length */

    /* Written by this process: known good, held at once. */
    assert_int_equal(hold(d, 1, 1, MiB, &fd, &off), 0);
    assert_int_equal(off, MiB);
    assert_true(fd_holds(fd, off, 1, 1, MiB));

    /* Eight new pages need all the room: the held page's file (one run) is passed over, the
     * other pages give way, and the limit holds. */
    for (unsigned i = 0; i < 8; i++) assert_int_equal(insert(d, 2, i, MiB, SL_POLICY_LRU), 0);
    for (uint64_t i = 0; i < 4; i++) assert_true(contains(d, 1, i));
    assert_true(fd_holds(fd, off, 1, 1, MiB));
    assert_true(tree_alloc(f->dir, "pages") <= cap);
    close(fd);

    /* Let go: evicted as usual. */
    for (unsigned i = 0; i < 8; i++) assert_int_equal(insert(d, 3, i, MiB, SL_POLICY_LRU), 0);
    for (uint64_t i = 0; i < 4; i++) assert_false(contains(d, 1, i));
    assert_true(tree_alloc(f->dir, "pages") <= cap);

    /* Another process (a fresh instance) checks a page before it serves it by descriptor. */
    assert_int_equal(insert_run(d, 4, 0, 2, MiB, MiB, SL_POLICY_LRU), 0);
    d = disk_open(f, cap);
    assert_int_equal(hold(d, 4, 0, MiB, &fd, &off), -EAGAIN);
    assert_int_equal(read_back(d, 4, 0, MiB), 0);
    assert_int_equal(hold(d, 4, 0, MiB, &fd, &off), 0);
    assert_true(fd_holds(fd, off, 4, 0, MiB));

    /* Freed while held: the index lets it go at once, the held bytes stay whole. */
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, 4, 0);
    uint64_t t0 = sl__mono_ns();
    assert_int_equal(sl__disk_free_prefix(d, key, 16, NULL), 0);
    assert_true(sl__mono_ns() - t0 < 2000000000ULL);
    assert_false(contains(d, 4, 0));
    assert_false(contains(d, 4, 1));
    assert_true(fd_holds(fd, off, 4, 0, MiB));
    close(fd);
    assert_int_equal(hold(d, 4, 0, MiB, &fd, &off), -ENOENT);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
}

/* A run already partly cached writes only the missing pages; a tier too small for the whole
 * run keeps the pages that fit. */
static void run_partly_cached_or_too_big(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 4 * MiB);
    assert_int_equal(insert(d, 1, 1, MiB, SL_POLICY_EPOCH), 0);
    assert_int_equal(insert_run(d, 1, 0, 3, MiB, MiB, SL_POLICY_EPOCH), 0);
    for (uint64_t i = 0; i < 3; i++) assert_int_equal(read_back(d, 1, i, MiB), 0);
    assert_int_equal(stats(d).pages_cached, 3);
    /* One MiB left and nothing evictable: the first page of the next run fits, the rest not. */
    assert_int_equal(insert_run(d, 1, 3, 4, MiB, MiB, SL_POLICY_EPOCH), 0);
    assert_true(contains(d, 1, 3));
    for (uint64_t i = 4; i < 7; i++) assert_false(contains(d, 1, i));
    assert_int_equal(stats(d).bytes_cached, 4 * MiB);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
    assert_true(tree_alloc(f->dir, "pages") <= 4 * MiB);
    assert_int_equal(read_back(d, 1, 3, MiB), 0);
}

/* ---- freeing an object ---------------------------------------------------------------------- */

static void free_prefix_frees_one_file_only(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 64 * MiB);
    /* Three files; the pages of a file are adjacent in the index, so its neighbours matter. */
    for (unsigned file = 1; file <= 3; file++) {
        for (uint64_t i = 0; i < 4; i++)
            assert_int_equal(insert(d, file, i, i == 3 ? 5000 : MiB, SL_POLICY_S3FIFO), 0);
    }
    /* Another version of file 2: the same 16-byte prefix, other 24-byte prefix. */
    uint8_t key[SL_PAGE_KEY_LEN];
    page_key(key, 2, 0);
    put_be64(key + 16, 0x0dd);
    uint8_t *data = page_data(2, 100, 7000);
    assert_int_equal(insert_one(d, key, SL_POLICY_S3FIFO, data, 7000), 0);
    free(data);

    uint8_t prefix[SL_PAGE_KEY_LEN];
    page_key(prefix, 2, 0); /* first 24 bytes: file 2, version 0x5eed */
    uint64_t bytes = 0;
    assert_int_equal(sl__disk_sum_prefix(d, prefix, 24, &bytes), 0);
    assert_int_equal(bytes, 3 * MiB + 5000); /* the bytes of the version's pages */
    assert_int_equal(sl__disk_sum_prefix(d, prefix, 16, &bytes), 0);
    assert_int_equal(bytes, 3 * MiB + 5000 + 7000); /* every version */

    char *paths[4];
    for (uint64_t i = 0; i < 4; i++) paths[i] = page_path(d, 2, i);
    uint64_t before = stats(d).bytes_cached, freed = 0;
    assert_int_equal(sl__disk_free_prefix(d, prefix, 16, &freed), 0);
    /* What was freed is what the tier no longer holds (blocks), every version of the file. */
    assert_int_equal(freed, 3 * MiB + 8192 + 8192);
    sl_cache_stats_t s = stats(d);
    assert_int_equal(before - s.bytes_cached, freed);
    assert_int_equal(s.pages_cached, 8);
    for (uint64_t i = 0; i < 4; i++) {
        assert_false(contains(d, 2, i));
        assert_false(exists(paths[i]));
        free(paths[i]);
        assert_int_equal(read_back(d, 1, i, i == 3 ? 5000 : MiB), 0);
        assert_int_equal(read_back(d, 3, i, i == 3 ? 5000 : MiB), 0);
    }
    assert_false(sl__disk_contains(d, key));
    assert_int_equal(sl__disk_sum_prefix(d, prefix, 16, &bytes), 0);
    assert_int_equal(bytes, 0);
    uint64_t files;
    assert_int_equal(tree_bytes(f->dir, "pages", &files), s.bytes_cached - 2 * 8192 + 2 * 5000);
    assert_int_equal(files, 8);
    /* Freeing it again frees nothing. */
    assert_int_equal(sl__disk_free_prefix(d, prefix, 16, &freed), 0);
    assert_int_equal(freed, 0);
    assert_int_equal(stats(d).pages_cached, 8);
}

/* ---- several processes ---------------------------------------------------------------------- */

#define CHILD_CHECK(cond)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "child: %s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
            _exit(10);                                                                        \
        }                                                                                     \
    } while (0)

/* Two processes share one cache directory: each sees the other's pages, and the counters add
 * up. */
static void two_processes_share_the_cache(void **state)
{
    struct fx *f = *state;
    struct sl_disk *d = disk_open(f, 64 * MiB);
    for (uint64_t i = 0; i < 3; i++) assert_int_equal(insert(d, 1, i, MiB, SL_POLICY_LRU), 0);
    uint64_t mine[SL_CTR__COUNT] = {[SL_CTR_HITS] = 2, [SL_CTR_MISSES] = 1,
                                    [SL_CTR_UFS_REQUESTS] = 1, [SL_CTR_UFS_BYTES_READ] = 100};
    assert_int_equal(sl__disk_apply(d, mine, NULL, 0), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sl_counters ctr = {0};
        struct sl_disk *d2;
        CHILD_CHECK(sl__disk_open(f->dir, 64 * MiB, &ctr, &d2) == 0);
        for (uint64_t i = 0; i < 3; i++) {
            uint8_t key[SL_PAGE_KEY_LEN];
            page_key(key, 1, i);
            CHILD_CHECK(sl__disk_contains(d2, key));
        }
        for (uint64_t i = 0; i < 5; i++) {
            uint8_t key[SL_PAGE_KEY_LEN];
            page_key(key, 2, i);
            uint8_t *data = page_data(2, i, 300000);
            CHILD_CHECK(insert_one(d2, key, SL_POLICY_S3FIFO, data, 300000) == 0);
            free(data);
        }
        uint64_t theirs[SL_CTR__COUNT] = {[SL_CTR_HITS] = 3, [SL_CTR_MISSES] = 5,
                                          [SL_CTR_UFS_REQUESTS] = 5,
                                          [SL_CTR_UFS_BYTES_READ] = 1500000,
                                          [SL_CTR_CHECKSUM_FAILURES] = 1};
        CHILD_CHECK(sl__disk_apply(d2, theirs, NULL, 0) == 0);
        sl__disk_close(d2);
        _exit(0);
    }
    f->kids[f->nkids++] = pid;
    int status;
    reap(f, pid, &status);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The parent's handle, open all along, sees the child's pages and figures. */
    for (uint64_t i = 0; i < 5; i++) assert_int_equal(read_back(d, 2, i, 300000), 0);
    sl_cache_stats_t s = stats(d);
    assert_int_equal(s.hits, 5);
    assert_int_equal(s.misses, 6);
    assert_int_equal(s.ufs_requests, 6);
    assert_int_equal(s.ufs_bytes_read, 1500100);
    assert_int_equal(s.checksum_failures, 1);
    assert_int_equal(s.pages_cached, 8);
    assert_int_equal(s.bytes_cached, 3 * MiB + 5 * ((300000 + 4095) / 4096 * 4096));
    assert_int_equal(sl__disk_reset_counters(d), 0);
    s = stats(d);
    assert_int_equal(s.hits + s.misses + s.ufs_requests + s.checksum_failures, 0);
    assert_int_equal(s.pages_cached, 8); /* what is cached is not a counter */
}

/* Several processes inserting at once, pages and runs: the limit holds, and the index and the
 * files agree. */
static void concurrent_writers_keep_the_limit(void **state)
{
    struct fx *f = *state;
    const uint64_t cap = 4 * MiB;
    const size_t len = 256 * 1024;
    struct sl_disk *d = disk_open(f, cap);
    for (int k = 0; k < 4; k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            struct sl_counters ctr = {0};
            struct sl_disk *d2;
            CHILD_CHECK(sl__disk_open(f->dir, cap, &ctr, &d2) == 0);
            for (uint64_t i = 0; i < 60; i++) {
                /* Some keys are shared between the writers, most are their own. */
                unsigned file = i % 5 == 0 ? 50 : 20 + (unsigned)k;
                if (k % 2 && i % 3 == 0 && file != 50) {
                    /* Runs of three pages sharing a file. */
                    CHILD_CHECK(insert_run(d2, file, i, 3, len, len, SL_POLICY_S3FIFO) == 0);
                    i += 2;
                    continue;
                }
                uint8_t key[SL_PAGE_KEY_LEN];
                page_key(key, file, i);
                uint8_t *data = page_data(file, i, len);
                CHILD_CHECK(insert_one(d2, key, SL_POLICY_S3FIFO, data, len) == 0);
                free(data);
            }
            sl__disk_close(d2);
            _exit(0);
        }
        f->kids[f->nkids++] = pid;
    }
    /* Meanwhile this process reads what it finds: never wrong bytes. */
    for (int round = 0; round < 20; round++) {
        for (unsigned k = 0; k < 4; k++) {
            for (uint64_t i = 0; i < 60; i += 7) {
                int rc = read_back(d, 20 + k, i, len);
                assert_true(rc == 0 || rc == -ENOENT);
            }
        }
    }
    for (int k = 0; k < 4; k++) {
        int status;
        reap(f, f->kids[k], &status);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    uint64_t files;
    tree_bytes(f->dir, "pages", &files);
    uint64_t on_disk = tree_alloc(f->dir, "pages");
    sl_cache_stats_t s = stats(d);
    assert_true(on_disk <= cap);
    assert_int_equal(on_disk, s.bytes_cached);
    assert_true(files <= s.pages_cached);
    assert_int_equal(s.pages_cached, cap / len);
    assert_int_equal(state_u64(d, "bytes_reserved"), 0);
    assert_int_equal(f->ctr.v[SL_CTR_CHECKSUM_FAILURES], 0);
}

#define CASE(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE(bytes_round_trip),
        CASE(page_larger_than_tier_is_skipped),
        CASE(hard_limit_never_exceeded),
        CASE(epoch_pages_fill_then_are_skipped),
        CASE(refused_reservation_evicts_nothing),
        CASE(two_instances_in_one_process),
        CASE(flipped_byte_is_detected_and_dropped),
        CASE(file_deleted_behind_the_index_is_a_miss),
        CASE(reopen_keeps_pages_and_smaller_capacity_evicts),
        CASE(killed_writer_is_cleaned_up),
        CASE(dead_reservations_undone_live_ones_kept),
        CASE(run_shares_a_file_and_frees_page_by_page),
        CASE(held_page_is_never_punched_out),
        CASE(run_partly_cached_or_too_big),
        CASE(free_prefix_frees_one_file_only),
        CASE(two_processes_share_the_cache),
        CASE(concurrent_writers_keep_the_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
