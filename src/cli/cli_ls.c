/*
 * cli_ls.c - `sluice ls [-l] [-R] [--json] [PATH...]`: list directories of the namespace.
 * Entries are sorted by name; -l adds mode, size, mtime and how much of each file is cached.
 * --json prints one object per entry per line, for scripts.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice ls [-l] [-R] [--json] [PATH...]\n"
    "\n"
    "List directories (default: the namespace root, which shows the mounts).\n"
    "\n"
    "  -l, --long       mode, size, modification time and cached fraction\n"
    "  -R, --recursive  list subdirectories too\n"
    "      --json       one JSON object per entry and line: path, name, type, size,\n"
    "                   mtime_ns, mode, version, cached_bytes\n"
    "  -h, --help       this help\n";

struct ls {
    struct cli *cli;
    sl_t *sl;
    bool lng, recursive, json;
    int err;
    size_t walked; /* directories printed by this ls -R */
    int code;      /* its exit code so far */
};

static void mode_string(const sl_stat_t *st, char out[11])
{
    static const char rwx[] = "rwxrwxrwx";
    out[0] = st->type == SL_TYPE_DIR ? 'd' : '-';
    for (int i = 0; i < 9; i++) out[1 + i] = st->mode & (1u << (8 - i)) ? rwx[i] : '-';
    out[10] = '\0';
}

static void print_entry(struct ls *ls, const char *path, const char *name, const sl_stat_t *st)
{
    uint64_t cached = 0;
    if (st->type == SL_TYPE_FILE && (ls->lng || ls->json)) sl_cached_bytes(ls->sl, path, st, &cached);

    if (ls->json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "path", json_object_new_string(path));
        json_object_object_add(o, "name", json_object_new_string(name));
        json_object_object_add(o, "type",
                               json_object_new_string(st->type == SL_TYPE_DIR ? "dir" : "file"));
        json_object_object_add(o, "size", cli_json_u64(st->size));
        json_object_object_add(o, "mtime_ns", json_object_new_int64(st->mtime_ns));
        json_object_object_add(o, "mode", json_object_new_int((int)st->mode));
        json_object_object_add(o, "version", json_object_new_string(st->version));
        json_object_object_add(o, "cached_bytes", cli_json_u64(cached));
        cli_json_print(o);
        return;
    }
    if (!ls->lng) {
        printf("%s%s\n", name, st->type == SL_TYPE_DIR ? "/" : "");
        return;
    }
    char mode[11], size[32], when[32], pct[8];
    mode_string(st, mode);
    if (st->type == SL_TYPE_DIR) {
        snprintf(size, sizeof(size), "-");
        snprintf(pct, sizeof(pct), "-");
    } else {
        sl_format_size(st->size, size, sizeof(size));
        if (st->size == 0)
            snprintf(pct, sizeof(pct), "-");
        else
            snprintf(pct, sizeof(pct), "%3.0f%%", 100.0 * (double)cached / (double)st->size);
    }
    cli_format_time(st->mtime_ns, when, sizeof(when));
    printf("%s %10s  %16s  %5s  %s%s\n", mode, size, when, pct, name,
           st->type == SL_TYPE_DIR ? "/" : "");
}

/* One directory's entries, already sorted by name. */
static int print_dir(struct ls *ls, const char *path, const sl_dirent_t *ents, size_t n,
                     bool header)
{
    if (header && !ls->json) printf("%s:\n", path);
    for (size_t i = 0; i < n; i++) {
        char *child = cli_join(path, ents[i].name);
        if (!child) return -ENOMEM;
        print_entry(ls, child, ents[i].name, &ents[i].st);
        free(child);
    }
    return 0;
}

/* ls -R: every directory below, listed in parallel, printed in order. One that cannot be
 * listed is reported, and the rest still listed, as ls(1) does. */
static int print_walked(void *arg, const char *dir, int err, const sl_dirent_t *ents, size_t n)
{
    struct ls *ls = arg;
    if (err < 0) {
        fflush(stdout);
        int code = cli_error(err, dir);
        if (code > ls->code) ls->code = code;
        return 0;
    }
    if (ls->walked++ && !ls->json) printf("\n");
    return print_dir(ls, dir, ents, n, true);
}

static int list_dir(struct ls *ls, const char *path, bool header)
{
    if (ls->recursive) {
        ls->walked = 0;
        ls->code = CLI_OK;
        int rc = sl_walk(ls->sl, path, print_walked, ls);
        return rc < 0 ? cli_error(rc, path) : ls->code;
    }
    struct cli_entry *ents;
    size_t n;
    int rc = cli_list_sorted(ls->sl, path, &ents, &n); /* sorted by name */
    if (rc < 0) return cli_error(rc, path);
    sl_dirent_t *de = n ? calloc(n, sizeof(*de)) : NULL;
    if (n && !de) {
        cli_entries_free(ents, n);
        return cli_error(-ENOMEM, path);
    }
    for (size_t i = 0; i < n; i++) de[i] = (sl_dirent_t){.name = ents[i].name, .st = ents[i].st};
    rc = print_dir(ls, path, de, n, header);
    free(de);
    cli_entries_free(ents, n);
    return rc < 0 ? cli_error(rc, path) : CLI_OK;
}

int cli_ls(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"long", no_argument, NULL, 'l'}, {"recursive", no_argument, NULL, 'R'},
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct ls ls = {.cli = cli};
    int c, code = CLI_OK;

    while ((c = getopt_long(argc, argv, "lRh", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            ls.lng = true;
            break;
        case 'R':
            ls.recursive = true;
            break;
        case 'j':
            ls.json = true;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("ls", "unknown option");
        }
    }
    if (!(ls.sl = cli_open(cli, &code))) return code;

    char *root[] = {"/"};
    char **paths = optind < argc ? argv + optind : root;
    int npaths = optind < argc ? argc - optind : 1;
    for (int i = 0; i < npaths; i++) {
        sl_stat_t st;
        int rc = sl_stat(ls.sl, paths[i], &st);
        int r;
        if (rc < 0) {
            r = cli_error(rc, paths[i]);
        } else if (st.type == SL_TYPE_FILE) {
            print_entry(&ls, paths[i], paths[i], &st);
            r = CLI_OK;
        } else {
            if (i > 0 && !ls.json) printf("\n");
            r = list_dir(&ls, paths[i], npaths > 1 || ls.recursive);
        }
        if (r > code) code = r;
    }
    return code;
}
