/*
 * net.c - HTTP transfers for the remote stores, on libcurl.
 *
 * Connections: a run of requests goes on a curl multi handle taken from the store's stack of
 * them and put back after, with its connection cache: the next run reuses its kept-alive
 * connections, so after warm-up a request costs one round trip, not three. (libcurl does not
 * support one connection cache used by concurrent threads, so each concurrent run has its own
 * multi handle; DNS answers and TLS sessions are shared by all, through a share handle.)
 * Easy handles are kept on a free list and reset between uses.
 *
 * Concurrency: at most cfg.concurrency transfers of a store are in flight at once, over all
 * threads. A run of several requests takes one slot blocking (so it always makes progress)
 * and more only while they are free (so two runs can never deadlock waiting for each other).
 *
 * A request's life (p.state):
 *
 *     WAITING --start--> ACTIVE --reply or failure--> DONE
 *        ^                  |
 *        +----retryable-----+   (after a backoff; not before p.not_before_ns)
 *
 * Retries: a failed connection or transfer (refused, reset, timed out, stalled), 5xx, 429,
 * and S3's SlowDown and RequestTimeout are tried again after a delay drawn uniformly from
 * [base/2, min(cap, base * 2^attempt)] ("full jitter": many clients that failed together do
 * not come back together), while attempts and the retry budget last. 4xx replies other than
 * those are final at once: a 403 or 404 will not change by asking again. A ranged GET that
 * broke off resumes after the bytes it already has.
 *
 * Signing: libcurl's AWS SigV4 (CURLOPT_AWS_SIGV4). The payload hash is computed here
 * (SHA-256 of the body, OpenSSL) and sent as x-amz-content-sha256, which libcurl signs as
 * given: a store that checks it refuses a body damaged on the way.
 */
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "ufs/net.h"

#define BACKOFF_BASE_NS (100ULL * 1000000ULL)
#define BACKOFF_CAP_NS (5000ULL * 1000000ULL)
#define CONNECT_TIMEOUT_MS 5000L
#define STALL_SECONDS 30L /* a transfer moving no byte for this long is dead */
#define ERRBODY_MAX (16U << 10)
#define MAX_SECONDS 9000000000LL /* nanoseconds since 1970 fit an int64 until 2262 */

enum { ST_WAITING = 0, ST_ACTIVE, ST_DONE };

/* Lock order: net->lock, then the share locks (taken by libcurl inside transfers). */
struct sl_net {
    struct sl_net_cfg cfg; /* strings owned */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

    pthread_mutex_t lock;
    pthread_cond_t slot_free;
    unsigned in_flight; /* guarded by lock */
    CURL **idle;        /* guarded by lock: easy handles not in use */
    size_t nidle;       /* guarded by lock */
    CURLM **multis;     /* guarded by lock: multi handles (and their connections) not in use */
    size_t nmultis, cap_multis; /* guarded by lock */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
}

