/*
 * prefetch.c - while stages run, the sluice paths the stages after them will read are loaded
 * into the cache (sl_load), so that a stage that reads a far store's dataset finds it on the
 * cache disk when it starts instead of waiting for the store.
 *
 * One thread works through a queue of paths, in the order they were added: a file is loaded
 * in ranges of RANGE bytes, a folder file by file (sl_walk). Stopping (sl_prefetch_close)
 * waits for the range in hand only, never for the rest of a large file or folder. A path that
 * is not there (yet) is passed over: the stage that reads it will say so. Prefetch is a hint:
 * nothing fails because of it, and the scheduler never waits for it.
 *
 * The same thread keeps what it is told to (sl_prefetch_keep): a stage's out that a stage still
 * to come reads is loaded and kept on the cache disk (sl_keep) until the run lets it go
 * (sl_prefetch_release, when its last reader has finished) or closes. A release that comes
 * while the keep is still queued drops it; one that comes while it is being kept lets it go as
 * soon as it is (sl_keep stops at its next chunk).
 *
 * Locking: pf->lock guards the queue, the kept list, the counts and stop; the thread holds it
 * only to take a path off the queue and to put what it kept on the list.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "pipeline/run.h"

#define RANGE (64ULL << 20)

struct queued {
    struct queued *next;
    char *path;
    bool keep; /* keep it (sl_keep) rather than load it */
};

struct kept {
    struct kept *next;
    char *path;
    sl_keep_t *k;
};

struct sl_prefetch {
    sl_t *sl;
    pthread_mutex_t lock;
    pthread_cond_t more;
    struct queued *head, **tail;
    bool stop;
    pthread_t thread;
    size_t files;   /* loaded whole */
    uint64_t bytes; /* of those files */
    size_t files_kept;   /* paths kept (a folder counts once) */
    uint64_t bytes_kept; /* their bytes kept on the cache disk */
    struct kept *kept;
    const char *keeping; /* the path being kept now, or NULL */
    bool released;       /* ... and it was released meanwhile */
};

static bool stopping(struct sl_prefetch *pf)
{
    pthread_mutex_lock(&pf->lock);
    bool stop = pf->stop;
    pthread_mutex_unlock(&pf->lock);
    return stop;
}

/* Loads one file range by range; 1 when told to stop. */
static int load_file(struct sl_prefetch *pf, const char *path, uint64_t size)
{
    for (uint64_t off = 0; off < size; off += RANGE) {
        if (stopping(pf)) return 1;
        sl_load_item_t item = {.path = path, .offset = off, .length = SL_MIN(RANGE, size - off)};
        if (sl_load(pf->sl, &item, 1, NULL, NULL, NULL) < 0) return 0; /* the reader will see */
    }
    pthread_mutex_lock(&pf->lock);
    pf->files++;
    pf->bytes += size;
    pthread_mutex_unlock(&pf->lock);
    return 0;
}

static int walk_cb(void *arg, const char *dir, int err, const sl_dirent_t *ents, size_t n)
{
    struct sl_prefetch *pf = arg;
    if (err < 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (ents[i].st.type != SL_TYPE_FILE) continue;
        size_t len = strlen(dir);
        char *path = sl__asprintf("%s%s%s", dir, len && dir[len - 1] == '/' ? "" : "/",
                                  ents[i].name);
        int stop = path ? load_file(pf, path, ents[i].st.size) : 0;
        free(path);
        if (stop) return 1;
    }
    return 0;
}

/* A keep stops when the run stops, or when what it keeps was released meanwhile. */
static bool keep_cancelled(void *arg)
{
    struct sl_prefetch *pf = arg;
    pthread_mutex_lock(&pf->lock);
    bool stop = pf->stop || pf->released;
    pthread_mutex_unlock(&pf->lock);
    return stop;
}

/* Keeps q's path and puts it on the kept list, unless it was released meanwhile. No lock held;
 * takes q's path. */
static void keep_path(struct sl_prefetch *pf, struct queued *q)
{
    pthread_mutex_lock(&pf->lock);
    pf->keeping = q->path;
    pf->released = false;
    pthread_mutex_unlock(&pf->lock);
    sl_keep_t *k = NULL;
    uint64_t kept = 0, total = 0;
    struct kept *e = malloc(sizeof(*e));
    if (sl_keep(pf->sl, q->path, keep_cancelled, pf, &k, &kept, &total) < 0)
        k = NULL; /* its reader will see */
    pthread_mutex_lock(&pf->lock);
    pf->keeping = NULL;
    if (k && e && !pf->released) {
        *e = (struct kept){pf->kept, q->path, k};
        pf->kept = e;
        pf->files_kept++;
        pf->bytes_kept += kept;
        q->path = NULL;
        k = NULL;
        e = NULL;
    }
    pthread_mutex_unlock(&pf->lock);
    sl_keep_release(k);
    free(e);
}

