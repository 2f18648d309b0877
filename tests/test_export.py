"""The export on real partition files of a synthetic HATS catalog, with estimate files made
by hand (the estimators' outputs are not what is tested here): the release is a HATS
catalog that lsdb opens and joins to the input; conservation errors are caught per batch;
duplicate ids across batches are found by the bucketed check; the final job's memory does
not grow with the number of batches."""
from __future__ import annotations

import json
import shutil
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pzpipe import PipelineError, algorithms
from pzpipe.stages import export
from pzpipe.release import pdfstore
from pzpipe.planning import synth
from pzpipe.run.config import load_config, deep_update, validate_config
from pzpipe.stages.estimate import output_schema
from pzpipe.run.layout import Layout, make_layout
from pzpipe.stages.partition import ID_COL, run_batch as partition_batch

from helpers.runs import REPO

ALGOS = ["knn", "bpz"]


def _cfg(catalog, **over):
    base = load_config(REPO / "config" / "config.yaml")
    base = deep_update(base, {"inputs": {"hats": str(catalog)},
                              "algorithms": {a: {"enabled": a in ALGOS} for a in base["algorithms"]},
                              "partition": {"chunk_rows": 60}, "batch": {"chunks_per_batch": 3}})
    return validate_config(deep_update(base, over))


def fake_estimates(partition_file, algo, cfg, out, drop_row=False, swap_id=False):
    """An estimate file with the real schema: Gaussian PDFs around a made-up z."""
    from pzpipe.run.layout import catalog_columns  # noqa: F401  (schema as the pipeline writes it)

    z = np.linspace(cfg["zgrid"]["zmin"], cfg["zgrid"]["zmax"], cfg["zgrid"]["nz"])
    a = algorithms.get(algo)
    schema = output_schema(a, z)
    pf = pq.ParquetFile(partition_file)
    meta = json.loads(pf.metadata.metadata[b"pzpipe"])
    with pq.ParquetWriter(out, schema, **pdfstore.PARQUET_KWARGS) as w:
        for rg in range(pf.metadata.num_row_groups):
            ids = pf.read_row_group(rg, columns=[ID_COL]).column(ID_COL).to_numpy().copy()
            if drop_row and rg == 0:
                ids = ids[:-1]
            if swap_id and rg == 0:
                ids[0] = -5
            n = len(ids)
            mu = (ids % 97) / 50.0 + 0.1
            pdf = np.exp(-0.5 * ((z[None] - mu[:, None]) / 0.05) ** 2)
            cols = {ID_COL: ids}
            for c in schema.names:
                if c.startswith("z_") or c in a.extras.values():
                    cols[c] = np.full(n, 0.5, np.float32)
            cols["flags"] = np.zeros(n, np.int32)
            cols["pdf"] = pdfstore.encode(pdf, z)
            w.write_table(pa.table(cols, schema=schema), row_group_size=max(n, 1))
        w.add_key_value_metadata({"pzpipe": json.dumps({"algorithm": algo, "batch": meta["batch"]})})


def build(tmp, cfg, lay, *, break_batch=None, how=None):
    """Partition + fake estimates + export of every batch; returns the paths."""
    parts, dirs, ids = [], [], []
    k = export.n_buckets(lay.n_objects, cfg["export"]["dedup_ids_per_job"])
    for b in lay.batch_ids():
        p = tmp / "partition" / f"{b}.parquet"
        partition_batch(lay, b, cfg, str(p))
        ests = {}
        for a in ALGOS:
            e = tmp / "estimates" / a / f"{b}.parquet"
            e.parent.mkdir(parents=True, exist_ok=True)
            fake_estimates(p, a, cfg, e, drop_row=(b == break_batch and how == "drop"),
                           swap_id=(b == break_batch and how == "swap"))
            ests[a] = str(e)
        d, i = tmp / "export" / b, tmp / "ids" / f"{b}.parquet"
        export.run_batch(lay, b, ALGOS, cfg, str(p), ests, str(d), str(i), k)
        parts.append(p), dirs.append(str(d)), ids.append(str(i))
    return parts, dirs, ids, k


