/*
 * disk.c - the disk tier: one file per page under <dir>/pages, indexed in LMDB, shared by every
 * process that uses the cache directory, with a hard limit on the bytes its pages hold.
 *
 * Layout:
 *   <dir>/index/          LMDB: pages, queue, ghost, reserve, files, state (see core/db.c)
 *   <dir>/pages/ab/<n>    a page file: the pages of one run, each at a block-aligned offset;
 *                         <n> is the file's number in 16 hex digits, ab its last two
 *   <dir>/owners/<id>     one lock file per live process using the cache
 *
 * Page files: the pages one store request fetched (a run, up to SL_DISK_RUN_MAX) are written to
 * one new file. A new file costs the file system an inode, which on ext4 after deletions (a
 * cache that evicts) costs more CPU than the page's bytes; a run of 8 costs one. The files
 * table counts the indexed pages of each file: evicting a page punches its hole (the space is
 * free at once, so the limit holds), evicting its last one removes the file. On a file system
 * that cannot punch holes, every page gets a file of its own.
 *
 * A page's life on disk (each arrow is one LMDB transaction, or a file operation between them):
 *
 *   absent --reserve--> RESERVED --write its file--> RESERVED+FILE --commit--> CACHED
 *      ^        |                                                                  |
 *      |        +-- (space made by evicting CACHED pages, in the same transaction) |
 *      +--------------------- evicted / freed / failed its checksum ---------------+
 *
 * Pages come in runs (the pages one store request fetched): a run is reserved in one
 * transaction and committed in one, so a stream costs two index commits per run, not per page.
 *
 * The hard limit: bytes_cached + bytes_reserved <= capacity is checked and kept in the same
 * transaction that reserves, and every page file on disk belongs to exactly one reservation or
 * one index record. So the files never exceed the limit, whichever processes write at once.
 * A page is charged its size rounded up to 4 KiB, the space it really takes on the file system.
 *
 * Crash safety: a page becomes visible only by the commit that indexes it, after its file was
 * written whole, so no reader ever sees a torn page (readers open only indexed pages). A process
 * killed in between leaves a reservation naming it (its owner id); the next process to open the
 * cache, or to reserve that key, sees the owner is gone and removes the unindexed page file.
 * Evicted files are unlinked inside the evicting transaction, before it commits: a kill there
 * leaves an index record without a file (read as a miss and dropped), never a file without one.
 *
 * Integrity: each record holds the XXH3-64 of the page. A read of a whole page from disk is
 * verified; a mismatch is counted (checksum_failures), the page dropped, and the caller fetches
 * it again. The checksum is there for what a crash or a bad disk leaves behind, so a page needs
 * checking once per process: pages this process wrote or checked are remembered (by file and
 * offset: file numbers are never reused), and only those are served by descriptor.
 *
 * Serving by descriptor (sl__disk_hold): the reader's file system is handed the page file and
 * reads just the bytes it needs (4 KiB of a 1 MiB page, not the page). Nothing may punch the
 * page out while it does: a reader holds a shared flock on the page file, taken before it
 * checks that the record still points there; whoever punches a hole takes the exclusive lock
 * (without waiting, for an eviction: a page being read is not a victim) and keeps it until
 * its transaction has committed, so a reader who got the lock later finds the record gone.
 * Removing a file's last page unlinks the file, which open descriptors survive.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cache/tier.h"

#define BLOCK 4096ULL
#define WRITE_BACKOFF_NS (10ULL * 1000000000ULL)
#define FORMAT_VERSION 2 /* 2: page files hold runs of pages */

struct sl_page_rec {
    uint32_t size;
    uint8_t queue;
    uint8_t freq;
    uint8_t pad[2];
    uint64_t checksum;
    uint64_t seq;
    uint64_t file; /* the page file that holds it */
    uint64_t off;  /* where in that file */
};

struct sl_reservation {
    uint64_t owner; /* the writer's owner id: its lock file is owners/<id> */
    uint64_t charge;
    uint64_t file; /* the page file the writer is writing it to */
};

struct sl_disk {
    char *dir, *pages_dir, *owners_dir;
    struct sl_db *db;
    uint64_t capacity;
    uint64_t owner;  /* random, for the life of this instance */
    int owner_fd;    /* owners/<owner>, flock'ed exclusively while we live */
    _Atomic uint64_t write_backoff_until; /* mono ns; no inserts before it */
    _Atomic bool direct_ok;               /* the file system takes O_DIRECT writes */
    bool punch_ok;                        /* ...and punches holes: runs share a file */
    struct sl_counters *ctr;

    /* Pages known good in this process: a set of hash(file, off), open addressing, 0 free. */
    pthread_mutex_t checked_lock;
    uint64_t *checked;
    size_t checked_mask, checked_count;
};

/* Space to give back when a transaction commits: a file to remove (len 0) or a page's hole to
 * punch in it. */
struct doomed {
    char *path;
    uint64_t off, len;
    int fd; /* a hole: its file, locked exclusively (-1: readers hold it; left unpunched) */
};

/* A page file locked exclusively by a transaction that punches holes in it. */
struct file_lock {
    uint64_t file;
    int fd; /* -1: could not be locked */
};

/* A write transaction, as the eviction backend's context. The space of pages it removes is
 * given back by dtx_commit() just before the commit, and not at all if it aborts: a transaction
 * that fails half way must not leave index records whose bytes are gone. */
struct dtx {
    struct sl_disk *d;
    MDB_txn *txn;
    struct doomed *doomed;
    size_t ndoomed, cap;
    struct file_lock *locks;
    size_t nlocks, locks_cap;
    struct sl_evict_backend be;
};

/* Writes all of data at off; -errno on failure. */
static int pwrite_all(int fd, const void *data, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, data, len, off);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -errno;
        if (w == 0) return -EIO;
        data = (const char *)data + w;
        len -= (size_t)w;
        off += w;
    }
    return 0;
}

static uint64_t charge_of(uint64_t size)
{
    return (size + BLOCK - 1) / BLOCK * BLOCK;
}

char *sl__disk_file_path(struct sl_disk *d, uint64_t file)
{
    return sl__asprintf("%s/%02x/%016llx", d->pages_dir, (unsigned)(file & 0xff),
                        (unsigned long long)file);
}

/* Is the instance that wrote `owner` still alive? Each instance holds an exclusive flock on
 * owners/<id> for its whole life, and the kernel drops it when the process dies however it
 * dies. A lock works across pid namespaces (containers sharing a cache directory), where pids
 * and their start times would not. A dead owner's lock file is removed on the way. */
static bool owner_alive(struct sl_disk *d, uint64_t owner)
{
    if (owner == d->owner) return true;
    char *path = sl__asprintf("%s/%016llx", d->owners_dir, (unsigned long long)owner);
    if (!path) return true; /* cannot tell: the safe answer */
    bool alive = true;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        alive = errno != ENOENT;
    } else {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            alive = false;
            unlink(path);
        } else {
            alive = errno == EWOULDBLOCK;
        }
        close(fd);
    }
    free(path);
    return alive;
}

/* The lock file appears under its name already locked (made under a name sweeps ignore, locked,
 * then renamed): otherwise another process could take the lock in between, judge us dead and
 * remove it, and every later liveness check would find no file. */
