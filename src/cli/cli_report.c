/*
 * cli_report.c - `sluice report [-f FILE] [--json] [RUN]`: the access-pattern report of a
 * pipeline run, stage by stage: what each read and wrote, how (sequential or random reads,
 * the read/write ratio), over how many files of what sizes (the seeds' classes), and the
 * cache's figures when sluice has a cache.
 *
 * `sluice run` writes the report of each run to .sluice/runs/RUN/report.json next to the
 * pipeline file (runs/last is the latest); this command reads it, and prints it as a table or
 * as the JSON itself.
 */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "pipeline/pipeline.h"

static const char help[] =
    "Usage: sluice report [-f FILE] [--json] [RUN]\n"
    "\n"
    "The access-pattern report of the last run of the pipeline in FILE (default\n"
    "pipeline.yaml), or of RUN (a folder name under .sluice/runs/): per stage the bytes and\n"
    "files read and written, the read/write ratio, whether reads were sequential or random,\n"
    "and the file size and file count classes (small < 100 KB, medium < 100 MB, large; files:\n"
    "small < 1,000, medium < 1M, large < 100M, massive).\n"
    "\n"
    "  -f, --file FILE   the pipeline file (default pipeline.yaml)\n"
    "      --json        the report as one JSON object\n"
    "  -h, --help        this help\n";

static int64_t get_i64(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_int64(v) : 0;
}

static const char *get_str(struct json_object *o, const char *k)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : "-";
}

static void print_table(struct json_object *rep)
{
    struct json_object *stages = NULL;
    json_object_object_get_ex(rep, "stages", &stages);
    size_t n = stages ? json_object_array_length(stages) : 0, w = 5;
    for (size_t i = 0; i < n; i++)
        if (strlen(get_str(json_object_array_get_idx(stages, i), "stage")) > w)
            w = strlen(get_str(json_object_array_get_idx(stages, i), "stage"));
    printf("%-*s  %-7s  %7s  %9s  %9s  %6s  %-14s  %-10s  %4s  %-11s  %-6s  %-7s  %s\n", (int)w,
           "stage", "status", "time", "read", "written", "r/w", "kind", "access", "seq",
           "files r/w", "size", "count", "small/medium/large");
    for (size_t i = 0; i < n; i++) {
        struct json_object *s = json_object_array_get_idx(stages, i), *p = NULL, *v = NULL;
        char rd[32] = "-", wr[32] = "-", ratio[16] = "-", seq[16] = "-", files[32] = "-",
             sizes[64] = "-", t[16];
        snprintf(t, sizeof(t), "%.1fs", json_object_object_get_ex(s, "seconds", &v) ? json_object_get_double(v) : 0);
        if (json_object_object_get_ex(s, "profile", &p) && p) {
            sl_format_size((uint64_t)get_i64(p, "bytes_read"), rd, sizeof(rd));
            sl_format_size((uint64_t)get_i64(p, "bytes_written"), wr, sizeof(wr));
            if (json_object_object_get_ex(p, "read_write_ratio", &v) && v)
                snprintf(ratio, sizeof(ratio), "%.2f", json_object_get_double(v));
            if (json_object_object_get_ex(p, "sequential_share", &v) && v)
                snprintf(seq, sizeof(seq), "%.0f%%", 100 * json_object_get_double(v));
            snprintf(files, sizeof(files), "%lld/%lld", (long long)get_i64(p, "files_read"),
                     (long long)get_i64(p, "files_written"));
            struct json_object *fs = NULL;
            json_object_object_get_ex(p, "file_sizes", &fs);
            snprintf(sizes, sizeof(sizes), "%lld/%lld/%lld", (long long)get_i64(fs, "small"),
                     (long long)get_i64(fs, "medium"), (long long)get_i64(fs, "large"));
        }
        const char *kind = p ? get_str(p, "kind") : "-", *access = p ? get_str(p, "access") : "-";
        printf("%-*s  %-7s  %7s  %9s  %9s  %6s  %-14s  %-10s  %4s  %-11s  %-6s  %-7s  %s\n",
               (int)w, get_str(s, "stage"), get_str(s, "status"), t, rd, wr, ratio, kind, access,
               seq, files, p ? get_str(p, "file_size_class") : "-",
               p ? get_str(p, "file_count_class") : "-", sizes);
    }
    struct json_object *cache = NULL;
    if (json_object_object_get_ex(rep, "cache", &cache) && cache) {
        char a[32], b[32];
        int64_t hits = get_i64(cache, "hits"), misses = get_i64(cache, "misses");
        printf("cache: %lld hits, %lld misses (%.0f%% hits), %s read from stores, %s cached\n",
               (long long)hits, (long long)misses,
               hits + misses ? 100.0 * (double)hits / (double)(hits + misses) : 0.0,
               sl_format_size((uint64_t)get_i64(cache, "ufs_bytes_read"), a, sizeof(a)),
               sl_format_size((uint64_t)get_i64(cache, "bytes_cached"), b, sizeof(b)));
    }
    printf("run %s of %s. Files: small < 100 KB, medium < 100 MB; counts: small < 1,000, "
           "medium < 1M, large < 100M\n", get_str(rep, "run"), get_str(rep, "pipeline"));
}

int cli_report(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"file", required_argument, NULL, 'f'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *file = "pipeline.yaml";
    bool json = false;
    int c;
    (void)cli;
    while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("report", "unknown option");
        }
    }
    if (argc - optind > 1) return cli_usage_error("report", "one RUN at most");
    const char *run = optind < argc ? argv[optind] : "last";
    if (strchr(run, '/') || !strcmp(run, "..") || !strcmp(run, "."))
        return cli_usage_error("report", "RUN is a folder name under .sluice/runs/, not \"%s\"", run);

    char dir[PATH_MAX];
    const char *slash = strrchr(file, '/');
    if (slash)
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - file), file);
    else
        snprintf(dir, sizeof(dir), ".");
    char *path = cli_join(dir, ".sluice/runs");
    char *runp = path ? cli_join(path, run) : NULL;
    char *rep_path = runp ? cli_join(runp, "report.json") : NULL;
    free(path);
    free(runp);
    if (!rep_path) return cli_error(-ENOMEM, "report");
    struct json_object *rep = json_object_from_file(rep_path);
    if (!rep) {
        fprintf(stderr, "sluice: report: %s: %s (run the pipeline first: sluice run -f %s)\n",
                rep_path, access(rep_path, F_OK) == 0 ? "not a report" : "no report", file);
        free(rep_path);
        return CLI_FAIL;
    }
    free(rep_path);
    if (json)
        cli_json_print(rep);
    else {
        print_table(rep);
        json_object_put(rep);
    }
    return CLI_OK;
}
