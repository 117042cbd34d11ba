/*
 * s3.c - S3-compatible object stores (s3://bucket/prefix) as an under-store: AWS S3, MinIO,
 * Ceph RGW, s3rver; on libcurl (transfers, SigV4 signing) and libxml2 (replies).
 *
 * Objects and directories: a key is prefix + path; a directory is a key prefix ending in '/',
 * listed with ListObjectsV2 and delimiter '/', so "train/" is a directory when any key starts
 * with it (or a zero-byte marker object "train/" exists). The marker itself is never listed.
 *
 * Versions: the ETag. A read sends If-Match with the ETag pinned at open and checks the ETag of
 * the reply too (some S3-compatible stores ignore If-Match): an object replaced mid-read is
 * SL_E_CHANGED, never a mix of two objects' bytes.
 *
 * A large read is split into ranged GETs of part_size that run in parallel on one curl multi
 * handle (up to the mount's concurrency), so one cold file can fill the link.
 *
 * Writes: up to part_size the object goes up in one PutObject at commit. Larger ones are a
 * multipart upload: full parts are uploaded in parallel batches while the writer goes on
 * filling the next ones, and the upload is completed at commit, which is when the object
 * appears, whole. A failed or abandoned upload is aborted, so no parts linger (and bill).
 * After 1000 parts the part size doubles, and again every 1000 parts, so an object of any size
 * S3 allows fits in its 10,000 parts.
 *
 *   writer:  OPEN --write--> BUFFERING --part_size reached--> MULTIPART (CreateMultipartUpload)
 *              |                 |                               |  UploadPart in batches
 *              |               commit: PutObject               commit: last part, Complete
 *              +--abort / failure: nothing on the store  <-------+  abort / failure: Abort
 */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ufs/aws.h"
#include "ufs/net.h"
#include "ufs/ufs.h"

#define DEFAULT_PART_SIZE (8ULL << 20)
#define LIST_MAX_KEYS 1000
#define PARTS_PER_DOUBLING 1000
#define MAX_PARTS 10000
#define MAX_UPLOAD_BATCH 8
#define MAX_PART_SIZE (5ULL << 30) /* S3's limit */

struct s3_store {
    struct sl_ufs base;
    struct sl_net *net;
    struct sl_aws aws;
    char *bucket;
    char *prefix;   /* "" or "imagenet/" */
    char *base_url; /* objects are base_url + escaped key; the bucket is base_url itself */
    char *endpoint; /* for messages */
    uint64_t part_size;
    unsigned concurrency;
};

struct s3_entry {
    size_t name_off;
    sl_stat_t st;
};

struct s3_lister {
    struct s3_store *s;
    char *prefix; /* the full key prefix listed: "imagenet/train/" */
    char *token;  /* NextContinuationToken; NULL before the first page and after the last */
    bool done;
    struct s3_entry *ents;
    size_t nents, next;
    struct sl_buf names;
};

struct s3_writer {
    struct s3_store *s;
    char *path, *url;
    char *upload_id;         /* NULL until the object needs a multipart upload */
    char **etags;            /* of parts 1..nparts */
    size_t nparts;
    uint8_t *batch[MAX_UPLOAD_BATCH]; /* full parts waiting to go up */
    size_t batch_len[MAX_UPLOAD_BATCH];
    size_t nbatch;
    uint8_t *cur;            /* the part being filled */
    size_t cur_len, cur_cap;
    uint64_t total;          /* bytes written */
    int failed;              /* an upload failed: the writer can only be aborted */
};

/* ---- addressing ---- */

/* The key of path, with the mount's prefix. The caller frees it. */
static char *key_of(struct s3_store *s, const char *path)
{
    return sl__asprintf("%s%s", s->prefix, path);
}

/* base_url + escaped key [+ "?" query]. The caller frees it. */
static char *object_url(struct s3_store *s, const char *key, const char *query)
{
    struct sl_buf b = {0};
    if (sl__buf_append(&b, s->base_url, strlen(s->base_url)) < 0 ||
        sl__net_escape(&b, key, true) < 0 || (query && sl__buf_printf(&b, "?%s", query) < 0)) {
        sl__buf_free(&b);
        return NULL;
    }
    return b.data;
}

static char *display_uri(struct s3_store *s, const char *path)
{
    return sl__asprintf("s3://%s/%s%s", s->bucket, s->prefix, path);
}

