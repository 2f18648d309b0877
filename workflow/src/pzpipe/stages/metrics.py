"""Photo-z metrics with the field's own classes, so numbers compare with DESC/RAIL papers.

With ez = (z_phot - z_true) / (1 + z_true):

- ``bias``: median(ez) (qp ``PointBias``);
- ``sigma_iqr``: IQR(ez) / 1.349 (qp ``PointSigmaIQR``);
- ``sigma_nmad``: 1.4826 median|ez - median(ez)| (qp ``PointSigmaMAD``);
- ``outlier_rate_3sigma``: fraction with |ez| > max(0.06, 3 sigma_iqr) (qp
  ``PointOutlierRate``; ez is not centred on the bias);
- ``outlier_frac_015``: fraction with |ez| > 0.15 (fixed threshold; no library class);
- ``pit_ks``, ``pit_cvm``, ``pit_ad``, ``pit_outlier_rate``: qp
  ``PIT(ensemble, z_true).calculate_pit_meta_metrics()`` (statistics only; the PIT
  outlier rate is the fraction of PIT values below 1e-4 or above 0.9999);
- ``cde_loss``: RAIL ``CDELoss(ensemble, zgrid, z_true).evaluate().statistic`` =
  mean(integral p^2 dz) - 2 mean(p at the grid point nearest z_true).

The ensemble is ``qp.Ensemble(qp.interp, xvals=zgrid, yvals=pdf)`` of the stored
(decoded) PDFs. The tests check each function against the library class itself.
"""

from __future__ import annotations

import warnings

import numpy as np

FIXED_OUTLIER_THRESHOLD = 0.15
POINT_KEYS = ("bias", "sigma_iqr", "sigma_nmad", "outlier_rate_3sigma", "outlier_frac_015")
PIT_KEYS = ("pit_ks", "pit_cvm", "pit_ad", "pit_outlier_rate")

# one line per metric, written to metrics.md / metrics_binned.md
DEFINITIONS = {
    "n": "objects with a valid PDF (and point estimate) in the sample or bin",
    "n_bad_pdf": "objects whose PDF was flagged invalid (excluded from every metric)",
    "bias": "median(ez), ez = (z_phot - z_true)/(1 + z_true) (qp PointBias)",
    "sigma_iqr": "IQR(ez)/1.349 (qp PointSigmaIQR)",
    "sigma_nmad": "1.4826 x median(|ez - median(ez)|) (qp PointSigmaMAD)",
    "outlier_rate_3sigma": "fraction with |ez| > max(0.06, 3 sigma_iqr), ez not centred on "
                           "the bias (qp PointOutlierRate: the Science Book's 3-sigma outliers as qp and RAIL "
                           "implement them)",
    "outlier_frac_015": "fraction with |ez| > 0.15 (fixed threshold)",
    "pit_ks": "Kolmogorov-Smirnov statistic of the PIT values against U(0,1) "
              "(qp PIT.evaluate_PIT_KS)",
    "pit_cvm": "Cramer-von Mises statistic of the PIT values (qp PIT.evaluate_PIT_CvM)",
    "pit_ad": "Anderson-Darling k-sample statistic of the PIT values against a uniform grid "
              "(qp PIT.evaluate_PIT_anderson_ksamp)",
    "pit_outlier_rate": "fraction of PIT values below 1e-4 or above 0.9999, from the PIT "
                        "quantile ensemble (qp PIT.evaluate_PIT_outlier_rate)",
    "cde_loss": "mean(integral p(z)^2 dz) - 2 mean(p at the grid point nearest z_true) "
                "(RAIL CDELoss; lower is better)",
}


def ez(zphot: np.ndarray, ztrue: np.ndarray) -> np.ndarray:
    return (zphot - ztrue) / (1.0 + ztrue)


def outlier_frac_fixed(zphot: np.ndarray, ztrue: np.ndarray,
                       threshold: float = FIXED_OUTLIER_THRESHOLD) -> float:
    """Fraction with |z_phot - z_true|/(1 + z_true) > threshold."""
    return float(np.mean(np.abs(ez(zphot, ztrue)) > threshold))


def point_metrics(zphot: np.ndarray, ztrue: np.ndarray) -> dict:
    """qp point metrics (module docstring) of finite point estimates; NaN when empty."""
    from qp.metrics.point_estimate_metric_classes import (PointBias, PointOutlierRate,
                                                          PointSigmaIQR, PointSigmaMAD)

    zphot = np.asarray(zphot, dtype=np.float64)
    ztrue = np.asarray(ztrue, dtype=np.float64)
    n = len(zphot)
    if n == 0:
        return {"n": 0, **{k: float("nan") for k in POINT_KEYS}}
    return {
        "n": int(n),
        "bias": float(PointBias().evaluate(zphot, ztrue)),
        "sigma_iqr": float(PointSigmaIQR().evaluate(zphot, ztrue)),
        "sigma_nmad": float(PointSigmaMAD().evaluate(zphot, ztrue)),
        "outlier_rate_3sigma": float(PointOutlierRate().evaluate(zphot, ztrue)),
        "outlier_frac_015": outlier_frac_fixed(zphot, ztrue),
    }


