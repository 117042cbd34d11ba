/*
 * units.c - sizes and durations as people write them in configs and on command lines.
 *
 * Sizes: a number (decimals allowed) and an optional unit, binary (KiB..PiB, powers of 1024) or
 * decimal (KB..PB, powers of 1000), case-insensitive, spaces allowed between; no unit means
 * bytes. Durations: one or more number+unit groups ("1h30m"), units ms/s/m/h/d; "0" means
 * zero and "-1" forever. A bare non-zero number is refused: "10" could be seconds or minutes.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/core.h"

/* A plain decimal number, "12" or "1.5": strtod alone would also take "0x10", "1e3", "inf". */
static bool scan_number(const char *s, double *v, const char **end)
{
    const char *c = s;
    while (isdigit((unsigned char)*c)) c++;
    if (*c == '.') {
        c++;
        if (!isdigit((unsigned char)*c)) return false;
        while (isdigit((unsigned char)*c)) c++;
    }
    if (c == s || !isdigit((unsigned char)s[0])) return false;
    char buf[64];
    if ((size_t)(c - s) >= sizeof(buf)) return false;
    memcpy(buf, s, (size_t)(c - s));
    buf[c - s] = '\0';
    *v = strtod(buf, NULL);
    *end = c;
    return isfinite(*v);
}

struct unit {
    const char *name;
    double factor;
};

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"kib", 1024.0},
    {"mib", 1024.0 * 1024},
    {"gib", 1024.0 * 1024 * 1024},
    {"tib", 1024.0 * 1024 * 1024 * 1024},
    {"pib", 1024.0 * 1024 * 1024 * 1024 * 1024},
    {"kb", 1e3},
    {"mb", 1e6},
    {"gb", 1e9},
    {"tb", 1e12},
    {"pb", 1e15},
};

int sl_parse_size(const char *s, uint64_t *bytes)
{
    const char *end;
    double v;

    if (!s) return SL_E_USAGE;
    while (isspace((unsigned char)*s)) s++;
    const char *digits = s;
    if (!scan_number(s, &v, &end)) return SL_E_USAGE;
    bool whole = !memchr(digits, '.', (size_t)(end - digits));
    while (isspace((unsigned char)*end)) end++;
    size_t ulen = strlen(end);
    while (ulen > 0 && isspace((unsigned char)end[ulen - 1])) ulen--;
    for (size_t i = 0; i < SL_ARRAY_LEN(size_units); i++) {
        if (strlen(size_units[i].name) == ulen && strncasecmp(end, size_units[i].name, ulen) == 0) {
            uint64_t factor = (uint64_t)size_units[i].factor;
            if (whole) {
                /* Whole numbers exactly, up to 2^64 - 1: a double would round them. */
                errno = 0;
                unsigned long long n = strtoull(digits, NULL, 10);
                if (errno == ERANGE || (factor && n > UINT64_MAX / factor)) return SL_E_USAGE;
                *bytes = (uint64_t)n * factor;
                return 0;
            }
            double b = v * size_units[i].factor;
            if (b >= 18446744073709551616.0) return SL_E_USAGE;
            /* A fractional byte count is a typo, not a size. */
            if (size_units[i].factor == 1 && b != floor(b)) return SL_E_USAGE;
            *bytes = (uint64_t)(b + 0.5);
            return 0;
        }
    }
    return SL_E_USAGE;
}

int sl_parse_duration(const char *s, int64_t *ns)
{
    static const struct unit units[] = {
        {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}, {"d", 86400e9},
    };
    double total = 0;

    if (!s) return SL_E_USAGE;
    while (isspace((unsigned char)*s)) s++;
    if (strcmp(s, "-1") == 0) {
        *ns = SL_TTL_FOREVER;
        return 0;
    }
    if (strcmp(s, "0") == 0) {
        *ns = 0;
        return 0;
    }
    if (!*s) return SL_E_USAGE;
    while (*s) {
        const char *end;
        double v;
        if (!scan_number(s, &v, &end)) return SL_E_USAGE;
        s = end;
        size_t ulen = 0;
        while (isalpha((unsigned char)s[ulen])) ulen++;
        const struct unit *u = NULL;
        for (size_t i = 0; i < SL_ARRAY_LEN(units); i++)
            if (strlen(units[i].name) == ulen && strncasecmp(s, units[i].name, ulen) == 0)
                u = &units[i];
        if (!u) return SL_E_USAGE;
        total += v * u->factor;
        s += ulen;
        while (isspace((unsigned char)*s)) s++;
    }
    if (total >= 9.2e18) return SL_E_USAGE; /* below INT64_MAX: the conversion is defined */
    *ns = (int64_t)(total + 0.5);
    return 0;
}

char *sl_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const names[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double v = (double)bytes;
    size_t i = 0;

    while (v >= 1024 && i + 1 < SL_ARRAY_LEN(names)) {
        v /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, len, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" : "%.0f %s", v, names[i]);
    return buf;
}
