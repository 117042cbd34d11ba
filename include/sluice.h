/*
 * sluice.h - the public API of libsluice.
 *
 * sluice is a data orchestration layer for machine-learning pipelines: one namespace over many
 * stores (local directories, S3-compatible object stores, HTTP servers), a page cache in RAM and on local disk in
 * between, and the tools around them. A function not declared here is private.
 *
 * Conventions (the same everywhere):
 * - Functions return int: 0 on success, a negative errno (-ENOENT) or a sluice code (SL_E_*).
 *   sl_strerror() names any of them; sl_errmsg() gives the detailed message of the last failure
 *   on the calling thread (with the path, URI or config position it concerns).
 * - Objects come back through out-parameters; destructors accept NULL.
 * - Paths are namespace paths ("/imagenet/train/0001.jpg", resolved through the mount table)
 *   or direct URIs ("file:///abs/path", "s3://bucket/key", "https://host/path").
 * - Thread safety: one sl_t may be used from many threads at once. An sl_file_t may be read by
 *   several threads at once; an sl_writer_t belongs to one thread at a time.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_EXPORT __attribute__((visibility("default")))

#define SL_VERSION_STRING "0.1.0"

/* ---- errors -------------------------------------------------------------------------------- */

/* sluice's own error codes, below every errno. X(NAME, value, message). */
#define SL_ERRORS(X)                                                                  \
    X(CONFIG, -1001, "invalid configuration")                                         \
    X(USAGE, -1002, "invalid argument")                                               \
    X(PATH_ESCAPE, -1003, "path escapes its mount with '..'")                         \
    X(NO_MOUNT, -1004, "no mount holds this path")                                    \
    X(BAD_URI, -1005, "malformed URI")                                                \
    X(SCHEME, -1006, "no under-store for this URI scheme")                            \
    X(CHANGED, -1007, "object changed in the store while it was read")                \
    X(CHECKSUM, -1008, "cached page failed its checksum")                             \
    X(CACHE_FULL, -1009, "cache is full of pages that cannot be evicted")             \
    X(CORRUPT, -1010, "cache index is damaged")                                       \
    X(NOT_FILE, -1011, "not a regular file")                                          \
    X(FORMAT, -1012, "cache directory made by an incompatible version of sluice")     \
    X(NO_CACHE, -1013, "no disk cache (the cache directory cannot be used)")               \
    X(S3_AUTH, -1014, "the store refused the credentials")                            \
    X(NO_BUCKET, -1015, "no such bucket")                                             \
    X(UNREACHABLE, -1016, "the store cannot be reached")                              \
    X(REMOTE, -1017, "the store answered with an error")                              \
    X(BAD_REPLY, -1018, "the store sent a reply sluice cannot read")

enum {
#define SL__E_ENUM(name, value, msg) SL_E_##name = (value),
    SL_ERRORS(SL__E_ENUM)
#undef SL__E_ENUM
};

/* A static string naming err (negative errno or SL_E_*). Never NULL. */
SL_EXPORT const char *sl_strerror(int err);

/* The detailed message of the last failure on this thread, e.g.
 * "/etc/sluice.yaml:3:9: expected a size such as 20GiB, got 'lots'". Falls back to
 * sl_strerror(err) when no detail was recorded for err. Valid until the next sluice call on this
 * thread. */
SL_EXPORT const char *sl_errmsg(int err);

/* ---- logging ------------------------------------------------------------------------------- */

enum sl_log_level { SL_LOG_ERROR = 0, SL_LOG_WARN = 1, SL_LOG_INFO = 2, SL_LOG_DEBUG = 3 };

/* Messages at or below level go to stderr as "sluice: warning: ...". Default: SL_LOG_WARN. */
SL_EXPORT void sl_log_set_level(enum sl_log_level level);

/* ---- an instance ----------------------------------------------------------------------------- */

typedef struct sl sl_t;

typedef struct sl_options {
    /* Config file; NULL searches $SLUICE_CONFIG, ./sluice.yaml, $XDG_CONFIG_HOME/sluice/sluice.yaml
     * (~/.config when unset), then runs on defaults. */
    const char *config_path;
    /* Overrides cache.dir of the config when not NULL. */
    const char *cache_dir;
} sl_options_t;

