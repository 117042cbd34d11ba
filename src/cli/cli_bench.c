/*
 * cli_bench.c - `sluice bench train`: simulated training in the style of MLPerf Storage and
 * DLIO, to see whether the storage keeps the accelerators busy.
 *
 * A dataset of files (a workload's, made with --make-dataset or by bench/train.sh) is read by
 * reader threads, as a data loader's workers read: each epoch in a new seeded order, a sample
 * at a time, whole. Simulated accelerators take a batch each step and "compute" for the
 * workload's time (a sleep; --compute-jitter draws it from a normal distribution). A step
 * waits until every sample of its batch is read; readers stay at most --prefetch batches
 * ahead of the accelerators, as a data loader's queue does.
 *
 * Per epoch: accelerator utilisation AU = compute time / wall time (each accelerator's first
 * step left out, as MLPerf Storage does), the data-stall share (1 - AU), the p99 wait for a
 * batch, and what the store sent: store_bytes from --store-bytes-cmd (a command that prints
 * the bytes a store has sent so far: the benchmark's throttle counts them), else from the
 * cache's own counter (ufs_bytes_read of the config's cache). floor_bytes is what any cache of
 * cache_fraction of the dataset must fetch: all of it in epoch 1, (1 - fraction) after. With
 * --order-file, the epoch's order is written there before the epoch starts (a mount's
 * .sluice/order); with a namespace path as --data, --order hands it to sluice in-process.
 *
 * Where the samples are read: a directory of the file system (a sluice mount, rclone's, a
 * local copy) with open/read; or, with a namespace path or URI, through libsluice in this
 * process.
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice bench train --workload NAME --data PATH [options]\n"
    "       sluice bench train --workload NAME --make-dataset DIR [--scale F]\n"
    "\n"
    "Simulated training (MLPerf Storage / DLIO style): reader threads read each epoch's\n"
    "samples in a new seeded order, simulated accelerators compute on each batch for the\n"
    "workload's time. Prints per epoch the accelerator utilisation (AU), the data-stall share,\n"
    "the p99 wait for a batch, the cache's hit rate and what the store sent.\n"
    "\n"
    "Workloads (files, sample size, batch, compute per step):\n"
    "  unet3d-mini      160 x 32 MiB, batch 4, 0.45 s (bandwidth-bound)\n"
    "  resnet-mini      48,000 x 114,660 B, batch 64, 0.05 s (latency-bound)\n"
    "  cosmoflow-mini   20,000 x 2.8 MB, batch 1, 5 ms\n"
    "\n"
    "  --data PATH          the dataset: a directory (a mount), or a namespace path / URI read\n"
    "                       through libsluice in this process\n"
    "  --make-dataset DIR   write the workload's dataset into DIR and exit\n"
    "  --scale F            a fraction of the workload's files (default 1)\n"
    "  --epochs N           default 3\n"
    "  --accelerators N     default 1\n"
    "  --readers N          reading threads (default 8)\n"
    "  --prefetch N         batches the readers may be ahead (default 2 x readers)\n"
    "  --compute S          seconds per step instead of the workload's\n"
    "  --compute-jitter S   draw each step's compute from a normal distribution of this spread\n"
    "  --seed N             epoch e shuffles with seed + e (default 1)\n"
    "  --order-file FILE    write each epoch's order there first (a mount's .sluice/order)\n"
    "  --order              with a namespace --data: hand the order to sluice in-process\n"
    "  --order-ahead N      with --order(-file): hand each epoch's order over N epochs ahead,\n"
    "                       appended to the running order, as a sampler that knows the next\n"
    "                       seeds does (default 0: each at its epoch's start, in place of the\n"
    "                       one before). The last epoch hands over N more, read by nobody.\n"
    "  --store-bytes-cmd C  a shell command printing the bytes the store has sent so far\n"
    "  --between-epochs C   a shell command to run before each epoch (e.g. drop the page cache,\n"
    "                       so that a dataset smaller than RAM reads as a larger one would)\n"
    "  --mode NAME, --cache-fraction F   labels for the results (and F for floor_bytes)\n"
    "  --json               one JSON object per epoch per line\n"
    "  -h, --help           this help\n";

struct workload {
    const char *name;
    size_t files;
    uint64_t sample_bytes;
    unsigned batch;
    double compute_s;
};

static const struct workload workloads[] = {
    {"unet3d-mini", 160, 32ULL << 20, 4, 0.45},
    {"resnet-mini", 48000, 114660, 64, 0.05},
    {"cosmoflow-mini", 20000, 2800000, 1, 0.005},
};

struct bench {
    const struct workload *w;
    sl_t *sl;           /* the in-process reader, or NULL: files of the file system */
    char **paths;       /* the samples, sorted */
    size_t n;
    unsigned readers, accelerators, prefetch, batch;
    double compute_s, jitter_s;

    /* The orders handed over (--order, --order-file): up to epoch handed; the in-process one. */
    unsigned handed;
    sl_order_t *order;
    size_t *order_perm;

    /* One epoch. lock guards the counters below it. */
    size_t *perm;
    size_t nbatches;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    size_t next_sample;   /* the next index of perm a reader takes */
    size_t next_batch;    /* the next batch an accelerator takes */
    size_t taken_batches; /* batches accelerators have taken: readers stay prefetch ahead */
    unsigned *batch_read; /* samples read of each batch */
    _Atomic uint64_t bytes_read;
    int error;
    char errmsg[512];
    double *waits;  /* per batch: seconds its accelerator waited */
    bool *first;    /* per batch: an accelerator's first step */
    double *compute; /* per accelerator: compute seconds after its first step */
    double *span;    /* per accelerator: wall seconds after its first step */
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    if (s <= 0) return;
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) < 0 && errno == EINTR) {}
}

