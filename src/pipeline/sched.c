/*
 * sched.c - running a pipeline: which stages must run, in what order, how many at once, and
 * what the user sees while they do. The stages run through an executor (run.h): the local
 * one in this file (a process per attempt), or Slurm's (slurm.c, a batch job per
 * attempt). What is decided here is the same for both: readiness, the cache check, retries,
 * the lock, the logs' paths, the events and the summary.
 *
 * One thread runs the whole show as an event loop: it starts stages, and waits in poll() on a
 * signalfd for SIGCHLD (a stage, or a Slurm command, ended), SIGINT and SIGTERM (stop), with a
 * timeout for the next deadline (a retry's backoff, a redraw of the live status, and what the
 * executor asks for: a stage's timeout, the end of a grace period, the next squeue). After
 * each wake-up the executor is polled; what it reports ended may make more stages ready, and
 * the loop goes round again before it sleeps.
 *
 * Local stages are processes: /bin/sh -c CMD in the pipeline's folder, each in its own process
 * group, so that a timeout or a Ctrl-C stops everything a stage started, and the terminal's
 * Ctrl-C reaches sluice alone (it then stops the stages itself, and says what ran). They run
 * when they fit the run's free cpus, memory and GPUs. Slurm stages are submitted as soon as
 * they are ready: the cluster schedules them, so the run's limits do not apply there.
 *
 * Whether a stage runs is decided when it becomes ready (its upstream finished), not at the
 * start: its deps are hashed then, so a stage whose upstream ran again but made the same bytes
 * is not run (early cut-off, which make's timestamps cannot give). Its key is XXH3-128 over
 * its cmd, params, declared env, the hash of every dep and the list of its outs; it is skipped
 * when sluice.lock holds that key and every out still has the hash recorded for it. This is
 * why Slurm never sees the DAG (no --dependency): a job is submitted only once sluice knows
 * that it must run.
 *
 * A stage's life:
 *
 *   waiting --upstream finished--> ready --unchanged--> cached
 *                                    |
 *                                    +--started (local: fits the free cpus/mem/gpus;
 *                                    |   slurm: at once)--> running --ended well--> done
 *                                    |                       ^   |
 *                                    |   retry_wait --backoff+   +--failed, timed out:
 *                                    |       ^                      retries left? --+
 *                                    |       +----------------------yes-------------+
 *                                    |                              no: failed
 *   failed: stages downstream are "not run"; without --keep-going nothing new starts (what
 *   runs finishes). Ctrl-C: the executor stops what runs (local: SIGTERM to each group, then
 *   SIGKILL after GRACE_NS, at once on a second Ctrl-C; slurm: one scancel of the run's jobs),
 *   and the run ends when every attempt has been reported ended.
 *
 * Each attempt's stdout and stderr go to its own log, .sluice/runs/RUN/logs/STAGE.N.log,
 * kept after the run (the path is printed with a failure, and the last lines of it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/core.h"
#include "pipeline/profile.h"
#include "pipeline/run.h"

extern char **environ;

#define GRACE_NS (5LL * 1000000000LL)
#define REDRAW_NS (250LL * 1000000LL)
#define LOCAL_POLL_NS (1000LL * 1000000LL)
#define MAX_GPUS 64
#define LOG_TAIL_LINES 10

enum state {
    S_IDLE,       /* not selected for this run */
    S_WAITING,    /* upstream not finished */
    S_READY,
    S_RETRY_WAIT,
    S_RUNNING,
    S_DONE,
    S_CACHED,
    S_WOULD_RUN,  /* --dry-run */
    S_FAILED,
    S_NOT_RUN,    /* upstream failed, or the run stopped before it */
};

struct job {
    struct sl_stage *s;
    enum state state;
    size_t ups_left;     /* selected upstream stages not finished */
    bool upstream_ran;   /* an upstream stage ran (or would) in this run */
    bool target;         /* named on the command line (or, with none named, every stage) */
    unsigned attempt;    /* the current or last one, from 1 */
    int64_t started, retry_at; /* monotonic ns: the attempt's start (Slurm: its submission) */
    int64_t ran_ns;      /* all attempts */
    bool timed_out;      /* the last attempt's */
    int status;          /* the last attempt's wait status; -1: not known */
    uint64_t gpus;       /* bit i: GPU i is this stage's while it runs (local) */
    char *job_id;        /* the executor's id of the attempt: Slurm's job id; NULL locally */
    char *xstate;        /* its state there (PENDING, RUNNING, FAILED...), or NULL */
    char *xreason;       /* and why, while it is pending ("Resources"), or NULL */
    char *log;
    char *why;           /* why it runs (or would), or why it did not */
    char key[SL_HASH_HEX];
    struct json_object *deps; /* what its deps held when it was decided */
    struct json_object *profile; /* what it read and wrote, how (profile.c); NULL: not known */
    bool prefetched;     /* its sluice deps were handed to the prefetch */
};

struct run {
    struct sl_pipeline *p;
    const struct sl_run_opts *o;
    struct job *jobs;
    struct sl_hasher *hasher;
    struct sl_lock *lock;
    char *state_dir, *run_dir, *log_dir;
    char *trace_lib;            /* sluice-trace.so, preloaded into stages; NULL: no profiles */
    enum sl_executor executor;
    struct sl_exec *x;          /* NULL for --dry-run: nothing is started */
    struct sl_exec_host host;   /* what x calls back: this run */
    struct sl_prefetch *prefetch; /* the next stages' sluice deps; NULL: none to load */
    char **kept;                /* sluice paths made here, kept in the cache for later readers */
    size_t nkept;
    struct sl_resources limit, used; /* local only: Slurm schedules its own */
    uint64_t gpus_free;
    int sfd;
    bool stopping, interrupted;
    bool progress;              /* an attempt ended in this turn of the loop */
    int64_t started, next_redraw;
    bool status_shown;
    unsigned term_width;
    size_t counts[S_NOT_RUN + 1];
};

static int64_t mono(void)
{
    return (int64_t)sl__mono_ns();
}

static const char *state_name(enum state s)
{
    static const char *const names[] = {
        [S_IDLE] = "-",          [S_WAITING] = "waiting", [S_READY] = "ready",
        [S_RETRY_WAIT] = "retry", [S_RUNNING] = "running", [S_DONE] = "done",
        [S_CACHED] = "cached",   [S_WOULD_RUN] = "would run", [S_FAILED] = "failed",
        [S_NOT_RUN] = "not run",
    };
    return names[s];
}

static void release_kept(struct run *r);

static void set_state(struct run *r, struct job *j, enum state s)
{
    r->counts[j->state]--;
    r->counts[s]++;
    j->state = s;
    if (s >= S_DONE && r->nkept) release_kept(r); /* j may have been a last reader */
}

static void fmt_secs(int64_t ns, char *buf, size_t len)
{
    double s = (double)ns / 1e9;
    if (s < 60)
        snprintf(buf, len, "%.1fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s / 60) % 60);
}

/* ---- what the user sees ----------------------------------------------------------------- */

static void status_clear(struct run *r)
{
    if (r->status_shown) fputs("\r\033[K", stderr);
    r->status_shown = false;
}

/* One line: the running stages with their time (a Slurm job still in the queue says so, and
 * why), then the counts; cut at the terminal's width. */
static void status_draw(struct run *r)
{
    if (!r->o->status) return;
    struct sl_buf b = {0};
    int64_t now = mono();
    char t[32];
    size_t shown = 0;
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *j = &r->jobs[i];
        if (j->state != S_RUNNING) continue;
        fmt_secs(now - j->started, t, sizeof(t));
        sl__buf_printf(&b, "%s%s ", shown++ ? ", " : "running: ", j->s->name);
        if (j->xstate && !strcmp(j->xstate, "PENDING"))
            sl__buf_printf(&b, "queued %s%s%s", j->xreason ? "(" : "", j->xreason ? j->xreason : "",
                           j->xreason ? ") " : "");
        sl__buf_printf(&b, "%s", t);
    }
    sl__buf_printf(&b, "%s%zu waiting, %zu done, %zu cached, %zu failed", shown ? " | " : "",
                   r->counts[S_WAITING] + r->counts[S_READY] + r->counts[S_RETRY_WAIT],
                   r->counts[S_DONE], r->counts[S_CACHED], r->counts[S_FAILED]);
    if (b.data) {
        size_t w = r->term_width > 1 ? r->term_width - 1 : 79;
        if (b.len > w) b.data[w] = '\0';
        fprintf(stderr, "\r\033[K%s", b.data);
        fflush(stderr);
        r->status_shown = true;
    }
    sl__buf_free(&b);
    r->next_redraw = now + REDRAW_NS;
}

