/*
 * tier.h - the two tiers of the page cache, as cache.c sees them. Private to src/cache.
 */
#ifndef SL_TIER_H
#define SL_TIER_H

#include <sys/uio.h>

#include "cache/evict.h"
#include "core/core.h"

/* ---- RAM tier (mem.c) ---------------------------------------------------------------------- */

/*
 * A page's life in RAM:
 *
 *   (absent) --find misses--> LOADING --data arrives--> READY --evicted/dropped--> (detached)
 *                                 |                        ^                           |
 *                                 +--fetch fails--> FAILED |  hit: refs++              +-- refs
 *                                    (detached at once)    +-- released: refs--            reach 0:
 *                                                                                          freed
 * One loader per key (single flight): whoever inserts the LOADING page fetches it; everyone
 * else who finds it LOADING waits on mem->changed. Pages with refs > 0 are never freed; the
 * policy skips them when it looks for a victim.
 */
enum sl_mpage_state { SL_MP_LOADING, SL_MP_READY, SL_MP_FAILED };

struct sl_mpage {
    uint8_t key[SL_PAGE_KEY_LEN];
    uint64_t hash;
    struct sl_mpage *hnext;        /* hash chain */
    struct sl_mpage *qprev, *qnext; /* policy queue */
    uint8_t queue, freq, state;
    bool in_table; /* findable; false once evicted or dropped (freed when refs reach 0) */
    bool fresh;    /* fetched from the store and not read since: its read is not a hit */
    bool no_keep;  /* not worth keeping in RAM once released (streamed once, or warmed) */
    bool ahead;    /* claimed for a read-ahead: if that fails, a reader fetches it again */
    int err;       /* FAILED: why */
    uint32_t refs;
    uint64_t seq, charge;
    size_t len;
    uint8_t *data; /* immutable once READY */
};

/* Every field, and every field of every sl_mpage except the bytes of data, is guarded by lock. */
struct sl_mem {
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a page left LOADING */
    struct sl_mpage **buckets;
    size_t nbuckets, count;
    struct {
        struct sl_mpage *head, *tail;
        uint64_t bytes, count;
    } q[SL_Q__COUNT];
    uint64_t bytes;    /* charge of READY pages in the table */
    uint64_t loading;  /* buffers of read-ahead runs being fetched: inside the budget too */
    uint64_t capacity; /* cache.memory */
    uint64_t seq;
    struct {
        uint64_t hash, when;
    } *ghost;
    size_t ghost_mask;
    uint64_t ghost_clock;
    struct sl_evict_backend be;

    /* Mapped buffers kept for reuse, each with its mapped length: a buffer the kernel has to
     * fault in and zero again for every page, and unmap (a TLB shootdown on every CPU) when
     * it is freed, costs more than reading the page (see docs/benchmarks.md). A buffer is
     * reused for a page of the same mapped length: whole pages, and the tails of files of one
     * size (a dataset's samples). buf_lock guards them. Lock order: lock, then buf_lock (pages
     * are freed under lock). */
    pthread_mutex_t buf_lock;
    struct sl_spare {
        uint8_t *buf;
        size_t len;
    } *spare;
    size_t nspare, max_spare;
    uint64_t spare_bytes, max_spare_bytes;
    uint32_t page_size;
};

int sl__mem_init(struct sl_mem *mem, uint64_t capacity, uint32_t page_size);
void sl__mem_fini(struct sl_mem *mem);
/* Page buffers start on a block boundary (see sl__disk_insert_run). */
#define SL_BUF_ALIGN 4096

/* A buffer for len bytes of page data (recycled when len is a full page); free it with
 * sl__mem_buf_free() or hand it to sl__mem_set_ready(). Any lock may be held. */
uint8_t *sl__mem_buf_alloc(struct sl_mem *mem, size_t len);
void sl__mem_buf_free(struct sl_mem *mem, uint8_t *buf, size_t len);
/* The rest are called with mem->lock held. */
struct sl_mpage *sl__mem_find(struct sl_mem *mem, const uint8_t key[SL_PAGE_KEY_LEN], uint64_t hash);
/* Takes len bytes of the budget for a read-ahead's buffers, evicting READY pages to make room
 * (lock held); false if they cannot all fit: read-ahead is what gives way, a reader's own
 * fetch never does. Given back with sl__mem_loading_done(). */