/* xorshift64*: the shuffles must be the same on every machine for a seed. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void shuffle(size_t *perm, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ULL + 1;
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng_next(&s) % i), t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

static double gauss(uint64_t *s)
{
    double u = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    double v = ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* Ends the epoch with an error: the first one is what is reported ("PATH: what"). */
static void fail(struct bench *b, int err, const char *path, const char *what)
{
    pthread_mutex_lock(&b->lock);
    if (!b->error) {
        b->error = err ? err : -EIO;
        snprintf(b->errmsg, sizeof(b->errmsg), "%s%s%s", path ? path : "", path ? ": " : "",
                 what);
    }
    pthread_cond_broadcast(&b->changed);
    pthread_mutex_unlock(&b->lock);
}

/* Reads sample i whole; returns its bytes or a negative error (the message recorded). */
static int64_t read_sample(struct bench *b, size_t i, char *buf, size_t cap)
{
    uint64_t total = 0;
    if (b->sl) {
        sl_file_t *f;
        int rc = sl_file_open(b->sl, b->paths[i], &f);
        if (rc < 0) {
            fail(b, rc, NULL, sl_errmsg(rc));
            return rc;
        }
        size_t got;
        do {
            if ((rc = sl_file_pread(f, buf, cap, total, &got)) < 0) break;
            total += got;
        } while (got == cap);
        if (rc < 0) fail(b, rc, NULL, sl_errmsg(rc));
        sl_file_close(f);
        return rc < 0 ? rc : (int64_t)total;
    }
    int fd = open(b->paths[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        fail(b, err, b->paths[i], strerror(-err));
        return err;
    }
    ssize_t got;
    while ((got = read(fd, buf, cap)) > 0) total += (uint64_t)got;
    int err = got < 0 ? -errno : 0;
    close(fd);
    if (err) fail(b, err, b->paths[i], strerror(-err));
    return err ? err : (int64_t)total;
}

static void *reader(void *arg)
{
    struct bench *b = arg;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    if (!buf) {
        fail(b, -ENOMEM, NULL, "out of memory");
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&b->lock);
        /* A data loader's queue: at most `prefetch` batches ahead of the accelerators. */
        while (!b->error && b->next_sample < b->n &&
               b->next_sample / b->batch >= b->taken_batches + b->prefetch)
            pthread_cond_wait(&b->changed, &b->lock);
        if (b->error || b->next_sample >= b->n) {
            pthread_mutex_unlock(&b->lock);
            break;
        }
        size_t k = b->next_sample++;
        pthread_mutex_unlock(&b->lock);
        int64_t got = read_sample(b, b->perm[k], buf, cap);
        if (got < 0) break;
        atomic_fetch_add(&b->bytes_read, (uint64_t)got);
        pthread_mutex_lock(&b->lock);
        b->batch_read[k / b->batch]++;
        pthread_cond_broadcast(&b->changed);
        pthread_mutex_unlock(&b->lock);
    }
    free(buf);
    return NULL;
}

