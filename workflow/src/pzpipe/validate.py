"""Validate stage: metrics and plots on a held-out sample with true redshifts.

Per algorithm the sample is estimated with exactly the release code path
(``estimate.estimate_sample``) and the metrics are computed from what is stored:
point estimates from the full PDFs, PIT and CDE loss from the decoded (stored) PDFs.

Metrics (dz = (z_phot - z_true) / (1 + z_true), z_phot = z_mode by default):
bias = median(dz); sigma_IQR = IQR(dz) / 1.349; sigma_NMAD = 1.4826 median|dz - median(dz)|;
outlier fraction = mean(|dz| > threshold) (0.15); PIT KS, CvM, AD and PIT outlier rate
(qp.metrics.pit.PIT); CDE loss = mean( integral p(z)^2 dz - 2 p(z_true) ).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import pdfstore
from .io import atomic_path
from .partition import ID_COL, read_sample

log = logging.getLogger(__name__)


def estimate_validation(algo_name: str, model_path: str, cfg: dict, output: str,
                        sample_file: str | None = None, workers: int = 1) -> None:
    from .estimate import estimate_sample

    sample = dict(cfg["validation"])
    if sample_file:
        sample["file"] = sample_file
    data = read_sample(cfg, sample)
    table = estimate_sample(algo_name, model_path, cfg, data, workers=workers)
    table = table.append_column("z_true", pa.array(data["redshift"]))
    with atomic_path(output) as tmp:
        pq.write_table(table, tmp, **pdfstore.PARQUET_KWARGS)


def point_metrics(zp: np.ndarray, zt: np.ndarray, threshold: float = 0.15) -> dict:
    ok = np.isfinite(zp)
    dz = (zp[ok] - zt[ok]) / (1 + zt[ok])
    q25, q75 = np.percentile(dz, [25, 75])
    med = np.median(dz)
    return {
        "n": int(ok.sum()),
        "n_bad_pdf": int((~ok).sum()),
        "bias": float(med),
        "sigma_iqr": float((q75 - q25) / 1.349),
        "sigma_nmad": float(1.4826 * np.median(np.abs(dz - med))),
        "outlier_frac": float(np.mean(np.abs(dz) > threshold)),
    }


def cde_loss(pdf: np.ndarray, zgrid: np.ndarray, zt: np.ndarray) -> float:
    term1 = np.trapezoid(pdf**2, zgrid, axis=1)
    idx = np.clip(np.searchsorted(zgrid, zt), 1, len(zgrid) - 1)
    w = (zt - zgrid[idx - 1]) / (zgrid[idx] - zgrid[idx - 1])
    rows = np.arange(len(zt))
    p_true = (1 - w) * pdf[rows, idx - 1] + w * pdf[rows, idx]
    return float(np.mean(term1 - 2 * p_true))


def pit_metrics(pdf: np.ndarray, zgrid: np.ndarray, zt: np.ndarray) -> tuple[dict, np.ndarray]:
    import qp
    from qp.metrics.pit import PIT

    ens = qp.Ensemble(qp.interp, data=dict(xvals=zgrid, yvals=pdf))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pit = PIT(ens, zt)
        meta = pit.calculate_pit_meta_metrics()
    out = {}
    for key, val in meta.items():
        stat = getattr(val, "statistic", val)
        try:
            out[f"pit_{key}"] = float(stat)
        except (TypeError, ValueError):
            pass
    return out, np.asarray(pit.pit_samps)


def compute_metrics(table: pa.Table, zgrid: np.ndarray, threshold: float,
                    point: str = "z_mode") -> tuple[dict, np.ndarray, np.ndarray]:
    zt = table.column("z_true").to_numpy()
    zp = table.column(point).to_numpy().astype(np.float64)
    m = point_metrics(zp, zt, threshold)
    pdf = pdfstore.decode(table.column("pdf"), zgrid)
    good = np.isfinite(zp)
    pm, pits = pit_metrics(pdf[good], zgrid, zt[good])
    m.update(pm)
    m["cde_loss"] = cde_loss(pdf[good], zgrid, zt[good])
    return m, pdf, pits


METRIC_COLS = ["algorithm", "n", "n_bad_pdf", "bias", "sigma_iqr", "sigma_nmad", "outlier_frac",
               "pit_ks", "pit_cvm", "pit_ad", "pit_outlier_rate", "cde_loss"]


def run(estimate_files: dict[str, str], cfg: dict, out_csv: str, out_md: str,
        plot_paths: dict[str, str]) -> list[dict]:
    """Metrics table (CSV + markdown) and plots for every algorithm's validation estimates."""
    import matplotlib

    matplotlib.use("Agg")
    from .config import zgrid as mk

    zgrid = mk(cfg)
    thr = cfg["validate"]["outlier_threshold"]
    rows, per_algo = [], {}
    for algo, path in estimate_files.items():
        table = pq.read_table(path)
        m, pdf, pits = compute_metrics(table, zgrid, thr)
        m["algorithm"] = algo
        rows.append(m)
        per_algo[algo] = (table, pdf, pits)
        log.info("%s: %s", algo, {k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()})
    import pandas as pd

    df = pd.DataFrame(rows)
    df = df[[c for c in METRIC_COLS if c in df.columns]]
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.5g")
    with atomic_path(out_md) as tmp:
        with open(tmp, "w") as f:
            f.write(to_markdown(df, cfg))
    _plot_scatter(per_algo, plot_paths["scatter"])
    _plot_pit(per_algo, plot_paths["pit"])
    _plot_nz(per_algo, zgrid, plot_paths["nz"])
    return rows


