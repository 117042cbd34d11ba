/*
 * trace.c - sluice-trace.so, preloaded into every process of a stage (LD_PRELOAD) to see how
 * it reads and writes its files: the per-stage I/O profile of `sluice report`.
 *
 * The model is Darshan's POSIX module: wrap the calls that move bytes (open, read, pread,
 * readv, write, pwrite, writev, copy_file_range, sendfile, lseek, dup, dup2, dup3, close,
 * and stdio's fopen, fread, fwrite, fclose), keep per open file its path, the bytes read and written, and whether each read
 * started where the last one ended (sequential) or elsewhere (random), and write one line
 * per file when it is closed (or, for what is still open, when the process exits) to
 * $SLUICE_TRACE_DIR/PID.tsv. sched.c sums the lines of a stage's processes into its profile.
 *
 * It costs a mutex and a few additions per call, next to a system call. It never changes
 * what a call does or returns, and keeps errno as the real call left it. What it cannot see:
 * reads through mmap (the kernel pages those in), calls glibc makes inside itself (stdio is
 * seen at fread/fwrite instead), statically linked programs, and io_uring.
 *
 * Written with the raw system calls and no allocation on the hot path: it runs inside any
 * program, between its calls into libc.
 */
/* open and open64 are two symbols to wrap: without the build's _FILE_OFFSET_BITS=64, the
 * headers do not turn one into the other. off_t is 64 bits on the 64-bit targets either way. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 65536
#define SL_EXPORT __attribute__((visibility("default")))

struct tfile {
    bool open;
    char *path;
    uint64_t size_at_open;
    uint64_t pos;          /* where a read() or write() goes next */
    uint64_t next_read;    /* where a sequential read would start */
    bool read_before;
    bool writable;         /* opened for writing: what it grew by is written, whatever wrote it */
    uint64_t bytes_read, bytes_written, seq_bytes, rand_bytes, reads, writes;
    uint64_t grown;        /* what the file grew by while this descriptor had it open */
};

static struct tfile *files; /* by fd */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = -1;
static bool ready;
/* $SLUICE_TRACE_SKIP, folders separated by ':': sluice's own (its cache, the run's logs), not
 * the stage's data. */