struct accel {
    struct bench *b;
    unsigned id;
};

static void *accelerator(void *arg)
{
    struct accel *a = arg;
    struct bench *b = a->b;
    uint64_t rs = 0x5EED0000ULL + a->id;
    bool first = true;
    double started = 0, computed = 0;

    for (;;) {
        double t0 = now_s();
        pthread_mutex_lock(&b->lock);
        if (b->error || b->next_batch >= b->nbatches) {
            pthread_mutex_unlock(&b->lock);
            break;
        }
        size_t k = b->next_batch++;
        b->taken_batches = b->next_batch;
        pthread_cond_broadcast(&b->changed);
        size_t want = k + 1 < b->nbatches ? b->batch : b->n - k * b->batch;
        while (!b->error && b->batch_read[k] < want) pthread_cond_wait(&b->changed, &b->lock);
        bool failed = b->error != 0;
        pthread_mutex_unlock(&b->lock);
        if (failed) break;
        double waited = now_s() - t0;
        double c = b->compute_s + (b->jitter_s > 0 ? b->jitter_s * gauss(&rs) : 0);
        sleep_s(c);
        b->waits[k] = waited;
        b->first[k] = first;
        if (first) {
            started = now_s(); /* the first step is warm-up: left out */
            first = false;
        } else {
            computed += c > 0 ? c : 0;
        }
    }
    b->compute[a->id] = computed;
    b->span[a->id] = started > 0 ? now_s() - started : 0;
    return NULL;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

/* The bytes the store has sent, from the user's command; -1 when there is none or it fails. */
static int64_t store_bytes(const char *cmd)
{
    if (!cmd) return -1;
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    long long v = -1;
    if (fscanf(p, "%lld", &v) != 1) v = -1;
    return pclose(p) == 0 ? v : -1;
}

/* ---- the dataset ---------------------------------------------------------------------------- */

struct list {
    char **paths;
    uint64_t *sizes;
    size_t n, cap;
};

static int list_add(struct list *l, const char *path, uint64_t size)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 1024;
        char **p = realloc(l->paths, cap * sizeof(*p));
        if (p) l->paths = p;
        uint64_t *s = p ? realloc(l->sizes, cap * sizeof(*s)) : NULL;
        if (!s) return -ENOMEM;
        l->sizes = s;
        l->cap = cap;
    }
    if (!(l->paths[l->n] = strdup(path))) return -ENOMEM;
    l->sizes[l->n++] = size;
    return 0;
}

static int walk_add(void *arg, const char *path, const sl_stat_t *st)
{
    return list_add(arg, path, st->size);
}

/* Every regular file below dir of the file system (not following links, hidden names left). */
static int list_dir(struct list *l, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -errno;
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char *p = cli_join(dir, e->d_name);
        struct stat st;
        if (!p) rc = -ENOMEM;
        else if (lstat(p, &st) < 0) rc = -errno;
        else if (S_ISDIR(st.st_mode)) rc = list_dir(l, p);
        else if (S_ISREG(st.st_mode)) rc = list_add(l, p, (uint64_t)st.st_size);
        free(p);
    }
    closedir(d);
    return rc;
}

