"""Resume after kill: SIGKILL Snakemake and all its job processes (the whole process
group) as soon as a chosen job has started while it builds the release, resume with
`snakemake --unlock` + `--rerun-incomplete`, and compare with an uninterrupted run.

Bounded: the models, data directories (BPZ) and Snakemake records of one finished small run
(config/test.yaml, tests/helpers/runs.py) are copied into each trial directory, and the
trials run with an overlay that keeps two estimators (BPZ: its data directory; TPZ:
per-chunk seeding) with 2 estimate workers (a process pool to kill), so a trial runs
import_objects (hats-import, a checkpoint) -> partition (3 batches) -> estimate
(2 algorithms x 3 batches) -> export_batch (3) -> export_dedup (1) -> export, and the
validation and collection jobs of the release.
PZPIPE_RESUME_ALL_ALGOS=1 keeps all of the test config's.

Where the kills land (deterministic: no timing): each kill waits for a job's start marker
- the "start <stage>.<function>" line every job writes first into its rule log
(pzpipe.core.jobs.job_log), fresh in this attempt - and then SIGKILLs the group at once, while
that job runs and the rest of the run waits; a kill whose run ended before its marker
fails the test. KILLS lists the marker of each trial (rule, and which of its jobs to start
in this attempt): import_objects, partition_batch, estimate_batch (first, last),
export_batch, export_dedup and export. Trials 0 and 3 start from nothing; the others
from a copy of the run's imported catalog (and its Snakemake record: the state of a run
killed right after the import, which saves the import's ~15 s per trial); trials 2, 3
and 4 are killed a second time during the resume. (Six trials: each costs about one
release run, ~1 min in CI; the ten of earlier versions added kill points of the same
jobs.)

After every trial:
- every file of the release (pixel files, properties, partition_info.csv,
  _common_metadata, manifest.json, manifest_files.csv, conservation.json, README.md) is
  byte-identical to the uninterrupted run's;
- results/ holds exactly the files and directories of the uninterrupted run: no
  temporary (`.tmp-`, `.work-`) file or directory, no orphan anywhere;
- the files finished before a kill (present and not marked incomplete by Snakemake:
  imported catalog, partition, estimate, per-batch export and dedup outputs) are not
  recomputed: same inode and mtime;
- every output present under its final name right after a kill and not marked
  incomplete is complete (parquet files: footer + pzpipe metadata; the per-batch export
  directories: their report; the release: its manifest; the imported catalog: its
  properties, partition info and every pixel file);
- no process of the killed run survives.
Measured figures are written to $PZPIPE_RESUME_REPORT (JSON) if set (docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.runs import REPO, prepare_from, record_name, small_run, smk, smk_cmd
from helpers.trees import compare_trees, files, format_diffs, listing

pytestmark = pytest.mark.slow

TARGET = "results/release"
KEEP = ("bpz", "tpz")             # BPZ: its data directory; TPZ: per-chunk seeding


def _overlay() -> str:
    """2 estimate workers (a process pool to kill; config/test.yaml has 1); every estimator
    of config/config.yaml disabled but KEEP (PZPIPE_RESUME_ALL_ALGOS=1: keep the test
    config's)."""
    workers = "estimate: {workers: 2}\n"
    if os.environ.get("PZPIPE_RESUME_ALL_ALGOS"):
        return workers
    from pzpipe.run.config import load_config

    names = load_config(REPO / "config" / "config.yaml")["algorithms"]
    return workers + "algorithms: {" + ", ".join(f"{a}: {{enabled: false}}" for a in names
                                                 if a not in KEEP) + "}\n"


# Kill points: per trial, the markers of its kills (the first in the run, the second in
# the resume): (rule, n) = when the n-th job of ``rule`` of this attempt has started.
# Three batches x two estimators: 6 estimate jobs, 3 export_batch jobs.
KILLS = [
    [("import_objects", 1)],                          # 0, from nothing: inside the import
    [("partition_batch", 1)],                         # 1
    [("estimate_batch", 1), ("export_batch", 1)],     # 2
    [("estimate_batch", 6), ("estimate_batch", 1)],   # 3, from nothing: the last estimate
    [("export_batch", 2), ("export", 1)],             # 4   job, then the resume's first
    [("export_dedup", 1)],                            # 5
]
FROM_NOTHING = {0, 3}
N_TRIALS = int(os.environ.get("PZPIPE_RESUME_TRIALS", len(KILLS)))


# ----------------------------------------------------------------------------- helpers
def prepare(base: Path, dst: Path, imported: bool) -> Path:
    """A trial directory with the trained models and data directories of ``base`` and their
    Snakemake records; ``imported``: also its imported HATS catalog and its record
    (helpers.runs.prepare_from: only the records of the copied outputs)."""
    data = tuple(p.name for p in (base / "results").glob("*_data"))   # rule prepare_data
    return prepare_from(base, dst, ("models",) + data + (("objects_hats",) if imported else ()))


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
                name = record_name(p, d)
                if name:
                    out.add(name)
    return out


def is_marked(path: str, marked: set[str]) -> bool:
    """``path`` is an output Snakemake marked incomplete, or inside one (directories)."""
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in marked)