#define MAX_SKIP 4
static char skip_dirs[MAX_SKIP][PATH_MAX];

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_pread)(int, void *, size_t, off_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static off_t (*real_lseek)(int, off_t, int);
static int (*real_close)(int);
static int (*real_open)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static ssize_t (*real_copy_file_range)(int, off_t *, int, off_t *, size_t, unsigned);
static ssize_t (*real_sendfile)(int, int, off_t *, size_t);
static FILE *(*real_fopen)(const char *, const char *);
static size_t (*real_fread)(void *, size_t, size_t, FILE *);
static size_t (*real_fwrite)(const void *, size_t, size_t, FILE *);
static int (*real_fclose)(FILE *);

static void flush_all(void);
static void opened(int dirfd, const char *path, int fd, int flags);
static void moved(int fd, off_t where);

/* The real functions; also called by a wrapper that runs before our constructor did (another
 * library's constructor may open a file first). */
static void resolve(void)
{
    real_read = dlsym(RTLD_NEXT, "read");
    real_pread = dlsym(RTLD_NEXT, "pread64");
    real_readv = dlsym(RTLD_NEXT, "readv");
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite64");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_lseek = dlsym(RTLD_NEXT, "lseek64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_open = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat64");
    real_dup = dlsym(RTLD_NEXT, "dup");
    real_dup2 = dlsym(RTLD_NEXT, "dup2");
    real_dup3 = dlsym(RTLD_NEXT, "dup3");
    real_copy_file_range = dlsym(RTLD_NEXT, "copy_file_range");
    real_sendfile = dlsym(RTLD_NEXT, "sendfile64");
    real_fopen = dlsym(RTLD_NEXT, "fopen64");
    real_fread = dlsym(RTLD_NEXT, "fread");
    real_fwrite = dlsym(RTLD_NEXT, "fwrite");
    real_fclose = dlsym(RTLD_NEXT, "fclose");
}

__attribute__((constructor)) static void trace_init(void)
{
    if (!real_fclose) resolve();
    const char *dir = getenv("SLUICE_TRACE_DIR");
    if (!dir || !*dir) return;
    /* sluice itself (a stage's `sluice cat`, `sluice cp`) tells what it read by namespace path
     * (libsluice's access records); its reads of page files and stores are the cache's, not
     * the stage's. */
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = '\0';
        const char *base = strrchr(exe, '/');
        if (base && !strcmp(base + 1, "sluice")) return;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%d.tsv", dir, (int)getpid());
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    /* Out of the way of the fds the program expects to get (some assume 3 is theirs). */
    out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 1000);
    syscall(SYS_close, fd);
    const char *skip = getenv("SLUICE_TRACE_SKIP");
    for (int i = 0; skip && *skip && i < MAX_SKIP; i++) {
        const char *end = strchr(skip, ':');
        int n = end ? (int)(end - skip) : (int)strlen(skip);
        snprintf(skip_dirs[i], sizeof(skip_dirs[i]), "%.*s/", n, skip);
        skip = end ? end + 1 : NULL;
    }
    files = calloc(MAX_FDS, sizeof(*files));
    ready = out_fd >= 0 && files;
    if (!ready) return;
    atexit(flush_all);
    /* What the shell opened for us: `cmd > out.txt` hands the program its stdout open. */
    for (int std = 0; std <= 2; std++) {
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", std);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0 || target[0] != '/') continue;
        target[n] = '\0';
        int fl = fcntl(std, F_GETFL);
        opened(AT_FDCWD, target, std, fl < 0 ? 0 : fl);
        off_t at = real_lseek(std, 0, SEEK_CUR);
        if (at > 0) moved(std, at);
    }
}

/* A file worth a line: a regular file outside the system's own folders (the interpreter's
 * libraries are not the stage's data). */
