"""An estimator owns its footprint: a toy estimator declared in one module outside the
package (tests/helpers/toy_estimator.py) runs through partition -> train -> estimate ->
validate -> export with nothing else changed: it is listed in the config's
``algorithm_modules``, its block and its own setting are validated from its declaration,
its jobs are sized from the throughput file's ``unmeasured`` entry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from helpers.runs import REPO, smk

from pzpipe import PipelineError, algorithms
from pzpipe.run.config import load_config

HELPERS = REPO / "tests" / "helpers"


@pytest.fixture
def registry_restored():
    before = dict(algorithms.REGISTRY)
    yield
    algorithms.REGISTRY.clear()
    algorithms.REGISTRY.update(before)


def overlay(path: Path, **extra) -> Path:
    off = {n: {"enabled": False} for n in algorithms.REGISTRY}
    off["trainz"] = {"enabled": True, **extra}
    path.write_text(yaml.safe_dump({"algorithm_modules": ["toy_estimator"], "algorithms": off}))
    return path


def test_toy_block_and_setting_validated_from_its_declaration(tmp_path, monkeypatch,
                                                             registry_restored):
    monkeypatch.syspath_prepend(str(HELPERS))
    base = REPO / "config" / "config.yaml"
    cfg = load_config(base, yaml.safe_load(overlay(tmp_path / "o.yaml").read_text()))
    assert cfg["algorithms"]["trainz"] == {"enabled": True, "inform": {}, "estimate": {},
                                           "fast": True, "label": "toy"}
    with pytest.raises(PipelineError, match=r"algorithms\.trainz\.label"):
        load_config(base, yaml.safe_load(overlay(tmp_path / "bad.yaml", label=3).read_text()))


@pytest.mark.slow
def test_toy_estimator_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(HELPERS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    wd = tmp_path / "run"
    wd.mkdir()
    smk(wd, "--scheduler", "greedy", overlays=[overlay(tmp_path / "toy.yaml")],
        keep_output=True)
    rel = wd / "results" / "release"
    files = sorted((rel / "photoz" / "dataset").rglob("Npix=*.parquet"))
    assert files
    rows = 0
    for f in files:
        t = pq.read_table(f)
        assert {"trainz_z_median", "trainz_z_mode", "trainz_pdf"} <= set(t.column_names)
        assert not any(c.startswith(("bpz_", "knn_")) for c in t.column_names)
        rows += t.num_rows
    cons = json.loads((rel / "conservation.json").read_text())
    assert cons["ok"] and rows == cons["objects_out"] == cons["objects_in"]
    assert (wd / "results" / "models" / "trainz" / "model.pkl").exists()
    metrics = (wd / "results" / "validation" / "metrics.csv").read_text()
    assert "trainz" in metrics
    assert "no throughput figure for estimator 'trainz'" in (wd / "snakemake.stderr").read_text()
