/*
 * net.h - HTTP transfers for the remote stores (S3, HTTP), on libcurl.
 *
 * One `struct sl_net` per store: its connections (shared by all its transfers), its limit on
 * transfers in flight, its retry policy and its signing. A request is described by a
 * `struct sl_net_req`; sl__net_run() performs any number of them at once on one curl multi
 * handle (parallel ranged GETs of one large read, the parts of a multipart upload), each with
 * its own retries, and returns when all are done or one has failed for good.
 */
#ifndef SL_NET_H
#define SL_NET_H

#include <curl/curl.h>
#include <sys/uio.h>

#include "core/core.h"

struct sl_net;

struct sl_net_cfg {
    unsigned concurrency;   /* transfers in flight at once, over every thread */
    int retries;            /* attempts after the first */
    int64_t retry_time_ns;  /* a request with all its retries ends within about this */
    const char *sigv4;      /* libcurl's CURLOPT_AWS_SIGV4, "aws:amz:REGION:s3"; NULL: unsigned */
    const char *access_key; /* with sigv4 */
    const char *secret_key;
    const char *session_token; /* may be NULL */
};

#define SL_NET_DEFAULT_CONCURRENCY 16
#define SL_NET_DEFAULT_RETRIES 5
#define SL_NET_DEFAULT_RETRY_TIME_NS (30LL * 1000000000LL)
/* Error replies and listings are read whole; anything larger is not a reply we asked for. */
#define SL_NET_MAX_BODY (64U << 20)

/* One request. The caller fills the inputs; sl__net_run() fills the results. Strings given
 * are the caller's and must live until the run returns. */
struct sl_net_req {
    /* in */
    const char *method;           /* GET, HEAD, PUT, POST, DELETE */
    const char *url;              /* already percent-encoded */
    const char *const *headers;   /* extra "Name: value" lines, NULL-terminated; may be NULL */
    const void *body;             /* PUT/POST body (may be NULL with body_len 0) */
    size_t body_len;
    bool follow;                  /* follow redirects (final_url tells where it ended) */
    bool range;                   /* GET only [range_off, range_off + range_len) */
    uint64_t range_off, range_len;
    void *dst;                    /* with range: the bytes land here (range_len bytes) */
    const struct iovec *dstv;     /* or in these buffers, in order (their lengths sum to it) */
    int ndstv;
    struct sl_buf *out;           /* without dst(v): the whole body of a 2xx reply */

    /* out */
    long status;                  /* HTTP status of the last attempt; 0: no reply */
    uint64_t got;                 /* bytes written to dst (a retry resumes after them) */
    char etag[SL_VERSION_MAX];
    char last_modified[64];
    char content_type[96];
    char final_url[2048];         /* with follow: the URL that answered */
    int64_t content_length;       /* -1: not given */
    int64_t total_size;           /* the N of "Content-Range: bytes a-b/N"; -1: not given */
    int64_t range_start;          /* its a; -1: not given */
    char err_code[64];            /* the <Code> of an S3 error reply */
    char err_msg[256];            /* its <Message> */
    CURLcode curl_rc;
    char curl_msg[CURL_ERROR_SIZE];
    unsigned attempts;
    uint64_t elapsed_ns;

    /* private to net.c */
    struct {
        int state;
        uint64_t start_ns, not_before_ns;
        uint64_t budget_ns;   /* the retry budget runs from here: the last progress */
        uint64_t attempt_got; /* got when this attempt began */
        size_t body_pos;
        bool truncated;       /* dst filled before the reply ended: stopped on purpose */
        bool overflow;        /* the reply did not fit: not retried */
        bool bad_range;       /* the bytes were not the range asked for: not retried */
        struct sl_buf errbody;
        struct curl_slist *hdrs;
        CURL *easy;
        char payload_hash[65];
    } p;
};

int sl__net_open(const struct sl_net_cfg *cfg, struct sl_net **out);
void sl__net_close(struct sl_net *net); /* accepts NULL */

/* Performs the n requests, up to the store's concurrency at once. Returns 0 when every one got
 * a final reply (any status: 2xx, 404, ... the caller reads req->status), or the code of the
 * first that could not get one (transport failure after its retries, a reply too large);
 * the others are then cancelled. A retryable reply (5xx, 429, SlowDown, RequestTimeout) or a
 * failed connection is tried again with exponential backoff and jitter, within the retry
 * budget; a ranged GET resumes after the bytes it already has. */
int sl__net_run(struct sl_net *net, struct sl_net_req *const *reqs, size_t n);
int sl__net_one(struct sl_net *net, struct sl_net_req *req);

/* A read of [off, off + the buffers' total length) of one version of an object into the
 * buffers, in order: parallel ranged GETs of `split` bytes (at most max_parts at once; the
 * rest wait for a slot). */
struct sl_net_read {
    const char *url;
    const char *const *headers; /* the conditions that pin the version (If-Match...) */
    const char *version;        /* NULL or "": any */
    /* True when the reply r is of `version`; NULL: not checked. */
    bool (*matches)(const struct sl_net_req *r, const char *version);
    bool follow;
    uint64_t off;
    const struct iovec *iov;
    int iovcnt;
    uint64_t split;
    unsigned max_parts;
    /* out */
    size_t nread;               /* short only at the end of the object */
    struct sl_net_req failed;   /* on failure, the reply (or transport failure) behind it */
};

/* 0; SL_E_CHANGED when a reply was of another version (or the object shrank under a pinned
 * version); or the error of rd->failed (sl__net_error), or -ENOMEM. */
int sl__net_read(struct sl_net *net, struct sl_net_read *rd);

/* After a failed run: the request that failed (for its message). */
const struct sl_net_req *sl__net_failed(struct sl_net_req *const *reqs, size_t n);

/* The error a final non-2xx reply (or a transport failure) stands for: -ENOENT (404),
 * SL_E_NO_BUCKET, SL_E_S3_AUTH (403 with a credential code, or a bodyless 403), -EACCES,
 * SL_E_CHANGED (412), SL_E_UNREACHABLE, SL_E_REMOTE. */
int sl__net_error(const struct sl_net_req *req);

/* "HTTP 503 SlowDown: Please reduce your request rate (6 attempts in 3.1 s)" or
 * "Connection refused (6 attempts in 3.1 s)", for error messages. */
void sl__net_describe(const struct sl_net_req *req, char *buf, size_t len);

/* Appends s percent-encoded to b: RFC 3986 unreserved characters stay, and '/' too when
 * keep_slash (an S3 key in a path). */
int sl__net_escape(struct sl_buf *b, const char *s, bool keep_slash);

/* Percent-decodes the n bytes at s (a "%" not followed by two hex digits stays as it is); '+'
 * becomes ' ' when plus_is_space (form encoding, as S3's encoding-type=url uses). NULL on
 * ENOMEM; the caller frees. */
char *sl__net_unescape(const char *s, size_t n, bool plus_is_space);

/* A 2xx reply. */
static inline bool sl__net_ok(const struct sl_net_req *r)
{
    return r->status >= 200 && r->status <= 299;
}

/* "Sat, 22 Nov 2026 10:00:00 GMT" or "2026-11-22T10:00:00.000Z" -> ns since the epoch; 0 when
 * it cannot be read. */
int64_t sl__net_parse_time(const char *s);

/* libcurl's global initialisation, once per process. */
void sl__net_global_init(void);

#endif /* SL_NET_H */
