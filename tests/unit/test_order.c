/* test_order.c - exact-order prefetch: items fetched in exactly the order given, never more
 * than the budget ahead of the reader, held in RAM until the reader has passed them (its reads
 * are hits), items it skipped left alone, bad paths named at the start. Public API only. */
#include "unit.h"

#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>

#include "sluice.h"

#define PAGE 4096
#define NFILES 60
#define FILE_PAGES 2

struct fx {
    char *tmp, *data, *config;
    sl_t *sl;
    char *paths[NFILES]; /* namespace paths, in the order of the epoch */
    sl_load_item_t items[NFILES];
};

static void sleep_ms(long ms)
{
    nanosleep(&(struct timespec){ms / 1000, (ms % 1000) * 1000000L}, NULL);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->tmp = unit_tmpdir();
    assert_non_null(f->tmp);
    assert_true(asprintf(&f->data, "%s/data", f->tmp) > 0);
    assert_true(asprintf(&f->config, "%s/sluice.yaml", f->tmp) > 0);
    assert_int_equal(mkdir(f->data, 0755), 0);
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "cache:\n  dir: %s/cache\n  size: 64MiB\n  memory: 4MiB\n"
                         "  page_size: 4KiB\nmounts:\n  /d: file://%s\n",
                         f->tmp, f->data) > 0);
    assert_int_equal(unit_write_file(f->config, yaml, strlen(yaml)), 0);
    free(yaml);
    static uint8_t bytes[FILE_PAGES * PAGE];
    for (int i = 0; i < NFILES; i++) {
        char *p = NULL;
        assert_true(asprintf(&p, "%s/s%03d.bin", f->data, i) > 0);
        memset(bytes, i, sizeof(bytes));
        assert_int_equal(unit_write_file(p, bytes, sizeof(bytes)), 0);
        free(p);
    }
    /* A seeded shuffle: the epoch's order. */
    int perm[NFILES];
    for (int i = 0; i < NFILES; i++) perm[i] = i;
    srand(7);
    for (int i = NFILES - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int i = 0; i < NFILES; i++) {
        assert_true(asprintf(&f->paths[i], "/d/s%03d.bin", perm[i]) > 0);
        f->items[i] = (sl_load_item_t){.path = f->paths[i], .offset = 0, .length = UINT64_MAX};
    }
    sl_options_t o = {.config_path = f->config};
    int rc = sl_open(&o, &f->sl);
    if (rc) fail_msg("sl_open: %s", sl_errmsg(rc));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sl_close(f->sl);
    unit_rmtree(f->tmp);
    for (int i = 0; i < NFILES; i++) free(f->paths[i]);
    free(f->data);
    free(f->config);
    free(f);
    return 0;
}

/* Waits until the prefetch has nothing in flight and cannot go further. */
static sl_order_stats_t settle(sl_order_t *o)
{
    sl_order_stats_t st, again;
    assert_int_equal(sl_order_stats(o, &st), 0);
    for (int i = 0; i < 2000; i++) {
        sleep_ms(5);
        assert_int_equal(sl_order_stats(o, &again), 0);
        if (again.inflight == 0 && again.fetched == st.fetched && again.skipped == st.skipped &&
            again.failed == st.failed)
            return again;
        st = again;
    }
    fail_msg("the prefetch did not settle");
    return st;
}

static bool cached(struct fx *f, const char *path)
{
    sl_stat_t st;
    uint64_t bytes;
    assert_int_equal(sl_stat(f->sl, path, &st), 0);
    assert_int_equal(sl_cached_bytes(f->sl, path, &st, &bytes), 0);
    return bytes == st.size;
}

/* Opens and reads item i whole, as the reader; returns the bytes' value. */
static int read_item(struct fx *f, int i)
{
    sl_file_t *h;
    uint8_t buf[FILE_PAGES * PAGE];
    size_t n;
    assert_int_equal(sl_file_open(f->sl, f->paths[i], &h), 0);
    assert_int_equal(sl_file_pread(h, buf, sizeof(buf), 0, &n), 0);
    assert_int_equal(n, sizeof(buf));
    sl_file_close(h);
    return buf[0];
}

/* The items on the cache disk are always the first ones of the order, and at most the
 * budget's worth past the reader. */