/* An error with its context: what failed, where, why, and what to do about it. */
static int s3_fail(struct s3_store *s, const char *path, const struct sl_net_req *r, int rc)
{
    int code = rc ? rc : sl__net_error(r);
    char what[512];
    char *uri = display_uri(s, path);
    const char *u = uri ? uri : s->base.uri;

    sl__net_describe(r, what, sizeof(what));
    switch (code) {
    case SL_E_S3_AUTH:
        sl__err(code, "%s: %s refused the credentials (%s); %s", u, s->endpoint, what,
                s->aws.source ? "check the access key and secret key" : "no credentials were "
                "found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                "access_key and secret_key in the mount");
        if (s->aws.source) {
            char msg[1024];
            snprintf(msg, sizeof(msg), "%s (from %s)", sl_errmsg(code), s->aws.source);
            sl__err(code, "%s", msg);
        }
        break;
    case SL_E_NO_BUCKET:
        sl__err(code, "%s: bucket '%s' does not exist at %s", u, s->bucket, s->endpoint);
        break;
    case SL_E_UNREACHABLE:
        sl__err(code, "%s: cannot reach %s: %s; is the endpoint right, and the store up?", u,
                s->endpoint, what);
        break;
    case SL_E_BAD_REPLY:
        sl__err(code, "%s: %s sent a reply sluice cannot use: %s", u, s->endpoint, what);
        break;
    case -ENOENT:
        sl__err(code, "%s: No such file or directory", u);
        break;
    case -EACCES:
        sl__err(code, "%s: %s denied access (%s)", u, s->endpoint, what);
        break;
    case SL_E_CHANGED:
        sl__err(code, "%s: changed in the store while it was read", u);
        break;
    default:
        sl__err(code, "%s: %s answered %s", u, s->endpoint, what);
        break;
    }
    free(uri);
    return code;
}

/* ---- XML ---- */

static xmlNode *child(xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0) return c;
    return NULL;
}

static const char *text(xmlNode *n)
{
    return n && n->children && n->children->type == XML_TEXT_NODE
               ? (const char *)n->children->content
               : NULL;
}

