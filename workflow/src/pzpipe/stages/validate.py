"""Validate stage: the field's metrics on a held-out sample with true redshifts.

Per algorithm the sample is estimated with exactly the release code path
(``estimate.estimate_sample``; rule ``validate_estimate``) and everything is computed
from what is stored: point estimates from the full PDFs, PIT and CDE loss from the
decoded (stored) PDFs. Metric definitions: ``pzpipe.stages.metrics`` (qp and RAIL classes).

Outputs (``output_paths``): whole-sample metrics (``metrics.csv``/``.md``), metrics per
bin of reference-band magnitude, true z and photo-z (``metrics_binned.csv``/``.md``),
tomographic n(z) shifts (``tomo_nz.csv``/``.md``), PASS/FAIL against the science goals
(``requirements.md``/``.json``), and figures (``pzpipe.stages.valplots``).
``check_release_gate`` is called by the export when ``validate.release_gate`` is on.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pzpipe import PipelineError
from pzpipe.stages import metrics
from pzpipe.release import pdfstore
from pzpipe.core.io import atomic_path, parquet_meta, write_json_atomic
from pzpipe.stages.partition import ID_COL
from pzpipe.run.config import check_validate_section

log = logging.getLogger(__name__)

METRIC_COLS = ["algorithm", "n", "n_bad_pdf", "bias", "sigma_iqr", "sigma_nmad",
               "outlier_rate_3sigma", "outlier_frac_015", "pit_ks", "pit_cvm", "pit_ad",
               "pit_outlier_rate", "cde_loss"]
BINNED_COLS = ["algorithm", "bin_var", "lo", "hi", "n", "bias", "sigma_iqr", "sigma_nmad",
               "outlier_rate_3sigma", "outlier_frac_015", "pit_ks"]
TOMO_COLS = ["algorithm", "lo", "hi", "n", "mean_z_true", "mean_z_stacked", "mean_shift",
             "mean_shift_1pz"]
GOALS_SOURCE = ("LSST Science Book v2.0 (arXiv:0912.0201), section 3.8, for the 'gold' "
                "sample i < 25.3, 0 < z < 3")


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
        "tomo_png": [f"{v}/tomo_nz_{a}.png" for a in algos],
    }


# ----------------------------------------------------------------------------- estimate
def estimate_validation(algo_name: str, model_path: str, cfg: dict, output: str,
                        sample_file: str | None = None, workers: int = 1,
                        data_dir: str | None = None) -> None:
    """Estimate the validation sample; add ``z_true`` and ``ref_mag`` (NaN = not detected
    in ``ref_band``) and record the sample (file, cuts) in the schema metadata.
    ``data_dir``: the algorithm's prepared data directory, if it declares one."""
    from pzpipe.stages.estimate import estimate_sample
    from pzpipe.stages.partition import mag_col
    from pzpipe.stages.samples import load_sample

    sample = dict(cfg["validation"])
    if sample_file:
        sample["file"] = sample_file
    data, info = load_sample(cfg, sample, section="validation")
    table = estimate_sample(algo_name, model_path, cfg, data, workers=workers,
                            data_dir=data_dir)
    if not np.array_equal(table.column(ID_COL).to_numpy(), data[ID_COL]):
        raise PipelineError(f"{algo_name}: validation estimates are not in the sample's "
                            f"order; refusing to attach true redshifts")
    mag = np.asarray(data[mag_col(cfg["ref_band"])], dtype=np.float64)
    mag = np.where(mag == float(cfg["partition"]["nondetect_val"]), np.nan, mag)
    table = table.append_column("z_true", pa.array(data["redshift"]))
    table = table.append_column("ref_mag", pa.array(mag))
    meta = dict(table.schema.metadata or {})
    pz = parquet_meta(meta)
    pz.update(validation_sample=info, ref_band=cfg["ref_band"])
    meta[b"pzpipe"] = json.dumps(pz, default=str).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp, **pdfstore.PARQUET_KWARGS)


def read_validation_estimates(path: str, point: str) -> tuple[dict, dict]:
    """The columns validation needs from one estimates file, and its ``pzpipe`` metadata."""
    schema = pq.read_schema(path)
    need = [point, "z_true", "ref_mag", "pdf"]
    missing = [c for c in need if c not in schema.names]
    if missing:
        raise PipelineError(f"validation estimates '{path}' lack column(s) {missing}: written "
                            f"by an older pzpipe. Delete the file and rerun.")
    t = pq.read_table(path, columns=need)
    meta = parquet_meta(schema)
    cols = {"zp": t.column(point).to_numpy().astype(np.float64),
            "zt": t.column("z_true").to_numpy().astype(np.float64),
            "mag": t.column("ref_mag").to_numpy().astype(np.float64),
            "pdf": t.column("pdf")}
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


