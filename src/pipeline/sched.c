/*
 * sched.c - running a pipeline on this machine: which stages must run, in what order, how
 * many at once, and what the user sees while they do.
 *
 * One thread runs the whole show as an event loop: it starts stages, and waits in poll() on a
 * signalfd for SIGCHLD (a stage ended), SIGINT and SIGTERM (stop), with a timeout for the next
 * deadline (a stage's timeout, the end of a grace period, a retry's backoff, a redraw of the
 * live status). Stages are processes: /bin/sh -c CMD in the pipeline's folder, each in its
 * own process group, so that a timeout or a Ctrl-C stops everything a stage started, and the
 * terminal's Ctrl-C reaches sluice alone (it then stops the stages itself, and says what ran).
 *
 * Whether a stage runs is decided when it becomes ready (its upstream finished), not at the
 * start: its deps are hashed then, so a stage whose upstream ran again but made the same bytes
 * is not run (early cut-off, which make's timestamps cannot give). Its key is XXH3-128 over
 * its cmd, params, declared env, the hash of every dep and the list of its outs; it is skipped
 * when sluice.lock holds that key and every out still has the hash recorded for it.
 *
 * A stage's life:
 *
 *   waiting --upstream finished--> ready --unchanged--> cached
 *                                    |
 *                                    +--fits the free cpus/mem/gpus--> running --exit 0--> done
 *                                                                       ^   |
 *                                               retry_wait --backoff----+   +--failed, timed out:
 *                                                   ^                        retries left? --+
 *                                                   +----------------------------yes---------+
 *                                                                               no: failed
 *   failed: stages downstream are "not run"; without --keep-going nothing new starts (what
 *   runs finishes). Ctrl-C: every running stage's group gets SIGTERM, then SIGKILL after
 *   GRACE_NS; a second Ctrl-C sends SIGKILL at once.
 *
 * Each attempt's stdout and stderr go to its own log, .sluice/runs/RUN/logs/STAGE.N.log,
 * kept after the run (the path is printed with a failure, and the last lines of it).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
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
#include "pipeline/run.h"

extern char **environ;

#define GRACE_NS (5LL * 1000000000LL)
#define REDRAW_NS (250LL * 1000000LL)
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
    pid_t pid;
    int64_t started, deadline, kill_at, retry_at; /* monotonic ns */
    int64_t ran_ns;      /* all attempts */
    bool timed_out;
    int status;          /* the last attempt's wait status */
    uint64_t gpus;       /* bit i: GPU i is this stage's while it runs */
    char *log;
    char *why;           /* why it runs (or would), or why it did not */
    char key[SL_HASH_HEX];
    struct json_object *deps; /* what its deps held when it was decided */
};