static int owner_register(struct sl_disk *d)
{
    for (int tries = 0; tries < 64; tries++) {
        if (getrandom(&d->owner, sizeof(d->owner), 0) != sizeof(d->owner)) return -EIO;
        if (!d->owner) continue;
        char *path = sl__asprintf("%s/%016llx", d->owners_dir, (unsigned long long)d->owner);
        char *tmp = sl__asprintf("%s/.new.%016llx", d->owners_dir, (unsigned long long)d->owner);
        int rc = 0, fd = -1;
        if (!path || !tmp) rc = -ENOMEM;
        else if ((fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0) rc = -errno;
        else if (flock(fd, LOCK_EX | LOCK_NB) < 0) rc = -errno;
        /* link() fails if the name exists: ids are random, but never take over another's. */
        else if (link(tmp, path) < 0) rc = -errno;
        if (tmp && fd >= 0) unlink(tmp);
        free(path);
        free(tmp);
        if (rc < 0 && fd >= 0) close(fd);
        /* EEXIST: the id is taken. ENOENT: a sweep took the new file for an abandoned one
         * in the instant before we locked it. Either way, again with a new id. */
        if (rc == -EEXIST || rc == -ENOENT) continue;
        if (rc < 0) return rc;
        d->owner_fd = fd;
        return 0;
    }
    return -EEXIST;
}

static const char *qname(int q, const char *what, char *buf, size_t len)
{
    snprintf(buf, len, "q%d.%s", q, what);
    return buf;
}

static void queue_key(uint8_t out[9], int q, uint64_t seq)
{
    out[0] = (uint8_t)q;
    for (int i = 0; i < 8; i++) out[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

static uint64_t next_seq(struct dtx *t, const char *name)
{
    uint64_t s = sl__db_get_u64(t->d->db, t->txn, name) + 1;
    sl__db_put_u64(t->d->db, t->txn, name, s);
    return s;
}

static int get_rec(struct dtx *t, const uint8_t key[SL_PAGE_KEY_LEN], struct sl_page_rec *rec)
{
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key}, v;
    int rc = mdb_get(t->txn, t->d->db->dbi[SL_DB_PAGES], &k, &v);
    if (rc) return sl__mdb_err(rc);
    if (v.mv_size != sizeof(*rec)) return SL_E_CORRUPT;
    memcpy(rec, v.mv_data, sizeof(*rec));
    return 0;
}

static int put_rec(struct dtx *t, const uint8_t key[SL_PAGE_KEY_LEN], const struct sl_page_rec *rec)
{
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key}, v = {sizeof(*rec), (void *)rec};
    return sl__mdb_err(mdb_put(t->txn, t->d->db->dbi[SL_DB_PAGES], &k, &v, 0));
}

static int queue_put(struct dtx *t, int q, uint64_t seq, const void *val, size_t len)
{
    uint8_t qk[9];
    queue_key(qk, q, seq);
    MDB_val k = {sizeof(qk), qk}, v = {len, (void *)val};
    return sl__mdb_err(mdb_put(t->txn, t->d->db->dbi[SL_DB_QUEUE], &k, &v, 0));
}

static void queue_del(struct dtx *t, int q, uint64_t seq)
{
    uint8_t qk[9];
    queue_key(qk, q, seq);
    MDB_val k = {sizeof(qk), qk};
    mdb_del(t->txn, t->d->db->dbi[SL_DB_QUEUE], &k, NULL);
}

static void queue_account(struct dtx *t, int q, int64_t bytes, int64_t count)
{
    char name[32];
    sl__db_add_u64(t->d->db, t->txn, qname(q, "bytes", name, sizeof(name)), bytes);
    sl__db_add_u64(t->d->db, t->txn, qname(q, "count", name, sizeof(name)), count);
}

/* ---- the eviction backend, inside one write transaction ---- */

static int be_head(void *ctx, int q, struct sl_evict_entry *e)
{
    struct dtx *t = ctx;
    MDB_cursor *cur;
    int rc = sl__mdb_err(mdb_cursor_open(t->txn, t->d->db->dbi[SL_DB_QUEUE], &cur));
    if (rc < 0) return rc;
    for (;;) {
        uint8_t qk[9];
        queue_key(qk, q, 0);
        MDB_val k = {sizeof(qk), qk}, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != 9 ||
            ((uint8_t *)k.mv_data)[0] != q) {
            rc = -ENOENT;
            break;
        }
        struct sl_page_rec rec;
        if (v.mv_size == SL_PAGE_KEY_LEN && get_rec(t, v.mv_data, &rec) == 0) {
            memcpy(e->key, v.mv_data, SL_PAGE_KEY_LEN);
            e->queue = rec.queue;
            e->freq = rec.freq;
            e->seq = rec.seq;
            e->charge = charge_of(rec.size);
            e->handle = NULL;
            rc = 0;
            break;
        }
        /* A queue entry whose page is gone: tidy it and look again. */
        if ((rc = sl__mdb_err(mdb_cursor_del(cur, 0))) < 0) break;
    }
    mdb_cursor_close(cur);
    return rc;
}

static int be_requeue(void *ctx, struct sl_evict_entry *e, int q, uint8_t freq)
{
    struct dtx *t = ctx;
    struct sl_page_rec rec;
    int rc = get_rec(t, e->key, &rec);
    if (rc < 0) return rc;
    queue_del(t, rec.queue, rec.seq);
    queue_account(t, rec.queue, -(int64_t)charge_of(rec.size), -1);
    rec.queue = (uint8_t)q;
    rec.freq = freq;
    rec.seq = next_seq(t, "seq");
    if ((rc = queue_put(t, q, rec.seq, e->key, SL_PAGE_KEY_LEN)) < 0) return rc;
    queue_account(t, q, (int64_t)charge_of(rec.size), 1);
    e->queue = rec.queue;
    e->freq = rec.freq;
    e->seq = rec.seq;
    return put_rec(t, e->key, &rec);
}

static int be_set_freq(void *ctx, struct sl_evict_entry *e, uint8_t freq)
{
    struct dtx *t = ctx;
    struct sl_page_rec rec;
    int rc = get_rec(t, e->key, &rec);
    if (rc < 0) return rc;
    rec.freq = freq;
    e->freq = freq;
    return put_rec(t, e->key, &rec);
}

static uint64_t be_queue_bytes(void *ctx, int q)
{
    struct dtx *t = ctx;
    char name[32];
    return sl__db_get_u64(t->d->db, t->txn, qname(q, "bytes", name, sizeof(name)));
}

static uint64_t ghost_hash(const uint8_t key[SL_PAGE_KEY_LEN])
{
    return XXH3_64bits(key, SL_PAGE_KEY_LEN);
}

