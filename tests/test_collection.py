"""The release as a HATS collection (pzpipe.stages.collection, export.run_collection) and
``pzpipe verify`` (pzpipe.release.verify).

- The margin written per batch equals hats-import's own ``generate_margin_cache`` of the
  same catalog, file for file and row for row (the demo catalog: 7 pixels + the empty-sky
  pixels around them, in 3 batches).
- A crossmatch against the collection (lsdb, with its margin) finds the same nearest
  neighbours as brute force, for points placed within 1-4" of the catalog's pixel edges;
  without the margin some are lost (so the points do test the edges).
- The id index: ranges of several buckets are disjoint and hold every id once; lsdb's
  ``id_search`` returns the right row.
- The small end-to-end run's release (tests/helpers/runs.py): ``lsdb.open_catalog`` has
  the margin, ``id_search`` finds objects; the folder holds the spec, decoder, validation
  summary and every estimator's RAIL configuration, model and data; ``pzpipe verify``
  passes and names the file of a flipped byte, a removed file and an extra file.
- A clean venv made as the README says (``python -m venv``, ``pip install "./[read]"``,
  once per session, tests/helpers/venvs.py): ``pzpipe verify`` passes/fails the same way
  without RAIL, numba or Snakemake; the README's and the release README's reading
  snippets run there; the README's cone holds rows of the demo catalog.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pzpipe.core import hatsio
from pzpipe.release import verify
from pzpipe.stages import collection as coll

from helpers.runs import small_run

REPO = Path(__file__).resolve().parents[1]
MARGIN_ARCSEC = 5.0


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo HATS catalog (`make demo`), or the same written now (4 s)."""
    d = REPO / "resources" / "dc2_object_hats"
    if (d / "properties").is_file():
        return d
    from pzpipe.planning import synth

    out = tmp_path_factory.mktemp("demo") / "dc2_object_hats"
    synth.main([str(out), "--rows-per-pixel", "3000"])
    return out


def _pixels(catdir):
    from hats.catalog import PartitionInfo

    return [(int(p.order), int(p.pixel))
            for p in PartitionInfo.read_from_dir(catdir).get_healpix_pixels()]


