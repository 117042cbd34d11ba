/*
 * err.c - one error convention for all of sluice (libuv, LMDB): an int that is 0, a negative
 * errno, or an SL_E_* code from the X-macro table in sluice.h, which also drives sl_strerror().
 *
 * The code says what went wrong; the detail says where. The detail is a thread-local message
 * recorded by the innermost function that knows the context (the path, the URI, the config
 * position), tagged with the code it belongs to so a stale detail is never shown for another
 * error. Front ends print it as "sluice: DETAIL".
 */
#include <stdio.h>
#include <string.h>

#include "core/core.h"

static _Thread_local struct {
    int err;
    char msg[1024];
} detail;

const char *sl_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define SL__E_CASE(name, value, msg)                                                          \
    case SL_E_##name:                                                                         \
        return msg;
        SL_ERRORS(SL__E_CASE)
#undef SL__E_CASE
    default:
        break;
    }
    if (err < 0 && err > -4096) return strerror(-err);
    return "unknown error";
}

const char *sl_errmsg(int err)
{
    if (err != 0 && detail.err == err && detail.msg[0]) return detail.msg;
    return sl_strerror(err);
}

int sl__err(int err, const char *fmt, ...)
{
    /* Callers may pass sl_errmsg() itself as an argument (wrapping an inner detail in an outer
     * context): format into scratch space, then copy. */
    char msg[sizeof(detail.msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memcpy(detail.msg, msg, sizeof(msg));
    detail.err = err;
    return err;
}

int sl__err_ctx(int err, const char *context)
{
    if (detail.err == err && detail.msg[0]) return err;
    return sl__err(err, "%s: %s", context, sl_strerror(err));
}

void sl__err_clear(void)
{
    detail.err = 0;
    detail.msg[0] = '\0';
}
