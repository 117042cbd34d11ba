/*
 * util.c - small things every module needs: clocks, strings, hex, mkdir -p, process identity.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/core.h"

uint64_t sl__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t sl__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

char *sl__strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *sl__asprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

void sl__hex(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

void sl__hash128(const char *s, uint8_t out[16])
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(s, strlen(s)));
    memcpy(out, c.digest, 16);
}

int sl__path_normalize(const char *in, char **out)
{
    size_t cap = strlen(in) + 2, len = 0;
    char *buf = malloc(cap);
    if (!buf) return -ENOMEM;
    for (const char *c = in; *c;) {
        const char *e = strchrnul(c, '/');
        size_t n = (size_t)(e - c);
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            if (len == 0) {
                free(buf);
                return SL_E_PATH_ESCAPE;
            }
            while (len > 0 && buf[len - 1] != '/') len--;
            if (len > 0) len--; /* the '/' before the dropped component */
        } else if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (len > 0) buf[len++] = '/';
            memcpy(buf + len, c, n);
            len += n;
        }
        c = *e ? e + 1 : e;
    }
    buf[len] = '\0';
    *out = buf;
    return 0;
}

int sl__pread_all(int fd, void *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t r = pread(fd, buf, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r == 0) return -EIO;
        buf = (char *)buf + r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int sl__mkdirs(const char *path, unsigned mode)
{
    char *p = sl__strdup(path);
    int rc = 0;

    if (!p) return -ENOMEM;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, mode) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *s = c;
        if (!c) break;
    }
    if (rc == 0) {
        struct stat st;
        if (stat(path, &st) < 0)
            rc = -errno;
        else if (!S_ISDIR(st.st_mode))
            rc = -ENOTDIR;
    }
    free(p);
    return rc;
}

int sl__buf_append(struct sl_buf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1) cap *= 2;
        char *n = realloc(b->data, cap);
        if (!n) return -ENOMEM;
        b->data = n;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int sl__buf_printf(struct sl_buf *b, const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0) return -ENOMEM;
    int rc = sl__buf_append(b, s, (size_t)n);
    free(s);
    return rc;
}

void sl__buf_free(struct sl_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