/* A line of what happened, on stderr above the status (nothing with -q or --json). */
static void say(struct run *r, const char *fmt, ...) SL_PRINTF(2, 3);
static void say(struct run *r, const char *fmt, ...)
{
    if (r->o->json || r->o->verbosity < 0) return;
    va_list ap;
    status_clear(r);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    status_draw(r);
}

/* One JSON event on stdout (with --json): {"event": name, "stage": ..., more...}. */
static void event(struct run *r, const char *name, const struct job *j, struct json_object *more)
{
    if (!r->o->json) {
        json_object_put(more);
        return;
    }
    struct json_object *e = json_object_new_object();
    json_object_object_add(e, "event", json_object_new_string(name));
    if (j) json_object_object_add(e, "stage", json_object_new_string(j->s->name));
    if (more) {
        json_object_object_foreach(more, k, v) json_object_object_add(e, k, json_object_get(v));
        json_object_put(more);
    }
    puts(json_object_to_json_string_ext(e, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(stdout);
    json_object_put(e);
}

static struct json_object *obj(void)
{
    return json_object_new_object();
}

static void add_str(struct json_object *o, const char *k, const char *v)
{
    if (v) json_object_object_add(o, k, json_object_new_string(v));
}

static void add_num(struct json_object *o, const char *k, double v)
{
    json_object_object_add(o, k, json_object_new_double(v));
}

static void add_int(struct json_object *o, const char *k, int64_t v)
{
    json_object_object_add(o, k, json_object_new_int64(v));
}

/* A log path as the user should read it: relative to the current folder when below it. */
static const char *shown_path(const char *path)
{
    static char cwd[4096];
    if (!getcwd(cwd, sizeof(cwd))) return path;
    size_t n = strlen(cwd);
    if (!strncmp(path, cwd, n) && path[n] == '/') return path + n + 1;
    return path;
}

/* The last lines of a failed attempt's log, indented, on stderr. */
static void log_tail(struct run *r, const char *path)
{
    if (r->o->json || r->o->verbosity < 0) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *lines[LOG_TAIL_LINES] = {0};
    size_t n = 0, cap = 0;
    char *line = NULL;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        free(lines[n % LOG_TAIL_LINES]);
        lines[n % LOG_TAIL_LINES] = sl__strdup(line);
        n++;
    }
    free(line);
    fclose(f);
    status_clear(r);
    for (size_t i = n > LOG_TAIL_LINES ? n - LOG_TAIL_LINES : 0; i < n; i++) {
        char *l = lines[i % LOG_TAIL_LINES];
        if (l) fprintf(stderr, "    | %s%s", l, l[0] && l[strlen(l) - 1] == '\n' ? "" : "\n");
    }
    for (size_t i = 0; i < LOG_TAIL_LINES; i++) free(lines[i]);
    status_draw(r);
}

/* ---- paths and hashes ------------------------------------------------------------------- */

static bool is_sluice(struct run *r, const char *path)
{
    return r->o->is_sluice_path && r->o->is_sluice_path(r->o->arg, path);
}

/* A local path made absolute against the pipeline's folder; sluice paths as they are. */
static char *full_path(struct run *r, const char *path)
{
    if (path[0] == '/' || is_sluice(r, path)) return sl__strdup(path);
    return sl__asprintf("%s/%s", r->p->dir, path);
}

static int digest(struct run *r, const char *path, struct sl_digest *d)
{
    char *full = full_path(r, path);
    if (!full) return -ENOMEM;
    int rc = sl_hasher_digest(r->hasher, full, is_sluice(r, path), d, NULL);
    free(full);
    return rc;
}

static struct json_object *digest_rec(const char *path, const struct sl_digest *d)
{
    struct json_object *o = obj();
    add_str(o, "path", path);
    add_str(o, "hash", d->hash);
    add_int(o, "size", (int64_t)d->size);
    add_int(o, "files", (int64_t)d->files);
    return o;
}

static void hash_kvs(XXH3_state_t *s, const char *tag, const struct sl_pipe_kv *kv, size_t n)
{
    XXH3_128bits_update(s, tag, strlen(tag) + 1);
    for (size_t i = 0; i < n; i++) {
        XXH3_128bits_update(s, kv[i].key, strlen(kv[i].key) + 1);
        XXH3_128bits_update(s, kv[i].value, strlen(kv[i].value) + 1);
    }
}

static struct json_object *kv_rec(const struct sl_pipe_kv *kv, size_t n)
{
    struct json_object *o = obj();
    for (size_t i = 0; i < n; i++) add_str(o, kv[i].key, kv[i].value);
    return o;
}

static const char *rec_str(struct json_object *rec, const char *key)
{
    struct json_object *v = NULL;
    return json_object_object_get_ex(rec, key, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v)
               : NULL;
}

/* The path of rec's array `key` whose hash differs from now's (now: the same kind of array),
 * or a note that the list itself changed. NULL when they agree. */
static char *changed_entry(struct json_object *rec, const char *key, struct json_object *now,
                           const char *what)
{
    struct json_object *was = NULL;
    if (!json_object_object_get_ex(rec, key, &was) || !json_object_is_type(was, json_type_array) ||
        json_object_array_length(was) != json_object_array_length(now))
        return sl__asprintf("the list of %ss changed", what);
    for (size_t i = 0; i < json_object_array_length(now); i++) {
        struct json_object *a = json_object_array_get_idx(was, i);
        struct json_object *b = json_object_array_get_idx(now, i);
        const char *pa = rec_str(a, "path"), *pb = rec_str(b, "path");
        if (!pa || !pb || strcmp(pa, pb)) return sl__asprintf("the list of %ss changed", what);
        const char *ha = rec_str(a, "hash"), *hb = rec_str(b, "hash");
        if (!ha || !hb || strcmp(ha, hb)) return sl__asprintf("%s changed: %s", what, pb);
    }
    return NULL;
}

static bool same_json(struct json_object *rec, const char *key, struct json_object *now)
{
    struct json_object *was = NULL;
    bool same = json_object_object_get_ex(rec, key, &was) && json_object_equal(was, now);
    json_object_put(now);
    return same;
}

/* Decides whether a ready stage must run: hashes its deps, makes its key, and compares with
 * the lock. Returns 1 to run (j->why says why), 0 when it is unchanged, or an error (a dep
 * that could not be read). */
static int decide(struct run *r, struct job *j)
{
    struct sl_stage *s = j->s;
    XXH3_state_t *h = XXH3_createState();
    int rc = 0;

    json_object_put(j->deps);
    j->deps = json_object_new_array();
    free(j->why);
    j->why = NULL;
    if (!h || !j->deps) {
        rc = -ENOMEM;
        goto out;
    }
    XXH3_128bits_reset(h);
    XXH3_128bits_update(h, "sluice stage 1", 15);
    XXH3_128bits_update(h, s->cmd, strlen(s->cmd) + 1);
    hash_kvs(h, "params", s->params, s->nparams);
    hash_kvs(h, "env", s->env, s->nenv);
    XXH3_128bits_update(h, "deps", 5);
    bool dep_missing = false;
    for (size_t i = 0; i < s->ndeps; i++) {
        struct sl_digest d;
        rc = digest(r, s->deps[i].path, &d);
        if (rc == -ENOENT && r->o->dry_run && j->upstream_ran) {
            /* An upstream stage would make it. */
            dep_missing = true;
            rc = 0;
            continue;
        }
        if (rc == -ENOENT) {
            rc = sl__err(-ENOENT, "stage \"%s\": dep \"%s\" does not exist", s->name,
                         s->deps[i].path);
            goto out;
        }
        if (rc < 0) goto out;
        XXH3_128bits_update(h, s->deps[i].path, strlen(s->deps[i].path) + 1);
        XXH3_128bits_update(h, d.hash, sizeof(d.hash));
        json_object_array_add(j->deps, digest_rec(s->deps[i].path, &d));
    }
    XXH3_128bits_update(h, "outs", 5);
    for (size_t i = 0; i < s->nouts; i++)
        XXH3_128bits_update(h, s->outs[i].path, strlen(s->outs[i].path) + 1);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(h));
    sl__hex(c.digest, 16, j->key);

    struct json_object *rec = sl_lock_get(r->lock, s->name);
    const char *key = rec ? rec_str(rec, "key") : NULL;
    if (r->o->force && j->target) {
        j->why = sl__strdup("forced (--force)");
    } else if (dep_missing) {
        j->why = sl__strdup("its upstream would run first");
    } else if (!rec || !key) {
        j->why = sl__strdup("not run before (not in sluice.lock)");
    } else if (strcmp(key, j->key)) {
        const char *cmd = rec_str(rec, "cmd");
        if (!cmd || strcmp(cmd, s->cmd))
            j->why = sl__strdup("its cmd changed");
        else if (!same_json(rec, "params", kv_rec(s->params, s->nparams)))
            j->why = sl__strdup("its params changed");
        else if (!same_json(rec, "env", kv_rec(s->env, s->nenv)))
            j->why = sl__strdup("its env changed");
        else if (!(j->why = changed_entry(rec, "deps", j->deps, "dep")))
            j->why = sl__strdup("its outs changed");
    } else {
        /* Unchanged inputs: its outs must still be what it made. */
        struct json_object *outs = NULL;
        json_object_object_get_ex(rec, "outs", &outs);
        for (size_t i = 0; i < s->nouts && !j->why; i++) {
            struct json_object *o = outs ? json_object_array_get_idx(outs, i) : NULL;
            const char *was = o ? rec_str(o, "hash") : NULL;
            struct sl_digest d;
            int drc = digest(r, s->outs[i].path, &d);
            if (drc == -ENOENT)
                j->why = sl__asprintf("out missing: %s", s->outs[i].path);
            else if (drc < 0) {
                rc = drc;
                goto out;
            } else if (!was || strcmp(was, d.hash))
                j->why = sl__asprintf("out changed: %s", s->outs[i].path);
        }
    }
    rc = j->why ? 1 : 0;
out:
    XXH3_freeState(h);
    return rc;
}

