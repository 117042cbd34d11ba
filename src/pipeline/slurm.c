/*
 * slurm.c - the Slurm executor: each attempt of a stage is one batch job, submitted with
 * sbatch when the scheduler (sched.c) has decided that it must run, followed with squeue, and
 * cancelled with scancel on Ctrl-C.
 *
 * Submitting: the attempt's cmd goes into a batch script of its own,
 * .sluice/runs/RUN/slurm/STAGE.N.sh, that exports the stage's env: and sluice's SLUICE_*
 * (each value in single quotes) and ends in `exec /bin/sh -c 'CMD' sh`: the cmd runs under the
 * same shell, with the same arguments, as a local stage's, and no quoting layer but one is
 * built by hand. sbatch gets everything else as separate argv elements (posix_spawnp, never a
 * shell): --job-name=sluice-RUN-STAGE, --chdir (the pipeline's folder), --output (the
 * attempt's log, a '%' doubled: sbatch expands %j and the like there), --cpus-per-task,
 * --mem in MiB rounded up, --gpus, --time in minutes rounded up from the stage's timeout
 * (Slurm counts minutes), --partition, --export=ALL (the job sees sluice's environment, as a
 * local stage does), and --no-requeue: a job that fails fails, and the stage's retries decide
 * what happens next, with a new job and a new log.
 *
 * Following: one `squeue -h -t all -j ID,ID,... -O JobID,State,Reason,exit_code` per poll
 * covers every job of the run. `-t all` keeps a finished job in the answer, with its final
 * state and its wait status, for as long as slurmctld keeps its record (MinJobAge, 300 s by
 * default), so no accounting database is needed; a job missing from GONE_POLLS answers in a
 * row is asked of sacct, which works where accounting (slurmdbd) is set up. The interval starts
 * at POLL_MIN_NS after a submission and doubles, up to POLL_MAX_NS, while nothing changes;
 * any change (a state, an end) brings it back to the start. A squeue that fails is said once
 * and asked again: it fails no stage by itself.
 *
 * Ending: COMPLETED with exit 0 is the one good end. Every other final state (FAILED,
 * TIMEOUT, CANCELLED, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE) fails the
 * attempt with Slurm's state, its reason and the exit status in the message; TIMEOUT counts as
 * the stage's timeout. Slurm does the killing for a timeout: sluice keeps no timer of its own.
 *
 * Cancelling: the first Ctrl-C is one scancel of every job of the run that has not ended;
 * their ends (CANCELLED) then come through squeue like any other, polled at the fastest
 * interval, for CANCEL_WAIT_NS at most. A second Ctrl-C stops the waiting: what has not been
 * seen to end is reported cancelled at once.
 *
 * Invariant: jobs[] holds exactly the attempts submitted and not yet reported ended; each is
 * reported once, and removed before the scheduler hears of it. Single-threaded (the
 * scheduler's thread); the Slurm commands run as children in a process group of their own, so
 * the terminal's Ctrl-C reaches sluice alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "pipeline/run.h"

extern char **environ;

#define NS_PER_MS 1000000LL
#define POLL_MIN_NS (500 * NS_PER_MS)
#define POLL_MAX_NS (10000 * NS_PER_MS)
#define CANCEL_WAIT_NS (60000 * NS_PER_MS)
#define TOOL_TIMEOUT_MS 60000
#define GONE_POLLS 2
#define STATE_LEN 32

struct sjob {
    size_t id;             /* the scheduler's */
    char *job;             /* Slurm's job id */
    char state[STATE_LEN]; /* as squeue last said; "" before the first answer */
    char reason[STATE_LEN]; /* its reason then ("Resources", "PartitionConfig"), or "" */
    unsigned time_min;     /* --time, 0: none */
    uint64_t mem;          /* bytes asked for with --mem, 0: none */
    unsigned missing;      /* answers in a row that did not list it */
};

