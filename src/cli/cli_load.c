/*
 * cli_load.c - `sluice load [-r] [--order FILE] PATH...`: warm the cache ahead of a job.
 *
 * Paths are warmed in the order given (directories with -r in name order); --order FILE gives
 * the order exactly, one PATH per line, or PATH<TAB>OFFSET<TAB>LENGTH for a byte range (a
 * training job's epoch order). A progress bar shows on a terminal.
 *
 * An order whose paths are under a sluice mount point (as the job reading through the mount
 * sees its files) is handed to that mount's daemon instead, through MOUNT/.sluice/order: the
 * daemon holds the pages its readers read, so only it can fetch a bounded window ahead of them
 * and keep what is about to be read. This process would only fill the disk cache, all at once.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice load [-r] [--order FILE] [--json] [PATH...]\n"
    "\n"
    "Warm the disk cache with PATHs (files, or directories with -r), many pages in flight.\n"
    "Pages already cached are not fetched again.\n"
    "\n"
    "  -r, --recursive   load directories and everything below them\n"
    "      --order FILE  warm in exactly this order: one PATH per line, or\n"
    "                    PATH<TAB>OFFSET<TAB>LENGTH for a byte range; '#' starts a comment;\n"
    "                    '-' reads the list from standard input. Paths under a sluice mount\n"
    "                    point go to that mount, which fetches them a window ahead of its\n"
    "                    readers (read MOUNT/.sluice/order for its figures)\n"
    "      --json        print a summary object: files, bytes, seconds\n"
    "  -h, --help        this help\n";

struct items {
    sl_load_item_t *v;
    size_t n, cap;
};

static int add_item(struct items *it, const char *path, uint64_t off, uint64_t len)
{
    if (it->n == it->cap) {
        size_t cap = it->cap ? 2 * it->cap : 256;
        sl_load_item_t *v = realloc(it->v, cap * sizeof(*v));
        if (!v) return -ENOMEM;
        it->v = v;
        it->cap = cap;
    }
    char *p = strdup(path);
    if (!p) return -ENOMEM;
    it->v[it->n++] = (sl_load_item_t){.path = p, .offset = off, .length = len};
    return 0;
}

static int walk_add(void *arg, const char *path, const sl_stat_t *st)
{
    (void)st;
    return add_item(arg, path, 0, UINT64_MAX);
}

/* The whole of FILE ('-': standard input). */
static int read_text(const char *file, char **text, size_t *len)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "re");

    *text = NULL;
    *len = 0;
    if (!f) {
        fprintf(stderr, "sluice: load: --order %s: %s\n", file, strerror(errno));
        return CLI_FAIL;
    }
    FILE *mem = open_memstream(text, len);
    char buf[65536];
    size_t got;
    while (mem && (got = fread(buf, 1, sizeof(buf), f)) > 0) fwrite(buf, 1, got, mem);
    bool failed = ferror(f) || !mem;
    if (f != stdin) fclose(f);
    if (mem) fclose(mem);
    if (failed) {
        free(*text);
        *text = NULL;
        fprintf(stderr, "sluice: load: --order %s: cannot read it\n", file);
        return CLI_FAIL;
    }
    return CLI_OK;
}

/* Parses the order; *mount: the sluice mount point its first path is under, or NULL (then
 * its items are in it). */
static int parse_order(const char *file, const char *text, size_t len, struct items *it,
                       char **mount)
{
    sl_load_item_t *v;
    size_t n;
    int code = CLI_OK;

    *mount = NULL;
    int rc = sl_order_parse(text, len, NULL, &v, &n);
    if (rc < 0) {
        fprintf(stderr, "sluice: load: --order %s: %s\n", file, sl_errmsg(rc));
        return rc == SL_E_USAGE ? CLI_USAGE : CLI_FAIL;
    }
    if (n) {
        char real[PATH_MAX];
        *mount = cli_sluice_mount_of(realpath(v[0].path, real) ? real : v[0].path, NULL);
    }
    for (size_t i = 0; i < n && code == CLI_OK && !*mount; i++)
        if (add_item(it, v[i].path, v[i].offset, v[i].length) < 0) code = cli_error(-ENOMEM, "load");
    sl_order_items_free(v, n);
    return code;
}