def outputs(wd: Path) -> dict[str, Path]:
    """The outputs under their final names now: {what to compare: file whose inode and
    mtime stand for the output} (a directory output by a file that it writes last or
    atomically with it)."""
    res = wd / "results"
    out = {}
    for sub in ("partition", "estimates", "export/ids"):
        for p in (res / sub).rglob("*.parquet"):
            if ".tmp-" not in p.name:
                out[str(p.relative_to(wd))] = p
    for p in (res / "export" / "batches").glob("b*"):
        out[str(p.relative_to(wd))] = p / "report.json"
    for p in (res / "export" / "dedup").glob("*.json"):
        out[str(p.relative_to(wd))] = p
    if (res / "objects_hats").is_dir():
        out["results/objects_hats"] = res / "objects_hats" / "partition_info.csv"
    if (res / "release").is_dir():
        out["results/release"] = res / "release" / "manifest.json"
    return out


def complete(name: str, p: Path) -> bool:
    """The output ``name`` (represented by ``p``) was written to the end."""
    import pyarrow.parquet as pq

    try:
        if name == "results/objects_hats":
            from pzpipe.core import hatsio

            cat = p.parent
            counts, _ = hatsio.pixel_counts(cat)
            return all(pq.ParquetFile(hatsio.pixel_file(cat, k, q)).metadata.num_rows == n
                       for k, q, n in counts)
        if p.suffix == ".parquet":
            return b"pzpipe" in (pq.ParquetFile(p).metadata.metadata or {})
        json.loads(p.read_text())
        return True
    except Exception:  # noqa: BLE001 - any read error means a partial output
        return False


