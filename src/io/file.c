/*
 * file.c - reading a file through the cache, with read-ahead shaped by the access pattern.
 *
 * Open pins the object's version (from the metadata cache, within the mount's metadata_ttl):
 * every page of this handle is a page of that version. If the store's object has changed since,
 * the first read finds out (SL_E_CHANGED from the store); before any byte was returned the
 * handle quietly re-pins the new version, after that the read fails rather than mix versions.
 *
 * Read-ahead: a read that starts where the last one ended is sequential, and doubles the window
 * (2, 4, ... pages up to 64 MiB, within a quarter of cache.memory); any other read is random and
 * closes it, so random readers (Parquet footers, row groups) fetch only the pages they touch.
 * A stream from the start of a file is what whole-file readers do (cat, image decoders, tar):
 * it gets the window at once. A run of sequential reads that began after a seek earns its
 * read-ahead as it goes, a page ahead for each page it has read: a Parquet reader takes a
 * column chunk in 128 KiB pieces, which are sequential too, and must not pull in the megabytes
 * of the columns after it; a real stream that began mid-file is past that in a moment.
 * Pages read ahead are fetched by the pool in runs (one store request each, at most the
 * stream's share of RA_TOTAL at once, up to RA_INFLIGHT; see pump()) and wait in the RAM tier;
 * pages a sequential reader has consumed are not kept in RAM (a stream read once would only
 * push out useful pages).
 * A reader that knows its pattern says so (sl_file_advise): SEQUENTIAL opens the full window at
 * once and never reads past the advised end; RANDOM never reads ahead.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/io.h"

/* Read-ahead asks the store for runs of pages this large: one request per 8 MiB instead of one
 * per page (a store's cost is per request as much as per byte; the CPU of the store in the
 * benchmarks, the bill on S3). */
#define RA_RUN_BYTES (8U << 20)
/* Runs in flight per stream: enough to fill a link whose latency a run's transfer time covers
 * several times over (8 MiB at 200 MB/s: 42 ms against 20 ms). */
#define RA_INFLIGHT 4U
/* Runs in flight over all streams, shared out among them: the pool's threads. Runs past them
 * wait in the pool's queue, in the order asked, so a reader's next pages waited behind other
 * streams' runs far ahead of their readers. A soft limit: each stream may have one run (more
 * than 16 streams go past it), one that had more keeps them until they end, and the pages a
 * reader waits for now are asked for whatever the share. */
#define RA_TOTAL SL_POOL_THREADS
/* A file of at most this many pages is small: its first read fetches it whole. */
#define SMALL_FILE_PAGES 2U
/* How far out of order a stream's reads may arrive and still be the stream (see read_ahead). */
#define RA_SLACK (1U << 20)

struct ra_task {
    struct sl_file *f;
    struct sl_pin *pin;
    struct sl_prefetch pf;
};

/* Ends a stream's read-ahead (f->lock held); runs in flight finish on their own. */
static void stream_reset(struct sl_file *f)
{
    f->window = 0;
    f->ahead = 0;
    f->ra_next = 0;
    f->ra_until = 0;
    f->ra_runs = 0;
}

void sl__file_ref(struct sl_file *f)
{
    atomic_fetch_add(&f->refs, 1);
}

void sl__pin_ref(struct sl_pin *p)
{
    atomic_fetch_add(&p->refs, 1);
}

void sl__pin_put(struct sl_pin *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) free(p);
}

struct sl_pin *sl__file_pin(struct sl_file *f)
{
    pthread_mutex_lock(&f->lock);
    struct sl_pin *p = f->pin;
    sl__pin_ref(p);
    pthread_mutex_unlock(&f->lock);
    return p;
}

void sl__file_unref(struct sl_file *f)
{
    if (!f || atomic_fetch_sub(&f->refs, 1) != 1) return;
    sl__pin_put(f->pin);
    sl__resolved_free(&f->res);
    sl__group_destroy(&f->ra);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* A new pin of f's object at the version st describes (one reference, the caller's). */
static struct sl_pin *make_pin(struct sl_file *f, const sl_stat_t *st)
{
    struct sl_pin *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    struct sl_mount *m = f->res.mount;
    atomic_init(&p->refs, 1);
    p->st = *st;
    p->obj = (struct sl_object){
        .ufs = m->ufs,
        .rel = f->res.rel,
        .version = p->st.version,
        .size = p->st.size,
        .policy = m->policy,
    };
    sl__object_ids(&p->obj, f->res.object_id, sl__cache_page_size(f->sl->cache));
    return p;
}

