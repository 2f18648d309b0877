"""Validation tables, bootstrap errors, requirement sets, release gate, per-sample cuts (no training: synthetic estimates)."""
import json
import re

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
    full = pa.FixedSizeListArray.from_arrays(pa.array(pdf.ravel()), len(ZGRID))
    mag = rng.uniform(18, 25.3, n)
    mag[5] = np.nan                                   # not detected in the reference band
    info = {"section": "validation", "file": "x.hdf5", "rows_in": n, "rows_after_cuts": n,
            "rows": n, "cut_by_reason": {}, "source": "partition.cuts",
            "cuts": {"require_true": [], "ref_mag_max": None}, "skipped_require_true": []}
    t = pa.table({"object_id": np.arange(n, dtype=np.int64),
                  "z_mode": pe["z_mode"].astype(np.float32),
                  "z_median": pe["z_median"].astype(np.float32),
                  **{c: pe[c].astype(np.float32) for c in validate.INTERVAL_COLS},
                  "pdf": enc, "pdf_full": full, "z_true": zt, "ref_mag": mag})
    t = t.replace_schema_metadata({"pzpipe": json.dumps({"validation_sample": info})})
    pq.write_table(t, path)
    return path


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    d = tmp_path_factory.mktemp("val")
    cfg = load_config(REPO / "config" / "config.yaml")
    # ~100 objects per 0.5-mag bin, fewer in some z bins: small_n 100 marks some bins small
    cfg = deep_update(cfg, {"validate": {"bins": {"small_n": 100}}})
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
    for col in ("bias", "sigma_iqr", "outlier_rate_3sigma", "coverage_68", "coverage_95",
                "pit_ks", "pit_outlier_rate", "cde_loss"):
        assert (m[f"{col}_err"] > 0).all(), col                  # a bootstrap error each
    assert (m["n_boot"] == cfg["validate"]["bootstrap"]["n"]).all()
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
        if not col.endswith("_err"):
            assert f"- `{col}`: " in md          # one definition line per metric
    assert f"N = {cfg['validate']['bootstrap']['n']} bootstrap resamples" in md
    assert " ± " in md


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
    # errors, coverage and the small-bin mark
    for col in ("bias", "sigma_iqr", "outlier_rate_3sigma", "outlier_frac_015", "coverage_68",
                "coverage_95", "pit_ks", "pit_outlier_rate"):
        assert f"{col}_err" in b.columns and row[f"{col}_err"] > 0, col
    small_n = cfg["validate"]["bins"]["small_n"]
    assert (b["small"] == (b["n"] < small_n)).all() and b["small"].any()
    md = open(out["binned_md"]).read()
    assert re.search(r"\| \d+\* \|", md)                        # small bins marked n*


def test_coverage_and_pit_from_the_full_precision_pdfs(ran):
    """Coverage and the PIT outlier rate counted directly from the stored intervals and
    the full-precision PDFs; qp's PIT values on the same PDFs kept beside, labelled."""
    cfg, files, out, _ = ran
    m = pd.read_csv(out["csv"]).set_index("algorithm")
    t = pq.read_table(files["poor"])
    zp = t.column("z_mode").to_numpy().astype(np.float64)
    zt = t.column("z_true").to_numpy()
    full = t.column("pdf_full").combine_chunks()
    pdf = full.flatten().to_numpy().reshape(len(full), -1)
    ok = np.isfinite(zp)
    lo, hi = (t.column(c).to_numpy().astype(np.float64)[ok] for c in ("z_err68_low", "z_err68_high"))
    assert m.loc["poor", "coverage_68"] == pytest.approx(np.mean((lo <= zt[ok]) & (zt[ok] <= hi)),
                                                        rel=1e-5)
    pits = metrics.pit_values(pdf[ok], ZGRID, zt[ok])
    direct = np.mean((pits < 1e-4) | (pits > 0.9999))
    assert m.loc["poor", "pit_outlier_rate"] == pytest.approx(direct, rel=1e-5)
    qp_meta = metrics.pit_metrics(metrics.pit(metrics.ensemble(pdf[ok], ZGRID), zt[ok]))
    for k in ("ks", "cvm", "ad", "outlier_rate"):
        assert m.loc["poor", f"pit_{k}_qp"] == pytest.approx(qp_meta[f"pit_{k}"], rel=1e-5)
    md = open(out["md"]).read()
    assert "- `pit_outlier_rate`: fraction of objects with PIT < 1e-4 or PIT > 0.9999, counted directly" in md
    assert "- `pit_outlier_rate_qp`: " in md


