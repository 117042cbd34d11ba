/*
 * cli_cp.c - `sluice cp [-r] SRC DST`: copy between namespace paths, URIs and local paths.
 *
 * An argument is a URI if it has a scheme (file://, s3://), a namespace path if it is absolute
 * and a mount holds it, and otherwise a local path (relative paths always are). Local
 * destinations are written through the local store's writer (temp file, fsync, rename), so a
 * copy that fails or is killed never leaves a torn file, and one that succeeded is durable.
 * Local sources are read directly, not through the cache: caching a local file would only
 * copy it twice.
 */
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice cp [-r] SRC DST\n"
    "\n"
    "Copy SRC to DST. Either may be a namespace path (/mount/path), a URI (file:///path)\n"
    "or a local path (relative, or absolute outside every mount). If DST is a directory,\n"
    "or ends with '/', the copy goes inside it. Writes are atomic and durable: DST appears\n"
    "whole when cp succeeds, and not at all when it fails.\n"
    "\n"
    "  -r, --recursive  copy directories\n"
    "  -h, --help       this help\n";

#define CP_BUFFER (4U << 20)

struct endpoint {
    char *spec;   /* as sluice sees it: a namespace path or a URI (local paths as file://) */
    bool local;   /* given as a local path: read it without the cache */
    char *local_path;
};

struct cp {
    sl_t *sl;
    struct cli_progress progress;
    uint64_t done, total;
    size_t files_done, files_total;
    char *buf;
};

static char *absolute(const char *path)
{
    if (path[0] == '/') return strdup(path);
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd))) return NULL;
    return cli_join(cwd, path);
}

static int classify(sl_t *sl, const char *arg, struct endpoint *e)
{
    memset(e, 0, sizeof(*e));
    if (strstr(arg, "://") || arg[0] == '/') {
        char *uri = NULL;
        int rc = sl_resolve(sl, arg, &uri);
        free(uri);
        if (rc == 0) return (e->spec = strdup(arg)) ? 0 : -ENOMEM;
        if (rc != SL_E_NO_MOUNT || strstr(arg, "://")) return rc;
    }
    e->local = true;
    if (!(e->local_path = absolute(arg))) return -errno;
    size_t n = strlen(arg);
    /* Keep a trailing '/' (it means "into this directory"). */
    e->spec = malloc(strlen(e->local_path) + 9);
    if (!e->spec) return -ENOMEM;
    sprintf(e->spec, "file://%s%s", e->local_path, n > 1 && arg[n - 1] == '/' ? "/" : "");
    return 0;
}

static void endpoint_free(struct endpoint *e)
{
    free(e->spec);
    free(e->local_path);
}

/* Reads [0, size) of a source into a writer; on failure *where is the side that failed. */
static int copy_file(struct cp *cp, const char *src, bool src_local, const char *dst,
                     uint64_t size, const char **where)
{
    sl_writer_t *w;
    *where = dst;
    int rc = sl_writer_open(cp->sl, dst, &w);
    if (rc < 0) return rc;

    if (src_local) {
        /* src is file://PATH */
        int fd = open(src + strlen("file://"), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = -errno;
        } else {
            for (;;) {
                ssize_t n = read(fd, cp->buf, CP_BUFFER);
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) {
                    rc = -errno;
                    *where = src;
                }
                if (n <= 0) break;
                if ((rc = sl_writer_write(w, cp->buf, (size_t)n)) < 0) break;
                cp->done += (uint64_t)n;
                cli_progress_update(&cp->progress, cp->done, cp->total, cp->files_done,
                                    cp->files_total);
            }
            close(fd);
        }
        if (fd < 0) *where = src;
    } else {
        sl_file_t *f;
        *where = src;
        if ((rc = sl_file_open(cp->sl, src, &f)) == 0) {
            sl_file_advise(f, 0, UINT64_MAX, SL_ADVISE_SEQUENTIAL);
            (void)size; /* the listing's size may be stale: copy to the end, as it is now */
            for (uint64_t pos = 0;;) {
                size_t n;
                *where = src;
                if ((rc = sl_file_pread(f, cp->buf, CP_BUFFER, pos, &n)) < 0 || n == 0) break;
                *where = dst;
                if ((rc = sl_writer_write(w, cp->buf, n)) < 0) break;
                pos += n;
                cp->done += n;
                cli_progress_update(&cp->progress, cp->done, cp->total, cp->files_done,
                                    cp->files_total);
            }
            sl_file_close(f);
        }
    }
    if (rc < 0) {
        sl_writer_abort(w);
        return rc;
    }
    *where = dst;
    rc = sl_writer_commit(w);
    cp->files_done++;
    return rc;
}