static void fetched_in_order_within_the_budget(void **state)
{
    struct fx *f = *state;
    enum { WINDOW = 8 }; /* items the budget holds */
    sl_order_options_t opts = {.budget_bytes = WINDOW * FILE_PAGES * PAGE, .max_inflight = 4};
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, f->items, NFILES, &opts, &o), 0);

    for (int pos = 0; pos <= 30; pos += 5) {
        for (int i = pos - 5; pos > 0 && i < pos; i++)
            assert_int_equal(read_item(f, i), atoi(f->paths[i] + strlen("/d/s")));
        sl_order_stats_t st = settle(o);
        assert_int_equal(st.position, (size_t)pos);
        /* Each page fetched once, by the prefetch: the reader's reads found them in RAM. */
        sl_cache_stats_t cs;
        assert_int_equal(sl_cache_stats(f->sl, &cs), 0);
        assert_int_equal(st.skipped, 0);
        assert_int_equal(st.on_disk, 0); /* nothing was on the cache disk to hold there */
        assert_int_equal(st.waits, 0);   /* every item was in RAM before its reader came */
        assert_int_equal(st.floor_inflight, 0);
        assert_int_equal(cs.misses, st.fetched * FILE_PAGES);
        assert_int_equal(cs.ufs_bytes_read, st.fetched * FILE_PAGES * PAGE);
        int ahead = 0;
        bool gap = false;
        for (int i = 0; i < NFILES; i++) {
            bool c = cached(f, f->paths[i]);
            if (c && gap) fail_msg("item %d is cached but an earlier one is not", i);
            gap |= !c;
            if (c && i >= pos) ahead++;
        }
        /* The window is full, and no fuller. */
        assert_int_equal(ahead, WINDOW);
        assert_true(st.held_bytes <= opts.budget_bytes + 16 * FILE_PAGES * PAGE);
    }
    sl_order_stop(o);
}

/* Fetches in flight count against the budget at an item's real size from the first: before
 * the reader moves, what is fetched is the budget's worth, not max_inflight / 4 items counted
 * a page each (16 samples of 32 MiB through a mount: all of cache.memory, and pages that
 * arrived with RAM over its budget were fetched again). Then each page once, by the prefetch. */
static void large_items_fetched_within_the_budget(void **state)
{
    struct fx *f = *state;
    enum { N = 24, PAGES = 16, WINDOW = 4 };
    static uint8_t bytes[PAGES * PAGE];
    char *big = NULL;
    assert_true(asprintf(&big, "%s/big", f->data) > 0);
    assert_int_equal(mkdir(big, 0755), 0);
    char *paths[N];
    sl_load_item_t items[N];
    for (int i = 0; i < N; i++) {
        char *p = NULL;
        assert_true(asprintf(&p, "%s/b%02d.bin", big, i) > 0);
        memset(bytes, i, sizeof(bytes));
        assert_int_equal(unit_write_file(p, bytes, sizeof(bytes)), 0);
        free(p);
        assert_true(asprintf(&paths[i], "/d/big/b%02d.bin", i) > 0);
        items[i] = (sl_load_item_t){.path = paths[i], .length = UINT64_MAX};
    }
    free(big);
    sl_order_options_t opts = {.budget_bytes = WINDOW * PAGES * PAGE}; /* max_inflight: 64 */
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, items, N, &opts, &o), 0);
    sl_order_stats_t st = settle(o);
    sl_cache_stats_t cs;
    assert_int_equal(sl_cache_stats(f->sl, &cs), 0);
    assert_int_equal(cs.misses, WINDOW * PAGES);
    assert_int_equal(st.fetched, WINDOW);
    assert_true(st.held_bytes <= opts.budget_bytes);

    for (int i = 0; i < N; i++) {
        sl_file_t *h;
        size_t n;
        assert_int_equal(sl_file_open(f->sl, paths[i], &h), 0);
        assert_int_equal(sl_file_pread(h, bytes, sizeof(bytes), 0, &n), 0);
        assert_int_equal(n, sizeof(bytes));
        assert_int_equal(bytes[0], i);
        sl_file_close(h);
    }
    st = settle(o);
    assert_true(st.done);
    assert_int_equal(sl_cache_stats(f->sl, &cs), 0);
    assert_int_equal(cs.misses, N * PAGES);
    sl_order_stop(o);
    for (int i = 0; i < N; i++) free(paths[i]);
}

/* Items already on the cache disk (an epoch after the first) are held there, not read into
 * RAM: the window is as wide, the reader's reads are hits and right, and nothing goes to the
 * store. */