def test_requirements_both_sets_with_margins_in_sigma(ran):
    cfg, files, out, _ = ran
    req = json.load(open(out["req_json"]))
    v = cfg["validate"]
    assert req["requirements"] == v["requirements"] and req["bootstrap"] == v["bootstrap"]
    good, poor = req["algorithms"]["good"], req["algorithms"]["poor"]
    assert set(good["sets"]) == {"lsst_science_book", "lsst_srd"}
    assert set(good["tomo_sets"]) == set(v["tomo_requirements"])
    names = [c["name"] for c in good["sets"]["lsst_science_book"]["checks"]]
    assert names == ["sigma_iqr", "outlier_rate_3sigma", "abs_bias", "sigma_iqr_goal"]
    assert [c["name"] for c in good["sets"]["lsst_srd"]["checks"]] == names[:3]
    for s in (good, poor):
        for st in s["sets"].values():
            for c in st["checks"]:
                assert c["margin"] == pytest.approx(c["limit"] - c["value"])
                assert c["pass"] == (c["value"] < c["limit"])
                assert c["error"] > 0
                assert c["margin_sigma"] == pytest.approx(c["margin"] / c["error"])
    assert poor["pass"] is False
    # the SRD sample: i < 25, 0.3 <= z < 3, valid objects
    t = pq.read_table(files["good"])
    zp = t.column("z_mode").to_numpy().astype(np.float64)
    zt, mag = t.column("z_true").to_numpy(), t.column("ref_mag").to_numpy()
    sel = np.isfinite(zp) & (mag < 25.0) & (zt >= 0.3) & (zt < 3.0)
    srd = good["sets"]["lsst_srd"]
    assert srd["n"] == sel.sum()
    assert srd["metrics"]["sigma_iqr"] == PointSigmaIQR().evaluate(zp[sel], zt[sel])
    # DESC SRD mean-z sets: per bin, with errors
    lss = good["tomo_sets"]["desc_srd_lss_y10"]
    assert [b["lo"] for b in lss["bins"]] == v["tomo_requirements"]["desc_srd_lss_y10"]["tomo_edges"][:-1]
    for bn in lss["bins"]:
        if bn["checked"]:
            assert bn["error"] > 0 and bn["pass"] == (bn["value"] < lss["limit"])
    md = open(out["req_md"]).read()
    for rs in list(v["requirements"].values()) + list(v["tomo_requirements"].values()):
        assert f"## {rs['title']}" in md and rs["source"] in md
    assert "FAIL" in md and "σ" in md and f"N = {v['bootstrap']['n']} bootstrap" in md


def test_release_gate(ran, tmp_path):
    cfg, _, out, _ = ran
    validate.check_release_gate(out["req_json"], cfg)               # gate off: no error
    on = deep_update(cfg, {"validate": {"release_gate": True}, "algorithms": {
        k: {"enabled": False} for k in cfg["algorithms"]}})
    on["algorithms"]["fzboost"]["enabled"] = True
    with pytest.raises(PipelineError, match=r"no validation result for \['fzboost'\]"):
        validate.check_release_gate(out["req_json"], on)


def _req(tmp_path, sets_by_algo, cfg):
    p = tmp_path / "requirements.json"
    v = cfg["validate"]
    p.write_text(json.dumps({
        "requirements": v["requirements"], "tomo_requirements": v["tomo_requirements"],
        "algorithms": {a: {"sets": sets, "tomo_sets": {}} for a, sets in sets_by_algo.items()}}))
    return str(p)


def _checks(cfg, name, **m):
    rs = cfg["validate"]["requirements"][name]
    checks = validate.goal_checks(m, rs)
    return {"title": rs["title"], "gate": rs["gate"], "checks": checks,
            "pass": all(c["pass"] for c in checks if c["required"])}


