/*
 * control.c - MOUNT/.sluice/: the files through which a job talks to the sluice serving its
 * mount, with nothing but open, write and read (a DataLoader's sampler, a shell script).
 *
 *   .sluice/order   write an epoch's order to it (one path per line, as `sluice load --order`
 *                   takes it: namespace paths, or paths under the mount point as the job sees
 *                   them); at close the mount starts fetching in exactly that order, a bounded
 *                   window ahead of the job's reads (sl_order_start), in place of the order
 *                   before. Opened to append (`>>`, O_APPEND), what is written goes on the
 *                   end of the running order (sl_order_append): the next epoch's order, handed
 *                   over while this one is read, so the window runs on into it. A bad line
 *                   makes the close fail with EINVAL (the line is named in the mount's log).
 *                   Read it for the running order's figures, as JSON.
 *
 * The folder is not listed at the mount's root (find and cp -r do not walk into it), but can
 * be looked up and listed. Its files are served with direct_io: they have no size, and what a
 * read returns is made at open.
 *
 * Locking: control->lock guards the running order; an open control file belongs to the one
 * request thread that serves it at a time (the kernel orders a file's requests).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/control.h"

#define ORDER_NAME "order"
#define MAX_ORDER_BYTES (256U << 20)

struct control {
    sl_t *sl;
    char *mountpoint;
    pthread_mutex_t lock;
    sl_order_t *order; /* the running order, or NULL */
};

struct control_file {
    bool write, append;
    char *buf;
    size_t len, cap;
};