struct slurm {
    struct sl_exec base;
    const struct sl_exec_host *host;
    char *run, *script_dir, *partition;
    struct sjob *jobs; /* submitted, not reported ended */
    size_t n, cap;
    int64_t interval, next_poll;  /* monotonic ns; next_poll 0: at once */
    bool cancelled;               /* scancel was sent */
    int64_t give_up_at;           /* after it, the end of what was cancelled is not awaited */
    bool stop_waiting;            /* a second Ctrl-C */
    bool squeue_failing;          /* said once: said again only after it worked */
};

static int64_t mono(void)
{
    return (int64_t)sl__mono_ns();
}

/* ---- running Slurm's commands ------------------------------------------------------------ */

/* Runs argv (argv[0] found on PATH) with stdin from /dev/null, every signal unblocked and in a
 * process group of its own; collects its stdout into out and its stderr into err (NULL: thrown
 * away); waits up to TOOL_TIMEOUT_MS, then kills it. Returns its wait status (>= 0), or -ENOENT
 * when it is not on PATH, -ETIMEDOUT when it was killed for taking too long, another -errno
 * when it could not be started or its output not kept. */
static int tool(char *const argv[], struct sl_buf *out, struct sl_buf *err)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    bool fa_init = false, at_init = false;
    pid_t pid = -1;
    int rc;

    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    if ((rc = -posix_spawn_file_actions_init(&fa))) goto out;
    fa_init = true;
    if ((rc = -posix_spawnattr_init(&at))) goto out;
    at_init = true;
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGCHLD);
    sigaddset(&dfl, SIGPIPE);
    if ((rc = -posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (rc = -posix_spawn_file_actions_adddup2(&fa, po[1], 1)) ||
        (rc = -posix_spawn_file_actions_adddup2(&fa, pe[1], 2)) ||
        (rc = -posix_spawnattr_setsigmask(&at, &none)) ||
        (rc = -posix_spawnattr_setsigdefault(&at, &dfl)) ||
        (rc = -posix_spawnattr_setpgroup(&at, 0)) ||
        (rc = -posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                 POSIX_SPAWN_SETPGROUP)))
        goto out;
    if ((rc = -posix_spawnp(&pid, argv[0], &fa, &at, argv, environ))) {
        pid = -1;
        goto out;
    }
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;

    struct pollfd pfd[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    struct sl_buf *dst[2] = {out, err};
    int64_t deadline = mono() + TOOL_TIMEOUT_MS * NS_PER_MS;
    int failed = 0; /* -ETIMEDOUT, or why its output could not be read */
    while (!failed && (pfd[0].fd >= 0 || pfd[1].fd >= 0)) {
        int64_t left = (deadline - mono()) / NS_PER_MS;
        if (left <= 0) {
            failed = -ETIMEDOUT;
            break;
        }
        int n = poll(pfd, 2, (int)left);
        if (n < 0 && errno != EINTR) failed = -errno;
        for (int i = 0; i < 2 && n > 0; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents) continue;
            char buf[4096];
            ssize_t got = read(pfd[i].fd, buf, sizeof(buf));
            if (got > 0) {
                if (dst[i] && sl__buf_append(dst[i], buf, (size_t)got) < 0) failed = -ENOMEM;
            } else if (got == 0 || errno != EINTR) {
                pfd[i].fd = -1; /* EOF: closed below */
            }
        }
    }
    if (failed) kill(-pid, SIGKILL); /* a command we cannot hear out is not left running */
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    rc = failed ? failed : status;
out:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0) close(po[i]);
        if (pe[i] >= 0) close(pe[i]);
    }
    if (fa_init) posix_spawn_file_actions_destroy(&fa);
    if (at_init) posix_spawnattr_destroy(&at);
    return rc;
}

/* Its stderr's last line, trimmed: what a Slurm command says when it fails. */
static const char *last_line(struct sl_buf *b)
{
    if (!b->data) return "";
    while (b->len && (b->data[b->len - 1] == '\n' || b->data[b->len - 1] == ' '))
        b->data[--b->len] = '\0';
    char *nl = strrchr(b->data, '\n');
    return nl ? nl + 1 : b->data;
}

