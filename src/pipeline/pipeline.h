/*
 * pipeline.h - `sluice run`: the pipeline file, its DAG, the content hashes and the lock file
 * that decide what must run, and the scheduler that runs it (SPEC section 7).
 *
 * The pipeline is a front end of libsluice, as the CLI and the mount are: it calls the public
 * API (sluice.h) for namespace paths and never the other way round. Modules:
 *
 *   file.c   pipeline.yaml -> struct sl_pipeline (foreach expanded, ${...} substituted,
 *            sizes and durations parsed); every error names file:line:column
 *   dag.c    outs -> deps and `after:` edges; dangling deps, doubly made outs, cycles
 *   hash.c   content hashes of deps and outs: a stat fast path over an LMDB table of what was
 *            hashed before, large trees hashed in parallel, namespace paths by their version
 *   lock.c   sluice.lock: per stage the key, the cmd, and path + hash + size of deps and outs
 *   sched.c  the run: resources, retries, timeouts, logs, status, events, Ctrl-C
 */
#ifndef SL_PIPELINE_H
#define SL_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice.h"

/* Where a node of the pipeline file starts: errors about it name this place. */
struct sl_mark {
    size_t line, col; /* 1-based */
};

/* A path a stage reads or writes, as written (after ${} substitution): a local path, relative
 * to the pipeline file's folder or absolute, or a sluice path (a namespace path under one of
 * the config's mounts, or a URI such as s3://b/k); which one is decided when the run opens
 * sluice (sl_pipeline_resolve). */
struct sl_pipe_path {
    char *path;
    struct sl_mark at;
};

struct sl_pipe_kv {
    char *key, *value; /* value: the scalar's text; a params key's value rendered as JSON */
    struct sl_mark at;
};

enum sl_executor { SL_EXEC_LOCAL, SL_EXEC_SLURM };

struct sl_resources {
    unsigned cpus;  /* cores; a stage's default is 1 */
    uint64_t mem;   /* bytes; 0: not limited */
    unsigned gpus;
};

struct sl_stage {
    char *name;     /* "train"; a foreach stage's copies "prep@a", "prep@0-small" */
    char *group;    /* the name in the file ("prep"): selecting it selects every copy */
    struct sl_mark at;
    char *cmd;      /* run by /bin/sh -c in the pipeline file's folder */
    struct sl_mark cmd_at;
    struct sl_pipe_path *deps, *outs;
    size_t ndeps, nouts;
    struct sl_pipe_kv *params; /* sorted by key: part of the stage's key */
    size_t nparams;
    struct sl_pipe_kv *env;    /* sorted by key: set for the cmd, and part of the key */
    size_t nenv;
    struct sl_pipe_path *after; /* names of stages (or groups) this one runs after */
    size_t nafter;
    struct sl_resources res;
    unsigned retries;        /* attempts after the first */
    int64_t retry_delay_ns;  /* before the first retry; doubles with each */
    int64_t timeout_ns;      /* 0: none */
    /* Filled by sl_pipeline_dag(): indices into the pipeline's stages. */
    size_t *up, nup;         /* stages this one depends on (outs it reads, after) */
    size_t *down, ndown;
};

struct sl_pipeline {
    char *file;         /* as given, for messages */
    char *dir;          /* its folder, absolute: cmds run there, relative paths start there */
    enum sl_executor executor;
    struct sl_resources limit; /* `resources:` at the top; zeros: the machine's */
    bool has_limit_cpus, has_limit_mem, has_limit_gpus;
    char *slurm_partition;     /* `slurm: {partition: ...}`; NULL: the cluster's default */
    struct sl_stage *stages;   /* in file order (a foreach's copies in their order) */
    size_t nstages;
};

/* Reads and checks the pipeline file at path: the YAML, the schema (an unknown key is an error
 * that lists the known ones), foreach expansion and ${item} substitution, params (values, or
 * keys of the params file), sizes and durations. On error returns SL_E_CONFIG (or -errno for a
 * file that cannot be read) with the detail "FILE:LINE:COL: what was wrong" recorded
 * (sl_errmsg()). *out is the caller's: sl_pipeline_free(). */
int sl_pipeline_load(const char *path, struct sl_pipeline **out);
/* The same from text already in memory; name is what errors call it. */
int sl_pipeline_parse(const char *name, const char *dir, const char *text, size_t len,
                      struct sl_pipeline **out);
void sl_pipeline_free(struct sl_pipeline *p); /* accepts NULL */

/* Builds the DAG (each stage's up and down): an out read as another stage's dep, and after:.
 * Errors (SL_E_CONFIG, FILE:LINE:COL): two stages that write one out, an after: naming no
 * stage, a cycle (its stages named in order), a dep that no stage makes and that
 * exists(arg, path) says is not there (NULL: every such dep is taken to exist). An out (or dep)
 * that is a folder holds the paths below it: a dep data/raw/x.bin is made by the stage whose
 * out is data/raw, and a dep data/ reads every out below data/. */
typedef bool (*sl_pipe_exists_fn)(void *arg, const char *path);
int sl_pipeline_dag(struct sl_pipeline *p, sl_pipe_exists_fn exists, void *arg);

/* The stage named name (or the first copy of the group name); -1 when there is none. */
long sl_pipeline_find(const struct sl_pipeline *p, const char *name);

#endif /* SL_PIPELINE_H */
