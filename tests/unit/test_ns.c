/* test_ns.c - the namespace: normalisation, the mount table (longest prefix wins), the virtual
 * directories above the mounts, direct URIs, and the errors that name what went wrong. */
#include "unit.h"

#include <sys/stat.h>

#include "meta/meta.h"

/* A temp dir spelled canonically (no doubled '/' or symlink from $TMPDIR), so that the ids the
 * namespace makes can be compared with strings built here. */
static char *canon_tmpdir(void)
{
    char *t = unit_tmpdir();
    assert_non_null(t);
    char *r = realpath(t, NULL);
    assert_non_null(r);
    free(t);
    return r;
}

/* A namespace over temp dirs: /a -> TMP/A, /a/b -> TMP/B, /d/x -> TMP/X, /d/y -> TMP/Y,
 * /e -> TMP/E. */
struct fixture {
    char *tmp;
    struct sl_config *cfg;
    struct sl_ns *ns;
    struct sl_counters ctr;
};

static void mkdir_in(const char *tmp, const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", tmp, name) > 0);
    assert_int_equal(mkdir(p, 0755), 0);
    free(p);
}

static struct fixture *fixture_open(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->tmp = canon_tmpdir();
    static const char *const dirs[] = {"A", "B", "X", "Y", "E"};
    for (size_t i = 0; i < SL_ARRAY_LEN(dirs); i++) mkdir_in(f->tmp, dirs[i]);

    char *yaml = NULL;
    assert_true(asprintf(&yaml,
                         "mounts:\n"
                         "  /a: file://%s/A\n"
                         "  /a/b: %s/B\n"
                         "  /d/x: file://%s/X\n"
                         "  /d/y:\n"
                         "    uri: file://%s/Y\n"
                         "  /e: file://%s/E\n",
                         f->tmp, f->tmp, f->tmp, f->tmp, f->tmp) > 0);
    int rc = sl__config_parse("/cfg/sluice.yaml", yaml, strlen(yaml), &f->cfg);
    free(yaml);
    if (rc) fail_msg("config: %s", sl_errmsg(rc));
    rc = sl__ns_open(f->cfg, &f->ctr, &f->ns);
    if (rc) fail_msg("ns_open: %s", sl_errmsg(rc));
    return f;
}

static void fixture_close(struct fixture *f)
{
    /* Resolving touches no store. */
    assert_int_equal(f->ctr.v[SL_CTR_UFS_REQUESTS], 0);
    sl__ns_close(f->ns);
    sl__config_free(f->cfg);
    unit_rmtree(f->tmp);
    free(f);
}

static char *id_of(const struct fixture *f, const char *sub)
{
    char *s = NULL;
    assert_true(asprintf(&s, "file://%s/%s", f->tmp, sub) > 0);
    return s;
}

/* Resolves path, which must succeed in the mount with path mount_path (NULL: a namespace dir)
 * with rel and object id TMP/id_sub (when not NULL). */
static void expect_resolves(struct fixture *f, const char *path, const char *mount_path,
                            const char *norm, const char *rel, const char *id_sub)
{
    struct sl_resolved r;
    int rc = sl__ns_resolve(f->ns, path, &r);
    if (rc) fail_msg("%s: %d %s", path, rc, sl_errmsg(rc));
    if (!mount_path) {
        if (r.mount) fail_msg("%s: expected a namespace directory, got mount %s", path, r.mount->path);
        assert_null(r.rel);
        assert_null(r.object_id);
    } else {
        assert_non_null(r.mount);
        assert_string_equal(r.mount->path, mount_path);
        assert_string_equal(r.rel, rel);
        char *id = id_of(f, id_sub);
        assert_string_equal(r.object_id, id);
        free(id);
    }
    assert_string_equal(r.path, norm);
    sl__resolved_free(&r);
}