/* "sbatch: exit 1: sbatch: error: invalid partition specified: x", for an error's detail. */
static char *tool_failure(const char *name, int rc, struct sl_buf *err)
{
    if (rc == -ETIMEDOUT)
        return sl__asprintf("%s did not answer in %ds (is slurmctld up?)", name,
                            TOOL_TIMEOUT_MS / 1000);
    if (rc < 0) return sl__asprintf("%s: cannot run it: %s", name, strerror(-rc));
    const char *line = last_line(err);
    if (WIFEXITED(rc))
        return sl__asprintf("%s: exit %d%s%s", name, WEXITSTATUS(rc), *line ? ": " : "", line);
    return sl__asprintf("%s: killed by signal %d%s%s", name, WTERMSIG(rc), *line ? ": " : "", line);
}

static bool on_path(const char *name)
{
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        size_t len = strcspn(path, ":");
        char *full = sl__asprintf("%.*s/%s", (int)len, len ? path : ".", name);
        bool there = full && access(full, X_OK) == 0;
        free(full);
        if (there) return true;
        path += len + (path[len] == ':');
    }
    return false;
}

/* ---- submitting -------------------------------------------------------------------------- */

/* s in single quotes for sh: every ' becomes '\'' (the one quoting layer built by hand). */
static void sh_quote(struct sl_buf *b, const char *s)
{
    sl__buf_append(b, "'", 1);
    for (const char *q; (q = strchr(s, '\'')); s = q + 1) {
        sl__buf_append(b, s, (size_t)(q - s));
        sl__buf_append(b, "'\\''", 4);
    }
    sl__buf_append(b, s, strlen(s));
    sl__buf_append(b, "'", 1);
}

