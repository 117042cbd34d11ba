/*
 * load.c - warming the disk cache: `sluice load`, and later the prefetch of a pipeline's next
 * inputs and an epoch's exact order.
 *
 * Items are taken in the order given and their missing pages handed to the pool, a bounded
 * number in flight (many small files in flight together; one large file as parallel ranges).
 * Pages already on disk are not read back, and warmed pages are not kept in RAM. Every item's
 * version is pinned at its open, as for any reader.
 */
#include <stdio.h>
#include <stdlib.h>

#include "io/io.h"

#define LOAD_IN_FLIGHT 32
#define PROGRESS_INTERVAL_NS (100ULL * 1000000ULL)

struct load_ctx {
    _Atomic uint64_t done_bytes;
    _Atomic size_t failed; /* index of the first failed item, or SIZE_MAX */
    char errmsg[1024];     /* its error, written by the task that set failed */
};

struct warm_task {
    struct load_ctx *ctx;
    struct sl_file *f;
    struct sl_pin *pin;
    uint64_t index;
    size_t item;
};

static int warm_run(void *arg)
{
    struct warm_task *t = arg;
    struct sl_page_ref ref;
    int rc = sl__cache_get(t->f->sl->cache, &t->pin->obj, t->index,
                           SL_GET_PREFETCH | SL_GET_NO_RAM, &ref);
    if (rc == 0) {
        atomic_fetch_add(&t->ctx->done_bytes, ref.len);
        sl__cache_release(t->f->sl->cache, &ref);
    } else {
        size_t none = SIZE_MAX;
        /* The detail is this worker thread's: carry it to the caller's thread. */
        if (atomic_compare_exchange_strong(&t->ctx->failed, &none, t->item))
            snprintf(t->ctx->errmsg, sizeof(t->ctx->errmsg), "%s",
                     sl_errmsg(sl__err_ctx(rc, t->f->res.path)));
    }
    sl__pin_put(t->pin);
    sl__file_unref(t->f);
    free(t);
    return rc;
}

static void report(sl_progress_cb cb, void *arg, struct load_ctx *ctx, uint64_t total,
                   size_t done_items, size_t n, uint64_t *last, bool force)
{
    uint64_t now = sl__mono_ns();
    if (!cb || (!force && now - *last < PROGRESS_INTERVAL_NS)) return;
    *last = now;
    cb(arg, atomic_load(&ctx->done_bytes), total, done_items, n);
}

int sl_load(sl_t *sl, const sl_load_item_t *items, size_t n, sl_progress_cb cb, void *arg,
            size_t *failed)
{
    struct load_ctx ctx;
    struct sl_task_group g;
    uint64_t ps = sl__cache_page_size(sl->cache), total = 0, last = 0;
    int rc = 0;

    sl__err_clear();
    /* Warming a cache that cannot hold anything would only read the data and drop it. */
    if (!sl->cache_dir)
        return sl__err(SL_E_NO_CACHE, "cache %s: cannot be used, so there is nothing to warm "
                                      "(see the warning above; set cache.dir to a writable "
                                      "directory)", sl->cfg->cache_dir);
    atomic_init(&ctx.done_bytes, 0);
    atomic_init(&ctx.failed, SIZE_MAX);
    sl__group_init(&g);

    /* Sizes first, for an honest progress bar (and to fail early on a missing path). */
    for (size_t i = 0; i < n && rc == 0; i++) {
        sl_stat_t st;
        if ((rc = sl__path_stat(sl, items[i].path, &st)) < 0) {
            atomic_store(&ctx.failed, i);
        } else if (st.type == SL_TYPE_FILE && items[i].offset < st.size) {
            total += SL_MIN(items[i].length, st.size - items[i].offset);
        }
    }

    for (size_t i = 0; i < n && rc == 0; i++) {
        struct sl_file *f;
        if ((rc = sl__file_open(sl, items[i].path, &f)) < 0) {
            atomic_store(&ctx.failed, i);
            break;
        }
        struct sl_pin *pin = sl__file_pin(f);
        uint64_t size = pin->obj.size, off = items[i].offset;
        uint64_t end = items[i].length > size - SL_MIN(off, size) ? size : off + items[i].length;
        for (uint64_t idx = off / ps; off < end && idx * ps < end; idx++) {
            uint64_t plen = SL_MIN(ps, size - idx * ps);
            if (sl__cache_on_disk(sl->cache, &pin->obj, idx)) {
                atomic_fetch_add(&ctx.done_bytes, plen);
                continue;
            }
            struct warm_task *t = malloc(sizeof(*t));
            if (!t) {
                rc = -ENOMEM;
                break;
            }
            *t = (struct warm_task){.ctx = &ctx, .f = f, .pin = pin, .index = idx, .item = i};
            sl__file_ref(f);
            sl__pin_ref(pin);
            if ((rc = sl__pool_submit(sl->pool, &g, warm_run, t)) < 0) {
                sl__pin_put(pin);
                sl__file_unref(f);
                free(t);
                break;
            }
            sl__group_wait_below(&g, LOAD_IN_FLIGHT);
            report(cb, arg, &ctx, total, i, n, &last, false);
            if (atomic_load(&ctx.failed) != SIZE_MAX) break;
        }
        sl__pin_put(pin);
        sl__file_unref(f);
        if (atomic_load(&ctx.failed) != SIZE_MAX) break;
        report(cb, arg, &ctx, total, i + 1, n, &last, false);
    }
    int task_rc = sl__group_wait(&g);
    if (rc == 0 && task_rc) rc = sl__err(task_rc, "%s", ctx.errmsg);
    sl__group_destroy(&g);
    if (rc == 0) report(cb, arg, &ctx, total, n, n, &last, true);
    if (failed) *failed = atomic_load(&ctx.failed);
    return rc;
}