/* Writes the order to the mount's control file; the close is the mount's answer. */
static int hand_over(const char *file, const char *mount, const char *text, size_t len,
                     bool json, int verbosity)
{
    char *ctl = cli_join(mount, ".sluice/order");
    int fd = ctl ? open(ctl, O_WRONLY | O_TRUNC | O_CLOEXEC) : -1;
    int err = fd < 0 ? (ctl ? errno : ENOMEM) : 0;

    for (size_t off = 0; !err && off < len;) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno != EINTR) err = errno;
        if (n > 0) off += (size_t)n;
    }
    if (fd >= 0 && close(fd) < 0 && !err) err = errno;
    if (err) {
        if (err == EINVAL)
            fprintf(stderr, "sluice: load: --order %s: the mount at %s refused it: its log "
                            "(CACHE_DIR/mount.log) names the line\n", file, mount);
        else if (err == EROFS)
            fprintf(stderr, "sluice: load: --order %s: the mount at %s is read-only (-o ro), "
                            "and an order is written to it: mount it without ro to hand it "
                            "orders\n", file, mount);
        else
            fprintf(stderr, "sluice: load: --order %s: %s: %s\n", file, ctl ? ctl : mount,
                    strerror(err));
        free(ctl);
        return CLI_FAIL;
    }
    /* The running order's figures, as the mount reports them. */
    struct json_object *figures = json_object_from_file(ctl);
    struct json_object *items = NULL;
    json_object_object_get_ex(figures, "items", &items);
    if (json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "mount", json_object_new_string(mount));
        json_object_object_add(o, "order", figures ? figures : json_object_new_null());
        cli_json_print(o);
        figures = NULL;
    } else if (verbosity >= 0) {
        fprintf(stderr, "sluice: load: %" PRId64 " item(s) handed to the mount at %s: it fetches "
                        "them in this order, a window ahead of its readers (figures: cat %s)\n",
                items ? json_object_get_int64(items) : 0, mount, ctl);
    }
    json_object_put(figures);
    free(ctl);
    return CLI_OK;
}

struct load_progress {
    struct cli_progress bar;
    uint64_t total; /* as sl_load counted it */
};

static void on_progress(void *arg, uint64_t done, uint64_t total, size_t items_done,
                        size_t items_total)
{
    struct load_progress *p = arg;
    p->total = total;
    cli_progress_update(&p->bar, done, total, items_done, items_total);
}

int cli_load(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"recursive", no_argument, NULL, 'r'}, {"order", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},      {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct items it = {0};
    const char *order = NULL;
    bool recursive = false, json = false;
    int c, code = CLI_OK;
    sl_t *sl;

    while ((c = getopt_long(argc, argv, "rh", opts, NULL)) != -1) {
        switch (c) {
        case 'r':
            recursive = true;
            break;
        case 'o':
            order = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("load", "unknown option");
        }
    }
    if (optind >= argc && !order) return cli_usage_error("load", "missing PATH (or --order FILE)");
    if (order) {
        char *text, *mount = NULL;
        size_t len;
        if ((code = read_text(order, &text, &len)) != CLI_OK) return code;
        code = parse_order(order, text, len, &it, &mount);
        if (code == CLI_OK && mount) code = hand_over(order, mount, text, len, json, cli->verbosity);
        bool handed = mount != NULL;
        free(text);
        free(mount);
        if (code != CLI_OK || (handed && optind >= argc)) goto out;
    }
    if (!(sl = cli_open(cli, &code))) goto out;
    for (int i = optind; i < argc; i++) {
        int rc = cli_walk(sl, argv[i], recursive, walk_add, &it);
        if (rc == -EISDIR) {
            fprintf(stderr, "sluice: %s: is a directory (use load -r)\n", argv[i]);
            code = CLI_FAIL;
            goto out;
        }
        if (rc < 0) {
            code = cli_error(rc, argv[i]);
            goto out;
        }
    }

    struct load_progress progress = {0};
    size_t failed = SIZE_MAX;
    uint64_t t0 = cli_now_ns();
    cli_progress_start(&progress.bar, cli, "load");
    int rc = sl_load(sl, it.v, it.n, on_progress, &progress, &failed);
    cli_progress_end(&progress.bar);
    double secs = (double)(cli_now_ns() - t0) / 1e9;
    if (rc < 0) {
        code = cli_error(rc, failed < it.n ? it.v[failed].path : "load");
        goto out;
    }
    uint64_t total = progress.total;
    if (json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "files", cli_json_u64(it.n));
        json_object_object_add(o, "bytes", cli_json_u64(total));
        json_object_object_add(o, "seconds", json_object_new_double(secs));
        cli_json_print(o);
    } else if (cli->verbosity >= 0) {
        char size[32], rate[32];
        sl_format_size(total, size, sizeof(size));
        sl_format_size(secs > 0 ? (uint64_t)((double)total / secs) : 0, rate, sizeof(rate));
        fprintf(stderr, "sluice: loaded %s in %zu file%s in %.1f s (%s/s)\n", size, it.n,
                it.n == 1 ? "" : "s", secs, rate);
    }
out:
    for (size_t i = 0; i < it.n; i++) free((char *)it.v[i].path);
    free(it.v);
    return code;
}
