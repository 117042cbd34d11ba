/*
 * order.c - exact-order prefetch: a reader that knows the order it will read in (a training
 * epoch's shuffled sample list) hands it over, and sluice fetches in exactly that order, a
 * bounded window ahead of the reader.
 *
 * The reader is whoever opens the items' files through this sl (sl_file_open, and so every
 * reader of a mount): an open of item i's file moves the reader's position past i
 * (sl__orders_opened), and the window is [position, position + what the budget holds). A
 * reader that reads some other way says where it is with sl_order_reached().
 *
 * Workers (threads of the order's own: a fetch blocks on the store for a request's latency)
 * take the items in order. An item whose pages are all on the cache disk is held there: each
 * page file's descriptor (a shared lock that eviction respects) is kept open and the kernel is
 * asked to read the bytes ahead (sl__cache_hold_on_disk), so the reader's own reads of the page
 * files find them in the kernel's page cache; read into RAM here instead, an item cost a copy
 * and a checksum more and came slower than the reader's reads (at most MAX_DISK_HOLDS
 * descriptors). Any other item's pages are claimed and brought into RAM (from the store in
 * runs, one request each, or from the cache disk: sl__cache_claim and sl__cache_prefetch, as
 * read-ahead does), held there by a reference from the moment each is in RAM. Either hold lasts
 * until the reader has read the item (closed its file; or passed it by RELEASE_LAG items
 * without opening it): a page about to be read is never evicted for one read later, whatever
 * the tiers' policies. Held pages count against the byte budget (a share of cache.memory), and
 * so do fetches in flight, each as an item of the average size so far (until the first item is
 * sized, one fetch runs at a time); a worker that would go past it waits for the reader. Pages
 * fetched from the store are also written to the cache disk, where there is room (with the
 * epoch policy, until it is full).
 *
 * An order grows (sl_order_append): a job hands over its next epoch's order while the current
 * one runs, and the window goes on into it, so that the store's link works through the end of
 * an epoch (its last items often all cached) and the pause between epochs. The same file may
 * be in the order many times: an open takes its first occurrence not yet opened.
 * Items let go are dropped from the front as the order grows (o->base counts them): indexes
 * outside this file (stats, sl_order_reached) count from the first item ever given.
 *
 * How many fetches are in flight follows Little's law: the time a fetch takes times the rate
 * at which the reader consumes items, plus one, between 2 and max_inflight. The reader's rate
 * and the fetch time are moving averages (the rate sampled over RATE_WINDOW_S at least), so
 * the target follows a store that slows down or a reader that speeds up. Before the reader
 * has moved, max_inflight / 4 are in flight. A reader that reaches an item before its fetch
 * ended raises a floor under that target (follow_waits): the rate it keeps while it waits is
 * the supply's, not its need.
 *
 * An item's state:
 *
 *     waiting --a worker takes it (i == next)--> fetching --pages held--> held
 *        |                                                                    |
 *        |                       the reader closed it (or passed it by RELEASE_LAG unopened)
 *        |                                                                    v
 *        +--the reader passed it before a worker took it (next jumps)----> released
 *
 * Locking: o->lock guards everything below it in struct sl_order; the orders registry's lock
 * guards its list. Lock order: the registry's lock, then an order's. Neither is held across a
 * fetch.
 */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "io/io.h"

/* Items the reader has passed whose pages stay held: readers of a mount (DataLoader workers)
 * open several items at once and read them a little later. */
#define RELEASE_LAG 16U
#define DEFAULT_INFLIGHT 64U
#define MAX_INFLIGHT 256U
/* Weight of a new sample in the moving averages. */
#define EWMA 0.2
/* The reader's rate is sampled over at least this long: readers of a mount open several items
 * at once (a data loader's workers), and a rate taken over those opens alone is hundreds of
 * times the one the reader keeps up, which would put every fetch in flight at the start. */
