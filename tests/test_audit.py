"""The `audit` target on a finished small run (config/test.yaml): it passes on the run as
made, and fails with a clear reason when a stored output file is altered, a row is
removed, or a model is replaced (each on a copy of the run).

Also the shared helpers for the tests that need a finished run (test_determinism.py,
test_resume.py): one small run per pytest session, built on first use.
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

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
# overridable to try the tests against another checkout / config
SNAKEFILE = Path(os.environ.get("PZPIPE_TEST_SNAKEFILE", REPO / "workflow" / "Snakefile"))
CONFIGFILE = Path(os.environ.get("PZPIPE_TEST_CONFIGFILE", REPO / "config" / "test.yaml"))
PROFILE = Path(os.environ.get("PZPIPE_TEST_PROFILE", REPO / "profiles" / "local"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- helpers
def smk_cmd(workdir: Path, *args, overlays=()) -> list[str]:
    return [*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(workdir),
            "--profile", str(PROFILE), "--cores", "2", *args,
            "--configfile", str(CONFIGFILE), *map(str, overlays)]   # last: it takes several values


def smk(workdir: Path, *args, check=True, timeout=3600, overlays=()) -> subprocess.CompletedProcess:
    r = subprocess.run(smk_cmd(workdir, *args, overlays=overlays), capture_output=True, text=True,
                       timeout=timeout)
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
    """The finished small run shared by every test of the session (built once)."""
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


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished run (results, logs, .snakemake metadata), mtimes preserved."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=shutil.ignore_patterns("locks", "incomplete", "log", ".done"))
    return dst


def rewrite_parquet(path: Path, fn) -> None:
    """Rewrite a parquet file through ``fn(table) -> table``, keeping its row groups and
    key-value metadata (as a careless edit would), and its mtime (as `cp -p` would)."""
    pf = pq.ParquetFile(path)
    st = path.stat()
    kv = {k: v for k, v in (pf.metadata.metadata or {}).items() if k != b"ARROW:schema"}
    groups = [pf.read_row_group(i) for i in range(pf.metadata.num_row_groups)]
    new = [fn(i, g).replace_schema_metadata(None) for i, g in enumerate(groups)]
    tmp = path.with_name(path.name + ".edit")
    with pq.ParquetWriter(tmp, new[0].schema, compression="zstd") as w:
        for g in new:
            w.write_table(g, row_group_size=max(g.num_rows, 1))
        w.add_key_value_metadata(kv)
    os.replace(tmp, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def audit_direct(wd: Path, **kw) -> dict:
    """Run pzpipe.audit.run on a run directory (cwd = the run: BPZ data paths are relative)."""
    from pzpipe import audit
    from pzpipe.config import enabled_algorithms

    man = json.loads((wd / "results" / "release" / "manifest.json").read_text())
    algos = enabled_algorithms(man["config"])
    batches = sorted({f["batch"] for f in man["files"]})
    cwd = os.getcwd()
    os.chdir(wd)
    try:
        return audit.run("results/release",
                         {b: f"results/partition/{b}.parquet" for b in batches},
                         {a: f"results/models/{a}/model.pkl" for a in algos},
                         "results/audit/report.md", "results/audit/report.json", **kw)
    finally:
        os.chdir(cwd)


def statuses(report: dict) -> dict:
    return {c["check"]: c["status"] for c in report["checks"]}


def read_report(run_dir: Path) -> dict:
    return json.loads((run_dir / "results" / "audit" / "report.json").read_text())


def find_check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["check"] == name)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return small_run(tmp_path_factory)


@pytest.fixture
def run_copy(run_dir, tmp_path):
    return copy_run(run_dir, tmp_path / "copy")


# ----------------------------------------------------------------------------- tests
# audit the files as they are: do not let a change of rule code since the run (while
# developing) make Snakemake recompute the release first
AUDIT = ("results/audit/report.md", "--rerun-triggers", "mtime")     # nargs+: target first


def test_audit_target_passes_on_the_test_run(run_copy):
    r = smk(run_copy, *AUDIT)
    assert "localrule audit:" in r.stdout + r.stderr
    assert not any(f"rule {x}:" in r.stdout + r.stderr for x in ("estimate_batch", "export"))
    rep = read_report(run_copy)
    assert rep["status"] == "PASS", (run_copy / "results" / "audit" / "report.md").read_text()
    st = statuses(rep)
    for check in ("manifest", "conservation", "models", "recompute", "config"):
        assert st[check] == "PASS", rep
    assert st["packages"] in ("PASS", "WARN")
    rec = find_check(rep, "recompute")
    assert sum(len(v) for v in rec["data"]["chunks"].values()) >= 5      # >= 1 chunk per algo
    assert all("identical" in d for d in rec["details"])
    md = (run_copy / "results" / "audit" / "report.md").read_text()
    assert "| recompute | **PASS** |" in md and "bit-identical" in md
    assert r.returncode == 0


def test_every_chunk_recomputes_bit_identically(run_copy):
    """All chunks of all algorithms (the test run has 4): not only the audit's sample."""
    rep = audit_direct(run_copy, sample_chunks=100)
    rec = find_check(rep, "recompute")
    assert rec["status"] == "PASS", rec
    assert all(len(v) == 4 for v in rec["data"]["chunks"].values()), rec["data"]


