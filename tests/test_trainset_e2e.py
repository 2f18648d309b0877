"""Training-set maker switched on: the pipeline trains on its train split and
validates on its test split, end to end through `snakemake`."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from pzpipe import algorithms

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_pipeline_with_trainset(tmp_path):
    from helpers.testdata import make_trainset_testdata

    data = make_trainset_testdata(tmp_path / "data", n_phot=3000)
    overlay = {
        "release": "trainset-e2e",
        "inputs": {"hats": None, "files": [str(p) for p in data["photometry"]], "photometry": "mag"},
        "columns": {"id": "id", "ra": "ra", "dec": "dec"},
        "partition": {"chunk_rows": 1000, "cuts": {"require_true": []}},
        "batch": {"chunks_per_batch": 2},
        # the two estimators the assertions read (LePhare's default library alone would
        # take ~19 CPU-minutes to build)
        "algorithms": {a: {"enabled": a in ("bpz", "knn")} for a in algorithms.REGISTRY},
        "trainset": {**data["config"], "enabled": True},
    }
    cfgfile = tmp_path / "trainset.yaml"
    cfgfile.write_text(yaml.safe_dump(overlay))
    wd = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                        "--directory", str(wd), "--profile", str(REPO / "profiles" / "local"),
                        "--cores", "2", "--configfile", str(cfgfile)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-5000:]
    res = wd / "results"
    n_train = pq.ParquetFile(res / "trainset" / "train.parquet").metadata.num_rows
    n_test = pq.ParquetFile(res / "trainset" / "test.parquet").metadata.num_rows
    assert n_train > 0 and n_test > 0
    for algo in ("bpz", "knn"):
        side = json.loads((res / "models" / algo / "model.json").read_text())
        assert side["training_file"].endswith("results/trainset/train.parquet")
        assert side["training_rows"] == n_train
        val = pq.ParquetFile(res / "validation" / "estimates" / f"{algo}.parquet").metadata.num_rows
        assert val == n_test
    man = json.loads((res / "release" / "manifest.json").read_text())
    n_phot = sum(pq.ParquetFile(p).metadata.num_rows for p in data["photometry"])
    assert man["conservation"]["objects_in"] == n_phot
    assert (res / "trainset" / "split.png").exists()
