/* test_file.c - reading through a handle: the version pinned at open, re-pinned only before the
 * first byte, and never a mix of two versions, whatever threads read it while the file changes.
 * Every 8-byte word of version v of the test file holds v, so any buffer tells which versions
 * it came from. Uses the public API only. */
#include "unit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "sluice.h"

#define PAGE 4096
#define FILE_SIZE (64 * PAGE)

struct fx {
    char *tmp, *data, *file, *config;
    sl_t *sl;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->tmp = unit_tmpdir();
    assert_non_null(f->tmp);
    assert_true(asprintf(&f->data, "%s/data", f->tmp) > 0);
    assert_true(asprintf(&f->file, "%s/data/v.bin", f->tmp) > 0);
    assert_true(asprintf(&f->config, "%s/sluice.yaml", f->tmp) > 0);
    assert_int_equal(mkdir(f->data, 0755), 0);
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "cache:\n  dir: %s/cache\n  size: 64MiB\n  memory: 1MiB\n"
                         "  page_size: 4KiB\nmounts:\n  /d: file://%s\n",
                         f->tmp, f->data) > 0);
    assert_int_equal(unit_write_file(f->config, yaml, strlen(yaml)), 0);
    free(yaml);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sl_close(f->sl);
    unit_rmtree(f->tmp);
    free(f->data);
    free(f->file);
    free(f->config);
    free(f);
    return 0;
}

static void open_sl(struct fx *f)
{
    sl_options_t o = {.config_path = f->config};
    int rc = sl_open(&o, &f->sl);
    if (rc) fail_msg("sl_open: %s", sl_errmsg(rc));
}

/* Version v of the file, replaced atomically (a temp file renamed over it). */
static void write_version(struct fx *f, uint64_t v, size_t size)
{
    uint64_t *words = malloc(size);
    for (size_t i = 0; i < size / 8; i++) words[i] = v;
    char *tmp = NULL;
    assert_true(asprintf(&tmp, "%s.new", f->file) > 0);
    assert_int_equal(unit_write_file(tmp, words, size), 0);
    assert_int_equal(rename(tmp, f->file), 0);
    free(tmp);
    free(words);
}

/* The one version a buffer holds, 0 if it is too short to tell, UINT64_MAX if it mixes two.
 * Reads need not be word aligned: every byte is compared with the word the first 8 make. */
static uint64_t version_of(const uint8_t *buf, size_t len, uint64_t off)
{
    if (len == 0) return 0;
    uint64_t v = 0;
    uint8_t *vb = (uint8_t *)&v;
    for (size_t i = 0; i < len; i++) vb[(off + i) % 8] = buf[i];
    if (len < 8) return 0; /* too short to name a version */
    for (size_t i = 0; i < len; i++)
        if (buf[i] != vb[(off + i) % 8]) return UINT64_MAX;
    return v;
}

static void repinned_before_the_first_byte(void **state)
{
    struct fx *f = *state;
    write_version(f, 1, FILE_SIZE);
    open_sl(f);
    sl_file_t *h;
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    write_version(f, 2, FILE_SIZE + PAGE); /* replaced before the first read */
    uint8_t buf[2 * PAGE];
    size_t n;
    assert_int_equal(sl_file_pread(h, buf, sizeof(buf), 0, &n), 0);
    assert_int_equal(n, sizeof(buf));
    assert_int_equal(version_of(buf, n, 0), 2);
    assert_int_equal(sl_file_stat(h)->size, FILE_SIZE + PAGE);
    sl_file_close(h);
}

static void changed_after_the_first_byte_is_an_error(void **state)
{
    struct fx *f = *state;
    write_version(f, 1, FILE_SIZE);
    open_sl(f);
    sl_file_t *h;
    uint8_t buf[PAGE];
    size_t n;
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    assert_int_equal(sl_file_advise(h, 0, PAGE, SL_ADVISE_RANDOM), 0);
    assert_int_equal(sl_file_pread(h, buf, PAGE, 0, &n), 0);
    assert_int_equal(version_of(buf, n, 0), 1);
    write_version(f, 2, FILE_SIZE);
    /* An uncached page of the old version cannot be fetched any more: an error, not v2. */
    int rc = sl_file_pread(h, buf, PAGE, 10 * PAGE, &n);
    assert_int_equal(rc, SL_E_CHANGED);
    assert_non_null(strstr(sl_errmsg(rc), "/d/v.bin"));
    /* A cached page of the pinned version is still served. */
    assert_int_equal(sl_file_pread(h, buf, PAGE, 0, &n), 0);
    assert_int_equal(version_of(buf, n, 0), 1);
    sl_file_close(h);
    /* A new handle sees the new version. */
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    assert_int_equal(sl_file_pread(h, buf, PAGE, 10 * PAGE, &n), 0);
    assert_int_equal(version_of(buf, n, 10 * PAGE), 2);
    sl_file_close(h);
}

