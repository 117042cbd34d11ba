/*
 * cli_run.c - `sluice run [-f FILE] [STAGE...]`: run a pipeline (src/pipeline).
 *
 * Reads and checks the pipeline file, builds its DAG, and hands it to the scheduler. sluice
 * itself (config, cache) is opened only when a dep or out is a sluice path: a URI, or an
 * absolute path under one of the config's mounts; a pipeline of local files runs without it.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "pipeline/run.h"

static const char help[] =
    "Usage: sluice run [-f FILE] [options] [STAGE...]\n"
    "\n"
    "Run the pipeline in FILE (default pipeline.yaml): each STAGE with what it depends on, or\n"
    "every stage. A stage whose cmd, params, env and deps are unchanged since its last run\n"
    "(sluice.lock) and whose outs are still what it made is not run again.\n"
    "\n"
    "  -f, --file FILE     the pipeline file (default pipeline.yaml)\n"
    "  -n, --dry-run       print what would run, and why; run nothing\n"
    "      --force         run the STAGEs (all, with none named) even when unchanged;\n"
    "                      their upstream runs only if it changed\n"
    "  -k, --keep-going    after a failure, go on with the stages that do not need it\n"
    "      --downstream    run the STAGEs and what depends on them (not their upstream)\n"
    "      --cpus N        cpus this run may use (default: the file's resources, else all)\n"
    "      --mem SIZE      memory this run may use (default: the file's, else the machine's)\n"
    "      --gpus N        gpus this run may use\n"
    "      --executor E    local, or slurm: each stage an sbatch job (default: the file's\n"
    "                      executor:, else local); with slurm the cluster schedules, and\n"
    "                      --cpus, --mem and --gpus do not apply\n"
    "      --json          events on stdout, one JSON object a line, instead of the status\n"
    "  -h, --help          this help\n"
    "\n"
    "Each attempt's output goes to .sluice/runs/RUN/logs/STAGE.N.log next to the file.\n"
    "Exit status: 0 every stage done or unchanged, 1 a stage failed, 2 a bad pipeline file\n"
    "or usage, 130 interrupted.\n";

struct paths {
    struct cli *cli;
    sl_t *sl;
    const char *dir; /* the pipeline's folder: local paths are relative to it */
};

/* A sluice path: a URI other than a plain local one, or an absolute path a mount holds. */
static bool is_sluice_path(void *arg, const char *path)
{
    struct paths *ps = arg;
    if (strstr(path, "://")) return true;
    if (path[0] != '/' || !ps->sl) return false;
    char *uri = NULL;
    int rc = sl_resolve(ps->sl, path, &uri);
    bool under = rc == 0 && uri != NULL;
    free(uri);
    return under;
}

static bool exists(void *arg, const char *path)
{
    struct paths *ps = arg;
    if (is_sluice_path(ps, path)) {
        sl_stat_t st;
        return ps->sl && sl_stat(ps->sl, path, &st) == 0;
    }
    if (path[0] == '/') return access(path, F_OK) == 0;
    char *full = cli_join(ps->dir, path);
    bool there = full && access(full, F_OK) == 0;
    free(full);
    return there;
}

static bool needs_sluice(const struct sl_pipeline *p)
{
    for (size_t i = 0; i < p->nstages; i++) {
        const struct sl_stage *s = &p->stages[i];
        for (size_t k = 0; k < s->ndeps; k++)
            if (s->deps[k].path[0] == '/' || strstr(s->deps[k].path, "://")) return true;
        for (size_t k = 0; k < s->nouts; k++)
            if (s->outs[k].path[0] == '/' || strstr(s->outs[k].path, "://")) return true;
    }
    return false;
}

static bool parse_count(const char *opt, const char *s, unsigned *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > 1000000) {
        cli_usage_error("run", "%s: \"%s\" is not a count", opt, s);
        return false;
    }
    *out = (unsigned)v;
    return true;
}

int cli_run(struct cli *cli, int argc, char **argv)
{
    enum { O_FORCE = 256, O_DOWN, O_CPUS, O_MEM, O_GPUS, O_JSON, O_EXECUTOR };
    static const struct option opts[] = {
        {"file", required_argument, NULL, 'f'},   {"dry-run", no_argument, NULL, 'n'},
        {"force", no_argument, NULL, O_FORCE},    {"keep-going", no_argument, NULL, 'k'},
        {"downstream", no_argument, NULL, O_DOWN}, {"cpus", required_argument, NULL, O_CPUS},
        {"mem", required_argument, NULL, O_MEM},  {"gpus", required_argument, NULL, O_GPUS},
        {"json", no_argument, NULL, O_JSON},      {"help", no_argument, NULL, 'h'},
        {"executor", required_argument, NULL, O_EXECUTOR},
        {NULL, 0, NULL, 0}};
    struct sl_run_opts ro = {.verbosity = cli->verbosity};
    const char *file = "pipeline.yaml";
    int c, code = CLI_OK;

    while ((c = getopt_long(argc, argv, "f:nkh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 'n':
            ro.dry_run = true;
            break;
        case O_FORCE:
            ro.force = true;
            break;
        case 'k':
            ro.keep_going = true;
            break;
        case O_DOWN:
            ro.downstream = true;
            break;
        case O_CPUS:
            if (!parse_count("--cpus", optarg, &ro.limit.cpus)) return CLI_USAGE;
            break;
        case O_MEM:
            if (!cli_parse_size_opt("run", "--mem", optarg, &ro.limit.mem)) return CLI_USAGE;
            break;
        case O_GPUS:
            if (!parse_count("--gpus", optarg, &ro.limit.gpus)) return CLI_USAGE;
            break;
        case O_JSON:
            ro.json = true;
            break;
        case O_EXECUTOR:
            if (strcmp(optarg, "local") && strcmp(optarg, "slurm"))
                return cli_usage_error("run", "--executor: expected local or slurm, got \"%s\"",
                                       optarg);
            ro.executor = optarg;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("run", "unknown option");
        }
    }
    if (ro.downstream && optind >= argc)
        return cli_usage_error("run", "--downstream needs a STAGE to start from");
    ro.targets = (const char **)argv + optind;
    ro.ntargets = (size_t)(argc - optind);
    ro.status = !ro.json && cli->verbosity >= 0 && isatty(2);

    /* Blocked before sluice starts its threads, which inherit the mask: the scheduler reads
     * these from a signalfd, and one delivered to another thread would be lost to it. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);

    struct sl_pipeline *p = NULL;
    int rc = sl_pipeline_load(file, &p);
    if (rc < 0) return cli_error(rc, file);

    struct paths ps = {.cli = cli, .dir = p->dir};
    if (needs_sluice(p)) {
        if (!(ps.sl = cli_open(cli, &code))) goto out;
        ro.sl = ps.sl;
        ro.config = sl_config_path(ps.sl);
    }
    ro.is_sluice_path = is_sluice_path;
    ro.arg = &ps;
    if ((rc = sl_pipeline_dag(p, exists, &ps)) < 0) {
        code = cli_error(rc, file);
        goto out;
    }
    int exit_code = CLI_FAIL;
    rc = sl_run(p, &ro, &exit_code);
    code = rc < 0 ? cli_error(rc, file) : exit_code;
out:
    sl_pipeline_free(p);
    return code;
}