/* Loads the config and opens the cache. A cache directory that cannot be used is not an error:
 * sluice warns and reads through from the stores. The caller owns *out; close with sl_close(). */
SL_EXPORT int sl_open(const sl_options_t *opts, sl_t **out);

/* Flushes the cache's counters and releases everything. Accepts NULL. */
SL_EXPORT void sl_close(sl_t *sl);

/* The config file in use, or NULL when running on defaults. Owned by sl. */
SL_EXPORT const char *sl_config_path(const sl_t *sl);

/* The URI of what path names, e.g. "/imagenet/x.jpg" -> "s3://bucket/imagenet/x.jpg"; NULL for
 * a directory of the namespace itself (above the mounts). SL_E_NO_MOUNT when no mount holds the
 * path. Touches no store. The caller frees *uri. */
SL_EXPORT int sl_resolve(sl_t *sl, const char *path, char **uri);

/* ---- metadata -------------------------------------------------------------------------------- */

typedef enum sl_type { SL_TYPE_FILE = 1, SL_TYPE_DIR = 2 } sl_type_t;

#define SL_VERSION_MAX 128

typedef struct sl_stat {
    sl_type_t type;
    uint64_t size;                /* bytes (0 for directories) */
    int64_t mtime_ns;             /* modification time, ns since the epoch; 0 when unknown */
    uint32_t mode;                /* permission bits as the store reports them, or 0 */
    char version[SL_VERSION_MAX]; /* the object's version in its store (ETag, mtime+size...) */
} sl_stat_t;

/* Metadata of one entry, through the metadata cache (the mount's metadata_ttl). */
SL_EXPORT int sl_stat(sl_t *sl, const char *path, sl_stat_t *st);

/* How long metadata of path may be reused: the metadata_ttl of the mount holding it, in ns, or
 * -1 for an immutable dataset and for the namespace's own directories (they change only with
 * the config). Front ends set their own caching from it (the FUSE mount's kernel timeouts). */
SL_EXPORT int sl_metadata_ttl(sl_t *sl, const char *path, int64_t *ttl_ns);

/* True when every configured mount is an immutable dataset (metadata_ttl: -1): nothing the
 * namespace shows changes while sl is open. The FUSE mount skips the kernel's opens then. */
SL_EXPORT bool sl_immutable(sl_t *sl);

/* Bytes of path's current version held in the disk cache. */
SL_EXPORT int sl_cached_bytes(sl_t *sl, const char *path, const sl_stat_t *st, uint64_t *bytes);

typedef struct sl_dirent {
    const char *name; /* one path component; valid during the callback only */
    sl_stat_t st;
} sl_dirent_t;

/* Called once per entry, in the store's order; return non-zero to stop the listing early
 * (sl_list then returns that value). */
typedef int (*sl_list_cb)(void *arg, const sl_dirent_t *ent);

/* Lists the directory at path (the namespace root lists the mounts). Entries stream from the
 * store page by page; nothing holds the whole listing in memory. */
SL_EXPORT int sl_list(sl_t *sl, const char *path, sl_list_cb cb, void *arg);

/* Called once per directory of a walk, in depth-first order, with the directory's entries
 * sorted by name (dir is its path, as the walk's path is spelled; ents are valid during the
 * call only). A directory that could not be listed comes with err < 0 (sl_errmsg(err) says
 * why) and no entries. Return non-zero to stop the walk (sl_walk then returns that value), 0
 * to go on: `ls -R` reports and goes on, `cp -r` stops. */
typedef int (*sl_walk_cb)(void *arg, const char *dir, int err, const sl_dirent_t *ents,
                          size_t n);

/* Lists the directory tree at path. Directories are listed in parallel (many listing requests
 * in flight, which is what makes a remote tree fast to walk), but reported one at a time, in
 * order, from the calling thread, each as soon as it and those before it are listed. Fails
 * with -ENOTDIR when path is a file, or with what the callback returned. */
SL_EXPORT int sl_walk(sl_t *sl, const char *path, sl_walk_cb cb, void *arg);

/* ---- reading --------------------------------------------------------------------------------- */

