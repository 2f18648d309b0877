"""Validate stage: the field's metrics on a held-out sample with true redshifts, with
seeded bootstrap errors, against configured requirement sets.

Per algorithm the sample is estimated with the release code path
(``estimate.estimate_sample``; rule ``validate_estimate``) in chunks of
``validate.chunk_rows`` rows, so the estimates do not depend on ``estimate.workers``. The
file keeps the stored (quantised) PDFs and, for validation only, the full-precision
float64 PDFs (``pdf_full``): point estimates and intervals come from the full PDFs as in
the release; PIT, CDE loss and stacked n(z) are computed from ``pdf_full``. Metric
definitions: ``pzpipe.stages.metrics`` (qp and RAIL classes).

Errors: one seeded set of ``validate.bootstrap.n`` resamples of the sample
(``metrics.bootstrap_counts``), shared by every estimator, statistic and bin; an error is
the standard deviation of the statistic over the resamples.

Outputs (``output_paths``): whole-sample metrics (``metrics.csv``/``.md``), metrics per
bin of reference-band magnitude, true z and photo-z (``metrics_binned.csv``/``.md``),
tomographic n(z) shifts (``tomo_nz.csv``/``.md``), PASS/FAIL with margins in sigma
against every enabled requirement set (``requirements.md``/``.json``), and figures
(``pzpipe.stages.valplots``). ``check_release_gate`` is called by the export when
``validate.release_gate`` is on.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError
from pzpipe.core.columns import ID_COL
from pzpipe.core.io import atomic_path, parquet_meta, write_json_atomic
from pzpipe.release import pdfstore
from pzpipe.run.config import check_validate_section
from pzpipe.stages import metrics

log = logging.getLogger(__name__)


def _with_err(keys):
    return [c for k in keys for c in (k, f"{k}_err")]


METRIC_COLS = (["algorithm", "n", "n_bad_pdf"]
               + _with_err(metrics.POINT_KEYS + ("coverage_68", "coverage_95", "pit_ks",
                                                 "pit_cvm", "pit_outlier_rate", "cde_loss"))
               + ["pit_ks_qp", "pit_cvm_qp", "pit_ad_qp", "pit_outlier_rate_qp", "n_boot"])
BINNED_COLS = (["algorithm", "bin_var", "lo", "hi", "n", "small"]
               + _with_err(metrics.SAMPLE_KEYS) + ["n_boot"])
TOMO_COLS = ["algorithm", "lo", "hi", "n", "small", "mean_z_true", "mean_z_true_err",
             "mean_z_stacked", "mean_shift", "mean_shift_err", "mean_shift_1pz",
             "mean_shift_1pz_err", "n_boot"]
INTERVAL_COLS = ("z_err68_low", "z_err68_high", "z_err95_low", "z_err95_high")
CHECKS = (("sigma_iqr", "sigma_iqr", "sigma_iqr_max", True),
          ("outlier_rate_3sigma", "outlier_rate_3sigma", "outlier_rate_3sigma_max", True),
          ("abs_bias", "bias", "abs_bias_max", True),
          ("sigma_iqr_goal", "sigma_iqr", "sigma_iqr_goal", False))
CHECK_NAMES = {"sigma_iqr": "sigma_IQR", "outlier_rate_3sigma": "3-sigma outlier rate",
               "abs_bias": "abs(bias)", "sigma_iqr_goal": "sigma_IQR (goal)"}


def output_paths(results: str, algos: list[str]) -> dict:
    """Every output of rule ``validate`` by name (figures: ``*_png``)."""
    v = f"{results}/validation"
    return {
        "csv": f"{v}/metrics.csv", "md": f"{v}/metrics.md",
        "binned_csv": f"{v}/metrics_binned.csv", "binned_md": f"{v}/metrics_binned.md",
        "tomo_csv": f"{v}/tomo_nz.csv", "tomo_md": f"{v}/tomo_nz.md",
        "req_md": f"{v}/requirements.md", "req_json": f"{v}/requirements.json",
        "scatter_png": f"{v}/scatter.png", "pit_png": f"{v}/pit.png", "nz_png": f"{v}/nz.png",
        "vs_mag_png": f"{v}/metrics_vs_mag.png", "vs_z_png": f"{v}/metrics_vs_z.png",
        "comparison_png": f"{v}/comparison.png",
        "tomo_png": [f"{v}/tomo_nz_{a}.png" for a in algos],
    }


# ----------------------------------------------------------------------------- estimate
def estimate_validation(algo_name: str, model_path: str, cfg: dict, output: str,
                        sample_file: str | None = None, workers: int = 1,
                        data_dir: str | None = None) -> None:
    """Estimate the validation sample in chunks of ``validate.chunk_rows`` rows (the file
    does not depend on ``workers``); keep the full-precision PDFs (``pdf_full``); add
    ``z_true`` and ``ref_mag`` (NaN = not detected in ``ref_band``) and record the sample
    (file, cuts) in the schema metadata. ``data_dir``: the algorithm's prepared data
    directory, if it declares one."""
    from pzpipe.core.columns import mag_col
    from pzpipe.stages.estimate import estimate_sample
    from pzpipe.stages.samples import load_sample

    sample = dict(cfg["validation"])
    if sample_file:
        sample["file"] = sample_file
    data, info = load_sample(cfg, sample, section="validation")
    table = estimate_sample(algo_name, model_path, cfg, data, workers=workers,
                            chunk_rows=cfg["validate"]["chunk_rows"], data_dir=data_dir,
                            full_pdf=True)
    if not np.array_equal(table.column(ID_COL).to_numpy(), data[ID_COL]):
        raise PipelineError(f"{algo_name}: validation estimates are not in the sample's "
                            f"order; refusing to attach true redshifts")
    mag = np.asarray(data[mag_col(cfg["ref_band"])], dtype=np.float64)
    mag = np.where(mag == float(cfg["partition"]["nondetect_val"]), np.nan, mag)
    table = table.append_column("z_true", pa.array(data["redshift"]))
    table = table.append_column("ref_mag", pa.array(mag))
    meta = dict(table.schema.metadata or {})
    pz = parquet_meta(meta)
    pz.update(validation_sample=info, ref_band=cfg["ref_band"],
              chunk_rows=cfg["validate"]["chunk_rows"])
    meta[b"pzpipe"] = json.dumps(pz, default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp, **pdfstore.PARQUET_KWARGS)


def read_validation_estimates(path: str, point: str) -> tuple[dict, dict]:
    """The columns validation needs from one estimates file, and its ``pzpipe`` metadata."""
    schema = pq.read_schema(path)
    need = [point, "z_true", "ref_mag", "pdf", "pdf_full", *INTERVAL_COLS]
    missing = [c for c in need if c not in schema.names]
    if missing:
        raise PipelineError(f"validation estimates '{path}' lack column(s) {missing}: written "
                            f"by an older pzpipe. Delete the file and rerun.")
    t = pq.read_table(path, columns=need)
    meta = parquet_meta(schema)
    full = t.column("pdf_full").combine_chunks()
    cols = {"zp": t.column(point).to_numpy().astype(np.float64),
            "zt": t.column("z_true").to_numpy().astype(np.float64),
            "mag": t.column("ref_mag").to_numpy().astype(np.float64),
            "pdf": t.column("pdf"),
            "pdf_full": full.flatten().to_numpy().reshape(len(full), -1) if len(full) else
            np.zeros((0, 0)),
            "full_valid": ~np.asarray(full.is_null().to_numpy(zero_copy_only=False)),
            **{c: t.column(c).to_numpy().astype(np.float64) for c in INTERVAL_COLS}}
    return cols, meta


# ----------------------------------------------------------------------------- bins
def mag_edges(cfg: dict, mags: np.ndarray, sample_info: dict | None = None) -> np.ndarray:
    """Configured edges, or ``mag_width`` bins (multiples of the width) from the brightest
    detected object to the sample's limit: its ``ref_mag_max`` cut when it has one, else
    its faintest detected magnitude."""
    b = cfg["validate"]["bins"]
    if b["mag_edges"] is not None:
        return np.asarray(b["mag_edges"], dtype=np.float64)
    w = float(b["mag_width"])
    m = mags[np.isfinite(mags)]
    if not len(m):
        raise PipelineError("validation sample: no object is detected in ref_band "
                            f"'{cfg['ref_band']}'; set validate.bins.mag_edges or ref_band")
    limit = ((sample_info or {}).get("cuts") or {}).get("ref_mag_max")
    lo = math.floor(m.min() / w) * w
    top = float(limit) if limit is not None else math.ceil(m.max() / w) * w
    if top <= lo:
        top = lo + w
    edges = list(np.arange(lo, top - 1e-9, w))
    edges.append(top)
    return np.round(np.asarray(edges, dtype=np.float64), 6)


def z_edges(cfg: dict) -> np.ndarray:
    b = cfg["validate"]["bins"]
    if b["z_edges"] is not None:
        return np.asarray(b["z_edges"], dtype=np.float64)
    zmin, zmax = cfg["zgrid"]["zmin"], cfg["zgrid"]["zmax"]
    n = max(1, int(round((zmax - zmin) / b["z_width"])))
    return np.round(np.linspace(zmin, zmin + n * b["z_width"], n + 1), 6)


# ----------------------------------------------------------------------------- requirements
def sample_mask(obj: dict, sample: dict) -> np.ndarray:
    """Objects of a requirement set's sample: z_min <= z_true < z_max and, with a
    ``ref_mag_max``, ref_band magnitude below it (undetected objects are out)."""
    sel = (obj["zt"] >= sample["z_min"]) & (obj["zt"] < sample["z_max"])
    if sample["ref_mag_max"] is not None:
        sel &= obj["mag"] < sample["ref_mag_max"]
    return sel


def _margin_sigma(margin: float | None, err: float | None) -> float | None:
    if margin is None or err is None or not np.isfinite(err) or err <= 0:
        return None
    return float(margin / err)


def goal_checks(gm: dict, rs: dict) -> list[dict]:
    """Checks of a sample's metrics ``gm`` (with ``*_err``) against the requirement set
    ``rs``: value < limit; margin = limit - value; margin_sigma = margin / error."""
    out = []
    for name, key, limit_key, required in CHECKS:
        limit = rs.get(limit_key)
        if limit is None:
            continue
        v = gm.get(key)
        v = None if v is None or not np.isfinite(v) else float(v)
        if v is not None and name == "abs_bias":
            v = abs(v)
        err = gm.get(f"{key}_err")
        err = None if err is None or not np.isfinite(err) else float(err)
        margin = None if v is None else float(limit - v)
        out.append({"name": name, "value": v, "error": err, "limit": float(limit),
                    "pass": v is not None and v < limit, "margin": margin,
                    "margin_sigma": _margin_sigma(margin, err), "required": required})
    return out


def tomo_checks(obj: dict, counts: np.ndarray, ts: dict, default_edges, min_objects: int,
                small_n: int) -> dict:
    """A tomographic set ``ts``: per photo-z bin of its sample, |mean_shift_1pz| against
    ``mean_shift_max``; bins with fewer than ``min_objects`` objects are not checked."""
    edges = np.asarray(ts["tomo_edges"] if ts["tomo_edges"] is not None else default_edges,
                       dtype=np.float64)
    sel = sample_mask(obj, ts["sample"])
    idx = metrics.assign_bins(obj["zp"], edges)
    limit = float(ts["mean_shift_max"])
    bins = []
    for i in range(len(edges) - 1):
        b = sel & (idx == i)
        n = int(b.sum())
        row = {"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n,
               "small": bool(n < small_n), "checked": n >= max(min_objects, 1)}
        if row["checked"]:
            mt = float(obj["zt"][b].mean())
            shift = float(obj["mu"][b].mean() - mt)
            rel = shift / (1.0 + mt)
            err = metrics.tomo_shift(obj, counts, b)["mean_shift_1pz_err"]
            margin = limit - abs(rel)
            row.update(mean_z_true=mt, mean_shift_1pz=rel, value=abs(rel),
                       error=err if np.isfinite(err) else None, margin=margin,
                       margin_sigma=_margin_sigma(margin, err), **{"pass": abs(rel) < limit})
        bins.append(row)
    checked = [r for r in bins if r["checked"]]
    def least(r):       # smallest margin in sigma; a bin without an error by its margin's sign
        if r["margin_sigma"] is not None:
            return r["margin_sigma"]
        return -math.inf if r["margin"] < 0 else math.inf

    worst = min(checked, key=least) if checked else None
    return {"limit": limit, "bins": bins, "n_checked": len(checked),
            "n_fail": sum(not r["pass"] for r in checked), "worst": worst,
            "pass": bool(checked) and all(r["pass"] for r in checked)}


def check_release_gate(requirements_json_path: str, cfg: dict) -> None:
    """Raise PipelineError when ``validate.release_gate`` is on and an enabled estimator
    fails a required check of a gating requirement set (``gate: true``) in
    ``requirements.json``: names the estimator, the set, the check, its value and error,
    the limit and the margin in sigma. Does nothing when the gate is off."""
    from pzpipe.run.config import enabled_algorithms

    if not cfg["validate"]["release_gate"]:
        return
    try:
        with open(requirements_json_path) as f:
            req = json.load(f)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"release gate: cannot read '{requirements_json_path}' ({exc}); "
                            f"run the validate rule first") from exc
    for kind in ("requirements", "tomo_requirements"):
        if req.get(kind) != cfg["validate"][kind]:
            raise PipelineError(f"release gate: '{requirements_json_path}' was computed with "
                                f"other validate.{kind} than the config has; rerun the "
                                f"validate rule")
    algos = enabled_algorithms(cfg)
    missing = [a for a in algos if a not in req.get("algorithms", {})]
    if missing:
        raise PipelineError(f"release gate: no validation result for {missing} in "
                            f"'{requirements_json_path}'; rerun the validate rule")
    fails = []
    for a in algos:
        r = req["algorithms"][a]
        for name, s in r["sets"].items():
            if not s["gate"]:
                continue
            for c in s["checks"]:
                if not c["required"] or c["pass"]:
                    continue
                if c["value"] is None:
                    fails.append(f"{a}: {name} {c['name']} has no value (no object in the "
                                 f"set's sample); limit < {c['limit']:g}")
                else:
                    fails.append(f"{a}: {name} {c['name']} = {_pm(c['value'], c['error'])}, "
                                 f"limit < {c['limit']:g} (fails by {-c['margin']:.3g}"
                                 f"{_sig(c['margin_sigma'])})")
        for name, t in r["tomo_sets"].items():
            if t["gate"] and not t["pass"]:
                w = t["worst"]
                fails.append(f"{a}: {name}: {t['n_fail']} of {t['n_checked']} tomographic "
                             f"bins have |mean shift|/(1+z) >= {t['limit']:g}"
                             + (f" (worst {w['lo']:g}-{w['hi']:g}: "
                                f"{_pm(w['value'], w['error'])})" if w else ""))
    if fails:
        bad = sorted({f.split(":", 1)[0] for f in fails})
        raise PipelineError(
            f"release gate (validate.release_gate: true): {len(bad)} estimator(s) {bad} fail "
            f"a gating requirement set (validate.requirements, gate: true), so the export "
            f"refuses to publish them:\n  - " + "\n  - ".join(fails)
            + f"\nDetails: {requirements_json_path.replace('.json', '.md')}. Disable the "
              f"estimator (algorithms.<name>.enabled: false), change the sets, or set "
              f"validate.release_gate: false.")
    log.info("release gate: all %d estimators pass the gating requirement sets", len(algos))


# ----------------------------------------------------------------------------- run
def object_arrays(cols: dict, zgrid: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per-object arrays of the objects with a valid PDF and point estimate (``good``):
    zp, zt, mag, pit, in68, in95, mu (PDF mean), cde (CDE loss term), and their
    full-precision PDFs."""
    good = (np.isfinite(cols["zp"]) & pdfstore.valid_mask(cols["pdf"]) & cols["full_valid"])
    pdf = np.asarray(cols["pdf_full"][good], dtype=np.float64)
    zt = cols["zt"][good]
    obj = {"zp": cols["zp"][good], "zt": zt, "mag": cols["mag"][good],
           "pit": metrics.pit_values(pdf, zgrid, zt),
           "in68": (cols["z_err68_low"][good] <= zt) & (zt <= cols["z_err68_high"][good]),
           "in95": (cols["z_err95_low"][good] <= zt) & (zt <= cols["z_err95_high"][good]),
           "mu": metrics.pdf_means(pdf, zgrid),
           "cde": metrics.cde_terms(pdf, zgrid, zt) if len(zt) else np.zeros(0)}
    return obj, good, pdf


