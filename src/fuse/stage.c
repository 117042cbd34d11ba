/*
 * stage.c - the write journal of a mount. Each file written through the mount is staged in a
 * data file on the cache disk, CACHE_DIR/journal/<id>.data, and uploaded to its store as one
 * new version (sl_writer: atomic, multipart when large) when it is closed.
 *
 * A staged file's states:
 *
 *   clean --write--> dirty --fsync or close: fdatasync the data, then write <id>.meta (size,
 *     ^                       path) to a temp file, fsync it, rename it in, fsync the folder-->
 *     |                                                                           acknowledged
 *     +---- upload done (meta removed) <--- close: upload the acknowledged bytes ------+
 *
 * Only acknowledged bytes are promised, and they are never lost: if the mount dies before the
 * upload, the next mount of the same cache uploads them first (sl__stages_open). A data file
 * without its meta was never acknowledged (no fsync or close had returned) and is dropped. A
 * failed upload leaves the entry acknowledged: the writer's close gets EIO, the file stays
 * staged (listed and readable through the mount), and a retry thread tries the upload again,
 * 2 s after the failure and then at doubling intervals up to a minute, until the store takes
 * it; unmounting tries once more, and what is still refused waits in the journal for the next
 * mount, which takes it in the same way. A live mount holds an exclusive flock on each of its
 * data files, so another mount starting on the same cache never takes them for abandoned ones.
 *
 * Locking: S->lock guards the list and refs; a stage's lock guards its size and state and is
 * held across its upload (writes to that file wait; others do not). A path changes (rename)
 * under both, so either is enough to read it. Order: S->lock, then a stage's lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/stage.h"

#define CHUNK (1U << 20)
#define RETRY_FIRST_S 2
#define RETRY_MAX_S 60

struct stage {
    struct stage *next;
    char *path;
    uint64_t id;
    int fd;
    unsigned refs;
    pthread_mutex_t lock;
    uint64_t size;
    bool dirty; /* written since the last upload */
    bool acked; /* its meta file is in the journal */
    bool gone;  /* removed in the store meanwhile: nothing to upload */
};

static char *entry_path(const struct stages *S, uint64_t id, const char *ext)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%016" PRIx64 ".%s", S->dir, id, ext) < 0) return NULL;
    return p;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Uploads the first size bytes of fd to path as a new version. */