static int write_script(const char *path, const char *run, const struct sl_attempt *a)
{
    struct sl_buf b = {0};
    int rc = 0;
    sl__buf_printf(&b, "#!/bin/sh\n# sluice run %s: stage %s, attempt %u, submitted with sbatch "
                   "(the cmd is the pipeline file's)\n", run, a->s->name, a->attempt);
    for (char *const *e = a->env; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        sl__buf_printf(&b, "export %.*s=", (int)(eq - *e), *e);
        sh_quote(&b, eq + 1);
        sl__buf_append(&b, "\n", 1);
    }
    sl__buf_append(&b, "exec /bin/sh -c ", 16);
    sh_quote(&b, a->s->cmd);
    if (sl__buf_append(&b, " sh\n", 4) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    FILE *f = fopen(path, "w");
    int err = f ? 0 : errno;
    if (f && fwrite(b.data, 1, b.len, f) != b.len) err = errno ? errno : EIO; /* ENOSPC, EIO */
    if (f && fclose(f) != 0 && !err) err = errno;
    if (err) {
        rc = sl__err(-err, "%s: cannot write the stage's batch script: %s", path, strerror(err));
        goto out;
    }
out:
    sl__buf_free(&b);
    return rc;
}

/* A path for --output: sbatch expands %j, %x... there, and "%%" is a '%'. */
static char *output_arg(const char *log)
{
    struct sl_buf b = {0};
    sl__buf_printf(&b, "--output=");
    for (const char *c = log; *c; c++) sl__buf_append(&b, *c == '%' ? "%%" : c, *c == '%' ? 2 : 1);
    return b.data; /* NULL on ENOMEM */
}

static int slurm_start(struct sl_exec *x, const struct sl_attempt *a, char **job)
{
    struct slurm *s = (struct slurm *)x;
    const struct sl_stage *st = a->s;
    char *script = NULL, *args[16] = {0}, *id = NULL;
    struct sl_buf out = {0}, err = {0};
    size_t na = 0;
    int rc;

    *job = NULL;
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        struct sjob *j = realloc(s->jobs, cap * sizeof(*j));
        if (!j) return -ENOMEM;
        s->jobs = j;
        s->cap = cap;
    }
    if (!(script = sl__asprintf("%s/%s.%u.sh", s->script_dir, st->name, a->attempt))) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = write_script(script, s->run, a)) < 0) goto out;

    unsigned time_min = 0;
    if (st->timeout_ns > 0) {
        int64_t min = (st->timeout_ns + 60LL * 1000000000LL - 1) / (60LL * 1000000000LL);
        time_min = (unsigned)SL_MIN(min, 0x7fffffffLL);
    }
    uint64_t mem_mib = (st->res.mem + (1ULL << 20) - 1) >> 20;
    args[na++] = sl__strdup("sbatch");
    args[na++] = sl__strdup("--parsable");
    args[na++] = sl__asprintf("--job-name=sluice-%s-%s", s->run, st->name);
    args[na++] = sl__asprintf("--chdir=%s", a->dir);
    args[na++] = output_arg(a->log);
    args[na++] = sl__strdup("--open-mode=truncate");
    args[na++] = sl__asprintf("--cpus-per-task=%u", st->res.cpus ? st->res.cpus : 1);
    if (st->res.mem) args[na++] = sl__asprintf("--mem=%lluM", (unsigned long long)mem_mib);
    if (st->res.gpus) args[na++] = sl__asprintf("--gpus=%u", st->res.gpus);
    if (time_min) args[na++] = sl__asprintf("--time=%u", time_min);
    if (s->partition) args[na++] = sl__asprintf("--partition=%s", s->partition);
    args[na++] = sl__strdup("--export=ALL");
    args[na++] = sl__strdup("--no-requeue");
    args[na++] = sl__strdup(script);
    for (size_t i = 0; i < na; i++)
        if (!args[i]) {
            rc = -ENOMEM;
            goto out;
        }

    rc = tool(args, &out, &err);
    if (rc != 0) {
        char *why = tool_failure("sbatch", rc, &err);
        /* A refusal is sbatch's exit with its reason; an sbatch that did not answer may still
         * have submitted the job, which then runs unwatched (its name says whose it is). */
        rc = sl__err(rc < 0 ? rc : -EIO, "stage \"%s\": %s: %s", st->name,
                     rc > 0 ? "Slurm refused the job" : "cannot submit it",
                     why ? why : "sbatch failed");
        free(why);
        goto out;
    }
    /* --parsable: "ID" or "ID;CLUSTER". */
    const char *text = out.data ? out.data : "";
    size_t len = strcspn(text, ";\n");
    bool digits = len > 0;
    for (size_t i = 0; i < len; i++) digits &= (text[i] >= '0' && text[i] <= '9') || text[i] == '_';
    if (!digits) {
        rc = sl__err(-EIO, "stage \"%s\": sbatch did not say the job's id (it said \"%.80s\")",
                     st->name, text);
        goto out;
    }
    id = sl__asprintf("%.*s", (int)len, text);
    if (!id || !(*job = sl__strdup(id))) {
        /* Submitted, and it cannot be followed: it must not run unwatched. */
        char *cancel[] = {"scancel", id, NULL};
        if (id) tool(cancel, NULL, NULL);
        rc = -ENOMEM;
        goto out;
    }
    s->jobs[s->n++] = (struct sjob){.id = a->id, .job = id, .time_min = time_min,
                                    .mem = st->res.mem};
    id = NULL;
    sl__debug("slurm: stage %s attempt %u is job %s", st->name, a->attempt, *job);
    /* Soon after a submission, and at the fastest pace again. */
    int64_t soon = mono() + POLL_MIN_NS;
    s->interval = POLL_MIN_NS;
    if (!s->next_poll || soon < s->next_poll) s->next_poll = soon;
    rc = 0;
out:
    for (size_t i = 0; i < na; i++) free(args[i]);
    free(script);
    free(id);
    sl__buf_free(&out);
    sl__buf_free(&err);
    return rc;
}

/* ---- following ----------------------------------------------------------------------------- */

static bool final_state(const char *state)
{
    static const char *const ends[] = {
        "COMPLETED", "FAILED",    "TIMEOUT",  "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL",
        "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED",   "SPECIAL_EXIT",
    };
    for (size_t i = 0; i < SL_ARRAY_LEN(ends); i++)
        if (!strcmp(state, ends[i])) return true;
    return false;
}