/* What a stage that ended well made: its outs, hashed, into the lock with its key. */
static int record(struct run *r, struct job *j)
{
    struct sl_stage *s = j->s;
    struct json_object *outs = json_object_new_array();
    int rc = 0;
    for (size_t i = 0; i < s->nouts; i++) {
        struct sl_digest d;
        rc = digest(r, s->outs[i].path, &d);
        if (rc == -ENOENT) rc = sl__err(-ENOENT, "stage \"%s\" did not make its out \"%s\"",
                                        s->name, s->outs[i].path);
        if (rc < 0) {
            json_object_put(outs);
            return rc;
        }
        json_object_array_add(outs, digest_rec(s->outs[i].path, &d));
    }
    struct json_object *rec = obj();
    add_str(rec, "key", j->key);
    add_str(rec, "cmd", s->cmd);
    json_object_object_add(rec, "params", kv_rec(s->params, s->nparams));
    json_object_object_add(rec, "env", kv_rec(s->env, s->nenv));
    json_object_object_add(rec, "deps", json_object_get(j->deps));
    json_object_object_add(rec, "outs", outs);
    return sl_lock_set(r->lock, s->name, rec);
}

/* ---- the local executor ------------------------------------------------------------------ */

/* An attempt as a process: /bin/sh -c CMD in its own process group. Its timeout is this
 * executor's to enforce (SIGTERM to the group, SIGKILL after GRACE_NS); its end comes as a
 * SIGCHLD, which wakes the scheduler's poll(), and is collected by waitpid() in local_poll. */

struct proc {
    size_t id;
    pid_t pid;                          /* and its process group */
    int64_t timeout_ns;                 /* 0: none */
    int64_t deadline, kill_at;          /* monotonic ns; 0: none */
    bool timed_out;
};

struct local {
    struct sl_exec base;
    const struct sl_exec_host *host;
    struct proc *procs; /* the attempts that run, in no order */
    size_t n, cap;
};

/* The environment of a stage's process: ours, with set (NAME=value) over it. */
static char **merged_env(char *const *set)
{
    size_t n = 0, ns = 0;
    while (environ[n]) n++;
    while (set[ns]) ns++;
    char **env = calloc(n + ns + 1, sizeof(*env));
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool over = false;
        for (size_t e = 0; e < ns && !over; e++)
            over = !strncmp(environ[i], set[e], len) && set[e][len] == '=';
        if (!over) env[k++] = environ[i];
    }
    for (size_t e = 0; e < ns; e++) env[k++] = set[e];
    return env; /* borrows every string: free() the array alone */
}

static int local_start(struct sl_exec *x, const struct sl_attempt *a, char **job)
{
    struct local *l = (struct local *)x;
    const struct sl_stage *s = a->s;
    int rc;

    *job = NULL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct proc *p = realloc(l->procs, cap * sizeof(*p));
        if (!p) return -ENOMEM;
        l->procs = p;
        l->cap = cap;
    }
    char **env = merged_env(a->env);
    if (!env) return -ENOMEM;
    int logfd = open(a->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        rc = sl__err(-errno, "%s: cannot make the stage's log: %s", a->log, strerror(errno));
        free(env);
        return rc;
    }
    /* posix_spawn (glibc: a vfork-style clone, no copy of our page tables: a fork of a
     * process with the cache's maps cost about 0.8 ms a stage). The child gets its own process
     * group, default signals with none blocked, the pipeline's folder, /dev/null for stdin. */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGCHLD);
    sigaddset(&dfl, SIGPIPE);
    pid_t pid = -1;
    int err = posix_spawn_file_actions_init(&fa);
    if (err == 0 && (err = posix_spawnattr_init(&at)) != 0) posix_spawn_file_actions_destroy(&fa);
    if (err == 0) {
        char *argv[] = {"sh", "-c", s->cmd, NULL};
        if (!(err = posix_spawn_file_actions_addchdir_np(&fa, a->dir)) &&
            !(err = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
            !(err = posix_spawn_file_actions_adddup2(&fa, logfd, 1)) &&
            !(err = posix_spawn_file_actions_adddup2(&fa, logfd, 2)) &&
            !(err = posix_spawnattr_setpgroup(&at, 0)) &&
            !(err = posix_spawnattr_setsigmask(&at, &none)) &&
            !(err = posix_spawnattr_setsigdefault(&at, &dfl)) &&
            !(err = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                      POSIX_SPAWN_SETSIGDEF)))
            err = posix_spawn(&pid, "/bin/sh", &fa, &at, argv, env);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
    }
    close(logfd);
    free(env);
    if (err) return sl__err(-err, "stage \"%s\": cannot start it: %s", s->name, strerror(err));

    int64_t now = mono();
    l->procs[l->n++] = (struct proc){.id = a->id, .pid = pid, .timeout_ns = s->timeout_ns,
                                     .deadline = s->timeout_ns ? now + s->timeout_ns : 0};
    return 0;
}

static void local_ended(struct local *l, const struct proc *p, int status)
{
    char what[160], t[32];
    if (p->timed_out) {
        fmt_secs(p->timeout_ns, t, sizeof(t));
        snprintf(what, sizeof(what), "timed out after %s", t);
    } else if (WIFEXITED(status)) {
        snprintf(what, sizeof(what), "exit %d", WEXITSTATUS(status));
    } else {
        snprintf(what, sizeof(what), "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    }
    struct sl_attempt_end e = {
        .id = p->id, .ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !p->timed_out,
        .timed_out = p->timed_out, .status = status, .what = what};
    l->host->ended(l->host->arg, &e);
}

/* Collects what ended, then enforces the timeouts and grace periods whose time came. */
static int64_t local_poll(struct sl_exec *x)
{
    struct local *l = (struct local *)x;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (size_t i = 0; i < l->n; i++) {
            if (l->procs[i].pid != pid) continue;
            struct proc p = l->procs[i];
            l->procs[i] = l->procs[--l->n]; /* gone before the scheduler hears of it */
            local_ended(l, &p, status);
            break;
        }
    }
    int64_t now = mono(), next = 0;
#define NEXT(t) (next = !next || (t) < next ? (t) : next)
    for (size_t i = 0; i < l->n; i++) {
        struct proc *p = &l->procs[i];
        if (p->deadline && !p->timed_out && now >= p->deadline) {
            p->timed_out = true;
            kill(-p->pid, SIGTERM);
            p->kill_at = now + GRACE_NS;
        }
        if (p->kill_at && now >= p->kill_at) {
            kill(-p->pid, SIGKILL);
            p->kill_at = 0;
        }
        if (p->deadline && !p->timed_out) NEXT(p->deadline);
        if (p->kill_at) NEXT(p->kill_at);
    }
    /* A second at most while stages run: a SIGCHLD that went to a thread with the signal
     * unblocked (one the caller started early) is then late, never lost. */
    if (l->n) NEXT(now + LOCAL_POLL_NS);
#undef NEXT
    return next;
}

static void local_cancel(struct sl_exec *x, bool now)
{
    struct local *l = (struct local *)x;
    int64_t at = mono() + GRACE_NS;
    for (size_t i = 0; i < l->n; i++) {
        kill(-l->procs[i].pid, now ? SIGKILL : SIGTERM);
        if (!now && !l->procs[i].kill_at) l->procs[i].kill_at = at;
    }
}

static void local_close(struct sl_exec *x)
{
    struct local *l = (struct local *)x;
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        kill(-l->procs[i].pid, SIGKILL);
        waitpid(l->procs[i].pid, NULL, 0);
    }
    free(l->procs);
    free(l);
}