#define RATE_WINDOW_S 0.1
/* Pages held where they are on the cache disk, at most: each is an open descriptor. */
#define MAX_DISK_HOLDS 512U

struct order_item {
    char *path;
    uint64_t offset, length;
    uint64_t id_hash;   /* XXH3 of the object id: the key of the opened-file lookup */
    char *object_id;
    size_t next_same;   /* the next item of the same hash chain, SIZE_MAX at the end */
    bool taken;         /* a worker took it */
    bool fetched;       /* a worker is done with it (whatever came of it) */
    bool opened;        /* the reader opened it */
    bool closed;        /* ...and closed it: it has read it */
    struct sl_page_ref *held;
    unsigned nheld;
    uint64_t held_bytes;
};

struct sl_order {
    struct sl *sl;
    struct sl_order *next_order; /* in the registry (its lock) */
    unsigned nthreads;
    pthread_t *threads;

    pthread_mutex_t lock;
    pthread_cond_t changed;
    bool stopping;
    size_t n, cap;
    struct order_item *items; /* may move when items are appended: no pointer kept unlocked */
    size_t *buckets;          /* heads of the id hash chains */
    size_t nbuckets;
    size_t base;      /* items dropped from the front: items[i] is the (base + i)th given */
    size_t next;      /* the next item a worker takes */
    size_t position;  /* items below it the reader has passed */
    size_t released;  /* items below it hold nothing */
    uint64_t held_bytes;  /* held by items at or past the position: what the budget bounds */
    uint64_t passed_bytes; /* held by items the reader has passed and not yet read */
    uint64_t budget;
    uint64_t avg_item_bytes; /* moving average of an item's bytes; 0: no item sized yet */
    unsigned inflight, max_inflight;
    unsigned disk_holds; /* items' pages held on the cache disk: at most MAX_DISK_HOLDS */
    unsigned floor_inflight; /* raised when the reader waits (see reached) */
    uint64_t floor_at_ns;    /* when it last moved */
    double fetch_s;      /* moving average of an item's fetch time */
    double rate;         /* items the reader consumes per second, moving average */
    uint64_t rate_at_ns; /* when the position last moved */
    size_t rate_at_pos;  /* ...and to where, counted from the first item ever (base + i) */
    sl_order_stats_t stats;
};

/* The fetches to keep in flight now (o->lock held). */
static unsigned target_inflight(const struct sl_order *o)
{
    if (o->rate <= 0 || o->fetch_s <= 0)
        return SL_MAX(o->floor_inflight, SL_MAX(2U, o->max_inflight / 4));
    double want = SL_MAX(o->fetch_s * o->rate + 1.0, (double)o->floor_inflight);
    if (want > o->max_inflight) return o->max_inflight;
    return SL_MAX(2U, (unsigned)(want + 0.999));
}

/* The reader reached item i (o->lock held). If it got there before the item's fetch ended, it
 * waits, and the rate it keeps is what the fetches supply, not what it needs: Little's law on
 * that rate keeps the supply as short as it is (resnet-mini through a mount at 25%: the reader
 * waited on 20 ms requests with a store link a third busy). So a wait doubles a floor under
 * the target, at most once a rate window, and the floor sinks by a quarter each second the
 * reader does not wait. The byte budget still bounds what is in flight. */
static void follow_waits(struct sl_order *o, size_t i, uint64_t now)
{
    uint64_t since = now - o->floor_at_ns;
    if (!o->items[i].fetched) {
        o->stats.waits++;
        if (since < (uint64_t)(RATE_WINDOW_S * 1e9)) return;
        unsigned base = SL_MAX(SL_MAX(o->floor_inflight, o->inflight), 1U);
        o->floor_inflight = SL_MIN(o->max_inflight, base * 2);
        o->floor_at_ns = now;
    } else if (o->floor_inflight && since >= 1000000000ULL) {
        o->floor_inflight = o->floor_inflight * 3 / 4;
        o->floor_at_ns = now;
    }
}

