"""The FUSE mount: a real `sluice mount` (the daemon, as users start it) over a local store and
over s3rver, checked with the tools people use on file systems (cp -r, diff -r, find, ls -lR,
du) and byte for byte (sha256, random reads against the source). Also: a killed daemon's
stale mount is recovered, umount waits for the daemon, bad mount points are named."""
import errno
import json
import os
import random
import re
import signal
import subprocess
import threading
import time

from harness import (LARGE, MiB, PAGE, SLUICE, TOOLS, RemoteCase, SluiceCase, main, mount_pid,
                     random_bytes, read_file, sha256_file, wait_for, wait_gone)


def run(*argv, cwd=None):
    return subprocess.run(argv, capture_output=True, timeout=600, cwd=cwd)


def proc_kib(pid, field):
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def make_tree(root, files=1000, seed=1):
    """files small files (0-64 KiB) in nested directories, plus empty and odd-sized ones."""
    rng = random.Random(seed)
    for i in range(files):
        d = os.path.join(root, f"d{i % 10}", f"e{i % 7}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:04d}.bin"), "wb") as f:
            f.write(rng.randbytes(rng.choice([0, 1, 100, 4096, 65536, rng.randrange(65536)])))
    os.makedirs(os.path.join(root, "empty-dir"), exist_ok=True)
    with open(os.path.join(root, "name with spaces & ünïcode.txt"), "wb") as f:
        f.write(b"odd names are names\n")


def tree_listing(root):
    """(relative path, type, size of files) of everything below root, sorted."""
    out = []
    for dirpath, dirs, files in os.walk(root):
        for n in dirs:
            out.append((os.path.relpath(os.path.join(dirpath, n), root), "d", 0))
        for n in files:
            p = os.path.join(dirpath, n)
            out.append((os.path.relpath(p, root), "f", os.path.getsize(p)))
    return sorted(out)


def kernel_resident(path):
    """Bytes of the file the kernel's page cache holds, as one open of it finds them
    (mincore(2) of a shared mapping; the open is the mount's open)."""
    import ctypes
    import mmap
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    size = os.path.getsize(path)
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap " + path)
        vec = ctypes.create_string_buffer(pages)
        try:
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore " + path)
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)
    held = sum(b & 1 for b in vec.raw)
    return min(held * mmap.PAGESIZE, size) if held == pages else held * mmap.PAGESIZE


class MountCase(SluiceCase):

    def settled_stats(self):
        """The cache's figures once the daemon's last counts are in (it adds them to the
        shared index four times a second)."""
        last = self.stats()
        while True:
            time.sleep(0.6)
            now = self.stats()
            if now == last:
                return now
            last = now

    def debug_mount(self, opts, debug=True, **env):
        """A foreground `sluice mount -d` at tmp/mnt: libfuse logs every request the kernel
        sends on its stderr. Returns (mount point, the log's path, the process)."""
        point = os.path.join(self.tmp, "mnt")
        os.makedirs(point, exist_ok=True)
        log = os.path.join(self.tmp, "requests.log")
        with open(log, "wb") as out:
            p = subprocess.Popen([SLUICE, "-c", self.config, "mount", "-f"] +
                                 (["-d"] if debug else []) + ["-o", opts, point],
                                 stdout=out, stderr=out, env={**self.env(), **env}, cwd=self.tmp)
        self.addCleanup(p.wait, 30)
        self.mounted.append(point)
        # Mounted by this process (a stale mount of a killed one may still be there first).
        self.assertTrue(wait_for(lambda: mount_pid(point) == p.pid), "not mounted")
        return point, log, p

    def tearDown(self):
        # A daemon's sanitizer reports go to its log, not to a terminal: fail on them.
        log = os.path.join(self.cache, "mount.log")
        for m in reversed(self.mounted):
            pid = mount_pid(m)
            subprocess.run(["umount", "-l", m], capture_output=True)
            wait_gone(pid)
        self.mounted = []
        text = ""
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                text = f.read()
        super().tearDown()
        self.assertNotIn("Sanitizer", text, text)
        self.assertNotIn("runtime error", text, text)


