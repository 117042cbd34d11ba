/*
 * core.h - what every other module of libsluice stands on: errors with context, logging,
 * small utilities, the config, a thread pool, the LMDB environment and the shared counters.
 * Nothing here knows about stores, pages or front ends.
 */
#ifndef SL_CORE_H
#define SL_CORE_H

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

#define SL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SL_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- errors (err.c) ---- */

/* Records "CONTEXT: MESSAGE" style detail for err on this thread and returns err, so that a
 * failure site can write `return sl__err(-ENOENT, "%s: no such file", path);`. */
int sl__err(int err, const char *fmt, ...) SL_PRINTF(2, 3);

/* Records detail "CONTEXT: sl_strerror(err)" and returns err, unless a more precise detail for
 * err was already recorded deeper down (the innermost context wins: it knows the most). */
int sl__err_ctx(int err, const char *context);

/* Forgets any detail; public entry points call it first. */
void sl__err_clear(void);

/* ---- logging (log.c) ---- */

void sl__log(enum sl_log_level level, const char *fmt, ...) SL_PRINTF(2, 3);
bool sl__log_enabled(enum sl_log_level level);
#define sl__warn(...) sl__log(SL_LOG_WARN, __VA_ARGS__)
#define sl__info(...) sl__log(SL_LOG_INFO, __VA_ARGS__)
#define sl__debug(...)                                                                        \
    do {                                                                                      \
        if (sl__log_enabled(SL_LOG_DEBUG)) sl__log(SL_LOG_DEBUG, __VA_ARGS__);                 \
    } while (0)

/* ---- utilities (util.c) ---- */

uint64_t sl__now_ns(void);      /* CLOCK_REALTIME */
uint64_t sl__mono_ns(void);     /* CLOCK_MONOTONIC */
char *sl__strdup(const char *s); /* NULL on NULL or ENOMEM */
char *sl__asprintf(const char *fmt, ...) SL_PRINTF(1, 2); /* NULL on ENOMEM */
void sl__hex(const void *data, size_t len, char *out);     /* out: 2*len+1 chars */
/* XXH3-128 of a string, in canonical (big-endian) byte order: the 16-byte identity of an object
 * id, the prefix of its page keys and its metadata key. */
void sl__hash128(const char *s, uint8_t out[16]);

/* Lexical normalisation of a '/'-separated path: drops "", ".", resolves "..", and returns it
 * without a leading '/' ("" for the root). A '..' above the start fails with
 * SL_E_PATH_ESCAPE. *out is the caller's. */
int sl__path_normalize(const char *in, char **out);

/* mkdir -p; 0 when it exists as a directory. */
int sl__mkdirs(const char *path, unsigned mode);

/* Reads all len bytes at off of fd: 0, -errno, or -EIO when the file ends first. */
int sl__pread_all(int fd, void *buf, size_t len, uint64_t off);

/* A growable byte string, always NUL terminated. */
struct sl_buf {
    char *data;
    size_t len, cap;
};
int sl__buf_append(struct sl_buf *b, const void *data, size_t len);
int sl__buf_printf(struct sl_buf *b, const char *fmt, ...) SL_PRINTF(2, 3);
void sl__buf_free(struct sl_buf *b);

/* ---- config (config.c) ---- */

enum sl_policy { SL_POLICY_DEFAULT = 0, SL_POLICY_LRU, SL_POLICY_S3FIFO, SL_POLICY_EPOCH };
const char *sl__policy_name(enum sl_policy p);

/* S3 bucket addressing: AUTO is virtual-hosted on AWS, path-style on a custom endpoint. */
enum sl_addressing { SL_ADDR_AUTO = 0, SL_ADDR_PATH, SL_ADDR_VIRTUAL };

#define SL_TTL_DEFAULT INT64_MIN /* metadata_ttl not given: the store's default */
#define SL_TTL_FOREVER (-1)      /* metadata_ttl: -1, an immutable dataset */

struct sl_mount_cfg {
    char *path;       /* namespace path, normalised: "/imagenet" */
    char *uri;        /* "file:///srv/datasets", "s3://bucket/prefix" */
    char *endpoint;   /* S3 endpoint; NULL: AWS */
    char *region;     /* S3 region; NULL: from the environment, else us-east-1 */
    char *access_key; /* per-mount credentials; NULL: the AWS chain */
    char *secret_key;
    enum sl_policy policy;
    int64_t metadata_ttl_ns; /* SL_TTL_DEFAULT, SL_TTL_FOREVER, or >= 0 */
    /* Remote stores (S3, HTTP); 0 or negative: the store's default. */
    unsigned concurrency;  /* requests in flight to the store at once */
    uint64_t part_size;    /* multipart upload part, and the split of a large ranged read */
    int retries;           /* attempts after the first; -1: default */
    int64_t retry_time_ns; /* total time a request may take with its retries; 0: default */
    enum sl_addressing addressing;
    unsigned line, column; /* where it was declared, for later errors */
};

struct sl_config {
    char *file;         /* the file it came from, NULL on defaults */
    char *cache_dir;
    uint64_t cache_size;   /* disk tier hard limit */
    uint64_t cache_memory; /* RAM tier and read-ahead budget */
    uint32_t page_size;
    struct sl_mount_cfg *mounts;
    size_t nmounts;
};