static int be_ghost_add(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN])
{
    struct dtx *t = ctx;
    uint64_t h = ghost_hash(key), when = next_seq(t, "ghost.clock");
    MDB_val k = {sizeof(h), &h}, v = {sizeof(when), &when};
    int rc = sl__mdb_err(mdb_put(t->txn, t->d->db->dbi[SL_DB_GHOST], &k, &v, 0));
    if (rc < 0 || (rc = queue_put(t, SL_Q_GHOST, when, &h, sizeof(h))) < 0) return rc;
    sl__db_add_u64(t->d->db, t->txn, "ghost.count", 1);

    /* Keep as many ghosts as MAIN holds pages: forget the oldest beyond that. */
    char name[32];
    uint64_t limit = sl__db_get_u64(t->d->db, t->txn, qname(SL_Q_MAIN, "count", name, sizeof(name)));
    if (limit < 1) limit = 1;
    while (sl__db_get_u64(t->d->db, t->txn, "ghost.count") > limit) {
        MDB_cursor *cur;
        uint8_t qk[9];
        queue_key(qk, SL_Q_GHOST, 0);
        MDB_val ck = {sizeof(qk), qk}, cv;
        if (mdb_cursor_open(t->txn, t->d->db->dbi[SL_DB_QUEUE], &cur) != 0) break;
        bool found = mdb_cursor_get(cur, &ck, &cv, MDB_SET_RANGE) == 0 && ck.mv_size == 9 &&
                     ((uint8_t *)ck.mv_data)[0] == SL_Q_GHOST && cv.mv_size == sizeof(uint64_t);
        if (found) {
            uint64_t oh, ow, cur_when;
            memcpy(&oh, cv.mv_data, sizeof(oh));
            ow = 0;
            for (int i = 0; i < 8; i++) ow = ow << 8 | ((uint8_t *)ck.mv_data)[1 + i];
            mdb_cursor_del(cur, 0);
            MDB_val gk = {sizeof(oh), &oh}, gv;
            if (mdb_get(t->txn, t->d->db->dbi[SL_DB_GHOST], &gk, &gv) == 0 &&
                gv.mv_size == sizeof(cur_when)) {
                memcpy(&cur_when, gv.mv_data, sizeof(cur_when));
                if (cur_when == ow) mdb_del(t->txn, t->d->db->dbi[SL_DB_GHOST], &gk, NULL);
            }
            sl__db_add_u64(t->d->db, t->txn, "ghost.count", -1);
        }
        mdb_cursor_close(cur);
        if (!found) break;
    }
    return 0;
}

static bool be_ghost_take(void *ctx, const uint8_t key[SL_PAGE_KEY_LEN])
{
    struct dtx *t = ctx;
    uint64_t h = ghost_hash(key), when;
    MDB_val k = {sizeof(h), &h}, v;
    if (mdb_get(t->txn, t->d->db->dbi[SL_DB_GHOST], &k, &v) != 0 || v.mv_size != sizeof(when))
        return false;
    memcpy(&when, v.mv_data, sizeof(when));
    mdb_del(t->txn, t->d->db->dbi[SL_DB_GHOST], &k, NULL);
    queue_del(t, SL_Q_GHOST, when);
    sl__db_add_u64(t->d->db, t->txn, "ghost.count", -1);
    return true;
}

static int dtx_begin(struct sl_disk *d, struct dtx *t)
{
    *t = (struct dtx){.d = d};
    t->be = (struct sl_evict_backend){
        .ctx = t,
        .capacity = d->capacity,
        .head = be_head,
        .requeue = be_requeue,
        .set_freq = be_set_freq,
        .queue_bytes = be_queue_bytes,
        .ghost_add = be_ghost_add,
        .ghost_take = be_ghost_take,
    };
    return sl__db_begin(d->db, true, &t->txn);
}

/* The page file `file`, locked exclusively for this transaction (once per file: two opens of
 * one file in one process are two flock holders). A reader holds a shared lock for as long as
 * it reads a page by descriptor, which is short: `wait` retries for up to LOCK_WAIT_MS, else
 * a busy file is -EBUSY at once. -ENOENT: the file is gone (nothing to punch). */
#define LOCK_WAIT_MS 100
static int lock_file(struct dtx *t, uint64_t file, bool wait)
{
    for (size_t i = 0; i < t->nlocks; i++)
        if (t->locks[i].file == file) return t->locks[i].fd >= 0 ? t->locks[i].fd : -EBUSY;
    if (t->nlocks == t->locks_cap) {
        size_t cap = t->locks_cap ? 2 * t->locks_cap : 8;
        struct file_lock *n = realloc(t->locks, cap * sizeof(*n));
        if (!n) return -ENOMEM;
        t->locks = n;
        t->locks_cap = cap;
    }
    char *path = sl__disk_file_path(t->d, file);
    if (!path) return -ENOMEM;
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return errno == ENOENT ? -ENOENT : -errno;
    for (int tries = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; tries++) {
        if (errno == EINTR) continue;
        if (errno != EWOULDBLOCK || !wait || tries >= LOCK_WAIT_MS) {
            close(fd);
            fd = -1;
            break;
        }
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    /* A file that stays busy is remembered as such: a victim is skipped, a page removed for
     * another reason keeps its bytes until the file goes (rare, and never wrong: its record
     * is gone, so no reader can find it). */
    t->locks[t->nlocks++] = (struct file_lock){file, fd};
    return fd >= 0 ? fd : -EBUSY;
}

/* Marks page file `file` to remove at commit (len 0), or [off, off + len) of it to punch
 * (fd: the file locked by lock_file, or -1 to leave the bytes). */
static int doom(struct dtx *t, uint64_t file, uint64_t off, uint64_t len, int fd)
{
    char *path = sl__disk_file_path(t->d, file);
    if (!path) return -ENOMEM;
    if (t->ndoomed == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        struct doomed *n = realloc(t->doomed, cap * sizeof(*n));
        if (!n) {
            free(path);
            return -ENOMEM;
        }
        t->doomed = n;
        t->cap = cap;
    }
    t->doomed[t->ndoomed++] = (struct doomed){path, off, len, fd};
    return 0;
}

/* Forgets what was doomed and lets go of the files' locks. */
static void dtx_forget(struct dtx *t)
{
    for (size_t i = 0; i < t->ndoomed; i++) free(t->doomed[i].path);
    free(t->doomed);
    t->doomed = NULL;
    t->ndoomed = t->cap = 0;
    for (size_t i = 0; i < t->nlocks; i++)
        if (t->locks[i].fd >= 0) close(t->locks[i].fd);
    free(t->locks);
    t->locks = NULL;
    t->nlocks = t->locks_cap = 0;
}

static void dtx_abort(struct dtx *t)
{
    mdb_txn_abort(t->txn);
    dtx_forget(t);
}

/* Gives back the doomed space, then commits: the bytes are gone before the space they held is
 * counted free, so the hard limit holds at every instant. A commit that fails after that leaves
 * records without bytes, which readers treat as misses (a hole reads as zeros: a checksum
 * failure) and drop. The files' locks are let go after the commit: a reader waiting for one
 * then finds the page's record gone. */
static int dtx_commit(struct dtx *t)
{
    for (size_t i = 0; i < t->ndoomed; i++) {
        struct doomed *x = &t->doomed[i];
        if (!x->len)
            unlink(x->path);
        else if (x->fd >= 0)
            fallocate(x->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)x->off,
                      (off_t)x->len);
    }
    int rc = sl__db_commit(t->txn);
    dtx_forget(t);
    return rc;
}

/* How many indexed pages page file `file` holds. */
static uint64_t file_pages(struct dtx *t, uint64_t file)
{
    MDB_val k = {sizeof(file), &file}, v;
    uint64_t n = 0;
    if (mdb_get(t->txn, t->d->db->dbi[SL_DB_FILES], &k, &v) == 0 && v.mv_size == sizeof(n))
        memcpy(&n, v.mv_data, sizeof(n));
    return n;
}

