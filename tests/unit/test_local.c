/* test_local.c - the local directory store (file://): stat and versions, pinned reads, ranged
 * reads, listings in pages, atomic writers, refusal of '..', and the request counters. */
#include "unit.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include "ufs/ufs.h"

struct fixture {
    char *tmp;
    struct sl_ufs *u;
    struct sl_counters ctr;
};

static struct fixture *fixture_open(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    /* Spelled canonically, so that ids built here compare with the store's. */
    char *t = unit_tmpdir();
    assert_non_null(t);
    f->tmp = realpath(t, NULL);
    assert_non_null(f->tmp);
    free(t);
    char *uri = NULL;
    assert_true(asprintf(&uri, "file://%s", f->tmp) > 0);
    int rc = sl__ufs_open(uri, NULL, &f->ctr, &f->u);
    if (rc) fail_msg("open %s: %s", uri, sl_errmsg(rc));
    free(uri);
    /* A FIFO must never make a test hang: die loudly instead. */
    alarm(60);
    return f;
}

static void fixture_close(struct fixture *f)
{
    alarm(0);
    sl__ufs_close(f->u);
    unit_rmtree(f->tmp);
    free(f);
}

static char *at(const struct fixture *f, const char *rel)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", f->tmp, rel) > 0);
    return p;
}

static void put(const struct fixture *f, const char *rel, const char *data)
{
    char *p = at(f, rel);
    assert_int_equal(unit_write_file(p, data, strlen(data)), 0);
    free(p);
}

static uint64_t ctr(struct fixture *f, enum sl_counter id)
{
    return atomic_load(&f->ctr.v[id]);
}

/* The names in the real directory (not through the store), sorted, joined by ','. */
static char *real_listing(const struct fixture *f, const char *rel)
{
    char *p = at(f, rel);
    struct dirent **ents = NULL;
    int n = scandir(p, &ents, NULL, alphasort);
    free(p);
    assert_true(n >= 0);
    struct sl_buf b = {0};
    sl__buf_append(&b, "", 0);
    for (int i = 0; i < n; i++) {
        if (strcmp(ents[i]->d_name, ".") && strcmp(ents[i]->d_name, ".."))
            sl__buf_printf(&b, "%s%s", b.len ? "," : "", ents[i]->d_name);
        free(ents[i]);
    }
    free(ents);
    return b.data;
}

static void stat_kinds(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    put(f, "file.bin", "0123456789");
    char *d = at(f, "dir"), *fifo = at(f, "fifo");
    assert_int_equal(mkdir(d, 0750), 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);

    sl_stat_t st;
    assert_int_equal(sl__ufs_stat(f->u, "file.bin", &st), 0);
    assert_int_equal(st.type, SL_TYPE_FILE);
    assert_int_equal(st.size, 10);
    assert_true(st.mtime_ns > 0);
    assert_true(st.version[0] != '\0');

    struct stat sb;
    char *fp = at(f, "file.bin");
    assert_int_equal(stat(fp, &sb), 0);
    assert_int_equal(st.mode, sb.st_mode & 07777);
    assert_int_equal(st.mtime_ns, (int64_t)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec);
    free(fp);

    assert_int_equal(sl__ufs_stat(f->u, "dir", &st), 0);
    assert_int_equal(st.type, SL_TYPE_DIR);
    assert_int_equal(st.size, 0);
    assert_int_equal(st.mode, 0750);

    /* The store's root is a directory. */
    assert_int_equal(sl__ufs_stat(f->u, "", &st), 0);
    assert_int_equal(st.type, SL_TYPE_DIR);

    int rc = sl__ufs_stat(f->u, "missing", &st);
    assert_int_equal(rc, -ENOENT);
    assert_non_null(strstr(sl_errmsg(rc), "missing")); /* names what was missing */
    assert_int_equal(sl__ufs_stat(f->u, "missing/below", &st), -ENOENT);
    assert_int_equal(sl__ufs_stat(f->u, "file.bin/below", &st), -ENOTDIR);

    rc = sl__ufs_stat(f->u, "fifo", &st);
    assert_int_equal(rc, SL_E_NOT_FILE);
    assert_non_null(strstr(sl_errmsg(rc), "fifo"));

    free(d);
    free(fifo);
    fixture_close(f);
}