def sidecars(tmp):
    out = {}
    for a in ALGOS:
        s = tmp / "models" / a / "model.json"
        s.parent.mkdir(parents=True, exist_ok=True)
        s.write_text(json.dumps({"model_sha256": "0" * 64, "rail_estimator": a}))
        out[a] = str(s)
    return out


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    d = tmp_path_factory.mktemp("cat") / "objects"
    synth.write_catalog(d, 700, seed=3, rows_per_pixel=100, non_primary=0.05)
    return d


@pytest.fixture(scope="module")
def release(catalog, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = _cfg(catalog, partition={"chunk_rows": 60, "cuts": {"require_true": ["detect_isPrimary"]}})
    from pzpipe.run.layout import catalog_columns

    lay = make_layout(cfg)
    cfg = catalog_columns(cfg, lay)
    parts, dirs, ids, k = build(tmp, cfg, lay)
    reports = [str(tmp / "dedup" / f"{j}.json") for j in range(k)]
    for j in range(k):
        export.run_dedup(ids, j, reports[j])
    export.run_release(lay, ALGOS, cfg, dirs, reports, sidecars(tmp), str(tmp / "release"))
    return tmp / "release", lay, cfg


def test_layout_batches_whole_neighbouring_pixels(catalog):
    lay = make_layout(_cfg(catalog))
    assert lay.is_hats and lay.n_objects == 700 and len(lay.files) == 7
    # 100-row pixels in chunks of 60 -> 2 chunks each; batches of whole pixels, <= 3 chunks
    # unless one pixel alone has more
    assert lay.n_chunks == 14 and lay.n_batches == 7
    seen = []
    for b in lay.batch_ids():
        px = lay.batch_pixels(b)
        seen += px
        assert len({c.pixel for c in lay.batch_chunks(b)}) == len(px)
    assert len(seen) == len(set(seen)) == 7
    keys = [p << 2 * (29 - k) for k, p in seen]
    assert keys == sorted(keys)                       # depth-first order


def test_release_is_a_hats_catalog_lsdb_opens_and_joins(release, catalog):
    import lsdb

    rel_dir, lay, cfg = release
    rel = lsdb.open_catalog(str(rel_dir))
    obj = lsdb.open_catalog(str(catalog))
    assert rel.get_healpix_pixels() == obj.get_healpix_pixels()
    j = obj.join(rel, left_on="objectId", right_on="objectId", suffixes=("", "_pz"),
                 suffix_method="overlapping_columns").compute()
    o = obj.compute()
    primary = o[o.detect_isPrimary]
    # every released object exactly once; the released objects are the primary ones
    assert len(j) == len(primary) and j["objectId"].is_unique
    assert set(j["objectId"]) == set(primary["objectId"])
    r = rel.compute()
    for a in ALGOS:
        for c in ("z_mode", "z_mean", "z_median", "z_err68_low", "z_err68_high",
                  "z_err95_low", "z_err95_high", "flags", "pdf"):
            assert f"{a}_{c}" in r.columns
    assert "bpz_t_best" in r.columns and "bpz_todds" in r.columns
    np.testing.assert_allclose(j["coord_ra"], j["coord_ra_pz"])


def test_release_metadata_and_provenance(release):
    rel_dir, lay, cfg = release
    schema = pq.read_schema(rel_dir / "dataset" / "_common_metadata")
    meta = json.loads(schema.metadata[b"pzpipe"])
    assert meta["pdf_columns"]["knn_pdf"] == {"algorithm": "knn", "encoding": pdfstore.ENCODING,
                                              "zgrid": [0.0, 3.0, 301]}
    f = schema.field("knn_pdf")
    assert f.metadata[b"pdf_encoding"] == pdfstore.ENCODING.encode()
    assert json.loads(f.metadata[b"zgrid"]) == [0.0, 3.0, 301]
    assert schema.field("coord_ra").metadata[b"unit"] == b"deg"
    props = (rel_dir / "properties").read_text()
    for key in ("pzpipe_config_hash=", "pzpipe_code_version=", "pzpipe_model_sha256_knn=",
                "pzpipe_zgrid=0.0 3.0 301", f"pzpipe_pdf_encoding={pdfstore.ENCODING}",
                "dataproduct_type=object", "hats_col_ra=coord_ra"):
        assert key in props
    cons = json.loads((rel_dir / "conservation.json").read_text())
    assert cons["ok"] and cons["objects_in"] == 700
    assert cons["objects_in"] == cons["objects_out"] + sum(cons["cut_by_reason"].values())
    assert cons["cut_by_reason"]["require_true"] > 0
    # the photo-z catalog's record, which the release job (run_collection) turns into the
    # release's manifest.json and README.md
    rec = json.loads((rel_dir / export.CATALOG_JSON).read_text())
    man = rec["manifest"]
    rows = list((rel_dir / "manifest_files.csv").read_text().splitlines())[1:]
    assert man["files"]["count"] == len(rows) == 7 and man["rows"] == cons["objects_out"]
    from pzpipe.run.provenance import sha256_file

    for line in rows:
        path, n, _, nbytes, sha, _ = line.split(",")
        assert sha256_file(str(rel_dir / path)) == sha
        assert pq.ParquetFile(rel_dir / path).metadata.num_rows == int(n)
    assert rec["readme"]["n_rows"] == cons["objects_out"] and rec["readme"]["hats"]
    assert "pzpipe_manifest=../manifest.json" in props       # at the collection's root


def test_rows_sorted_by_spatial_index_within_pixels(release):
    rel_dir = release[0]
    for f in (rel_dir / "dataset").rglob("Npix=*.parquet"):
        h = pq.read_table(f, columns=["_healpix_29"]).column(0).to_numpy()
        assert (np.diff(h) >= 0).all()


@pytest.mark.parametrize("how,match", [("drop", r"knn: \d+ rows in .*, the partition has"),
                                       ("swap", "object ids differ from the partition")])
def test_conservation_errors_stop_the_batch(catalog, tmp_path, how, match):
    cfg = _cfg(catalog)
    from pzpipe.run.layout import catalog_columns

    lay = make_layout(cfg)
    cfg = catalog_columns(cfg, lay)
    with pytest.raises(PipelineError, match=match):
        build(tmp_path, cfg, lay, break_batch="b000002", how=how)
    # nothing half-written for the failed batch
    assert not (tmp_path / "export" / "b000002").exists()
    assert not [p for p in (tmp_path / "export").iterdir() if ".tmp-" in p.name]


def test_uncounted_cut_and_layout_mismatch(catalog, tmp_path):
    cfg = _cfg(catalog)
    from pzpipe.run.layout import catalog_columns

    lay = make_layout(cfg)
    cfg = catalog_columns(cfg, lay)
    p = tmp_path / "b000000.parquet"
    partition_batch(lay, "b000000", cfg, str(p))
    # rewrite the metadata: one row "in" more than out + cut
    t = pq.read_table(p)
    meta = json.loads(pq.ParquetFile(p).metadata.metadata[b"pzpipe"])
    meta["chunks"][0]["rows_in"] += 1
    with pq.ParquetWriter(p, t.schema) as w:
        w.write_table(t, row_group_size=meta["chunks"][0]["rows_out"])
        w.add_key_value_metadata({"pzpipe": json.dumps(meta)})
    ests = {}
    for a in ALGOS:
        ests[a] = str(tmp_path / f"{a}.parquet")
        fake_estimates(p, a, cfg, ests[a])
    with pytest.raises(PipelineError, match=r"(?s)rows_in 61 != rows_out \d+ \+ cut \d+.*61 input rows, the layout expects 60"):
        export.run_batch(lay, "b000000", ALGOS, cfg, str(p), ests, str(tmp_path / "x"),
                         str(tmp_path / "ids.parquet"))


def test_duplicate_ids_across_batches_are_found(tmp_path):
    """Two input files sharing 10 ids: each batch is fine on its own, the bucketed check
    over all batches names the duplicates (every bucket count)."""
    from helpers.inputs import flux_config, make_flux_table, write_parquet

    a = write_parquet(tmp_path / "a.parquet", make_flux_table(40))
    b = write_parquet(tmp_path / "b.parquet", make_flux_table(40, seed=1, start_id=31))
    cfg = flux_config([a, b], partition={"chunk_rows": 40}, batch={"chunks_per_batch": 1})
    lay = make_layout(cfg)
    for k in (1, 3, 16):
        ids = []
        for bid in lay.batch_ids():
            p = tmp_path / f"{bid}.parquet"
            partition_batch(lay, bid, cfg, str(p))
            t = pq.read_table(p, columns=[ID_COL]).column(0).to_numpy().copy()
            ids.append(str(tmp_path / f"ids-{bid}-{k}.parquet"))
            export.write_id_buckets(t, k, ids[-1])
        found = []
        for j in range(k):
            try:
                export.run_dedup(ids, j, str(tmp_path / f"d{k}-{j}.json"))
            except PipelineError as exc:
                assert "appear in more than one batch" in str(exc)
                found.append(exc)
        assert found, k
        named = set()
        for exc in found:
            named |= set(int(x) for x in str(exc).split("e.g. [")[1].split("]")[0].split(", "))
        assert named <= set(range(31, 41)) and len(named) >= min(5, 10)


def test_mix64_is_a_bijection_with_inverse():
    rng = np.random.default_rng(0)
    ids = np.concatenate([rng.integers(-2**63, 2**63 - 1, 100_000, dtype=np.int64),
                          np.arange(-5, 100, dtype=np.int64)])
    h = export.mix64(ids.view(np.uint64))
    assert len(np.unique(h)) == len(np.unique(ids))
    np.testing.assert_array_equal(export.unmix64(h).view(np.int64), ids)
    b = export.bucket_of(np.sort(h), 7)
    assert (np.diff(b.astype(np.int64)) >= 0).all() and set(b.tolist()) == set(range(7))
    counts = np.bincount(b)                      # equal ranges: balanced buckets
    assert counts.min() > 0.95 * counts.mean()
    h2 = export.mix64(ids.copy(), inplace=True)
    np.testing.assert_array_equal(h2, h)


def _fake_batches(tmp, n_batches, rows_per_batch=50):
    """``n_batches`` batch outputs as run_batch writes them (one small pixel file each)."""
    dirs = []
    schema = pa.schema([("objectId", pa.int64())])
    for i in range(n_batches):
        d = tmp / f"b{i:06d}"
        rel = f"dataset/Norder=9/Dir=0/Npix={i}.parquet"
        (d / rel).parent.mkdir(parents=True)
        pq.write_table(pa.table({"objectId": np.arange(rows_per_batch) + i * rows_per_batch},
                                schema=schema), d / rel)
        from pzpipe.run.provenance import sha256_file

        rep = {"batch": f"b{i:06d}", "kind": "hats", "chunks": 1, "chunk_range": [i, i + 1],
               "rows_in": rows_per_batch, "rows_out": rows_per_batch, "cut_by_reason": {},
               "algorithms": ["knn"], "empty_pixels": [],
               "files": [{"path": rel, "rows": rows_per_batch, "row_groups": 1,
                          "bytes": (d / rel).stat().st_size, "sha256": sha256_file(str(d / rel)),
                          "pixel": [9, i], "chunks": [i]}]}
        (d / export.REPORT).write_text(json.dumps(rep))
        dirs.append(str(d))
    dd = tmp / "dedup.json"
    dd.write_text(json.dumps({"bucket": 0, "ids": n_batches * rows_per_batch, "duplicate_ids": 0}))
    return dirs, [str(dd)]


def test_final_export_memory_does_not_grow_with_batches(tmp_path, cfg):
    """Peak Python memory (tracemalloc) of the final export job with 20 and 200 batches:
    it streams the batch reports (one entry per pixel is all it keeps), so the peak is the
    same within 1 MB, while the release grows 10-fold."""
    cfg = deep_update(cfg, {"algorithms": {a: {"enabled": a == "knn"} for a in cfg["algorithms"]},
                            "columns": {"ra": "coord_ra", "dec": "coord_dec"}})
    side = {"knn": str(tmp_path / "side.json")}
    (tmp_path / "side.json").write_text(json.dumps({"model_sha256": "0" * 64}))
    peaks = {}
    for n in (3, 20, 200):        # 3: warm-up (first use imports hats, pydantic models, ...)
        d = tmp_path / f"n{n}"
        dirs, dedup = _fake_batches(d, n)
        lay = Layout([(f"p{i}", 50) for i in range(n)], 50, 1, pixels=[(9, i) for i in range(n)])
        tracemalloc.start()
        export.run_release(lay, ["knn"], cfg, dirs, dedup, side, str(d / "release"))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rec = json.loads((d / "release" / export.CATALOG_JSON).read_text())
        assert rec["manifest"]["files"]["count"] == n
        shutil.rmtree(d)
    print("peak bytes by batches:", peaks)
    assert peaks[200] < peaks[20] + 1_000_000, peaks
