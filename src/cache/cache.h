/*
 * cache.h - the page cache as the read path sees it: pages of objects, by index, in RAM or on
 * disk or fetched from the store once, whoever asks at the same time.
 */
#ifndef SL_CACHE_H
#define SL_CACHE_H

#include "cache/evict.h"
#include "core/core.h"
#include "ufs/ufs.h"

/* An object as the cache serves it: where to fetch its pages, and which version. The io layer
 * builds it when a file is opened and keeps it alive while any of its pages are being read. */
struct sl_object {
    struct sl_ufs *ufs;
    const char *rel;     /* path in the store */
    const char *version; /* the pinned version: pages of any other version never match */
    uint64_t size;
    enum sl_policy policy;
    uint8_t file_id[16]; /* hash of the object id: the prefix of all its page keys */
    uint64_t version_id; /* hash of version and page size */
};

/* Fills o->file_id and o->version_id. */
void sl__object_ids(struct sl_object *o, const char *object_id, uint32_t page_size);

struct sl_cache;

/* A page held by a reader: data stays valid and unchanged until sl__cache_release(). A page
 * got with SL_GET_FD may come as a descriptor instead (data NULL): its bytes are at fd_off in
 * fd, which nobody changes until the release closes it. */
struct sl_page_ref {
    void *page;
    const uint8_t *data;
    size_t len;
    int fd; /* -1 unless data is NULL */
    uint64_t fd_off;
};

enum sl_get_flags {
    SL_GET_PREFETCH = 1, /* a read-ahead or warm-up, not a reader's access: counts no hit */
    SL_GET_NO_RAM = 2,   /* do not keep the page in RAM once released (streamed, or warming disk) */
    SL_GET_FD = 4,       /* a page on disk and not in RAM may come as its page file's
                            descriptor, when RAM is full */
    SL_GET_HOLD = 8,     /* with SL_GET_PREFETCH: a hold on a page for a reader to come (an
                            exact-order prefetch); changes nothing of whether RAM keeps it */
    SL_GET_AGAIN = 16,   /* the reader's read before took this page too: a page read in
                            pieces (a mount's 128 KiB reads of 1 MiB) is one hit, not eight */
};

/* Opens the cache of cfg: the RAM tier always, the disk tier in cfg->cache_dir when it can be
 * used (otherwise with a warning: reads go through to the stores). Counts into ctr. */
int sl__cache_open(const struct sl_config *cfg, struct sl_counters *ctr, struct sl_cache **out);
void sl__cache_close(struct sl_cache *c);

uint32_t sl__cache_page_size(const struct sl_cache *c);
struct sl_db *sl__cache_db(struct sl_cache *c);       /* NULL without a disk tier */
struct sl_disk *sl__cache_disk(struct sl_cache *c);   /* the same (tests write pages to it) */

/* Page `index` of o, from RAM, disk or the store, in that order; concurrent callers for one page
 * share one fetch. The caller releases ref. */
int sl__cache_get(struct sl_cache *c, const struct sl_object *o, uint64_t index, unsigned flags,
                  struct sl_page_ref *ref);
void sl__cache_release(struct sl_cache *c, struct sl_page_ref *ref);

/* The most pages one read ahead of a reader takes at once. */
#define SL_PREFETCH_MAX_PAGES 64

struct sl_mpage;

/* Pages [first, first + n) of an object, claimed for a read ahead of its reader. */
struct sl_prefetch {
    uint64_t first;
    unsigned n;
    bool mine[SL_PREFETCH_MAX_PAGES];    /* LOADING in RAM: ours to fetch from the store */
    bool on_disk[SL_PREFETCH_MAX_PAGES]; /* to bring into RAM from disk */
    struct sl_mpage *mps[SL_PREFETCH_MAX_PAGES];
    uint8_t keys[SL_PREFETCH_MAX_PAGES][SL_PAGE_KEY_LEN];
};

/* Claims pages [first, first + n) of o (n <= SL_PREFETCH_MAX_PAGES, clipped at the end of the
 * object) for sl__cache_prefetch(): those in neither tier become LOADING at once, so a reader
 * that asks for one before the fetch runs waits for it instead of asking the store again.
 * Returns false if there is nothing to do (every page in RAM or being fetched already); if it
 * returns true, sl__cache_prefetch(pf) must follow, or the claimed pages' readers wait forever. */
bool sl__cache_claim(struct sl_cache *c, const struct sl_object *o, uint64_t first, unsigned n,
                     struct sl_prefetch *pf);

/* Brings what pf claimed into RAM: one store read per run of adjacent claimed pages (a stream
 * costs the store one request per run instead of one per page), then writes them to disk;
 * pages on disk are read from there. Errors are left for the reader (it fetches the page
 * again). With holds (pf->n of them), every page of pf is also held for the caller from the
 * moment it is in RAM, so none can leave RAM before the caller lets go (sl__cache_release);
 * a page that could not be had is a hold with page NULL. */
void sl__cache_prefetch(struct sl_cache *c, const struct sl_object *o, struct sl_prefetch *pf,
                        struct sl_page_ref *holds);

/* True when the page is on disk already (for warming without reading it back). */
bool sl__cache_on_disk(struct sl_cache *c, const struct sl_object *o, uint64_t index);

/* Holds a page where it is on disk, for a reader to come, without reading it into RAM: *ref
 * gets its page file's descriptor (data NULL), which keeps it from being evicted until
 * sl__cache_release, and the kernel is asked to read its bytes ahead into its page cache,
 * where the reader's read of the page file (SL_GET_FD) or of the page into RAM finds them.
 * Fails (-ENOENT, -EAGAIN) when the page is not on disk or is going. */
int sl__cache_hold_on_disk(struct sl_cache *c, const struct sl_object *o, uint64_t index,
                           struct sl_page_ref *ref);

int sl__cache_free_object(struct sl_cache *c, const uint8_t file_id[16], uint64_t *freed);
/* Drops the disk pages of every version of o's object but o's own (they can never be served
 * again); returns how many versions it dropped. */
int sl__cache_drop_other_versions(struct sl_cache *c, const struct sl_object *o);
int sl__cache_cached_bytes(struct sl_cache *c, const struct sl_object *o, uint64_t *bytes);
int sl__cache_stats(struct sl_cache *c, sl_cache_stats_t *out);
int sl__cache_stats_reset(struct sl_cache *c);
/* Writes this process's counts and hits to the shared index now. */
void sl__cache_flush(struct sl_cache *c);

#endif /* SL_CACHE_H */