def snapshot(wd: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every output under its final name."""
    out = {}
    for name, p in outputs(wd).items():
        try:
            st = p.stat()
        except FileNotFoundError:
            out[name] = (-1, -1)             # a directory output without its last file
            continue
        out[name] = (st.st_ino, st.st_mtime_ns)
    return out


def temporaries(wd: Path) -> list[str]:
    return sorted(str(p.relative_to(wd)) for p in (wd / "results").rglob("*")
                  if ".tmp-" in p.name or ".work-" in p.name)


def started(wd: Path, rule: str, since_ns: int) -> int:
    """How many jobs of ``rule`` have started since ``since_ns``: rule logs rewritten since
    then whose first line is the job's start line (pzpipe.core.jobs.job_log truncates the log
    and writes "start ..." first)."""
    n = 0
    for p in (wd / "logs").glob(f"{rule}.log" if rule in ("import_objects", "export")
                                else f"{rule}/**/*.log"):
        try:
            if p.stat().st_mtime_ns >= since_ns and " start " in p.read_text()[:300]:
                n += 1
        except OSError:
            continue
    return n


def run_and_kill(wd: Path, marker: tuple[str, int], log, overlays) -> dict:
    """Start snakemake in its own process group; SIGKILL the group as soon as the
    ``marker`` (rule, n) job has started. Returns whether the kill landed (the run was
    still going), or how the run ended before its marker."""
    rule, n = marker
    since = time.time_ns() - 1_000_000
    proc = subprocess.Popen(smk_cmd(wd, TARGET, overlays=overlays), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while started(wd, rule, since) < n:
        if proc.poll() is not None:
            return {"killed": False, "marker": f"{rule}#{n}",
                    "at": round(time.time() - t0, 1), "rc": proc.returncode}
        time.sleep(0.02)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    survivors = group_alive(proc.pid)
    for pid in survivors:                        # do not leave them running
        os.kill(pid, signal.SIGKILL)
    return {"killed": alive, "marker": f"{rule}#{n}", "at": round(time.time() - t0, 1),
            "survivors": survivors}


PHASES = (("results/release", "release"), ("results/export/index_buckets/", "index_bucket"),
          ("results/export/index/", "index_batch"), ("results/export/margin/", "margin_batch"),
          ("results/export/catalog", "export"), ("results/export/dedup/", "export_dedup"),
          ("results/export/batches/", "export_batch"), ("results/export/ids/", "export_batch"),
          ("results/estimates/", "estimate"),
          ("results/partition/", "partition"), ("results/objects_hats", "import_objects"))


def phase(snap: dict, marked: set[str], tmp: list[str]) -> str:
    """What the run was doing when it was killed (from what it left)."""
    for prefix, name in PHASES:
        if any(m.startswith(prefix) for m in marked) or \
                any(t.startswith(prefix) or t.startswith(prefix.replace("results/", "results/."))
                    for t in tmp):
            return name
    if not snap:
        return "start-up"
    last = next((name for prefix, name in PHASES if any(s.startswith(prefix) for s in snap)))
    return f"after {last}"


# ----------------------------------------------------------------------------- test
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted release-only run from the copied models (import included), its
    wall time and the time at which its import had finished."""
    base = small_run(tmp_path_factory)
    overlay = tmp_path_factory.mktemp("resume-overlay") / "overlay.yaml"
    overlay.write_text(_overlay())
    wd = prepare(base, tmp_path_factory.mktemp("resume-ref"), imported=False)
    t0 = time.time()
    t_import = None
    proc = subprocess.Popen(smk_cmd(wd, TARGET, overlays=[overlay]), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if t_import is None and "(Rule: import_objects)" in line and "Finished" in line:
            t_import = time.time() - t0
    proc.wait()
    secs = time.time() - t0
    text = "".join(out)
    assert proc.returncode == 0, text[-4000:]
    assert "rule train:" not in text and "rule prepare_data:" not in text, "models were retrained"
    assert t_import is not None, text[-3000:]
    return base, wd, secs, t_import, [overlay]


def test_reference_equals_the_full_run(reference):
    """Sanity: the release-only run from copied models has the full run's data in every
    column it has (the overlay drops two estimators, so the files themselves differ)."""
    import pyarrow.parquet as pq

    base, wd, _, _, _ = reference
    rel, full = wd / "results" / "release", base / "results" / "release"
    pixels = sorted(p for p in files(rel) if p.startswith("photoz/dataset/Norder="))
    assert pixels and pixels == sorted(p for p in files(full)
                                       if p.startswith("photoz/dataset/Norder="))
    for p in pixels:
        a = pq.read_table(rel / p)
        b = pq.read_table(full / p, columns=a.column_names)
        assert a.num_rows == b.num_rows and len(a.column_names) > 20
        for c in a.column_names:
            assert a.column(c).equals(b.column(c)), (p, c)


def test_kill_and_resume(reference, tmp_path):
    base, ref_wd, t_ref, t_import, overlays = reference
    ref_release = files(ref_wd / "results" / "release")
    ref_listing = listing(ref_wd / "results")
    trials, failures = [], []
    t_all = time.time()
    for i in range(N_TRIALS):
        imported = i not in FROM_NOTHING
        wd = prepare(base, tmp_path / f"trial{i:02d}", imported=imported)
        kills = len(KILLS[i])
        rec = {"trial": i, "from_imported_catalog": imported, "kills": []}
        finished: dict[str, tuple[int, int]] = {}     # present and not marked incomplete
        marked_any: set[str] = set()
        with open(wd / "snakemake.log", "w") as log:
            for k in range(kills):
                if k:                                    # the resume, killed again
                    smk(wd, "--unlock", check=False, overlays=overlays)
                info = run_and_kill(wd, KILLS[i][k], log, overlays)
                if not info["killed"]:
                    failures.append(f"trial {i}: the run ended before its kill point "
                                    f"{info['marker']}: {info}")
                snap, marked, tmp = snapshot(wd), incomplete_marks(wd), temporaries(wd)
                info.update(present=len(snap), incomplete=sorted(marked), tmp=tmp,
                            phase=phase(snap, marked, tmp) if info["killed"] else "finished")
                rec["kills"].append(info)
                if info.get("survivors"):
                    failures.append(f"trial {i}: processes survived SIGKILL of the group: "
                                    f"{info['survivors']}")
                partial = [n for n, p in outputs(wd).items()
                           if not is_marked(n, marked) and not complete(n, p)]
                if partial:
                    failures.append(f"trial {i}: partial output(s) under a final name, not "
                                    f"marked incomplete, after the kill: {partial}")
                for n, v in snap.items():
                    if is_marked(n, marked):
                        marked_any.add(n)
                    elif "/export/ids/" not in n:      # temp(): deleted once consumed
                        finished.setdefault(n, v)
        t0 = time.time()
        smk(wd, "--unlock", check=False, overlays=overlays)
        r2 = smk(wd, TARGET, "--rerun-incomplete", check=False, overlays=overlays)
        rec["resume_seconds"] = round(time.time() - t0, 1)
        if r2.returncode != 0:
            failures.append(f"trial {i}: resume failed ({r2.returncode}): {r2.stderr[-1500:]}")
            trials.append(rec)
            continue
        after = snapshot(wd)
        recomputed = sorted(n for n, v in finished.items() if after.get(n) != v)
        rec["finished_before_kill"] = len(finished)
        rec["rerun_because_incomplete"] = sorted(marked_any)
        if recomputed:
            failures.append(f"trial {i}: finished outputs recomputed after resume: {recomputed}")
        got = files(wd / "results" / "release")
        if got != ref_release:
            diffs = compare_trees(ref_wd / "results" / "release", wd / "results" / "release")
            failures.append(f"trial {i}: release differs from the uninterrupted run:\n"
                            + format_diffs(diffs))
        now = listing(wd / "results")
        extra, missing = sorted(now - ref_listing), sorted(ref_listing - now)
        rec["leftovers"] = extra
        if extra or missing:
            failures.append(f"trial {i}: results/ differs from the uninterrupted run's: "
                            f"left over {extra}, missing {missing}")
        trials.append(rec)
    summary = {"trials": trials, "reference_seconds": round(t_ref, 1),
               "reference_import_done_at": round(t_import, 1),
               "total_seconds": round(time.time() - t_all, 1),
               "kills": sum(len(t["kills"]) for t in trials),
               "kills_that_landed": sum(k["killed"] for t in trials for k in t["kills"]),
               "phases": {ph: sum(k["phase"] == ph for t in trials for k in t["kills"])
                          for ph in sorted({k["phase"] for t in trials for k in t["kills"]})},
               "failures": failures}
    if os.environ.get("PZPIPE_RESUME_REPORT"):
        Path(os.environ["PZPIPE_RESUME_REPORT"]).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1))
    assert not failures, "\n".join(failures)
    assert summary["kills_that_landed"] == summary["kills"], summary
    # the kills reached the import and the export jobs (seeded: the same every run)
    landed = {k["phase"] for t in trials for k in t["kills"] if k["killed"]}
    assert "import_objects" in landed, summary["phases"]
    assert landed & {"export_batch", "export_dedup", "export", "after export_batch",
                     "after export_dedup"}, summary["phases"]