def run_rule(algos: list[str], estimate_files: list[str], cfg: dict, output) -> list[dict]:
    """Rule entry point: ``output`` has csv, md, scatter, pit, nz paths."""
    return run(dict(zip(algos, estimate_files)), cfg, output.csv, output.md,
               {"scatter": output.scatter, "pit": output.pit, "nz": output.nz})


def to_markdown(df, cfg) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = ""
    for _, r in df.iterrows():
        body += "| " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |\n"
    return (f"# Validation metrics ({cfg['release']})\n\nSample: `{cfg['validation']['file']}`; "
            f"point estimate z_mode; outliers |dz|/(1+z) > {cfg['validate']['outlier_threshold']}."
            f"\n\n" + head + body)


def _grid(n):
    ncol = min(n, 3)
    nrow = int(np.ceil(n / ncol))
    return nrow, ncol


def _plot_scatter(per_algo, path):
    import matplotlib.pyplot as plt

    nrow, ncol = _grid(len(per_algo))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 4 * nrow), squeeze=False)
    for ax, (algo, (t, _, _)) in zip(axes.flat, per_algo.items()):
        zt = t.column("z_true").to_numpy()
        zp = t.column("z_mode").to_numpy()
        ok = np.isfinite(zp)
        zmax = max(3.0, float(np.nanmax(zt)))
        ax.hist2d(zt[ok], zp[ok], bins=120, range=[[0, zmax], [0, zmax]], cmin=1,
                  norm=matplotlib_lognorm(), cmap="viridis")
        x = np.linspace(0, zmax, 10)
        ax.plot(x, x, "r-", lw=0.8)
        ax.plot(x, x + 0.15 * (1 + x), "r--", lw=0.6)
        ax.plot(x, x - 0.15 * (1 + x), "r--", lw=0.6)
        ax.set(xlabel="z_true", ylabel="z_phot (mode)", title=algo, xlim=(0, zmax), ylim=(0, zmax))
    for ax in list(axes.flat)[len(per_algo):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def matplotlib_lognorm():
    from matplotlib.colors import LogNorm

    return LogNorm()


def _plot_pit(per_algo, path):
    import matplotlib.pyplot as plt

    nrow, ncol = _grid(len(per_algo))
    fig, axes = plt.subplots(nrow * 2, ncol, figsize=(4.2 * ncol, 3.2 * 2 * nrow), squeeze=False)
    for i, (algo, (_, _, pits)) in enumerate(per_algo.items()):
        r, c = divmod(i, ncol)
        ax = axes[2 * r, c]
        ax.hist(pits, bins=50, range=(0, 1), density=True, color="C0", alpha=0.8)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(title=f"{algo}: PIT", xlabel="PIT", ylabel="density", xlim=(0, 1))
        ax = axes[2 * r + 1, c]
        q = np.linspace(0, 1, 101)
        ax.plot(q, np.quantile(pits, q), "C0-")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=f"{algo}: PIT QQ", xlabel="uniform quantile", ylabel="PIT quantile",
               xlim=(0, 1), ylim=(0, 1))
    used = {(2 * (i // ncol) + k, i % ncol) for i in range(len(per_algo)) for k in (0, 1)}
    for r in range(axes.shape[0]):
        for c in range(axes.shape[1]):
            if (r, c) not in used:
                axes[r, c].axis("off")
    fig.tight_layout()
    _save(fig, path)


def _plot_nz(per_algo, zgrid, path):
    import matplotlib.pyplot as plt

    nrow, ncol = _grid(len(per_algo))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (algo, (t, pdf, _)) in zip(axes.flat, per_algo.items()):
        zt = t.column("z_true").to_numpy()
        stacked = np.nansum(pdf, axis=0)
        stacked /= np.trapezoid(stacked, zgrid)
        ax.hist(zt, bins=60, range=(zgrid[0], zgrid[-1]), density=True, histtype="step",
                color="k", label="true z")
        ax.plot(zgrid, stacked, "C1-", label="stacked PDFs")
        ax.set(title=f"{algo}: n(z)", xlabel="z", ylabel="n(z)")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(per_algo):]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path):
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
