"""Faults on the real one-node Slurm (`.ci/setup_slurm.sh`), through `profiles/ci-slurm`
with array mode off (as in profiles/apollo and profiles/sdumont): each run recovers with the
same command (or the one docs/clusters.md gives), its estimates are byte-identical to an
uninterrupted run's, and so is the release made from them.

What runs where: the Slurm runs target the estimate files (results/estimates/<algo>/<batch>
.parquet of every batch: the jobs the faults hit, their retries and the rerun after the
controller's death all go through Slurm). The rest of the release (validation, export,
margin, index and release jobs) is then made in the same directory by a local run
(profiles/local, no fault injection), which must run no estimate, partition or train job:
the release is made from the estimates the faulted Slurm run left. The export rules under
Slurm are covered by test_slurm.py (the whole small config through profiles/ci-slurm,
release byte-identical to a local run's). Under Slurm they only cost time here: their
bodies take 0.02-2 s, but each level of the chain waits for a Slurm job step and for the
plugin's status checks (2 s, then +10 s per check while no job finishes: plugin 2.8, not a
setting); measured, the jobs were seen finished in 14 s steps, 86 s for the chain after
the last estimate (a local run makes the same release in ~50-60 s).

1. an estimate job cancelled with `scancel` while it runs: the profile's retries resubmit it;
2. an estimate job killed by Slurm for exceeding its memory (--mem): resubmitted with more
   memory (pzpipe.planning.resources sizes memory by attempt) and recovers;
3. the Snakemake controller SIGKILLed while Slurm jobs run: its jobs stay in the queue
   (orphans); the documented recovery cancels them by the run's job name (`scancel
   --name <SLURM run ID>`), unlocks the directory and runs the same command again.
Faults 1 and 2 hit two different jobs of one run (one Slurm run less for the CI budget);
the assertions of each are separate.

The kill points are deterministic: a faulted job is an estimate job whose estimate function
is wrapped by tests/helpers/fault_inject/sitecustomize.py (carried into the Slurm jobs by
PYTHONPATH and sbatch --export=ALL; the pipeline is not changed). In "hold" mode it writes
a marker and blocks inside the job until the test has cancelled it (1) or killed the
controller (3); in "mem:<MB>" mode it makes the job's step really use <MB> (a ballast) for
a few seconds, between the --mem of attempt 1 and that of attempt 2 (2).

Small: the runs start from the models, data directories, imported catalog and partition of
the session's small run (tests/helpers/runs.py) with one estimator (KEEP), so Slurm runs 3
estimate_batch jobs (and their retries). The reference is the same start run locally
to the release without a fault (test_slurm.py shows a local and a Slurm run's estimates and
releases are byte-identical).
Without Slurm the tests skip, unless PZPIPE_REQUIRE_SLURM=1: then they fail.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from helpers.runs import CONFIGFILE, REPO, prepare_from, small_run, smk, smk_cmd
from helpers.slurm import require_slurm
from helpers.trees import compare_trees, files, format_diffs

pytestmark = pytest.mark.slurm

TARGET = "results/release"
KEEP = ("knn",)                  # one cheap estimator: 3 estimate jobs
CANCELLED = "knn/b000001"        # the estimate job cancelled with scancel (1) / held (3)
OVER_MEMORY = "knn/b000002"      # the estimate job that needs more than attempt 1 asks (2)
PROFILE = REPO / "profiles" / "ci-slurm"
INJECT = REPO / "tests" / "helpers" / "fault_inject"
# Array mode off, as in profiles/apollo and profiles/sdumont (one sbatch per job). In the
# plugin's array mode (2.8) every task's jobstep takes the array's first job as its own
# target: when any task fails, the others report failure too and the first job's output is
# deleted (measured: docs/clusters.md, "When a job or the controller dies").
NO_ARRAYS = ("--slurm-array-jobs=",)
WAIT = 900                        # s: longest wait for a marker or a run


def squeue(*args: str) -> list[list[str]]:
    r = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%r|%m", *args],
                       capture_output=True, text=True, timeout=60)
    return [ln.split("|") for ln in r.stdout.splitlines() if ln.strip()]


def job_state(jobid: str) -> str:
    rows = squeue("-j", jobid)
    return rows[0][2] if rows else "GONE"


def wait_for(cond, what: str, proc=None, timeout: float = WAIT, log: Path | None = None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            raise AssertionError(f"snakemake ended ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def calls(fault_dir: Path, target: str) -> list[dict]:
    """The records the fault injection wrote for the job ``target`` (<algo>/<batch>)."""
    p = fault_dir / (target.replace("/", "_") + ".jsonl")
    return [json.loads(ln) for ln in p.read_text().splitlines()] if p.exists() else []


def slurm_id(rec: dict) -> str:
    """The id scancel/squeue take for the job of a call record (an array task or a job)."""
    if rec.get("SLURM_ARRAY_JOB_ID"):
        return f"{rec['SLURM_ARRAY_JOB_ID']}_{rec['SLURM_ARRAY_TASK_ID']}"
    return rec["SLURM_JOB_ID"]


def _enabled_algorithms(*overlays: Path) -> list[str]:
    """The estimators config/test.yaml (+ ``overlays``) enables, defaults included (the
    schema holds them: config/config.yaml has ``algorithms: {}``)."""
    import sys

    sys.path.insert(0, str(REPO / "workflow" / "src"))
    from pzpipe.run.config import deep_update, enabled_algorithms, validate_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for f in [CONFIGFILE, *overlays]:
        cfg = deep_update(cfg, yaml.safe_load(Path(f).read_text()))
    return enabled_algorithms(validate_config(cfg))


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """What every run starts from: the small run's outputs up to the partition, an overlay
    keeping KEEP's estimators, and the uninterrupted local run's release from there."""
    require_slurm()
    base = small_run(tmp_path_factory)
    overlay = tmp_path_factory.mktemp("faults-overlay") / "overlay.yaml"
    overlay.write_text("algorithms: {" + ", ".join(f"{a}: {{enabled: false}}"
                                                   for a in _enabled_algorithms()
                                                   if a not in KEEP) + "}\n")
    assert _enabled_algorithms(overlay) == list(KEEP), overlay.read_text()
    subs = ["models", "objects_hats", "partition",
            *(p.name for p in (base / "results").glob("*_data"))]
    ref = prepare_from(base, tmp_path_factory.mktemp("faults-ref"), subs)
    r = smk(ref, TARGET, overlays=[overlay], keep_output=True)
    out = r.stdout + r.stderr
    assert out.count("rule estimate_batch:") == 3 * len(KEEP), out[-3000:]
    assert "rule partition_batch:" not in out and "rule train:" not in out, out[-3000:]
    assert (ref / "results" / "estimates" / f"{CANCELLED}.parquet").exists()
    # the Slurm runs' targets: every estimate file the reference run made
    estimates = sorted(str(p.relative_to(ref)) for p in (ref / "results" / "estimates").rglob(
        "*.parquet"))
    assert len(estimates) == 3 and f"results/estimates/{OVER_MEMORY}.parquet" in estimates, \
        estimates
    return base, subs, [overlay], ref, estimates


class Run:
    """One Slurm run of ``start`` in ``wd`` with a fault injected, in its own session."""

    def __init__(self, start, wd: Path, faults: dict[str, str]):
        base, subs, self.overlays, self.ref, estimates = start
        self.wd = prepare_from(base, wd, subs)
        self.fault_dir = wd / "fault"
        self.fault_dir.mkdir()
        self.env = dict(os.environ, PZPIPE_FAULT_DIR=str(self.fault_dir),
                        PZPIPE_FAULTS=";".join(f"{t}={m}" for t, m in faults.items()),
                        PYTHONPATH=os.pathsep.join(
                            p for p in (str(INJECT), os.environ.get("PYTHONPATH")) if p))
        self.cmd = smk_cmd(self.wd, "--profile", str(PROFILE), *NO_ARRAYS, *estimates,
                           overlays=self.overlays, profile=None)
        self.n = 0
        self.proc = None

    @property
    def log(self) -> Path:
        return self.wd / f"snakemake.{self.n}.log"

    def start(self, *extra: str) -> subprocess.Popen:
        self.n += 1
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([*self.cmd, *extra], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.wd, env=self.env,
                                         start_new_session=True)
        return self.proc

    def finish(self, timeout: float = WAIT) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        return rc, self.log.read_text()

    def run(self, *extra: str) -> tuple[int, str]:
        self.start(*extra)
        return self.finish()

    def held(self, target: str) -> dict:
        """Wait until the job ``target`` blocks inside its estimate function; its record."""
        marker = self.fault_dir / (target.replace("/", "_") + ".held")
        wait_for(marker.exists, f"the start marker of {target}", self.proc, log=self.log)
        return wait_for(lambda: next((c for c in calls(self.fault_dir, target)
                                      if c.get("held")), None), "the held call's record")

    def assert_estimates_identical(self):
        """The Slurm run's estimates have the bytes of the uninterrupted run's."""
        a, b = self.ref / "results" / "estimates", self.wd / "results" / "estimates"
        assert len(files(a)) == 3
        diffs = compare_trees(a, b)
        assert not diffs, "estimates differ from the uninterrupted run's:\n" + format_diffs(diffs)

    def finish_locally(self) -> str:
        """The release from the Slurm run's outputs: a local run (profiles/local, without
        the fault injection) of TARGET in the same directory. It must make the rest of the
        release and nothing before the estimates: a rerun estimate job would hide what the
        Slurm run left."""
        assert not (self.wd / "results" / "release").exists()
        r = smk(self.wd, TARGET, overlays=self.overlays)
        out = r.stdout + r.stderr
        (self.wd / "snakemake.local.log").write_text(out)
        assert "rule release:" in out and "rule export:" in out, out[-3000:]
        for rule in ("estimate_batch", "partition_batch", "train", "prepare_data"):
            assert f"rule {rule}:" not in out, f"the local run ran {rule}:\n{out[-3000:]}"
        return out

    def assert_release_identical(self):
        a, b = self.ref / "results" / "release", self.wd / "results" / "release"
        assert [n for n in files(a) if n.endswith(".parquet")]
        diffs = compare_trees(a, b)
        assert not diffs, "release differs from the uninterrupted run's:\n" + format_diffs(diffs)


def report(name: str, **facts):
    """Facts for the report (printed; pytest -s or -rA shows them)."""
    print(f"\n[{name}] " + json.dumps(facts, default=str))


# ----------------------------------------------------------------------------- 1 and 2
def _mem_sizes() -> tuple[int, int, int]:
    """--mem of OVER_MEMORY's job at attempts 1 and 2 (pzpipe.planning.resources, the
    profile's threads, the test config's chunks), and what it will really use: between."""
    import sys

    sys.path.insert(0, str(REPO / "workflow" / "src"))
    from pzpipe.planning.resources import estimate_mem_mb

    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    threads = int(prof["set-threads"]["estimate_batch"])
    algo = OVER_MEMORY.split("/")[0]
    m1, m2 = (estimate_mem_mb(algo, threads, a, chunk_rows=cfg["partition"]["chunk_rows"])
              for a in (1, 2))
    assert m2 > m1 + 200, (m1, m2)
    return m1, m2, (m1 + m2) // 2


@pytest.fixture(scope="module")
def faulted(start, tmp_path_factory):
    """One Slurm run: CANCELLED is held and cancelled with scancel once it runs;
    OVER_MEMORY grows past its attempt-1 --mem. The run must finish by itself."""
    m1, m2, need = _mem_sizes()
    t0 = time.time()
    run = Run(start, tmp_path_factory.mktemp("faulted") / "run",
              {CANCELLED: "hold", OVER_MEMORY: f"mem:{need}"})
    run.start()
    rec = run.held(CANCELLED)
    jid = slurm_id(rec)
    running = job_state(jid)
    subprocess.run(["scancel", jid], check=True, timeout=60)
    state = wait_for(lambda: (s := job_state(jid)) not in ("RUNNING", "COMPLETING") and s,
                     f"job {jid} to leave RUNNING")
    rc, log = run.finish()
    facts = {"cancelled": jid, "state_before": running, "state_after": state,
             "mem": (m1, m2, need), "seconds": round(time.time() - t0)}
    report("faulted run", **facts)
    return run, rc, log, facts


def test_the_faulted_run_finished_by_itself_identical(faulted):
    run, rc, log, _ = faulted
    assert rc == 0, log[-5000:]
    assert "Submitted array job" not in log and "has been submitted with SLURM jobid" in log
    run.assert_estimates_identical()
    run.finish_locally()
    run.assert_release_identical()


def test_scancel_of_a_running_estimate_job_is_retried(faulted):
    run, rc, log, facts = faulted
    assert facts["state_before"] == "RUNNING" and facts["state_after"] == "CANCELLED", facts
    assert f"SLURM-job '{facts['cancelled']}' failed, SLURM status is: 'CANCELLED'" in log
    # the retry ran the same estimate job again in another Slurm job, and it went through
    recs = calls(run.fault_dir, CANCELLED)
    assert len(recs) == 2 and recs[0]["held"] and not recs[1]["held"], recs
    assert slurm_id(recs[1]) != facts["cancelled"]
    assert (run.wd / "results" / "estimates" / f"{CANCELLED}.parquet").exists()
    report("scancel", calls=recs)


def test_job_over_its_memory_is_killed_and_resubmitted_with_more(faulted):
    run, rc, log, facts = faulted
    _, _, need = facts["mem"]
    recs = calls(run.fault_dir, OVER_MEMORY)
    jobs = list(dict.fromkeys(slurm_id(r) for r in recs))       # in order of attempt
    first = [r for r in recs if slurm_id(r) == jobs[0]]
    last = [r for r in recs if slurm_id(r) == jobs[-1]]
    # attempt 1: --mem below the need; killed while growing to it (or holding it)
    assert len(jobs) == 2, recs
    assert first[0]["job_mem_mb"] < need and not any(r.get("survived") for r in first), first
    assert f"SLURM-job '{jobs[0]}' failed, SLURM status is: 'FAILED'" in log
    # Slurm's own words, in the plugin's log of that job
    slurm_log = next((run.wd / "logs" / "slurm").rglob(f"{jobs[0]}.log"))
    assert re.search(rf"StepId={jobs[0]}\.\d+ exceeded memory limit", slurm_log.read_text()), \
        slurm_log.read_text()[-2000:]
    # attempt 2: a new Slurm job with more memory than the need; it held the need, survived
    assert last[0]["job_mem_mb"] > need and last[-1].get("survived"), last
    assert last[-2]["step_rss_after_mb"] >= need - 50, last
    report("memory", state=job_state(jobs[0]), calls=recs,
           killed=[ln for ln in slurm_log.read_text().splitlines() if "memory" in ln][:2])


# ----------------------------------------------------------------------------- 3. controller
def test_controller_killed_while_jobs_run_recovers_after_cancelling_orphans(start, tmp_path):
    t0 = time.time()
    run = Run(start, tmp_path / "run", {CANCELLED: "hold"})
    run.start()
    rec = run.held(CANCELLED)
    text = run.log.read_text()
    m = re.search(r"SLURM run ID: (\S+)", text)
    assert m, text[-3000:]
    run_id = m.group(1)
    os.killpg(run.proc.pid, signal.SIGKILL)          # the controller and anything it started
    run.proc.wait(timeout=60)
    # its jobs stay in the queue: the held one at least is still running
    orphans = [r for r in squeue("--name", run_id) if r[2] in ("PENDING", "RUNNING")]
    assert any(r[0] == slurm_id(rec) and r[2] == "RUNNING" for r in orphans), orphans
    # the documented recovery (docs/clusters.md): cancel the dead run's jobs by name ...
    subprocess.run(["scancel", "--name", run_id], check=True, timeout=60)
    wait_for(lambda: not [r for r in squeue("--name", run_id)
                          if r[2] in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING")],
             "the orphans to leave the queue")
    states = {r[0]: r[2] for r in squeue("--name", run_id)}
    # ... the same command refuses the locked directory, --unlock, the same command again
    rc, log = run.run()
    assert rc != 0 and "unlock" in log, log[-3000:]
    rc, log = run.run("--unlock")
    assert rc == 0, log[-3000:]
    rc, log = run.run()
    assert rc == 0, log[-5000:]
    assert "rule estimate_batch:" in log
    run.assert_estimates_identical()
    run.finish_locally()
    run.assert_release_identical()
    report("controller", run_id=run_id, orphans=orphans, states_after_scancel=states,
           calls=calls(run.fault_dir, CANCELLED), seconds=round(time.time() - t0))
