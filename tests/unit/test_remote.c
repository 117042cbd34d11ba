/* test_remote.c - the pure parts of the remote stores: URL escaping, the times servers send,
 * the AWS credential chain (environment, profiles, files, per-mount keys), the S3 and HTTP
 * stores' URI handling, and the config keys of remote mounts. What needs a real server is in
 * tests/integration/test_s3.py and test_http.py. */
#include "unit.h"

#include "core/core.h"
#include "ufs/aws.h"
#include "ufs/net.h"
#include "ufs/ufs.h"

static const char *const aws_vars[] = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
};

struct env_state {
    char *dir;
};

static int setup(void **state)
{
    struct env_state *s = calloc(1, sizeof(*s));
    s->dir = unit_tmpdir();
    for (size_t i = 0; i < sizeof(aws_vars) / sizeof(aws_vars[0]); i++) unsetenv(aws_vars[i]);
    setenv("HOME", s->dir, 1);
    *state = s;
    return s->dir ? 0 : -1;
}

static int teardown(void **state)
{
    struct env_state *s = *state;
    unit_rmtree(s->dir);
    free(s);
    return 0;
}

static void escape(void **state)
{
    (void)state;
    struct sl_buf b = {0};
    assert_int_equal(sl__net_escape(&b, "a b/c%d+e&f=g?h~i_j-k.l", true), 0);
    assert_string_equal(b.data, "a%20b/c%25d%2Be%26f%3Dg%3Fh~i_j-k.l");
    b.len = 0;
    assert_int_equal(sl__net_escape(&b, "x/y", false), 0);
    assert_string_equal(b.data, "x%2Fy");
    b.len = 0;
    assert_int_equal(sl__net_escape(&b, "\xc3\xbc", true), 0); /* ü in UTF-8 */
    assert_string_equal(b.data, "%C3%BC");
    sl__buf_free(&b);
}

static void unescape(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
        bool plus;
    } cases[] = {
        {"a%20b%C3%BC", "a b\xc3\xbc", false},
        {"a+b", "a+b", false},
        {"a+b%2B", "a b+", true},
        {"100%", "100%", false},    /* a '%' at the end stays */
        {"x%4", "x%4", false},      /* and one with a single digit left */
        {"%-1%+F%zz", "%-1%+F%zz", false}, /* signs and non-hex are not digits */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = sl__net_unescape(cases[i].in, strlen(cases[i].in), cases[i].plus);
        assert_non_null(got);
        assert_string_equal(got, cases[i].out);
        free(got);
    }
    /* Only the n bytes given are read, even where a '%' sits at their end. */
    char *got = sl__net_unescape("ab%41", 3, false);
    assert_string_equal(got, "ab%");
    free(got);
}

