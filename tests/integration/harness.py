"""What every integration test shares: the real `sluice` binary, a fresh directory per case
(its data, its cache, its config, its HOME), commands with timeouts, and checks a user would
make: bytes equal (sha256), errors that name what was wrong, exit codes.

Runs under Debian's /usr/bin/python3 with the standard library only.
"""
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SLUICE = os.path.abspath(os.environ.get("SLUICE_BIN") or os.path.join(HERE, "..", "..", "build", "sluice"))
TIMEOUT = int(os.environ.get("SLUICE_TEST_TIMEOUT", "180"))
MiB = 1 << 20
PAGE = MiB
# The sanitizer build checks memory and behaviour, not scale: its pass of the suite reads the
# "1 GiB" and "10,000 objects" cases at a smaller size (the optimised build reads them whole).
SANITIZED = os.environ.get("SLUICE_SANITIZED") == "1"
LARGE = (128 if SANITIZED else 1024) * MiB
MANY = 2000 if SANITIZED else 10000


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def random_bytes(n, seed):
    return random.Random(seed).randbytes(n)


def data_bytes(path):
    """Bytes of data in a file, its extents rounded up to whole blocks, holes left out."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        blk, off, data = st.st_blksize, 0, 0
        while off < st.st_size:
            try:
                start = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break  # no data after off (ENXIO)
            off = os.lseek(fd, start, os.SEEK_HOLE)
            data += -(-off // blk) * blk - start
        return data
    finally:
        os.close(fd)


class SluiceCase(unittest.TestCase):
    """One temp dir per test: data/ (the store), cache/, sluice.yaml, home/."""

    cache_size = "1GiB"
    cache_memory = "256MiB"

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sluice-it-")
        self.data = os.path.join(self.tmp, "data")
        self.cache = os.path.join(self.tmp, "cache")
        self.home = os.path.join(self.tmp, "home")
        os.makedirs(self.data)
        os.makedirs(self.home)
        self.mounted = []
        self.config = self.write_config()

    def tearDown(self):
        for m in reversed(self.mounted):
            pid = mount_pid(m)
            subprocess.run(["umount", "-l", m], capture_output=True)
            wait_gone(pid)  # a sluice daemon: it finishes once the kernel lets go
        shutil.rmtree(self.tmp, ignore_errors=True)
        if os.path.exists(self.tmp):  # a mount the test made and did not put in self.mounted
            print(f"left behind: {self.tmp} (busy)", file=sys.stderr)

    # ---- setup helpers ----

    def cache_lines(self, cache_dir=None, size=None, memory=None, page_size=None):
        """The config's cache section, as lines: this case's sizes unless given."""
        lines = ["cache:", f"  dir: {cache_dir or self.cache}",
                 f"  size: {size or self.cache_size}", f"  memory: {memory or self.cache_memory}"]
        if page_size:
            lines.append(f"  page_size: {page_size}")
        return lines

    def write_config(self, name="sluice.yaml", cache_dir=None, size=None, memory=None,
                     page_size=None, mounts=None, extra=""):
        lines = self.cache_lines(cache_dir, size, memory, page_size) + ["mounts:"]
        for point, uri in (mounts or {"/data": f"file://{self.data}"}).items():
            lines.append(f"  {point}: {uri}")
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)
        return path

    def make_file(self, rel, size, seed=None):
        """A file of random bytes in the store; returns its bytes."""
        path = os.path.join(self.data, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = random_bytes(size, seed if seed is not None else rel)
        with open(path, "wb") as f:
            f.write(data)
        return data

    def mount_tmpfs(self, path, options):
        """A real small or read-only file system (the tests run as root, like `make test`)."""
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.fail(f"this test mounts a tmpfs and needs root: {r.stderr.strip()}")
        self.mounted.append(path)

    def mount(self, *opts, point=None, expect=0):
        """`sluice mount` at point (default tmp/mnt), as a daemon; returns the mount point and
        unmounts it at the end of the test."""
        point = point or os.path.join(self.tmp, "mnt")
        os.makedirs(point, exist_ok=True)
        r = self.sluice("mount", *opts, point, expect=expect)
        if r.returncode == 0:
            self.mounted.append(point)
        return point

    # ---- running sluice ----

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        env.update(HOME=self.home, XDG_CACHE_HOME=os.path.join(self.home, ".cache"),
                   XDG_CONFIG_HOME=os.path.join(self.home, ".config"), LC_ALL="C")
        return env

    def sluice(self, *args, config=True, expect=0, stdin=None, timeout=TIMEOUT):
        """Runs sluice; checks the exit code (None: any); returns the CompletedProcess."""
        argv = [SLUICE] + (["-c", self.config] if config is True else
                           ["-c", config] if config else []) + [str(a) for a in args]
        r = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout,
                           env=self.env(), cwd=self.tmp)
        if expect is not None and r.returncode != expect:
            self.fail(f"{' '.join(argv)}: exit {r.returncode}, expected {expect}\n"
                      f"stderr: {r.stderr.decode(errors='replace')}")
        return r

    def popen(self, *args, **kw):
        argv = [SLUICE, "-c", self.config] + [str(a) for a in args]
        return subprocess.Popen(argv, env=self.env(), cwd=self.tmp, **kw)

    def cat(self, path, *opts):
        return self.sluice("cat", *opts, path).stdout

    def stats(self):
        return json.loads(self.sluice("cache", "stats", "--json").stdout)

    # ---- looking at the cache directory ----

    def page_files(self):
        """(path, bytes of data) of every page file in the cache dir: its data extents
        (SEEK_DATA/SEEK_HOLE) in whole blocks. Not st_blocks: ext4 counts a file's extent tree
        there too, and a page file with holes punched by eviction can take a block of it
        (4 KiB no page owns: 16781312 against bytes_cached 16777216 in one run)."""
        out = []
        for dirpath, _, files in os.walk(os.path.join(self.cache, "pages")):
            for name in files:
                p = os.path.join(dirpath, name)
                try:
                    out.append((p, data_bytes(p)))
                except FileNotFoundError:
                    pass  # evicted while we looked
        return out

    def disk_usage(self):
        return sum(b for _, b in self.page_files())

    def fs_used_by_pages(self):
        """Bytes the cache's pages hold on a file system of their own, read in one statvfs call
        (a walk of 256 folders is not a snapshot: it can count a page evicted from a folder it
        has passed and a new one in a folder it has not reached). The index is measured first
        and subtracted: it only grows, so this never under-counts the pages."""
        index = 0
        for name in ("data.mdb", "lock.mdb"):
            try:
                index += os.stat(os.path.join(self.cache, "index", name)).st_blocks * 512
            except FileNotFoundError:
                pass
        st = os.statvfs(self.cache)
        return (st.f_blocks - st.f_bfree) * st.f_frsize - index

    def assertErrorNames(self, r, *needles):
        err = r.stderr.decode(errors="replace")
        for n in needles:
            self.assertIn(n, err, f"stderr should name {n!r}: {err!r}")
        self.assertTrue(err.startswith("sluice: "), f"errors start with 'sluice: ': {err!r}")


def main():
    unittest.main(verbosity=2)


def mount_pid(point):
    """The process serving the sluice mount at point (its source is "sluice:PID"), or None."""
    real = os.path.realpath(point)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, source = right.split()[:2]
            if left.split()[4] == real and fstype == "fuse.sluice":
                return int(source.split(":")[1])
    return None


def wait_for(cond, timeout=30):
    """Polls cond() until it is true (True) or timeout seconds passed (False)."""
    import time
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def wait_gone(pid, timeout=30):
    """Waits for process pid (None: nothing) to exit; True if it did."""
    import time
    end = time.monotonic() + timeout
    while pid:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # exited; its new parent has not reaped it yet
        except FileNotFoundError:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


# ---- real servers: S3 (s3rver behind a SigV4-checking front), nginx, the throttle ----

TOOLS = os.path.abspath(os.path.join(HERE, "..", "tools"))
AWS_CLI = "/usr/bin/aws"  # Debian's awscli, whatever else is first on PATH
TEST_KEY = "sluice-test-key"
TEST_SECRET = "secret with spaces/+=%&?~"  # known to tests/tools/s3front.js


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process of the tests, on 127.0.0.1; stopped by stop() (tearDown)."""

    def __init__(self, argv, cwd=None, ready_line=True, port=None, env=None):
        import time
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, text=True, env=env)
        if ready_line:
            line = self.proc.stdout.readline()
            if not line.startswith("PORT "):
                self.proc.kill()
                raise RuntimeError(f"{argv[:2]} did not start: {line!r} {self.proc.stderr.read()!r}")
            self.port = int(line.split()[1])
        else:
            import socket
            self.port = port
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{argv[0]} did not start: {self.proc.stderr.read()!r}")
                    time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


