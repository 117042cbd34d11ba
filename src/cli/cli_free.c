/*
 * cli_free.c - `sluice free [-r] PATH...`: drop the cached pages of paths (every cached
 * version of each file). The pages of a file that is gone from its store can be freed too.
 */
#include <getopt.h>
#include <stdlib.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice free [-r] [--json] PATH...\n"
    "\n"
    "Drop the cached pages of each PATH (files, or directories with -r).\n"
    "\n"
    "  -r, --recursive  free everything below directories\n"
    "      --json       print a summary object: files, freed_bytes\n"
    "  -h, --help       this help\n";

struct freed {
    sl_t *sl;
    uint64_t bytes;
    size_t files;
};

static int free_one(void *arg, const char *path, const sl_stat_t *st)
{
    struct freed *fr = arg;
    uint64_t n = 0;
    (void)st;
    int rc = sl_free(fr->sl, path, &n);
    if (rc == 0) {
        fr->bytes += n;
        fr->files++;
    }
    return rc;
}

int cli_free(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"recursive", no_argument, NULL, 'r'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool recursive = false, json = false;
    int c, code = CLI_OK;
    struct freed fr = {0};

    while ((c = getopt_long(argc, argv, "rh", opts, NULL)) != -1) {
        if (c == 'r') {
            recursive = true;
        } else if (c == 'j') {
            json = true;
        } else if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("free", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("free", "missing PATH");
    if (!(fr.sl = cli_open(cli, &code))) return code;

    for (int i = optind; i < argc; i++) {
        sl_stat_t st;
        int rc = sl_stat(fr.sl, argv[i], &st);
        if (rc == -ENOENT)
            rc = free_one(&fr, argv[i], NULL); /* gone from the store, maybe not from the cache */
        else if (rc == 0 && st.type == SL_TYPE_DIR && !recursive) {
            fprintf(stderr, "sluice: %s: is a directory (use free -r)\n", argv[i]);
            code = CLI_FAIL;
            continue;
        } else if (rc == 0)
            rc = cli_walk(fr.sl, argv[i], true, free_one, &fr);
        if (rc < 0) {
            int r = cli_error(rc, argv[i]);
            if (r > code) code = r;
        }
    }
    if (json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "files", cli_json_u64(fr.files));
        json_object_object_add(o, "freed_bytes", cli_json_u64(fr.bytes));
        cli_json_print(o);
    } else if (cli->verbosity >= 0) {
        char size[32];
        printf("freed %s from %zu file%s\n", sl_format_size(fr.bytes, size, sizeof(size)),
               fr.files, fr.files == 1 ? "" : "s");
    }
    return code;
}
