/* test_config.c - sluice.yaml as users write it: what each key means, and errors that point at
 * the offending node (FILE:LINE:COL) and say what was expected there. */
#include "unit.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include "core/core.h"

#define NAME "/etc/sluice-test/sluice.yaml"

static struct sl_config *parse_ok(const char *yaml)
{
    struct sl_config *cfg = NULL;
    int rc = sl__config_parse(NAME, yaml, strlen(yaml), &cfg);
    if (rc != 0) fail_msg("config refused (%d): %s\n---\n%s", rc, sl_errmsg(rc), yaml);
    assert_non_null(cfg);
    return cfg;
}

static const struct sl_mount_cfg *mount(const struct sl_config *cfg, const char *path)
{
    for (size_t i = 0; i < cfg->nmounts; i++)
        if (strcmp(cfg->mounts[i].path, path) == 0) return &cfg->mounts[i];
    fail_msg("no mount %s", path);
    return NULL;
}

/* The config must be refused with SL_E_CONFIG, a message that begins "NAME:LINE:COL: " and
 * contains each of the NULL-terminated needles. */
static void expect_error_at(const char *yaml, unsigned line, unsigned col, ...)
{
    struct sl_config *cfg = (struct sl_config *)0x1;
    int rc = sl__config_parse(NAME, yaml, strlen(yaml), &cfg);
    if (rc != SL_E_CONFIG)
        fail_msg("expected SL_E_CONFIG, got %d (%s)\n---\n%s", rc, sl_strerror(rc), yaml);
    assert_ptr_equal(cfg, (struct sl_config *)0x1); /* *out untouched on failure */

    const char *msg = sl_errmsg(rc);
    char prefix[256];
    snprintf(prefix, sizeof(prefix), "%s:%u:%u: ", NAME, line, col);
    if (strncmp(msg, prefix, strlen(prefix)) != 0)
        fail_msg("message should start with '%s', got '%s'\n---\n%s", prefix, msg, yaml);

    va_list ap;
    va_start(ap, col);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        if (!strstr(msg, needle))
            fail_msg("message '%s' should mention '%s'\n---\n%s", msg, needle, yaml);
    va_end(ap);
}

/* ---- what is accepted ---------------------------------------------------------------------- */

static void empty_config_gives_defaults(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    char *old_home = sl__strdup(getenv("HOME")), *old_xdg = sl__strdup(getenv("XDG_CACHE_HOME"));
    setenv("HOME", tmp, 1);
    unsetenv("XDG_CACHE_HOME");

    static const char *const empties[] = {"", "\n", "# only a comment\n", "---\n", "mounts:\n"};
    for (size_t i = 0; i < SL_ARRAY_LEN(empties); i++) {
        struct sl_config *cfg = parse_ok(empties[i]);
        assert_int_equal(cfg->cache_size, 10ULL << 30);
        assert_int_equal(cfg->cache_memory, 1ULL << 30);
        assert_int_equal(cfg->page_size, 1U << 20);
        assert_int_equal(cfg->nmounts, 0);
        char *want = NULL;
        assert_true(asprintf(&want, "%s/.cache/sluice", tmp) > 0);
        assert_string_equal(cfg->cache_dir, want);
        assert_string_equal(cfg->file, NAME);
        free(want);
        sl__config_free(cfg);
    }

    /* XDG_CACHE_HOME wins over HOME. */
    setenv("XDG_CACHE_HOME", "/xdg/cache", 1);
    struct sl_config *cfg = parse_ok("");
    assert_string_equal(cfg->cache_dir, "/xdg/cache/sluice");
    sl__config_free(cfg);

    if (old_home) setenv("HOME", old_home, 1); else unsetenv("HOME");
    if (old_xdg) setenv("XDG_CACHE_HOME", old_xdg, 1); else unsetenv("XDG_CACHE_HOME");
    free(old_home);
    free(old_xdg);
    unit_rmtree(tmp);
}

