/*
 * run.h - what `sluice run` uses to decide and to run: content hashes (hash.c), the lock file
 * (lock.c), the scheduler (sched.c) and the executors it runs attempts with (the local one in
 * sched.c, Slurm in slurm.c). See pipeline.h for the file and its DAG.
 */
#ifndef SL_PIPELINE_RUN_H
#define SL_PIPELINE_RUN_H

#include <json-c/json.h>
#include <stdio.h>

#include "pipeline/pipeline.h"

/* ---- hash.c ---------------------------------------------------------------------------- */

#define SL_HASH_HEX 33 /* 128 bits in hex, and the NUL */

/* What a path holds, summed up: a file's content hash, a folder's hash over its files' paths
 * and hashes, a sluice path's hash over its version(s) in the store. */
struct sl_digest {
    char hash[SL_HASH_HEX];
    uint64_t size;  /* bytes, all files summed */
    uint64_t files; /* regular files (1 for a file) */
};

/* Hashes paths for one pipeline. Local files are read (XXH3-128) unless a table under
 * state_dir says what they held at the same size, mtime, ctime and inode; folders' files are
 * hashed by threads threads at once. Sluice paths (sluice_path() true) are not read: their
 * hash is over the store's version of each object (its ETag), from sl. sl may be NULL when the
 * pipeline has no sluice paths. Not thread-safe: one caller. */
struct sl_hasher;
int sl_hasher_open(const char *state_dir, sl_t *sl, unsigned threads, struct sl_hasher **out);
void sl_hasher_close(struct sl_hasher *h); /* writes what it learnt; accepts NULL */

/* path: absolute (local) or a sluice path. -ENOENT when it does not exist. Counts what it had
 * to read into *read_bytes when that is not NULL. */
int sl_hasher_digest(struct sl_hasher *h, const char *path, bool sluice_path,
                     struct sl_digest *out, uint64_t *read_bytes);

/* ---- lock.c ---------------------------------------------------------------------------- */

/* sluice.lock: what each stage's last successful run was made of. JSON:
 *   {"version": 1, "stages": {"NAME": {"key", "cmd", "params": {}, "env": {},
 *    "deps": [{"path", "hash", "size", "files"}], "outs": [...]}}} */
struct sl_lock;
/* Reads path (missing: an empty lock). A lock that does not parse is an error naming it. */
int sl_lock_open(const char *path, struct sl_lock **out);
void sl_lock_free(struct sl_lock *l);
/* The stage's record, or NULL (borrowed: valid until the next sl_lock_set). */
struct json_object *sl_lock_get(struct sl_lock *l, const char *stage);
/* Replaces the stage's record (takes rec). The file is written atomically (a temp file, fsync,
 * rename), at most every 250 ms and at sl_lock_free: a killed run leaves a whole lock, at
 * worst without the records of its last moments (those stages run again). */
int sl_lock_set(struct sl_lock *l, const char *stage, struct json_object *rec);

/* ---- prefetch.c ------------------------------------------------------------------------ */

/* Loads sluice paths into the cache in a thread of its own, in the order they are added (a
 * folder: every file below it), while the run goes on: the deps of the stages that come next.
 * A hint only: what cannot be loaded is passed over. */
struct sl_prefetch;
int sl_prefetch_open(sl_t *sl, struct sl_prefetch **out);
void sl_prefetch_add(struct sl_prefetch *pf, const char *path); /* copied; NULL pf: nothing */
/* Queues path to be loaded and kept on the cache disk (sl_keep) until released. */
void sl_prefetch_keep(struct sl_prefetch *pf, const char *path);
/* Lets a kept (or queued, or being kept) path go; false when it was none of those. */
bool sl_prefetch_release(struct sl_prefetch *pf, const char *path);
/* Files loaded whole so far, and their bytes; paths kept so far, and the bytes kept. */
void sl_prefetch_figures(struct sl_prefetch *pf, size_t *files, uint64_t *bytes,
                         size_t *files_kept, uint64_t *bytes_kept);
/* Stops after the range in hand (the rest of the queue is dropped); lets every kept path go.
 * Accepts NULL. */
void sl_prefetch_close(struct sl_prefetch *pf);

/* ---- sched.c --------------------------------------------------------------------------- */

struct sl_run_opts {
    const char **targets; /* stage or group names; none: every stage */
    size_t ntargets;
    bool downstream;      /* the targets and what depends on them (not their upstream) */
    bool force, dry_run, keep_going, json;
    bool status;          /* a live status on stderr (a terminal, not --json, not -q) */
    int verbosity;        /* -1 quiet */
    struct sl_resources limit; /* 0s: the file's, else the machine's (local executor only) */
    const char *executor; /* "local" or "slurm" (--executor); NULL: the file's */
    const char *config;   /* sluice's config file, passed to the stages as SLUICE_CONFIG */
    sl_t *sl;             /* for sluice paths; NULL when the pipeline has none */
    bool (*is_sluice_path)(void *arg, const char *path);
    void *arg;
};

