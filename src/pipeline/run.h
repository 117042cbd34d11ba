/*
 * run.h - what `sluice run` uses to decide and to run: content hashes (hash.c), the lock file
 * (lock.c) and the scheduler (sched.c). See pipeline.h for the file and its DAG.
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
/* Replaces the stage's record (takes rec) and writes the file atomically (a temp file, fsync,
 * rename): a killed run leaves the old lock or the new one, never half of one. */
int sl_lock_set(struct sl_lock *l, const char *stage, struct json_object *rec);

/* ---- sched.c --------------------------------------------------------------------------- */

struct sl_run_opts {
    const char **targets; /* stage or group names; none: every stage */
    size_t ntargets;
    bool downstream;      /* the targets and what depends on them (not their upstream) */
    bool force, dry_run, keep_going, json;
    bool status;          /* a live status on stderr (a terminal, not --json, not -q) */
    int verbosity;        /* -1 quiet */
    struct sl_resources limit; /* 0s: the file's, else the machine's */
    const char *config;   /* sluice's config file, passed to the stages as SLUICE_CONFIG */
    sl_t *sl;             /* for sluice paths; NULL when the pipeline has none */
    bool (*is_sluice_path)(void *arg, const char *path);
    void *arg;
};

/* Runs the pipeline (its DAG built). Returns 0 and sets *exit_code: 0 when every selected
 * stage is done or unchanged, 1 when one failed, 130 when interrupted; or a negative error
 * (with its detail) for what stopped the run before it started. */
int sl_run(struct sl_pipeline *p, const struct sl_run_opts *o, int *exit_code);

#endif /* SL_PIPELINE_RUN_H */