static xmlDoc *parse_xml(const struct sl_buf *b)
{
    if (!b->len) return NULL;
    return xmlReadMemory(b->data, (int)b->len, "reply.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

/* ---- open, close, split ---- */

static int s3_split(const char *uri, char **root, char **path)
{
    const char *b = uri + strlen("s3://");
    size_t blen = strcspn(b, "/");
    if (blen == 0) return SL_E_BAD_URI;
    *root = sl__asprintf("s3://%.*s", (int)blen, b);
    *path = sl__strdup(b[blen] ? b + blen + 1 : "");
    if (!*root || !*path) {
        free(*root);
        free(*path);
        return -ENOMEM;
    }
    return 0;
}

/* S3's rules for bucket names, which also keep them safe in a host name and a URL path. */
static bool valid_bucket(const char *b, size_t n)
{
    if (n < 3 || n > 63) return false;
    for (size_t i = 0; i < n; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
              b[i] == '-' || b[i] == '_'))
            return false;
    return true;
}

static void s3_close(struct sl_ufs *u)
{
    struct s3_store *s = (struct s3_store *)u;
    sl__net_close(s->net);
    sl__aws_free(&s->aws);
    free(s->bucket);
    free(s->prefix);
    free(s->base_url);
    free(s->endpoint);
    free(s->base.uri);
    free(s->base.id);
    free(s);
}

static int s3_open(const char *uri, const struct sl_mount_cfg *mc, struct sl_ufs **out)
{
    struct s3_store *s = calloc(1, sizeof(*s));
    char *norm = NULL, *sigv4 = NULL;
    int rc = -ENOMEM;

    if (!s) return -ENOMEM;
    const char *b = uri + strlen("s3://");
    size_t blen = strcspn(b, "/");
    if (!valid_bucket(b, blen)) {
        rc = sl__err(SL_E_BAD_URI, "%s: '%.*s' is not a bucket name (3 to 63 of a-z, 0-9, '.', "
                                   "'-'), as in s3://my-bucket/prefix", uri, (int)blen, b);
        goto fail;
    }
    if ((rc = sl__path_normalize(b + blen, &norm)) < 0) {
        if (rc == SL_E_PATH_ESCAPE) rc = sl__err(SL_E_BAD_URI, "%s: '..' goes above the bucket", uri);
        goto fail;
    }
    rc = -ENOMEM;
    s->bucket = strndup(b, blen);
    s->prefix = *norm ? sl__asprintf("%s/", norm) : sl__strdup("");
    s->base.uri = sl__strdup(uri);
    if (!s->bucket || !s->prefix || !s->base.uri) goto fail;
    if ((rc = sl__aws_resolve(mc, &s->aws)) < 0) goto fail;
    rc = -ENOMEM;

    enum sl_addressing addr = mc ? mc->addressing : SL_ADDR_AUTO;
    if (s->aws.endpoint) {
        /* A custom endpoint (MinIO, s3rver, Ceph): path-style unless told otherwise. */
        const char *e = s->aws.endpoint;
        bool has_scheme = strstr(e, "://") != NULL;
        if (has_scheme && strncasecmp(e, "http://", 7) != 0 && strncasecmp(e, "https://", 8) != 0) {
            rc = sl__err(SL_E_BAD_URI, "%s: endpoint '%s' is not an http:// or https:// URL", uri,
                         e);
            goto fail;
        }
        size_t elen = strlen(e);
        while (elen && e[elen - 1] == '/') elen--;
        s->endpoint = sl__asprintf("%s%.*s", has_scheme ? "" : "https://", (int)elen, e);
        if (!s->endpoint) goto fail;
        if (addr == SL_ADDR_VIRTUAL) {
            const char *host = strstr(s->endpoint, "://") + 3;
            s->base_url = sl__asprintf("%.*s%s.%s/", (int)(host - s->endpoint), s->endpoint,
                                       s->bucket, host);
        } else {
            s->base_url = sl__asprintf("%s/%s/", s->endpoint, s->bucket);
        }
        /* The id names the store too: one bucket name on two stores is two buckets. */
        s->base.id = sl__asprintf("%s/%s%s%s", s->endpoint, s->bucket, *norm ? "/" : "", norm);
    } else {
        s->endpoint = sl__asprintf("https://s3.%s.amazonaws.com", s->aws.region);
        /* Virtual-hosted, AWS's default, unless a '.' in the name would break TLS. */
        if (addr == SL_ADDR_PATH || (addr == SL_ADDR_AUTO && strchr(s->bucket, '.')))
            s->base_url = sl__asprintf("https://s3.%s.amazonaws.com/%s/", s->aws.region, s->bucket);
        else
            s->base_url = sl__asprintf("https://%s.s3.%s.amazonaws.com/", s->bucket, s->aws.region);
        s->base.id = sl__asprintf("s3://%s%s%s", s->bucket, *norm ? "/" : "", norm);
    }
    if (!s->endpoint || !s->base_url || !s->base.id) goto fail;

    s->part_size = mc && mc->part_size ? mc->part_size : DEFAULT_PART_SIZE;
    s->concurrency = mc && mc->concurrency ? mc->concurrency : SL_NET_DEFAULT_CONCURRENCY;
    if (s->aws.access_key && !(sigv4 = sl__asprintf("aws:amz:%s:s3", s->aws.region))) goto fail;
    struct sl_net_cfg nc = {
        .concurrency = s->concurrency,
        .retries = mc ? mc->retries : -1,
        .retry_time_ns = mc ? mc->retry_time_ns : 0,
        .sigv4 = sigv4,
        .access_key = s->aws.access_key,
        .secret_key = s->aws.secret_key,
        .session_token = s->aws.session_token,
    };
    if ((rc = sl__net_open(&nc, &s->net)) < 0) goto fail;
    free(sigv4);
    free(norm);
    *out = &s->base;
    return 0;
fail:
    free(sigv4);
    free(norm);
    s3_close(&s->base);
    return rc;
}

/* ---- listing ---- */

static void lister_reset_page(struct s3_lister *l)
{
    free(l->ents);
    l->ents = NULL;
    l->nents = l->next = 0;
    l->names.len = 0;
}

static int add_entry(struct s3_lister *l, size_t *cap, const char *name, size_t nlen,
                     const sl_stat_t *st)
{
    if (l->nents == *cap) {
        size_t ncap = *cap ? 2 * *cap : 256;
        struct s3_entry *e = realloc(l->ents, ncap * sizeof(*e));
        if (!e) return -ENOMEM;
        l->ents = e;
        *cap = ncap;
    }
    l->ents[l->nents].name_off = l->names.len;
    l->ents[l->nents].st = *st;
    l->nents++;
    if (sl__buf_append(&l->names, name, nlen) < 0 || sl__buf_append(&l->names, "", 1) < 0)
        return -ENOMEM;
    return 0;
}

/* A name a directory can hold: not empty, no '/', not "." or "..". */
static bool plain_name(const char *s, size_t n)
{
    if (n == 0 || memchr(s, '/', n)) return false;
    return !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* The listing's entries from one ListObjectsV2 reply; *any says whether it named anything at
 * all (the directory's own marker included). */
static int parse_page(struct s3_lister *l, const struct sl_buf *body, bool *any)
{
    xmlDoc *doc = parse_xml(body);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    size_t plen = strlen(l->prefix), cap = 0;
    int rc = 0;

    if (!root || strcmp((const char *)root->name, "ListBucketResult") != 0) {
        xmlFreeDoc(doc);
        return SL_E_BAD_REPLY;
    }
    /* Keys are asked URL-encoded (a key may hold characters XML 1.0 cannot carry); a store
     * that did so says <EncodingType>url</EncodingType>, and only then are they decoded. */
    const char *enc = text(child(root, "EncodingType"));
    bool encoded = enc && strcmp(enc, "url") == 0;
    if (encoded)
        for (xmlNode *c = root->children; c; c = c->next) {
            xmlNode *k = c->type == XML_ELEMENT_NODE ? child(c, strcmp((const char *)c->name,
                                                              "Contents") == 0 ? "Key" : "Prefix")
                                                     : NULL;
            if (k && k->children && k->children->type == XML_TEXT_NODE) {
                xmlChar *raw = k->children->content;
                char *plain = sl__net_unescape((char *)raw, strlen((char *)raw), true);
                if (!plain) {
                    xmlFreeDoc(doc);
                    return -ENOMEM;
                }
                xmlNodeSetContent(k->children, (const xmlChar *)plain);
                free(plain);
            }
        }
    l->done = true; /* unless the reply says it is truncated */
    free(l->token);
    l->token = NULL;
    for (xmlNode *c = root->children; c && rc == 0; c = c->next) {
        if (c->type != XML_ELEMENT_NODE) continue;
        const char *name = (const char *)c->name;
        sl_stat_t st = {0};
        if (strcmp(name, "Contents") == 0) {
            const char *key = text(child(c, "Key")), *etag = text(child(c, "ETag"));
            const char *size = text(child(c, "Size")), *lm = text(child(c, "LastModified"));
            if (!key || strncmp(key, l->prefix, plen) != 0) continue;
            *any = true;
            const char *rel = key + plen;
            /* The directory's marker, or a key that is not a plain name below it ("." and
             * ".." would lead a walk round in circles). */
            if (!plain_name(rel, strlen(rel))) continue;
            st.type = SL_TYPE_FILE;
            st.size = size ? strtoull(size, NULL, 10) : 0;
            st.mtime_ns = lm ? sl__net_parse_time(lm) : 0;
            st.mode = 0644;
            if (etag) snprintf(st.version, sizeof(st.version), "%s", etag);
            rc = add_entry(l, &cap, rel, strlen(rel), &st);
        } else if (strcmp(name, "CommonPrefixes") == 0) {
            const char *p = text(child(c, "Prefix"));
            if (!p || strncmp(p, l->prefix, plen) != 0) continue;
            *any = true;
            size_t n = strlen(p + plen);
            if (n && p[plen + n - 1] == '/') n--;
            if (!plain_name(p + plen, n)) continue; /* "dir//", "dir/../": not a name */
            st.type = SL_TYPE_DIR;
            st.mode = 0755;
            rc = add_entry(l, &cap, p + plen, n, &st);
        } else if (strcmp(name, "NextContinuationToken") == 0) {
            free(l->token);
            l->token = text(c) ? sl__strdup(text(c)) : NULL;
        } else if (strcmp(name, "IsTruncated") == 0) {
            l->done = !(text(c) && strcmp(text(c), "true") == 0);
        }
    }
    xmlFreeDoc(doc);
    if (rc == 0 && !l->done && !l->token) rc = SL_E_BAD_REPLY; /* truncated, but no way on */
    return rc;
}

/* Fetches the next page of the listing (max_keys at most). */
static int fetch_page(struct s3_lister *l, unsigned max_keys, bool *any)
{
    struct s3_store *s = l->s;
    struct sl_buf q = {0}, body = {0};
    char *url = NULL, *asked = l->token ? sl__strdup(l->token) : NULL;
    int rc = 0;

    /* Parameters in the sorted order SigV4's canonical query wants. */
    if (l->token) {
        rc = sl__buf_printf(&q, "continuation-token=");
        if (rc == 0) rc = sl__net_escape(&q, l->token, false);
        if (rc == 0) rc = sl__buf_printf(&q, "&");
    }
    if (rc == 0)
        rc = sl__buf_printf(&q, "delimiter=%%2F&encoding-type=url&list-type=2&max-keys=%u&prefix=",
                            max_keys);
    if (rc == 0) rc = sl__net_escape(&q, l->prefix, false);
    if (rc == 0 && !(url = sl__asprintf("%s?%s", s->base_url, q.data))) rc = -ENOMEM;
    if (rc == 0) {
        struct sl_net_req r = {.method = "GET", .url = url, .out = &body};
        rc = sl__net_one(s->net, &r);
        if (rc || !sl__net_ok(&r)) {
            /* The directory's own path, for the message. */
            size_t plen = strlen(s->prefix), dlen = strlen(l->prefix);
            char *dir = strndup(l->prefix + plen, dlen > plen ? dlen - plen - 1 : 0);
            rc = s3_fail(s, dir ? dir : "", &r, rc);
            free(dir);
        } else {
            lister_reset_page(l);
            rc = parse_page(l, &body, any);
            /* A store that hands back the token it was given would list the page forever. */
            if (rc == 0 && !l->done && asked && strcmp(asked, l->token) == 0) rc = SL_E_BAD_REPLY;
            if (rc == SL_E_BAD_REPLY)
                sl__err(rc, "s3://%s/%s: %s sent a listing sluice cannot read (not a "
                        "ListBucketResult, or truncated with no new continuation token)",
                        s->bucket, l->prefix, s->endpoint);
        }
    }
    free(asked);
    sl__buf_free(&q);
    sl__buf_free(&body);
    free(url);
    return rc;
}

static void s3_list_close(struct sl_ufs_lister *ul)
{
    struct s3_lister *l = (struct s3_lister *)ul;
    if (!l) return;
    lister_reset_page(l);
    sl__buf_free(&l->names);
    free(l->prefix);
    free(l->token);
    free(l);
}

static int head(struct s3_store *s, const char *path, struct sl_net_req *r, char **url_out);

static int s3_list_open(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out)
{
    struct s3_store *s = (struct s3_store *)u;
    struct s3_lister *l = calloc(1, sizeof(*l));
    bool any = false;
    int rc;

    if (!l) return -ENOMEM;
    l->s = s;
    l->prefix = *dir ? sl__asprintf("%s%s/", s->prefix, dir) : sl__strdup(s->prefix);
    if (!l->prefix) {
        s3_list_close((struct sl_ufs_lister *)l);
        return -ENOMEM;
    }
    /* The first page now, so that a missing bucket or directory fails here. */
    rc = fetch_page(l, LIST_MAX_KEYS, &any);
    if (rc == 0 && !any && *dir) {
        /* Nothing below it: not a directory. A file, or nothing at all? */
        struct sl_net_req r;
        char *url = NULL;
        rc = head(s, dir, &r, &url);
        free(url);
        if (rc == 0 && sl__net_ok(&r))
            rc = -ENOTDIR;
        else if (rc == 0 && r.status == 404)
            rc = -ENOENT;
        else
            rc = s3_fail(s, dir, &r, rc);
    }
    if (rc < 0) {
        s3_list_close((struct sl_ufs_lister *)l);
        return rc;
    }
    *out = (struct sl_ufs_lister *)l;
    return 0;
}

static int s3_list_next(struct sl_ufs_lister *ul, sl_dirent_t *ents, size_t max, size_t *n)
{
    struct s3_lister *l = (struct s3_lister *)ul;
    *n = 0;
    /* Pages can be empty yet truncated (every key of it filtered): keep going. */
    while (l->next == l->nents && !l->done) {
        bool any = false;
        int rc = fetch_page(l, LIST_MAX_KEYS, &any);
        if (rc < 0) return rc;
    }
    size_t count = SL_MIN(max, l->nents - l->next);
    for (size_t i = 0; i < count; i++) {
        struct s3_entry *e = &l->ents[l->next + i];
        ents[i].name = l->names.data + e->name_off;
        ents[i].st = e->st;
    }
    l->next += count;
    *n = count;
    return 0;
}

/* ---- stat ---- */

/* HEAD of path's key; *url_out is the caller's. Returns net's code; r holds the reply. */
static int head(struct s3_store *s, const char *path, struct sl_net_req *r, char **url_out)
{
    char *key = key_of(s, path);
    *url_out = key ? object_url(s, key, NULL) : NULL;
    free(key);
    if (!*url_out) return -ENOMEM;
    *r = (struct sl_net_req){.method = "HEAD", .url = *url_out};
    return sl__net_one(s->net, r);
}

/* Is there anything below dir (a directory), does the bucket exist? One key's listing. */
static int probe_dir(struct s3_store *s, const char *dir, bool *is_dir)
{
    struct s3_lister l = {.s = s};
    bool any = false;
    l.prefix = *dir ? sl__asprintf("%s%s/", s->prefix, dir) : sl__strdup(s->prefix);
    if (!l.prefix) return -ENOMEM;
    int rc = fetch_page(&l, 1, &any);
    *is_dir = rc == 0 && (any || !*dir);
    lister_reset_page(&l);
    sl__buf_free(&l.names);
    free(l.prefix);
    free(l.token);
    return rc;
}

static int s3_stat(struct sl_ufs *u, const char *path, sl_stat_t *st)
{
    struct s3_store *s = (struct s3_store *)u;
    struct sl_net_req r;
    char *url = NULL;
    bool is_dir = false;
    int rc;

    memset(st, 0, sizeof(*st));
    if (!*path) {
        /* The root: a directory, if the bucket is there and we may list it. */
        if ((rc = probe_dir(s, "", &is_dir)) < 0) return rc;
        st->type = SL_TYPE_DIR;
        st->mode = 0755;
        return 0;
    }
    rc = head(s, path, &r, &url);
    free(url);
    if (rc == 0 && sl__net_ok(&r)) {
        st->type = SL_TYPE_FILE;
        st->size = r.content_length >= 0 ? (uint64_t)r.content_length : 0;
        st->mtime_ns = sl__net_parse_time(r.last_modified);
        st->mode = 0644;
        snprintf(st->version, sizeof(st->version), "%s", r.etag);
        return 0;
    }
    /* A HEAD reply has no body to say why: a listing does (wrong key or wrong secret, no such
     * bucket), and tells whether path is a directory. */
    if (rc == 0 && (r.status == 404 || r.status == 403)) {
        if ((rc = probe_dir(s, path, &is_dir)) < 0) return rc;
        /* The listing took our credentials: a 403 on the object is a permission. */
        if (!is_dir) return s3_fail(s, path, &r, r.status == 404 ? -ENOENT : -EACCES);
        st->type = SL_TYPE_DIR;
        st->mode = 0755;
        return 0;
    }
    return s3_fail(s, path, &r, rc);
}

/* ---- read ---- */

static bool etag_matches(const struct sl_net_req *r, const char *version)
{
    return !r->etag[0] || strcmp(r->etag, version) == 0;
}

static int s3_read(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                   const struct iovec *iov, int iovcnt, size_t *nread)
{
    struct s3_store *s = (struct s3_store *)u;
    char *key = key_of(s, path), *url = key ? object_url(s, key, NULL) : NULL;
    char *if_match = version && *version ? sl__asprintf("If-Match: %s", version) : NULL;
    const char *headers[] = {if_match, NULL};
    int rc = -ENOMEM;

    *nread = 0;
    free(key);
    if (url && (!version || !*version || if_match)) {
        /* One range per part_size, all at once: a cold large read fills the link. */
        struct sl_net_read rd = {.url = url, .headers = headers, .version = version,
                                 .matches = etag_matches, .off = off, .iov = iov, .iovcnt = iovcnt,
                                 .split = s->part_size, .max_parts = s->concurrency};
        rc = sl__net_read(s->net, &rd);
        if (rc == 0)
            *nread = rd.nread;
        else if (rc != -ENOMEM)
            rc = s3_fail(s, path, &rd.failed, rc);
    }
    free(url);
    free(if_match);
    return rc;
}

/* ---- writing ---- */

static uint64_t part_size_for(struct s3_store *s, size_t part_number)
{
    size_t doublings = (part_number - 1) / PARTS_PER_DOUBLING;
    uint64_t size = s->part_size << SL_MIN(doublings, (size_t)9);
    return SL_MIN(size, MAX_PART_SIZE);
}

static int s3_writer_open(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out)
{
    struct s3_store *s = (struct s3_store *)u;
    if (!*path) return -EISDIR;
    struct s3_writer *w = calloc(1, sizeof(*w));
    if (!w) return -ENOMEM;
    char *key = key_of(s, path);
    w->s = s;
    w->path = sl__strdup(path);
    w->url = key ? object_url(s, key, NULL) : NULL;
    free(key);
    if (!w->path || !w->url) {
        free(w->path);
        free(w->url);
        free(w);
        return -ENOMEM;
    }
    *out = (struct sl_ufs_writer *)w;
    return 0;
}

static int create_upload(struct s3_writer *w)
{
    struct s3_store *s = w->s;
    struct sl_buf body = {0};
    /* "uploads=", not "uploads": libcurl 7.88 signs a valueless parameter without its '=',
     * which SigV4's canonical query requires; S3 takes both spellings. */
    char *url = sl__asprintf("%s?uploads=", w->url);
    if (!url) return -ENOMEM;
    struct sl_net_req r = {.method = "POST", .url = url, .out = &body};
    int rc = sl__net_one(s->net, &r);
    if (rc || !sl__net_ok(&r)) {
        rc = s3_fail(s, w->path, &r, rc);
    } else {
        xmlDoc *doc = parse_xml(&body);
        const char *id = doc ? text(child(xmlDocGetRootElement(doc), "UploadId")) : NULL;
        if (!id)
            rc = sl__err(SL_E_BAD_REPLY, "s3://%s/%s%s: %s started a multipart upload without "
                         "an UploadId", s->bucket, s->prefix, w->path, s->endpoint);
        else if (!(w->upload_id = sl__strdup(id)))
            rc = -ENOMEM;
        xmlFreeDoc(doc);
    }
    sl__buf_free(&body);
    free(url);
    return rc;
}

/* Uploads the batch of full parts, in parallel. */
static int upload_batch(struct s3_writer *w)
{
    struct s3_store *s = w->s;
    struct sl_net_req reqs[MAX_UPLOAD_BATCH] = {0}, *ptrs[MAX_UPLOAD_BATCH];
    char *urls[MAX_UPLOAD_BATCH] = {0};
    struct sl_buf q = {0};
    size_t n = w->nbatch;
    int rc = 0;

    if (!n) return 0;
    if (!w->upload_id && (rc = create_upload(w)) < 0) return rc;
    if (w->nparts + n > MAX_PARTS)
        return sl__err(-EFBIG, "s3://%s/%s%s: larger than S3's 10,000 parts allow; raise the "
                       "mount's part_size", s->bucket, s->prefix, w->path);
    char **etags = realloc(w->etags, (w->nparts + n) * sizeof(*etags));
    if (!etags) return -ENOMEM;
    w->etags = etags;
    for (size_t i = 0; i < n && rc == 0; i++) {
        q.len = 0;
        rc = sl__buf_printf(&q, "partNumber=%zu&uploadId=", w->nparts + i + 1);
        if (rc == 0) rc = sl__net_escape(&q, w->upload_id, false);
        if (rc == 0 && !(urls[i] = sl__asprintf("%s?%s", w->url, q.data))) rc = -ENOMEM;
        reqs[i] = (struct sl_net_req){.method = "PUT", .url = urls[i], .body = w->batch[i],
                                      .body_len = w->batch_len[i]};
        ptrs[i] = &reqs[i];
    }
    if (rc == 0 && (rc = sl__net_run(s->net, ptrs, n)) < 0 && rc != -ENOMEM)
        rc = s3_fail(s, w->path, sl__net_failed(ptrs, n), rc);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!sl__net_ok(&reqs[i]))
            rc = s3_fail(s, w->path, &reqs[i], 0);
        else if (!reqs[i].etag[0])
            rc = sl__err(SL_E_BAD_REPLY, "s3://%s/%s%s: %s took part %zu without giving its "
                         "ETag", s->bucket, s->prefix, w->path, s->endpoint, w->nparts + i + 1);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!(w->etags[w->nparts] = sl__strdup(reqs[i].etag))) {
            rc = -ENOMEM;
            break;
        }
        w->nparts++;
    }
    for (size_t i = 0; i < n; i++) {
        free(urls[i]);
        free(w->batch[i]);
        w->batch[i] = NULL;
    }
    w->nbatch = 0;
    sl__buf_free(&q);
    return rc;
}

