"""`sluice run` with the Slurm executor, against a real single-node Slurm started by the test:
munged, slurmctld and slurmd (Debian's packages, scripts/deps.sh) as children of the test, on
127.0.0.1, with a munge key, a slurm.conf, a state folder and a spool folder of its own, free
ports, and no systemd, cgroups, accounting database or config outside its temp folder.

What a user would check: stages run as jobs in dependency order, two at once where the DAG
fans out, with their resources asked of Slurm (what the job sees and what scontrol shows); a
failure names Slurm's state, the exit and the log, is retried as a new job, and stops what is
below it; a stage's timeout becomes the job's --time and Slurm's TIMEOUT fails it; Ctrl-C
cancels the run's jobs (none left in the queue); an unchanged pipeline submits nothing.

Slurm's time limits are whole minutes and slurmctld looks at them every 30 s, so the timeout
pipeline is started in setUpClass, beside the other tests, and judged by the last one."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

from harness import SLUICE, SluiceCase, free_port, main, read_file

DAEMONS = ("munged", "slurmctld", "slurmd")
NODE = "sluice-node"
CPUS = 4  # what the node says it has (config_overrides): more than the machine may have


def which(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")


class Cluster:
    """munged + slurmctld + slurmd in root (a temp folder), SLURM_CONF in env."""

    def __init__(self, root, min_job_age=300):
        self.root = root
        self.min_job_age = min_job_age
        self.procs = []
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        for k in list(self.env):
            if k.startswith(("SLURM_", "SBATCH_", "SQUEUE_", "SINFO_")) and k != "SLURM_CONF":
                del self.env[k]

    def start(self):
        missing = [d for d in DAEMONS + ("sbatch", "squeue", "scancel", "sinfo") if not which(d)]
        if missing:
            raise RuntimeError(f"Slurm is not installed (no {', '.join(missing)}): "
                               "scripts/deps.sh installs slurmctld slurmd slurm-client munge")
        munge = os.path.join(self.root, "munge")
        os.makedirs(munge, mode=0o711)
        key = os.path.join(munge, "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_socket = os.path.join(munge, "munge.socket")
        self.spawn("munged", [which("munged"), "-F", "--force", f"--key-file={key}",
                              f"--socket={self.munge_socket}",
                              f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
                              f"--seed-file={munge}/munged.seed"])
        self.wait_for(lambda: os.path.exists(self.munge_socket), "munged's socket")
        for d in ("state", "spool"):
            os.makedirs(os.path.join(self.root, d))
        plugstack = os.path.join(self.root, "plugstack.conf")
        open(plugstack, "w").close()
        r = self.root
        with open(self.conf, "w") as f:
            f.write(f"""\
