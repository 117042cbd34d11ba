"""Reading through the cache: every byte right, cold and hot; hot reads never touch the store;
a new process sees what the last one cached; ranges; many processes sharing one cache."""
import hashlib
import os
import random
import subprocess
import threading

from harness import MiB, PAGE, SluiceCase, main, sha256


class ReadTest(SluiceCase):

    SIZES = [0, 1, 4095, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 12345, 20 * MiB]

    def make_dataset(self):
        files = {}
        for i, size in enumerate(self.SIZES):
            files[f"f{i}_{size}.bin"] = self.make_file(f"f{i}_{size}.bin", size)
        files["sub/dir/deep.bin"] = self.make_file("sub/dir/deep.bin", 2 * PAGE + 7)
        return files

    def test_cold_and_hot_bytes_equal(self):
        files = self.make_dataset()
        for name, data in files.items():
            out = self.cat(f"/data/{name}")
            self.assertEqual(sha256(out), sha256(data), f"cold read of {name}")
        cold = self.stats()
        self.assertGreater(cold["misses"], 0)
        self.assertEqual(cold["ufs_bytes_read"], sum(len(d) for d in files.values()))

        # Hot, each in a new process: the pages of the last one, and no store reads.
        for name, data in files.items():
            out = self.cat(f"/data/{name}")
            self.assertEqual(sha256(out), sha256(data), f"hot read of {name}")
        hot = self.stats()
        self.assertEqual(hot["ufs_bytes_read"], cold["ufs_bytes_read"],
                         "hot reads must not read the store")
        self.assertEqual(hot["misses"], cold["misses"])
        pages = sum((len(d) + PAGE - 1) // PAGE for d in files.values())
        self.assertEqual(hot["hits"] - cold["hits"], pages)
        self.assertEqual(hot["pages_cached"], pages)

    def test_direct_uri_shares_pages_with_namespace_path(self):
        data = self.make_file("x.bin", 5 * PAGE)
        self.assertEqual(self.cat("/data/x.bin"), data)
        before = self.stats()
        self.assertEqual(self.cat(f"file://{self.data}/x.bin"), data)
        after = self.stats()
        self.assertEqual(after["ufs_bytes_read"], before["ufs_bytes_read"])

    def test_ranges(self):
        data = self.make_file("r.bin", 5 * PAGE + 333)
        rng = random.Random(7)
        cases = [(0, 1), (PAGE - 1, 2), (PAGE, PAGE), (len(data) - 10, 100), (len(data), 5),
                 (len(data) + 1000, 5), (3, 0)]
        cases += [(rng.randrange(len(data)), rng.randrange(1, 3 * PAGE)) for _ in range(20)]
        for off, length in cases:
            out = self.cat("/data/r.bin", "--offset", off, "--length", length)
            self.assertEqual(out, data[off:off + length], f"range {off}+{length}")
        out = self.cat("/data/r.bin", "--offset", "1MiB")
        self.assertEqual(out, data[MiB:])

    def test_random_ranges_read_only_their_pages(self):
        data = self.make_file("parquet-like.bin", 32 * PAGE)
        self.assertEqual(self.cat("/data/parquet-like.bin", "--offset", 10 * PAGE + 5,
                                  "--length", 100), data[10 * PAGE + 5:10 * PAGE + 105])
        s = self.stats()
        # One page asked for, one page read: no read-ahead on a random read.
        self.assertEqual(s["misses"], 1)
        self.assertEqual(s["ufs_bytes_read"], PAGE)

    def test_changed_file_is_never_mixed(self):
        old = self.make_file("m.bin", 4 * PAGE, seed=1)
        self.assertEqual(self.cat("/data/m.bin"), old)
        new = self.make_file("m.bin", 4 * PAGE + 5, seed=2)
        self.assertEqual(self.cat("/data/m.bin"), new)
        # Same size, same second: the version still changes (mtime ns, inode).
        newer = random.Random(3).randbytes(len(new))
        with open(os.path.join(self.data, "m.bin"), "r+b") as f:
            f.write(newer)
        self.assertEqual(self.cat("/data/m.bin"), newer)

    def test_many_processes_share_one_cache(self):
        data = self.make_file("shared.bin", 40 * PAGE)
        want = sha256(data)
        procs = [self.popen("cat", "/data/shared.bin", stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE) for _ in range(6)]
        results = []

        def drain(p):
            out, err = p.communicate(timeout=120)
            results.append((p.returncode, sha256(out), err))

        threads = [threading.Thread(target=drain, args=(p,)) for p in procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for rc, digest, err in results:
            self.assertEqual(rc, 0, err)
            self.assertEqual(digest, want)
        s = self.stats()
        self.assertEqual(s["pages_cached"], 40)
        files = self.page_files()
        # Runs of pages share a file; every byte on disk is an indexed page's, no orphans.
        self.assertLessEqual(len(files), 40)
        self.assertEqual(sum(b for _, b in files), s["bytes_cached"], "orphaned page bytes")
        self.assertEqual(self.cat("/data/shared.bin"), data)

    def test_load_then_read_is_all_hits(self):
        files = self.make_dataset()
        self.sluice("load", "-r", "/data")
        loaded = self.stats()
        self.assertEqual(loaded["hits"], 0, "warming is not a read")
        for name, data in files.items():
            self.assertEqual(self.cat(f"/data/{name}"), data)
        after = self.stats()
        self.assertEqual(after["ufs_bytes_read"], loaded["ufs_bytes_read"])
        self.assertEqual(after["misses"], loaded["misses"])

    def test_load_order_file(self):
        a = self.make_file("a.bin", 3 * PAGE)
        self.make_file("b.bin", 3 * PAGE)
        order = os.path.join(self.tmp, "order.txt")
        with open(order, "w") as f:
            f.write("# epoch 1\n/data/b.bin\n\n/data/a.bin\t1048576\t1\n")
        r = self.sluice("load", "--order", order, "--json")
        self.assertIn(b'"files":2', r.stdout)
        s = self.stats()
        self.assertEqual(s["pages_cached"], 4, "all of b, and the one page of a's range")
        self.assertEqual(self.cat("/data/a.bin", "--offset", PAGE, "--length", PAGE),
                         a[PAGE:2 * PAGE])
        self.assertEqual(self.stats()["misses"], s["misses"])


if __name__ == "__main__":
    main()