static size_t batch_max(struct s3_store *s)
{
    return SL_MIN((size_t)s->concurrency, (size_t)MAX_UPLOAD_BATCH);
}

/* The part being filled is full (or the last): into the batch, which goes up when full. */
static int push_part(struct s3_writer *w)
{
    w->batch[w->nbatch] = w->cur;
    w->batch_len[w->nbatch] = w->cur_len;
    w->nbatch++;
    w->cur = NULL;
    w->cur_len = w->cur_cap = 0;
    return w->nbatch >= batch_max(w->s) ? upload_batch(w) : 0;
}

static int s3_writer_write(struct sl_ufs_writer *uw, const void *buf, size_t len)
{
    struct s3_writer *w = (struct s3_writer *)uw;
    if (w->failed) return w->failed;
    while (len > 0) {
        if (!w->cur) {
            size_t part = (size_t)part_size_for(w->s, w->nparts + w->nbatch + 1);
            if (!(w->cur = malloc(part))) return w->failed = -ENOMEM;
            w->cur_cap = part;
        }
        size_t n = SL_MIN(len, w->cur_cap - w->cur_len);
        memcpy(w->cur + w->cur_len, buf, n);
        w->cur_len += n;
        w->total += n;
        buf = (const char *)buf + n;
        len -= n;
        if (w->cur_len == w->cur_cap) {
            int rc = push_part(w);
            if (rc < 0) return w->failed = rc;
        }
    }
    return 0;
}