/* Adds delta to the count of indexed pages of a page file; returns the new count. */
static uint64_t file_count(struct dtx *t, uint64_t file, int64_t delta)
{
    MDB_val k = {sizeof(file), &file}, v;
    uint64_t n = file_pages(t, file);
    n = delta < 0 && (uint64_t)-delta > n ? 0 : n + (uint64_t)delta;
    if (n == 0) {
        mdb_del(t->txn, t->d->db->dbi[SL_DB_FILES], &k, NULL);
    } else {
        v = (MDB_val){sizeof(n), &n};
        mdb_put(t->txn, t->d->db->dbi[SL_DB_FILES], &k, &v, 0);
    }
    return n;
}

/* True when page file `file` is held (a shared lock on it): probed, not locked until the
 * commit, so that a transaction evicting many small files keeps no descriptor for each. A
 * file that cannot be looked at (no descriptor left) counts as held. */
static bool file_held(struct sl_disk *d, uint64_t file)
{
    char *path = sl__disk_file_path(d, file);
    if (!path) return true;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return errno != ENOENT;
    bool held = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno != EINTR;
    close(fd);
    return held;
}

/* Removes a cached page: its record, its queue entry, its bytes; at commit its hole in its
 * file, or the file with its last page. A victim of eviction whose file is held (read by
 * descriptor, or kept: sl_keep) is not removed: -EBUSY. The last page of a file needs no lock
 * for its bytes (the file goes whole, and a reader's descriptor keeps them), but a victim's
 * file is probed all the same: a hold must keep the page in the cache, not just its bytes. */
static int remove_page(struct dtx *t, const uint8_t key[SL_PAGE_KEY_LEN],
                       const struct sl_page_rec *rec, bool victim)
{
    int fd = -1;
    bool last = file_pages(t, rec->file) <= 1;
    if (!last) {
        fd = lock_file(t, rec->file, !victim);
        /* A victim whose file cannot be locked (held, or no descriptor left) stays. */
        if (victim && fd < 0 && fd != -ENOENT) return -EBUSY;
        if (fd == -ENOMEM) return fd;
    } else if (victim && file_held(t->d, rec->file)) {
        return -EBUSY;
    }
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key};
    int rc = sl__mdb_err(mdb_del(t->txn, t->d->db->dbi[SL_DB_PAGES], &k, NULL));
    if (rc < 0) return rc;
    queue_del(t, rec->queue, rec->seq);
    queue_account(t, rec->queue, -(int64_t)charge_of(rec->size), -1);
    sl__db_add_u64(t->d->db, t->txn, "bytes_cached", -(int64_t)charge_of(rec->size));
    sl__db_add_u64(t->d->db, t->txn, "pages_cached", -1);
    if (file_count(t, rec->file, -1) == 0) return doom(t, rec->file, 0, 0, -1);
    return doom(t, rec->file, rec->off, charge_of(rec->size), fd >= 0 ? fd : -1);
}

/* How many victims in a row may be skipped for being read before the tier counts as full. */
#define MAX_BUSY_VICTIMS 64

/* Evicts until `need` more bytes fit under the limit; SL_E_CACHE_FULL, evicting nothing, when
 * even evicting every evictable page would not make room. */
static int make_room(struct dtx *t, uint64_t need)
{
    struct sl_db *db = t->d->db;
    uint64_t used = sl__db_get_u64(db, t->txn, "bytes_cached") +
                    sl__db_get_u64(db, t->txn, "bytes_reserved");
    if (used + need <= t->d->capacity) return 0;
    char name[32];
    uint64_t evictable = 0;
    for (int q = SL_Q_LRU; q <= SL_Q_MAIN; q++)
        evictable += sl__db_get_u64(db, t->txn, qname(q, "bytes", name, sizeof(name)));
    if (used + need > t->d->capacity + evictable) return SL_E_CACHE_FULL;
    for (int busy = 0;;) {
        used = sl__db_get_u64(db, t->txn, "bytes_cached") +
               sl__db_get_u64(db, t->txn, "bytes_reserved");
        if (used + need <= t->d->capacity) return 0;
        struct sl_evict_entry e;
        struct sl_page_rec rec;
        int rc = sl__evict_victim(&t->be, &e);
        if (rc == -ENOENT) return SL_E_CACHE_FULL;
        if (rc < 0) return rc;
        if ((rc = get_rec(t, e.key, &rec)) < 0) return rc;
        rc = remove_page(t, e.key, &rec, true);
        if (rc == -EBUSY) {
            /* Being read right now: the most recently used page there is. */
            if (++busy > MAX_BUSY_VICTIMS) return SL_E_CACHE_FULL;
            if ((rc = be_requeue(t, &e, e.queue, e.freq)) < 0) return rc;
            continue;
        }
        if (rc < 0) return rc;
        sl__count(t->d->ctr, SL_CTR_EVICTIONS, 1);
    }
}

/* Undoes the reservation of a process that is gone, with the page file it may have written (or
 * begun) before it died: a run is indexed whole or not at all, so a file with no indexed page
 * is nobody's. */
static int undo_reservation(struct dtx *t, const uint8_t key[SL_PAGE_KEY_LEN],
                            const struct sl_reservation *r)
{
    int rc = 0;
    if (file_pages(t, r->file) == 0) rc = doom(t, r->file, 0, 0, -1);
    if (rc < 0) return rc;
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key};
    mdb_del(t->txn, t->d->db->dbi[SL_DB_RESERVE], &k, NULL);
    return sl__db_add_u64(t->d->db, t->txn, "bytes_reserved", -(int64_t)r->charge);
}

/* Removes files of dead owners from a folder whose names begin with a 16-hex owner id. */
static void sweep_dead(struct sl_disk *d, const char *folder)
{
    DIR *dir = opendir(folder);
    if (!dir) return;
    struct dirent *de;
    while ((de = readdir(dir))) {
        /* A lock file its owner did not live to rename: unlocked means abandoned. */
        if (strncmp(de->d_name, ".new.", 5) == 0) {
            int fd = openat(dirfd(dir), de->d_name, O_RDWR | O_CLOEXEC);
            if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0) unlinkat(dirfd(dir), de->d_name, 0);
            if (fd >= 0) close(fd);
            continue;
        }
        char *end;
        unsigned long long owner = strtoull(de->d_name, &end, 16);
        if (end != de->d_name + 16 || (*end && *end != '.')) continue;
        if (!owner_alive(d, owner)) unlinkat(dirfd(dir), de->d_name, 0);
    }
    closedir(dir);
}