def test_altered_output_file_fails(run_copy):
    from pzpipe import PipelineError

    f = run_copy / "results" / "release" / "knn" / "b000001.parquet"

    def shift(i, t):
        z = t.column("z_mode").to_numpy().copy()
        z[0] += 0.01
        return t.set_column(t.schema.get_field_index("z_mode"), "z_mode", pa.array(z))

    rewrite_parquet(f, shift)
    with pytest.raises(PipelineError, match=r"audit .* FAILED - manifest: knn/b000001\.parquet: "
                                            r"altered after the export .*recompute: knn chunk \d .* column 'z_mode' differs"):
        audit_direct(run_copy, sample_chunks=100)
    rep = read_report(run_copy)
    st = statuses(rep)
    assert st["manifest"] == "FAIL" and st["conservation"] == "PASS" and st["models"] == "PASS"
    rec = find_check(rep, "recompute")
    assert rec["status"] == "FAIL"
    assert any("knn chunk" in d and "column 'z_mode' differs (1 rows" in d for d in rec["details"])


def test_removed_row_fails(run_copy):
    from pzpipe import PipelineError

    f = run_copy / "results" / "release" / "tpz" / "b000000.parquet"
    rewrite_parquet(f, lambda i, t: t.slice(1) if i == 1 else t)
    with pytest.raises(PipelineError, match=r"FAILED - manifest: tpz/b000000\.parquet: altered"):
        audit_direct(run_copy)
    rep = read_report(run_copy)
    cons = find_check(rep, "conservation")
    assert cons["status"] == "FAIL"
    assert any("tpz batch b000000" in d and "rows, partition has" in d for d in cons["details"])


def test_replaced_model_fails(run_copy):
    """A retrained model (other seed/sample) put in place of the recorded one."""
    from pzpipe import PipelineError, train
    from pzpipe.config import validate_config

    man = json.loads((run_copy / "results" / "release" / "manifest.json").read_text())
    cfg = validate_config(man["config"])
    cfg["training"]["seed"] += 1
    cfg["training"]["max_rows"] = min(cfg["training"]["max_rows"] or 500, 500)
    model = run_copy / "results" / "models" / "knn" / "model.pkl"
    other = run_copy / "other"
    cwd = os.getcwd()
    os.chdir(run_copy)
    try:
        train.run("knn", cfg, str(other / "model.pkl"), str(other / "model.json"))
    finally:
        os.chdir(cwd)
    shutil.copy(other / "model.pkl", model)
    with pytest.raises(PipelineError, match=r"FAILED - models: knn: model 'results/models/knn/"
                                            r"model\.pkl' sha256 .* differs from the manifest"):
        audit_direct(run_copy, sample_chunks=100)
    rep = read_report(run_copy)
    st = statuses(rep)
    assert st["models"] == "FAIL" and st["manifest"] == "PASS" and st["conservation"] == "PASS"
    models = find_check(rep, "models")
    assert any("sidecar" in d for d in models["details"])
    rec = find_check(rep, "recompute")
    assert rec["status"] == "FAIL" and any(d.startswith("knn chunk") and "differs" in d
                                           for d in rec["details"])


def test_orphan_and_temporary_files_fail(run_copy):
    rel = run_copy / "results" / "release"
    (rel / "knn" / ".b000000.parquet.tmp-1234").write_bytes(b"partial")
    rep = audit_direct(run_copy, raise_on_fail=False)
    man = find_check(rep, "manifest")
    assert man["status"] == "FAIL"
    assert any("tmp-1234" in d and "not in the manifest" in d for d in man["details"])


def test_package_differences_warn_only(run_copy):
    mpath = run_copy / "results" / "release" / "manifest.json"
    man = json.loads(mpath.read_text())
    man["packages"]["numpy"] = "0.0.1"
    mpath.write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    # the manifest's own checksum list is unchanged; the packages record is informative
    rep = audit_direct(run_copy, raise_on_fail=False)
    st = statuses(rep)
    assert st["packages"] == "WARN" and rep["status"] == "PASS", rep
    pk = find_check(rep, "packages")
    assert any(d.startswith("numpy: recorded 0.0.1, now ") for d in pk["details"])


def test_cli_failed_audit_one_line_and_report_kept(run_copy):
    """Through snakemake: exit code != 0, one `pzpipe error in audit` line on stderr, the
    report kept in logs/audit.report.md (Snakemake deletes a failed job's outputs)."""
    f = run_copy / "results" / "release" / "fzboost" / "b000000.parquet"

    def shift(i, t):
        z = t.column("z_mean").to_numpy().copy()
        z[-1] = np.float32(z[-1] + 0.5)
        return t.set_column(t.schema.get_field_index("z_mean"), "z_mean", pa.array(z))

    rewrite_parquet(f, shift)        # same mtime: Snakemake has no reason to rerun the export
    r = smk(run_copy, *AUDIT, check=False)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pzpipe error in audit")]
    assert len(lines) == 1 and "manifest: fzboost/b000000.parquet: altered after the export" in lines[0], r.stderr[-4000:]
    kept = (run_copy / "logs" / "audit.report.md").read_text()
    assert "| manifest | **FAIL** |" in kept
    assert not (run_copy / "results" / "audit" / "report.md").exists()


# ----------------------------------------------------------------------------- report
def _report(wd: Path) -> tuple[list[str], str]:
    import zipfile

    out = wd / "report.zip"
    smk(wd, "--report", str(out))
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        html = z.read(next(n for n in names if n.endswith("report.html"))).decode()
    return names, html


def test_snakemake_report_has_plots_with_captions(run_copy):
    names, html = _report(run_copy)
    for plot in ("scatter", "pit", "nz"):
        assert any(n.endswith(f"/{plot}.png") for n in names), names
    for rst in sorted((REPO / "workflow" / "report").glob("*.rst")):
        first = rst.read_text().split("\n")[0].strip()[:50]
        assert first and first in html, f"caption {rst.name} ({first!r}) not in the report"


def test_snakemake_report_has_metrics_table(run_copy):
    names, html = _report(run_copy)
    assert any(n.endswith("/metrics.csv") for n in names), names