/* Reports job k ended (state: Slurm's; reason: NULL or "None" for none; status: the batch
 * script's wait status, -1 when not known), and forgets it. */
static void end_job(struct slurm *s, size_t k, const char *state, const char *reason, int status,
                    const char *note)
{
    struct sjob j = s->jobs[k];
    s->jobs[k] = s->jobs[--s->n];

    struct sl_buf b = {0};
    bool ok = !strcmp(state, "COMPLETED") && status == 0;
    bool timed_out = !strcmp(state, "TIMEOUT");
    sl__buf_printf(&b, "Slurm job %s %s", j.job, state);
    if (reason && *reason && strcmp(reason, "None")) sl__buf_printf(&b, " (%s)", reason);
    if (timed_out && j.time_min)
        sl__buf_printf(&b, ": its time limit of %u minute%s (--time, from the stage's timeout) "
                       "ran out", j.time_min, j.time_min == 1 ? "" : "s");
    else if (!strcmp(state, "OUT_OF_MEMORY") && j.mem) {
        char sz[32];
        sl__buf_printf(&b, ": it used more than its %s (--mem)",
                       sl_format_size(j.mem, sz, sizeof(sz)));
    } else if (!strcmp(state, "NODE_FAIL"))
        sl__buf_printf(&b, ": its node failed");
    else if (status > 0 && WIFEXITED(status))
        sl__buf_printf(&b, ", exit %d", WEXITSTATUS(status));
    else if (status > 0 && WIFSIGNALED(status))
        sl__buf_printf(&b, ", killed by signal %d (%s)", WTERMSIG(status),
                       strsignal(WTERMSIG(status)));
    if (note) sl__buf_printf(&b, "%s", note);

    struct sl_attempt_end e = {.id = j.id, .ok = ok, .timed_out = timed_out, .status = status,
                               .what = b.data ? b.data : state, .state = state};
    s->host->ended(s->host->arg, &e);
    sl__buf_free(&b);
    free(j.job);
}

/* A pending job's reason that waiting does not cure: the job asks for more than its partition,
 * QOS or account allows (Slurm takes such a job when EnforcePartLimits is off, and leaves it
 * pending until someone changes the limits or the job), or for what no node has. */
static bool never_starts(const char *reason)
{
    static const char *const never[] = {"BadConstraints", "PartitionNodeLimit",
                                        "PartitionTimeLimit", "InvalidAccount", "InvalidQOS"};
    for (size_t i = 0; i < sizeof(never) / sizeof(*never); i++)
        if (!strcmp(reason, never[i])) return true;
    return strstr(reason, "PerJobLimit") != NULL; /* QOSMaxCpuPerJobLimit, AssocMax... */
}

static long find_job(struct slurm *s, const char *id, size_t len)
{
    for (size_t k = 0; k < s->n; k++)
        if (strlen(s->jobs[k].job) == len && !strncmp(s->jobs[k].job, id, len)) return (long)k;
    return -1;
}

/* Splits line at '|' into at most max fields (in place); returns how many. */
static size_t fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    while (n < max) {
        f[n++] = line;
        char *bar = strchr(line, '|');
        if (!bar) break;
        *bar = '\0';
        line = bar + 1;
    }
    return n;
}

/* Jobs that squeue no longer lists: sacct's word on them (where accounting is set up), else a
 * failure that says their end is not known. Returns whether any was reported. */