static int recover(struct sl_disk *d)
{
    struct dtx t;
    MDB_cursor *cur;
    int rc;

    if ((rc = dtx_begin(d, &t)) < 0) return rc;
    /* Collect a batch, then undo it: no deletes under a cursor walk. */
    struct {
        uint8_t key[SL_PAGE_KEY_LEN];
        struct sl_reservation r;
    } dead[64];
    size_t ndead;
    do {
        ndead = 0;
        if ((rc = sl__mdb_err(mdb_cursor_open(t.txn, d->db->dbi[SL_DB_RESERVE], &cur))) < 0)
            goto out;
        MDB_val k, v;
        int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        while (mrc == 0 && ndead < SL_ARRAY_LEN(dead)) {
            struct sl_reservation r;
            if (k.mv_size == SL_PAGE_KEY_LEN && v.mv_size == sizeof(r)) {
                memcpy(&r, v.mv_data, sizeof(r));
                if (!owner_alive(d, r.owner)) {
                    memcpy(dead[ndead].key, k.mv_data, SL_PAGE_KEY_LEN);
                    dead[ndead++].r = r;
                }
            }
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(cur);
        for (size_t i = 0; i < ndead && rc == 0; i++) rc = undo_reservation(&t, dead[i].key, &dead[i].r);
    } while (rc == 0 && ndead == SL_ARRAY_LEN(dead));
    if (rc < 0) goto out;

    /* The limit is not enforced here: every process opens the cache, some with another config
     * (a `cache stats` run elsewhere must not evict a mount's cache down to its defaults). Each
     * writer keeps the cache within its own cache.size when it writes. */
    if (!sl__db_get_u64(d->db, t.txn, "format"))
        sl__db_put_u64(d->db, t.txn, "format", FORMAT_VERSION);
    else if (sl__db_get_u64(d->db, t.txn, "format") != FORMAT_VERSION)
        rc = sl__err(SL_E_FORMAT, "cache %s: made by another version of sluice (format %llu); "
                                  "point cache.dir elsewhere or remove it",
                     d->dir, (unsigned long long)sl__db_get_u64(d->db, t.txn, "format"));
out:
    if (rc < 0) {
        dtx_abort(&t);
        return rc;
    }
    if ((rc = dtx_commit(&t)) < 0) return rc;

    /* Lock files of dead owners. */
    sweep_dead(d, d->owners_dir);
    return 0;
}

/* Removes every page file: after the index was lost they belong to no record, and would hold
 * space the limit cannot see. */
static void remove_all_pages(struct sl_disk *d)
{
    for (int i = 0; i < 256; i++) {
        char *sub = sl__asprintf("%s/%02x", d->pages_dir, i);
        DIR *dir = sub ? opendir(sub) : NULL;
        if (dir) {
            struct dirent *de;
            while ((de = readdir(dir)))
                if (de->d_name[0] != '.') unlinkat(dirfd(dir), de->d_name, 0);
            closedir(dir);
        }
        free(sub);
    }
}

/* Opens the index; a damaged one (after a power cut, say) is set aside and the cache starts
 * empty, with a warning: a cache can always be filled again, a tool that refuses to start
 * cannot be used. */
static int open_index(struct sl_disk *d, const char *index)
{
    int rc = sl__db_open(index, &d->db);
    if (rc != SL_E_CORRUPT) return rc;
    char *aside = sl__asprintf("%s.damaged.%llu", index, (unsigned long long)sl__now_ns());
    if (!aside) return -ENOMEM;
    sl__warn("cache %s: the index is damaged; moved it to %s and starting with an empty cache",
             d->dir, aside);
    rc = rename(index, aside) < 0 ? -errno : 0;
    free(aside);
    if (rc < 0) return rc;
    remove_all_pages(d);
    return sl__db_open(index, &d->db);
}

/* Can the file system under dir free a block in the middle of a file? */
static bool can_punch(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600); /* unnamed: nothing left behind */
    if (fd < 0) return false;
    static const char block[BLOCK * 2];
    bool ok = pwrite_all(fd, block, sizeof(block), 0) == 0 &&
              fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, BLOCK) == 0;
    close(fd);
    return ok;
}

int sl__disk_open(const char *dir, uint64_t capacity, struct sl_counters *ctr, struct sl_disk **out)
{
    struct sl_disk *d = calloc(1, sizeof(*d));
    char *index = NULL;
    int rc;

    if (!d) return -ENOMEM;
    d->capacity = capacity;
    d->ctr = ctr;
    d->owner_fd = -1;
    pthread_mutex_init(&d->checked_lock, NULL);
    d->dir = sl__strdup(dir);
    d->pages_dir = sl__asprintf("%s/pages", dir);
    d->owners_dir = sl__asprintf("%s/owners", dir);
    index = sl__asprintf("%s/index", dir);
    if (!d->dir || !d->pages_dir || !d->owners_dir || !index) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = sl__mkdirs(d->pages_dir, 0755)) < 0 || (rc = sl__mkdirs(d->owners_dir, 0755)) < 0)
        goto fail;
    /* Registering as an owner also finds out, now and not at the first page, whether we can
     * write here at all. */
    if ((rc = owner_register(d)) < 0) goto fail;
    atomic_store(&d->direct_ok, true);
    d->punch_ok = can_punch(d->pages_dir);
    if ((rc = open_index(d, index)) < 0) goto fail;
    if ((rc = recover(d)) < 0) goto fail;
    free(index);
    *out = d;
    return 0;
fail:
    free(index);
    sl__disk_close(d);
    return rc;
}

void sl__disk_close(struct sl_disk *d)
{
    if (!d) return;
    sl__db_close(d->db);
    if (d->owner_fd >= 0) {
        char *path = sl__asprintf("%s/%016llx", d->owners_dir, (unsigned long long)d->owner);
        if (path) unlink(path);
        free(path);
        close(d->owner_fd); /* the lock goes with it */
    }
    free(d->dir);
    free(d->pages_dir);
    free(d->owners_dir);
    free(d->checked);
    pthread_mutex_destroy(&d->checked_lock);
    free(d);
}

struct sl_db *sl__disk_db(struct sl_disk *d)
{
    return d ? d->db : NULL;
}

void sl__disk_sync(struct sl_disk *d)
{
    if (d) mdb_env_sync(d->db->env, 1);
}

/* Drops a page found damaged or missing, if the record is still the one we read; true if it
 * was. In a write transaction: one that evicts the page (punching its hole before it commits)
 * has committed by then, so a page evicted under the reader is not taken for a damaged one. */
static bool drop_if_same(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], uint64_t seq)
{
    struct dtx t;
    struct sl_page_rec rec;
    if (dtx_begin(d, &t) < 0) return false;
    if (get_rec(&t, key, &rec) == 0 && rec.seq == seq && remove_page(&t, key, &rec, false) == 0)
        return dtx_commit(&t) == 0;
    dtx_abort(&t);
    return false;
}

/* The page's record, from a read transaction: 0, -ENOENT, or an index error. */
static int read_rec(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], struct sl_page_rec *rec)
{
    MDB_txn *txn;
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key}, v;
    int rc = sl__db_begin(d->db, false, &txn);
    if (rc < 0) return rc;
    rc = mdb_get(txn, d->db->dbi[SL_DB_PAGES], &k, &v);
    bool ok = rc == 0 && v.mv_size == sizeof(*rec);
    if (ok) memcpy(rec, v.mv_data, sizeof(*rec));
    mdb_txn_abort(txn);
    if (rc) return sl__mdb_err(rc);
    return ok ? 0 : -ENOENT; /* a record of another layout: not one we can trust */
}

/* ---- pages known good ---------------------------------------------------------------------- */

/* The set stops growing here (32 MiB); full, it starts again (pages are checked again once). */
#define CHECKED_MAX_SLOTS (1U << 22)

static uint64_t checked_hash(uint64_t file, uint64_t off)
{
    uint64_t v[2] = {file, off};
    uint64_t h = XXH3_64bits(v, sizeof(v));
    return h ? h : 1; /* 0 marks a free slot */
}

