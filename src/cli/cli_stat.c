/*
 * cli_stat.c - `sluice stat [--json] PATH...`: one entry's metadata, where it lives, and how
 * much of it is in the cache.
 */
#include <getopt.h>
#include <stdlib.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice stat [--json] PATH...\n"
    "\n"
    "Show the metadata of each PATH: its store URI, type, size, modification time, version\n"
    "in its store, and how many of its bytes are in the disk cache.\n"
    "\n"
    "      --json   one JSON object per path: path, uri, type, size, mtime_ns, mode,\n"
    "               version, cached_bytes\n"
    "  -h, --help   this help\n";

int cli_stat(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    bool json = false;
    int c, code = CLI_OK;
    sl_t *sl;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("stat", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("stat", "missing PATH");
    if (!(sl = cli_open(cli, &code))) return code;

    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        sl_stat_t st;
        char *uri = NULL;
        uint64_t cached = 0;
        int rc = sl_resolve(sl, path, &uri);
        if (rc == 0) rc = sl_stat(sl, path, &st);
        if (rc == 0 && st.type == SL_TYPE_FILE) rc = sl_cached_bytes(sl, path, &st, &cached);
        if (rc < 0) {
            int r = cli_error(rc, path);
            if (r > code) code = r;
            free(uri);
            continue;
        }
        const char *type = st.type == SL_TYPE_DIR ? "dir" : "file";
        if (json) {
            struct json_object *o = json_object_new_object();
            json_object_object_add(o, "path", json_object_new_string(path));
            json_object_object_add(o, "uri", uri ? json_object_new_string(uri) : NULL);
            json_object_object_add(o, "type", json_object_new_string(type));
            json_object_object_add(o, "size", cli_json_u64(st.size));
            json_object_object_add(o, "mtime_ns", json_object_new_int64(st.mtime_ns));
            json_object_object_add(o, "mode", json_object_new_int((int)st.mode));
            json_object_object_add(o, "version", json_object_new_string(st.version));
            json_object_object_add(o, "cached_bytes", cli_json_u64(cached));
            cli_json_print(o);
        } else {
            char size[32], when[32];
            sl_format_size(st.size, size, sizeof(size));
            cli_format_time(st.mtime_ns, when, sizeof(when));
            printf("path:    %s\n", path);
            printf("uri:     %s\n", uri ? uri : "(a directory of the namespace)");
            printf("type:    %s\n", type);
            if (st.type == SL_TYPE_FILE) {
                printf("size:    %s (%llu bytes)\n", size, (unsigned long long)st.size);
                printf("cached:  %llu bytes (%.0f%%)\n", (unsigned long long)cached,
                       st.size ? 100.0 * (double)cached / (double)st.size : 100.0);
            }
            printf("mtime:   %s\n", when);
            if (st.version[0]) printf("version: %s\n", st.version);
            if (i + 1 < argc) printf("\n");
        }
        free(uri);
    }
    return code;
}
