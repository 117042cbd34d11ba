"""S3 through sluice, against a real S3 server: s3rver (npm) behind a front that checks every
SigV4 signature with AWS's own signer. Data is seeded and checked with Debian's `aws` CLI, so
sluice is compared with an independent client: bytes equal (sha256), cold and hot; writes
readable by `aws`; bad credentials, buckets, endpoints and peers give clear errors or correct
results."""
import hashlib
import os
import subprocess
import threading
import time

from harness import MANY, MiB, PAGE, RemoteCase, main, random_bytes, sha256, sha256_file


class S3Case(RemoteCase):
    bucket = "data"

    def setUp(self):
        super().setUp()
        self.s3 = self.start_s3(self.bucket)
        self.config = self.s3_config(self.s3, f"s3://{self.bucket}")

    def put(self, key, data):
        """An object in the store, put there behind s3rver's back (harness.s3_seed)."""
        self.s3_seed(self.bucket, key, data)
        return data

    def aws_put(self, key, data):
        """An object uploaded by aws: for the keys whose encoding is the test."""
        src = os.path.join(self.tmp, "upload.tmp")
        with open(src, "wb") as f:
            f.write(data)
        self.aws(self.s3, "s3", "cp", src, f"s3://{self.bucket}/{key}", "--only-show-errors")
        os.unlink(src)
        return data

    def get(self, key):
        dst = os.path.join(self.tmp, "download.tmp")
        self.aws(self.s3, "s3", "cp", f"s3://{self.bucket}/{key}", dst, "--only-show-errors")
        with open(dst, "rb") as f:
            data = f.read()
        os.unlink(dst)
        return data