/* mask + 1 slots; checked_lock held. */
static bool checked_find(const uint64_t *slots, size_t mask, uint64_t h, size_t *at)
{
    size_t i = (size_t)h & mask;
    while (slots[i] && slots[i] != h) i = (i + 1) & mask;
    *at = i;
    return slots[i] == h;
}

static void checked_add(struct sl_disk *d, uint64_t file, uint64_t off)
{
    uint64_t h = checked_hash(file, off);
    size_t at;
    pthread_mutex_lock(&d->checked_lock);
    if (d->checked && checked_find(d->checked, d->checked_mask, h, &at)) goto out;
    if (!d->checked || 2 * (d->checked_count + 1) > d->checked_mask + 1) {
        size_t slots = d->checked ? 2 * (d->checked_mask + 1) : 4096;
        bool restart = slots > CHECKED_MAX_SLOTS;
        if (restart) slots = CHECKED_MAX_SLOTS;
        uint64_t *n = calloc(slots, sizeof(*n));
        if (!n) goto out; /* not remembered: checked again next time */
        for (size_t i = 0; d->checked && !restart && i <= d->checked_mask; i++)
            if (d->checked[i] && !checked_find(n, slots - 1, d->checked[i], &at)) n[at] = d->checked[i];
        if (restart) d->checked_count = 0;
        free(d->checked);
        d->checked = n;
        d->checked_mask = slots - 1;
    }
    checked_find(d->checked, d->checked_mask, h, &at);
    d->checked[at] = h;
    d->checked_count++;
out:
    pthread_mutex_unlock(&d->checked_lock);
}

static bool checked_has(struct sl_disk *d, uint64_t file, uint64_t off)
{
    size_t at;
    pthread_mutex_lock(&d->checked_lock);
    bool yes = d->checked && checked_find(d->checked, d->checked_mask, checked_hash(file, off), &at);
    pthread_mutex_unlock(&d->checked_lock);
    return yes;
}

int sl__disk_hold(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], size_t len, int *fd,
                  uint64_t *off)
{
    struct sl_page_rec rec, now;
    int rc = read_rec(d, key, &rec);
    if (rc < 0) return rc;
    if (rec.size != len || !checked_has(d, rec.file, rec.off)) return -EAGAIN;
    char *path = sl__disk_file_path(d, rec.file);
    if (!path) return -ENOMEM;
    int f = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (f < 0) return -EAGAIN; /* evicted since: sl__disk_read finds out, and tidies */
    while (flock(f, LOCK_SH) < 0) {
        if (errno != EINTR) {
            close(f);
            return -EAGAIN;
        }
    }
    /* Locked: if the record still points here, nobody can punch the page out until we close. */
    if (read_rec(d, key, &now) < 0 || now.file != rec.file || now.off != rec.off) {
        close(f);
        return -EAGAIN;
    }
    *fd = f;
    *off = rec.off;
    return 0;
}

int sl__disk_page_file(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], char **path,
                       uint64_t *off)
{
    struct sl_page_rec rec;
    int rc = read_rec(d, key, &rec);
    if (rc < 0) return rc;
    if (!(*path = sl__disk_file_path(d, rec.file))) return -ENOMEM;
    *off = rec.off;
    return 0;
}

int sl__disk_read(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN], void *buf, size_t len)
{
    struct sl_page_rec rec;
    int rc = read_rec(d, key, &rec);
    if (rc < 0) return rc;

    char *path = sl__disk_file_path(d, rec.file);
    if (!path) return -ENOMEM;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) {
        /* Evicted between the lookup and the open, or lost: a miss either way. */
        if (errno == ENOENT) drop_if_same(d, key, rec.seq);
        return -ENOENT;
    }
    bool whole = rec.size == len && sl__pread_all(fd, buf, len, rec.off) == 0;
    close(fd);
    if (!whole || XXH3_64bits(buf, len) != rec.checksum) {
        /* Evicted while we read (its hole punched): a miss, not damage. */
        if (!drop_if_same(d, key, rec.seq)) return -ENOENT;
        sl__count(d->ctr, SL_CTR_CHECKSUM_FAILURES, 1);
        sl__warn("cache %s: a cached page failed its checksum; dropped it and fetching it again",
                 d->dir);
        return SL_E_CHECKSUM;
    }
    checked_add(d, rec.file, rec.off);
    return 0;
}

bool sl__disk_contains(struct sl_disk *d, const uint8_t key[SL_PAGE_KEY_LEN])
{
    MDB_txn *txn;
    MDB_val k = {SL_PAGE_KEY_LEN, (void *)key}, v;
    if (sl__db_begin(d->db, false, &txn) < 0) return false;
    bool found = mdb_get(txn, d->db->dbi[SL_DB_PAGES], &k, &v) == 0;
    mdb_txn_abort(txn);
    return found;
}

/* Opens (creates) a page file; its fan-out folder (pages/ab) is made the first time one of
 * its files is written, not all 256 when the cache is made (that cost every fresh cache a
 * visible part of its first read). */
static int open_in_folder(const char *path, int flags)
{
    int fd = open(path, flags, 0644);
    if (fd >= 0 || errno != ENOENT) return fd;
    char *folder = sl__strdup(path);
    if (!folder) {
        errno = ENOMEM;
        return -1;
    }
    *strrchr(folder, '/') = '\0';
    int made = mkdir(folder, 0755) < 0 && errno != EEXIST ? -1 : 0;
    free(folder);
    return made < 0 ? -1 : open(path, flags, 0644);
}

/* Writes a new page file holding pages[i] at offs[i] (block-aligned). The whole blocks of
 * aligned buffers go around the page cache (O_DIRECT): on ext4 a buffered write costs several
 * times the CPU of the network receive that fetched the bytes, CPU the fetches of the next
 * pages need (docs/benchmarks.md); the device takes them straight from our buffers. The tails,
 * and file systems without O_DIRECT (tmpfs on older kernels), go through the page cache. */
static int write_file(struct sl_disk *d, const char *path, const struct iovec *pages,
                      const uint64_t *offs, size_t n)
{
    const int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
    bool direct = atomic_load(&d->direct_ok);
    int fd = open_in_folder(path, flags | (direct ? O_DIRECT : 0));
    if (fd < 0 && direct && errno == EINVAL) {
        /* The file system has no direct I/O; the open may have made the file before saying so. */
        atomic_store(&d->direct_ok, false);
        direct = false;
        unlink(path);
        fd = open(path, flags, 0644);
    }
    if (fd < 0) return -errno;

    int rc = 0;
    size_t done[SL_DISK_RUN_MAX] = {0}; /* bytes of each page written directly */
    for (size_t i = 0; i < n && direct && rc == 0; i++) {
        if ((uintptr_t)pages[i].iov_base % SL_BUF_ALIGN) continue;
        done[i] = pages[i].iov_len / BLOCK * BLOCK;
        rc = pwrite_all(fd, pages[i].iov_base, done[i], (off_t)offs[i]);
        if (rc == -EINVAL) {
            /* Direct I/O with other alignment rules than ours: buffered from here on. */
            atomic_store(&d->direct_ok, false);
            memset(done, 0, sizeof(done));
            rc = 0;
            break;
        }
    }
    if (rc == 0 && direct && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT) < 0) rc = -errno;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = pwrite_all(fd, (const char *)pages[i].iov_base + done[i], pages[i].iov_len - done[i],
                        (off_t)(offs[i] + done[i]));
    if (close(fd) < 0 && !rc) rc = -errno;
    if (rc) unlink(path);
    return rc;
}