static const struct sl_exec_ops local_ops = {
    .name = "local", .start = local_start, .poll = local_poll, .cancel = local_cancel,
    .close = local_close,
};

static int local_open(const struct sl_exec_host *host, struct sl_exec **out)
{
    struct local *l = calloc(1, sizeof(*l));
    if (!l) return -ENOMEM;
    l->base.ops = &local_ops;
    l->host = host;
    *out = &l->base;
    return 0;
}

/* ---- starting and ending stages --------------------------------------------------------- */

static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0) return errno == ENOENT ? 0 : -errno;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return -errno;
        struct dirent *de;
        int rc = 0;
        while (rc == 0 && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char *sub = sl__asprintf("%s/%s", path, de->d_name);
            rc = sub ? rm_tree(sub) : -ENOMEM;
            free(sub);
        }
        closedir(d);
        if (rc < 0) return rc;
        return rmdir(path) < 0 ? -errno : 0;
    }
    return unlink(path) < 0 ? -errno : 0;
}

/* Outs are removed before a stage runs (a stage that fails to write one must not leave the
 * last run's in its place, to be taken for its work) and their folders made. */
static int prepare_outs(struct run *r, struct job *j)
{
    for (size_t i = 0; i < j->s->nouts; i++) {
        const char *out = j->s->outs[i].path;
        if (is_sluice(r, out)) continue; /* the store's: a stage replaces it as it writes */
        char *full = full_path(r, out);
        if (!full) return -ENOMEM;
        int rc = rm_tree(full);
        if (rc < 0) rc = sl__err(rc, "%s: cannot remove the last run's out: %s", full, strerror(-rc));
        char *slash = strrchr(full, '/');
        if (rc == 0 && slash && slash != full) {
            *slash = '\0';
            rc = sl__mkdirs(full, 0755);
            if (rc < 0) rc = sl__err(rc, "%s: cannot make the folder: %s", full, strerror(-rc));
        }
        free(full);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Whether the stage's env: sets name: then it wins over what sluice would set. */
static bool env_sets(const struct sl_stage *s, const char *name)
{
    for (size_t e = 0; e < s->nenv; e++)
        if (!strcmp(s->env[e].key, name)) return true;
    return false;
}

/* The stage's env: and what sluice tells it (NAME=value, NULL-terminated, each name once):
 * the executor sets these over the run's environment. */
static char **stage_env(struct run *r, struct job *j)
{
    const struct sl_stage *s = j->s;
    char **env = calloc(s->nenv + 8, sizeof(*env));
    if (!env) return NULL;
    size_t k = 0;
    bool nomem = false;
#define SET(name, ...)                                                                        \
    do {                                                                                      \
        if (!env_sets(s, name)) nomem |= !(env[k++] = sl__asprintf(name "=" __VA_ARGS__));    \
    } while (0)
    for (size_t e = 0; e < s->nenv; e++)
        nomem |= !(env[k++] = sl__asprintf("%s=%s", s->env[e].key, s->env[e].value));
    SET("SLUICE_STAGE", "%s", s->name);
    SET("SLUICE_ATTEMPT", "%u", j->attempt);
    SET("SLUICE_CPUS", "%u", s->res.cpus);
    if (r->o->config) SET("SLUICE_CONFIG", "%s", r->o->config);
    if (r->trace_lib) {
        /* The I/O profile: sluice-trace.so in every process of the stage, after what the
         * environment preloads already (a sanitizer's runtime must come first). */
        const char *pre = getenv("LD_PRELOAD");
        SET("SLUICE_TRACE_DIR", "%s/trace/%s.%u", r->run_dir, s->name, j->attempt);
        SET("LD_PRELOAD", "%s%s%s", pre && *pre ? pre : "", pre && *pre ? ":" : "", r->trace_lib);
        /* sluice's own files: the run's logs, and the cache (a stage that reads through
         * sluice writes pages there). */
        const char *cache = r->o->sl ? sl_cache_dir(r->o->sl) : NULL;
        SET("SLUICE_TRACE_SKIP", "%s%s%s", r->state_dir, cache ? ":" : "", cache ? cache : "");
    }
    if (r->executor == SL_EXEC_LOCAL && r->limit.gpus) {
        /* Which GPUs are its: none for a stage that asked for none. (Slurm sets this itself
         * for the GPUs it gives a job.) */
        struct sl_buf gpus = {0};
        for (unsigned g = 0; g < MAX_GPUS; g++)
            if (j->gpus & (1ULL << g)) sl__buf_printf(&gpus, "%s%u", gpus.len ? "," : "", g);
        SET("CUDA_VISIBLE_DEVICES", "%s", gpus.data ? gpus.data : "");
        sl__buf_free(&gpus);
    }
#undef SET
    if (nomem) {
        for (size_t i = 0; i < k; i++) free(env[i]);
        free(env);
        return NULL;
    }
    return env;
}

static void free_env(char **env)
{
    for (size_t i = 0; env && env[i]; i++) free(env[i]);
    free(env);
}

static bool fits(struct run *r, const struct sl_stage *s)
{
    if (r->executor == SL_EXEC_SLURM) return true; /* the cluster schedules: submit it */
    unsigned free_gpus = (unsigned)__builtin_popcountll(r->gpus_free);
    return r->used.cpus + s->res.cpus <= r->limit.cpus &&
           (!r->limit.mem || !s->res.mem || r->used.mem + s->res.mem <= r->limit.mem) &&
           s->res.gpus <= free_gpus;
}

/* The folder the stage's processes write their trace lines to (see stage_env). */
static int make_trace_dir(struct run *r, struct job *j)
{
    if (!r->trace_lib) return 0;
    char *dir = sl__asprintf("%s/trace/%s.%u", r->run_dir, j->s->name, j->attempt);
    int rc = dir ? sl__mkdirs(dir, 0755) : -ENOMEM;
    if (rc < 0) rc = sl__err(rc, "%s: cannot make the folder: %s", dir ? dir : "trace", strerror(-rc));
    free(dir);
    return rc;
}

/* True if path a is b, holds it, or is below it. */
static bool overlaps(const char *a, const char *b)
{
    size_t an = strlen(a), bn = strlen(b), n = SL_MIN(an, bn);
    return strncmp(a, b, n) == 0 && (an == bn || (an < bn ? b[an] == '/' : a[bn] == '/'));
}

/* True if an out of s is dep, holds it, or is below it. */
static bool makes(const struct sl_stage *s, const char *dep)
{
    for (size_t o = 0; o < s->nouts; o++)
        if (overlaps(s->outs[o].path, dep)) return true;
    return false;
}

/* Keeps path for stage k (once a run). */
static void keep_path(struct run *r, const struct job *k, const char *path)
{
    for (size_t e = 0; e < r->nkept; e++)
        if (strcmp(r->kept[e], path) == 0) return;
    char **n = realloc(r->kept, (r->nkept + 1) * sizeof(*n));
    if (!n) return; /* a hint lost */
    r->kept = n;
    if (!(n[r->nkept] = sl__strdup(path))) return;
    r->nkept++;
    sl_prefetch_keep(r->prefetch, path);
    if (r->o->verbosity > 0) say(r, "  keep    %s (for %s)", path, k->s->name);
}

/* True if a stage above k that has not finished makes dep: its bytes are not made yet (what
 * the store has now is an older version). */
static bool made_above(struct run *r, const struct job *k, const char *dep)
{
    for (size_t u = 0; u < k->s->nup; u++) {
        const struct job *up = &r->jobs[k->s->up[u]];
        if (up->state != S_DONE && up->state != S_CACHED && up->state != S_IDLE &&
            makes(up->s, dep))
            return true;
    }
    return false;
}

static void prefetch_dep(struct run *r, const struct job *k, const char *dep)
{
    sl_prefetch_add(r->prefetch, dep);
    if (r->o->verbosity > 0) say(r, "  prefetch %s (for %s)", dep, k->s->name);
}

/* The stages that come next, waiting for stages that run now and for nothing else: their
 * sluice deps go to the prefetch (once a stage), but for those an unfinished stage above makes.
 * Called when a stage starts: its run time is what the loads overlap. */
static void prefetch_next(struct run *r)
{
    if (!r->prefetch) return;
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *k = &r->jobs[i];
        if (k->state != S_WAITING || k->prefetched) continue;
        bool next = true;
        for (size_t u = 0; u < k->s->nup && next; u++) {
            enum state st = r->jobs[k->s->up[u]].state;
            next = st != S_WAITING && st != S_READY && st != S_RETRY_WAIT;
        }
        if (!next) continue;
        k->prefetched = true;
        for (size_t d = 0; d < k->s->ndeps; d++) {
            const char *dep = k->s->deps[d].path;
            if (is_sluice(r, dep) && !made_above(r, k, dep)) prefetch_dep(r, k, dep);
        }
    }
}

static int launch(struct run *r, struct job *j)
{
    struct sl_stage *s = j->s;
    int rc;

    j->attempt++;
    free(j->log);
    j->log = sl__asprintf("%s/%s.%u.log", r->log_dir, s->name, j->attempt);
    if (!j->log) return -ENOMEM;
    if ((rc = prepare_outs(r, j)) < 0 || (rc = make_trace_dir(r, j)) < 0) return rc;
    j->gpus = 0;
    if (r->executor == SL_EXEC_LOCAL)
        for (unsigned g = 0, want = s->res.gpus; g < MAX_GPUS && want; g++)
            if (r->gpus_free & (1ULL << g)) {
                j->gpus |= 1ULL << g;
                want--;
            }
    char **env = stage_env(r, j);
    if (!env) return -ENOMEM;
    struct sl_attempt a = {.id = (size_t)(j - r->jobs), .s = s, .attempt = j->attempt,
                           .dir = r->p->dir, .log = j->log, .env = env};
    free(j->job_id);
    j->job_id = NULL;
    free(j->xstate);
    free(j->xreason);
    j->xstate = j->xreason = NULL;
    j->timed_out = false;
    j->status = -1;
    rc = r->x->ops->start(r->x, &a, &j->job_id);
    free_env(env);
    if (rc < 0) {
        j->gpus = 0;
        return rc;
    }
    j->started = mono();
    r->used.cpus += s->res.cpus;
    r->used.mem += s->res.mem;
    r->gpus_free &= ~j->gpus;
    set_state(r, j, S_RUNNING);

    char job[64] = "";
    if (j->job_id) snprintf(job, sizeof(job), " (Slurm job %s)", j->job_id);
    char *msg = j->attempt > 1
                    ? sl__asprintf(" (attempt %u of %u)%s", j->attempt, s->retries + 1, job)
                    : sl__asprintf(": %s%s", j->why ? j->why : "", job);
    say(r, "  start   %s%s", s->name, msg ? msg : "");
    free(msg);
    struct json_object *e = obj();
    add_int(e, "attempt", j->attempt);
    add_str(e, "log", j->log);
    add_str(e, "reason", j->why);
    add_str(e, "job_id", j->job_id);
    event(r, "start", j, e);
    prefetch_next(r);
    return 0;
}

/* A stage that will not run because an upstream one failed, and all below it. */
static void not_run_below(struct run *r, struct job *j, const char *why)
{
    for (size_t d = 0; d < j->s->ndown; d++) {
        struct job *k = &r->jobs[j->s->down[d]];
        if (k->state != S_WAITING && k->state != S_READY) continue;
        set_state(r, k, S_NOT_RUN);
        free(k->why);
        k->why = sl__strdup(why);
        struct json_object *e = obj();
        add_str(e, "reason", why);
        event(r, "not_run", k, e);
        not_run_below(r, k, why);
    }
}

/* True if a stage of this run that has not finished reads path (a dep of it overlaps it). */
static bool read_later(struct run *r, const char *path)
{
    for (size_t i = 0; i < r->p->nstages; i++) {
        const struct job *k = &r->jobs[i];
        if (k->state == S_IDLE || k->state >= S_DONE) continue;
        for (size_t d = 0; d < k->s->ndeps; d++)
            if (overlaps(k->s->deps[d].path, path)) return true;
    }
    return false;
}

/* What j made in the store that a stage still waiting for other stages reads is loaded and
 * kept on the cache disk until its last reader has finished: what runs in between must not
 * evict it (read by a stage that starts now, it is the reader's to fetch: a load would race
 * its reads for the same pages). */
static void keep_outs(struct run *r, struct job *j)
{
    if (!r->prefetch) return;
    /* A stage that reads what j made is below j (an out -> dep edge of the DAG). */
    for (size_t i = 0; i < j->s->ndown; i++) {
        const struct job *k = &r->jobs[j->s->down[i]];
        if (k->state != S_WAITING) continue;
        for (size_t d = 0; d < k->s->ndeps; d++) {
            const char *dep = k->s->deps[d].path;
            if (!makes(j->s, dep) || !is_sluice(r, dep) || made_above(r, k, dep)) continue;
            /* Each out of j that dep overlaps: the out, or dep, whichever is below the other
             * (a dep on a folder j made two outs in reads both). */
            for (size_t o = 0; o < j->s->nouts; o++) {
                const char *out = j->s->outs[o].path;
                if (overlaps(out, dep)) keep_path(r, k, strlen(out) > strlen(dep) ? out : dep);
            }
        }
    }
}

/* Lets go of the kept paths that no stage still to finish reads. */
static void release_kept(struct run *r)
{
    for (size_t e = 0; e < r->nkept;) {
        if (read_later(r, r->kept[e])) {
            e++;
            continue;
        }
        sl_prefetch_release(r->prefetch, r->kept[e]);
        if (r->o->verbosity > 0) say(r, "  release %s", r->kept[e]);
        free(r->kept[e]);
        r->kept[e] = r->kept[--r->nkept];
    }
}

/* A stage finished (done, cached, would run): the stages below it may be ready. */
static void finished(struct run *r, struct job *j, bool ran)
{
    for (size_t d = 0; d < j->s->ndown; d++) {
        struct job *k = &r->jobs[j->s->down[d]];
        if (k->state != S_WAITING) continue;
        k->upstream_ran |= ran;
        if (--k->ups_left == 0) {
            set_state(r, k, S_READY);
        }
    }
    keep_outs(r, j);
}

static void fail(struct run *r, struct job *j, const char *what)
{
    char t[32];
    fmt_secs(j->ran_ns, t, sizeof(t));
    set_state(r, j, S_FAILED);
    free(j->why);
    j->why = sl__strdup(what);
    say(r, "  FAILED  %s: %s after %u attempt%s, %s; log: %s", j->s->name, what, j->attempt,
        j->attempt == 1 ? "" : "s", t, j->log ? shown_path(j->log) : "(none)");
    if (j->log) log_tail(r, j->log);
    struct json_object *e = obj();
    add_int(e, "attempts", j->attempt);
    add_str(e, "reason", what);
    add_str(e, "log", j->log);
    if (j->status >= 0 && WIFEXITED(j->status)) add_int(e, "exit", WEXITSTATUS(j->status));
    if (j->status >= 0 && WIFSIGNALED(j->status)) add_int(e, "signal", WTERMSIG(j->status));
    json_object_object_add(e, "timed_out", json_object_new_boolean(j->timed_out));
    add_num(e, "seconds", (double)j->ran_ns / 1e9);
    add_str(e, "job_id", j->job_id);
    if (j->job_id) add_str(e, "slurm_state", j->xstate);
    event(r, "failed", j, e);
    char *why = sl__asprintf("upstream stage \"%s\" failed", j->s->name);
    not_run_below(r, j, why ? why : "an upstream stage failed");
    free(why);
    if (!r->o->keep_going) r->stopping = true;
}

/* The executor's word that an attempt ended (host.ended). */
static void ended(void *arg, const struct sl_attempt_end *e)
{
    struct run *r = arg;
    struct job *j = &r->jobs[e->id];
    struct sl_stage *s = j->s;
    int64_t now = mono();
    r->progress = true;
    j->status = e->status;
    j->timed_out = e->timed_out;
    j->ran_ns += now - j->started;
    free(j->xstate);
    free(j->xreason);
    j->xstate = e->state ? sl__strdup(e->state) : NULL;
    j->xreason = NULL;
    r->used.cpus -= s->res.cpus;
    r->used.mem -= s->res.mem;
    r->gpus_free |= j->gpus;
    j->gpus = 0;

    if (e->ok) {
        int rc = record(r, j);
        if (rc < 0) {
            fail(r, j, sl_errmsg(rc));
            return;
        }
        char t[32];
        fmt_secs(j->ran_ns, t, sizeof(t));
        set_state(r, j, S_DONE);
        say(r, "  done    %s in %s", s->name, t);
        json_object_put(j->profile);
        j->profile = NULL;
        if (r->trace_lib) {
            char *dir = sl__asprintf("%s/trace/%s.%u", r->run_dir, s->name, j->attempt);
            if (!dir || sl_profile_collect(dir, &j->profile) < 0)
                sl__warn("stage \"%s\": its I/O profile could not be read", s->name);
            free(dir);
        }
        struct json_object *ev = obj();
        if (j->profile) json_object_object_add(ev, "profile", json_object_get(j->profile));
        add_int(ev, "attempts", j->attempt);
        add_num(ev, "seconds", (double)j->ran_ns / 1e9);
        add_str(ev, "log", j->log);
        add_str(ev, "job_id", j->job_id);
        event(r, "done", j, ev);
        finished(r, j, true);
        return;
    }
    if (r->interrupted) {
        set_state(r, j, S_NOT_RUN);
        free(j->why);
        j->why = sl__strdup("stopped (interrupted)");
        say(r, "  stopped %s", s->name);
        struct json_object *ev = obj();
        add_str(ev, "reason", "interrupted");
        add_str(ev, "log", j->log);
        add_str(ev, "job_id", j->job_id);
        if (j->job_id) add_str(ev, "slurm_state", j->xstate);
        event(r, "stopped", j, ev);
        return;
    }
    if (j->attempt <= s->retries && !r->stopping) {
        int64_t delay = s->retry_delay_ns << SL_MIN(j->attempt - 1, 20U);
        char t[32];
        fmt_secs(delay, t, sizeof(t));
        j->retry_at = now + delay;
        set_state(r, j, S_RETRY_WAIT);
        say(r, "  retry   %s: %s (attempt %u of %u; log: %s); again in %s", s->name, e->what,
            j->attempt, s->retries + 1, shown_path(j->log), t);
        struct json_object *ev = obj();
        add_int(ev, "attempt", j->attempt);
        add_str(ev, "reason", e->what);
        add_str(ev, "log", j->log);
        add_num(ev, "delay_s", (double)delay / 1e9);
        add_str(ev, "job_id", j->job_id);
        event(r, "retry", j, ev);
        return;
    }
    fail(r, j, e->what);
}

/* The executor's word that an attempt changed state there (host.state): Slurm's PENDING ->
 * RUNNING, shown in the status line and with -v, and an event. */
static void exec_state(void *arg, size_t id, const char *state, const char *reason)
{
    struct run *r = arg;
    struct job *j = &r->jobs[id];
    free(j->xstate);
    free(j->xreason);
    j->xstate = sl__strdup(state);
    j->xreason = reason ? sl__strdup(reason) : NULL;
    if (r->o->verbosity > 0)
        say(r, "  %-7s %s (Slurm job %s%s%s)", state, j->s->name, j->job_id ? j->job_id : "?",
            reason ? ": " : "", reason ? reason : "");
    struct json_object *e = obj();
    add_str(e, "job_id", j->job_id);
    add_str(e, "state", state);
    add_str(e, "reason", reason);
    event(r, "state", j, e);
}

static void exec_warn(void *arg, const char *msg)
{
    struct run *r = arg;
    say(r, "sluice: run: %s", msg);
    struct json_object *e = obj();
    add_str(e, "message", msg);
    event(r, "warning", NULL, e);
}

static void interrupt(struct run *r, int sig)
{
    if (r->interrupted) {
        if (r->x) r->x->ops->cancel(r->x, true); /* a second Ctrl-C: no grace */
        return;
    }
    r->interrupted = r->stopping = true;
    if (r->executor == SL_EXEC_SLURM)
        say(r, "sluice: run: %s: cancelling the run's Slurm jobs (Ctrl-C again not to wait "
            "for them to end)", strsignal(sig));
    else
        say(r, "sluice: run: %s: stopping the running stages (Ctrl-C again to kill them now)",
            strsignal(sig));
    if (r->x) r->x->ops->cancel(r->x, false);
}

/* Retries whose time came; returns the next one's time (0: none). */
static int64_t timers(struct run *r)
{
    int64_t now = mono(), next = 0;
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *j = &r->jobs[i];
        if (j->state != S_RETRY_WAIT) continue;
        if (r->stopping)
            fail(r, j, "stopped before its retry");
        else if (now >= j->retry_at)
            set_state(r, j, S_READY);
        else if (!next || j->retry_at < next)
            next = j->retry_at;
    }
    return next;
}