static void *prefetch_main(void *arg)
{
    struct sl_prefetch *pf = arg;

    pthread_mutex_lock(&pf->lock);
    for (;;) {
        while (!pf->stop && !pf->head) pthread_cond_wait(&pf->more, &pf->lock);
        if (pf->stop) break;
        struct queued *q = pf->head;
        if (!(pf->head = q->next)) pf->tail = &pf->head;
        pthread_mutex_unlock(&pf->lock);
        sl_stat_t st;
        if (q->keep) {
            keep_path(pf, q);
        } else if (sl_stat(pf->sl, q->path, &st) == 0) {
            if (st.type == SL_TYPE_DIR)
                sl_walk(pf->sl, q->path, walk_cb, pf);
            else
                load_file(pf, q->path, st.size);
        }
        free(q->path);
        free(q);
        pthread_mutex_lock(&pf->lock);
    }
    pthread_mutex_unlock(&pf->lock);
    return NULL;
}

int sl_prefetch_open(sl_t *sl, struct sl_prefetch **out)
{
    struct sl_prefetch *pf = calloc(1, sizeof(*pf));
    *out = NULL;
    if (!pf) return -ENOMEM;
    pf->sl = sl;
    pf->tail = &pf->head;
    pthread_mutex_init(&pf->lock, NULL);
    pthread_cond_init(&pf->more, NULL);
    int rc = pthread_create(&pf->thread, NULL, prefetch_main, pf);
    if (rc != 0) {
        pthread_cond_destroy(&pf->more);
        pthread_mutex_destroy(&pf->lock);
        free(pf);
        return -rc;
    }
    *out = pf;
    return 0;
}

static void enqueue(struct sl_prefetch *pf, const char *path, bool keep)
{
    struct queued *q = pf ? calloc(1, sizeof(*q)) : NULL;
    if (!q || !(q->path = sl__strdup(path))) {
        free(q); /* a hint lost: the stage reads it itself */
        return;
    }
    q->keep = keep;
    pthread_mutex_lock(&pf->lock);
    *pf->tail = q;
    pf->tail = &q->next;
    pthread_cond_signal(&pf->more);
    pthread_mutex_unlock(&pf->lock);
}

void sl_prefetch_add(struct sl_prefetch *pf, const char *path)
{
    enqueue(pf, path, false);
}

void sl_prefetch_keep(struct sl_prefetch *pf, const char *path)
{
    enqueue(pf, path, true);
}

bool sl_prefetch_release(struct sl_prefetch *pf, const char *path)
{
    bool found = false;
    sl_keep_t *k = NULL;
    if (!pf) return false;
    pthread_mutex_lock(&pf->lock);
    for (struct queued **q = &pf->head; *q; q = &(*q)->next) {
        if (!(*q)->keep || strcmp((*q)->path, path) != 0) continue;
        struct queued *gone = *q;
        if (!(*q = gone->next)) pf->tail = q;
        free(gone->path);
        free(gone);
        found = true;
        break;
    }
    if (!found && pf->keeping && strcmp(pf->keeping, path) == 0) found = pf->released = true;
    for (struct kept **e = &pf->kept; !found && *e; e = &(*e)->next) {
        if (strcmp((*e)->path, path) != 0) continue;
        struct kept *gone = *e;
        *e = gone->next;
        k = gone->k;
        free(gone->path);
        free(gone);
        found = true;
        break;
    }
    pthread_mutex_unlock(&pf->lock);
    sl_keep_release(k);
    return found;
}

void sl_prefetch_figures(struct sl_prefetch *pf, size_t *files, uint64_t *bytes,
                         size_t *files_kept, uint64_t *bytes_kept)
{
    *files = *files_kept = 0;
    *bytes = *bytes_kept = 0;
    if (!pf) return;
    pthread_mutex_lock(&pf->lock);
    *files = pf->files;
    *bytes = pf->bytes;
    *files_kept = pf->files_kept;
    *bytes_kept = pf->bytes_kept;
    pthread_mutex_unlock(&pf->lock);
}

void sl_prefetch_close(struct sl_prefetch *pf)
{
    if (!pf) return;
    pthread_mutex_lock(&pf->lock);
    pf->stop = true;
    pthread_cond_signal(&pf->more);
    pthread_mutex_unlock(&pf->lock);
    pthread_join(pf->thread, NULL);
    while (pf->head) {
        struct queued *q = pf->head;
        pf->head = q->next;
        free(q->path);
        free(q);
    }
    while (pf->kept) {
        struct kept *e = pf->kept;
        pf->kept = e->next;
        sl_keep_release(e->k);
        free(e->path);
        free(e);
    }
    pthread_cond_destroy(&pf->more);
    pthread_mutex_destroy(&pf->lock);
    free(pf);
}
