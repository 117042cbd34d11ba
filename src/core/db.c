/*
 * db.c - the LMDB environment of a cache directory: the page index, the eviction queues, the
 * disk tier's totals, the counters and the metadata cache, all in one environment so that one
 * transaction can change any of them together.
 *
 * Why LMDB: readers never block (a page hit is a lock-free B-tree lookup in shared memory),
 * writers of every process are serialised by a robust process-shared mutex, and a process killed
 * at any instant leaves the last committed state (copy-on-write, no log to replay).
 *
 * Durability: the index describes a cache, which can always be fetched again, so commits do not
 * fsync (MDB_NOSYNC); the cache syncs the environment about once a second and at close. A killed
 * process loses nothing that was committed (the data is in the kernel's page cache); a power cut
 * can lose the last second of index changes, and every page is checked against its checksum
 * when it is read, so a lost or stale index entry is a miss, never wrong bytes.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"

static const char *const db_names[SL_DB__COUNT] = {
    [SL_DB_STATE] = "state",     [SL_DB_PAGES] = "pages",   [SL_DB_QUEUE] = "queue",
    [SL_DB_GHOST] = "ghost",     [SL_DB_RESERVE] = "reserve", [SL_DB_META] = "meta",
    [SL_DB_DIRENT] = "dirent",  [SL_DB_FILES] = "files",
};

/* LMDB forbids opening one environment twice in a process: closing either copy would drop the
 * process's locks on it while the other still uses it, and the next process would then take
 * itself for the only user and reset the shared lock table. So every sl_open on one cache
 * directory in a process shares one environment, counted; `registry_lock` guards the list. */
struct env_entry {
    struct env_entry *next;
    dev_t dev;
    ino_t ino;
    pid_t pid; /* the process that opened it: an environment does not survive fork() */
    unsigned refs;
    struct sl_db *db;
};
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct env_entry *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A forked child must open its own environment (LMDB: an environment is used only by the
 * process that opened it). It forgets the parent's, without closing them: closing would touch
 * the parent's locks. */
static void forget_parent_envs(void)
{
    registry = NULL;
    pthread_mutex_init(&registry_lock, NULL);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_parent_envs);
}

/* Address space only: LMDB grows the file as pages are used. 32 GiB holds index entries for
 * about 100 million cached pages. */
#define SL_DB_MAP_SIZE (32ULL << 30)

int sl__mdb_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return -ENOSPC;
    case MDB_READERS_FULL:
        return -EAGAIN;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_BAD_TXN:
        return SL_E_CORRUPT;
    default:
        return rc > 0 ? -rc : SL_E_CORRUPT;
    }
}

static int env_open(const char *dir, struct sl_db **out);

int sl__db_open(const char *dir, struct sl_db **out)
{
    struct stat st;
    int rc = sl__mkdirs(dir, 0755);
    if (rc < 0) return rc;
    if (stat(dir, &st) < 0) return -errno;

    pthread_once(&atfork_once, install_atfork);
    pthread_mutex_lock(&registry_lock);
    struct env_entry *e = registry;
    while (e && !(e->dev == st.st_dev && e->ino == st.st_ino && e->pid == getpid())) e = e->next;
    if (e) {
        e->refs++;
        *out = e->db;
    } else if (!(e = calloc(1, sizeof(*e)))) {
        rc = -ENOMEM;
    } else if ((rc = env_open(dir, &e->db)) < 0) {
        free(e);
    } else {
        *e = (struct env_entry){.next = registry, .dev = st.st_dev, .ino = st.st_ino,
                                .pid = getpid(), .refs = 1, .db = e->db};
        registry = e;
        *out = e->db;
    }
    pthread_mutex_unlock(&registry_lock);
    return rc;
}

static void env_close(struct sl_db *db);

void sl__db_close(struct sl_db *db)
{
    if (!db) return;
    pthread_mutex_lock(&registry_lock);
    for (struct env_entry **p = &registry; *p; p = &(*p)->next) {
        if ((*p)->db != db) continue;
        struct env_entry *e = *p;
        if (--e->refs == 0) {
            *p = e->next;
            env_close(db);
            free(e);
        } else {
            mdb_env_sync(db->env, 1);
        }
        break;
    }
    pthread_mutex_unlock(&registry_lock);
}

static int env_open(const char *dir, struct sl_db **out)
{
    struct sl_db *db = calloc(1, sizeof(*db));
    MDB_txn *txn = NULL;
    int rc = 0;

    if (!db) return -ENOMEM;
    if ((rc = sl__mdb_err(mdb_env_create(&db->env))) < 0) goto out;
    mdb_env_set_maxdbs(db->env, SL_DB__COUNT + 1);
    mdb_env_set_maxreaders(db->env, 1022);
    mdb_env_set_mapsize(db->env, SL_DB_MAP_SIZE);
    rc = mdb_env_open(db->env, dir, MDB_NOTLS | MDB_NOSYNC | MDB_NORDAHEAD, 0644);
    if ((rc = sl__mdb_err(rc)) < 0) goto out;

    /* Readers left by killed processes would pin old pages forever. */
    int dead = 0;
    mdb_reader_check(db->env, &dead);

    if ((rc = sl__db_begin(db, true, &txn)) < 0) goto out;
    for (int i = 0; i < SL_DB__COUNT; i++) {
        rc = sl__mdb_err(mdb_dbi_open(txn, db_names[i], MDB_CREATE, &db->dbi[i]));
        if (rc < 0) goto out;
    }
    rc = sl__db_commit(txn);
    txn = NULL;
out:
    if (txn) mdb_txn_abort(txn);
    if (rc < 0) {
        env_close(db);
        return rc;
    }
    *out = db;
    return 0;
}

static void env_close(struct sl_db *db)
{
    if (db->env) {
        mdb_env_sync(db->env, 1);
        mdb_env_close(db->env);
    }
    free(db);
}

int sl__db_begin(struct sl_db *db, bool write, MDB_txn **txn)
{
    int rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY, txn);
    if (rc == MDB_MAP_RESIZED) {
        /* Another process grew the map: adopt its size and try again. */
        mdb_env_set_mapsize(db->env, 0);
        rc = mdb_txn_begin(db->env, NULL, write ? 0 : MDB_RDONLY, txn);
    }
    return sl__mdb_err(rc);
}

int sl__db_commit(MDB_txn *txn)
{
    return sl__mdb_err(mdb_txn_commit(txn));
}

uint64_t sl__db_get_u64(struct sl_db *db, MDB_txn *txn, const char *name)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    uint64_t x = 0;
    if (mdb_get(txn, db->dbi[SL_DB_STATE], &k, &v) == 0 && v.mv_size == sizeof(x))
        memcpy(&x, v.mv_data, sizeof(x));
    return x;
}

int sl__db_put_u64(struct sl_db *db, MDB_txn *txn, const char *name, uint64_t x)
{
    MDB_val k = {strlen(name), (void *)name}, v = {sizeof(x), &x};
    return sl__mdb_err(mdb_put(txn, db->dbi[SL_DB_STATE], &k, &v, 0));
}

int sl__db_add_u64(struct sl_db *db, MDB_txn *txn, const char *name, int64_t delta)
{
    uint64_t x = sl__db_get_u64(db, txn, name);
    /* Totals never go below zero, even if an accounting bug would take them there. */
    if (delta < 0 && (uint64_t)(-delta) > x)
        x = 0;
    else
        x += (uint64_t)delta;
    return sl__db_put_u64(db, txn, name, x);
}