typedef struct sl_file sl_file_t;

/* Opens a file for reading through the cache. The object's version is pinned at open: every
 * byte read from this handle comes from that version, or the read fails with SL_E_CHANGED.
 * The caller owns *out; close with sl_file_close(). */
SL_EXPORT int sl_file_open(sl_t *sl, const char *path, sl_file_t **out);

/* Reads up to len bytes at off into buf; *nread < len only at the end of the file. */
SL_EXPORT int sl_file_pread(sl_file_t *f, void *buf, size_t len, uint64_t off, size_t *nread);

/* Bytes of a file as the cache holds them, without a copy: in RAM (data), or where a page on
 * the cache disk holds them (data NULL: len bytes at fd_off in fd, a descriptor to read with
 * pread or hand to the kernel, which can splice from it). Either stays valid, and unchanged,
 * until sl_unmap() gives the pages back (a front end hands them straight to the kernel).
 * Extents outlive the handle they came from: the file may be closed first. */
typedef struct sl_extent {
    const void *data;
    size_t len;
    int fd;          /* -1 when data is set */
    uint64_t fd_off;
    void *page;      /* the cache's hold on the page */
} sl_extent_t;

/* What sl_file_pread() reads, as extents (one per cached page, at most max): *n extents
 * holding *nread bytes, fewer than len only at the end of the file or when max extents did not
 * cover it (then read on from off + *nread). Give them back with sl_unmap(). */
SL_EXPORT int sl_file_map(sl_file_t *f, uint64_t off, size_t len, sl_extent_t *ext, int max,
                          int *n, size_t *nread);
SL_EXPORT void sl_unmap(sl_t *sl, sl_extent_t *ext, int n);

enum sl_advice {
    SL_ADVISE_NORMAL = 0,     /* detect the pattern: read ahead while reads are sequential */
    SL_ADVISE_SEQUENTIAL = 1, /* [off, off+len) will be read in order, and nothing beyond */
    SL_ADVISE_RANDOM = 2,     /* never read ahead: only the pages asked for */
};

/* Tells sluice how f will be read (like posix_fadvise): a reader that knows its range keeps
 * read-ahead inside it. len UINT64_MAX: to the end of the file. */
SL_EXPORT int sl_file_advise(sl_file_t *f, uint64_t off, uint64_t len, enum sl_advice advice);

/* The metadata pinned at open. Owned by f. */
SL_EXPORT const sl_stat_t *sl_file_stat(const sl_file_t *f);

/* Accepts NULL. */
SL_EXPORT void sl_file_close(sl_file_t *f);

/* ---- writing --------------------------------------------------------------------------------- */

typedef struct sl_writer sl_writer_t;

/* Starts writing a new version of the object at path. Nothing is visible in the store until
 * sl_writer_commit() returns 0; from then on the data is durable. The caller owns *out: it must
 * end with exactly one of sl_writer_commit() or sl_writer_abort(). */
SL_EXPORT int sl_writer_open(sl_t *sl, const char *path, sl_writer_t **out);
SL_EXPORT int sl_writer_write(sl_writer_t *w, const void *buf, size_t len);

/* Makes the object durable and visible, then frees w, whatever the outcome. */
SL_EXPORT int sl_writer_commit(sl_writer_t *w);

/* Discards everything written and frees w. Accepts NULL. */
SL_EXPORT void sl_writer_abort(sl_writer_t *w);

/* Creates a directory (and its parents) where the store has directories; in an object store,
 * a zero-byte marker object "path/" that makes an empty directory visible. */
SL_EXPORT int sl_mkdir(sl_t *sl, const char *path);

/* Removes the file at path, or the directory (which must be empty where the store has real
 * directories; in an object store its marker goes, and it lasts while keys are below it).
 * Drops its cached pages. */
SL_EXPORT int sl_remove(sl_t *sl, const char *path);

/* Renames from to to within one mount. -EXDEV across mounts, and where the store cannot rename
 * (directories of an object store): copy, then remove, as mv(1) does. */
SL_EXPORT int sl_rename(sl_t *sl, const char *from, const char *to);

/* ---- the cache ------------------------------------------------------------------------------- */