static bool interesting(const char *path, struct stat *st)
{
    static const char *const skip[] = {"/usr/", "/lib/", "/lib64/", "/etc/", "/proc/",
                                       "/sys/", "/dev/", "/run/", "/var/lib/", "/var/cache/"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (!strncmp(path, skip[i], strlen(skip[i]))) return false;
    for (int i = 0; i < MAX_SKIP && skip_dirs[i][0]; i++)
        if (!strncmp(path, skip_dirs[i], strlen(skip_dirs[i]))) return false;
    return S_ISREG(st->st_mode);
}

static void emit(struct tfile *t)
{
    char line[PATH_MAX + 256];
    int n = snprintf(line, sizeof(line), "%s\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\t%llu\n",
                     t->path, (unsigned long long)t->size_at_open,
                     (unsigned long long)t->bytes_read, (unsigned long long)t->bytes_written,
                     (unsigned long long)t->seq_bytes, (unsigned long long)t->rand_bytes,
                     (unsigned long long)t->reads, (unsigned long long)t->writes,
                     (unsigned long long)t->grown);
    if (n > 0 && (size_t)n < sizeof(line) && (t->bytes_read || t->bytes_written || t->reads || t->grown))
        if (syscall(SYS_write, out_fd, line, (size_t)n) < 0) { /* nothing to do about it */ }
}

static void forget(int fd)
{
    struct tfile *t = &files[fd];
    if (!t->open) return;
    /* Writes through stdio's own calls (fputs, printf, the flush at exit) or any other call
     * not wrapped here still grow the file: told apart from the counted writes, since the
     * shell that opened `> out` for a program sees the same growth as the program. */
    struct stat st;
    if (t->writable && fstat(fd, &st) == 0 && (uint64_t)st.st_size > t->size_at_open)
        t->grown = (uint64_t)st.st_size - t->size_at_open;
    emit(t);
    free(t->path);
    memset(t, 0, sizeof(*t));
}

static void flush_all(void)
{
    fflush(NULL); /* stdio's buffers reach their files before they are measured */
    pthread_mutex_lock(&lock);
    for (int fd = 0; fd < MAX_FDS; fd++) forget(fd);
    pthread_mutex_unlock(&lock);
}

/* Whether the code at addr is libsluice's (the Python binding loads it into the stage): what it
 * opens is the cache's business, and it tells the stage's reads itself. */
static bool in_libsluice(const void *addr)
{
    Dl_info info;
    return addr && dladdr(addr, &info) && info.dli_fname && strstr(info.dli_fname, "libsluice");
}

static void opened_by(const void *caller, int dirfd, const char *path, int fd, int flags)
{
    if (!ready || in_libsluice(caller)) return;
    opened(dirfd, path, fd, flags);
}

static void opened(int dirfd, const char *path, int fd, int flags)
{
    if (!ready || fd < 0 || fd >= MAX_FDS || !path) return;
    struct stat st;
    if (fstat(fd, &st) < 0) return;
    char full[PATH_MAX];
    if (path[0] == '/') {
        snprintf(full, sizeof(full), "%s", path);
    } else {
        char base[PATH_MAX];
        if (dirfd != AT_FDCWD) {
            char link[64];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", dirfd);
            ssize_t n = readlink(link, base, sizeof(base) - 1);
            if (n < 0) return;
            base[n] = '\0';
        } else if (!getcwd(base, sizeof(base))) {
            return;
        }
        if ((size_t)snprintf(full, sizeof(full), "%s/%s", base, path) >= sizeof(full))
            return; /* longer than a path can be */
    }
    if (!interesting(full, &st)) return;
    pthread_mutex_lock(&lock);
    forget(fd); /* a descriptor closed behind our back (dup2 over it, close_range) */
    struct tfile *t = &files[fd];
    t->path = strdup(full);
    if (t->path) {
        t->open = true;
        t->writable = (flags & O_ACCMODE) != O_RDONLY;
        t->size_at_open = (uint64_t)st.st_size;
        t->pos = (flags & O_APPEND) ? (uint64_t)st.st_size : 0;
    }
    pthread_mutex_unlock(&lock);
}

static void count_read(int fd, uint64_t off, ssize_t n, bool moves)
{
    if (!ready || fd < 0 || fd >= MAX_FDS || n < 0) return;
    pthread_mutex_lock(&lock);
    struct tfile *t = &files[fd];
    if (t->open) {
        if (moves) off = t->pos;
        bool seq = t->read_before ? off == t->next_read : off == 0;
        t->reads++;
        t->bytes_read += (uint64_t)n;
        if (seq)
            t->seq_bytes += (uint64_t)n;
        else
            t->rand_bytes += (uint64_t)n;
        t->read_before = true;
        t->next_read = off + (uint64_t)n;
        if (moves) t->pos = off + (uint64_t)n;
    }
    pthread_mutex_unlock(&lock);
}

static void count_write(int fd, ssize_t n, bool moves)
{
    if (!ready || fd < 0 || fd >= MAX_FDS || n < 0) return;
    pthread_mutex_lock(&lock);
    struct tfile *t = &files[fd];
    if (t->open) {
        t->writes++;
        t->bytes_written += (uint64_t)n;
        if (moves) t->pos += (uint64_t)n;
    }
    pthread_mutex_unlock(&lock);
}

static void moved(int fd, off_t where)
{
    if (!ready || fd < 0 || fd >= MAX_FDS || where < 0) return;
    pthread_mutex_lock(&lock);
    if (files[fd].open) files[fd].pos = (uint64_t)where;
    pthread_mutex_unlock(&lock);
}

/* newfd now names what oldfd names (dup2: the shell's `> out.txt`, dd's if= on stdin). Its
 * own counts start at zero: each descriptor's line adds to the file's total. */
static void duplicated(int oldfd, int newfd)
{
    if (!ready || newfd < 0 || newfd >= MAX_FDS || newfd == out_fd) return;
    pthread_mutex_lock(&lock);
    forget(newfd);
    if (oldfd >= 0 && oldfd < MAX_FDS && files[oldfd].open) {
        struct tfile *t = &files[newfd];
        t->path = strdup(files[oldfd].path);
        if (t->path) {
            t->open = true;
            t->size_at_open = files[oldfd].size_at_open;
            t->writable = files[oldfd].writable;
            t->pos = files[oldfd].pos; /* a shared file offset */
        }
    }
    pthread_mutex_unlock(&lock);
}

/* ---- the wrapped calls (errno kept as the real call left it) ---------------------------- */

#define KEEP_ERRNO(stmt)                                                                        \
    do {                                                                                        \
        int saved_ = errno;                                                                     \
        stmt;                                                                                   \
        errno = saved_;                                                                         \
    } while (0)

static mode_t mode_arg(int flags, va_list ap)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

SL_EXPORT int open(const char *path, int flags, ...)
{
    if (!real_fclose) resolve();
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_open(path, flags, mode);
    KEEP_ERRNO(opened_by(__builtin_return_address(0), AT_FDCWD, path, fd, flags));
    return fd;
}

SL_EXPORT int open64(const char *path, int flags, ...) __attribute__((alias("open")));

SL_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
    if (!real_fclose) resolve();
    va_list ap;
    va_start(ap, flags);
    mode_t mode = mode_arg(flags, ap);
    va_end(ap);
    int fd = real_openat(dirfd, path, flags, mode);
    KEEP_ERRNO(opened_by(__builtin_return_address(0), dirfd, path, fd, flags));
    return fd;
}