def ensemble(pdf: np.ndarray, zgrid: np.ndarray):
    """qp interp ensemble of PDFs tabulated on ``zgrid``."""
    import qp

    return qp.Ensemble(qp.interp, data=dict(xvals=np.asarray(zgrid, dtype=np.float64),
                                            yvals=np.asarray(pdf, dtype=np.float64)))


def pit(ens, ztrue: np.ndarray):
    """qp ``PIT`` object (its ``pit_samps`` are CDF_i(z_true,i))."""
    from qp.metrics.pit import PIT

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PIT(ens, np.asarray(ztrue, dtype=np.float64))


def pit_metrics(pit_obj) -> dict:
    """The statistics of qp's PIT meta-metrics, as ``pit_*`` floats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pit_obj.calculate_pit_meta_metrics()
    out = {}
    for key, val in meta.items():
        stat = getattr(val, "statistic", val)
        out[f"pit_{key}"] = float(np.asarray(stat).ravel()[0])
    return out


def pit_ks(pit_samples: np.ndarray) -> float:
    """KS statistic of PIT samples against U(0,1): the computation of qp's
    ``PIT.evaluate_PIT_KS`` (scipy.stats.kstest), on a subset of objects' PIT values."""
    from scipy import stats

    if len(pit_samples) == 0:
        return float("nan")
    return float(stats.kstest(pit_samples, stats.uniform.cdf).statistic)


def cde_loss(ens, zgrid: np.ndarray, ztrue: np.ndarray) -> float:
    """RAIL's CDELoss statistic."""
    from rail.evaluation.metrics.cdeloss import CDELoss

    return float(CDELoss(ens, np.asarray(zgrid, dtype=np.float64),
                         np.asarray(ztrue, dtype=np.float64)).evaluate().statistic)


def assign_bins(values: np.ndarray, edges) -> np.ndarray:
    """Bin index of each value: edges[i] <= v < edges[i+1]; the last bin also takes
    v == edges[-1]; -1 outside the edges or NaN."""
    edges = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, v, side="right") - 1
    idx = np.where(v == edges[-1], len(edges) - 2, idx)
    ok = np.isfinite(v) & (idx >= 0) & (idx < len(edges) - 1)
    return np.where(ok, idx, -1)


def binned_metrics(zphot: np.ndarray, ztrue: np.ndarray, pit_samples: np.ndarray,
                   values: np.ndarray, edges, min_objects: int = 1) -> list[dict]:
    """Point metrics and PIT KS per bin of ``values``: one dict per bin (lo, hi, n, ...).
    Bins with fewer than ``min_objects`` objects keep their ``n`` and get NaN metrics."""
    idx = assign_bins(values, edges)
    rows = []
    for i in range(len(edges) - 1):
        sel = idx == i
        n = int(sel.sum())
        if n >= min_objects and n > 0:
            m = point_metrics(zphot[sel], ztrue[sel])
            m["pit_ks"] = pit_ks(pit_samples[sel])
        else:
            m = {"n": n, **{k: float("nan") for k in POINT_KEYS}, "pit_ks": float("nan")}
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), **m})
    return rows


def normalised(pdf: np.ndarray, zgrid: np.ndarray) -> np.ndarray:
    norm = np.trapezoid(pdf, zgrid, axis=1)
    return pdf / np.where(norm > 0, norm, 1.0)[:, None]


def tomo_nz(zphot: np.ndarray, ztrue: np.ndarray, pdf: np.ndarray, zgrid: np.ndarray,
            edges) -> tuple[list[dict], list[np.ndarray]]:
    """Per photo-z bin: the stacked PDFs (mean of the unit-normalised PDFs) and its mean
    z against the mean true z. Returns (rows, stacked curves on ``zgrid``)."""
    idx = assign_bins(zphot, edges)
    rows, curves = [], []
    for i in range(len(edges) - 1):
        sel = idx == i
        n = int(sel.sum())
        if n:
            stacked = normalised(pdf[sel], zgrid).mean(axis=0)
            area = np.trapezoid(stacked, zgrid)
            mean_pdf = float(np.trapezoid(zgrid * stacked, zgrid) / area)
            mean_true = float(ztrue[sel].mean())
            shift = mean_pdf - mean_true
            rel = shift / (1.0 + mean_true)
        else:
            stacked = np.zeros_like(zgrid, dtype=np.float64)
            mean_pdf = mean_true = shift = rel = float("nan")
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n,
                     "mean_z_true": mean_true, "mean_z_stacked": mean_pdf,
                     "mean_shift": shift, "mean_shift_1pz": rel})
        curves.append(stacked)
    return rows, curves