int sl__file_open(struct sl *sl, const char *path, struct sl_file **out)
{
    struct sl_file *f = calloc(1, sizeof(*f));
    int rc;

    if (!f) return -ENOMEM;
    f->sl = sl;
    atomic_init(&f->refs, 1);
    atomic_init(&f->last_page, 0);
    pthread_mutex_init(&f->lock, NULL);
    sl__group_init(&f->ra);
    if ((rc = sl__ns_resolve(sl->ns, path, &f->res)) < 0) goto fail;
    if (!f->res.mount) {
        rc = sl__err(-EISDIR, "%s: Is a directory", f->res.path);
        goto fail;
    }
    if ((rc = sl__md_stat(&sl->md, &f->res, &f->st)) < 0) goto fail;
    if (f->st.type == SL_TYPE_DIR) {
        rc = sl__err(-EISDIR, "%s: Is a directory", f->res.path);
        goto fail;
    }
    if (!(f->pin = make_pin(f, &f->st))) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = f;
    return 0;
fail:
    sl__file_unref(f);
    return rc;
}

int sl__path_stat(struct sl *sl, const char *path, sl_stat_t *st)
{
    struct sl_resolved r;
    int rc = sl__ns_resolve(sl->ns, path, &r);
    if (rc < 0) return rc;
    if (!r.mount) {
        memset(st, 0, sizeof(*st));
        st->type = SL_TYPE_DIR;
    } else {
        rc = sl__md_stat(&sl->md, &r, st);
    }
    sl__resolved_free(&r);
    return rc;
}

/* The object changed under `old` before any byte was returned: pin the version the store has
 * now, if this read is the handle's only one (another read in flight may be copying bytes of
 * `old`, and one handle must never return bytes of two versions). On success *out is the new
 * pin, with a reference for the caller. */
static int repin(struct sl_file *f, struct sl_pin *old, struct sl_pin **out)
{
    sl_stat_t st;
    sl__md_invalidate(&f->sl->md, &f->res);
    int rc = sl__md_stat(&f->sl->md, &f->res, &st);
    if (rc == 0 && st.type == SL_TYPE_DIR) rc = -EISDIR;
    struct sl_pin *p = rc == 0 ? make_pin(f, &st) : NULL;
    if (rc == 0 && !p) rc = -ENOMEM;
    if (rc < 0) return rc;

    pthread_mutex_lock(&f->lock);
    if (f->served || f->active > 1 || f->pin != old) {
        pthread_mutex_unlock(&f->lock);
        sl__pin_put(p);
        return SL_E_CHANGED;
    }
    f->pin = p; /* the file's reference moves to the new pin */
    f->st = st;
    stream_reset(f);
    sl__pin_ref(p);
    pthread_mutex_unlock(&f->lock);
    sl__pin_put(old); /* the file's old reference */
    *out = p;
    return 0;
}

static void ra_task_free(struct ra_task *t)
{
    sl__pin_put(t->pin);
    sl__file_unref(t->f);
    free(t);
}

static void pump(struct sl_file *f, struct sl_pin *pin, uint64_t need);

static int ra_run(void *arg)
{
    struct ra_task *t = arg;
    struct sl_file *f = t->f;

    sl__cache_prefetch(f->sl->cache, &t->pin->obj, &t->pf, NULL);
    pthread_mutex_lock(&f->lock);
    if (--f->ra_inflight == 0) atomic_fetch_sub(&f->sl->ra_streams, 1);
    if (t->pin == f->pin) pump(f, t->pin, 0); /* a finished run makes room for the next */
    pthread_mutex_unlock(&f->lock);
    ra_task_free(t);
    return 0; /* a failed read-ahead is retried, and reported, by the reader */
}

/* Claims pages [first, first + count) of pin's version and has the pool fetch them (f->lock
 * held). False if no task could be made: the pages the claim left are the reader's to fetch. */
static bool submit_run(struct sl_file *f, struct sl_pin *pin, uint64_t first, unsigned count)
{
    struct ra_task *t = malloc(sizeof(*t));
    if (!t) return false;
    if (!sl__cache_claim(f->sl->cache, &pin->obj, first, count, &t->pf)) {
        free(t); /* every page is cached or on its way */
        return true;
    }
    t->f = f;
    t->pin = pin;
    sl__file_ref(f);
    sl__pin_ref(pin);
    if (sl__pool_submit(f->sl->pool, &f->ra, ra_run, t) < 0) {
        /* Claimed: it must be fetched, here if no thread can take it. */
        sl__cache_prefetch(f->sl->cache, &pin->obj, &t->pf, NULL);
        ra_task_free(t);
        return false;
    }
    if (f->ra_inflight++ == 0) atomic_fetch_add(&f->sl->ra_streams, 1);
    return true;
}

