/*
 * mdcache.c - the metadata cache: stat results and listing snapshots of the stores, kept in the
 * cache directory's LMDB (tables "meta" and "dirent") and shared by every process using it.
 *
 * A record is fresh while now - fetched < the mount's metadata_ttl (forever for -1; never for 0,
 * which bypasses the cache). Records:
 *   meta[hash(object id)]           = {fetched, listed, found, type, size, mtime, mode, version}
 *   dirent[hash(dir id) + name]     = {type, size, mtime, mode, version}
 * "found = 0" is a negative entry: the path did not exist when fetched.
 *
 * A listing is a snapshot: it is written page by page as the store streams it, with the
 * directory's "listed" time set only when the last page is in. Each listing writes a random
 * token with its first page and adds pages, or completes the snapshot, only while the token is
 * still its own: two processes listing one directory at once never complete a mix of both. An interrupted listing leaves
 * listed = 0 and is fetched again next time; a complete one is served from LMDB in name order,
 * a batch at a time, without holding a read transaction across the caller's callbacks.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "meta/meta.h"

#define LIST_PAGE 256

struct md_rec {
    uint64_t fetched_ns; /* when the store answered */
    uint64_t listed_ns;  /* for directories: when the snapshot was completed; 0 = none */
    uint64_t token;      /* for directories: the listing writing the snapshot now */
    uint64_t size;
    int64_t mtime_ns;
    uint32_t mode;
    uint8_t found;
    uint8_t type;
    uint16_t vlen;
    /* followed by vlen bytes of version */
};

static bool fresh(uint64_t when_ns, int64_t ttl_ns)
{
    if (when_ns == 0) return false;
    if (ttl_ns == SL_TTL_FOREVER) return true;
    uint64_t now = sl__now_ns();
    return now >= when_ns && now - when_ns < (uint64_t)ttl_ns;
}

/* Packs st into buf (at least sizeof(struct md_rec) + SL_VERSION_MAX); returns the length. */
static size_t pack(const sl_stat_t *st, bool found, uint64_t fetched, uint64_t listed,
                   uint64_t token, void *buf)
{
    struct md_rec r = {.fetched_ns = fetched, .listed_ns = listed, .token = token, .found = found};
    size_t vlen = 0;
    if (found) {
        r.size = st->size;
        r.mtime_ns = st->mtime_ns;
        r.mode = st->mode;
        r.type = (uint8_t)st->type;
        vlen = strnlen(st->version, SL_VERSION_MAX - 1);
        r.vlen = (uint16_t)vlen;
    }
    memcpy(buf, &r, sizeof(r));
    if (vlen) memcpy((char *)buf + sizeof(r), st->version, vlen);
    return sizeof(r) + vlen;
}

static bool unpack(const MDB_val *v, struct md_rec *r, sl_stat_t *st)
{
    if (v->mv_size < sizeof(*r)) return false;
    memcpy(r, v->mv_data, sizeof(*r));
    if (v->mv_size != sizeof(*r) + r->vlen || r->vlen >= SL_VERSION_MAX) return false;
    if (st) {
        memset(st, 0, sizeof(*st));
        st->type = r->type == SL_TYPE_DIR ? SL_TYPE_DIR : SL_TYPE_FILE;
        st->size = r->size;
        st->mtime_ns = r->mtime_ns;
        st->mode = r->mode;
        memcpy(st->version, (const char *)v->mv_data + sizeof(*r), r->vlen);
        st->version[r->vlen] = '\0';
    }
    return true;
}

/* Writes a stat record. A directory keeps the listing time it had: a stat says nothing about
 * whether its listing snapshot is still complete. */
static int put_meta(struct sl_db *db, MDB_txn *txn, const uint8_t key[16], const sl_stat_t *st,
                    bool found, uint64_t fetched)
{
    char buf[sizeof(struct md_rec) + SL_VERSION_MAX];
    MDB_val k = {16, (void *)key}, v;
    struct md_rec old;
    uint64_t listed = 0, token = 0;
    if (found && st->type == SL_TYPE_DIR && mdb_get(txn, db->dbi[SL_DB_META], &k, &v) == 0 &&
        unpack(&v, &old, NULL) && old.found && old.type == SL_TYPE_DIR) {
        listed = old.listed_ns;
        token = old.token;
    }
    v = (MDB_val){pack(st, found, fetched, listed, token, buf), buf};
    return sl__mdb_err(mdb_put(txn, db->dbi[SL_DB_META], &k, &v, 0));
}