SL_EXPORT int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

SL_EXPORT int creat(const char *path, mode_t mode)
{
    if (!real_fclose) resolve();
    return open(path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

SL_EXPORT ssize_t read(int fd, void *buf, size_t len)
{
    if (!real_fclose) resolve();
    ssize_t n = real_read(fd, buf, len);
    KEEP_ERRNO(count_read(fd, 0, n, true));
    return n;
}

SL_EXPORT ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
    if (!real_fclose) resolve();
    ssize_t n = real_pread(fd, buf, len, off);
    KEEP_ERRNO(count_read(fd, (uint64_t)off, n, false));
    return n;
}

SL_EXPORT ssize_t pread64(int fd, void *buf, size_t len, off_t off) __attribute__((alias("pread")));

SL_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    if (!real_fclose) resolve();
    ssize_t got = real_readv(fd, iov, n);
    KEEP_ERRNO(count_read(fd, 0, got, true));
    return got;
}

SL_EXPORT ssize_t write(int fd, const void *buf, size_t len)
{
    if (!real_fclose) resolve();
    ssize_t n = real_write(fd, buf, len);
    KEEP_ERRNO(count_write(fd, n, true));
    return n;
}

SL_EXPORT ssize_t pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (!real_fclose) resolve();
    ssize_t n = real_pwrite(fd, buf, len, off);
    KEEP_ERRNO(count_write(fd, n, false));
    return n;
}

SL_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

SL_EXPORT ssize_t writev(int fd, const struct iovec *iov, int n)
{
    if (!real_fclose) resolve();
    ssize_t put = real_writev(fd, iov, n);
    KEEP_ERRNO(count_write(fd, put, true));
    return put;
}

SL_EXPORT ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t len,
                                  unsigned flags)
{
    uint64_t from = in_off ? (uint64_t)*in_off : 0;
    ssize_t n = real_copy_file_range(in, in_off, out, out_off, len, flags);
    KEEP_ERRNO(count_read(in, from, n, !in_off); count_write(out, n, !out_off));
    return n;
}

SL_EXPORT ssize_t sendfile(int out, int in, off_t *in_off, size_t len)
{
    if (!real_fclose) resolve();
    uint64_t from = in_off ? (uint64_t)*in_off : 0;
    ssize_t n = real_sendfile(out, in, in_off, len);
    KEEP_ERRNO(count_read(in, from, n, !in_off); count_write(out, n, true));
    return n;
}