static void writer_free(struct s3_writer *w)
{
    for (size_t i = 0; i < w->nparts; i++) free(w->etags[i]);
    for (size_t i = 0; i < w->nbatch; i++) free(w->batch[i]);
    free(w->etags);
    free(w->cur);
    free(w->upload_id);
    free(w->path);
    free(w->url);
    free(w);
}

static void s3_writer_abort(struct sl_ufs_writer *uw)
{
    struct s3_writer *w = (struct s3_writer *)uw;
    if (!w) return;
    if (w->upload_id) {
        /* Best effort: parts left behind are billed, so try; a failure here is only logged. */
        struct sl_buf q = {0};
        char *url = NULL;
        if (sl__buf_printf(&q, "uploadId=") == 0 && sl__net_escape(&q, w->upload_id, false) == 0)
            url = sl__asprintf("%s?%s", w->url, q.data);
        if (url) {
            struct sl_net_req r = {.method = "DELETE", .url = url};
            if (sl__net_one(w->s->net, &r) || !sl__net_ok(&r))
                sl__warn("s3://%s/%s%s: could not abort multipart upload %s", w->s->bucket,
                         w->s->prefix, w->path, w->upload_id);
        }
        free(url);
        sl__buf_free(&q);
    }
    writer_free(w);
}