/* Sets only a directory's listing time (0: no complete snapshot) and token, keeping its stat. A
 * directory never stat'ed gets a record whose stat is not fresh (fetched 0), so a stat still
 * asks. With `if_token`, only if the record's token is that one (else SL_E_CHANGED). */
static int set_listed(struct sl_db *db, MDB_txn *txn, const uint8_t key[16], uint64_t listed,
                      uint64_t token, const uint64_t *if_token)
{
    char buf[sizeof(struct md_rec) + SL_VERSION_MAX];
    MDB_val k = {16, (void *)key}, v;
    struct md_rec rec = {0};
    sl_stat_t st = {.type = SL_TYPE_DIR};
    if (!(mdb_get(txn, db->dbi[SL_DB_META], &k, &v) == 0 && unpack(&v, &rec, &st) && rec.found &&
          rec.type == SL_TYPE_DIR)) {
        rec.fetched_ns = 0;
        rec.token = 0;
        memset(&st, 0, sizeof(st));
        st.type = SL_TYPE_DIR;
    }
    if (if_token && rec.token != *if_token) return SL_E_CHANGED; /* another listing took over */
    v = (MDB_val){pack(&st, true, rec.fetched_ns, listed, token, buf), buf};
    return sl__mdb_err(mdb_put(txn, db->dbi[SL_DB_META], &k, &v, 0));
}

/* Best effort: a metadata cache that cannot be written only costs a later store request. */
static void store_stat(struct sl_md *md, const char *object_id, const sl_stat_t *st, bool found)
{
    uint8_t key[16];
    MDB_txn *txn;
    sl__hash128(object_id, key);
    if (sl__db_begin(md->db, true, &txn) < 0) return;
    if (put_meta(md->db, txn, key, st, found, sl__now_ns()) < 0) {
        mdb_txn_abort(txn);
        return;
    }
    sl__db_commit(txn);
}

int sl__md_stat(struct sl_md *md, const struct sl_resolved *r, sl_stat_t *st)
{
    struct sl_mount *m = r->mount;
    int rc;

    if (md->db && m->ttl_ns != 0) {
        uint8_t key[16];
        MDB_txn *txn;
        MDB_val k = {16, key}, v;
        struct md_rec rec;
        sl__hash128(r->object_id, key);
        if (sl__db_begin(md->db, false, &txn) == 0) {
            rc = mdb_get(txn, md->db->dbi[SL_DB_META], &k, &v);
            bool hit = rc == 0 && unpack(&v, &rec, st) && fresh(rec.fetched_ns, m->ttl_ns);
            mdb_txn_abort(txn);
            if (hit) {
                if (!rec.found)
                    return sl__err(-ENOENT, "%s: No such file or directory (a cached answer of "
                                            "the store; metadata_ttl sets how long it is kept)",
                                   r->path);
                return 0;
            }
        }
    }

    rc = sl__ufs_stat(m->ufs, r->rel, st);
    if (rc == -ENOENT) sl__err(rc, "%s: No such file or directory", r->path);
    if (md->db && m->ttl_ns != 0 && (rc == 0 || rc == -ENOENT)) store_stat(md, r->object_id, st, rc == 0);
    return rc;
}

/* Serves a complete, fresh snapshot if there is one (*served); returns what the callback
 * returned to stop, or an error. */