/* How many runs this stream may have in flight: its share of RA_TOTAL among the streams that
 * have runs in flight, itself counted (f->lock held). */
static unsigned ra_share(struct sl_file *f)
{
    unsigned streams = atomic_load(&f->sl->ra_streams) + (f->ra_inflight == 0);
    return SL_MAX(1U, SL_MIN(RA_INFLIGHT, RA_TOTAL / streams));
}

/* The read-ahead window's largest size, in pages: room for RA_INFLIGHT runs in flight and as
 * many fetched and waiting for the reader, within a quarter of cache.memory. */
static unsigned window_max(struct sl_file *f)
{
    uint64_t ps = sl__cache_page_size(f->sl->cache);
    uint64_t by_memory = f->sl->cfg->cache_memory / 4 / ps;
    uint64_t pages = SL_MAX(1U, 2ULL * RA_INFLIGHT * RA_RUN_BYTES / ps);
    return (unsigned)SL_MAX(1U, SL_MIN(pages, by_memory));
}

/* Asks for pages [ra_next, ra_until) of pin's version in runs, at most the stream's share of
 * runs in flight (ra_share) but for the pages below `need`, which a reader waits for now
 * (f->lock held; a run still writing its pages to disk counts as in flight, though its reader
 * may have passed it).
 * Called when the reader moves the window and when a run finishes: the next run is asked for
 * while the others are still arriving, so the link never waits for the reader. The first runs
 * of a stream grow (2, 4, 6... pages up to RA_RUN_BYTES): runs that started together would
 * share the link, finish together and be replaced together, leaving it idle for a request's
 * latency each time; staggered, they stay staggered. */
static void pump(struct sl_file *f, struct sl_pin *pin, uint64_t need)
{
    uint64_t ps = sl__cache_page_size(f->sl->cache);
    unsigned run_max = (unsigned)SL_MAX(1U, SL_MIN(RA_RUN_BYTES / ps, (uint64_t)f->ahead));
    run_max = SL_MIN(run_max, (unsigned)SL_PREFETCH_MAX_PAGES);

    unsigned share = ra_share(f);
    while (!f->closing && (f->ra_inflight < share || f->ra_next < need) &&
           f->ra_next < f->ra_until) {
        unsigned run = (unsigned)SL_MIN((uint64_t)run_max, 2ULL * (f->ra_runs + 1));
        unsigned count = (unsigned)SL_MIN((uint64_t)run, f->ra_end - f->ra_next);
        if (f->ra_next + count > f->ra_until) break; /* whole runs: wait for the reader */
        uint64_t first = f->ra_next;
        f->ra_next += count;
        f->ra_runs++;
        if (!submit_run(f, pin, first, count)) break;
    }
}

/* Updates the pattern detector with a read of [off, end) of pin's version and asks for pages
 * ahead. Returns true if the read is part of a sequential stream. */
