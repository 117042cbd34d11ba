/*
 * local.c - the local directory store (file://): a directory tree on a local or network file
 * system (NFS, a parallel file system) as an under-store.
 *
 * Versions: "<mtime ns>.<size>.<inode>.<ctime ns>.<device>". A write in place changes mtime and
 * ctime; an atomic replace by rename changes the inode (and ctime, which a restored mtime does
 * not undo); another file system changes the device. A read checks the version before and
 * after its pread, so bytes from two versions are never returned as one.
 *
 * Writes: a temp file next to the target (".NAME.sluice-tmp.PID.N"), fsync, rename over the
 * target, fsync of the directory: the rename is the commit, and after it returns the data and
 * its name survive a crash. An aborted or killed writer leaves at most its temp file, never a
 * torn target.
 *
 * Only regular files and directories are served; other types (FIFOs, sockets, devices) are
 * "not a regular file" and left out of listings, so a read can never block on a FIFO.
 * Symbolic links are followed, as a user of the directory would expect.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ufs/ufs.h"

struct local_store {
    struct sl_ufs base;
    char *root; /* absolute directory, no trailing '/' except for "/" itself */
};

struct local_lister {
    struct local_store *s;
    DIR *dir;
    int dirfd;
    struct sl_buf names; /* the current page's names, NUL separated */
};

struct local_writer {
    struct local_store *s;
    char *path, *tmp;
    int fd;
};

static _Atomic unsigned tmp_counter;

#define TMP_MARK ".sluice-tmp."

static int local_split(const char *uri, char **root, char **path)
{
    const char *p = uri + strlen("file://");
    if (*p != '/') return SL_E_BAD_URI; /* file://host/x is not a local path */
    while (*p == '/') p++;
    *root = sl__strdup("file:///");
    *path = sl__strdup(p);
    if (!*root || !*path) {
        free(*root);
        free(*path);
        return -ENOMEM;
    }
    return 0;
}

static int local_open(const char *uri, const struct sl_mount_cfg *mc, struct sl_ufs **out)
{
    (void)mc;
    const char *p = uri + strlen("file://");
    if (*p != '/') return sl__err(SL_E_BAD_URI, "%s: a file URI needs an absolute path, as in "
                                                "file:///srv/data", uri);
    struct local_store *s = calloc(1, sizeof(*s));
    char *norm = NULL;
    if (!s) return -ENOMEM;
    /* One spelling per directory: the root's id is the identity of every cached page below. */
    int rc = sl__path_normalize(p, &norm);
    if (rc < 0) {
        free(s);
        return rc == SL_E_PATH_ESCAPE ? sl__err(SL_E_BAD_URI, "%s: '..' goes above /", uri) : rc;
    }
    s->root = sl__asprintf("/%s", norm);
    free(norm);
    if (!s->root) goto nomem;
    s->base.uri = sl__strdup(uri);
    s->base.id = sl__asprintf("file://%s", strcmp(s->root, "/") == 0 ? "" : s->root);
    if (!s->base.uri || !s->base.id) goto nomem;
    *out = &s->base;
    return 0;
nomem:
    free(s->root);
    free(s->base.uri);
    free(s->base.id);
    free(s);
    return -ENOMEM;
}

static void local_close(struct sl_ufs *u)
{
    struct local_store *s = (struct local_store *)u;
    free(s->root);
    free(s->base.uri);
    free(s->base.id);
    free(s);
}

/* root + "/" + path, refusing any '..' component: the namespace never passes one, and a store
 * must not be talked out of its root even if it did. */
static char *full_path(struct local_store *s, const char *path)
{
    for (const char *c = path; *c;) {
        const char *e = strchrnul(c, '/');
        if (e - c == 2 && c[0] == '.' && c[1] == '.') return NULL;
        c = *e ? e + 1 : e;
    }
    if (!*path) return sl__strdup(s->root);
    return sl__asprintf("%s/%s", strcmp(s->root, "/") == 0 ? "" : s->root, path);
}

static void fill_stat(const struct stat *sb, sl_stat_t *st)
{
    memset(st, 0, sizeof(*st));
    st->type = S_ISDIR(sb->st_mode) ? SL_TYPE_DIR : SL_TYPE_FILE;
    st->size = S_ISDIR(sb->st_mode) ? 0 : (uint64_t)sb->st_size;
    st->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000LL + sb->st_mtim.tv_nsec;
    st->mode = sb->st_mode & 07777;
    if (S_ISREG(sb->st_mode))
        snprintf(st->version, sizeof(st->version), "%lld.%llu.%llu.%lld.%llu",
                 (long long)st->mtime_ns, (unsigned long long)sb->st_size,
                 (unsigned long long)sb->st_ino,
                 (long long)sb->st_ctim.tv_sec * 1000000000LL + sb->st_ctim.tv_nsec,
                 (unsigned long long)sb->st_dev);
}