static void versions_change(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    char *p = at(f, "v");
    sl_stat_t a, b;

    put(f, "v", "first version");
    assert_int_equal(sl__ufs_stat(f->u, "v", &a), 0);
    assert_int_equal(sl__ufs_stat(f->u, "v", &b), 0);
    assert_string_equal(a.version, b.version); /* stable while nothing changes */

    /* Written in place, longer. */
    FILE *fh = fopen(p, "ab");
    assert_non_null(fh);
    fputs(", appended", fh);
    fclose(fh);
    assert_int_equal(sl__ufs_stat(f->u, "v", &b), 0);
    assert_string_not_equal(a.version, b.version);

    /* Written in place, same size, same inode: only the mtime differs. */
    a = b;
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "F", 1, 0), 1);
    struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1000000000, .tv_nsec = 5}};
    assert_int_equal(futimens(fd, ts), 0);
    close(fd);
    assert_int_equal(sl__ufs_stat(f->u, "v", &b), 0);
    assert_int_equal(b.size, a.size);
    assert_string_not_equal(a.version, b.version);

    /* Replaced by rename with the same size and the same mtime: the inode tells. */
    a = b;
    char *tmp = at(f, "v.new");
    assert_int_equal(unit_write_file(tmp, "Xirst version, appended", 23), 0);
    fd = open(tmp, O_WRONLY);
    assert_int_equal(futimens(fd, ts), 0);
    close(fd);
    assert_int_equal(rename(tmp, p), 0);
    assert_int_equal(sl__ufs_stat(f->u, "v", &b), 0);
    assert_int_equal(b.size, a.size);
    assert_int_equal(b.mtime_ns, a.mtime_ns);
    assert_string_not_equal(a.version, b.version);

    free(tmp);
    free(p);
    fixture_close(f);
}

static void pinned_reads(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    char *p = at(f, "obj");
    char buf[64];
    size_t n = 99;
    sl_stat_t st;

    put(f, "obj", "original bytes");
    assert_int_equal(sl__ufs_stat(f->u, "obj", &st), 0);
    assert_int_equal(sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 14);
    assert_memory_equal(buf, "original bytes", 14);
    /* No version: any. */
    assert_int_equal(sl__ufs_read(f->u, "obj", NULL, 9, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "bytes", 5);
    assert_int_equal(sl__ufs_read(f->u, "obj", "", 0, buf, 8, &n), 0);
    assert_int_equal(n, 8);

    /* Modified in place. */
    FILE *fh = fopen(p, "ab");
    fputs("+more", fh);
    fclose(fh);
    n = 99;
    int rc = sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n);
    assert_int_equal(rc, SL_E_CHANGED);
    assert_int_equal(n, 0);
    assert_non_null(strstr(sl_errmsg(rc), "obj"));

    /* Replaced by another file. */
    assert_int_equal(sl__ufs_stat(f->u, "obj", &st), 0);
    assert_int_equal(sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 19);
    char *other = at(f, "other");
    assert_int_equal(unit_write_file(other, "a whole new object!", 19), 0);
    assert_int_equal(rename(other, p), 0);
    assert_int_equal(sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n), SL_E_CHANGED);
    /* The new one reads with its own version. */
    assert_int_equal(sl__ufs_stat(f->u, "obj", &st), 0);
    assert_int_equal(sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 19);
    assert_memory_equal(buf, "a whole new object!", 19);

    /* Deleted: with a version pinned, that is a change too; without, it is missing. */
    assert_int_equal(unlink(p), 0);
    assert_int_equal(sl__ufs_read(f->u, "obj", st.version, 0, buf, sizeof(buf), &n), SL_E_CHANGED);
    assert_int_equal(sl__ufs_read(f->u, "obj", NULL, 0, buf, sizeof(buf), &n), -ENOENT);

    /* A directory is not read. */
    char *d = at(f, "d");
    assert_int_equal(mkdir(d, 0755), 0);
    assert_int_equal(sl__ufs_read(f->u, "d", NULL, 0, buf, sizeof(buf), &n), -EISDIR);
    free(d);
    free(other);
    free(p);
    fixture_close(f);
}