/* Step 1: reserves the space of each page of the run that is neither cached nor being written
 * by a live process (evicting as needed), all to be written to one new page file, *file.
 * reserved[i] says which; 0 with none reserved is fine. */
static int reserve_run(struct sl_disk *d, const uint8_t (*keys)[SL_PAGE_KEY_LEN],
                       const uint64_t *charges, size_t n, bool *reserved, uint64_t *file)
{
    struct dtx t;
    int rc;

    for (size_t i = 0; i < n; i++) reserved[i] = false;
    if ((rc = dtx_begin(d, &t)) < 0) return rc;
    *file = next_seq(&t, "file.seq");
    size_t nreserved = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct sl_page_rec rec;
        MDB_val k = {SL_PAGE_KEY_LEN, (void *)keys[i]}, v;
        if (get_rec(&t, keys[i], &rec) == 0) continue; /* cached already */
        if (mdb_get(t.txn, d->db->dbi[SL_DB_RESERVE], &k, &v) == 0 &&
            v.mv_size == sizeof(struct sl_reservation)) {
            struct sl_reservation r;
            memcpy(&r, v.mv_data, sizeof(r));
            if (owner_alive(d, r.owner)) continue; /* someone is writing it now */
            if ((rc = undo_reservation(&t, keys[i], &r)) < 0) break;
        }
        rc = make_room(&t, charges[i]);
        if (rc == SL_E_CACHE_FULL && nreserved > 0) {
            rc = 0; /* the pages reserved so far are worth writing */
            break;
        }
        if (rc < 0) break;
        struct sl_reservation r = {.owner = d->owner, .charge = charges[i], .file = *file};
        v = (MDB_val){sizeof(r), &r};
        if ((rc = sl__mdb_err(mdb_put(t.txn, d->db->dbi[SL_DB_RESERVE], &k, &v, 0))) < 0) break;
        sl__db_add_u64(d->db, t.txn, "bytes_reserved", (int64_t)charges[i]);
        reserved[i] = true;
        nreserved++;
    }
    if (rc < 0) {
        dtx_abort(&t);
        for (size_t i = 0; i < n; i++) reserved[i] = false;
        return rc;
    }
    return dtx_commit(&t);
}

/* Step 3: gives back the run's reservations and, when `written`, indexes its pages at offs[]
 * in `file`. If any reservation is no longer ours (another process took us for dead and undid
 * it, removing the file it found unindexed), none is indexed and the file goes. */
static int settle_run(struct sl_disk *d, const uint8_t (*keys)[SL_PAGE_KEY_LEN], enum sl_policy pol,
                      const uint64_t *charges, const uint32_t *sizes, const uint64_t *sums,
                      const uint64_t *offs, const bool *reserved, size_t n, uint64_t file,
                      bool written)
{
    struct dtx t;
    int rc;

    if ((rc = dtx_begin(d, &t)) < 0) return rc;
    size_t indexed = 0;
    for (size_t pass = 0; pass < 2 && rc == 0; pass++) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (!reserved[i]) continue;
            MDB_val k = {SL_PAGE_KEY_LEN, (void *)keys[i]}, v;
            struct sl_reservation r;
            bool ours = mdb_get(t.txn, d->db->dbi[SL_DB_RESERVE], &k, &v) == 0 &&
                        v.mv_size == sizeof(r) &&
                        (memcpy(&r, v.mv_data, sizeof(r)), r.owner == d->owner && r.file == file);
            if (pass == 0) {
                written &= ours; /* the first pass only looks */
                continue;
            }
            if (!ours) continue;
            mdb_del(t.txn, d->db->dbi[SL_DB_RESERVE], &k, NULL);
            sl__db_add_u64(d->db, t.txn, "bytes_reserved", -(int64_t)charges[i]);
            if (!written) continue;
            struct sl_page_rec rec = {.size = sizes[i], .checksum = sums[i], .file = file,
                                      .off = offs[i]};
            rec.queue = (uint8_t)sl__evict_queue_for_insert(&t.be, pol, keys[i]);
            rec.seq = next_seq(&t, "seq");
            if ((rc = put_rec(&t, keys[i], &rec)) < 0 ||
                (rc = queue_put(&t, rec.queue, rec.seq, keys[i], SL_PAGE_KEY_LEN)) < 0)
                break;
            queue_account(&t, rec.queue, (int64_t)charges[i], 1);
            sl__db_add_u64(d->db, t.txn, "bytes_cached", (int64_t)charges[i]);
            sl__db_add_u64(d->db, t.txn, "pages_cached", 1);
            indexed++;
        }
    }
    if (rc == 0 && indexed) file_count(&t, file, (int64_t)indexed);
    if (rc == 0 && !indexed) rc = doom(&t, file, 0, 0, -1);
    if (rc < 0) {
        dtx_abort(&t);
        return rc;
    }
    return dtx_commit(&t);
}

static int insert_run(struct sl_disk *d, const uint8_t (*keys)[SL_PAGE_KEY_LEN], enum sl_policy pol,
                      const struct iovec *pages, size_t n)
{
    uint64_t charges[SL_DISK_RUN_MAX], sums[SL_DISK_RUN_MAX], offs[SL_DISK_RUN_MAX], file;
    uint32_t sizes[SL_DISK_RUN_MAX];
    bool reserved[SL_DISK_RUN_MAX];
    struct iovec mine[SL_DISK_RUN_MAX];
    uint64_t mine_offs[SL_DISK_RUN_MAX];
    int rc;

    for (size_t i = 0; i < n; i++) {
        sizes[i] = (uint32_t)pages[i].iov_len;
        charges[i] = charge_of(pages[i].iov_len);
        if (charges[i] > d->capacity) return 0;
    }
    /* SL_E_CACHE_FULL, or the index failed: nothing was written. */
    if ((rc = reserve_run(d, keys, charges, n, reserved, &file)) < 0) return rc;

    /* Step 2: the file, with the reserved pages one after the other. */
    size_t m = 0;
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (!reserved[i]) continue;
        offs[i] = at;
        sums[i] = XXH3_64bits(pages[i].iov_base, pages[i].iov_len);
        mine[m] = pages[i];
        mine_offs[m++] = at;
        at += charges[i];
    }
    if (m == 0) return 0;
    char *path = sl__disk_file_path(d, file);
    rc = path ? write_file(d, path, mine, mine_offs, m) : -ENOMEM;
    free(path);
    int src = settle_run(d, keys, pol, charges, sizes, sums, offs, reserved, n, file, rc == 0);
    /* Written from the bytes we hold, and read back only by this file system: known good. */
    for (size_t i = 0; i < n && rc == 0 && src == 0; i++)
        if (reserved[i]) checked_add(d, file, offs[i]);
    if (src < 0 && rc == 0) {
        /* Not indexed: give the space back (a second try, in a fresh transaction, that
         * indexes nothing and removes the file). */
        settle_run(d, keys, pol, charges, sizes, sums, offs, reserved, n, file, false);
        rc = src;
    }
    return rc;
}

int sl__disk_insert_run(struct sl_disk *d, const uint8_t (*keys)[SL_PAGE_KEY_LEN],
                        enum sl_policy pol, const struct iovec *pages, size_t n)
{
    int rc = 0;

