/*
 * hash.c - what a stage's deps and outs hold, as one hash each, without reading what has not
 * changed.
 *
 * A local file's hash is XXH3-128 of its bytes (a non-cryptographic hash: it guards against
 * change, not against an adversary, and runs at memory speed where SHA-256 would be the
 * bottleneck of a first run). Reading is what costs, so every file hashed is remembered in an
 * LMDB table (state_dir/hashes) by its absolute path, with the size, mtime, ctime and inode it
 * had: a file that still has all four is not read again (git's index, DVC's state db). ctime
 * catches what `touch -d` or a restored mtime would hide; the inode catches a file replaced by
 * rename. A file whose mtime is within RACY_NS of the moment it was hashed may still be
 * changing inside one timestamp tick: its entry is not trusted later (git's "racy" entries).
 *
 * A folder's hash is over its regular files, sorted by path: each one's relative path, hash
 * and size. The files of a folder are hashed by a few threads at once (reading from a fast
 * disk or the page cache, one thread is CPU-bound on the hash and the copy).
 *
 * A sluice path is never read: its hash is over each object's version in its store (ETag,
 * or mtime+size for a file store) and size, through sl_stat and sl_walk; a changed object has
 * a new version. That is what makes a dep of a terabyte dataset in S3 cost a listing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/core.h"
#include "pipeline/run.h"

#define RACY_NS (1000000000ULL)
#define READ_CHUNK (1U << 20)

/* A remembered file, the value in the table. */
struct entry {
    uint64_t size, ino, dev;
    int64_t mtime_ns, ctime_ns, hashed_ns;
    uint8_t hash[16];
};

struct sl_hasher {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *wtxn;   /* the open write transaction of new entries; committed at close */
    size_t pending;
    sl_t *sl;
    unsigned threads;
};

#define COMMIT_EVERY 4096

static int mdb_fail(int rc, const char *what, const char *path)
{
    return sl__err(-EIO, "%s: %s: %s", path, what, mdb_strerror(rc));
}

int sl_hasher_open(const char *state_dir, sl_t *sl, unsigned threads, struct sl_hasher **out)
{
    struct sl_hasher *h = calloc(1, sizeof(*h));
    char *dir = sl__asprintf("%s/hashes", state_dir);
    MDB_txn *txn = NULL;
    int rc;

    *out = NULL;
    if (!h || !dir) {
        rc = -ENOMEM;
        goto out;
    }
    h->sl = sl;
    h->threads = threads ? threads : 1;
    if ((rc = sl__mkdirs(dir, 0755)) < 0) {
        rc = sl__err(rc, "%s: cannot make the folder: %s", dir, strerror(-rc));
        goto out;
    }
    if ((rc = mdb_env_create(&h->env)) || (rc = mdb_env_set_mapsize(h->env, 1ULL << 34)) ||
        (rc = mdb_env_open(h->env, dir, MDB_NOTLS, 0644))) {
        rc = mdb_fail(rc, "cannot open the table of hashed files", dir);
        goto out;
    }
    if ((rc = mdb_txn_begin(h->env, NULL, 0, &txn)) || (rc = mdb_dbi_open(txn, NULL, 0, &h->dbi)) ||
        (rc = mdb_txn_commit(txn))) {
        txn = NULL;
        rc = mdb_fail(rc, "cannot open the table of hashed files", dir);
        goto out;
    }
    *out = h;
    h = NULL;
out:
    free(dir);
    sl_hasher_close(h);
    return rc;
}

static void commit(struct sl_hasher *h)
{
    if (!h->wtxn) return;
    int rc = mdb_txn_commit(h->wtxn);
    if (rc) sl__warn("the table of hashed files: %s (they are hashed again next time)",
                     mdb_strerror(rc));
    h->wtxn = NULL;
    h->pending = 0;
}

void sl_hasher_close(struct sl_hasher *h)
{
    if (!h) return;
    commit(h);
    if (h->env) mdb_env_close(h->env);
    free(h);
}

static bool remembered(struct sl_hasher *h, const char *path, const struct stat *st,
                       uint8_t hash[16])
{
    MDB_txn *txn = h->wtxn;
    MDB_val k = {strlen(path), (void *)path}, v;
    struct entry e;
    bool own = !txn, ok = false;

    if (own && mdb_txn_begin(h->env, NULL, MDB_RDONLY, &txn)) return false;
    if (mdb_get(txn, h->dbi, &k, &v) == 0 && v.mv_size == sizeof(e)) {
        memcpy(&e, v.mv_data, sizeof(e));
        int64_t mtime = st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
        int64_t ctime = st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec;
        ok = e.size == (uint64_t)st->st_size && e.ino == st->st_ino && e.dev == st->st_dev &&
             e.mtime_ns == mtime && e.ctime_ns == ctime &&
             e.hashed_ns - SL_MAX(mtime, ctime) >= (int64_t)RACY_NS;
        if (ok) memcpy(hash, e.hash, 16);
    }
    if (own) mdb_txn_abort(txn);
    return ok;
}