/* Starts what is ready and fits, in file order; decides (cached or not) first. */
static int start_ready(struct run *r)
{
    for (size_t i = 0; i < r->p->nstages && !r->stopping; i++) {
        struct job *j = &r->jobs[i];
        if (j->state != S_READY) continue;
        if (j->attempt == 0 && !j->why) { /* decided once: a stage that waits for room keeps it */
            int rc = decide(r, j);
            if (rc < 0) {
                fail(r, j, sl_errmsg(rc));
                continue;
            }
            if (rc == 0) {
                set_state(r, j, S_CACHED);
                if (r->o->verbosity > 0) say(r, "  cached  %s (unchanged)", j->s->name);
                struct json_object *e = obj();
                add_str(e, "reason", "unchanged");
                event(r, "cached", j, e);
                finished(r, j, false);
                i = (size_t)-1; /* what it made ready may come before it */
                continue;
            }
            if (r->o->dry_run) {
                set_state(r, j, S_WOULD_RUN);
                say(r, "  would run %s: %s", j->s->name, j->why);
                struct json_object *e = obj();
                add_str(e, "reason", j->why);
                event(r, "would_run", j, e);
                finished(r, j, true);
                i = (size_t)-1;
                continue;
            }
        }
        if (!fits(r, j->s)) continue;
        int rc = launch(r, j);
        if (rc < 0) fail(r, j, sl_errmsg(rc));
    }
    return 0;
}

