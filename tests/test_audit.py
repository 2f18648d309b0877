"""The `audit` target on the release (one HATS catalog, tests/helpers/runs.py's shared small
run of config/test.yaml): it passes on the run as made, and fails with a clear reason when
a release file is altered, a row is removed, a model is replaced, an orphan / stray
parquet / `.tmp-` file appears, the catalog metadata is edited or an id is duplicated
across batches (each on a copy of the run). Two releases made by calling the stages
directly (real kNN) cover the layouts the small run does not have: inputs without
coordinates with a fully cut chunk, and a HATS catalog with cuts and several pixels per
batch; every chunk of them recomputes bit-identically.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.runs import PATHS, REPO, copy_run, small_run, smk

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- helpers
def rewrite_parquet(path: Path, fn) -> None:
    """Rewrite a parquet file through ``fn(row group index, table) -> table``, keeping its
    row groups, schema (field metadata included) and key-value metadata, and its mtime
    (as `cp -p` would): a careful forgery that only a data check can see."""
    pf = pq.ParquetFile(path)
    st = path.stat()
    schema = pf.schema_arrow
    kv = {k: v for k, v in (pf.metadata.metadata or {}).items()
          if k != b"ARROW:schema" and k not in (schema.metadata or {})}
    groups = [pf.read_row_group(i) for i in range(pf.metadata.num_row_groups)]
    new = [fn(i, g) for i, g in enumerate(groups)]
    tmp = path.with_name(path.name + ".edit")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        for g in new:
            w.write_table(g.cast(schema), row_group_size=max(g.num_rows, 1))
        if kv:
            w.add_key_value_metadata(kv)
    os.replace(tmp, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert pq.read_schema(path).equals(schema, check_metadata=True)
    assert (pq.ParquetFile(path).metadata.metadata or {}).get(b"pzpipe") == \
        (pf.metadata.metadata or {}).get(b"pzpipe")


def set_value(t: pa.Table, name: str, row: int, fn) -> pa.Table:
    v = t.column(name).to_numpy().copy()
    v[row] = fn(v[row])
    return t.set_column(t.schema.get_field_index(name), t.schema.field(name), pa.array(v))


def release_files(wd: Path, catalog: str | None = "primary") -> list[dict]:
    """Rows of the release's manifest_files.csv (paths relative to the release, the
    collection's root) of one catalog of the collection (None: all)."""
    with open(wd / "results" / "release" / "manifest_files.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if catalog is None or r["catalog"] == catalog]


def in_catalog(path: str) -> str:
    """A release path relative to the photo-z catalog (how the catalog checks name it)."""
    return path.split("/", 1)[1] if path.startswith("photoz/") else path


def two_chunk_file(wd: Path) -> str:
    """A release file holding two chunks (two row groups)."""
    return next(f["path"] for f in release_files(wd) if f["row_groups"] == "2")


def batches_of(wd: Path) -> list[str]:
    from pzpipe.run.layout import batch_id

    man = json.loads((wd / "results" / "release" / "manifest.json").read_text())
    return [batch_id(i) for i in range(man["inputs"]["batches"])]


def audit_direct(wd: Path, paths: dict = PATHS, **kw) -> dict:
    """pzpipe.stages.audit.run on a run directory with the workflow's paths (cwd = the run, as in
    the rule: BPZ's data path is relative to it)."""
    from pzpipe.stages import audit

    cwd = os.getcwd()
    os.chdir(wd)
    try:
        return audit.run(audit.Inputs.from_paths(paths), batches_of(wd),
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
AUDIT = ("results/audit/report.md", "--rerun-triggers", "mtime")


def test_audit_target_passes_on_the_test_run(run_copy):
    r = smk(run_copy, *AUDIT)
    out = r.stdout + r.stderr
    assert "localrule audit:" in out
    assert not any(f"rule {x}:" in out for x in ("import_objects", "partition_batch",
                                                 "estimate_batch", "export_batch", "export"))
    rep = read_report(run_copy)
    assert rep["status"] == "PASS", (run_copy / "results" / "audit" / "report.md").read_text()
    st = statuses(rep)
    for check in ("manifest", "catalog", "conservation", "models", "recompute", "config"):
        assert st[check] == "PASS", rep
    assert st["packages"] in ("PASS", "WARN")
    man = json.loads((run_copy / "results" / "release" / "manifest.json").read_text())
    cons = find_check(rep, "conservation")["data"]
    assert cons["objects_in"] == man["conservation"]["objects_in"] == 100
    assert cons["batches"] == man["inputs"]["batches"] == 3 and cons["id_buckets"] >= 1
    assert find_check(rep, "manifest")["data"]["files"] == man["files"]["count"] \
        == len(release_files(run_copy, None))
    assert len(release_files(run_copy)) == man["pixels"] == 3
    rec = find_check(rep, "recompute")
    assert sorted(rec["data"]["chunks"]) == sorted(man["models"])
    assert all(len(v) == 2 for v in rec["data"]["chunks"].values())   # audit.sample_chunks
    assert all("identical" in d for d in rec["details"])
    assert len(rec["details"]) == 2 * len(man["models"]) >= 10      # every enabled estimator
    md = (run_copy / "results" / "audit" / "report.md").read_text()
    assert "| recompute | **PASS** |" in md and "bit for bit" in md
    # the scratch directory of the id buckets is gone
    assert sorted(p.name for p in (run_copy / "results" / "audit").iterdir()) == \
        ["report.json", "report.md"]
    assert r.returncode == 0


def test_every_chunk_recomputes_bit_identically(run_copy):
    """All chunks (the test run has 5) of all estimators, not only the audit's sample."""
    rep = audit_direct(run_copy, sample_chunks=100)
    assert rep["status"] == "PASS", rep
    rec = find_check(rep, "recompute")
    n_algos = len(rec["data"]["chunks"])
    assert all(sorted(v) == [0, 1, 2, 3, 4] for v in rec["data"]["chunks"].values()), rec["data"]
    assert len(rec["details"]) == 5 * n_algos and all(d.endswith(": identical")
                                                      for d in rec["details"])


def test_altered_release_file_fails(run_copy):
    from pzpipe import PipelineError

    path = two_chunk_file(run_copy)
    f = run_copy / "results" / "release" / path
    rewrite_parquet(f, lambda i, t: set_value(t, "knn_z_mode", 0, lambda z: z + np.float32(0.01)))
    esc = path.replace(".", r"\.")
    esc_cat = in_catalog(path).replace(".", r"\.")
    with pytest.raises(PipelineError, match=rf"audit .* FAILED - manifest: {esc}: altered after "
                                            rf"the export .*recompute: knn chunk \d \({esc_cat} row "
                                            rf"group \d.* column 'z_mode' differs"):
        audit_direct(run_copy, sample_chunks=100)
    rep = read_report(run_copy)
    st = statuses(rep)
    assert st["manifest"] == "FAIL"
    for check in ("catalog", "conservation", "models"):     # the data changed, nothing else
        assert st[check] == "PASS", find_check(rep, check)
    rec = find_check(rep, "recompute")
    bad = [d for d in rec["failures"]]
    assert len(bad) == 2, bad                       # both chunks of the file, knn only
    assert all(d.startswith("knn chunk") and "column 'z_mode' differs (1 rows, max |diff| 0.01)"
               in d for d in bad), bad
    assert sum("identical" in d for d in rec["details"]) == 5 * len(rec["data"]["chunks"]) - 2


def test_removed_row_fails(run_copy):
    from pzpipe import PipelineError

    path = two_chunk_file(run_copy)
    f = run_copy / "results" / "release" / path
    rewrite_parquet(f, lambda i, t: t.slice(1) if i == 1 else t)
    with pytest.raises(PipelineError, match=rf"FAILED - manifest: {path.replace('.', '[.]')}: "
                                            rf"altered .*conservation: "):
        audit_direct(run_copy, sample_chunks=100)
    rep = read_report(run_copy)
    cons = find_check(rep, "conservation")
    assert cons["status"] == "FAIL"
    assert any(d.startswith(f"{in_catalog(path)} row group 1 (batch b00000") and "rows, partition has" in d
               for d in cons["failures"]), cons
    assert any(d == "99 rows in the release files, 100 kept by the partition"
               for d in cons["failures"]), cons
    rec = find_check(rep, "recompute")
    assert sum("rows stored" in d and "recomputed" in d for d in rec["failures"]) == \
        len(rec["data"]["chunks"])                                    # each estimator


def test_replaced_model_fails(run_copy):
    """A retrained model (other seed/sample) put in place of the recorded one."""
    from pzpipe import PipelineError
    from pzpipe.stages import train
    from pzpipe.run.config import validate_config

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
    shutil.rmtree(other)
    with pytest.raises(PipelineError, match=r"FAILED - models: knn: model 'results/models/knn/"
                                            r"model\.pkl' sha256 .* differs from the manifest"):
        audit_direct(run_copy, sample_chunks=100)
    rep = read_report(run_copy)
    st = statuses(rep)
    assert st["models"] == "FAIL" and st["manifest"] == "PASS" and st["conservation"] == "PASS"
    models = find_check(rep, "models")
    assert any("sidecar" in d for d in models["failures"])
    rec = find_check(rep, "recompute")
    assert rec["status"] == "FAIL"
    assert {d.split(" (")[0] for d in rec["failures"]} == {f"knn chunk {i}" for i in range(5)}
    assert all("differs" in d for d in rec["failures"])


def test_orphan_stray_and_temporary_files_fail(run_copy):
    rel = run_copy / "results" / "release"
    path = Path(release_files(run_copy)[0]["path"])
    (rel / path.parent / f".{path.name}.tmp-1234").write_bytes(b"partial")
    stray = path.parent / "Npix=1.parquet"                # a parquet file nobody listed
    shutil.copy(rel / path, rel / stray)
    (rel / ".README.md.tmp-77").mkdir()
    (rel / ".README.md.tmp-77" / "x").write_text("x")
    rep = audit_direct(run_copy, raise_on_fail=False, sample_chunks=0)
    man = find_check(rep, "manifest")
    assert man["status"] == "FAIL"
    assert any(f".{path.name}.tmp-1234" in d and "temporary file of an interrupted write" in d
               for d in man["failures"]), man
    assert any(d.startswith(f"{stray}: in the release directory but not in the manifest")
               for d in man["failures"])
    assert any(d.startswith(".README.md.tmp-77: ") for d in man["failures"])
    assert len(man["failures"]) == 3, man          # the release metadata files are not orphans
    assert statuses(rep)["conservation"] == "PASS"


def test_edited_catalog_metadata_fails(run_copy):
    """partition_info.csv and properties are not in manifest_files.csv: the catalog check
    compares them with the files and the manifest (a dropped pixel would make readers miss
    its objects silently)."""
    rel = run_copy / "results" / "release" / "photoz"
    lines = (rel / "partition_info.csv").read_text().splitlines()
    (rel / "partition_info.csv").write_text("\n".join(lines[:-1]) + "\n")
    props = (rel / "properties").read_text().replace("hats_nrows=100", "hats_nrows=99")
    (rel / "properties").write_text(props)
    rep = audit_direct(run_copy, raise_on_fail=False, sample_chunks=0)
    cat = find_check(rep, "catalog")
    assert cat["status"] == "FAIL"
    assert any(d.startswith("partition_info.csv lists 2 pixels, the release files are 3 pixels")
               for d in cat["failures"]), cat
    assert any("properties: hats_nrows = '99', expected '100'" in d for d in cat["failures"])
    assert any("hats.properties differs from properties" in d for d in cat["failures"])
    assert statuses(rep)["manifest"] == "PASS"


def test_duplicate_id_across_batches_fails(run_copy):
    """An object id of batch b000000 given to an object of b000001 in the partition AND the
    release (so that every chunk still matches its partition): the bucketed check over the
    whole release finds it."""
    from pzpipe.stages.partition import ID_COL

    res = run_copy / "results"
    taken = int(pq.read_table(res / "partition" / "b000000.parquet").column(ID_COL)[0].as_py())
    rewrite_parquet(res / "partition" / "b000001.parquet",
                    lambda i, t: set_value(t, ID_COL, 0, lambda _: taken) if i == 0 else t)
    path = next(f["path"] for f in release_files(run_copy) if f["batch"] == "b000001")
    rewrite_parquet(res / "release" / path,
                    lambda i, t: set_value(t, "objectId", 0, lambda _: taken) if i == 0 else t)
    rep = audit_direct(run_copy, raise_on_fail=False, sample_chunks=0)
    cons = find_check(rep, "conservation")
    assert cons["status"] == "FAIL"
    assert any(f"1 object id(s) appear in more than one batch of the release (e.g. [{taken}])"
               in d for d in cons["failures"]), cons
    assert any("duplicate_ids = 1 now, the manifest records 0" in d for d in cons["failures"])
    assert not any("differ from the partition" in d for d in cons["failures"])


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
    path = release_files(run_copy)[-1]["path"]
    rewrite_parquet(run_copy / "results" / "release" / path,   # same mtime: no reason to rerun
                    lambda i, t: set_value(t, "fzboost_z_mean", -1, lambda z: z + np.float32(0.5)))
    r = smk(run_copy, *AUDIT, check=False)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pzpipe error in audit")]
    assert len(lines) == 1 and f"manifest: {path}: altered after the export" in lines[0], \
        r.stderr[-4000:]
    kept = (run_copy / "logs" / "audit.report.md").read_text()
    assert "| manifest | **FAIL** |" in kept
    assert not (run_copy / "results" / "audit" / "report.md").exists()


# ----------------------------------------------------------------------------- layouts
def _config(**over) -> dict:
    """config/config.yaml with ``over``, kNN only (trained on 1,500 objects)."""
    from pzpipe.run.config import deep_update, load_config, validate_config

    base = load_config(REPO / "config" / "config.yaml")
    knn = {"algorithms": {a: {"enabled": a == "knn"} for a in base["algorithms"]},
           "training": {"max_rows": 1500}, "estimate": {"workers": 1}}
    return validate_config(deep_update(deep_update(base, knn), over))


def _flux_files_without_coordinates(tmp: Path):
    """Two parquet files (45 + 40 rows) without coordinates; rows 30-44 of the first file
    are not primary: chunk 2 (15 rows) is cut whole, so batch b000001's file has one row
    group, for chunk 3."""
    from helpers.inputs import make_flux_table, write_parquet

    a = make_flux_table(45)
    a["detect_isPrimary"][30:] = False
    b = make_flux_table(40, seed=1, start_id=1001)
    for t in (a, b):
        del t["ra"], t["dec"]
    files = [write_parquet(tmp / "a.parquet", a), write_parquet(tmp / "b.parquet", b)]
    return _config(release="audit-files", inputs={"hats": None, "files": files},
                   columns={"ra": None, "dec": None},
                   partition={"chunk_rows": 15}, batch={"chunks_per_batch": 2})


def _synthetic_hats(tmp: Path):
    """A synthetic HATS catalog: 7 pixels of 100 rows, 5% not primary (cut), 2 chunks per
    pixel, 2 pixels per batch."""
    from pzpipe.planning import synth

    synth.write_catalog(tmp / "objects", 700, seed=3, rows_per_pixel=100, non_primary=0.05)
    return _config(release="audit-hats", inputs={"hats": str(tmp / "objects")},
                   partition={"chunk_rows": 60}, batch={"chunks_per_batch": 4})


@pytest.mark.parametrize("kind", ["files", "hats"])
def test_audit_on_other_layouts(kind, tmp_path):
    """Releases made with the stages' own functions (tests/helpers/releases.py, real kNN):
    every check passes and every chunk recomputes bit-identically from the row group that
    the partition's chunk maps to; then one row of the last release file is altered and the
    recompute check names that chunk."""
    from helpers.releases import build_release, manifest
    from pzpipe.stages import audit

    cfg = _flux_files_without_coordinates(tmp_path) if kind == "files" else _synthetic_hats(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        built = build_release(tmp_path, cfg, ["knn"])
        paths, lay = built["paths"], built["layout"]
        man = manifest(paths["release"])
        md, js = str(tmp_path / "audit" / "r.md"), str(tmp_path / "audit" / "r.json")
        rep = audit.run(audit.Inputs.from_paths(paths), lay.batch_ids(), md, js,
                        sample_chunks=1000, raise_on_fail=False)
        assert rep["status"] == "PASS", Path(md).read_text()
        rec = find_check(rep, "recompute")
        cons = man["conservation"]
        if kind == "files":
            assert man["format"] == "parquet" and lay.n_batches == 3
            assert cons["cut_by_reason"]["require_true"] == 15 and cons["objects_out"] == 70
            assert sorted(rec["data"]["chunks"]["knn"]) == [0, 1, 3, 4, 5]    # chunk 2: all cut
            assert any(d.startswith("knn chunk 3 (dataset/part-b000001.parquet row group 0,")
                       for d in rec["details"]), rec["details"]
        else:
            assert man["format"] == "hats" and lay.n_batches == 4 and man["pixels"] == 7
            assert cons["cut_by_reason"]["require_true"] > 0
            assert len(rec["data"]["chunks"]["knn"]) == lay.n_chunks == 14
            assert any("row group 1," in d for d in rec["details"])
        assert all(d.endswith(": identical") for d in rec["details"])
        from pzpipe.release import verify                  # the receiver's check agrees

        assert verify.verify(paths["release"]) == []
        assert (Path(paths["release"]) / "collection.properties").is_file() == (kind == "hats")
        rows = list(audit.manifest_files(Path(paths["release"])))
        last = Path(paths["release"]) / rows[-1]["path"]
        n_rg = pq.ParquetFile(last).metadata.num_row_groups
        rewrite_parquet(last, lambda i, t: set_value(t, "knn_z_median", 0, lambda z: -z)
                        if i == n_rg - 1 else t)
        rep = audit.run(audit.Inputs.from_paths(paths), lay.batch_ids(), md, js,
                        sample_chunks=1000, raise_on_fail=False)
        rec = find_check(rep, "recompute")
        assert [d.split(" (")[0] for d in rec["failures"]] == [f"knn chunk {lay.n_chunks - 1}"]
        assert f"({in_catalog(rows[-1]['path'])} row group {n_rg - 1}," in rec["failures"][0]
        assert "column 'z_median' differs (1 rows" in rec["failures"][0]
    finally:
        os.chdir(cwd)


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