struct reader {
    sl_file_t *h;
    unsigned seed;
    _Atomic bool *stop;
    uint64_t seen;    /* the version its successful reads returned (0: none yet) */
    unsigned reads, changed, mixed, other_errors;
};

static void *read_loop(void *arg)
{
    struct reader *r = arg;
    uint8_t buf[3 * PAGE];
    while (!atomic_load(r->stop)) {
        uint64_t off = (uint64_t)rand_r(&r->seed) % FILE_SIZE;
        size_t len = 1 + (size_t)rand_r(&r->seed) % sizeof(buf), n;
        int rc = sl_file_pread(r->h, buf, len, off, &n);
        if (rc == SL_E_CHANGED) {
            r->changed++;
            continue;
        }
        if (rc) {
            r->other_errors++;
            continue;
        }
        r->reads++;
        uint64_t v = version_of(buf, n, off);
        if (v == UINT64_MAX || (r->seen && v && v != r->seen))
            r->mixed++;
        else if (v)
            r->seen = v;
    }
    return NULL;
}

static void threads_never_see_two_versions(void **state)
{
    struct fx *f = *state;
    write_version(f, 1, FILE_SIZE);
    open_sl(f);
    for (int round = 0; round < 20; round++) {
        enum { NT = 6 };
        _Atomic bool stop = false;
        struct reader r[NT];
        pthread_t th[NT];
        sl_file_t *h;
        assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
        for (int i = 0; i < NT; i++) {
            r[i] = (struct reader){.h = h, .seed = (unsigned)(round * 100 + i), .stop = &stop};
            assert_int_equal(pthread_create(&th[i], NULL, read_loop, &r[i]), 0);
        }
        /* Replace the file under them, twice, at different moments each round. */
        for (int k = 0; k < 2; k++) {
            usleep((useconds_t)(200 + (round * 137 + k * 911) % 3000));
            write_version(f, 2 + (uint64_t)round * 2 + (uint64_t)k, FILE_SIZE);
        }
        usleep(2000);
        atomic_store(&stop, true);
        uint64_t version = 0;
        for (int i = 0; i < NT; i++) {
            pthread_join(th[i], NULL);
            assert_int_equal(r[i].mixed, 0);
            assert_int_equal(r[i].other_errors, 0);
            /* All threads of one handle saw one version. */
            if (r[i].seen) {
                if (version && version != r[i].seen)
                    fail_msg("round %d: one handle returned versions %llu and %llu", round,
                             (unsigned long long)version, (unsigned long long)r[i].seen);
                version = r[i].seen;
            }
        }
        sl_file_close(h);
    }
}

static sl_cache_stats_t stats_after_close(struct fx *f, sl_file_t *h)
{
    sl_cache_stats_t s;
    sl_file_close(h); /* waits for its read-ahead */
    assert_int_equal(sl_cache_stats(f->sl, &s), 0);
    return s;
}

/* sl over a fresh version v of the test file (size bytes), that file opened, counters zeroed. */
static sl_file_t *open_counted(struct fx *f, uint64_t v, size_t size)
{
    sl_file_t *h;
    write_version(f, v, size);
    open_sl(f);
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    assert_int_equal(sl_cache_stats_reset(f->sl), 0);
    return h;
}

/* A sequential reader costs the store one request per run of pages, not one per page, its own
 * first pages included; and every page is fetched once. */