class LocalMountTest(MountCase):

    def test_tree_copied_out_equals_the_store(self):
        src = os.path.join(self.data, "tree")
        make_tree(src)
        mnt = self.mount()
        out = os.path.join(self.tmp, "out")
        r = run("cp", "-r", os.path.join(mnt, "data", "tree"), out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("diff", "-r", src, out)
        self.assertEqual(r.returncode, 0, r.stdout[:2000])
        # And every file read through the mount a second time (hot), by hash.
        for rel, kind, _ in tree_listing(src):
            if kind == "f":
                self.assertEqual(sha256_file(os.path.join(mnt, "data", "tree", rel)),
                                 sha256_file(os.path.join(src, rel)), rel)

    def test_find_ls_du_agree_with_the_store(self):
        src = os.path.join(self.data, "tree")
        make_tree(src, files=300, seed=2)
        mnt = self.mount()
        view = os.path.join(mnt, "data", "tree")
        self.assertEqual(tree_listing(view), tree_listing(src))

        # find: every entry, type and file size (directories' own sizes differ between file
        # systems: sluice's are 0).
        def find(root):
            out = run("find", ".", "-printf", "%y %s %P\n", cwd=root).stdout.decode()
            return sorted(l if l.startswith("f ") else l.split(" ", 2)[0] + " " + l.split(" ", 2)[2]
                          for l in out.splitlines())
        self.assertEqual(find(view), find(src))

        # ls -lR: the same files with the same sizes.
        def ls(root):
            out = run("ls", "-lR", root).stdout.decode()
            return sorted((l.split(None, 8)[8], int(l.split()[4]))
                          for l in out.splitlines() if l.startswith("-"))
        self.assertEqual(ls(view), ls(src))

        # du: the bytes of the files.
        files_bytes = sum(size for _, kind, size in tree_listing(src) if kind == "f")
        r = run("du", "-sb", "--apparent-size", view)
        self.assertEqual(int(r.stdout.split()[0]), files_bytes)

    def test_large_file_cold_and_hot(self):
        size = LARGE + 4321  # 1 GiB and a bit: pages, runs and a short last page
        src = os.path.join(self.data, "big.bin")
        with open(src, "wb") as f:
            for i in range(0, size, 64 * MiB):
                f.write(random_bytes(min(64 * MiB, size - i), i))
        want = sha256_file(src)
        self.config = self.write_config(size="2GiB")  # all of it fits: the hot read is hits
        mnt = self.mount()
        path = os.path.join(mnt, "data", "big.bin")
        self.assertEqual(os.path.getsize(path), size)
        self.assertEqual(sha256_file(path), want, "cold")
        cold = self.settled_stats()
        self.assertEqual(cold["ufs_bytes_read"], size, "each byte fetched once")
        self.assertEqual(sha256_file(path), want, "hot")
        self.assertEqual(self.settled_stats()["ufs_bytes_read"], size, "hot read hit the store")

    def test_random_reads_equal_the_source(self):
        data = self.make_file("r.bin", 24 * PAGE + 999)
        mnt = self.mount()
        rng = random.Random(7)
        fd = os.open(os.path.join(mnt, "data", "r.bin"), os.O_RDONLY)
        try:
            for _ in range(2000):
                off = rng.randrange(len(data) + 10)
                n = rng.choice([1, 7, 4096, 65536, 131072, rng.randrange(3 * PAGE)])
                self.assertEqual(os.pread(fd, n, off), data[off:off + n], f"{n} at {off}")
        finally:
            os.close(fd)

    def test_pages_on_the_cache_disk_read_exactly(self):
        # RAM holds 4 of the file's 48 pages: after one pass, reads are answered from the
        # cache disk, by descriptor (the kernel reads just the asked bytes of a page file).
        data = self.make_file("d.bin", 48 * PAGE + 4321)
        self.config = self.write_config(memory="4MiB")
        mnt = self.mount()
        path = os.path.join(mnt, "data", "d.bin")
        self.assertEqual(read_file(path), data)
        fetched = self.settled_stats()["ufs_bytes_read"]
        self.assertEqual(fetched, len(data))
        rng = random.Random(11)
        fd = os.open(path, os.O_RDONLY)
        try:
            for _ in range(3000):
                off = rng.randrange(len(data) + 10)
                n = rng.choice([1, 4096, 65536, 131072, 2 * PAGE + 3, rng.randrange(PAGE)])
                self.assertEqual(os.pread(fd, n, off), data[off:off + n], f"{n} at {off}")
        finally:
            os.close(fd)
        self.assertEqual(read_file(path), data)
        self.assertEqual(self.settled_stats()["ufs_bytes_read"], fetched, "a hot read hit the store")

    def test_large_directory_streams(self):
        big = os.path.join(self.data, "many")
        os.makedirs(big)
        names = {f"k{i:06d}" for i in range(5000)}  # many times the lister's ring
        for n in names:
            open(os.path.join(big, n), "w").close()
        mnt = self.mount()
        self.assertEqual(set(os.listdir(os.path.join(mnt, "data", "many"))), names)
        # A directory read part way and read again from the start (rewinddir) by `ls`'s
        # getdents loop through Python: scandir twice on one path.
        with os.scandir(os.path.join(mnt, "data", "many")) as it:
            first = [next(it).name for _ in range(10)]
        self.assertEqual(len(first), 10)
        self.assertEqual(len(list(os.scandir(os.path.join(mnt, "data", "many")))), 5000)

    def test_missing_names(self):
        mnt = self.mount()
        self.assertFalse(os.path.exists(os.path.join(mnt, "data", "nope")))
        self.assertFalse(os.path.exists(os.path.join(mnt, "nomount")))
        self.assertEqual(sorted(os.listdir(mnt)), ["data"])
        with self.assertRaises(OSError) as e:
            open(os.path.join(mnt, "nomount"), "wb").close()
        self.assertEqual(e.exception.errno, errno.EROFS)  # the namespace's own folders
        self.assertEqual(sorted(os.listdir(mnt)), ["data"])

    def test_killed_daemon_leaves_a_stale_mount_that_mount_recovers(self):
        data = self.make_file("s.bin", 3 * PAGE)
        mnt = self.mount()
        pid = mount_pid(mnt)
        self.assertIsNotNone(pid)
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_gone(pid))
        with self.assertRaises(OSError) as e:
            os.listdir(mnt)
        # ENOTCONN ("Transport endpoint is not connected"), or ECONNABORTED right after
        self.assertIn(e.exception.errno, (107, 103))
        r = self.sluice("mount", mnt)
        self.assertIn(b"stale", r.stderr)
        with open(os.path.join(mnt, "data", "s.bin"), "rb") as f:
            self.assertEqual(f.read(), data)

    def test_umount_waits_for_the_daemon(self):
        self.make_file("u.bin", 2 * PAGE)
        mnt = self.mount()
        pid = mount_pid(mnt)
        with open(os.path.join(mnt, "data", "u.bin"), "rb") as f:
            f.read()
            # Busy while a file is open: a clear error, the mount stays.
            r = self.sluice("umount", mnt, expect=1)
            self.assertErrorNames(r, mnt, "busy")
        self.sluice("umount", mnt)
        self.assertIsNone(mount_pid(mnt))
        self.assertTrue(wait_gone(pid, timeout=0), "sluice umount returned before the daemon")
        self.mounted.remove(mnt)
        # Its reads were counted before it went.
        self.assertEqual(self.stats()["ufs_bytes_read"], 2 * PAGE)

    def test_bad_mount_points_are_named(self):
        r = self.sluice("mount", os.path.join(self.tmp, "no-such-dir"), expect=1)
        self.assertErrorNames(r, "no-such-dir", "mkdir")
        plain = os.path.join(self.tmp, "plain-file")
        open(plain, "w").close()
        r = self.sluice("mount", plain, expect=1)
        self.assertErrorNames(r, "plain-file", "not a directory")
        mnt = self.mount()
        r = self.sluice("mount", mnt, expect=1)
        self.assertErrorNames(r, "already")
        r = self.sluice("umount", self.tmp, expect=1)
        self.assertErrorNames(r, "no sluice mount")
        other = os.path.join(self.tmp, "other")
        os.makedirs(other)
        r = self.sluice("mount", "-o", "no_such_option", other, expect=1)
        self.assertIn(b"no_such_option", r.stderr)
        self.assertIsNone(mount_pid(other))
        r = self.sluice("mount", expect=2)
        self.assertIn(b"MOUNTPOINT", r.stderr)
        self.assertIn(b"Usage: sluice mount", self.sluice("mount", "--help").stdout)
        self.assertIn(b"Usage: sluice umount", self.sluice("umount", "--help").stdout)