# ----------------------------------------------------------------------------- goals
def goal_checks(gm: dict, tomo_rows: list[dict], goals: dict, min_objects: int) -> list[dict]:
    """Checks of the goal sample's metrics ``gm`` against ``goals`` (value < limit)."""
    specs = [("sigma_iqr", gm.get("sigma_iqr"), goals["sigma_iqr_max"], True),
             ("outlier_rate_3sigma", gm.get("outlier_rate_3sigma"),
              goals["outlier_rate_3sigma_max"], True),
             ("abs_bias", abs(gm["bias"]) if gm.get("bias") is not None else None,
              goals["abs_bias_max"], True)]
    if goals.get("tomo_mean_shift_max") is not None:
        shifts = [abs(r["mean_shift_1pz"]) for r in tomo_rows
                  if r["n"] >= min_objects and np.isfinite(r["mean_shift_1pz"])]
        specs.append(("tomo_mean_shift", max(shifts) if shifts else None,
                      goals["tomo_mean_shift_max"], True))
    specs.append(("sigma_iqr_goal", gm.get("sigma_iqr"), goals["sigma_iqr_goal"], False))
    out = []
    for name, value, limit, required in specs:
        if limit is None:
            continue
        v = None if value is None or not np.isfinite(value) else float(value)
        out.append({"name": name, "value": v, "limit": float(limit),
                    "pass": v is not None and v < limit,
                    "margin": None if v is None else float(limit - v), "required": required})
    return out


def check_release_gate(requirements_json_path: str, cfg: dict) -> None:
    """Raise PipelineError when ``validate.release_gate`` is on and an enabled estimator
    fails a required science goal in ``requirements.json``: names the estimator, the goal,
    its value, the limit and by how much it fails. Does nothing when the gate is off."""
    from pzpipe.run.config import enabled_algorithms

    if not cfg["validate"]["release_gate"]:
        return
    try:
        with open(requirements_json_path) as f:
            req = json.load(f)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"release gate: cannot read '{requirements_json_path}' ({exc}); "
                            f"run the validate rule first") from exc
    goals = cfg["validate"]["goals"]
    if req.get("goals") != goals:
        raise PipelineError(f"release gate: '{requirements_json_path}' was computed with goals "
                            f"{req.get('goals')}, the config has {goals}; rerun the validate "
                            f"rule")
    algos = enabled_algorithms(cfg)
    missing = [a for a in algos if a not in req.get("algorithms", {})]
    if missing:
        raise PipelineError(f"release gate: no validation result for {missing} in "
                            f"'{requirements_json_path}'; rerun the validate rule")
    fails = []
    for a in algos:
        for c in req["algorithms"][a]["checks"]:
            if not c.get("required", True) or c["pass"]:
                continue
            if c["value"] is None:
                fails.append(f"{a}: {c['name']} has no value (no object in the goal sample); "
                             f"limit < {c['limit']:g}")
            else:
                fails.append(f"{a}: {c['name']} = {c['value']:.4g}, limit < {c['limit']:g} "
                             f"(fails by {-c['margin']:.3g})")
    if fails:
        bad = sorted({f.split(":", 1)[0] for f in fails})
        raise PipelineError(
            f"release gate (validate.release_gate: true): {len(bad)} estimator(s) {bad} fail "
            f"the science goals (validate.goals), so the export refuses to publish them:\n  - "
            + "\n  - ".join(fails)
            + f"\nDetails: {requirements_json_path.replace('.json', '.md')}. Disable the "
              f"estimator (algorithms.<name>.enabled: false), relax validate.goals, or set "
              f"validate.release_gate: false.")
    log.info("release gate: all %d estimators pass the science goals", len(algos))