bool sl__mem_loading_take(struct sl_mem *mem, uint64_t len);
/* True when len more bytes fit in the budget without evicting anything. */
bool sl__mem_has_room(const struct sl_mem *mem, uint64_t len);
void sl__mem_loading_done(struct sl_mem *mem, uint64_t len);

struct sl_mpage *sl__mem_insert_loading(struct sl_mem *mem, const uint8_t key[SL_PAGE_KEY_LEN],
                                        uint64_t hash);
void sl__mem_set_ready(struct sl_mem *mem, struct sl_mpage *mp, uint8_t *data, size_t len,
                       enum sl_policy pol);
void sl__mem_set_failed(struct sl_mem *mem, struct sl_mpage *mp, int err);
void sl__mem_hit(struct sl_mem *mem, struct sl_mpage *mp);
void sl__mem_unref(struct sl_mem *mem, struct sl_mpage *mp);
/* Detaches every page whose key starts with prefix. */
void sl__mem_drop_prefix(struct sl_mem *mem, const uint8_t *prefix, size_t len);

/* ---- disk tier (disk.c) ---------------------------------------------------------------------- */

struct sl_disk;

/* Opens (creating) the disk tier in dir with a hard limit of capacity bytes, recovering what
 * killed processes left behind. */
int sl__disk_open(const char *dir, uint64_t capacity, struct sl_counters *ctr, struct sl_disk **out);
void sl__disk_close(struct sl_disk *d);
struct sl_db *sl__disk_db(struct sl_disk *d);

/* Reads a cached page: 0, -ENOENT (not cached), or SL_E_CHECKSUM (it was damaged: counted,
 * dropped, and the caller fetches it again). */
int sl__disk_read(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], void *buf, size_t len);
bool sl__disk_contains(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN]);

/* Holds a cached page of len bytes for reading by descriptor: *fd is its page file, open and
 * share-locked so that no process punches the page out until the caller closes it; the page
 * is at *off in it. 0; -ENOENT: not cached; -EAGAIN: cached but not yet checked by this
 * process (read it whole with sl__disk_read, which checks it). */
int sl__disk_hold(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], size_t len, int *fd,
                  uint64_t *off);

/* Caches a run of pages (at most SL_DISK_RUN_MAX; a single page is a run of one), with one
 * index commit to reserve their space and one to index them. Best effort: 0 when skipped
 * (already cached, being written by another process, larger than the tier). SL_E_CACHE_FULL:
 * nothing can be evicted (the tier is full of pinned pages); a tier too full for the whole run
 * keeps the pages that fit. Other errors: the disk refused the write. Buffers aligned to
 * SL_BUF_ALIGN are written around the kernel's page cache (O_DIRECT) where the file system
 * allows it. */
#define SL_DISK_RUN_MAX 64
int sl__disk_insert_run(struct sl_disk *d, const uint8_t (*keys)[SL_PAGE_KEY_LEN],
                        enum sl_policy pol, const struct iovec *pages, size_t n);

/* Adds counter deltas and applies batched hits, in one transaction. */
int sl__disk_apply(struct sl_disk *d, const uint64_t deltas[SL_CTR__COUNT],
                   const uint8_t (*hits)[SL_PAGE_KEY_LEN], size_t nhits);

/* Frees the pages of file keep[0..16) whose version is not keep[16..24); returns how many
 * versions it freed. */
int sl__disk_free_other_versions(struct sl_disk *d, const uint8_t keep[24]);
int sl__disk_free_prefix(struct sl_disk *d, const uint8_t *prefix, size_t len, uint64_t *freed);
int sl__disk_sum_prefix(struct sl_disk *d, const uint8_t *prefix, size_t len, uint64_t *bytes);
int sl__disk_stats(struct sl_disk *d, sl_cache_stats_t *out);
int sl__disk_reset_counters(struct sl_disk *d);
void sl__disk_sync(struct sl_disk *d);

/* The path of page file number `file`. */
char *sl__disk_file_path(struct sl_disk *d, uint64_t file);
/* Where a cached page's bytes are: its page file and the offset in it. */
int sl__disk_page_file(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], char **path,
                       uint64_t *off);

#endif /* SL_TIER_H */
