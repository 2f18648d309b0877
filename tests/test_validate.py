"""Validation tables, goals, release gate, per-sample cuts (no training: synthetic estimates)."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers.inputs import flux_config, make_flux_table, write_parquet
from helpers.runs import REPO
from qp.metrics.point_estimate_metric_classes import (PointBias, PointOutlierRate,
                                                      PointSigmaIQR)

from pzpipe import PipelineError
from pzpipe.stages import metrics, validate
from pzpipe.release import pdfstore
from pzpipe.run.config import deep_update, load_config, validate_config

ZGRID = np.linspace(0.0, 3.0, 301)


def _estimates(path, seed, n=1500, scatter=0.03, outliers=0.05, bad=3):
    """A validation estimates file as rule validate_estimate writes it."""
    rng = np.random.default_rng(seed)
    zt = rng.uniform(0.05, 2.9, n)
    zp = zt + rng.normal(0, scatter, n) * (1 + zt)
    o = rng.random(n) < outliers
    zp[o] = rng.uniform(0.05, 2.9, o.sum())
    zp = np.clip(zp, 0.01, 2.99)
    w = scatter * (1 + zt)
    pdf = np.exp(-0.5 * ((ZGRID[None, :] - zp[:, None]) / w[:, None]) ** 2)
    pdf[:bad] = 0.0                                   # invalid PDFs -> null, NaN point estimates
    enc = pdfstore.encode(pdf, ZGRID)
    from pzpipe.release.pointest import point_estimates

    pe, badrow = point_estimates(pdf, ZGRID)
    mag = rng.uniform(18, 25.3, n)
    mag[5] = np.nan                                   # not detected in the reference band
    info = {"section": "validation", "file": "x.hdf5", "rows_in": n, "rows_after_cuts": n,
            "rows": n, "cut_by_reason": {}, "source": "partition.cuts",
            "cuts": {"require_true": [], "ref_mag_max": None}, "skipped_require_true": []}
    t = pa.table({"object_id": np.arange(n, dtype=np.int64),
                  "z_mode": pe["z_mode"].astype(np.float32),
                  "z_median": pe["z_median"].astype(np.float32), "pdf": enc,
                  "z_true": zt, "ref_mag": mag})
    t = t.replace_schema_metadata({"pzpipe": json.dumps({"validation_sample": info})})
    pq.write_table(t, path)
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    cfg = load_config(REPO / "config" / "config.yaml")
    files = {"good": _estimates(str(d / "good.parquet"), 1),
             "poor": _estimates(str(d / "poor.parquet"), 2, scatter=0.08, outliers=0.2)}
    out = validate.output_paths(str(d / "results"), list(files))
    results = validate.run(files, cfg, out)
    return cfg, files, out, results


def test_every_output_is_written(ran):
    _, _, out, _ = ran
    for key, p in out.items():
        for f in (p if isinstance(p, list) else [p]):
            data = open(f, "rb").read()
            assert len(data) > 100, f
            if f.endswith(".png"):
                assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_csv_equals_library_on_the_stored_estimates(ran):
    cfg, files, out, _ = ran
    m = pd.read_csv(out["csv"]).set_index("algorithm")
    assert list(m.columns) == validate.METRIC_COLS[1:]
    for algo, path in files.items():
        t = pq.read_table(path)
        zp = t.column("z_mode").to_numpy().astype(np.float64)
        zt = t.column("z_true").to_numpy()
        ok = np.isfinite(zp)
        assert m.loc[algo, "n_bad_pdf"] == 3 and m.loc[algo, "n"] == ok.sum()
        # csv keeps 6 significant digits
        for col, cls in (("bias", PointBias), ("sigma_iqr", PointSigmaIQR),
                         ("outlier_rate_3sigma", PointOutlierRate)):
            assert m.loc[algo, col] == pytest.approx(cls().evaluate(zp[ok], zt[ok]), rel=1e-5)
    md = open(out["md"]).read()
    for col in validate.METRIC_COLS[1:]:
        assert f"- `{col}`: " in md          # one definition line per metric


def test_binned_table(ran):
    cfg, files, out, results = ran
    b = pd.read_csv(out["binned_csv"])
    assert set(b["bin_var"]) == {"mag_i", "z_true", "z_phot"}
    # default magnitude bins: 0.5 mag from the brightest object (18.0) up to 25.5
    mb = b[(b.algorithm == "good") & (b.bin_var == "mag_i")]
    assert mb["lo"].iloc[0] == 18.0 and mb["hi"].iloc[-1] == 25.5
    assert np.allclose(mb["hi"] - mb["lo"], 0.5)
    # every valid object with a magnitude is in exactly one bin
    n_valid_mag = int(pd.read_csv(out["csv"]).set_index("algorithm").loc["good", "n"]) - 1
    assert mb["n"].sum() == n_valid_mag
    zb = b[(b.algorithm == "good") & (b.bin_var == "z_phot")]
    assert zb["lo"].tolist() == cfg["validate"]["bins"]["tomo_edges"][:-1]
    # one bin recomputed with qp
    t = pq.read_table(files["good"])
    zp = t.column("z_mode").to_numpy().astype(np.float64)
    zt = t.column("z_true").to_numpy()
    sel = np.isfinite(zp) & (zt >= 1.0) & (zt < 1.2)
    row = b[(b.algorithm == "good") & (b.bin_var == "z_true") & np.isclose(b["lo"], 1.0)].iloc[0]
    assert row["n"] == sel.sum()
    assert row["sigma_iqr"] == pytest.approx(PointSigmaIQR().evaluate(zp[sel], zt[sel]), rel=1e-5)


def test_requirements_and_gate(ran, tmp_path):
    cfg, _, out, _ = ran
    req = json.load(open(out["req_json"]))
    assert req["goals"] == cfg["validate"]["goals"]
    good, poor = req["algorithms"]["good"], req["algorithms"]["poor"]
    names = [c["name"] for c in good["checks"]]
    assert names == ["sigma_iqr", "outlier_rate_3sigma", "abs_bias", "sigma_iqr_goal"]
    for c in good["checks"]:
        assert c["margin"] == pytest.approx(c["limit"] - c["value"])
        assert c["pass"] == (c["value"] < c["limit"])
    assert poor["pass"] is False
    assert "FAIL" in open(out["req_md"]).read()
    validate.check_release_gate(out["req_json"], cfg)               # gate off: no error
    on = deep_update(cfg, {"validate": {"release_gate": True}, "algorithms": {
        k: {"enabled": False} for k in cfg["algorithms"]}})
    on["algorithms"]["fzboost"]["enabled"] = True
    with pytest.raises(PipelineError, match=r"no validation result for \['fzboost'\]"):
        validate.check_release_gate(out["req_json"], on)


def _req(tmp_path, checks, goals):
    p = tmp_path / "requirements.json"
    p.write_text(json.dumps({"goals": goals, "algorithms": {
        a: {"pass": all(c["pass"] for c in cs if c["required"]), "checks": cs}
        for a, cs in checks.items()}}))
    return str(p)


def test_release_gate_names_estimator_goal_and_margin(tmp_path, cfg):
    cfg = deep_update(cfg, {"validate": {"release_gate": True}})
    goals = cfg["validate"]["goals"]
    ok = validate.goal_checks({"sigma_iqr": 0.02, "outlier_rate_3sigma": 0.05, "bias": -0.001},
                              [], goals, 10)
    bad = validate.goal_checks({"sigma_iqr": 0.0623, "outlier_rate_3sigma": 0.05,
                                "bias": 0.004}, [], goals, 10)
    assert [c["pass"] for c in bad] == [False, True, False, False]
    checks = {a: ok for a in cfg["algorithms"]}
    validate.check_release_gate(_req(tmp_path, checks, goals), cfg)   # all pass: no error
    checks["knn"] = bad
    with pytest.raises(PipelineError) as e:
        validate.check_release_gate(_req(tmp_path, checks, goals), cfg)
    msg = str(e.value)
    assert "['knn']" in msg
    assert "knn: sigma_iqr = 0.0623, limit < 0.05 (fails by 0.0123)" in msg
    assert "knn: abs_bias = 0.004, limit < 0.003 (fails by 0.001)" in msg
    assert "sigma_iqr_goal" not in msg                     # the goal is not a requirement
    # stale json (other goals) is refused
    stale = dict(goals, sigma_iqr_max=0.04)
    with pytest.raises(PipelineError, match="computed with goals"):
        validate.check_release_gate(_req(tmp_path, {a: ok for a in cfg["algorithms"]}, stale),
                                    cfg)
    # off: nothing read at all
    off = deep_update(cfg, {"validate": {"release_gate": False}})
    validate.check_release_gate(str(tmp_path / "missing.json"), off)


def test_goal_checks_optional_tomo_and_null_limits(cfg):
    goals = dict(cfg["validate"]["goals"], tomo_mean_shift_max=0.01, sigma_iqr_goal=None)
    tomo = [{"n": 50, "mean_shift_1pz": -0.004}, {"n": 50, "mean_shift_1pz": 0.02},
            {"n": 2, "mean_shift_1pz": 0.5}]                      # below min_objects: ignored
    c = {x["name"]: x for x in validate.goal_checks(
        {"sigma_iqr": 0.03, "outlier_rate_3sigma": 0.05, "bias": 0.0}, tomo, goals, 10)}
    assert "sigma_iqr_goal" not in c
    assert c["tomo_mean_shift"]["value"] == 0.02 and not c["tomo_mean_shift"]["pass"]
    empty = validate.goal_checks({"n": 0, "sigma_iqr": float("nan"),
                                  "outlier_rate_3sigma": float("nan"), "bias": float("nan")},
                                 [], goals, 10)
    assert all(x["value"] is None and not x["pass"] for x in empty)


def test_mag_edges_default_and_limit(cfg):
    m = np.array([15.1, 20.0, 25.29, np.nan])
    e = validate.mag_edges(cfg, m)
    assert e[0] == 15.0 and e[-1] == 25.5 and np.allclose(np.diff(e), 0.5)
    e = validate.mag_edges(cfg, m, {"cuts": {"ref_mag_max": 25.3}})
    assert e[-2] == 25.0 and e[-1] == 25.3
    c2 = deep_update(cfg, {"validate": {"bins": {"mag_edges": [20, 22, 24]}}})
    assert validate.mag_edges(c2, m).tolist() == [20, 22, 24]


def test_bin_edges_must_increase(cfg):
    raw = yaml.safe_load(open(REPO / "config" / "config.yaml"))
    raw["validate"]["bins"]["z_edges"] = [0, 1, 1]
    with pytest.raises(PipelineError, match=r"validate\.bins\.z_edges.*strictly increasing"):
        validate_config(raw)


def test_sample_cut_keys_mirror_partition_cuts():
    schema = yaml.safe_load(open(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    part = schema["properties"]["partition"]["properties"]["cuts"]["properties"]
    sample = schema["definitions"]["sample"]["properties"]["cuts"]["properties"]
    assert sample == part


# ----------------------------------------------------------------------------- samples
DC2_VAL = "rail:examples_data/testdata/test_dc2_validation_9816.hdf5"


def _rubin_cfg(tmp_path, **over):
    """A Rubin-like flux catalog with detect_isPrimary; DC2 HDF5 samples in magnitudes."""
    cat = write_parquet(tmp_path / "cat.parquet", make_flux_table(50))
    base = {"partition": {"cuts": {"require_true": ["detect_isPrimary"], "ref_mag_max": 24.0}},
            "training": {"photometry": "mag", "columns": {"id": "id"}, "max_rows": 800},
            "validation": {"photometry": "mag", "columns": {"id": "id"}, "max_rows": 800,
                           "file": DC2_VAL}}
    return flux_config([cat], **deep_update(base, over))


def test_default_sample_cuts_inherit_catalog_where_columns_exist(tmp_path, caplog):
    from pzpipe.stages.samples import load_sample

    cfg = _rubin_cfg(tmp_path)
    assert cfg["validation"]["cuts"] is None
    data, info = load_sample(cfg, cfg["validation"], "validation")
    assert info["skipped_require_true"] == ["detect_isPrimary"]
    assert info["source"] == "partition.cuts" and info["cuts"]["ref_mag_max"] == 24.0
    assert data["mag_i_lsst"].max() <= 24.0 and len(data["redshift"]) == 800
    assert info["cut_by_reason"]["ref_mag_max"] > 0
    assert "detect_isPrimary" in caplog.text and "validation" in caplog.text


def test_explicit_sample_cut_column_missing_names_the_key_and_file(tmp_path):
    from pzpipe.stages.samples import read_sample

    cfg = _rubin_cfg(tmp_path, validation={"cuts": {"require_true": ["detect_isPrimary"]}})
    with pytest.raises(PipelineError, match=r"validation sample file '.*test_dc2_validation_9816"
                                            r"\.hdf5'.*'validation\.cuts\.require_true'"):
        read_sample(cfg, cfg["validation"], "validation")


def test_explicit_sample_cuts_replace_the_catalogs(tmp_path):
    from pzpipe.stages.samples import load_sample

    cfg = _rubin_cfg(tmp_path, training={"cuts": {}})       # explicitly: no cuts
    cfg["training"]["file"] = DC2_VAL
    data, info = load_sample(cfg, cfg["training"], "training")
    assert info["source"] == "training.cuts" and data["mag_i_lsst"].max() > 25.0
    # a sample with the column: the cut is applied
    tab = make_flux_table(200, seed=4)
    tab["detect_isPrimary"][:30] = False
    p = write_parquet(tmp_path / "spec.parquet", tab)
    cfg = _rubin_cfg(tmp_path, validation={"file": p, "photometry": "flux",
                                           "columns": {"id": "objectId"}, "max_rows": None,
                                           "cuts": {"require_true": ["detect_isPrimary"]}})
    data, info = load_sample(cfg, cfg["validation"], "validation")
    assert info["cut_by_reason"]["require_true"] == 30 and len(data["redshift"]) == 170


def test_rubin_catalog_with_dc2_training_file_trains_reads(tmp_path):
    """The issue's case: catalog cut require_true [detect_isPrimary], DC2 training file."""
    from pzpipe.stages.samples import read_sample

    cfg = _rubin_cfg(tmp_path)
    d = read_sample(cfg, cfg["training"], "training")
    assert len(d["redshift"]) == 800