static bool ask_sacct(struct slurm *s)
{
    struct sl_buf ids = {0}, out = {0}, err = {0};
    bool any = false;
    for (size_t k = 0; k < s->n; k++)
        if (s->jobs[k].missing >= GONE_POLLS)
            sl__buf_printf(&ids, "%s%s", ids.len ? "," : "", s->jobs[k].job);
    if (!ids.data) return false;
    char *argv[] = {"sacct", "-n", "-P", "-X", "-j", ids.data,
                    "-o", "JobID,State,ExitCode,Reason", NULL};
    int rc = tool(argv, &out, &err);
    for (char *line = rc == 0 ? out.data : NULL, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *f[4];
        if (fields(line, f, 4) < 4) continue;
        long k = find_job(s, f[0], strlen(f[0]));
        if (k < 0 || s->jobs[k].missing < GONE_POLLS) continue;
        f[1][strcspn(f[1], " ")] = '\0'; /* "CANCELLED by 0" */
        if (!final_state(f[1])) continue;
        int code = 0, sig = 0;
        sscanf(f[2], "%d:%d", &code, &sig);
        end_job(s, (size_t)k, f[1], f[3], sig ? sig : (code & 0xff) << 8, NULL);
        any = true;
    }
    char *why = rc == 0 ? NULL : tool_failure("sacct", rc, &err);
    for (size_t k = 0; k < s->n;) {
        if (s->jobs[k].missing < GONE_POLLS) {
            k++;
            continue;
        }
        char *note = sl__asprintf(": its end is not known (squeue no longer lists it; %s)",
                                  why ? why : "sacct has no record of it");
        end_job(s, k, "UNKNOWN", NULL, -1, note);
        free(note);
        any = true;
    }
    free(why);
    sl__buf_free(&ids);
    sl__buf_free(&out);
    sl__buf_free(&err);
    return any;
}

/* One squeue for every job of the run: their states, and the ends of those that ended.
 * Returns whether anything changed. */
static bool query(struct slurm *s)
{
    struct sl_buf ids = {0}, out = {0}, err = {0};
    bool changed = false;
    for (size_t k = 0; k < s->n; k++) sl__buf_printf(&ids, "%s%s", k ? "," : "", s->jobs[k].job);
    if (!ids.data) return false;
    char *argv[] = {"squeue", "-h", "-t", "all", "-j", ids.data,
                    "-O", "JobID:|,State:|,Reason:|,exit_code:|", NULL};
    int rc = tool(argv, &out, &err);
    /* One id it no longer knows is an error to squeue ("Invalid job id specified"); several
     * are an empty answer. Both mean: not listed. */
    bool unknown = rc > 0 && err.data && strstr(err.data, "Invalid job id");
    if (rc != 0 && !unknown) {
        if (!s->squeue_failing) {
            char *why = tool_failure("squeue", rc, &err);
            char *msg = sl__asprintf("%s; asking again", why ? why : "squeue failed");
            s->host->warn(s->host->arg, msg ? msg : "squeue failed; asking again");
            free(msg);
            free(why);
        }
        s->squeue_failing = true;
        goto out;
    }
    s->squeue_failing = false;
    for (size_t k = 0; k < s->n; k++) s->jobs[k].missing++;
    for (char *line = unknown ? NULL : out.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        char *f[4];
        if (fields(line, f, 4) < 4) continue;
        long k = find_job(s, f[0], strlen(f[0]));
        if (k < 0) continue;
        struct sjob *j = &s->jobs[k];
        j->missing = 0;
        if (final_state(f[1])) {
            char *end;
            long status = strtol(f[3], &end, 10);
            end_job(s, (size_t)k, f[1], f[2], end != f[3] ? (int)status : -1, NULL);
            changed = true;
        } else {
            /* A new state, or a pending job's new reason (Priority -> Resources, or one that
             * waiting will not cure, such as PartitionConfig): the user should see why. */
            const char *reason = strcmp(f[2], "None") ? f[2] : "";
            if (!strcmp(f[1], "PENDING") && never_starts(reason)) {
                /* It would wait forever: cancelled, and a failure that says why. */
                char *cancel[] = {"scancel", j->job, NULL};
                struct sl_buf o = {0}, e = {0};
                tool(cancel, &o, &e);
                sl__buf_free(&o);
                sl__buf_free(&e);
                end_job(s, (size_t)k, "PENDING", reason, -1,
                        ": it cannot start (it asks for more than its partition, QOS or account "
                        "allows, or for what no node has); cancelled by sluice");
                changed = true;
            } else if (strcmp(j->state, f[1]) ||
                       strncmp(j->reason, reason, sizeof(j->reason) - 1)) {
                snprintf(j->state, sizeof(j->state), "%s", f[1]);
                snprintf(j->reason, sizeof(j->reason), "%s", reason);
                s->host->state(s->host->arg, j->id, j->state, *reason ? j->reason : NULL);
                changed = true;
            }
        }
    }
    bool gone = false;
    for (size_t k = 0; k < s->n; k++) gone |= s->jobs[k].missing >= GONE_POLLS;
    if (gone) changed |= ask_sacct(s);
out:
    sl__buf_free(&ids);
    sl__buf_free(&out);
    sl__buf_free(&err);
    return changed;
}