/* After a retried CompleteMultipartUpload answered NoSuchUpload: is the object there, with
 * every byte we wrote, as a multipart object ("ETAG-N")? */
static bool completed_before(struct s3_writer *w)
{
    struct sl_net_req r;
    char *url = NULL;
    int rc = head(w->s, w->path, &r, &url);
    free(url);
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "-%zu\"", w->nparts);
    size_t el = strlen(r.etag), sl = strlen(suffix);
    return rc == 0 && sl__net_ok(&r) && r.content_length >= 0 && (uint64_t)r.content_length == w->total &&
           el > sl && strcmp(r.etag + el - sl, suffix) == 0;
}

static int complete_upload(struct s3_writer *w)
{
    struct s3_store *s = w->s;
    struct sl_buf xml = {0}, q = {0}, body = {0};
    char *url = NULL;
    int rc = sl__buf_printf(&xml, "<CompleteMultipartUpload>");
    for (size_t i = 0; i < w->nparts && rc == 0; i++) {
        /* ETags are quoted strings of hex digits; escape anyway, it is XML. */
        rc = sl__buf_printf(&xml, "<Part><PartNumber>%zu</PartNumber><ETag>", i + 1);
        for (const char *c = w->etags[i]; *c && rc == 0; c++)
            rc = *c == '"' ? sl__buf_printf(&xml, "&quot;") : *c == '&' ? sl__buf_printf(&xml, "&amp;")
                 : *c == '<' ? sl__buf_printf(&xml, "&lt;") : sl__buf_append(&xml, c, 1);
        if (rc == 0) rc = sl__buf_printf(&xml, "</ETag></Part>");
    }
    if (rc == 0) rc = sl__buf_printf(&xml, "</CompleteMultipartUpload>");
    if (rc == 0) rc = sl__buf_printf(&q, "uploadId=");
    if (rc == 0) rc = sl__net_escape(&q, w->upload_id, false);
    if (rc == 0 && !(url = sl__asprintf("%s?%s", w->url, q.data))) rc = -ENOMEM;
    if (rc == 0) {
        const char *headers[] = {"Content-Type: application/xml", NULL};
        struct sl_net_req r = {.method = "POST", .url = url, .headers = headers,
                               .body = xml.data, .body_len = xml.len, .out = &body};
        rc = sl__net_one(s->net, &r);
        if (rc == 0 && r.status == 404 && strcmp(r.err_code, "NoSuchUpload") == 0 &&
            r.attempts > 1 && completed_before(w)) {
            /* The first attempt completed it and its reply was lost: done. */
        } else if (rc || !sl__net_ok(&r)) {
            rc = s3_fail(s, w->path, &r, rc);
        } else {
            /* S3 may answer 200 and still fail, with an <Error> in the body. */
            xmlDoc *doc = parse_xml(&body);
            xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
            if (!root || strcmp((const char *)root->name, "CompleteMultipartUploadResult") != 0) {
                const char *code = root ? text(child(root, "Code")) : NULL;
                rc = sl__err(SL_E_REMOTE, "s3://%s/%s%s: %s did not complete the upload (%s)",
                             s->bucket, s->prefix, w->path, s->endpoint,
                             code ? code : "no CompleteMultipartUploadResult");
            }
            xmlFreeDoc(doc);
        }
    }
    sl__buf_free(&xml);
    sl__buf_free(&q);
    sl__buf_free(&body);
    free(url);
    return rc;
}

