/*
 * test_hash.c - the content hashes that decide what `sluice run` runs again: equal bytes give
 * equal hashes, any change a new one (also one that keeps the size and the mtime), a file
 * seen before is not read again, and a folder hashed by many threads hashes as by one.
 */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "core/core.h"
#include "pipeline/run.h"

struct fx {
    char *dir, *state;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->dir = unit_tmpdir();
    assert_non_null(f->dir);
    assert_true(asprintf(&f->state, "%s/state", f->dir) > 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    free(f->state);
    unit_rmtree(f->dir);
    free(f);
    return 0;
}

static char *path_of(struct fx *f, const char *rel)
{
    char *p = sl__asprintf("%s/%s", f->dir, rel);
    assert_non_null(p);
    return p;
}

static void put(struct fx *f, const char *rel, const char *text)
{
    char *p = path_of(f, rel);
    char *dir = strndup(p, (size_t)(strrchr(p, '/') - p));
    assert_non_null(dir);
    assert_int_equal(sl__mkdirs(dir, 0755), 0);
    free(dir);
    assert_int_equal(unit_write_file(p, text, strlen(text)), 0);
    free(p);
}

static void digest(struct sl_hasher *h, struct fx *f, const char *rel, struct sl_digest *d,
                   uint64_t *read)
{
    char *p = path_of(f, rel);
    *read = 0;
    assert_int_equal(sl_hasher_digest(h, p, false, d, read), 0);
    free(p);
}

/* Past the window in which a file just written may still change within one timestamp tick. */
static void age(void)
{
    struct timespec ts = {1, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void a_file_seen_before_is_not_read_again(void **state)
{
    struct fx *f = *state;
    struct sl_hasher *h;
    struct sl_digest a, b;
    uint64_t read;
    put(f, "x.bin", "hello world");
    assert_int_equal(sl_hasher_open(f->state, NULL, 2, &h), 0);
    digest(h, f, "x.bin", &a, &read);
    assert_int_equal(read, 11);
    assert_int_equal(a.size, 11);
    assert_int_equal(a.files, 1);
    age();
    digest(h, f, "x.bin", &b, &read); /* its entry was made while it was new: read again */
    assert_int_equal(read, 11);
    assert_string_equal(a.hash, b.hash);
    sl_hasher_close(h);

    /* Another run (the table on disk) trusts it now. */
    assert_int_equal(sl_hasher_open(f->state, NULL, 2, &h), 0);
    digest(h, f, "x.bin", &b, &read);
    assert_int_equal(read, 0);
    assert_string_equal(a.hash, b.hash);

    /* Same size, the old mtime put back: the ctime gives it away. */
    char *p = path_of(f, "x.bin");
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    put(f, "x.bin", "hello WORLD");
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    assert_int_equal(utimensat(AT_FDCWD, p, times, 0), 0);
    digest(h, f, "x.bin", &b, &read);
    assert_int_equal(read, 11);
    assert_string_not_equal(a.hash, b.hash);
    free(p);

    /* Equal bytes elsewhere: an equal hash. */
    put(f, "y.bin", "hello world");
    digest(h, f, "y.bin", &b, &read);
    assert_string_equal(a.hash, b.hash);

    p = path_of(f, "nope");
    assert_int_equal(sl_hasher_digest(h, p, false, &b, NULL), -ENOENT);
    free(p);
    sl_hasher_close(h);
}

static void folders_hash_their_files_and_names(void **state)
{
    struct fx *f = *state;
    struct sl_hasher *one, *many;
    struct sl_digest a, b;
    uint64_t read;
    for (int i = 0; i < 60; i++) {
        char rel[64], text[64];
        snprintf(rel, sizeof(rel), "tree/d%d/f%02d.txt", i % 4, i);
        snprintf(text, sizeof(text), "file %d", i);
        put(f, rel, text);
    }
    char *s1 = path_of(f, "s1"), *s2 = path_of(f, "s2");
    assert_int_equal(sl_hasher_open(s1, NULL, 1, &one), 0);
    assert_int_equal(sl_hasher_open(s2, NULL, 8, &many), 0);
    digest(one, f, "tree", &a, &read);
    assert_true(read > 0);
    digest(many, f, "tree", &b, &read);
    assert_string_equal(a.hash, b.hash);
    assert_int_equal(a.files, 60);
    assert_int_equal(b.size, a.size);

    /* A renamed file changes the folder's hash, though no byte changed. */
    char *from = path_of(f, "tree/d0/f00.txt"), *to = path_of(f, "tree/d0/g00.txt");
    assert_int_equal(rename(from, to), 0);
    digest(many, f, "tree", &b, &read);
    assert_string_not_equal(a.hash, b.hash);
    assert_int_equal(rename(to, from), 0);
    digest(many, f, "tree", &b, &read);
    assert_string_equal(a.hash, b.hash);

    /* Empty folders hold no files: they change nothing. */
    char *empty = path_of(f, "tree/d9");
    assert_int_equal(mkdir(empty, 0755), 0);
    digest(one, f, "tree", &b, &read);
    assert_string_equal(a.hash, b.hash);
    free(empty);
    free(from);
    free(to);
    free(s1);
    free(s2);
    sl_hasher_close(one);
    sl_hasher_close(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_file_seen_before_is_not_read_again, setup, teardown),
        cmocka_unit_test_setup_teardown(folders_hash_their_files_and_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
