/* test_mdcache.c - the metadata cache over a real LMDB environment: cached stats and negative
 * entries for the mount's metadata_ttl, listing snapshots, and invalidation. Whether the store
 * was asked is read from the ufs_requests counter. */
#include "unit.h"

#include <sys/stat.h>
#include <time.h>

#include "meta/meta.h"

/* Mounts: /t10 (metadata_ttl 10m), /t0 (0), /tf (-1: forever), /td (the store's default, 0 for
 * local), /short (100ms). Each is its own directory under TMP. */
struct fixture {
    char *tmp;
    struct sl_config *cfg;
    struct sl_ns *ns;
    struct sl_db *db;
    struct sl_md md;
    struct sl_counters ctr;
};

static struct fixture *fixture_open(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    char *t = unit_tmpdir();
    assert_non_null(t);
    f->tmp = realpath(t, NULL);
    assert_non_null(f->tmp);
    free(t);

    static const char *const dirs[] = {"t10", "t0", "tf", "td", "short"};
    for (size_t i = 0; i < SL_ARRAY_LEN(dirs); i++) {
        char *p = NULL;
        assert_true(asprintf(&p, "%s/%s", f->tmp, dirs[i]) > 0);
        assert_int_equal(mkdir(p, 0755), 0);
        free(p);
    }
    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "mounts:\n"
                         "  /t10: {uri: %s/t10, metadata_ttl: 10m}\n"
                         "  /t0: {uri: %s/t0, metadata_ttl: 0}\n"
                         "  /tf: {uri: %s/tf, metadata_ttl: -1}\n"
                         "  /td: %s/td\n"
                         "  /short: {uri: %s/short, metadata_ttl: 100ms}\n",
                         f->tmp, f->tmp, f->tmp, f->tmp, f->tmp) > 0);
    int rc = sl__config_parse("/cfg/sluice.yaml", yaml, strlen(yaml), &f->cfg);
    free(yaml);
    if (rc) fail_msg("config: %s", sl_errmsg(rc));
    if ((rc = sl__ns_open(f->cfg, &f->ctr, &f->ns))) fail_msg("ns: %s", sl_errmsg(rc));

    char *index = NULL;
    assert_true(asprintf(&index, "%s/index", f->tmp) > 0);
    if ((rc = sl__db_open(index, &f->db))) fail_msg("db %s: %s", index, sl_errmsg(rc));
    free(index);
    f->md.db = f->db;
    return f;
}

static void fixture_close(struct fixture *f)
{
    sl__db_close(f->db);
    sl__ns_close(f->ns);
    sl__config_free(f->cfg);
    unit_rmtree(f->tmp);
    free(f);
}

static uint64_t requests(struct fixture *f)
{
    return atomic_load(&f->ctr.v[SL_CTR_UFS_REQUESTS]);
}

/* Writes data at the namespace path ("/t10/x" -> TMP/t10/x). */
static void put(struct fixture *f, const char *nspath, const char *data)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s%s", f->tmp, nspath) > 0);
    assert_int_equal(unit_write_file(p, data, strlen(data)), 0);
    free(p);
}

static void make_dir(struct fixture *f, const char *nspath)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s%s", f->tmp, nspath) > 0);
    assert_int_equal(mkdir(p, 0755), 0);
    free(p);
}

static void resolve(struct fixture *f, const char *path, struct sl_resolved *r)
{
    int rc = sl__ns_resolve(f->ns, path, r);
    if (rc) fail_msg("%s: %s", path, sl_errmsg(rc));
}

/* sl__md_stat of a namespace path. */
static int md_stat(struct fixture *f, const char *path, sl_stat_t *st)
{
    struct sl_resolved r;
    resolve(f, path, &r);
    int rc = sl__md_stat(&f->md, &r, st);
    sl__resolved_free(&r);
    return rc;
}

static void md_invalidate(struct fixture *f, const char *path)
{
    struct sl_resolved r;
    resolve(f, path, &r);
    sl__md_invalidate(&f->md, &r);
    sl__resolved_free(&r);
}

struct listing {
    char **names;
    sl_stat_t *st;
    size_t n, cap;
    size_t stop_after; /* 0: never */
    int stop_value;    /* what the callback returns to stop; 0: 1 */
    size_t after_stop; /* calls made after the callback said stop */
};