    if (n > SL_DISK_RUN_MAX) return -EINVAL;
    if (sl__mono_ns() < atomic_load(&d->write_backoff_until)) return 0;
    if (d->punch_ok) {
        rc = insert_run(d, keys, pol, pages, n);
    } else {
        /* Without holes, a page evicted from a shared file would keep its space: one file
         * per page. */
        for (size_t i = 0; i < n && rc == 0; i++) rc = insert_run(d, keys + i, pol, pages + i, 1);
    }
    if (rc < 0 && rc != -ENOMEM && rc != SL_E_CACHE_FULL) {
        /* A full or failing disk: read through for a while instead of failing every page. */
        uint64_t until = sl__mono_ns() + WRITE_BACKOFF_NS;
        uint64_t prev = atomic_exchange(&d->write_backoff_until, until);
        if (sl__mono_ns() >= prev)
            sl__warn("cache %s: cannot write pages (%s); reading through from the store", d->dir,
                     sl_strerror(rc));
    }
    return rc;
}

int sl__disk_apply(struct sl_disk *d, const uint64_t deltas[SL_CTR__COUNT],
                   const uint8_t (*hits)[SL_PAGE_KEY_LEN], size_t nhits)
{
    struct dtx t;
    int rc = dtx_begin(d, &t);
    if (rc < 0) return rc;
    for (int i = 0; i < SL_CTR__COUNT; i++)
        if (deltas[i]) sl__db_add_u64(d->db, t.txn, sl__counter_names[i], (int64_t)deltas[i]);
    for (size_t i = 0; i < nhits; i++) {
        struct sl_page_rec rec;
        if (get_rec(&t, hits[i], &rec) < 0) continue; /* evicted since */
        struct sl_evict_entry e = {.queue = rec.queue, .freq = rec.freq, .seq = rec.seq,
                                   .charge = charge_of(rec.size)};
        memcpy(e.key, hits[i], SL_PAGE_KEY_LEN);
        sl__evict_hit(&t.be, &e);
    }
    return dtx_commit(&t);
}

int sl__disk_free_prefix(struct sl_disk *d, const uint8_t *prefix, size_t len, uint64_t *freed)
{
    struct dtx t;
    MDB_cursor *cur;
    int rc = dtx_begin(d, &t);
    uint64_t total = 0;

    if (rc < 0) return rc;
    if ((rc = sl__mdb_err(mdb_cursor_open(t.txn, d->db->dbi[SL_DB_PAGES], &cur))) < 0) {
        dtx_abort(&t);
        return rc;
    }
    for (;;) {
        MDB_val k = {len, (void *)prefix}, v;
        struct sl_page_rec rec;
        uint8_t key[SL_PAGE_KEY_LEN];
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0) break;
        if (k.mv_size != SL_PAGE_KEY_LEN || memcmp(k.mv_data, prefix, len) != 0) break;
        if (v.mv_size != sizeof(rec)) break;
        memcpy(key, k.mv_data, SL_PAGE_KEY_LEN);
        memcpy(&rec, v.mv_data, sizeof(rec));
        if ((rc = remove_page(&t, key, &rec, false)) < 0) break;
        total += charge_of(rec.size);
    }
    mdb_cursor_close(cur);
    if (rc < 0) {
        dtx_abort(&t);
        return rc;
    }
    if ((rc = dtx_commit(&t)) < 0) return rc;
    if (freed) *freed = total;
    return 0;
}

/* The version prefixes (24 bytes) of file_id other than keep's, in index order: a seek per
 * version, so the common case (one version) costs one seek in a read transaction. */
static size_t other_versions(struct sl_disk *d, const uint8_t keep[24], uint8_t (*out)[24],
                             size_t max)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    size_t n = 0;
    if (sl__db_begin(d->db, false, &txn) < 0) return 0;
    if (mdb_cursor_open(txn, d->db->dbi[SL_DB_PAGES], &cur) != 0) {
        mdb_txn_abort(txn);
        return 0;
    }
    uint8_t seek[SL_PAGE_KEY_LEN] = {0};
    memcpy(seek, keep, 16);
    while (n < max) {
        MDB_val k = {sizeof(seek), seek}, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0 || k.mv_size != SL_PAGE_KEY_LEN ||
            memcmp(k.mv_data, keep, 16) != 0)
            break;
        if (memcmp((uint8_t *)k.mv_data + 16, keep + 16, 8) != 0) memcpy(out[n++], k.mv_data, 24);
        /* Next version: this version id + 1, page 0 (ids are big-endian in the key). */
        memcpy(seek, k.mv_data, 24);
        memset(seek + 24, 0, 8);
        int i = 23;
        while (i >= 16 && ++seek[i] == 0) i--;
        if (i < 16) break; /* the last possible version id */
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return n;
}

int sl__disk_free_other_versions(struct sl_disk *d, const uint8_t keep[24])
{
    uint8_t old[8][24];
    size_t n = other_versions(d, keep, old, SL_ARRAY_LEN(old));
    for (size_t i = 0; i < n; i++) {
        uint64_t freed;
        int rc = sl__disk_free_prefix(d, old[i], 24, &freed);
        if (rc < 0) return rc;
    }
    return (int)n;
}

int sl__disk_sum_prefix(struct sl_disk *d, const uint8_t *prefix, size_t len, uint64_t *bytes)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    uint64_t total = 0;
    int rc = sl__db_begin(d->db, false, &txn);
    if (rc < 0) return rc;
    if ((rc = sl__mdb_err(mdb_cursor_open(txn, d->db->dbi[SL_DB_PAGES], &cur))) < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    MDB_val k = {len, (void *)prefix}, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size == SL_PAGE_KEY_LEN && memcmp(k.mv_data, prefix, len) == 0) {
        struct sl_page_rec rec;
        if (v.mv_size == sizeof(rec)) {
            memcpy(&rec, v.mv_data, sizeof(rec));
            total += rec.size;
        }
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    *bytes = total;
    return 0;
}

int sl__disk_stats(struct sl_disk *d, sl_cache_stats_t *out)
{
    MDB_txn *txn;
    int rc = sl__db_begin(d->db, false, &txn);
    if (rc < 0) return rc;
    out->hits = sl__db_get_u64(d->db, txn, "hits");
    out->misses = sl__db_get_u64(d->db, txn, "misses");
    out->ufs_bytes_read = sl__db_get_u64(d->db, txn, "ufs_bytes_read");
    out->ufs_requests = sl__db_get_u64(d->db, txn, "ufs_requests");
    out->evictions = sl__db_get_u64(d->db, txn, "evictions");
    out->checksum_failures = sl__db_get_u64(d->db, txn, "checksum_failures");
    out->bytes_cached = sl__db_get_u64(d->db, txn, "bytes_cached");
    out->pages_cached = sl__db_get_u64(d->db, txn, "pages_cached");
    out->capacity_bytes = d->capacity;
    mdb_txn_abort(txn);
    return 0;
}

int sl__disk_reset_counters(struct sl_disk *d)
{
    MDB_txn *txn;
    int rc = sl__db_begin(d->db, true, &txn);
    if (rc < 0) return rc;
    for (int i = 0; i < SL_CTR__COUNT; i++) sl__db_put_u64(d->db, txn, sl__counter_names[i], 0);
    return sl__db_commit(txn);
}
