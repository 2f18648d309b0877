"""One real end-to-end `snakemake` run on a small subset (config/test.yaml)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
pytestmark = pytest.mark.slow
ALGOS = ("bpz", "fzboost", "knn", "tpz", "dnf", "gpz", "cmnn")      # the default run


def smk(workdir, *args, check=True):
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--profile", str(REPO / "profiles" / "local"), "--cores", "2",
           "--configfile", str(REPO / "config" / "test.yaml"), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake failed ({r.returncode}):\n{r.stderr[-6000:]}")
    return r


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("e2e")
    smk(wd)
    return wd


def test_dry_run_plans_the_dag(tmp_path):
    r = smk(tmp_path, "-n")
    out = r.stdout + r.stderr
    for rule in ("partition_batch", "train", "estimate_batch", "validate", "export"):
        assert rule in out


def test_release_is_complete_and_conserved(run_dir):
    rel = run_dir / "results" / "release"
    man = json.loads((rel / "manifest.json").read_text())
    cons = man["conservation"]
    assert cons["ok"] and cons["objects_in"] == 100
    assert cons["objects_in"] == cons["objects_out"] + sum(cons["cut_by_reason"].values())
    assert set(man["rows_by_algorithm"]) == set(ALGOS)
    for f in man["files"]:
        p = rel / f["path"]
        assert p.exists() and pq.ParquetFile(p).metadata.num_rows == f["rows"]
    # 100 objects in chunks of 30 -> 4 chunks, 2 per batch -> 2 files per algorithm
    assert len(man["files"]) == 2 * len(ALGOS)
    t = pq.read_table(rel / "fzboost" / "b000000.parquet")
    assert pq.ParquetFile(rel / "fzboost" / "b000000.parquet").metadata.num_row_groups == 2
    for c in ("object_id", "z_mode", "z_mean", "z_median", "z_lo68", "z_hi68", "pdf", "flags"):
        assert c in t.column_names
    bpz = pq.read_table(rel / "bpz" / "b000000.parquet")
    assert "todds" in bpz.column_names and "t_best" in bpz.column_names
    ids = np.concatenate([pq.read_table(rel / "knn" / f"b00000{i}.parquet").column("object_id").to_numpy()
                          for i in range(2)])
    assert len(np.unique(ids)) == len(ids) == cons["objects_out"]


def test_pdfs_rebuild_as_qp_ensemble(run_dir):
    from pzpipe import pdfstore

    ens = pdfstore.to_ensemble(str(run_dir / "results" / "release" / "knn" / "b000000.parquet"))
    assert ens.npdf == pq.ParquetFile(run_dir / "results" / "release" / "knn" / "b000000.parquet").metadata.num_rows


def test_validation_outputs(run_dir):
    v = run_dir / "results" / "validation"
    import pandas as pd

    m = pd.read_csv(v / "metrics.csv").set_index("algorithm")
    assert set(m.index) == set(ALGOS)
    assert (m["sigma_iqr"] < 0.1).all() and (m["outlier_frac"] < 0.2).all()
    for name in ("scatter", "pit", "nz"):
        png = (v / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_models_have_sidecars(run_dir):
    for a in ALGOS:
        side = json.loads((run_dir / "results" / "models" / a / "model.json").read_text())
        assert side["algorithm"] == a and side["model_sha256"] and side["packages"]["pz-rail-base"]


def test_rerun_does_nothing(run_dir):
    r = smk(run_dir, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_no_temporary_files_left(run_dir):
    leftovers = [p for p in (run_dir / "results").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
