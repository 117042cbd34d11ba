/*
 * ns.c - the namespace: one tree of paths over many stores.
 *
 * The mount table maps namespace paths to store URIs; the longest mount point that is a prefix
 * (on component boundaries) of a path wins, so mounts may nest. Directories above the mount
 * points ("/", "/datasets" when "/datasets/imagenet" is mounted) exist only in the namespace
 * and list the mount points below them.
 *
 * Normalisation is lexical: "", "." and ".." components are resolved before any store sees the
 * path, so a store never receives a '..'. A '..' that would climb out of the mount it is in (or
 * above the root) is refused with SL_E_PATH_ESCAPE rather than quietly landing elsewhere:
 * "/data/../etc" is far more often a mistake or an attack than an intent.
 *
 * Direct URIs (file:///x, s3://b/k, https://host/p) get an implicit mount per store root, made
 * on first use and kept until the namespace closes. It takes the settings (endpoint, keys,
 * region...) of a configured mount of the same root, if there is one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "meta/meta.h"

static size_t count_depth(const char *path)
{
    size_t d = 0;
    for (const char *c = path; *c; c++)
        if (*c == '/' && c[1]) d++;
    return strcmp(path, "/") == 0 ? 0 : d;
}

/* Does mount point m hold the normalised namespace path p? */
static bool mount_holds(const char *m, const char *p)
{
    if (strcmp(m, "/") == 0) return true;
    size_t n = strlen(m);
    return strncmp(m, p, n) == 0 && (p[n] == '/' || p[n] == '\0');
}

static struct sl_mount *mount_of(struct sl_ns *ns, const char *p)
{
    struct sl_mount *best = NULL;
    for (size_t i = 0; i < ns->nmounts; i++) {
        struct sl_mount *m = &ns->mounts[i];
        if (mount_holds(m->path, p) && (!best || m->depth > best->depth)) best = m;
    }
    return best;
}

static int mount_init(struct sl_mount *m, const char *path, const char *uri,
                      const struct sl_mount_cfg *mc, struct sl_counters *ctr)
{
    int rc = sl__ufs_open(uri, mc, ctr, &m->ufs);
    if (rc < 0) return rc;
    if (!(m->path = sl__strdup(path))) return -ENOMEM;
    m->depth = count_depth(path);
    m->policy = mc && mc->policy != SL_POLICY_DEFAULT ? mc->policy : SL_POLICY_S3FIFO;
    m->ttl_ns = mc && mc->metadata_ttl_ns != SL_TTL_DEFAULT ? mc->metadata_ttl_ns
                                                           : m->ufs->ops->default_ttl_ns;
    return 0;
}

static void mount_fini(struct sl_mount *m)
{
    sl__ufs_close(m->ufs);
    free(m->path);
}

int sl__ns_open(const struct sl_config *cfg, struct sl_counters *ctr, struct sl_ns **out)
{
    struct sl_ns *ns = calloc(1, sizeof(*ns));
    if (!ns) return -ENOMEM;
    pthread_mutex_init(&ns->lock, NULL);
    ns->ctr = ctr;
    ns->cfg = cfg;
    ns->mounts = calloc(cfg->nmounts ? cfg->nmounts : 1, sizeof(*ns->mounts));
    if (!ns->mounts) {
        sl__ns_close(ns);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->nmounts; i++) {
        const struct sl_mount_cfg *mc = &cfg->mounts[i];
        int rc = mount_init(&ns->mounts[i], mc->path, mc->uri, mc, ctr);
        ns->nmounts = i + 1;
        if (rc < 0) {
            rc = sl__err(rc == -ENOMEM ? rc : SL_E_CONFIG, "%s:%u:%u: mounts: %s: %s",
                         cfg->file ? cfg->file : "config", mc->line, mc->column, mc->path,
                         sl_errmsg(rc));
            sl__ns_close(ns);
            return rc;
        }
    }
    *out = ns;
    return 0;
}