static int64_t slurm_poll(struct sl_exec *x)
{
    struct slurm *s = (struct slurm *)x;
    if (!s->n) return 0;
    if (s->stop_waiting) {
        while (s->n)
            end_job(s, s->n - 1, "CANCELLED", NULL, -1,
                    ": cancelled by sluice, its end not waited for");
        return 0;
    }
    int64_t now = mono();
    if (s->next_poll && now < s->next_poll) return s->next_poll;
    bool changed = query(s);
    if (s->cancelled && s->n && mono() >= s->give_up_at)
        while (s->n)
            end_job(s, s->n - 1, "CANCELLED", NULL, -1, ": cancelled by sluice; Slurm did not "
                    "confirm its end in time");
    if (changed || s->cancelled)
        s->interval = POLL_MIN_NS;
    else
        s->interval = SL_MIN(s->interval ? 2 * s->interval : POLL_MIN_NS, POLL_MAX_NS);
    s->next_poll = mono() + s->interval;
    return s->n ? s->next_poll : 0;
}

/* One scancel for every job of the run that has not been seen to end; false when it failed. */
static bool scancel_all(struct slurm *s, struct sl_buf *err)
{
    char **argv = calloc(s->n + 2, sizeof(*argv));
    if (!argv) return false;
    argv[0] = "scancel";
    for (size_t k = 0; k < s->n; k++) argv[k + 1] = s->jobs[k].job;
    struct sl_buf out = {0};
    int rc = tool(argv, &out, err);
    sl__buf_free(&out);
    free(argv);
    if (rc != 0 && err) {
        char *why = tool_failure("scancel", rc, err);
        sl__buf_free(err);
        if (why) sl__buf_printf(err, "%s", why);
        free(why);
    }
    return rc == 0;
}

static void slurm_cancel(struct sl_exec *x, bool now)
{
    struct slurm *s = (struct slurm *)x;
    if (now) {
        s->stop_waiting = true;
        s->next_poll = 0;
        return;
    }
    if (!s->n || s->cancelled) return;
    struct sl_buf err = {0};
    if (!scancel_all(s, &err)) s->host->warn(s->host->arg, err.data ? err.data : "scancel failed");
    sl__buf_free(&err);
    s->cancelled = true;
    s->give_up_at = mono() + CANCEL_WAIT_NS;
    s->interval = POLL_MIN_NS;
    s->next_poll = mono() + POLL_MIN_NS;
}

static void slurm_close(struct sl_exec *x)
{
    struct slurm *s = (struct slurm *)x;
    if (!s) return;
    if (s->n) scancel_all(s, NULL); /* never leave a run's jobs behind */
    for (size_t k = 0; k < s->n; k++) free(s->jobs[k].job);
    free(s->jobs);
    free(s->run);
    free(s->script_dir);
    free(s->partition);
    free(s);
}

static const struct sl_exec_ops slurm_ops = {
    .name = "slurm", .start = slurm_start, .poll = slurm_poll, .cancel = slurm_cancel,
    .close = slurm_close,
};

/* Stages run in the pipeline's folder and their outs are hashed here, so the nodes must see
 * that folder. One on a local file system, while the partition has nodes on other hosts, is
 * warned of, not refused: a cluster may give the nodes the same path by other means. Says
 * nothing when sinfo cannot tell. */
