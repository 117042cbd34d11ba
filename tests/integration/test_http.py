"""Web servers as read-only stores (nginx from Debian, started by the tests), and one
namespace over a local directory, an S3 bucket and a web server side by side."""
import json
import os
import time

from harness import MiB, PAGE, RemoteCase, main, random_bytes, sha256


class HttpCase(RemoteCase):

    def setUp(self):
        super().setUp()
        self.www = os.path.join(self.tmp, "www")
        os.makedirs(self.www)
        self.web = self.start_nginx(self.www)
        self.config = self.write_config(mounts={"/web": f"{self.web.url}/pub/"})

    def publish(self, rel, data):
        path = os.path.join(self.www, "pub", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return data


class ReadTest(HttpCase):

    def test_files_cold_and_hot_bytes_equal(self):
        files = {f"f{i}.bin": self.publish(f"f{i}.bin", random_bytes(size, i))
                 for i, size in enumerate([0, 1, PAGE - 1, PAGE + 1, 20 * MiB + 3])}
        files["deep/er/x.bin"] = self.publish("deep/er/x.bin", random_bytes(3 * PAGE, "x"))
        for rel, data in files.items():
            self.assertEqual(sha256(self.cat(f"/web/{rel}")), sha256(data), f"cold {rel}")
        cold = self.stats()
        self.assertEqual(cold["ufs_bytes_read"], sum(len(d) for d in files.values()))
        for rel, data in files.items():
            self.assertEqual(sha256(self.cat(f"/web/{rel}")), sha256(data), f"hot {rel}")
        self.assertEqual(self.stats()["ufs_bytes_read"], cold["ufs_bytes_read"])

    def test_listing_from_json_autoindex(self):
        self.publish("a.bin", b"a" * 10)
        self.publish("sub/b.bin", b"b" * 20)
        self.publish("name with space ü.bin", b"c")
        out = self.sluice("ls", "-R", "--json", "/web").stdout.decode().splitlines()
        got = {json.loads(l)["path"]: (json.loads(l)["type"], json.loads(l)["size"]) for l in out}
        self.assertEqual(got, {"/web/a.bin": ("file", 10), "/web/sub": ("dir", 0),
                               "/web/name with space ü.bin": ("file", 1),
                               "/web/sub/b.bin": ("file", 20)})
        self.assertEqual(self.cat("/web/name with space ü.bin"), b"c")
        st = self.sluice("stat", "--json", "/web/sub").stdout
        self.assertEqual(json.loads(st)["type"], "dir")

    def test_ranges_and_direct_urls(self):
        data = self.publish("r.bin", random_bytes(4 * PAGE + 99, "r"))
        for off, length in [(0, 1), (PAGE - 3, 7), (3 * PAGE, 2 * PAGE), (len(data) + 1, 4)]:
            out = self.cat("/web/r.bin", "--offset", off, "--length", length)
            self.assertEqual(out, data[off:off + length])
        self.assertEqual(self.cat(f"{self.web.url}/pub/r.bin"), data)

    def test_file_replaced_on_the_server(self):
        self.config = self.write_config(mounts={"/web": f"{self.web.url}/pub/"})
        self.publish("v.bin", random_bytes(2 * PAGE, "v1"))
        self.assertEqual(self.cat(f"{self.web.url}/pub/v.bin"), random_bytes(2 * PAGE, "v1"))
        time.sleep(1.1)  # a new Last-Modified second, so nginx gives a new ETag
        new = self.publish("v.bin", random_bytes(2 * PAGE + 5, "v2"))
        self.sluice("free", "/web/v.bin")  # the cached metadata too would hide it for a minute
        r = self.sluice("stat", "--json", f"{self.web.url}/pub/v.bin").stdout
        # Through a mount with metadata_ttl 0 the new version shows at once.
        cfg = os.path.join(self.tmp, "ttl0.yaml")
        with open(cfg, "w") as f:
            f.write(f"cache:\n  dir: {self.cache}\nmounts:\n  /web:\n    uri: {self.web.url}/pub/\n"
                    f"    metadata_ttl: 0\n")
        out = self.sluice("cat", "/web/v.bin", config=cfg).stdout
        self.assertEqual(out, new)
        del r


class BadServerTest(HttpCase):

    def test_missing_file_and_server_down(self):
        r = self.sluice("cat", "/web/nope.bin", expect=1)
        self.assertErrorNames(r, "nope.bin", "No such file")
        self.web.stop()
        cfg = os.path.join(self.tmp, "down.yaml")
        with open(cfg, "w") as f:
            f.write(f"cache:\n  dir: {self.cache}\nmounts:\n  /web:\n    uri: {self.web.url}/pub/\n"
                    f"    retries: 2\n    retry_time: 3s\n")
        r = self.sluice("cat", "/web/x.bin", config=cfg, expect=1)
        self.assertErrorNames(r, self.web.url, "cannot reach", "3 attempts")

    def test_no_json_listing_is_a_clear_error_but_files_still_read(self):
        self.web.stop()
        self.web = self.start_nginx(self.www, json_index=False)
        self.config = self.write_config(mounts={"/web": f"{self.web.url}/pub/"})
        data = self.publish("d/x.bin", b"readable by name")
        r = self.sluice("ls", "/web/d", expect=1)
        self.assertErrorNames(r, "does not list this directory", "autoindex_format json")
        self.assertEqual(self.cat("/web/d/x.bin"), data)

    def test_ls_R_goes_on_past_a_directory_it_cannot_list(self):
        self.web.stop()
        self.web = self.start_nginx(self.www, extra="location /pub/private/ { autoindex off; }")
        self.config = self.write_config(mounts={"/web": f"{self.web.url}/pub/"})
        self.publish("a/x.bin", b"x")
        self.publish("private/secret.bin", b"s")
        self.publish("z/y.bin", b"y")
        r = self.sluice("ls", "-R", "/web", expect=1)
        self.assertErrorNames(r, "/pub/private/", "does not list this directory")
        out = r.stdout.decode()
        self.assertIn("/web/a:\nx.bin", out)
        self.assertIn("/web/z:\ny.bin", out)
        # A copy of the tree with a hole in it is a failure, not a partial success.
        r = self.sluice("cp", "-r", "/web", os.path.join(self.tmp, "copy"), expect=1)
        self.assertErrorNames(r, "private")

    def test_server_ignoring_range_is_a_clear_error(self):
        data = self.publish("r.bin", random_bytes(3 * PAGE, "r"))
        norange = self.start_throttle(self.web, ignore_range=True)
        self.config = self.write_config(mounts={"/web": f"{norange.url}/pub/"})
        # The first page is the start of the whole object: that much is right.
        self.assertEqual(self.cat("/web/r.bin", "--length", PAGE), data[:PAGE])
        r = self.sluice("cat", "/web/r.bin", "--offset", 2 * PAGE, expect=1)
        self.assertErrorNames(r, "r.bin", "ignores Range requests")

    def test_writes_are_refused_clearly(self):
        src = self.make_file("src.bin", 10)
        r = self.sluice("cp", f"{self.data}/src.bin", "/web/new.bin", expect=1)
        self.assertErrorNames(r, "read-only")
        del src


class ManySourcesTest(RemoteCase):
    """One config: a local directory, an S3 prefix and a web tree side by side."""

    def test_ls_root_and_cp_between_any_two(self):
        s3 = self.start_s3("lake")
        www = os.path.join(self.tmp, "www")
        os.makedirs(os.path.join(www, "models"))
        web = self.start_nginx(www)
        self.config = self.s3_config(s3, "s3://lake/datasets", mounts_extra={
            "/local": f"file://{self.data}", "/web": f"{web.url}/models/"})
        self.assertEqual(self.sluice("ls", "/").stdout.decode().split(), ["local/", "s3/", "web/"])

        local = self.make_file("l.bin", 2 * PAGE + 1)
        with open(os.path.join(www, "models", "w.bin"), "wb") as f:
            web_data = random_bytes(PAGE + 17, "w")
            f.write(web_data)
        self.sluice("cp", "/local/l.bin", "/s3/from-local.bin")      # local -> S3
        self.sluice("cp", "/web/w.bin", "/s3/from-web.bin")          # web -> S3
        self.sluice("cp", "/s3/from-web.bin", "/local/from-s3.bin")  # S3 -> local
        self.sluice("cp", "/web/w.bin", "/local/from-web.bin")       # web -> local
        self.sluice("cp", "/s3/from-local.bin", "/s3/copy.bin")      # S3 -> S3
        self.sluice("cp", "/local/l.bin", "/local/copy.bin")         # local -> local
        self.assertEqual(self.cat("/s3/from-local.bin"), local)
        self.assertEqual(self.cat("/s3/from-web.bin"), web_data)
        self.assertEqual(self.cat("/s3/copy.bin"), local)
        for name, want in (("from-s3.bin", web_data), ("from-web.bin", web_data), ("copy.bin", local)):
            with open(os.path.join(self.data, name), "rb") as f:
                self.assertEqual(f.read(), want, name)
        # Checked with an independent client: the objects are where the URI says.
        back = os.path.join(self.tmp, "back.bin")
        self.aws(s3, "s3", "cp", "s3://lake/datasets/from-local.bin", back, "--only-show-errors")
        with open(back, "rb") as f:
            self.assertEqual(f.read(), local)
        r = self.sluice("cp", "/local/l.bin", "/web/nope.bin", expect=1)
        self.assertErrorNames(r, "read-only")


if __name__ == "__main__":
    main()