static int list_snapshot(struct sl_md *md, const uint8_t dkey[16], int64_t ttl, sl_list_cb cb,
                         void *arg, bool *served)
{
    MDB_txn *txn;
    MDB_val k = {16, (void *)dkey}, v;
    struct md_rec rec;
    int rc;

    *served = false;
    if ((rc = sl__db_begin(md->db, false, &txn)) < 0) return 0;
    rc = mdb_get(txn, md->db->dbi[SL_DB_META], &k, &v);
    bool ok = rc == 0 && unpack(&v, &rec, NULL) && rec.found && fresh(rec.listed_ns, ttl);
    mdb_txn_abort(txn);
    if (!ok) return 0;
    *served = true;

    /* Batches of names, each batch from its own short read transaction. */
    char after[16 + 4096];
    size_t after_len = 16;
    memcpy(after, dkey, 16);
    for (;;) {
        struct {
            sl_dirent_t ent;
            char name[256];
        } batch[64];
        size_t n = 0;
        MDB_cursor *cur;
        if ((rc = sl__db_begin(md->db, false, &txn)) < 0) return rc;
        if ((rc = sl__mdb_err(mdb_cursor_open(txn, md->db->dbi[SL_DB_DIRENT], &cur))) < 0) {
            mdb_txn_abort(txn);
            return rc;
        }
        MDB_val ck = {after_len, after}, cv;
        int op = MDB_SET_RANGE;
        int mrc = mdb_cursor_get(cur, &ck, &cv, op);
        /* Skip the name the last batch ended on. */
        if (mrc == 0 && after_len > 16 && ck.mv_size == after_len &&
            memcmp(ck.mv_data, after, after_len) == 0)
            mrc = mdb_cursor_get(cur, &ck, &cv, MDB_NEXT);
        while (mrc == 0 && n < SL_ARRAY_LEN(batch)) {
            if (ck.mv_size <= 16 || memcmp(ck.mv_data, dkey, 16) != 0) break;
            size_t nlen = ck.mv_size - 16;
            if (nlen < sizeof(batch[n].name) && unpack(&cv, &rec, &batch[n].ent.st)) {
                memcpy(batch[n].name, (char *)ck.mv_data + 16, nlen);
                batch[n].name[nlen] = '\0';
                batch[n].ent.name = batch[n].name;
                n++;
            }
            if (ck.mv_size <= sizeof(after)) {
                memcpy(after, ck.mv_data, ck.mv_size);
                after_len = ck.mv_size;
            }
            mrc = mdb_cursor_get(cur, &ck, &cv, MDB_NEXT);
        }
        bool more = mrc == 0 && ck.mv_size > 16 && memcmp(ck.mv_data, dkey, 16) == 0;
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        for (size_t i = 0; i < n; i++)
            if ((rc = cb(arg, &batch[i].ent)) != 0) return rc;
        if (!more) return 0;
    }
}

/* Drops the old snapshot of a directory. Re-seeking after each delete keeps the loop simple and
 * independent of where LMDB leaves a cursor after mdb_cursor_del. */
static int snapshot_reset(struct sl_md *md, MDB_txn *txn, const uint8_t dkey[16])
{
    MDB_cursor *cur;
    int rc = sl__mdb_err(mdb_cursor_open(txn, md->db->dbi[SL_DB_DIRENT], &cur));
    if (rc < 0) return rc;
    for (;;) {
        MDB_val k = {16, (void *)dkey}, v;
        if (mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) != 0) break;
        if (k.mv_size < 16 || memcmp(k.mv_data, dkey, 16) != 0) break;
        if ((rc = sl__mdb_err(mdb_cursor_del(cur, 0))) < 0) break;
    }
    mdb_cursor_close(cur);
    return rc;
}