/* Lets go of item i's pages (o->lock held; the releases take the RAM tier's lock, which is
 * never taken before ours). */
static void release_item(struct sl_order *o, size_t i)
{
    struct order_item *it = &o->items[i];
    for (unsigned k = 0; k < it->nheld; k++) {
        o->disk_holds -= it->held[k].fd >= 0;
        sl__cache_release(o->sl->cache, &it->held[k]);
    }
    free(it->held);
    it->held = NULL;
    it->nheld = 0;
    if (i < o->position) o->passed_bytes -= it->held_bytes;
    else o->held_bytes -= it->held_bytes;
    it->held_bytes = 0;
}

/* Releases what the reader has passed (items below the position): an item it closed at once
 * (sl__orders_closed); one it never opened once it is RELEASE_LAG items behind; one it has
 * open only when what the passed items hold is more than the budget (a reader that keeps
 * its files open). An item still being fetched is released by its worker. Also skips the
 * items nobody took below the position (o->lock held). */
static void release_passed(struct sl_order *o)
{
    size_t upto = o->position > RELEASE_LAG ? o->position - RELEASE_LAG : 0;
    while (o->released < o->position) {
        const struct order_item *it = &o->items[o->released];
        bool reading = it->opened && !it->closed;
        if ((reading || o->released >= upto) && !it->closed && o->passed_bytes <= o->budget)
            break;
        release_item(o, o->released++);
    }
    if (o->next < o->position) {
        o->stats.skipped += o->position - o->next;
        o->next = o->position;
    }
}

/* Moves the reader's position past item i (o->lock held). */
static void reached(struct sl_order *o, size_t i)
{
    if (i + 1 <= o->position) return;
    uint64_t now = sl__mono_ns();
    follow_waits(o, i, now);
    if (o->rate_at_ns) {
        double dt = (double)(now - o->rate_at_ns) / 1e9;
        if (dt >= RATE_WINDOW_S) {
            double r = (double)(o->base + i + 1 - o->rate_at_pos) / dt;
            o->rate = o->rate > 0 ? (1 - EWMA) * o->rate + EWMA * r : r;
            o->rate_at_ns = now;
            o->rate_at_pos = o->base + i + 1;
        }
    } else {
        o->rate_at_ns = now;
        o->rate_at_pos = o->base + i + 1;
    }
    for (size_t j = o->position; j <= i; j++) { /* what they hold no longer counts as ahead */
        o->held_bytes -= o->items[j].held_bytes;
        o->passed_bytes += o->items[j].held_bytes;
    }
    o->position = i + 1;
    release_passed(o);
    pthread_cond_broadcast(&o->changed);
}

/* Holds pages [first, last) of obj where they are on the cache disk (refs[]), if every one is
 * and the descriptors allow; false and nothing held otherwise. No lock held. */
static bool hold_on_disk(struct sl_order *o, const struct sl_object *obj, uint64_t first,
                         uint64_t last, struct sl_page_ref *refs)
{
    unsigned n = (unsigned)(last - first);
    pthread_mutex_lock(&o->lock);
    bool room = o->disk_holds + n <= MAX_DISK_HOLDS;
    if (room) o->disk_holds += n;
    pthread_mutex_unlock(&o->lock);
    if (!room) return false;
    unsigned k = 0;
    while (k < n && sl__cache_hold_on_disk(o->sl->cache, obj, first + k, &refs[k]) == 0) k++;
    if (k == n) {
        pthread_mutex_lock(&o->lock);
        o->stats.on_disk++;
        pthread_mutex_unlock(&o->lock);
        return true;
    }
    for (unsigned j = 0; j < k; j++) sl__cache_release(o->sl->cache, &refs[j]);
    pthread_mutex_lock(&o->lock);
    o->disk_holds -= n;
    pthread_mutex_unlock(&o->lock);
    return false;
}

