"""The FUSE mount: a real `sluice mount` (the daemon, as users start it) over a local store and
over s3rver, checked with the tools people use on file systems (cp -r, diff -r, find, ls -lR,
du) and byte for byte (sha256, random reads against the source). Also: a killed daemon's
stale mount is recovered, umount waits for the daemon, bad mount points are named."""
import os
import random
import signal
import subprocess

from harness import (MiB, PAGE, RemoteCase, SluiceCase, main, mount_pid, random_bytes,
                     sha256_file, wait_gone)


def run(*argv, cwd=None):
    return subprocess.run(argv, capture_output=True, timeout=600, cwd=cwd)


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


class LocalMountTest(SluiceCase):

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
        size = 1024 * MiB + 4321  # 1 GiB and a bit: pages, runs and a short last page
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
        cold = self.stats()
        self.assertEqual(cold["ufs_bytes_read"], size, "each byte fetched once")
        self.assertEqual(sha256_file(path), want, "hot")
        self.assertEqual(self.stats()["ufs_bytes_read"], size, "hot read hit the store")

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

    def test_missing_and_read_only(self):
        self.make_file("a.bin", 100)
        mnt = self.mount()
        self.assertFalse(os.path.exists(os.path.join(mnt, "data", "nope")))
        self.assertFalse(os.path.exists(os.path.join(mnt, "nomount")))
        with self.assertRaises(OSError) as e:
            open(os.path.join(mnt, "data", "a.bin"), "r+b")
        self.assertEqual(e.exception.errno, 30)  # EROFS: writes come with write-back
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
        r = self.sluice("mount", expect=2)
        self.assertIn(b"MOUNTPOINT", r.stderr)
        self.assertIn(b"Usage: sluice mount", self.sluice("mount", "--help").stdout)
        self.assertIn(b"Usage: sluice umount", self.sluice("umount", "--help").stdout)


class S3MountTest(RemoteCase):

    def test_objects_read_through_the_mount_equal_aws(self):
        s3 = self.start_s3("data")
        self.config = self.s3_config(s3, "s3://data")
        src = os.path.join(self.tmp, "src")
        make_tree(src, files=200, seed=3)
        with open(os.path.join(src, "large.bin"), "wb") as f:
            f.write(random_bytes(40 * MiB + 5, "large"))
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


if __name__ == "__main__":
    main()