class ReadTest(S3Case):

    def test_small_empty_and_odd_sizes_cold_and_hot(self):
        files = {}
        for i, size in enumerate([0, 1, 4095, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 77]):
            files[f"sizes/f{i}.bin"] = self.put(f"sizes/f{i}.bin", random_bytes(size, i))
        for key, data in files.items():
            self.assertEqual(sha256(self.cat(f"/s3/{key}")), sha256(data), f"cold {key}")
        cold = self.stats()
        self.assertEqual(cold["ufs_bytes_read"], sum(len(d) for d in files.values()))
        for key, data in files.items():
            self.assertEqual(sha256(self.cat(f"/s3/{key}")), sha256(data), f"hot {key}")
        hot = self.stats()
        self.assertEqual(hot["ufs_bytes_read"], cold["ufs_bytes_read"], "hot reads hit the store")
        self.assertEqual(hot["misses"], cold["misses"])

    def test_large_object_cold_and_hot(self):
        # >= 256 MiB, uploaded by aws (multipart), read cold by parallel ranged GETs.
        size = 256 * MiB + 12345
        src = os.path.join(self.tmp, "large.bin")
        with open(src, "wb") as f:
            for i in range(0, size, 16 * MiB):
                f.write(random_bytes(min(16 * MiB, size - i), i))
        want = sha256_file(src)
        self.aws(self.s3, "s3", "cp", src, f"s3://{self.bucket}/big/large.bin", "--only-show-errors")
        os.unlink(src)
        for label in ("cold", "hot"):
            with subprocess.Popen([self._bin(), "-c", self.config, "cat", "/s3/big/large.bin"],
                                  stdout=subprocess.PIPE, env=self.env(), cwd=self.tmp) as p:
                h = hashlib.sha256()
                for chunk in iter(lambda: p.stdout.read(4 * MiB), b""):
                    h.update(chunk)
                self.assertEqual(p.wait(timeout=300), 0)
            self.assertEqual(h.hexdigest(), want, f"{label} read of 256 MiB")
        st = self.stats()
        self.assertEqual(st["ufs_bytes_read"], size, "the hot read must not touch the store")

    def _bin(self):
        from harness import SLUICE
        return SLUICE

    def test_ten_thousand_objects(self):
        want = {}
        for i in range(MANY):
            key = f"d{i % 20:02d}/o{i:05d}.bin"
            want[key] = self.put(f"many/{key}", random_bytes(100 + (i * 37) % 3000, i))
        # Listing: every key, in every directory.
        out = self.sluice("ls", "-R", "--json", "/s3/many").stdout.decode()
        import json
        listed = {json.loads(l)["path"][len("/s3/many/"):] for l in out.splitlines()
                  if json.loads(l)["type"] == "file"}
        self.assertEqual(listed, set(want))
        # Warm them all (parallel), then read them all back: bytes equal, no store reads.
        self.sluice("load", "-r", "/s3/many")
        loaded = self.stats()
        self.assertEqual(loaded["ufs_bytes_read"], sum(len(d) for d in want.values()))
        keys = sorted(want)
        for start in range(0, len(keys), 2000):
            batch = keys[start:start + 2000]
            out = self.sluice("cat", *[f"/s3/many/{k}" for k in batch]).stdout
            self.assertEqual(sha256(out), sha256(b"".join(want[k] for k in batch)))
        self.assertEqual(self.stats()["ufs_bytes_read"], loaded["ufs_bytes_read"])

    def test_ranges(self):
        data = self.put("r.bin", random_bytes(5 * PAGE + 333, "r"))
        for off, length in [(0, 1), (PAGE - 1, 2), (PAGE, PAGE), (len(data) - 10, 100),
                            (len(data), 5), (3, 0), (123456, 3 * PAGE)]:
            out = self.cat("/s3/r.bin", "--offset", off, "--length", length)
            self.assertEqual(out, data[off:off + length], f"range {off}+{length}")

    def test_odd_key_names(self):
        names = ["with space.bin", "unicode-ü-日本.bin", "percent%20literal.bin", "plus+and&amp=.bin",
                 "question?mark.bin", "semi;colon,comma.bin", "tilde~star*(paren).bin",
                 "dir with space/inner file.bin"]
        for i, n in enumerate(names):
            self.aws_put(f"odd/{n}", random_bytes(1000 + i, n))
        ls = self.sluice("ls", "/s3/odd").stdout.decode().split("\n")
        for n in names:
            top = n.split("/")[0] + ("/" if "/" in n else "")
            self.assertIn(top, ls)
            self.assertEqual(self.cat(f"/s3/odd/{n}"), random_bytes(1000 + names.index(n), n), n)
        # And written by sluice under such names, read back by aws.
        src = os.path.join(self.tmp, "src.bin")
        with open(src, "wb") as f:
            f.write(b"written by sluice")
        for n in names:
            self.sluice("cp", src, f"/s3/written/{n}")
            self.assertEqual(self.get(f"written/{n}"), b"written by sluice", n)

    def test_direct_uri_uses_the_mounts_endpoint(self):
        data = self.put("x/direct.bin", random_bytes(3 * PAGE, "d"))
        self.assertEqual(self.cat(f"s3://{self.bucket}/x/direct.bin"), data)
        # Without a config, the endpoint comes from AWS_ENDPOINT_URL, as for the aws CLI.
        env = self.env()
        env["AWS_ENDPOINT_URL"] = self.s3.url
        from harness import SLUICE
        r = subprocess.run([SLUICE, "cat", f"s3://{self.bucket}/x/direct.bin"], env=env,
                           capture_output=True, timeout=60, cwd=self.tmp)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, data)

    def test_credentials_from_aws_files(self):
        data = self.put("p.bin", b"profile")
        aws_dir = os.path.join(self.home, ".aws")
        os.makedirs(aws_dir)
        with open(os.path.join(aws_dir, "credentials"), "w") as f:
            f.write(f"[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n\n"
                    f"[ci]\naws_access_key_id = sluice-test-key\n"
                    f"aws_secret_access_key = secret with spaces/+=%&?~\n")
        env = self.env()
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        from harness import SLUICE
        run = lambda e: subprocess.run([SLUICE, "-c", self.config, "cat", "/s3/p.bin"], env=e,
                                       capture_output=True, timeout=60, cwd=self.tmp)
        r = run(dict(env, AWS_PROFILE="ci"))
        self.assertEqual((r.returncode, r.stdout), (0, data), r.stderr)
        run = lambda e: subprocess.run([SLUICE, "-c", self.config, "cat", "/s3/p2.bin"], env=e,
                                       capture_output=True, timeout=60, cwd=self.tmp)
        r = run(env)  # the default profile's key is unknown to the store
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"refused the credentials", r.stderr)
        self.assertIn(b"profile default", r.stderr)