class ManyReadersTest(MountCase):

    def env(self):
        env = super().env()
        # meson sets it to catch use of uninitialised memory: glibc then writes every byte it
        # hands out (libfuse's 1 MiB request buffers too), and RSS would measure that instead.
        env.pop("MALLOC_PERTURB_", None)
        return env

    def test_thousand_readers_stay_inside_the_memory_budget(self):
        # 1,000 files of 2 pages, all opened, then read at once by 1,000 threads: every
        # stream wants read-ahead, and the budget (cache.memory) is 32 MiB.
        SIZE = MiB + 4096
        names = [f"f{i:04d}.bin" for i in range(1000)]
        for n in names:
            self.make_file(n, SIZE, seed=n)
        self.config = self.write_config(memory="32MiB")
        mnt = self.mount()
        pid = mount_pid(mnt)
        base = proc_kib(pid, "VmRSS")
        fds = [os.open(os.path.join(mnt, "data", n), os.O_RDONLY) for n in names]
        go = threading.Barrier(len(fds))
        bad = []

        def reader(fd, name):
            go.wait()
            chunks = []
            while True:
                b = os.read(fd, 128 << 10)
                if not b:
                    break
                chunks.append(b)
            if b"".join(chunks) != random_bytes(SIZE, name):
                bad.append(name)

        threads = [threading.Thread(target=reader, args=(fd, n)) for fd, n in zip(fds, names)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fd in fds:
            os.close(fd)
        self.assertEqual(bad, [])
        peak = proc_kib(pid, "VmHWM")
        grown = (peak - base) / 1024
        print(f"daemon memory: {base / 1024:.0f} MiB at start, {peak / 1024:.0f} MiB at peak")
        with open(f"/proc/{pid}/maps") as f:
            sanitized = "libasan" in f.read()
        if not sanitized:  # a sanitizer's own memory says nothing here
            # The budget, plus what does not grow with the number of files: the request
            # threads (64 at most, each with its buffers and the page it fetches for its
            # reader, which is never refused) and the index's pages. 1 GiB is read.
            self.assertLess(grown, 32 + 48, f"grew by {grown:.0f} MiB with 1,000 readers")


def duckdb(*args):
    """tests/tools/duckdb.mjs: DuckDB from npm, a real Parquet reader. Returns its JSON rows."""
    r = subprocess.run(["node", os.path.join(TOOLS, "duckdb.mjs"), *args], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"duckdb {args[0]}: {r.stderr}")
    return json.loads(r.stdout) if args[0] == "query" else None


class ParquetTest(MountCase):
    """Structured data is read as small ranges: DuckDB reads a Parquet file's footer, then only
    the column chunks of the row groups a query needs. Through the mount it must get the same
    answer as from a local copy, and the store must be asked for no more than the pages those
    ranges touch."""

    QUERY = ("SELECT k, count(*) AS n, sum(v) AS total FROM t "
             "WHERE id BETWEEN 420000 AND 430000 GROUP BY k ORDER BY k")

    def test_duckdb_reads_only_what_the_query_needs(self):
        local = os.path.join(self.data, "table.parquet")
        duckdb("make", local, "1000000")  # 10 row groups of 100,000 rows, about 40 MB
        size = os.path.getsize(local)
        want = duckdb("query", local, self.QUERY)
        self.assertEqual(len(want), 97)

        # The byte ranges the query needs, from the file's own metadata: the column chunks of
        # id, k and v in the row groups whose id range meets the filter, and the footer.
        meta = duckdb("query", local,
                      "SELECT row_group_id, path_in_schema, stats_min_value, stats_max_value, "
                      "dictionary_page_offset, data_page_offset, total_compressed_size "
                      f"FROM parquet_metadata('{local}')")
        ranges, groups, chunks_end = [], {}, 0
        for rg, col, lo, hi, dict_off, data_off, length in meta:
            start = int(dict_off) if dict_off is not None else int(data_off)
            chunks_end = max(chunks_end, start + int(length))
            if col == "id":
                groups[rg] = int(lo) <= 430000 and int(hi) >= 420000
        for rg, col, _, _, dict_off, data_off, length in meta:
            start = int(dict_off) if dict_off is not None else int(data_off)
            if groups[rg] and col in ("id", "k", "v"):
                ranges.append((start, start + int(length)))
        ranges.append((chunks_end, size))
        # The pages they touch, widened by the kernel's read-ahead of a FUSE file (128 KiB)
        # on both sides, and the file's first page (readers check the magic number there).
        slack = 128 * 1024
        pages = {0}
        for a, b in ranges:
            pages.update(range(max(0, a - slack) // PAGE, (min(size, b + slack) - 1) // PAGE + 1))
        allowed = len(pages) * PAGE

        mnt = self.mount()
        got = duckdb("query", os.path.join(mnt, "data", "table.parquet"), self.QUERY)
        self.assertEqual(got, want)
        fetched = self.settled_stats()["ufs_bytes_read"]
        needed = sum(b - a for a, b in ranges)
        print(f"parquet: {size / MiB:.1f} MiB file, query needs {needed / MiB:.2f} MiB, "
              f"store sent {fetched / MiB:.2f} MiB ({fetched / size:.1%} of the file; "
              f"page-granular bound {allowed / MiB:.0f} MiB)")
        self.assertLessEqual(fetched, allowed, "read more than the pages the query touches")
        self.assertLess(fetched, size / 4)


class LocalWriteTest(MountCase):

    def kill_daemon(self, pid, f):
        """kill -9 of the mount's daemon while f is open on it."""
        os.kill(pid, signal.SIGKILL)
        self.assertTrue(wait_gone(pid))
        try:
            f.close()
        except OSError:
            pass  # the mount is gone: its close cannot be answered

    def refuse_uploads_to_d(self):
        """The store's folder d turns into a file behind the mount: uploads below it fail."""
        os.rename(os.path.join(self.data, "d"), os.path.join(self.tmp, "d-aside"))
        with open(os.path.join(self.data, "d"), "wb") as blocker:
            blocker.write(b"not a folder")

    def take_uploads_to_d(self):
        os.unlink(os.path.join(self.data, "d"))
        os.rename(os.path.join(self.tmp, "d-aside"), os.path.join(self.data, "d"))

    def test_tree_copied_in_lands_in_the_store(self):
        src = os.path.join(self.tmp, "src")
        make_tree(src, files=300, seed=4)
        with open(os.path.join(src, "big.bin"), "wb") as f:
            f.write(random_bytes(20 * MiB + 3, "big"))
        mnt = self.mount()
        r = run("cp", "-r", src, os.path.join(mnt, "data", "in"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("diff", "-r", src, os.path.join(self.data, "in"))  # the store itself
        self.assertEqual(r.returncode, 0, r.stdout[:2000])
        r = run("diff", "-r", src, os.path.join(mnt, "data", "in"))  # and through the mount
        self.assertEqual(r.returncode, 0, r.stdout[:2000])
        self.assertEqual(os.listdir(os.path.join(self.cache, "journal")), [], "journal emptied")

    def test_overwrite_append_truncate_and_read_back(self):
        old = self.make_file("f.bin", 3 * PAGE)
        mnt = self.mount()
        path = os.path.join(mnt, "data", "f.bin")
        self.assertEqual(read_file(path), old)  # cached now
        with open(path, "r+b") as f:  # in place: the rest of the old bytes stay
            f.seek(PAGE + 5)
            f.write(b"middle")
        new = old[:PAGE + 5] + b"middle" + old[PAGE + 11:]
        self.assertEqual(read_file(os.path.join(self.data, "f.bin")), new)
        self.assertEqual(read_file(path), new, "no stale cached page")
        with open(path, "ab") as f:
            f.write(b"tail")
        self.assertEqual(read_file(os.path.join(self.data, "f.bin")), new + b"tail")
        os.truncate(path, 10)
        self.assertEqual(read_file(os.path.join(self.data, "f.bin")), new[:10])
        with open(path, "wb") as f:  # O_TRUNC
            f.write(b"short")
        self.assertEqual(read_file(path), b"short")
        self.assertEqual(os.path.getsize(path), 5)
        open(os.path.join(mnt, "data", "empty"), "wb").close()
        self.assertEqual(read_file(os.path.join(self.data, "empty")), b"")

    def test_names_change_in_the_store(self):
        mnt = self.mount()
        d = os.path.join(mnt, "data")
        os.mkdir(os.path.join(d, "new"))
        self.assertTrue(os.path.isdir(os.path.join(self.data, "new")))
        with self.assertRaises(FileExistsError):
            os.mkdir(os.path.join(d, "new"))
        with open(os.path.join(d, "new", "a.txt"), "wb") as f:
            f.write(b"a")
        with self.assertRaises(OSError) as e:
            os.rmdir(os.path.join(d, "new"))
        self.assertEqual(e.exception.errno, errno.ENOTEMPTY)
        # The safe save: write a temp name, fsync, rename over the real one.
        with open(os.path.join(d, "new", "a.txt.tmp"), "wb") as f:
            f.write(b"second")
            f.flush()
            os.fsync(f.fileno())
            os.rename(os.path.join(d, "new", "a.txt.tmp"), os.path.join(d, "new", "a.txt"))
        self.assertEqual(read_file(os.path.join(self.data, "new", "a.txt")), b"second")
        self.assertEqual(sorted(os.listdir(os.path.join(self.data, "new"))), ["a.txt"])
        self.assertEqual(read_file(os.path.join(d, "new", "a.txt")), b"second")
        os.rename(os.path.join(d, "new"), os.path.join(d, "renamed"))
        self.assertEqual(read_file(os.path.join(d, "renamed", "a.txt")), b"second")
        os.unlink(os.path.join(d, "renamed", "a.txt"))
        self.assertFalse(os.path.exists(os.path.join(self.data, "renamed", "a.txt")))
        os.rmdir(os.path.join(d, "renamed"))
        self.assertEqual(os.listdir(self.data), [])
        os.mkdir(os.path.join(d, "dir"))
        with self.assertRaises(IsADirectoryError):
            os.unlink(os.path.join(d, "dir"))

    def test_fsync_survives_kill_9(self):
        data = random_bytes(5 * MiB + 17, "durable")
        mnt = self.mount()
        pid = mount_pid(mnt)
        f = open(os.path.join(mnt, "data", "ingest.bin"), "wb")
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # acknowledged: from here on it must not be lost
        self.kill_daemon(pid, f)
        self.assertFalse(os.path.exists(os.path.join(self.data, "ingest.bin")), "not uploaded yet")
        r = self.sluice("mount", mnt)  # recovers the stale mount and the journal
        self.assertIn(b"stopped mount", r.stderr)
        self.assertEqual(read_file(os.path.join(self.data, "ingest.bin")), data)
        self.assertEqual(read_file(os.path.join(mnt, "data", "ingest.bin")), data)

    def test_failed_upload_is_eio_and_nothing_is_dropped(self):
        os.makedirs(os.path.join(self.data, "d"))
        mnt = self.mount()
        f = open(os.path.join(mnt, "data", "d", "x.bin"), "wb")
        f.write(b"precious")
        self.refuse_uploads_to_d()
        with self.assertRaises(OSError) as e:
            f.close()
        self.assertEqual(e.exception.errno, errno.EIO)
        self.assertTrue(os.listdir(os.path.join(self.cache, "journal")), "kept in the journal")
        # The store comes back: the file is there for readers and listed once (staged, or in
        # the store if the retry was quick), and the mount's retry uploads it, no unmount.
        self.take_uploads_to_d()
        self.assertEqual(os.listdir(os.path.join(mnt, "data", "d")), ["x.bin"])
        self.assertEqual(read_file(os.path.join(mnt, "data", "d", "x.bin")), b"precious")
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(self.data, "d", "x.bin"))),
                        "the retry did not upload it")
        self.assertEqual(read_file(os.path.join(self.data, "d", "x.bin")), b"precious")
        self.assertTrue(wait_for(lambda: not os.listdir(os.path.join(self.cache, "journal"))))
        self.assertEqual(os.listdir(os.path.join(mnt, "data", "d")), ["x.bin"])

    def test_refused_at_recovery_is_kept_and_retried_by_the_mount(self):
        os.makedirs(os.path.join(self.data, "d"))
        mnt = self.mount()
        pid = mount_pid(mnt)
        f = open(os.path.join(mnt, "data", "d", "y.bin"), "wb")
        f.write(b"acknowledged")
        f.flush()
        os.fsync(f.fileno())
        self.kill_daemon(pid, f)
        # The next mount finds the store refusing too: it mounts, and keeps the file staged.
        self.refuse_uploads_to_d()
        r = self.sluice("mount", mnt)
        self.assertIn(b"kept in the journal", r.stderr)
        self.assertTrue(os.listdir(os.path.join(self.cache, "journal")))
        self.take_uploads_to_d()
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(self.data, "d", "y.bin"))),
                        "the retry did not upload it")
        self.assertEqual(read_file(os.path.join(self.data, "d", "y.bin")), b"acknowledged")
        self.assertEqual(read_file(os.path.join(mnt, "data", "d", "y.bin")), b"acknowledged")
        self.assertTrue(wait_for(lambda: not os.listdir(os.path.join(self.cache, "journal"))))

    def test_read_only_mount_with_uploads_waiting_keeps_its_opens(self):
        # A killed mount left an acknowledged file its store still refuses. A read-only mount of
        # the (immutable) dataset then reads it from the journal, and the store changes once it
        # goes up: the kernel must keep asking at every open.
        os.makedirs(os.path.join(self.data, "d"))
        self.config = self.write_config(
            mounts={"/data": f"\n    uri: file://{self.data}\n    metadata_ttl: -1"})
        mnt = self.mount()
        pid = mount_pid(mnt)
        f = open(os.path.join(mnt, "data", "d", "y.bin"), "wb")
        f.write(b"acknowledged")
        f.flush()
        os.fsync(f.fileno())
        self.kill_daemon(pid, f)
        self.refuse_uploads_to_d()
        mnt, log, proc = self.debug_mount("ro")
        for _ in range(3):
            self.assertEqual(read_file(os.path.join(mnt, "data", "d", "y.bin")), b"acknowledged")
        self.take_uploads_to_d()
        self.assertTrue(wait_for(lambda: os.path.exists(os.path.join(self.data, "d", "y.bin"))),
                        "the retry did not upload it")
        self.assertEqual(read_file(os.path.join(mnt, "data", "d", "y.bin")), b"acknowledged")
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)
        with open(log, errors="replace") as f:
            text = f.read()
        self.assertNotIn("the kernel opens files itself", text)
        self.assertEqual(len(re.findall(r"opcode: OPEN ", text)), 4, text[-2000:])

    def test_files_being_written_are_listed(self):
        self.make_file("old.bin", 100)
        mnt = self.mount()
        d = os.path.join(mnt, "data")
        with open(os.path.join(d, "new.bin"), "wb") as new, \
                open(os.path.join(d, "old.bin"), "r+b") as old:
            new.write(b"x" * 1000)
            new.flush()
            old.seek(0, os.SEEK_END)
            old.write(b"y" * 50)
            old.flush()
            self.assertFalse(os.path.exists(os.path.join(self.data, "new.bin")), "not uploaded")
            # Listed at once, each name once, at the size written so far.
            self.assertEqual(sorted(os.listdir(d)), ["new.bin", "old.bin"])
            r = run("ls", "-l", d)
            self.assertEqual(r.returncode, 0, r.stderr)
            sizes = {ln.split()[-1].decode(): int(ln.split()[4]) for ln in r.stdout.splitlines()[1:]}
            self.assertEqual(sizes, {"new.bin": 1000, "old.bin": 150})
            os.mkdir(os.path.join(d, "sub"))
            with open(os.path.join(d, "sub", "deep.bin"), "wb") as deep:
                deep.write(b"z")
                deep.flush()
                self.assertEqual(os.listdir(os.path.join(d, "sub")), ["deep.bin"])
                self.assertEqual(sorted(os.listdir(d)), ["new.bin", "old.bin", "sub"])
        self.assertEqual(sorted(os.listdir(d)), ["new.bin", "old.bin", "sub"])
        self.assertEqual(sorted(os.listdir(self.data)), ["new.bin", "old.bin", "sub"])

    def test_unacknowledged_bytes_are_not_uploaded_by_recovery(self):
        mnt = self.mount()
        pid = mount_pid(mnt)
        f = open(os.path.join(mnt, "data", "half.bin"), "wb")
        f.write(b"never synced")
        f.flush()  # to the daemon, but no fsync and no close: not acknowledged
        self.kill_daemon(pid, f)
        self.sluice("mount", mnt)
        self.assertFalse(os.path.exists(os.path.join(self.data, "half.bin")))
        self.assertEqual(os.listdir(os.path.join(self.cache, "journal")), [], "dropped")