void sl__ns_close(struct sl_ns *ns)
{
    if (!ns) return;
    for (size_t i = 0; i < ns->nmounts; i++) mount_fini(&ns->mounts[i]);
    for (size_t i = 0; i < ns->ndirect; i++) {
        mount_fini(ns->direct[i]);
        free(ns->direct[i]);
    }
    free(ns->mounts);
    free(ns->direct);
    pthread_mutex_destroy(&ns->lock);
    free(ns);
}

/* The settings for a direct URI: those of a configured mount of the same store root (so
 * s3://bucket/x uses the endpoint and keys of the mount of s3://bucket/prefix), else none. */
static const struct sl_mount_cfg *mount_cfg_of(struct sl_ns *ns, const struct sl_ufs_ops *ops,
                                               const char *root)
{
    for (size_t i = 0; ns->cfg && i < ns->cfg->nmounts; i++) {
        const struct sl_mount_cfg *mc = &ns->cfg->mounts[i];
        char *mroot = NULL, *mpath = NULL;
        if (sl__ufs_find(mc->uri) != ops || ops->split(mc->uri, &mroot, &mpath) < 0) continue;
        bool same = strcmp(mroot, root) == 0;
        free(mroot);
        free(mpath);
        if (same) return mc;
    }
    return NULL;
}

static int resolve_direct(struct sl_ns *ns, const char *uri, struct sl_resolved *out)
{
    const struct sl_ufs_ops *ops = sl__ufs_find(uri);
    char *root = NULL, *path = NULL;
    struct sl_mount *m = NULL;
    int rc;

    if (!ops) return sl__ufs_open(uri, NULL, NULL, NULL); /* names the scheme problem */
    if ((rc = ops->split(uri, &root, &path)) < 0) {
        if (rc == SL_E_BAD_URI) sl__err(rc, "%s: malformed %s URI", uri, ops->scheme);
        return rc;
    }
    if ((rc = sl__path_normalize(path, &out->rel)) < 0) {
        if (rc == SL_E_PATH_ESCAPE) sl__err(rc, "%s: '..' goes above the store's root", uri);
        goto out;
    }

    pthread_mutex_lock(&ns->lock);
    for (size_t i = 0; i < ns->ndirect && !m; i++)
        if (strcmp(ns->direct[i]->path, root) == 0) m = ns->direct[i];
    if (!m) {
        struct sl_mount **grown = realloc(ns->direct, (ns->ndirect + 1) * sizeof(*grown));
        m = calloc(1, sizeof(*m));
        if (grown) ns->direct = grown;
        if (!grown || !m) {
            rc = -ENOMEM;
        } else if ((rc = mount_init(m, root, root, mount_cfg_of(ns, ops, root), ns->ctr)) == 0) {
            ns->direct[ns->ndirect++] = m;
        } else {
            mount_fini(m);
        }
        if (rc) {
            free(m);
            m = NULL;
        }
    }
    pthread_mutex_unlock(&ns->lock);
    if (rc) goto out;

    out->mount = m;
    out->path = sl__strdup(uri);
    out->object_id = sl__ufs_object_id(m->ufs, out->rel);
    if (!out->path || !out->object_id) rc = -ENOMEM;
out:
    free(root);
    free(path);
    return rc;
}

/* Names the mounts, for "no mount holds this path" errors. */
static void mount_list(struct sl_ns *ns, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ns->nmounts && off + 1 < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "", ns->mounts[i].path);
    if (!ns->nmounts) snprintf(buf, len, "none configured");
}