/* Fetches the pages of item gi (counted from the first item ever; it is a copy of the item's
 * path and range, taken under the lock) into RAM and takes a reference on each; no lock held.
 * Returns 0 and the references (the caller owns them) and their bytes; 1 if the reader passed
 * the item first; or an error the reader would meet too (a missing file), which leaves it the
 * item. */
static int fetch_item(struct sl_order *o, size_t gi, const struct order_item *it,
                      struct sl_page_ref **out, unsigned *nout, uint64_t *bytes)
{
    struct sl_file *f;
    int rc = sl__file_open(o->sl, it->path, &f);
    *out = NULL;
    *nout = 0;
    *bytes = 0;
    if (rc < 0) return rc;
    /* The reader got here while the file was opened (a reader faster than the store): it
     * reads the item itself, and a fetch now could only fetch what it has let go again. */
    pthread_mutex_lock(&o->lock);
    bool passed = gi < o->base + o->position;
    pthread_mutex_unlock(&o->lock);
    if (passed) {
        sl__file_unref(f);
        return 1;
    }
    struct sl_pin *pin = sl__file_pin(f);
    uint64_t ps = sl__cache_page_size(o->sl->cache), size = pin->obj.size;
    uint64_t off = SL_MIN(it->offset, size);
    uint64_t end = it->length > size - off ? size : off + it->length;
    uint64_t first = off / ps, last = end > off ? (end - 1) / ps + 1 : first;
    /* The first item sized: the others in flight are counted at its size from now on. */
    pthread_mutex_lock(&o->lock);
    if (o->avg_item_bytes == 0) {
        o->avg_item_bytes = SL_MAX((last - first) * ps, 1);
        pthread_cond_broadcast(&o->changed);
    }
    pthread_mutex_unlock(&o->lock);
    struct sl_page_ref *refs = last > first ? calloc(last - first, sizeof(*refs)) : NULL;
    if (last > first && !refs) rc = -ENOMEM;

    /* An item the cache disk holds whole stays there, held, its bytes read ahead by the
     * kernel: read into RAM here (a copy, and a checksum) and again out of RAM by the reader,
     * it came slower than the reader's own reads of the page files. */
    bool on_disk = rc == 0 && last > first && hold_on_disk(o, &pin->obj, first, last, refs);
    for (uint64_t p = first; on_disk && p < last; p++) *bytes += refs[p - first].len;
    if (on_disk) *nout = (unsigned)(last - first);

    /* Claimed a run at a time (one store request each), each page held from the moment it is
     * in RAM: a reader that reads it in between must not let it go before the hold. */
    for (uint64_t p = first; rc == 0 && !on_disk && p < last; p += SL_PREFETCH_MAX_PAGES) {
        struct sl_prefetch pf;
        struct sl_page_ref holds[SL_PREFETCH_MAX_PAGES];
        unsigned count = (unsigned)SL_MIN((uint64_t)SL_PREFETCH_MAX_PAGES, last - p);
        sl__cache_claim(o->sl->cache, &pin->obj, p, count, &pf);
        sl__cache_prefetch(o->sl->cache, &pin->obj, &pf, holds);
        for (unsigned k = 0; k < pf.n; k++) {
            if (!holds[k].page) continue; /* a failed fetch: its reader fetches it */
            refs[*nout] = holds[k];
            *bytes += holds[k].len;
            (*nout)++;
        }
    }
    if (rc < 0) free(refs);
    else *out = refs;
    sl__pin_put(pin);
    sl__file_unref(f);
    return rc;
}