class EdgeTest(MountCase):

    def test_full_journal_disk_is_enospc_for_the_writer(self):
        small = os.path.join(self.tmp, "small-fs")
        self.mount_tmpfs(small, "size=16m")
        self.config = self.write_config(cache_dir=os.path.join(small, "cache"))
        mnt = self.mount()
        f = open(os.path.join(mnt, "data", "huge.bin"), "wb", buffering=0)
        with self.assertRaises(OSError) as e:
            for _ in range(32):
                f.write(b"x" * MiB)
        self.assertEqual(e.exception.errno, errno.ENOSPC)  # the writer hears it at once
        try:
            f.close()  # uploads what was written, if the full disk lets it be acknowledged
        except OSError as closed:
            self.assertEqual(closed.errno, errno.EIO)
        # The kernel sends the release after close() has returned: the space comes back then
        # (the file system may take a moment more to count it free).
        journal = os.path.join(small, "cache", "journal")
        for _ in range(200):
            st = os.statvfs(small)
            if not os.listdir(journal) and st.f_bavail * st.f_frsize > 8 * MiB:
                break
            time.sleep(0.05)
        self.assertEqual(os.listdir(journal), [], "the journal gave the space back")
        st = os.statvfs(small)
        self.assertGreater(st.f_bavail * st.f_frsize, 8 * MiB, "the journal gave the space back")
        # The mount goes on: a file that fits is written and lands in the store.
        with open(os.path.join(mnt, "data", "ok.txt"), "wb") as f:
            f.write(b"fits")
        self.assertEqual(read_file(os.path.join(self.data, "ok.txt")), b"fits")

    def test_object_changed_under_an_open_file_is_estale(self):
        size = 64 * PAGE
        data = self.make_file("c.bin", size)
        second = random_bytes(size, "second version")
        mnt = self.mount()
        fd = os.open(os.path.join(mnt, "data", "c.bin"), os.O_RDONLY)
        try:
            self.assertEqual(os.pread(fd, 100, 2 * PAGE), data[2 * PAGE:2 * PAGE + 100])
            path = os.path.join(self.data, "c.bin")
            with open(path + ".new", "wb") as g:
                g.write(second)
            os.utime(path + ".new", (1, 1))
            os.rename(path + ".new", path)
            # A page of the old version that nobody fetched: never served as a mix of the two.
            with self.assertRaises(OSError) as e:
                os.pread(fd, 100, 60 * PAGE)
            self.assertEqual(e.exception.errno, errno.ESTALE)
        finally:
            os.close(fd)
        with open(os.path.join(mnt, "data", "c.bin"), "rb") as f:  # opened again: the new one
            f.seek(60 * PAGE)
            self.assertEqual(f.read(100), second[60 * PAGE:60 * PAGE + 100])


    def test_kernel_keeps_the_pages_of_an_unchanged_version_only(self):
        # A mount whose every open asks the store (file://: metadata_ttl 0).
        data = self.make_file("k.bin", 6 * PAGE + 77)
        mnt = self.mount()
        path = os.path.join(mnt, "data", "k.bin")
        self.assertEqual(read_file(path), data)
        # Opened again, unchanged: the open keeps the kernel's pages of the file. They are
        # looked at right after the open (mincore), not counted by the reads that follow: the
        # kernel may let some go under memory pressure from elsewhere on the machine, and a
        # read that then reaches sluice is no fault of the open. An open that dropped them
        # (no keep_cache) leaves none, however often it is tried.
        for _ in range(5):
            held = kernel_resident(path)
            if held == len(data):
                break
            read_file(path)
        self.assertEqual(held, len(data))

        def replace(content, stamp):
            src = os.path.join(self.data, "k.bin")
            with open(src + ".new", "wb") as f:
                f.write(content)
            os.utime(src + ".new", (stamp, stamp))
            os.rename(src + ".new", src)

        # Changed in the store (same size): the next open reads the new bytes, never old pages.
        second = random_bytes(len(data), "k second")
        replace(second, 1000)
        self.assertEqual(read_file(path), second)
        # A reader of that version still open when a newer one is opened reads no more: its
        # reads would bring old pages into the cache the newer opens read from.
        third = random_bytes(len(data), "k third")
        with open(path, "rb") as old:
            old.seek(PAGE)
            self.assertEqual(old.read(100), second[PAGE:PAGE + 100])
            replace(third, 2000)
            with open(path, "rb") as new:
                new.seek(4 * PAGE)
                self.assertEqual(new.read(PAGE), third[4 * PAGE:5 * PAGE])
                with self.assertRaises(OSError) as e:
                    os.pread(old.fileno(), 100, 2 * PAGE)
                self.assertEqual(e.exception.errno, errno.ESTALE)
        self.assertEqual(read_file(path), third)
        # Written through the mount: read back as written.
        with open(path, "r+b") as f:
            f.write(b"written here")
        self.assertEqual(read_file(path), b"written here" + third[12:])
        self.assertEqual(read_file(os.path.join(self.data, "k.bin")), b"written here" + third[12:])


    def test_read_only_immutable_mount_sends_no_opens(self):
        # -o ro over a dataset that cannot change (metadata_ttl: -1): the kernel opens files
        # itself, so a re-read of small files whose pages it holds is no request to sluice.
        files = {f"s/{i}.bin": self.make_file(f"s/{i}.bin", 3000 + 977 * i) for i in range(40)}
        files["big.bin"] = self.make_file("big.bin", 5 * PAGE + 9)
        self.config = self.write_config(
            mounts={"/data": f"\n    uri: file://{self.data}\n    metadata_ttl: -1"})
        mnt, log, proc = self.debug_mount("ro")

        def requests():
            with open(log, errors="replace") as f:
                ops = re.findall(r"opcode: ([A-Z_]+)", f.read())
            return {op: ops.count(op) for op in ("OPEN", "FLUSH", "RELEASE", "READ", "FORGET")}

        def read_all():
            for rel, data in files.items():
                self.assertEqual(read_file(os.path.join(mnt, "data", rel)), data, rel)

        read_all()
        first = requests()
        # The first open and the first close were answered ENOSYS: the kernel sends none again.
        self.assertLessEqual(first["OPEN"], 1, first)
        self.assertLessEqual(first["FLUSH"], 1, first)
        self.assertEqual(first["RELEASE"], 0, first)
        self.assertGreater(first["READ"], 0, first)
        read_all()
        again = requests()
        for op in ("OPEN", "FLUSH", "RELEASE"):
            self.assertEqual(again[op], first[op], again)
        # The kernel's pages dropped: reads reach sluice again with no handle, and are served
        # by the one its node keeps.
        for rel in files:
            fd = os.open(os.path.join(mnt, "data", rel), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        read_all()
        dropped = requests()
        self.assertGreater(dropped["READ"], again["READ"], dropped)
        # The kernel forgets the inodes: their handles are closed, and a new read opens anew.
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        read_all()
        with self.assertRaises(OSError) as e:
            open(os.path.join(mnt, "data", "new.bin"), "wb")
        self.assertEqual(e.exception.errno, errno.EROFS)
        with open(os.path.join(mnt, "data", "s", "1.bin"), "rb") as f:
            os.fsync(f.fileno())  # a reader's fsync: nothing to do, and no handle to do it on
        # No order can be handed to it: the control file cannot be written, and the CLI says why.
        order = os.path.join(self.tmp, "order.txt")
        with open(order, "w") as f:
            f.write(os.path.join(mnt, "data", "s", "1.bin") + "\n")
        r = self.sluice("load", "--order", order, expect=1)
        self.assertIn(b"is read-only (-o ro)", r.stderr)
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)
        with open(log, errors="replace") as f:
            text = f.read()
        self.assertIn("the kernel opens files itself", text)
        self.assertNotIn("Sanitizer", text, text)
        self.assertNotIn("runtime error", text, text)
        # The last of ro and rw wins, as in mount(8): "ro,rw" is writable, and keeps its opens.
        mnt, log, proc = self.debug_mount("ro,rw")
        with open(os.path.join(mnt, "data", "new.bin"), "wb") as f:
            f.write(b"written")
        self.assertEqual(read_file(os.path.join(self.data, "new.bin")), b"written")
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)
        with open(log, errors="replace") as f:
            self.assertNotIn("the kernel opens files itself", f.read())

    def test_immutable_listings_are_kept_by_the_kernel(self):
        # metadata_ttl -1: the kernel keeps a directory's listing from one open to the next, so
        # a second `ls` sends no READDIR; a name made through the mount still shows at once.
        for i in range(300):
            self.make_file(f"d/{i % 3}/{i}.bin", 10 + i)
        self.config = self.write_config(
            mounts={"/data": f"\n    uri: file://{self.data}\n    metadata_ttl: -1"})
        mnt, log, proc = self.debug_mount("rw")

        def listings():
            with open(log, errors="replace") as f:
                return len(re.findall(r"opcode: READDIR", f.read()))

        def walk():
            return sorted(os.path.join(d, n) for d, ds, fs in os.walk(os.path.join(mnt, "data"))
                          for n in ds + fs)

        first = walk()
        self.assertEqual(len(first), 1 + 3 + 300)
        sent = listings()
        self.assertGreater(sent, 0)
        self.assertEqual(walk(), first)
        self.assertEqual(listings(), sent)
        with open(os.path.join(mnt, "data", "d", "1", "new.bin"), "wb") as f:
            f.write(b"new")
        self.assertIn(os.path.join(mnt, "data", "d", "1", "new.bin"), walk())
        self.assertGreater(listings(), sent)  # that folder's listing was asked for again
        # A rename and an unlink through the mount drop the kept listings too.
        d = os.path.join(mnt, "data", "d")
        os.rename(os.path.join(d, "1", "new.bin"), os.path.join(d, "2", "moved.bin"))
        os.unlink(os.path.join(d, "0", "0.bin"))
        now = walk()
        self.assertNotIn(os.path.join(d, "1", "new.bin"), now)
        self.assertIn(os.path.join(d, "2", "moved.bin"), now)
        self.assertNotIn(os.path.join(d, "0", "0.bin"), now)
        self.assertEqual(len(now), len(first))
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)
        # With a TTL the store may change under the mount: every listing is asked for.
        self.config = self.write_config(mounts={"/data": f"\n    uri: file://{self.data}"})
        mnt, log, proc = self.debug_mount("rw")
        walk()
        sent = listings()
        self.make_file("d/2/outside.bin", 5)
        self.assertIn(os.path.join(mnt, "data", "d", "2", "outside.bin"), walk())
        self.assertGreater(listings(), sent)
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)

    def test_open_free_mount_keeps_a_bounded_number_of_handles(self):
        # The handles an open-free mount keeps for the kernel's files are at most 4,096: past
        # that, the least recently read is closed. Each close writes the file's access record
        # (SLUICE_TRACE_DIR), which counts them.
        count = 4096 + 300
        files = {f"m/{i // 500}/{i}.bin": self.make_file(f"m/{i // 500}/{i}.bin", 700 + i % 97)
                 for i in range(count)}
        self.config = self.write_config(
            mounts={"/data": f"\n    uri: file://{self.data}\n    metadata_ttl: -1"})
        trace = os.path.join(self.tmp, "trace")
        os.makedirs(trace)
        mnt, log, proc = self.debug_mount("ro", debug=False, SLUICE_TRACE_DIR=trace)

        def closed():
            paths = []
            for name in os.listdir(trace):
                with open(os.path.join(trace, name)) as f:
                    paths += [line.split("\t")[0] for line in f if line.strip()]
            return paths

        def check(rel):
            self.assertEqual(read_file(os.path.join(mnt, "data", rel)), files[rel], rel)

        # Eight readers at once: handles are opened, shared and pushed out concurrently.
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(check, files))
        early = len(closed())
        self.assertGreaterEqual(early, count - 4096)
        self.assertLess(early, count)
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)
        # At unmount the rest are closed: every file's handle once.
        self.assertEqual(sorted(closed()), sorted("/data/" + rel for rel in files))

    def test_read_only_mount_of_a_changing_store_opens_as_usual(self):
        # metadata_ttl 0 (file://'s default): every open must pin the store's version, so the
        # kernel sends each one, read-only or not.
        files = {f"{i}.bin": self.make_file(f"{i}.bin", 5000 + i) for i in range(10)}
        mnt, log, proc = self.debug_mount("ro")
        for rel, data in files.items():
            self.assertEqual(read_file(os.path.join(mnt, "data", rel)), data)
        with open(log, errors="replace") as f:
            text = f.read()
        self.assertEqual(len(re.findall(r"opcode: OPEN ", text)), len(files), text[-2000:])
        self.assertNotIn("the kernel opens files itself", text)
        self.sluice("umount", mnt)
        self.assertEqual(proc.wait(30), 0)


