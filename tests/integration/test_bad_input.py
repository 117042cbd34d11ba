"""Bad input gets a clear error naming what was wrong (exit 1, or 2 for usage and config), and
odd but valid input (empty files, huge sparse files) a correct result."""
import os

from harness import read_file, MiB, SluiceCase, main


class BadInputTest(SluiceCase):

    def test_missing_path(self):
        r = self.sluice("cat", "/data/nope.jpg", expect=1)
        self.assertErrorNames(r, "/data/nope.jpg", "No such file or directory")
        r = self.sluice("stat", "/data/sub/nope", expect=1)
        self.assertErrorNames(r, "/data/sub/nope")
        r = self.sluice("ls", "/data/nope", expect=1)
        self.assertErrorNames(r, "/data/nope")

    def test_missing_among_good_paths_still_prints_the_good(self):
        data = self.make_file("ok.bin", 1000)
        r = self.sluice("cat", "/data/nope", "/data/ok.bin", expect=1)
        self.assertEqual(r.stdout, data)
        self.assertErrorNames(r, "/data/nope")

    def test_malformed_yaml(self):
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("cache:\n  size: 1GiB\nmounts:\n  /data: [file:///x\n")
        r = self.sluice("ls", "/", config=bad, expect=2)
        self.assertErrorNames(r, "bad.yaml:5:1:", "invalid YAML")

    def test_config_errors_name_line_and_column(self):
        cases = [
            ("cache:\n  size: lots\n", "2:9:", "expected a size"),
            ("cache:\n  sise: 1GiB\n", "2:3:", "unknown key 'sise'"),
            ("cach:\n  size: 1GiB\n", "1:1:", "unknown key 'cach'"),
            ("cache:\n  page_size: 3MiB\n", "2:14:", "power of two"),
            ("mounts:\n  data: file:///x\n", "2:3:", "start with '/'"),
            ("mounts:\n  /d:\n    uri: file:///x\n    policy: mru\n", "4:13:", "lru, s3fifo or epoch"),
            ("mounts:\n  /d:\n    uri: file:///x\n    metadata_ttl: soon\n", "4:19:", "duration"),
            ("mounts:\n  /d: ftp://host/x\n", "2:3:", "no under-store for scheme 'ftp'"),
            ("mounts:\n  /d: file:///x\n  /d: file:///y\n", "3:3:", "mounted twice"),
        ]
        for i, (text, where, what) in enumerate(cases):
            path = os.path.join(self.tmp, f"c{i}.yaml")
            with open(path, "w") as f:
                f.write(text)
            r = self.sluice("ls", "/", config=path, expect=2)
            self.assertErrorNames(r, f"c{i}.yaml:{where}", what)

    def test_missing_config_file(self):
        r = self.sluice("ls", "/", config=os.path.join(self.tmp, "none.yaml"), expect=2)
        self.assertErrorNames(r, "none.yaml", "No such file")

    def test_unknown_mount(self):
        r = self.sluice("cat", "/imagenet/x.jpg", expect=1)
        self.assertErrorNames(r, "/imagenet/x.jpg", "no mount", "/data")

    def test_dotdot_escape(self):
        self.make_file("in.bin", 10)
        secret = os.path.join(self.tmp, "secret")
        with open(secret, "w") as f:
            f.write("secret")
        for path in ["/data/../secret", "/data/../../etc/passwd", "/../etc/passwd",
                     "/data/a/../../secret"]:
            r = self.sluice("cat", path, expect=1)
            self.assertErrorNames(r, path, "..")
            self.assertEqual(r.stdout, b"")
        # Inside a mount '..' is only a path: it may not leave it, but may move within it.
        self.assertEqual(self.cat("/data/sub/../in.bin"), read_file(os.path.join(self.data, "in.bin")))
        r = self.sluice("cat", f"file://{self.data}/../../../../etc/../../x", expect=1)
        self.assertErrorNames(r, "'..'")

    def test_relative_and_odd_paths(self):
        r = self.sluice("cat", "data/x", expect=2)
        self.assertErrorNames(r, "data/x", "not a namespace path")
        r = self.sluice("cat", "gopher://x/y", expect=1)
        self.assertErrorNames(r, "gopher", "scheme")
        r = self.sluice("cat", "/data", expect=1)
        self.assertErrorNames(r, "/data", "Is a directory")

    def test_special_file_is_refused_not_hung(self):
        os.mkfifo(os.path.join(self.data, "fifo"))
        r = self.sluice("cat", "/data/fifo", expect=1, timeout=30)
        self.assertErrorNames(r, "/data/fifo", "not a regular file")
        r = self.sluice("ls", "/data")
        self.assertNotIn(b"fifo", r.stdout)

    def test_usage_errors(self):
        r = self.sluice("frobnicate", expect=2)
        self.assertIn(b"not a command", r.stderr)
        r = self.sluice("cat", "--offset", "ten", "/data/x", expect=2)
        self.assertErrorNames(r, "--offset", "ten")
        r = self.sluice("cat", "--bogus", "/data/x", expect=2)
        r = self.sluice("cat", expect=2)
        self.assertErrorNames(r, "missing PATH")
        r = self.sluice("cache", "flush", expect=2)
        self.assertErrorNames(r, "unknown subcommand")
        self.sluice(expect=2, config=None)

    def test_zero_length_file(self):
        self.make_file("empty", 0)
        self.assertEqual(self.cat("/data/empty"), b"")
        r = self.sluice("stat", "--json", "/data/empty")
        self.assertIn(b'"size":0', r.stdout)
        self.sluice("load", "/data/empty")
        self.sluice("ls", "-l", "/data")
        self.assertEqual(self.stats()["pages_cached"], 0)

    def test_sparse_10_gib_file(self):
        path = os.path.join(self.data, "sparse.bin")
        size = 10 << 30
        with open(path, "wb") as f:
            f.truncate(size)
            f.seek(size - 3)
            f.write(b"END")
            f.seek(5 << 30)
            f.write(b"MIDDLE")
        r = self.sluice("stat", "--json", "/data/sparse.bin")
        self.assertIn(f'"size":{size}'.encode(), r.stdout)
        self.assertIn(b"10.0 GiB", self.sluice("ls", "-l", "/data").stdout)
        self.assertEqual(self.cat("/data/sparse.bin", "--offset", size - 100),
                         b"\0" * 97 + b"END")
        self.assertEqual(self.cat("/data/sparse.bin", "--offset", "5GiB", "--length", 8),
                         b"MIDDLE\0\0")
        self.assertEqual(self.cat("/data/sparse.bin", "--offset", size, "--length", 10), b"")
        s = self.stats()
        self.assertEqual(s["ufs_bytes_read"], 2 * MiB, "two pages read, not 10 GiB")


if __name__ == "__main__":
    main()