static void stream_fetches_runs_each_page_once(void **state)
{
    struct fx *f = *state;
    enum { NPAGES = 256, SIZE = NPAGES * PAGE };
    sl_file_t *h = open_counted(f, 7, SIZE);
    static uint8_t buf[3 * PAGE + 100]; /* reads that straddle pages */
    for (uint64_t off = 0; off < SIZE; off += sizeof(buf)) {
        size_t n;
        assert_int_equal(sl_file_pread(h, buf, sizeof(buf), off, &n), 0);
        assert_int_equal(n, SIZE - off < sizeof(buf) ? SIZE - off : sizeof(buf));
        assert_int_equal(version_of(buf, n, off), 7);
    }
    sl_cache_stats_t s = stats_after_close(f, h);
    assert_int_equal(s.ufs_bytes_read, SIZE);
    assert_int_equal(s.misses, NPAGES);
    /* Runs grow 2, 4, 6... pages: 256 pages take about 15; one per page would take 256. */
    if (s.ufs_requests > NPAGES / 8) fail_msg("%llu store requests for %d pages",
                                              (unsigned long long)s.ufs_requests, NPAGES);
}

/* A small file (two pages) read from its start costs one request: the stream's first run
 * covers it whole; its later reads are hits. */
static void small_file_is_one_request(void **state)
{
    struct fx *f = *state;
    enum { SIZE = 2 * PAGE - 96 };
    sl_file_t *h = open_counted(f, 5, SIZE);
    uint8_t buf[64];
    size_t n;
    assert_int_equal(sl_file_pread(h, buf, sizeof(buf), 0, &n), 0);
    assert_int_equal(version_of(buf, n, 0), 5);
    assert_int_equal(sl_file_pread(h, buf, sizeof(buf), SIZE - sizeof(buf), &n), 0);
    assert_int_equal(n, sizeof(buf));
    assert_int_equal(version_of(buf, n, SIZE - sizeof(buf)), 5);
    sl_cache_stats_t s = stats_after_close(f, h);
    assert_int_equal(s.ufs_bytes_read, SIZE);
    assert_int_equal(s.ufs_requests, 1);
}

/* Reads at scattered offsets are random: only the pages they touch are fetched. */
static void random_reads_fetch_only_their_pages(void **state)
{
    struct fx *f = *state;
    enum { NPAGES = 256, SIZE = NPAGES * PAGE };
    sl_file_t *h = open_counted(f, 9, SIZE);
    static const unsigned pages[] = {200, 3, 77, 78, 150, 9, 251, 40};
    uint8_t buf[PAGE / 2];
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        size_t n;
        uint64_t off = (uint64_t)pages[i] * PAGE + 1000;
        assert_int_equal(sl_file_pread(h, buf, sizeof(buf), off, &n), 0);
        assert_int_equal(n, sizeof(buf));
        assert_int_equal(version_of(buf, n, off), 9);
    }
    sl_cache_stats_t s = stats_after_close(f, h);
    assert_int_equal(s.ufs_bytes_read, sizeof(pages) / sizeof(pages[0]) * PAGE);
}

/* Sequential reads after a seek (a Parquet column chunk read in pieces) earn read-ahead as
 * they go: never more pages ahead than they have read. Kept up, they are a stream. */
static void run_after_a_seek_earns_its_read_ahead(void **state)
{
    struct fx *f = *state;
    enum { NPAGES = 512, SIZE = NPAGES * PAGE, FIRST = 100 };
    sl_file_t *h = open_counted(f, 4, SIZE);
    uint8_t buf[PAGE / 2];
    uint64_t off = (uint64_t)FIRST * PAGE + 16;
    for (int i = 0; i < 8; i++, off += sizeof(buf)) { /* 4 pages' worth, in halves */
        size_t n;
        assert_int_equal(sl_file_pread(h, buf, sizeof(buf), off, &n), 0);
        assert_int_equal(version_of(buf, n, off), 4);
    }
    sl_file_close(h);
    sl_cache_stats_t s;
    assert_int_equal(sl_cache_stats(f->sl, &s), 0);
    uint64_t touched = 5 * PAGE; /* pages 100-104: the reads cross into the fifth */
    if (s.ufs_bytes_read > 2 * touched)
        fail_msg("read %llu bytes for %llu touched", (unsigned long long)s.ufs_bytes_read,
                 (unsigned long long)touched);

    /* Read on for 300 pages: a stream, fetched in runs. */
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    assert_int_equal(sl_cache_stats_reset(f->sl), 0);
    static uint8_t big[16 * 1024];
    for (off = 200 * PAGE + 16; off < 500 * PAGE; off += sizeof(big)) {
        size_t n;
        assert_int_equal(sl_file_pread(h, big, sizeof(big), off, &n), 0);
    }
    s = stats_after_close(f, h);
    if (s.ufs_requests > 300 / 4) fail_msg("%llu requests for 300 pages",
                                           (unsigned long long)s.ufs_requests);
}