static bool read_ahead(struct sl_file *f, struct sl_pin *pin, uint64_t off, uint64_t end)
{
    uint64_t ps = sl__cache_page_size(f->sl->cache);
    uint64_t npages = pin->obj.size / ps + (pin->obj.size % ps != 0);
    uint64_t first = off / ps, last = (end - 1) / ps;

    pthread_mutex_lock(&f->lock);
    /* A first read at 0 starts a stream. Once one runs, reads a little before or after where
     * the last ended still belong to it: the kernel's read-ahead through a FUSE mount sends a
     * stream's chunks to several threads at once, and they arrive out of order. */
    bool near = f->window > 0 && off <= f->next_off + RA_SLACK && off + RA_SLACK >= f->next_off;
    bool sequential = off == f->next_off || near;
    f->reads++;
    f->bytes_read += end - off;
    if (sequential) f->seq_bytes += end - off;
    if (!sequential) f->run_start = off;
    f->next_off = sequential ? SL_MAX(f->next_off, end) : end;
    if (f->advice == SL_ADVISE_SEQUENTIAL) {
        sequential = true;
        f->window = window_max(f) / 2; /* doubled to the full window below */
        uint64_t advised = f->advice_end / ps + (f->advice_end % ps != 0); /* no overflow */
        npages = SL_MIN(npages, advised);
    }
    if (!sequential || f->advice == SL_ADVISE_RANDOM) {
        stream_reset(f);
        pthread_mutex_unlock(&f->lock);
        return false;
    }
    unsigned max = window_max(f);
    f->window = f->window ? SL_MIN(f->window * 2, max) : SL_MIN(2U, max);
    uint64_t earned = (f->next_off - SL_MIN(f->run_start, f->next_off)) / ps;
    /* A small file (a page or two) is read whole at once: one request for all of it. */
    bool at_once = f->advice == SL_ADVISE_SEQUENTIAL || f->run_start == 0 ||
                   npages <= SMALL_FILE_PAGES;
    f->ahead = at_once ? f->window : (unsigned)SL_MIN((uint64_t)f->window, earned);
    /* The read's own pages not asked for yet go first, in the same runs: claimed before this
     * returns, so the reader waits for them instead of fetching them one by one. */
    if (f->ra_next < first) f->ra_next = first;
    f->ra_end = npages;
    f->ra_until = SL_MIN(npages, last + 1 + f->ahead);
    pump(f, pin, last + 1);
    pthread_mutex_unlock(&f->lock);
    return true;
}

void sl_unmap(sl_t *sl, sl_extent_t *ext, int n)
{
    for (int i = 0; i < n; i++) {
        struct sl_page_ref ref = {.page = ext[i].page, .fd = ext[i].fd};
        sl__cache_release(sl->cache, &ref);
        ext[i].page = NULL;
        ext[i].fd = -1;
    }
}

/* Takes the pages that hold [off, end) of pin's version, one extent each (end was cut so that
 * they fit); on failure, gives back what it took. */
static int map_pages(struct sl_file *f, struct sl_pin *pin, uint64_t off, uint64_t end,
                     bool stream, sl_extent_t *ext, int *n)
{
    uint64_t ps = sl__cache_page_size(f->sl->cache);

    *n = 0;
    for (uint64_t idx = off / ps; idx * ps < end; idx++) {
        struct sl_page_ref ref;
        /* A stream lets a page go once it has read its last byte: readers of a mount take a
         * 1 MiB page in 128 KiB reads, and dropping it at the first would read it from disk
         * (and check it) eight times. */
        uint64_t page_end = SL_MIN((idx + 1) * ps, pin->obj.size);
        unsigned flags = SL_GET_FD | (stream && end >= page_end ? SL_GET_NO_RAM : 0) |
                         (idx + 1 == atomic_load(&f->last_page) ? SL_GET_AGAIN : 0);
        int rc = sl__cache_get(f->sl->cache, &pin->obj, idx, flags, &ref);
        if (rc < 0) {
            sl_unmap(f->sl, ext, *n);
            *n = 0;
            return rc;
        }
        uint64_t pstart = idx * ps;
        uint64_t from = SL_MAX(off, pstart), to = SL_MIN(end, pstart + ref.len);
        ext[(*n)++] = (sl_extent_t){
            .data = ref.data ? ref.data + (from - pstart) : NULL,
            .len = (size_t)(to - from),
            .fd = ref.fd,
            .fd_off = ref.fd_off + (from - pstart),
            .page = ref.page,
        };
        atomic_store(&f->last_page, idx + 1);
    }
    return 0;
}

/* [off, off + len) of the file, cut at its end and at max pages. */
static uint64_t range_end(struct sl_file *f, const struct sl_pin *p, uint64_t off, size_t len,
                          int max)
{
    uint64_t ps = sl__cache_page_size(f->sl->cache);
    uint64_t end = len > p->obj.size - off ? p->obj.size : off + len;
    return SL_MIN(end, (off / ps + (uint64_t)max) * ps);
}