def test_leftover_temp_ids_are_removed_by_the_export(reference, tmp_path):
    """The state a kill between a dedup job's end and Snakemake's temp cleanup leaves (seen
    in a trial): the batches' temp id files stay, and no later job consumes them. The export
    removes them once the release is in place: results/ then holds exactly what an
    uninterrupted run leaves."""
    import pyarrow.parquet as pq
    from helpers.runs import copy_run
    from pzpipe.stages import export

    _, ref_wd, _, _, overlays = reference
    wd = copy_run(ref_wd, tmp_path / "run")
    shutil.rmtree(wd / "results" / "release")
    ids = []
    for b in sorted((wd / "results" / "export" / "batches").iterdir()):
        rep = json.loads((b / "report.json").read_text())
        t = [pq.read_table(b / f["path"], columns=["objectId"]).column(0).to_numpy()
             for f in rep["files"]]
        ids.append(wd / "results" / "export" / "ids" / f"{b.name}.parquet")
        export.write_id_buckets(t[0], 1, str(ids[-1]))
    r = smk(wd, TARGET, overlays=overlays)
    out = r.stdout + r.stderr
    assert "localrule export:" in out and "rule export_batch:" not in out, out[-2000:]
    assert not any(p.exists() for p in ids)
    assert listing(wd / "results") == listing(ref_wd / "results")
    assert files(wd / "results" / "release") == files(ref_wd / "results" / "release")