static void items_on_disk_held_there(void **state)
{
    struct fx *f = *state;
    enum { WINDOW = 6 };
    assert_int_equal(sl_load(f->sl, f->items, NFILES, NULL, NULL, NULL), 0);
    sl_cache_stats_t before, after;
    assert_int_equal(sl_cache_stats(f->sl, &before), 0);
    assert_int_equal(before.pages_cached, NFILES * FILE_PAGES);

    sl_order_options_t opts = {.budget_bytes = WINDOW * FILE_PAGES * PAGE, .max_inflight = 4};
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, f->items, NFILES, &opts, &o), 0);
    sl_order_stats_t st = settle(o);
    assert_int_equal(st.fetched, WINDOW);
    assert_int_equal(st.on_disk, WINDOW);
    assert_int_equal(st.held_bytes, WINDOW * FILE_PAGES * PAGE);
    for (int i = 0; i < NFILES; i++)
        assert_int_equal(read_item(f, i), atoi(f->paths[i] + strlen("/d/s")));
    st = settle(o);
    assert_true(st.done);
    /* The reader does not wait for the workers: one it overtook is skipped (its read is a hit
     * all the same). Every item fetched was held on disk. */
    assert_int_equal(st.fetched + st.skipped, NFILES);
    assert_true(st.fetched >= NFILES - 6);
    assert_int_equal(st.on_disk, st.fetched);
    assert_int_equal(sl_cache_stats(f->sl, &after), 0);
    assert_int_equal(after.misses, before.misses);
    assert_int_equal(after.ufs_bytes_read, before.ufs_bytes_read);
    assert_int_equal(after.hits - before.hits, NFILES * FILE_PAGES);
    sl_order_stop(o);
}

/* Epochs handed over ahead (sl_order_append): the window goes on past the end of one epoch into
 * the next, an order that ran out takes up what is appended, an open takes its file's
 * occurrence in the epoch being read (also after an epoch that never opened it), and epoch
 * after epoch the order counts on. */
static void next_epochs_appended(void **state)
{
    struct fx *f = *state;
    enum { WINDOW = 8, EPOCHS = 12, SKIPPED = 3 };
    sl_order_options_t opts = {.budget_bytes = WINDOW * FILE_PAGES * PAGE, .max_inflight = 4};
    /* Epoch e reads epoch 1's order turned by e * SKIPPED: epoch 2 starts with epoch 1's
     * item SKIPPED, which epoch 1 leaves unread. */
    sl_load_item_t next[NFILES];
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, f->items, NFILES, &opts, &o), 0);
    for (int i = 0; i < NFILES - WINDOW; i++)
        if (i != SKIPPED) read_item(f, i);
    sl_order_stats_t st = settle(o);
    /* The reader runs ahead of the workers at times (it does not wait for them): the items it
     * got to first are skipped. The window has reached epoch 1's end, and stops there. */
    assert_int_equal(st.fetched + st.skipped, NFILES);
    assert_int_equal(st.items, NFILES);

    for (int e = 2; e <= EPOCHS; e++) {
        int turn = (e - 1) * SKIPPED;
        for (int k = 0; k < NFILES; k++) next[k] = f->items[(k + turn) % NFILES];
        assert_int_equal(sl_order_append(o, next, NFILES), 0);
        size_t start = (size_t)(e - 1) * NFILES;
        if (e == 2) {
            /* What epoch 1 has left is read; the window is then a budget into epoch 2. */
            for (int i = NFILES - WINDOW; i < NFILES; i++) read_item(f, i);
            st = settle(o);
            assert_int_equal(st.items, 2 * NFILES);
            assert_int_equal(st.position, NFILES);
            assert_int_equal(st.fetched + st.skipped, NFILES + WINDOW);
        } else {
            /* The order had run out, its workers waiting: they take up the new epoch. */
            st = settle(o);
            assert_int_equal(st.fetched + st.skipped, start + WINDOW);
        }
        /* Epoch 1's unopened occurrence was dropped at an append: this open is epoch e's. */
        assert_int_equal(read_item(f, (SKIPPED + turn - SKIPPED) % NFILES),
                         atoi(next[0].path + strlen("/d/s")));
        st = settle(o);
        assert_int_equal(st.position, start + 1);
        for (int k = 1; k < NFILES; k++) {
            sl_file_t *h;
            uint8_t buf[FILE_PAGES * PAGE];
            size_t n;
            assert_int_equal(sl_file_open(f->sl, next[k].path, &h), 0);
            assert_int_equal(sl_file_pread(h, buf, sizeof(buf), 0, &n), 0);
            assert_int_equal(buf[0], atoi(next[k].path + strlen("/d/s")));
            sl_file_close(h);
        }
        st = settle(o);
        assert_int_equal(st.position, start + NFILES);
        assert_true(st.done); /* the workers wait for the next append */
    }
    assert_int_equal(st.items, (size_t)EPOCHS * NFILES);
    assert_int_equal(st.failed, 0);
    /* An index of a long-passed item is accepted, one past the end is not. */
    assert_int_equal(sl_order_reached(o, 0), 0);
    assert_int_equal(sl_order_reached(o, st.items), SL_E_USAGE);
    sl_order_stop(o);
}

/* Items the reader passed before they were fetched are skipped; once it is past the end, every
 * item is fetched or skipped and nothing stays held. */