int sl__ns_resolve(struct sl_ns *ns, const char *path, struct sl_resolved *out)
{
    char *norm = NULL;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    if (!path || !*path) return sl__err(SL_E_USAGE, "empty path");
    if (strstr(path, "://")) {
        rc = resolve_direct(ns, path, out);
        if (rc < 0) sl__resolved_free(out);
        return rc;
    }
    if (path[0] != '/')
        return sl__err(SL_E_USAGE, "%s: not a namespace path (those start with '/') nor a URI "
                                   "(file:///..., s3://...)", path);

    /* Walk the components, checking each '..' against the mount it would leave. */
    size_t cap = strlen(path) + 2, len = 0;
    norm = malloc(cap);
    if (!norm) return -ENOMEM;
    norm[0] = '/';
    norm[1] = '\0';
    len = 1;
    for (const char *c = path; *c;) {
        const char *e = strchrnul(c, '/');
        size_t n = (size_t)(e - c);
        if (n == 2 && c[0] == '.' && c[1] == '.') {
            if (len == 1) {
                rc = sl__err(SL_E_PATH_ESCAPE, "%s: '..' goes above the namespace root", path);
                goto out;
            }
            struct sl_mount *m = mount_of(ns, norm);
            if (m && m->depth == count_depth(norm)) {
                rc = sl__err(SL_E_PATH_ESCAPE, "%s: '..' leaves the mount %s", path, m->path);
                goto out;
            }
            while (len > 1 && norm[len - 1] != '/') len--;
            if (len > 1) len--;
            norm[len] = '\0';
        } else if (n > 0 && !(n == 1 && c[0] == '.')) {
            if (len > 1) norm[len++] = '/';
            memcpy(norm + len, c, n);
            len += n;
            norm[len] = '\0';
        }
        c = *e ? e + 1 : e;
    }

    struct sl_mount *m = mount_of(ns, norm);
    out->path = norm;
    norm = NULL;
    if (m) {
        const char *rel = strcmp(m->path, "/") == 0 ? out->path + 1 : out->path + strlen(m->path);
        if (*rel == '/') rel++;
        out->mount = m;
        out->rel = sl__strdup(rel);
        out->object_id = out->rel ? sl__ufs_object_id(m->ufs, out->rel) : NULL;
        if (!out->rel || !out->object_id) rc = -ENOMEM;
        goto out;
    }
    /* Not in a mount: a directory of the namespace if some mount lies below it. */
    size_t plen = strlen(out->path);
    for (size_t i = 0; i < ns->nmounts; i++) {
        const char *mp = ns->mounts[i].path;
        if (plen == 1 || (strncmp(mp, out->path, plen) == 0 && mp[plen] == '/')) goto out;
    }
    if (plen == 1) goto out; /* the root always exists */
    char mounts[512];
    mount_list(ns, mounts, sizeof(mounts));
    rc = sl__err(SL_E_NO_MOUNT, "%s: no mount holds this path (mounts: %s); use a URI such as "
                                "file:///path for data outside the mounts", out->path, mounts);
out:
    free(norm);
    if (rc < 0) sl__resolved_free(out);
    return rc;
}

void sl__resolved_free(struct sl_resolved *r)
{
    if (!r) return;
    free(r->path);
    free(r->rel);
    free(r->object_id);
    memset(r, 0, sizeof(*r));
}

int sl__ns_list_mounts(struct sl_ns *ns, const char *dir, sl_list_cb cb, void *arg)
{
    size_t dlen = strcmp(dir, "/") == 0 ? 0 : strlen(dir);

    for (size_t i = 0; i < ns->nmounts; i++) {
        const char *mp = ns->mounts[i].path;
        if (strcmp(mp, "/") == 0) continue;
        if (strncmp(mp, dir, dlen) != 0 || mp[dlen] != '/') continue;
        const char *name = mp + dlen + 1;
        size_t nlen = strcspn(name, "/");

        /* Several mounts can share a first component (/a/x and /a/y): name it once. */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *op = ns->mounts[j].path;
            seen = strncmp(op, dir, dlen) == 0 && op[dlen] == '/' &&
                   strncmp(op + dlen + 1, name, nlen) == 0 &&
                   (op[dlen + 1 + nlen] == '/' || op[dlen + 1 + nlen] == '\0');
        }
        if (seen) continue;

        char *n = strndup(name, nlen);
        if (!n) return -ENOMEM;
        sl_dirent_t ent = {.name = n, .st = {.type = SL_TYPE_DIR}};
        int rc = cb(arg, &ent);
        free(n);
        if (rc) return rc;
    }
    return 0;
}