void sl__net_global_init(void)
{
    pthread_once(&global_once, global_init);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    (void)h;
    (void)access;
    struct sl_net *net = arg;
    pthread_mutex_lock(&net->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
    (void)h;
    struct sl_net *net = arg;
    pthread_mutex_unlock(&net->share_locks[data]);
}

int sl__net_open(const struct sl_net_cfg *cfg, struct sl_net **out)
{
    sl__net_global_init();
    struct sl_net *net = calloc(1, sizeof(*net));
    if (!net) return -ENOMEM;
    net->cfg = *cfg;
    net->cfg.sigv4 = cfg->sigv4 ? sl__strdup(cfg->sigv4) : NULL;
    net->cfg.access_key = cfg->access_key ? sl__strdup(cfg->access_key) : NULL;
    net->cfg.secret_key = cfg->secret_key ? sl__strdup(cfg->secret_key) : NULL;
    net->cfg.session_token = cfg->session_token ? sl__strdup(cfg->session_token) : NULL;
    if (!net->cfg.concurrency) net->cfg.concurrency = SL_NET_DEFAULT_CONCURRENCY;
    if (net->cfg.retries < 0) net->cfg.retries = SL_NET_DEFAULT_RETRIES;
    if (net->cfg.retry_time_ns <= 0) net->cfg.retry_time_ns = SL_NET_DEFAULT_RETRY_TIME_NS;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&net->share_locks[i], NULL);
    pthread_mutex_init(&net->lock, NULL);
    pthread_cond_init(&net->slot_free, NULL);
    net->idle = calloc(net->cfg.concurrency, sizeof(*net->idle));
    net->share = curl_share_init();
    if (!net->idle || !net->share || (cfg->sigv4 && !net->cfg.sigv4) ||
        (cfg->access_key && !net->cfg.access_key) || (cfg->secret_key && !net->cfg.secret_key) ||
        (cfg->session_token && !net->cfg.session_token)) {
        sl__net_close(net);
        return -ENOMEM;
    }
    curl_share_setopt(net->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(net->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(net->share, CURLSHOPT_USERDATA, net);
    curl_share_setopt(net->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(net->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *out = net;
    return 0;
}

void sl__net_close(struct sl_net *net)
{
    if (!net) return;
    for (size_t i = 0; i < net->nidle; i++) curl_easy_cleanup(net->idle[i]);
    for (size_t i = 0; i < net->nmultis; i++) curl_multi_cleanup(net->multis[i]);
    free(net->multis);
    if (net->share) curl_share_cleanup(net->share);
    free(net->idle);
    free((char *)net->cfg.sigv4);
    free((char *)net->cfg.access_key);
    free((char *)net->cfg.secret_key);
    free((char *)net->cfg.session_token);
    pthread_cond_destroy(&net->slot_free);
    pthread_mutex_destroy(&net->lock);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&net->share_locks[i]);
    free(net);
}

/* A slot and an easy handle; NULL when !wait and no slot is free (or on ENOMEM). */
static CURL *take_handle(struct sl_net *net, bool wait)
{
    CURL *h = NULL;
    pthread_mutex_lock(&net->lock);
    while (net->in_flight >= net->cfg.concurrency) {
        if (!wait) {
            pthread_mutex_unlock(&net->lock);
            return NULL;
        }
        pthread_cond_wait(&net->slot_free, &net->lock);
    }
    net->in_flight++;
    if (net->nidle) h = net->idle[--net->nidle];
    pthread_mutex_unlock(&net->lock);
    if (!h && !(h = curl_easy_init())) {
        pthread_mutex_lock(&net->lock);
        net->in_flight--;
        pthread_cond_signal(&net->slot_free);
        pthread_mutex_unlock(&net->lock);
    }
    return h;
}

static void give_handle(struct sl_net *net, CURL *h)
{
    pthread_mutex_lock(&net->lock);
    if (net->nidle < net->cfg.concurrency)
        net->idle[net->nidle++] = h;
    else
        curl_easy_cleanup(h);
    net->in_flight--;
    pthread_cond_signal(&net->slot_free);
    pthread_mutex_unlock(&net->lock);
}

/* A multi handle with its kept-alive connections, or a new one; NULL on ENOMEM. */
static CURLM *take_multi(struct sl_net *net)
{
    CURLM *m = NULL;
    pthread_mutex_lock(&net->lock);
    if (net->nmultis) m = net->multis[--net->nmultis];
    pthread_mutex_unlock(&net->lock);
    if (!m && (m = curl_multi_init()))
        curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)net->cfg.concurrency);
    return m;
}

static void give_multi(struct sl_net *net, CURLM *m)
{
    pthread_mutex_lock(&net->lock);
    if (net->nmultis == net->cap_multis) {
        size_t cap = net->cap_multis ? 2 * net->cap_multis : 8;
        CURLM **grown = realloc(net->multis, cap * sizeof(*grown));
        if (grown) {
            net->multis = grown;
            net->cap_multis = cap;
        }
    }
    if (net->nmultis < net->cap_multis) {
        net->multis[net->nmultis++] = m;
        m = NULL;
    }
    pthread_mutex_unlock(&net->lock);
    if (m) curl_multi_cleanup(m);
}

/* ---- callbacks ---- */

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

static void reset_reply(struct sl_net_req *r)
{
    r->status = 0;
    r->etag[0] = r->last_modified[0] = r->content_type[0] = '\0';
    r->final_url[0] = '\0';
    r->err_code[0] = r->err_msg[0] = '\0';
    r->content_length = r->total_size = r->range_start = -1;
    r->p.errbody.len = 0;
    if (r->p.errbody.data) r->p.errbody.data[0] = '\0';
    if (r->out) r->out->len = 0;
}

static size_t on_header(char *line, size_t size, size_t n, void *arg)
{
    struct sl_net_req *r = arg;
    size_t len = size * n;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        /* A new reply (after a 100 Continue, say): forget the last one's headers. */
        uint64_t keep_got = r->got;
        reset_reply(r);
        r->got = keep_got;
        const char *sp = memchr(line, ' ', len);
        if (sp) r->status = strtol(sp + 1, NULL, 10);
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t nlen = (size_t)(colon - line);
    const char *v = colon + 1;
    while (v < line + len && (*v == ' ' || *v == '\t')) v++;
    size_t vlen = (size_t)(line + len - v);
#define IS(name) (nlen == sizeof(name) - 1 && strncasecmp(line, name, nlen) == 0)
    if (IS("ETag")) {
        /* One that does not fit would be truncated, and never match again: treat as absent. */
        if (vlen + 1 <= sizeof(r->etag)) copy_value(r->etag, sizeof(r->etag), v, vlen);
    }
    else if (IS("Last-Modified"))
        copy_value(r->last_modified, sizeof(r->last_modified), v, vlen);
    else if (IS("Content-Type"))
        copy_value(r->content_type, sizeof(r->content_type), v, vlen);
    else if (IS("Content-Length"))
        r->content_length = strtoll(v, NULL, 10);
    else if (IS("Content-Range")) {
        /* "bytes FIRST-LAST/TOTAL" (TOTAL may be '*') */
        const char *slash = memchr(v, '/', vlen);
        if (vlen > 6 && strncasecmp(v, "bytes ", 6) == 0 && v[6] >= '0' && v[6] <= '9')
            r->range_start = strtoll(v + 6, NULL, 10);
        if (slash && slash[1] != '*') r->total_size = strtoll(slash + 1, NULL, 10);
    }
#undef IS
    return len;
}

/* Copies n bytes of a ranged GET's reply to where byte `got` of its range goes. */
static void land(struct sl_net_req *r, const char *data, size_t n)
{
    if (!r->dstv) {
        memcpy((char *)r->dst + r->got, data, n);
        r->got += n;
        return;
    }
    uint64_t pos = r->got;
    for (int i = 0; i < r->ndstv && n > 0; i++) {
        if (pos >= r->dstv[i].iov_len) {
            pos -= r->dstv[i].iov_len;
            continue;
        }
        size_t k = (size_t)SL_MIN((uint64_t)n, r->dstv[i].iov_len - pos);
        memcpy((char *)r->dstv[i].iov_base + pos, data, k);
        data += k;
        n -= k;
        r->got += k;
        pos = 0;
    }
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct sl_net_req *r = arg;
    size_t len = size * n;

    if (r->status < 200 || r->status > 299) {
        /* An error reply: keep its start, for its S3 error code. */
        size_t room = ERRBODY_MAX - SL_MIN(r->p.errbody.len, ERRBODY_MAX);
        if (room && sl__buf_append(&r->p.errbody, data, SL_MIN(room, len)) < 0) return 0;
        return len;
    }
    if (!r->dst && !r->dstv) {
        if (!r->out) return len; /* a reply body nobody asked for (a PUT's "OK" page) */
        if (r->out->len + len > SL_NET_MAX_BODY) {
            r->p.overflow = true;
            return 0;
        }
        return sl__buf_append(r->out, data, len) < 0 ? 0 : len;
    }
    /* A ranged GET. Its bytes must start where we asked, or they would land at the wrong
     * offset: a 206 must say so in its Content-Range. A server that ignores Range answers 200
     * with the whole object: fine from the start of it (the first page), but anywhere else it
     * would cost the whole object per page, so that is refused rather than slowly served. */
    if (r->status == 206 && r->range_start != (int64_t)(r->range_off + r->p.attempt_got)) {
        r->p.bad_range = true;
        return 0;
    }
    if (r->status == 200 && r->range_off + r->p.attempt_got > 0) {
        r->p.bad_range = true;
        return 0;
    }
    size_t used = 0;
    size_t want = (size_t)SL_MIN((uint64_t)(len - used), r->range_len - r->got);
    land(r, data + used, want);
    if (used + want < len) {
        r->p.truncated = true; /* more than the range: we have what we asked for */
        return 0;
    }
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    struct sl_net_req *r = arg;
    size_t want = SL_MIN(size * n, r->body_len - r->p.body_pos);
    if (want) memcpy(buf, (const char *)r->body + r->p.body_pos, want);
    r->p.body_pos += want;
    return want;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
    struct sl_net_req *r = arg;
    if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len) return CURL_SEEKFUNC_FAIL;
    r->p.body_pos = (size_t)off;
    return CURL_SEEKFUNC_OK;
}

