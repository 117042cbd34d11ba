/* test_units.c - sizes and durations as users write them, and the ones we refuse. */
#include "unit.h"

#include "core/core.h"

static void sizes_accepted(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } cases[] = {
        {"0", 0},
        {"4096", 4096},
        {"1B", 1},
        {"1KiB", 1024},
        {"1 KiB", 1024},
        {"1kib", 1024},
        {"1MiB", 1ULL << 20},
        {"20GiB", 20ULL << 30},
        {"1.5GiB", 3ULL << 29},
        {"2TiB", 2ULL << 40},
        {"1KB", 1000},
        {"1MB", 1000000},
        {"10GB", 10000000000ULL},
        {" 7 MiB ", 7ULL << 20},
        {"18446744073709551615", UINT64_MAX},
        {"9223372036854775808", 1ULL << 63},
        {"16777215TiB", 16777215ULL << 40},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t v = 12345;
        assert_int_equal(sl_parse_size(cases[i].s, &v), 0);
        assert_int_equal(v, cases[i].v);
    }
}

static void sizes_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {"", "lots", "-1", "1.5", "1XB", "GiB", "1 GiB x",
                                      "99999999999PiB", "0x10", "1e3",
                                      "18446744073709551616", "16777216TiB", "16.5EiB"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 77;
        assert_int_equal(sl_parse_size(bad[i], &v), SL_E_USAGE);
        assert_int_equal(v, 77); /* untouched on failure */
    }
    assert_int_equal(sl_parse_size(NULL, &(uint64_t){0}), SL_E_USAGE);
}

static void durations(void **state)
{
    (void)state;
    int64_t ns;
    assert_int_equal(sl_parse_duration("0", &ns), 0);
    assert_int_equal(ns, 0);
    assert_int_equal(sl_parse_duration("-1", &ns), 0);
    assert_int_equal(ns, SL_TTL_FOREVER);
    assert_int_equal(sl_parse_duration("250ms", &ns), 0);
    assert_int_equal(ns, 250000000LL);
    assert_int_equal(sl_parse_duration("10m", &ns), 0);
    assert_int_equal(ns, 600LL * 1000000000LL);
    assert_int_equal(sl_parse_duration("1h30m", &ns), 0);
    assert_int_equal(ns, 5400LL * 1000000000LL);
    assert_int_equal(sl_parse_duration("1.5s", &ns), 0);
    assert_int_equal(ns, 1500000000LL);
    assert_int_equal(sl_parse_duration("2d", &ns), 0);
    assert_int_equal(ns, 2LL * 86400 * 1000000000LL);

    /* A bare number is ambiguous (seconds? minutes?), and so is garbage. */
    static const char *const bad[] = {"10", "", "m", "10x", "-5s", "1h-", "ten minutes"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sl_parse_duration(bad[i], &ns), SL_E_USAGE);
}

static void format(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(sl_format_size(0, buf, sizeof(buf)), "0 B");
    assert_string_equal(sl_format_size(1023, buf, sizeof(buf)), "1023 B");
    assert_string_equal(sl_format_size(1024, buf, sizeof(buf)), "1.00 KiB");
    assert_string_equal(sl_format_size(1536ULL << 20, buf, sizeof(buf)), "1.50 GiB");
    assert_string_equal(sl_format_size(200ULL << 20, buf, sizeof(buf)), "200 MiB");
    assert_string_equal(sl_format_size(UINT64_MAX, buf, sizeof(buf)), "16.0 EiB");
}

static void errors(void **state)
{
    (void)state;
    assert_string_equal(sl_strerror(0), "success");
    assert_string_equal(sl_strerror(SL_E_PATH_ESCAPE), "path escapes its mount with '..'");
    assert_string_equal(sl_strerror(-ENOENT), "No such file or directory");
    assert_string_equal(sl_strerror(-99999), "unknown error");

    /* Detail belongs to the code it was recorded for, and is cleared. */
    sl__err(-ENOENT, "/data/x: not there");
    assert_string_equal(sl_errmsg(-ENOENT), "/data/x: not there");
    assert_string_equal(sl_errmsg(-EIO), sl_strerror(-EIO));
    sl__err_ctx(-ENOENT, "/outer"); /* the inner, more precise detail wins */
    assert_string_equal(sl_errmsg(-ENOENT), "/data/x: not there");
    sl__err_clear();
    assert_string_equal(sl_errmsg(-ENOENT), sl_strerror(-ENOENT));
    sl__err_ctx(-EIO, "/outer");
    assert_string_equal(sl_errmsg(-EIO), "/outer: Input/output error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sizes_accepted), cmocka_unit_test(sizes_refused),
        cmocka_unit_test(durations),      cmocka_unit_test(format),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