static void cache_keys(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    struct sl_config *cfg = parse_ok("cache:\n"
                                     "  dir: /var/cache/sl\n"
                                     "  size: 20GiB\n"
                                     "  memory: 512MiB\n"
                                     "  page_size: 4MiB\n");
    assert_string_equal(cfg->cache_dir, "/var/cache/sl");
    assert_int_equal(cfg->cache_size, 20ULL << 30);
    assert_int_equal(cfg->cache_memory, 512ULL << 20);
    assert_int_equal(cfg->page_size, 4U << 20);
    sl__config_free(cfg);

    /* A relative dir is relative to the config file's folder, and normalised. */
    cfg = parse_ok("cache:\n  dir: cache\n");
    assert_string_equal(cfg->cache_dir, "/etc/sluice-test/cache");
    sl__config_free(cfg);
    cfg = parse_ok("cache:\n  dir: ./a/../b/./c\n");
    assert_string_equal(cfg->cache_dir, "/etc/sluice-test/b/c");
    sl__config_free(cfg);
    cfg = parse_ok("cache:\n  dir: ../shared\n");
    assert_string_equal(cfg->cache_dir, "/etc/shared");
    sl__config_free(cfg);

    /* "~" is the home directory. */
    char *old_home = sl__strdup(getenv("HOME"));
    setenv("HOME", tmp, 1);
    char *want = NULL;
    cfg = parse_ok("cache:\n  dir: ~/sl-cache\n");
    assert_true(asprintf(&want, "%s/sl-cache", tmp) > 0);
    assert_string_equal(cfg->cache_dir, want);
    free(want);
    sl__config_free(cfg);
    cfg = parse_ok("cache:\n  dir: ~\n");
    assert_string_equal(cfg->cache_dir, tmp);
    sl__config_free(cfg);
    if (old_home) setenv("HOME", old_home, 1); else unsetenv("HOME");
    free(old_home);

    /* Page sizes: every power of two from 4KiB to 64MiB. */
    for (uint64_t ps = 4096; ps <= (64ULL << 20); ps *= 2) {
        char yaml[64];
        snprintf(yaml, sizeof(yaml), "cache:\n  page_size: %llu\n", (unsigned long long)ps);
        cfg = parse_ok(yaml);
        assert_int_equal(cfg->page_size, ps);
        sl__config_free(cfg);
    }
    cfg = parse_ok("cache:\n  page_size: 4KiB\n");
    assert_int_equal(cfg->page_size, 4096);
    sl__config_free(cfg);
    cfg = parse_ok("cache:\n  page_size: 64MiB\n");
    assert_int_equal(cfg->page_size, 64U << 20);
    sl__config_free(cfg);

    /* A relative name: relative to the working directory. */
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    struct sl_config *c2 = NULL;
    const char *y = "cache:\n  dir: rel\n";
    assert_int_equal(sl__config_parse("sluice.yaml", y, strlen(y), &c2), 0);
    assert_true(asprintf(&want, "%s/rel", strcmp(cwd, "/") == 0 ? "" : cwd) > 0);
    assert_string_equal(c2->cache_dir, want);
    free(want);
    sl__config_free(c2);
    unit_rmtree(tmp);
}