/* ---- one attempt ---- */

static void payload_hash(struct sl_net_req *r)
{
    static const char empty[] =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    if (!r->body_len) {
        memcpy(r->p.payload_hash, empty, sizeof(empty));
        return;
    }
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(r->body, r->body_len, md);
    sl__hex(md, sizeof(md), r->p.payload_hash);
}

static int add_header(struct sl_net_req *r, const char *line)
{
    struct curl_slist *l = curl_slist_append(r->p.hdrs, line);
    if (!l) return -ENOMEM;
    r->p.hdrs = l;
    return 0;
}

static int setup(struct sl_net *net, struct sl_net_req *r, CURL *h)
{
    char line[256];
    int rc = 0;

    curl_easy_reset(h);
    reset_reply(r);
    r->curl_rc = CURLE_OK;
    r->curl_msg[0] = '\0';
    r->p.truncated = r->p.overflow = false;
    r->p.attempt_got = r->got;
    r->p.body_pos = 0;
    curl_slist_free_all(r->p.hdrs);
    r->p.hdrs = NULL;

    /* No waiting for "100 Continue": it costs a round trip per upload, and a store far away
     * is exactly where round trips hurt. Unsigned requests drop the header; signed ones cannot
     * (libcurl 7.88 would sign the blank header it never sends, and the store would refuse
     * the signature), so they send it and go on without waiting. */
    if (!net->cfg.sigv4 && (rc = add_header(r, "Expect:")) < 0) return rc;
    curl_easy_setopt(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
    for (const char *const *hl = r->headers; hl && *hl; hl++)
        if ((rc = add_header(r, *hl)) < 0) return rc;
    if (r->range) {
        uint64_t from = r->range_off + r->got, to = r->range_off + r->range_len - 1;
        snprintf(line, sizeof(line), "Range: bytes=%llu-%llu", (unsigned long long)from,
                 (unsigned long long)to);
        if ((rc = add_header(r, line)) < 0) return rc;
    }
    if (net->cfg.sigv4) {
        snprintf(line, sizeof(line), "x-amz-content-sha256: %s", r->p.payload_hash);
        if ((rc = add_header(r, line)) < 0) return rc;
        if (net->cfg.session_token) {
            char *tok = sl__asprintf("x-amz-security-token: %s", net->cfg.session_token);
            if (!tok) return -ENOMEM;
            rc = add_header(r, tok);
            free(tok);
            if (rc < 0) return rc;
        }
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, net->cfg.sigv4);
        curl_easy_setopt(h, CURLOPT_USERNAME, net->cfg.access_key);
        curl_easy_setopt(h, CURLOPT_PASSWORD, net->cfg.secret_key);
    }

    curl_easy_setopt(h, CURLOPT_SHARE, net->share);
    curl_easy_setopt(h, CURLOPT_URL, r->url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, STALL_SECONDS);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->curl_msg);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(h, CURLOPT_PRIVATE, r);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "sluice/" SL_VERSION_STRING);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (r->follow) {
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
        curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0 || strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, r);
        curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
        if (r->method[1] == 'O') curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "POST");
    } else if (strcmp(r->method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->p.hdrs);
    return 0;
}

