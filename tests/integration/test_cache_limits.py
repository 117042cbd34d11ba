"""The disk tier's promises: a hard size limit whatever is read, damaged pages caught and
re-fetched, and a cache directory that cannot be used is survived (reads go to the store)."""
import os
import threading
import time

from harness import MiB, PAGE, SluiceCase, main, sha256


class LimitTest(SluiceCase):
    cache_size = "32MiB"
    cache_memory = "16MiB"

    def test_hard_limit_while_reading_200_mib(self):
        files = {f"d/{i:02d}.bin": self.make_file(f"d/{i:02d}.bin", 10 * MiB) for i in range(20)}
        self.mount_tmpfs(self.cache, "size=128m")
        baseline = self.fs_used_by_pages()
        limit = 32 * MiB + PAGE
        peak = [0]
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], self.fs_used_by_pages() - baseline)
                time.sleep(0.001)

        w = threading.Thread(target=watch)
        w.start()
        try:
            for name, data in files.items():
                self.assertEqual(sha256(self.cat(f"/data/{name}")), sha256(data))
            self.sluice("load", "-r", "/data")
        finally:
            stop.set()
            w.join()
        s = self.stats()
        print(f"peak pages on disk: {peak[0] / MiB:.1f} MiB (limit {limit / MiB:.0f} MiB)")
        self.assertLessEqual(peak[0], limit, f"peak on disk {peak[0]} > {limit}")
        self.assertGreaterEqual(peak[0], 30 * MiB, "the watcher saw the cache fill")
        self.assertLessEqual(s["bytes_cached"], 32 * MiB)
        self.assertGreater(s["evictions"], 0)
        self.assertEqual(s["capacity_bytes"], 32 * MiB)
        self.assertEqual(sum(b for _, b in self.page_files()), s["bytes_cached"],
                         "every byte on disk is accounted for")

    def test_smaller_limit_applies_at_next_write(self):
        for i in range(8):
            self.make_file(f"{i}.bin", 4 * MiB)
        self.sluice("load", "-r", "/data")
        self.make_file("new.bin", PAGE)
        self.assertEqual(self.stats()["bytes_cached"], 32 * MiB)
        # A process with another config only looking (cache stats) shrinks nothing...
        self.config = self.write_config(size="8MiB")
        self.assertEqual(self.stats()["bytes_cached"], 32 * MiB)
        # ...the next one that writes a page keeps the cache within its own limit.
        self.cat("/data/new.bin")
        s = self.stats()
        self.assertLessEqual(s["bytes_cached"], 8 * MiB)
        self.assertLessEqual(self.disk_usage(), 8 * MiB)

    def test_damaged_index_is_set_aside(self):
        data = self.make_file("d.bin", 3 * PAGE)
        self.cat("/data/d.bin")
        index = os.path.join(self.cache, "index", "data.mdb")
        size = os.path.getsize(index)
        with open(index, "r+b") as f:
            f.write(os.urandom(size))  # both meta pages and the tree: garbage
        r = self.sluice("cat", "/data/d.bin")
        self.assertEqual(r.stdout, data)
        self.assertIn(b"index is damaged", r.stderr)
        # An empty, working cache: no page files from before, the next read fills it again.
        s = self.stats()
        self.assertEqual(sum(b for _, b in self.page_files()), s["bytes_cached"])
        self.assertEqual(self.cat("/data/d.bin"), data)
        self.assertEqual(self.stats()["misses"], s["misses"], "served from the rebuilt cache")

    def test_flipped_byte_is_detected_and_refetched(self):
        data = self.make_file("c.bin", 3 * PAGE)
        self.assertEqual(self.cat("/data/c.bin"), data)
        # Damage every page, each in a different place. A page file holds a run of pages at
        # page-aligned offsets (the page size is a multiple of the block size).
        damaged = 0
        for p in sorted(p for p, _ in self.page_files()):
            with open(p, "r+b") as f:
                for at in range(0, os.fstat(f.fileno()).st_size, PAGE):
                    damaged += 1
                    f.seek(at + 1000 * damaged)
                    b = f.read(1)
                    f.seek(at + 1000 * damaged)
                    f.write(bytes([b[0] ^ 0x40]))
        self.assertEqual(damaged, 3)
        before = self.stats()
        r = self.sluice("cat", "/data/c.bin")
        self.assertEqual(r.stdout, data, "output is still right")
        self.assertIn(b"checksum", r.stderr)
        after = self.stats()
        self.assertEqual(after["checksum_failures"] - before["checksum_failures"], 3)
        self.assertEqual(after["ufs_bytes_read"] - before["ufs_bytes_read"], len(data))
        # Re-fetched pages are cached again and good.
        self.assertEqual(self.cat("/data/c.bin"), data)
        self.assertEqual(self.stats()["checksum_failures"], after["checksum_failures"])

    def test_truncated_page_file(self):
        data = self.make_file("t.bin", 2 * PAGE)
        self.cat("/data/t.bin")
        p, _ = sorted(self.page_files())[0]
        pages = (os.stat(p).st_size + PAGE - 1) // PAGE  # every page of the run it holds
        with open(p, "r+b") as f:
            f.truncate(100)
        self.assertEqual(self.cat("/data/t.bin"), data)
        self.assertEqual(self.stats()["checksum_failures"], pages)

    def test_unusable_cache_dir_reads_through(self):
        data = self.make_file("u.bin", 3 * PAGE)
        blocker = os.path.join(self.tmp, "a-file")
        open(blocker, "w").close()
        self.config = self.write_config(cache_dir=os.path.join(blocker, "cache"))
        r = self.sluice("cat", "/data/u.bin")
        self.assertEqual(r.stdout, data)
        self.assertIn(b"warning", r.stderr)
        self.assertIn(b"reading through", r.stderr)

    def test_load_without_a_usable_cache_says_so(self):
        self.make_file("l.bin", PAGE)
        blocker = os.path.join(self.tmp, "a-file")
        open(blocker, "w").close()
        self.config = self.write_config(cache_dir=os.path.join(blocker, "cache"))
        r = self.sluice("load", "/data/l.bin", expect=1)
        self.assertErrorNames(r, "nothing to warm", "cache.dir")

    def test_read_only_cache_dir_reads_through(self):
        data = self.make_file("ro.bin", 3 * PAGE)
        ro = os.path.join(self.tmp, "ro")
        self.mount_tmpfs(ro, "ro,size=1m")
        self.config = self.write_config(cache_dir=os.path.join(ro, "cache"))
        r = self.sluice("cat", "/data/ro.bin")
        self.assertEqual(r.stdout, data)
        self.assertIn(b"Read-only file system", r.stderr)
        self.assertIn(b"reading through", r.stderr)

    def test_full_cache_disk_reads_through(self):
        data = self.make_file("full.bin", 24 * PAGE)
        small = os.path.join(self.tmp, "small")
        self.mount_tmpfs(small, "size=4m")
        self.config = self.write_config(cache_dir=small, size="1GiB")
        r = self.sluice("cat", "/data/full.bin")
        self.assertEqual(sha256(r.stdout), sha256(data))
        self.assertIn(b"reading through", r.stderr)
        # Still correct the second time, from whatever made it onto the disk.
        self.assertEqual(sha256(self.cat("/data/full.bin")), sha256(data))


if __name__ == "__main__":
    main()