static void ranged_reads(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    enum { SIZE = 100000 };
    unsigned char *data = malloc(SIZE), *buf = malloc(SIZE + 100);
    assert_non_null(data);
    assert_non_null(buf);
    for (size_t i = 0; i < SIZE; i++) data[i] = (unsigned char)(i * 31 + (i >> 8));
    char *p = at(f, "big");
    assert_int_equal(unit_write_file(p, data, SIZE), 0);
    sl_stat_t st;
    assert_int_equal(sl__ufs_stat(f->u, "big", &st), 0);
    assert_int_equal(st.size, SIZE);

    static const struct {
        uint64_t off;
        size_t len, want;
    } cases[] = {
        {0, SIZE, SIZE},
        {0, 1, 1},
        {1, 4095, 4095},
        {4096, 8192, 8192},
        {SIZE - 10, 10, 10},
        {SIZE - 10, 100, 10},    /* short at the end */
        {SIZE - 1, 1, 1},
        {SIZE, 1, 0},            /* at EOF */
        {SIZE + 5000, 64, 0},    /* past EOF */
        {0, SIZE + 100, SIZE},
        {12345, 0, 0},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        size_t n = 77777777;
        memset(buf, 0xEE, SIZE + 100);
        int rc = sl__ufs_read(f->u, "big", st.version, cases[i].off, buf, cases[i].len, &n);
        if (rc) fail_msg("case %zu: %s", i, sl_errmsg(rc));
        if (n != cases[i].want) fail_msg("case %zu: read %zu, expected %zu", i, n, cases[i].want);
        if (n) assert_memory_equal(buf, data + cases[i].off, n);
        if (cases[i].len > n) assert_int_equal(buf[n], 0xEE); /* nothing written past n */
    }
    free(p);
    free(data);
    free(buf);
    fixture_close(f);
}