static const char *xml_child_text(xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && strcmp((const char *)c->name, name) == 0 &&
            c->children && c->children->type == XML_TEXT_NODE)
            return (const char *)c->children->content;
    return NULL;
}

/* S3 errors come as <Error><Code>..</Code><Message>..</Message></Error>. */
static void parse_error(struct sl_net_req *r, const char *body, size_t len)
{
    if (!len || !memchr(body, '<', len)) return;
    xmlDoc *doc = xmlReadMemory(body, (int)len, "reply.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) return;
    xmlNode *root = xmlDocGetRootElement(doc);
    if (root && strcmp((const char *)root->name, "Error") == 0) {
        const char *code = xml_child_text(root, "Code"), *msg = xml_child_text(root, "Message");
        if (code) snprintf(r->err_code, sizeof(r->err_code), "%s", code);
        if (msg) snprintf(r->err_msg, sizeof(r->err_msg), "%s", msg);
    }
    xmlFreeDoc(doc);
}

/* After an attempt: is it worth another? */
static bool retryable(const struct sl_net_req *r)
{
    if (r->p.overflow || r->p.bad_range) return false;
    switch (r->curl_rc) {
    case CURLE_OK:
        break;
    case CURLE_WRITE_ERROR: /* ours: out of memory, or the reply did not fit */
    case CURLE_OUT_OF_MEMORY:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_LOGIN_DENIED:
    case CURLE_ABORTED_BY_CALLBACK:
        return false;
    default:
        return true; /* refused, reset, timed out, stalled, cut short: the network's fault */
    }
    if (r->status >= 500 || r->status == 429) return true;
    if (strcmp(r->err_code, "SlowDown") == 0 || strcmp(r->err_code, "RequestTimeout") == 0 ||
        strcmp(r->err_code, "InternalError") == 0)
        return true;
    return false;
}

static uint64_t backoff_ns(unsigned attempt)
{
    static _Thread_local uint64_t seed;
    if (!seed && getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) seed = sl__mono_ns();
    seed |= 1;
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    uint64_t ceil = BACKOFF_BASE_NS << SL_MIN(attempt, 16U);
    if (ceil > BACKOFF_CAP_NS) ceil = BACKOFF_CAP_NS;
    uint64_t floor = BACKOFF_BASE_NS / 2;
    return floor + seed % (ceil > floor ? ceil - floor : 1);
}

/* Called when an attempt ended (curl's result in r->curl_rc): DONE or WAITING again. */
static void finish_attempt(struct sl_net *net, struct sl_net_req *r)
{
    uint64_t now = sl__mono_ns();
    if (r->curl_rc == CURLE_WRITE_ERROR && r->p.truncated) r->curl_rc = CURLE_OK;
    /* Every byte asked for is in: a reset after the last one changes nothing. */
    if ((r->dst || r->dstv) && r->status >= 200 && r->status <= 299 && r->got == r->range_len)
        r->curl_rc = CURLE_OK;
    /* An attempt that moved bytes renews the retry budget: the budget bounds time spent
     * failing, not time spent transferring (a large part on a slow link). */
    if (r->got > r->p.attempt_got) r->p.budget_ns = now;
    if (r->status >= 300) parse_error(r, r->p.errbody.data, r->p.errbody.len);
    /* A ranged GET that ended early without a transport error is cut short all the same. */
    if (r->curl_rc == CURLE_OK && (r->dst || r->dstv) && r->status >= 200 && r->status <= 299 &&
        r->got < r->range_len) {
        /* Where the object ends, as far as this reply tells; short of it is a cut. */
        uint64_t object_end = UINT64_MAX;
        if (r->total_size >= 0)
            object_end = (uint64_t)r->total_size;
        else if (r->status == 200)
            object_end = r->content_length >= 0 ? (uint64_t)r->content_length
                                                 : r->range_off + r->got;
        if (r->range_off + r->got < object_end) r->curl_rc = CURLE_PARTIAL_FILE;
    }
    r->attempts++;
    r->elapsed_ns = now - r->p.start_ns;
    if (retryable(r) && r->attempts <= (unsigned)net->cfg.retries) {
        uint64_t delay = backoff_ns(r->attempts - 1);
        if (now - r->p.budget_ns + delay < (uint64_t)net->cfg.retry_time_ns) {
            sl__debug("%s %s: %s; retrying in %llu ms", r->method, r->url,
                      r->curl_rc ? curl_easy_strerror(r->curl_rc) : r->err_code[0] ? r->err_code
                                                                                    : "5xx",
                      (unsigned long long)(delay / 1000000));
            r->p.state = ST_WAITING;
            r->p.not_before_ns = now + delay;
            return;
        }
    }
    r->p.state = ST_DONE;
}

static void end_transfer(struct sl_net *net, CURLM *m, struct sl_net_req *r)
{
    curl_multi_remove_handle(m, r->p.easy);
    give_handle(net, r->p.easy);
    r->p.easy = NULL;
}

int sl__net_run(struct sl_net *net, struct sl_net_req *const *reqs, size_t n)
{
    CURLM *m = take_multi(net);
    size_t done = 0, active = 0;
    int rc = 0;

    if (!m) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct sl_net_req *r = reqs[i];
        memset(&r->p, 0, sizeof(r->p));
        r->p.state = ST_WAITING;
        r->got = 0;
        r->attempts = 0;
        if (net->cfg.sigv4) payload_hash(r);
    }

    while (done < n && rc == 0) {
        uint64_t now = sl__mono_ns(), wake = UINT64_MAX;
        for (size_t i = 0; i < n && rc == 0; i++) {
            struct sl_net_req *r = reqs[i];
            if (r->p.state != ST_WAITING) continue;
            if (r->p.not_before_ns > now) {
                wake = SL_MIN(wake, r->p.not_before_ns);
                continue;
            }
            CURL *h = take_handle(net, active == 0);
            if (!h) {
                if (active == 0) rc = -ENOMEM;
                break;
            }
            r->p.easy = h;
            if (!r->p.start_ns) r->p.start_ns = r->p.budget_ns = sl__mono_ns();
            if ((rc = setup(net, r, h)) < 0 || curl_multi_add_handle(m, h) != CURLM_OK) {
                give_handle(net, h);
                r->p.easy = NULL;
                if (!rc) rc = -ENOMEM;
                break;
            }
            r->p.state = ST_ACTIVE;
            active++;
        }
        if (rc) break;

        int running = 0;
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            struct sl_net_req *r = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
            r->curl_rc = msg->data.result;
            if (r->follow) {
                char *eff = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_EFFECTIVE_URL, &eff);
                if (eff) snprintf(r->final_url, sizeof(r->final_url), "%s", eff);
            }
            end_transfer(net, m, r);
            active--;
            finish_attempt(net, r);
            if (r->p.state == ST_DONE) {
                done++;
                if (r->p.overflow || r->p.bad_range)
                    rc = SL_E_BAD_REPLY;
                else if (r->curl_rc != CURLE_OK)
                    rc = SL_E_UNREACHABLE;
            }
        }
        if (done == n || rc) break;
        now = sl__mono_ns();
        int timeout_ms = 200;
        if (wake != UINT64_MAX)
            timeout_ms = wake <= now ? 0 : (int)SL_MIN((wake - now) / 1000000 + 1, 200ULL);
        if (active)
            curl_multi_poll(m, NULL, 0, timeout_ms, NULL);
        else if (timeout_ms > 0)
            nanosleep(&(struct timespec){0, (long)timeout_ms * 1000000L}, NULL);
    }

    /* Cancel what is still going after a failure. */
    for (size_t i = 0; i < n; i++) {
        struct sl_net_req *r = reqs[i];
        if (r->p.easy) end_transfer(net, m, r);
        curl_slist_free_all(r->p.hdrs);
        r->p.hdrs = NULL;
        sl__buf_free(&r->p.errbody);
    }
    give_multi(net, m);
    return rc;
}

