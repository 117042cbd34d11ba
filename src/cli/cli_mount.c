/*
 * cli_mount.c - `sluice mount [-f] [-o OPT,...] MOUNTPOINT` and `sluice umount MOUNTPOINT`.
 *
 * mount checks the mount point first: a stale one (its sluice was killed: the kernel answers
 * ENOTCONN) is detached and mounted again; one that sluice already serves is an error. Without
 * -f it forks before opening anything (the library's threads do not survive a fork): the child
 * opens the cache, mounts and serves; the parent waits on a pipe and exits 0 only once the
 * mount is ready, or with the child's exit code if it failed (the child has said why on the
 * shared stderr). The daemon then writes its messages to CACHE_DIR/mount.log.
 */
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "fuse/fs.h"

static const char mount_help[] =
    "Usage: sluice mount [-f] [-o OPT[,OPT...]] MOUNTPOINT\n"
    "\n"
    "Mount the namespace (every mount of the config) at MOUNTPOINT as a file system. Reads go\n"
    "through the cache. A file written there is staged on the cache disk and goes to its store\n"
    "when closed (close fails with EIO if the store refuses it; nothing is dropped); after an\n"
    "fsync or a close, it survives a crash: the next mount uploads it. Without -f, sluice\n"
    "returns once the mount is ready and serves it in the background, logging to\n"
    "CACHE_DIR/mount.log; 'sluice umount MOUNTPOINT' ends it. A stale mount point (its sluice\n"
    "was killed: \"Transport endpoint is not connected\") is cleaned up and mounted again.\n"
    "\n"
    "  -f, --foreground  serve in the foreground; Ctrl-C unmounts\n"
    "  -o OPT[,OPT...]   FUSE mount options, e.g. allow_other (see mount.fuse3(8))\n"
    "  -d, --debug       log every FUSE request on stderr (implies -f)\n"
    "  -h, --help        this help\n";

static const char umount_help[] =
    "Usage: sluice umount [-l] MOUNTPOINT\n"
    "\n"
    "Unmount a sluice mount, and wait until the sluice serving it has uploaded what is still\n"
    "staged and finished. It fails while programs have files open there, unless -l.\n"
    "\n"
    "  -l, --lazy  detach now; the mount goes away when the last file is closed\n"
    "  -h, --help  this help\n";

/* True if mountpoint (an absolute, resolved path) is a mount of type fuse.sluice; *pid is the
 * process serving it, 0 if unknown. */
static bool is_sluice_mount(const char *mountpoint, pid_t *pid)
{
    char *m = cli_sluice_mount_of(mountpoint, pid);
    bool found = m && strcmp(m, mountpoint) == 0;
    free(m);
    return found;
}

/* Unmounts with the kernel call as root, else with fusermount3 (setuid) as the user. */
static int unmount(const char *mountpoint, bool lazy)
{
    if (geteuid() == 0) return umount2(mountpoint, lazy ? MNT_DETACH : 0) == 0 ? 0 : -errno;
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        execlp("fusermount3", "fusermount3", lazy ? "-uz" : "-u", "--", mountpoint, (char *)NULL);
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) < 0) return -errno;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EBUSY;
}

/* True while pid runs (a zombie has finished: its new parent may be slow to reap it). */
static bool running(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *end = strrchr(buf, ')'); /* the command name may hold anything */
    return end && end[1] == ' ' && end[2] != 'Z';
}

/* Checks MOUNTPOINT and resolves it into real (PATH_MAX bytes). Prints why it cannot be used. */
static int prepare(const char *mountpoint, char *real)
{
    struct stat st;
    struct statfs sfs;
    char resolved[PATH_MAX];
    pid_t pid = 0;

    /* A FUSE mount whose daemon is gone: statfs always asks the daemon (stat may be answered
     * from the kernel's cache), and a sluice mount names its daemon. */
    bool stale = statfs(mountpoint, &sfs) < 0 && (errno == ENOTCONN || errno == ECONNABORTED);
    if (!stale && realpath(mountpoint, resolved) && is_sluice_mount(resolved, &pid))
        stale = pid > 0 && !running(pid);
    if (stale) {
        /* A FUSE mount whose daemon is gone. */
        int rc = unmount(mountpoint, true);
        if (rc < 0) {
            fprintf(stderr, "sluice: %s: a stale mount that could not be removed: %s\n",
                    mountpoint, strerror(-rc));
            return CLI_FAIL;
        }
        fprintf(stderr, "sluice: %s: removed a stale mount (its sluice had stopped)\n", mountpoint);
    }
    if (!realpath(mountpoint, real) || stat(real, &st) < 0) {
        fprintf(stderr, "sluice: %s: %s%s\n", mountpoint, strerror(errno),
                errno == ENOENT ? " (make the directory first: mkdir -p)" : "");
        return CLI_FAIL;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "sluice: %s: not a directory\n", mountpoint);
        return CLI_FAIL;
    }
    if (is_sluice_mount(real, NULL)) {
        fprintf(stderr, "sluice: %s: sluice is mounted there already (sluice umount %s)\n",
                mountpoint, mountpoint);
        return CLI_FAIL;
    }
    return CLI_OK;
}