static void *worker(void *arg)
{
    struct sl_order *o = arg;

    pthread_mutex_lock(&o->lock);
    for (;;) {
        release_passed(o);
        /* Until an item is sized, one fetch at a time. With a guess (a page), max_inflight / 4
         * whole files started at once (16 samples of 32 MiB: all of cache.memory, twice the
         * budget): the first batch waited for all of them, and with RAM over its budget the
         * readers' read-ahead gave way (a request a page) and epoch pages were read through. */
        bool room = o->avg_item_bytes
                        ? o->held_bytes + (o->inflight + 1) * o->avg_item_bytes <= o->budget
                        : o->inflight == 0;
        room |= o->inflight == 0 && o->held_bytes == 0;
        if (o->stopping) break;
        /* At the end, the workers wait for more items (sl_order_append) or the stop. */
        if (o->next >= o->n || o->inflight >= target_inflight(o) || !room) {
            pthread_cond_wait(&o->changed, &o->lock);
            continue;
        }
        size_t i = o->next++, gi = o->base + i;
        o->items[i].taken = true; /* not dropped from the front until fetched */
        struct order_item copy = o->items[i]; /* its path outlives the fetch, items may move */
        o->inflight++;
        o->stats.inflight = o->inflight;
        pthread_mutex_unlock(&o->lock);

        uint64_t t0 = sl__mono_ns(), bytes;
        struct sl_page_ref *refs;
        unsigned nrefs;
        int rc = fetch_item(o, gi, &copy, &refs, &nrefs, &bytes);
        double took = (double)(sl__mono_ns() - t0) / 1e9;

        pthread_mutex_lock(&o->lock);
        i = gi - o->base;
        struct order_item *it = &o->items[i];
        o->inflight--;
        o->stats.inflight = o->inflight;
        it->fetched = true;
        if (rc < 0) {
            o->stats.failed++;
        } else if (rc > 0) {
            o->stats.skipped++;
        } else {
            o->stats.fetched++;
            o->stats.bytes += bytes;
            o->fetch_s = o->fetch_s > 0 ? (1 - EWMA) * o->fetch_s + EWMA * took : took;
            o->avg_item_bytes = SL_MAX((o->avg_item_bytes * 4 + bytes) / 5, 1);
            it->held = refs;
            it->nheld = nrefs;
            it->held_bytes = bytes;
            if (i < o->position) o->passed_bytes += bytes;
            else o->held_bytes += bytes;
            /* The reader may have passed it, or read it, while it was fetched. */
            if (i < o->released || it->closed) release_item(o, i);
        }
        pthread_cond_broadcast(&o->changed);
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

/* ---- the registry: which orders an open belongs to ---------------------------------------- */

struct sl_orders {
    pthread_mutex_t lock;
    _Atomic unsigned count; /* orders in the list: an open with none looks no further */
    struct sl_order *head;
};

int sl__orders_init(struct sl_orders **out)
{
    struct sl_orders *r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    pthread_mutex_init(&r->lock, NULL);
    atomic_init(&r->count, 0);
    *out = r;
    return 0;
}

void sl__orders_fini(struct sl_orders *r)
{
    if (!r) return;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* A reader opened (opening) or closed object_id: in every order that holds it, the first item
 * of that file not opened yet, or the first one open, is marked so. Also one the window has
 * let go: a mount's readers (a data loader's workers) open items out of order, dozens of
 * items behind the position at times. An earlier epoch's item the reader never opened does
 * not take the next epoch's open: it is let go, and dropped at the next append. */
static void reader_event(struct sl *sl, const char *object_id, bool opening)
{
    struct sl_orders *r = sl->orders;
    if (atomic_load(&r->count) == 0) return;
    uint64_t h = XXH3_64bits(object_id, strlen(object_id));
    pthread_mutex_lock(&r->lock);
    for (struct sl_order *o = r->head; o; o = o->next_order) {
        pthread_mutex_lock(&o->lock);
        for (size_t i = o->buckets[h & (o->nbuckets - 1)]; i != SIZE_MAX; i = o->items[i].next_same) {
            struct order_item *it = &o->items[i];
            bool wanted = opening ? !it->opened : it->opened && !it->closed;
            if (it->id_hash != h || !wanted || strcmp(it->object_id, object_id) != 0) continue;
            if (opening) {
                it->opened = true;
                reached(o, i);
            } else {
                it->closed = true;
                release_item(o, i); /* read: its pages are the reader's to keep or let go */
                release_passed(o);
                pthread_cond_broadcast(&o->changed);
            }
            break;
        }
        pthread_mutex_unlock(&o->lock);
    }
    pthread_mutex_unlock(&r->lock);
}

void sl__orders_opened(struct sl *sl, const char *object_id)
{
    reader_event(sl, object_id, true);
}

void sl__orders_closed(struct sl *sl, const char *object_id)
{
    reader_event(sl, object_id, false);
}

/* ---- the public API ------------------------------------------------------------------------- */

static void order_free(struct sl_order *o)
{
    for (size_t i = 0; i < o->n; i++) {
        release_item(o, i);
        free(o->items[i].path);
        free(o->items[i].object_id);
    }
    free(o->items);
    free(o->buckets);
    free(o->threads);
    pthread_cond_destroy(&o->changed);
    pthread_mutex_destroy(&o->lock);
    free(o);
}

static void free_resolved(struct order_item *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].path);
        free(v[i].object_id);
    }
    free(v);
}