/* Resolving path must fail with err and a message holding each NULL-terminated needle. */
static void expect_fails(struct fixture *f, const char *path, int err, ...)
{
    struct sl_resolved r;
    int rc = sl__ns_resolve(f->ns, path, &r);
    if (rc != err)
        fail_msg("%s: expected %d (%s), got %d (%s)", path, err, sl_strerror(err), rc,
                 rc ? sl_errmsg(rc) : "success");
    assert_null(r.mount);
    assert_null(r.path);
    assert_null(r.rel);
    assert_null(r.object_id);
    const char *msg = sl_errmsg(rc);
    va_list ap;
    va_start(ap, err);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(msg, needle)) fail_msg("%s: message '%s' should mention '%s'", path, msg, needle);
    va_end(ap);
}

static void normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } ok[] = {
        {"", ""},
        {"/", ""},
        {"a", "a"},
        {"/a/b", "a/b"},
        {"a//b///c", "a/b/c"},
        {"./a/./b/.", "a/b"},
        {"a/b/../c", "a/c"},
        {"a/..", ""},
        {"a/b/../../c", "c"},
        {"/a/b/", "a/b"},
        {"a/.../b", "a/.../b"},
        {"a/..b/c.", "a/..b/c."},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(ok); i++) {
        char *out = NULL;
        int rc = sl__path_normalize(ok[i].in, &out);
        if (rc) fail_msg("'%s': %d", ok[i].in, rc);
        if (strcmp(out, ok[i].out) != 0)
            fail_msg("'%s' -> '%s', expected '%s'", ok[i].in, out, ok[i].out);
        free(out);
    }
    static const char *const escape[] = {"..", "/..", "../a", "a/../..", "a/../../b", "./..",
                                         "a/b/../../../c"};
    for (size_t i = 0; i < SL_ARRAY_LEN(escape); i++) {
        char *out = (char *)0x1;
        int rc = sl__path_normalize(escape[i], &out);
        if (rc != SL_E_PATH_ESCAPE) fail_msg("'%s': expected SL_E_PATH_ESCAPE, got %d", escape[i], rc);
        assert_ptr_equal(out, (char *)0x1);
    }
}

static void longest_prefix(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    expect_resolves(f, "/a", "/a", "/a", "", "A");
    expect_resolves(f, "/a/", "/a", "/a", "", "A");
    expect_resolves(f, "/a/f.jpg", "/a", "/a/f.jpg", "f.jpg", "A/f.jpg");
    expect_resolves(f, "/a/sub/dir/f", "/a", "/a/sub/dir/f", "sub/dir/f", "A/sub/dir/f");
    /* /a/b is nested in /a and wins for everything below it... */
    expect_resolves(f, "/a/b", "/a/b", "/a/b", "", "B");
    expect_resolves(f, "/a/b/c/d", "/a/b", "/a/b/c/d", "c/d", "B/c/d");
    /* ...but only on component boundaries. */
    expect_resolves(f, "/a/bc", "/a", "/a/bc", "bc", "A/bc");
    expect_resolves(f, "/a/b.txt", "/a", "/a/b.txt", "b.txt", "A/b.txt");
    /* Spelling does not matter. */
    expect_resolves(f, "//a/./x//y/../z/", "/a", "/a/x/z", "x/z", "A/x/z");
    expect_resolves(f, "/a/x/../b/f", "/a/b", "/a/b/f", "f", "B/f");
    expect_resolves(f, "/d/x/1/2", "/d/x", "/d/x/1/2", "1/2", "X/1/2");
    expect_resolves(f, "/d/y", "/d/y", "/d/y", "", "Y");
    expect_resolves(f, "/e/..e", "/e", "/e/..e", "..e", "E/..e");
    fixture_close(f);
}

static void namespace_directories(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    expect_resolves(f, "/", NULL, "/", NULL, NULL);
    expect_resolves(f, "//", NULL, "/", NULL, NULL);
    expect_resolves(f, "/.", NULL, "/", NULL, NULL);
    expect_resolves(f, "/d", NULL, "/d", NULL, NULL);
    expect_resolves(f, "/d/", NULL, "/d", NULL, NULL);
    /* Climbing inside the namespace's own directories is fine. */
    expect_resolves(f, "/d/../d/x/f", "/d/x", "/d/x/f", "f", "X/f");
    fixture_close(f);
}