class WriteTest(S3Case):

    def test_multipart_300MiB_read_back_by_aws(self):
        size = 300 * MiB + 7
        src = os.path.join(self.tmp, "big.bin")
        with open(src, "wb") as f:
            for i in range(0, size, 16 * MiB):
                f.write(random_bytes(min(16 * MiB, size - i), f"w{i}"))
        want = sha256_file(src)
        self.sluice("cp", src, "/s3/up/big.bin")
        back = os.path.join(self.tmp, "back.bin")
        self.aws(self.s3, "s3", "cp", f"s3://{self.bucket}/up/big.bin", back, "--only-show-errors")
        self.assertEqual(sha256_file(back), want)
        # It went up as a multipart upload, in parts of the default 8 MiB.
        ops = self.front_stats(self.s3)
        self.assertEqual(ops.get("CreateMultipartUpload"), 1, ops)
        self.assertEqual(ops.get("UploadPart"), (size + 8 * MiB - 1) // (8 * MiB), ops)
        self.assertEqual(ops.get("CompleteMultipartUpload"), 1, ops)
        # And sluice reads what it wrote.
        os.unlink(back)
        self.sluice("cp", "/s3/up/big.bin", back)
        self.assertEqual(sha256_file(back), want)

    def test_failed_multipart_upload_is_aborted_and_leaves_nothing(self):
        for s in self.servers:
            s.stop()
        self.s3 = self.start_s3(self.bucket, refuse_part=3)
        self.config = self.s3_config(self.s3, f"s3://{self.bucket}")
        self.put("keep.bin", b"old object")
        src = os.path.join(self.tmp, "big.bin")
        with open(src, "wb") as f:
            f.write(random_bytes(40 * MiB, "abort"))
        r = self.sluice("cp", src, "/s3/keep.bin", expect=1)
        self.assertErrorNames(r, "keep.bin", "InvalidArgument")
        ops = self.front_stats(self.s3)
        self.assertEqual(ops.get("AbortMultipartUpload"), 1, ops)
        self.assertIsNone(ops.get("CompleteMultipartUpload"), ops)
        self.assertEqual(self.get("keep.bin"), b"old object", "a failed upload replaced the object")

    def test_copy_between_s3_and_local_both_ways_and_overwrite(self):
        a = self.make_file("a.bin", 2 * PAGE + 5)
        self.sluice("cp", f"{self.data}/a.bin", "/s3/c/a.bin")
        self.assertEqual(self.get("c/a.bin"), a)
        out = os.path.join(self.tmp, "out.bin")
        self.sluice("cp", "/s3/c/a.bin", out)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), a)
        # Overwrite through sluice: the next read is the new object, not cached old pages.
        b = self.make_file("b.bin", PAGE + 9)
        self.sluice("cp", f"{self.data}/b.bin", "/s3/c/a.bin")
        self.assertEqual(self.cat("/s3/c/a.bin"), b)
        # cp -r of a tree, to S3 and back.
        for i in range(5):
            self.make_file(f"tree/sub{i % 2}/f{i}.bin", 1000 * i + 1)
        self.sluice("cp", "-r", f"{self.data}/tree", "/s3/t/")
        back = os.path.join(self.tmp, "tree-back")
        self.sluice("cp", "-r", "/s3/t/tree", back)
        for i in range(5):
            rel = f"sub{i % 2}/f{i}.bin"
            with open(os.path.join(back, rel), "rb") as f1, open(os.path.join(self.data, "tree", rel), "rb") as f2:
                self.assertEqual(f1.read(), f2.read(), rel)


