/*
 * ufs.h - the under-store interface: what sluice needs from a place where data lives.
 *
 * One vtable for every store (local directory now; S3 and HTTP next). Its shape follows what
 * remote object stores can do cheaply, so that a local directory is the easy case:
 * - read is a byte range of one version of an object: a ranged GET with If-Match, a pread with
 *   the file's mtime+size checked; a version that changed under the reader is SL_E_CHANGED,
 *   never a mix of old and new bytes;
 * - list is an iterator handing out pages of entries, so a prefix of millions of keys streams
 *   (ListObjectsV2 with continuation tokens) instead of being built in memory;
 * - write is a writer that becomes visible and durable only at commit (a temp file + fsync +
 *   rename, a multipart upload completed), so a failed or killed writer leaves the old object;
 * - rename and mkdir are optional: NULL where the store has no such operation.
 *
 * Paths given to a store are relative to its root, normalised, without a leading '/': "" is the
 * root, "train/00001.jpg" an object. The namespace (src/meta) guarantees they hold no '.' or
 * '..' component.
 *
 * Every call through the sl__ufs_* wrappers is counted in the store's counters
 * (ufs_requests, ufs_bytes_read); the cache's statistics come from there.
 */
#ifndef SL_UFS_H
#define SL_UFS_H

#include <sys/uio.h>

#include "core/core.h"

struct sl_ufs;
struct sl_ufs_lister;
struct sl_ufs_writer;

struct sl_ufs_ops {
    const char *scheme;         /* "file" */
    int64_t default_ttl_ns;     /* metadata_ttl when the mount gives none */

    /* Splits a direct URI into the URI of the store's root and the path in it:
     * "file:///a/b" -> "file:///", "a/b". Both are the caller's. */
    int (*split)(const char *uri, char **root, char **path);

    int (*open)(const char *uri, const struct sl_mount_cfg *mc, struct sl_ufs **out);
    void (*close)(struct sl_ufs *u);

    int (*stat)(struct sl_ufs *u, const char *path, sl_stat_t *st);

    int (*list_open)(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out);
    /* Fills up to max entries; *n == 0 at the end. The names stay valid until the next call. */
    int (*list_next)(struct sl_ufs_lister *l, sl_dirent_t *ents, size_t max, size_t *n);
    void (*list_close)(struct sl_ufs_lister *l);

    /* Reads [off, off + the buffers' total length) of the object at its version (NULL or "":
     * any version) into the buffers, in order: one request for a run of cache pages. Fewer
     * bytes than asked only at the end of the object. */
    int (*read)(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                const struct iovec *iov, int iovcnt, size_t *nread);

    int (*writer_open)(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out);
    int (*writer_write)(struct sl_ufs_writer *w, const void *buf, size_t len);
    /* Durable and visible when it returns 0; frees w either way. st (may be NULL) gets the new
     * object's metadata. */
    int (*writer_commit)(struct sl_ufs_writer *w, sl_stat_t *st);
    void (*writer_abort)(struct sl_ufs_writer *w);

    int (*remove)(struct sl_ufs *u, const char *path);
    int (*rename)(struct sl_ufs *u, const char *from, const char *to); /* may be NULL */
    int (*mkdir)(struct sl_ufs *u, const char *path);                  /* may be NULL */
};

/* The fields every store shares; a store's own struct begins with this one. */
struct sl_ufs {
    const struct sl_ufs_ops *ops;
    char *uri; /* the root, as given */
    /* The root's canonical URI, the identity of the objects below it: an object's id is
     * id + "/" + path. Two mounts of one place share ids, so they share cached pages. */
    char *id;
    struct sl_counters *ctr; /* where its requests are counted; may be NULL */
};

/* The scheme's operations, or NULL. */
const struct sl_ufs_ops *sl__ufs_find(const char *uri);

/* "file", from "file:///x"; false when uri has no scheme. */
bool sl__uri_scheme(const char *uri, char *scheme, size_t len);

int sl__ufs_open(const char *uri, const struct sl_mount_cfg *mc, struct sl_counters *ctr,
                 struct sl_ufs **out);
void sl__ufs_close(struct sl_ufs *u);

/* The object id of path in u: the caller's, free() it. */
char *sl__ufs_object_id(const struct sl_ufs *u, const char *path);

/* Counted wrappers; each adds the URI of what failed to the error detail. */
int sl__ufs_stat(struct sl_ufs *u, const char *path, sl_stat_t *st);
int sl__ufs_list_open(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out);
int sl__ufs_list_next(struct sl_ufs *u, struct sl_ufs_lister *l, sl_dirent_t *ents, size_t max,
                      size_t *n);
void sl__ufs_list_close(struct sl_ufs *u, struct sl_ufs_lister *l);
int sl__ufs_readv(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                  const struct iovec *iov, int iovcnt, size_t *nread);
int sl__ufs_read(struct sl_ufs *u, const char *path, const char *version, uint64_t off, void *buf,
                 size_t len, size_t *nread);
int sl__ufs_writer_open(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out);
int sl__ufs_remove(struct sl_ufs *u, const char *path);
int sl__ufs_mkdir(struct sl_ufs *u, const char *path);
int sl__ufs_rename(struct sl_ufs *u, const char *from, const char *to); /* -EXDEV if it cannot */

/* Stores built in. */
extern const struct sl_ufs_ops sl__ufs_local_ops;
extern const struct sl_ufs_ops sl__ufs_s3_ops;
extern const struct sl_ufs_ops sl__ufs_http_ops;
extern const struct sl_ufs_ops sl__ufs_https_ops;

#endif /* SL_UFS_H */