static int upload(sl_t *sl, const char *path, int fd, uint64_t size)
{
    sl_writer_t *w;
    char *buf = malloc(CHUNK);
    int rc = buf ? sl_writer_open(sl, path, &w) : -ENOMEM;
    if (rc < 0) {
        free(buf);
        return rc;
    }
    for (uint64_t off = 0; off < size && rc == 0;) {
        size_t want = (size_t)(size - off < CHUNK ? size - off : CHUNK);
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO; /* the journal is shorter than it was acknowledged */
            break;
        }
        rc = sl_writer_write(w, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    if (rc < 0) {
        sl_writer_abort(w);
        return rc;
    }
    return sl_writer_commit(w);
}

/* Writes s's meta file durably (s->lock held). */
static int write_meta(struct stages *S, struct stage *s)
{
    char *meta = entry_path(S, s->id, "meta"), *tmp = entry_path(S, s->id, "meta.tmp");
    int rc = -ENOMEM;
    FILE *f = NULL;

    if (!meta || !tmp) goto out;
    if ((f = fopen(tmp, "we"))) fprintf(f, "%" PRIu64 "\n%s", s->size, s->path);
    rc = !f || fflush(f) != 0 || fsync(fileno(f)) < 0 ? -errno : 0;
    if (f && fclose(f) != 0 && rc == 0) rc = -errno;
    if (rc == 0 && rename(tmp, meta) < 0) rc = -errno;
    if (rc == 0) rc = fsync_dir(S->dir);
    if (rc < 0) unlink(tmp);
out:
    free(meta);
    free(tmp);
    return rc;
}

/* The journal's folder fsynced after a meta file left it: not needed for safety (a meta that
 * comes back after a crash only uploads the same bytes again). */
static void drop_entry(struct stages *S, uint64_t id, bool data_too)
{
    char *meta = entry_path(S, id, "meta"), *data = entry_path(S, id, "data");
    if (meta) unlink(meta);
    if (data && data_too) unlink(data);
    free(meta);
    free(data);
}

static void *retry_main(void *arg);

/* ---- recovery ------------------------------------------------------------------------------- */

/* Takes an acknowledged entry whose upload failed in as a kept stage (no writer holds it):
 * listed and readable through the mount, uploaded by the retries. Owns fd and path. */
static int adopt(struct stages *S, uint64_t id, int fd, char *path, uint64_t size)
{
    struct stage *s = calloc(1, sizeof(*s));
    if (!s) return -ENOMEM;
    *s = (struct stage){.path = path, .id = id, .fd = fd, .size = size, .dirty = true,
                        .acked = true};
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_lock(&S->lock);
    s->next = S->head;
    S->head = s;
    pthread_mutex_unlock(&S->lock);
    return 0;
}

/* Uploads one entry a dead mount left; 1 if it was someone's live entry (left alone). */
static int recover_one(struct stages *S, uint64_t id, int *pending)
{
    char *meta = entry_path(S, id, "meta"), *data = entry_path(S, id, "data");
    char line[32], *path = NULL;
    size_t cap = 0;
    int rc = 0, fd = -1;
    FILE *f = NULL;

    if (!meta || !data) goto out;
    if ((fd = open(data, O_RDWR | O_CLOEXEC)) < 0 && errno != ENOENT) goto out;
    if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
        rc = 1; /* a live mount's */
        goto out;
    }
    if (!(f = fopen(meta, "re"))) goto out;
    if (!fgets(line, sizeof(line), f) || getdelim(&path, &cap, '\0', f) <= 0 || fd < 0) {
        fprintf(stderr, "sluice: %s: a damaged journal entry; kept for inspection\n", meta);
        ++*pending;
        goto out;
    }
    uint64_t size = strtoull(line, NULL, 10);
    if ((rc = upload(S->sl, path, fd, size)) < 0) {
        fprintf(stderr, "sluice: %s: upload of what a stopped mount had acknowledged failed "
                        "(%s); kept in the journal and tried again\n", path, sl_errmsg(rc));
        ++*pending;
        rc = 0;
        if (adopt(S, id, fd, path, size) == 0) fd = -1, path = NULL; /* else: next mount's */
        goto out;
    }
    fprintf(stderr, "sluice: %s: uploaded what a stopped mount had acknowledged (%" PRIu64
                    " bytes)\n", path, size);
    drop_entry(S, id, true);
    rc = 2;
out:
    if (f) fclose(f);
    if (fd >= 0) close(fd);
    free(path);
    free(meta);
    free(data);
    return rc;
}

int sl__stages_open(struct stages *S, sl_t *sl, int *recovered, int *pending)
{
    const char *cache = sl_cache_dir(sl);
    *recovered = *pending = 0;
    memset(S, 0, sizeof(*S));
    S->sl = sl;
    pthread_mutex_init(&S->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&S->wake, &ca);
    pthread_condattr_destroy(&ca);
    if (!cache) return SL_E_NO_CACHE; /* nowhere to stage writes: the mount stays read-only */
    if (asprintf(&S->dir, "%s/journal", cache) < 0) {
        S->dir = NULL;
        return -ENOMEM;
    }
    if (mkdir(S->dir, 0700) < 0 && errno != EEXIST) return -errno;

    DIR *d = opendir(S->dir);
    if (!d) return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t id;
        char ext[16];
        if (sscanf(de->d_name, "%16" SCNx64 ".%15s", &id, ext) != 2) continue;
        if (strcmp(ext, "meta") == 0) {
            *recovered += recover_one(S, id, pending) == 2;
        } else if (strcmp(ext, "data") == 0 || strcmp(ext, "meta.tmp") == 0) {
            /* Never acknowledged, if its owner is gone and it has no meta. */
            char *data = entry_path(S, id, "data"), *meta = entry_path(S, id, "meta");
            int fd = data ? open(data, O_RDONLY | O_CLOEXEC) : -1;
            bool mine = fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0;
            if (mine && meta && access(meta, F_OK) < 0) drop_entry(S, id, true);
            if (fd >= 0) close(fd);
            free(data);
            free(meta);
        }
    }
    closedir(d);
    S->retrying = pthread_create(&S->retrier, NULL, retry_main, S) == 0;
    if (!S->retrying)
        fprintf(stderr, "sluice: warning: no retry thread: failed uploads wait for unmount\n");
    return 0;
}