static void fifo_never_blocks(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    char *p = at(f, "pipe");
    assert_int_equal(mkfifo(p, 0600), 0);
    char buf[16];
    size_t n = 5;
    /* No writer exists: a blocking open would hang here until the alarm. */
    assert_int_equal(sl__ufs_read(f->u, "pipe", NULL, 0, buf, sizeof(buf), &n), SL_E_NOT_FILE);
    assert_int_equal(n, 0);
    assert_int_equal(sl__ufs_read(f->u, "pipe", "1.2.3", 0, buf, sizeof(buf), &n), SL_E_NOT_FILE);

    /* A FIFO put in a file's place after its stat. */
    char *q = at(f, "was-file");
    put(f, "was-file", "data");
    sl_stat_t st;
    assert_int_equal(sl__ufs_stat(f->u, "was-file", &st), 0);
    assert_int_equal(unlink(q), 0);
    assert_int_equal(mkfifo(q, 0600), 0);
    int rc = sl__ufs_read(f->u, "was-file", st.version, 0, buf, sizeof(buf), &n);
    assert_true(rc == SL_E_NOT_FILE || rc == SL_E_CHANGED);
    free(q);
    free(p);
    fixture_close(f);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_in_pages(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    enum { N = 1000, PAGE = 64 };
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "file-%04d.dat", i);
        char *p = at(f, name);
        /* Sizes differ so the stat of each entry can be checked. */
        char data[16] = "0123456789abcdef";
        assert_int_equal(unit_write_file(p, data, (size_t)(i % 16)), 0);
        free(p);
    }
    char *sub = at(f, "subdir"), *fifo = at(f, "a-fifo"), *dangling = at(f, "dangling");
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(symlink("/nonexistent/target", dangling), 0);

    struct sl_ufs_lister *l = NULL;
    uint64_t req0 = ctr(f, SL_CTR_UFS_REQUESTS);
    assert_int_equal(sl__ufs_list_open(f->u, "", &l), 0);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), req0 + 1);

    char **names = calloc(N + 10, sizeof(char *));
    size_t total = 0, pages = 0;
    bool saw_dir = false;
    for (;;) {
        sl_dirent_t ents[PAGE];
        size_t n = 999;
        assert_int_equal(sl__ufs_list_next(f->u, l, ents, PAGE, &n), 0);
        assert_true(n <= PAGE);
        if (n == 0) break;
        pages++;
        for (size_t i = 0; i < n; i++) {
            assert_true(total < N + 10);
            if (strcmp(ents[i].name, "subdir") == 0) {
                saw_dir = true;
                assert_int_equal(ents[i].st.type, SL_TYPE_DIR);
            } else {
                int idx = -1;
                assert_int_equal(sscanf(ents[i].name, "file-%d.dat", &idx), 1);
                assert_int_equal(ents[i].st.type, SL_TYPE_FILE);
                assert_int_equal(ents[i].st.size, (uint64_t)(idx % 16));
                assert_true(ents[i].st.version[0] != '\0');
            }
            names[total++] = strdup(ents[i].name); /* valid only until the next call */
        }
    }
    /* The end stays the end. */
    sl_dirent_t ents[PAGE];
    size_t n = 5;
    assert_int_equal(sl__ufs_list_next(f->u, l, ents, PAGE, &n), 0);
    assert_int_equal(n, 0);
    sl__ufs_list_close(f->u, l);

    assert_true(saw_dir);
    assert_int_equal(total, N + 1); /* every file and the dir; no FIFO, no dangling link */
    assert_true(pages >= (N + 1 + PAGE - 1) / PAGE);
    qsort(names, total, sizeof(char *), cmp_str);
    for (size_t i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof(want), "file-%04zu.dat", i);
        assert_string_equal(names[i], want); /* each exactly once */
    }
    assert_string_equal(names[N], "subdir");
    for (size_t i = 0; i < total; i++) free(names[i]);
    free(names);

    /* Listing something that is not a directory. */
    assert_int_equal(sl__ufs_list_open(f->u, "file-0001.dat", &l), -ENOTDIR);
    assert_int_equal(sl__ufs_list_open(f->u, "nope", &l), -ENOENT);
    /* An empty directory. */
    assert_int_equal(sl__ufs_list_open(f->u, "subdir", &l), 0);
    assert_int_equal(sl__ufs_list_next(f->u, l, ents, PAGE, &n), 0);
    assert_int_equal(n, 0);
    sl__ufs_list_close(f->u, l);
    free(sub);
    free(fifo);
    free(dangling);
    fixture_close(f);
}

