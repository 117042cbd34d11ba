"""`sluice run`: real pipelines of shell stages in a temp folder. What runs, in what order and
how many at once; what a failure, a retry, a timeout, --keep-going and Ctrl-C do; that an
unchanged pipeline runs nothing and a changed dep runs exactly what is below it; and that bad
pipeline files are refused with the file, line and column."""
import json
import os
import signal
import subprocess
import time

from harness import SLUICE, SluiceCase, main, read_file


def alive(pid, wait=2.0):
    """Whether pid still runs after up to wait seconds (a zombie nobody reaped has ended: in a
    container the reaper of orphans may be missing)."""
    end = time.monotonic() + wait
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state in ("Z", "X"):
            return False
        if time.monotonic() > end:
            return True
        time.sleep(0.05)


class RunCase(SluiceCase):

    def setUp(self):
        super().setUp()
        self.p = os.path.join(self.tmp, "p")
        os.makedirs(self.p)

    def pipeline(self, text):
        with open(os.path.join(self.p, "pipeline.yaml"), "w") as f:
            f.write(text)

    def write(self, rel, text):
        path = os.path.join(self.p, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def run_p(self, *args, expect=0, config=False):
        return self.sluice("run", "-f", os.path.join(self.p, "pipeline.yaml"), *args,
                           expect=expect, config=config)

    def events(self, *args, expect=0):
        r = self.run_p("--json", *args, expect=expect)
        return [json.loads(line) for line in r.stdout.decode().splitlines()]

    @staticmethod
    def stages(events, kind):
        return sorted(e["stage"] for e in events if e["event"] == kind)


PIPE = """\
stages:
  ingest:
    cmd: mkdir -p data && cp src.txt data/raw.txt && echo ingest >> ran.log
    deps: [src.txt]
    outs: [data/raw.txt]
  prep:
    foreach: [a, b]
    cmd: tr a-z A-Z < data/raw.txt > data/prep-${item}.txt && echo prep-${item} >> ran.log
    deps: [data/raw.txt]
    outs: ['data/prep-${item}.txt']
  train:
    cmd: cat data/prep-a.txt data/prep-b.txt > model.txt && echo train >> ran.log
    deps: [data/prep-a.txt, data/prep-b.txt, train.cfg]
    outs: [model.txt]
    params: [train.lr]
  other:
    cmd: echo other > other.txt && echo other >> ran.log
    outs: [other.txt]
"""


class Caching(RunCase):

    def setUp(self):
        super().setUp()
        self.pipeline(PIPE)
        self.write("src.txt", "hello\n")
        self.write("train.cfg", "epochs: 1\n")
        self.write("params.yaml", "train:\n  lr: 0.1\n")

    def ran(self):
        path = os.path.join(self.p, "ran.log")
        lines = read_file(path).decode().split() if os.path.exists(path) else []
        os.path.exists(path) and os.unlink(path)
        return sorted(lines)

    def test_first_run_then_nothing_then_exactly_downstream(self):
        ev = self.events()
        self.assertEqual(self.stages(ev, "done"), ["ingest", "other", "prep@a", "prep@b", "train"])
        self.assertEqual(read_file(os.path.join(self.p, "model.txt")), b"HELLO\nHELLO\n")
        self.assertEqual(self.ran(), ["ingest", "other", "prep-a", "prep-b", "train"])
        lock = json.loads(read_file(os.path.join(self.p, "sluice.lock")))
        rec = lock["stages"]["train"]
        self.assertEqual(rec["params"], {"train.lr": "0.1"})
        self.assertEqual([d["path"] for d in rec["deps"]],
                         ["data/prep-a.txt", "data/prep-b.txt", "train.cfg"])
        self.assertEqual(rec["outs"][0]["size"], 12)

        # Unchanged: nothing runs.
        ev = self.events()
        self.assertEqual(self.stages(ev, "cached"), ["ingest", "other", "prep@a", "prep@b", "train"])
        self.assertEqual(self.ran(), [])
        self.assertEqual(ev[-1]["event"], "summary")
        self.assertEqual((ev[-1]["done"], ev[-1]["cached"]), (0, 5))

        # One dep of train changed: only train.
        self.write("train.cfg", "epochs: 2\n")
        ev = self.events()
        self.assertEqual(self.stages(ev, "done"), ["train"])
        self.assertIn("dep changed: train.cfg", [e.get("reason") for e in ev if e["event"] == "start"])
        self.assertEqual(self.ran(), ["train"])

        # The source changed: ingest and all below it, not `other`.
        self.write("src.txt", "world\n")
        self.assertEqual(self.stages(self.events(), "done"), ["ingest", "prep@a", "prep@b", "train"])
        self.assertEqual(read_file(os.path.join(self.p, "model.txt")), b"WORLD\nWORLD\n")
        self.ran()

        # A param changed: train alone; a cmd changed: that stage alone.
        self.write("params.yaml", "train:\n  lr: 0.2\n")
        ev = self.events()
        self.assertEqual(self.stages(ev, "done"), ["train"])
        self.assertIn("its params changed", [e.get("reason") for e in ev if e["event"] == "start"])
        self.pipeline(PIPE.replace("echo other > other.txt", "echo other2 > other.txt"))
        self.assertEqual(self.stages(self.events(), "done"), ["other"])

        # An out changed behind sluice's back: its stage runs again.
        self.write("model.txt", "tampered\n")
        ev = self.events()
        self.assertEqual(self.stages(ev, "done"), ["train"])
        self.assertIn("out changed: model.txt", [e.get("reason") for e in ev if e["event"] == "start"])
        self.ran()

    def test_same_bytes_upstream_stops_the_rerun(self):
        self.run_p()
        self.ran()
        # ingest runs again (its dep changed) but makes the same bytes: prep and train do not.
        self.write("src.txt", "hello\n")
        os.utime(os.path.join(self.p, "src.txt"), (1, 1))
        self.pipeline(PIPE.replace("cp src.txt", "cat src.txt >"))
        self.assertEqual(self.stages(self.events(), "done"), ["ingest"])

    def test_dry_run_force_and_selection(self):
        ev = self.events("--dry-run")
        self.assertEqual(self.stages(ev, "would_run"), ["ingest", "other", "prep@a", "prep@b", "train"])
        self.assertFalse(os.path.exists(os.path.join(self.p, "model.txt")))
        self.assertFalse(os.path.exists(os.path.join(self.p, "sluice.lock")))
        # A stage runs with its upstream, not the rest.
        self.assertEqual(self.stages(self.events("prep"), "done"), ["ingest", "prep@a", "prep@b"])
        self.ran()
        r = self.run_p("--dry-run", "train")
        self.assertIn(b"would run train", r.stderr)
        self.assertNotIn(b"would run prep", r.stderr)
        self.assertEqual(self.stages(self.events("--force", "prep@a"), "done"), ["prep@a"] + [])
        self.assertEqual(self.ran(), ["prep-a"])
        # --downstream: the stage and what is below it.
        self.assertEqual(self.stages(self.events("--force", "--downstream", "prep@b"), "done"),
                         ["prep@b", "train"])
        self.ran()
        r = self.run_p("nope", expect=2)
        self.assertIn(b'no stage "nope"', r.stderr)


class Report(RunCase):

    def test_each_stage_access_pattern(self):
        self.pipeline("""\
stages:
  ingest:
    cmd: mkdir -p raw && for i in $(seq 50); do head -c 20000 /dev/urandom > raw/$i.bin; done
    outs: [raw]
  prep:
    cmd: cat raw/*.bin raw/*.bin raw/*.bin raw/*.bin raw/*.bin > big.bin
    deps: [raw]
    outs: [big.bin]
  train:
    cmd: /usr/bin/python3 -c "import os,random; f=os.open('big.bin',os.O_RDONLY); [os.pread(f,4096,random.randrange(4900000)) for _ in range(100)]; open('model.txt','w').write('ok')"
    deps: [big.bin]
    outs: [model.txt]
""")
        self.run_p()
        rep = json.loads(self.sluice("report", "-f", os.path.join(self.p, "pipeline.yaml"), "--json",
                                     config=False).stdout)
        by = {s["stage"]: s for s in rep["stages"]}
        ingest, prep, train = by["ingest"]["profile"], by["prep"]["profile"], by["train"]["profile"]
        self.assertEqual((ingest["kind"], ingest["files_written"], ingest["bytes_written"]),
                         ("write-only", 50, 50 * 20000))
        self.assertEqual(ingest["file_sizes"]["small"], 50)
        self.assertEqual(ingest["file_count_class"], "small")
        self.assertEqual((prep["kind"], prep["access"], prep["files_read"]), ("read/write 1:1", "sequential", 50))
        self.assertEqual((prep["bytes_read"], prep["bytes_written"]), (5 * 50 * 20000, 5 * 50 * 20000))
        self.assertEqual(prep["file_sizes"]["medium"], 1)
        self.assertEqual((train["access"], train["reads"]), ("random", 100))
        self.assertEqual(train["bytes_read"], 100 * 4096)  # the pages asked for, not the file
        table = self.sluice("report", "-f", os.path.join(self.p, "pipeline.yaml"), config=False).stdout.decode()
        self.assertRegex(table, r"ingest\s+done")
        self.assertIn("write-only", table)
        r = self.sluice("report", "-f", os.path.join(self.tmp, "nowhere", "pipeline.yaml"), config=False, expect=1)
        self.assertIn(b"no report", r.stderr)


class SluicePaths(RunCase):

    def ns_config(self):
        """A config whose mount /data is the test's store folder (sluice paths for deps)."""
        cfg = os.path.join(self.tmp, "ns.yaml")
        with open(cfg, "w") as f:
            f.write(f"cache:\n  dir: {self.cache}\n  size: 1GiB\nmounts:\n"
                    f"  /data:\n    uri: file://{self.data}\n    metadata_ttl: 0\n")
        return cfg

    def test_a_namespace_dep_is_known_by_its_version(self):
        # A store under a mount: the dep is hashed by the object's version, not read.
        self.make_file("in/x.bin", 3 << 20)
        cfg = self.ns_config()
        sl = SLUICE
        self.pipeline(f"""\
stages:
  copy:
    cmd: {sl} cat /data/in/x.bin > local.bin
    deps: [/data/in/x.bin]
    outs: [local.bin]
""")
        run = lambda: [json.loads(l) for l in self.sluice(
            "run", "-f", os.path.join(self.p, "pipeline.yaml"), "--json", config=cfg).stdout.decode().splitlines()]
        self.assertEqual(self.stages(run(), "done"), ["copy"])
        self.assertEqual(read_file(os.path.join(self.p, "local.bin")), read_file(os.path.join(self.data, "in/x.bin")))
        lock = json.loads(read_file(os.path.join(self.p, "sluice.lock")))
        self.assertEqual(lock["stages"]["copy"]["deps"][0]["size"], 3 << 20)
        self.assertEqual(self.stages(run(), "cached"), ["copy"])
        self.make_file("in/x.bin", 3 << 20, seed=9)
        os.utime(os.path.join(self.data, "in/x.bin"), ns=(1, 10**18))
        self.assertEqual(self.stages(run(), "done"), ["copy"])
        self.assertEqual(read_file(os.path.join(self.p, "local.bin")), read_file(os.path.join(self.data, "in/x.bin")))

    def test_the_next_stages_sluice_deps_are_loaded_while_a_stage_runs(self):
        # train reads a 24 MiB dataset in the store; while prep runs, the run loads it into the
        # cache, so train finds it all cached when it starts. data/made.bin is an out of prep:
        # what the store holds under that name now is old, and is not loaded.
        self.make_file("in/x.bin", 24 << 20)
        self.make_file("made.bin", 1 << 20)
        cfg = self.ns_config()
        sl = SLUICE
        self.pipeline(f"""\
stages:
  prep:
    cmd: sleep 2; {sl} stat --json /data/made.bin > before.json; echo new > new.txt; {sl} cp new.txt /data/made.bin
    outs: [/data/made.bin]
  train:
    cmd: {sl} stat --json /data/in/x.bin > cached.json
    deps: [/data/made.bin, /data/in/x.bin]
    outs: [cached.json]
""")
        r = self.sluice("-v", "run", "-f", os.path.join(self.p, "pipeline.yaml"), config=cfg)
        self.assertIn(b"prefetch /data/in/x.bin (for train)", r.stderr)
        self.assertNotIn(b"prefetch /data/made.bin", r.stderr)
        cached = json.loads(read_file(os.path.join(self.p, "cached.json")))
        self.assertEqual(cached["cached_bytes"], 24 << 20, "loaded before train started")
        before = json.loads(read_file(os.path.join(self.p, "before.json")))
        self.assertEqual(before["cached_bytes"], 0, "an out not made yet is not loaded")

    def test_an_out_made_for_a_stage_that_still_waits_is_loaded_meanwhile(self):
        # use needs make's out and slow's: make finishes first, and while slow runs the run
        # loads what make wrote to the store, so use finds it cached.
        with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
            f.write(os.urandom(8 << 20))
        cfg = self.ns_config()
        sl = SLUICE
        self.pipeline(f"""\
resources: {{cpus: 2}}
stages:
  make:
    cmd: {sl} cp {self.tmp}/big.bin /data/made.bin
    outs: [/data/made.bin]
  slow:
    cmd: sleep 2; touch slow.txt
    outs: [slow.txt]
  use:
    cmd: {sl} stat --json /data/made.bin > used.json
    deps: [/data/made.bin, slow.txt]
    outs: [used.json]
""")
        r = self.sluice("-v", "run", "-f", os.path.join(self.p, "pipeline.yaml"), config=cfg)
        self.assertIn(b"keep    /data/made.bin (for use)", r.stderr)
        used = json.loads(read_file(os.path.join(self.p, "used.json")))
        self.assertEqual(used["cached_bytes"], 8 << 20, "loaded while slow ran")

    def keep_fixture(self):
        """make writes made.bin (8 MiB) to the store; churn then reads 32 MiB of other data
        through a 16 MiB LRU cache, which evicts everything older (after $HOLD seconds, its
        shell's pid in churn.pid); use reads made.bin after churn. Returns the config and
        the churn's reads, to run again."""
        for i in range(4):
            self.make_file(f"other/{i}.bin", 8 << 20)
        with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
            f.write(os.urandom(8 << 20))
        cfg = os.path.join(self.tmp, "small.yaml")
        with open(cfg, "w") as f:
            f.write(f"cache:\n  dir: {self.cache}\n  size: 16MiB\nmounts:\n"
                    f"  /data:\n    uri: file://{self.data}\n    metadata_ttl: 0\n    policy: lru\n")
        sl = SLUICE
        churn = "; ".join(f"{sl} cat /data/other/{i}.bin > /dev/null" for i in range(4))
        self.pipeline(f"""\
stages:
  make:
    cmd: {sl} cp {self.tmp}/big.bin /data/made.bin
    outs: [/data/made.bin]
  churn:
    cmd: echo $$ > churn.pid; sleep ${{HOLD:-1}}; {churn}; touch churn.txt
    after: [make]
    outs: [churn.txt]
  use:
    cmd: {sl} stat --json /data/made.bin > used.json
    deps: [/data/made.bin, churn.txt]
    outs: [used.json]
""")
        return cfg, [f"/data/other/{i}.bin" for i in range(4)]

    def test_an_out_for_a_later_stage_is_kept_until_its_last_reader(self):
        # use, after churn, finds made.bin all cached: the run kept it for use. Once use has
        # finished it is let go, and the same reads evict it.
        cfg, others = self.keep_fixture()
        r = self.sluice("-v", "run", "-f", os.path.join(self.p, "pipeline.yaml"), config=cfg)
        err = r.stderr.decode()
        self.assertIn("keep    /data/made.bin (for use)", err)
        self.assertIn("release /data/made.bin", err)
        self.assertLess(err.index("keep    /data/made.bin"), err.index("start   use"))
        self.assertGreater(err.index("release /data/made.bin"), err.index("start   use"))
        used = json.loads(read_file(os.path.join(self.p, "used.json")))
        self.assertEqual(used["cached_bytes"], 8 << 20, "kept while churn read past it")
        kept = json.loads(read_file(os.path.join(self.p, ".sluice", "runs", "last", "report.json")))["prefetch"]
        self.assertEqual((kept["kept"], kept["kept_bytes"]), (1, 8 << 20))

        # Let go: the same reads now evict it, as they would have without the run's keep.
        self.sluice("cat", *others, config=cfg)
        after = json.loads(self.sluice("stat", "--json", "/data/made.bin", config=cfg).stdout)
        self.assertLess(after["cached_bytes"], 8 << 20)

    def test_a_killed_run_leaves_its_kept_outs_to_eviction(self):
        # A run killed (SIGKILL) while it keeps an out holds nothing after it: the page files'
        # locks go with the process, so the churn's reads evict the out; and the next run finds
        # the cache sound and ends the pipeline.
        cfg, others = self.keep_fixture()
        argv = [SLUICE, "-c", cfg, "-v", "run", "-f", os.path.join(self.p, "pipeline.yaml")]
        run = subprocess.Popen(argv, env=dict(self.env(), HOLD="60"), cwd=self.tmp,
                               stderr=subprocess.PIPE, start_new_session=True)
        pid_file = os.path.join(self.p, "churn.pid")
        try:
            seen = b""
            while b"keep    /data/made.bin" not in seen:
                line = run.stderr.readline()  # the run is killed at the deadline below
                self.assertTrue(line, f"the run ended with no keep: {seen.decode()}")
                seen += line
            deadline = time.monotonic() + 30
            while not os.path.exists(pid_file):  # churn started: no more lines till it ends
                self.assertLess(time.monotonic(), deadline, "churn did not start")
                time.sleep(0.05)
            time.sleep(0.2)  # its shell sleeps now
        finally:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            run.stderr.close()
            if os.path.exists(pid_file):  # the stage has its own process group
                try:
                    os.killpg(int(read_file(pid_file)), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        held = json.loads(self.sluice("stat", "--json", "/data/made.bin", config=cfg).stdout)
        self.assertEqual(held["cached_bytes"], 8 << 20, "kept up to the kill")
        self.sluice("cat", *others, config=cfg)
        after = json.loads(self.sluice("stat", "--json", "/data/made.bin", config=cfg).stdout)
        self.assertLess(after["cached_bytes"], 8 << 20, "the killed run's keep outlived it")

        r = self.sluice("run", "-f", os.path.join(self.p, "pipeline.yaml"), config=cfg)
        used = json.loads(read_file(os.path.join(self.p, "used.json")))
        self.assertEqual(used["size"], 8 << 20, r.stderr.decode())
        self.sluice("cache", "stats", "--json", config=cfg)


class Scheduling(RunCase):

    def test_parallel_stages_respect_cpus(self):
        # Six stages of 1 cpu each, four cpus: never more than four at once, and more than one.
        stages = "".join(f"""
  s{i}:
    cmd: echo start $(date +%s.%N) >> t.log; sleep 0.4; echo end $(date +%s.%N) >> t.log
""" for i in range(6))
        self.pipeline("resources: {cpus: 4}\nstages:" + stages)
        self.run_p()
        events = []
        for line in read_file(os.path.join(self.p, "t.log")).decode().splitlines():
            kind, t = line.split()
            events.append((float(t), 1 if kind == "start" else -1))
        now = peak = 0
        for _, d in sorted(events):
            now += d
            peak = max(peak, now)
        self.assertEqual(peak, 4)

    def test_a_stage_bigger_than_the_run_is_refused(self):
        self.pipeline("stages:\n  big:\n    cmd: true\n    resources: {cpus: 64}\n")
        r = self.run_p("--cpus", "2", expect=2)
        self.assertIn(b'pipeline.yaml:2:3: stage "big" needs 64 cpus; this run has 2', r.stderr)

    def test_memory_and_gpus_are_resources(self):
        self.pipeline("""\
resources: {cpus: 8, mem: 1GiB, gpus: 2}
stages:
  a: {cmd: 'echo $CUDA_VISIBLE_DEVICES > a.txt; sleep 0.3', resources: {mem: 600MiB, gpus: 1}}
  b: {cmd: 'echo $CUDA_VISIBLE_DEVICES > b.txt; sleep 0.3', resources: {mem: 600MiB, gpus: 1}}
  c: {cmd: 'echo "[$CUDA_VISIBLE_DEVICES]" > c.txt'}
""")
        ev = self.events()
        # a and b do not fit in 1 GiB together: one ends before the other starts.
        order = [(e["event"], e["stage"]) for e in ev if e["event"] in ("start", "done")
                 and e["stage"] in ("a", "b")]
        self.assertEqual([k for k, _ in order], ["start", "done", "start", "done"])
        self.assertEqual(read_file(os.path.join(self.p, "a.txt")).strip(), b"0")
        self.assertEqual(read_file(os.path.join(self.p, "c.txt")).strip(), b"[]")

    def test_failure_stops_downstream_with_its_log(self):
        self.pipeline("""\
stages:
  bad:
    cmd: echo about to fail; echo oops >&2; exit 3
    outs: [x]
  below:
    cmd: touch y
    deps: [x]
    outs: [y]
  beside:
    cmd: sleep 0.5; touch z
    outs: [z]
""")
        r = self.run_p(expect=1)
        err = r.stderr.decode()
        self.assertIn('FAILED  bad: exit 3 after 1 attempt', err)
        self.assertIn("| oops", err)
        log = [w for w in err.split() if w.endswith("bad.1.log")][0]
        self.assertIn(b"about to fail\noops\n", read_file(os.path.join(self.tmp, log)))
        self.assertFalse(os.path.exists(os.path.join(self.p, "y")))
        ev = self.events(expect=1)
        self.assertEqual(self.stages(ev, "failed"), ["bad"])
        self.assertEqual(self.stages(ev, "not_run"), ["below"])
        self.assertEqual(ev[-1]["exit"], 1)

    def test_keep_going(self):
        self.pipeline("""\
stages:
  bad: {cmd: exit 1, outs: [x]}
  below: {cmd: touch y, deps: [x], outs: [y]}
  later: {cmd: touch z, outs: [z], after: [first]}
  first: {cmd: sleep 0.3; touch w, outs: [w]}
""")
        ev = self.events("--keep-going", expect=1)
        self.assertEqual(self.stages(ev, "done"), ["first", "later"])
        self.assertEqual(self.stages(ev, "not_run"), ["below"])
        # Without it, what had not started does not.
        ev = self.events(expect=1)
        self.assertIn("below", self.stages(ev, "not_run"))

    def test_retries_with_backoff(self):
        self.pipeline("""\
stages:
  flaky:
    cmd: n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; [ $n -ge 2 ]
    retries: 3
    retry_delay: 100ms
""")
        ev = self.events()
        self.assertEqual([e["event"] for e in ev if e.get("stage") == "flaky"],
                         ["start", "retry", "start", "retry", "start", "done"])
        self.assertEqual([e["delay_s"] for e in ev if e["event"] == "retry"], [0.1, 0.2])
        self.assertEqual(read_file(os.path.join(self.p, "n")), b"3\n")
        logs = os.path.join(self.p, ".sluice", "runs", "last", "logs")
        self.assertEqual(sorted(os.listdir(logs)), ["flaky.1.log", "flaky.2.log", "flaky.3.log"])
        self.pipeline("stages:\n  never:\n    cmd: exit 7\n    retries: 1\n    retry_delay: 10ms\n")
        ev = self.events(expect=1)
        fail = [e for e in ev if e["event"] == "failed"][0]
        self.assertEqual((fail["attempts"], fail["exit"]), (2, 7))

    def test_timeout_kills_the_stage_and_its_children(self):
        self.pipeline("""\
stages:
  slow:
    cmd: (sleep 30; touch late) & echo $! > child; sleep 30
    timeout: 500ms
""")
        t = time.monotonic()
        ev = self.events(expect=1)
        self.assertLess(time.monotonic() - t, 20)
        fail = [e for e in ev if e["event"] == "failed"][0]
        self.assertTrue(fail["timed_out"])
        self.assertIn("timed out after 0.5s", fail["reason"])
        self.assertFalse(alive(int(read_file(os.path.join(self.p, "child")))))

    def test_ctrl_c_stops_every_stage_and_says_what_ran(self):
        self.pipeline("""\
stages:
  quick: {cmd: touch q, outs: [q]}
  a: {cmd: 'echo $$ > a.pid; sleep 60', after: [quick]}
  b: {cmd: 'echo $$ > b.pid; sleep 60', after: [quick]}
  c: {cmd: touch c, after: [a]}
""")
        proc = self.popen("run", "-f", os.path.join(self.p, "pipeline.yaml"), "--cpus", "4",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(200):
            if all(os.path.exists(os.path.join(self.p, f)) for f in ("a.pid", "b.pid")):
                break
            time.sleep(0.05)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130)
        for f in ("a.pid", "b.pid"):
            self.assertFalse(alive(int(read_file(os.path.join(self.p, f)))))
        text = out.decode()
        self.assertRegex(text, r"quick\s+done")
        self.assertRegex(text, r"\ba\s+not run")
        self.assertIn("(interrupted)", text)
        self.assertFalse(os.path.exists(os.path.join(self.p, "c")))


class Killed(RunCase):

    def test_a_killed_run_leaves_a_whole_lock_and_its_finished_stages(self):
        self.pipeline("""\
stages:
  quick: {cmd: echo q > q.txt, outs: [q.txt]}
  slow: {cmd: 'echo $$ > slow.pid; sleep 60', after: [quick]}
""")
        proc = self.popen("run", "-f", os.path.join(self.p, "pipeline.yaml"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid_file = os.path.join(self.p, "slow.pid")
        for _ in range(200):
            if os.path.exists(pid_file) and read_file(pid_file).strip():
                break
            time.sleep(0.05)
        proc.kill()  # SIGKILL: no chance to write anything more
        proc.wait(timeout=30)
        os.kill(int(read_file(pid_file)), signal.SIGKILL)
        lock = json.loads(read_file(os.path.join(self.p, "sluice.lock")))
        self.assertIn("quick", lock["stages"])
        # The next run trusts what the killed one recorded, and runs the rest.
        self.pipeline("""\
stages:
  quick: {cmd: echo q > q.txt, outs: [q.txt]}
  slow: {cmd: 'true', after: [quick]}
""")
        ev = self.events()
        self.assertEqual(self.stages(ev, "cached"), ["quick"])
        self.assertEqual(self.stages(ev, "done"), ["slow"])


class BadFiles(RunCase):

    def check(self, text, *needles):
        self.pipeline(text)
        r = self.run_p(expect=2)
        for n in needles:
            self.assertIn(n.encode(), r.stderr, r.stderr.decode())

    def test_errors_name_file_line_and_column(self):
        self.check("stages:\n  a:\n    cmd: true\n    retires: 2\n",
                   "pipeline.yaml:4:5", 'unknown key "retires"')
        self.check("stages:\n  a:\n    cmd: true\n    timeout: soon\n",
                   "pipeline.yaml:4:14", "not a duration")
        self.check("stages:\n  a:\n    cmd: true\n    resources: {mem: lots}\n",
                   "pipeline.yaml:4:22", "not a size")
        self.check("stages:\n  a: {cmd: true, deps: [b.txt], outs: [a.txt]}\n"
                   "  b: {cmd: true, deps: [a.txt], outs: [b.txt]}\n", "cycle", "a -> b -> a")
        self.check("stages:\n  a: {cmd: true, outs: [x]}\n  b: {cmd: true, outs: [x]}\n",
                   "pipeline.yaml:3", '"x"')
        self.check("stages:\n  a: {cmd: true, deps: [nowhere.txt]}\n",
                   "pipeline.yaml:2:25", '"nowhere.txt" does not exist and no stage makes it')
        self.check("stages:\n  a: {cmd: true, after: [ghost]}\n", "pipeline.yaml:2", "ghost")
        self.check("stages: [\n", "pipeline.yaml:")

    def test_a_damaged_lock_is_named(self):
        self.pipeline("stages:\n  a: {cmd: true}\n")
        self.write("sluice.lock", '{"version": 1, "stages": ')
        r = self.run_p(expect=2)
        self.assertIn(b"sluice.lock: not a lock file", r.stderr)


if __name__ == "__main__":
    main()
