"""pzpipe.release.pdfstore: round trips, the CDF bound on every object, bytes/object.

Realistic PDFs come from RAIL kNN (trained on 2,000 DC2 objects) and BPZ
(pzpipe.algorithms.bpz_fast, HDFN prior) on random DC2 validation objects; synthetic ones
cover narrow, bimodal, flat, delta, edge, noisy, tiny/huge-scale, zero and
NaN PDFs.
"""
from __future__ import annotations

import io
import json
import shutil
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pzpipe.release import pdfstore as ps
from pzpipe.release.read import to_ensemble

Z = np.linspace(0.0, 3.0, 301)
TOL = 1e-3


def _gauss(z, mu, s):
    return np.exp(-0.5 * ((z - mu) / s) ** 2)


def synthetic(z=Z, n_random=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        _gauss(z, 1.0, 0.05),                       # normal
        _gauss(z, 0.7, 0.001),                      # narrower than a bin
        _gauss(z, 0.5, 0.03) + 0.4 * _gauss(z, 2.1, 0.1),   # bimodal
        np.ones_like(z),                            # flat
        np.where(np.arange(z.size) == 120, 7.0, 0.0),   # delta on a node
        np.where(np.arange(z.size) == 0, 1.0, 0.0),     # delta at zmin
        np.where(np.arange(z.size) == z.size - 1, 1.0, 0.0),  # delta at zmax
        (z > 1.2).astype(float),                    # step to the end
        _gauss(z, 1.5, 3.0),                        # very broad
        _gauss(z, 1.0, 0.05) - 1e-17,               # negative rounding noise
        1e-300 * _gauss(z, 1.0, 0.2),               # tiny scale
        1e300 * _gauss(z, 2.0, 0.2),                # huge scale
        _gauss(z, 0.0, 0.02),                       # half a peak at zmin
    ]
    noisy = rng.random((n_random, z.size)) ** 3     # worst case: white noise
    comb = np.zeros((20, z.size))
    for i in range(20):                              # many narrow peaks
        for mu in rng.uniform(z[0], z[-1], 6):
            comb[i] += rng.uniform(0.1, 1) * _gauss(z, mu, 0.004)
    return np.vstack([np.array(rows), noisy, comb])


def col_bytes(arr, **kw):
    buf = io.BytesIO()
    kw = {"compression": "zstd", **kw}
    pq.write_table(pa.table({"pdf": arr}), buf, **kw)
    md = pq.ParquetFile(io.BytesIO(buf.getvalue())).metadata
    return sum(md.row_group(i).column(0).total_compressed_size for i in range(md.num_row_groups)) / len(arr)


def check_roundtrip(p, z=Z, bits=10, tol=TOL):
    arr = ps.encode(p, z, bits=bits, cdf_tol=tol)
    assert isinstance(arr, pa.Array) and len(arr) == len(p)
    dec = ps.decode(arr, z)
    assert dec.shape == p.shape and dec.dtype == np.float64
    ok = ps.valid_mask(arr)
    assert np.isnan(dec[~ok]).all()
    d = dec[ok]
    assert np.isfinite(d).all() and (d >= 0).all()
    np.testing.assert_allclose(np.trapezoid(d, z, axis=1), 1.0, rtol=0, atol=1e-12)
    node, anywhere = ps.error_bound(z, bits, tol)
    e1 = ps.max_cdf_error(p[ok], d, z)
    e16 = ps.max_cdf_error(p[ok], d, z, refine=16)
    assert np.all(e1 <= node + 1e-12), e1.max()
    assert np.all(e16 <= anywhere + 1e-12), e16.max()
    return arr, dec, e16


# ---------------------------------------------------------------- synthetic

def test_synthetic_roundtrip_and_bound():
    p = synthetic()
    arr, dec, err = check_roundtrip(p)
    assert arr.null_count == 0
    assert err.max() <= TOL
    # a delta on a node comes back exactly
    np.testing.assert_allclose(dec[4], np.where(np.arange(301) == 120, 1 / 0.01, 0.0))
    # a realistic smooth PDF costs little, white noise more (but bounded)
    assert len(arr[0].as_py()) < 40
    assert max(len(v) for v in arr.to_pylist()) <= 1 + 2 + 301 * 2