def test_release_gate_names_estimator_set_check_and_sigma(tmp_path, cfg):
    cfg = deep_update(cfg, {"validate": {"release_gate": True}})
    good = dict(sigma_iqr=0.015, sigma_iqr_err=0.001, outlier_rate_3sigma=0.05,
                outlier_rate_3sigma_err=0.002, bias=-0.001, bias_err=0.0005)
    bad = dict(sigma_iqr=0.0623, sigma_iqr_err=0.001, outlier_rate_3sigma=0.05,
               outlier_rate_3sigma_err=0.002, bias=0.004, bias_err=0.0005)
    sb = "lsst_science_book"
    assert [c["pass"] for c in _checks(cfg, sb, **bad)["checks"]] == [False, True, False, False]
    sets = {a: {n: _checks(cfg, n, **good) for n in ("lsst_science_book", "lsst_srd")}
            for a in cfg["algorithms"]}
    validate.check_release_gate(_req(tmp_path, sets, cfg), cfg)       # all pass: no error
    sets["knn"] = {n: _checks(cfg, n, **bad) for n in ("lsst_science_book", "lsst_srd")}
    with pytest.raises(PipelineError) as e:
        validate.check_release_gate(_req(tmp_path, sets, cfg), cfg)
    msg = str(e.value)
    assert "['knn']" in msg
    assert ("knn: lsst_science_book sigma_iqr = 0.0623 ± 0.001, limit < 0.05 (fails by "
            "0.0123, -12.3σ)") in msg
    assert "knn: lsst_science_book abs_bias = 0.004 ± 0.0005, limit < 0.003 (fails by 0.001, -2.0σ)" in msg
    assert "knn: lsst_srd sigma_iqr" in msg
    assert "sigma_iqr_goal" not in msg                     # the goal is not a requirement
    # a set that does not gate is not checked
    nogate = deep_update(cfg, {"validate": {"requirements": {"lsst_srd": {"gate": False}}}})
    sets["knn"]["lsst_srd"]["gate"] = False
    with pytest.raises(PipelineError) as e:
        validate.check_release_gate(_req(tmp_path, sets, nogate), nogate)
    assert "lsst_srd" not in str(e.value)
    # stale json (other requirement sets) is refused
    stale = deep_update(cfg, {"validate": {"requirements": {sb: {"sigma_iqr_max": 0.04}}}})
    with pytest.raises(PipelineError, match="computed with other validate.requirements"):
        validate.check_release_gate(_req(tmp_path, sets, stale), cfg)
    # off: nothing read at all
    off = deep_update(cfg, {"validate": {"release_gate": False}})
    validate.check_release_gate(str(tmp_path / "missing.json"), off)


def test_goal_checks_null_limits_and_empty_sample(cfg):
    rs = dict(cfg["validate"]["requirements"]["lsst_science_book"], sigma_iqr_goal=None,
              abs_bias_max=None)
    c = {x["name"]: x for x in validate.goal_checks(
        {"sigma_iqr": 0.03, "sigma_iqr_err": 0.0, "outlier_rate_3sigma": 0.05,
         "bias": 0.0}, rs)}
    assert set(c) == {"sigma_iqr", "outlier_rate_3sigma"}
    assert c["sigma_iqr"]["margin_sigma"] is None            # zero error: no sigma margin
    empty = validate.goal_checks({"n": 0, "sigma_iqr": float("nan"),
                                  "outlier_rate_3sigma": float("nan"), "bias": float("nan")},
                                 cfg["validate"]["requirements"]["lsst_srd"])
    assert all(x["value"] is None and not x["pass"] for x in empty)


def test_tomo_checks_per_bin(cfg):
    """The mean-z check per photo-z bin of a set's sample, with errors; a bin below
    min_objects is not checked."""
    rng = np.random.default_rng(3)
    n = 3000
    zt = rng.uniform(0.2, 1.2, n)
    zp = zt + rng.normal(0, 0.02, n)
    mu = zt + 0.004 * (1 + zt)                    # stacked means 0.004(1+z) high everywhere
    obj = {"zp": zp, "zt": zt, "mu": mu, "mag": np.full(n, 24.0)}
    counts = metrics.bootstrap_counts(n, 100, 1)
    ts = cfg["validate"]["tomo_requirements"]
    y1 = validate.tomo_checks(obj, counts, ts["desc_srd_lss_y1"], [0, 3], 10, 30)
    y10 = validate.tomo_checks(obj, counts, ts["desc_srd_lss_y10"], [0, 3], 10, 30)
    assert y1["pass"] and not y10["pass"]              # 0.004 < 0.005; 0.004 > 0.003
    assert y10["n_fail"] == y10["n_checked"] == 10
    for bn in y1["bins"]:
        assert bn["value"] == pytest.approx(0.004, rel=0.05) and 0 < bn["error"] < 0.001
    tiny = dict(ts["desc_srd_lss_y1"], tomo_edges=[0.2, 0.2005, 1.2])
    r = validate.tomo_checks(obj, counts, tiny, [0, 3], 10, 30)
    assert [b["checked"] for b in r["bins"]] == [False, True]


def test_bootstrap_is_seeded(ran, tmp_path):
    """A second run with the same seed writes the same tables; another seed other errors."""
    cfg, files, out, _ = ran
    out2 = validate.output_paths(str(tmp_path / "again"), list(files))
    validate.run(files, cfg, out2)
    assert open(out["csv"]).read() == open(out2["csv"]).read()
    assert open(out["binned_csv"]).read() == open(out2["binned_csv"]).read()
    c3 = deep_update(cfg, {"validate": {"bootstrap": {"seed": 1}}})
    out3 = validate.output_paths(str(tmp_path / "seed1"), list(files))
    validate.run(files, c3, out3)
    a, b = pd.read_csv(out["csv"]), pd.read_csv(out3["csv"])
    assert (a["sigma_iqr"] == b["sigma_iqr"]).all() and (a["sigma_iqr_err"] != b["sigma_iqr_err"]).all()


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
