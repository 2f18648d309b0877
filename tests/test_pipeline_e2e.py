"""One real end-to-end `snakemake` run on a small subset (config/test.yaml)."""
import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers.runs import SNAKEMAKE, small_run, smk

from pzpipe import algorithms

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
ALGOS = algorithms.default_names()      # the default run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """The session's finished small run (helpers.runs.small_run: config/test.yaml, the
    default target), shared with the audit, collection and determinism tests."""
    return small_run(tmp_path_factory)


def test_dry_run_plans_the_dag(tmp_path):
    """Files with coordinates: the DAG up to the HATS import (a checkpoint), which then
    adds the per-batch jobs."""
    r = smk(tmp_path, "-n")
    out = r.stdout + r.stderr
    for rule in ("import_objects", "train", "validate", "release"):   # the release job: the
        assert rule in out                        # collection (its inputs follow the import)
    assert "checkpoint jobs" in out


def test_dry_run_of_a_hats_input_plans_every_job(tmp_path):
    """A HATS input (the default demo catalog): the whole DAG from its metadata."""
    overlay = tmp_path / "hats.yaml"
    overlay.write_text(f"inputs: {{hats: {REPO / 'resources' / 'dc2_object_hats'}, files: []}}\n")
    cmd = [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
           "--profile", str(REPO / "profiles" / "local"), "-n", "--configfile", str(overlay)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    for rule in ("partition_batch", "train", "estimate_batch", "validate", "export_batch",
                 "export_dedup", "export", "margin_batch", "index_batch", "index_bucket",
                 "release"):
        assert rule in out
    assert "import_objects" not in out and "checkpoint" not in out


def test_release_is_complete_and_conserved(run_dir):
    rel = run_dir / "results" / "release"
    man = json.loads((rel / "manifest.json").read_text())
    cons = man["conservation"]
    assert cons["ok"] and cons["objects_in"] == 100
    assert cons["objects_in"] == cons["objects_out"] + sum(cons["cut_by_reason"].values())
    assert man["format"] == "hats"
    allfiles = [line.split(",") for line in (rel / "manifest_files.csv").read_text().splitlines()[1:]]
    assert len(allfiles) == man["files"]["count"]
    files = [f for f in allfiles if f[6] == "primary"]       # the photo-z catalog's
    assert len(files) == man["pixels"] >= 3
    assert {f[6] for f in allfiles} == {"primary", "margin", "index"}
    for path, rows, *_ in files:
        assert pq.ParquetFile(rel / path).metadata.num_rows == int(rows)
    assert sum(int(f[1]) for f in files) == cons["objects_out"]
    t = pq.read_table(rel / files[0][0])
    for a in ALGOS:
        for c in ("z_mode", "z_mean", "z_median", "z_err68_low", "z_err68_high", "z_err95_low",
                  "z_err95_high", "pdf", "flags"):
            assert f"{a}_{c}" in t.column_names
    assert "bpz_todds" in t.column_names and "bpz_t_best" in t.column_names
    assert {"objectId", "ra", "decl", "_healpix_29"} <= set(t.column_names)


def test_release_joins_the_imported_object_catalog(run_dir):
    """lsdb opens the release; joined to the Object catalog (inputs.files imported as HATS
    by the pipeline) on objectId it returns every released object exactly once."""
    import lsdb

    rel = lsdb.open_catalog(str(run_dir / "results" / "release"))
    obj = lsdb.open_catalog(str(run_dir / "results" / "objects_hats"))
    joined = obj.join(rel, left_on="objectId", right_on="objectId", suffixes=("", "_pz"),
                      suffix_method="overlapping_columns").compute()
    released = rel.compute()
    assert len(joined) == len(released) == 100 and joined["objectId"].is_unique
    np.testing.assert_array_equal(np.sort(joined["objectId"]), np.sort(released["objectId"]))


def test_pdfs_rebuild_as_qp_ensemble(run_dir):
    from pzpipe.release.read import to_ensemble

    rel = run_dir / "results" / "release"
    path = next((rel / "photoz" / "dataset").rglob("Npix=*.parquet"))
    t = pq.read_table(path, columns=["knn_pdf", "objectId"]).rename_columns(["pdf", "object_id"])
    ens = to_ensemble(t, None, zgrid=np.linspace(0, 3, 301))
    assert ens.npdf == pq.ParquetFile(path).metadata.num_rows


def test_validation_outputs(run_dir):
    v = run_dir / "results" / "validation"
    import pandas as pd

    m = pd.read_csv(v / "metrics.csv").set_index("algorithm")
    assert set(m.index) == set(ALGOS)
    assert (m["sigma_iqr"] < 0.1).all() and (m["outlier_frac_015"] < 0.2).all()
    for name in ("scatter", "pit", "nz"):
        png = (v / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    from pzpipe.stages.validate import output_paths

    for p in output_paths(str(run_dir / "results"), sorted(m.index)).values():
        for f in (p if isinstance(p, list) else [p]):
            assert Path(f).stat().st_size > 100, f
    req = json.loads((v / "requirements.json").read_text())
    assert set(req["algorithms"]) == set(m.index)
    b = pd.read_csv(v / "metrics_binned.csv")
    assert set(b["bin_var"]) == {"mag_i", "z_true", "z_phot"}


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