class BadPeerTest(S3Case):

    def test_wrong_access_key(self):
        self.put("k.bin", b"x")
        env = dict(self.env(), AWS_ACCESS_KEY_ID="no-such-key")
        r = self.run_env(env, "cat", "/s3/k.bin")
        self.assertEqual(r.returncode, 1)
        self.assertErrorNames(r, "refused the credentials", self.s3.url, "InvalidAccessKeyId")

    def test_wrong_secret_key(self):
        self.put("k.bin", b"x")
        env = dict(self.env(), AWS_SECRET_ACCESS_KEY="not the secret")
        for cmd in (["cat", "/s3/k.bin"], ["ls", "/s3/"], ["cp", __file__, "/s3/new.bin"]):
            r = self.run_env(env, *cmd)
            self.assertEqual(r.returncode, 1, cmd)
            self.assertErrorNames(r, "refused the credentials", self.s3.url, "SignatureDoesNotMatch")

    def run_env(self, env, *args):
        from harness import SLUICE
        return subprocess.run([SLUICE, "-c", self.config] + list(args), env=env,
                              capture_output=True, timeout=120, cwd=self.tmp)

    def test_unknown_bucket(self):
        self.config = self.s3_config(self.s3, "s3://no-such-bucket")
        r = self.sluice("ls", "/s3/", expect=1)
        self.assertErrorNames(r, "bucket 'no-such-bucket' does not exist", self.s3.url)
        r = self.sluice("cat", "/s3/x.bin", expect=1)
        self.assertErrorNames(r, "no-such-bucket")

    def test_endpoint_down(self):
        port = self.s3.port
        self.s3.stop()
        self.config = self.s3_config(self.s3, f"s3://{self.bucket}",
                                     extra_mount="retries: 3\nretry_time: 5s")
        t0 = time.monotonic()
        r = self.sluice("cat", "/s3/x.bin", expect=1, timeout=60)
        self.assertErrorNames(r, f"127.0.0.1:{port}", "cannot reach", "4 attempts")
        self.assertLess(time.monotonic() - t0, 30, "retries must be bounded")

    def test_503s_and_dropped_connections(self):
        big = self.put("f/big.bin", random_bytes(24 * MiB + 3, "big"))
        small = {f"f/s{i}.bin": self.put(f"f/s{i}.bin", random_bytes(5000 + i, i)) for i in range(30)}
        bad = self.start_throttle(self.s3, fail_every=4, drop_every=5)
        self.config = self.s3_config(bad, f"s3://{self.bucket}")
        self.assertEqual(sha256(self.cat("/s3/f/big.bin")), sha256(big))
        for k, d in small.items():
            self.assertEqual(self.cat(f"/s3/{k}"), d, k)
        # Writes through it too: a multipart upload with parts refused and cut.
        src = os.path.join(self.tmp, "up.bin")
        with open(src, "wb") as f:
            f.write(random_bytes(20 * MiB, "up"))
        self.sluice("cp", src, "/s3/f/up.bin")
        self.assertEqual(sha256(self.get("f/up.bin")), sha256_file(src))
        st = self.throttle_stats(bad)
        self.assertGreater(st["failed_503"], 0, st)
        self.assertGreater(st["dropped"], 0, st)

    def test_cp_killed_mid_upload_leaves_the_old_object(self):
        self.put("k.bin", b"the old object")
        slow = self.start_throttle(self.s3, bandwidth="4MB")
        self.config = self.s3_config(slow, f"s3://{self.bucket}")
        src = os.path.join(self.tmp, "big.bin")
        with open(src, "wb") as f:
            f.write(random_bytes(40 * MiB, "killed"))
        p = self.popen("cp", src, "/s3/k.bin", stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # parts are on their way: about 8 MiB of 40 at 4 MB/s
        p.kill()
        p.wait(timeout=30)
        self.assertEqual(self.get("k.bin"), b"the old object")
        ops = self.front_stats(self.s3)
        self.assertEqual(ops.get("CreateMultipartUpload"), 1, ops)
        self.assertIsNone(ops.get("CompleteMultipartUpload"), ops)

    def test_object_overwritten_between_reads(self):
        self.config = self.s3_config(self.s3, f"s3://{self.bucket}", extra_mount="metadata_ttl: 0")
        old = self.put("o.bin", random_bytes(3 * PAGE, "old"))
        self.assertEqual(self.cat("/s3/o.bin"), old)
        new = self.put("o.bin", random_bytes(2 * PAGE + 1, "new"))
        self.assertEqual(self.cat("/s3/o.bin"), new)

    def test_object_replaced_mid_read_is_never_mixed(self):
        # A slow link, so the replacement lands while sluice is still reading.
        size = 24 * MiB
        old = self.put("m.bin", random_bytes(size, "old"))
        new = random_bytes(size, "new")
        slow = self.start_throttle(self.s3, bandwidth="8MB", concurrency=2)
        self.config = self.s3_config(slow, f"s3://{self.bucket}", memory="16MiB",
                                     extra_mount="metadata_ttl: 0")
        p = self.popen("cat", "/s3/m.bin", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(1.0)
        self.put("m.bin", new)  # straight to the store, not through the slow link
        out, err = p.communicate(timeout=120)
        if p.returncode == 0:
            self.assertIn(sha256(out), (sha256(old), sha256(new)), "a mix of two objects")
        else:
            self.assertIn(b"changed in the store while it was read", err)
            # What it wrote before it noticed is a prefix of the old object, never new bytes.
            self.assertEqual(out, old[:len(out)])
        self.assertEqual(self.cat("/s3/m.bin"), new)


class MetadataTest(S3Case):

    def test_second_ls_R_makes_no_requests_within_ttl(self):
        for i in range(1500):  # more than one listing page in one directory
            self.put(f"tree/{'flat' if i < 1200 else f'd{i % 3}'}/k{i:05d}", b"%d" % i)
        first = self.sluice("ls", "-R", "-l", "/s3/tree").stdout
        after_first = self.stats()["ufs_requests"]
        self.assertGreater(after_first, 0)
        second = self.sluice("ls", "-R", "-l", "/s3/tree").stdout
        self.assertEqual(second, first)
        self.assertEqual(self.stats()["ufs_requests"], after_first, "second ls -R asked the store")
        self.assertEqual(first.count(b"\n-"), 1500)

    def test_immutable_dataset_ttl_minus_one(self):
        self.config = self.s3_config(self.s3, f"s3://{self.bucket}", extra_mount="metadata_ttl: -1")
        self.put("i/a.bin", b"a")
        self.sluice("ls", "-R", "/s3/i")
        before = self.stats()["ufs_requests"]
        self.put("i/b.bin", b"b")  # datasets declared immutable are not asked again
        out = self.sluice("ls", "/s3/i").stdout
        self.assertEqual(out, b"a.bin\n")
        self.assertEqual(self.stats()["ufs_requests"], before)


if __name__ == "__main__":
    main()