def evaluate_algorithm(cols: dict, zgrid: np.ndarray, cfg: dict, edges: dict,
                       counts: np.ndarray) -> dict:
    """All metrics of one algorithm with bootstrap errors from ``counts`` (the sample's
    resamples, all rows; see ``run``)."""
    vcfg = cfg["validate"]
    minn, small_n = vcfg["bins"]["min_objects"], vcfg["bins"]["small_n"]
    obj, good, pdf = object_arrays(cols, zgrid)
    c = counts[:, good]
    m = {"n": int(good.sum()), "n_bad_pdf": int((~good).sum())}
    m.update({k: v for k, v in metrics.sample_metrics(obj, c).items() if k != "n"})
    cvm = metrics.pit_ks_cvm(obj["pit"])[1]
    m["pit_cvm"], m["pit_cvm_err"] = cvm, metrics.std_err(metrics.cvm_uniform_counts(obj["pit"], c))
    if len(pdf):
        ens = metrics.ensemble(pdf, zgrid)
        m["cde_loss"] = metrics.cde_loss(ens, zgrid, obj["zt"])
        m.update({f"{k}_qp": v for k, v in metrics.pit_metrics(metrics.pit(ens, obj["zt"])).items()})
        del ens
    else:
        m["cde_loss"] = float("nan")
        m.update({f"{k}_qp": float("nan") for k in metrics.PIT_KEYS})
    m["cde_loss_err"] = metrics.std_err(metrics.wmean(obj["cde"], c))
    m["n_boot"] = int(len(counts))
    binned = {}
    for var, values in (("mag", obj["mag"]), ("z_true", obj["zt"]), ("z_phot", obj["zp"])):
        binned[var] = metrics.binned_metrics(obj, c, values, edges[var], minn, small_n)
    tomo_rows, tomo_curves = metrics.tomo_nz(obj["zp"], obj["zt"], pdf, zgrid, edges["z_phot"])
    idx = metrics.assign_bins(obj["zp"], edges["z_phot"])
    for i, row in enumerate(tomo_rows):
        sel = idx == i
        row["small"] = bool(row["n"] < small_n)
        row.update(metrics.tomo_shift(obj, c, sel) if row["n"] else
                   {"mean_z_true_err": float("nan"), "mean_shift_err": float("nan"),
                    "mean_shift_1pz_err": float("nan")})
    stacked = metrics.normalised(pdf, zgrid).mean(axis=0) if len(pdf) else np.zeros_like(zgrid)
    sets = {}
    for name, rs in vcfg["requirements"].items():
        if not rs["enabled"]:
            continue
        gm = metrics.sample_metrics(obj, c, sample_mask(obj, rs["sample"]))
        checks = goal_checks(gm, rs)
        sets[name] = {"title": rs["title"], "gate": rs["gate"], "n": gm["n"],
                      "metrics": _jsonable(gm), "checks": checks,
                      "pass": all(x["pass"] for x in checks if x["required"])}
    tomo_sets = {}
    for name, ts in vcfg["tomo_requirements"].items():
        if ts["enabled"]:
            tomo_sets[name] = {"title": ts["title"], "gate": ts["gate"],
                               **tomo_checks(obj, c, ts, edges["z_phot"], minn, small_n)}
    del pdf
    gating = [s["pass"] for s in sets.values() if s["gate"]] + \
             [t["pass"] for t in tomo_sets.values() if t["gate"]]
    return {"metrics": m, "binned": binned, "tomo_rows": tomo_rows, "tomo_curves": tomo_curves,
            "stacked": stacked, "obj": obj, "pits": obj["pit"], "zp": obj["zp"],
            "zt": obj["zt"], "sets": sets, "tomo_sets": tomo_sets, "pass": all(gating)}


