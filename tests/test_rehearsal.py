"""The release rehearsal in small (issue #13): the synthetic catalog generator and the
plan-vs-measured comparison of benchmarks/rehearsal.py, on a 20,000-object catalog.

What this proves: the generator writes a HATS catalog that lsdb opens, with Rubin's
column names, byte-identical from the same seed and different from another seed; the
rehearsal runs the whole pipeline on it, and the forecast (pzpipe.planning.forecast) has exactly
the jobs Snakemake ran, rule by rule; every input object is accounted for. It does NOT
check the forecast's seconds against the measured ones (timings are for the benchmark,
benchmarks/results/rehearsal.md, not for tests).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers.runs import REPO
from pzpipe.planning import synth

BANDS = "ugrizy"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fluxes(root: Path) -> np.ndarray:
    files = sorted((root / "dataset").rglob("Npix=*.parquet"))
    return np.concatenate([pq.read_table(f, columns=["r_gaap1p0Flux"]).column(0).to_numpy()
                           for f in files])


def test_generator_is_a_deterministic_hats_catalog(tmp_path):
    lsdb = pytest.importorskip("lsdb")
    # the same name in three directories (the name is written into the properties)
    a, b, c = (tmp_path / d / "objects" for d in "abc")
    synth.write_catalog(a, 5000, seed=1, rows_per_pixel=1500)
    synth.write_catalog(b, 5000, seed=1, rows_per_pixel=1500)
    synth.write_catalog(c, 5000, seed=2, rows_per_pixel=1500)
    assert _digest(a) == _digest(b)
    assert not np.array_equal(_fluxes(a), _fluxes(c))
    cat = lsdb.open_catalog(a)
    df = cat.compute()
    assert len(df) == 5000 and df["objectId"].is_unique
    for b in BANDS:
        assert f"{b}_gaap1p0Flux" in df.columns and f"{b}_gaap1p0FluxErr" in df.columns
    for col in ("coord_ra", "coord_dec", "detect_isPrimary"):
        assert col in df.columns
    assert len(cat.get_healpix_pixels()) > 1


def test_rehearsal_forecast_has_the_jobs_snakemake_ran(tmp_path):
    results = tmp_path / "rehearsal.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "rehearsal.py"), "run",
           "--objects", "2e4", "--label", "ci", "--algos", "knn,bpz",
           "--workdir", str(tmp_path / "runs"), "--results", str(results),
           "--rows-per-pixel", "4000", "--chunks-per-batch", "2"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    rec = json.loads(results.read_text())["ci"]
    assert rec["exit_code"] == 0 and rec["objects"] == 20000
    measured = {rule: s["jobs"] for rule, s in rec["stages"].items()}
    forecast = {rule: s["jobs"] for rule, s in rec["forecast"]["stages"].items()}
    assert measured == forecast
    assert measured["estimate_batch"] == 2 * measured["partition_batch"] > 2
    assert rec["forecast_s"] > 0 and rec["measured_s"] > 0
    cons = json.loads((tmp_path / "runs" / "ci" / "results" / "release" /
                       "conservation.json").read_text())
    assert cons["objects_out"] == rec["objects_out"]
    assert cons["objects_in"] == 20000
    assert cons["objects_in"] == cons["objects_out"] + sum(cons["cut_by_reason"].values())
    assert rec["release_digest"] and rec["max_job_peak_rss_mb"] > 0
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "rehearsal.py"), "report",
                        "--results", str(results)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    md = results.with_suffix(".md").read_text()
    assert "| ci | 20,000 | 2 |" in md and "estimate_batch" in md