struct tree_item {
    char *src, *dst;
    uint64_t size;
};

struct tree {
    struct tree_item *items;
    size_t n, cap;
    const char *src_root, *dst_root;
};

static int tree_add(void *arg, const char *path, const sl_stat_t *st)
{
    struct tree *t = arg;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        struct tree_item *it = realloc(t->items, cap * sizeof(*it));
        if (!it) return -ENOMEM;
        t->items = it;
        t->cap = cap;
    }
    const char *rel = path + strlen(t->src_root);
    while (*rel == '/') rel++;
    t->items[t->n].src = strdup(path);
    t->items[t->n].dst = cli_join(t->dst_root, rel);
    t->items[t->n].size = st->size;
    if (!t->items[t->n].src || !t->items[t->n].dst) return -ENOMEM;
    t->n++;
    return 0;
}

static const char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/') s--;
    return s;
}

int cli_cp(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"recursive", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct endpoint src = {0}, dst = {0};
    struct tree tree = {0};
    struct cp cp = {0};
    bool recursive = false;
    int c, code = CLI_OK, rc;
    char *target = NULL;

    while ((c = getopt_long(argc, argv, "rRh", opts, NULL)) != -1) {
        if (c == 'r' || c == 'R') {
            recursive = true;
        } else if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("cp", "unknown option");
        }
    }
    if (argc - optind != 2) return cli_usage_error("cp", "expected SRC and DST");
    if (!(cp.sl = cli_open(cli, &code))) return code;
    if ((rc = classify(cp.sl, argv[optind], &src)) < 0) {
        code = cli_error(rc, argv[optind]);
        goto out;
    }
    if ((rc = classify(cp.sl, argv[optind + 1], &dst)) < 0) {
        code = cli_error(rc, argv[optind + 1]);
        goto out;
    }

    sl_stat_t sst, dst_st;
    if ((rc = sl_stat(cp.sl, src.spec, &sst)) < 0) {
        code = cli_error(rc, argv[optind]);
        goto out;
    }
    if (sst.type == SL_TYPE_DIR && !recursive) {
        fprintf(stderr, "sluice: %s: is a directory (use cp -r)\n", argv[optind]);
        code = CLI_FAIL;
        goto out;
    }
    /* Into DST when it is a directory (or says so with a trailing '/'). */
    size_t dl = strlen(dst.spec);
    bool into = dst.spec[dl - 1] == '/' ||
                (sl_stat(cp.sl, dst.spec, &dst_st) == 0 && dst_st.type == SL_TYPE_DIR);
    target = into ? cli_join(dst.spec, base_name(src.spec)) : strdup(dst.spec);
    if (!target) {
        code = cli_error(-ENOMEM, "cp");
        goto out;
    }

    tree.src_root = src.spec;
    tree.dst_root = target;
    if (sst.type == SL_TYPE_FILE) {
        rc = tree_add(&tree, src.spec, &sst);
        if (rc == 0) {
            free(tree.items[0].dst);
            tree.items[0].dst = strdup(target);
        }
    } else {
        rc = cli_walk(cp.sl, src.spec, true, tree_add, &tree);
        if (rc < 0) {
            code = cli_error(rc, argv[optind]);
            goto out;
        }
        /* An empty directory copies too. */
        if ((rc = sl_mkdir(cp.sl, target)) < 0) {
            code = cli_error(rc, argv[optind + 1]);
            goto out;
        }
    }
    if (rc < 0) {
        code = cli_error(rc, argv[optind]);
        goto out;
    }
    if (!(cp.buf = malloc(CP_BUFFER))) {
        code = cli_error(-ENOMEM, "cp");
        goto out;
    }
    for (size_t i = 0; i < tree.n; i++) cp.total += tree.items[i].size;
    cp.files_total = tree.n;
    cli_progress_start(&cp.progress, cli, "cp");
    for (size_t i = 0; i < tree.n; i++) {
        const char *where;
        if ((rc = copy_file(&cp, tree.items[i].src, src.local, tree.items[i].dst,
                            tree.items[i].size, &where)) < 0) {
            cli_progress_end(&cp.progress);
            code = cli_error(rc, where);
            goto out;
        }
    }
    cli_progress_end(&cp.progress);
out:
    for (size_t i = 0; i < tree.n; i++) {
        free(tree.items[i].src);
        free(tree.items[i].dst);
    }
    free(tree.items);
    free(target);
    free(cp.buf);
    endpoint_free(&src);
    endpoint_free(&dst);
    return code;
}