def run(estimate_files: dict[str, str], cfg: dict, out: dict) -> dict:
    """Every validation output (``output_paths``) from the algorithms' estimates files."""
    import pandas as pd

    from pzpipe.core.zgrid import from_config as make_zgrid
    from pzpipe.stages import valplots

    check_validate_section(cfg)
    zgrid = make_zgrid(cfg)
    vcfg = cfg["validate"]
    point = vcfg["point_estimate"]
    results, sample_info, edges, counts = {}, None, None, {}
    for algo, path in estimate_files.items():
        cols, meta = read_validation_estimates(path, point)
        if edges is None:
            sample_info = meta.get("validation_sample")
            edges = {"mag": mag_edges(cfg, cols["mag"], sample_info), "z_true": z_edges(cfg),
                     "z_phot": np.asarray(vcfg["bins"]["tomo_edges"], float)}
        n_rows = len(cols["zt"])
        if n_rows not in counts:        # the same resamples for every estimator of the sample
            counts[n_rows] = metrics.bootstrap_counts(n_rows, vcfg["bootstrap"]["n"],
                                                      vcfg["bootstrap"]["seed"])
        r = evaluate_algorithm(cols, zgrid, cfg, edges, counts[n_rows])
        del cols
        results[algo] = r
        log.info("%s: %s; gating sets %s", algo,
                 {k: round(v, 4) if isinstance(v, float) else v for k, v in r["metrics"].items()
                  if not k.endswith("_err")}, "PASS" if r["pass"] else "FAIL")
    ref = cfg["ref_band"]
    nb = int(vcfg["bootstrap"]["n"])
    df = pd.DataFrame([{"algorithm": a, **r["metrics"]} for a, r in results.items()],
                      columns=METRIC_COLS)
    binned = pd.DataFrame([{"algorithm": a, "bin_var": f"mag_{ref}" if var == "mag" else var,
                            **row, "n_boot": nb}
                           for a, r in results.items() for var, rows in r["binned"].items()
                           for row in rows], columns=BINNED_COLS)
    tomo = pd.DataFrame([{"algorithm": a, **row, "n_boot": nb} for a, r in results.items()
                         for row in r["tomo_rows"]], columns=TOMO_COLS)
    for frame, key in ((df, "csv"), (binned, "binned_csv"), (tomo, "tomo_csv")):
        with atomic_path(out[key]) as tmp:
            frame.to_csv(tmp, index=False, float_format="%.6g")
    _write(out["md"], metrics_markdown(df, cfg, sample_info))
    _write(out["binned_md"], binned_markdown(binned, cfg))
    _write(out["tomo_md"], tomo_markdown(tomo, cfg))
    req = requirements(results, cfg)
    write_json_atomic(out["req_json"], req)
    _write(out["req_md"], requirements_markdown(req, cfg))
    valplots.scatter(results, out["scatter_png"], point)
    valplots.pit(results, out["pit_png"])
    valplots.nz(results, zgrid, out["nz_png"])
    sets = [rs for rs in vcfg["requirements"].values() if rs["enabled"]]
    minn, small_n = vcfg["bins"]["min_objects"], vcfg["bins"]["small_n"]
    valplots.metrics_vs(binned, f"mag_{ref}", f"{ref}-band magnitude", sets, out["vs_mag_png"],
                        minn, small_n, nb)
    valplots.metrics_vs(binned, "z_true", "true redshift", sets, out["vs_z_png"], minn,
                        small_n, nb)
    valplots.comparison(results, binned, f"mag_{ref}", f"{ref}-band magnitude", sets,
                        out["comparison_png"], small_n, nb, point)
    for algo, path in zip(results, out["tomo_png"]):
        valplots.tomo_nz(algo, results[algo], zgrid, edges["z_phot"], path, nb)
    return results