/* Resolves items into order items (no store is asked): a path no mount holds is named. */
static int resolve_items(struct sl *sl, const sl_load_item_t *items, size_t n,
                         struct order_item **out)
{
    struct order_item *v = calloc(n ? n : 1, sizeof(*v));
    int rc = 0;
    size_t i = 0;
    if (!v) return -ENOMEM;
    for (; i < n; i++) {
        struct order_item *it = &v[i];
        struct sl_resolved res;
        if ((rc = sl__ns_resolve(sl->ns, items[i].path, &res)) < 0) break;
        if (!res.mount) {
            rc = sl__err(-EISDIR, "%s: Is a directory", res.path);
            sl__resolved_free(&res);
            break;
        }
        it->path = sl__strdup(items[i].path);
        it->object_id = res.object_id;
        res.object_id = NULL;
        sl__resolved_free(&res);
        if (!it->path) {
            rc = -ENOMEM;
            i++; /* its object_id is freed below */
            break;
        }
        it->offset = items[i].offset;
        it->length = items[i].length;
        it->id_hash = XXH3_64bits(it->object_id, strlen(it->object_id));
    }
    if (rc < 0) {
        free_resolved(v, i);
        return rc;
    }
    *out = v;
    return 0;
}

/* Drops the items at the front that are done with (let go, and no worker's fetch in flight),
 * so that an order appended to epoch after epoch stays the size of the window's reach
 * (o->lock held). */
static void drop_done(struct sl_order *o)
{
    size_t drop = 0;
    while (drop < o->released && !(o->items[drop].taken && !o->items[drop].fetched)) drop++;
    if (drop == 0) return;
    for (size_t i = 0; i < drop; i++) {
        free(o->items[i].path);
        free(o->items[i].object_id);
    }
    memmove(o->items, o->items + drop, (o->n - drop) * sizeof(*o->items));
    o->n -= drop;
    o->next -= drop;
    o->position -= drop;
    o->released -= drop;
    o->base += drop;
}

/* Appends v[0..n) (resolve_items' array, which it takes) to the items and chains them by
 * file: an open takes a file's first item (o->lock held). */