static int collect(void *arg, const sl_dirent_t *ent)
{
    struct listing *l = arg;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->names = realloc(l->names, l->cap * sizeof(char *));
        l->st = realloc(l->st, l->cap * sizeof(sl_stat_t));
        assert_non_null(l->names);
        assert_non_null(l->st);
    }
    l->names[l->n] = strdup(ent->name);
    l->st[l->n] = ent->st;
    l->n++;
    if (l->stop_after && l->n > l->stop_after) l->after_stop++;
    return l->stop_after && l->n >= l->stop_after ? (l->stop_value ? l->stop_value : 1) : 0;
}

static void listing_free(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    free(l->st);
    memset(l, 0, sizeof(*l));
}

static int md_list(struct fixture *f, const char *path, struct listing *l)
{
    struct sl_resolved r;
    resolve(f, path, &r);
    int rc = sl__md_list(&f->md, &r, collect, l);
    sl__resolved_free(&r);
    return rc;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool has_name(const struct listing *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], name) == 0) return true;
    return false;
}

/* ---- stat ----------------------------------------------------------------------------------- */

static void stat_cached_within_ttl(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    sl_stat_t a, b;

    put(f, "/t10/f", "12345");
    assert_int_equal(md_stat(f, "/t10/f", &a), 0);
    assert_int_equal(requests(f), 1);
    assert_int_equal(a.type, SL_TYPE_FILE);
    assert_int_equal(a.size, 5);

    /* The file changes in the store; within the TTL the cached answer stands. */
    put(f, "/t10/f", "1234567890");
    assert_int_equal(md_stat(f, "/t10/f", &b), 0);
    assert_int_equal(requests(f), 1);
    assert_int_equal(b.size, 5);
    assert_string_equal(b.version, a.version);
    assert_int_equal(b.mtime_ns, a.mtime_ns);
    assert_int_equal(b.mode, a.mode);
    assert_int_equal(b.type, SL_TYPE_FILE);

    /* Until invalidated. */
    md_invalidate(f, "/t10/f");
    assert_int_equal(md_stat(f, "/t10/f", &b), 0);
    assert_int_equal(requests(f), 2);
    assert_int_equal(b.size, 10);
    assert_string_not_equal(b.version, a.version);
    assert_int_equal(md_stat(f, "/t10/f", &b), 0);
    assert_int_equal(requests(f), 2);

    /* Directories too. */
    make_dir(f, "/t10/d");
    assert_int_equal(md_stat(f, "/t10/d", &a), 0);
    assert_int_equal(a.type, SL_TYPE_DIR);
    assert_int_equal(md_stat(f, "/t10/d", &a), 0);
    assert_int_equal(a.type, SL_TYPE_DIR);
    assert_int_equal(requests(f), 3);

    /* Forever (-1) keeps answers the same way. */
    put(f, "/tf/g", "abc");
    assert_int_equal(md_stat(f, "/tf/g", &a), 0);
    put(f, "/tf/g", "abcdef");
    assert_int_equal(md_stat(f, "/tf/g", &b), 0);
    assert_int_equal(b.size, 3);
    assert_int_equal(requests(f), 4);

    /* The answers live in the cache directory, not in this process: a new environment (as
     * another process would open) serves them too. */
    sl__db_close(f->db);
    char *index = NULL;
    assert_true(asprintf(&index, "%s/index", f->tmp) > 0);
    assert_int_equal(sl__db_open(index, &f->db), 0);
    free(index);
    f->md.db = f->db;
    assert_int_equal(md_stat(f, "/tf/g", &b), 0);
    assert_int_equal(b.size, 3);
    assert_int_equal(md_stat(f, "/t10/f", &b), 0);
    assert_int_equal(b.size, 10);
    assert_int_equal(requests(f), 4);
    fixture_close(f);
}