static void check_shared(struct slurm *s, const char *dir)
{
    static const struct {
        unsigned long magic;
        const char *name;
    } local[] = {{0xEF53, "ext4"},         {0x58465342, "xfs"},  {0x9123683E, "btrfs"},
                 {0x01021994, "tmpfs"},    {0x794c7630, "overlay"}, {0xF2F52010, "f2fs"},
                 {0x2fc12fc1, "zfs"}};
    struct statfs fs;
    const char *kind = NULL;

    if (statfs(dir, &fs) < 0) return;
    for (size_t i = 0; i < SL_ARRAY_LEN(local) && !kind; i++)
        if ((unsigned long)fs.f_type == local[i].magic) kind = local[i].name;
    if (!kind || !on_path("sinfo")) return;

    char part[300] = "";
    if (s->partition) snprintf(part, sizeof(part), "--partition=%s", s->partition);
    char *argv[] = {"sinfo", "-h", "-N", "-o", "%N %n %P", s->partition ? part : NULL, NULL};
    struct sl_buf out = {0}, err = {0}, seen = {0}, others = {0};
    char me[256] = "";
    size_t n = 0;
    gethostname(me, sizeof(me) - 1);
    if (tool(argv, &out, &err) == 0 && out.data) {
        sl__buf_printf(&seen, "\n");
        /* A node in several partitions is a line for each: counted once. */
        for (char *line = out.data, *next; line && *line; line = next) {
            next = strchr(line, '\n');
            if (next) *next++ = '\0';
            char node[128], hostname[256], partition[128], key[132];
            if (sscanf(line, "%127s %255s %127s", node, hostname, partition) != 3) continue;
            /* No partition named: the jobs go to the default one, which sinfo marks '*'. */
            if (!s->partition && partition[strlen(partition) - 1] != '*') continue;
            snprintf(key, sizeof(key), "\n%s\n", node);
            if (!strcmp(hostname, me) || !strcmp(hostname, "localhost") ||
                !strcmp(hostname, "127.0.0.1") || !strcmp(node, me) ||
                (seen.data && strstr(seen.data, key)))
                continue;
            sl__buf_printf(&seen, "%s\n", node);
            if (n++ < 3) sl__buf_printf(&others, "%s%s", n > 1 ? ", " : "", node);
        }
    }
    if (n) {
        char *msg = sl__asprintf(
            "the pipeline's folder %s is on a local file system (%s), but Slurm may run its "
            "stages on other hosts (%s%s), which will not see it: put the pipeline on a file "
            "system the nodes share (NFS, Lustre, GPFS, ...)",
            dir, kind, others.data, n > 3 ? ", ..." : "");
        if (msg) s->host->warn(s->host->arg, msg);
        free(msg);
    }
    sl__buf_free(&out);
    sl__buf_free(&err);
    sl__buf_free(&seen);
    sl__buf_free(&others);
}

int sl_exec_slurm_open(const struct sl_exec_host *host, const struct sl_slurm_cfg *cfg,
                       struct sl_exec **out)
{
    static const char *const tools[] = {"sbatch", "squeue", "scancel"};
    struct slurm *s = NULL;
    int rc;

    for (size_t i = 0; i < SL_ARRAY_LEN(tools); i++)
        if (!on_path(tools[i]))
            return sl__err(-ENOENT, "executor slurm: %s is not on PATH (it needs Slurm's client "
                           "commands: sbatch, squeue, scancel)", tools[i]);
    if (!(s = calloc(1, sizeof(*s)))) return -ENOMEM;
    s->base.ops = &slurm_ops;
    s->host = host;
    s->run = sl__strdup(cfg->run);
    s->script_dir = sl__asprintf("%s/slurm", cfg->script_dir);
    s->partition = cfg->partition ? sl__strdup(cfg->partition) : NULL;
    if (!s->run || !s->script_dir || (cfg->partition && !s->partition)) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = sl__mkdirs(s->script_dir, 0755)) < 0) {
        rc = sl__err(rc, "%s: cannot make the folder: %s", s->script_dir, strerror(-rc));
        goto out;
    }
    if (cfg->dir) check_shared(s, cfg->dir);
    *out = &s->base;
    return 0;
out:
    slurm_close(&s->base);
    return rc;
}