static void resolve_errors(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    expect_fails(f, "/nomount/x", SL_E_NO_MOUNT, "/nomount/x", "/a", "/a/b", "/d/x", "/d/y",
                 "/e", NULL);
    expect_fails(f, "/d/z", SL_E_NO_MOUNT, "/d/z", NULL);
    expect_fails(f, "/dd", SL_E_NO_MOUNT, NULL);
    expect_fails(f, "/a/../b", SL_E_PATH_ESCAPE, "/a/../b", "/a", NULL);
    expect_fails(f, "/a/..", SL_E_PATH_ESCAPE, "/a", NULL);
    expect_fails(f, "/a/x/../../e", SL_E_PATH_ESCAPE, "leaves the mount /a", NULL);
    expect_fails(f, "/a/b/../f", SL_E_PATH_ESCAPE, "/a/b", NULL);
    expect_fails(f, "/d/x/..", SL_E_PATH_ESCAPE, "/d/x", NULL);
    expect_fails(f, "/..", SL_E_PATH_ESCAPE, "/..", NULL);
    expect_fails(f, "/../a", SL_E_PATH_ESCAPE, NULL);
    expect_fails(f, "/d/../..", SL_E_PATH_ESCAPE, NULL);
    expect_fails(f, "x", SL_E_USAGE, "x", NULL);
    expect_fails(f, "a/b", SL_E_USAGE, NULL);
    expect_fails(f, "", SL_E_USAGE, NULL);
    fixture_close(f);

    /* No mounts at all: the message says so. */
    struct sl_config *cfg = NULL;
    struct sl_ns *ns = NULL;
    assert_int_equal(sl__config_parse("/cfg/sluice.yaml", "", 0, &cfg), 0);
    assert_int_equal(sl__ns_open(cfg, NULL, &ns), 0);
    struct sl_resolved r;
    int rc = sl__ns_resolve(ns, "/x", &r);
    assert_int_equal(rc, SL_E_NO_MOUNT);
    assert_non_null(strstr(sl_errmsg(rc), "none configured"));
    assert_int_equal(sl__ns_resolve(ns, "/", &r), 0); /* the root always exists */
    assert_null(r.mount);
    sl__resolved_free(&r);
    sl__ns_close(ns);
    sl__config_free(cfg);
}

static void direct_uris(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    char *uri = NULL, *p = NULL;
    assert_true(asprintf(&p, "%s/A/f.bin", f->tmp) > 0);
    assert_int_equal(unit_write_file(p, "hello", 5), 0);

    /* The same file through the namespace and through its URI: one object id. */
    struct sl_resolved ns_r, uri_r, again;
    assert_int_equal(sl__ns_resolve(f->ns, "/a/f.bin", &ns_r), 0);
    assert_true(asprintf(&uri, "file://%s/A/f.bin", f->tmp) > 0);
    assert_int_equal(sl__ns_resolve(f->ns, uri, &uri_r), 0);
    assert_non_null(uri_r.mount);
    assert_string_equal(uri_r.path, uri);
    assert_string_equal(uri_r.rel, p + 1); /* the store is file:///, its paths have no '/' */
    assert_string_equal(uri_r.object_id, ns_r.object_id);
    /* It reaches the file. */
    sl_stat_t st;
    assert_int_equal(sl__ufs_stat(uri_r.mount->ufs, uri_r.rel, &st), 0);
    assert_int_equal(st.type, SL_TYPE_FILE);
    assert_int_equal(st.size, 5);
    f->ctr.v[SL_CTR_UFS_REQUESTS] = 0;

    /* A second URI of the same store shares its implicit mount; spelling is normalised. */
    free(uri);
    assert_true(asprintf(&uri, "file://%s//A/./sub/../f.bin", f->tmp) > 0);
    assert_int_equal(sl__ns_resolve(f->ns, uri, &again), 0);
    assert_ptr_equal(again.mount, uri_r.mount);
    assert_string_equal(again.object_id, ns_r.object_id);
    sl__resolved_free(&again);

    assert_int_equal(sl__ns_resolve(f->ns, "file:///tmp/x", &again), 0);
    assert_string_equal(again.rel, "tmp/x");
    assert_string_equal(again.object_id, "file:///tmp/x");
    sl__resolved_free(&again);

    sl__resolved_free(&ns_r);
    sl__resolved_free(&uri_r);
    free(uri);
    free(p);

    expect_fails(f, "file:///../x", SL_E_PATH_ESCAPE, "file:///../x", NULL);
    expect_fails(f, "file:///a/../../x", SL_E_PATH_ESCAPE, NULL);
    expect_fails(f, "ftp://x", SL_E_SCHEME, "ftp", NULL);
    expect_fails(f, "s3x://bucket/k", SL_E_SCHEME, "s3x", NULL);
    expect_fails(f, "file://host/x", SL_E_BAD_URI, "file://host/x", NULL);
    expect_fails(f, "://x", SL_E_BAD_URI, NULL);
    expect_fails(f, "1ab://x", SL_E_BAD_URI, NULL);
    /* Neither a namespace path nor a URI. */
    expect_fails(f, "s3x:/", SL_E_USAGE, "s3x:/", NULL);
    expect_fails(f, "file:/tmp/x", SL_E_USAGE, NULL);
    fixture_close(f);
}