typedef struct sl_load_item {
    const char *path;
    uint64_t offset; /* first byte to warm */
    uint64_t length; /* UINT64_MAX: to the end of the file */
} sl_load_item_t;

/* Progress of sl_load(): bytes warmed so far out of the total, and items done. Called from the
 * loading thread, at most about ten times a second and once at the end. */
typedef void (*sl_progress_cb)(void *arg, uint64_t done_bytes, uint64_t total_bytes,
                               size_t done_items, size_t total_items);

/* Warms the disk cache with the given ranges, in the given order, many pages in flight at once.
 * On failure *failed (if not NULL) is the index of the item that failed. */
SL_EXPORT int sl_load(sl_t *sl, const sl_load_item_t *items, size_t n, sl_progress_cb cb,
                      void *arg, size_t *failed);

/* ---- exact-order prefetch ---- */

typedef struct sl_order sl_order_t;

typedef struct sl_order_options {
    uint64_t budget_bytes; /* bytes the items fetched ahead may hold; 0: half of cache.memory */
    unsigned max_inflight; /* fetches in flight at most; 0: 64 (at most 256) */
} sl_order_options_t;

/* Starts fetching items (in the sense of sl_load) in exactly the order given, a bounded window
 * ahead of the reader, and returns at once. The reader is whoever opens the items' files
 * through sl (sl_file_open, a mount served by sl): opening item i's file moves the window past
 * it, closing it lets its pages go. Pages fetched ahead are held in RAM until then, within the
 * budget, so nothing about to be read is evicted for what is read later; they also go to the
 * cache disk where there is room. Fetches in flight follow Little's law: the time a fetch takes
 * times the rate the reader consumes items. Every path is resolved at once: one that no mount
 * holds fails here, naming it; a file missing from its store is left to its reader. The caller
 * owns *out and ends it with sl_order_stop(). items are copied. */
SL_EXPORT int sl_order_start(sl_t *sl, const sl_load_item_t *items, size_t n,
                             const sl_order_options_t *opts, sl_order_t **out);

/* Appends items to a running order: a job hands over its next epoch's order while the current
 * epoch runs, and the window goes on into it, so that the store's link works through the
 * current epoch's end and the pause between epochs. The same file may be given again (each
 * epoch reads every sample): an open of it takes its first occurrence not yet opened. What the
 * reader has passed is forgotten as the order grows. Paths are resolved as in
 * sl_order_start(); on an error nothing is appended. items are copied. */
SL_EXPORT int sl_order_append(sl_order_t *o, const sl_load_item_t *items, size_t n);

/* For a reader that does not open the items through sl: it has reached item i (counted from
 * the order's first item, across appends). */
SL_EXPORT int sl_order_reached(sl_order_t *o, size_t i);

typedef struct sl_order_stats {
    size_t items;             /* given, appended ones included */
    size_t position;          /* items the reader has passed (of those given) */
    size_t fetched;           /* items brought ahead of the reader (into RAM, or held on disk) */
    size_t skipped;           /* items the reader reached before they were fetched */
    size_t failed;            /* items that could not be fetched (left to the reader) */
    uint64_t bytes;           /* bytes fetched ahead (from the store or the cache disk) */
    uint64_t held_bytes;      /* bytes held for the reader now, in RAM or on disk (the budget bounds those
                                 of items it has not reached; an item is let go when it is read:
                                 its file closed) */
    unsigned inflight;        /* fetches in flight now */
    unsigned target_inflight; /* what Little's law asks for now */
    double fetch_s;           /* time an item's fetch takes (moving average), seconds */
    double rate;              /* items the reader consumes per second (moving average) */
    int done;                 /* every item fetched or skipped */
    size_t on_disk;           /* of the fetched, items held where they were on the cache disk
                                 (its page files kept open and read ahead by the kernel)
                                 rather than read into RAM */
    size_t waits;             /* items the reader reached before their fetch had ended */
    unsigned floor_inflight;  /* the floor those waits put under the in-flight target */
} sl_order_stats_t;

SL_EXPORT int sl_order_stats(sl_order_t *o, sl_order_stats_t *out);

/* Stops fetching (fetches in flight finish first) and lets go of what is held. Accepts NULL. */
SL_EXPORT void sl_order_stop(sl_order_t *o);