bool sl__control_path(const char *path)
{
    size_t n = strlen(SL_CONTROL_DIR);
    return strncmp(path, SL_CONTROL_DIR, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

static bool is_order(const char *path)
{
    return strcmp(path, SL_CONTROL_DIR "/" ORDER_NAME) == 0;
}

int sl__control_stat(const char *path, sl_stat_t *st)
{
    memset(st, 0, sizeof(*st));
    if (strcmp(path, SL_CONTROL_DIR) == 0) {
        st->type = SL_TYPE_DIR;
        st->mode = 0755;
        return 0;
    }
    if (!is_order(path)) return -ENOENT;
    st->type = SL_TYPE_FILE;
    st->mode = 0666;
    return 0;
}

int sl__control_list(const char *path, sl_list_cb cb, void *arg)
{
    if (strcmp(path, SL_CONTROL_DIR) != 0) return -ENOTDIR;
    sl_dirent_t e = {.name = ORDER_NAME};
    sl__control_stat(SL_CONTROL_DIR "/" ORDER_NAME, &e.st);
    int rc = cb(arg, &e);
    return rc < 0 ? rc : 0;
}

int sl__control_init(sl_t *sl, const char *mountpoint, struct control **out)
{
    struct control *c = calloc(1, sizeof(*c));
    if (!c || !(c->mountpoint = strdup(mountpoint))) {
        free(c);
        return -ENOMEM;
    }
    c->sl = sl;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void sl__control_fini(struct control *c)
{
    if (!c) return;
    sl_order_stop(c->order);
    pthread_mutex_destroy(&c->lock);
    free(c->mountpoint);
    free(c);
}

/* The running order's figures, as JSON text (c->lock held). */
static char *status_text(struct control *c)
{
    char *s = NULL;
    sl_order_stats_t st;
    if (!c->order) return strdup("{\"active\":false}\n");
    sl_order_stats(c->order, &st);
    if (asprintf(&s,
                 "{\"active\":true,\"items\":%zu,\"position\":%zu,\"fetched\":%zu,"
                 "\"skipped\":%zu,\"failed\":%zu,\"bytes\":%llu,\"held_bytes\":%llu,"
                 "\"inflight\":%u,\"target_inflight\":%u,\"fetch_s\":%.6f,\"rate\":%.3f,"
                 "\"on_disk\":%zu,\"waits\":%zu,\"floor_inflight\":%u,\"done\":%s}\n",
                 st.items, st.position, st.fetched, st.skipped, st.failed,
                 (unsigned long long)st.bytes, (unsigned long long)st.held_bytes, st.inflight,
                 st.target_inflight, st.fetch_s, st.rate, st.on_disk, st.waits, st.floor_inflight,
                 st.done ? "true" : "false") < 0)
        return NULL;
    return s;
}

int sl__control_open(struct control *c, const char *path, bool write, bool append,
                     struct control_file **out)
{
    if (!is_order(path)) return strcmp(path, SL_CONTROL_DIR) == 0 ? -EISDIR : -ENOENT;
    struct control_file *f = calloc(1, sizeof(*f));
    if (!f) return -ENOMEM;
    f->write = write;
    f->append = write && append;
    if (!write) {
        pthread_mutex_lock(&c->lock);
        f->buf = status_text(c);
        pthread_mutex_unlock(&c->lock);
        if (!f->buf) {
            free(f);
            return -ENOMEM;
        }
        f->len = strlen(f->buf);
    }
    *out = f;
    return 0;
}

int sl__control_write(struct control_file *f, const char *buf, size_t n, uint64_t off)
{
    if (!f->write) return -EBADF;
    if (f->append) off = f->len; /* the kernel's offsets follow a size this file does not have */
    if (off > MAX_ORDER_BYTES || n > MAX_ORDER_BYTES - off) return -EFBIG;
    size_t end = (size_t)off + n;
    if (end > f->cap) {
        size_t cap = f->cap ? f->cap : 65536;
        while (cap < end) cap *= 2;
        char *nb = realloc(f->buf, cap);
        if (!nb) return -ENOMEM;
        f->buf = nb;
        f->cap = cap;
    }
    if (off > f->len) memset(f->buf + f->len, 0, (size_t)off - f->len);
    memcpy(f->buf + off, buf, n);
    if (end > f->len) f->len = end;
    return 0;
}

int sl__control_read(struct control_file *f, char *buf, size_t n, uint64_t off, size_t *got)
{
    *got = 0;
    if (f->write || off >= f->len) return 0;
    *got = n < f->len - (size_t)off ? n : f->len - (size_t)off;
    memcpy(buf, f->buf + off, *got);
    return 0;
}

int sl__control_flush(struct control *c, struct control_file *f)
{
    if (!f->write || !f->buf) return 0; /* a reader, or a writer that wrote nothing (yet) */
    sl_load_item_t *items;
    size_t n;
    int rc = sl_order_parse(f->buf, f->len, c->mountpoint, &items, &n);
    if (rc < 0) {
        fprintf(stderr, "sluice: %s/" ORDER_NAME ": %s\n", SL_CONTROL_DIR + 1, sl_errmsg(rc));
        return rc;
    }
    sl_order_t *o = NULL, *old = NULL;
    /* Appended to the running order under the lock: a replacing writer must not stop it
     * in between. */
    pthread_mutex_lock(&c->lock);
    bool appended = f->append && c->order;
    if (appended && n > 0) rc = sl_order_append(c->order, items, n);
    pthread_mutex_unlock(&c->lock);
    if (!appended && n > 0) rc = sl_order_start(c->sl, items, n, NULL, &o);
    if (rc < 0)
        fprintf(stderr, "sluice: %s/" ORDER_NAME ": %s\n", SL_CONTROL_DIR + 1, sl_errmsg(rc));
    sl_order_items_free(items, n);
    if (rc < 0) return rc;
    /* Written once per close: a second flush of the same bytes (a dup) changes nothing. */
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
    if (appended) return 0;
    pthread_mutex_lock(&c->lock);
    old = c->order;
    c->order = o;
    pthread_mutex_unlock(&c->lock);
    sl_order_stop(old);
    return 0;
}

void sl__control_close(struct control_file *f)
{
    if (!f) return;
    free(f->buf);
    free(f);
}