class RemoteCase(SluiceCase):
    """A SluiceCase that can start an S3 store, nginx and throttles of its own."""

    def setUp(self):
        super().setUp()
        self.servers = []

    def tearDown(self):
        for s in reversed(self.servers):
            s.stop()
        super().tearDown()

    def s3_seed(self, bucket, key, data):
        """Puts an object (bytes, or an iterable of chunks) straight into s3rver's folder in
        its own format: the object, its .md5 (the ETag) and its metadata, as s3rver's
        putObject writes them. `aws s3 cp` costs about a second an object here. The object is
        renamed in whole, so a reader never sees half of it. Returns its sha256, hex."""
        path = os.path.join(self.tmp, "s3rver", bucket, key + "._S3rver_object")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        md5, sha = hashlib.md5(), hashlib.sha256()
        with open(path + ".tmp", "wb") as f:
            for c in [data] if isinstance(data, bytes) else data:
                md5.update(c)
                sha.update(c)
                f.write(c)
        os.rename(path + ".tmp", path)
        with open(path + ".md5", "w") as f:
            f.write(md5.hexdigest())
        with open(os.path.join(self.tmp, "s3rver", bucket, key + "._S3rver_metadata.json"),
                  "w") as f:
            json.dump({"content-type": "application/octet-stream"}, f)
        return sha.hexdigest()

    def front_stats(self, s3):
        import urllib.request
        with urllib.request.urlopen(f"{s3.url}/__front__/stats", timeout=10) as r:
            return json.loads(r.read())

    def start_s3(self, *buckets, refuse_part=None):
        # s3rver's listing continuation tokens use DES, which OpenSSL 3 keeps in its legacy
        # provider: without it, any listing longer than one page fails inside s3rver.
        argv = ["node", "--openssl-legacy-provider", os.path.join(TOOLS, "s3front.js"),
                "--dir", os.path.join(self.tmp, "s3rver")]
        for b in buckets:
            argv += ["--bucket", b]
        if refuse_part:
            argv += ["--refuse-part", str(refuse_part)]
        s = Server(argv)
        self.servers.append(s)
        return s

    def start_throttle(self, upstream, latency_ms=0, bandwidth=None, concurrency=None,
                       fail_every=None, drop_every=None, ignore_range=False):
        argv = ["node", os.path.join(TOOLS, "throttle.js"), "--upstream", upstream.url,
                "--latency-ms", str(latency_ms)]
        for flag, v in (("--bandwidth", bandwidth), ("--concurrency", concurrency),
                        ("--fail-every", fail_every), ("--drop-every", drop_every)):
            if v is not None:
                argv += [flag, str(v)]
        if ignore_range:
            argv.append("--ignore-range")
        s = Server(argv)
        self.servers.append(s)
        return s

    def throttle_stats(self, throttle):
        import urllib.request
        with urllib.request.urlopen(f"{throttle.url}/__throttle__/stats", timeout=10) as r:
            return json.loads(r.read())

    def start_nginx(self, root, json_index=True, extra=""):
        port = free_port()
        conf = os.path.join(self.tmp, f"nginx-{port}.conf")
        prefix = os.path.join(self.tmp, f"nginx-{port}")
        os.makedirs(prefix, exist_ok=True)
        index = "autoindex on; autoindex_format json;" if json_index else "autoindex off;"
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ {index} }}
        {extra}
    }}
}}
""")
        s = Server(["nginx", "-c", conf, "-p", prefix], ready_line=False, port=port)
        self.servers.append(s)
        return s

    def aws_env(self, endpoint=None):
        env = self.env()
        env.update(AWS_ACCESS_KEY_ID=TEST_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET,
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_PAGER="")
        env.pop("AWS_PROFILE", None)
        return env

    def aws(self, server, *args, check=True, timeout=TIMEOUT):
        argv = [AWS_CLI, "--endpoint-url", server.url] + [str(a) for a in args]
        r = subprocess.run(argv, capture_output=True, timeout=timeout, env=self.aws_env(),
                           cwd=self.tmp)
        if check and r.returncode != 0:
            self.fail(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.decode(errors='replace')}")
        return r

    def s3_config(self, server, uri, name="sluice.yaml", extra_mount="", mounts_extra=None,
                  **kw):
        """A config with /s3 mounted from server (and any other mounts given)."""
        lines = self.cache_lines(None, kw.get("size"), kw.get("memory"), kw.get("page_size"))
        lines += ["mounts:", "  /s3:", f"    uri: {uri}", f"    endpoint: {server.url}"]
        lines += ["    " + l for l in extra_mount.splitlines() if l.strip()]
        for point, spec in (mounts_extra or {}).items():
            lines.append(f"  {point}: {spec}")
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def env(self):
        env = super().env()
        for k in list(env):
            if k.startswith("AWS_"):
                del env[k]
        env.update(AWS_ACCESS_KEY_ID=TEST_KEY, AWS_SECRET_ACCESS_KEY=TEST_SECRET,
                   AWS_EC2_METADATA_DISABLED="true")
        return env