static int add_items(struct sl_order *o, struct order_item *v, size_t n)
{
    drop_done(o);
    size_t nb = o->nbuckets ? o->nbuckets : 16;
    while (nb < (o->n + n) * 2) nb *= 2;
    size_t *last = malloc(nb * sizeof(*last)); /* each chain's tail while they are made */
    if (!last) return -ENOMEM;
    if (o->n + n > o->cap) {
        size_t cap = o->cap ? o->cap : 16;
        while (cap < o->n + n) cap *= 2;
        struct order_item *ni = realloc(o->items, cap * sizeof(*ni));
        if (!ni) goto nomem;
        o->items = ni;
        o->cap = cap;
    }
    if (nb != o->nbuckets) {
        size_t *heads = realloc(o->buckets, nb * sizeof(*heads));
        if (!heads) goto nomem;
        o->buckets = heads;
        o->nbuckets = nb;
    }
    memcpy(o->items + o->n, v, n * sizeof(*v));
    free(v);
    o->n += n;
    o->stats.items = o->base + o->n;
    /* The chains made again from the start: the items moved, and the buckets may have. */
    for (size_t b = 0; b < nb; b++) o->buckets[b] = SIZE_MAX;
    for (size_t i = 0; i < o->n; i++) {
        struct order_item *it = &o->items[i];
        size_t b = it->id_hash & (nb - 1);
        it->next_same = SIZE_MAX;
        if (o->buckets[b] == SIZE_MAX) o->buckets[b] = i;
        else o->items[last[b]].next_same = i;
        last[b] = i;
    }
    free(last);
    pthread_cond_broadcast(&o->changed);
    return 0;
nomem:
    free(last);
    return -ENOMEM;
}

int sl_order_start(sl_t *sl, const sl_load_item_t *items, size_t n,
                   const sl_order_options_t *opts, sl_order_t **out)
{
    int rc = 0;

    sl__err_clear();
    *out = NULL;
    struct sl_order *o = calloc(1, sizeof(*o));
    if (!o) return -ENOMEM;
    o->sl = sl;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->changed, NULL);
    o->budget = opts && opts->budget_bytes ? opts->budget_bytes : sl->cfg->cache_memory / 2;
    unsigned max = opts && opts->max_inflight ? opts->max_inflight : DEFAULT_INFLIGHT;
    o->max_inflight = SL_MIN(max, MAX_INFLIGHT);

    /* Every path resolved now: a path no mount holds is named at once. */
    struct order_item *v;
    if ((rc = resolve_items(sl, items, n, &v)) < 0) goto fail;
    if ((rc = add_items(o, v, n)) < 0) {
        free_resolved(v, n);
        goto fail;
    }

    o->nthreads = o->max_inflight;
    if (!(o->threads = calloc(o->nthreads, sizeof(*o->threads)))) {
        rc = -ENOMEM;
        goto fail;
    }
    struct sl_orders *r = sl->orders;
    pthread_mutex_lock(&r->lock);
    o->next_order = r->head;
    r->head = o;
    atomic_fetch_add(&r->count, 1);
    pthread_mutex_unlock(&r->lock);
    for (unsigned t = 0; t < o->nthreads; t++) {
        if (pthread_create(&o->threads[t], NULL, worker, o) != 0) {
            o->nthreads = t; /* those started do the work */
            break;
        }
    }
    if (o->nthreads == 0) {
        sl_order_stop(o);
        return sl__err(-EAGAIN, "cannot start threads for the prefetch");
    }
    *out = o;
    return 0;
fail:
    order_free(o);
    return rc;
}

int sl_order_append(sl_order_t *o, const sl_load_item_t *items, size_t n)
{
    struct order_item *v;
    sl__err_clear();
    int rc = resolve_items(o->sl, items, n, &v);
    if (rc < 0) return rc;
    pthread_mutex_lock(&o->lock);
    rc = add_items(o, v, n);
    pthread_mutex_unlock(&o->lock);
    if (rc < 0) {
        free_resolved(v, n);
    }
    return rc;
}

int sl_order_reached(sl_order_t *o, size_t i)
{
    pthread_mutex_lock(&o->lock);
    int rc = i >= o->base + o->n ? SL_E_USAGE : 0;
    if (rc == 0 && i >= o->base) { /* one dropped is long passed */
        o->items[i - o->base].opened = true;
        reached(o, i - o->base);
    }
    pthread_mutex_unlock(&o->lock);
    return rc;
}