/* Runs the pipeline (its DAG built). Returns 0 and sets *exit_code: 0 when every selected
 * stage is done or unchanged, 1 when one failed, 130 when interrupted; or a negative error
 * (with its detail) for what stopped the run before it started (SL_E_USAGE for an unknown
 * executor, -ENOENT when Slurm's commands are not on PATH). */
int sl_run(struct sl_pipeline *p, const struct sl_run_opts *o, int *exit_code);

/* ---- executors ------------------------------------------------------------------------ */

/* The scheduler decides what runs and when (readiness, the cache check, retries, the lock);
 * an executor only runs one attempt of a stage somewhere and says how it ended. Everything
 * happens on the scheduler's thread: an executor is called from its event loop and calls
 * back into it from poll() only. */

/* One attempt, as the scheduler hands it over. Borrowed for the call of start() only. */
struct sl_attempt {
    size_t id;                /* the scheduler's name for it, given back when it ends */
    const struct sl_stage *s; /* cmd, resources, timeout */
    unsigned attempt;         /* from 1 */
    const char *dir;          /* the pipeline's folder: the cmd runs there */
    const char *log;          /* its stdout and stderr go here (an absolute path) */
    char *const *env;         /* "NAME=value", NULL-terminated: set over the run's environment */
};

/* How an attempt ended. Borrowed for the call of ended() only. */
struct sl_attempt_end {
    size_t id;
    bool ok;          /* it ended well: exit 0 (Slurm: COMPLETED, exit 0) */
    bool timed_out;   /* its timeout ended it (Slurm: the job's --time, state TIMEOUT) */
    int status;       /* its shell's wait status; -1 when not known */
    const char *what; /* for people: "exit 3", "timed out after 0.5s", "Slurm job 7 FAILED ..." */
    const char *state; /* the executor's word for the end (Slurm's job state), or NULL */
};

/* What an executor tells the scheduler. */
struct sl_exec_host {
    void (*ended)(void *arg, const struct sl_attempt_end *e);
    /* A running attempt changed state in its executor (Slurm: PENDING -> RUNNING); reason
     * may be NULL. */
    void (*state)(void *arg, size_t id, const char *state, const char *reason);
    /* A problem the user should hear of that fails nothing by itself (squeue did not answer,
     * and is asked again). */
    void (*warn)(void *arg, const char *msg);
    void *arg;
};

struct sl_exec;
struct sl_exec_ops {
    const char *name; /* "local", "slurm" */
    /* Starts attempt a. *job gets the executor's id for it (Slurm's job id; NULL for a local
     * process), the caller's to free(). Errors are recorded with the stage's name. */
    int (*start)(struct sl_exec *x, const struct sl_attempt *a, char **job);
    /* Reports through host->ended each attempt that ended since the last call. Returns the
     * monotonic time (ns) by which it wants to be called again (a timeout, the next squeue),
     * 0 when nothing runs. The scheduler calls it after every wake-up of its loop, so it may
     * be called early: it does only what is due. */
    int64_t (*poll)(struct sl_exec *x);
    /* Stops every attempt that runs (Ctrl-C); now: a second Ctrl-C, without the grace the
     * first one gives. The attempts are then reported through poll() as they end. */
    void (*cancel)(struct sl_exec *x, bool now);
    /* Frees it; attempts still running are stopped first (no run leaves jobs behind). */
    void (*close)(struct sl_exec *x);
};

struct sl_exec {
    const struct sl_exec_ops *ops;
};

/* ---- slurm.c --------------------------------------------------------------------------- */

struct sl_slurm_cfg {
    const char *run;        /* the run's id: job names are sluice-RUN-STAGE */
    const char *script_dir; /* where each attempt's batch script is written (the run's folder) */
    const char *partition;  /* NULL: the cluster's default */
    const char *dir;        /* the pipeline's folder: the nodes must see it */
};

/* Each attempt an sbatch job (resources mapped to --cpus-per-task, --mem, --gpus, --time),
 * its state from one squeue (or sacct) call per poll for all the run's jobs. Fails with
 * -ENOENT and a detail when sbatch, squeue or scancel is not on PATH. cfg is copied; host is
 * kept (it must outlive the executor). */
int sl_exec_slurm_open(const struct sl_exec_host *host, const struct sl_slurm_cfg *cfg,
                       struct sl_exec **out);

#endif /* SL_PIPELINE_RUN_H */