static void remember(struct sl_hasher *h, const char *path, const struct stat *st,
                     const uint8_t hash[16], int64_t hashed_ns)
{
    struct entry e = {
        .size = (uint64_t)st->st_size,
        .ino = st->st_ino,
        .dev = st->st_dev,
        .mtime_ns = st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec,
        .ctime_ns = st->st_ctim.tv_sec * 1000000000LL + st->st_ctim.tv_nsec,
        .hashed_ns = hashed_ns,
    };
    memcpy(e.hash, hash, 16);
    if (strlen(path) > 511) return; /* LMDB's key limit: such a file is hashed every time */
    if (!h->wtxn && mdb_txn_begin(h->env, NULL, 0, &h->wtxn)) return;
    MDB_val k = {strlen(path), (void *)path}, v = {sizeof(e), &e};
    if (mdb_put(h->wtxn, h->dbi, &k, &v, 0) == 0 && ++h->pending >= COMMIT_EVERY) commit(h);
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* XXH3-128 of the file at path, read start to end. */
static int hash_file(const char *path, uint8_t out[16], uint64_t *bytes)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    XXH3_state_t *s = XXH3_createState();
    char *buf = malloc(READ_CHUNK);
    int rc = 0;
    if (!s || !buf) {
        rc = -ENOMEM;
        goto out;
    }
    XXH3_128bits_reset(s);
    for (;;) {
        ssize_t n = read(fd, buf, READ_CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0) break;
        XXH3_128bits_update(s, buf, (size_t)n);
        *bytes += (uint64_t)n;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s));
    memcpy(out, c.digest, 16);
out:
    free(buf);
    XXH3_freeState(s);
    close(fd);
    return rc;
}

/* ---- folders ---------------------------------------------------------------------------- */

struct file {
    char *rel;      /* below the folder */
    struct stat st;
    uint8_t hash[16];
    bool known;     /* from the table */
    int rc;
};

struct tree {
    char *root;
    struct file *files;
    size_t n, cap;
    atomic_size_t next; /* the next file a thread takes */
    atomic_uint_fast64_t bytes;
};

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const struct file *)a)->rel, ((const struct file *)b)->rel);
}

/* Collects the regular files below root/rel (symlinks are followed to files, not folders:
 * a link loop must not hang a run). */
static int collect(struct tree *t, const char *rel)
{
    char *dir = *rel ? sl__asprintf("%s/%s", t->root, rel) : sl__strdup(t->root);
    if (!dir) return -ENOMEM;
    DIR *d = opendir(dir);
    int rc = 0;
    if (!d) {
        rc = sl__err(-errno, "%s: cannot list it: %s", dir, strerror(errno));
        free(dir);
        return rc;
    }
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *sub = *rel ? sl__asprintf("%s/%s", rel, de->d_name) : sl__strdup(de->d_name);
        if (!sub) {
            rc = -ENOMEM;
            break;
        }
        struct stat st;
        bool dir_entry = de->d_type == DT_DIR;
        if (de->d_type != DT_DIR) {
            if (fstatat(dirfd(d), de->d_name, &st, 0) < 0) {
                free(sub); /* gone since the listing, or a dangling link: not a file of it */
                continue;
            }
            dir_entry = S_ISDIR(st.st_mode) && de->d_type != DT_LNK;
        }
        if (dir_entry) {
            rc = collect(t, sub);
            free(sub);
        } else if (S_ISREG(st.st_mode)) {
            if (t->n == t->cap) {
                size_t cap = t->cap ? t->cap * 2 : 256;
                struct file *f = realloc(t->files, cap * sizeof(*f));
                if (!f) {
                    free(sub);
                    rc = -ENOMEM;
                    break;
                }
                t->files = f;
                t->cap = cap;
            }
            t->files[t->n++] = (struct file){.rel = sub, .st = st};
        } else {
            free(sub);
        }
    }
    closedir(d);
    free(dir);
    return rc;
}

static void *hash_main(void *arg)
{
    struct tree *t = arg;
    uint64_t bytes = 0;
    for (;;) {
        size_t i = atomic_fetch_add(&t->next, 1);
        if (i >= t->n) break;
        struct file *f = &t->files[i];
        if (f->known) continue;
        char *path = sl__asprintf("%s/%s", t->root, f->rel);
        f->rc = path ? hash_file(path, f->hash, &bytes) : -ENOMEM;
        free(path);
    }
    atomic_fetch_add(&t->bytes, bytes);
    return NULL;
}

