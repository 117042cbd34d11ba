/*
 * main.c - `sluice [-c FILE] [-v|-q] COMMAND ...`: global options, then one command.
 *
 * Each command lives in its own file (cli_ls.c, cli_cat.c, ...) with its own --help, the way
 * curl's tool_*.c files do. The library is opened only by commands that need it, so --help
 * works without a config or a cache.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/cli.h"

static const struct cli_command commands[] = {
    {"ls", cli_ls, "list a directory (size, mtime, cached fraction with -l)"},
    {"stat", cli_stat, "metadata of entries, with how much of each is cached"},
    {"cat", cli_cat, "write files (or byte ranges) to stdout through the cache"},
    {"cp", cli_cp, "copy between namespace paths, URIs and local paths"},
    {"load", cli_load, "warm the cache with files, directories or an ordered list"},
    {"free", cli_free, "drop the cached pages of paths"},
    {"cache", cli_cache, "the cache's figures (cache stats)"},
    {"mount", cli_mount, "the namespace as a file system (FUSE)"},
    {"umount", cli_umount, "unmount a sluice mount"},
    {"run", cli_run, "run a pipeline (pipeline.yaml): stages, caching, retries"},
    {"report", cli_report, "what each stage of the last run read and wrote, and how"},
    {"bench", cli_bench, "built-in benchmarks (bench train: simulated training)"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: sluice [-c FILE] [-v|-q] COMMAND [ARGS...]\n"
            "\n"
            "sluice puts one namespace over many stores and a page cache in RAM and on local\n"
            "disk in between, so that pipelines read remote data at local speed.\n"
            "\n"
            "Commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n"
            "Options:\n"
            "  -c, --config FILE  config file (default: $SLUICE_CONFIG, ./sluice.yaml,\n"
            "                     $XDG_CONFIG_HOME/sluice/sluice.yaml, else built-in defaults)\n"
            "  -v, --verbose      say more (repeat for debug output)\n"
            "  -q, --quiet        errors only; no progress bars\n"
            "  -h, --help         this help; 'sluice COMMAND --help' for a command's\n"
            "  -V, --version      print the version\n"
            "\n"
            "Paths are namespace paths (/mount/dir/file) or URIs (file:///abs/path).\n"
            "Exit status: 0 success, 1 failure, 2 usage or config error.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    struct cli cli = {0};
    int c;

    /* Page files are held open (reads by descriptor, an order's window, a run's kept outs):
     * the soft limit on descriptors goes up to the hard one, as servers do. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl); /* only a higher ceiling lost */
    }

    /* JSON numbers as people read them: 0.0034, not 0.0034168639999999999. */
    json_c_set_serialization_double_format("%.6g", JSON_C_OPTION_GLOBAL);

    /* '+': stop at the command; its options are its own. */
    while ((c = getopt_long(argc, argv, "+c:vqhV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cli.opts.config_path = optarg;
            break;
        case 'v':
            cli.verbosity++;
            break;
        case 'q':
            cli.verbosity = -1;
            break;
        case 'h':
            usage(stdout);
            return CLI_OK;
        case 'V':
            printf("sluice %s\n", SL_VERSION_STRING);
            return CLI_OK;
        default:
            fprintf(stderr, "Try 'sluice --help'.\n");
            return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_USAGE;
    }
    sl_log_set_level(cli.verbosity < 0 ? SL_LOG_ERROR
                     : cli.verbosity == 0 ? SL_LOG_WARN
                     : cli.verbosity == 1 ? SL_LOG_INFO
                                          : SL_LOG_DEBUG);

    const char *name = argv[optind];
    int first = optind;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(commands[i].name, name) != 0) continue;
        optind = 0; /* glibc: start getopt afresh on the command's own argv */
        int code = commands[i].run(&cli, argc - first, argv + first);
        sl_close(cli.sl);
        return code;
    }
    fprintf(stderr, "sluice: '%s' is not a command. See 'sluice --help'.\n", name);
    return CLI_USAGE;
}