static int s3_stat(struct sl_ufs *u, const char *path, sl_stat_t *st);

static int s3_writer_commit(struct sl_ufs_writer *uw, sl_stat_t *st)
{
    struct s3_writer *w = (struct s3_writer *)uw;
    struct s3_store *s = w->s;
    int rc = w->failed;

    if (rc == 0 && !w->upload_id && w->nbatch == 0) {
        /* Small enough for one request. */
        struct sl_net_req r = {.method = "PUT", .url = w->url, .body = w->cur,
                               .body_len = w->cur_len};
        rc = sl__net_one(s->net, &r);
        if (rc || !sl__net_ok(&r)) rc = s3_fail(s, w->path, &r, rc);
    } else if (rc == 0) {
        if (w->cur_len) rc = push_part(w);
        if (rc == 0) rc = upload_batch(w);
        if (rc == 0) rc = complete_upload(w);
    }
    if (rc < 0) {
        s3_writer_abort(uw);
        return rc;
    }
    if (st) rc = s3_stat(&s->base, w->path, st);
    writer_free(w);
    return rc;
}

/* ---- remove, rename ---- */

static int delete_key(struct s3_store *s, const char *path, const char *key)
{
    char *url = object_url(s, key, NULL);
    if (!url) return -ENOMEM;
    struct sl_net_req r = {.method = "DELETE", .url = url};
    int rc = sl__net_one(s->net, &r);
    if (rc || (!sl__net_ok(&r) && r.status != 404)) rc = s3_fail(s, path, &r, rc);
    free(url);
    return rc;
}