static void writer_commit_and_abort(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    const struct sl_ufs_ops *ops = f->u->ops;
    struct sl_ufs_writer *w = NULL;
    sl_stat_t st;
    char buf[64];
    size_t n;

    /* Nothing visible before commit. */
    assert_int_equal(ops->writer_open(f->u, "out.txt", &w), 0);
    assert_int_equal(ops->writer_write(w, "hello, ", 7), 0);
    assert_int_equal(ops->writer_write(w, "world", 5), 0);
    assert_int_equal(sl__ufs_stat(f->u, "out.txt", &st), -ENOENT);
    assert_int_equal(sl__ufs_read(f->u, "out.txt", NULL, 0, buf, sizeof(buf), &n), -ENOENT);
    sl_stat_t cst;
    assert_int_equal(ops->writer_commit(w, &cst), 0);
    /* The whole file after. */
    assert_int_equal(sl__ufs_stat(f->u, "out.txt", &st), 0);
    assert_int_equal(st.size, 12);
    assert_int_equal(cst.size, 12);
    assert_int_equal(cst.type, SL_TYPE_FILE);
    assert_string_equal(cst.version, st.version); /* commit tells the new version */
    assert_int_equal(sl__ufs_read(f->u, "out.txt", st.version, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 12);
    assert_memory_equal(buf, "hello, world", 12);
    char *listing = real_listing(f, "");
    assert_string_equal(listing, "out.txt"); /* no temp file left */
    free(listing);

    /* A rewrite: the old content stays until commit. */
    assert_int_equal(ops->writer_open(f->u, "out.txt", &w), 0);
    assert_int_equal(ops->writer_write(w, "v2", 2), 0);
    assert_int_equal(sl__ufs_read(f->u, "out.txt", st.version, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 12);
    assert_int_equal(ops->writer_commit(w, NULL), 0);
    assert_int_equal(sl__ufs_read(f->u, "out.txt", st.version, 0, buf, sizeof(buf), &n),
                     SL_E_CHANGED);
    assert_int_equal(sl__ufs_read(f->u, "out.txt", NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "v2", 2);

    /* Abort: no file, no temp file; an existing target is untouched. */
    assert_int_equal(ops->writer_open(f->u, "aborted.bin", &w), 0);
    assert_int_equal(ops->writer_write(w, "garbage", 7), 0);
    ops->writer_abort(w);
    assert_int_equal(ops->writer_open(f->u, "out.txt", &w), 0);
    assert_int_equal(ops->writer_write(w, "garbage", 7), 0);
    ops->writer_abort(w);
    ops->writer_abort(NULL);
    assert_int_equal(sl__ufs_stat(f->u, "aborted.bin", &st), -ENOENT);
    listing = real_listing(f, "");
    assert_string_equal(listing, "out.txt");
    free(listing);
    assert_int_equal(sl__ufs_read(f->u, "out.txt", NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 2);

    /* An empty object. */
    assert_int_equal(ops->writer_open(f->u, "empty", &w), 0);
    assert_int_equal(ops->writer_commit(w, &cst), 0);
    assert_int_equal(sl__ufs_stat(f->u, "empty", &st), 0);
    assert_int_equal(st.size, 0);

    /* Into directories that do not exist yet. */
    assert_int_equal(ops->writer_open(f->u, "x/y/z/deep.txt", &w), 0);
    assert_int_equal(ops->writer_write(w, "deep", 4), 0);
    assert_int_equal(ops->writer_commit(w, NULL), 0);
    assert_int_equal(sl__ufs_stat(f->u, "x/y", &st), 0);
    assert_int_equal(st.type, SL_TYPE_DIR);
    assert_int_equal(sl__ufs_read(f->u, "x/y/z/deep.txt", NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(buf, "deep", 4);
    listing = real_listing(f, "x/y/z");
    assert_string_equal(listing, "deep.txt");
    free(listing);

    /* Not onto the root, not under a file. */
    assert_int_equal(ops->writer_open(f->u, "", &w), -EISDIR);
    assert_int_equal(ops->writer_open(f->u, "out.txt/inner", &w), -ENOTDIR);

    /* Many writers of one name at once: each commit is whole, the last one wins. */
    struct sl_ufs_writer *w1 = NULL, *w2 = NULL;
    assert_int_equal(ops->writer_open(f->u, "race", &w1), 0);
    assert_int_equal(ops->writer_open(f->u, "race", &w2), 0);
    assert_int_equal(ops->writer_write(w1, "one-one", 7), 0);
    assert_int_equal(ops->writer_write(w2, "two", 3), 0);
    assert_int_equal(ops->writer_commit(w1, NULL), 0);
    assert_int_equal(ops->writer_commit(w2, NULL), 0);
    assert_int_equal(sl__ufs_read(f->u, "race", NULL, 0, buf, sizeof(buf), &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "two", 3);
    listing = real_listing(f, "");
    assert_string_equal(listing, "empty,out.txt,race,x");
    free(listing);
    fixture_close(f);
}

/* While a write is in progress its temp file is in the directory; a listing must not show it
 * (a `cp -r` or a training job would read half a file). A replaced file keeps its mode. */
static void writes_in_progress_are_invisible(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    struct sl_ufs_writer *w;
    put(f, "private.key", "old");
    char *p = at(f, "private.key");
    assert_int_equal(chmod(p, 0600), 0);

    assert_int_equal(f->u->ops->writer_open(f->u, "private.key", &w), 0);
    assert_int_equal(f->u->ops->writer_write(w, "new secret", 10), 0);
    char *real = real_listing(f, "");
    assert_non_null(strstr(real, ".sluice-tmp.")); /* it is there on disk... */
    free(real);
    struct sl_ufs_lister *l;
    sl_dirent_t ents[16];
    size_t n;
    assert_int_equal(sl__ufs_list_open(f->u, "", &l), 0);
    assert_int_equal(sl__ufs_list_next(f->u, l, ents, 16, &n), 0);
    assert_int_equal(n, 1); /* ...but the store lists only the object */
    assert_string_equal(ents[0].name, "private.key");
    sl__ufs_list_close(f->u, l);

    assert_int_equal(f->u->ops->writer_commit(w, NULL), 0);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0600);
    assert_int_equal(sb.st_size, 10);
    free(p);
    fixture_close(f);
}

static void dotdot_refused(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    /* Something real to reach: TMP/inside/f and TMP/outside. */
    char *in = at(f, "inside");
    assert_int_equal(mkdir(in, 0755), 0);
    put(f, "inside/f", "in");
    put(f, "outside", "out");
    char *uri = NULL;
    assert_true(asprintf(&uri, "file://%s/inside", f->tmp) > 0);
    struct sl_ufs *u = NULL;
    assert_int_equal(sl__ufs_open(uri, NULL, NULL, &u), 0);

    static const char *const bad[] = {"..", "../outside", "a/../../outside", "f/..", "a/../f"};
    for (size_t i = 0; i < SL_ARRAY_LEN(bad); i++) {
        sl_stat_t st;
        char buf[8];
        size_t n;
        struct sl_ufs_lister *l = NULL;
        struct sl_ufs_writer *w = NULL;
        if (sl__ufs_stat(u, bad[i], &st) != SL_E_PATH_ESCAPE) fail_msg("stat '%s'", bad[i]);
        if (sl__ufs_read(u, bad[i], NULL, 0, buf, sizeof(buf), &n) != SL_E_PATH_ESCAPE)
            fail_msg("read '%s'", bad[i]);
        if (sl__ufs_list_open(u, bad[i], &l) != SL_E_PATH_ESCAPE) fail_msg("list '%s'", bad[i]);
        if (u->ops->writer_open(u, bad[i], &w) != SL_E_PATH_ESCAPE) fail_msg("write '%s'", bad[i]);
        if (sl__ufs_remove(u, bad[i]) != SL_E_PATH_ESCAPE) fail_msg("remove '%s'", bad[i]);
        if (sl__ufs_mkdir(u, bad[i]) != SL_E_PATH_ESCAPE) fail_msg("mkdir '%s'", bad[i]);
    }
    /* Nothing outside was touched. */
    char *listing = real_listing(f, "");
    assert_string_equal(listing, "inside,outside");
    free(listing);
    listing = real_listing(f, "inside");
    assert_string_equal(listing, "f");
    free(listing);
    /* Names that merely contain dots are ordinary names. */
    put(f, "inside/..f", "dots");
    sl_stat_t st;
    assert_int_equal(sl__ufs_stat(u, "..f", &st), 0);
    assert_int_equal(st.size, 4);

    /* A root URI with '..' going above '/' is refused at open. */
    struct sl_ufs *bad_u = NULL;
    assert_int_equal(sl__ufs_open("file:///../etc", NULL, NULL, &bad_u), SL_E_BAD_URI);
    assert_int_equal(sl__ufs_open("file://relative/x", NULL, NULL, &bad_u), SL_E_BAD_URI);
    sl__ufs_close(u);
    free(uri);
    free(in);
    fixture_close(f);
}

static void counters(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    put(f, "c", "0123456789abcdef");
    sl_stat_t st;
    char buf[64];
    size_t n;
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 0);
    assert_int_equal(ctr(f, SL_CTR_UFS_BYTES_READ), 0);

    assert_int_equal(sl__ufs_stat(f->u, "c", &st), 0);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 1);
    assert_int_equal(sl__ufs_stat(f->u, "missing", &st), -ENOENT); /* failures count too */
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 2);

    assert_int_equal(sl__ufs_read(f->u, "c", st.version, 4, buf, 10, &n), 0);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 3);
    assert_int_equal(ctr(f, SL_CTR_UFS_BYTES_READ), 10);
    assert_int_equal(sl__ufs_read(f->u, "c", st.version, 10, buf, 64, &n), 0); /* short */
    assert_int_equal(n, 6);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 4);
    assert_int_equal(ctr(f, SL_CTR_UFS_BYTES_READ), 16);
    assert_int_equal(sl__ufs_read(f->u, "missing", NULL, 0, buf, 64, &n), -ENOENT);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 5);
    assert_int_equal(ctr(f, SL_CTR_UFS_BYTES_READ), 16);

    struct sl_ufs_lister *l = NULL;
    sl_dirent_t ents[8];
    assert_int_equal(sl__ufs_list_open(f->u, "", &l), 0);
    assert_int_equal(sl__ufs_list_next(f->u, l, ents, 8, &n), 0);
    assert_int_equal(n, 1);
    sl__ufs_list_close(f->u, l);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 6);
    assert_int_equal(ctr(f, SL_CTR_UFS_BYTES_READ), 16);

    /* A store opened without counters works the same. */
    char *uri = NULL;
    assert_true(asprintf(&uri, "file://%s", f->tmp) > 0);
    struct sl_ufs *u2 = NULL;
    assert_int_equal(sl__ufs_open(uri, NULL, NULL, &u2), 0);
    assert_int_equal(sl__ufs_read(u2, "c", NULL, 0, buf, 64, &n), 0);
    assert_int_equal(n, 16);
    assert_memory_equal(buf, "0123456789abcdef", 16);
    sl__ufs_close(u2);
    free(uri);
    assert_int_equal(ctr(f, SL_CTR_UFS_REQUESTS), 6);
    fixture_close(f);
}

