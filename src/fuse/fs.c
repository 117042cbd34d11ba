/*
 * fs.c - the namespace as a POSIX file system, on libfuse's low-level API, multithreaded.
 *
 * Inodes. The kernel names files by inode number, sluice by path. A node table maps both ways:
 * a node is made by the first lookup (or readdirplus entry) of a path and lives while the
 * kernel holds lookups on it (nlookup, given back by forget). Numbers count up from 2 (1 is the
 * root) and are never reused within a mount, so a stale number never names another file.
 *
 * Kernel caching. Attribute and entry timeouts follow the mount's metadata_ttl
 * (sl_metadata_ttl): day-long for an immutable dataset (-1), the TTL otherwise; misses are
 * cached as negative entries for the same time. File pages stay in the kernel's page cache
 * from one open to the next (keep_cache) exactly when they are pages of the version the new
 * open pins: every open asks sluice, which pins the store's current version (within the TTL),
 * and a node remembers the version its cached pages are of (see cache_on_open). A hot file is
 * then read at page-cache speed on any mount, and a changed one is never served old pages.
 *
 * Directories stream. An open directory has a lister thread running sl_list into a small ring
 * of entries; readdir takes from it as the kernel asks, so a directory of millions of keys is
 * never in memory whole. The kernel's offsets count entries: a seek back (rewinddir) starts
 * the listing again, a seek forward skips.
 *
 * Reads go to sl_file_pread on the handle opened at open(): the version is pinned there, and
 * the handle's detector sees the kernel's read-ahead as a stream (io/file.c). Writes are
 * staged in the mount's journal on the cache disk and go to the store at close (stage.c, which
 * draws their states); fsync makes them survive a crash.
 *
 * Locking: fs->lock guards the node table (both hash chains, every nlookup, next_ino); a
 * directory's lock guards its ring. Neither is held across a call into sluice.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/fs.h"
#include "fuse/control.h"
#include "fuse/stage.h"

#define DAY_S 86400.0
#define DIR_RING 256
#define BLKSIZE (1U << 20) /* what st_blksize tells readers to ask for at a time */

struct node {
    fuse_ino_t ino;
    uint64_t nlookup;
    uint64_t hash; /* of path */
    char *path;
    struct node *ino_next, *path_next;
    /* The kernel's page cache of this inode (see cache_on_open): the version (hash) the last
     * open pinned, 0 for none or a writer; gen counts the versions it has had. */
    uint64_t version, gen;
    struct handle *shared; /* an open-free mount's handle of this file (see shared_get) */
};

struct handle;

struct fs {
    sl_t *sl;
    uid_t uid;
    gid_t gid;
    struct timespec started; /* the time of entries whose store gives none (directories) */
    struct stages stages;    /* files being written */
    struct control *control; /* MOUNT/.sluice/ (control.c) */
    pthread_mutex_t lock;
    struct node **by_ino, **by_path; /* nbuckets chains each */
    size_t nbuckets, count;
    fuse_ino_t next_ino;
    /* Reads without opens (see shared_get): wanted (-o ro over immutable datasets), and on
     * once the kernel has agreed at init. The handles nodes hold, most recently read first. */
    bool open_free_wanted, open_free;
    struct handle *shared_head, *shared_tail;
    size_t nshared;
};

/* FNV-1a: paths are short, and this needs no dependency beyond libc. */
static uint64_t hash_path(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* ---- the node table ------------------------------------------------------------------------- */

static struct node *find_ino(struct fs *fs, fuse_ino_t ino)
{
    struct node *n = fs->by_ino[ino & (fs->nbuckets - 1)];
    while (n && n->ino != ino) n = n->ino_next;
    return n;
}

static struct node *find_path(struct fs *fs, const char *path, uint64_t hash)
{
    struct node *n = fs->by_path[hash & (fs->nbuckets - 1)];
    while (n && (n->hash != hash || strcmp(n->path, path) != 0)) n = n->path_next;
    return n;
}

static void link_node(struct fs *fs, struct node *n)
{
    size_t i = n->ino & (fs->nbuckets - 1), j = n->hash & (fs->nbuckets - 1);
    n->ino_next = fs->by_ino[i];
    fs->by_ino[i] = n;
    n->path_next = fs->by_path[j];
    fs->by_path[j] = n;
}

/* Doubles the table when it holds as many nodes as buckets (fs->lock held). */
static void grow(struct fs *fs)
{
    size_t old = fs->nbuckets;
    struct node **oi = fs->by_ino, **op = fs->by_path;
    struct node **ni = calloc(old * 2, sizeof(*ni)), **np = calloc(old * 2, sizeof(*np));
    if (!ni || !np) { /* stays at its size: slower, not wrong */
        free(ni);
        free(np);
        return;
    }
    fs->by_ino = ni;
    fs->by_path = np;
    fs->nbuckets = old * 2;
    for (size_t i = 0; i < old; i++)
        for (struct node *n = oi[i], *next; n; n = next) {
            next = n->ino_next;
            link_node(fs, n);
        }
    free(oi);
    free(op);
}

/* The node of path with one more lookup; its inode number, or 0 if out of memory. */
static fuse_ino_t node_ref(struct fs *fs, const char *path)
{
    uint64_t hash = hash_path(path);
    fuse_ino_t ino = 0;

    pthread_mutex_lock(&fs->lock);
    struct node *n = find_path(fs, path, hash);
    if (!n && (n = calloc(1, sizeof(*n)))) {
        if ((n->path = strdup(path))) {
            n->ino = fs->next_ino++;
            n->hash = hash;
            link_node(fs, n);
            if (++fs->count > fs->nbuckets) grow(fs);
        } else {
            free(n);
            n = NULL;
        }
    }
    if (n) {
        n->nlookup++;
        ino = n->ino;
    }
    pthread_mutex_unlock(&fs->lock);
    return ino;
}

/* A copy of ino's path (the caller frees), or NULL if the kernel named a node it forgot. */
static char *node_path(struct fs *fs, fuse_ino_t ino)
{
    pthread_mutex_lock(&fs->lock);
    struct node *n = find_ino(fs, ino);
    char *path = n ? strdup(n->path) : NULL;
    pthread_mutex_unlock(&fs->lock);
    return path;
}

static void unlink_node(struct fs *fs, struct node *n)
{
    struct node **p = &fs->by_ino[n->ino & (fs->nbuckets - 1)];
    while (*p != n) p = &(*p)->ino_next;
    *p = n->ino_next;
    p = &fs->by_path[n->hash & (fs->nbuckets - 1)];
    while (*p != n) p = &(*p)->path_next;
    *p = n->path_next;
    fs->count--;
}

static struct handle *shared_detach(struct fs *fs, struct handle *h);
static void close_handle(struct fs *fs, struct handle *h);

static void node_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
    struct handle *closing = NULL;
    pthread_mutex_lock(&fs->lock);
    struct node *n = find_ino(fs, ino);
    if (n && ino != FUSE_ROOT_ID) {
        n->nlookup = nlookup >= n->nlookup ? 0 : n->nlookup - nlookup;
        if (n->nlookup == 0) {
            if (n->shared) closing = shared_detach(fs, n->shared);
            unlink_node(fs, n);
            free(n->path);
            free(n);
        }
    }
    pthread_mutex_unlock(&fs->lock);
    if (closing) close_handle(fs, closing);
}

