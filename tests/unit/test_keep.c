/* test_keep.c - keeping a path on the cache disk (sl_keep): what is kept stays cached while
 * other reads go through a small LRU cache that evicts everything else, until it is released;
 * what finds no room is not kept (and says so), and reads go on. Public API only. */
#include "unit.h"

#include <errno.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "sluice.h"

#define PAGE 4096
#define CACHE_PAGES 32

struct fx {
    char *tmp, *data;
    sl_t *sl;
};

static void write_pages(struct fx *f, const char *rel, int pages, int value)
{
    static uint8_t bytes[16 * PAGE];
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", f->data, rel) > 0);
    memset(bytes, value, sizeof(bytes));
    assert_true(pages <= 16);
    assert_int_equal(unit_write_file(p, bytes, (size_t)pages * PAGE), 0);
    free(p);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->tmp = unit_tmpdir();
    assert_non_null(f->tmp);
    assert_true(asprintf(&f->data, "%s/data", f->tmp) > 0);
    char *config = NULL, *yaml = NULL, *dir = NULL;
    assert_true(asprintf(&config, "%s/sluice.yaml", f->tmp) > 0);
    for (const char *d = "data\0data/kept\0data/kept/sub\0data/other\0"; *d; d += strlen(d) + 1) {
        assert_true(asprintf(&dir, "%s/%s", f->tmp, d) > 0);
        assert_int_equal(mkdir(dir, 0755), 0);
        free(dir);
    }
    assert_true(asprintf(&yaml,
                         "cache:\n  dir: %s/cache\n  size: %dKiB\n  memory: 64KiB\n"
                         "  page_size: 4KiB\nmounts:\n  /d:\n    uri: file://%s\n"
                         "    policy: lru\n",
                         f->tmp, CACHE_PAGES * PAGE / 1024, f->data) > 0);
    assert_int_equal(unit_write_file(config, yaml, strlen(yaml)), 0);
    free(yaml);
    write_pages(f, "kept/a.bin", 8, 'a');
    write_pages(f, "kept/sub/b.bin", 4, 'b');
    for (int i = 0; i < 4; i++) {
        char rel[32];
        snprintf(rel, sizeof(rel), "other/o%d.bin", i);
        write_pages(f, rel, 16, '0' + i);
    }
    sl_options_t o = {.config_path = config};
    int rc = sl_open(&o, &f->sl);
    if (rc) fail_msg("sl_open: %s", sl_errmsg(rc));
    free(config);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sl_close(f->sl);
    unit_rmtree(f->tmp);
    free(f->data);
    free(f);
    return 0;
}

static uint64_t cached(struct fx *f, const char *path)
{
    sl_stat_t st;
    uint64_t bytes;
    assert_int_equal(sl_stat(f->sl, path, &st), 0);
    assert_int_equal(sl_cached_bytes(f->sl, path, &st, &bytes), 0);
    return bytes;
}

/* Reads path whole and checks its bytes. */
static void read_all(struct fx *f, const char *path, int pages, int value)
{
    sl_file_t *h;
    static uint8_t buf[16 * PAGE];
    size_t n;
    assert_int_equal(sl_file_open(f->sl, path, &h), 0);
    assert_int_equal(sl_file_pread(h, buf, sizeof(buf), 0, &n), 0);
    assert_int_equal(n, (size_t)pages * PAGE);
    for (size_t i = 0; i < n; i++)
        if (buf[i] != value) fail_msg("%s: byte %zu is %d, not %d", path, i, buf[i], value);
    sl_file_close(h);
}

/* 64 pages of other files through a 32-page cache: all that is not held is evicted. */
static void churn(struct fx *f)
{
    for (int i = 0; i < 4; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/d/other/o%d.bin", i);
        read_all(f, path, 16, '0' + i);
    }
}

static void kept_until_released(void **state)
{
    struct fx *f = *state;
    sl_keep_t *k;
    uint64_t kept, total;
    assert_int_equal(sl_keep(f->sl, "/d/kept", NULL, NULL, &k, &kept, &total), 0);
    assert_int_equal(total, 12 * PAGE);
    assert_int_equal(kept, 12 * PAGE);
    churn(f);
    churn(f);
    assert_int_equal(cached(f, "/d/kept/a.bin"), 8 * PAGE);
    assert_int_equal(cached(f, "/d/kept/sub/b.bin"), 4 * PAGE);
    read_all(f, "/d/kept/a.bin", 8, 'a');

    sl_keep_release(k);
    churn(f);
    assert_true(cached(f, "/d/kept/a.bin") + cached(f, "/d/kept/sub/b.bin") < 12 * PAGE);
}

/* Kept beyond the cache's size: what has no room is not kept, and every read still works. */
static void no_room_not_kept(void **state)
{
    struct fx *f = *state;
    sl_keep_t *k;
    uint64_t kept, total;
    assert_int_equal(sl_keep(f->sl, "/d/other", NULL, NULL, &k, &kept, &total), 0);
    assert_int_equal(total, 64 * PAGE);
    assert_true(kept >= 16 * PAGE);
    assert_true(kept <= CACHE_PAGES * PAGE);
    churn(f);
    read_all(f, "/d/kept/a.bin", 8, 'a');
    sl_cache_stats_t cs;
    assert_int_equal(sl_cache_stats(f->sl, &cs), 0);
    assert_true(cs.bytes_cached <= CACHE_PAGES * PAGE);
    sl_keep_release(k);
    sl_keep_release(NULL);
}

static void missing_path(void **state)
{
    struct fx *f = *state;
    sl_keep_t *k = (sl_keep_t *)1;
    assert_int_equal(sl_keep(f->sl, "/d/nope.bin", NULL, NULL, &k, NULL, NULL), -ENOENT);
    assert_null(k);
    assert_non_null(strstr(sl_errmsg(-ENOENT), "nope.bin"));
}

static bool cancel_second(void *arg)
{
    int *calls = arg;
    return ++*calls > 1;
}

/* Cancelled between files: nothing stays kept, and the error says so. */
static void cancelled(void **state)
{
    struct fx *f = *state;
    sl_keep_t *k = (sl_keep_t *)1;
    int calls = 0;
    assert_int_equal(sl_keep(f->sl, "/d/kept", cancel_second, &calls, &k, NULL, NULL),
                     -ECANCELED);
    assert_null(k);
    assert_int_equal(calls, 2);
    assert_non_null(strstr(sl_errmsg(-ECANCELED), "cancelled"));
    churn(f);
    assert_true(cached(f, "/d/kept/a.bin") + cached(f, "/d/kept/sub/b.bin") < 12 * PAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(kept_until_released, setup, teardown),
        cmocka_unit_test_setup_teardown(no_room_not_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_path, setup, teardown),
        cmocka_unit_test_setup_teardown(cancelled, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