static int cmp_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* mkdir -p */
static int make_dirs(const char *dir)
{
    char *p = strdup(dir);
    if (!p) return -ENOMEM;
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        if (*s != '/' && *s != '\0') continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) rc = -errno;
        *s = c;
        if (!c) break;
    }
    free(p);
    return rc;
}

static int make_dataset(const struct workload *w, const char *dir, double scale)
{
    size_t n = (size_t)((double)w->files * scale + 0.5);
    char *buf = malloc(1 << 20);
    uint64_t s = 42;
    if (!buf) return cli_error(-ENOMEM, dir);
    int rc = make_dirs(dir);
    if (rc < 0) return cli_error(rc, dir);
    for (size_t i = 0; i < n; i++) {
        char sub[64], name[96];
        snprintf(sub, sizeof(sub), "%s/%03zu", dir, i / 1000);
        if (i % 1000 == 0 && mkdir(sub, 0755) < 0 && errno != EEXIST) return cli_error(-errno, sub);
        snprintf(name, sizeof(name), "%s/%03zu/sample%07zu.bin", dir, i / 1000, i);
        FILE *f = fopen(name, "wb");
        if (!f) return cli_error(-errno, name);
        for (uint64_t left = w->sample_bytes; left > 0;) {
            size_t chunk = left < (1 << 20) ? (size_t)left : (1 << 20);
            for (size_t k = 0; k + 8 <= chunk; k += 8) {
                uint64_t v = rng_next(&s);
                memcpy(buf + k, &v, 8);
            }
            if (fwrite(buf, 1, chunk, f) != chunk) break;
            left -= chunk;
        }
        if (fclose(f) != 0) return cli_error(-EIO, name);
    }
    free(buf);
    fprintf(stderr, "sluice: bench: %zu files of %llu bytes in %s\n", n,
            (unsigned long long)w->sample_bytes, dir);
    return CLI_OK;
}

/* ---- the command ------------------------------------------------------------------------------ */

struct opts {
    const char *data, *make, *order_file, *store_cmd, *between, *mode;
    double scale, cache_fraction, compute, jitter;
    unsigned epochs, accelerators, readers, prefetch, ahead;
    uint64_t seed;
    bool order, json;
};

/* Hands epoch e's order to sluice: written to --order-file, or given in process (--order). With
 * --order-ahead, appended to the running order (the file opened to append: a mount's
 * .sluice/order takes it so); otherwise in place of it. */
static int hand_over(struct bench *b, const struct opts *o, unsigned e)
{
    bool append = o->ahead > 0 && b->handed > 0;
    shuffle(b->order_perm, b->n, o->seed + e);
    b->handed = e;
    if (o->order_file) {
        FILE *f = fopen(o->order_file, append ? "a" : "w");
        if (!f) return cli_error(-errno, o->order_file);
        for (size_t i = 0; i < b->n; i++) fprintf(f, "%s\n", b->paths[b->order_perm[i]]);
        if (fclose(f) != 0) {
            fprintf(stderr, "sluice: bench: %s: the order was refused (see the mount's log)\n",
                    o->order_file);
            return CLI_FAIL;
        }
        return CLI_OK;
    }
    sl_load_item_t *items = calloc(b->n, sizeof(*items));
    if (!items) return cli_error(-ENOMEM, "bench");
    for (size_t i = 0; i < b->n; i++)
        items[i] = (sl_load_item_t){.path = b->paths[b->order_perm[i]], .length = UINT64_MAX};
    int rc;
    if (append) {
        rc = sl_order_append(b->order, items, b->n);
    } else {
        sl_order_stop(b->order);
        b->order = NULL;
        rc = sl_order_start(b->sl, items, b->n, NULL, &b->order);
    }
    free(items);
    return rc < 0 ? cli_error(rc, "bench") : CLI_OK;
}