/* Renames the node of from, and every node below it, to to's name (a rename in the store). */
static void node_rename(struct fs *fs, const char *from, const char *to)
{
    size_t n = strlen(from);
    pthread_mutex_lock(&fs->lock);
    struct node *moved = NULL;
    for (size_t i = 0; i < fs->nbuckets; i++)
        for (struct node *x = fs->by_ino[i], *next; x; x = next) {
            next = x->ino_next;
            if (strncmp(x->path, from, n) != 0 || (x->path[n] && x->path[n] != '/')) continue;
            char *p = malloc(strlen(to) + strlen(x->path + n) + 1);
            if (!p) continue; /* keeps its old name: the kernel looks it up again */
            sprintf(p, "%s%s", to, x->path + n);
            unlink_node(fs, x);
            free(x->path);
            x->path = p;
            x->hash = hash_path(p);
            x->ino_next = moved; /* relinked below, not met again in this walk */
            moved = x;
        }
    /* A node already at the new name is the file the rename replaced: it keeps its number
     * for the kernel, under a name no path can have. */
    for (struct node *x = moved, *next; x; x = next) {
        next = x->ino_next;
        struct node *old = find_path(fs, x->path, x->hash);
        char *dead = NULL;
        if (old && asprintf(&dead, "\001replaced %lu", (unsigned long)old->ino) > 0) {
            unlink_node(fs, old);
            free(old->path);
            old->path = dead;
            old->hash = hash_path(dead);
            link_node(fs, old);
            fs->count++;
        }
        link_node(fs, x);
        fs->count++;
    }
    pthread_mutex_unlock(&fs->lock);
}

/* ---- replies -------------------------------------------------------------------------------- */

/* The errno a sluice error means to a program using the mount. */
static int errno_of(int rc)
{
    if (rc > -1000) return -rc;
    switch (rc) {
    case SL_E_NO_MOUNT:
    case SL_E_PATH_ESCAPE:
    case SL_E_NO_BUCKET:
        return ENOENT;
    case SL_E_CHANGED:
        return ESTALE; /* the object changed under an open handle: open it again */
    case SL_E_S3_AUTH:
        return EACCES;
    case SL_E_NOT_FILE:
        return EISDIR;
    default:
        return EIO;
    }
}

/* Replies with rc's errno. sluice's own errors are logged with their detail first (the path,
 * the store's answer): the program sees only the number. Call on the thread that failed. */
static void reply_error(fuse_req_t req, int rc)
{
    /* A name outside every mount is just a name that does not exist. */
    if (rc <= -1000 && rc != SL_E_NO_MOUNT && rc != SL_E_PATH_ESCAPE)
        fprintf(stderr, "sluice: %s\n", sl_errmsg(rc));
    fuse_reply_err(req, errno_of(rc));
}

static double timeout_of(struct fs *fs, const char *path)
{
    int64_t ttl;
    if (sl_metadata_ttl(fs->sl, path, &ttl) < 0) return 0;
    return ttl < 0 ? DAY_S : (double)ttl / 1e9;
}

static void attr_of(struct fs *fs, const sl_stat_t *st, fuse_ino_t ino, struct stat *a)
{
    memset(a, 0, sizeof(*a));
    a->st_ino = ino;
    if (st->type == SL_TYPE_DIR) {
        a->st_mode = S_IFDIR | (st->mode & 07777 ? st->mode & 07777 : 0755);
        a->st_nlink = 2;
    } else {
        a->st_mode = S_IFREG | (st->mode & 07777 ? st->mode & 07777 : 0644);
        a->st_nlink = 1;
        a->st_size = (off_t)st->size;
        a->st_blocks = (blkcnt_t)((st->size + 511) / 512);
    }
    a->st_blksize = BLKSIZE;
    a->st_uid = fs->uid;
    a->st_gid = fs->gid;
    if (st->mtime_ns > 0) {
        a->st_mtim.tv_sec = (time_t)(st->mtime_ns / 1000000000);
        a->st_mtim.tv_nsec = (long)(st->mtime_ns % 1000000000);
    } else {
        a->st_mtim = fs->started;
    }
    a->st_atim = a->st_ctim = a->st_mtim;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    char *p = malloc(n + strlen(name) + 2);
    if (p) sprintf(p, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
    return p;
}

/* What a file being written is: its staged size, modified now. */
static sl_stat_t staged_stat(uint64_t size)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (sl_stat_t){.type = SL_TYPE_FILE, .size = size, .mode = 0644,
                       .mtime_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec};
}

/* Metadata of path: a file being written is what its staged bytes are. */
static int stat_path(struct fs *fs, const char *path, sl_stat_t *st)
{
    if (sl__control_path(path)) return sl__control_stat(path, st);
    struct stage *s = sl__stage_find(&fs->stages, path);
    if (!s) return sl_stat(fs->sl, path, st);
    *st = staged_stat(sl__stage_size(s));
    sl__stage_release(&fs->stages, s);
    return 0;
}