static void skipped_and_released(void **state)
{
    struct fx *f = *state;
    sl_order_options_t opts = {.budget_bytes = 4 * FILE_PAGES * PAGE, .max_inflight = 2};
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, f->items, NFILES, &opts, &o), 0);
    settle(o);
    read_item(f, 40); /* a jump: items 4 to 39 were never fetched */
    sl_order_stats_t st = settle(o);
    assert_int_equal(st.position, 41);
    /* The reader got to an item before it was fetched: a floor under the in-flight target. */
    assert_int_equal(st.waits, 1);
    assert_int_equal(st.floor_inflight, opts.max_inflight); /* doubled, up to the cap */
    assert_true(st.target_inflight >= st.floor_inflight);
    assert_false(cached(f, f->paths[20]));
    assert_true(st.skipped >= 30);
    for (int i = 41; i < NFILES; i++) read_item(f, i);
    st = settle(o);
    assert_true(st.done);
    assert_int_equal(st.fetched + st.skipped + st.failed, NFILES);
    assert_int_equal(st.failed, 0);
    sl_order_stop(o);
}

/* A missing file is left to its reader (who gets the error); the others are fetched. A path
 * no mount holds is named at the start. */
static void missing_and_bad_paths(void **state)
{
    struct fx *f = *state;
    char *gone = NULL;
    assert_true(asprintf(&gone, "%s/data%s", f->tmp, f->paths[1] + 2) > 0);
    assert_int_equal(unlink(gone), 0);
    free(gone);
    sl_order_t *o;
    assert_int_equal(sl_order_start(f->sl, f->items, 4, NULL, &o), 0);
    sl_order_stats_t st = settle(o);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.fetched, 3);
    assert_true(cached(f, f->paths[3]));
    sl_order_stop(o);

    sl_load_item_t bad[2] = {f->items[0], {.path = "/nomount/x.bin", .length = UINT64_MAX}};
    /* Appended, a bad path is named too, and nothing of the list is appended. */
    assert_int_equal(sl_order_start(f->sl, f->items, 4, NULL, &o), 0);
    int rc = sl_order_append(o, bad, 2);
    assert_int_equal(rc, SL_E_NO_MOUNT);
    assert_non_null(strstr(sl_errmsg(rc), "/nomount"));
    assert_int_equal(sl_order_stats(o, &st), 0);
    assert_int_equal(st.items, 4);
    sl_order_stop(o);

    rc = sl_order_start(f->sl, bad, 2, NULL, &o);
    assert_int_equal(rc, SL_E_NO_MOUNT);
    assert_non_null(strstr(sl_errmsg(rc), "/nomount"));
    assert_null(o);
    sl_order_stop(NULL);
}

/* Order lists as text: paths, ranges, comments, a mount point taken off, bad lines named. */
static void order_text_parsed(void **state)
{
    (void)state;
    static const char text[] = "# epoch 3\n"
                               "/mnt/sl/d/a.jpg\n"
                               "\n"
                               "/d/b.parquet\t4KiB\t100\r\n"
                               "/mnt/sl/d/c.bin\t7\n"
                               "/mnt/slx/other";
    sl_load_item_t *items;
    size_t n;
    assert_int_equal(sl_order_parse(text, strlen(text), "/mnt/sl/", &items, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(items[0].path, "/d/a.jpg");
    assert_int_equal(items[0].offset, 0);
    assert_true(items[0].length == UINT64_MAX);
    assert_string_equal(items[1].path, "/d/b.parquet");
    assert_int_equal(items[1].offset, 4096);
    assert_int_equal(items[1].length, 100);
    assert_string_equal(items[2].path, "/d/c.bin");
    assert_int_equal(items[2].offset, 7);
    assert_true(items[2].length == UINT64_MAX);
    assert_string_equal(items[3].path, "/mnt/slx/other"); /* not under the prefix */
    sl_order_items_free(items, n);

    static const char bad[] = "/d/a.jpg\n/d/b.jpg\tten\n";
    int rc = sl_order_parse(bad, strlen(bad), NULL, &items, &n);
    assert_int_equal(rc, SL_E_USAGE);
    assert_non_null(strstr(sl_errmsg(rc), "line 2"));
    assert_non_null(strstr(sl_errmsg(rc), "'ten'"));
    rc = sl_order_parse("/mnt/sl\n", 8, "/mnt/sl", &items, &n);
    assert_int_equal(rc, SL_E_USAGE);
    assert_int_equal(sl_order_parse("", 0, NULL, &items, &n), 0);
    assert_int_equal(n, 0);
    sl_order_items_free(items, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fetched_in_order_within_the_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(large_items_fetched_within_the_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(items_on_disk_held_there, setup, teardown),
        cmocka_unit_test_setup_teardown(next_epochs_appended, setup, teardown),
        cmocka_unit_test_setup_teardown(skipped_and_released, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_and_bad_paths, setup, teardown),
        cmocka_unit_test(order_text_parsed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