@pytest.fixture(scope="module")
def demo_collection(demo, tmp_path_factory):
    """The demo catalog made into a release-like collection by the pipeline's own jobs:
    its pixels in 3 batches, run_margin_batch per batch, run_index_batch per batch and
    run_index_bucket over 3 id ranges, metadata with the release job's writers."""
    base = tmp_path_factory.mktemp("demo_coll")
    cat = base / "catalog"
    pixels = sorted(_pixels(demo), key=lambda x: hatsio.pixel_sort_key(*x))
    batches = {f"b{i:06d}": pixels[i::3] for i in range(3)}
    batch_of = {px: b for b, pxs in batches.items() for px in pxs}
    (cat / "dataset").mkdir(parents=True)
    rows = []
    for px in pixels:
        rel = os.path.relpath(hatsio.pixel_file("", *px), "")
        (cat / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(demo / rel, cat / rel)
        rows.append({"path": rel, "rows": pq.ParquetFile(cat / rel).metadata.num_rows,
                     "row_groups": 1, "bytes": 0, "sha256": "", "batch": batch_of[px]})
    for name in ("properties", "hats.properties", "partition_info.csv"):
        shutil.copyfile(demo / name, cat / name)
    shutil.copyfile(demo / "dataset" / "_common_metadata", cat / "dataset" / "_common_metadata")
    with open(cat / "manifest_files.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    t0 = time.time()
    margin_dirs = [str(base / "margin" / b) for b in batches]
    reports = [coll.run_margin_batch(str(cat), b, MARGIN_ARCSEC, d)
               for b, d in zip(batches, margin_dirs)]
    t_margin = time.time() - t0
    # index: per batch (a batch dir with a report naming its pixel files), then 3 buckets
    idx_files = []
    for b, pxs in batches.items():
        bd = base / "batches" / b
        files = []
        for px in pxs:
            rel = os.path.relpath(hatsio.pixel_file("", *px), "")
            (bd / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(cat / rel, bd / rel)
            files.append({"path": rel, "pixel": list(px)})
        (bd / "report.json").write_text(json.dumps({"batch": b, "files": files}))
        out = base / "index" / f"{b}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        coll.run_index_batch(str(bd), "objectId", str(out))
        idx_files.append(str(out))
    buckets = [coll.run_index_bucket(idx_files, k, 3, "objectId", str(base / "buckets" / str(k)))
               for k in range(3)]
    # the collection, as run_collection assembles it
    root = base / "release"
    prim = root / coll.PRIMARY
    shutil.copytree(cat, prim, copy_function=os.link)
    mdir = root / coll.MARGIN
    mpix, mrows = [], 0
    for d, rep in zip(margin_dirs, reports):
        for f in rep["files"]:
            (mdir / f["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.link(Path(d) / f["path"], mdir / f["path"])
            mpix.append(tuple(f["pixel"]))
            mrows += f["rows"]
    ra, dec = hatsio.coordinate_columns(demo)
    coll.write_margin_metadata(mdir, sorted(mpix), pq.read_schema(cat / "dataset" / "_common_metadata"),
                               total_rows=mrows, ra_column=ra, dec_column=dec,
                               margin_arcsec=MARGIN_ARCSEC)
    idir = root / coll.index_name("objectId")
    n = 0
    for k, rep in enumerate(buckets):
        f = rep["files"][0]
        (idir / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        os.link(base / "buckets" / str(k) / f["local"], idir / f["path"])
        n += f["rows"]
    coll.write_index_metadata(idir, total_rows=n, id_column="objectId")
    coll.write_collection_properties(root, "demo", margin=coll.MARGIN,
                                     index=coll.index_name("objectId"), id_column="objectId")
    return {"root": root, "catalog": cat, "margin_dirs": margin_dirs, "reports": reports,
            "buckets": buckets, "t_margin": t_margin, "batches": batches}


# ---------------------------------------------------------------------------- margin
def _sorted_frame(path):
    df = pq.read_table(path).to_pandas()
    return df.sort_values(["_healpix_29", "objectId"]).reset_index(drop=True)


def test_margin_equals_hats_import(demo, demo_collection, tmp_path):
    """Row for row what hats-import's margin pipeline writes for the same catalog."""
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    t0 = time.time()
    args = MarginCacheArguments(input_catalog_path=str(demo), output_path=str(tmp_path),
                                output_artifact_name="hi_margin", margin_threshold=MARGIN_ARCSEC,
                                progress_bar=False, resume=False, tmp_dir=str(tmp_path / "tmp"))
    with hatsio.dask_client(1, 2000, processes=False) as client:
        pipeline_with_client(args, client)
    t_hi = time.time() - t0
    hi = tmp_path / "hi_margin"
    theirs = sorted(os.path.relpath(p, hi) for p in hi.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    mdir = demo_collection["root"] / coll.MARGIN
    ours = sorted(os.path.relpath(p, mdir) for p in mdir.glob("dataset/Norder=*/Dir=*/Npix=*.parquet"))
    assert ours == theirs and len(ours) > len(_pixels(demo))     # + empty-sky pixels
    n = 0
    for rel in ours:
        a, b = _sorted_frame(hi / rel), _sorted_frame(mdir / rel)
        pd.testing.assert_frame_equal(a, b)                     # exact (NaN == NaN)
        n += len(a)
    props = (hi / "hats.properties").read_text()
    assert f"hats_nrows={n}" in props
    assert f"hats_nrows={n}" in (mdir / "hats.properties").read_text()
    print(f"margin of the demo catalog: {n} rows in {len(ours)} files; pzpipe "
          f"{demo_collection['t_margin']:.1f} s (3 batch jobs), hats-import {t_hi:.1f} s")


def _radec(df, ra, dec):
    return np.radians(df[ra].to_numpy()), np.radians(df[dec].to_numpy())


def _sep_arcsec(ra1, dec1, ra2, dec2):
    s = (np.sin((dec2 - dec1) / 2) ** 2
         + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2)
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0, 1)))) * 3600


def test_crossmatch_at_pixel_edges_vs_brute_force(demo, demo_collection):
    lsdb = pytest.importorskip("lsdb")
    ra, dec = hatsio.coordinate_columns(demo)
    root = demo_collection["root"]
    right = lsdb.open_catalog(root)
    assert right.margin is not None
    every = right.compute()
    # left points: catalog objects moved 1-4" in a random direction so that the moved point
    # lies in another pixel than the object (or off the catalog): its match is across the
    # pixel edge. Found with the spatial index alone, independently of the margin code.
    look = coll._Lookup(_pixels(demo), 29)
    rng = np.random.default_rng(3)
    n = len(every)
    idx = np.tile(np.arange(n), 20)                      # 20 random moves per object
    r = rng.uniform(1.0, 4.0, len(idx)) / 3600
    th = rng.uniform(0, 2 * np.pi, len(idx))
    d0 = every[dec].to_numpy()[idx]
    lra = every[ra].to_numpy()[idx] + r * np.cos(th) / np.cos(np.radians(d0))
    ldec = d0 + r * np.sin(th)
    own = look(hatsio.spatial_index(every[ra], every[dec]))[idx]
    moved = look(hatsio.spatial_index(lra, ldec))
    across = np.nonzero(own != moved)[0]
    assert len(across) > 300
    keep = rng.choice(across, size=300, replace=False)
    src = every.iloc[idx[keep]]
    left = pd.DataFrame({"lid": np.arange(len(src)), "ra": lra[keep], "dec": ldec[keep]})
    lcat = lsdb.from_dataframe(left, ra_column="ra", dec_column="dec", catalog_name="left",
                               lowest_order=8, highest_order=8, margin_threshold=None)
    radius = 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = lcat.crossmatch(right, radius_arcsec=radius, n_neighbors=1,
                              suffixes=("_l", "_r")).compute()
    got = dict(zip(got["lid_l"], got["objectId_r"]))
    # brute force: nearest object of the whole catalog within the radius
    rra, rdec = _radec(every, ra, dec)
    want = {}
    for i, (a, d) in enumerate(zip(np.radians(left["ra"]), np.radians(left["dec"]))):
        s = _sep_arcsec(a, d, rra, rdec)
        j = int(np.argmin(s))
        if s[j] <= radius:
            want[i] = int(every["objectId"].iloc[j])
    assert len(want) > 0.8 * len(src)
    assert got == want
    # the same without the margin loses matches across edges: the points test the edges
    bare = lsdb.open_catalog(root / coll.PRIMARY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lost = lcat.crossmatch(bare, radius_arcsec=radius, n_neighbors=1, suffixes=("_l", "_r"),
                               require_right_margin=False).compute()
    assert len(lost) < len(want)


# ---------------------------------------------------------------------------- index
def test_index_buckets_hold_every_id_once(demo, demo_collection):
    parts = []
    bounds = []
    for rep in demo_collection["buckets"]:
        t = pq.read_table(demo_collection["root"] / coll.index_name("objectId") / rep["files"][0]["path"])
        ids = t.column("objectId").to_numpy()
        assert np.all(np.diff(ids) > 0)                       # sorted, no repeat
        assert (rep["lo"] is None or ids.min() >= rep["lo"]) and (rep["hi"] is None or ids.max() < rep["hi"])
        parts.append(t.to_pandas())
        bounds.append(len(ids))
    assert min(bounds) > 0 and len(bounds) == 3
    idx = pd.concat(parts)
    src = []
    for k, p in _pixels(demo):
        ids = pq.read_table(hatsio.pixel_file(demo, k, p), columns=["objectId"]).column(0).to_numpy()
        src.append(pd.DataFrame({"objectId": ids, "Norder": k, "Npix": p}))
    src = pd.concat(src).sort_values("objectId").reset_index(drop=True)
    idx = idx.sort_values("objectId").reset_index(drop=True)
    np.testing.assert_array_equal(idx["objectId"].to_numpy(), src["objectId"].to_numpy())
    np.testing.assert_array_equal(idx["Norder"].to_numpy().astype(int), src["Norder"].to_numpy())
    np.testing.assert_array_equal(idx["Npix"].to_numpy().astype(np.int64), src["Npix"].to_numpy())


def test_id_search_uses_the_index(demo, demo_collection):
    lsdb = pytest.importorskip("lsdb")
    cat = lsdb.open_catalog(demo_collection["root"])
    k, p = _pixels(demo)[3]
    t = pq.read_table(hatsio.pixel_file(demo, k, p)).to_pandas()
    for i in (0, len(t) // 2, len(t) - 1):
        oid = int(t["objectId"].iloc[i])
        sub = cat.id_search(values={"objectId": oid})
        assert [(px.order, px.pixel) for px in sub.get_healpix_pixels()] == [(k, p)]
        got = sub.compute()
        assert got["objectId"].tolist() == [oid]
        assert got["coord_ra"].iloc[0] == t["coord_ra"].iloc[i]


# ---------------------------------------------------------------------------- the small run
@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return small_run(tmp_path_factory) / "results" / "release"


def test_small_release_is_a_self_contained_collection(release):
    lsdb = pytest.importorskip("lsdb")
    m = json.loads((release / "manifest.json").read_text())
    assert m["collection"] == {"primary": "photoz", "margin": "photoz_margin",
                               "index": "photoz_objectId_index"}
    cat = lsdb.open_catalog(release)
    assert cat.margin is not None and cat.margin.hc_structure.catalog_info.margin_threshold == 5.0
    f = next((release / "photoz" / "dataset").rglob("Npix=*.parquet"))
    t = pq.read_table(f).to_pandas()
    for i in (0, len(t) - 1):
        got = cat.id_search(values={"objectId": int(t["objectId"].iloc[i])}).compute()
        assert len(got) == 1 and got["bpz_z_median"].iloc[0] == t["bpz_z_median"].iloc[i]
    # the folder alone: spec, decoder, validation, estimators
    for name in ("pdf_format.md", "decode_pdf.py", "validation/requirements.md",
                 "validation/metrics.csv", "collection.properties"):
        assert (release / name).is_file(), name
    readme = (release / "README.md").read_text()
    assert "<" + "pzpipe repository URL>" not in readme and "## Validation" in readme
    assert "15.865525393145707th" in readme and "| cmnn |" in readme
    for a, rec in m["models"].items():
        assert rec["rail_estimator"] and rec["rail_estimator"].startswith("rail.")
        r = json.loads((release / "estimators" / a / "rail.json").read_text())
        assert r["estimate_params"]["bands"] and "zmin" in r["estimate_params"]
        assert (release / "estimators" / a / "model.pkl").stat().st_size > 0
        # RAIL parameters without a path of the machine that made them (the data
        # directory is "data", LePhare's auxiliary files "$LEPHAREDIR/...")
        for block in ("inform_params", "estimate_params"):
            text = json.dumps(r[block])
            assert str(REPO) not in text and str(REPO.resolve()) not in text, (a, block, text)
    lp = json.loads((release / "estimators" / "lephare" / "rail.json").read_text())
    assert lp["inform_params"]["lephare.FILTER_REP"] == "$LEPHAREDIR/filt"
    # column types as documented (README, docs/estimators.md)
    sch = pq.read_schema(release / "photoz" / "dataset" / "_common_metadata")
    for c in ("gpz_pdf_loc", "gpz_pdf_scale", "cmnn_pdf_loc", "cmnn_pdf_scale", "bpz_z_median"):
        assert str(sch.field(c).type) == "float", c
    for c in ("cmnn_n_match", "cmnn_n_colors", "bpz_flags"):
        assert str(sch.field(c).type) == "int32", c
    bpz = json.loads((release / "estimators" / "bpz" / "rail.json").read_text())
    assert bpz["estimate_params"]["bpz_ref_data_path"] == "data"
    assert (release / "estimators" / "bpz" / "data" / "SED").is_dir()
    # the decoder in the folder decodes like the library
    import importlib.util

    from pzpipe.release import read

    spec = importlib.util.spec_from_file_location("decode_pdf", release / "decode_pdf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    col = pq.read_table(f, columns=["fzboost_pdf"]).column(0)
    z = mod.zgrid()
    mine = np.array([mod.decode_pdf(v, z) for v in col.to_pylist()])
    assert np.array_equal(mine.view(np.uint64), read.decode_numpy(col, z).view(np.uint64))


def _broken_copies(release, base):
    """{what: (copy, path named in the problem)}: a flipped byte in a pixel file, a
    removed margin file, an extra file."""
    out = {}
    for what in ("flip", "remove", "extra"):
        d = base / what
        shutil.copytree(release, d)
        if what == "flip":
            f = sorted((d / "photoz" / "dataset").rglob("Npix=*.parquet"))[0]
            b = bytearray(f.read_bytes())
            b[len(b) // 2] ^= 0x01
            f.write_bytes(bytes(b))
        elif what == "remove":
            f = sorted((d / "photoz_margin" / "dataset").rglob("Npix=*.parquet"))[0]
            f.unlink()
        else:
            f = d / "photoz" / "dataset" / "notes.txt"
            f.write_text("added by someone\n")
        out[what] = (d, os.path.relpath(f, d))
    return out


def test_verify_release(release, tmp_path):
    t0 = time.time()
    assert verify.verify(release) == []
    secs = time.time() - t0
    expect = {"flip": "sha256 differs", "remove": "missing", "extra": "extra file"}
    for what, (d, rel) in _broken_copies(release, tmp_path).items():
        problems = verify.verify(d)
        assert any(p.startswith(rel + ":") and expect[what] in p for p in problems), (what, problems)
    # a schema change that keeps the manifest consistent is still caught by the schema check
    d = tmp_path / "schema"
    shutil.copytree(release, d)
    f = sorted((d / "photoz" / "dataset").rglob("Npix=*.parquet"))[0]
    t = pq.read_table(f)
    pq.write_table(t.replace_schema_metadata({}), f)
    assert any("schema differs" in p for p in verify.verify(d, check_hash=False))
    print(f"pzpipe verify of the small release: {secs:.2f} s")


# ---------------------------------------------------------------------------- clean venv
@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    from helpers.venvs import read_venv

    t0 = time.time()
    v, rec = read_venv(tmp_path_factory)
    print(f"[read] venv: install {rec['install_s']} s (this fixture waited {time.time() - t0:.0f} s)")
    return v


def _blocks(md: str, start: str | None = None, end: str | None = None) -> list[str]:
    if start:
        md = md.split(start, 1)[1]
    if end:
        md = md.split(end, 1)[0]
    return re.findall(r"```python\n(.*?)```", md, flags=re.S)


@pytest.mark.slow
def test_clean_venv_verify(venv, release, tmp_path):
    from helpers.venvs import run_in

    r = run_in(venv, ["python", "-c", "import sys, pzpipe.cli, pzpipe.release.verify; "
                      "bad = [m for m in ('rail', 'numba', 'snakemake', 'lsdb') if m in sys.modules]; "
                      "assert not bad, bad"])
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_in(venv, ["pzpipe", "verify", str(release)])
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    expect = {"flip": "sha256 differs", "remove": "missing", "extra": "extra file"}
    for what, (d, rel) in _broken_copies(release, tmp_path).items():
        r = run_in(venv, ["pzpipe", "verify", str(d)])
        assert r.returncode == 1, (what, r.stdout, r.stderr)
        assert any(line.startswith(rel + ":") and expect[what] in line
                   for line in r.stdout.splitlines()), (what, r.stdout)


@pytest.mark.slow
def test_clean_venv_readme_snippets(venv, release, demo, tmp_path):
    """The README's reading snippet and the release README's snippets, run as written in
    the [read] venv (paths and placeholders replaced by the small release's)."""
    from helpers.venvs import run_in

    readme = (REPO / "README.md").read_text()
    blocks = _blocks(readme, "## Output format", "## Design")
    assert len(blocks) == 1
    code = blocks[0].replace("results/release", str(release))
    r = run_in(venv, ["python", "-c", code + "\nprint('ROWS', len(rows))"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # the cone of the README holds rows of the demo catalog (the default input)
    m = re.search(r"cone_search\(ra=([\d.\-]+), dec=([\d.\-]+), radius_arcsec=([\d.]+)\)", blocks[0])
    lsdb = pytest.importorskip("lsdb")
    n = len(lsdb.open_catalog(demo).cone_search(ra=float(m.group(1)), dec=float(m.group(2)),
                                                radius_arcsec=float(m.group(3))).compute())
    assert n > 10
    # the release README: every snippet
    rel_md = (release / "README.md").read_text()
    rblocks = _blocks(rel_md)
    assert len(rblocks) == 2
    ids = pq.read_table(next((release / "photoz" / "dataset").rglob("Npix=*.parquet")),
                        columns=["objectId"]).column(0).to_pylist()
    ra, dec = (float(x) for x in np.median(pq.read_table(next((release / "photoz" / "dataset").rglob("Npix=*.parquet")),
                                      columns=["ra", "decl"]).to_pandas(), axis=0))
    for code in rblocks:
        code = code.replace('"path/to/this/release"', repr(str(release)))
        code = code.replace('"path/to/object_catalog"', repr(str(release / "photoz")))
        pre = (f"RA_DEG, DEC_DEG = {ra!r}, {dec!r}\nSOME_IDS = {ids[:5]!r}\n"
               f"SOME_ID = {ids[0]!r}\n")
        post = "\nassert ens.npdf > 0\nprint('OK')\n"
        if "id_search" in code:
            post += "assert one['objectId'].tolist() == [SOME_ID]\n"
        r = run_in(venv, ["python", "-c", pre + code + post], cwd=tmp_path)
        assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_negative_tree_equals_hats():
    """The empty-sky pixels equal hats' compute_negative_tree_pixels on random multi-order
    catalogs (hats compiles numba code for it in every process: 30 s)."""
    import random

    from hats.pixel_math.healpix_pixel import HealpixPixel
    from hats.pixel_tree.negative_tree import compute_negative_tree_pixels
    from hats.pixel_tree.pixel_tree import PixelTree

    rng = random.Random(1)
    for trial in range(3):
        pix = sorted({(k, rng.randrange(12 * 4 ** k)) for k in
                      (rng.randint(1, 7) for _ in range(100 + 100 * trial))},
                     key=lambda x: hatsio.pixel_sort_key(*x))
        clean, end = [], -1                       # drop pixels inside an earlier one
        for k, p in pix:
            if hatsio.pixel_sort_key(k, p) >= end:
                clean.append((k, p))
                end = hatsio.pixel_sort_key(k, p + 1)
        theirs = compute_negative_tree_pixels(PixelTree.from_healpix(
            [HealpixPixel(k, p) for k, p in clean]))
        assert sorted(coll.negative_tree(clean)) == sorted((int(p.order), int(p.pixel))
                                                           for p in theirs)


@pytest.mark.parametrize("algo", ["knn", "bpz"])
def test_release_folder_reproduces_pdfs_with_bare_rail(release, algo, monkeypatch):
    """A third party with the folder and RAIL: the RAIL estimator made from
    estimators/<algo>/rail.json (class, every parameter, model.pkl, data/) on the objects'
    magnitudes gives PDFs whose CDF is within the release's documented 1e-3 of the stored
    one (BPZ: the pipeline ran its fast path, bit-identical to RAIL's; here RAIL's own
    class runs)."""
    import importlib

    from pzpipe.release import read

    rec = json.loads((release / "estimators" / algo / "rail.json").read_text())
    mod, _, cls = rec["rail_estimator"].rpartition(".")
    est_cls = getattr(importlib.import_module(mod), cls)
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    monkeypatch.chdir(release / "estimators" / algo)     # data/ and model.pkl are relative
    params = {k: v for k, v in rec["estimate_params"].items()
              if k not in ("name", "model", "config", "input", "output")}
    stage = est_cls.make_stage(name=f"third_party_{algo}", model="model.pkl", **params)
    # the objects' magnitudes as the pipeline used them (the partition: a third party
    # computes them from the Object catalog's fluxes as rail.json's "how" says)
    runs = release.parents[1]
    part = pq.ParquetFile(runs / "results" / "partition" / "b000000.parquet").read_row_group(0)
    data = {c: part.column(c).to_numpy().astype(np.float64).copy()
            for c in [*params["bands"], *params["err_bands"]]}
    data[params.get("id_col", "object_id")] = part.column("object_id").to_numpy()
    ens = stage.estimate(data)
    ens = getattr(ens, "data", ens)
    zmin, zmax, nz = json.loads((release / "manifest.json").read_text())["zgrid"]
    z = np.linspace(zmin, zmax, nz)
    p = np.asarray(ens.pdf(z), dtype=np.float64)
    w = np.zeros(nz)
    w[:-1] += np.diff(z) / 2
    w[1:] += np.diff(z) / 2
    p = p / (p * w).sum(axis=1, keepdims=True)
    # the stored PDFs of the same objects (same ids, the release's pixel files)
    ids = part.column("object_id").to_numpy()
    rows = pd.concat([pq.read_table(f, columns=["objectId", f"{algo}_pdf"]).to_pandas()
                      for f in (release / "photoz" / "dataset").rglob("Npix=*.parquet")])
    rows = rows.set_index("objectId").loc[ids]
    import pyarrow as pa

    stored = read.decode_numpy(pa.array(rows[f"{algo}_pdf"].tolist(), pa.binary()), z)
    cdf = lambda q: np.cumsum(q * w, axis=1)        # noqa: E731 - the trapezoid node sums
    err = np.abs(cdf(p) - cdf(stored)).max()
    print(f"{algo}: bare RAIL vs release, max |CDF difference| over {len(ids)} objects: {err:.2e}")
    assert err <= 1e-3


def test_readme_says_what_the_input_was(demo):
    """A synthetic HATS input (the demo: SYNTHETIC.md, obs_description) is named synthetic
    in the release README, with its SYNTHETIC.md quoted; a files input is named by its files."""
    from types import SimpleNamespace

    from pzpipe.release.readme import render
    from pzpipe.stages.export import input_description

    lay = SimpleNamespace(kind="hats", n_objects=20449)
    inp = input_description(lay, {"inputs": {"hats": str(demo), "files": []}}, str(demo))
    assert inp["synthetic"] and "SYNTHETIC" in inp["description"]
    assert (demo / "SYNTHETIC.md").read_text().strip().splitlines()[0] in inp["synthetic_note"]
    info = {"release": "r", "n_rows": 1, "algorithms": ["knn"], "id_column": "objectId",
            "zgrid": [0, 3, 301], "pdf_encoding": "pzpipe-qcdf-d2/1", "columns": [],
            "input": inp}
    md = render(info)
    assert "**The input was synthetic, not survey data.**" in md and "SYNTHETIC.md" in md
    files = input_description(SimpleNamespace(kind="files", n_objects=100),
                              {"inputs": {"hats": None, "files": ["a.parquet"]}}, None)
    assert not files["synthetic"] and files["files"] == ["a.parquet"]
    assert "Input: `a.parquet` (100 objects)" in render({**info, "input": files})