/* Uploads the staged files that changed: all of them, or only the kept ones (acknowledged,
 * their upload failed, no writer has them open: the only ones in the list with no reference).
 * Returns how many failed; *tried: how many it tried. */
static int upload_all(struct stages *S, bool kept_only, size_t *tried)
{
    size_t n = 0, cap = 0;
    struct stage **all = NULL;
    int failed = 0;

    pthread_mutex_lock(&S->lock);
    for (struct stage *s = S->head; s; s = s->next) {
        if (kept_only && s->refs) continue;
        if (n == cap) {
            struct stage **more = realloc(all, (cap = cap ? 2 * cap : 16) * sizeof(*all));
            if (!more) break; /* the rest: the next time */
            all = more;
        }
        s->refs++;
        all[n++] = s;
    }
    pthread_mutex_unlock(&S->lock);
    for (size_t i = 0; i < n; i++) {
        if (sl__stage_upload(S, all[i]) < 0) failed++;
        sl__stage_release(S, all[i]);
    }
    free(all);
    *tried = n;
    return failed;
}

int sl__stages_drain(struct stages *S)
{
    size_t tried;
    return upload_all(S, false, &tried);
}

/* True if a kept file waits for its upload (S->lock held): the only stages in the list that
 * nobody holds. */
static bool any_kept(const struct stages *S)
{
    for (const struct stage *s = S->head; s; s = s->next)
        if (s->refs == 0) return true;
    return false;
}

/* The retry thread: kept files go up as soon as their store takes them again. It sleeps until
 * there is one (sl__stage_release and adopt wake it), then tries at RETRY_FIRST_S, doubling
 * while the store refuses. */
static void *retry_main(void *arg)
{
    struct stages *S = arg;
    unsigned wait_s = RETRY_FIRST_S;

    pthread_mutex_lock(&S->lock);
    while (!S->stop) {
        if (!any_kept(S)) {
            wait_s = RETRY_FIRST_S;
            pthread_cond_wait(&S->wake, &S->lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += wait_s;
        while (!S->stop && pthread_cond_timedwait(&S->wake, &S->lock, &until) == 0) {
        }
        if (S->stop) break;
        pthread_mutex_unlock(&S->lock);
        size_t tried = 0;
        int failed = upload_all(S, true, &tried);
        if (tried)
            fprintf(stderr, "sluice: %zu kept file(s) tried again: %zu in their stores now, %d "
                            "still refused\n", tried, tried - (size_t)failed, failed);
        pthread_mutex_lock(&S->lock);
        if (failed)
            wait_s = wait_s * 2 > RETRY_MAX_S ? RETRY_MAX_S : wait_s * 2;
        else
            wait_s = RETRY_FIRST_S;
    }
    pthread_mutex_unlock(&S->lock);
    return NULL;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const struct stage_entry *)a)->name, ((const struct stage_entry *)b)->name);
}

int sl__stages_in(struct stages *S, const char *dir, struct stage_entry **out, size_t *count)
{
    size_t n = 0, cap = 0, len = strlen(dir);
    struct stage_entry *ents = NULL;
    struct stage **held = NULL;
    int rc = 0;

    *out = NULL;
    *count = 0;
    while (len > 1 && dir[len - 1] == '/') len--;
    pthread_mutex_lock(&S->lock);
    for (struct stage *s = S->head; s; s = s->next) {
        const char *p = s->path;
        if (s->gone || strncmp(p, dir, len) != 0) continue;
        p += len;
        if (len > 1 && *p++ != '/') continue; /* "/a/bc" is not in "/a/b" */
        if (!*p || strchr(p, '/')) continue;  /* in a folder below */
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            struct stage_entry *e = realloc(ents, cap * sizeof(*ents));
            struct stage **h = realloc(held, cap * sizeof(*held));
            if (e) ents = e;
            if (h) held = h;
            if (!e || !h) {
                rc = -ENOMEM;
                break;
            }
        }
        if (!(ents[n].name = strdup(p))) {
            rc = -ENOMEM;
            break;
        }
        s->refs++;
        held[n++] = s;
    }
    pthread_mutex_unlock(&S->lock);
    /* Sizes outside S->lock: a stage's lock is held across its upload. */
    for (size_t i = 0; i < n; i++) {
        ents[i].size = sl__stage_size(held[i]);
        sl__stage_release(S, held[i]);
    }
    free(held);
    if (rc < 0) {
        while (n) free(ents[--n].name);
        free(ents);
        return rc;
    }
    if (n) qsort(ents, n, sizeof(*ents), entry_cmp);
    *out = ents;
    *count = n;
    return 0;
}