struct daemon {
    int ready_fd; /* -1 in the foreground */
    const char *log_path;
};

/* The mount is up: tell the waiting parent, and leave the terminal. */
static void daemon_ready(void *arg)
{
    struct daemon *d = arg;
    if (d->ready_fd < 0) return;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = d->log_path ? open(d->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        dup2(log >= 0 ? log : null, STDERR_FILENO);
    }
    if (null >= 0) close(null);
    if (log >= 0) close(log);
    if (write(d->ready_fd, "", 1) != 1) { /* the parent is gone: nobody to tell */
    }
    close(d->ready_fd);
    d->ready_fd = -1;
}

int cli_mount(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"foreground", no_argument, NULL, 'f'},
                                         {"debug", no_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct sl_fs_options fo = {0};
    struct daemon d = {.ready_fd = -1};
    bool foreground = false;
    char real[PATH_MAX];
    int c, code;

    while ((c = getopt_long(argc, argv, "fo:dh", opts, NULL)) != -1) {
        if (c == 'f') {
            foreground = true;
        } else if (c == 'o') {
            fo.fuse_opts = optarg;
        } else if (c == 'd') {
            fo.debug = foreground = true;
        } else if (c == 'h') {
            fputs(mount_help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("mount", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("mount", optind >= argc ? "missing MOUNTPOINT" : "one MOUNTPOINT only");
    if ((code = prepare(argv[optind], real)) != CLI_OK) return code;
    fo.mountpoint = real;

    if (!foreground) {
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0) return cli_error(-errno, "mount");
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) return cli_error(-errno, "mount");
        if (pid > 0) {
            char byte;
            close(pipefd[1]);
            ssize_t n;
            while ((n = read(pipefd[0], &byte, 1)) < 0 && errno == EINTR) {
            }
            close(pipefd[0]);
            if (n == 1) return CLI_OK;
            int status = 0; /* it failed, and said why */
            waitpid(pid, &status, 0);
            return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : CLI_FAIL;
        }
        close(pipefd[0]);
        setsid();
        d.ready_fd = pipefd[1];
    }

    sl_t *sl = cli_open(cli, &code);
    if (!sl) return code;
    char *log_path = NULL;
    const char *cache_dir = sl_cache_dir(sl);
    if (!foreground && cache_dir && asprintf(&log_path, "%s/mount.log", cache_dir) < 0)
        log_path = NULL;
    d.log_path = log_path;
    fo.ready = daemon_ready;
    fo.ready_arg = &d;
    int rc = sl_fs_serve(sl, &fo);
    free(log_path);
    return rc < 0 ? CLI_FAIL : CLI_OK;
}

int cli_umount(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {{"lazy", no_argument, NULL, 'l'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    bool lazy = false;
    char real[PATH_MAX];
    int c;

    while ((c = getopt_long(argc, argv, "lh", opts, NULL)) != -1) {
        if (c == 'l') {
            lazy = true;
        } else if (c == 'h') {
            fputs(umount_help, stdout);
            return CLI_OK;
        } else {
            return cli_usage_error("umount", "unknown option");
        }
    }
    if (optind != argc - 1)
        return cli_usage_error("umount", optind >= argc ? "missing MOUNTPOINT" : "one MOUNTPOINT only");
    const char *mp = argv[optind];
    struct statfs sfs;
    pid_t pid = 0;
    bool stale = statfs(mp, &sfs) < 0 && (errno == ENOTCONN || errno == ECONNABORTED);
    if (!stale && (!realpath(mp, real) || !is_sluice_mount(real, &pid))) {
        fprintf(stderr, "sluice: %s: no sluice mount there\n", mp);
        return CLI_FAIL;
    }
    int rc = unmount(stale ? mp : real, lazy || stale);
    if (rc == -EBUSY) {
        fprintf(stderr, "sluice: %s: busy: programs have files open there (close them, or "
                        "sluice umount -l to detach now)\n", mp);
        return CLI_FAIL;
    }
    if (rc < 0) return cli_error(rc, mp);
    /* The daemon finishes on its own once the kernel lets go: wait for it, so that what it
     * did (uploads of files still open, counters, the cache index) is settled when we return.
     * A lazy unmount may wait for programs to close their files: not waited for. */
    for (int i = 0; pid > 0 && !lazy && running(pid); i++) {
        if (i == 20 && cli->verbosity >= 0)
            fprintf(stderr, "sluice: %s: waiting for its sluice to upload what is still open...\n",
                    mp);
        usleep(50 * 1000);
    }
    return CLI_OK;
}
