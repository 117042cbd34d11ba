/*
 * fs.h - the FUSE front end: the namespace as a POSIX file system. Like the CLI that starts it,
 * it uses libsluice's public API only (sluice.h).
 */
#ifndef SL_FS_H
#define SL_FS_H

#include <stdbool.h>

#include "sluice.h"

struct sl_fs_options {
    const char *mountpoint;
    const char *fuse_opts; /* -o list for libfuse and the kernel (allow_other, ...), or NULL */
    bool debug;            /* libfuse's log of every request, on stderr */
    /* Called once, when the file system is mounted and about to serve: a daemon tells the
     * process that started it here. */
    void (*ready)(void *arg);
    void *ready_arg;
};

/* Mounts sl's namespace at o->mountpoint and serves it until it is unmounted, or the process
 * gets SIGINT, SIGTERM or SIGHUP (then it unmounts). Returns 0; or, when it could not mount,
 * a negative errno after printing why on stderr. */
int sl_fs_serve(sl_t *sl, const struct sl_fs_options *o);

#endif /* SL_FS_H */