/* ---- the run ----------------------------------------------------------------------------- */

static unsigned machine_gpus(void)
{
    unsigned n = 0;
    DIR *d = opendir("/dev");
    struct dirent *de;
    if (!d) return 0;
    while ((de = readdir(d))) {
        const char *s = de->d_name;
        if (strncmp(s, "nvidia", 6) || !s[6]) continue;
        bool digits = true;
        for (const char *c = s + 6; *c; c++) digits &= *c >= '0' && *c <= '9';
        n += digits;
    }
    closedir(d);
    return n;
}

static void set_limits(struct run *r)
{
    const struct sl_pipeline *p = r->p;
    const struct sl_resources *o = &r->o->limit;
    struct sysinfo si;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    r->limit.cpus = o->cpus ? o->cpus : p->has_limit_cpus ? p->limit.cpus : (unsigned)SL_MAX(cpus, 1L);
    r->limit.mem = o->mem ? o->mem
                   : p->has_limit_mem ? p->limit.mem
                   : sysinfo(&si) == 0 ? (uint64_t)si.totalram * si.mem_unit
                                       : 0;
    r->limit.gpus = o->gpus ? o->gpus : p->has_limit_gpus ? p->limit.gpus : machine_gpus();
    r->limit.gpus = SL_MIN(r->limit.gpus, (unsigned)MAX_GPUS);
    r->gpus_free = r->limit.gpus == MAX_GPUS ? ~0ULL : (1ULL << r->limit.gpus) - 1;
}

