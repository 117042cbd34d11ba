/*
 * profile.c - a stage's I/O profile, from what sluice-trace.so (trace.c) saw its processes do:
 * bytes and files read and written, the read/write ratio, sequential against random reads,
 * and the classes the seeds use for files and datasets:
 *
 *   file size   small < 100 KB, medium < 100 MB, large above
 *   file count  small < 1,000, medium < 1M, large < 100M, massive above
 *
 * A stage's processes each write lines PATH, SIZE, READ, WRITTEN, SEQ, RAND, READS, WRITES,
 * GROWN (one per descriptor, at its close) under the attempt's trace folder; they are summed per
 * path (a file read by three processes is one file, its bytes the sum), but for what a file
 * grew by, which every process that had it open saw: the most of those, when the counted
 * writes (stdio's own, unwrapped) say less. A read is sequential when
 * it starts where the last read of its descriptor ended (the first at offset 0); the profile
 * calls a stage sequential when 80% of the bytes it read were, random when 20% or less.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "pipeline/profile.h"
#include "pipeline/run.h"

#define KB 1000ULL
#define MB (1000ULL * KB)

struct pfile {
    char *path;
    uint64_t size, read, written, seq, rand, reads, writes, grown;
};

struct acc {
    struct pfile *v;
    size_t n, cap;
};

static int cmp_path(const void *a, const void *b)
{
    return strcmp(((const struct pfile *)a)->path, ((const struct pfile *)b)->path);
}

static int add_line(struct acc *a, char *line)
{
    struct pfile f = {0};
    char *tab = strchr(line, '\t');
    if (!tab) return 0;
    *tab = '\0';
    int got = sscanf(tab + 1, "%" SCNu64 "\t%" SCNu64 "\t%" SCNu64 "\t%" SCNu64 "\t%" SCNu64
                              "\t%" SCNu64 "\t%" SCNu64 "\t%" SCNu64, &f.size, &f.read, &f.written,
                     &f.seq, &f.rand, &f.reads, &f.writes, &f.grown);
    if (got < 7) return 0; /* a line cut short by a killed process */
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct pfile *v = realloc(a->v, cap * sizeof(*v));
        if (!v) return -ENOMEM;
        a->v = v;
        a->cap = cap;
    }
    if (!(f.path = sl__strdup(line))) return -ENOMEM;
    a->v[a->n++] = f;
    return 0;
}

static int read_dir(const char *dir, struct acc *a)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".tsv")) continue;
        char *path = sl__asprintf("%s/%s", dir, de->d_name);
        FILE *f = path ? fopen(path, "re") : NULL;
        free(path);
        if (!f) continue;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
            if (line[n - 1] == '\n') line[n - 1] = '\0';
            rc = add_line(a, line);
        }
        free(line);
        fclose(f);
    }
    closedir(d);
    return rc;
}

static const char *size_class(uint64_t bytes)
{
    return bytes < 100 * KB ? "small" : bytes < 100 * MB ? "medium" : "large";
}

static const char *count_class(uint64_t n)
{
    return n < 1000 ? "small" : n < 1000000 ? "medium" : n < 100000000 ? "large" : "massive";
}

/* What the stage does, in the seeds' words for the stages of a pipeline. */
static const char *kind(uint64_t read, uint64_t written)
{
    if (!read && !written) return "none";
    if (!read) return "write-only";
    if (!written) return "read-only";
    double r = (double)read / (double)written;
    return r > 2 ? "read-heavy" : r < 0.5 ? "write-heavy" : "read/write 1:1";
}

