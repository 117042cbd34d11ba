/*
 * cli_util.c - what the commands share: opening the library, errors and exit codes, JSON,
 * times, the progress bar, sorted listings and tree walks.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

sl_t *cli_open(struct cli *cli, int *code)
{
    if (cli->sl) return cli->sl;
    int rc = sl_open(&cli->opts, &cli->sl);
    if (rc < 0) {
        *code = cli_error(rc, "config");
        cli->sl = NULL;
        return NULL;
    }
    return cli->sl;
}

int cli_error(int err, const char *context)
{
    const char *detail = sl_errmsg(err);
    if (strcmp(detail, sl_strerror(err)) != 0)
        fprintf(stderr, "sluice: %s\n", detail);
    else
        fprintf(stderr, "sluice: %s: %s\n", context, detail);
    return err == SL_E_CONFIG || err == SL_E_USAGE ? CLI_USAGE : CLI_FAIL;
}

int cli_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "sluice: %s: ", command);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'sluice %s --help'.\n", command);
    return CLI_USAGE;
}

bool cli_parse_size_opt(const char *command, const char *opt, const char *s, uint64_t *out)
{
    if (sl_parse_size(s, out) == 0) return true;
    cli_usage_error(command, "%s: expected a number of bytes such as 4096 or 1MiB, got '%s'", opt,
                    s);
    return false;
}

void cli_json_print(struct json_object *o)
{
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

struct json_object *cli_json_u64(uint64_t v)
{
    /* JSON numbers; json-c's int64 covers every size sluice can hold. */
    return json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v);
}

void cli_format_time(int64_t ns, char *buf, size_t len)
{
    time_t t = (time_t)(ns / 1000000000LL);
    struct tm tm;
    if (ns <= 0 || !localtime_r(&t, &tm))
        snprintf(buf, len, "-");
    else
        strftime(buf, len, "%Y-%m-%d %H:%M", &tm);
}

uint64_t cli_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void cli_progress_start(struct cli_progress *p, struct cli *cli, const char *what)
{
    p->on = cli->verbosity >= 0 && isatty(STDERR_FILENO);
    p->what = what;
    p->start_ns = cli_now_ns();
    p->last_width = 0;
}

void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t total, size_t items_done,
                         size_t items_total)
{
    if (!p->on) return;
    char d[32], t[32], r[32], line[256], bar[31];
    double secs = (double)(cli_now_ns() - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0;
    double frac = total ? (double)done / (double)total : 1.0;
    if (frac > 1) frac = 1;
    int fill = (int)(frac * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : i == fill ? '>' : ' ';
    bar[30] = '\0';
    sl_format_size(done, d, sizeof(d));
    sl_format_size(total, t, sizeof(t));
    sl_format_size((uint64_t)rate, r, sizeof(r));
    int n = snprintf(line, sizeof(line), "\r%s [%s] %3.0f%%  %s / %s  %s/s", p->what, bar,
                     frac * 100, d, t, r);
    if (rate > 0 && done < total && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "  ETA %.0fs",
                      (double)(total - done) / rate);
    if (items_total > 1 && n < (int)sizeof(line))
        n += snprintf(line + n, sizeof(line) - (size_t)n, "  %zu/%zu files", items_done,
                      items_total);
    int width = n;
    /* Blank out the rest of a longer previous line. */
    fprintf(stderr, "%s%*s", line, p->last_width > width ? p->last_width - width : 0, "");
    p->last_width = width;
    fflush(stderr);
}

void cli_progress_end(struct cli_progress *p)
{
    if (!p->on || !p->last_width) return;
    fprintf(stderr, "\r%*s\r", p->last_width, "");
    fflush(stderr);
}

char *cli_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    char *s = malloc(n + strlen(name) + 2);
    if (!s) return NULL;
    sprintf(s, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
    return s;
}

struct collect {
    struct cli_entry *ents;
    size_t n, cap;
};

static int collect_cb(void *arg, const sl_dirent_t *ent)
{
    struct collect *c = arg;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct cli_entry *e = realloc(c->ents, cap * sizeof(*e));
        if (!e) return -ENOMEM;
        c->ents = e;
        c->cap = cap;
    }
    if (!(c->ents[c->n].name = strdup(ent->name))) return -ENOMEM;
    c->ents[c->n++].st = ent->st;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct cli_entry *)a)->name, ((const struct cli_entry *)b)->name);
}

int cli_list_sorted(sl_t *sl, const char *path, struct cli_entry **out, size_t *n)
{
    struct collect c = {0};
    int rc = sl_list(sl, path, collect_cb, &c);
    if (rc < 0) {
        cli_entries_free(c.ents, c.n);
        return rc;
    }
    if (c.n) qsort(c.ents, c.n, sizeof(*c.ents), by_name); /* an empty listing has no array */
    *out = c.ents;
    *n = c.n;
    return 0;
}

void cli_entries_free(struct cli_entry *ents, size_t n)
{
    for (size_t i = 0; i < n; i++) free(ents[i].name);
    free(ents);
}

struct walk_files {
    cli_walk_cb cb;
    void *arg;
};

/* The files of each directory, in name order (sl_walk lists the directories in parallel). */
static int walk_files(void *arg, const char *dir, int err, const sl_dirent_t *ents, size_t n)
{
    struct walk_files *wf = arg;
    int rc = 0;
    if (err < 0) return err; /* a copy or a load of a tree with a hole in it is not done */
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ents[i].st.type == SL_TYPE_DIR) continue;
        char *child = cli_join(dir, ents[i].name);
        if (!child) return -ENOMEM;
        rc = wf->cb(wf->arg, child, &ents[i].st);
        free(child);
    }
    return rc;
}

int cli_walk(sl_t *sl, const char *path, bool recursive, cli_walk_cb cb, void *arg)
{
    sl_stat_t st;
    int rc = sl_stat(sl, path, &st);
    if (rc < 0) return rc;
    if (st.type == SL_TYPE_FILE) return cb(arg, path, &st);
    if (!recursive) return -EISDIR;
    struct walk_files wf = {.cb = cb, .arg = arg};
    return sl_walk(sl, path, walk_files, &wf);
}

char *cli_sluice_mount_of(const char *path, pid_t *pid)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[8192], *best = NULL;
    size_t best_len = 0;

    if (!f) return NULL;
    while (fgets(line, sizeof(line), f)) {
        /* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS ... - FSTYPE SOURCE SUPEROPTS */
        char point[PATH_MAX], type[64];
        long src_pid = 0;
        const char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", point) != 1 ||
            sscanf(dash + 3, "%63s sluice:%ld", type, &src_pid) < 1 ||
            strcmp(type, "fuse.sluice") != 0)
            continue;
        size_t n = strlen(point);
        bool holds = strncmp(path, point, n) == 0 &&
                     (path[n] == '\0' || path[n] == '/' || strcmp(point, "/") == 0);
        if (!holds || (best && n <= best_len)) continue;
        char *p = strdup(point);
        if (!p) continue;
        free(best);
        best = p;
        best_len = n;
        if (pid) *pid = (pid_t)src_pid;
    }
    fclose(f);
    return best;
}
