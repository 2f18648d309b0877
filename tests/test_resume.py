"""Resume after kill: SIGKILL Snakemake and all its job processes (the whole process
group) at seeded random moments while it builds the release, resume with
`snakemake --unlock` + `--rerun-incomplete`, and compare with an uninterrupted run.

Bounded: the models, BPZ data and Snakemake metadata of one finished small run
(config/test.yaml) are copied into each trial directory, and the trials run with an
overlay that keeps three algorithms (BPZ: its data directory; TPZ: per-chunk seeding; kNN)
with 2 estimate workers (a process pool to kill), so a trial runs partition (2 jobs) ->
estimate (3 algorithms x 2 batches) -> export, and the kills land there (~50-70 s of
Snakemake per uninterrupted trial on 2 cores, most of it per-job start-up).
PZPIPE_RESUME_ALL_ALGOS=1 keeps all five. Some trials are killed twice (the second time
during the resume).

After every trial:
- the release (every parquet file and manifest.json) is byte-identical to the
  uninterrupted run's;
- no temporary (`.tmp-`) file or directory is left anywhere under results/, the release
  holds only files listed in its manifest, and results/ holds no file the run does not
  declare;
- partition and estimate files that were finished before the kill (present and not
  marked incomplete by Snakemake) are not recomputed: same inode and mtime;
- every partition/estimate file present under its final name right after a kill is a
  complete parquet file (footer + pzpipe metadata: the atomic rename works);
- no process of the killed run survives.
Measured figures are written to $PZPIPE_RESUME_REPORT (JSON) if set (docs/reliability.md).
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_audit import smk, smk_cmd, small_run

pytestmark = pytest.mark.slow

TARGET = "results/release"
STRATA = ((0.0, 0.2), (0.2, 0.7), (0.7, 0.95))     # fractions of the uninterrupted run
OVERLAY = ("" if os.environ.get("PZPIPE_RESUME_ALL_ALGOS") else
           "algorithms: {fzboost: {enabled: false}, dnf: {enabled: false}}\n")
SEED = int(os.environ.get("PZPIPE_RESUME_SEED", 20261123))
N_TRIALS = int(os.environ.get("PZPIPE_RESUME_TRIALS", 10))


# ----------------------------------------------------------------------------- helpers
def prepare(base: Path, dst: Path) -> Path:
    """A trial directory with the trained models (and their Snakemake records) of ``base``."""
    (dst / "results").mkdir(parents=True)
    for sub in ("models", "bpz_data"):
        if (base / "results" / sub).exists():
            shutil.copytree(base / "results" / sub, dst / "results" / sub)
    shutil.copytree(base / ".snakemake" / "metadata", dst / ".snakemake" / "metadata")
    return dst


def group_alive(pgid: int) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(p.name))
    return pids


def incomplete_marks(wd: Path) -> set[str]:
    d = wd / ".snakemake" / "incomplete"
    out = set()
    if d.exists():
        for p in d.rglob("*"):
            if p.is_file() and p.name != "migration_underway":
                parts = [s.lstrip("@") for s in p.relative_to(d).parts]
                try:
                    out.add(base64.urlsafe_b64decode("".join(parts)).decode())
                except ValueError:
                    pass
    return out


def snapshot(wd: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every partition and estimate file under its final name."""
    out = {}
    for sub in ("partition", "estimates"):
        for p in (wd / "results" / sub).rglob("*.parquet"):
            if ".tmp-" not in p.name:
                st = p.stat()
                out[str(p.relative_to(wd))] = (st.st_ino, st.st_mtime_ns)
    return out


def complete_parquet(path: Path) -> bool:
    """A parquet file with its footer and pzpipe metadata (i.e. written to the end)."""
    import pyarrow.parquet as pq

    try:
        return b"pzpipe" in (pq.ParquetFile(path).metadata.metadata or {})
    except Exception:  # noqa: BLE001 - any read error means a partial file
        return False


