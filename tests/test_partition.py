import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers.inputs import flux_config, make_flux_table, write_parquet
from pzpipe import PipelineError
from pzpipe.run.layout import make_layout
from pzpipe.stages.partition import (FLAG_BAD_ERR, read_meta, run_batch, transform)


def _cfg(tmp_path, n=300, **over):
    cols = make_flux_table(n)
    p = write_parquet(tmp_path / "obj.parquet", cols)
    return flux_config([p], **over), cols


def test_flux_to_mag_and_errors(tmp_path):
    cfg, cols = _cfg(tmp_path)
    raw = {k: v for k, v in cols.items()}
    raw["g_gaap1p0Flux"] = raw["g_gaap1p0Flux"].copy()
    raw["g_gaap1p0Flux"][:3] = [3631e9, 1.0, 100.0]      # 0 mag, 31.4 mag, 26.4 mag
    raw["g_gaap1p0FluxErr"][:3] = [3631e8, 0.1, 10.0]
    sk, st = transform(raw, cfg)
    np.testing.assert_allclose(sk["mag_g_lsst"][:3], [31.4 - 2.5 * np.log10(3631e9), 31.4, 26.4],
                               rtol=1e-6)
    np.testing.assert_allclose(sk["mag_err_g_lsst"][:3], 2.5 / np.log(10) * 0.1, rtol=1e-5)
    assert st["rows_in"] == st["rows_out"] == 300


def test_nondetections_flagged_not_dropped(tmp_path):
    cfg, cols = _cfg(tmp_path)
    raw = dict(cols)
    f = raw["u_gaap1p0Flux"].copy()
    f[0], f[1], f[2], f[3] = np.nan, np.inf, 0.0, -3.0
    raw["u_gaap1p0Flux"] = f
    sk, st = transform(raw, cfg)
    assert st["rows_out"] == 300
    assert np.all(sk["mag_u_lsst"][:4] == 99.0)
    assert np.all(sk["flags"][:4] & 1)                      # bit 0 = band u
    # non-detection error is the 1-sigma limiting magnitude
    lim = -2.5 * np.log10(raw["u_gaap1p0FluxErr"][0]) + 31.4
    assert sk["mag_err_u_lsst"][0] == pytest.approx(lim, rel=1e-6)


def test_detection_without_usable_error_is_flagged(tmp_path):
    cfg, cols = _cfg(tmp_path)
    raw = dict(cols)
    e = raw["r_gaap1p0FluxErr"].copy()
    e[5] = np.nan
    raw["r_gaap1p0FluxErr"] = e
    sk, st = transform(raw, cfg)
    assert sk["flags"][5] & FLAG_BAD_ERR and sk["mag_r_lsst"][5] == 99.0
    assert st["bad_err"] == 1


def test_all_nan_rows_are_cut_and_counted(tmp_path):
    cfg, cols = _cfg(tmp_path)
    raw = dict(cols)
    for b in "ugrizy":
        raw[f"{b}_gaap1p0Flux"] = raw[f"{b}_gaap1p0Flux"].copy()
        raw[f"{b}_gaap1p0Flux"][:7] = np.nan
    sk, st = transform(raw, cfg)
    assert st["cut"]["no_detections"] == 7 and st["rows_out"] == 293
    assert st["rows_in"] == st["rows_out"] + sum(st["cut"].values())


def test_cuts_in_order(tmp_path):
    cfg, cols = _cfg(tmp_path, partition={"cuts": {"require_true": ["detect_isPrimary"],
                                                   "ref_mag_max": 24.0, "max_mag_err": 0.5}})
    raw = dict(cols)
    raw["detect_isPrimary"] = raw["detect_isPrimary"].copy()
    raw["detect_isPrimary"][:10] = False
    sk, st = transform(raw, cfg)
    assert st["cut"]["require_true"] == 10
    assert st["rows_in"] == st["rows_out"] + sum(st["cut"].values())
    assert np.all(sk["mag_i_lsst"] <= 24.0)


