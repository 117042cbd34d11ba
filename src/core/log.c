/*
 * log.c - leveled messages on stderr, one line each, prefixed the way every sluice message is:
 * "sluice: warning: cache /x: No space left on device; reading through from the store".
 * A line is formatted whole and written with one write(2) so that lines of concurrent threads
 * and processes do not interleave.
 */
#include <stdio.h>
#include <unistd.h>

#include "core/core.h"

static _Atomic int log_level = SL_LOG_WARN;

void sl_log_set_level(enum sl_log_level level)
{
    atomic_store(&log_level, (int)level);
}

bool sl__log_enabled(enum sl_log_level level)
{
    return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

void sl__log(enum sl_log_level level, const char *fmt, ...)
{
    static const char *const prefix[] = {"error: ", "warning: ", "", "debug: "};
    char line[2048];
    int n;
    va_list ap;

    if (!sl__log_enabled(level)) return;
    n = snprintf(line, sizeof(line), "sluice: %s", prefix[level]);
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* A failed write of a log line has nowhere better to be reported. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0) return;
}
