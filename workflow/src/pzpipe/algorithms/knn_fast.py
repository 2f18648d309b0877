"""kNN for whole chunks: RAIL's ``KNearNeighEstimator`` numbers without qp/scipy's
broadcasting, bounded memory.

RAIL (pz-rail-sklearn 2.0.3, ``rail.estimation.algos.k_nearneigh``) queries its KD tree
for the ``nneigh`` nearest training objects in colour space, and returns a
``qp.mixmod`` ensemble: one Gaussian of width ``bestsig`` per neighbour at its redshift,
weighted by inverse distance. Evaluating that ensemble on the grid (RAIL does it once
for ``zmode``, the pipeline once more for the PDFs) goes through scipy's
``rv_continuous.pdf`` on arrays of N x 301 x nneigh elements (~2 GB at 130k objects,
per temporary) and is most of kNN's time. ``FastKNN`` computes the same numbers in
sub-chunks:

* inputs: RAIL's non-detection replacement (``np.float32(mag_limit)`` where
  ``np.isclose(mag, nondetect_val)``), colours as RAIL's pandas code makes them
  (``mag[k] - mag[k+1]`` in the magnitudes' dtype; the reference magnitude first when the
  model says ``only_colors`` - RAIL's own, inverted, convention);
* the model's own sklearn ``KDTree.query`` (RAIL's call), ``dists += 1e-15``, RAIL's weight
  normalisation and qp's (which runs twice), with numpy (same expressions);
* the mixture on the grid: ``u = (z - mean) / sigma``, ``exp(-u**2 / 2.0)`` with numpy's
  own ``np.exp`` on a contiguous block (the SIMD routine scipy's ``_norm_pdf`` uses),
  ``(e / sqrt(2 pi)) / sigma``, times the weight, summed over neighbours in order -
  scipy's and qp's operations, one object at a time. Exponents below -746, whose exp
  numpy rounds to exactly 0 (checked when the class is built), are not computed: their
  terms are +0 and change no sum (~40% of the grid points with DC2's sigma).

``FastKNN(model, params).estimate(data)`` returns what the pipeline takes from RAIL:
``ens.pdf(zgrid)`` (N, nzbins) and RAIL's ancil ``zmode`` (the grid point of the PDF's
maximum). tests/test_algo_knn_fast.py compares with RAIL bit for bit on the DC2 sample.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from numba import njit

__all__ = ["FastKNN", "TEENY"]

#: RAIL's guard added to neighbour distances (k_nearneigh.TEENY)
TEENY = 1.0e-15
_NORM_PDF_C = np.sqrt(2 * np.pi)        # scipy.stats._continuous_distns._norm_pdf_C


from ._numba import CACHE as _CACHE  # noqa: E402  (one numba cache setting)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _exponents(means, stds, zgrid, cut, out, j0, cnt):
    """scipy's norm.pdf exponents ``-u**2 / 2.0``, ``u = (z_j - mean_ic) / std_ic``, of
    the grid points where they are >= ``cut`` (elsewhere exp() is exactly 0), packed
    into out: for component (i, c) the points j0[i, c] .. j0[i, c] + cnt[i, c] - 1
    (a contiguous range: the exponent is unimodal in j). Returns the number packed."""
    n, k = means.shape
    nz = zgrid.shape[0]
    pos = 0
    for i in range(n):
        for c in range(k):
            mu = means[i, c]
            s = stds[i, c]
            first = -1
            m = 0
            for j in range(nz):
                u = (zgrid[j] - mu) / s
                a = -(u * u) / 2.0
                if not a < cut:             # NaN kept: it must reach the sum
                    if first < 0:
                        first = j
                    out[pos] = a
                    pos += 1
                    m += 1
                elif first >= 0:
                    break
            j0[i, c] = max(first, 0)
            cnt[i, c] = m
    return pos


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _mixture(e, j0, cnt, weights, stds, cnorm, out):
    """out[i, j] = sum over c, in order, of w_ic * ((e_icj / sqrt(2 pi)) / std_ic)
    (scipy: ``_pdf(x) / scale``; qp: ``(weights * pdfs).sum(axis=0)``); the terms left
    out of the packed exponentials are exactly 0 and change no sum."""
    n, k = weights.shape
    nz = out.shape[1]
    pos = 0
    for i in range(n):
        for j in range(nz):
            out[i, j] = 0.0
        for c in range(k):
            w = weights[i, c]
            s = stds[i, c]
            b = j0[i, c]
            for q in range(cnt[i, c]):
                out[i, b + q] += w * ((e[pos + q] / cnorm) / s)
            pos += cnt[i, c]


def _exp_zero_below() -> float:
    """An exponent below which numpy's exp returns exactly 0.0 (checked, not assumed:
    -inf when this numpy's exp does not underflow as expected, so nothing is skipped)."""
    cut = -746.0                        # exp(-745.14) already rounds to 0 in IEEE double
    probe = np.concatenate([np.linspace(cut, 2 * cut, 20001),
                            -np.logspace(np.log10(-2 * cut), 300, 2001)])
    return cut if not np.any(np.exp(probe)) else -np.inf


def _rail_param(params: Mapping[str, Any], key: str):
    if key in params:
        return params[key]
    from rail.core.common_params import SHARED_PARAMS

    return SHARED_PARAMS[key]


