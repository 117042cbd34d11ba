/*
 * keep.c - keeping a path's pages on the cache disk until told to let go (sl_keep): what a
 * pipeline's stage made for a stage still to come must not be evicted by what runs between.
 *
 * A file is loaded CHUNK bytes at a time (sl_load: the pages missing from the cache disk, many
 * in flight), and each page of the chunk is then held where it is on disk by its page file's
 * descriptor (sl__cache_hold_on_disk): the shared lock on it keeps eviction, in this process or
 * another, off every page of that file until the descriptor is closed. A page that is not
 * there to hold is read once (sl_file_pread) and held again: one evicted between its load and
 * its hold by what other processes read is fetched again, and one on disk that this process
 * has not read yet has its checksum checked by the read (nothing unchecked is held). The pages of one run share a page file, and one descriptor
 * a file is enough: the holds of the pages after the first in a file are closed at once.
 * A page that cannot be held (no room to load it, the descriptors used up) is not kept, and
 * the figures say so; keeping is a hint to the cache, never a reason for a read to fail. The
 * keeps of a process hold half its limit on descriptors at most (fds_kept), so that they never
 * starve its other opens.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/io.h"

/* Loaded, then held, this much at a time: what other readers can evict between the load and
 * the hold is at most this. */
#define CHUNK (64ULL << 20)

/* Descriptors held by every keep of the process. */
static _Atomic size_t fds_kept;

struct sl_keep {
    sl_t *sl;
    bool (*cancel)(void *arg);
    void *arg;
    int *fds; /* one per page file held */
    size_t nfds, cap;
    ino_t last_ino; /* the page file of the last page held */
    dev_t last_dev;
    uint64_t kept, total;
};

static size_t max_fds(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY) return 4096;
    return (size_t)rl.rlim_cur / 2;
}

/* Keeps fd (a page file held) unless the last one kept is the same file, whose lock is held
 * already; false when it could not be kept (it is closed either way then). */
static bool keep_fd(struct sl_keep *k, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return false;
    }
    if (k->nfds && st.st_ino == k->last_ino && st.st_dev == k->last_dev) {
        close(fd);
        return true;
    }
    if (atomic_fetch_add(&fds_kept, 1) >= max_fds()) {
        atomic_fetch_sub(&fds_kept, 1);
        close(fd);
        return false;
    }
    if (k->nfds == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 16;
        int *n = realloc(k->fds, cap * sizeof(*n));
        if (!n) {
            atomic_fetch_sub(&fds_kept, 1);
            close(fd);
            return false;
        }
        k->fds = n;
        k->cap = cap;
    }
    k->fds[k->nfds++] = fd;
    k->last_ino = st.st_ino;
    k->last_dev = st.st_dev;
    return true;
}

/* Holds page idx of f where it is on disk; if it is not there to hold and `fetch`, reads it
 * once (which brings it back, or checks it) and tries again. */
static void hold_page(struct sl_keep *k, struct sl_file *f, const struct sl_object *obj,
                      uint64_t idx, uint8_t *buf, bool fetch)
{
    struct sl_cache *c = k->sl->cache;
    uint64_t ps = sl__cache_page_size(c), len = SL_MIN(ps, obj->size - idx * ps);
    struct sl_page_ref ref;
    int rc = sl__cache_hold_on_disk(c, obj, idx, &ref);
    if (rc < 0) {
        size_t n;
        if (!fetch || sl_file_pread(f, buf, len, idx * ps, &n) < 0) return;
        if ((rc = sl__cache_hold_on_disk(c, obj, idx, &ref)) < 0) return; /* no room: not kept */
    }
    if (keep_fd(k, ref.fd)) k->kept += ref.len;
}

/* What sl_file_close does but for the orders' count of opens and the access record: a keep is
 * not a reader. */
static void close_file(struct sl_file *f)
{
    pthread_mutex_lock(&f->lock);
    f->closing = true;
    pthread_mutex_unlock(&f->lock);
    sl__group_wait(&f->ra);
    sl__file_unref(f);
}

static int keep_file(struct sl_keep *k, const char *path)
{
    struct sl_file *f;
    int rc = sl__file_open(k->sl, path, &f);
    if (rc < 0) return rc;
    struct sl_pin *pin = sl__file_pin(f);
    uint64_t ps = sl__cache_page_size(k->sl->cache), size = pin->obj.size;
    uint8_t *buf = malloc(ps);
    if (!buf) rc = -ENOMEM;
    k->total += size;
    uint64_t idx = 0; /* the next page to hold */
    for (uint64_t off = 0; rc == 0 && off < size; off += CHUNK) {
        if (k->cancel && k->cancel(k->arg)) {
            rc = -ECANCELED;
            break;
        }
        sl_load_item_t item = {.path = path, .offset = off, .length = CHUNK};
        rc = sl_load(k->sl, &item, 1, NULL, NULL, NULL);
        /* The cache disk is full of what cannot be evicted: what did not fit is not fetched
         * again page by page only to find no room once more. */
        bool full = rc == SL_E_CACHE_FULL;
        if (full) rc = 0;
        for (; rc == 0 && idx * ps < SL_MIN(size, off + CHUNK); idx++)
            hold_page(k, f, &pin->obj, idx, buf, !full);
    }
    free(buf);
    sl__pin_put(pin);
    close_file(f);
    return rc;
}

struct walk_ctx {
    struct sl_keep *k;
    int rc;
};

static int walk_cb(void *arg, const char *dir, int err, const sl_dirent_t *ents, size_t n)
{
    struct walk_ctx *w = arg;
    if (err < 0) {
        w->rc = err;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ents[i].st.type != SL_TYPE_FILE) continue;
        size_t len = strlen(dir);
        char *path = sl__asprintf("%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/",
                                  ents[i].name);
        int rc = path ? keep_file(w->k, path) : -ENOMEM;
        free(path);
        if (rc < 0) {
            w->rc = rc;
            return 1;
        }
    }
    return 0;
}

int sl_keep(sl_t *sl, const char *path, bool (*cancel)(void *arg), void *arg, sl_keep_t **out,
            uint64_t *kept_bytes, uint64_t *total_bytes)
{
    sl_stat_t st;
    int rc;
    *out = NULL;
    sl__err_clear();
    if ((rc = sl__path_stat(sl, path, &st)) < 0) return rc;
    struct sl_keep *k = calloc(1, sizeof(*k));
    if (!k) return -ENOMEM;
    k->sl = sl;
    k->cancel = cancel;
    k->arg = arg;
    if (st.type == SL_TYPE_DIR) {
        struct walk_ctx w = {k, 0};
        rc = sl_walk(sl, path, walk_cb, &w);
        if (rc >= 0) rc = w.rc;
    } else {
        rc = keep_file(k, path);
    }
    if (rc < 0) {
        sl_keep_release(k);
        return rc == -ECANCELED ? sl__err(rc, "%s: keeping it was cancelled", path) : rc;
    }
    if (kept_bytes) *kept_bytes = k->kept;
    if (total_bytes) *total_bytes = k->total;
    *out = k;
    return 0;
}

void sl_keep_release(sl_keep_t *k)
{
    if (!k) return;
    for (size_t i = 0; i < k->nfds; i++) close(k->fds[i]);
    atomic_fetch_sub(&fds_kept, k->nfds);
    free(k->fds);
    free(k);
}
