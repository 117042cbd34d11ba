"""Drops the kernel's cached pages of files (posix_fadvise DONTNEED), so that the next read of
them through a FUSE mount is answered by the file system, not by the page cache. Directories
are walked.

    /usr/bin/python3 bench/dropcache.py PATH...
"""
import os
import sys


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


for top in sys.argv[1:]:
    if os.path.isdir(top):
        for d, _, files in os.walk(top):
            for name in files:
                drop(os.path.join(d, name))
    else:
        drop(top)
