/*
 * unit.h - what the unit tests share: cmocka, and a fresh temporary directory per test
 * (removed afterwards) so no test depends on another's leftovers.
 */
#ifndef SL_UNIT_H
#define SL_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* mkdtemp under $TMPDIR (or /tmp); the caller frees the string. */
static inline char *unit_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *t = NULL;
    if (asprintf(&t, "%s/sluice-unit-XXXXXX", base && *base ? base : "/tmp") < 0) return NULL;
    return mkdtemp(t);
}

/* rm -rf dir; then frees it. */
static inline void unit_rmtree(char *dir)
{
    if (!dir) return;
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", dir) >= 0) {
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    free(cmd);
    free(dir);
}

/* Writes len bytes to path; returns 0 on success. */
static inline int unit_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

#endif