static void mounts_plain_and_mapping(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    struct sl_config *cfg = parse_ok("mounts:\n"
                                     "  /imagenet: s3://bucket/imagenet\n"
                                     "  /local: /srv/data\n"
                                     "  /rel: ./datasets/x\n"
                                     "  /tidy: /srv//a/./b/../c\n"
                                     "  /uri: file:///srv/other\n"
                                     "  /full:\n"
                                     "    uri: s3://b2/p\n"
                                     "    endpoint: http://minio:9000\n"
                                     "    region: eu-west-1\n"
                                     "    access_key: AK\n"
                                     "    secret_key: SK\n"
                                     "    policy: lru\n"
                                     "    metadata_ttl: 10m\n"
                                     "  /a/b: {uri: /srv/ab, policy: epoch, metadata_ttl: -1}\n"
                                     "  /z: {uri: /srv/z, policy: s3fifo, metadata_ttl: 0}\n"
                                     "  /: /srv/root\n");
    assert_int_equal(cfg->nmounts, 9);
    /* In the order written. */
    assert_string_equal(cfg->mounts[0].path, "/imagenet");
    assert_string_equal(cfg->mounts[8].path, "/");

    const struct sl_mount_cfg *m = mount(cfg, "/imagenet");
    assert_string_equal(m->uri, "s3://bucket/imagenet");
    assert_int_equal(m->policy, SL_POLICY_DEFAULT);
    assert_true(m->metadata_ttl_ns == SL_TTL_DEFAULT);
    assert_null(m->endpoint);
    assert_null(m->region);
    assert_int_equal(m->line, 2);
    assert_int_equal(m->column, 3);

    assert_string_equal(mount(cfg, "/local")->uri, "file:///srv/data");
    assert_string_equal(mount(cfg, "/rel")->uri, "file:///etc/sluice-test/datasets/x");
    assert_string_equal(mount(cfg, "/tidy")->uri, "file:///srv/a/c");
    assert_string_equal(mount(cfg, "/uri")->uri, "file:///srv/other");
    assert_string_equal(mount(cfg, "/")->uri, "file:///srv/root");

    m = mount(cfg, "/full");
    assert_string_equal(m->uri, "s3://b2/p");
    assert_string_equal(m->endpoint, "http://minio:9000");
    assert_string_equal(m->region, "eu-west-1");
    assert_string_equal(m->access_key, "AK");
    assert_string_equal(m->secret_key, "SK");
    assert_int_equal(m->policy, SL_POLICY_LRU);
    assert_true(m->metadata_ttl_ns == 600LL * 1000000000LL);
    assert_int_equal(m->line, 7);
    assert_int_equal(m->column, 3);

    m = mount(cfg, "/a/b");
    assert_string_equal(m->uri, "file:///srv/ab");
    assert_int_equal(m->policy, SL_POLICY_EPOCH);
    assert_true(m->metadata_ttl_ns == SL_TTL_FOREVER);

    m = mount(cfg, "/z");
    assert_int_equal(m->policy, SL_POLICY_S3FIFO);
    assert_true(m->metadata_ttl_ns == 0);
    sl__config_free(cfg);

    /* ~ in a mount. */
    char *old_home = sl__strdup(getenv("HOME"));
    setenv("HOME", tmp, 1);
    cfg = parse_ok("mounts:\n  /h: ~/data\n");
    char *want = NULL;
    assert_true(asprintf(&want, "file://%s/data", tmp) > 0);
    assert_string_equal(mount(cfg, "/h")->uri, want);
    free(want);
    sl__config_free(cfg);
    if (old_home) setenv("HOME", old_home, 1); else unsetenv("HOME");
    free(old_home);

    assert_string_equal(sl__policy_name(SL_POLICY_LRU), "lru");
    assert_string_equal(sl__policy_name(SL_POLICY_S3FIFO), "s3fifo");
    assert_string_equal(sl__policy_name(SL_POLICY_EPOCH), "epoch");
    assert_string_equal(sl__policy_name(SL_POLICY_DEFAULT), "s3fifo");
    unit_rmtree(tmp);
}

/* ---- what is refused, and where ------------------------------------------------------------- */

static void malformed_yaml(void **state)
{
    (void)state;
    /* An unclosed bracket: found where the next line cannot continue the list. */
    expect_error_at("mounts: [/a, /b\ncache: {}\n", 2, 6, "invalid YAML", "']'", NULL);
    expect_error_at("cache: {size: 1GiB\nmounts: x\n", 2, 7, "invalid YAML", "'}'", NULL);
    /* Bad indentation. */
    expect_error_at("cache:\n  size: 1GiB\n   memory: 2GiB\n", 3, 10, "invalid YAML", NULL);
    /* Not a mapping at the top. */
    expect_error_at("- a\n- b\n", 1, 1, "expected a mapping", "cache, mounts", "a list", NULL);
}

static void unknown_keys(void **state)
{
    (void)state;
    expect_error_at("cache:\n  size: 1GiB\nmonuts:\n  /a: /x\n", 3, 1, "unknown key 'monuts'",
                    "cache, mounts", NULL);
    expect_error_at("cache:\n  size: 1GiB\n  sise: 2GiB\n", 3, 3, "unknown key 'sise'",
                    "dir, size, memory, page_size", NULL);
    expect_error_at("mounts:\n"
                    "  /d:\n"
                    "    uri: /x\n"
                    "    metdata_ttl: 10m\n",
                    4, 5, "/d", "unknown key 'metdata_ttl'", "metadata_ttl", "policy", "uri", NULL);
    expect_error_at("mounts:\n  /d: {uri: /x, polcy: lru}\n", 2, 17, "unknown key 'polcy'", NULL);
}