# ----------------------------------------------------------------------------- run
def evaluate_algorithm(cols: dict, zgrid: np.ndarray, cfg: dict, edges: dict) -> dict:
    """All metrics of one algorithm (see ``run``); drops the decoded PDFs before returning."""
    vcfg = cfg["validate"]
    minn = vcfg["bins"]["min_objects"]
    zp_all, zt_all, mag_all = cols["zp"], cols["zt"], cols["mag"]
    good = np.isfinite(zp_all) & pdfstore.valid_mask(cols["pdf"])
    zp, zt, mag = zp_all[good], zt_all[good], mag_all[good]
    pdf = pdfstore.decode(cols["pdf"], zgrid)[good]
    m = metrics.point_metrics(zp, zt)
    m["n_bad_pdf"] = int((~good).sum())
    ens = metrics.ensemble(pdf, zgrid)
    pit_obj = metrics.pit(ens, zt)
    pits = np.asarray(pit_obj.pit_samps, dtype=np.float64)
    m.update(metrics.pit_metrics(pit_obj))
    m["cde_loss"] = metrics.cde_loss(ens, zgrid, zt)
    binned = {}
    for var, values in (("mag", mag), ("z_true", zt), ("z_phot", zp)):
        binned[var] = metrics.binned_metrics(zp, zt, pits, values, edges[var], minn)
    tomo_rows, tomo_curves = metrics.tomo_nz(zp, zt, pdf, zgrid, edges["z_phot"])
    stacked = metrics.normalised(pdf, zgrid).mean(axis=0) if len(pdf) else np.zeros_like(zgrid)
    g = vcfg["goals"]
    sel = (zt >= g["z_min"]) & (zt < g["z_max"])
    if g["ref_mag_max"] is not None:
        sel &= mag < g["ref_mag_max"]
    gm = metrics.point_metrics(zp[sel], zt[sel])
    checks = goal_checks(gm, tomo_rows, g, minn)
    del pdf, ens
    return {"metrics": m, "binned": binned, "tomo_rows": tomo_rows, "tomo_curves": tomo_curves,
            "stacked": stacked, "pits": pits, "zp": zp, "zt": zt,
            "goal_metrics": gm, "checks": checks,
            "pass": all(c["pass"] for c in checks if c["required"])}


def run(estimate_files: dict[str, str], cfg: dict, out: dict) -> dict:
    """Every validation output (``output_paths``) from the algorithms' estimates files."""
    import pandas as pd

    from pzpipe.stages import valplots
    from pzpipe.core.zgrid import from_config as make_zgrid

    check_validate_section(cfg)
    zgrid = make_zgrid(cfg)
    point = cfg["validate"]["point_estimate"]
    results, sample_info, edges = {}, None, None
    for algo, path in estimate_files.items():
        cols, meta = read_validation_estimates(path, point)
        if edges is None:
            sample_info = meta.get("validation_sample")
            edges = {"mag": mag_edges(cfg, cols["mag"], sample_info), "z_true": z_edges(cfg),
                     "z_phot": np.asarray(cfg["validate"]["bins"]["tomo_edges"], float)}
        r = evaluate_algorithm(cols, zgrid, cfg, edges)
        results[algo] = r
        log.info("%s: %s; goals %s", algo, {k: round(v, 4) if isinstance(v, float) else v
                                            for k, v in r["metrics"].items()},
                 "PASS" if r["pass"] else "FAIL")
    ref = cfg["ref_band"]
    df = pd.DataFrame([{"algorithm": a, **r["metrics"]} for a, r in results.items()])[METRIC_COLS]
    binned = pd.DataFrame([{"algorithm": a, "bin_var": f"mag_{ref}" if var == "mag" else var, **row}
                           for a, r in results.items() for var, rows in r["binned"].items()
                           for row in rows])[BINNED_COLS]
    tomo = pd.DataFrame([{"algorithm": a, **row} for a, r in results.items()
                         for row in r["tomo_rows"]])[TOMO_COLS]
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
    goals = cfg["validate"]["goals"]
    minn = cfg["validate"]["bins"]["min_objects"]
    valplots.metrics_vs(binned, f"mag_{ref}", f"{ref}-band magnitude", goals, out["vs_mag_png"],
                        minn)
    valplots.metrics_vs(binned, "z_true", "true redshift", goals, out["vs_z_png"], minn)
    for algo, path in zip(results, out["tomo_png"]):
        valplots.tomo_nz(algo, results[algo], zgrid, edges["z_phot"], path)
    return results


def run_rule(algos: list[str], estimate_files: list[str], cfg: dict, output) -> dict:
    """Rule entry point: ``output`` has the names of ``output_paths``."""
    names = output_paths("results", algos).keys()
    out = {k: getattr(output, k) for k in names}
    out["tomo_png"] = list(out["tomo_png"])
    return run(dict(zip(algos, estimate_files)), cfg, out)


