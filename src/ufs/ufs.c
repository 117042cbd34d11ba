/*
 * ufs.c - the registry of under-stores and the counted wrappers every caller goes through.
 *
 * The wrappers are where store traffic is counted (one request per call, bytes per read) and
 * where a failure gets its context: the object's URI. Callers above add the namespace path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ufs/ufs.h"

static const struct sl_ufs_ops *const stores[] = {
    &sl__ufs_local_ops,
    &sl__ufs_s3_ops,
    &sl__ufs_http_ops,
    &sl__ufs_https_ops,
};

bool sl__uri_scheme(const char *uri, char *scheme, size_t len)
{
    const char *sep = strstr(uri, "://");
    if (!sep || sep == uri || (size_t)(sep - uri) >= len) return false;
    for (const char *c = uri; c < sep; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (c > uri && ((*c >= '0' && *c <= '9') || *c == '+' || *c == '-' || *c == '.'))))
            return false;
    memcpy(scheme, uri, (size_t)(sep - uri));
    scheme[sep - uri] = '\0';
    return true;
}

const struct sl_ufs_ops *sl__ufs_find(const char *uri)
{
    char scheme[32];
    if (!sl__uri_scheme(uri, scheme, sizeof(scheme))) return NULL;
    for (size_t i = 0; i < SL_ARRAY_LEN(stores); i++)
        if (strcasecmp(stores[i]->scheme, scheme) == 0) return stores[i];
    return NULL;
}

int sl__ufs_open(const char *uri, const struct sl_mount_cfg *mc, struct sl_counters *ctr,
                 struct sl_ufs **out)
{
    const struct sl_ufs_ops *ops = sl__ufs_find(uri);
    char scheme[32];

    if (!ops) {
        if (!sl__uri_scheme(uri, scheme, sizeof(scheme)))
            return sl__err(SL_E_BAD_URI, "%s: not a URI such as file:///data", uri);
        return sl__err(SL_E_SCHEME, "%s: no under-store for scheme '%s' (this build has: file, s3, http, https)",
                       uri, scheme);
    }
    int rc = ops->open(uri, mc, out);
    if (rc < 0) return sl__err_ctx(rc, uri);
    (*out)->ops = ops;
    (*out)->ctr = ctr;
    return 0;
}

void sl__ufs_close(struct sl_ufs *u)
{
    if (u) u->ops->close(u);
}

char *sl__ufs_object_id(const struct sl_ufs *u, const char *path)
{
    if (!*path) return sl__strdup(u->id);
    return sl__asprintf("%s/%s", u->id, path);
}

/* The failing object's URI, as context for an error. */
static int fail(struct sl_ufs *u, const char *path, int rc)
{
    char *id = sl__ufs_object_id(u, path);
    sl__err_ctx(rc, id ? id : u->uri);
    free(id);
    return rc;
}

int sl__ufs_stat(struct sl_ufs *u, const char *path, sl_stat_t *st)
{
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->stat(u, path, st);
    return rc < 0 ? fail(u, path, rc) : 0;
}

int sl__ufs_list_open(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out)
{
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->list_open(u, dir, out);
    return rc < 0 ? fail(u, dir, rc) : 0;
}

int sl__ufs_list_next(struct sl_ufs *u, struct sl_ufs_lister *l, sl_dirent_t *ents, size_t max,
                      size_t *n)
{
    int rc = u->ops->list_next(l, ents, max, n);
    return rc < 0 ? fail(u, "", rc) : 0;
}

void sl__ufs_list_close(struct sl_ufs *u, struct sl_ufs_lister *l)
{
    if (l) u->ops->list_close(l);
}

int sl__ufs_readv(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                  const struct iovec *iov, int iovcnt, size_t *nread)
{
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->read(u, path, version, off, iov, iovcnt, nread);
    if (rc < 0) return fail(u, path, rc);
    sl__count(u->ctr, SL_CTR_UFS_BYTES_READ, *nread);
    return 0;
}

int sl__ufs_read(struct sl_ufs *u, const char *path, const char *version, uint64_t off, void *buf,
                 size_t len, size_t *nread)
{
    struct iovec iov = {buf, len};
    return sl__ufs_readv(u, path, version, off, &iov, 1, nread);
}

int sl__ufs_writer_open(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out)
{
    int rc = u->ops->writer_open(u, path, out);
    return rc < 0 ? fail(u, path, rc) : 0;
}

int sl__ufs_remove(struct sl_ufs *u, const char *path)
{
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->remove(u, path);
    return rc < 0 ? fail(u, path, rc) : 0;
}

int sl__ufs_rename(struct sl_ufs *u, const char *from, const char *to)
{
    if (!u->ops->rename) return -EXDEV;
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->rename(u, from, to);
    return rc < 0 ? fail(u, from, rc) : 0;
}

int sl__ufs_mkdir(struct sl_ufs *u, const char *path)
{
    if (!u->ops->mkdir) return 0; /* directories are implicit in this store */
    sl__count(u->ctr, SL_CTR_UFS_REQUESTS, 1);
    int rc = u->ops->mkdir(u, path);
    return rc < 0 ? fail(u, path, rc) : 0;
}