static void bad_values(void **state)
{
    (void)state;
    expect_error_at("cache:\n  dir: /x\n  size: lots\n", 3, 9, "cache.size", "'lots'",
                    "a size such as", NULL);
    expect_error_at("cache:\n  memory: 1 XB\n", 2, 11, "cache.memory", "'1 XB'", NULL);
    expect_error_at("cache:\n  size: 0\n", 2, 9, "cache.size", "more than 0", NULL);
    expect_error_at("cache:\n  page_size: 12KiB\n", 2, 14, "cache.page_size",
                    "power of two from 4KiB to 64MiB", "'12KiB'", NULL);
    expect_error_at("cache:\n  page_size: 3000\n", 2, 14, "power of two", "'3000'", NULL);
    expect_error_at("cache:\n  page_size: 2KiB\n", 2, 14, "power of two", "'2KiB'", NULL);
    expect_error_at("cache:\n  page_size: 128MiB\n", 2, 14, "power of two", "'128MiB'", NULL);
    expect_error_at("cache:\n  page_size: big\n", 2, 14, "cache.page_size", "'big'", NULL);
    expect_error_at("cache: 12\n", 1, 8, "cache", "expected a mapping", NULL);

    expect_error_at("mounts:\n  /d:\n    uri: /x\n    policy: fifo\n", 4, 13, "/d", "policy",
                    "lru, s3fifo or epoch", "'fifo'", NULL);
    expect_error_at("mounts:\n  /d:\n    uri: /x\n    metadata_ttl: soon\n", 4, 19,
                    "metadata_ttl", "a duration such as", "'soon'", NULL);
    /* A bare number is ambiguous. */
    expect_error_at("mounts:\n  /d: {uri: /x, metadata_ttl: 10}\n", 2, 31, "metadata_ttl",
                    "'10'", NULL);
    expect_error_at("mounts:\n  /d: data\n", 2, 7, "'data'", "not a URI", NULL);
    expect_error_at("mounts:\n  /d: 'f tp://h/p'\n", 2, 7, "not a URI", NULL);
    expect_error_at("mounts:\n  /d: [a, b]\n", 2, 7, "/d", "a URI or a mapping", "a list", NULL);
    expect_error_at("mounts: [/a]\n", 1, 9, "mounts", "expected a mapping", NULL);
}

static void bad_mount_paths(void **state)
{
    (void)state;
    expect_error_at("mounts:\n  /a: /x\n  /b: /y\n  /a: /z\n", 4, 3, "/a", "mounted twice",
                    "line 2", NULL);
    expect_error_at("mounts:\n  data: /x\n", 2, 3, "'data'", "start with '/'", NULL);
    expect_error_at("mounts:\n  /a: /x\n  /a/../b: /y\n", 3, 3, "'/a/../b'", "'..'", NULL);
    expect_error_at("mounts:\n  /..: /y\n", 2, 3, "'/..'", "'..'", NULL);
    expect_error_at("mounts:\n  /a/..: /y\n", 2, 3, "'/a/..'", NULL);
    expect_error_at("mounts:\n  /data/: /y\n", 2, 3, "'/data/'", "trailing '/'", NULL);
    expect_error_at("mounts:\n  /a//b: /y\n", 2, 3, "'/a//b'", "doubled", NULL);
    expect_error_at("mounts:\n  /a/./b: /y\n", 2, 3, "'/a/./b'", NULL);
}

static void mapping_mount_without_uri(void **state)
{
    (void)state;
    expect_error_at("mounts:\n  /ok: /x\n  /d:\n    policy: lru\n    metadata_ttl: 10m\n", 4, 5,
                    "/d", "missing 'uri:'", NULL);
    expect_error_at("mounts:\n  /d: {policy: lru}\n", 2, 7, "/d", "missing 'uri:'", NULL);
}

static void load_from_file(void **state)
{
    (void)state;
    char *tmp = unit_tmpdir();
    assert_non_null(tmp);
    char *missing = NULL, *dir = NULL, *file = NULL;
    assert_true(asprintf(&missing, "%s/nowhere/sluice.yaml", tmp) > 0);
    assert_true(asprintf(&dir, "%s/conf", tmp) > 0);
    assert_true(asprintf(&file, "%s/conf/sluice.yaml", tmp) > 0);

    struct sl_config *cfg = NULL;
    int rc = sl__config_load(missing, &cfg);
    assert_int_equal(rc, SL_E_CONFIG); /* a config error: exit 2 */
    assert_null(cfg);
    assert_non_null(strstr(sl_errmsg(rc), missing));
    assert_non_null(strstr(sl_errmsg(rc), "No such file or directory"));

    /* A file found: relative paths are relative to its folder, errors name it. */
    assert_int_equal(mkdir(dir, 0755), 0);
    const char *y = "cache:\n  dir: cache\n  size: 1GiB\nmounts:\n  /d: ./data\n";
    assert_int_equal(unit_write_file(file, y, strlen(y)), 0);
    char *real = realpath(tmp, NULL);
    assert_non_null(real);
    assert_int_equal(sl__config_load(file, &cfg), 0);
    char *want = NULL;
    assert_true(asprintf(&want, "%s/conf/cache", real) > 0);
    assert_string_equal(cfg->cache_dir, want);
    free(want);
    assert_true(asprintf(&want, "file://%s/conf/data", real) > 0);
    assert_string_equal(cfg->mounts[0].uri, want);
    free(want);
    assert_int_equal(cfg->cache_size, 1ULL << 30);
    sl__config_free(cfg);
    cfg = NULL;

    y = "cache:\n  size: lots\n";
    assert_int_equal(unit_write_file(file, y, strlen(y)), 0);
    rc = sl__config_load(file, &cfg);
    assert_int_equal(rc, SL_E_CONFIG);
    assert_true(asprintf(&want, "%s/conf/sluice.yaml:2:9: ", real) > 0);
    assert_non_null(strstr(sl_errmsg(rc), want));
    free(want);

    free(real);
    free(missing);
    free(dir);
    free(file);
    unit_rmtree(tmp);
}

