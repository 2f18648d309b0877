"""Determinism: two uninterrupted runs of the small pipeline (config/test.yaml, from the
HATS import on) in two directories - the second through the one-node Slurm when one
answers (as in CI: the jobs then run on the Slurm node, one sbatch each or in arrays),
else locally (helpers.runs.second_run) - give a byte-identical release - every file of the
collection: the photo-z catalog's pixel files and metadata, its margin and id index,
the estimators' configurations and models, manifest.json, manifest_files.csv, conservation.json and
README.md - TPZ included, the same models byte for byte (their sha256 is in the manifest,
the properties and every estimate file's metadata), and the same partition, estimate and
per-batch export files.

A difference is reported file by file: which columns, which parquet key-value metadata
fields, which JSON fields or which text lines differ (docs/reliability.md).
"""
from __future__ import annotations

import pytest

from helpers.runs import second_run, small_run
from helpers.trees import compare_trees, files, format_diffs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The session's small run and its second run (helpers.runs.second_run: through the
    one-node Slurm when there is one, as in CI, else a second local run)."""
    a = small_run(tmp_path_factory)
    b, _ = second_run(tmp_path_factory)
    return a, b


def test_models_are_byte_identical(two_runs):
    a, b = two_runs
    diffs = compare_trees(a / "results" / "models", b / "results" / "models")
    diffs = {k: v for k, v in diffs.items() if k.endswith(".pkl")}  # sidecars hold host/time
    assert len(files(a / "results" / "models")) >= 10                # 5 models + sidecars
    assert not diffs, ("models differ between two runs with the same config (TPZ: unseeded "
                       "np.random.default_rng in RAIL's mlz_utils; FlexZBoost: loky-pickled "
                       f"estimators; see PATCH P8 in docs/reliability.md): {diffs}")


def test_release_is_byte_identical(two_runs):
    a, b = two_runs
    diffs = compare_trees(a / "results" / "release", b / "results" / "release")
    assert not diffs, "release files differ:\n" + format_diffs(diffs)
    names = set(files(a / "results" / "release"))
    meta = {"manifest.json", "manifest_files.csv", "conservation.json", "README.md",
            "collection.properties", "pdf_format.md", "decode_pdf.py",
            *(f"{c}/{m}" for c in ("photoz", "photoz_margin")
              for m in ("properties", "hats.properties", "partition_info.csv",
                        "dataset/_common_metadata")),
            "photoz_objectId_index/properties", "photoz_objectId_index/hats.properties",
            "photoz_objectId_index/dataset/_common_metadata",
            "photoz_objectId_index/dataset/_metadata"}
    assert meta <= names, meta - names
    pixels = {n for n in names if n.startswith("photoz/dataset/Norder=")}
    margin = {n for n in names if n.startswith("photoz_margin/dataset/Norder=")}
    index = {n for n in names if n.startswith("photoz_objectId_index/dataset/index/part.")}
    bundle = {n for n in names if n.startswith(("estimators/", "validation/"))}
    assert len(pixels) == 3 and margin and len(index) == 1 and bundle
    assert names == meta | pixels | margin | index | bundle, names


def test_intermediate_files_identical(two_runs):
    """Partition, estimate and per-batch export files, the dedup reports and the
    validation metrics; the imported catalog's pixel files (its properties hold
    hats-import's creation date, which the release does not copy)."""
    a, b = two_runs
    for sub in ("partition", "estimates", "export/batches", "export/dedup",
                "objects_hats/dataset", "validation/metrics.csv"):
        pa_, pb = a / "results" / sub, b / "results" / sub
        if pa_.is_file():
            assert pa_.read_bytes() == pb.read_bytes(), sub
        else:
            assert files(pa_), sub
            diffs = compare_trees(pa_, pb)
            assert not diffs, f"{sub} differs:\n" + format_diffs(diffs)