int sl_order_stats(sl_order_t *o, sl_order_stats_t *out)
{
    pthread_mutex_lock(&o->lock);
    *out = o->stats;
    out->position = o->base + o->position;
    out->held_bytes = o->held_bytes + o->passed_bytes;
    out->target_inflight = target_inflight(o);
    out->fetch_s = o->fetch_s;
    out->rate = o->rate;
    out->floor_inflight = o->floor_inflight;
    out->done = o->next >= o->n && o->inflight == 0;
    pthread_mutex_unlock(&o->lock);
    return 0;
}

void sl_order_stop(sl_order_t *o)
{
    if (!o) return;
    struct sl_orders *r = o->sl->orders;
    pthread_mutex_lock(&r->lock);
    for (struct sl_order **p = &r->head; *p; p = &(*p)->next_order) {
        if (*p == o) {
            *p = o->next_order;
            atomic_fetch_sub(&r->count, 1);
            break;
        }
    }
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_lock(&o->lock);
    o->stopping = true;
    pthread_cond_broadcast(&o->changed);
    pthread_mutex_unlock(&o->lock);
    for (unsigned t = 0; t < o->nthreads; t++) pthread_join(o->threads[t], NULL);
    order_free(o);
}

/* ---- order lists as text --------------------------------------------------------------------- */

void sl_order_items_free(sl_load_item_t *items, size_t n)
{
    for (size_t i = 0; items && i < n; i++) free((char *)items[i].path);
    free(items);
}

int sl_order_parse(const char *text, size_t len, const char *prefix, sl_load_item_t **items,
                   size_t *n)
{
    sl_load_item_t *v = NULL;
    size_t count = 0, cap = 0, plen = prefix ? strlen(prefix) : 0;
    unsigned lineno = 0;
    int rc = 0;

    sl__err_clear();
    while (plen > 1 && prefix[plen - 1] == '/') plen--;
    for (size_t at = 0; at < len && rc == 0;) {
        const char *line = text + at, *nl = memchr(line, '\n', len - at);
        size_t ll = nl ? (size_t)(nl - line) : len - at;
        at += ll + (nl != NULL);
        lineno++;
        while (ll > 0 && line[ll - 1] == '\r') ll--;
        if (ll == 0 || line[0] == '#') continue;
        char *copy = malloc(ll + 2); /* room for a leading '/' */
        if (!copy) {
            rc = -ENOMEM;
            break;
        }
        memcpy(copy, line, ll);
        copy[ll] = '\0';
        uint64_t off = 0, length = UINT64_MAX;
        char *tab = strchr(copy, '\t');
        if (tab) {
            *tab = '\0';
            char *off_s = tab + 1, *len_s = strchr(off_s, '\t');
            if (len_s) *len_s++ = '\0';
            const char *bad = sl_parse_size(off_s, &off) < 0                    ? off_s
                              : len_s && sl_parse_size(len_s, &length) < 0 ? len_s
                                                                              : NULL;
            if (bad) {
                rc = sl__err(SL_E_USAGE, "line %u: expected PATH or PATH<TAB>OFFSET<TAB>LENGTH "
                                         "with byte counts, got '%s'", lineno, bad);
                free(copy);
                break;
            }
        }
        /* A path under the prefix (where the namespace is mounted) is a namespace path. */
        if (plen && strncmp(copy, prefix, plen) == 0 && (copy[plen] == '/' || !copy[plen]))
            memmove(copy, copy + plen, strlen(copy + plen) + 1);
        if (!copy[0]) {
            rc = sl__err(SL_E_USAGE, "line %u: '%s' is the namespace's root, not a file", lineno,
                         prefix);
            free(copy);
            break;
        }
        if (count == cap) {
            size_t ncap = cap ? 2 * cap : 256;
            sl_load_item_t *nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                free(copy);
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[count++] = (sl_load_item_t){.path = copy, .offset = off, .length = length};
    }
    if (rc < 0) {
        sl_order_items_free(v, count);
        return rc;
    }
    *items = v;
    *n = count;
    return 0;
}