def test_cuts_are_validated_by_the_schema():
    raw = yaml.safe_load(open(REPO / "config" / "config.yaml"))
    raw["training"]["cuts"] = {"require_tru": ["x"]}
    with pytest.raises(PipelineError, match=r"training\.cuts.*'require_tru' was unexpected"):
        validate_config(raw)


def test_rubin_catalog_cuts_train_and_validate_on_dc2_files(tmp_path):
    """The issue's new-user case, through train.run and estimate_validation (kNN, real RAIL):
    catalog cut require_true [detect_isPrimary] + DC2 HDF5 samples without that column."""
    from pzpipe.stages import train

    cfg = _rubin_cfg(tmp_path, training={"max_rows": 1500}, validation={"max_rows": 400},
                     partition={"cuts": {"ref_mag_max": None}}, algorithms={"knn": {}})
    model = str(tmp_path / "knn.pkl")
    train.run("knn", cfg, model, str(tmp_path / "knn.json"))
    out = str(tmp_path / "knn_val.parquet")
    validate.estimate_validation("knn", model, cfg, out)
    t = pq.read_table(out)
    assert t.num_rows == 400 and {"z_true", "ref_mag", "z_mode", "pdf"} <= set(t.column_names)
    meta = json.loads(t.schema.metadata[b"pzpipe"])
    info = meta["validation_sample"]
    assert info["skipped_require_true"] == ["detect_isPrimary"] and meta["ref_band"] == "i"
    mag = t.column("ref_mag").to_numpy()
    assert np.isfinite(mag).all() and mag.max() < 26          # DC2: detected in i everywhere