@pytest.mark.parametrize("bits", [10, 11, 12, 14])
def test_bits_and_tolerances(bits):
    p = synthetic(n_random=50, seed=bits)
    check_roundtrip(p, bits=bits)
    check_roundtrip(p, bits=bits, tol=None)          # plain rounding
    arr = ps.encode(p, Z, bits=bits, cdf_tol=None)
    err = ps.max_cdf_error(p, ps.decode(arr, Z), Z)
    assert err.max() <= 2.0 ** -(bits + 1) + 1e-12


def test_small_bits_fall_back_to_rounding():
    p = synthetic(n_random=20)
    node, anywhere = ps.error_bound(Z, 9, TOL)
    assert node == pytest.approx(2.0 ** -10) and anywhere > TOL   # no 1e-3 guarantee at 9 bits
    check_roundtrip(p, bits=9)
    node, anywhere = ps.error_bound(Z, 10, TOL)
    assert anywhere <= TOL and node < anywhere


def test_invalid_rows_are_null_and_nan():
    p = synthetic(n_random=3)
    bad = np.zeros((5, Z.size))
    bad[1, 10] = np.nan
    bad[2, :] = -1.0
    bad[3, 5] = np.inf
    bad[4, :] = np.nan
    allp = np.vstack([p[:3], bad, p[3:]])
    arr = ps.encode(allp, Z)
    assert arr.null_count == 5
    valid = ps.valid_mask(arr)
    np.testing.assert_array_equal(valid, ~np.isin(np.arange(len(allp)), np.arange(3, 8)))
    dec = ps.decode(arr, Z)
    assert np.isnan(dec[~valid]).all() and not np.isnan(dec[valid]).any()
    err = ps.max_cdf_error(allp, dec, Z)
    assert np.isnan(err[~valid]).all() and (err[valid] <= TOL).all()


def test_nonuniform_grid_and_float32():
    z = np.concatenate([np.linspace(0, 1, 200, endpoint=False), np.linspace(1, 4, 60)])
    p = np.delete(synthetic(z=z, n_random=30), 11, axis=0).astype(np.float32)  # 11: 1e300
    _, _, err = check_roundtrip(p, z=z)
    assert err.max() <= TOL


def test_arrow_forms_and_parquet_roundtrip(tmp_path):
    p = synthetic(n_random=10)
    ids = np.arange(len(p), dtype=np.int64) + 1000
    arr = ps.encode(p, Z)
    dec = ps.decode(arr, Z)
    # slices, chunked arrays, single rows
    np.testing.assert_array_equal(ps.decode(arr.slice(5, 7), Z), dec[5:12])
    ch = pa.chunked_array([arr.slice(0, 4), arr.slice(4)])
    np.testing.assert_array_equal(ps.decode(ch, Z), dec)
    np.testing.assert_array_equal(ps.decode(ps.encode(p[3], Z), Z)[0], dec[3])
    np.testing.assert_array_equal(ps.decode(arr.cast(pa.large_binary()), Z), dec)
    # rows encoded with different bits can share a column
    mixed = pa.concat_arrays([arr, ps.encode(p, Z, bits=13)])
    dm = ps.decode(mixed, Z)
    np.testing.assert_array_equal(dm[:len(p)], dec)
    assert ps.max_cdf_error(p, dm[len(p):], Z).max() <= ps.error_bound(Z, 13)[1]
    # parquet with metadata, as the pipeline writes it
    meta = {b"pzpipe": json.dumps({"zgrid": ps.zgrid_metadata(Z), "pdf_encoding": ps.ENCODING}).encode()}
    table = pa.table({"object_id": ids, "pdf": arr}).replace_schema_metadata(meta)
    path = tmp_path / "est.parquet"
    pq.write_table(table, path, compression="zstd", row_group_size=7)
    back = pq.read_table(path)
    assert isinstance(back.column("pdf"), pa.ChunkedArray)
    np.testing.assert_array_equal(ps.decode(back.column("pdf"), Z), dec)
    np.testing.assert_array_equal(ps.zgrid_from_metadata(back.schema.metadata), Z)
    # empty
    e = ps.encode(np.zeros((0, Z.size)), Z)
    assert len(e) == 0 and ps.decode(e, Z).shape == (0, Z.size)