int sl__net_one(struct sl_net *net, struct sl_net_req *req)
{
    return sl__net_run(net, &req, 1);
}

const struct sl_net_req *sl__net_failed(struct sl_net_req *const *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (reqs[i]->p.state == ST_DONE &&
            (reqs[i]->curl_rc != CURLE_OK || reqs[i]->p.overflow || reqs[i]->p.bad_range))
            return reqs[i];
    return reqs[0];
}

/* The pieces of iov that hold bytes [from, to) of it, into out (at most cnt of them). */
static int iov_slice(const struct iovec *iov, int cnt, uint64_t from, uint64_t to,
                     struct iovec *out)
{
    int n = 0;
    uint64_t pos = 0;
    for (int i = 0; i < cnt && pos < to; i++) {
        uint64_t start = pos, end = pos + iov[i].iov_len;
        pos = end;
        if (end <= from) continue;
        uint64_t a = SL_MAX(start, from), b = SL_MIN(end, to);
        out[n++] = (struct iovec){(char *)iov[i].iov_base + (a - start), (size_t)(b - a)};
    }
    return n;
}

int sl__net_read(struct sl_net *net, struct sl_net_read *rd)
{
    size_t nparts = 1;
    int rc = 0;

    rd->nread = 0;
    memset(&rd->failed, 0, sizeof(rd->failed));
    uint64_t len = 0;
    for (int i = 0; i < rd->iovcnt; i++) len += rd->iov[i].iov_len;
    if (len == 0) return 0;
    if (rd->split && len > rd->split && rd->max_parts > 1)
        nparts = (size_t)SL_MIN((len + rd->split - 1) / rd->split, (uint64_t)rd->max_parts);
    uint64_t chunk = (len + nparts - 1) / nparts;
    struct sl_net_req *reqs = calloc(nparts, sizeof(*reqs));
    struct sl_net_req **ptrs = calloc(nparts, sizeof(*ptrs));
    struct iovec *slices = calloc(nparts * (size_t)rd->iovcnt, sizeof(*slices));
    if (!reqs || !ptrs || !slices) {
        free(reqs);
        free(ptrs);
        free(slices);
        return -ENOMEM;
    }
    for (size_t i = 0; i < nparts; i++) {
        uint64_t from = i * chunk, to = SL_MIN(len, from + chunk);
        struct iovec *mine = slices + i * (size_t)rd->iovcnt;
        reqs[i] = (struct sl_net_req){.method = "GET", .url = rd->url, .headers = rd->headers,
                                      .follow = rd->follow, .range = true,
                                      .range_off = rd->off + from, .range_len = to - from,
                                      .dstv = mine,
                                      .ndstv = iov_slice(rd->iov, rd->iovcnt, from, to, mine)};
        ptrs[i] = &reqs[i];
    }
    rc = sl__net_run(net, ptrs, nparts);
    if (rc < 0) rd->failed = *sl__net_failed(ptrs, nparts);

    bool pinned = rd->version && *rd->version, ended = false;
    size_t done = 0;
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        struct sl_net_req *r = &reqs[i];
        if (r->status == 416) {
            /* The range starts at or past the end: nothing there, or it shrank under us. */
            if (pinned) rc = SL_E_CHANGED;
            ended = true;
        } else if (r->status < 200 || r->status > 299) {
            rc = sl__net_error(r);
        } else if (pinned && rd->matches && !rd->matches(r, rd->version)) {
            rc = SL_E_CHANGED; /* the store ignored the condition and served another version */
        } else if (ended && r->got) {
            rc = SL_E_CHANGED; /* bytes after the end: not one version */
        } else {
            done += (size_t)r->got;
            ended |= r->got < r->range_len;
        }
        if (rc) rd->failed = *r;
    }
    if (rc == 0) rd->nread = done;
    free(reqs);
    free(ptrs);
    free(slices);
    return rc;
}