static int run_epoch(struct bench *b, const struct opts *o, unsigned epoch, sl_t *stats_sl,
                     uint64_t dataset_bytes, struct json_object **out)
{
    int code = CLI_OK;
    if (o->between) {
        int st = system(o->between);
        if (st != 0) {
            fprintf(stderr, "sluice: bench: --between-epochs '%s' failed (status %d)\n",
                    o->between, st);
            return CLI_FAIL;
        }
    }
    shuffle(b->perm, b->n, o->seed + epoch);
    /* Counted from before the order is handed over: its fetches are the epoch's. */
    sl_cache_stats_t before = {0}, after = {0};
    bool have_stats = stats_sl && sl_cache_stats(stats_sl, &before) == 0;
    int64_t store0 = store_bytes(o->store_cmd);
    /* This epoch's order, unless handed over ahead; then the one --order-ahead epochs on. Past
     * the last epoch too: a sampler does not know which epoch is the last, and what it has
     * fetched for nothing counts in the last epoch's store bytes. */
    bool ordered = o->order_file || (o->order && b->sl);
    for (unsigned e = epoch; ordered && e <= epoch + o->ahead; e++) {
        if (e <= b->handed) continue;
        if ((code = hand_over(b, o, e)) != CLI_OK) return code;
    }

    b->nbatches = (b->n + b->batch - 1) / b->batch;
    b->next_sample = b->next_batch = b->taken_batches = 0;
    b->error = 0;
    atomic_store(&b->bytes_read, 0);
    memset(b->batch_read, 0, b->nbatches * sizeof(*b->batch_read));

    double t0 = now_s();
    pthread_t *rt = calloc(b->readers, sizeof(*rt)), *at = calloc(b->accelerators, sizeof(*at));
    struct accel *as = calloc(b->accelerators, sizeof(*as));
    if (!rt || !at || !as) {
        free(rt);
        free(at);
        free(as);
        return cli_error(-ENOMEM, "bench");
    }
    unsigned nr = 0, na = 0;
    for (; nr < b->readers; nr++)
        if (pthread_create(&rt[nr], NULL, reader, b) != 0) break;
    for (; na < b->accelerators; na++) {
        as[na] = (struct accel){b, na};
        if (pthread_create(&at[na], NULL, accelerator, &as[na]) != 0) break;
    }
    if (nr == 0 || na == 0) fail(b, -EAGAIN, NULL, "cannot start threads");
    for (unsigned i = 0; i < na; i++) pthread_join(at[i], NULL);
    pthread_mutex_lock(&b->lock);
    if (!b->error && b->next_sample < b->n) b->error = -EIO; /* cannot happen: all were read */
    pthread_cond_broadcast(&b->changed);
    pthread_mutex_unlock(&b->lock);
    for (unsigned i = 0; i < nr; i++) pthread_join(rt[i], NULL);
    double wall = now_s() - t0;
    free(rt);
    free(at);
    free(as);
    if (b->error) {
        fprintf(stderr, "sluice: bench: epoch %u: %s\n", epoch, b->errmsg);
        return CLI_FAIL;
    }

    /* A mount's counts reach the shared index within a second. */
    if (have_stats) {
        sleep_s(stats_sl == b->sl ? 0 : 1.0);
        have_stats = sl_cache_stats(stats_sl, &after) == 0;
    }
    int64_t store1 = store_bytes(o->store_cmd);
    double compute = 0, span = 0;
    for (unsigned i = 0; i < na; i++) {
        compute += b->compute[i];
        span += b->span[i];
    }
    double au = span > 0 ? compute / span : 0;
    size_t nw = 0;
    double *w = malloc(b->nbatches * sizeof(*w));
    for (size_t k = 0; w && k < b->nbatches; k++)
        if (!b->first[k]) w[nw++] = b->waits[k];
    double p99 = 0;
    if (nw) {
        qsort(w, nw, sizeof(*w), cmp_double);
        p99 = w[(size_t)ceil(0.99 * (double)nw) - 1];
    }
    free(w);
    uint64_t sb = store0 >= 0 && store1 >= store0 ? (uint64_t)(store1 - store0)
                  : have_stats ? after.ufs_bytes_read - before.ufs_bytes_read
                               : 0;
    double floor_frac = epoch == 1 ? 1.0 : 1.0 - o->cache_fraction;
    uint64_t floor_bytes = (uint64_t)((double)dataset_bytes * (floor_frac < 0 ? 0 : floor_frac));
    uint64_t hits = after.hits - before.hits, misses = after.misses - before.misses;

    struct json_object *j = json_object_new_object();
    json_object_object_add(j, "workload", json_object_new_string(b->w->name));
    json_object_object_add(j, "mode", json_object_new_string(o->mode ? o->mode : "default"));
    json_object_object_add(j, "cache_fraction", json_object_new_double(o->cache_fraction));
    json_object_object_add(j, "epoch", json_object_new_int((int)epoch));
    json_object_object_add(j, "au", json_object_new_double(au));
    json_object_object_add(j, "stall_share", json_object_new_double(span > 0 ? 1 - au : 0));
    /* The share of the bytes read that did not come from the store; and the cache's own
     * figure, pages served from it over pages asked for. */
    uint64_t rd = atomic_load(&b->bytes_read);
    json_object_object_add(j, "hit_rate",
                           json_object_new_double(rd ? 1.0 - (double)(sb < rd ? sb : rd) / (double)rd : 0));
    if (have_stats && hits + misses)
        json_object_object_add(j, "page_hit_rate",
                               json_object_new_double((double)hits / (double)(hits + misses)));
    json_object_object_add(j, "store_bytes", cli_json_u64(sb));
    json_object_object_add(j, "floor_bytes", cli_json_u64(floor_bytes));
    json_object_object_add(j, "p99_wait_s", json_object_new_double(p99));
    json_object_object_add(j, "wall_s", json_object_new_double(wall));
    /* An accelerator's compute time that AU counts (its first step left out). */
    json_object_object_add(j, "compute_s", json_object_new_double(na ? compute / na : 0));
    json_object_object_add(j, "samples", cli_json_u64(b->n));
    json_object_object_add(j, "bytes_read", cli_json_u64(rd));
    *out = j;
    return code;
}

