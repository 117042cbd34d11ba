/*
 * meta.h - the namespace (mount table, path resolution) and the metadata cache.
 */
#ifndef SL_META_H
#define SL_META_H

#include "core/core.h"
#include "ufs/ufs.h"

struct sl_db;

/* A place in the namespace backed by a store. */
struct sl_mount {
    char *path;                /* "/imagenet"; "/" for a root mount; the URI for a direct store */
    size_t depth;              /* components in path */
    struct sl_ufs *ufs;        /* rooted at the mount's URI */
    enum sl_policy policy;     /* eviction policy of its pages */
    int64_t ttl_ns;            /* effective metadata_ttl: SL_TTL_FOREVER or >= 0 */
};

/* The mount table, plus the implicit mounts of direct URIs (one per store root, made on first
 * use). The configured mounts never change after sl__ns_open; `lock` guards the direct ones. */
struct sl_ns {
    struct sl_mount *mounts;
    size_t nmounts;
    pthread_mutex_t lock;
    struct sl_mount **direct; /* guarded by lock */
    size_t ndirect;           /* guarded by lock */
    struct sl_counters *ctr;
    const struct sl_config *cfg; /* outlives the namespace */
};

/* What a path names. */
struct sl_resolved {
    struct sl_mount *mount; /* NULL: a directory of the namespace itself (above the mounts) */
    char *path;             /* normalised namespace path or URI, for messages */
    char *rel;              /* path in the store, "" for its root */
    char *object_id;        /* the object's identity (its canonical URI), for cache keys */
};

int sl__ns_open(const struct sl_config *cfg, struct sl_counters *ctr, struct sl_ns **out);
void sl__ns_close(struct sl_ns *ns);

/* Resolves a namespace path or direct URI. Fails with SL_E_NO_MOUNT (naming the mounts),
 * SL_E_PATH_ESCAPE when a '..' would leave a mount or the root, SL_E_BAD_URI, SL_E_SCHEME.
 * out is the caller's; free with sl__resolved_free(). */
int sl__ns_resolve(struct sl_ns *ns, const char *path, struct sl_resolved *out);
void sl__resolved_free(struct sl_resolved *r);


/* Calls cb for each mount point directly below the namespace directory r (a mount == NULL
 * resolution, or a mounted directory that holds nested mounts). */
int sl__ns_list_mounts(struct sl_ns *ns, const char *dir, sl_list_cb cb, void *arg);

/* ---- metadata cache (mdcache.c) ---- */

/* Stat results and directory listings of stores, kept in the cache directory's LMDB so every
 * process sees them, for the mount's metadata_ttl. Missing paths are cached too (negative
 * entries), so a job probing for absent files does not hit the store each time. */
struct sl_md {
    struct sl_db *db; /* NULL: no cache directory, every call goes to the store */
};

int sl__md_stat(struct sl_md *md, const struct sl_resolved *r, sl_stat_t *st);
int sl__md_list(struct sl_md *md, const struct sl_resolved *r, sl_list_cb cb, void *arg);
/* Forgets what is known of r and of its parent's listing (after sluice changed it). */
void sl__md_invalidate(struct sl_md *md, const struct sl_resolved *r);

#endif /* SL_META_H */