def test_to_ensemble(tmp_path):
    import qp

    p = synthetic(n_random=5)
    p[7] = np.nan  # one invalid row
    arr = ps.encode(p, Z)
    ids = np.arange(len(p), dtype=np.int64) + 5
    meta = {b"pzpipe": json.dumps({"zgrid": [0.0, 3.0, 301], "algorithm": "x"}).encode()}
    table = pa.table({"object_id": ids, "z_mode": np.zeros(len(p)), "pdf": arr}).replace_schema_metadata(meta)
    dec = ps.decode(arr, Z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # qp warns about the NaN row
        for src in (table,):
            ens = to_ensemble(src, None)
            assert isinstance(ens, qp.Ensemble) and ens.npdf == len(p)
            np.testing.assert_array_equal(ens.ancil["object_id"], ids)
            got = ens.pdf(Z)
            ok = ~np.isnan(dec).any(axis=1)
            np.testing.assert_allclose(got[ok], dec[ok], rtol=1e-12, atol=1e-12)
            assert np.isnan(got[~ok]).all()
        # explicit grid wins; no grid at all is an error
        ens = to_ensemble(table.replace_schema_metadata(None), None, zgrid=Z)
        np.testing.assert_allclose(ens.pdf(Z)[0], dec[0], rtol=1e-12)
    with pytest.raises(ValueError):
        to_ensemble(table.replace_schema_metadata(None), None)


def test_errors():
    p = synthetic(n_random=2)
    with pytest.raises(ValueError):
        ps.encode(p[:, :100], Z)
    with pytest.raises(ValueError):
        ps.encode(p, Z[::-1])
    with pytest.raises(ValueError):
        ps.encode(p, Z, bits=0)
    arr = ps.encode(p, Z)
    with pytest.raises(ValueError):   # values reach beyond a shorter grid
        ps.decode(arr, Z[:50])
    corrupt = pa.array([b"\x0a\x00\x05", b"\x0a"], pa.binary())
    with pytest.raises(ValueError):
        ps.decode(corrupt, Z)
    with pytest.raises(TypeError):
        ps.decode(pa.array([1, 2]), Z)
    assert isinstance(ps.ENCODING, str) and "/" in ps.ENCODING


# ---------------------------------------------------------------- realistic

def _dc2(name):
    import tables_io
    from rail.utils.path_utils import find_rail_file

    d = tables_io.read(find_rail_file(f"examples_data/testdata/{name}"))["photometry"]
    return {k: np.asarray(v) for k, v in d.items()}


BANDS = "ugrizy"
COMMON = dict(bands=[f"mag_{b}_lsst" for b in BANDS], err_bands=[f"mag_err_{b}_lsst" for b in BANDS],
              ref_band="mag_i_lsst", hdf5_groupname="", id_col="id")


@pytest.fixture(scope="module")
def dc2():
    rng = np.random.default_rng(7)
    tr = _dc2("test_dc2_training_9816.hdf5")
    va = _dc2("test_dc2_validation_9816.hdf5")   # sorted by redshift: shuffle
    it = rng.permutation(len(tr["id"]))[:2000]
    iv = rng.permutation(len(va["id"]))[:1500]
    return {k: v[it] for k, v in tr.items()}, {k: v[iv] for k, v in va.items()}


@pytest.fixture(scope="module")
def knn_pdfs(dc2, tmp_path_factory):
    pytest.importorskip("rail.estimation.algos.k_nearneigh")
    from rail.core.data import DataStore
    from rail.estimation.algos.k_nearneigh import KNearNeighEstimator, KNearNeighInformer

    DataStore.allow_overwrite = True
    train, valid = dc2
    model = str(tmp_path_factory.mktemp("knn") / "knn.pkl")
    cp = lambda d: {k: np.array(v, copy=True) for k, v in d.items()}  # noqa: E731
    KNearNeighInformer.make_stage(name="ps_knn_inf", model=model, **COMMON).inform(cp(train))
    est = KNearNeighEstimator.make_stage(name="ps_knn_est", model=model, output_mode="return", **COMMON)
    ens = est.estimate(cp({k: v[:600] for k, v in valid.items()})).data
    return np.asarray(ens.pdf(Z), dtype=np.float64)


@pytest.fixture(scope="module")
def bpz_pdfs(dc2, tmp_path_factory):
    pytest.importorskip("numba")
    from rail.utils.path_utils import find_rail_file

    from pzpipe.algorithms.bpz_fast import FastBPZ

    d = tmp_path_factory.getbasetemp() / "bpz_data"   # shared with test_algo_bpz
    if not (d / "AB").exists() or len(list((d / "AB").glob("*.AB"))) < 48:
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(find_rail_file("examples_data/estimation_data/data"), d)
    hdfn = dict(fo_arr=np.array([0.35, 0.5]), kt_arr=np.array([0.45, 0.147]),
                zo_arr=np.array([0.431, 0.39, 0.0626]), km_arr=np.array([0.0913, 0.0636, 0.123]),
                a_arr=np.array([2.465, 1.806, 0.906]), mo=20.0, nt_array=[1, 2, 5])
    fb = FastBPZ({"priormodel": hdfn, "zp_offsets": {"offsets": np.zeros(6)}},
                 dict(bpz_ref_data_path=str(d)))
    pdf, _ = fb.estimate(dc2[1])
    return pdf


@pytest.mark.parametrize("algo", ["knn", "bpz"])
def test_realistic_bytes_and_bound(algo, request):
    p = request.getfixturevalue(f"{algo}_pdfs")
    arr, dec, err = check_roundtrip(p)
    assert arr.null_count == 0
    assert err.max() <= TOL
    b_default = col_bytes(arr)                      # pyarrow defaults + zstd
    b_tuned = col_bytes(arr, **{k: v for k, v in ps.PARQUET_KWARGS.items() if k != "compression"})
    print(f"{algo}: {len(p)} objects, {b_default:.1f} B/object (zstd defaults), "
          f"{b_tuned:.1f} (PARQUET_KWARGS), worst CDF error {err.max():.2e}")
    assert b_default <= 40.0
    assert b_tuned <= b_default + 0.5
    # at least as small as plain rounding to 10 bits (the baseline)
    assert b_tuned <= col_bytes(ps.encode(p, Z, bits=10, cdf_tol=None), use_dictionary=False) + 0.5


def _previous_encode_block():
    """The single-loop encoder pzpipe used before (verbatim): the current one must write
    the same bytes."""
    from numba import njit

    @njit(cache=False, error_model="numpy")
    def enc(pdfs, w, bits, T, buf, ends, valid):
        n_rows, nz = pdfs.shape
        M = 1 << bits
        MA = np.empty(nz)
        inc = np.empty(nz, np.int64)
        pos = 0
        for i in range(n_rows):
            row = pdfs[i]
            ok = True
            pmax = 0.0
            for j in range(nz):
                v = row[j]
                if not np.isfinite(v):
                    ok = False
                    break
                if v > pmax:
                    pmax = v
            if not ok or pmax <= 0.0:
                valid[i] = False
                ends[i] = pos
                continue
            valid[i] = True
            s = 0.0
            for j in range(nz):
                v = row[j]
                if v < 0.0:
                    v = 0.0
                s += (v / pmax) * w[j]
                MA[j] = s
            scale = M / s
            for j in range(nz):
                MA[j] = MA[j] * scale
            MA[nz - 1] = M
            prev = 0
            i1 = 0
            i2 = 0
            for j in range(nz):
                x = MA[j]
                lo = int(np.ceil(x - T))
                hi = int(np.floor(x + T))
                if lo < prev:
                    lo = prev
                if hi > M:
                    hi = M
                pred = 2 * i1 - i2
                if pred < 0:
                    pred = 0
                q = prev + pred
                if q < lo:
                    q = lo
                if q > hi:
                    q = hi
                if j == nz - 1:
                    q = M
                d = q - prev
                inc[j] = d
                i2 = i1
                i1 = d
                prev = q
            first = 0
            while inc[first] == 0:
                first += 1
            last = nz - 1
            while inc[last] == 0:
                last -= 1
            buf[pos] = bits
            pos += 1
            pos = ps._put_varint(buf, pos, first)
            n1 = 0
            n2 = 0
            for j in range(first, last + 1):
                d2 = inc[j] - 2 * n1 + n2
                zz = (d2 << 1) if d2 >= 0 else ((-d2) << 1) - 1
                pos = ps._put_varint(buf, pos, zz)
                n2 = n1
                n1 = inc[j]
            ends[i] = pos
        return pos

    return enc


def _hostile(z, n=3000, seed=4):
    rng = np.random.default_rng(seed)
    m = len(z)
    mu = rng.uniform(-0.2, z[-1] + 0.2, (n, 1))
    s = 10 ** rng.uniform(-3.5, 0, (n, 1))
    p = np.exp(-0.5 * ((z[None] - mu) / s) ** 2) * 10 ** rng.uniform(-5, 5, (n, 1))
    k = n // 8
    p[:k] += np.exp(-0.5 * ((z[None] - rng.uniform(0, z[-1], (k, 1))) / 0.05) ** 2)
    p[k:2 * k] = rng.random((k, m)) ** 8
    p[2 * k:2 * k + 50] = 0.0
    p[2 * k:2 * k + 50, rng.integers(0, m, 50)] = 1.0
    p[2 * k + 50:2 * k + 100] *= rng.choice([-1.0, 1.0], (50, m))
    p[2 * k + 100:2 * k + 110] = 0.0
    p[2 * k + 110:2 * k + 120] = -1.0
    p[2 * k + 120, 7] = np.nan
    p[2 * k + 121, 9] = np.inf
    p[2 * k + 122, :] = -np.inf
    p[2 * k + 123:2 * k + 133] *= 1e-318
    p[2 * k + 133:2 * k + 143] = rng.random((10, m)) * 1e307
    p[2 * k + 143:2 * k + 153, -1] = 1e3
    p[2 * k + 153:2 * k + 163, 0] = 1e3
    p[2 * k + 163:2 * k + 173, :] = 1.0
    return p


@pytest.mark.parametrize("bits,tol", [(10, 1e-3), (10, None), (4, 1e-3), (16, 1e-3),
                                      (20, 1e-4), (1, None), (8, 1e-1)])
def test_encoder_bytes_equal_previous_encoder(bits, tol):
    """The restructured encoder writes exactly the bytes (and offsets, validity) of the
    single-loop encoder it replaced, on regular and irregular grids."""
    prev = _previous_encode_block()
    zi = np.sort(np.concatenate([[0.0, 3.0], np.random.default_rng(1).uniform(0, 3, 98)]))
    for z in (Z, zi):
        p = _hostile(z)
        T = ps._band(z, bits, tol)
        w = ps.node_weights(z)
        n, nz = p.shape
        out = []
        for kern in (ps._encode_block, prev):
            buf = np.empty(n * (6 + 4 * nz), np.uint8)
            ends = np.empty(n, np.int64)
            valid = np.empty(n, np.bool_)
            used = kern(p, w, bits, T, buf, ends, valid)
            out.append((buf[:used].tobytes(), ends, valid))
        assert out[0][0] == out[1][0]
        np.testing.assert_array_equal(out[0][1], out[1][1])
        np.testing.assert_array_equal(out[0][2], out[1][2])
