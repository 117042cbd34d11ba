/*
 * io.h - the read and write paths, and the instance that ties the library together.
 */
#ifndef SL_IO_H
#define SL_IO_H

#include "cache/cache.h"
#include "core/core.h"
#include "meta/meta.h"

/* An open sluice: everything below the front ends. All fields but the atomic ones are set by
 * sl_open() and not changed after, so any thread may read them; each member guards its own
 * state. */
struct sl {
    struct sl_config *cfg;
    struct sl_counters ctr;
    struct sl_ns *ns;
    struct sl_cache *cache;
    struct sl_md md;
    struct sl_pool *pool; /* read-ahead and loading */
    char *cache_dir;      /* NULL when the disk tier is off */
    struct sl_orders *orders; /* exact-order prefetches running (order.c) */
    char *trace_dir;      /* $SLUICE_TRACE_DIR at sl_open: where closed files' reads are told */
    _Atomic unsigned ra_streams; /* files with read-ahead runs in flight (file.c) */
};

#define SL_POOL_THREADS 16

/* One version of an object, as a handle reads it. Immutable once made: a re-pin makes a new one,
 * and reads and read-ahead tasks that took this one keep using it until they drop their
 * reference. So a page key and the bytes fetched under it always come from the same version. */
struct sl_pin {
    _Atomic int refs;
    sl_stat_t st;
    struct sl_object obj; /* obj.version points into st; obj.rel into the file's resolution */
};

/* An open file. The handle and every read-ahead or warm-up task using it hold a reference; the
 * last one frees it. `lock` guards everything below it. */
struct sl_file {
    struct sl *sl;
    struct sl_resolved res;
    sl_stat_t st; /* what sl_file_stat() shows: the pin's metadata */
    _Atomic int refs;

    pthread_mutex_t lock;
    struct sl_pin *pin;  /* the version reads use now (the file holds a reference) */
    unsigned active;     /* reads in flight */
    bool served;         /* bytes were returned: the pinned version can no longer change */
    uint64_t next_off;   /* where a sequential reader reads next */
    uint64_t run_start;  /* where the current sequential run of reads began */
    uint64_t ra_next;    /* first page not yet asked for ahead of the reader */
    uint64_t ra_until;   /* read-ahead asks for pages below this one */
    uint64_t ra_end;     /* the stream ends before this page (end of file, or advised) */
    unsigned ra_runs;    /* runs asked for since the stream started: the first ones grow */
    unsigned ra_inflight; /* runs being fetched */
    bool closing;        /* sl_file_close() began: no new runs */
    unsigned window;     /* read-ahead, in pages; 0 while the access is random */
    unsigned ahead;      /* pages read ahead now: the window, or less early in a run */
    enum sl_advice advice;
    uint64_t advice_end; /* SEQUENTIAL: read-ahead stops here */
    struct sl_task_group ra;
    _Atomic uint64_t last_page; /* 1 + the last page the latest read took (0: none yet) */
    uint64_t bytes_read, seq_bytes, reads; /* what the reader asked for, for its access record */
};

/* The file's current pin, with a reference for the caller. */
struct sl_pin *sl__file_pin(struct sl_file *f);
void sl__pin_ref(struct sl_pin *p);
void sl__pin_put(struct sl_pin *p);

/* Opens path for reading; unlike sl_file_open(), it is no reader's open for the orders. */
int sl__file_open(struct sl *sl, const char *path, struct sl_file **out);
/* Metadata of a namespace path or URI (directories of the namespace included). */
int sl__path_stat(struct sl *sl, const char *path, sl_stat_t *st);
/* Lists a directory of the namespace or a store (walk.c): what sl_list() does. */
int sl__path_list(struct sl *sl, const char *path, sl_list_cb cb, void *arg);
void sl__file_ref(struct sl_file *f);
void sl__file_unref(struct sl_file *f);

/* The orders of an instance (order.c). */
struct sl_orders;
int sl__orders_init(struct sl_orders **out);
void sl__orders_fini(struct sl_orders *r); /* after every order was stopped; accepts NULL */
/* A reader opened the object object_id: the orders that hold it move past it. */
void sl__orders_opened(struct sl *sl, const char *object_id);
/* ...and closed it: what they hold of it is let go. */
void sl__orders_closed(struct sl *sl, const char *object_id);

#endif /* SL_IO_H */