struct run {
    struct sl_pipeline *p;
    const struct sl_run_opts *o;
    struct job *jobs;
    struct sl_hasher *hasher;
    struct sl_lock *lock;
    char *state_dir, *run_dir, *log_dir;
    struct sl_resources limit, used;
    uint64_t gpus_free;
    int sfd;
    bool stopping, interrupted;
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

static void set_state(struct run *r, struct job *j, enum state s)
{
    r->counts[j->state]--;
    r->counts[s]++;
    j->state = s;
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

/* One line: the running stages with their time, then the counts; cut at the terminal's width. */
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
        sl__buf_printf(&b, "%s%s %s", shown++ ? ", " : "running: ", j->s->name, t);
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

/* The stage's environment: ours, its env: over it, and what sluice tells it. Built before
 * fork(): the child may only call what is async-signal-safe. */
static char **stage_env(struct run *r, struct job *j)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **env = calloc(n + j->s->nenv + 8, sizeof(*env));
    if (!env) return NULL;
    size_t k = 0;
    struct sl_buf gpus = {0};
    char *extra[8] = {0};
    size_t ne = 0;
    extra[ne++] = sl__asprintf("SLUICE_STAGE=%s", j->s->name);
    extra[ne++] = sl__asprintf("SLUICE_ATTEMPT=%u", j->attempt);
    extra[ne++] = sl__asprintf("SLUICE_CPUS=%u", j->s->res.cpus);
    if (r->o->config) extra[ne++] = sl__asprintf("SLUICE_CONFIG=%s", r->o->config);
    if (r->limit.gpus) {
        /* Which GPUs are its: none for a stage that asked for none. */
        for (unsigned g = 0; g < MAX_GPUS; g++)
            if (j->gpus & (1ULL << g)) sl__buf_printf(&gpus, "%s%u", gpus.len ? "," : "", g);
        extra[ne++] = sl__asprintf("CUDA_VISIBLE_DEVICES=%s", gpus.data ? gpus.data : "");
    }
    sl__buf_free(&gpus);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool over = false;
        for (size_t e = 0; e < j->s->nenv && !over; e++)
            over = strlen(j->s->env[e].key) == len && !strncmp(environ[i], j->s->env[e].key, len);
        for (size_t e = 0; e < ne && !over; e++)
            over = extra[e] && !strncmp(environ[i], extra[e], len) && extra[e][len] == '=';
        if (!over) env[k++] = sl__strdup(environ[i]);
    }
    for (size_t e = 0; e < j->s->nenv; e++)
        env[k++] = sl__asprintf("%s=%s", j->s->env[e].key, j->s->env[e].value);
    for (size_t e = 0; e < ne; e++) env[k++] = extra[e];
    for (size_t i = 0; i < k; i++)
        if (!env[i]) {
            for (size_t x = 0; x < k; x++) free(env[x]);
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
    unsigned free_gpus = (unsigned)__builtin_popcountll(r->gpus_free);
    return r->used.cpus + s->res.cpus <= r->limit.cpus &&
           (!r->limit.mem || !s->res.mem || r->used.mem + s->res.mem <= r->limit.mem) &&
           s->res.gpus <= free_gpus;
}

static int launch(struct run *r, struct job *j)
{
    struct sl_stage *s = j->s;
    int rc;

    j->attempt++;
    free(j->log);
    j->log = sl__asprintf("%s/%s.%u.log", r->log_dir, s->name, j->attempt);
    if (!j->log) return -ENOMEM;
    if ((rc = prepare_outs(r, j)) < 0) return rc;
    j->gpus = 0;
    for (unsigned g = 0, want = s->res.gpus; g < MAX_GPUS && want; g++)
        if (r->gpus_free & (1ULL << g)) {
            j->gpus |= 1ULL << g;
            want--;
        }
    char **env = stage_env(r, j);
    if (!env) return -ENOMEM;
    int logfd = open(j->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        rc = sl__err(-errno, "%s: cannot make the stage's log: %s", j->log, strerror(errno));
        free_env(env);
        return rc;
    }
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);