static int local_stat(struct sl_ufs *u, const char *path, sl_stat_t *st)
{
    struct stat sb;
    char *fp = full_path((struct local_store *)u, path);
    if (!fp) return SL_E_PATH_ESCAPE;
    int rc = stat(fp, &sb) < 0 ? -errno : 0;
    free(fp);
    if (rc) return rc;
    if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) return SL_E_NOT_FILE;
    fill_stat(&sb, st);
    return 0;
}

static int local_list_open(struct sl_ufs *u, const char *dir, struct sl_ufs_lister **out)
{
    struct local_store *s = (struct local_store *)u;
    char *fp = full_path(s, dir);
    if (!fp) return SL_E_PATH_ESCAPE;
    struct local_lister *l = calloc(1, sizeof(*l));
    if (!l) {
        free(fp);
        return -ENOMEM;
    }
    l->s = s;
    l->dir = opendir(fp);
    free(fp);
    if (!l->dir) {
        int rc = -errno;
        free(l);
        return rc;
    }
    l->dirfd = dirfd(l->dir);
    *out = (struct sl_ufs_lister *)l;
    return 0;
}

static int local_list_next(struct sl_ufs_lister *ul, sl_dirent_t *ents, size_t max, size_t *n)
{
    struct local_lister *l = (struct local_lister *)ul;
    size_t count = 0;

    l->names.len = 0;
    while (count < max) {
        errno = 0;
        struct dirent *de = readdir(l->dir);
        if (!de) {
            if (errno) return -errno;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        /* A write in progress (ours) is not an object yet: listing it would let `cp -r` or a
         * training job read half a file. */
        if (de->d_name[0] == '.' && strstr(de->d_name, TMP_MARK)) continue;
        struct stat sb;
        /* Entries that vanish while listed, or dangling links, are simply not there. */
        if (fstatat(l->dirfd, de->d_name, &sb, 0) < 0) continue;
        if (!S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) continue;
        if (sl__buf_append(&l->names, de->d_name, strlen(de->d_name) + 1) < 0) return -ENOMEM;
        fill_stat(&sb, &ents[count].st);
        count++;
    }
    /* Names are pointed to only now: the buffer may have moved while it grew. */
    const char *name = l->names.data;
    for (size_t i = 0; i < count; i++, name += strlen(name) + 1) ents[i].name = name;
    *n = count;
    return 0;
}

static void local_list_close(struct sl_ufs_lister *ul)
{
    struct local_lister *l = (struct local_lister *)ul;
    closedir(l->dir);
    sl__buf_free(&l->names);
    free(l);
}

static bool same_version(const struct stat *sb, const char *version)
{
    sl_stat_t now;
    if (!version || !*version) return true;
    fill_stat(sb, &now);
    return strcmp(now.version, version) == 0;
}

static int local_read(struct sl_ufs *u, const char *path, const char *version, uint64_t off,
                      const struct iovec *iov, int iovcnt, size_t *nread)
{
    struct stat sb;
    char *fp = full_path((struct local_store *)u, path);
    int rc = 0;
    size_t done = 0;

    if (!fp) return SL_E_PATH_ESCAPE;
    /* O_NONBLOCK: if a FIFO took the file's place, open must not wait for a writer. */
    int fd = open(fp, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    free(fp);
    if (fd < 0) return errno == ENOENT && version && *version ? SL_E_CHANGED : -errno;
    if (fstat(fd, &sb) < 0) {
        rc = -errno;
        goto out;
    }
    if (S_ISDIR(sb.st_mode)) {
        rc = -EISDIR;
        goto out;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = SL_E_NOT_FILE;
        goto out;
    }
    if (!same_version(&sb, version)) {
        rc = SL_E_CHANGED;
        goto out;
    }
    for (int i = 0; i < iovcnt; i++) {
        size_t got = 0;
        while (got < iov[i].iov_len) {
            ssize_t r = pread(fd, (char *)iov[i].iov_base + got, iov[i].iov_len - got,
                              (off_t)(off + done + got));
            if (r < 0) {
                if (errno == EINTR) continue;
                rc = -errno;
                goto out;
            }
            if (r == 0) break;
            got += (size_t)r;
        }
        done += got;
        if (got < iov[i].iov_len) break; /* the end of the file */
    }
    /* Written while we read? Then what we hold may mix two versions. */
    if (fstat(fd, &sb) < 0)
        rc = -errno;
    else if (!same_version(&sb, version))
        rc = SL_E_CHANGED;
out:
    close(fd);
    *nread = rc ? 0 : done;
    return rc;
}

static int fsync_parent(const char *path)
{
    char *dir = sl__strdup(path);
    if (!dir) return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) < 0) rc = -errno;
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

static int local_writer_open(struct sl_ufs *u, const char *path, struct sl_ufs_writer **out)
{
    struct local_store *s = (struct local_store *)u;
    struct local_writer *w = calloc(1, sizeof(*w));
    int rc = 0;

    if (!w) return -ENOMEM;
    w->s = s;
    w->fd = -1;
    if (!*path) {
        rc = -EISDIR;
        goto fail;
    }
    if (!(w->path = full_path(s, path))) {
        rc = SL_E_PATH_ESCAPE;
        goto fail;
    }
    char *slash = strrchr(w->path, '/');
    *slash = '\0';
    if (*w->path && (rc = sl__mkdirs(w->path, 0755)) < 0) {
        *slash = '/';
        goto fail;
    }
    *slash = '/';
    w->tmp = sl__asprintf("%.*s/.%s" TMP_MARK "%d.%u", (int)(slash - w->path), w->path,
                          slash + 1, (int)getpid(), atomic_fetch_add(&tmp_counter, 1));
    if (!w->tmp) {
        rc = -ENOMEM;
        goto fail;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = -errno;
        goto fail;
    }
    /* Replacing a file keeps its permissions (a 0600 file stays private). */
    struct stat old;
    if (stat(w->path, &old) == 0 && S_ISREG(old.st_mode)) fchmod(w->fd, old.st_mode & 07777);
    *out = (struct sl_ufs_writer *)w;
    return 0;
fail:
    free(w->path);
    free(w->tmp);
    free(w);
    return rc;
}

static int local_writer_write(struct sl_ufs_writer *uw, const void *buf, size_t len)
{
    struct local_writer *w = (struct local_writer *)uw;
    while (len > 0) {
        ssize_t r = write(w->fd, buf, len);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        buf = (const char *)buf + r;
        len -= (size_t)r;
    }
    return 0;
}

static void local_writer_abort(struct sl_ufs_writer *uw)
{
    struct local_writer *w = (struct local_writer *)uw;
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}

static int local_writer_commit(struct sl_ufs_writer *uw, sl_stat_t *st)
{
    struct local_writer *w = (struct local_writer *)uw;
    struct stat sb;
    int rc = 0;

    /* The order is the durability argument: data on disk, then the name, then the name's dir.
     * The new version is read after the rename, which changes the file's ctime. */
    if (fsync(w->fd) < 0) rc = -errno;
    if (!rc && rename(w->tmp, w->path) < 0) rc = -errno;
    if (!rc) rc = fsync_parent(w->path);
    if (!rc && fstat(w->fd, &sb) < 0) rc = -errno;
    if (close(w->fd) < 0 && !rc) rc = -errno;
    w->fd = -1;
    if (!rc && st) fill_stat(&sb, st);
    if (rc) {
        local_writer_abort(uw);
        return rc;
    }
    free(w->path);
    free(w->tmp);
    free(w);
    return 0;
}

static int local_remove(struct sl_ufs *u, const char *path)
{
    char *fp = full_path((struct local_store *)u, path);
    if (!fp) return SL_E_PATH_ESCAPE;
    int rc = 0;
    if (unlink(fp) < 0) rc = errno == EISDIR ? (rmdir(fp) < 0 ? -errno : 0) : -errno;
    free(fp);
    return rc;
}

static int local_rename(struct sl_ufs *u, const char *from, const char *to)
{
    char *a = full_path((struct local_store *)u, from), *b = full_path((struct local_store *)u, to);
    int rc = !a || !b ? SL_E_PATH_ESCAPE : rename(a, b) < 0 ? -errno : 0;
    free(a);
    free(b);
    return rc;
}

static int local_mkdir(struct sl_ufs *u, const char *path)
{
    char *fp = full_path((struct local_store *)u, path);
    if (!fp) return SL_E_PATH_ESCAPE;
    int rc = sl__mkdirs(fp, 0755);
    free(fp);
    return rc;
}

const struct sl_ufs_ops sl__ufs_local_ops = {
    .scheme = "file",
    .default_ttl_ns = 0, /* a local stat costs what a cache lookup costs: always revalidate */
    .split = local_split,
    .open = local_open,
    .close = local_close,
    .stat = local_stat,
    .list_open = local_list_open,
    .list_next = local_list_next,
    .list_close = local_list_close,
    .read = local_read,
    .writer_open = local_writer_open,
    .writer_write = local_writer_write,
    .writer_commit = local_writer_commit,
    .writer_abort = local_writer_abort,
    .remove = local_remove,
    .rename = local_rename,
    .mkdir = local_mkdir,
};
