/*
 * http.c - web servers (http://, https://) as a read-only under-store: model releases,
 * dataset mirrors, an nginx in front of a file tree.
 *
 * Files: HEAD for metadata, ranged GETs for bytes (parallel for a large read, as for S3).
 * Redirects are followed (release downloads usually redirect to a CDN). A path is a directory
 * when the server redirects it to PATH/ (what nginx and Apache do) or answers PATH/.
 *
 * Versions: the ETag when the server sends a strong one; otherwise "lm:" + Last-Modified +
 * ";" + size. A read of a pinned version sends If-Match (or If-Unmodified-Since) and checks the
 * reply's ETag (or Last-Modified and total size) too: a file replaced on the server mid-read
 * is SL_E_CHANGED, never a mix of two versions.
 *
 * Listings come from an nginx-style autoindex in JSON (`autoindex_format json;`): an array of
 * {name, type, mtime, size}. It carries no ETag, so its entries carry no version and the
 * metadata cache does not take them for stat results; a server that offers no JSON listing
 * can still serve files, just not list them.
 */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ufs/net.h"
#include "ufs/ufs.h"

#define DEFAULT_SPLIT (8ULL << 20)

struct http_store {
    struct sl_ufs base;
    struct sl_net *net;
    char *base_url; /* ends with '/' */
    uint64_t split;
    unsigned concurrency;
};

struct http_lister {
    struct json_object *list; /* the array */
    size_t next, n;
};

/* "https://host:8080/a/b%20c" -> root "https://host:8080", path "a/b c". */
static int http_split(const char *uri, char **root, char **path)
{
    const char *host = strstr(uri, "://") + 3;
    size_t hlen = strcspn(host, "/?#");
    if (hlen == 0) return SL_E_BAD_URI;
    const char *p = host + hlen;
    while (*p == '/') p++;
    *root = strndup(uri, (size_t)(host + hlen - uri));
    *path = sl__net_unescape(p, strcspn(p, "?#"), false);
    if (!*root || !*path) {
        free(*root);
        free(*path);
        return -ENOMEM;
    }
    return 0;
}

static void http_close(struct sl_ufs *u)
{
    struct http_store *s = (struct http_store *)u;
    sl__net_close(s->net);
    free(s->base_url);
    free(s->base.uri);
    free(s->base.id);
    free(s);
}

static int http_open(const char *uri, const struct sl_mount_cfg *mc, struct sl_ufs **out)
{
    struct http_store *s = calloc(1, sizeof(*s));
    int rc = -ENOMEM;

    if (!s) return -ENOMEM;
    const char *host = strstr(uri, "://") + 3;
    size_t hlen = strcspn(host, "/?#");
    if (hlen == 0 || host[hlen] == '?' || host[hlen] == '#') {
        free(s);
        return sl__err(SL_E_BAD_URI, "%s: expected a URL such as https://host/path/ (without ? "
                                     "or #)", uri);
    }
    size_t n = strlen(uri);
    while (n > (size_t)(host + hlen - uri) && uri[n - 1] == '/') n--;
    s->base.uri = sl__strdup(uri);
    /* Its id, the identity of cached pages: the URL without a trailing '/'; names below it
     * are plain (decoded) paths, as for every store. */
    s->base.id = strndup(uri, n);
    s->base_url = sl__asprintf("%.*s/", (int)n, uri);
    if (!s->base.uri || !s->base.id || !s->base_url) goto fail;
    s->split = mc && mc->part_size ? mc->part_size : DEFAULT_SPLIT;
    s->concurrency = mc && mc->concurrency ? mc->concurrency : SL_NET_DEFAULT_CONCURRENCY;
    struct sl_net_cfg nc = {
        .concurrency = s->concurrency,
        .retries = mc ? mc->retries : -1,
        .retry_time_ns = mc ? mc->retry_time_ns : 0,
    };
    if ((rc = sl__net_open(&nc, &s->net)) < 0) goto fail;
    *out = &s->base;
    return 0;
fail:
    http_close(&s->base);
    return rc;
}

