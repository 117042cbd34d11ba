/*
 * lock.c - sluice.lock: what each stage's last successful run was made of.
 *
 * One JSON object (json-c: the format users diff and review, as DVC's dvc.lock is YAML): per
 * stage its key (the hash that decides whether it must run again), its cmd, params and env,
 * and path + hash + size of each dep and out. Stages appear sorted by name, so a rerun that
 * changes one stage changes only its lines.
 *
 * Written through a temp file in the same folder, fsync, rename and a fsync of the folder: a
 * killed run leaves a lock as it was at one of its writes, never a torn one. A write costs the
 * whole file and a fsync, so stages that finish close together share one: a record is written
 * at most SAVE_EVERY_NS after it was set, and at the end of the run. What a killed run had not
 * written yet only costs those stages a rerun.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "pipeline/run.h"

#define LOCK_VERSION 1
#define SAVE_EVERY_NS (250LL * 1000000LL)

struct sl_lock {
    char *path;
    struct json_object *root;   /* {"version": 1, "stages": {...}} */
    struct json_object *stages; /* borrowed from root */
    bool dirty;                 /* set since the last write */
    int64_t saved_ns;           /* monotonic time of the last write */
};

int sl_lock_open(const char *path, struct sl_lock **out)
{
    struct sl_lock *l = calloc(1, sizeof(*l));
    int rc = 0;

    *out = NULL;
    if (!l || !(l->path = sl__strdup(path))) {
        free(l);
        return -ENOMEM;
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        l->root = json_object_from_file(path);
        struct json_object *v = NULL;
        if (!l->root || !json_object_is_type(l->root, json_type_object) ||
            !json_object_object_get_ex(l->root, "version", &v) ||
            json_object_get_int(v) != LOCK_VERSION ||
            !json_object_object_get_ex(l->root, "stages", &l->stages) ||
            !json_object_is_type(l->stages, json_type_object)) {
            rc = sl__err(SL_E_CONFIG,
                         "%s: not a lock file of this version of sluice (%s); move it away to "
                         "run every stage again",
                         path, l->root ? "unexpected content" : json_util_get_last_err());
            goto out;
        }
    } else if (errno != ENOENT) {
        rc = sl__err(-errno, "%s: %s", path, strerror(errno));
        goto out;
    } else {
        l->root = json_object_new_object();
        l->stages = json_object_new_object();
        if (!l->root || !l->stages) {
            json_object_put(l->stages);
            rc = -ENOMEM;
            goto out;
        }
        json_object_object_add(l->root, "version", json_object_new_int(LOCK_VERSION));
        json_object_object_add(l->root, "stages", l->stages);
    }
    *out = l;
    l = NULL;
out:
    sl_lock_free(l);
    return rc;
}

static int save(struct sl_lock *l);

void sl_lock_free(struct sl_lock *l)
{
    if (!l) return;
    int rc = l->dirty ? save(l) : 0;
    if (rc < 0) sl__warn("%s (the stages it missed run again next time)", sl_errmsg(rc));
    json_object_put(l->root);
    free(l->path);
    free(l);
}

struct json_object *sl_lock_get(struct sl_lock *l, const char *stage)
{
    struct json_object *rec = NULL;
    return json_object_object_get_ex(l->stages, stage, &rec) ? rec : NULL;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The stages object again with its keys sorted (json-c keeps insertion order). */
static struct json_object *sorted(struct json_object *stages)
{
    size_t n = (size_t)json_object_object_length(stages), i = 0;
    const char **names = calloc(n ? n : 1, sizeof(*names));
    struct json_object *o = json_object_new_object();
    if (!names || !o) {
        free(names);
        json_object_put(o);
        return NULL;
    }
    json_object_object_foreach(stages, k, v)
    {
        (void)v;
        names[i++] = k;
    }
    qsort(names, n, sizeof(*names), cmp_names);
    for (i = 0; i < n; i++) {
        struct json_object *rec = NULL;
        json_object_object_get_ex(stages, names[i], &rec);
        json_object_object_add(o, names[i], json_object_get(rec));
    }
    free(names);
    return o;
}

static int write_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int save(struct sl_lock *l)
{
    char *tmp = sl__asprintf("%s.tmp.%d", l->path, (int)getpid());
    char *dirc = sl__strdup(l->path);
    int fd = -1, rc = 0;
    struct json_object *st = sorted(l->stages);

    if (!tmp || !dirc || !st) {
        rc = -ENOMEM;
        goto out;
    }
    json_object_object_add(l->root, "stages", st);
    l->stages = st;
    const char *text = json_object_to_json_string_ext(l->root, JSON_C_TO_STRING_PRETTY |
                                                                   JSON_C_TO_STRING_SPACED |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || (rc = write_all(fd, text, strlen(text))) < 0 ||
        (rc = write_all(fd, "\n", 1)) < 0 || fsync(fd) < 0) {
        rc = rc ? rc : -errno;
        goto out;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto out;
    }
    fd = -1;
    if (rename(tmp, l->path) < 0) {
        rc = -errno;
        goto out;
    }
    int dfd = open(dirname(dirc), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0) close(fd);
    if (rc == 0) {
        l->dirty = false;
        l->saved_ns = (int64_t)sl__mono_ns();
    }
    if (rc < 0) {
        unlink(tmp);
        rc = sl__err(rc, "%s: cannot write the lock file: %s", l->path, strerror(-rc));
    }
    free(tmp);
    free(dirc);
    return rc;
}

int sl_lock_set(struct sl_lock *l, const char *stage, struct json_object *rec)
{
    json_object_object_add(l->stages, stage, rec);
    l->dirty = true;
    if ((int64_t)sl__mono_ns() - l->saved_ns < SAVE_EVERY_NS) return 0;
    return save(l);
}

