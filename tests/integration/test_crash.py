"""A process killed with SIGKILL at any moment leaves a cache the next process uses correctly:
no torn page is ever served, no space leaks, nothing needs repair by hand."""
import os
import random
import signal
import subprocess
import time

from harness import read_file, MiB, PAGE, SluiceCase, main, sha256


class CrashTest(SluiceCase):
    cache_size = "256MiB"

    def check_consistent(self):
        """What the index says matches what is on disk, and nothing is half-written."""
        s = self.stats()  # a new process: it recovers whatever the dead one left
        files = self.page_files()
        # Every page file holds indexed pages (a run of them shares one). The converse may not
        # hold: eviction gives back its space just before its commit (so the hard limit holds
        # at every instant), and a kill in between leaves records without bytes, which are read
        # as misses and dropped (src/cache/disk.c). Never bytes without a record: that would
        # be space nobody owns; a killed writer's unindexed file is removed by the next process.
        self.assertLessEqual(len(files), s["pages_cached"], "a page file nobody indexed")
        self.assertLessEqual(sum(b for _, b in files), s["bytes_cached"])
        self.assertLessEqual(s["bytes_cached"], s["capacity_bytes"])
        return s

    def test_sigkill_during_load(self):
        files = {f"set/{i:03d}.bin": self.make_file(f"set/{i:03d}.bin", 3 * PAGE + i * 4096)
                 for i in range(60)}
        rng = random.Random(42)
        for attempt in range(6):
            p = self.popen("load", "-r", "/data/set", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.02, 0.25))
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            self.check_consistent()
            if attempt % 2:
                self.sluice("free", "-r", "/data/set")  # start over: more kills mid-way

        # The next process finishes the job and every byte is right, hot.
        self.sluice("load", "-r", "/data/set")
        before = self.check_consistent()
        for name, data in files.items():
            self.assertEqual(sha256(self.cat(f"/data/{name}")), sha256(data), name)
        after = self.stats()
        self.assertEqual(after["ufs_bytes_read"], before["ufs_bytes_read"], "all hot")

    def test_sigkill_during_cat_with_evictions(self):
        # A cache smaller than the data: the killed process was evicting as well as writing.
        self.config = self.write_config(size="16MiB")
        data = self.make_file("big.bin", 48 * MiB)
        for delay in (0.05, 0.1, 0.2, 0.4):
            p = self.popen("cat", "/data/big.bin", stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            time.sleep(delay)
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
            self.check_consistent()
        self.assertEqual(sha256(self.cat("/data/big.bin")), sha256(data))
        self.check_consistent()

    def test_sigkill_during_cp_leaves_old_destination(self):
        src = os.path.join(self.tmp, "src.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(64 * MiB))
        old = self.make_file("dst.bin", 1000)
        p = self.popen("cp", src, "/data/dst.bin", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        with open(os.path.join(self.data, "dst.bin"), "rb") as f:
            got = f.read()
        # Either the copy had finished (whole new file) or the old one is intact: never torn.
        if got != old:
            self.assertEqual(sha256(got), sha256(read_file(src)))


if __name__ == "__main__":
    main()