/* Marks the stages the run is about: the targets with their upstream (or, --downstream, with
 * what is below them); all when there are none. */
static int select_stages(struct run *r)
{
    const struct sl_pipeline *p = r->p;
    size_t n = p->nstages;
    bool *sel = calloc(n ? n : 1, sizeof(*sel));
    size_t *stack = calloc(n ? n : 1, sizeof(*stack)), top = 0;
    if (!sel || !stack) {
        free(sel);
        free(stack);
        return -ENOMEM;
    }
    for (size_t t = 0; t < r->o->ntargets; t++) {
        const char *name = r->o->targets[t];
        bool any = false;
        for (size_t i = 0; i < n; i++)
            if (!strcmp(p->stages[i].name, name) || !strcmp(p->stages[i].group, name)) {
                any = true;
                r->jobs[i].target = true;
                if (!sel[i]) {
                    sel[i] = true;
                    stack[top++] = i;
                }
            }
        if (!any) {
            free(sel);
            free(stack);
            return sl__err(SL_E_USAGE, "%s: no stage \"%s\" (sluice run --dry-run lists them)",
                           p->file, name);
        }
    }
    if (!r->o->ntargets)
        for (size_t i = 0; i < n; i++) sel[i] = r->jobs[i].target = true;
    while (top) {
        const struct sl_stage *s = &p->stages[stack[--top]];
        size_t m = r->o->downstream ? s->ndown : s->nup;
        const size_t *next = r->o->downstream ? s->down : s->up;
        for (size_t k = 0; k < m; k++)
            if (!sel[next[k]]) {
                sel[next[k]] = true;
                stack[top++] = next[k];
            }
    }
    for (size_t i = 0; i < n; i++) {
        struct job *j = &r->jobs[i];
        j->state = S_IDLE;
        r->counts[S_IDLE]++;
        if (!sel[i]) continue;
        for (size_t k = 0; k < j->s->nup; k++) j->ups_left += sel[j->s->up[k]];
        set_state(r, j, j->ups_left ? S_WAITING : S_READY);
    }
    free(sel);
    free(stack);
    return 0;
}

/* A stage that can never fit the run's limits is refused before anything runs (locally: under
 * Slurm the cluster's limits are the ones that count, and sbatch refuses what can never run). */
static int check_resources(struct run *r)
{
    if (r->executor == SL_EXEC_SLURM) return 0;
    for (size_t i = 0; i < r->p->nstages; i++) {
        const struct sl_stage *s = r->jobs[i].s;
        char a[32], b[32];
        if (r->jobs[i].state == S_IDLE) continue;
        if (s->res.cpus > r->limit.cpus)
            return sl__err(SL_E_CONFIG, "%s:%zu:%zu: stage \"%s\" needs %u cpus; this run has %u "
                           "(resources: in the file, or --cpus)", r->p->file, s->at.line,
                           s->at.col, s->name, s->res.cpus, r->limit.cpus);
        if (r->limit.mem && s->res.mem > r->limit.mem)
            return sl__err(SL_E_CONFIG, "%s:%zu:%zu: stage \"%s\" needs %s of memory; this run "
                           "has %s (resources: in the file, or --mem)", r->p->file, s->at.line,
                           s->at.col, s->name, sl_format_size(s->res.mem, a, sizeof(a)),
                           sl_format_size(r->limit.mem, b, sizeof(b)));
        if (s->res.gpus > r->limit.gpus)
            return sl__err(SL_E_CONFIG, "%s:%zu:%zu: stage \"%s\" needs %u gpus; this run has %u "
                           "(resources: in the file, or --gpus)", r->p->file, s->at.line,
                           s->at.col, s->name, s->res.gpus, r->limit.gpus);
    }
    return 0;
}

static int make_dirs(struct run *r)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    r->state_dir = sl__asprintf("%s/.sluice", r->p->dir);
    r->run_dir = sl__asprintf("%s/runs/%s-%d", r->state_dir ? r->state_dir : "", stamp, (int)getpid());
    r->log_dir = sl__asprintf("%s/logs", r->run_dir ? r->run_dir : "");
    if (!r->state_dir || !r->run_dir || !r->log_dir) return -ENOMEM;
    if (r->o->dry_run) return 0;
    int rc = sl__mkdirs(r->log_dir, 0755);
    if (rc < 0) return sl__err(rc, "%s: cannot make the folder: %s", r->log_dir, strerror(-rc));
    /* runs/last: the latest run, for `sluice report` and for people. */
    char *last = sl__asprintf("%s/runs/last", r->state_dir), *tmp = sl__asprintf("%s.%d", last ? last : "", (int)getpid());
    if (last && tmp && symlink(strrchr(r->run_dir, '/') + 1, tmp) == 0 && rename(tmp, last) < 0)
        unlink(tmp);
    free(last);
    free(tmp);
    return 0;
}

/* report.json in the run's folder: every stage's outcome and I/O profile, and the cache's
 * figures; what `sluice report` prints. Written whole, then renamed into place. */
static void write_report(struct run *r, int exit_code)
{
    if (r->o->dry_run) return;
    struct json_object *rep = obj(), *stages = json_object_new_array();
    add_str(rep, "pipeline", r->p->file);
    add_str(rep, "run", strrchr(r->run_dir, '/') + 1);
    add_int(rep, "exit", exit_code);
    add_num(rep, "seconds", (double)(mono() - r->started) / 1e9);
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *j = &r->jobs[i];
        if (j->state == S_IDLE) continue;
        struct json_object *st = obj();
        add_str(st, "stage", j->s->name);
        add_str(st, "status", state_name(j->state));
        add_int(st, "attempts", j->attempt);
        add_num(st, "seconds", (double)j->ran_ns / 1e9);
        add_str(st, "log", j->log);
        if (j->state != S_DONE) add_str(st, "reason", j->state == S_CACHED ? "unchanged" : j->why);
        json_object_object_add(st, "profile", json_object_get(j->profile));
        json_object_array_add(stages, st);
    }
    json_object_object_add(rep, "stages", stages);
    sl_cache_stats_t cs;
    if (r->o->sl && sl_cache_stats(r->o->sl, &cs) == 0) {
        struct json_object *c = obj();
        add_int(c, "hits", (int64_t)cs.hits);
        add_int(c, "misses", (int64_t)cs.misses);
        add_int(c, "ufs_bytes_read", (int64_t)cs.ufs_bytes_read);
        add_int(c, "bytes_cached", (int64_t)cs.bytes_cached);
        json_object_object_add(rep, "cache", c);
    }
    if (r->prefetch) {
        /* What the run loaded ahead of the stages, and kept for later readers. */
        size_t files, kept;
        uint64_t bytes, kept_bytes;
        sl_prefetch_figures(r->prefetch, &files, &bytes, &kept, &kept_bytes);
        struct json_object *pf = obj();
        add_int(pf, "files", (int64_t)files);
        add_int(pf, "bytes", (int64_t)bytes);
        add_int(pf, "kept", (int64_t)kept);
        add_int(pf, "kept_bytes", (int64_t)kept_bytes);
        json_object_object_add(rep, "prefetch", pf);
    }
    char *path = sl__asprintf("%s/report.json", r->run_dir);
    char *tmp = sl__asprintf("%s/report.json.tmp", r->run_dir);
    if (path && tmp &&
        json_object_to_file_ext(tmp, rep, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE) == 0 &&
        rename(tmp, path) == 0) {
        /* written */
    } else {
        sl__warn("%s: cannot write the run's report", path ? path : "report.json");
    }
    free(path);
    free(tmp);
    json_object_put(rep);
}

