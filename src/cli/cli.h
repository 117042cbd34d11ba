/*
 * cli.h - what the commands of the `sluice` tool share. The tool uses libsluice's public API
 * only (sluice.h): it is the first of its front ends and shows what the library is for.
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "sluice.h"

/* Exit codes (SPEC section 6). */
enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

struct cli {
    sl_options_t opts;
    sl_t *sl; /* opened on first use by cli_open() */
    int verbosity; /* -1 quiet, 0 normal, 1+ verbose */
};

struct cli_command {
    const char *name;
    int (*run)(struct cli *cli, int argc, char **argv);
    const char *summary;
};

int cli_ls(struct cli *cli, int argc, char **argv);
int cli_stat(struct cli *cli, int argc, char **argv);
int cli_cat(struct cli *cli, int argc, char **argv);
int cli_cp(struct cli *cli, int argc, char **argv);
int cli_load(struct cli *cli, int argc, char **argv);
int cli_free(struct cli *cli, int argc, char **argv);
int cli_cache(struct cli *cli, int argc, char **argv);
int cli_mount(struct cli *cli, int argc, char **argv);
int cli_umount(struct cli *cli, int argc, char **argv);
int cli_bench(struct cli *cli, int argc, char **argv);
int cli_run(struct cli *cli, int argc, char **argv);
int cli_report(struct cli *cli, int argc, char **argv);

/* Opens the library (config, cache) once; on failure prints why and returns NULL with *code
 * set to the exit code. */
sl_t *cli_open(struct cli *cli, int *code);

/* Prints "sluice: DETAIL" for err (the library's detail, or "context: strerror") and returns
 * the exit code it calls for: 2 for usage and config errors, else 1. */
int cli_error(int err, const char *context);

/* Prints "sluice: COMMAND: MESSAGE" and a hint to --help; returns CLI_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses a size option ("4096", "1MiB") or fails with a usage error naming the option. */
bool cli_parse_size_opt(const char *command, const char *opt, const char *s, uint64_t *out);

/* Prints o as one line of JSON on stdout and releases it. */
void cli_json_print(struct json_object *o);
struct json_object *cli_json_u64(uint64_t v);

/* "2026-11-22 10:04" in local time. */
void cli_format_time(int64_t ns, char *buf, size_t len);

/* A progress bar on stderr, shown only when stderr is a terminal and -q was not given. */
struct cli_progress {
    bool on;
    const char *what;
    uint64_t start_ns;
    int last_width;
};
void cli_progress_start(struct cli_progress *p, struct cli *cli, const char *what);
void cli_progress_update(struct cli_progress *p, uint64_t done, uint64_t total, size_t items_done,
                         size_t items_total);
void cli_progress_end(struct cli_progress *p);
uint64_t cli_now_ns(void);

/* A directory's entries, sorted by name. Free with cli_entries_free(). */
struct cli_entry {
    char *name;
    sl_stat_t st;
};
int cli_list_sorted(sl_t *sl, const char *path, struct cli_entry **out, size_t *n);
void cli_entries_free(struct cli_entry *ents, size_t n);
/* dir + "/" + name, without doubling the '/'. Caller frees. */
char *cli_join(const char *dir, const char *name);
/* The mount point of the innermost fuse.sluice mount holding path (an absolute, resolved
 * path: the mount point or below it), or NULL; *pid: the process serving it (the mount's
 * source is "sluice:PID"), 0 if unknown. Mount points with spaces are written with octal
 * escapes in mountinfo and are not matched. */
char *cli_sluice_mount_of(const char *path, pid_t *pid);

/* Recursively collects the regular files below path (or path itself if it is a file): calls cb
 * with each file's path and metadata, in `ls -R` order (a directory's files by name, then its
 * subdirectories, depth first). Directories are listed in parallel (sl_walk). */
typedef int (*cli_walk_cb)(void *arg, const char *path, const sl_stat_t *st);
int cli_walk(sl_t *sl, const char *path, bool recursive, cli_walk_cb cb, void *arg);

#endif /* SL_CLI_H */