/* An order as text (what `sluice load --order` and a mount's .sluice/order take): one PATH per
 * line, or PATH<TAB>OFFSET<TAB>LENGTH for a byte range (sizes as sl_parse_size() reads them);
 * empty lines and lines starting with '#' are skipped. A path under prefix (where the
 * namespace is mounted, or NULL) loses it: "/mnt/sl/imagenet/x.jpg" is "/imagenet/x.jpg". A bad
 * line fails with SL_E_USAGE, and sl_errmsg() names it ("line 3: ..."). The caller frees
 * *items with sl_order_items_free(). */
SL_EXPORT int sl_order_parse(const char *text, size_t len, const char *prefix,
                             sl_load_item_t **items, size_t *n);
SL_EXPORT void sl_order_items_free(sl_load_item_t *items, size_t n);

/* ---- keeping ---- */

typedef struct sl_keep sl_keep_t;

/* Loads path (a file, or every file under a folder) onto the cache disk and keeps it there
 * until sl_keep_release(): eviction, in this process or any other using the cache, passes
 * over its pages, whatever the policy (what a pipeline's stage made for a stage still to
 * come). Pages that find no room on the cache disk are not kept: *kept_bytes (if not NULL)
 * gets how many bytes are, *total_bytes (if not NULL) the path's size. Each page file kept is
 * an open descriptor: the keeps of a process use half its limit on them at most, and what
 * comes past that is not kept either. cancel (may be NULL) is asked between chunks of 64 MiB
 * and files; when it returns true, sl_keep lets go of what it kept and fails with
 * -ECANCELED. Fails on a path that is not there, or a store that cannot be read. */
SL_EXPORT int sl_keep(sl_t *sl, const char *path, bool (*cancel)(void *arg), void *arg,
                      sl_keep_t **out, uint64_t *kept_bytes, uint64_t *total_bytes);

/* Lets the kept pages go (they are evictable again as any others). Accepts NULL. */
SL_EXPORT void sl_keep_release(sl_keep_t *k);

/* Drops every cached page of path (all versions); *freed_bytes gets what was released. */
SL_EXPORT int sl_free(sl_t *sl, const char *path, uint64_t *freed_bytes);

typedef struct sl_cache_stats {
    uint64_t hits;              /* pages served from the cache (RAM or disk) */
    uint64_t misses;            /* pages fetched from a store */
    uint64_t ufs_bytes_read;    /* bytes read from stores */
    uint64_t ufs_requests;      /* requests made to stores (stat, list, read) */
    uint64_t bytes_cached;      /* disk blocks held by cached pages now */
    uint64_t pages_cached;      /* pages on disk now */
    uint64_t capacity_bytes;    /* the disk tier's hard limit (cache.size) */
    uint64_t evictions;         /* pages evicted from the disk tier */
    uint64_t checksum_failures; /* cached pages found damaged, dropped and fetched again */
} sl_cache_stats_t;

/* The cache's figures, counted over every process that used this cache directory since it was
 * created or last reset; includes this process's unflushed counts. */
SL_EXPORT int sl_cache_stats(sl_t *sl, sl_cache_stats_t *out);

/* Sets the counters (hits, misses, ufs_*, evictions, checksum_failures) back to zero. */
SL_EXPORT int sl_cache_stats_reset(sl_t *sl);

/* The cache directory in use, or NULL when the disk tier is off. Owned by sl. */
SL_EXPORT const char *sl_cache_dir(const sl_t *sl);

/* ---- sizes and durations ----------------------------------------------------------------------- */

/* "20GiB", "1.5 MB", "4096" -> bytes. B/KiB/MiB/GiB/TiB/PiB and KB/MB/GB/TB/PB. */
SL_EXPORT int sl_parse_size(const char *s, uint64_t *bytes);

/* "10m", "1h30m", "250ms", "0", "-1" (forever) -> nanoseconds (-1 for forever). */
SL_EXPORT int sl_parse_duration(const char *s, int64_t *ns);

/* Formats bytes for humans ("1.5 GiB") into buf. Returns buf. */
SL_EXPORT char *sl_format_size(uint64_t bytes, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_H */