static void times(void **state)
{
    (void)state;
    assert_int_equal(sl__net_parse_time("2026-11-22T10:00:00.000Z"), 1795341600LL * 1000000000LL);
    assert_int_equal(sl__net_parse_time("2026-11-22T10:00:00.250Z"),
                     1795341600LL * 1000000000LL + 250000000LL);
    assert_int_equal(sl__net_parse_time("Sun, 22 Nov 2026 10:00:00 GMT"),
                     1795341600LL * 1000000000LL);
    assert_int_equal(sl__net_parse_time("not a date"), 0);
    assert_int_equal(sl__net_parse_time(""), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    assert_int_equal(unit_write_file(p, text, strlen(text)), 0);
    free(p);
}

static void credentials_order(void **state)
{
    struct env_state *s = *state;
    struct sl_aws a;
    char *aws_dir = NULL;
    assert_true(asprintf(&aws_dir, "%s/.aws", s->dir) > 0);
    assert_int_equal(sl__mkdirs(aws_dir, 0700), 0);

    /* Nothing anywhere: no credentials (unsigned requests), us-east-1, AWS. */
    assert_int_equal(sl__aws_resolve(NULL, &a), 0);
    assert_null(a.access_key);
    assert_string_equal(a.region, "us-east-1");
    assert_null(a.endpoint);
    sl__aws_free(&a);

    /* Profiles: [default] in credentials; [profile ci] in config; region from config. */
    write_text(aws_dir, "credentials",
               "# comment\n[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n"
               "[other]\naws_access_key_id=OTHER\naws_secret_access_key=x\n");
    write_text(aws_dir, "config",
               "[default]\nregion = eu-west-1\n[profile ci]\naws_access_key_id = CI\n"
               "aws_secret_access_key = ci secret with spaces\naws_session_token = tok\n"
               "region = ap-south-1\n");
    assert_int_equal(sl__aws_resolve(NULL, &a), 0);
    assert_string_equal(a.access_key, "DEF");
    assert_string_equal(a.secret_key, "defsecret");
    assert_string_equal(a.region, "eu-west-1");
    assert_non_null(strstr(a.source, "profile default"));
    sl__aws_free(&a);

    setenv("AWS_PROFILE", "ci", 1);
    assert_int_equal(sl__aws_resolve(NULL, &a), 0);
    assert_string_equal(a.access_key, "CI");
    assert_string_equal(a.secret_key, "ci secret with spaces");
    assert_string_equal(a.session_token, "tok");
    assert_string_equal(a.region, "ap-south-1");
    sl__aws_free(&a);

    /* The environment beats the profile; AWS_REGION beats the profile's region. */
    setenv("AWS_ACCESS_KEY_ID", "ENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    setenv("AWS_REGION", "us-west-2", 1);
    setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000", 1);
    assert_int_equal(sl__aws_resolve(NULL, &a), 0);
    assert_string_equal(a.access_key, "ENV");
    assert_string_equal(a.source, "AWS_ACCESS_KEY_ID");
    assert_string_equal(a.region, "us-west-2");
    assert_string_equal(a.endpoint, "http://127.0.0.1:9000");
    sl__aws_free(&a);

    /* The mount's own keys, region and endpoint beat everything. */
    struct sl_mount_cfg mc = {.path = "/m", .access_key = "MOUNT", .secret_key = "ms",
                              .region = "sa-east-1", .endpoint = "http://store:1"};
    assert_int_equal(sl__aws_resolve(&mc, &a), 0);
    assert_string_equal(a.access_key, "MOUNT");
    assert_string_equal(a.region, "sa-east-1");
    assert_string_equal(a.endpoint, "http://store:1");
    assert_non_null(strstr(a.source, "/m"));
    sl__aws_free(&a);

    /* Half of a mount's key pair is a mistake, not a reason to use other credentials. */
    struct sl_mount_cfg half = {.path = "/h", .access_key = "ONLY"};
    assert_int_equal(sl__aws_resolve(&half, &a), SL_E_CONFIG);
    assert_non_null(strstr(sl_errmsg(SL_E_CONFIG), "mounts: /h: has access_key but no secret_key"));

    /* A key id without its secret is a config error that names where. */
    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_PROFILE", "broken", 1);
    write_text(aws_dir, "credentials", "[broken]\naws_access_key_id = HALF\n");
    assert_int_equal(sl__aws_resolve(NULL, &a), SL_E_CONFIG);
    assert_non_null(strstr(sl_errmsg(SL_E_CONFIG), "aws_secret_access_key"));
    free(aws_dir);
}

static void s3_uris(void **state)
{
    (void)state;
    struct sl_ufs *u = NULL;
    char *root = NULL, *path = NULL;
    const struct sl_ufs_ops *ops = sl__ufs_find("s3://b/x");
    assert_non_null(ops);
    assert_int_equal(ops->split("s3://my-bucket/a/b c.jpg", &root, &path), 0);
    assert_string_equal(root, "s3://my-bucket");
    assert_string_equal(path, "a/b c.jpg");
    free(root);
    free(path);
    assert_int_equal(ops->split("s3:///x", &root, &path), SL_E_BAD_URI);

    /* Bad bucket names are refused with a message naming the rule. */
    assert_int_equal(sl__ufs_open("s3://Bad_Bucket!/x", NULL, NULL, &u), SL_E_BAD_URI);
    assert_non_null(strstr(sl_errmsg(SL_E_BAD_URI), "bucket name"));
    assert_int_equal(sl__ufs_open("s3://ok-bucket/../x", NULL, NULL, &u), SL_E_BAD_URI);

    /* The id names the endpoint of a custom store, so one bucket name on two stores is two. */
    struct sl_mount_cfg mc = {.path = "/m", .endpoint = "http://127.0.0.1:9000/", .retries = -1};
    assert_int_equal(sl__ufs_open("s3://bkt/pre/fix", &mc, NULL, &u), 0);
    assert_string_equal(u->id, "http://127.0.0.1:9000/bkt/pre/fix");
    sl__ufs_close(u);
    mc.endpoint = NULL;
    mc.region = "eu-west-1";
    assert_int_equal(sl__ufs_open("s3://bkt", &mc, NULL, &u), 0);
    assert_string_equal(u->id, "s3://bkt");
    sl__ufs_close(u);
    mc.endpoint = "ftp://x";
    assert_int_equal(sl__ufs_open("s3://bkt", &mc, NULL, &u), SL_E_BAD_URI);
    assert_non_null(strstr(sl_errmsg(SL_E_BAD_URI), "ftp://x"));
}

static void http_uris(void **state)
{
    (void)state;
    struct sl_ufs *u = NULL;
    char *root = NULL, *path = NULL;
    const struct sl_ufs_ops *ops = sl__ufs_find("https://h/x");
    assert_non_null(ops);
    assert_int_equal(ops->split("https://host:8443/rel/a%20b%C3%BC.bin", &root, &path), 0);
    assert_string_equal(root, "https://host:8443");
    assert_string_equal(path, "rel/a b\xc3\xbc.bin"); /* decoded: a plain name */
    free(root);
    free(path);
    assert_int_equal(sl__ufs_open("http://host/releases/", NULL, NULL, &u), 0);
    assert_string_equal(u->id, "http://host/releases");
    sl__ufs_close(u);
    assert_int_equal(sl__ufs_open("http:///nohost", NULL, NULL, &u), SL_E_BAD_URI);
}

static void config_keys(void **state)
{
    (void)state;
    struct sl_config *cfg = NULL;
    const char *ok = "mounts:\n  /s3:\n    uri: s3://b/p\n    concurrency: 32\n"
                     "    part_size: 16MiB\n    retries: 2\n    retry_time: 1500ms\n"
                     "    addressing: virtual\n";
    assert_int_equal(sl__config_parse("t.yaml", ok, strlen(ok), &cfg), 0);
    assert_int_equal(cfg->mounts[0].concurrency, 32);
    assert_int_equal(cfg->mounts[0].part_size, 16ULL << 20);
    assert_int_equal(cfg->mounts[0].retries, 2);
    assert_int_equal(cfg->mounts[0].retry_time_ns, 1500000000LL);
    assert_int_equal(cfg->mounts[0].addressing, SL_ADDR_VIRTUAL);
    sl__config_free(cfg);

    static const struct {
        const char *yaml, *needle;
    } bad[] = {
        {"mounts:\n  /s3:\n    uri: s3://b\n    concurrency: 0\n", "t.yaml:4:18: mounts: /s3: concurrency"},
        {"mounts:\n  /s3:\n    uri: s3://b\n    part_size: 1MiB\n", "5MiB to 5GiB"},
        {"mounts:\n  /s3:\n    uri: s3://b\n    retries: lots\n", "whole number"},
        {"mounts:\n  /s3:\n    uri: s3://b\n    retry_time: 0\n", "duration"},
        {"mounts:\n  /s3:\n    uri: s3://b\n    addressing: dns\n", "path, virtual or auto"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg = NULL;
        assert_int_equal(sl__config_parse("t.yaml", bad[i].yaml, strlen(bad[i].yaml), &cfg),
                         SL_E_CONFIG);
        if (!strstr(sl_errmsg(SL_E_CONFIG), bad[i].needle))
            fail_msg("%s: %s", bad[i].needle, sl_errmsg(SL_E_CONFIG));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(escape),
        cmocka_unit_test(unescape),
        cmocka_unit_test(times),
        cmocka_unit_test_setup_teardown(credentials_order, setup, teardown),
        cmocka_unit_test_setup_teardown(s3_uris, setup, teardown),
        cmocka_unit_test(http_uris),
        cmocka_unit_test(config_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
