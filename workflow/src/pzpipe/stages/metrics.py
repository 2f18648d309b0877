"""Photo-z metrics with the field's own classes, so numbers compare with DESC/RAIL papers,
and their seeded bootstrap errors.

With ez = (z_phot - z_true) / (1 + z_true):

- ``bias``: median(ez) (qp ``PointBias``);
- ``sigma_iqr``: IQR(ez) / 1.349 (qp ``PointSigmaIQR``);
- ``sigma_nmad``: 1.4826 median|ez - median(ez)| (qp ``PointSigmaMAD``);
- ``outlier_rate_3sigma``: fraction with |ez| > max(0.06, 3 sigma_iqr) (qp
  ``PointOutlierRate``; ez is not centred on the bias);
- ``outlier_frac_015``: fraction with |ez| > 0.15 (fixed threshold; no library class);
- ``coverage_68``/``coverage_95``: fraction with z_err68_low <= z_true <= z_err68_high
  (2.5/97.5% for 95);
- ``pit_ks``, ``pit_cvm``: KS and Cramer-von Mises statistics (scipy) of the PIT values
  against U(0,1); ``pit_outlier_rate``: the fraction of PIT values < 1e-4 or > 0.9999,
  counted directly. PIT = CDF at z_true of the full-precision PDF read as piecewise
  linear on the grid (``pit_values``);
- ``pit_*_qp``: qp ``PIT(ensemble, z_true).calculate_pit_meta_metrics()`` on the same
  full-precision PDFs, kept beside ours and labelled (qp's PIT outlier rate comes from its
  PIT quantile ensemble, its AD is a k-sample test against a grid);
- ``cde_loss``: RAIL ``CDELoss(ensemble, zgrid, z_true).evaluate().statistic`` =
  mean(integral p^2 dz) - 2 mean(p at the grid point nearest z_true).

Errors: ``bootstrap_counts`` draws the resamples of a sample once; every statistic has a
count-weighted, vectorised twin (``*_counts``, ``wmean``) that equals the library value
on the resampled sample (tests/test_validate_metrics.py), and an error is the standard
deviation over the resamples. The tests check each function against the library class.
"""

from __future__ import annotations

import warnings

import numpy as np

FIXED_OUTLIER_THRESHOLD = 0.15
POINT_KEYS = ("bias", "sigma_iqr", "sigma_nmad", "outlier_rate_3sigma", "outlier_frac_015")
PIT_KEYS = ("pit_ks", "pit_cvm", "pit_ad", "pit_outlier_rate")   # qp meta-metric names
PIT_OUTLIER_LOW, PIT_OUTLIER_HIGH = 1e-4, 0.9999

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
    "coverage_68": "fraction with z_err68_low <= z_true <= z_err68_high (the PDF's 16-84% "
                   "interval; 0.68 when the PDFs are calibrated)",
    "coverage_95": "fraction with z_err95_low <= z_true <= z_err95_high (2.5-97.5%; 0.95 "
                   "when calibrated)",
    "pit_ks": "Kolmogorov-Smirnov statistic of the PIT values against U(0,1) "
              "(scipy.stats.kstest, as qp's PIT.evaluate_PIT_KS); PIT = CDF at z_true of "
              "the full-precision PDF (piecewise linear on the grid)",
    "pit_cvm": "Cramer-von Mises statistic of the PIT values against U(0,1) "
               "(scipy.stats.cramervonmises, as qp's PIT.evaluate_PIT_CvM)",
    "pit_outlier_rate": "fraction of objects with PIT < 1e-4 or PIT > 0.9999, counted "
                        "directly from the PIT values",
    "pit_ks_qp": "qp PIT(ensemble, z_true).evaluate_PIT_KS on the full-precision PDFs "
                 "(qp's own PIT values)",
    "pit_cvm_qp": "qp PIT.evaluate_PIT_CvM on the full-precision PDFs",
    "pit_ad_qp": "qp PIT.evaluate_PIT_anderson_ksamp: k-sample Anderson-Darling of the PIT "
                 "values against a uniform grid (no bootstrap error)",
    "pit_outlier_rate_qp": "qp PIT.evaluate_PIT_outlier_rate: fraction below 1e-4 or above "
                           "0.9999 of qp's PIT quantile ensemble, not a direct count",
    "n_boot": "bootstrap resamples behind every *_err column (validate.bootstrap.n); "
              "*_err = standard deviation of the statistic over the resamples",
    "small": "true when the bin has fewer than validate.bins.small_n objects (marked '*')",
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



