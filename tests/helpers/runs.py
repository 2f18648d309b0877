"""Snakemake runs for the end-to-end tests: the command line, one run, and the finished
small run (config/test.yaml) shared by every test of a pytest session.

Used by test_audit.py, test_collection.py, test_determinism.py, test_resume.py,
test_pipeline_e2e.py, test_slurm.py and test_slurm_faults.py. Overridable to try the tests against another checkout or config:
PZPIPE_TEST_SNAKEFILE, PZPIPE_TEST_CONFIGFILE, PZPIPE_TEST_PROFILE; PZPIPE_TEST_SMALL_RUN
names a finished run of config/test.yaml to use instead of making one (while developing
tests; it is only read).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = Path(os.environ.get("PZPIPE_TEST_SNAKEFILE", REPO / "workflow" / "Snakefile"))
CONFIGFILE = Path(os.environ.get("PZPIPE_TEST_CONFIGFILE", REPO / "config" / "test.yaml"))
PROFILE = Path(os.environ.get("PZPIPE_TEST_PROFILE", REPO / "profiles" / "local"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the workflow's paths (PATHS in workflow/rules/common.smk), relative to a run directory
PATHS = {
    "objects_hats": "results/objects_hats",
    "partition": "results/partition/{batch}.parquet",
    "model": "results/models/{algo}/model.pkl",
    "sidecar": "results/models/{algo}/model.json",
    "algo_data": "results/{algo}_data",
    "estimate": "results/estimates/{algo}/{batch}.parquet",
    "export_catalog": "results/export/catalog",
    "export_margin": "results/export/margin/{batch}",
    "export_index_batch": "results/export/index/{batch}.parquet",
    "export_index": "results/export/index_buckets/{bucket}",
    "release": "results/release",
}


def smk_cmd(workdir: Path, *args, overlays=(), profile=PROFILE, cores=2,
            configfile=CONFIGFILE) -> list[str]:
    """``snakemake -s SNAKEFILE --directory WORKDIR [--profile P --cores N] ARGS
    --configfile CONFIGFILE OVERLAYS...`` (the config files last: the option takes several
    values). ``profile=None``: no profile and no --cores (the caller passes its own)."""
    prof = ["--profile", str(profile), "--cores", str(cores)] if profile is not None else []
    return [*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(workdir), *prof, *args,
            "--configfile", str(configfile), *map(str, overlays)]


def smk(workdir: Path, *args, check=True, timeout=3600, overlays=(), profile=PROFILE,
        cores=2, cwd=None, keep_output=False, configfile=CONFIGFILE) -> subprocess.CompletedProcess:
    """Run snakemake (see :func:`smk_cmd`); ``check``: raise with the end of its output
    when it fails; ``keep_output``: also write snakemake.stdout/.stderr into ``workdir``."""
    r = subprocess.run(smk_cmd(workdir, *args, overlays=overlays, profile=profile, cores=cores,
                               configfile=configfile),
                       capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if keep_output:
        (Path(workdir) / "snakemake.stdout").write_text(r.stdout)
        (Path(workdir) / "snakemake.stderr").write_text(r.stderr)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {args} failed ({r.returncode}):\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def full_run(workdir: Path, *targets) -> float:
    """One uninterrupted run; returns its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    smk(workdir, *targets)
    return time.time() - t0


def small_run(tmp_path_factory) -> Path:
    """The finished small run shared by every test of the session (built once; the
    directory must not be modified: tests that alter files work on :func:`copy_run`)."""
    if os.environ.get("PZPIPE_TEST_SMALL_RUN"):       # while developing: a finished run
        return Path(os.environ["PZPIPE_TEST_SMALL_RUN"])
    base = tmp_path_factory.getbasetemp()
    wd = base / "pzpipe-small-run"
    with open(base / "pzpipe-small-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (wd / ".done").exists():
            if wd.exists():
                shutil.rmtree(wd)
            secs = full_run(wd)
            (wd / ".done").write_text(json.dumps({"seconds": round(secs, 1)}))
    return wd


def second_run(tmp_path_factory) -> tuple[Path, str]:
    """A second uninterrupted run of config/test.yaml, shared by the session
    (test_determinism.py compares it with :func:`small_run`, test_slurm.py with the same):
    through the one-node Slurm (profiles/ci-slurm) when one answers, else locally
    (profiles/local). Returns (run directory, "slurm" | "local"); the Snakemake output is
    kept in snakemake.stdout/.stderr of the directory. One full run less in CI than a
    local second run plus a separate local-vs-Slurm pair."""
    from helpers.slurm import slurm_status

    base = tmp_path_factory.getbasetemp()
    wd = base / "pzpipe-second-run"
    with open(base / "pzpipe-second-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = wd / ".done"
        if not done.exists():
            if wd.exists():
                shutil.rmtree(wd)
            wd.mkdir()
            how = "slurm" if slurm_status() is None else "local"
            prof = REPO / "profiles" / ("ci-slurm" if how == "slurm" else "local")
            t0 = time.time()
            # no default profile: each run names its own; run from its directory
            extra = () if how == "slurm" else ("--cores", "2")
            smk(wd, "--profile", str(prof), *extra, profile=None, cwd=wd, timeout=2400,
                keep_output=True)
            done.write_text(json.dumps({"how": how, "seconds": round(time.time() - t0, 1)}))
    return wd, json.loads((wd / ".done").read_text())["how"]


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run (results, logs, .snakemake metadata), mtimes preserved."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("locks", "incomplete", "log", ".done"))
    return dst


def record_name(p: Path, root: Path) -> str | None:
    """The output path a file of .snakemake/metadata or .snakemake/incomplete stands for."""
    import base64

    parts = [s.lstrip("@") for s in p.relative_to(root).parts]
    try:
        return base64.urlsafe_b64decode("".join(parts)).decode()
    except ValueError:
        return None


def prepare_from(base: Path, dst: Path, subs) -> Path:
    """A run directory holding the outputs ``results/<sub>`` of the finished run ``base``
    (``subs``: e.g. "models", "bpz_data", "objects_hats", "partition") and their
    Snakemake records, and nothing else: the state of a run stopped after making them.
    Only the records of the copied outputs: the others were made with the full config, and
    a stale record would make Snakemake rerun a job a real run would not."""
    (dst / "results").mkdir(parents=True)
    subs = [s for s in subs if (base / "results" / s).exists()]
    for sub in subs:
        shutil.copytree(base / "results" / sub, dst / "results" / sub)
    src = base / ".snakemake" / "metadata"
    for p in src.rglob("*"):
        name = record_name(p, src) if p.is_file() else None
        if name and any(name == f"results/{s}" or name.startswith(f"results/{s}/") for s in subs):
            (dst / ".snakemake" / "metadata" / p.relative_to(src)).parent.mkdir(parents=True,
                                                                                exist_ok=True)
            shutil.copy2(p, dst / ".snakemake" / "metadata" / p.relative_to(src))
    return dst