struct names {
    char *v[16];
    size_t n;
    size_t stop_after; /* 0: never */
};

static int collect(void *arg, const sl_dirent_t *ent)
{
    struct names *c = arg;
    assert_true(c->n < SL_ARRAY_LEN(c->v));
    assert_int_equal(ent->st.type, SL_TYPE_DIR);
    c->v[c->n++] = strdup(ent->name);
    return c->stop_after && c->n == c->stop_after ? 42 : 0;
}

static void names_free(struct names *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->v[i]);
    memset(c, 0, sizeof(*c));
}

static void list_mounts(void **state)
{
    (void)state;
    struct fixture *f = fixture_open();
    struct names c = {0};

    assert_int_equal(sl__ns_list_mounts(f->ns, "/", collect, &c), 0);
    assert_int_equal(c.n, 3); /* a, d (once, for /d/x and /d/y), e */
    assert_string_equal(c.v[0], "a");
    assert_string_equal(c.v[1], "d");
    assert_string_equal(c.v[2], "e");
    names_free(&c);

    assert_int_equal(sl__ns_list_mounts(f->ns, "/d", collect, &c), 0);
    assert_int_equal(c.n, 2);
    assert_string_equal(c.v[0], "x");
    assert_string_equal(c.v[1], "y");
    names_free(&c);

    assert_int_equal(sl__ns_list_mounts(f->ns, "/a", collect, &c), 0);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.v[0], "b");
    names_free(&c);

    assert_int_equal(sl__ns_list_mounts(f->ns, "/e", collect, &c), 0);
    assert_int_equal(c.n, 0);

    /* A callback that stops: its value comes back. */
    c.stop_after = 2;
    assert_int_equal(sl__ns_list_mounts(f->ns, "/", collect, &c), 42);
    assert_int_equal(c.n, 2);
    names_free(&c);
    fixture_close(f);
}

