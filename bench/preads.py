"""Random preads of one file at seeded offsets, timed inside the process (its start-up is not
the file system's). Prints the seconds.

    /usr/bin/python3 bench/preads.py FILE SIZE COUNT
"""
import os
import random
import sys
import time

path, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
end = os.fstat(fd).st_size - size
rng = random.Random(42)
offs = [rng.randrange(end) // 4096 * 4096 for _ in range(count)]
t = time.monotonic()
for o in offs:
    os.pread(fd, size, o)
print(time.monotonic() - t)