ClusterName=sluicetest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
PlugStackConfig={plugstack}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
MinJobAge={self.min_job_age}
KillWait=2
InactiveLimit=0
SlurmctldDebug=info
SlurmdDebug=info
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={CPUS} RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
NodeName=far NodeAddr=127.0.0.2 NodeHostname=farhost CPUs=1 RealMemory=100 State=DOWN
PartitionName=short Nodes={NODE} MaxTime=1 State=UP
PartitionName=wide Nodes={NODE},far MaxTime=INFINITE State=UP
""")
        self.spawn("slurmctld", [which("slurmctld"), "-D"])
        self.spawn("slurmd", [which("slurmd"), "-D", "-N", NODE])
        self.wait_for(lambda: self.cmd("sinfo", "-h", "-n", NODE, "-o", "%T", check=False)
                      .stdout.strip() == "idle", "the node to be idle in sinfo", timeout=60)

    def spawn(self, name, argv):
        log = open(os.path.join(self.root, f"{name}.out"), "w")
        self.procs.append((name, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env=self.env,
                                                  start_new_session=True), log))

    def wait_for(self, ok, what, timeout=30):
        end = time.monotonic() + timeout
        while not ok():
            for name, p, _ in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}: "
                                       f"{self.log(name)}")
            if time.monotonic() > end:
                raise RuntimeError(f"no {what} after {timeout}s: " +
                                   " | ".join(self.log(n) for n, _, _ in self.procs))
            time.sleep(0.2)

    def log(self, name):
        try:
            return read_file(os.path.join(self.root, f"{name}.out")).decode(errors="replace")[-2000:]
        except FileNotFoundError:
            return ""

    def cmd(self, *argv, check=True):
        r = subprocess.run([which(argv[0])] + list(argv[1:]), capture_output=True, text=True,
                           env=self.env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr}")
        return r

    def queued(self, ids):
        """Those of the jobs ids that Slurm still runs or holds (pending, running, completing)."""
        return self.cmd("squeue", "-h", "-o", "%i", "-j", ",".join(ids)).stdout.split()

    def all_jobs(self):
        """Every job slurmctld remembers, finished ones included: {id: state}."""
        out = self.cmd("squeue", "-h", "-t", "all", "-o", "%i %T").stdout.split("\n")
        return dict(l.split() for l in out if l.strip())

    def job(self, jid):
        """scontrol's record of a job: {key: value}."""
        out = self.cmd("scontrol", "-o", "show", "job", str(jid)).stdout
        return dict(w.split("=", 1) for w in out.split() if "=" in w)

    def stop(self):
        # Jobs first (slurmstepd outlives slurmd), then the daemons, the last one started first.
        if any(n == "slurmctld" and p.poll() is None for n, p, _ in self.procs):
            self.cmd("scancel", "--user=root", check=False)
            end = time.monotonic() + 20
            while time.monotonic() < end and self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.strip():
                time.sleep(0.2)
        for name, p, log in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            log.close()
        self.procs = []
        # What is left of a job the controller lost (a step, the job's script and what it
        # started) is still ours: it has our conf in its environment, which nothing else has.
        mark = f"SLURM_CONF={self.conf}".encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if int(pid) != os.getpid() and mark in f.read().split(b"\0"):
                        os.kill(int(pid), signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class Slurm(SluiceCase):

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="sluice-slurm-")
        cls.addClassCleanup(shutil.rmtree, cls.root, ignore_errors=True)
        cls.cluster = Cluster(cls.root)
        cls.addClassCleanup(cls.cluster.stop)
        cls.cluster.start()
        # The timeout pipeline: a minute at least, so it starts now and is judged at the end.
        cls.slow = os.path.join(cls.root, "slow")
        os.makedirs(cls.slow)
        with open(os.path.join(cls.slow, "pipeline.yaml"), "w") as f:
            f.write("executor: slurm\nstages:\n  slow:\n    cmd: echo started; sleep 300\n"
                    "    timeout: 20s\n")
        cls.slow_started = time.monotonic()
        cls.slow_proc = subprocess.Popen(
            [SLUICE, "run", "-f", os.path.join(cls.slow, "pipeline.yaml"), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cls.cluster.env, cwd=cls.slow)
        cls.addClassCleanup(cls.stop_slow)

    @classmethod
    def stop_slow(cls):
        if cls.slow_proc.poll() is None:  # its test did not run, or failed first
            cls.slow_proc.kill()
        cls.slow_proc.communicate()

    def setUp(self):
        super().setUp()
        self.p = os.path.join(self.tmp, "p")
        os.makedirs(self.p)

    def env(self):
        env = super().env()
        env["SLURM_CONF"] = self.cluster.conf
        return env

    def pipeline(self, text):
        with open(os.path.join(self.p, "pipeline.yaml"), "w") as f:
            f.write(text)

    def events(self, *args, expect=0):
        r = self.sluice("run", "-f", os.path.join(self.p, "pipeline.yaml"), "--json", *args,
                        expect=expect, config=False)
        return [json.loads(line) for line in r.stdout.decode().splitlines()]

    @staticmethod
    def of(events, kind):
        return [e for e in events if e["event"] == kind]

    def test_dependencies_fan_out_resources_and_nothing_twice(self):
        self.pipeline("""\
slurm: {partition: debug}
stages:
  first:
    cmd: echo "cpus=$SLURM_CPUS_PER_TASK mem=$SLURM_MEM_PER_NODE say=$SAY" > first.txt
    outs: [first.txt]
    resources: {cpus: 2, mem: 300MiB}
    timeout: 90s
    env: {SAY: "it's a 'quoted', \\"comma\\" $value"}
  wide:
    foreach: [a, b]
    cmd: echo start $(date +%s.%N) >> t.log; sleep 3; echo end $(date +%s.%N) >> t.log; cp first.txt ${item}.txt
    deps: [first.txt]
    outs: ['${item}.txt']
  join:
    cmd: cat a.txt b.txt > join.txt; echo "$SLURM_JOB_NAME" > name.txt
    deps: [a.txt, b.txt]
    outs: [join.txt]
""")
        ev = self.events("--executor", "slurm")
        self.assertEqual(ev[0]["executor"], "slurm")
        done = [e["stage"] for e in self.of(ev, "done")]
        self.assertEqual(done[0], "first")
        self.assertEqual(sorted(done[1:3]), ["wide@a", "wide@b"])
        self.assertEqual(done[3], "join")
        # Each stage after its upstream ended: every start comes after the done of its deps.
        order = [(e["event"], e["stage"]) for e in ev if e["event"] in ("start", "done")]
        self.assertLess(order.index(("done", "first")), order.index(("start", "wide@a")))
        self.assertLess(max(order.index(("done", "wide@a")), order.index(("done", "wide@b"))),
                        order.index(("start", "join")))
        # The fan-out ran at once: both started before either ended.
        marks = sorted((float(t), kind) for kind, t in
                       (l.split() for l in read_file(os.path.join(self.p, "t.log")).decode().splitlines()))
        self.assertEqual([k for _, k in marks], ["start", "start", "end", "end"])
        # What the job saw, and what Slurm was asked for.
        self.assertEqual(read_file(os.path.join(self.p, "first.txt")).decode(),
                         "cpus=2 mem=300 say=it's a 'quoted', \"comma\" $value\n")
        starts = {e["stage"]: e for e in self.of(ev, "start")}
        rec = self.cluster.job(starts["first"]["job_id"])
        self.assertEqual(rec["JobState"], "COMPLETED")
        self.assertEqual(rec["NumCPUs"], "2")
        self.assertEqual(rec["MinMemoryNode"], "300M")
        self.assertEqual(rec["TimeLimit"], "00:02:00")  # 90 s, in whole minutes
        self.assertEqual(rec["Partition"], "debug")
        self.assertEqual(rec["WorkDir"], self.p)
        self.assertEqual(rec["StdOut"], starts["first"]["log"])
        self.assertTrue(rec["JobName"].startswith("sluice-") and rec["JobName"].endswith("-first"))
        self.assertRegex(read_file(os.path.join(self.p, "name.txt")).decode(), r"^sluice-\S+-join\n$")
        self.assertEqual(self.cluster.queued([e["job_id"] for e in starts.values()]), [])

        # Unchanged: nothing is submitted.
        jobs = self.cluster.all_jobs()
        ev = self.events("--executor", "slurm")
        self.assertEqual(self.of(ev, "start"), [])
        self.assertEqual(len(self.of(ev, "cached")), 4)
        self.assertEqual(self.cluster.all_jobs(), jobs)

        # An out changed behind sluice's back: its stage runs again, as a job; it makes the
        # same bytes, so nothing below it runs.
        with open(os.path.join(self.p, "first.txt"), "a") as f:
            f.write("more\n")
        ev = self.events("--executor", "slurm")
        self.assertEqual(sorted(e["stage"] for e in self.of(ev, "done")), ["first"])
        self.assertTrue(all(e["job_id"] for e in self.of(ev, "start")))

    def test_failure_names_state_exit_and_log_then_retries_then_stops(self):
        self.pipeline("""\
executor: slurm
stages:
  bad:
    cmd: echo about to fail; echo oops >&2; exit 3
    outs: [x]
    retries: 1
    retry_delay: 10ms
  below:
    cmd: touch y
    deps: [x]
    outs: [y]
""")
        r = self.sluice("run", "-f", os.path.join(self.p, "pipeline.yaml"), expect=1, config=False)
        err = r.stderr.decode()
        self.assertRegex(err, r"FAILED  bad: Slurm job \d+ FAILED \(NonZeroExitCode\), exit 3 "
                              r"after 2 attempts")
        self.assertIn("| oops", err)
        log = [w for w in err.split() if w.endswith("bad.2.log")][0]
        self.assertEqual(read_file(os.path.join(self.tmp, log)), b"about to fail\noops\n")
        self.assertRegex(r.stdout.decode(), r"below\s+not run")
        self.assertFalse(os.path.exists(os.path.join(self.p, "y")))

        ev = self.events(expect=1)
        starts = self.of(ev, "start")
        self.assertEqual([e["attempt"] for e in starts], [1, 2])
        self.assertNotEqual(starts[0]["job_id"], starts[1]["job_id"])  # a retry is a new job
        fail = self.of(ev, "failed")[0]
        self.assertEqual((fail["stage"], fail["exit"], fail["slurm_state"], fail["attempts"]),
                         ("bad", 3, "FAILED", 2))
        self.assertEqual(fail["job_id"], starts[1]["job_id"])
        self.assertTrue(fail["log"].endswith("/logs/bad.2.log"))
        self.assertEqual([e["stage"] for e in self.of(ev, "not_run")], ["below"])
        self.assertEqual(ev[-1]["exit"], 1)

    def test_a_job_slurm_refuses_is_a_failure_that_says_why(self):
        self.pipeline("executor: slurm\nslurm: {partition: nowhere}\nstages:\n  a: {cmd: 'true'}\n")
        ev = self.events(expect=1)
        fail = self.of(ev, "failed")[0]
        self.assertIn("Slurm refused the job", fail["reason"])
        self.assertIn("invalid partition", fail["reason"].lower())
        r = self.sluice("run", "-f", os.path.join(self.p, "pipeline.yaml"), "--executor", "pbs",
                        expect=2, config=False)
        self.assertIn(b"--executor: expected local or slurm", r.stderr)
        # Taken, but it can never start: 5 minutes asked of a partition of 1 (Slurm leaves it
        # pending for PartitionTimeLimit). The run does not wait forever.
        self.pipeline("executor: slurm\nslurm: {partition: short}\n"
                      "stages:\n  a: {cmd: 'true', timeout: 5m}\n")
        ev = self.events(expect=1)
        fail = self.of(ev, "failed")[0]
        self.assertIn("PENDING (PartitionTimeLimit)", fail["reason"])
        self.assertIn("cannot start", fail["reason"])
        self.assertFalse(self.of(ev, "warning"), "the default partition is this host's alone")
        jid = self.of(ev, "start")[0]["job_id"]
        end = time.monotonic() + 20
        while self.cluster.all_jobs().get(jid) == "PENDING" and time.monotonic() < end:
            time.sleep(0.2)
        self.assertEqual(self.cluster.all_jobs().get(jid), "CANCELLED")
        # A partition with a node on another host (down: nothing runs there), and the
        # pipeline on this host's disk: the run says the nodes will not see it. The stage ran
        # before on this node's partition and is unchanged, so nothing is submitted.
        stage = "stages:\n  a: {cmd: 'touch a.txt', outs: [a.txt]}\n"
        self.pipeline("executor: slurm\nslurm: {partition: debug}\n" + stage)
        self.assertEqual([e["stage"] for e in self.of(self.events(), "done")], ["a"])
        self.pipeline("executor: slurm\nslurm: {partition: wide}\n" + stage)
        ev = self.events()
        warning = self.of(ev, "warning")[0]["message"]
        self.assertIn("is on a local file system", warning)
        self.assertIn("(far)", warning)
        self.assertEqual([e["stage"] for e in self.of(ev, "cached")], ["a"])

    def test_ctrl_c_cancels_the_runs_jobs(self):
        self.pipeline("""\
executor: slurm
stages:
  quick: {cmd: touch q, outs: [q]}
  a: {cmd: 'echo $$ > a.pid; sleep 120', after: [quick]}
  b: {cmd: 'echo $$ > b.pid; sleep 120', after: [quick]}
  c: {cmd: touch c, after: [a]}
""")
        proc = subprocess.Popen([SLUICE, "run", "-f", os.path.join(self.p, "pipeline.yaml"), "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env(), cwd=self.tmp)
        end = time.monotonic() + 60
        while not all(os.path.exists(os.path.join(self.p, f)) for f in ("a.pid", "b.pid")):
            self.assertLess(time.monotonic(), end, "a and b did not start as jobs")
            self.assertIsNone(proc.poll(), "sluice ended before its jobs started")
            time.sleep(0.1)
        time.sleep(0.3)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 130, err.decode())
        self.assertLess(time.monotonic() - t, 30)
        ev = [json.loads(l) for l in out.decode().splitlines()]
        ids = {e["stage"]: e["job_id"] for e in self.of(ev, "start")}
        self.assertEqual(sorted(ids), ["a", "b", "quick"])
        self.assertEqual(sorted(e["stage"] for e in self.of(ev, "stopped")), ["a", "b"])
        self.assertEqual([e["stage"] for e in self.of(ev, "not_run")], ["c"])
        self.assertEqual(self.cluster.queued(list(ids.values())), [])  # nothing of the run left
        states = self.cluster.all_jobs()
        self.assertEqual((states[ids["a"]], states[ids["b"]]), ("CANCELLED", "CANCELLED"))
        for f in ("a.pid", "b.pid"):
            self.assertFalse(alive(int(read_file(os.path.join(self.p, f)))))
        self.assertFalse(os.path.exists(os.path.join(self.p, "c")))

    def test_z_timeout_is_slurms_time_limit(self):
        # Started in setUpClass: a 20 s timeout is --time=1 (minute), and slurmctld ends the
        # job within 30 s after that minute.
        out, err = self.slow_proc.communicate(timeout=240)
        took = time.monotonic() - self.slow_started
        self.assertEqual(self.slow_proc.returncode, 1, err.decode())
        ev = [json.loads(l) for l in out.decode().splitlines()]
        fail = self.of(ev, "failed")[0]
        self.assertTrue(fail["timed_out"])
        self.assertEqual(fail["slurm_state"], "TIMEOUT")
        self.assertRegex(fail["reason"], r"Slurm job \d+ TIMEOUT \(TimeLimit\): its time limit "
                                         r"of 1 minute \(--time")
        self.assertGreater(took, 55)
        log = read_file(fail["log"]).decode()
        self.assertIn("started\n", log)
        self.assertIn("DUE TO TIME LIMIT", log)


if __name__ == "__main__":
    main()
