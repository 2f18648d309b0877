"""Point estimates from PDFs on a grid, computed before PDF compression."""

from __future__ import annotations

import numpy as np

FLAG_PDF_BAD = 1 << 17   # PDF is all zero / non-finite: point estimates are NaN


def normalise(pdf: np.ndarray, zgrid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (pdf normalised to unit integral, bad-row mask)."""
    pdf = np.where(np.isfinite(pdf) & (pdf > 0), pdf, 0.0)
    norm = np.trapezoid(pdf, zgrid, axis=1)
    bad = ~(norm > 0)
    out = pdf / np.where(bad, 1.0, norm)[:, None]
    return out, bad


def cdf(pdf: np.ndarray, zgrid: np.ndarray) -> np.ndarray:
    """Trapezoid CDF on the grid (first column 0, last 1 for a normalised PDF)."""
    dz = np.diff(zgrid)
    inc = 0.5 * (pdf[:, 1:] + pdf[:, :-1]) * dz
    c = np.zeros_like(pdf)
    np.cumsum(inc, axis=1, out=c[:, 1:])
    return c


def quantile(c: np.ndarray, zgrid: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile q of each row's CDF."""
    n = c.shape[0]
    if n == 0:
        return np.zeros(0)
    idx = np.argmax(c >= q, axis=1)               # first grid index with CDF >= q
    idx = np.clip(idx, 1, len(zgrid) - 1)
    rows = np.arange(n)
    c0, c1 = c[rows, idx - 1], c[rows, idx]
    z0, z1 = zgrid[idx - 1], zgrid[idx]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(c1 > c0, (q - c0) / (c1 - c0), 0.0)
    return z0 + np.clip(t, 0, 1) * (z1 - z0)


def point_estimates(pdf: np.ndarray, zgrid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """z_mode, z_mean, z_median, z_lo68, z_hi68, z_err68 from grid PDFs; and bad mask."""
    p, bad = normalise(np.asarray(pdf, dtype=np.float64), zgrid)
    c = cdf(p, zgrid)
    out = {
        "z_mode": zgrid[np.argmax(p, axis=1)] if len(p) else np.zeros(0),
        "z_mean": np.trapezoid(p * zgrid, zgrid, axis=1),
        "z_median": quantile(c, zgrid, 0.5),
        "z_lo68": quantile(c, zgrid, 0.15865525393145707),
        "z_hi68": quantile(c, zgrid, 0.8413447460685429),
    }
    out["z_err68"] = 0.5 * (out["z_hi68"] - out["z_lo68"])
    for k in out:
        out[k] = np.where(bad, np.nan, out[k])
    return out, bad