    pid_t pid = fork();
    if (pid == 0) {
        /* The child: async-signal-safe calls only, up to exec. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (chdir(r->p->dir) < 0) _exit(126);
        if (nullfd >= 0) dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        char *argv[] = {"sh", "-c", s->cmd, NULL};
        execve("/bin/sh", argv, env);
        static const char msg[] = "sluice: cannot run /bin/sh\n";
        if (write(2, msg, sizeof(msg) - 1) < 0) _exit(127);
        _exit(127);
    }
    int err = errno;
    close(logfd);
    if (nullfd >= 0) close(nullfd);
    free_env(env);
    if (pid < 0) return sl__err(-err, "stage \"%s\": cannot start it: %s", s->name, strerror(err));
    setpgid(pid, pid); /* here too: a kill must find the group even before the child ran */

    j->pid = pid;
    j->started = mono();
    j->deadline = s->timeout_ns ? j->started + s->timeout_ns : 0;
    j->kill_at = 0;
    j->timed_out = false;
    r->used.cpus += s->res.cpus;
    r->used.mem += s->res.mem;
    r->gpus_free &= ~j->gpus;
    set_state(r, j, S_RUNNING);

    char *msg = j->attempt > 1 ? sl__asprintf(" (attempt %u of %u)", j->attempt, s->retries + 1)
                               : sl__asprintf(": %s", j->why ? j->why : "");
    say(r, "  start   %s%s", s->name, msg ? msg : "");
    free(msg);
    struct json_object *e = obj();
    add_int(e, "attempt", j->attempt);
    add_str(e, "log", j->log);
    add_str(e, "reason", j->why);
    event(r, "start", j, e);
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

/* A stage finished (done, cached, would run): the stages below it may be ready. */
static void finished(struct run *r, struct job *j, bool ran)
{
    for (size_t d = 0; d < j->s->ndown; d++) {
        struct job *k = &r->jobs[j->s->down[d]];
        if (k->state != S_WAITING) continue;
        k->upstream_ran |= ran;
        if (--k->ups_left == 0) set_state(r, k, S_READY);
    }
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
    if (WIFEXITED(j->status)) add_int(e, "exit", WEXITSTATUS(j->status));
    if (WIFSIGNALED(j->status)) add_int(e, "signal", WTERMSIG(j->status));
    json_object_object_add(e, "timed_out", json_object_new_boolean(j->timed_out));
    add_num(e, "seconds", (double)j->ran_ns / 1e9);
    event(r, "failed", j, e);
    char *why = sl__asprintf("upstream stage \"%s\" failed", j->s->name);
    not_run_below(r, j, why ? why : "an upstream stage failed");
    free(why);
    if (!r->o->keep_going) r->stopping = true;
}

static void ended(struct run *r, struct job *j, int status)
{
    struct sl_stage *s = j->s;
    int64_t now = mono();
    j->pid = 0;
    j->status = status;
    j->ran_ns += now - j->started;
    r->used.cpus -= s->res.cpus;
    r->used.mem -= s->res.mem;
    r->gpus_free |= j->gpus;
    j->gpus = 0;

    char what[160];
    if (j->timed_out) {
        char t[32];
        fmt_secs(s->timeout_ns, t, sizeof(t));
        snprintf(what, sizeof(what), "timed out after %s", t);
    } else if (WIFEXITED(status)) {
        snprintf(what, sizeof(what), "exit %d", WEXITSTATUS(status));
    } else {
        snprintf(what, sizeof(what), "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !j->timed_out) {
        int rc = record(r, j);
        if (rc < 0) {
            fail(r, j, sl_errmsg(rc));
            return;
        }
        char t[32];
        fmt_secs(j->ran_ns, t, sizeof(t));
        set_state(r, j, S_DONE);
        say(r, "  done    %s in %s", s->name, t);
        struct json_object *e = obj();
        add_int(e, "attempts", j->attempt);
        add_num(e, "seconds", (double)j->ran_ns / 1e9);
        add_str(e, "log", j->log);
        event(r, "done", j, e);
        finished(r, j, true);
        return;
    }
    if (r->interrupted) {
        set_state(r, j, S_NOT_RUN);
        free(j->why);
        j->why = sl__strdup("stopped (interrupted)");
        say(r, "  stopped %s", s->name);
        struct json_object *e = obj();
        add_str(e, "reason", "interrupted");
        add_str(e, "log", j->log);
        event(r, "stopped", j, e);
        return;
    }
    if (j->attempt <= s->retries && !r->stopping) {
        int64_t delay = s->retry_delay_ns << SL_MIN(j->attempt - 1, 20U);
        char t[32];
        fmt_secs(delay, t, sizeof(t));
        j->retry_at = now + delay;
        set_state(r, j, S_RETRY_WAIT);
        say(r, "  retry   %s: %s (attempt %u of %u; log: %s); again in %s", s->name, what,
            j->attempt, s->retries + 1, shown_path(j->log), t);
        struct json_object *e = obj();
        add_int(e, "attempt", j->attempt);
        add_str(e, "reason", what);
        add_str(e, "log", j->log);
        add_num(e, "delay_s", (double)delay / 1e9);
        event(r, "retry", j, e);
        return;
    }
    fail(r, j, what);
}

static struct job *job_of(struct run *r, pid_t pid)
{
    for (size_t i = 0; i < r->p->nstages; i++)
        if (r->jobs[i].state == S_RUNNING && r->jobs[i].pid == pid) return &r->jobs[i];
    return NULL;
}

static void reap(struct run *r)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct job *j = job_of(r, pid);
        if (j) ended(r, j, status);
    }
}

static void signal_running(struct run *r, int sig)
{
    for (size_t i = 0; i < r->p->nstages; i++)
        if (r->jobs[i].state == S_RUNNING) kill(-r->jobs[i].pid, sig);
}

static void interrupt(struct run *r, int sig)
{
    if (r->interrupted) {
        signal_running(r, SIGKILL); /* a second Ctrl-C: no grace */
        return;
    }
    r->interrupted = r->stopping = true;
    say(r, "sluice: run: %s: stopping the running stages (Ctrl-C again to kill them now)",
        strsignal(sig));
    signal_running(r, SIGTERM);
    int64_t at = mono() + GRACE_NS;
    for (size_t i = 0; i < r->p->nstages; i++)
        if (r->jobs[i].state == S_RUNNING) r->jobs[i].kill_at = at;
}

/* Timeouts, grace periods and retries whose time came; returns the next deadline (0: none). */
static int64_t timers(struct run *r)
{
    int64_t now = mono(), next = 0;
#define NEXT(t) (next = !next || (t) < next ? (t) : next)
    for (size_t i = 0; i < r->p->nstages; i++) {
        struct job *j = &r->jobs[i];
        if (j->state == S_RUNNING) {
            if (j->deadline && !j->timed_out && now >= j->deadline) {
                j->timed_out = true;
                kill(-j->pid, SIGTERM);
                j->kill_at = now + GRACE_NS;
            }
            if (j->kill_at && now >= j->kill_at) {
                kill(-j->pid, SIGKILL);
                j->kill_at = 0;
            }
            if (j->deadline && !j->timed_out) NEXT(j->deadline);
            if (j->kill_at) NEXT(j->kill_at);
        } else if (j->state == S_RETRY_WAIT) {
            if (r->stopping) {
                fail(r, j, "stopped before its retry");
            } else if (now >= j->retry_at) {
                set_state(r, j, S_READY);
            } else {
                NEXT(j->retry_at);
            }
        }
    }
#undef NEXT
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

static int check_resources(struct run *r)
{
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

int sl_run(struct sl_pipeline *p, const struct sl_run_opts *o, int *exit_code)
{
    struct run r = {.p = p, .o = o, .sfd = -1, .started = mono()};
    sigset_t mask, old;
    int rc;

    *exit_code = 1;
    r.jobs = calloc(p->nstages ? p->nstages : 1, sizeof(*r.jobs));
    if (!r.jobs) return -ENOMEM;
    for (size_t i = 0; i < p->nstages; i++) r.jobs[i].s = &p->stages[i];
    set_limits(&r);
    if ((rc = select_stages(&r)) < 0 || (rc = check_resources(&r)) < 0 ||
        (rc = make_dirs(&r)) < 0)
        goto out;
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
    r.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (r.sfd < 0) {
        rc = sl__err(-errno, "signalfd: %s", strerror(errno));
        sigprocmask(SIG_SETMASK, &old, NULL);
        goto out;
    }
    struct json_object *e = obj();
    add_str(e, "pipeline", p->file);
    add_int(e, "stages", (int64_t)(p->nstages - r.counts[S_IDLE]));
    add_str(e, "run_dir", o->dry_run ? NULL : r.run_dir);
    json_object_object_add(e, "dry_run", json_object_new_boolean(o->dry_run));
    event(&r, "run", NULL, e);

    for (;;) {
        timers(&r); /* retries whose time came are ready now */
        start_ready(&r);
        int64_t next = timers(&r);
        if (!r.counts[S_RUNNING] && !r.counts[S_RETRY_WAIT] &&
            (r.stopping || !r.counts[S_READY]))
            break;
        if (o->status) {
            if (mono() >= r.next_redraw) status_draw(&r);
            if (!next || r.next_redraw < next) next = r.next_redraw;
        }
        /* A second's poll at most while stages run: a SIGCHLD that went to a thread with
         * the signal unblocked (one the caller started early) is then late, never lost. */
        int timeout = r.counts[S_RUNNING] ? 1000 : -1;
        if (next) {
            int64_t wait = next - mono();
            timeout = wait <= 0 ? 0 : (int)SL_MIN(wait / 1000000 + 1, timeout < 0 ? 60000 : timeout);
        }
        struct pollfd pfd = {.fd = r.sfd, .events = POLLIN};
        if (poll(&pfd, 1, timeout) > 0) {
            struct signalfd_siginfo si;
            while (read(r.sfd, &si, sizeof(si)) == sizeof(si))
                if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) interrupt(&r, (int)si.ssi_signo);
        }
        reap(&r);
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
    summary(&r, *exit_code);
    sigprocmask(SIG_SETMASK, &old, NULL);
    rc = 0;
out:
    if (r.sfd >= 0) close(r.sfd);
    sl_hasher_close(r.hasher);
    sl_lock_free(r.lock);
    for (size_t i = 0; i < p->nstages; i++) {
        free(r.jobs[i].log);
        free(r.jobs[i].why);
        json_object_put(r.jobs[i].deps);
    }
    free(r.jobs);
    free(r.state_dir);
    free(r.run_dir);
    free(r.log_dir);
    return rc;
}
