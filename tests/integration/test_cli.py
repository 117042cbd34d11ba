"""The command line as users and scripts meet it: --help everywhere, listings, --json output
with the contract's keys, copies in every direction, freeing, config discovery, and the
metadata cache seen from outside."""
import json
import os
import subprocess
import time

from harness import read_file, SLUICE, MiB, PAGE, SluiceCase, main, sha256

COMMANDS = ["ls", "stat", "cat", "cp", "load", "free", "cache", "mount", "bench"]


class CliTest(SluiceCase):

    def test_help_everywhere(self):
        r = self.sluice("--help", config=None)
        for c in COMMANDS:
            self.assertIn(c.encode(), r.stdout)
        for c in COMMANDS:
            r = self.sluice(c, "--help", config=None)
            self.assertIn(b"Usage: sluice " + c.encode(), r.stdout)
        self.assertIn(b"Usage: sluice bench train", self.sluice("bench", "train", "--help", config=None).stdout)
        self.assertIn(b"sluice 0.", self.sluice("--version", config=None).stdout)

    def test_ls(self):
        self.make_file("b.bin", 3 * PAGE)
        self.make_file("a.txt", 10)
        self.make_file("sub/c.bin", 5)
        self.assertEqual(self.sluice("ls").stdout, b"data/\n")
        self.assertEqual(self.sluice("ls", "/data").stdout, b"a.txt\nb.bin\nsub/\n")
        self.cat("/data/b.bin", "--length", PAGE)  # one of three pages cached
        lines = self.sluice("ls", "-l", "/data").stdout.decode().splitlines()
        b_line = [l for l in lines if l.endswith("b.bin")][0]
        self.assertIn("3.00 MiB", b_line)
        self.assertIn(" 33%", b_line)
        r = self.sluice("ls", "-R", "/data").stdout.decode()
        self.assertIn("/data/sub:\nc.bin", r)
        entries = [json.loads(l) for l in self.sluice("ls", "-R", "--json", "/data").stdout.splitlines()]
        by_path = {e["path"]: e for e in entries}
        self.assertEqual(set(by_path), {"/data/a.txt", "/data/b.bin", "/data/sub", "/data/sub/c.bin"})
        self.assertEqual(by_path["/data/b.bin"]["cached_bytes"], PAGE)
        self.assertEqual(by_path["/data/b.bin"]["size"], 3 * PAGE)
        self.assertEqual(by_path["/data/sub"]["type"], "dir")
        # An empty directory lists nothing, and says nothing.
        os.makedirs(os.path.join(self.data, "empty"))
        r = self.sluice("ls", "-l", "/data/empty")
        self.assertEqual((r.stdout, r.stderr), (b"", b""))
        # A file as the argument lists that file.
        self.assertEqual(self.sluice("ls", "/data/a.txt").stdout, b"/data/a.txt\n")

    def test_stat_json(self):
        self.make_file("s.bin", 2 * PAGE + 1)
        self.cat("/data/s.bin")
        st = json.loads(self.sluice("stat", "--json", "/data/s.bin").stdout)
        self.assertEqual(st["path"], "/data/s.bin")
        self.assertEqual(st["uri"], f"file://{self.data}/s.bin")
        self.assertEqual(st["type"], "file")
        self.assertEqual(st["size"], 2 * PAGE + 1)
        self.assertEqual(st["cached_bytes"], 2 * PAGE + 1)
        self.assertTrue(st["version"])
        human = self.sluice("stat", "/data/s.bin").stdout.decode()
        self.assertIn("cached:  2097153 bytes (100%)", human)

    def test_cache_stats_keys_and_reset(self):
        self.make_file("x.bin", PAGE)
        self.cat("/data/x.bin")
        s = self.stats()
        for key in ["hits", "misses", "ufs_bytes_read", "ufs_requests", "bytes_cached",
                    "pages_cached", "capacity_bytes", "evictions", "checksum_failures"]:
            self.assertIn(key, s)
            self.assertIsInstance(s[key], int)
        self.assertEqual(s["misses"], 1)
        self.sluice("cache", "stats", "--reset")
        s = self.stats()
        self.assertEqual((s["hits"], s["misses"], s["ufs_bytes_read"]), (0, 0, 0))
        self.assertEqual(s["pages_cached"], 1, "reset clears counters, not the cache")
        self.assertIn(b"hit rate", self.sluice("cache", "stats").stdout)

    def test_stats_are_live_across_processes(self):
        self.make_file("live.bin", 64 * MiB)
        # A slow reader: sluice cat into a pipe we read slowly.
        p = self.popen("cat", "/data/live.bin", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.read(8 * MiB)
        time.sleep(1.2)
        seen = self.stats()["misses"]
        rest = p.stdout.read()
        p.wait(timeout=60)
        p.stdout.close()
        p.stderr.close()
        self.assertGreater(seen, 0, "another process's reads show within a second")
        self.assertEqual(len(rest) + 8 * MiB, 64 * MiB)

    def test_free(self):
        self.make_file("f1.bin", 2 * PAGE)
        self.make_file("dir/f2.bin", 3 * PAGE)
        self.sluice("load", "-r", "/data")
        self.assertEqual(self.stats()["pages_cached"], 5)
        r = self.sluice("free", "--json", "/data/f1.bin")
        self.assertEqual(json.loads(r.stdout)["freed_bytes"], 2 * PAGE)
        self.assertEqual(self.stats()["pages_cached"], 3)
        r = self.sluice("free", "/data/dir", expect=1)
        self.assertErrorNames(r, "/data/dir", "free -r")
        self.sluice("free", "-r", "/data")
        s = self.stats()
        self.assertEqual((s["pages_cached"], s["bytes_cached"]), (0, 0))
        self.assertEqual(self.page_files(), [])
        # A file gone from the store can still be freed.
        self.cat("/data/f1.bin")
        os.unlink(os.path.join(self.data, "f1.bin"))
        self.sluice("free", "/data/f1.bin")
        self.assertEqual(self.stats()["pages_cached"], 0)

    def test_cp_every_direction(self):
        src = self.make_file("in/a.bin", 3 * PAGE + 5)
        self.make_file("in/deeper/b.bin", 100)
        local = os.path.join(self.tmp, "local")
        os.makedirs(local)
        # namespace -> local file
        self.sluice("cp", "/data/in/a.bin", os.path.join(local, "a.copy"))
        self.assertEqual(read_file(os.path.join(local, "a.copy")), src)
        # namespace -> local dir (into it)
        self.sluice("cp", "/data/in/a.bin", local + "/")
        self.assertEqual(read_file(os.path.join(local, "a.bin")), src)
        # local (relative path) -> namespace
        self.sluice("cp", "local/a.copy", "/data/out/a2.bin")
        self.assertEqual(self.cat("/data/out/a2.bin"), src)
        # tree, namespace -> namespace
        self.sluice("cp", "-r", "/data/in", "/data/tree")
        self.assertEqual(self.cat("/data/tree/deeper/b.bin"),
                         read_file(os.path.join(self.data, "in/deeper/b.bin")))
        # tree, namespace -> local, into an existing dir
        self.sluice("cp", "-r", "/data/in", local)
        self.assertTrue(os.path.isfile(os.path.join(local, "in", "deeper", "b.bin")))
        # URI -> URI
        self.sluice("cp", f"file://{self.data}/in/a.bin", f"file://{local}/uri.bin")
        self.assertEqual(read_file(os.path.join(local, "uri.bin")), src)
        # no temp files left anywhere
        for root in (self.data, local):
            for _, _, names in os.walk(root):
                self.assertFalse([n for n in names if "sluice-tmp" in n])
        # a directory without -r, a missing source
        r = self.sluice("cp", "/data/in", local, expect=1)
        self.assertErrorNames(r, "/data/in", "cp -r")
        r = self.sluice("cp", "/data/none", local, expect=1)
        self.assertErrorNames(r, "/data/none")

    def test_cp_to_a_destination_that_cannot_be_written(self):
        src = self.make_file("s.bin", 2 * PAGE)
        ro = os.path.join(self.tmp, "ro")
        self.mount_tmpfs(ro, "ro,size=1m")
        r = self.sluice("cp", "/data/s.bin", os.path.join(ro, "s.bin"), expect=1)
        self.assertErrorNames(r, "Read-only file system")
        self.assertEqual(os.listdir(ro), [])
        # A destination that fills up: no torn file, the old one intact.
        small = os.path.join(self.tmp, "small")
        self.mount_tmpfs(small, "size=1m")
        with open(os.path.join(small, "keep.bin"), "wb") as f:
            f.write(b"old")
        big = os.path.join(self.tmp, "big.bin")
        with open(big, "wb") as f:
            f.write(os.urandom(3 * MiB))
        r = self.sluice("cp", big, f"file://{small}/keep.bin", expect=1)
        self.assertErrorNames(r, "No space left on device")
        self.assertEqual(read_file(os.path.join(small, "keep.bin")), b"old")
        self.assertEqual(os.listdir(small), ["keep.bin"], "no temp file left behind")
        self.assertEqual(src, self.cat("/data/s.bin"))

    def test_cp_overwrite_drops_old_pages(self):
        self.make_file("o.bin", 4 * PAGE, seed=1)
        self.cat("/data/o.bin")
        new = os.path.join(self.tmp, "new.bin")
        with open(new, "wb") as f:
            f.write(os.urandom(2 * PAGE))
        self.sluice("cp", new, "/data/o.bin")
        self.assertEqual(self.stats()["pages_cached"], 0, "the old version's pages are freed")
        self.assertEqual(self.cat("/data/o.bin"), read_file(new))

    def test_config_discovery_and_defaults(self):
        data = self.make_file("d.bin", 1000)
        # No config anywhere: direct URIs work, the cache goes to $XDG_CACHE_HOME/sluice.
        r = subprocess.run([SLUICE, "cat", f"file://{self.data}/d.bin"], env=self.env(),
                           cwd=self.home, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)
        self.assertTrue(os.path.isdir(os.path.join(self.home, ".cache", "sluice", "pages")))
        # ./sluice.yaml in the working directory
        r = self.sluice("cat", "/data/d.bin", config=None)
        self.assertEqual(r.stdout, data)
        # $SLUICE_CONFIG wins over ./sluice.yaml
        other = self.write_config(name="other.yaml", mounts={"/other": f"file://{self.data}"})
        env = self.env()
        env["SLUICE_CONFIG"] = other
        r = subprocess.run([SLUICE, "cat", "/other/d.bin"], env=env, cwd=self.tmp,
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)

    def test_metadata_ttl_and_negative_entries(self):
        self.config = self.write_config(
            mounts={"/data": f"\n    uri: file://{self.data}\n    metadata_ttl: 10m"})
        r = self.sluice("cat", "/data/later.bin", expect=1)
        self.assertErrorNames(r, "/data/later.bin")
        data = self.make_file("later.bin", 100)
        # Within the TTL the store is not asked again: still missing (a cached answer).
        r = self.sluice("cat", "/data/later.bin", expect=1)
        self.assertErrorNames(r, "cached answer")
        requests = self.stats()["ufs_requests"]
        self.sluice("stat", "/data/later.bin", expect=1)
        self.assertEqual(self.stats()["ufs_requests"], requests)
        # A write through sluice invalidates the entry at once.
        src = os.path.join(self.tmp, "src.bin")
        with open(src, "wb") as f:
            f.write(data)
        self.sluice("cp", src, "/data/later.bin")
        self.assertEqual(self.cat("/data/later.bin"), data)
        # Listings are snapshots too: a second ls makes no store request.
        self.sluice("ls", "/data")
        requests = self.stats()["ufs_requests"]
        self.assertIn(b"later.bin", self.sluice("ls", "-l", "/data").stdout)
        self.assertEqual(self.stats()["ufs_requests"], requests)

    def test_progress_bar_only_on_a_terminal(self):
        self.make_file("p.bin", 4 * PAGE)
        r = self.sluice("load", "/data/p.bin")
        self.assertNotIn(b"\r", r.stderr)
        self.assertIn(b"loaded", r.stderr)
        r = self.sluice("-q", "load", "/data/p.bin")
        self.assertEqual(r.stderr, b"")


    def test_bench_train(self):
        data = os.path.join(self.data, "resnet")
        self.sluice("bench", "train", "--workload", "resnet-mini", "--make-dataset", data,
                    "--scale", "0.002", config=None)
        files = [os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs]
        self.assertEqual(len(files), 96)
        self.assertEqual({os.path.getsize(f) for f in files}, {114660})
        dataset = 96 * 114660
        # In-process through the library, the order handed over: two epochs, one line each.
        r = self.sluice("bench", "train", "--workload", "resnet-mini", "--data", f"file://{data}",
                        "--epochs", "2", "--compute", "0.002", "--readers", "4", "--order",
                        "--mode", "inproc", "--cache-fraction", "1", "--json")
        lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
        self.assertEqual([l["epoch"] for l in lines], [1, 2])
        for l in lines:
            for k in ("workload", "mode", "cache_fraction", "epoch", "au", "hit_rate",
                      "store_bytes", "floor_bytes", "p99_wait_s"):
                self.assertIn(k, l)
            self.assertTrue(0 <= l["au"] <= 1 and 0 <= l["hit_rate"] <= 1, l)
            self.assertEqual((l["workload"], l["mode"], l["samples"]), ("resnet-mini", "inproc", 96))
            self.assertEqual(l["bytes_read"], dataset)
        self.assertEqual((lines[0]["store_bytes"], lines[0]["floor_bytes"]), (dataset, dataset))
        self.assertEqual((lines[1]["store_bytes"], lines[1]["floor_bytes"]), (0, 0))
        self.assertEqual(lines[1]["hit_rate"], 1.0)
        # Bad input is named.
        r = self.sluice("bench", "train", "--workload", "gpt5", "--data", data, expect=2)
        self.assertErrorNames(r, "gpt5", "resnet-mini")
        r = self.sluice("bench", "train", "--workload", "resnet-mini", "--data", data,
                        "--scale", "2", expect=2)
        self.assertErrorNames(r, "--scale", "'2'")
        r = self.sluice("bench", "train", "--workload", "resnet-mini", "--data",
                        os.path.join(self.tmp, "nothing"), expect=1)
        self.assertErrorNames(r, "nothing")
        r = self.sluice("bench", "train", "--workload", "resnet-mini", "--data", data,
                        "--between-epochs", "exit 3", expect=1)
        self.assertErrorNames(r, "--between-epochs", "exit 3")
        r = self.sluice("bench", "nope", expect=2)
        self.assertErrorNames(r, "nope")


if __name__ == "__main__":
    main()