/* A config named by a relative path with a folder ("conf/sluice.yaml"): its relative paths are
 * relative to that folder under the working directory, not to the root of the file system. */
/* A key given twice is refused, pointing at the second: the last one silently winning would
 * hide a typo or a bad merge of two config fragments. */
static void duplicate_keys(void **state)
{
    (void)state;
    expect_error_at("cache:\n  size: 1GiB\n  size: 2GiB\n", 3, 3, "'size' is given twice",
                    "first at line 2", NULL);
    expect_error_at("cache:\n  size: 1GiB\ncache:\n  memory: 1GiB\n", 3, 1,
                    "'cache' is given twice", NULL);
    expect_error_at("mounts:\n  /d:\n    uri: file:///a\n    uri: file:///b\n", 4, 5,
                    "mounts: /d: 'uri' is given twice", NULL);
}

static void relative_name_with_folder(void **state)
{
    (void)state;
    char cwd[PATH_MAX];
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    const char *base = strcmp(cwd, "/") == 0 ? "" : cwd;
    struct sl_config *cfg = NULL;
    const char *y = "cache:\n  dir: cache\nmounts:\n  /d: ./data\n";
    int rc = sl__config_parse("conf/sluice.yaml", y, strlen(y), &cfg);
    if (rc) fail_msg("%s", sl_errmsg(rc));
    char *want_dir = NULL, *want_uri = NULL;
    assert_true(asprintf(&want_dir, "%s/conf/cache", base) > 0);
    assert_true(asprintf(&want_uri, "file://%s/conf/data", base) > 0);
    char got_dir[PATH_MAX], got_uri[PATH_MAX];
    snprintf(got_dir, sizeof(got_dir), "%s", cfg->cache_dir);
    snprintf(got_uri, sizeof(got_uri), "%s", cfg->mounts[0].uri);
    sl__config_free(cfg);
    char msg[4 * PATH_MAX];
    bool ok = strcmp(got_dir, want_dir) == 0 && strcmp(got_uri, want_uri) == 0;
    snprintf(msg, sizeof(msg), "cache.dir '%s' (expected '%s'), mount uri '%s' (expected '%s')",
             got_dir, want_dir, got_uri, want_uri);
    free(want_dir);
    free(want_uri);
    if (!ok) fail_msg("config 'conf/sluice.yaml' in %s: %s", cwd, msg);
}

/* A bracket left open to the end of the file: the parser notices at the end (2:1, past the last
 * line), but the offending node is the bracket at 1:9, and the message must lead the user there. */
static void unclosed_bracket_points_at_the_bracket(void **state)
{
    (void)state;
    const char *y = "mounts: [/a, /b\n";
    struct sl_config *cfg = NULL;
    int rc = sl__config_parse(NAME, y, strlen(y), &cfg);
    assert_int_equal(rc, SL_E_CONFIG);
    const char *msg = sl_errmsg(rc);
    assert_non_null(strstr(msg, "invalid YAML"));
    assert_int_equal(strncmp(msg, NAME ":", strlen(NAME ":")), 0);
    if (!strstr(msg, "1:9") && !strstr(msg, "line 1, column 9"))
        fail_msg("'%s' does not say where the unclosed '[' is (line 1, column 9)", msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_config_gives_defaults),
        cmocka_unit_test(cache_keys),
        cmocka_unit_test(mounts_plain_and_mapping),
        cmocka_unit_test(malformed_yaml),
        cmocka_unit_test(unclosed_bracket_points_at_the_bracket),
        cmocka_unit_test(unknown_keys),
        cmocka_unit_test(bad_values),
        cmocka_unit_test(bad_mount_paths),
        cmocka_unit_test(mapping_mount_without_uri),
        cmocka_unit_test(load_from_file),
        cmocka_unit_test(relative_name_with_folder),
        cmocka_unit_test(duplicate_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