/* Writes one page of a listing into the snapshot (and each child's stat). */
static int snapshot_page(struct sl_md *md, const struct sl_resolved *r, const uint8_t dkey[16],
                         uint64_t token, const sl_dirent_t *ents, size_t n, bool first)
{
    MDB_txn *txn;
    uint64_t now = sl__now_ns();
    char buf[sizeof(struct md_rec) + SL_VERSION_MAX];
    int rc;

    if ((rc = sl__db_begin(md->db, true, &txn)) < 0) return rc;
    if (first) {
        if ((rc = snapshot_reset(md, txn, dkey)) < 0) goto out;
        if ((rc = set_listed(md->db, txn, dkey, 0, token, NULL)) < 0) goto out;
    } else if ((rc = set_listed(md->db, txn, dkey, 0, token, &token)) < 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t nlen = strlen(ents[i].name);
        char key[16 + 256];
        if (nlen > 255) continue; /* longer than any file system allows; not cached */
        memcpy(key, dkey, 16);
        memcpy(key + 16, ents[i].name, nlen);
        MDB_val k = {16 + nlen, key}, v = {pack(&ents[i].st, true, now, 0, 0, buf), buf};
        if ((rc = sl__mdb_err(mdb_put(txn, md->db->dbi[SL_DB_DIRENT], &k, &v, 0))) < 0) goto out;

        /* A file listed without its version (a web server's autoindex) is not a stat result:
         * opening it must still ask the store which version it is. */
        if (ents[i].st.type == SL_TYPE_FILE && !ents[i].st.version[0]) continue;
        /* The same id sl__ufs_object_id() gives the child (the root's id has no '/' at the end). */
        char *child = sl__asprintf("%s/%s", r->object_id, ents[i].name);
        if (!child) {
            rc = -ENOMEM;
            goto out;
        }
        uint8_t ckey[16];
        sl__hash128(child, ckey);
        free(child);
        if ((rc = put_meta(md->db, txn, ckey, &ents[i].st, true, now)) < 0) goto out;
    }
out:
    if (rc < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return sl__db_commit(txn);
}

static int snapshot_complete(struct sl_md *md, const uint8_t dkey[16], uint64_t token)
{
    MDB_txn *txn;
    int rc = sl__db_begin(md->db, true, &txn);
    if (rc < 0) return rc;
    if ((rc = set_listed(md->db, txn, dkey, sl__now_ns(), token, &token)) < 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return sl__db_commit(txn);
}

int sl__md_list(struct sl_md *md, const struct sl_resolved *r, sl_list_cb cb, void *arg)
{
    struct sl_mount *m = r->mount;
    bool cache = md->db && m->ttl_ns != 0;
    uint8_t dkey[16];
    struct sl_ufs_lister *l = NULL;
    sl_dirent_t ents[LIST_PAGE];
    bool first = true;
    int rc;

    sl__hash128(r->object_id, dkey);
    uint64_t token = 0;
    if (cache && getrandom(&token, sizeof(token), 0) != sizeof(token)) cache = false;
    token |= 1; /* 0 means "no listing" */
    if (cache) {
        bool served;
        rc = list_snapshot(md, dkey, m->ttl_ns, cb, arg, &served);
        if (served) return rc;
    }

    if ((rc = sl__ufs_list_open(m->ufs, r->rel, &l)) < 0) {
        if (rc == -ENOENT) sl__err(rc, "%s: No such file or directory", r->path);
        if (rc == -ENOTDIR) sl__err(rc, "%s: Not a directory", r->path);
        return rc;
    }
    for (;;) {
        size_t n = 0;
        if ((rc = sl__ufs_list_next(m->ufs, l, ents, LIST_PAGE, &n)) < 0) break;
        /* A snapshot that cannot be written is not a failure of the listing. */
        if (cache && snapshot_page(md, r, dkey, token, ents, n, first) < 0) cache = false;
        first = false;
        for (size_t i = 0; i < n && rc == 0; i++) rc = cb(arg, &ents[i]);
        if (rc || n == 0) break;
    }
    if (rc == 0 && cache) snapshot_complete(md, dkey, token);
    sl__ufs_list_close(m->ufs, l);
    return rc;
}

void sl__md_invalidate(struct sl_md *md, const struct sl_resolved *r)
{
    MDB_txn *txn;
    uint8_t key[16];

    if (!md->db || !r->mount || r->mount->ttl_ns == 0) return;
    if (sl__db_begin(md->db, true, &txn) < 0) return;
    sl__hash128(r->object_id, key);
    MDB_val k = {16, key};
    mdb_del(txn, md->db->dbi[SL_DB_META], &k, NULL);

    /* The parent's listing no longer tells the truth either. */
    const char *slash = strrchr(r->object_id, '/');
    if (*r->rel && slash) {
        char *parent = strndup(r->object_id, (size_t)(slash - r->object_id));
        if (parent) {
            sl__hash128(parent, key);
            mdb_del(txn, md->db->dbi[SL_DB_META], &k, NULL);
            free(parent);
        }
    }
    sl__db_commit(txn);
}