int sl__net_error(const struct sl_net_req *r)
{
    if (r->p.overflow || r->p.bad_range) return SL_E_BAD_REPLY;
    if (r->curl_rc != CURLE_OK || r->status == 0) return SL_E_UNREACHABLE;
    const char *c = r->err_code;
    switch (r->status) {
    case 404:
        return strcmp(c, "NoSuchBucket") == 0 ? SL_E_NO_BUCKET : -ENOENT;
    case 403:
        if (!*c || strcmp(c, "InvalidAccessKeyId") == 0 ||
            strcmp(c, "SignatureDoesNotMatch") == 0 || strcmp(c, "InvalidToken") == 0 ||
            strcmp(c, "ExpiredToken") == 0 || strcmp(c, "TokenRefreshRequired") == 0)
            return SL_E_S3_AUTH;
        return -EACCES;
    case 401:
        return SL_E_S3_AUTH;
    case 412:
        return SL_E_CHANGED;
    default:
        return SL_E_REMOTE;
    }
}

void sl__net_describe(const struct sl_net_req *r, char *buf, size_t len)
{
    char tries[64] = "";
    if (r->attempts > 1)
        snprintf(tries, sizeof(tries), " (%u attempts in %.1f s)", r->attempts,
                 (double)r->elapsed_ns / 1e9);
    if (r->p.bad_range && r->status == 200) {
        snprintf(buf, len, "HTTP 200 with the whole object to a request for bytes from %llu: the "
                 "server ignores Range requests, which sluice needs to read past the first page",
                 (unsigned long long)(r->range_off + r->p.attempt_got));
    } else if (r->p.bad_range) {
        snprintf(buf, len, "HTTP %ld with bytes other than the range asked for (Content-Range "
                 "starts at %lld, not %llu)", r->status, (long long)r->range_start,
                 (unsigned long long)(r->range_off + r->p.attempt_got));
    } else if (r->p.overflow) {
        snprintf(buf, len, "a reply larger than %u MiB", SL_NET_MAX_BODY >> 20);
    } else if (r->curl_rc != CURLE_OK || r->status == 0) {
        snprintf(buf, len, "%s%s", r->curl_msg[0] ? r->curl_msg : curl_easy_strerror(r->curl_rc),
                 tries);
    } else if (r->err_code[0]) {
        snprintf(buf, len, "HTTP %ld %s%s%s%s", r->status, r->err_code, r->err_msg[0] ? ": " : "",
                 r->err_msg, tries);
    } else {
        snprintf(buf, len, "HTTP %ld%s", r->status, tries);
    }
}