static char *url_of(struct http_store *s, const char *path, bool dir)
{
    struct sl_buf b = {0};
    if (sl__buf_append(&b, s->base_url, strlen(s->base_url)) < 0 ||
        sl__net_escape(&b, path, true) < 0 || (dir && *path && sl__buf_append(&b, "/", 1) < 0)) {
        sl__buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int http_fail(struct http_store *s, const char *path, const struct sl_net_req *r, int rc)
{
    int code = rc ? rc : sl__net_error(r);
    char what[512];
    sl__net_describe(r, what, sizeof(what));
    switch (code) {
    case -ENOENT:
        return sl__err(code, "%s%s: No such file or directory", s->base_url, path);
    case SL_E_UNREACHABLE:
        return sl__err(code, "%s%s: cannot reach the server: %s; is the URL right, and the "
                             "server up?", s->base_url, path, what);
    case SL_E_CHANGED:
        return sl__err(code, "%s%s: changed on the server while it was read", s->base_url, path);
    case SL_E_S3_AUTH:
    case -EACCES:
        return sl__err(-EACCES, "%s%s: the server refused access (%s)", s->base_url, path, what);
    default:
        return sl__err(code, "%s%s: the server answered %s", s->base_url, path, what);
    }
}

static bool ends_with_slash(const char *url)
{
    size_t n = strcspn(url, "?#");
    return n > 0 && url[n - 1] == '/';
}

/* The version of the reply r: its ETag when strong, else Last-Modified and size. */
static void version_of(const struct sl_net_req *r, uint64_t size, char *out, size_t len)
{
    if (r->etag[0] && strncmp(r->etag, "W/", 2) != 0)
        snprintf(out, len, "%s", r->etag);
    else
        snprintf(out, len, "lm:%s;%llu", r->last_modified, (unsigned long long)size);
}

static int http_stat(struct sl_ufs *u, const char *path, sl_stat_t *st)
{
    struct http_store *s = (struct http_store *)u;
    char *url = url_of(s, path, false);
    int rc;

    memset(st, 0, sizeof(*st));
    if (!url) return -ENOMEM;
    struct sl_net_req r = {.method = "HEAD", .url = url, .follow = true};
    rc = sl__net_one(s->net, &r);
    if (rc == 0 && r.status == 404 && *path) {
        /* Maybe a directory that the server only answers with its '/'. */
        free(url);
        if (!(url = url_of(s, path, true))) return -ENOMEM;
        r = (struct sl_net_req){.method = "HEAD", .url = url, .follow = true};
        rc = sl__net_one(s->net, &r);
    }
    /* A directory the server will not list (403 on PATH/) is still a directory. */
    bool unlisted_dir = rc == 0 && r.status == 403 && ends_with_slash(r.final_url);
    if ((rc || !sl__net_ok(&r)) && !unlisted_dir) {
        rc = http_fail(s, path, &r, rc);
    } else if (!*path || ends_with_slash(r.final_url)) {
        st->type = SL_TYPE_DIR;
        st->mode = 0555;
        st->mtime_ns = sl__net_parse_time(r.last_modified);
    } else {
        st->type = SL_TYPE_FILE;
        st->mtime_ns = sl__net_parse_time(r.last_modified);
        st->mode = 0444;
        if (r.content_length >= 0) {
            st->size = (uint64_t)r.content_length;
        } else {
            /* No length in the HEAD reply (a dynamic page): one byte's Content-Range says. */
            char byte;
            struct sl_net_req g = {.method = "GET", .url = url, .follow = true, .range = true,
                                   .range_len = 1, .dst = &byte};
            rc = sl__net_one(s->net, &g);
            if (rc || (g.status != 206 && g.status != 416) || g.total_size < 0)
                rc = rc ? http_fail(s, path, &g, rc)
                        : sl__err(SL_E_BAD_REPLY, "%s%s: the server does not say how large the "
                                  "file is (no Content-Length, no ranges)", s->base_url, path);
            else
                st->size = (uint64_t)g.total_size;
        }
        version_of(&r, st->size, st->version, sizeof(st->version));
    }
    free(url);
    return rc;
}

static bool same_version(const struct sl_net_req *r, const char *version)
{
    char now[SL_VERSION_MAX];
    /* The object's size is the N of Content-Range (or the whole body of a 200). */
    int64_t size = r->total_size >= 0 ? r->total_size : r->status == 200 ? r->content_length : -1;
    if (version[0] == '"') return !r->etag[0] || strcmp(r->etag, version) == 0;
    if (size < 0) return false;
    version_of(r, (uint64_t)size, now, sizeof(now));
    return strcmp(now, version) == 0;
}

static int http_read(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                     const struct iovec *iov, int iovcnt, size_t *nread)
{
    struct http_store *s = (struct http_store *)u;
    char *url = url_of(s, path, false), *cond = NULL;
    int rc = -ENOMEM;

    *nread = 0;
    if (version && version[0] == '"')
        cond = sl__asprintf("If-Match: %s", version);
    else if (version && strncmp(version, "lm:", 3) == 0 && version[3] != ';')
        cond = sl__asprintf("If-Unmodified-Since: %.*s", (int)strcspn(version + 3, ";"),
                            version + 3);
    const char *headers[] = {cond, NULL};
    if (url) {
        struct sl_net_read rd = {.url = url, .headers = headers, .version = version,
                                 .matches = same_version, .follow = true, .off = off,
                                 .iov = iov, .iovcnt = iovcnt, .split = s->split,
                                 .max_parts = s->concurrency};
        rc = sl__net_read(s->net, &rd);
        if (rc == 0)
            *nread = rd.nread;
        else if (rc != -ENOMEM)
            rc = http_fail(s, path, &rd.failed, rc);
    }
    free(url);
    free(cond);
    return rc;
}

static int http_list_open(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out)
{
    struct http_store *s = (struct http_store *)u;
    struct sl_buf body = {0};
    char *url = url_of(s, dir, true);
    int rc;

    if (!url) return -ENOMEM;
    const char *headers[] = {"Accept: application/json", NULL};
    struct sl_net_req r = {.method = "GET", .url = url, .headers = headers, .follow = true,
                           .out = &body};
    rc = sl__net_one(s->net, &r);
    if (rc == 0 && r.status == 403) {
        /* What a server that does not index directories answers (nginx without autoindex). */
        rc = sl__err(-EACCES, "%s: the server does not list this directory (HTTP 403; for nginx: "
                              "autoindex on; autoindex_format json;); its files can still be "
                              "read by name", url);
        goto out;
    }
    if (rc || !sl__net_ok(&r)) {
        rc = http_fail(s, dir, &r, rc);
        goto out;
    }
    if (!strstr(r.content_type, "json")) {
        rc = sl__err(-ENOTSUP, "%s: the server offers no JSON listing of this directory (for "
                               "nginx: autoindex on; autoindex_format json;); its files can "
                               "still be read by name", url);
        goto out;
    }
    struct json_tokener *tok = json_tokener_new();
    struct json_object *list = tok ? json_tokener_parse_ex(tok, body.data, (int)body.len) : NULL;
    json_tokener_free(tok);
    if (!list || !json_object_is_type(list, json_type_array)) {
        json_object_put(list);
        rc = sl__err(SL_E_BAD_REPLY, "%s: the listing is not a JSON array of entries", url);
        goto out;
    }
    struct http_lister *l = calloc(1, sizeof(*l));
    if (!l) {
        json_object_put(list);
        rc = -ENOMEM;
        goto out;
    }
    l->list = list;
    l->n = json_object_array_length(list);
    *out = (struct sl_ufs_lister *)l;
out:
    sl__buf_free(&body);
    free(url);
    return rc;
}

static int http_list_next(struct sl_ufs_lister *ul, sl_dirent_t *ents, size_t max, size_t *n)
{
    struct http_lister *l = (struct http_lister *)ul;
    size_t count = 0;
    while (count < max && l->next < l->n) {
        struct json_object *e = json_object_array_get_idx(l->list, l->next++), *v;
        const char *name = NULL, *type = NULL;
        if (json_object_object_get_ex(e, "name", &v)) name = json_object_get_string(v);
        if (json_object_object_get_ex(e, "type", &v)) type = json_object_get_string(v);
        /* Only plain names: a server must not talk us out of the directory. */
        if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 ||
            strcmp(name, "..") == 0 || !type)
            continue;
        sl_stat_t st = {0};
        if (strcmp(type, "file") == 0) {
            st.type = SL_TYPE_FILE;
            st.mode = 0444;
            if (json_object_object_get_ex(e, "size", &v)) st.size = (uint64_t)json_object_get_int64(v);
        } else if (strcmp(type, "directory") == 0) {
            st.type = SL_TYPE_DIR;
            st.mode = 0555;
        } else {
            continue; /* links and others: nginx does not say what they are */
        }
        if (json_object_object_get_ex(e, "mtime", &v))
            st.mtime_ns = sl__net_parse_time(json_object_get_string(v));
        ents[count].name = name; /* owned by the array, which lives until close */
        ents[count].st = st;
        count++;
    }
    *n = count;
    return 0;
}

static void http_list_close(struct sl_ufs_lister *ul)
{
    struct http_lister *l = (struct http_lister *)ul;
    if (!l) return;
    json_object_put(l->list);
    free(l);
}

static int read_only(struct http_store *s, const char *path)
{
    return sl__err(-EROFS, "%s%s: web servers are read-only stores; copy to a file:// or s3:// "
                           "path instead", s->base_url, path);
}

static int http_writer_open(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out)
{
    (void)out;
    return read_only((struct http_store *)u, path);
}

static int http_writer_write(struct sl_ufs_writer *w, const void *buf, size_t len)
{
    (void)w;
    (void)buf;
    (void)len;
    return -EROFS;
}

static int http_writer_commit(struct sl_ufs_writer *w, sl_stat_t *st)
{
    (void)w;
    (void)st;
    return -EROFS;
}

static void http_writer_abort(struct sl_ufs_writer *w)
{
    (void)w;
}

static int http_remove(struct sl_ufs *u, const char *path)
{
    return read_only((struct http_store *)u, path);
}

static int http_mkdir(struct sl_ufs *u, const char *path)
{
    return read_only((struct http_store *)u, path);
}

#define HTTP_OPS(name)                                                                        \
    {                                                                                         \
        .scheme = name, .default_ttl_ns = 60LL * 1000000000LL, .split = http_split,           \
        .open = http_open, .close = http_close, .stat = http_stat,                            \
        .list_open = http_list_open, .list_next = http_list_next,                             \
        .list_close = http_list_close, .read = http_read, .writer_open = http_writer_open,    \
        .writer_write = http_writer_write, .writer_commit = http_writer_commit,               \
        .writer_abort = http_writer_abort, .remove = http_remove, .rename = NULL,             \
        .mkdir = http_mkdir,                                                                  \
    }

const struct sl_ufs_ops sl__ufs_http_ops = HTTP_OPS("http");
const struct sl_ufs_ops sl__ufs_https_ops = HTTP_OPS("https");