int sl_profile_collect(const char *trace_dir, struct json_object **out)
{
    struct acc a = {0};
    int rc = read_dir(trace_dir, &a);
    *out = NULL;
    if (rc < 0) goto out;
    if (a.n) qsort(a.v, a.n, sizeof(*a.v), cmp_path);

    uint64_t read = 0, written = 0, seq = 0, reads = 0, writes = 0, files_read = 0,
             files_written = 0, files = 0, by_size[3] = {0};
    for (size_t i = 0; i < a.n;) {
        struct pfile f = a.v[i];
        size_t j = i + 1;
        for (; j < a.n && !strcmp(a.v[j].path, f.path); j++) {
            f.size = SL_MAX(f.size, a.v[j].size);
            f.read += a.v[j].read;
            f.written += a.v[j].written;
            f.seq += a.v[j].seq;
            f.reads += a.v[j].reads;
            f.writes += a.v[j].writes;
            f.grown = SL_MAX(f.grown, a.v[j].grown);
        }
        /* Counted writes add up over processes; growth does not (the shell that opened `> out`
         * for a program saw the same growth as the program). */
        f.written = SL_MAX(f.written, f.grown);
        read += f.read;
        written += f.written;
        seq += f.seq;
        reads += f.reads;
        writes += f.writes;
        files_read += f.read > 0;
        files_written += f.written > 0;
        files++;
        uint64_t size = SL_MAX(f.size, f.written);
        by_size[size < 100 * KB ? 0 : size < 100 * MB ? 1 : 2]++;
        i = j;
    }
    struct json_object *p = json_object_new_object();
    if (!p) {
        rc = -ENOMEM;
        goto out;
    }
#define U64(k, v) json_object_object_add(p, k, json_object_new_int64((int64_t)(v)))
    U64("bytes_read", read);
    U64("bytes_written", written);
    U64("files_read", files_read);
    U64("files_written", files_written);
    U64("reads", reads);
    U64("writes", writes);
#undef U64
    json_object_object_add(p, "read_write_ratio",
                           written ? json_object_new_double((double)read / (double)written) : NULL);
    json_object_object_add(p, "kind", json_object_new_string(kind(read, written)));
    double share = read ? (double)seq / (double)read : 0;
    json_object_object_add(p, "sequential_share", read ? json_object_new_double(share) : NULL);
    json_object_object_add(p, "access", json_object_new_string(
                                            !read          ? "none"
                                            : share >= 0.8 ? "sequential"
                                            : share <= 0.2 ? "random"
                                                           : "mixed"));
    json_object_object_add(p, "mean_read", reads ? json_object_new_int64((int64_t)(read / reads)) : NULL);
    struct json_object *sizes = json_object_new_object();
    json_object_object_add(sizes, "small", json_object_new_int64((int64_t)by_size[0]));
    json_object_object_add(sizes, "medium", json_object_new_int64((int64_t)by_size[1]));
    json_object_object_add(sizes, "large", json_object_new_int64((int64_t)by_size[2]));
    json_object_object_add(p, "file_sizes", sizes);
    size_t most = by_size[2] > by_size[1] && by_size[2] > by_size[0] ? 2 : by_size[1] > by_size[0] ? 1 : 0;
    json_object_object_add(p, "file_size_class",
                           json_object_new_string(files ? size_class(most == 0 ? 0 : most == 1 ? 100 * KB : 100 * MB) : "none"));
    json_object_object_add(p, "files", json_object_new_int64((int64_t)files));
    json_object_object_add(p, "file_count_class", json_object_new_string(count_class(files)));
    *out = p;
out:
    for (size_t i = 0; i < a.n; i++) free(a.v[i].path);
    free(a.v);
    return rc;
}

char *sl_profile_trace_lib(const char *exe)
{
    const char *env = getenv("SLUICE_TRACE_LIB");
    if (env && *env) return access(env, R_OK) == 0 ? sl__strdup(env) : NULL;
    const char *slash = exe ? strrchr(exe, '/') : NULL;
    if (!slash) return NULL;
    int dir = (int)(slash - exe);
    char *next = sl__asprintf("%.*s/%s", dir, exe, SL_TRACE_LIB);
    if (next && access(next, R_OK) == 0) return next;
    free(next);
    char *installed = sl__asprintf("%.*s/../lib/sluice/%s", dir, exe, SL_TRACE_LIB);
    if (installed && access(installed, R_OK) == 0) return installed;
    free(installed);
    installed = sl__asprintf("%.*s/../lib/x86_64-linux-gnu/sluice/%s", dir, exe, SL_TRACE_LIB);
    if (installed && access(installed, R_OK) == 0) return installed;
    free(installed);
    return NULL;
}
