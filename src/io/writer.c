/*
 * writer.c - writing an object to its store through the namespace.
 *
 * The store's writer makes the new version durable and visible at commit, or leaves the old
 * one. After a commit the metadata cache forgets the path (and its parent's listing) and the
 * cache drops every page of the old versions: they can never be served again (their version is
 * gone), so they would only take space.
 */
#include <stdlib.h>

#include "io/io.h"

struct sl_writer {
    struct sl *sl;
    struct sl_resolved res;
    struct sl_ufs_writer *w;
};

int sl_writer_open(sl_t *sl, const char *path, sl_writer_t **out)
{
    struct sl_writer *w = calloc(1, sizeof(*w));
    int rc;

    sl__err_clear();
    if (!w) return -ENOMEM;
    w->sl = sl;
    if ((rc = sl__ns_resolve(sl->ns, path, &w->res)) < 0) goto fail;
    if (!w->res.mount || !*w->res.rel) {
        rc = sl__err(-EISDIR, "%s: Is a directory", w->res.path);
        goto fail;
    }
    if ((rc = sl__ufs_writer_open(w->res.mount->ufs, w->res.rel, &w->w)) < 0) goto fail;
    *out = w;
    return 0;
fail:
    sl__resolved_free(&w->res);
    free(w);
    return rc;
}

int sl_writer_write(sl_writer_t *w, const void *buf, size_t len)
{
    sl__err_clear();
    int rc = w->res.mount->ufs->ops->writer_write(w->w, buf, len);
    return rc < 0 ? sl__err_ctx(rc, w->res.path) : 0;
}

int sl_writer_commit(sl_writer_t *w)
{
    struct sl_ufs *u = w->res.mount->ufs;
    uint8_t file_id[16];
    uint64_t freed;

    sl__err_clear();
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->writer_commit(w->w, NULL);
    if (rc < 0) sl__err_ctx(rc, w->res.path);
    sl__md_invalidate(&w->sl->md, &w->res);
    if (rc == 0) {
        sl__hash128(w->res.object_id, file_id);
        sl__cache_free_object(w->sl->cache, file_id, &freed);
    }
    sl__resolved_free(&w->res);
    free(w);
    return rc;
}

void sl_writer_abort(sl_writer_t *w)
{
    if (!w) return;
    w->res.mount->ufs->ops->writer_abort(w->w);
    sl__resolved_free(&w->res);
    free(w);
}

int sl_mkdir(sl_t *sl, const char *path)
{
    struct sl_resolved r;
    int rc;

    sl__err_clear();
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    if (!r.mount)
        rc = 0; /* a directory of the namespace exists already */
    else if ((rc = sl__ufs_mkdir(r.mount->ufs, r.rel)) == 0)
        sl__md_invalidate(&sl->md, &r);
    sl__resolved_free(&r);
    return rc;
}

/* Forgets r's metadata and cached pages: its store entry is gone or replaced. */
static void forget(struct sl *sl, const struct sl_resolved *r)
{
    uint8_t file_id[16];
    uint64_t freed;
    sl__md_invalidate(&sl->md, r);
    sl__hash128(r->object_id, file_id);
    sl__cache_free_object(sl->cache, file_id, &freed);
}

int sl_remove(sl_t *sl, const char *path)
{
    struct sl_resolved r;
    int rc;

    sl__err_clear();
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    if (!r.mount || !*r.rel)
        rc = sl__err(-EBUSY, "%s: a mount point of the namespace cannot be removed", r.path);
    else if ((rc = sl__ufs_remove(r.mount->ufs, r.rel)) == 0)
        forget(sl, &r);
    sl__resolved_free(&r);
    return rc;
}

int sl_rename(sl_t *sl, const char *from, const char *to)
{
    struct sl_resolved a, b;
    int rc;

    sl__err_clear();
    if ((rc = sl__ns_resolve(sl->ns, from, &a)) < 0) return rc;
    if ((rc = sl__ns_resolve(sl->ns, to, &b)) < 0) {
        sl__resolved_free(&a);
        return rc;
    }
    if (!a.mount || !*a.rel || !b.mount || !*b.rel)
        rc = sl__err(-EBUSY, "%s: a mount point of the namespace cannot be renamed",
                     !a.mount || !*a.rel ? a.path : b.path);
    else if (a.mount != b.mount || !a.mount->ufs->ops->rename)
        rc = -EXDEV;
    else if ((rc = sl__ufs_rename(a.mount->ufs, a.rel, b.rel)) == 0) {
        forget(sl, &a);
        forget(sl, &b);
    }
    sl__resolved_free(&a);
    sl__resolved_free(&b);
    return rc;
}