static void summary(struct run *r, int exit_code)
{
    int64_t took = mono() - r->started;
    char t[32];
    fmt_secs(took, t, sizeof(t));
    status_clear(r);
    if (r->o->json) {
        struct json_object *e = obj();
        add_int(e, "done", (int64_t)r->counts[S_DONE]);
        add_int(e, "cached", (int64_t)r->counts[S_CACHED]);
        add_int(e, "failed", (int64_t)r->counts[S_FAILED]);
        add_int(e, "not_run", (int64_t)r->counts[S_NOT_RUN]);
        if (r->o->dry_run) add_int(e, "would_run", (int64_t)r->counts[S_WOULD_RUN]);
        add_num(e, "seconds", (double)took / 1e9);
        add_int(e, "exit", exit_code);
        add_str(e, "run_dir", r->o->dry_run ? NULL : r->run_dir);
        event(r, "summary", NULL, e);
        return;
    }
    if (r->o->verbosity < 0 && exit_code == 0) return;
    size_t w = 5;
    for (size_t i = 0; i < r->p->nstages; i++)
        if (r->jobs[i].state != S_IDLE) w = SL_MAX(w, strlen(r->jobs[i].s->name));
    printf("%-*s  %-9s  %8s  %8s  %s\n", (int)w, "stage", "status", "attempts", "time", "log / why");
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *j = &r->jobs[i];
        if (j->state == S_IDLE) continue;
        char tt[32] = "-";
        if (j->ran_ns) fmt_secs(j->ran_ns, tt, sizeof(tt));
        const char *note = j->state == S_DONE || (j->state == S_FAILED && j->log) ? shown_path(j->log)
                         : j->why ? j->why : "";
        if (j->state == S_CACHED) note = "unchanged";
        printf("%-*s  %-9s  %8u  %8s  %s\n", (int)w, j->s->name, state_name(j->state), j->attempt,
               tt, note);
    }
    printf("%zu stage%s in %s: %zu done, %zu cached, %zu failed, %zu not run", r->p->nstages -
           r->counts[S_IDLE], r->p->nstages - r->counts[S_IDLE] == 1 ? "" : "s", t,
           r->counts[S_DONE], r->counts[S_CACHED], r->counts[S_FAILED], r->counts[S_NOT_RUN]);
    if (r->o->dry_run) printf(", %zu would run", r->counts[S_WOULD_RUN]);
    printf("%s\n", r->interrupted ? " (interrupted)" : "");
    fflush(stdout);
}

/* The executor: --executor's, else the file's. */
static int choose_executor(struct run *r)
{
    const char *name = r->o->executor;
    r->executor = r->p->executor;
    if (!name) return 0;
    if (!strcmp(name, "local"))
        r->executor = SL_EXEC_LOCAL;
    else if (!strcmp(name, "slurm"))
        r->executor = SL_EXEC_SLURM;
    else
        return sl__err(SL_E_USAGE, "--executor: expected local or slurm, got \"%s\"", name);
    return 0;
}

static int open_executor(struct run *r)
{
    r->host = (struct sl_exec_host){.ended = ended, .state = exec_state, .warn = exec_warn,
                                    .arg = r};
    if (r->o->dry_run) return 0; /* nothing starts */
    if (r->executor == SL_EXEC_LOCAL) return local_open(&r->host, &r->x);
    struct sl_slurm_cfg cfg = {.run = strrchr(r->run_dir, '/') + 1, .script_dir = r->run_dir,
                               .partition = r->p->slurm_partition, .dir = r->p->dir};
    return sl_exec_slurm_open(&r->host, &cfg, &r->x);
}

int sl_run(struct sl_pipeline *p, const struct sl_run_opts *o, int *exit_code)
{
    struct run r = {.p = p, .o = o, .sfd = -1, .started = mono()};
    sigset_t mask, old;
    bool masked = false;
    int rc;

    *exit_code = 1;
    r.jobs = calloc(p->nstages ? p->nstages : 1, sizeof(*r.jobs));
    if (!r.jobs) return -ENOMEM;
    for (size_t i = 0; i < p->nstages; i++) {
        r.jobs[i].s = &p->stages[i];
        r.jobs[i].status = -1;
    }
    if ((rc = choose_executor(&r)) < 0) goto out;
    set_limits(&r);
    if ((rc = select_stages(&r)) < 0 || (rc = check_resources(&r)) < 0 ||
        (rc = make_dirs(&r)) < 0)
        goto out;
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        r.trace_lib = sl_profile_trace_lib(exe);
    }
    if (!r.trace_lib && !o->dry_run)
        sl__warn("%s not found next to sluice: stages run without their I/O profile", SL_TRACE_LIB);
    char *lock_path = sl__asprintf("%s/sluice.lock", p->dir);
    if (!lock_path) {
        rc = -ENOMEM;
        goto out;
    }
    rc = sl_lock_open(lock_path, &r.lock);
    free(lock_path);
    if (rc < 0) goto out;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if ((rc = sl_hasher_open(r.state_dir, o->sl, (unsigned)SL_MAX(cpus, 1L), &r.hasher)) < 0)
        goto out;

    struct winsize ws;
    r.term_width = ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, &old);
    masked = true;
    r.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (r.sfd < 0) {
        rc = sl__err(-errno, "signalfd: %s", strerror(errno));
        goto out;
    }
    if ((rc = open_executor(&r)) < 0) goto out;
    if (o->sl && !o->dry_run && (rc = sl_prefetch_open(o->sl, &r.prefetch)) < 0)
        sl__warn("no prefetch of the next stages' sluice deps: %s", sl_errmsg(rc));
    struct json_object *e = obj();
    add_str(e, "pipeline", p->file);
    add_int(e, "stages", (int64_t)(p->nstages - r.counts[S_IDLE]));
    add_str(e, "run_dir", o->dry_run ? NULL : r.run_dir);
    add_str(e, "executor", r.executor == SL_EXEC_SLURM ? "slurm" : "local");
    json_object_object_add(e, "dry_run", json_object_new_boolean(o->dry_run));
    event(&r, "run", NULL, e);

    for (;;) {
        r.progress = false;
        timers(&r); /* retries whose time came are ready now */
        start_ready(&r);
        int64_t next = r.x ? r.x->ops->poll(r.x) : 0;
        if (r.progress) continue; /* what ended may have made more stages ready */
        int64_t retry = timers(&r);
        if (!r.counts[S_RUNNING] && !r.counts[S_RETRY_WAIT] &&
            (r.stopping || !r.counts[S_READY]))
            break;
        if (retry && (!next || retry < next)) next = retry;
        if (o->status) {
            if (mono() >= r.next_redraw) status_draw(&r);
            if (!next || r.next_redraw < next) next = r.next_redraw;
        }
        int timeout = -1;
        if (next) {
            int64_t wait = next - mono();
            timeout = wait <= 0 ? 0 : (int)SL_MIN(wait / 1000000 + 1, 60000);
        }
        struct pollfd pfd = {.fd = r.sfd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            struct signalfd_siginfo si;
            while (read(r.sfd, &si, sizeof(si)) == sizeof(si))
                if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) interrupt(&r, (int)si.ssi_signo);
        }
    }
    /* What never became ready (a failure upstream without --keep-going, an interrupt). */
    for (size_t i = 0; i < p->nstages; i++) {
        struct job *j = &r.jobs[i];
        if (j->state != S_WAITING && j->state != S_READY) continue;
        set_state(&r, j, S_NOT_RUN);
        free(j->why);
        j->why = sl__strdup(r.interrupted ? "stopped (interrupted)" : "the run stopped at a failure");
        struct json_object *ev = obj();
        add_str(ev, "reason", j->why);
        event(&r, "not_run", j, ev);
    }
    *exit_code = r.interrupted ? 130 : r.counts[S_FAILED] ? 1 : 0;
    write_report(&r, *exit_code);
    summary(&r, *exit_code);
    rc = 0;
out:
    sl_prefetch_close(r.prefetch);
    for (size_t i = 0; i < r.nkept; i++) free(r.kept[i]);
    free(r.kept);
    if (r.x) r.x->ops->close(r.x);
    if (r.sfd >= 0) close(r.sfd);
    if (masked) sigprocmask(SIG_SETMASK, &old, NULL);
    sl_hasher_close(r.hasher);
    sl_lock_free(r.lock);
    for (size_t i = 0; i < p->nstages; i++) {
        free(r.jobs[i].log);
        free(r.jobs[i].why);
        free(r.jobs[i].job_id);
        free(r.jobs[i].xstate);
        free(r.jobs[i].xreason);
        json_object_put(r.jobs[i].deps);
        json_object_put(r.jobs[i].profile);
    }
    free(r.jobs);
    free(r.state_dir);
    free(r.run_dir);
    free(r.log_dir);
    free(r.trace_lib);
    return rc;
}
