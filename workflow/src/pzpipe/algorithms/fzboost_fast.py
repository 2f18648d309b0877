"""FlexCode's PDF post-processing compiled: RAIL's ``FlexZBoostEstimator`` numbers, faster.

RAIL's FlexZBoost (pz-rail-flexzboost) calls ``flexcode.FlexCodeModel.predict``, whose
post-processing runs one object at a time in Python (``np.apply_along_axis``):
``normalize`` (a bisection of ~20-60 steps, each a ``np.mean`` over the grid),
``remove_bumps`` (a Python loop over the grid, then another ``normalize``) and
``sharpen``. Measured with cProfile on 10,000 DC2 objects: ~70% of FlexZBoost's
estimate time is there; the XGBoost predictions are ~10%.

``patched()`` swaps those three functions, inside FlexCode's ``core`` module and only
while active, for numba kernels that do the same arithmetic in the same order:

* ``np.mean(x)`` is numpy's pairwise sum of the contiguous row divided by its length
  (``_numba.pairwise_sum`` reproduces numpy's summation order exactly);
* ``np.max`` propagates NaN, ``np.maximum(x, 0)`` keeps NaN, comparisons with NaN are
  false, as in numpy;
* the bisection, its tolerance and iteration limits (200 from ``normalize``, 500 from
  ``remove_bumps``), the uniform replacement of an all-negative row and the in-place
  updates follow flexcode 1.x line by line; ``sharpen``'s power stays numpy's.

tests/test_algo_fzboost.py checks bit-identical PDFs against RAIL's ``FlexZBoostEstimator``
on the DC2 sample and the kernels against flexcode's own functions on edge cases.
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import njit

from ._numba import CACHE as _CACHE
from ._numba import pairwise_sum as _pairwise_sum


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _normalize_row(d, tmp, tol, max_iter):
    """flexcode.post_processing._normalize, in place."""
    n = d.shape[0]
    hi = d[0]
    for i in range(n):
        v = d[i]
        if v != v:
            hi = np.nan
            break
        if v > hi:
            hi = v
    lo = 0.0
    for i in range(n):
        v = d[i]
        tmp[i] = v if (v > 0.0 or v != v) else 0.0
    area = _pairwise_sum(tmp, 0, n) / n
    if area == 0.0:
        for i in range(n):
            d[i] = 1.0
    elif area < 1:
        for i in range(n):
            d[i] = d[i] / area
        for i in range(n):
            if d[i] < 0.0:
                d[i] = 0.0
        return
    mid = np.nan
    for _ in range(max_iter):
        mid = (hi + lo) / 2
        for i in range(n):
            v = d[i] - mid
            tmp[i] = v if (v > 0.0 or v != v) else 0.0
        area = _pairwise_sum(tmp, 0, n) / n
        if abs(1.0 - area) <= tol:
            break
        if area < 1.0:
            hi = mid
        else:
            lo = mid
    for i in range(n):
        d[i] = d[i] - mid
    for i in range(n):
        if d[i] < 0.0:
            d[i] = 0.0


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _normalize_rows(cdes, tol, max_iter):
    tmp = np.empty(cdes.shape[1])
    for r in range(cdes.shape[0]):
        _normalize_row(cdes[r], tmp, tol, max_iter)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _remove_bumps_rows(cdes, delta):
    """flexcode.post_processing._remove_bumps per row (then _normalize, defaults)."""
    n = cdes.shape[1]
    tmp = np.empty(n)
    bin_size = 1.0 / n
    for r in range(cdes.shape[0]):
        d = cdes[r]
        area = 0.0
        left = 0
        for right in range(n):
            val = d[right]
            if val <= 0.0:
                if area < delta:
                    for i in range(left, right + 1):
                        d[i] = 0.0
                left = right + 1
                area = 0.0
            else:
                area += val * bin_size
        if area < delta:
            for i in range(left, n):
                d[i] = 0.0
        _normalize_row(d, tmp, 1e-6, 500)


def _rows(cde):
    a = cde if cde.ndim == 2 else cde.reshape(1, -1)
    if not (a.dtype == np.float64 and a.flags.c_contiguous and a.flags.writeable):
        raise TypeError("fzbfast: expects a writable C-contiguous float64 array")
    return a


def normalize(cde_estimates, tol=1e-6, max_iter=200):
    """flexcode.post_processing.normalize (in place)."""
    _normalize_rows(_rows(cde_estimates), float(tol), int(max_iter))


def remove_bumps(cde_estimates, delta):
    """flexcode.post_processing.remove_bumps (in place)."""
    _remove_bumps_rows(_rows(cde_estimates), float(delta))


def sharpen(cde_estimates, alpha):
    """flexcode.post_processing.sharpen (in place)."""
    cde_estimates **= alpha
    normalize(cde_estimates)


@contextlib.contextmanager
def patched():
    """Use the compiled post-processing inside ``flexcode.core`` while active."""
    import flexcode.core as core

    from ._base import patched as _patched

    with _patched(core, normalize=normalize, remove_bumps=remove_bumps, sharpen=sharpen):
        yield