def run_and_kill(wd: Path, delay: float, log, overlays) -> dict:
    """Start snakemake in its own process group, SIGKILL the group after ``delay`` s."""
    proc = subprocess.Popen(smk_cmd(wd, TARGET, overlays=overlays), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    try:
        proc.wait(timeout=delay)
        return {"killed": False, "at": round(time.time() - t0, 1), "rc": proc.returncode}
    except subprocess.TimeoutExpired:
        pass
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    survivors = group_alive(proc.pid)
    for pid in survivors:                        # do not leave them running
        os.kill(pid, signal.SIGKILL)
    return {"killed": True, "at": round(delay, 1), "survivors": survivors}


def phase(snap: dict, marked: set[str], tmp: list[str], n_estimates: int) -> str:
    """What the run was doing when it was killed (from what it left)."""
    if any("release" in m for m in marked) or any("release" in t for t in tmp):
        return "export"
    if any("/partition/" in m for m in marked):
        return "partition"
    if any("/estimates/" in m for m in marked):
        return "estimate"
    n_est = sum("/estimates/" in p for p in snap)
    if not any("/partition/" in p for p in snap):
        return "start-up"
    return "between jobs" if n_est < n_estimates else "before export"


def leftovers(wd: Path, manifest: dict) -> list[str]:
    """Temporary files anywhere under results/ and unexpected files in the release/outputs."""
    bad = [str(p.relative_to(wd)) for p in (wd / "results").rglob("*") if ".tmp-" in p.name]
    listed = {f["path"] for f in manifest["files"]}
    rel = wd / "results" / "release"
    for p in rel.rglob("*"):
        r = str(p.relative_to(rel))
        if p.is_file() and r not in listed and p.name not in (
                "manifest.json", "conservation.json", ".snakemake_timestamp"):
            bad.append(f"results/release/{r} (not in the manifest)")
    expected = {f"results/partition/{f['batch']}.parquet" for f in manifest["files"]}
    expected |= {f"results/estimates/{f['algorithm']}/{f['batch']}.parquet" for f in manifest["files"]}
    for sub in ("partition", "estimates"):
        for p in (wd / "results" / sub).rglob("*"):
            r = str(p.relative_to(wd))
            if p.is_file() and r not in expected and ".tmp-" not in p.name:
                bad.append(f"{r} (not an output of the run)")
    return sorted(bad)


def release_bytes(wd: Path) -> dict[str, bytes]:
    rel = wd / "results" / "release"
    return {str(p.relative_to(rel)): p.read_bytes() for p in sorted(rel.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


# ----------------------------------------------------------------------------- test
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted release-only run from the copied models, and its wall time."""
    base = small_run(tmp_path_factory)
    overlay = tmp_path_factory.mktemp("resume-overlay") / "overlay.yaml"
    overlay.write_text(OVERLAY or "{}\n")
    wd = prepare(base, tmp_path_factory.mktemp("resume-ref"))
    t0 = time.time()
    r = smk(wd, TARGET, overlays=[overlay])
    secs = time.time() - t0
    out = r.stdout + r.stderr
    assert "rule train:" not in out and "rule prepare_data:" not in out, "models were retrained"
    return base, wd, secs, [overlay]


def test_reference_equals_the_full_run(reference):
    """Sanity: the release-only run from copied models has the full run's data (the bytes
    differ only where the overlay's config is recorded: manifest, config_hash)."""
    import pyarrow.parquet as pq

    base, wd, _, _ = reference
    man = json.loads((wd / "results" / "release" / "manifest.json").read_text())
    for f in man["files"]:
        a = pq.read_table(wd / "results" / "release" / f["path"]).replace_schema_metadata(None)
        b = pq.read_table(base / "results" / "release" / f["path"]).replace_schema_metadata(None)
        assert a.equals(b), f["path"]


def test_kill_and_resume(reference, tmp_path):
    base, ref_wd, t_ref, overlays = reference
    ref = release_bytes(ref_wd)
    manifest = json.loads(ref["manifest.json"])
    rng = random.Random(SEED)
    trials, failures = [], []
    t_all = time.time()
    for i in range(N_TRIALS):
        wd = prepare(base, tmp_path / f"trial{i:02d}")
        kills = 2 if i % 3 == 2 else 1
        rec = {"trial": i, "kills": []}
        finished: dict[str, tuple[int, int]] = {}     # present and not marked incomplete
        marked_any: set[str] = set()
        with open(wd / "snakemake.log", "w") as log:
            for k in range(kills):
                if k:
                    smk(wd, "--unlock", check=False, overlays=overlays)
                # a moment after Snakemake has parsed the workflow (~3 s) and before the
                # uninterrupted run's end, in an early / middle / late third of the run in
                # turn (partition, estimate, export); a restart has less to do
                lo, hi = STRATA[i % len(STRATA)] if k == 0 else (0.0, 0.6)
                delay = rng.uniform(max(3.0, lo * t_ref), max(4.0, hi * t_ref))
                info = run_and_kill(wd, delay, log, overlays)
                snap, marked = snapshot(wd), incomplete_marks(wd)
                tmp = sorted(str(p.relative_to(wd)) for p in (wd / "results").rglob("*")
                             if ".tmp-" in p.name)
                info.update(present=len(snap), incomplete=sorted(marked), tmp=tmp,
                            phase=phase(snap, marked, tmp, len(manifest["files"])) if info["killed"]
                            else "finished")
                rec["kills"].append(info)
                if info.get("survivors"):
                    failures.append(f"trial {i}: processes survived SIGKILL of the group: "
                                    f"{info['survivors']}")
                partial = [p for p in snap if not complete_parquet(wd / p)]
                if partial:
                    failures.append(f"trial {i}: partial file(s) under a final name after the "
                                    f"kill: {partial}")
                for p, v in snap.items():
                    if p in marked:
                        marked_any.add(p)
                    else:
                        finished.setdefault(p, v)
        t0 = time.time()
        smk(wd, "--unlock", check=False, overlays=overlays)
        r2 = smk(wd, TARGET, "--rerun-incomplete", check=False, overlays=overlays)
        rec["resume_seconds"] = round(time.time() - t0, 1)
        if r2.returncode != 0:
            failures.append(f"trial {i}: resume failed ({r2.returncode}): {r2.stderr[-1500:]}")
            trials.append(rec)
            continue
        after = snapshot(wd)
        recomputed = sorted(p for p, v in finished.items() if after.get(p) != v)
        rec["finished_before_kill"] = len(finished)
        rec["rerun_because_incomplete"] = sorted(marked_any)
        if recomputed:
            failures.append(f"trial {i}: finished files recomputed after resume: {recomputed}")
        got = release_bytes(wd)
        differ = sorted(n for n in set(got) | set(ref) if got.get(n) != ref.get(n))
        if differ:
            failures.append(f"trial {i}: release differs from the uninterrupted run: {differ}")
        bad = leftovers(wd, manifest)
        rec["leftovers"] = bad
        if bad:
            failures.append(f"trial {i}: partial/orphaned files after resume: {bad}")
        trials.append(rec)
    summary = {"seed": SEED, "trials": trials, "reference_seconds": round(t_ref, 1),
               "total_seconds": round(time.time() - t_all, 1),
               "kills": sum(len(t["kills"]) for t in trials),
               "kills_that_landed": sum(k["killed"] for t in trials for k in t["kills"]),
               "phases": {ph: sum(k["phase"] == ph for t in trials for k in t["kills"])
                          for ph in sorted({k["phase"] for t in trials for k in t["kills"]})},
               "failures": failures}
    if os.environ.get("PZPIPE_RESUME_REPORT"):
        Path(os.environ["PZPIPE_RESUME_REPORT"]).write_text(json.dumps(summary, indent=2))
    assert summary["kills_that_landed"] >= N_TRIALS, summary
    assert not failures, "\n".join(failures)