static void unknown_scheme_in_config(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    /* Several lengths of mount path and URI: the message wraps an inner detail. */
    static const struct {
        const char *mount, *uri;
    } cases[] = {
        {"/remote", "ftp://host/data"},
        {"/f", "ftp://host/x"},
        {"/a/much/longer/mount/point/name", "ftp://h/x"},
        {"/g", "ftp://a.very.long.host.name.example.com/and/a/long/path/below/it/too"},
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(cases); i++) {
        char *yaml = NULL;
        assert_true(asprintf(&yaml, "mounts:\n  /ok: %s\n  %s:\n    uri: %s\n", tmp,
                             cases[i].mount, cases[i].uri) > 0);
        struct sl_config *cfg = NULL;
        assert_int_equal(sl__config_parse("/cfg/sluice.yaml", yaml, strlen(yaml), &cfg), 0);
        struct sl_ns *ns = (struct sl_ns *)0x1;
        int rc = sl__ns_open(cfg, NULL, &ns);
        assert_int_equal(rc, SL_E_CONFIG);
        assert_ptr_equal(ns, (struct sl_ns *)0x1);
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", sl_errmsg(rc));
        free(yaml);
        sl__config_free(cfg);
        /* Where it was declared, which mount, and what is wrong with it. */
        const char *want = "/cfg/sluice.yaml:3:3: ";
        if (strncmp(msg, want, strlen(want)) != 0) fail_msg("'%s' should start with '%s'", msg, want);
        if (!strstr(msg, cases[i].mount)) fail_msg("'%s' should name the mount %s", msg, cases[i].mount);
        if (!strstr(msg, cases[i].uri)) fail_msg("'%s' should name the URI %s", msg, cases[i].uri);
        if (!strstr(msg, "no under-store for scheme 'ftp'"))
            fail_msg("'%s' should say the scheme 'ftp' has no under-store", msg);
        /* Said once, not repeated. */
        if (strstr(msg + 1, "/cfg/sluice.yaml")) fail_msg("'%s' repeats its position", msg);
    }

    /* A file URI with a host instead of an absolute path is refused there too. */
    const char *yaml = "mounts:\n  /h: file://host/data\n";
    struct sl_config *cfg = NULL;
    struct sl_ns *ns = NULL;
    assert_int_equal(sl__config_parse("/cfg/sluice.yaml", yaml, strlen(yaml), &cfg), 0);
    int rc = sl__ns_open(cfg, NULL, &ns);
    assert_int_equal(rc, SL_E_CONFIG);
    const char *msg = sl_errmsg(rc);
    if (strncmp(msg, "/cfg/sluice.yaml:2:3: ", 22) != 0) fail_msg("'%s' lacks its position", msg);
    if (!strstr(msg, "absolute path")) fail_msg("'%s' should say what a file URI needs", msg);
    sl__config_free(cfg);
    unit_rmtree(tmp);
}

static void root_mount(void **state)
{
    (void)state;
    char *tmp = canon_tmpdir();
    assert_non_null(tmp);
    char *yaml = NULL;
    assert_true(asprintf(&yaml, "mounts:\n  /: %s\n  /n: %s\n", tmp, tmp) > 0);
    struct sl_config *cfg = NULL;
    struct sl_ns *ns = NULL;
    assert_int_equal(sl__config_parse("/cfg/sluice.yaml", yaml, strlen(yaml), &cfg), 0);
    assert_int_equal(sl__ns_open(cfg, NULL, &ns), 0);
    struct sl_resolved r;
    assert_int_equal(sl__ns_resolve(ns, "/", &r), 0);
    assert_non_null(r.mount);
    assert_string_equal(r.mount->path, "/");
    assert_string_equal(r.rel, "");
    sl__resolved_free(&r);
    assert_int_equal(sl__ns_resolve(ns, "/x/y", &r), 0);
    assert_string_equal(r.mount->path, "/");
    assert_string_equal(r.rel, "x/y");
    char *id = NULL;
    assert_true(asprintf(&id, "file://%s/x/y", tmp) > 0);
    assert_string_equal(r.object_id, id);
    free(id);
    sl__resolved_free(&r);
    assert_int_equal(sl__ns_resolve(ns, "/n/z", &r), 0);
    assert_string_equal(r.mount->path, "/n");
    assert_string_equal(r.rel, "z");
    sl__resolved_free(&r);
    assert_int_equal(sl__ns_resolve(ns, "/x/..", &r), 0); /* stays in the root mount */
    assert_string_equal(r.rel, "");
    sl__resolved_free(&r);
    assert_int_equal(sl__ns_resolve(ns, "/..", &r), SL_E_PATH_ESCAPE);
    sl__ns_close(ns);
    sl__config_free(cfg);
    free(yaml);
    unit_rmtree(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(normalize),
        cmocka_unit_test(longest_prefix),
        cmocka_unit_test(namespace_directories),
        cmocka_unit_test(resolve_errors),
        cmocka_unit_test(direct_uris),
        cmocka_unit_test(list_mounts),
        cmocka_unit_test(unknown_scheme_in_config),
        cmocka_unit_test(root_mount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