def run_rule(algos: list[str], estimate_files: list[str], cfg: dict, output) -> dict:
    """Rule entry point: ``output`` has the names of ``output_paths``."""
    names = output_paths("results", algos).keys()
    out = {k: getattr(output, k) for k in names}
    out["tomo_png"] = list(out["tomo_png"])
    return run(dict(zip(algos, estimate_files)), cfg, out)


def requirements(results: dict, cfg: dict) -> dict:
    v = cfg["validate"]
    return {
        "requirements": v["requirements"], "tomo_requirements": v["tomo_requirements"],
        "bootstrap": v["bootstrap"], "ref_band": cfg["ref_band"],
        "point_estimate": v["point_estimate"],
        "min_objects": v["bins"]["min_objects"],
        "algorithms": {a: {"pass": r["pass"], "sets": r["sets"], "tomo_sets": r["tomo_sets"]}
                       for a, r in results.items()},
    }


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------- markdown
def _write(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _pm(v, e) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    if e is None or (isinstance(e, float) and not np.isfinite(e)):
        return f"{v:.4g}"
    return f"{v:.4g} ± {e:.2g}"


def _sig(s) -> str:
    return "" if s is None else f", {s:+.1f}σ"


def _table(df) -> str:
    """Markdown table; ``x`` and ``x_err`` columns are shown as one ``x ± err`` column;
    a ``small`` column marks ``n`` with '*'."""
    cols = [c for c in df.columns if not (c.endswith("_err") and c[:-4] in df.columns)
            and c not in ("small", "n_boot")]
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = ""
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if f"{c}_err" in df.columns:
                cells.append("" if not np.isfinite(v) else _pm(float(v), float(r[f"{c}_err"])))
            elif c == "n" and "small" in df.columns and bool(r["small"]):
                cells.append(f"{v}*")
            else:
                cells.append(_fmt(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def _definitions(cols) -> str:
    return "\n".join(f"- `{c}`: {metrics.DEFINITIONS[c]}" for c in cols
                     if c in metrics.DEFINITIONS) + "\n"


def _boot_line(cfg: dict) -> str:
    b = cfg["validate"]["bootstrap"]
    return (f"Errors (± and `*_err` in the CSV): standard deviation over N = {b['n']} bootstrap "
            f"resamples of the validation sample (validate.bootstrap, seed {b['seed']}), the "
            f"same resamples for every estimator, bin and requirement sample.\n")


def _sample_line(cfg: dict, info: dict | None) -> str:
    if not info:
        return f"Sample: `{cfg['validation']['file']}`.\n"
    cuts = {k: v for k, v in info["cuts"].items() if v not in (None, [])}
    line = (f"Sample: `{info['file']}`: {info['rows_in']} rows, {info['rows_after_cuts']} after "
            f"the cuts of `{info['source']}` {cuts}, {info['rows']} used (validation.max_rows)."
            f" Cut by reason: {info['cut_by_reason']}.")
    if info.get("skipped_require_true"):
        line += (f" Catalog cut columns {info['skipped_require_true']} are not in the sample's "
                 f"file and were not applied.")
    return line + f" Estimated in chunks of {cfg['validate']['chunk_rows']} rows (validate.chunk_rows).\n"


def metrics_markdown(df, cfg: dict, info: dict | None) -> str:
    return (f"# Validation metrics ({cfg['release']})\n\n" + _sample_line(cfg, info)
            + f"Point estimate: `{cfg['validate']['point_estimate']}`; "
              f"ez = (z_phot - z_true)/(1 + z_true). " + _boot_line(cfg)
            + "PIT, coverage and CDE loss use the full-precision PDFs (column `pdf_full` of "
              "the validation estimates), not the stored quantised ones.\n\n" + _table(df)
            + "\n## Definitions\n\n" + _definitions(df.columns))


def binned_markdown(binned, cfg: dict) -> str:
    b = cfg["validate"]["bins"]
    text = (f"# Validation metrics per bin ({cfg['release']})\n\nBins are lo <= x < hi (the "
            f"last also takes x = hi); bins with fewer than {b['min_objects']} objects "
            f"(validate.bins.min_objects) have no metrics; `n*`: fewer than {b['small_n']} "
            f"objects (validate.bins.small_n), read with care. `z_phot` bins are the "
            f"tomographic bins (validate.bins.tomo_edges) of "
            f"`{cfg['validate']['point_estimate']}`. `outlier_rate_3sigma` uses each bin's own "
            f"sigma_IQR (qp); `outlier_frac_015` is the fixed |ez| > 0.15 beside it. "
            + _boot_line(cfg))
    for var, part in binned.groupby("bin_var", sort=False):
        text += f"\n## {var}\n\n" + _table(part.drop(columns="bin_var"))
    return text + "\n## Definitions\n\n" + _definitions(BINNED_COLS)


def tomo_markdown(tomo, cfg: dict) -> str:
    return (f"# Tomographic n(z) ({cfg['release']})\n\nPer photo-z bin "
            f"(`{cfg['validate']['point_estimate']}`, validate.bins.tomo_edges): mean z of the "
            f"stacked full-precision PDFs (mean of the unit-normalised PDFs) against the mean "
            f"true z. `mean_shift` = mean_z_stacked - mean_z_true; `mean_shift_1pz` = "
            f"mean_shift / (1 + mean_z_true); `n*`: fewer than "
            f"{cfg['validate']['bins']['small_n']} objects. " + _boot_line(cfg) + "\n"
            + _table(tomo))


def _sample_text(sample: dict, band: str) -> str:
    t = f"{sample['z_min']:g} <= z_true < {sample['z_max']:g}"
    if sample["ref_mag_max"] is not None:
        t = f"{band} < {sample['ref_mag_max']:g}, " + t
    return t


def requirements_markdown(req: dict, cfg: dict) -> str:
    b = req["bootstrap"]
    text = (f"# Photo-z requirements ({cfg['release']})\n\nPoint estimate "
            f"`{req['point_estimate']}`. Every set of validate.requirements and "
            f"validate.tomo_requirements that is enabled is shown. PASS: value < limit for "
            f"every required check (a goal is reported as met / not met). Each verdict gives "
            f"its margin in sigma, (limit - value) / error, with the error the standard "
            f"deviation over N = {b['n']} bootstrap resamples (seed {b['seed']}); a margin "
            f"within +-2 sigma is not a clear verdict. For abs(bias) the error is that of the "
            f"bias.\n")
    if not req["algorithms"]:
        return text + "\nNo estimator is enabled.\n"
    band = req["ref_band"]
    for name, rs in req["requirements"].items():
        if not rs["enabled"]:
            continue
        text += (f"\n## {rs['title']} (`{name}`)\n\nSource: {rs['source']}.\n\nSample: "
                 f"{_sample_text(rs['sample'], band)}. Gates the release: "
                 f"{'yes' if rs['gate'] else 'no'}.\n\n")
        first = next(iter(req["algorithms"].values()))["sets"][name]["checks"]
        text += "| estimator | n | " + " | ".join(CHECK_NAMES[c["name"]] for c in first) + \
            " | result |\n|---|---|" + "---|" * len(first) + "---|\n"
        for a, r in req["algorithms"].items():
            s = r["sets"][name]
            cells = []
            for c in s["checks"]:
                verdict = ("PASS" if c["pass"] else "FAIL") if c["required"] else \
                    ("met" if c["pass"] else "not met")
                cells.append(f"{_pm(c['value'], c['error'])} < {c['limit']:g}: {verdict}"
                             f"{_sig(c['margin_sigma'])}")
            text += f"| {a} | {s['n']} | " + " | ".join(cells) + \
                f" | **{'PASS' if s['pass'] else 'FAIL'}** |\n"
    for name, ts in req["tomo_requirements"].items():
        if not ts["enabled"]:
            continue
        edges = ts["tomo_edges"] if ts["tomo_edges"] is not None else \
            cfg["validate"]["bins"]["tomo_edges"]
        text += (f"\n## {ts['title']} (`{name}`)\n\nSource: {ts['source']}.\n\nSample: "
                 f"{_sample_text(ts['sample'], band)}; photo-z bins {edges}; bins with fewer "
                 f"than {req['min_objects']} objects are not checked. Check: |mean z of the "
                 f"stacked PDFs - mean true z| / (1 + mean true z) < {ts['mean_shift_max']:g} "
                 f"in every bin. Gates the release: {'yes' if ts['gate'] else 'no'}.\n\n"
                 f"| estimator | bins checked | bins failing | worst bin (least margin) | "
                 f"\\|shift\\|/(1+z) there | result |\n|---|---|---|---|---|---|\n")
        for a, r in req["algorithms"].items():
            t = r["tomo_sets"][name]
            w = t["worst"]
            where = "" if w is None else f"{w['lo']:g}-{w['hi']:g} (n = {w['n']}" + \
                ("*" if w["small"] else "") + ")"
            val = "" if w is None else f"{_pm(w['value'], w['error'])}{_sig(w['margin_sigma'])}"
            text += (f"| {a} | {t['n_checked']} | {t['n_fail']} | {where} | {val} | "
                     f"**{'PASS' if t['pass'] else 'FAIL'}** |\n")
    gate = "on" if cfg["validate"]["release_gate"] else "off"
    gating = [n for n, rs in req["requirements"].items() if rs["enabled"] and rs["gate"]] + \
             [n for n, ts in req["tomo_requirements"].items() if ts["enabled"] and ts["gate"]]
    return text + (f"\nRelease gate (validate.release_gate): {gate}; when on, the export "
                   f"refuses to publish while an enabled estimator FAILs a gating set "
                   f"({', '.join(gating) or 'none'}).\n")