class S3MountTest(RemoteCase):

    def s3_and_tree(self, files, seed):
        """s3rver with bucket "data" as /s3, and a local tree of files plus a 40 MiB file
        (several multipart parts) in tmp/src."""
        s3 = self.start_s3("data")
        self.config = self.s3_config(s3, "s3://data")
        src = os.path.join(self.tmp, "src")
        make_tree(src, files=files, seed=seed)
        with open(os.path.join(src, "large.bin"), "wb") as f:
            f.write(random_bytes(40 * MiB + 5, "large"))
        return s3, src

    def test_thousand_objects_and_a_gigabyte_by_hash(self):
        # Written straight into s3rver's folder: seconds, where uploading 1 GiB takes a minute.
        want = {}

        def put(key, chunks):
            want[key] = self.s3_seed("data", key, chunks)

        for i in range(1000):
            put(f"many/d{i % 10}/f{i:04d}.bin", [random_bytes(random.Random(i).randrange(1, 65536), i)])
        size = LARGE + 777
        put("big/g.bin", (random_bytes(min(64 * MiB, size - o), o) for o in range(0, size, 64 * MiB)))
        s3 = self.start_s3("data")
        self.config = self.s3_config(s3, "s3://data", size="2GiB")
        mnt = self.mount()
        got = {}
        for d, _, files in os.walk(os.path.join(mnt, "s3")):
            for n in files:
                p = os.path.join(d, n)
                got[os.path.relpath(p, os.path.join(mnt, "s3"))] = sha256_file(p)
        self.assertEqual(got, want)
        # And hot: every byte of the gigabyte from the cache.
        before = self.settled_stats()["ufs_bytes_read"]
        self.assertEqual(sha256_file(os.path.join(mnt, "s3", "big", "g.bin")), want["big/g.bin"])
        self.assertEqual(self.settled_stats()["ufs_bytes_read"], before)

    def settled_stats(self):
        return MountCase.settled_stats(self)

    def test_objects_read_through_the_mount_equal_aws(self):
        s3, src = self.s3_and_tree(200, 3)
        self.aws(s3, "s3", "sync", src, "s3://data/set", "--only-show-errors")
        mnt = self.mount()
        view = os.path.join(mnt, "s3", "set")
        self.assertEqual(tree_listing(view), [e for e in tree_listing(src) if e[0] != "empty-dir"])
        out = os.path.join(self.tmp, "out")
        r = run("cp", "-r", view, out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run("diff", "-r", "-x", "empty-dir", src, out)
        self.assertEqual(r.returncode, 0, r.stdout[:2000])
        self.assertEqual(sha256_file(os.path.join(view, "large.bin")),
                         sha256_file(os.path.join(src, "large.bin")))

    def front_gets(self, s3, prefix):
        import urllib.request
        with urllib.request.urlopen(f"{s3.url}/__front__/gets", timeout=10) as r:
            return [k for k in json.loads(r.read()) if k.startswith(prefix)]

    def test_read_ahead_shares_the_link_among_streams(self):
        # One stream reads ahead with up to 4 runs in flight; streams at once share 16 (and
        # each has a run more for the pages its reader waits on now). Runs wait for one of the
        # 16 threads that fetch them: were each of 7 streams to ask for 4, a reader that
        # starts among them would find its first run queued behind 12 runs far ahead of other
        # readers, and wait for them to cross the link.
        names = [f"s{i}.bin" for i in range(10)]
        for n in names:
            self.s3_seed("data", f"ra/{n}", [random_bytes(16 * MiB, n)])
        s3 = self.start_s3("data")
        far = self.start_throttle(s3, latency_ms=20, bandwidth="40MB")
        self.config = self.s3_config(far, "s3://data", page_size="256KiB",
                                     extra_mount="metadata_ttl: -1")
        mnt = self.mount()
        bad = []

        def read(n):
            try:
                if read_file(os.path.join(mnt, "s3", "ra", n)) != random_bytes(16 * MiB, n):
                    bad.append(n)
            except OSError as e:
                bad.append(f"{n}: {e}")

        def first_bytes(n):
            want = random_bytes(16 * MiB, n)[:128 << 10]
            t = time.monotonic()
            with open(os.path.join(mnt, "s3", "ra", n), "rb") as f:
                got = f.read(128 << 10)
            took = time.monotonic() - t
            self.assertEqual(got, want)
            return took

        read(names[0])
        one = self.throttle_stats(far)["max_in_flight"]
        alone = first_bytes(names[9])
        threads = [threading.Thread(target=read, args=(n,)) for n in names[1:8]]
        for t in threads:
            t.start()
        try:
            time.sleep(1)  # the 7 streams' read-ahead is at its full depth
            among = first_bytes(names[8])
        finally:
            for t in threads:
                t.join()
        print(f"first 128 KiB: alone {alone:.3f} s, among 7 streams {among:.3f} s; "
              f"runs in flight at most: {one} for one stream")
        self.assertEqual(bad, [])
        self.assertGreaterEqual(one, 4, "one stream keeps its 4 runs in flight")
        # Its share of the link, against the 1.7-1.9 s that 4 runs a stream made it wait here
        # behind the others' runs far ahead (0.5 s with a share).
        self.assertLess(among, alone + 1.1, "a reader among 7 streams waits for runs far ahead")

    def test_epoch_order_through_the_control_file(self):
        s3 = self.start_s3("data")
        far = self.start_throttle(s3, latency_ms=20)
        # 8 MiB of RAM: the prefetch may hold 4 MiB, 40 samples of 100 KiB.
        self.config = self.s3_config(far, "s3://data", memory="8MiB",
                                     extra_mount="metadata_ttl: -1")
        src = os.path.join(self.tmp, "src")
        os.makedirs(src)
        names = [f"s{i:03d}.jpg" for i in range(120)]
        for n in names:
            with open(os.path.join(src, n), "wb") as f:
                f.write(random_bytes(100 * 1024, n))
        self.aws(s3, "s3", "sync", src, "s3://data/train", "--only-show-errors")
        mnt = self.mount()
        order = names[:]
        random.Random(5).shuffle(order)
        with open(os.path.join(mnt, ".sluice", "order"), "w") as f:
            f.write("".join(f"{mnt}/s3/train/{n}\n" for n in order))
        time.sleep(2)  # the window fills, and stops at the budget
        ahead = len(self.front_gets(s3, "data/train/"))
        self.assertGreaterEqual(ahead, 30, "fetched ahead of the reader")
        self.assertLessEqual(ahead, 41, "no more than the budget ahead of the reader")
        # The reader takes 10 ms a sample (its "compute"), slower than the store can deliver
        # with a few fetches in flight: every sample is fetched ahead of it.
        for k, n in enumerate(order):
            with open(os.path.join(mnt, "s3", "train", n), "rb") as f:
                self.assertEqual(f.read(), read_file(os.path.join(src, n)), n)
            time.sleep(0.01)
            if k == 59:
                time.sleep(1)
                self.assertLessEqual(len(self.front_gets(s3, "data/train/")), 60 + 41)
        status = json.loads(read_file(os.path.join(mnt, ".sluice", "order")))
        self.assertEqual((status["items"], status["position"]), (120, 120))
        self.assertEqual((status["fetched"], status["skipped"]), (120, 0))
        gets = self.front_gets(s3, "data/train/")
        # Each sample fetched once (the reader's reads were all in RAM), in the order given
        # but for fetches in flight together.
        self.assertEqual(sorted(gets), sorted(f"data/train/{n}" for n in names))
        rank = [order.index(g.rsplit("/", 1)[1]) for g in gets]
        for k in range(1, len(rank)):
            self.assertGreater(rank[k], max(rank[:k]) - 16, f"GET {k} out of order: {rank}")
        # A bad order is refused at close, and names its line in the mount's log.
        with self.assertRaises(OSError) as e:
            with open(os.path.join(mnt, ".sluice", "order"), "w") as f:
                f.write(f"{mnt}/s3/train/{names[0]}\t0\tlots\n")
        self.assertEqual(e.exception.errno, errno.EINVAL)
        # And so is a path no mount holds, named in the log; the order before goes on.
        with self.assertRaises(OSError) as e:
            with open(os.path.join(mnt, ".sluice", "order"), "w") as f:
                f.write("/nowhere/x.jpg\n")
        self.assertEqual(e.exception.errno, errno.EINVAL)
        self.assertEqual(json.loads(read_file(os.path.join(mnt, ".sluice", "order")))["items"], 120)
        # Appended (>>), a bad order is refused the same and appends nothing; a good one goes
        # on the end of the running order.
        with self.assertRaises(OSError) as e:
            with open(os.path.join(mnt, ".sluice", "order"), "a") as f:
                f.write(f"{mnt}/s3/train/{names[1]}\n/nowhere/y.jpg\n")
        self.assertEqual(e.exception.errno, errno.EINVAL)
        self.assertEqual(json.loads(read_file(os.path.join(mnt, ".sluice", "order")))["items"], 120)
        with open(os.path.join(mnt, ".sluice", "order"), "a") as f:
            f.write("".join(f"{mnt}/s3/train/{n}\n" for n in order))
        self.assertEqual(json.loads(read_file(os.path.join(mnt, ".sluice", "order")))["items"], 240)
        with open(os.path.join(self.cache, "mount.log")) as f:
            log = f.read()
        self.assertIn("line 1: expected PATH", log)
        self.assertIn("/nowhere", log)
        # The control folder is not in the root's listing (find and cp -r stay out of it).
        self.assertNotIn(".sluice", os.listdir(mnt))
        self.assertEqual(os.listdir(os.path.join(mnt, ".sluice")), ["order"])

    def test_load_order_is_handed_to_the_mount(self):
        # `sluice load --order` with paths as the job sees them through the mount: the mount's
        # daemon runs the order (a window ahead of its readers, in its RAM), not the command.
        s3 = self.start_s3("data")
        far = self.start_throttle(s3, latency_ms=20)
        self.config = self.s3_config(far, "s3://data", memory="8MiB",
                                     extra_mount="metadata_ttl: -1")
        names = [f"s{i:03d}.jpg" for i in range(60)]
        want = {n: random_bytes(100 * 1024, n) for n in names}
        for n in names:
            self.s3_seed("data", f"train/{n}", want[n])
        mnt = self.mount()
        order = names[:]
        random.Random(7).shuffle(order)
        listing = os.path.join(self.tmp, "epoch.txt")
        with open(listing, "w") as f:
            f.write("# epoch 1\n" + "".join(f"{mnt}/s3/train/{n}\n" for n in order))
        r = self.sluice("load", "--order", listing, config=False)
        self.assertIn(b"60 item(s) handed to the mount", r.stderr)
        self.assertTrue(wait_for(lambda: len(self.front_gets(s3, "data/train/")) >= 30))
        time.sleep(0.5)
        self.assertLessEqual(len(self.front_gets(s3, "data/train/")), 41, "the budget holds")
        for n in order:
            with open(os.path.join(mnt, "s3", "train", n), "rb") as f:
                self.assertEqual(f.read(), want[n], n)
            time.sleep(0.01)
        status = json.loads(read_file(os.path.join(mnt, ".sluice", "order")))
        self.assertEqual((status["items"], status["position"], status["skipped"]), (60, 60, 0))
        self.assertEqual(sorted(self.front_gets(s3, "data/train/")),
                         sorted(f"data/train/{n}" for n in names), "each sample fetched once")
        # --json says where it went. A bad line is named before anything is handed over; a
        # path the mount does not hold is the mount's refusal.
        r = self.sluice("load", "--json", "--order", listing, config=False)
        self.assertEqual(json.loads(r.stdout)["mount"], mnt)
        with open(listing, "a") as f:
            f.write(f"{mnt}/s3/train/{names[0]}\t0\tlots\n")
        r = self.sluice("load", "--order", listing, config=False, expect=2)
        self.assertIn(b"line 62", r.stderr)
        with open(listing, "w") as f:
            f.write(f"{mnt}/s3/train/{names[0]}\n/nowhere/x.jpg\n")
        r = self.sluice("load", "--order", listing, config=False, expect=1)
        self.assertIn(b"refused it", r.stderr)

    def test_writes_land_in_s3(self):
        s3, src = self.s3_and_tree(50, 5)
        mnt = self.mount()
        r = run("cp", "-r", src, os.path.join(mnt, "s3", "in"))
        self.assertEqual(r.returncode, 0, r.stderr)
        back = os.path.join(self.tmp, "back")
        self.aws(s3, "s3", "sync", "s3://data/in", back, "--only-show-errors")
        r = run("diff", "-r", "-x", "empty-dir", src, back)  # aws makes no empty folders
        self.assertEqual(r.returncode, 0, r.stdout[:2000])
        self.assertIn("MultipartUpload", " ".join(self.front_stats(s3)))
        # An empty directory is a marker object, gone with rmdir.
        os.mkdir(os.path.join(mnt, "s3", "in", "fresh"))
        keys = self.aws(s3, "s3", "ls", "--recursive", "s3://data/in/").stdout.decode()
        self.assertIn("in/fresh/", keys)
        self.assertIn("in/empty-dir/", keys)
        os.rmdir(os.path.join(mnt, "s3", "in", "fresh"))
        os.rename(os.path.join(mnt, "s3", "in", "large.bin"), os.path.join(mnt, "s3", "moved.bin"))
        os.unlink(os.path.join(mnt, "s3", "in", "d0", "e0", "f0000.bin"))
        keys = self.aws(s3, "s3", "ls", "--recursive", "s3://data/").stdout.decode()
        self.assertNotIn("in/fresh/", keys)
        self.assertNotIn("in/large.bin", keys)
        self.assertNotIn("f0000.bin", keys)
        self.assertIn("moved.bin", keys)


if __name__ == "__main__":
    main()