int cli_bench(struct cli *cli, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : CLI_OK;
    }
    if (strcmp(argv[1], "train") != 0)
        return cli_usage_error("bench", "unknown benchmark '%s' (there is: train)", argv[1]);
    argc--;
    argv++;

    enum { O_WORKLOAD = 256, O_DATA, O_MAKE, O_SCALE, O_EPOCHS, O_ACCEL, O_READERS, O_PREFETCH,
           O_COMPUTE, O_JITTER, O_SEED, O_ORDER_FILE, O_ORDER, O_STORE, O_MODE, O_FRACTION, O_JSON,
           O_BETWEEN, O_AHEAD };
    static const struct option lopts[] = {
        {"workload", required_argument, NULL, O_WORKLOAD},
        {"data", required_argument, NULL, O_DATA},
        {"make-dataset", required_argument, NULL, O_MAKE},
        {"scale", required_argument, NULL, O_SCALE},
        {"epochs", required_argument, NULL, O_EPOCHS},
        {"accelerators", required_argument, NULL, O_ACCEL},
        {"readers", required_argument, NULL, O_READERS},
        {"prefetch", required_argument, NULL, O_PREFETCH},
        {"compute", required_argument, NULL, O_COMPUTE},
        {"compute-jitter", required_argument, NULL, O_JITTER},
        {"seed", required_argument, NULL, O_SEED},
        {"order-file", required_argument, NULL, O_ORDER_FILE},
        {"order", no_argument, NULL, O_ORDER},
        {"store-bytes-cmd", required_argument, NULL, O_STORE},
        {"mode", required_argument, NULL, O_MODE},
        {"cache-fraction", required_argument, NULL, O_FRACTION},
        {"json", no_argument, NULL, O_JSON},
        {"between-epochs", required_argument, NULL, O_BETWEEN},
        {"order-ahead", required_argument, NULL, O_AHEAD},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct opts o = {.scale = 1, .cache_fraction = 1, .compute = -1, .epochs = 3,
                     .accelerators = 1, .readers = 8, .seed = 1};
    const char *wname = NULL;
    int c;
    char *end;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        switch (c) {
        case O_WORKLOAD: wname = optarg; break;
        case O_DATA: o.data = optarg; break;
        case O_MAKE: o.make = optarg; break;
        case O_ORDER_FILE: o.order_file = optarg; break;
        case O_ORDER: o.order = true; break;
        case O_STORE: o.store_cmd = optarg; break;
        case O_BETWEEN: o.between = optarg; break;
        case O_MODE: o.mode = optarg; break;
        case O_JSON: o.json = true; break;
        case 'h': fputs(help, stdout); return CLI_OK;
        case O_SCALE: case O_FRACTION: case O_COMPUTE: case O_JITTER: {
            double v = strtod(optarg, &end);
            if (*end || end == optarg || v < 0 || (c == O_SCALE && (v <= 0 || v > 1)) ||
                (c == O_FRACTION && v > 1))
                return cli_usage_error("bench", "--%s: expected %s, got '%s'",
                                       lopts[c - O_WORKLOAD].name,
                                       c == O_SCALE || c == O_FRACTION ? "a fraction from 0 to 1"
                                                                       : "seconds",
                                       optarg);
            *(c == O_SCALE ? &o.scale : c == O_FRACTION ? &o.cache_fraction
                                      : c == O_COMPUTE  ? &o.compute
                                                        : &o.jitter) = v;
            break;
        }
        case O_EPOCHS: case O_ACCEL: case O_READERS: case O_PREFETCH: case O_SEED:
        case O_AHEAD: {
            unsigned long long v = strtoull(optarg, &end, 10);
            bool zero_ok = c == O_SEED || c == O_AHEAD;
            if (*end || end == optarg || optarg[0] == '-' || (!zero_ok && v == 0) ||
                (c != O_SEED && v > 100000))
                return cli_usage_error("bench", "--%s: expected a %s number, got '%s'",
                                       lopts[c - O_WORKLOAD].name,
                                       zero_ok ? "whole" : "positive", optarg);
            if (c == O_SEED) o.seed = v;
            else *(c == O_EPOCHS ? &o.epochs : c == O_ACCEL ? &o.accelerators
                   : c == O_READERS ? &o.readers : c == O_AHEAD ? &o.ahead
                                                                : &o.prefetch) = (unsigned)v;
            break;
        }
        default: return cli_usage_error("bench", "unknown option");
        }
    }
    if (optind < argc) return cli_usage_error("bench", "unexpected argument '%s'", argv[optind]);
    const struct workload *w = NULL;
    for (size_t i = 0; wname && i < sizeof(workloads) / sizeof(workloads[0]); i++)
        if (strcmp(workloads[i].name, wname) == 0) w = &workloads[i];
    if (!w)
        return cli_usage_error("bench", wname ? "unknown workload '%s' (unet3d-mini, resnet-mini, "
                                                "cosmoflow-mini)" : "missing --workload%s",
                               wname ? wname : "");
    if (o.make) return make_dataset(w, o.make, o.scale);
    if (!o.data) return cli_usage_error("bench", "missing --data PATH (or --make-dataset DIR)");
    if (o.order && o.order_file)
        return cli_usage_error("bench", "--order and --order-file: one or the other");

    struct bench b = {.w = w, .readers = o.readers, .accelerators = o.accelerators,
                      .batch = w->batch, .compute_s = o.compute >= 0 ? o.compute : w->compute_s,
                      .jitter_s = o.jitter};
    b.prefetch = o.prefetch ? o.prefetch : 2 * o.readers;
    struct list l = {0};
    int code = CLI_OK, rc;
    sl_t *stats_sl = NULL;
    struct stat st;
    bool in_process = o.data[0] != '/' || stat(o.data, &st) < 0;
    if (in_process) {
        if (!(b.sl = cli_open(cli, &code))) return code;
        rc = cli_walk(b.sl, o.data, true, walk_add, &l);
        stats_sl = b.sl;
    } else {
        rc = S_ISDIR(st.st_mode) ? list_dir(&l, o.data) : -ENOTDIR;
        /* With a config, its cache's figures (a sluice mount's, shared through the index). */
        if (rc == 0 && cli->opts.config_path && !(stats_sl = cli_open(cli, &code))) goto out;
    }
    if (rc < 0) {
        code = cli_error(rc, o.data);
        goto out;
    }
    if (l.n == 0) {
        fprintf(stderr, "sluice: bench: %s: no files (make them with --make-dataset)\n", o.data);
        code = CLI_FAIL;
        goto out;
    }
    /* Sorted by path, so that a seed names the same order wherever the files are. */
    qsort(l.paths, l.n, sizeof(*l.paths), cmp_path);
    uint64_t dataset_bytes = 0;
    for (size_t i = 0; i < l.n; i++) dataset_bytes += l.sizes[i];
    b.paths = l.paths;
    b.n = l.n;
    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.changed, NULL);
    size_t nb = (b.n + b.batch - 1) / b.batch;
    b.perm = malloc(b.n * sizeof(*b.perm));
    b.order_perm = malloc(b.n * sizeof(*b.order_perm));
    b.batch_read = malloc(nb * sizeof(*b.batch_read));
    b.waits = calloc(nb, sizeof(*b.waits));
    b.first = calloc(nb, sizeof(*b.first));
    b.compute = calloc(b.accelerators, sizeof(*b.compute));
    b.span = calloc(b.accelerators, sizeof(*b.span));
    if (!b.perm || !b.order_perm || !b.batch_read || !b.waits || !b.first || !b.compute ||
        !b.span) {
        code = cli_error(-ENOMEM, "bench");
    } else {
        if (!o.json)
            printf("%-15s %-16s %5s %5s %6s %6s %9s %10s %10s %9s\n", "workload", "mode", "cache",
                   "epoch", "AU", "stall", "hit rate", "store", "floor", "p99 wait");
        for (unsigned e = 1; e <= o.epochs && code == CLI_OK; e++) {
            struct json_object *j = NULL;
            code = run_epoch(&b, &o, e, stats_sl, dataset_bytes, &j);
            if (code != CLI_OK) break;
            if (o.json) {
                cli_json_print(j);
                continue;
            }
            char sb[32], fb[32];
            sl_format_size(json_object_get_uint64(json_object_object_get(j, "store_bytes")), sb, sizeof(sb));
            sl_format_size(json_object_get_uint64(json_object_object_get(j, "floor_bytes")), fb, sizeof(fb));
            printf("%-15s %-16s %4.0f%% %5u %5.1f%% %5.1f%% %8.1f%% %10s %10s %8.3fs\n", w->name,
                   o.mode ? o.mode : "default", o.cache_fraction * 100, e,
                   json_object_get_double(json_object_object_get(j, "au")) * 100,
                   json_object_get_double(json_object_object_get(j, "stall_share")) * 100,
                   json_object_get_double(json_object_object_get(j, "hit_rate")) * 100, sb, fb,
                   json_object_get_double(json_object_object_get(j, "p99_wait_s")));
            fflush(stdout);
            json_object_put(j);
        }
    }
    sl_order_stop(b.order);
    free(b.perm);
    free(b.order_perm);
    free(b.batch_read);
    free(b.waits);
    free(b.first);
    free(b.compute);
    free(b.span);
    pthread_mutex_destroy(&b.lock);
    pthread_cond_destroy(&b.changed);
out:
    for (size_t i = 0; i < l.n; i++) free(l.paths[i]);
    free(l.paths);
    free(l.sizes);
    return code;
}
