/*
 * sluice.c - the library's entry points that are not the read or write path: opening an
 * instance, metadata, listing, freeing, the cache's figures.
 *
 * sl_open() builds the layers bottom up (config, namespace with its stores, cache, metadata
 * cache, thread pool) and sl_close() takes them down in reverse. An unusable cache directory is
 * a warning, not a failure: sluice then reads through from the stores.
 */
#include <stdlib.h>
#include <string.h>

#include "io/io.h"

int sl_open(const sl_options_t *opts, sl_t **out)
{
    struct sl *sl = calloc(1, sizeof(*sl));
    int rc;

    sl__err_clear();
    if (!sl) return -ENOMEM;
    atomic_init(&sl->ra_streams, 0);
    if ((rc = sl__config_load(opts ? opts->config_path : NULL, &sl->cfg)) < 0) goto fail;
    if (opts && opts->cache_dir) {
        free(sl->cfg->cache_dir);
        if (!(sl->cfg->cache_dir = sl__strdup(opts->cache_dir))) {
            rc = -ENOMEM;
            goto fail;
        }
    }
    if ((rc = sl__ns_open(sl->cfg, &sl->ctr, &sl->ns)) < 0) goto fail;
    if ((rc = sl__cache_open(sl->cfg, &sl->ctr, &sl->cache)) < 0) goto fail;
    sl->md.db = sl__cache_db(sl->cache);
    if (sl->md.db && !(sl->cache_dir = sl__strdup(sl->cfg->cache_dir))) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = sl__pool_create(SL_POOL_THREADS, &sl->pool)) < 0) goto fail;
    if ((rc = sl__orders_init(&sl->orders)) < 0) goto fail;
    /* Set by `sluice run` for the processes of a stage: the files read through this sl are
     * part of the stage's I/O profile (see sl_file_close). */
    const char *trace = getenv("SLUICE_TRACE_DIR");
    if (trace && *trace && !(sl->trace_dir = sl__strdup(trace))) {
        rc = -ENOMEM;
        goto fail;
    }
    *out = sl;
    return 0;
fail:
    sl_close(sl);
    return rc;
}

void sl_close(sl_t *sl)
{
    if (!sl) return;
    sl__pool_destroy(sl->pool);
    sl__orders_fini(sl->orders);
    sl__cache_close(sl->cache);
    sl__ns_close(sl->ns);
    sl__config_free(sl->cfg);
    free(sl->cache_dir);
    free(sl->trace_dir);
    free(sl);
}

const char *sl_config_path(const sl_t *sl)
{
    return sl->cfg->file;
}

const char *sl_cache_dir(const sl_t *sl)
{
    return sl->cache_dir;
}

int sl_resolve(sl_t *sl, const char *path, char **uri)
{
    struct sl_resolved r;
    int rc;

    sl__err_clear();
    *uri = NULL;
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    if (r.mount && !(*uri = sl__strdup(r.object_id))) rc = -ENOMEM;
    sl__resolved_free(&r);
    return rc;
}

int sl_stat(sl_t *sl, const char *path, sl_stat_t *st)
{
    sl__err_clear();
    return sl__path_stat(sl, path, st);
}

int sl_metadata_ttl(sl_t *sl, const char *path, int64_t *ttl_ns)
{
    struct sl_resolved r;
    int rc;

    sl__err_clear();
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    *ttl_ns = r.mount ? r.mount->ttl_ns : SL_TTL_FOREVER;
    sl__resolved_free(&r);
    return 0;
}

bool sl_immutable(sl_t *sl)
{
    for (size_t i = 0; i < sl->ns->nmounts; i++)
        if (sl->ns->mounts[i].ttl_ns != SL_TTL_FOREVER) return false;
    return true;
}

int sl_cached_bytes(sl_t *sl, const char *path, const sl_stat_t *st, uint64_t *bytes)
{
    struct sl_resolved r;
    sl_stat_t own;
    int rc;

    sl__err_clear();
    *bytes = 0;
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    /* A listing's entry may lack the version (web servers' listings): ask for it. */
    if ((!st || (st->type == SL_TYPE_FILE && !st->version[0])) && r.mount &&
        (rc = sl__md_stat(&sl->md, &r, &own)) == 0)
        st = &own;
    if (rc == 0 && r.mount && st->type == SL_TYPE_FILE) {
        struct sl_object o = {.version = st->version, .size = st->size};
        sl__object_ids(&o, r.object_id, sl__cache_page_size(sl->cache));
        rc = sl__cache_cached_bytes(sl->cache, &o, bytes);
    }
    sl__resolved_free(&r);
    return rc;
}

int sl_list(sl_t *sl, const char *path, sl_list_cb cb, void *arg)
{
    sl__err_clear();
    return sl__path_list(sl, path, cb, arg);
}

int sl_free(sl_t *sl, const char *path, uint64_t *freed_bytes)
{
    struct sl_resolved r;
    uint8_t file_id[16];
    uint64_t freed = 0;
    int rc;

    sl__err_clear();
    if ((rc = sl__ns_resolve(sl->ns, path, &r)) < 0) return rc;
    if (!r.mount) {
        rc = sl__err(-EISDIR, "%s: Is a directory (free -r frees what is below it)", r.path);
    } else {
        /* No stat: the pages of a file deleted from its store can still be freed. */
        sl__hash128(r.object_id, file_id);
        rc = sl__cache_free_object(sl->cache, file_id, &freed);
        if (rc < 0) sl__err_ctx(rc, r.path);
    }
    if (freed_bytes) *freed_bytes = freed;
    sl__resolved_free(&r);
    return rc;
}

int sl_cache_stats(sl_t *sl, sl_cache_stats_t *out)
{
    sl__err_clear();
    return sl__cache_stats(sl->cache, out);
}

int sl_cache_stats_reset(sl_t *sl)
{
    sl__err_clear();
    return sl__cache_stats_reset(sl->cache);
}