# ----------------------------------------------------------------------------- per object
def pit_values(pdf: np.ndarray, zgrid: np.ndarray, ztrue: np.ndarray) -> np.ndarray:
    """PIT = CDF_i(z_true,i) of each PDF read as piecewise linear on ``zgrid`` and
    normalised by its trapezoid integral: exact within a grid interval (the CDF is
    quadratic there); 0 below the grid, 1 above; NaN for a PDF with no positive mass."""
    z = np.asarray(zgrid, dtype=np.float64)
    p = np.asarray(pdf, dtype=np.float64)
    zt = np.asarray(ztrue, dtype=np.float64)
    n = len(zt)
    if n == 0:
        return np.zeros(0)
    dz = np.diff(z)
    part = 0.5 * (p[:, 1:] + p[:, :-1]) * dz
    i = np.clip(np.searchsorted(z, zt, side="right") - 1, 0, len(z) - 2)
    rows = np.arange(n)
    csum = np.cumsum(part, axis=1)
    total = csum[:, -1]
    cum = np.where(i > 0, csum[rows, np.maximum(i - 1, 0)], 0.0)
    x = zt - z[i]
    p0, p1, d = p[rows, i], p[rows, i + 1], dz[i]
    c = cum + p0 * x + (p1 - p0) * x * x / (2.0 * d)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip(c / total, 0.0, 1.0)
    out = np.where(zt < z[0], 0.0, np.where(zt >= z[-1], 1.0, out))
    return np.where(total > 0, out, np.nan)


def pdf_means(pdf: np.ndarray, zgrid: np.ndarray) -> np.ndarray:
    """Mean z of each PDF (trapezoid integrals on ``zgrid``); the mean of the stacked
    unit-normalised PDFs of a bin is the mean of these."""
    z = np.asarray(zgrid, dtype=np.float64)
    norm = np.trapezoid(pdf, z, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.trapezoid(pdf * z[None, :], z, axis=1) / norm


def cde_terms(pdf: np.ndarray, zgrid: np.ndarray, ztrue: np.ndarray) -> np.ndarray:
    """Per object: integral p^2 dz - 2 p(grid point nearest z_true), p normalised by its
    trapezoid integral as qp does; their mean is RAIL's CDELoss statistic."""
    z = np.asarray(zgrid, dtype=np.float64)
    zt = np.asarray(ztrue, dtype=np.float64)
    p = pdf / np.trapezoid(pdf, z, axis=1)[:, None]
    j = np.clip(np.searchsorted(z, zt), 1, len(z) - 1)
    nn = np.where(np.abs(zt - z[j - 1]) <= np.abs(z[j] - zt), j - 1, j)   # argmin: first
    return np.trapezoid(p ** 2, z, axis=1) - 2.0 * p[np.arange(len(zt)), nn]


def pit_outliers(pits: np.ndarray) -> np.ndarray:
    """PIT < 1e-4 or PIT > 0.9999 (qp's default bounds), per object."""
    return (pits < PIT_OUTLIER_LOW) | (pits > PIT_OUTLIER_HIGH)


def pit_ks_cvm(pits: np.ndarray) -> tuple[float, float]:
    """scipy's KS and Cramer-von Mises statistics of PIT values against U(0,1)."""
    from scipy import stats

    if len(pits) == 0:
        return float("nan"), float("nan")
    return (float(stats.kstest(pits, stats.uniform.cdf).statistic),
            float(stats.cramervonmises(pits, stats.uniform.cdf).statistic))


def std_err(samples: np.ndarray) -> float:
    """Bootstrap error: standard deviation (ddof=1) of the finite resampled values."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    return float(np.std(s, ddof=1)) if len(s) > 1 else float("nan")

# ----------------------------------------------------------------------------- bootstrap
# Seeded bootstrap of every statistic. One (B, n) matrix of draw counts per sample
# (``bootstrap_counts``): replicate b takes object i counts[b, i] times. Every statistic
# is then a count-weighted statistic, vectorised over the B replicates; a bin or any
# other subset of the sample takes the columns of its objects, so whole-sample, binned
# and tomographic errors come from the same resamples.

def bootstrap_counts(n: int, n_boot: int, seed: int, block: int = 16) -> np.ndarray:
    """(n_boot, n) uint16 draw counts of ``n_boot`` resamples (with replacement, n draws
    each) of n objects, from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_boot, n), dtype=np.uint16)
    for s in range(0, n_boot, block):
        e = min(n_boot, s + block)
        idx = rng.integers(0, n, size=(e - s, n)) if n else np.zeros((e - s, 0), np.int64)
        flat = (idx + (np.arange(e - s)[:, None] * n)).ravel()
        out[s:e] = np.bincount(flat, minlength=(e - s) * n).reshape(e - s, n)
    return out