def test_leftover_index_batches_are_removed_by_the_release(reference, tmp_path):
    """The same for the batches' sorted ids (temp() inputs of the id index): a kill between
    the index bucket job's end and Snakemake's temp cleanup left them (seen in a CI trial,
    killed as the export started while the index bucket finished). The release job removes
    them once the release is in place."""
    from helpers.runs import copy_run
    from pzpipe.stages import collection

    _, ref_wd, _, _, overlays = reference
    wd = copy_run(ref_wd, tmp_path / "run")
    shutil.rmtree(wd / "results" / "release")
    # made after the batches and before the index buckets, as in the trial (mtimes:
    # Snakemake would otherwise rerun the index jobs, and the test would not see P14)
    exp = wd / "results" / "export"
    t_lo = max(p.stat().st_mtime for p in [*(exp / "batches").rglob("*"), exp / "batches"])
    t_hi = min(p.stat().st_mtime for p in [*(exp / "index_buckets").rglob("*"),
                                            exp / "index_buckets"])
    assert t_lo < t_hi, (t_lo, t_hi)
    left = []
    for b in sorted((exp / "batches").iterdir()):
        left.append(exp / "index" / f"{b.name}.parquet")
        left[-1].parent.mkdir(parents=True, exist_ok=True)
        collection.run_index_batch(str(b), "objectId", str(left[-1]))
        t = (t_lo + t_hi) / 2
        os.utime(left[-1], (t, t))
    assert len(left) == 3 and all(p.exists() for p in left)
    r = smk(wd, TARGET, overlays=overlays)
    out = r.stdout + r.stderr
    assert "localrule release:" in out and "rule index_" not in out, out[-2000:]
    assert not any(p.exists() for p in left)
    assert listing(wd / "results") == listing(ref_wd / "results")
    assert files(wd / "results" / "release") == files(ref_wd / "results" / "release")


def test_stale_import_work_directory_is_removed(tmp_path):
    """A SIGKILL during import_objects leaves hats-import's work directory
    (`.objects_hats.tmp-<pid>`, seen in the trials); the next import removes it."""
    from pzpipe.core import hatsio
    from pzpipe.run.config import resolve_path

    out = tmp_path / "results" / "objects_hats"
    stale = tmp_path / "results" / ".objects_hats.tmp-999999"
    (stale / "dask").mkdir(parents=True)
    (stale / "dask" / "global.lock").write_text("")
    src = resolve_path("rail:examples_data/testdata/rubin_dm_dc2_example.pq")
    hatsio.import_catalog([src], out, ra_column="ra", dec_column="decl", catalog_name="x",
                          pixel_threshold=50, highest_order=9)
    assert hatsio.is_hats(out)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["objects_hats"]


def test_provenance_takes_no_git_lock(tmp_path, monkeypatch):
    """The code version is read with `git --no-optional-locks`: a SIGKILL of a run (the
    trials above) while `git status` held the checkout's index.lock left it behind once."""
    from pzpipe.run import provenance

    seen = []
    real = subprocess.run

    def spy(cmd, *a, **k):
        seen.append(list(cmd))
        return real(cmd, *a, **k)

    monkeypatch.setattr(provenance.subprocess, "run", spy)
    provenance.code_version.cache_clear()
    try:
        provenance.code_version()
    finally:
        provenance.code_version.cache_clear()
    gits = [c for c in seen if c and c[0] == "git"]
    assert gits and all("--no-optional-locks" in c for c in gits), gits