int sl__net_escape(struct sl_buf *b, const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char enc[3];
        if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '_' || *c == '.' || *c == '~' || (keep_slash && *c == '/')) {
            if (sl__buf_append(b, c, 1) < 0) return -ENOMEM;
            continue;
        }
        enc[0] = '%';
        enc[1] = hex[*c >> 4];
        enc[2] = hex[*c & 15];
        if (sl__buf_append(b, enc, 3) < 0) return -ENOMEM;
    }
    return 0;
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                  : c >= 'A' && c <= 'F'          ? c - 'A' + 10
                                                                  : -1;
}

char *sl__net_unescape(const char *s, size_t n, bool plus_is_space)
{
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_digit(s[i + 1])) >= 0 &&
            (lo = hex_digit(s[i + 2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *o++ = plus_is_space && s[i] == '+' ? ' ' : s[i];
        }
    }
    *o = '\0';
    return out;
}

int64_t sl__net_parse_time(const char *s)
{
    struct tm tm = {0};
    int frac_ms = 0;
    char frac[16] = "";
    /* ISO 8601 as S3 listings give it: 2026-11-22T10:00:00.000Z */
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%15[.0-9]", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, frac) >= 6) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        if (frac[0] == '.') {
            char ms[4] = "000";
            for (int i = 0; i < 3 && frac[1 + i]; i++) ms[i] = frac[1 + i];
            frac_ms = atoi(ms);
        }
        time_t t = timegm(&tm);
        return t < 0 || t > MAX_SECONDS ? 0 : (int64_t)t * 1000000000LL + (int64_t)frac_ms * 1000000LL;
    }
    time_t t = curl_getdate(s, NULL); /* RFC 1123 and friends, as HTTP headers give it */
    return t < 0 || t > MAX_SECONDS ? 0 : (int64_t)t * 1000000000LL;
}