static void negative_entries(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    sl_stat_t st;

    int rc = md_stat(f, "/t10/late", &st);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(strstr(sl_errmsg(rc), "/t10/late"));
    assert_int_equal(requests(f), 1);

    /* Created in the store: within the TTL it is still missing, without asking. */
    put(f, "/t10/late", "here now");
    rc = md_stat(f, "/t10/late", &st);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(strstr(sl_errmsg(rc), "/t10/late"));
    assert_int_equal(requests(f), 1);

    /* A sibling is not affected by the negative entry. */
    put(f, "/t10/other", "x");
    assert_int_equal(md_stat(f, "/t10/other", &st), 0);
    assert_int_equal(requests(f), 2);

    md_invalidate(f, "/t10/late");
    assert_int_equal(md_stat(f, "/t10/late", &st), 0);
    assert_int_equal(st.size, 8);
    assert_int_equal(requests(f), 3);

    /* Errors other than "missing" are not cached. */
    char *fifo = NULL;
    assert_true(asprintf(&fifo, "%s/t10/fifo", f->tmp) > 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    free(fifo);
    assert_int_equal(md_stat(f, "/t10/fifo", &st), SL_E_NOT_FILE);
    assert_int_equal(md_stat(f, "/t10/fifo", &st), SL_E_NOT_FILE);
    assert_int_equal(requests(f), 5);
    fixture_close(f);
}

static void ttl_zero_goes_to_store(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    static const char *const mounts[] = {"/t0", "/td"};
    uint64_t want = 0;
    for (size_t i = 0; i < SL_ARRAY_LEN(mounts); i++) {
        char path[64];
        sl_stat_t st;
        snprintf(path, sizeof(path), "%s/f", mounts[i]);
        assert_int_equal(md_stat(f, path, &st), -ENOENT);
        assert_int_equal(requests(f), ++want);
        put(f, path, "abc");
        assert_int_equal(md_stat(f, path, &st), 0); /* seen at once */
        assert_int_equal(requests(f), ++want);
        assert_int_equal(st.size, 3);
        put(f, path, "abcdefg");
        assert_int_equal(md_stat(f, path, &st), 0);
        assert_int_equal(requests(f), ++want);
        assert_int_equal(st.size, 7);

        struct listing l = {0};
        assert_int_equal(md_list(f, mounts[i], &l), 0);
        assert_int_equal(requests(f), ++want);
        assert_int_equal(l.n, 1);
        listing_free(&l);
        char g[64];
        snprintf(g, sizeof(g), "%s/g", mounts[i]);
        put(f, g, "x");
        assert_int_equal(md_list(f, mounts[i], &l), 0);
        assert_int_equal(requests(f), ++want);
        assert_int_equal(l.n, 2);
        listing_free(&l);
        /* Nothing to invalidate, and no harm in asking. */
        md_invalidate(f, path);
    }

    /* Without a cache directory every call goes to the store, whatever the TTL. */
    struct sl_md none = {NULL};
    struct sl_resolved r;
    sl_stat_t st;
    resolve(f, "/t10/nocache", &r);
    assert_int_equal(sl__md_stat(&none, &r, &st), -ENOENT);
    assert_int_equal(sl__md_stat(&none, &r, &st), -ENOENT);
    assert_int_equal(requests(f), want + 2);
    put(f, "/t10/nocache", "abcd");
    assert_int_equal(sl__md_stat(&none, &r, &st), 0);
    assert_int_equal(st.size, 4);
    sl__md_invalidate(&none, &r);
    sl__resolved_free(&r);
    fixture_close(f);
}

static void ttl_expires(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    sl_stat_t st;
    assert_int_equal(md_stat(f, "/short/f", &st), -ENOENT);
    put(f, "/short/f", "abc");
    struct timespec ts = {0, 150 * 1000 * 1000}; /* past the 100ms TTL */
    nanosleep(&ts, NULL);
    assert_int_equal(md_stat(f, "/short/f", &st), 0);
    assert_int_equal(st.size, 3);
    assert_int_equal(requests(f), 2);

    struct listing l = {0};
    assert_int_equal(md_list(f, "/short", &l), 0);
    assert_int_equal(l.n, 1);
    listing_free(&l);
    put(f, "/short/g", "x");
    nanosleep(&ts, NULL);
    assert_int_equal(md_list(f, "/short", &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(requests(f), 4);
    listing_free(&l);
    fixture_close(f);
}

/* ---- listings ------------------------------------------------------------------------------- */

static void listing_snapshot(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    enum { N = 300 }; /* more than one store page (256) and several snapshot batches (64) */
    make_dir(f, "/t10/dir");
    make_dir(f, "/t10/dir/sub");
    for (int i = 0; i < N; i++) {
        char path[64], data[8] = "1234567";
        snprintf(path, sizeof(path), "%s/t10/dir/n%03d", f->tmp, (i * 7919) % N);
        assert_int_equal(unit_write_file(path, data, (size_t)(i % 8)), 0);
    }

    struct listing first = {0}, second = {0};
    assert_int_equal(md_list(f, "/t10/dir", &first), 0);
    uint64_t after_first = requests(f);
    assert_int_equal(after_first, 1);
    assert_int_equal(first.n, N + 1);

    /* A file appears; the snapshot is what was listed. */
    put(f, "/t10/dir/zz-new", "new");
    assert_int_equal(md_list(f, "/t10/dir", &second), 0);
    assert_int_equal(requests(f), after_first);
    assert_int_equal(second.n, N + 1);
    assert_false(has_name(&second, "zz-new"));

    /* Same names, now in sorted order, each once, with the same metadata. */
    for (size_t i = 1; i < second.n; i++)
        if (strcmp(second.names[i - 1], second.names[i]) >= 0)
            fail_msg("not sorted/unique at %zu: '%s' then '%s'", i, second.names[i - 1],
                     second.names[i]);
    for (size_t i = 0; i < first.n; i++) {
        size_t j = 0;
        while (j < second.n && strcmp(second.names[j], first.names[i]) != 0) j++;
        if (j == second.n) fail_msg("'%s' missing from the snapshot", first.names[i]);
        assert_int_equal(second.st[j].type, first.st[i].type);
        assert_int_equal(second.st[j].size, first.st[i].size);
        assert_int_equal(second.st[j].mtime_ns, first.st[i].mtime_ns);
        assert_string_equal(second.st[j].version, first.st[i].version);
    }
    char **sorted = malloc(first.n * sizeof(char *));
    memcpy(sorted, first.names, first.n * sizeof(char *));
    qsort(sorted, first.n, sizeof(char *), cmp_str);
    for (size_t i = 0; i < first.n; i++) assert_string_equal(sorted[i], second.names[i]);
    free(sorted);

    /* The listing also told the stats of its children. */
    sl_stat_t st;
    assert_int_equal(md_stat(f, "/t10/dir/n005", &st), 0);
    assert_int_equal(md_stat(f, "/t10/dir/sub", &st), 0);
    assert_int_equal(st.type, SL_TYPE_DIR);
    assert_int_equal(requests(f), after_first);

    /* A callback that stops a snapshot listing: its value comes back. */
    struct listing third = {.stop_after = 100, .stop_value = 7};
    assert_int_equal(md_list(f, "/t10/dir", &third), 7);
    assert_int_equal(third.n, 100);
    assert_int_equal(third.after_stop, 0);
    assert_int_equal(requests(f), after_first);
    for (size_t i = 0; i < third.n; i++) assert_string_equal(third.names[i], second.names[i]);
    listing_free(&third);

    listing_free(&first);
    listing_free(&second);

    /* The root of a mount lists like any directory. */
    assert_int_equal(md_list(f, "/t10", &first), 0);
    assert_int_equal(md_list(f, "/t10", &second), 0);
    assert_int_equal(requests(f), after_first + 1);
    assert_int_equal(first.n, 1);
    assert_int_equal(second.n, 1);
    assert_string_equal(second.names[0], "dir");
    listing_free(&first);
    listing_free(&second);

    /* An empty directory is a snapshot too. */
    assert_int_equal(md_list(f, "/t10/dir/sub", &first), 0);
    assert_int_equal(md_list(f, "/t10/dir/sub", &first), 0);
    assert_int_equal(first.n, 0);
    assert_int_equal(requests(f), after_first + 2);

    /* Missing directories and files are errors that name the path. */
    int rc = md_list(f, "/t10/nope", &first);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(strstr(sl_errmsg(rc), "/t10/nope"));
    rc = md_list(f, "/t10/dir/n001", &first);
    assert_int_equal(rc, -ENOTDIR);
    assert_non_null(strstr(sl_errmsg(rc), "/t10/dir/n001"));
    assert_int_equal(first.n, 0);
    fixture_close(f);
}

static void stopped_listing_is_not_a_snapshot(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/d");
    for (int i = 0; i < 10; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/t10/d/f%d", i);
        put(f, path, "x");
    }
    struct listing l = {.stop_after = 3};
    assert_int_equal(md_list(f, "/t10/d", &l), 1);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.after_stop, 0);
    assert_int_equal(requests(f), 1);
    listing_free(&l);

    /* Not served from what the stopped listing wrote: the store is asked again. */
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(requests(f), 2);
    assert_int_equal(l.n, 10);
    listing_free(&l);

    /* That one was complete: now it is a snapshot. */
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(requests(f), 2);
    assert_int_equal(l.n, 10);
    listing_free(&l);

    /* Stopping on the very first entry, after a complete snapshot expired or was dropped. */
    md_invalidate(f, "/t10/d/f0");
    l.stop_after = 1;
    assert_int_equal(md_list(f, "/t10/d", &l), 1);
    assert_int_equal(l.n, 1);
    assert_int_equal(requests(f), 3);
    listing_free(&l);
    put(f, "/t10/d/f10", "x");
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(requests(f), 4);
    assert_int_equal(l.n, 11);
    assert_true(has_name(&l, "f10"));
    listing_free(&l);
    fixture_close(f);
}

static void invalidate_child_drops_parent_listing(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/d");
    make_dir(f, "/t10/d/e");
    put(f, "/t10/d/a", "a");
    put(f, "/t10/d/e/inner", "i");
    struct listing l = {0};
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(l.n, 2);
    listing_free(&l);
    assert_int_equal(md_list(f, "/t10/d/e", &l), 0);
    listing_free(&l);
    assert_int_equal(md_list(f, "/t10", &l), 0);
    listing_free(&l);
    assert_int_equal(requests(f), 3);

    /* sluice writes /t10/d/b and says so. */
    put(f, "/t10/d/b", "b");
    md_invalidate(f, "/t10/d/b");
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(requests(f), 4);
    assert_int_equal(l.n, 3);
    assert_true(has_name(&l, "b"));
    listing_free(&l);
    /* Only the parent: the grandparent keeps its snapshot. */
    assert_int_equal(md_list(f, "/t10", &l), 0);
    assert_int_equal(l.n, 1);
    listing_free(&l);
    assert_int_equal(requests(f), 4);

    /* A child at the mount's root drops the root's listing. */
    put(f, "/t10/top", "t");
    md_invalidate(f, "/t10/top");
    assert_int_equal(md_list(f, "/t10", &l), 0);
    assert_int_equal(requests(f), 5);
    assert_int_equal(l.n, 2);
    assert_true(has_name(&l, "top"));
    /* The grandchild directory's snapshot is no business of either. */
    listing_free(&l);

    /* A removed child disappears from the next listing. */
    char *p = NULL;
    assert_true(asprintf(&p, "%s/t10/d/a", f->tmp) > 0);
    assert_int_equal(unlink(p), 0);
    free(p);
    md_invalidate(f, "/t10/d/a");
    sl_stat_t st;
    assert_int_equal(md_stat(f, "/t10/d/a", &st), -ENOENT);
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(l.n, 2);
    assert_false(has_name(&l, "a"));
    listing_free(&l);
    fixture_close(f);
}

/* A callback that returns 1 while a snapshot is served: the listing stops there, with 1, as it
 * does when the store is listed (sl_list's contract: "return non-zero to stop"). */
/* Two listings of one directory at once: A has written its first page when B (here run from A's
 * callback) starts over, wiping A's page, and is interrupted (a process killed mid-listing).
 * A must not then mark as complete a snapshot that holds only B's first page and A's later
 * ones: the next listing goes to the store, and finds every entry. */
struct interleave {
    struct fixture *f;
    struct listing outer;
    bool done;
};

static int interleave_cb(void *arg, const sl_dirent_t *ent)
{
    struct interleave *x = arg;
    if (!x->done) {
        x->done = true;
        struct listing inner = {.stop_after = 1};
        assert_int_equal(md_list(x->f, "/t10/m", &inner), 1);
        listing_free(&inner);
    }
    return collect(&x->outer, ent);
}

static void interleaved_listings_never_complete_a_mix(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/m");
    for (int i = 0; i < 400; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/t10/m/a%03d", i);
        put(f, path, "x");
    }
    struct interleave x = {.f = f};
    struct sl_resolved r;
    resolve(f, "/t10/m", &r);
    assert_int_equal(sl__md_list(&f->md, &r, interleave_cb, &x), 0);
    sl__resolved_free(&r);
    assert_int_equal(x.outer.n, 400);
    listing_free(&x.outer);

    uint64_t before = requests(f);
    struct listing now = {0};
    assert_int_equal(md_list(f, "/t10/m", &now), 0);
    assert_int_equal(requests(f), before + 1); /* no snapshot was completed: the store again */
    assert_int_equal(now.n, 400);
    listing_free(&now);
    fixture_close(f);
}

static void stop_with_1_while_serving_snapshot(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/d");
    for (int i = 0; i < 10; i++) {
        char path[32];
        snprintf(path, sizeof(path), "/t10/d/f%d", i);
        put(f, path, "x");
    }
    struct listing l = {0};
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(l.n, 10);
    listing_free(&l);
    assert_int_equal(requests(f), 1);

    l.stop_after = 3;
    l.stop_value = 1;
    int rc = md_list(f, "/t10/d", &l);
    size_t seen = l.n;
    unsigned long long reqs = requests(f);
    listing_free(&l);
    fixture_close(f);
    if (rc != 1 || seen != 3 || reqs != 1)
        fail_msg("stopping with 1 at entry 3 of a snapshot: got rc %d after %zu callbacks and %llu "
                 "store requests; expected rc 1 after 3 callbacks and 1 request",
                 rc, seen, reqs);
}

/* Listing a directory again from the store (its snapshot expired or was dropped) must not throw
 * away the fresh snapshots of its subdirectories. */
static void relisting_parent_keeps_child_snapshots(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/d");
    make_dir(f, "/t10/d/e");
    put(f, "/t10/d/e/inner", "i");
    struct listing l = {0};
    assert_int_equal(md_list(f, "/t10/d/e", &l), 0); /* the subdirectory's snapshot */
    listing_free(&l);
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    listing_free(&l);
    assert_int_equal(requests(f), 2);
    assert_int_equal(md_list(f, "/t10/d/e", &l), 0); /* still a snapshot */
    listing_free(&l);
    unsigned long long after_first = requests(f);

    /* /t10/d changes through sluice and is listed again from the store. */
    put(f, "/t10/d/new", "n");
    md_invalidate(f, "/t10/d/new");
    uint64_t before = requests(f);
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(l.n, 2);
    listing_free(&l);
    assert_int_equal(requests(f), before + 1);

    /* Nothing in /t10/d/e changed, and its snapshot is fresh. */
    before = requests(f);
    assert_int_equal(md_list(f, "/t10/d/e", &l), 0);
    assert_int_equal(l.n, 1);
    listing_free(&l);
    unsigned long long again = requests(f) - before;
    fixture_close(f);
    if (after_first != 2 || again != 0)
        fail_msg("listing /t10/d/e went to the store again after /t10/d was listed from the "
                 "store (%llu requests where 2 were expected; %llu more after a re-listing of "
                 "/t10/d, where 0 were expected): listing a directory drops the listing "
                 "snapshots of its subdirectories", after_first, again);
}

/* A directory's own metadata (mtime, mode) is what the store says, whether or not it was listed
 * in between: listing it must not replace its stat with blanks. */
static void listed_directory_keeps_its_stat(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    make_dir(f, "/t10/d");
    put(f, "/t10/d/a", "a");
    char *p = NULL;
    assert_true(asprintf(&p, "%s/t10/d", f->tmp) > 0);
    assert_int_equal(chmod(p, 0710), 0);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    free(p);
    int64_t mtime = (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;

    sl_stat_t before, after;
    assert_int_equal(md_stat(f, "/t10/d", &before), 0); /* from the store */
    assert_int_equal(before.type, SL_TYPE_DIR);
    assert_int_equal(before.mode, 0710);
    assert_int_equal(before.mtime_ns, mtime);

    struct listing l = {0};
    assert_int_equal(md_list(f, "/t10/d", &l), 0);
    assert_int_equal(l.n, 1);
    listing_free(&l);

    assert_int_equal(md_stat(f, "/t10/d", &after), 0);
    unsigned long long reqs = requests(f);
    fixture_close(f);
    assert_int_equal(reqs, 2); /* stat, list; the second stat is cached */
    if (after.type != SL_TYPE_DIR || after.mode != 0710 || after.mtime_ns != mtime)
        fail_msg("stat of /t10/d after listing it: type %d mode %o mtime %lld; the store says "
                 "type %d mode 710 mtime %lld",
                 (int)after.type, (unsigned)after.mode, (long long)after.mtime_ns,
                 (int)SL_TYPE_DIR, (long long)mtime);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stat_cached_within_ttl),
        cmocka_unit_test(negative_entries),
        cmocka_unit_test(ttl_zero_goes_to_store),
        cmocka_unit_test(ttl_expires),
        cmocka_unit_test(listing_snapshot),
        cmocka_unit_test(stopped_listing_is_not_a_snapshot),
        cmocka_unit_test(invalidate_child_drops_parent_listing),
        cmocka_unit_test(interleaved_listings_never_complete_a_mix),
        cmocka_unit_test(stop_with_1_while_serving_snapshot),
        cmocka_unit_test(relisting_parent_keeps_child_snapshots),
        cmocka_unit_test(listed_directory_keeps_its_stat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