class FastKNN:
    """RAIL's KNearNeighEstimator numbers for whole chunks, computed in sub-chunks.

    Parameters
    ----------
    model : dict
        What ``KNearNeighInformer`` writes (``kdtree``, ``bestsig``, ``nneigh``,
        ``truezs``, ``only_colors``).
    params : mapping
        RAIL parameters: ``bands``, ``ref_band``, ``nondetect_val``, ``mag_limits``,
        ``zmin``, ``zmax``, ``nzbins`` (RAIL's defaults when absent).
    subchunk : int
        Objects per block (two work arrays of 8 * nneigh * nzbins bytes per object,
        ~17 kB each with the defaults).
    """

    def __init__(self, model: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                 subchunk: int = 512):
        params = dict(params or {})
        self.bands = list(_rail_param(params, "bands"))
        self.ref_band = _rail_param(params, "ref_band")
        self.nondetect_val = float(_rail_param(params, "nondetect_val"))
        self.mag_limits = dict(_rail_param(params, "mag_limits"))
        missing = [b for b in self.bands if b not in self.mag_limits]
        if missing:
            raise ValueError(f"kNN: no mag_limits entry for band(s) {missing}; add them to "
                             "the estimator's mag_limits parameter")
        self.zgrid = np.linspace(float(_rail_param(params, "zmin")),
                                 float(_rail_param(params, "zmax")),
                                 int(_rail_param(params, "nzbins")))
        self.subchunk = max(1, int(subchunk))
        self._cut = _exp_zero_below()
        for key in ("kdtree", "bestsig", "nneigh", "truezs"):
            if key not in model:
                raise ValueError(f"kNN model has no '{key}': not a KNearNeighInformer model")
        self.kdtree = model["kdtree"]
        self.sigma = model["bestsig"]
        self.numneigh = int(model["nneigh"])
        self.trainszs = np.asarray(model["truezs"])
        self.only_colors = model.get("only_colors", True)   # RAIL's default when absent
        if self.only_colors and self.ref_band not in self.bands:
            raise ValueError(f"kNN: ref_band '{self.ref_band}' is not one of the bands "
                             f"{self.bands}; RAIL's kNN reads it from the bands' table")
        ncols = len(self.bands) - 1 + (1 if self.only_colors else 0)
        if self.kdtree.data.shape[1] != ncols:
            raise ValueError(f"kNN model's tree has {self.kdtree.data.shape[1]} features, the "
                             f"bands {self.bands} give {ncols}: use the model's bands")

    def colours(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """RAIL's ``_computecolordata`` after its non-detection replacement, on copies."""
        mags = {}
        for col in self.bands:
            if col not in data:
                raise KeyError(f"kNN input has no column '{col}' (bands); columns: "
                               f"{sorted(data)}")
            m = np.array(data[col], copy=True)
            if np.isnan(self.nondetect_val):
                mask = np.isnan(m)
            else:
                mask = np.isclose(m, self.nondetect_val)
            m[mask] = np.float32(self.mag_limits[col])
            mags[col] = m
        cols = []
        if self.only_colors:
            cols.append(mags[self.ref_band])
        for k in range(len(self.bands) - 1):
            cols.append(mags[self.bands[k]] - mags[self.bands[k + 1]])
        return np.stack(cols, axis=1)

    def estimate(self, data: Mapping[str, np.ndarray]):
        """(pdf (N, nzbins) float64 = RAIL's ``ens.pdf(zgrid)``, {"zmode": (N,)})."""
        nz = len(self.zgrid)
        if not self.bands or self.bands[0] not in data:
            raise KeyError(f"kNN input has no column '{self.bands[0] if self.bands else ''}'")
        n = len(data[self.bands[0]])
        if n == 0:
            return np.zeros((0, nz)), {"zmode": np.zeros(0)}
        X = self.colours(data)
        bad = ~np.isfinite(X)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(f"kNN input: {len(rows)} object(s) have NaN/inf colours (e.g. "
                             f"row {int(rows[0])}): magnitudes must be finite or the "
                             f"non-detection value {self.nondetect_val}")
        pdf = np.empty((n, nz))
        k = self.numneigh
        blk = min(n, self.subchunk) * k * nz
        arg = np.empty(blk)
        ex = np.empty(blk)
        for s in range(0, n, self.subchunk):
            e = min(n, s + self.subchunk)
            dists, idxs = self.kdtree.query(X[s:e], k=k)
            dists += TEENY
            # RAIL's _makepdf, then qp.mixmod's own renormalisation, which runs twice
            # (qp 1.1.4 builds the distribution twice when it makes the ensemble)
            sigmas = np.full_like(dists, self.sigma)
            weights = 1.0 / dists
            weights /= weights.sum(axis=1, keepdims=True)
            for _ in range(2):
                weights = weights / weights.sum(axis=1)[:, None]
            means = self.trainszs[idxs]
            m = e - s
            j0 = np.empty((m, k), np.int64)
            cnt = np.empty((m, k), np.int64)
            used = _exponents(means, sigmas, self.zgrid, self._cut, arg, j0, cnt)
            # numpy's own exp, as scipy's _norm_pdf, on a contiguous block
            np.exp(arg[:used], out=ex[:used])
            _mixture(ex, j0, cnt, weights, sigmas, _NORM_PDF_C, pdf[s:e])
        zmode = self.zgrid[np.argmax(pdf, axis=1)]
        return pdf, {"zmode": zmode}