/* Replies to a lookup-like request (lookup, create, mkdir) with path's entry. */
static void reply_entry(fuse_req_t req, struct fs *fs, const char *path, const sl_stat_t *st,
                        struct fuse_file_info *fi)
{
    struct fuse_entry_param e = {0};
    if (!(e.ino = node_ref(fs, path))) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    attr_of(fs, st, e.ino, &e.attr);
    e.attr_timeout = e.entry_timeout = timeout_of(fs, path);
    int rc = fi ? fuse_reply_create(req, &e, fi) : fuse_reply_entry(req, &e);
    if (rc != 0) node_forget(fs, e.ino, 1); /* the kernel gave up */
}

/* The path of parent/name (the caller frees), or NULL after replying with the error. */
static char *child_path(fuse_req_t req, struct fs *fs, fuse_ino_t parent, const char *name)
{
    char *dir = node_path(fs, parent);
    char *path = dir ? join(dir, name) : NULL;
    if (!path) fuse_reply_err(req, dir ? ENOMEM : ESTALE);
    free(dir);
    return path;
}

/* ---- metadata ------------------------------------------------------------------------------- */

static void op_init(void *data, struct fuse_conn_info *conn)
{
    struct fs *fs = data;
    /* Nothing changes and nothing is written: the kernel may open files itself (shared_get). */
    if (fs->open_free_wanted && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) {
        conn->want |= FUSE_CAP_NO_OPEN_SUPPORT;
        fs->open_free = true;
        fprintf(stderr, "sluice: read-only over immutable datasets: the kernel opens files "
                        "itself (no open, flush or release requests)\n");
    }
    if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
    if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
    if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
    /* O_TRUNC comes with open, not as a separate truncate: one staged file, not two. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    /* Pages on the cache disk go to the kernel by descriptor: spliced, not read and copied. */
    if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = child_path(req, fs, parent, name);
    sl_stat_t st;
    int rc;

    if (!path) return;
    double t = timeout_of(fs, path);
    if ((rc = stat_path(fs, path, &st)) == -ENOENT && t > 0) {
        struct fuse_entry_param e = {.entry_timeout = t}; /* negative: asked again after t */
        fuse_reply_entry(req, &e);
    } else if (rc < 0) {
        reply_error(req, rc);
    } else {
        reply_entry(req, fs, path, &st, NULL);
    }
    free(path);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    node_forget(fuse_req_userdata(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        node_forget(fuse_req_userdata(req), forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = node_path(fs, ino);
    sl_stat_t st;
    struct stat a;
    int rc;

    (void)fi;
    if (!path) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    if ((rc = stat_path(fs, path, &st)) < 0) {
        reply_error(req, rc);
    } else {
        attr_of(fs, &st, ino, &a);
        fuse_reply_attr(req, &a, timeout_of(fs, path));
    }
    free(path);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fuse_req_userdata(req);
    sl_cache_stats_t s = {0};
    struct statvfs v = {0};

    (void)ino;
    /* What df shows: the cache, the one size a mount of remote stores has. */
    sl_cache_stats(fs->sl, &s);
    v.f_bsize = v.f_frsize = 4096;
    v.f_blocks = s.capacity_bytes / 4096;
    v.f_bfree = v.f_bavail = s.capacity_bytes > s.bytes_cached
                                 ? (s.capacity_bytes - s.bytes_cached) / 4096 : 0;
    v.f_files = v.f_ffree = v.f_favail = 1ULL << 32;
    v.f_namemax = 255;
    fuse_reply_statfs(req, &v);
}

/* ---- directories ---------------------------------------------------------------------------- */

struct dir_ent {
    char *name;
    sl_stat_t st;
};

/* An open directory. Entry offsets: 0 ".", 1 "..", 2 + k the listing's entry k. The ring holds
 * the listing's entries from number ring_first on; the lister thread fills it. */
struct dir {
    struct fs *fs;
    char *path;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct dir_ent ring[DIR_RING];
    size_t head, count;
    uint64_t ring_first; /* listing number of ring[head] */
    uint64_t next;       /* offset of the next entry readdir hands out */
    bool done, stop, running;
    double timeout;      /* the directory's own: its files' (a mount point below is a dir) */
    int err;
    pthread_t lister;
    struct stage_entry *staged; /* files being written here, listed first, sorted */
    size_t nstaged;
};

static int dir_put(void *arg, const sl_dirent_t *ent)
{
    struct dir *d = arg;
    size_t len = strlen(ent->name);

    /* Names no POSIX file can have: skipped (a store key "a//b" has an empty component). */
    if (len == 0 || len > 255 || strchr(ent->name, '/') || strcmp(ent->name, ".") == 0 ||
        strcmp(ent->name, "..") == 0)
        return 0;
    char *name = strdup(ent->name);
    if (!name) return -ENOMEM;
    pthread_mutex_lock(&d->lock);
    while (d->count == DIR_RING && !d->stop) pthread_cond_wait(&d->changed, &d->lock);
    if (d->stop) {
        pthread_mutex_unlock(&d->lock);
        free(name);
        return 1; /* ends sl_list */
    }
    d->ring[(d->head + d->count) % DIR_RING] = (struct dir_ent){name, ent->st};
    d->count++;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    return 0;
}

static int staged_cmp(const void *name, const void *ent)
{
    return strcmp(name, ((const struct stage_entry *)ent)->name);
}

/* A store entry, unless a file being written has its name (it was listed first). */
static int dir_put_stored(void *arg, const sl_dirent_t *ent)
{
    struct dir *d = arg;
    if (d->nstaged && bsearch(ent->name, d->staged, d->nstaged, sizeof(*d->staged), staged_cmp))
        return 0;
    return dir_put(d, ent);
}

static void *dir_main(void *arg)
{
    struct dir *d = arg;
    int rc = 0;
    if (sl__control_path(d->path)) {
        rc = sl__control_list(d->path, dir_put, d);
    } else {
        /* Files being written through this mount first (new ones are not in the store until
         * their close), as stat_path describes them. */
        for (size_t i = 0; i < d->nstaged && rc == 0; i++) {
            sl_dirent_t ent = {.name = d->staged[i].name, .st = staged_stat(d->staged[i].size)};
            rc = dir_put(d, &ent);
        }
        if (rc == 0) rc = sl_list(d->fs->sl, d->path, dir_put_stored, d);
    }
    if (rc < 0) fprintf(stderr, "sluice: %s\n", sl_errmsg(rc));
    pthread_mutex_lock(&d->lock);
    d->done = true;
    d->err = rc < 0 ? rc : 0;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Stops the lister and drops what it listed (d->lock not held). */
static void dir_stop(struct dir *d)
{
    if (d->running) {
        pthread_mutex_lock(&d->lock);
        d->stop = true;
        pthread_cond_broadcast(&d->changed);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->lister, NULL);
        d->running = false;
    }
    for (; d->count; d->count--, d->head = (d->head + 1) % DIR_RING) free(d->ring[d->head].name);
    while (d->nstaged) free(d->staged[--d->nstaged].name);
    free(d->staged);
    d->staged = NULL;
}

/* (Re)starts the listing from its first entry. */
static int dir_start(struct dir *d)
{
    dir_stop(d);
    d->head = d->count = 0;
    d->ring_first = 0;
    d->next = 0;
    d->done = d->stop = false;
    d->err = 0;
    int rc = sl__control_path(d->path) ? 0
                                       : sl__stages_in(&d->fs->stages, d->path, &d->staged,
                                                       &d->nstaged);
    if (rc < 0) return errno_of(rc);
    if (pthread_create(&d->lister, NULL, dir_main, d) != 0) return ENOMEM;
    d->running = true;
    return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct dir *d = calloc(1, sizeof(*d));
    int err;

    if (!d) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    d->fs = fs;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->changed, NULL);
    if (!(d->path = node_path(fs, ino))) {
        err = ESTALE;
    } else {
        /* The listing starts at the first readdir: an open the kernel answers from the
         * listing it keeps sends none. */
        fi->fh = (uintptr_t)d;
        d->timeout = timeout_of(fs, d->path);
        /* Immutable: the kernel keeps the listing, across opens too (without keep_cache
         * each open drops it). */
        fi->cache_readdir = fi->keep_cache = d->timeout >= DAY_S;
        if (fuse_reply_open(req, fi) == 0) return;
        err = 0; /* the kernel gave up on the open: nothing to reply */
    }
    dir_stop(d);
    free(d->path);
    free(d);
    if (err) fuse_reply_err(req, err);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct dir *d = (struct dir *)(uintptr_t)fi->fh;
    (void)ino;
    dir_stop(d);
    pthread_mutex_destroy(&d->lock);
    pthread_cond_destroy(&d->changed);
    free(d->path);
    free(d);
    fuse_reply_err(req, 0);
}

/* Waits until the entry at listing number k is in the ring, or the listing ended before it;
 * drops entries before k (d->lock held). True if it is there. */
static bool dir_reach(struct dir *d, uint64_t k)
{
    for (;;) {
        while (d->count && d->ring_first < k) {
            free(d->ring[d->head].name);
            d->head = (d->head + 1) % DIR_RING;
            d->count--;
            d->ring_first++;
            pthread_cond_broadcast(&d->changed);
        }
        if (d->count) return true;
        if (d->done) return false;
        pthread_cond_wait(&d->changed, &d->lock);
    }
}

static void readdir_common(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi,
                           bool plus)
{
    struct dir *d = (struct dir *)(uintptr_t)fi->fh;
    struct fs *fs = d->fs;
    char *buf = malloc(size);
    size_t used = 0;
    int err = 0;

    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* The first call, or a seek back. */
    if ((!d->running || (uint64_t)off < d->next) && (err = dir_start(d)) != 0) goto out;
    d->next = (uint64_t)off;
    pthread_mutex_lock(&d->lock);
    for (;;) {
        const char *name;
        sl_stat_t dot = {.type = SL_TYPE_DIR};
        const sl_stat_t *st = &dot;
        if (d->next < 2) {
            name = d->next == 0 ? "." : "..";
        } else if (dir_reach(d, d->next - 2)) {
            name = d->ring[d->head].name;
            st = &d->ring[d->head].st;
        } else {
            /* The end, or an error: reported if it is all this call would say. */
            if (d->err && used == 0) err = errno_of(d->err);
            break;
        }
        /* Plain readdir's inode numbers only need be non-zero (some tools skip 0). */
        struct stat a = {.st_mode = st->type == SL_TYPE_DIR ? S_IFDIR : S_IFREG,
                         .st_ino = hash_path(name) | 1};
        size_t need;
        if (!plus) {
            need = fuse_add_direntry(req, buf + used, size - used, name, &a, (off_t)d->next + 1);
        } else {
            struct fuse_entry_param e = {.attr = a};
            need = fuse_add_direntry_plus(req, NULL, 0, name, NULL, 0);
            if (need <= size - used && d->next >= 2) {
                /* The kernel takes a lookup of each entry it gets with attributes. */
                char *path = join(d->path, name);
                pthread_mutex_unlock(&d->lock);
                e.ino = path ? node_ref(fs, path) : 0;
                pthread_mutex_lock(&d->lock);
                if (e.ino) {
                    attr_of(fs, st, e.ino, &e.attr);
                    /* Only a directory can be another mount's point, with its own TTL. */
                    e.attr_timeout = e.entry_timeout =
                        st->type == SL_TYPE_DIR ? timeout_of(fs, path) : d->timeout;
                }
                free(path);
                if (!e.ino) {
                    err = used ? 0 : ENOMEM;
                    break;
                }
            }
            need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e,
                                          (off_t)d->next + 1);
        }
        if (need > size - used) break; /* the next call starts with it */
        used += need;
        d->next++;
    }
    pthread_mutex_unlock(&d->lock);
out:
    if (err)
        fuse_reply_err(req, err);
    else
        fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)ino;
    readdir_common(req, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    (void)ino;
    readdir_common(req, size, off, fi, true);
}

/* ---- files ---------------------------------------------------------------------------------- */

/* An open file: the store's version read through the cache, or the staged file being
 * written (and read back) through this mount. */
struct handle {
    sl_file_t *f;
    struct stage *stage;
    struct control_file *control; /* a file of MOUNT/.sluice/ */
    bool write;       /* opened for writing: its close uploads */
    bool counted;     /* a reader of inode ino in its generation gen (cache_on_open) */
    uint64_t gen;
    fuse_ino_t ino;
    /* A node's shared handle (fs->lock): reads using it now; whether its node let it go (the
     * last user closes it then); its place in the fs's list. */
    unsigned users;
    bool dropped;
    struct node *node;
    struct handle *prev, *next;
};

/* The hash of what a version is: its string and size (never 0: 0 is no version). */
static uint64_t version_hash(const sl_stat_t *st)
{
    uint64_t h = hash_path(st->version) ^ (st->size * 0x9E3779B97F4A7C15ULL);
    return h ? h : 1;
}

/* Whether a new open of path, by a reader of version (0: a writer), may keep the kernel's
 * cached pages of its inode; the kernel drops them otherwise. They are kept when the last open
 * was of that version too. A reader is counted on h, in the node's generation: a newer version
 * opened since makes it stale (cache_current), so that the inode's pages are only ever pages of
 * the version last opened. */
static bool cache_on_open(struct fs *fs, const char *path, uint64_t version, struct handle *h)
{
    bool keep = false;
    pthread_mutex_lock(&fs->lock);
    struct node *n = find_path(fs, path, hash_path(path));
    if (n) {
        keep = version && version == n->version;
        if (version != n->version) {
            n->version = version;
            n->gen++;
        }
        if (version) {
            h->counted = true;
            h->gen = n->gen;
            h->ino = n->ino;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    return keep;
}

/* False when a newer version of h's file has been opened since h was (or it is being written):
 * h's reads would bring pages of its older version into the inode's page cache, where the
 * newer opens read. Such a handle reads no more (ESTALE: open the file again). */
static bool cache_current(struct fs *fs, const struct handle *h)
{
    if (!h->counted) return true;
    pthread_mutex_lock(&fs->lock);
    struct node *n = find_ino(fs, h->ino);
    bool current = !n || n->gen == h->gen;
    pthread_mutex_unlock(&fs->lock);
    return current;
}

static bool writing(const struct fuse_file_info *fi)
{
    return (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
}

/* Opens path for fi's flags into a new handle. */
static int open_handle(struct fs *fs, const char *path, struct fuse_file_info *fi, bool create,
                       struct handle **out)
{
    struct handle *h = calloc(1, sizeof(*h));
    int rc;

    if (!h) return -ENOMEM;
    h->write = create || writing(fi);
    if (sl__control_path(path)) {
        if (create || (rc = sl__control_open(fs->control, path, h->write, fi->flags & O_APPEND,
                                                 &h->control)) < 0) {
            free(h);
            return create ? -EACCES : rc;
        }
        fi->direct_io = 1; /* no size: reads and writes come to us as they are */
        fi->fh = (uintptr_t)h;
        *out = h;
        return 0;
    }
    char *uri = NULL;
    if (h->write && ((rc = sl_resolve(fs->sl, path, &uri)) < 0 || !uri)) {
        free(uri);
        free(h);
        return -EROFS; /* outside every mount: the namespace's own folders hold no files */
    }
    free(uri);
    if (h->write)
        rc = sl__stage_open(&fs->stages, path, create || (fi->flags & O_TRUNC), &h->stage);
    else if ((h->stage = sl__stage_find(&fs->stages, path)))
        rc = 0; /* being written through this mount: read what was written */
    else
        rc = sl_file_open(fs->sl, path, &h->f);
    if (rc < 0) {
        free(h);
        return rc;
    }
    /* The kernel keeps the pages it has of the version this open pinned; a file being written
     * never (its bytes change under the cache). */
    uint64_t version = h->f ? version_hash(sl_file_stat(h->f)) : 0;
    fi->keep_cache = cache_on_open(fs, path, version, h);
    /* A reader's close has nothing to flush: no FLUSH round trip per file read. */
    fi->noflush = !h->write;
    fi->fh = (uintptr_t)h;
    *out = h;
    return 0;
}

static void close_handle(struct fs *fs, struct handle *h)
{
    sl__control_close(h->control);
    if (h->stage) sl__stage_release(&fs->stages, h->stage);
    sl_file_close(h->f);
    free(h);
}

/* Reads without opens. A read-only mount of immutable datasets (`-o ro`, every mount with
 * metadata_ttl: -1; sl_immutable) answers the kernel's first OPEN with ENOSYS, and its first
 * FLUSH too: from then on the kernel opens and closes files by itself, keeps their pages from
 * one open to the next, and sends no OPEN, FLUSH or RELEASE at all (the connection's no_open
 * and no_flush). A re-read of a file whose pages the kernel holds is then no round trip to
 * sluice: the cost FUSE puts on every small file is gone. Nothing is lost by it there: no
 * version can change (no pin to take at open), nothing is written (no upload at close), and
 * .sluice/order cannot be written on a read-only mount.
 *
 * Reads then come with no handle (fh 0). The first read of a file that reaches sluice opens it
 * (sl_file_open: the orders see it as a reader's open) into a handle its node keeps, shared by
 * every reader of the file, as one handle is by the threads reading it: the detector tells
 * their streams apart. The handle is closed when the kernel forgets the inode, or when more
 * than SHARED_MAX are kept: the least recently read one goes then. */
#define SHARED_MAX 4096

static void shared_unlink(struct fs *fs, struct handle *h)
{
    if (h->prev) h->prev->next = h->next;
    else fs->shared_head = h->next;
    if (h->next) h->next->prev = h->prev;
    else fs->shared_tail = h->prev;
    h->prev = h->next = NULL;
}

static void shared_push(struct fs *fs, struct handle *h)
{
    h->next = fs->shared_head;
    if (fs->shared_head) fs->shared_head->prev = h;
    else fs->shared_tail = h;
    fs->shared_head = h;
}

/* One more read uses h, now the most recently read (fs->lock held). */
static void shared_use(struct fs *fs, struct handle *h)
{
    h->users++;
    shared_unlink(fs, h);
    shared_push(fs, h);
}

/* Takes h from its node (fs->lock held). Returns h when the caller is to close it now (after
 * the lock), NULL when reads use it still: the last of them closes it. */
static struct handle *shared_detach(struct fs *fs, struct handle *h)
{
    shared_unlink(fs, h);
    fs->nshared--;
    h->node->shared = NULL;
    h->node = NULL;
    h->dropped = true;
    return h->users ? NULL : h;
}

/* The shared handle of ino for one read (given back with shared_put), opened if its node has
 * none; NULL with *rc on failure. */
static struct handle *shared_get(struct fs *fs, fuse_ino_t ino, int *rc)
{
    struct handle *h = NULL, *mine, *closing = NULL;

    pthread_mutex_lock(&fs->lock);
    struct node *n = find_ino(fs, ino);
    if (n && (h = n->shared)) shared_use(fs, h);
    char *path = n && !h ? strdup(n->path) : NULL;
    pthread_mutex_unlock(&fs->lock);
    if (h) return h;
    if (!path) {
        *rc = n ? -ENOMEM : -ESTALE;
        return NULL;
    }
    /* Opened outside the lock: a first open may ask the store. */
    if (!(mine = calloc(1, sizeof(*mine)))) *rc = -ENOMEM;
    else if ((*rc = sl_file_open(fs->sl, path, &mine->f)) < 0) mine = (free(mine), NULL);
    free(path);
    if (!mine) return NULL;
    mine->users = 1;

    pthread_mutex_lock(&fs->lock);
    n = find_ino(fs, ino);
    if (n && n->shared) { /* another read opened it meanwhile: use that one */
        shared_use(fs, h = n->shared);
        closing = mine;
    } else if (n) {
        h = n->shared = mine;
        mine->node = n;
        shared_push(fs, mine);
        if (++fs->nshared > SHARED_MAX) closing = shared_detach(fs, fs->shared_tail);
    } else { /* forgotten meanwhile: a handle for this read alone */
        h = mine;
        mine->dropped = true;
    }
    pthread_mutex_unlock(&fs->lock);
    if (closing) close_handle(fs, closing);
    return h;
}

static void shared_put(struct fs *fs, struct handle *h)
{
    pthread_mutex_lock(&fs->lock);
    bool last = --h->users == 0 && h->dropped;
    pthread_mutex_unlock(&fs->lock);
    if (last) close_handle(fs, h);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct handle *h;
    int rc;

    if (fs->open_free) { /* the kernel opens files itself from now on (shared_get) */
        fuse_reply_err(req, ENOSYS);
        return;
    }
    char *path = node_path(fs, ino);
    if (!path) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    if ((rc = open_handle(fs, path, fi, false, &h)) < 0)
        reply_error(req, rc);
    else if (fuse_reply_open(req, fi) != 0)
        close_handle(fs, h);
    free(path);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = child_path(req, fs, parent, name);
    struct handle *h;
    int rc;

    (void)mode; /* stores keep no modes: files are 0644 */
    if (!path) return;
    if ((rc = open_handle(fs, path, fi, true, &h)) < 0) {
        reply_error(req, rc);
    } else {
        sl_stat_t st = {.type = SL_TYPE_FILE, .mode = 0644};
        reply_entry(req, fs, path, &st, fi);
    }
    free(path);
}

/* Reads of the store's version are answered from the cache's pages themselves: from RAM the
 * kernel copies them once (fuse_reply_iov), with no copy of ours in between; pages on the
 * cache disk go as their page file's descriptor (fuse_reply_data), which the kernel reads (or
 * splices) just the asked bytes of. */
#define READ_EXTENTS 32

static void reply_extents(fuse_req_t req, const sl_extent_t *ext, int count)
{
    bool fds = false;
    for (int i = 0; i < count; i++) fds |= ext[i].data == NULL;
    if (!fds) {
        struct iovec iov[READ_EXTENTS];
        for (int i = 0; i < count; i++) iov[i] = (struct iovec){(void *)ext[i].data, ext[i].len};
        fuse_reply_iov(req, iov, count);
        return;
    }
    /* A fuse_bufvec ends in buf[1]: room for READ_EXTENTS of them. */
    _Alignas(struct fuse_bufvec) char raw[sizeof(struct fuse_bufvec) +
                                          (READ_EXTENTS - 1) * sizeof(struct fuse_buf)];
    struct fuse_bufvec *v = (struct fuse_bufvec *)raw;
    *v = (struct fuse_bufvec){.count = (size_t)count};
    for (int i = 0; i < count; i++) {
        struct fuse_buf *x = &v->buf[i];
        *x = (struct fuse_buf){.size = ext[i].len};
        if (ext[i].data) {
            x->mem = (void *)ext[i].data;
        } else {
            x->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
            x->fd = ext[i].fd;
            x->pos = (off_t)ext[i].fd_off;
        }
    }
    fuse_reply_data(req, v, 0); /* no SPLICE_MOVE: the page file keeps its cached pages */
}

static void read_handle(fuse_req_t req, struct fs *fs, struct handle *h, size_t size, off_t off)
{
    size_t n = 0;
    int rc;

    if (!cache_current(fs, h)) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    if (h->control) {
        char out[4096];
        sl__control_read(h->control, out, size < sizeof(out) ? size : sizeof(out), (uint64_t)off, &n);
        fuse_reply_buf(req, out, n);
        return;
    }
    if (h->f) {
        sl_extent_t ext[READ_EXTENTS];
        int count;
        if ((rc = sl_file_map(h->f, (uint64_t)off, size, ext, READ_EXTENTS, &count, &n)) < 0) {
            reply_error(req, rc);
            return;
        }
        uint64_t fsize = sl_file_stat(h->f)->size;
        /* A short reply is the end of the file to the kernel: with pages too small for the
         * extents to cover the read, copy instead. */
        if (n == size || (uint64_t)off + n >= fsize) {
            reply_extents(req, ext, count);
            /* Not h->f's: once the reply is out, the file may be closed by now. */
            sl_unmap(fs->sl, ext, count);
            return;
        }
        sl_unmap(fs->sl, ext, count);
    }
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rc = h->stage ? sl__stage_read(h->stage, buf, size, (uint64_t)off, &n)
                  : sl_file_pread(h->f, buf, size, (uint64_t)off, &n);
    if (rc < 0)
        reply_error(req, rc);
    else
        fuse_reply_buf(req, buf, n);
    free(buf);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    int rc;

    if (h) {
        read_handle(req, fs, h, size, off);
    } else if (!fs->open_free) {
        fuse_reply_err(req, EBADF);
    } else if (!(h = shared_get(fs, ino, &rc))) {
        reply_error(req, rc);
    } else {
        read_handle(req, fs, h, size, off);
        shared_put(fs, h);
    }
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)ino;
    if (!h || (!h->stage && !h->control)) {
        fuse_reply_err(req, EBADF);
        return;
    }
    int rc = h->control ? sl__control_write(h->control, buf, size, (uint64_t)off)
                        : sl__stage_write(h->stage, buf, size, (uint64_t)off);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

/* close(2): what was written goes to the store now; its failure is the writer's EIO (the bytes
 * stay in the journal). Called for every close of a descriptor, so once per dup too. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)ino;
    if (!h) { /* an open-free mount's file: no writer, and no FLUSH from now on */
        fuse_reply_err(req, fs->open_free ? ENOSYS : 0);
        return;
    }
    if (h->control) {
        int rc = sl__control_flush(fs->control, h->control);
        fuse_reply_err(req, rc == 0 ? 0 : rc == -ENOMEM ? ENOMEM : EINVAL);
        return;
    }
    int rc = h->write ? sl__stage_upload(&fs->stages, h->stage) : 0;
    fuse_reply_err(req, rc < 0 ? EIO : 0);
}

/* fsync(2): durable in the journal before it returns; a mount that dies later uploads it at
 * its next start. */
static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;
    (void)ino;
    (void)datasync;
    int rc = h && h->stage ? sl__stage_sync(&fs->stages, h->stage) : 0;
    fuse_reply_err(req, rc < 0 ? EIO : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if (fi->fh) close_handle(fuse_req_userdata(req), (struct handle *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

/* Only the size can change (truncate); modes, owners and times are the store's, and a change
 * of them is accepted and has no effect (cp -p and tar must not fail on it). */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = node_path(fs, ino);
    sl_stat_t st;
    int rc = 0;

    if (!path) {
        fuse_reply_err(req, ESTALE);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_SIZE) && !sl__control_path(path)) {
        struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
        struct stage *s = h && h->stage ? h->stage : NULL;
        bool own = !s;
        if (own) rc = sl__stage_open(&fs->stages, path, attr->st_size == 0, &s);
        if (rc == 0) rc = sl__stage_truncate(s, (uint64_t)attr->st_size);
        /* truncate(2) of a path: no close will follow, so it goes to the store now. */
        if (own && rc == 0) rc = sl__stage_upload(&fs->stages, s);
        if (own && s) sl__stage_release(&fs->stages, s);
    }
    if (rc == 0) rc = stat_path(fs, path, &st);
    if (rc < 0) {
        reply_error(req, rc);
    } else {
        struct stat a;
        attr_of(fs, &st, ino, &a);
        fuse_reply_attr(req, &a, timeout_of(fs, path));
    }
    free(path);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = child_path(req, fs, parent, name);
    sl_stat_t st;
    int rc;

    (void)mode;
    if (!path) return;
    if ((rc = sl_stat(fs->sl, path, &st)) == 0)
        rc = -EEXIST;
    else if (rc == -ENOENT && (rc = sl_mkdir(fs->sl, path)) == 0)
        rc = sl_stat(fs->sl, path, &st);
    if (rc < 0)
        reply_error(req, rc);
    else
        reply_entry(req, fs, path, &st, NULL);
    free(path);
}

static int first_entry(void *arg, const sl_dirent_t *ent)
{
    (void)arg;
    (void)ent;
    return 1; /* one is enough */
}

static void remove_common(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
    struct fs *fs = fuse_req_userdata(req);
    char *path = child_path(req, fs, parent, name);
    sl_stat_t st;
    int rc;

    if (!path) return;
    if ((rc = stat_path(fs, path, &st)) == 0) {
        if (dir && st.type != SL_TYPE_DIR)
            rc = -ENOTDIR;
        else if (!dir && st.type == SL_TYPE_DIR)
            rc = -EISDIR;
        /* An object store's directory lasts while keys are below it: check, as rmdir must. */
        else if (dir && (rc = sl_list(fs->sl, path, first_entry, NULL)) == 1)
            rc = -ENOTEMPTY;
    }
    struct stage *s = rc == 0 && !dir ? sl__stage_find(&fs->stages, path) : NULL;
    if (rc == 0 && (rc = sl_remove(fs->sl, path)) == -ENOENT && s) rc = 0; /* never uploaded */
    if (s) {
        if (rc == 0) sl__stage_forget(&fs->stages, s);
        sl__stage_release(&fs->stages, s);
    }
    if (rc < 0)
        reply_error(req, rc);
    else
        fuse_reply_err(req, 0);
    free(path);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, false);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_common(req, parent, name, true);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct fs *fs = fuse_req_userdata(req);
    char *from = child_path(req, fs, parent, name);
    char *to = from ? child_path(req, fs, newparent, newname) : NULL;
    sl_stat_t st;
    int rc = 0;

    if (!to) {
        free(from);
        return;
    }
    if (flags & ~RENAME_NOREPLACE)
        rc = -EINVAL; /* RENAME_EXCHANGE: no store can swap two names at once */
    else if ((flags & RENAME_NOREPLACE) && stat_path(fs, to, &st) == 0)
        rc = -EEXIST;
    /* A file being written that its store does not have yet (write to a temp name, then
     * rename: the usual safe save) goes up first, then is renamed there. */
    struct stage *s = rc == 0 ? sl__stage_find(&fs->stages, from) : NULL;
    if (s) rc = sl__stage_upload(&fs->stages, s);
    if (rc == 0) rc = sl_rename(fs->sl, from, to);
    if (rc == 0) {
        sl__stages_rename(&fs->stages, from, to);
        node_rename(fs, from, to);
    }
    if (s) sl__stage_release(&fs->stages, s);
    if (rc < 0)
        reply_error(req, rc);
    else
        fuse_reply_err(req, 0);
    free(from);
    free(to);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .statfs = op_statfs,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .setattr = op_setattr,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
};

/* ---- the session ---------------------------------------------------------------------------- */

static void fs_free(struct fs *fs)
{
    while (fs->shared_head) close_handle(fs, shared_detach(fs, fs->shared_head));
    for (size_t i = 0; i < fs->nbuckets; i++)
        for (struct node *n = fs->by_ino[i], *next; n; n = next) {
            next = n->ino_next;
            free(n->path);
            free(n);
        }
    free(fs->by_ino);
    free(fs->by_path);
    pthread_mutex_destroy(&fs->lock);
}

/* Whether the -o list opts mounts read-only: the last of "ro" and "rw" wins, as in mount(8);
 * a comma escaped with a backslash is part of its option. */
static bool read_only(const char *opts)
{
    bool ro = false;
    for (const char *p = opts; p && *p;) {
        const char *end = p;
        while (*end && *end != ',') end += end[0] == '\\' && end[1] ? 2 : 1;
        size_t len = (size_t)(end - p);
        if (len == 2 && (strncmp(p, "ro", 2) == 0 || strncmp(p, "rw", 2) == 0)) ro = p[1] == 'o';
        p = *end ? end + 1 : end;
    }
    return ro;
}

int sl_fs_serve(sl_t *sl, const struct sl_fs_options *o)
{
    struct fs fs = {.sl = sl, .uid = getuid(), .gid = getgid(), .nbuckets = 1024, .next_ino = 2};
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_session *se = NULL;
    struct fuse_loop_config *loop = NULL;
    int rc = -ENOMEM;

    clock_gettime(CLOCK_REALTIME, &fs.started);
    pthread_mutex_init(&fs.lock, NULL);
    fs.by_ino = calloc(fs.nbuckets, sizeof(*fs.by_ino));
    fs.by_path = calloc(fs.nbuckets, sizeof(*fs.by_path));
    struct node *root = calloc(1, sizeof(*root));
    if (!fs.by_ino || !fs.by_path || !root || !(root->path = strdup("/"))) {
        free(root);
        goto out;
    }
    *root = (struct node){.ino = FUSE_ROOT_ID, .nlookup = 1, .hash = hash_path("/"),
                          .path = root->path};
    link_node(&fs, root);
    fs.count = 1;

    /* default_permissions: the kernel checks the modes sluice reports. The source names our
     * process ("sluice:PID" in /proc/mounts): `sluice umount` waits for it to finish. */
    char base[64];
    snprintf(base, sizeof(base), "fsname=sluice:%ld,subtype=sluice,default_permissions",
             (long)getpid());
    if (fuse_opt_add_arg(&args, "sluice") || fuse_opt_add_arg(&args, "-o") ||
        fuse_opt_add_arg(&args, base))
        goto out;
    if (o->fuse_opts && (fuse_opt_add_arg(&args, "-o") || fuse_opt_add_arg(&args, o->fuse_opts)))
        goto out;
    if (o->debug && fuse_opt_add_arg(&args, "-d")) goto out;

    /* What a mount that died had acknowledged goes to the stores before anything else. */
    int recovered = 0, pending = 0;
    if ((rc = sl__stages_open(&fs.stages, sl, &recovered, &pending)) < 0)
        fprintf(stderr, "sluice: warning: no write journal (%s): the mount is read-only\n",
                sl_errmsg(rc));
    if (recovered || pending)
        fprintf(stderr, "sluice: %d file(s) a stopped mount had written are in their stores "
                        "now%s\n", recovered, pending ? "; some are not yet (see above)" : "");

    /* Files a stopped mount left waiting for their store are read from the journal, and will
     * change the store when they go up: such a mount keeps its opens. */
    fs.open_free_wanted = read_only(o->fuse_opts) && sl_immutable(sl) && !pending;
    if ((rc = sl__control_init(sl, o->mountpoint, &fs.control)) < 0) goto out;
    rc = -EINVAL;
    if (!(se = fuse_session_new(&args, &ops, sizeof(ops), &fs))) {
        fprintf(stderr, "sluice: mount options '%s' not accepted (see above)\n",
                o->fuse_opts ? o->fuse_opts : "");
        goto out;
    }
    if (fuse_set_signal_handlers(se) != 0) goto out;
    if (fuse_session_mount(se, o->mountpoint) != 0) {
        fprintf(stderr, "sluice: %s: could not mount (see above)\n", o->mountpoint);
        fuse_remove_signal_handlers(se);
        goto out;
    }
    if (o->ready) o->ready(o->ready_arg);

    rc = -ENOMEM;
    if ((loop = fuse_loop_cfg_create())) {
        /* Requests block on the stores: enough threads that slow reads do not hold up lookups. */
        fuse_loop_cfg_set_max_threads(loop, 64);
        fuse_loop_cfg_set_idle_threads(loop, 16);
        rc = fuse_session_loop_mt(se, loop) < 0 ? -EIO : 0;
        fuse_loop_cfg_destroy(loop);
    }
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    /* Files still open when the mount went away (a lazy unmount, a signal): what they
     * acknowledged goes up now, or stays in the journal for the next mount. */
    int failed = sl__stages_drain(&fs.stages);
    if (failed) fprintf(stderr, "sluice: %d file(s) stay in the journal for the next mount\n", failed);
out:
    if (se) fuse_session_destroy(se);
    fuse_opt_free_args(&args);
    sl__control_fini(fs.control); /* stops a running order: before the stages, which it reads */
    sl__stages_close(&fs.stages);
    fs_free(&fs);
    return rc;
}