static void object_ids(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    char *uri = NULL, *want = NULL;
    /* Spellings of one root share one id. */
    assert_true(asprintf(&uri, "file://%s//./", f->tmp) > 0);
    struct sl_ufs *u2 = NULL;
    assert_int_equal(sl__ufs_open(uri, NULL, NULL, &u2), 0);
    assert_string_equal(u2->id, f->u->id);
    assert_string_equal(u2->uri, uri);
    char *a = sl__ufs_object_id(f->u, "x/y"), *b = sl__ufs_object_id(u2, "x/y");
    assert_true(asprintf(&want, "file://%s/x/y", f->tmp) > 0);
    assert_string_equal(a, want);
    assert_string_equal(b, want);
    free(a);
    free(b);
    a = sl__ufs_object_id(f->u, "");
    assert_string_equal(a, f->u->id);
    free(a);
    sl__ufs_close(u2);

    /* The root of the file system. */
    assert_int_equal(sl__ufs_open("file:///", NULL, NULL, &u2), 0);
    a = sl__ufs_object_id(u2, "etc/hosts");
    assert_string_equal(a, "file:///etc/hosts");
    free(a);
    sl__ufs_close(u2);
    free(uri);
    free(want);
    fixture_close(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stat_kinds),
        cmocka_unit_test(versions_change),
        cmocka_unit_test(pinned_reads),
        cmocka_unit_test(ranged_reads),
        cmocka_unit_test(fifo_never_blocks),
        cmocka_unit_test(list_in_pages),
        cmocka_unit_test(writer_commit_and_abort),
        cmocka_unit_test(writes_in_progress_are_invisible), cmocka_unit_test(dotdot_refused),
        cmocka_unit_test(counters),
        cmocka_unit_test(object_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
