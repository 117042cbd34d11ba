/*
 * cli_cache.c - `sluice cache stats [--json] [--reset]`: the cache's figures, summed over every
 * process that used this cache directory (a mount, loads, pipelines), live to within a second.
 */
#include <getopt.h>
#include <string.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice cache stats [--json] [--reset]\n"
    "\n"
    "Show the cache's figures, counted over every process that used this cache directory\n"
    "since it was created or last reset.\n"
    "\n"
    "      --json   one JSON object: hits, misses, ufs_bytes_read, ufs_requests,\n"
    "               bytes_cached, pages_cached, capacity_bytes, evictions,\n"
    "               checksum_failures, cache_dir\n"
    "      --reset  set the counters back to zero after printing them\n"
    "  -h, --help   this help\n";

int cli_cache(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"reset", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool json = false, reset = false;
    int c, code = CLI_OK;
    sl_t *sl;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'j') {
            json = true;
        } else if (c == 'r') {
            reset = true;
        } else if (c == 'h') {
            fputs(help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("cache", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("cache", "missing subcommand (stats)");
    if (strcmp(argv[optind], "stats") != 0)
        return cli_usage_error("cache", "unknown subcommand '%s' (expected stats)", argv[optind]);
    if (optind + 1 < argc) return cli_usage_error("cache", "unexpected '%s'", argv[optind + 1]);
    if (!(sl = cli_open(cli, &code))) return code;

    sl_cache_stats_t s;
    int rc = sl_cache_stats(sl, &s);
    if (rc < 0) return cli_error(rc, "cache stats");
    const char *dir = sl_cache_dir(sl);
    if (json) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "hits", cli_json_u64(s.hits));
        json_object_object_add(o, "misses", cli_json_u64(s.misses));
        json_object_object_add(o, "ufs_bytes_read", cli_json_u64(s.ufs_bytes_read));
        json_object_object_add(o, "ufs_requests", cli_json_u64(s.ufs_requests));
        json_object_object_add(o, "bytes_cached", cli_json_u64(s.bytes_cached));
        json_object_object_add(o, "pages_cached", cli_json_u64(s.pages_cached));
        json_object_object_add(o, "capacity_bytes", cli_json_u64(s.capacity_bytes));
        json_object_object_add(o, "evictions", cli_json_u64(s.evictions));
        json_object_object_add(o, "checksum_failures", cli_json_u64(s.checksum_failures));
        json_object_object_add(o, "cache_dir", dir ? json_object_new_string(dir) : NULL);
        cli_json_print(o);
    } else {
        char a[32], b[32], d[32];
        uint64_t reads = s.hits + s.misses;
        printf("cache dir:          %s\n", dir ? dir : "(none: reading through)");
        printf("capacity:           %s\n", sl_format_size(s.capacity_bytes, a, sizeof(a)));
        printf("cached:             %s in %llu pages (%.1f%% full)\n",
               sl_format_size(s.bytes_cached, b, sizeof(b)), (unsigned long long)s.pages_cached,
               s.capacity_bytes ? 100.0 * (double)s.bytes_cached / (double)s.capacity_bytes : 0);
        printf("hits:               %llu\n", (unsigned long long)s.hits);
        printf("misses:             %llu\n", (unsigned long long)s.misses);
        printf("hit rate:           %.1f%%\n", reads ? 100.0 * (double)s.hits / (double)reads : 0);
        printf("store reads:        %s in %llu requests\n",
               sl_format_size(s.ufs_bytes_read, d, sizeof(d)), (unsigned long long)s.ufs_requests);
        printf("evictions:          %llu\n", (unsigned long long)s.evictions);
        printf("checksum failures:  %llu\n", (unsigned long long)s.checksum_failures);
    }
    if (reset && (rc = sl_cache_stats_reset(sl)) < 0) return cli_error(rc, "cache stats --reset");
    return CLI_OK;
}
