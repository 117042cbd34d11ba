/*
 * cli_cat.c - `sluice cat [--offset N] [--length N] PATH...`: bytes to stdout, through the
 * cache. Reads are page aligned and a few pages at a time, so a whole-file cat is a sequential
 * stream (read-ahead on) and a range is only the pages it covers.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char help[] =
    "Usage: sluice cat [--offset N] [--length N] PATH...\n"
    "\n"
    "Write each PATH to standard output, reading through the cache.\n"
    "\n"
    "      --offset N   start at byte N (sizes such as 4096 or 1MiB)\n"
    "      --length N   at most N bytes from each file\n"
    "  -h, --help       this help\n";

#define CAT_BUFFER (4U << 20)

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int cli_cat(struct cli *cli, int argc, char **argv)
{
    static const struct option opts[] = {
        {"offset", required_argument, NULL, 'o'}, {"length", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    uint64_t offset = 0, length = UINT64_MAX;
    int c, code = CLI_OK;
    sl_t *sl;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (!cli_parse_size_opt("cat", "--offset", optarg, &offset)) return CLI_USAGE;
            break;
        case 'n':
            if (!cli_parse_size_opt("cat", "--length", optarg, &length)) return CLI_USAGE;
            break;
        case 'h':
            fputs(help, stdout);
            return CLI_OK;
        default:
            return cli_usage_error("cat", "unknown option");
        }
    }
    if (optind >= argc) return cli_usage_error("cat", "missing PATH");
    if (!(sl = cli_open(cli, &code))) return code;

    char *buf = malloc(CAT_BUFFER);
    if (!buf) return cli_error(-ENOMEM, "cat");
    for (int i = optind; i < argc; i++) {
        sl_file_t *f;
        int rc = sl_file_open(sl, argv[i], &f);
        if (rc < 0) {
            code = cli_error(rc, argv[i]);
            continue;
        }
        uint64_t size = sl_file_stat(f)->size;
        uint64_t pos = offset, end = size;
        if (offset < size && length < size - offset) end = offset + length;
        sl_file_advise(f, offset, end > offset ? end - offset : 0, SL_ADVISE_SEQUENTIAL);
        while (pos < end) {
            size_t n, want = (size_t)(end - pos < CAT_BUFFER ? end - pos : CAT_BUFFER);
            if ((rc = sl_file_pread(f, buf, want, pos, &n)) < 0) {
                code = cli_error(rc, argv[i]);
                break;
            }
            if (n == 0) break;
            if ((rc = write_all(STDOUT_FILENO, buf, n)) < 0) {
                sl_file_close(f);
                free(buf);
                return cli_error(rc, "stdout");
            }
            pos += n;
        }
        sl_file_close(f);
    }
    free(buf);
    return code;
}