SL_EXPORT ssize_t sendfile64(int out, int in, off_t *in_off, size_t len) __attribute__((alias("sendfile")));

SL_EXPORT int dup(int fd)
{
    if (!real_fclose) resolve();
    int nfd = real_dup(fd);
    KEEP_ERRNO(if (nfd >= 0) duplicated(fd, nfd));
    return nfd;
}

/* What newfd named is measured before dup2 makes it name something else. */
static void before_replaced(int fd, int nfd)
{
    if (!ready || fd == nfd || nfd < 0 || nfd >= MAX_FDS || nfd == out_fd) return;
    int saved = errno;
    pthread_mutex_lock(&lock);
    forget(nfd);
    pthread_mutex_unlock(&lock);
    errno = saved;
}

SL_EXPORT int dup2(int fd, int nfd)
{
    if (!real_fclose) resolve();
    before_replaced(fd, nfd);
    int r = real_dup2(fd, nfd);
    KEEP_ERRNO(if (r >= 0 && fd != nfd) duplicated(fd, r));
    return r;
}

SL_EXPORT int dup3(int fd, int nfd, int flags)
{
    if (!real_fclose) resolve();
    before_replaced(fd, nfd);
    int r = real_dup3(fd, nfd, flags);
    KEEP_ERRNO(if (r >= 0) duplicated(fd, r));
    return r;
}

SL_EXPORT off_t lseek(int fd, off_t off, int whence)
{
    if (!real_fclose) resolve();
    off_t at = real_lseek(fd, off, whence);
    KEEP_ERRNO(moved(fd, at));
    return at;
}

SL_EXPORT off_t lseek64(int fd, off_t off, int whence) __attribute__((alias("lseek")));

SL_EXPORT int close(int fd)
{
    if (!real_fclose) resolve();
    if (ready && fd >= 0 && fd < MAX_FDS && fd != out_fd) {
        int saved = errno;
        pthread_mutex_lock(&lock);
        forget(fd);
        pthread_mutex_unlock(&lock);
        errno = saved;
    }
    if (fd == out_fd && ready) return 0; /* our own line file stays open to the end */
    return real_close(fd);
}

/* stdio: seen at its own calls (glibc reads and writes underneath without going through the
 * wrapped functions). fread's position is the stream's, which ftello knows. */
SL_EXPORT FILE *fopen(const char *path, const char *mode)
{
    if (!real_fclose) resolve();
    FILE *f = real_fopen(path, mode);
    int fl = strchr(mode, 'a') ? O_APPEND | O_WRONLY : strpbrk(mode, "w+") ? O_WRONLY : 0;
    KEEP_ERRNO(if (f) opened_by(__builtin_return_address(0), AT_FDCWD, path, fileno(f), fl));
    return f;
}

SL_EXPORT FILE *fopen64(const char *path, const char *mode) __attribute__((alias("fopen")));

SL_EXPORT size_t fread(void *buf, size_t size, size_t n, FILE *f)
{
    if (!real_fclose) resolve();
    off_t at = ready ? ftello(f) : -1;
    size_t got = real_fread(buf, size, n, f);
    KEEP_ERRNO(if (at >= 0) count_read(fileno(f), (uint64_t)at, (ssize_t)(got * size), false));
    return got;
}

SL_EXPORT size_t fwrite(const void *buf, size_t size, size_t n, FILE *f)
{
    if (!real_fclose) resolve();
    size_t put = real_fwrite(buf, size, n, f);
    KEEP_ERRNO(count_write(fileno(f), (ssize_t)(put * size), false));
    return put;
}

SL_EXPORT int fclose(FILE *f)
{
    if (!real_fclose) resolve();
    if (ready && f) {
        int fd = fileno(f), saved = errno;
        if (fd >= 0 && fd < MAX_FDS) {
            pthread_mutex_lock(&lock);
            forget(fd);
            pthread_mutex_unlock(&lock);
        }
        errno = saved;
    }
    return real_fclose(f);
}