/* The version of the bytes an extent holds, read from RAM or from its descriptor. */
static uint64_t extent_version(const sl_extent_t *e, uint64_t off)
{
    uint8_t *buf = malloc(e->len);
    assert_non_null(buf);
    if (e->data)
        memcpy(buf, e->data, e->len);
    else
        assert_int_equal(pread(e->fd, buf, e->len, (off_t)e->fd_off), (ssize_t)e->len);
    uint64_t v = version_of(buf, e->len, off);
    free(buf);
    return v;
}

/* Reads each page of the second half of h's npages once, out of order (random: kept). */
static void fill_ram_with_second_half(sl_file_t *h, unsigned npages)
{
    uint8_t buf[16];
    for (unsigned i = 0; i < npages / 2; i++) {
        size_t n;
        uint64_t page = npages / 2 + (i * 37) % (npages / 2); /* 37: prime to npages / 2 */
        assert_int_equal(sl_file_pread(h, buf, sizeof(buf), page * PAGE + 8, &n), 0);
    }
}

/* Pages on the cache disk and not in RAM come as descriptors of their page files when RAM is
 * full (a reader reads just what it needs, not the page), once this process knows them good:
 * a new process checks a page (reads it whole) first. */
static void disk_pages_come_as_descriptors(void **state)
{
    struct fx *f = *state;
    enum { NPAGES = 512, SIZE = NPAGES * PAGE }; /* twice cache.memory */
    sl_file_t *h = open_counted(f, 3, SIZE);
    static uint8_t buf[64 * 1024];
    for (uint64_t off = 0; off < SIZE; off += sizeof(buf)) {
        size_t n;
        assert_int_equal(sl_file_pread(h, buf, sizeof(buf), off, &n), 0);
    }
    sl_file_close(h);

    /* RAM filled with the second half (random reads keep their pages): the first half,
     * written to disk by this process and long gone from RAM, comes as descriptors. */
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    fill_ram_with_second_half(h, NPAGES);
    assert_int_equal(sl_cache_stats_reset(f->sl), 0);
    static const unsigned pages[] = {10, 200, 11, 77};
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        sl_extent_t e[2];
        int n;
        size_t got;
        uint64_t off = (uint64_t)pages[i] * PAGE + 100;
        assert_int_equal(sl_file_map(h, off, PAGE, e, 2, &n, &got), 0);
        assert_int_equal(n, 2);
        assert_int_equal(got, PAGE);
        assert_null(e[0].data);
        assert_true(e[0].fd >= 0);
        assert_int_equal(e[0].len, PAGE - 100);
        assert_int_equal(extent_version(&e[0], off), 3);
        assert_int_equal(extent_version(&e[1], off + e[0].len), 3);
        sl_unmap(f->sl, e, n);
        size_t nr;
        assert_int_equal(sl_file_pread(h, buf, 3 * PAGE, off, &nr), 0);
        assert_int_equal(version_of(buf, nr, off), 3);
    }
    int n;
    size_t got;
    sl_cache_stats_t s = stats_after_close(f, h);
    assert_int_equal(s.ufs_bytes_read, 0);
    assert_int_equal(s.misses, 0);

    /* A new process, RAM full again: the page is read whole and checked first (into RAM),
     * not handed out. */
    sl_close(f->sl);
    open_sl(f);
    assert_int_equal(sl_file_open(f->sl, "/d/v.bin", &h), 0);
    fill_ram_with_second_half(h, NPAGES);
    sl_extent_t e;
    assert_int_equal(sl_file_map(h, 200 * PAGE, 512, &e, 1, &n, &got), 0);
    assert_non_null(e.data);
    assert_int_equal(e.fd, -1);
    assert_int_equal(extent_version(&e, 200 * PAGE), 3);
    sl_unmap(f->sl, &e, n);
    s = stats_after_close(f, h);
    assert_int_equal(s.ufs_bytes_read, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(repinned_before_the_first_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(changed_after_the_first_byte_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(threads_never_see_two_versions, setup, teardown),
        cmocka_unit_test_setup_teardown(stream_fetches_runs_each_page_once, setup, teardown),
        cmocka_unit_test_setup_teardown(random_reads_fetch_only_their_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(small_file_is_one_request, setup, teardown),
        cmocka_unit_test_setup_teardown(run_after_a_seek_earns_its_read_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(disk_pages_come_as_descriptors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
