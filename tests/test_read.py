"""pzpipe.release.read: the light reader of a release's PDF columns.

- The pure-numpy reference decoder equals the numba decoder (pzpipe.release.pdfstore.decode)
  bit for bit (uint64 views compared) on the PDFs of every estimator enabled in
  config/config.yaml, made for real by RAIL on 300 DC2 objects with quickly trained
  models and encoded by the pipeline's own estimate_table; also on edge-case PDFs,
  every bits value, sliced/chunked/large_binary arrays, and corrupt values (both
  reject the same values with the same message).
- to_ensemble / pdf_grid on release-like tables (the release contract: prefixed
  columns, field metadata, schema-level 'pzpipe' JSON): exact equality of
  ens.objdata["yvals"] with the pipeline's decode, for row subsets, one row group,
  pandas frames (object bytes and ArrowDtype), an lsdb cone search; metadata
  priority; clear errors.
- A clean venv with only `pip install "<repo>[read]"` (slow; shared with
  test_collection.py): no rail or snakemake; importing the reader and `pzpipe verify`
  imports neither numba nor lsdb (installed for the README's lsdb snippets); reads release
  rows into a qp.Ensemble equal to the pipeline's decode.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pzpipe.release import pdfstore, read
from pzpipe.run.config import enabled_algorithms, load_config

from helpers.inputs import copy_clone

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CFG = load_config(REPO / "config" / "config.yaml")
ALGOS = enabled_algorithms(DEFAULT_CFG)
Z = np.linspace(0.0, 3.0, 301)

UNITS = {"z_mode": "", "flags": "", "pdf": "1/z"}


# --------------------------------------------------------------------------
# fixtures: real estimator PDFs, release-like tables
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    """{algo: the pipeline's internal estimate table} for 300 DC2 objects, every
    algorithm enabled in config/config.yaml, models trained on 1,500 objects with
    cheap settings (FlexZBoost: fewer basis functions, shallower trees; TPZ: 2 trees).
    ~30-40 s on 2 cores."""
    from pzpipe import algorithms
    from pzpipe.stages import train
    from pzpipe.run.config import deep_update
    from pzpipe.stages.estimate import estimate_table
    from pzpipe.stages.samples import read_sample

    d = tmp_path_factory.mktemp("read_models")
    # LePhare: a small galaxy library (the library build is LePhare's training cost)
    (d / "lephare_MOD.list").write_text("COSMOS_SED/Ell1_A_0.sed\nCOSMOS_SED/Sc_A_0.sed\n"
                                        "COSMOS_SED/SB11_A_0.sed\n")
    cfg = deep_update(DEFAULT_CFG, {
        "training": {"max_rows": 1500},
        "algorithms": {
            "lephare": {"inform": {"lephare.GAL_SED": str(d / "lephare_MOD.list"),
                                   "lephare.EB_V": "0.", "gal.EM_DISPERSION": "1."}},
            "tpz": {"inform": {"n_random": 1, "n_trees": 2}},
            "fzboost": {"inform": {"max_basis": 15, "nbump": 4, "nsharp": 4,
                                   "regression_params": {"max_depth": 4,
                                                         "objective": "reg:squarederror"}}},
        }})
    cwd = os.getcwd()
    os.chdir(d)          # data dirs (BPZ's) are results/<algo>_data under the working dir
    try:
        data = read_sample(cfg, dict(cfg["validation"], max_rows=300))
        data.pop("redshift")
        flags = data.pop("flags")
        out = {}
        for a in ALGOS:
            algo = algorithms.get(a)
            if algo.data_dir is not None:        # e.g. BPZ's template data
                train.prepare_data(a, cfg, algorithms.data_dir_path(algo))
            train.run(a, cfg, str(d / f"{a}.pkl"), str(d / f"{a}.json"))
            r = algorithms.Runner(algorithms.get(a), str(d / f"{a}.pkl"), cfg, name=f"rd_{a}")
            out[a] = estimate_table(r, data, flags, 0, int(cfg["estimate"]["pdf_bits"]))
    finally:
        os.chdir(cwd)
    return out


def release_table(estimates: dict, zgrid=Z, with_field_meta=True, with_schema_meta=True,
                  id_column="objectId") -> pa.Table:
    """A release-like wide table as the contract describes it (docs: release_contract)."""
    zg = [float(zgrid[0]), float(zgrid[-1]), int(len(zgrid))]
    first = next(iter(estimates.values()))
    n = first.num_rows
    rng = np.random.default_rng(3)
    fields, cols = [], []

    def add(name, arr, unit, desc, extra=None):
        meta = {"unit": unit, "description": desc, **(extra or {})} if with_field_meta else None
        fields.append(pa.field(name, arr.type, metadata=meta))
        cols.append(arr)

    add(id_column, first.column("object_id").combine_chunks(), "", "object id")
    add("coord_ra", pa.array(rng.uniform(50, 60, n)), "deg", "right ascension")
    add("coord_dec", pa.array(rng.uniform(-40, -30, n)), "deg", "declination")
    pdf_columns = {}
    for algo, t in estimates.items():
        assert t.column("object_id").equals(first.column("object_id"))
        for c in t.column_names:
            if c == "object_id":
                continue
            name = f"{algo}_{c}"
            extra = None
            if c == "pdf":
                extra = {"pdf_encoding": pdfstore.ENCODING, "zgrid": json.dumps(zg)}
                pdf_columns[name] = {"algorithm": algo, "encoding": pdfstore.ENCODING,
                                     "zgrid": zg}
            add(name, t.column(c).combine_chunks(), UNITS.get(c, ""), f"{algo} {c}", extra)
    schema = pa.schema(fields)
    if with_schema_meta:
        schema = schema.with_metadata({"pzpipe": json.dumps({
            "release": "test", "algorithms": list(estimates), "zgrid": zg,
            "pdf_encoding": pdfstore.ENCODING, "pdf_columns": pdf_columns,
            "id_column": id_column, "ra_column": "coord_ra", "dec_column": "coord_dec"})})
    return pa.Table.from_arrays(cols, schema=schema)


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and the same 64 bits in every element (NaN payloads and signs too)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _gauss(z, mu, s):
    return np.exp(-0.5 * ((z - mu) / s) ** 2)


def synthetic(n_random=100, seed=0, z=Z):
    rng = np.random.default_rng(seed)
    rows = [_gauss(z, 1.0, 0.05), _gauss(z, 0.7, 0.001),
            _gauss(z, 0.5, 0.03) + 0.4 * _gauss(z, 2.1, 0.1), np.ones_like(z),
            np.where(np.arange(z.size) == 120, 7.0, 0.0), np.where(np.arange(z.size) == 0, 1.0, 0.0),
            np.where(np.arange(z.size) == z.size - 1, 1.0, 0.0), (z > 1.2).astype(float),
            1e-300 * _gauss(z, 1.0, 0.2), 1e300 * _gauss(z, 2.0, 0.2), np.full(z.size, np.nan),
            np.zeros(z.size)]
    return np.vstack([np.array(rows), rng.random((n_random, z.size)) ** 3])


# --------------------------------------------------------------------------
# the numpy reference decoder == the numba decoder
# --------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ALGOS)
def test_numpy_decoder_equals_numba_on_estimator_pdfs(estimates, algo):
    arr = estimates[algo].column("pdf")
    assert len(arr) == 300
    fast = pdfstore.decode(arr, Z)
    ref = read.decode_numpy(arr, Z)
    assert bits_equal(fast, ref)
    assert bits_equal(read.decode(arr, Z, engine="numpy"), fast)
    assert bits_equal(read.decode(arr, Z, engine="numba"), fast)
    valid = pdfstore.valid_mask(arr)
    np.testing.assert_allclose(np.trapezoid(ref[valid], Z, axis=1), 1.0, rtol=1e-12)


def test_every_enabled_estimator_is_covered(estimates):
    assert set(estimates) == set(ALGOS) and len(ALGOS) >= 5


@pytest.mark.parametrize("bits", [1, 4, 6, 10, 13, 16, 20])
@pytest.mark.parametrize("cdf_tol", [1e-3, None])
def test_numpy_decoder_equals_numba_on_edge_cases(bits, cdf_tol):
    p = synthetic()
    arr = pdfstore.encode(p, Z, bits=bits, cdf_tol=cdf_tol)
    assert arr.null_count == 2
    fast = pdfstore.decode(arr, Z)
    assert bits_equal(read.decode_numpy(arr, Z), fast)
    # slices (Arrow offset), chunked arrays, large_binary, pandas Series, a longer grid
    for a in (arr.slice(5, 40), pa.chunked_array([arr.slice(0, 7), arr.slice(7)]),
              arr.cast(pa.large_binary())):
        assert bits_equal(read.decode_numpy(a, Z), pdfstore.decode(a, Z))
    s = pa.table({"pdf": arr}).to_pandas()["pdf"]
    assert bits_equal(read.decode_numpy(s, Z), fast)
    z2 = np.linspace(0, 4, 401)
    assert bits_equal(read.decode_numpy(arr, z2), pdfstore.decode(arr, z2))


def test_numpy_decoder_mixed_bits_and_several_blocks():
    p = synthetic()
    mixed = pa.concat_arrays([pdfstore.encode(p, Z, bits=b) for b in (10, 13, 7)])
    assert bits_equal(read.decode_numpy(mixed, Z), pdfstore.decode(mixed, Z))
    big = pa.concat_arrays([mixed] * (read._BLOCK_ROWS // len(mixed) + 2))   # > 1 block
    assert len(big) > read._BLOCK_ROWS and big.null_count > 0
    assert bits_equal(read.decode_numpy(big, Z), pdfstore.decode(big, Z))
    nonull = pdfstore.encode(np.tile(p[:10], (read._BLOCK_ROWS // 10 + 5, 1)), Z)
    assert nonull.null_count == 0
    assert bits_equal(read.decode_numpy(nonull, Z), pdfstore.decode(nonull, Z))


def test_numpy_decoder_rejects_what_numba_rejects():
    """Random corruption of encoded values: both decoders raise the same ValueError
    (same first corrupt row) or return the same bits."""
    p = synthetic(n_random=40)
    vals = pdfstore.encode(p, Z).to_pylist()
    rng = np.random.default_rng(12)
    n_raised = 0
    for _ in range(600):
        v = list(vals)
        for _ in range(int(rng.integers(1, 3))):
            i = int(rng.integers(len(v)))
            b = bytearray(v[i] or b"")
            op = int(rng.integers(5))
            if op == 0 and b:
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
            elif op == 1 and b:
                del b[int(rng.integers(len(b))):]
            elif op == 2:
                b.insert(int(rng.integers(len(b) + 1)), int(rng.integers(256)))
            elif op == 3:
                b += bytes(rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8))
            else:
                b[1:1] = b"\x80\x80\x80\x80\x80"   # a varint longer than 5 bytes
            v[i] = bytes(b)
        arr = pa.array(v, pa.binary())
        out = []
        for f in (pdfstore.decode, read.decode_numpy):
            try:
                out.append(f(arr, Z))
            except ValueError as exc:
                out.append(str(exc))
        if isinstance(out[0], str) or isinstance(out[1], str):
            assert out[0] == out[1]
            n_raised += 1
        else:
            assert bits_equal(out[0], out[1])
    assert n_raised > 500


def test_decoder_speeds_are_reported(capsys):
    """Not a timing assertion: prints both decoders' speed on 50k real-looking PDFs
    (docs/pdf_format.md has the measured figures)."""
    rng = np.random.default_rng(1)
    mu, s = rng.uniform(0.1, 2.5, 50_000), rng.uniform(0.02, 0.2, 50_000)
    arr = pdfstore.encode(np.exp(-0.5 * ((Z - mu[:, None]) / s[:, None]) ** 2), Z)
    pdfstore.decode(arr[:10], Z)
    for name, f in (("numba", pdfstore.decode), ("numpy", read.decode_numpy)):
        t = time.perf_counter()
        f(arr, Z)
        print(f"{name}: {len(arr) / (time.perf_counter() - t):,.0f} objects/s")


# --------------------------------------------------------------------------
# to_ensemble / pdf_grid
# --------------------------------------------------------------------------

def test_to_ensemble_on_release_rows(estimates, tmp_path):
    import qp

    t = release_table(estimates)
    for algo in ALGOS:
        full = pdfstore.decode(t.column(f"{algo}_pdf"), Z)
        ens = read.to_ensemble(t, algo)
        assert isinstance(ens, qp.Ensemble) and ens.npdf == t.num_rows
        assert bits_equal(ens.objdata["yvals"], full)
        np.testing.assert_array_equal(ens.metadata["xvals"], Z)
        np.testing.assert_array_equal(ens.ancil["objectId"], t.column("objectId").to_numpy())
        z, y = read.pdf_grid(t, algo)
        assert bits_equal(z, Z) and bits_equal(y, full)
        # a filter on objectId: exactly those rows
        ids = t.column("objectId").to_numpy()
        pick = np.sort(ids[[3, 17, 150]])
        sub = t.filter(pc.is_in(t.column("objectId"), pa.array(pick)))
        e = read.to_ensemble(sub, algo)
        assert e.npdf == 3
        assert bits_equal(e.objdata["yvals"], full[np.isin(ids, pick)])
    # one row group of a parquet file (the metadata travels in the file schema)
    path = tmp_path / "part.parquet"
    pq.write_table(t, path, row_group_size=100, compression="zstd")
    pf = pq.ParquetFile(path)
    assert pf.metadata.num_row_groups == 3
    rg = pf.read_row_group(1)
    algo = ALGOS[0]
    e = read.to_ensemble(rg, algo)
    assert bits_equal(e.objdata["yvals"], pdfstore.decode(t.column(f"{algo}_pdf"), Z)[100:200])
    # a RecordBatch works too
    batch = t.to_batches(max_chunksize=50)[0]
    assert bits_equal(read.pdf_grid(batch, algo)[1],
                      pdfstore.decode(t.column(f"{algo}_pdf"), Z)[:50])


def test_metadata_sources_and_priority(estimates, tmp_path):
    algo = ALGOS[0]
    t = release_table(estimates)
    col = f"{algo}_pdf"
    arr = t.column(col)
    # field metadata wins over the schema JSON
    z2 = [0.0, 3.0, 301]
    sch = t.schema
    pz = json.loads(sch.metadata[b"pzpipe"])
    pz["pdf_columns"][col]["zgrid"] = [0.0, 6.0, 301]
    pz["zgrid"] = [0.0, 6.0, 301]
    t2 = t.replace_schema_metadata({"pzpipe": json.dumps(pz)})
    info = read.pdf_info(t2, algo)
    assert info["source"] == f"field metadata of '{col}'" and bits_equal(info["zgrid"], Z)
    # without field metadata: the schema's pdf_columns entry
    t3 = release_table(estimates, with_field_meta=False)
    t3 = t3.replace_schema_metadata({"pzpipe": json.dumps(pz)})
    info = read.pdf_info(t3, algo)
    assert info["source"] == "schema metadata 'pzpipe'" and info["zgrid"][-1] == 6.0
    # explicit zgrid beats everything
    zx = np.linspace(0, 3, 301)
    assert read.pdf_info(t3, algo, zgrid=zx)["source"] == "zgrid= argument"
    # pandas: metadata lost -> attrs, then release=
    df = release_table(estimates, with_field_meta=False, with_schema_meta=False).to_pandas()
    with pytest.raises(ValueError, match="release="):
        read.pdf_grid(df, algo)
    df.attrs["pzpipe"] = json.dumps({"zgrid": z2, "pdf_encoding": pdfstore.ENCODING})
    assert read.pdf_info(df, algo)["source"] == "DataFrame.attrs['pzpipe']"
    del df.attrs["pzpipe"]
    rel = tmp_path / "release"
    (rel / "dataset").mkdir(parents=True)
    pq.write_metadata(t.schema, rel / "dataset" / "_common_metadata")
    for r in (rel, str(rel), rel / "dataset" / "_common_metadata", t.schema):
        z, y = read.pdf_grid(df, algo, release=r)
        assert bits_equal(y, pdfstore.decode(arr, Z))
    # a release with parquet files only (no _common_metadata)
    rel2 = tmp_path / "release2"
    (rel2 / "dataset").mkdir(parents=True)
    pq.write_table(t, rel2 / "dataset" / "part-b000000.parquet")
    assert read.pdf_info(df, algo, release=rel2)["source"] == f"release field metadata of '{col}'"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no dataset/_common_metadata"):
        read.pdf_info(df, algo, release=empty)
    # an encoding this reader does not know is refused
    bad = t.schema.field(col).with_metadata({"pdf_encoding": "pzpipe-qcdf-d3/2",
                                             "zgrid": json.dumps(z2)})
    t4 = t.set_column(t.schema.get_field_index(col), bad, arr)
    with pytest.raises(ValueError, match="pzpipe-qcdf-d3/2"):
        read.to_ensemble(t4, algo)


def test_column_choice_and_errors(estimates):
    algo = ALGOS[0]
    t = release_table(estimates)
    with pytest.raises(KeyError, match="several PDF columns"):
        read.pdf_grid(t)
    with pytest.raises(KeyError, match="no column 'nope_pdf'"):
        read.pdf_grid(t, "nope")
    one = t.select(["objectId", f"{algo}_pdf"])
    assert read.pdf_info(one)["column"] == f"{algo}_pdf"
    # an internal estimate file: un-prefixed 'pdf', algorithm in the pzpipe JSON
    internal = estimates[algo].replace_schema_metadata({"pzpipe": json.dumps({
        "algorithm": algo, "zgrid": [0.0, 3.0, 301], "pdf_encoding": pdfstore.ENCODING})})
    ref = pdfstore.decode(internal.column("pdf"), Z)
    for a in (None, algo):
        ens = read.to_ensemble(internal, a)
        assert bits_equal(ens.objdata["yvals"], ref)
        assert list(ens.ancil) == ["object_id"]
    other = next(a for a in ("bpz", "knn") if a != algo)
    with pytest.raises(KeyError, match=f"holds {algo} PDFs"):
        read.to_ensemble(internal, other)
    with pytest.raises(TypeError, match="binary"):
        read.decode(pa.array([1.0, 2.0]), Z)


def test_null_pdfs_are_nan_rows_with_a_warning():
    p = synthetic(n_random=3)
    t = pa.table({"objectId": np.arange(len(p)), "x_pdf": pdfstore.encode(p, Z)})
    with pytest.warns(RuntimeWarning, match="2 of 15 PDFs"):
        ens = read.to_ensemble(t, "x", zgrid=Z)
    y = ens.objdata["yvals"]
    assert np.isnan(y[10]).all() and np.isnan(y[11]).all() and np.isfinite(y[:10]).all()


def test_pandas_frames(estimates):
    import pandas as pd

    algo = ALGOS[-1]
    t = release_table(estimates)
    ref = pdfstore.decode(t.column(f"{algo}_pdf"), Z)
    for df in (t.to_pandas(), t.to_pandas(types_mapper=pd.ArrowDtype)):
        keep = df["objectId"].to_numpy() % 3 == 0
        sub = df[keep]
        rows = np.flatnonzero(keep)
        ens = read.to_ensemble(sub, algo, release=t.schema)
        assert bits_equal(ens.objdata["yvals"], ref[rows])
        np.testing.assert_array_equal(ens.ancil["objectId"], df["objectId"].to_numpy()[rows])


def test_lsdb_cone_search_rows(estimates, tmp_path):
    """A HATS catalog written by lsdb, with the release metadata in _common_metadata:
    a cone search's rows (a NestedFrame, Arrow metadata lost) decode with release=."""
    lsdb = pytest.importorskip("lsdb")
    import pandas as pd

    algo = ALGOS[0]
    t = release_table(estimates)
    df = t.to_pandas(types_mapper=pd.ArrowDtype)
    cat = lsdb.from_dataframe(df, ra_column="coord_ra", dec_column="coord_dec",
                              catalog_name="pz", margin_threshold=None)
    path = tmp_path / "pz"
    cat.write_catalog(path)
    cm = path / "pz" / "dataset" / "_common_metadata"   # lsdb writes a collection
    sch = pq.read_schema(cm)
    fields = [t.schema.field(f.name).with_type(f.type) if f.name in t.schema.names else f
              for f in sch]
    pq.write_metadata(pa.schema(fields, metadata={**(sch.metadata or {}),
                                                  b"pzpipe": t.schema.metadata[b"pzpipe"]}), cm)
    opened = lsdb.open_catalog(path)
    rows = opened.cone_search(ra=55, dec=-35, radius_arcsec=3 * 3600).compute()
    assert 0 < len(rows) < t.num_rows
    ids = t.column("objectId").to_numpy()
    ref = pdfstore.decode(t.column(f"{algo}_pdf"), Z)
    order = np.searchsorted(ids, rows["objectId"].to_numpy())   # ids are sorted
    assert np.all(np.diff(ids) > 0)
    with pytest.raises(TypeError, match="compute"):      # a lazy catalog is not densified
        read.to_ensemble(opened, algo, release=path)
    for release in (path, opened):
        ens = read.to_ensemble(rows, algo, release=release)
        assert bits_equal(ens.objdata["yvals"], ref[order])
        np.testing.assert_array_equal(ens.ancil["objectId"], rows["objectId"].to_numpy())


def test_reader_works_without_numba(estimates, tmp_path):
    """In a process where numba, rail and snakemake cannot be imported, pzpipe.release.read
    imports, uses the numpy decoder and gives the same bits."""
    algo = ALGOS[0]
    t = release_table(estimates)
    path = tmp_path / "rows.parquet"
    pq.write_table(t, path)
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numba', 'rail', 'snakemake'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, pyarrow.parquet as pq
from pzpipe.release.read import to_ensemble, _fast_decoder
assert _fast_decoder() is None
ens = to_ensemble(pq.read_table({str(path)!r}), {algo!r})
np.save({str(tmp_path / 'y.npy')!r}, ens.objdata['yvals'])
assert 'numba' not in sys.modules and 'pzpipe.release.pdfstore' not in sys.modules
"""
    env = dict(os.environ, PYTHONPATH=str(REPO / "workflow" / "src"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert bits_equal(np.load(tmp_path / "y.npy"), pdfstore.decode(t.column(f"{algo}_pdf"), Z))


# --------------------------------------------------------------------------
# a clean venv with the [read] extra only
# --------------------------------------------------------------------------

@pytest.mark.slow
def test_clean_venv_read_extra(estimates, tmp_path, tmp_path_factory):
    from helpers.venvs import read_venv, run_in

    venv, rec = read_venv(tmp_path_factory)          # one per session (test_collection too)
    install_s = rec["install_s"]
    py = str(venv / "bin" / "python")
    for mod in ("rail", "snakemake"):
        r = run_in(venv, ["python", "-c", f"import {mod}"])
        assert r.returncode != 0 and "No module named" in r.stderr, mod
    # numba is installed with lsdb (hats needs it: the README's snippets open the release
    # with lsdb), but neither the reader nor `pzpipe verify` imports it or lsdb
    r = run_in(venv, ["python", "-c", "import sys, pzpipe.release.read, pzpipe.release.verify; "
                      "assert 'lsdb' not in sys.modules and 'numba' not in sys.modules"])
    assert r.returncode == 0, r.stderr[-2000:]
    t = release_table(estimates)
    path = tmp_path / "release_rows.parquet"
    pq.write_table(t, path, row_group_size=128)
    script = f"""
import numpy as np, pyarrow.parquet as pq, qp
from pzpipe.release.read import to_ensemble, pdf_grid
import pzpipe.release.read
assert pzpipe.release.read.__file__.startswith({str(venv)!r}), pzpipe.release.read.__file__
rows = pq.ParquetFile({str(path)!r}).read_row_group(1)
out = {{}}
for algo in {ALGOS!r}:
    ens = to_ensemble(rows, algo)
    assert isinstance(ens, qp.Ensemble)
    out[algo] = ens.objdata["yvals"]
    out[algo + "_id"] = ens.ancil["objectId"]
    z, y = pdf_grid(rows, algo)
    assert np.array_equal(y, out[algo], equal_nan=True)
np.savez({str(tmp_path / 'out.npz')!r}, **out)
"""
    r = subprocess.run([py, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items()
                                          if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for algo in ALGOS:
        ref = pdfstore.decode(t.column(f"{algo}_pdf"), Z)[128:256]
        assert bits_equal(got[algo], ref)
        np.testing.assert_array_equal(got[algo + "_id"], t.column("objectId").to_numpy()[128:256])
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"clean venv with [read]: install {install_s} s, {size / 2**20:.0f} MiB")


def test_standalone_decoder_of_the_spec(estimates):
    """The ~30-line decoder printed in docs/pdf_format.md gives the same bits."""
    import re

    doc = (REPO / "docs" / "pdf_format.md").read_text()
    section = doc.split("## A standalone decoder", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    ns: dict = {}
    exec(compile(code, "docs/pdf_format.md", "exec"), ns)
    for algo in ALGOS:
        arr = estimates[algo].column("pdf")
        mine = np.array([ns["decode_pdf"](v, Z) for v in arr.to_pylist()])
        assert bits_equal(mine, read.decode_numpy(arr, Z))
    p = synthetic(n_random=5)
    for bits in (1, 10, 20):
        arr = pdfstore.encode(p, Z, bits=bits)
        mine = np.array([ns["decode_pdf"](v, Z) for v in arr.to_pylist()])
        assert bits_equal(mine, pdfstore.decode(arr, Z))