def requirements(results: dict, cfg: dict) -> dict:
    g = cfg["validate"]["goals"]
    return {
        "goals": g, "source": GOALS_SOURCE, "ref_band": cfg["ref_band"],
        "point_estimate": cfg["validate"]["point_estimate"],
        "algorithms": {a: {"pass": r["pass"], "n": r["goal_metrics"]["n"],
                           "metrics": _jsonable(r["goal_metrics"]), "checks": r["checks"]}
                       for a, r in results.items()},
    }


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------- markdown
def _write(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def _table(df) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = ""
    for _, r in df.iterrows():
        cells = []
        for v in r:
            if isinstance(v, float):
                cells.append("" if not np.isfinite(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def _definitions(cols) -> str:
    return "\n".join(f"- `{c}`: {metrics.DEFINITIONS[c]}" for c in cols
                     if c in metrics.DEFINITIONS) + "\n"


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
    return line + "\n"


def metrics_markdown(df, cfg: dict, info: dict | None) -> str:
    return (f"# Validation metrics ({cfg['release']})\n\n" + _sample_line(cfg, info)
            + f"Point estimate: `{cfg['validate']['point_estimate']}`; "
              f"ez = (z_phot - z_true)/(1 + z_true).\n\n" + _table(df)
            + "\n## Definitions\n\n" + _definitions(df.columns))


def binned_markdown(binned, cfg: dict) -> str:
    minn = cfg["validate"]["bins"]["min_objects"]
    text = (f"# Validation metrics per bin ({cfg['release']})\n\nBins are lo <= x < hi (the "
            f"last also takes x = hi); bins with fewer than {minn} objects "
            f"(validate.bins.min_objects) have no metrics. `z_phot` bins are the tomographic "
            f"bins (validate.bins.tomo_edges) of `{cfg['validate']['point_estimate']}`.\n")
    for var, part in binned.groupby("bin_var", sort=False):
        text += f"\n## {var}\n\n" + _table(part.drop(columns="bin_var"))
    return text + "\n## Definitions\n\n" + _definitions(BINNED_COLS)


def tomo_markdown(tomo, cfg: dict) -> str:
    return (f"# Tomographic n(z) ({cfg['release']})\n\nPer photo-z bin "
            f"(`{cfg['validate']['point_estimate']}`, validate.bins.tomo_edges): mean z of the "
            f"stacked PDFs (mean of the unit-normalised PDFs) against the mean true z.\n"
            f"`mean_shift` = mean_z_stacked - mean_z_true; `mean_shift_1pz` = mean_shift / "
            f"(1 + mean_z_true).\n\n" + _table(tomo))


def requirements_markdown(req: dict, cfg: dict) -> str:
    g = req["goals"]
    sample = f"{g['z_min']:g} <= z_true < {g['z_max']:g}"
    if g["ref_mag_max"] is not None:
        sample = f"{req['ref_band']} < {g['ref_mag_max']:g}, " + sample
    names = {"sigma_iqr": "sigma_IQR", "outlier_rate_3sigma": "3-sigma outlier rate",
             "abs_bias": "abs(bias)", "tomo_mean_shift": "max abs(tomographic mean shift)/(1+z)",
             "sigma_iqr_goal": "sigma_IQR (goal)"}
    text = (f"# Science goals ({cfg['release']})\n\nGoal sample: {sample} (validate.goals), "
            f"point estimate `{req['point_estimate']}`. Limits (validate.goals) default to the "
            f"{req['source']} (config/README.md). PASS means value < limit for every required "
            f"goal; the sigma_IQR goal is reported, not required. requirements.json also "
            f"gives each margin (limit - value; negative: fails by that much).\n\n")
    if not req["algorithms"]:
        return text + "No estimator is enabled.\n"
    first = next(iter(req["algorithms"].values()))["checks"]
    text += "| estimator | n | " + " | ".join(names[c["name"]] for c in first) + " | result |\n"
    text += "|---|---|" + "---|" * len(first) + "---|\n"
    for a, r in req["algorithms"].items():
        cells = []
        for c in r["checks"]:
            verdict = ("PASS" if c["pass"] else "FAIL") if c["required"] else \
                ("met" if c["pass"] else "not met")
            val = "n/a" if c["value"] is None else f"{c['value']:.4g}"
            cells.append(f"{val} < {c['limit']:g}: {verdict}")
        text += f"| {a} | {r['n']} | " + " | ".join(cells) + \
            f" | **{'PASS' if r['pass'] else 'FAIL'}** |\n"
    gate = "on" if cfg["validate"]["release_gate"] else "off"
    return text + (f"\nRelease gate (validate.release_gate): {gate}; when on, the export "
                   f"refuses to publish while an enabled estimator FAILs.\n")