int sl_file_map(sl_file_t *f, uint64_t off, size_t len, sl_extent_t *ext, int max, int *n,
                size_t *nread)
{
    int rc = 0;
    uint64_t end = 0;

    sl__err_clear();
    *n = 0;
    *nread = 0;
    if (max < 1) return SL_E_USAGE;
    pthread_mutex_lock(&f->lock);
    f->active++;
    struct sl_pin *p = f->pin;
    sl__pin_ref(p);
    pthread_mutex_unlock(&f->lock);

    if (off < p->obj.size && len > 0) {
        end = range_end(f, p, off, len, max);
        bool stream = read_ahead(f, p, off, end);
        rc = map_pages(f, p, off, end, stream, ext, n);
        if (rc == SL_E_CHANGED) {
            struct sl_pin *np;
            int again = repin(f, p, &np);
            if (again == 0) {
                sl__pin_put(p);
                p = np;
                end = off < p->obj.size ? range_end(f, p, off, len, max) : off;
                rc = end > off ? map_pages(f, p, off, end, stream, ext, n) : 0;
            } else if (again != SL_E_CHANGED) {
                rc = again;
            }
        }
    }

    pthread_mutex_lock(&f->lock);
    f->active--;
    if (rc == 0 && end > off) f->served = true;
    pthread_mutex_unlock(&f->lock);
    sl__pin_put(p); /* the extents hold their pages; the pin may go */
    if (rc < 0) {
        if (rc == SL_E_CHANGED)
            return sl__err(rc, "%s: changed in the store while it was read; read it again for "
                               "the new version", f->res.path);
        return sl__err_ctx(rc, f->res.path);
    }
    *nread = end > off ? (size_t)(end - off) : 0;
    return 0;
}

int sl_file_pread(sl_file_t *f, void *buf, size_t len, uint64_t off, size_t *nread)
{
    sl_extent_t ext[16];
    char *out = buf;

    *nread = 0;
    while (len > 0) {
        int n;
        size_t got;
        int rc = sl_file_map(f, off, len, ext, (int)SL_ARRAY_LEN(ext), &n, &got);
        if (rc < 0) return rc;
        for (int i = 0; i < n && rc == 0; i++) {
            if (ext[i].data)
                memcpy(out, ext[i].data, ext[i].len);
            else
                rc = sl__pread_all(ext[i].fd, out, ext[i].len, ext[i].fd_off);
            out += ext[i].len;
        }
        sl_unmap(f->sl, ext, n);
        if (rc < 0) return sl__err(rc, "%s: reading the cache disk: %s", f->res.path,
                                   sl_strerror(rc));
        if (got == 0) break; /* the end of the file */
        *nread += got;
        off += got;
        len -= got;
    }
    return 0;
}

int sl_file_open(sl_t *sl, const char *path, sl_file_t **out)
{
    sl__err_clear();
    int rc = sl__file_open(sl, path, out);
    if (rc == 0) sl__orders_opened(sl, (*out)->res.object_id);
    return rc;
}

int sl_file_advise(sl_file_t *f, uint64_t off, uint64_t len, enum sl_advice advice)
{
    if (advice != SL_ADVISE_NORMAL && advice != SL_ADVISE_SEQUENTIAL && advice != SL_ADVISE_RANDOM)
        return SL_E_USAGE;
    pthread_mutex_lock(&f->lock);
    f->advice = advice;
    f->advice_end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
    f->next_off = off;
    f->run_start = off;
    stream_reset(f);
    pthread_mutex_unlock(&f->lock);
    return 0;
}

const sl_stat_t *sl_file_stat(const sl_file_t *f)
{
    return &f->st;
}

/* The file's access record, for `sluice run`'s profile of the stage this process is part of
 * (src/pipeline/trace.c writes the same lines for the files it sees): the reads its reader
 * asked for, by namespace path, not the cache's own reads of page files and stores. */
static void tell_access(struct sl_file *f)
{
    char *path = sl__asprintf("%s/%d.tsv", f->sl->trace_dir, (int)getpid());
    int fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    free(path);
    if (fd < 0) return;
    pthread_mutex_lock(&f->lock);
    char *line = sl__asprintf("%s\t%llu\t%llu\t0\t%llu\t%llu\t%llu\t0\n", f->res.path,
                              (unsigned long long)f->st.size, (unsigned long long)f->bytes_read,
                              (unsigned long long)f->seq_bytes,
                              (unsigned long long)(f->bytes_read - f->seq_bytes),
                              (unsigned long long)f->reads);
    pthread_mutex_unlock(&f->lock);
    if (line && write(fd, line, strlen(line)) < 0) { /* a profile without this file */ }
    free(line);
    close(fd);
}

void sl_file_close(sl_file_t *f)
{
    if (!f) return;
    if (f->sl->trace_dir && f->reads) tell_access(f);
    sl__orders_closed(f->sl, f->res.object_id);
    pthread_mutex_lock(&f->lock);
    f->closing = true; /* no more runs: what is in flight finishes */
    pthread_mutex_unlock(&f->lock);
    sl__group_wait(&f->ra);
    sl__file_unref(f);
}