def test_deredden_and_rounding(tmp_path):
    cols = make_flux_table(50)
    cols["ebv"] = np.full(50, 0.1)
    p = write_parquet(tmp_path / "o.parquet", cols)
    coeff = {b: 1.0 for b in "ugrizy"}
    base = flux_config([p])
    cfg = flux_config([p], columns={"ebv": "ebv"},
                      partition={"deredden": {"enabled": True, "coefficients": coeff},
                                 "round_decimals": 2})
    a, _ = transform(dict(cols), base)
    b, _ = transform(dict(cols), cfg)
    det = a["mag_g_lsst"] != 99
    np.testing.assert_allclose(b["mag_g_lsst"][det], np.round(a["mag_g_lsst"][det] - 0.1, 2), atol=1e-4)


def test_run_batch_row_group_per_chunk(tmp_path):
    cols = make_flux_table(250)
    p = write_parquet(tmp_path / "o.parquet", cols, row_group_size=64)
    cfg = flux_config([p], partition={"chunk_rows": 100}, batch={"chunks_per_batch": 2})
    lay = make_layout(cfg)
    assert lay.n_batches == 2
    out = tmp_path / "part" / "b000000.parquet"
    run_batch(lay, "b000000", cfg, str(out))
    f = pq.ParquetFile(out)
    assert f.metadata.num_row_groups == 2
    meta = read_meta(str(out))
    assert [c["rows_in"] for c in meta["chunks"]] == [100, 100]
    ids = pq.read_table(out).column("object_id").to_numpy()
    np.testing.assert_array_equal(ids, cols["objectId"][:200])
    run_batch(lay, "b000001", cfg, str(tmp_path / "part" / "b000001.parquet"))
    ids2 = pq.read_table(tmp_path / "part" / "b000001.parquet").column("object_id").to_numpy()
    np.testing.assert_array_equal(ids2, cols["objectId"][200:])


# ---------------------------------------------------------------- bad input
def _fails(tmp_path, cols, match, **over):
    p = write_parquet(tmp_path / "bad.parquet", cols)
    cfg = flux_config([p], **over)
    lay = make_layout(cfg)
    out = tmp_path / "out" / "b000000.parquet"
    with pytest.raises(PipelineError, match=match):
        run_batch(lay, "b000000", cfg, str(out))
    assert not out.exists()
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_missing_column_names_file_column_and_fix(tmp_path):
    cols = make_flux_table(20)
    cols["g_gaapFlux"] = cols.pop("g_gaap1p0Flux")
    _fails(tmp_path, cols, r"bad\.parquet.*'g_gaap1p0Flux' not found.*Fix the 'columns'")


def test_misspelt_template(tmp_path):
    cols = make_flux_table(20)
    _fails(tmp_path, cols, r"not found", columns={"flux": "{band}_gaap1p0flux"})


def test_duplicate_ids_stop_the_run(tmp_path):
    cols = make_flux_table(20)
    cols["objectId"][3] = cols["objectId"][4]
    _fails(tmp_path, cols, r"duplicate value.*objectId")


def test_non_numeric_photometry(tmp_path):
    cols = make_flux_table(20)
    cols["r_gaap1p0Flux"] = np.array(["x"] * 20)
    _fails(tmp_path, cols, r"column 'r_gaap1p0Flux' has non-numeric")


def test_all_nan_band_in_big_chunk(tmp_path):
    cols = make_flux_table(1200)
    cols["z_gaap1p0Flux"] = np.full(1200, np.nan)
    _fails(tmp_path, cols, r"band 'z'.*no usable value")


def test_float_ids_with_nan(tmp_path):
    cols = make_flux_table(20)
    ids = cols["objectId"].astype(float)
    ids[2] = np.nan
    cols["objectId"] = ids
    _fails(tmp_path, cols, r"id column 'objectId' must hold integers")


def test_truncated_parquet(tmp_path):
    cols = make_flux_table(500)
    p = write_parquet(tmp_path / "t.parquet", cols)
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(PipelineError, match=r"t\.parquet.*not a readable parquet"):
        make_layout(flux_config([p]))