#define SL_DEFAULT_CACHE_SIZE (10ULL << 30)
#define SL_DEFAULT_CACHE_MEMORY (1ULL << 30)
#define SL_DEFAULT_PAGE_SIZE (1U << 20)
#define SL_MIN_PAGE_SIZE (4U << 10)
#define SL_MAX_PAGE_SIZE (64U << 20)

/* Parses YAML text; name is used in error messages ("FILE:LINE:COL: ..."). *out is the
 * caller's; free with sl__config_free(). */
int sl__config_parse(const char *name, const char *text, size_t len, struct sl_config **out);

/* Finds and loads the config as SPEC section 4 says (path wins when not NULL); with none found,
 * the defaults. */
int sl__config_load(const char *path, struct sl_config **out);
int sl__config_defaults(struct sl_config **out);
void sl__config_free(struct sl_config *cfg);

/* ---- thread pool (pool.c) ---- */

/* A fixed set of worker threads taking tasks from one FIFO. Tasks are grouped so that a caller
 * can wait for its own tasks without waiting for anyone else's. */
struct sl_pool;
struct sl_task_group {
    pthread_mutex_t lock;
    pthread_cond_t done;
    size_t pending; /* guarded by lock */
    int first_err;  /* guarded by lock: the first non-zero task result */
};
typedef int (*sl_task_fn)(void *arg);

int sl__pool_create(unsigned nthreads, struct sl_pool **out);
void sl__pool_destroy(struct sl_pool *pool); /* waits for queued tasks; accepts NULL */
void sl__group_init(struct sl_task_group *g);
void sl__group_destroy(struct sl_task_group *g);
/* Queues fn(arg) in group g (g may be NULL: fire and forget). */
int sl__pool_submit(struct sl_pool *pool, struct sl_task_group *g, sl_task_fn fn, void *arg);
/* Waits until g has no pending task; returns its first error. */
int sl__group_wait(struct sl_task_group *g);
/* Waits until g has at most max pending tasks. */
void sl__group_wait_below(struct sl_task_group *g, size_t max);

/* ---- the LMDB environment of a cache directory (db.c) ---- */

/* One LMDB environment per cache directory, shared by every process that uses it. LMDB's own
 * locking serialises writers across processes and lets readers run without locks. */
enum sl_dbi {
    SL_DB_STATE,   /* "name" -> u64: counters and the disk tier's totals */
    SL_DB_PAGES,   /* page key -> struct sl_page_rec */
    SL_DB_QUEUE,   /* (queue, seq) -> page key: eviction order */
    SL_DB_GHOST,   /* u64 hash -> seq: S3-FIFO's ghost entries */
    SL_DB_RESERVE, /* page key -> struct sl_reservation: disk space promised to a writer */
    SL_DB_META,    /* object id -> metadata cache record */
    SL_DB_DIRENT,  /* dir id + name -> listing snapshot entry */
    SL_DB_FILES,   /* u64 page file number -> u64 pages of it still indexed */
    SL_DB__COUNT
};

struct sl_db {
    MDB_env *env;
    MDB_dbi dbi[SL_DB__COUNT];
};

int sl__db_open(const char *dir, struct sl_db **out);
void sl__db_close(struct sl_db *db);
int sl__db_begin(struct sl_db *db, bool write, MDB_txn **txn);
int sl__db_commit(MDB_txn *txn);
int sl__mdb_err(int mdb_rc); /* LMDB code -> negative errno or SL_E_CORRUPT */

uint64_t sl__db_get_u64(struct sl_db *db, MDB_txn *txn, const char *name);
int sl__db_put_u64(struct sl_db *db, MDB_txn *txn, const char *name, uint64_t v);
int sl__db_add_u64(struct sl_db *db, MDB_txn *txn, const char *name, int64_t delta);

/* ---- counters (counters.c) ---- */

/* The cache's event counters, named as `cache stats --json` prints them. Each process counts
 * into atomics and the cache flushes the deltas into SL_DB_STATE a few times a second. */
#define SL_COUNTERS(X)                                                                        \
    X(HITS, "hits")                                                                           \
    X(MISSES, "misses")                                                                       \
    X(UFS_BYTES_READ, "ufs_bytes_read")                                                       \
    X(UFS_REQUESTS, "ufs_requests")                                                           \
    X(EVICTIONS, "evictions")                                                                 \
    X(CHECKSUM_FAILURES, "checksum_failures")

enum sl_counter {
#define SL__CTR_ENUM(id, name) SL_CTR_##id,
    SL_COUNTERS(SL__CTR_ENUM)
#undef SL__CTR_ENUM
    SL_CTR__COUNT
};

struct sl_counters {
    _Atomic uint64_t v[SL_CTR__COUNT];
};

extern const char *const sl__counter_names[SL_CTR__COUNT];

static inline void sl__count(struct sl_counters *c, enum sl_counter id, uint64_t n)
{
    if (c) atomic_fetch_add_explicit(&c->v[id], n, memory_order_relaxed);
}

/* Takes the counts accumulated so far, leaving zeros. */
void sl__counters_take(struct sl_counters *c, uint64_t out[SL_CTR__COUNT]);
/* Puts taken counts back (a flush that failed). */
void sl__counters_give_back(struct sl_counters *c, const uint64_t in[SL_CTR__COUNT]);

#endif /* SL_CORE_H */