def _lerp(a, b, t):
    """numpy's own linear interpolation (numpy.percentile, method 'linear')."""
    d = b - a
    return np.where(t >= 0.5, b - d * (1.0 - t), a + d * t)


def _rank_value(v, cum, k, rows):
    """Value at (0-based) rank k of each row's count-weighted sample: the element whose
    cumulative count first exceeds k."""
    j = np.minimum((cum <= k[:, None]).sum(axis=1), max(cum.shape[1] - 1, 0))
    return v[rows, j]


def wquantile(values: np.ndarray, counts: np.ndarray, q: float,
              cum: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``counts`` (B, n): the q-quantile (numpy 'linear', as np.percentile) of
    the sample that holds values[j] counts[b, j] times. ``values`` is sorted, (n,) or
    (B, n) sorted per row; ``cum``: the row-wise cumulative counts, if already computed.
    NaN for an empty row."""
    if not counts.shape[1]:
        return np.full(len(counts), np.nan)
    cum = np.cumsum(counts, axis=1, dtype=np.int64) if cum is None else cum
    m = cum[:, -1]
    h = (m - 1) * float(q)
    lo = np.floor(h).astype(np.int64)
    t = h - lo
    hi = np.minimum(lo + 1, m - 1)
    v = np.broadcast_to(values, counts.shape)
    rows = np.arange(len(counts))
    out = _lerp(_rank_value(v, cum, lo, rows), _rank_value(v, cum, hi, rows), t)
    return np.where(m > 0, out, np.nan)


def wmedian(values: np.ndarray, counts: np.ndarray, cum: np.ndarray | None = None) -> np.ndarray:
    """Per row: numpy.median of the count-weighted sample (mean of the two middle values
    for an even count). ``values`` sorted as in ``wquantile``."""
    if not counts.shape[1]:
        return np.full(len(counts), np.nan)
    cum = np.cumsum(counts, axis=1, dtype=np.int64) if cum is None else cum
    m = cum[:, -1]
    v = np.broadcast_to(values, counts.shape)
    rows = np.arange(len(counts))
    a = _rank_value(v, cum, (m - 1) // 2, rows)
    b = _rank_value(v, cum, m // 2, rows)
    out = np.where(m % 2 == 1, a, (a + b) / 2.0)
    return np.where(m > 0, out, np.nan)


def wmean(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    m = counts.sum(axis=1, dtype=np.int64)
    s = (counts * np.asarray(values, dtype=np.float64)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m > 0, s / np.maximum(m, 1), np.nan)


def point_metrics_counts(ez_values: np.ndarray, counts: np.ndarray) -> dict:
    """``point_metrics`` of ez per row of ``counts`` (the same definitions as the qp
    classes, vectorised: bias, sigma_iqr, sigma_nmad, outlier_rate_3sigma,
    outlier_frac_015)."""
    o = np.argsort(ez_values, kind="stable")
    v = np.asarray(ez_values, dtype=np.float64)[o]
    c = counts[:, o]
    cum = np.cumsum(c, axis=1, dtype=np.int64)
    bias = wmedian(v, c, cum)
    x75 = wquantile(v, c, 0.75, cum)
    x25 = wquantile(v, c, 0.25, cum)
    sig = (x75 - x25) / 1.349
    cut = np.maximum(0.06, 3.0 * sig)
    av = np.abs(v)
    out3 = wmean((av[None, :] > cut[:, None]), c)
    out015 = wmean(av > FIXED_OUTLIER_THRESHOLD, c)
    d = np.abs(v[None, :] - bias[:, None])
    od = np.argsort(d, axis=1, kind="stable")
    nmad = 1.4826 * wmedian(np.take_along_axis(d, od, 1), np.take_along_axis(c, od, 1))
    return {"bias": bias, "sigma_iqr": sig, "sigma_nmad": nmad,
            "outlier_rate_3sigma": out3, "outlier_frac_015": out015}


def ks_uniform_counts(pits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row: the KS statistic of the count-weighted PIT sample against U(0,1)
    (scipy.stats.kstest's D = max(D+, D-))."""
    o = np.argsort(pits, kind="stable")
    x = np.asarray(pits, dtype=np.float64)[o]
    c = counts[:, o].astype(np.int64)
    cum = np.cumsum(c, axis=1)
    m = cum[:, -1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        dplus = (cum / m - x[None, :]).max(axis=1)
        dminus = (x[None, :] - (cum - c) / m).max(axis=1)
    return np.where(m[:, 0] > 0, np.maximum(dplus, dminus), np.nan)


def cvm_uniform_counts(pits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row: the Cramer-von Mises statistic of the count-weighted PIT sample against
    U(0,1) (scipy.stats.cramervonmises: 1/(12m) + sum((2k-1)/(2m) - x_(k))^2)."""
    o = np.argsort(pits, kind="stable")
    x = np.asarray(pits, dtype=np.float64)[o][None, :]
    c = counts[:, o].astype(np.float64)
    e = np.cumsum(c, axis=1)
    s0 = e - c                                      # ranks s0+1 .. e hold this value
    m = e[:, -1:]

    def sq(n):                                      # sum_{k=1..n} (2k-1)^2
        return n * (2 * n - 1) * (2 * n + 1) / 3.0

    s1 = e ** 2 - s0 ** 2                           # sum of (2k-1) over the run
    s2 = sq(e) - sq(s0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = (c * x ** 2 - x * s1 / m + s2 / (4.0 * m ** 2)).sum(axis=1)
        w = 1.0 / (12.0 * m[:, 0]) + tot
    return np.where(m[:, 0] > 0, w, np.nan)


def assign_bins(values: np.ndarray, edges) -> np.ndarray:
    """Bin index of each value: edges[i] <= v < edges[i+1]; the last bin also takes
    v == edges[-1]; -1 outside the edges or NaN."""
    edges = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, v, side="right") - 1
    idx = np.where(v == edges[-1], len(edges) - 2, idx)
    ok = np.isfinite(v) & (idx >= 0) & (idx < len(edges) - 1)
    return np.where(ok, idx, -1)


SAMPLE_KEYS = POINT_KEYS + ("coverage_68", "coverage_95", "pit_ks", "pit_outlier_rate")


def sample_metrics(obj: dict, counts: np.ndarray, sel=None) -> dict:
    """The metrics of ``SAMPLE_KEYS`` of the objects ``sel`` (a mask; None: all) and their
    bootstrap errors (``<key>_err``, from ``counts[:, sel]``). ``obj``: per-object arrays
    ``zp``, ``zt``, ``pit``, ``in68``, ``in95`` (see ``pzpipe.stages.validate``)."""
    from scipy import stats

    sel = np.ones(len(obj["zt"]), bool) if sel is None else sel
    zp, zt, c = obj["zp"][sel], obj["zt"][sel], counts[:, sel]
    out = point_metrics(zp, zt)
    if out["n"] == 0:
        for k in SAMPLE_KEYS:
            out[k] = out[f"{k}_err"] = float("nan")
        return out
    boot = point_metrics_counts(ez(zp, zt), c)
    for k in POINT_KEYS:
        out[f"{k}_err"] = std_err(boot[k])
    pits = obj["pit"][sel]
    for key, flag in (("coverage_68", obj["in68"][sel]), ("coverage_95", obj["in95"][sel])):
        out[key] = float(flag.mean())
        out[f"{key}_err"] = std_err(wmean(flag, c))
    out["pit_ks"] = float(stats.kstest(pits, stats.uniform.cdf).statistic)
    out["pit_ks_err"] = std_err(ks_uniform_counts(pits, c))
    flag = pit_outliers(pits)
    out["pit_outlier_rate"] = float(flag.mean())
    out["pit_outlier_rate_err"] = std_err(wmean(flag, c))
    return out


def binned_metrics(obj: dict, counts: np.ndarray, values: np.ndarray, edges,
                   min_objects: int = 1, small_n: int = 1) -> list[dict]:
    """``sample_metrics`` per bin of ``values``: one dict per bin (lo, hi, n, small, ...).
    Bins with fewer than ``min_objects`` objects keep their ``n`` and get NaN metrics;
    ``small``: fewer than ``small_n`` objects."""
    idx = assign_bins(values, edges)
    rows = []
    for i in range(len(edges) - 1):
        sel = idx == i
        n = int(sel.sum())
        if n >= min_objects and n > 0:
            m = sample_metrics(obj, counts, sel)
        else:
            m = {"n": n, **{k: float("nan") for k in SAMPLE_KEYS},
                 **{f"{k}_err": float("nan") for k in SAMPLE_KEYS}}
        rows.append({"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n,
                     "small": bool(n < small_n), **{k: v for k, v in m.items() if k != "n"}})
    return rows


def tomo_shift(obj: dict, counts: np.ndarray, sel) -> dict:
    """Bootstrap errors of a tomographic bin's mean true z and of the shift of its
    stacked-PDF mean (the mean of the objects' PDF means ``mu``): ``*_err``."""
    mu, zt, c = obj["mu"][sel], obj["zt"][sel], counts[:, sel]
    bt = wmean(zt, c)
    bs = wmean(mu - zt, c)
    return {"mean_z_true_err": std_err(bt), "mean_shift_err": std_err(bs),
            "mean_shift_1pz_err": std_err(bs / (1.0 + bt))}


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
