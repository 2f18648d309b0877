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


Q16, Q84 = 0.15865525393145707, 0.8413447460685429     # +-1 sigma of a Gaussian
Q025, Q975 = 0.025, 0.975                                  # 95% interval
#: output columns, in the kernel's column order; err columns are absolute percentiles of
#: the PDF (Rubin DP1 convention): err68 = 16/84%, err95 = 2.5/97.5%
KEYS = ("z_mode", "z_mean", "z_median", "z_err68_low", "z_err68_high", "z_err95_low",
        "z_err95_high")


def _kernel():
    from numba import njit

    from pzpipe.core.numba_cache import CACHE

    @njit(cache=CACHE, nogil=True)
    def kern(pdf, z, out, bad):
        """Rows of ``out``: KEYS for each row of ``pdf``; ``bad``: no positive mass.

        Per row: the sanitised values (NaN, inf, <= 0 -> 0), the trapezoid increments
        t_j = 0.5 (p_j + p_{j-1}) dz_j and the mean's terms (loops of independent
        elements, which vectorise); then one loop with the argmax and the two sequential
        sums (norm and mean); the CDF increments t_j / norm; one pass over the running
        CDF that interpolates the five quantiles where it crosses them. Every value is
        computed with the same operations in the same order as the straightforward
        two-pass loop (tests/test_pointest.py keeps it as the reference and checks
        equality bit for bit)."""
        n, m = pdf.shape
        dz = np.empty(m)
        dz[0] = 0.0
        for j in range(1, m):
            dz[j] = z[j] - z[j - 1]
        c = np.empty(m)
        t = np.empty(m)
        mt = np.empty(m)
        inc = np.empty(m)
        for i in range(n):
            row = pdf[i]
            for j in range(m):
                v = row[j]
                c[j] = v if (v > 0.0) & (v < np.inf) else 0.0
            for j in range(1, m):
                d = dz[j]
                t[j] = 0.5 * (c[j] + c[j - 1]) * d
                mt[j] = 0.5 * (c[j] * z[j] + c[j - 1] * z[j - 1]) * d
            best = c[0]
            ib = 0
            norm = 0.0
            mean = 0.0
            for j in range(1, m):
                v = c[j]
                up = v > best                  # first maximum, as np.argmax
                ib = j if up else ib
                best = v if up else best
                norm += t[j]
                mean += mt[j]
            if not norm > 0.0:
                bad[i] = True
                for k in range(7):
                    out[i, k] = np.nan
                continue
            out[i, 0] = z[ib]
            for j in range(1, m):
                inc[j] = t[j] / norm
            # quantiles Q025, Q16, 0.5, Q84, Q975 go to columns 5, 3, 2, 4, 6
            cc = 0.0
            k = 0
            qk = _QS[0]
            for j in range(1, m):
                ij = inc[j]
                while cc + ij >= qk:
                    tt = (qk - cc) / ij if ij > 0 else 0.0
                    tt = min(max(tt, 0.0), 1.0)
                    out[i, _COL[k]] = z[j - 1] + tt * dz[j]
                    k += 1
                    qk = _QS[k]
                cc += ij
            while k < 5:
                out[i, _COL[k]] = z[m - 1]
                k += 1
            out[i, 1] = mean / norm

    return kern


# quantile levels in ascending order (an infinite sentinel ends the list) and their columns
_QS = np.array([Q025, Q16, 0.5, Q84, Q975, np.inf])
_COL = np.array([5, 3, 2, 4, 6, 0])


_KERN = None


def point_estimates(pdf: np.ndarray, zgrid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``KEYS`` (mode, mean, median, 16/84% and 2.5/97.5% percentiles) from grid PDFs;
    and the bad-row mask.

    One fused pass per object (numba): trapezoid normalisation, mean, and the
    2.5/16/50/84/97.5% quantiles by linear interpolation of the trapezoid CDF; ``point_estimates_numpy`` is
    the plain reference implementation (tests check they agree).
    """
    global _KERN
    if _KERN is None:
        _KERN = _kernel()
    pdf = np.ascontiguousarray(pdf, dtype=np.float64)
    z = np.ascontiguousarray(zgrid, dtype=np.float64)
    n = pdf.shape[0]
    out = np.empty((n, len(KEYS)))
    bad = np.zeros(n, dtype=np.bool_)
    if n:
        _KERN(pdf, z, out, bad)
    return {k: out[:, i].copy() for i, k in enumerate(KEYS)}, bad


def point_estimates_numpy(pdf: np.ndarray, zgrid: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reference numpy implementation of ``point_estimates``."""
    p, bad = normalise(np.asarray(pdf, dtype=np.float64), zgrid)
    c = cdf(p, zgrid)
    out = {
        "z_mode": zgrid[np.argmax(p, axis=1)] if len(p) else np.zeros(0),
        "z_mean": np.trapezoid(p * zgrid, zgrid, axis=1),
        "z_median": quantile(c, zgrid, 0.5),
        "z_err68_low": quantile(c, zgrid, Q16),
        "z_err68_high": quantile(c, zgrid, Q84),
        "z_err95_low": quantile(c, zgrid, Q025),
        "z_err95_high": quantile(c, zgrid, Q975),
    }
    for k in out:
        out[k] = np.where(bad, np.nan, out[k])
    return out, bad