static int s3_remove(struct sl_ufs *u, const char *path)
{
    struct s3_store *s = (struct s3_store *)u;
    sl_stat_t st;
    if (!*path) return -EISDIR;
    int rc = s3_stat(u, path, &st);
    if (rc < 0) return rc;
    /* A directory exists while keys are below it; its marker, if any, goes. */
    char *key = st.type == SL_TYPE_DIR ? sl__asprintf("%s%s/", s->prefix, path) : key_of(s, path);
    if (!key) return -ENOMEM;
    rc = delete_key(s, path, key);
    free(key);
    return rc;
}

static int s3_rename(struct sl_ufs *u, const char *from, const char *to)
{
    struct s3_store *s = (struct s3_store *)u;
    if (strcmp(from, to) == 0) return 0; /* a copy onto itself, then a delete, would lose it */
    char *src_key = key_of(s, from), *dst_key = key_of(s, to);
    char *dst_url = dst_key ? object_url(s, dst_key, NULL) : NULL;
    struct sl_buf src = {0}, body = {0};
    int rc = -ENOMEM;

    if (!src_key || !dst_url) goto out;
    if (sl__buf_printf(&src, "x-amz-copy-source: /%s/", s->bucket) < 0 ||
        sl__net_escape(&src, src_key, true) < 0)
        goto out;
    const char *headers[] = {src.data, NULL};
    struct sl_net_req r = {.method = "PUT", .url = dst_url, .headers = headers, .out = &body};
    rc = sl__net_one(s->net, &r);
    if (rc || !sl__net_ok(&r)) {
        rc = s3_fail(s, from, &r, rc);
        goto out;
    }
    xmlDoc *doc = parse_xml(&body);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    bool copied = root && strcmp((const char *)root->name, "CopyObjectResult") == 0;
    xmlFreeDoc(doc);
    if (!copied) {
        rc = sl__err(SL_E_REMOTE, "s3://%s/%s%s: %s did not copy it to %s", s->bucket, s->prefix,
                     from, s->endpoint, to);
        goto out;
    }
    rc = delete_key(s, from, src_key);
out:
    sl__buf_free(&src);
    sl__buf_free(&body);
    free(src_key);
    free(dst_key);
    free(dst_url);
    return rc;
}

/* S3 has no directories: a zero-byte marker "path/" makes an empty one visible to listings and
 * stats, as s3fs, rclone and the AWS console make them; s3_remove takes it away. */
static int s3_mkdir(struct sl_ufs *u, const char *path)
{
    struct sl_ufs_writer *w;
    char *marker = sl__asprintf("%s/", path);
    if (!marker) return -ENOMEM;
    int rc = s3_writer_open(u, marker, &w);
    if (rc == 0) rc = s3_writer_commit(w, NULL);
    free(marker);
    return rc;
}

const struct sl_ufs_ops sl__ufs_s3_ops = {
    .scheme = "s3",
    /* A listing or HEAD costs a round trip to a store that may be far away, and datasets in
     * object stores change rarely: trust what was seen for a minute. */
    .default_ttl_ns = 60LL * 1000000000LL,
    .split = s3_split,
    .open = s3_open,
    .close = s3_close,
    .stat = s3_stat,
    .list_open = s3_list_open,
    .list_next = s3_list_next,
    .list_close = s3_list_close,
    .read = s3_read,
    .writer_open = s3_writer_open,
    .writer_write = s3_writer_write,
    .writer_commit = s3_writer_commit,
    .writer_abort = s3_writer_abort,
    .remove = s3_remove,
    .rename = s3_rename,
    .mkdir = s3_mkdir,
};