void sl__stages_close(struct stages *S)
{
    if (S->retrying) {
        pthread_mutex_lock(&S->lock);
        S->stop = true;
        pthread_cond_broadcast(&S->wake);
        pthread_mutex_unlock(&S->lock);
        pthread_join(S->retrier, NULL);
    }
    while (S->head) {
        struct stage *s = S->head;
        S->head = s->next;
        close(s->fd);
        if (!s->acked || !s->dirty) drop_entry(S, s->id, true); /* else: the next mount's */
        pthread_mutex_destroy(&s->lock);
        free(s->path);
        free(s);
    }
    pthread_cond_destroy(&S->wake);
    pthread_mutex_destroy(&S->lock);
    free(S->dir);
}

/* ---- staged files --------------------------------------------------------------------------- */

struct stage *sl__stage_find(struct stages *S, const char *path)
{
    pthread_mutex_lock(&S->lock);
    struct stage *s = S->head;
    while (s && (s->gone || strcmp(s->path, path) != 0)) s = s->next;
    if (s) s->refs++;
    pthread_mutex_unlock(&S->lock);
    return s;
}

/* Copies the store's bytes of path into fd; 0 if there are none (a new file). */
static int fill(sl_t *sl, const char *path, int fd, uint64_t *size)
{
    sl_file_t *f;
    char *buf = malloc(CHUNK);
    int rc = buf ? sl_file_open(sl, path, &f) : -ENOMEM;
    *size = 0;
    if (rc == -ENOENT) rc = 0;
    if (rc < 0 || !buf) {
        free(buf);
        return rc;
    }
    sl_file_advise(f, 0, UINT64_MAX, SL_ADVISE_SEQUENTIAL);
    for (;;) {
        size_t n;
        if ((rc = sl_file_pread(f, buf, CHUNK, *size, &n)) < 0 || n == 0) break;
        if (pwrite(fd, buf, n, (off_t)*size) != (ssize_t)n) {
            rc = -errno;
            break;
        }
        *size += n;
    }
    sl_file_close(f);
    free(buf);
    return rc;
}

