"""Determinism: two uninterrupted runs of the small pipeline (config/test.yaml) in two
directories give a byte-identical export (every release parquet file and manifest.json),
TPZ included, and the same models byte for byte (their sha256 is in the manifest and in
every estimate file's metadata).

A difference is reported file by file: which columns, which parquet key-value metadata
fields and which manifest.json fields differ (docs/reliability.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from test_audit import full_run, small_run

pytestmark = pytest.mark.slow


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".snakemake_timestamp"}


def _json_diff(a, b, path="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _json_diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _json_diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path or '.'}: {str(a)[:60]!r} != {str(b)[:60]!r}"]


def explain(a: Path, b: Path) -> list[str]:
    """Why two files differ: parquet columns / key-value metadata, or JSON fields."""
    if a.suffix == ".json":
        return _json_diff(json.loads(a.read_text()), json.loads(b.read_text()))
    if a.suffix == ".parquet":
        fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
        out = []
        ta, tb = fa.read(), fb.read()
        if ta.schema != tb.schema:
            out.append("schema differs")
        else:
            out += [f"column {c}" for c in ta.column_names if not ta.column(c).equals(tb.column(c))]
        ka, kb = fa.metadata.metadata or {}, fb.metadata.metadata or {}
        for k in sorted(set(ka) | set(kb)):
            if ka.get(k) != kb.get(k):
                try:
                    out += [f"metadata {k.decode()}{d}" for d in
                            _json_diff(json.loads(ka.get(k, b"{}")), json.loads(kb.get(k, b"{}")))]
                except ValueError:
                    out.append(f"metadata {k.decode()}")
        return out or ["same content, different bytes (encoding/compression)"]
    return ["binary content differs"]


def compare_trees(a: Path, b: Path) -> dict[str, list[str]]:
    fa, fb = _files(a), _files(b)
    diffs = {}
    for name in sorted(set(fa) | set(fb)):
        if name not in fa or name not in fb:
            diffs[name] = ["only in " + ("first" if name in fa else "second") + " run"]
        elif fa[name] != fb[name]:
            diffs[name] = explain(a / name, b / name)
    return diffs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    a = small_run(tmp_path_factory)
    b = tmp_path_factory.mktemp("determinism-b")
    full_run(b)
    return a, b


def test_models_are_byte_identical(two_runs):
    a, b = two_runs
    diffs = compare_trees(a / "results" / "models", b / "results" / "models")
    diffs = {k: v for k, v in diffs.items() if k.endswith(".pkl")}  # sidecars hold host/time
    assert not diffs, ("models differ between two runs with the same config (TPZ: unseeded "
                       "np.random.default_rng in RAIL's mlz_utils; FlexZBoost: loky-pickled "
                       f"estimators; see PATCH P8 in docs/reliability.md): {diffs}")


def test_release_is_byte_identical(two_runs):
    a, b = two_runs
    diffs = compare_trees(a / "results" / "release", b / "results" / "release")
    assert not diffs, "release files differ:\n" + "\n".join(
        f"  {k}: {'; '.join(v[:6])}" for k, v in diffs.items())
    names = set(_files(a / "results" / "release"))
    assert "manifest.json" in names and "tpz/b000000.parquet" in names


def test_partitions_and_validation_metrics_identical(two_runs):
    a, b = two_runs
    for sub in ("partition", "validation/metrics.csv"):
        pa_, pb = a / "results" / sub, b / "results" / sub
        if pa_.is_file():
            assert pa_.read_bytes() == pb.read_bytes(), sub
        else:
            assert not compare_trees(pa_, pb), sub