static int digest_tree(struct sl_hasher *h, const char *root, struct sl_digest *out,
                       uint64_t *read_bytes)
{
    struct tree t = {.root = (char *)root};
    int rc = collect(&t, "");
    if (rc < 0) goto out;
    if (t.n > 1) qsort(t.files, t.n, sizeof(*t.files), cmp_file);

    size_t unknown = 0;
    for (size_t i = 0; i < t.n; i++) {
        char *path = sl__asprintf("%s/%s", root, t.files[i].rel);
        if (!path) {
            rc = -ENOMEM;
            goto out;
        }
        t.files[i].known = remembered(h, path, &t.files[i].st, t.files[i].hash);
        unknown += !t.files[i].known;
        free(path);
    }
    int64_t started = wall_ns();
    if (unknown) {
        unsigned n = (unsigned)SL_MIN((size_t)h->threads, unknown);
        pthread_t th[64];
        n = SL_MIN(n, 64U);
        unsigned made = 0;
        for (; made + 1 < n; made++)
            if (pthread_create(&th[made], NULL, hash_main, &t)) break;
        hash_main(&t);
        for (unsigned i = 0; i < made; i++) pthread_join(th[i], NULL);
    }
    if (read_bytes) *read_bytes += atomic_load(&t.bytes);

    XXH3_state_t *s = XXH3_createState();
    if (!s) {
        rc = -ENOMEM;
        goto out;
    }
    XXH3_128bits_reset(s);
    out->size = 0;
    out->files = t.n;
    for (size_t i = 0; i < t.n; i++) {
        struct file *f = &t.files[i];
        if (f->rc < 0) {
            rc = sl__err(f->rc, "%s/%s: cannot read it: %s", root, f->rel, strerror(-f->rc));
            XXH3_freeState(s);
            goto out;
        }
        if (!f->known) {
            char *path = sl__asprintf("%s/%s", root, f->rel);
            if (path) remember(h, path, &f->st, f->hash, started);
            free(path);
        }
        uint64_t size = (uint64_t)f->st.st_size;
        XXH3_128bits_update(s, f->rel, strlen(f->rel) + 1);
        XXH3_128bits_update(s, f->hash, 16);
        XXH3_128bits_update(s, &size, sizeof(size));
        out->size += size;
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(s));
    XXH3_freeState(s);
    sl__hex(c.digest, 16, out->hash);
out:
    for (size_t i = 0; i < t.n; i++) free(t.files[i].rel);
    free(t.files);
    return rc;
}

/* ---- sluice paths ----------------------------------------------------------------------- */

struct versions {
    XXH3_state_t *s;
    struct sl_digest *out;
    size_t root_len;
};

static void add_object(struct versions *v, const char *rel, const sl_stat_t *st)
{
    XXH3_128bits_update(v->s, rel, strlen(rel) + 1);
    XXH3_128bits_update(v->s, st->version, strlen(st->version) + 1);
    XXH3_128bits_update(v->s, &st->size, sizeof(st->size));
    v->out->size += st->size;
    v->out->files++;
}

static int version_dir(void *arg, const char *dir, int err, const sl_dirent_t *ents, size_t n)
{
    struct versions *v = arg;
    if (err < 0) return sl__err(err, "%s: cannot list it: %s", dir, sl_errmsg(err));
    const char *rel = strlen(dir) > v->root_len ? dir + v->root_len + 1 : "";
    for (size_t i = 0; i < n; i++) {
        if (ents[i].st.type != SL_TYPE_FILE) continue;
        char *path = *rel ? sl__asprintf("%s/%s", rel, ents[i].name) : sl__strdup(ents[i].name);
        if (!path) return -ENOMEM;
        add_object(v, path, &ents[i].st);
        free(path);
    }
    return 0;
}

static int digest_sluice(struct sl_hasher *h, const char *path, struct sl_digest *out)
{
    sl_stat_t st;
    if (!h->sl) return sl__err(-EINVAL, "%s: a sluice path, but sluice is not open", path);
    int rc = sl_stat(h->sl, path, &st);
    if (rc < 0) return rc;
    struct versions v = {.s = XXH3_createState(), .out = out, .root_len = strlen(path)};
    if (!v.s) return -ENOMEM;
    XXH3_128bits_reset(v.s);
    out->size = out->files = 0;
    while (v.root_len > 1 && path[v.root_len - 1] == '/') v.root_len--;
    if (st.type == SL_TYPE_FILE)
        add_object(&v, "", &st);
    else
        rc = sl_walk(h->sl, path, version_dir, &v);
    if (rc == 0) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(v.s));
        sl__hex(c.digest, 16, out->hash);
    }
    XXH3_freeState(v.s);
    return rc;
}

int sl_hasher_digest(struct sl_hasher *h, const char *path, bool sluice_path,
                     struct sl_digest *out, uint64_t *read_bytes)
{
    memset(out, 0, sizeof(*out));
    if (sluice_path) return digest_sluice(h, path, out);

    struct stat st;
    if (stat(path, &st) < 0) return -errno;
    if (S_ISDIR(st.st_mode)) return digest_tree(h, path, out, read_bytes);
    if (!S_ISREG(st.st_mode)) return sl__err(-EINVAL, "%s: not a file or a folder", path);

    uint8_t hash[16];
    if (!remembered(h, path, &st, hash)) {
        uint64_t bytes = 0;
        int64_t started = wall_ns();
        int rc = hash_file(path, hash, &bytes);
        if (rc < 0) return sl__err(rc, "%s: cannot read it: %s", path, strerror(-rc));
        if (read_bytes) *read_bytes += bytes;
        remember(h, path, &st, hash, started);
    }
    sl__hex(hash, 16, out->hash);
    out->size = (uint64_t)st.st_size;
    out->files = 1;
    return 0;
}