int sl__stage_open(struct stages *S, const char *path, bool truncate, struct stage **out)
{
    struct stage *s = sl__stage_find(S, path);
    int rc;

    if (!S->dir) return -EROFS;
    if (s) {
        if (truncate && (rc = sl__stage_truncate(s, 0)) < 0) {
            sl__stage_release(S, s);
            return rc;
        }
        *out = s;
        return 0;
    }
    if (!(s = calloc(1, sizeof(*s))) || !(s->path = strdup(path))) {
        free(s);
        return -ENOMEM;
    }
    char *data = NULL;
    do {
        free(data);
        data = getrandom(&s->id, sizeof(s->id), 0) == sizeof(s->id) ? entry_path(S, s->id, "data")
                                                                     : NULL;
        s->fd = data ? open(data, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
    } while (s->fd < 0 && errno == EEXIST);
    rc = s->fd < 0 ? -errno : flock(s->fd, LOCK_EX) < 0 ? -errno : 0;
    if (rc == 0 && !truncate) rc = fill(S->sl, path, s->fd, &s->size);
    if (rc < 0) {
        if (s->fd >= 0) {
            close(s->fd);
            unlink(data);
        }
        free(data);
        free(s->path);
        free(s);
        return rc;
    }
    free(data);
    pthread_mutex_init(&s->lock, NULL);
    s->refs = 1;
    s->dirty = truncate; /* a truncating open makes a new (empty) version even if unwritten */
    pthread_mutex_lock(&S->lock);
    s->next = S->head;
    S->head = s;
    pthread_mutex_unlock(&S->lock);
    *out = s;
    return 0;
}

void sl__stage_release(struct stages *S, struct stage *s)
{
    pthread_mutex_lock(&S->lock);
    pthread_mutex_lock(&s->lock);
    /* Acknowledged and not in the store yet (its upload failed): it stays, so the file is
     * still there for readers and the upload is tried again (retry_main). */
    bool keep = s->acked && s->dirty && !s->gone;
    pthread_mutex_unlock(&s->lock);
    if (--s->refs > 0 || keep) {
        if (s->refs == 0) pthread_cond_signal(&S->wake); /* kept: for the retry thread */
        pthread_mutex_unlock(&S->lock);
        return;
    }
    struct stage **p = &S->head;
    while (*p != s) p = &(*p)->next;
    *p = s->next;
    pthread_mutex_unlock(&S->lock);
    close(s->fd); /* first: once its name is gone, its space must be too */
    drop_entry(S, s->id, true);
    pthread_mutex_destroy(&s->lock);
    free(s->path);
    free(s);
}

int sl__stage_write(struct stage *s, const void *buf, size_t len, uint64_t off)
{
    pthread_mutex_lock(&s->lock);
    ssize_t n = pwrite(s->fd, buf, len, (off_t)off);
    int rc = n < 0 ? -errno : (size_t)n != len ? -ENOSPC : 0;
    if (n > 0) {
        s->dirty = true;
        if (off + (uint64_t)n > s->size) s->size = off + (uint64_t)n;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl__stage_read(struct stage *s, void *buf, size_t len, uint64_t off, size_t *n)
{
    pthread_mutex_lock(&s->lock);
    uint64_t size = s->size;
    pthread_mutex_unlock(&s->lock);
    *n = 0;
    if (off >= size) return 0;
    if (len > size - off) len = (size_t)(size - off);
    ssize_t got = pread(s->fd, buf, len, (off_t)off);
    if (got < 0) return -errno;
    *n = (size_t)got;
    return 0;
}

int sl__stage_truncate(struct stage *s, uint64_t size)
{
    pthread_mutex_lock(&s->lock);
    int rc = ftruncate(s->fd, (off_t)size) < 0 ? -errno : 0;
    if (rc == 0) {
        s->size = size;
        s->dirty = true;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

uint64_t sl__stage_size(struct stage *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t size = s->size;
    pthread_mutex_unlock(&s->lock);
    return size;
}

static int sync_locked(struct stages *S, struct stage *s)
{
    if (!s->dirty || s->gone) return 0;
    if (fdatasync(s->fd) < 0) return -errno;
    int rc = write_meta(S, s);
    if (rc == 0) s->acked = true;
    return rc;
}

int sl__stage_sync(struct stages *S, struct stage *s)
{
    pthread_mutex_lock(&s->lock);
    int rc = sync_locked(S, s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl__stage_upload(struct stages *S, struct stage *s)
{
    pthread_mutex_lock(&s->lock);
    int rc = sync_locked(S, s);
    if (rc == 0 && s->dirty && !s->gone) {
        char *path = strdup(s->path);
        rc = path ? upload(S->sl, path, s->fd, s->size) : -ENOMEM;
        if (rc < 0)
            fprintf(stderr, "sluice: %s: upload failed (%s); kept in the journal and tried "
                            "again until the store takes it\n", path ? path : "",
                    sl_errmsg(rc));
        free(path);
    }
    if (rc == 0 && s->dirty && !s->gone) {
        char *meta = entry_path(S, s->id, "meta");
        if (meta) unlink(meta);
        free(meta);
        s->dirty = s->acked = false;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void sl__stage_forget(struct stages *S, struct stage *s)
{
    pthread_mutex_lock(&s->lock);
    s->gone = true;
    char *meta = entry_path(S, s->id, "meta");
    if (meta) unlink(meta);
    free(meta);
    s->acked = false;
    pthread_mutex_unlock(&s->lock);
}

void sl__stages_rename(struct stages *S, const char *from, const char *to)
{
    size_t n = strlen(from);
    pthread_mutex_lock(&S->lock);
    for (struct stage *s = S->head; s; s = s->next) {
        if (strncmp(s->path, from, n) != 0 || (s->path[n] && s->path[n] != '/')) continue;
        char *p = NULL;
        if (asprintf(&p, "%s%s", to, s->path + n) < 0) continue; /* keeps the old name */
        pthread_mutex_lock(&s->lock);
        free(s->path);
        s->path = p;
        pthread_mutex_unlock(&s->lock);
    }
    pthread_mutex_unlock(&S->lock);
}
