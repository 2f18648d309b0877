"""DNF for whole chunks: RAIL's ``DNFEstimator`` numbers, bounded memory, much faster.

RAIL (pz-rail-dnf 2.0.4, ``rail.estimation.algos.dnf``) estimates one call at a time:

1. preselection: sklearn's KD tree returns each object's ``presel=4000`` Euclidean
   nearest training objects, sorted by distance (if the nearest is at distance 0 it is
   dropped and the second one is repeated at the end);
2. metric: the ANF angular distance (``selection_mode=1``; ENF=0, DNF=2) to those 4000,
   in the catalogue's dtype (float32 for Rubin and DC2 magnitudes), then
   ``np.argpartition`` + ``np.argsort`` keep the 80 nearest;
3. outlier rejection: ``nneighbors`` = neighbours closer than the mean distance, and every
   object's neighbour list is cut at the *call's* maximum of ``nneighbors``
   (``cutNneighbors``): results depend on which objects share the call;
4. fit: per object, up to 4 rounds of ``np.linalg.lstsq`` on the neighbours'
   magnitudes with 3-sigma clipping; photo-z, errors, Gaussian PDF on the grid.

Its cost (2,000 objects, cProfile) is the KD-tree query for 4,000 neighbours (~60%), the
(N, 4000, bands) metric arrays (~25%; ~7 GB at 20k objects) and a Python loop of
``lstsq`` calls (~10%). ``FastDNF`` computes the same numbers in sub-chunks:

* preselection in a numba kernel: squared distances to every training object in
  sklearn's operation order (``d = 0; d += (x-y)**2`` band by band, float64), then the
  4,000 smallest, sorted, by a counting sort on logarithmic buckets (the top bits of
  the doubles) and an insertion sort inside buckets - the same list, in the same
  order, as the KD tree;
* the metric in a numba kernel with numpy's float32 arithmetic and sequential band sums
  (numpy's order for reductions of < 8 elements), then numpy's own ``argpartition`` and
  ``argsort`` on the same array in the same order, so ties (frequent: float32 angular
  distances of neighbours often coincide) are broken exactly as in RAIL;
* the fit: all objects with the same number of neighbours at once through numpy's own
  stacked LAPACK ``lstsq`` gufunc (the routine ``np.linalg.lstsq`` calls per object)
  and ``np.matmul`` (the same BLAS ``gemv``/``dot`` as RAIL's ``np.dot``/``np.inner``);
  an object whose 3-sigma clipping keeps every neighbour is done (RAIL's remaining
  rounds would solve the same problem again);
* two passes keep the chunk coupling: pass 1 finds every object's 80 neighbours and
  ``nneighbors`` (int32 indices kept, ~320 bytes/object), pass 2 fits with the
  chunk's maximum;
* final errors and PDFs with RAIL's own vectorised expressions
  (``compute_pdfs_fit``), then qp's ``interp`` normalisation (twice: qp 1.1.4 builds
  the distribution twice): the ensemble's node values ``ens.objdata["yvals"]``, which the
  pipeline stores for RAIL's own DNF (``_qp_interp_grid`` can also give ``ens.pdf(zgrid)``,
  scipy's linear ``interp1d`` at the nodes).

Objects whose neighbour order cannot be decided from distances alone (two training
objects at exactly the same distance, or a tie at the 4,000th place) are recomputed with
RAIL's own ``preselection``/``metric_computation`` (sklearn's KD tree): rare, exact.

``FastDNF(model, params).estimate(data)`` equals ONE ``DNFEstimator.estimate`` call on
``data`` with ``chunk_size >= len(data)`` (the whole chunk coupled): tests/test_algo_dnf_fast.py
compares bit for bit with RAIL on the DC2 sample. Memory: the output (N x nzbins
float64, 313 MB at 130k objects), ~0.4 kB/object of kept neighbours and one block's work
arrays (~50 MB); benchmarks/dnf_knn_speed.py measures the peak.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from numba import njit

__all__ = ["FastDNF", "NNEIGHBORS", "PRESEL", "FIT_ITERATIONS"]

#: constants RAIL's DNFEstimator hard-codes in ``_process_chunk`` / ``compute_photoz_fit``
NNEIGHBORS = 80
PRESEL = 4000
FIT_ITERATIONS = 4

_ANCIL = ("DNF_Z", "photozerr", "photozerr_param", "photozerr_fit", "DNF_ZN",
          "nneighbors", "de1", "d1", "id1")


from ._numba import CACHE as _CACHE  # noqa: E402  (one numba cache setting)


# --------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------

@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _metric_row(V, i, TT, Tnorm, mode, one, b1, b2):
    """RAIL's metric_computation distance from object i to every training object,
    with numpy's arithmetic in the inputs' dtypes, into b1.

    mode 0 ENF: sqrt(sum((V - T)**2)); 1 ANF: sqrt(1 - (V.T / (|V| |T|))**2);
    2 DNF: ENF * ANF. Band sums are sequential (numpy's order for < 8 terms, as
    ``np.sum(..., axis=2)`` and ``np.linalg.norm`` do them); ``one`` carries the result
    dtype (``1.0 - x`` with a float32 x stays float32 in numpy)."""
    nb = V.shape[1]
    nt = TT.shape[1]
    if mode != 1:               # Euclidean, into b2 (mode 0: b1)
        eb = b1 if mode == 0 else b2
        v = V[i, 0]
        for t in range(nt):
            df = v - TT[0, t]
            eb[t] = df * df
        for j in range(1, nb):
            v = V[i, j]
            for t in range(nt):
                df = v - TT[j, t]
                eb[t] += df * df
        for t in range(nt):
            eb[t] = np.sqrt(eb[t])
    if mode != 0:               # angular, into b1
        vn2 = V[i, 0] * V[i, 0]
        for j in range(1, nb):
            vn2 += V[i, j] * V[i, j]
        vnorm = np.sqrt(vn2)
        v = V[i, 0]
        for t in range(nt):
            b1[t] = v * TT[0, t]
        for j in range(1, nb):
            v = V[i, j]
            for t in range(nt):
                b1[t] += v * TT[j, t]
        for t in range(nt):
            nip = b1[t] / (vnorm * Tnorm[t])
            b1[t] = np.sqrt(one - nip * nip)
        if mode == 2:
            for t in range(nt):
                b1[t] = b2[t] * b1[t]


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _select_sorted(rd, nt, need, sh0, bk, cnt, idx, r_out, i_out):
    """The ``need`` smallest of rd[:nt] >= 0 (and the rest of their bucket), sorted, with
    their indices: (r_out, i_out)[:K]; returns K >= need.

    A counting sort on logarithmic buckets - the top bits of the doubles' bit patterns,
    which order like the values for x >= 0 (bucket 0: x == 0; ``sh0`` = 52 - mantissa
    bits kept) - keeps the buckets that hold the ``need`` smallest; an insertion sort
    then orders the values inside buckets."""
    nbuck = cnt.shape[0]
    ub = rd.view(np.int64)              # x >= 0: integer order = value order
    lo_bits = ub[0]
    hi_bits = ub[0]
    for t in range(1, nt):
        u = ub[t]
        lo_bits = u if u < lo_bits else lo_bits
        hi_bits = u if u > hi_bits else hi_bits
    if lo_bits == 0:                    # zero distances: bucket 0; log buckets from the
        lo_bits = hi_bits               # smallest positive value
        for t in range(nt):
            u = ub[t]
            if u != 0 and u < lo_bits:
                lo_bits = u
    sh = sh0
    while (hi_bits >> sh) - (lo_bits >> sh) + 2 > nbuck:
        sh += 1
    lo = (lo_bits >> sh) - 1            # positive values go to buckets >= 1
    used = (hi_bits >> sh) - lo + 1
    cnt[:used] = 0
    for t in range(nt):
        u = ub[t]
        bk[t] = (u >> sh) - lo if u != 0 else 0
    for t in range(nt):
        cnt[bk[t]] += 1
    acc = 0
    B = 0
    while True:
        acc += cnt[B]
        if acc >= need:
            break
        B += 1
    off = 0
    for b in range(B + 1):
        c = cnt[b]
        cnt[b] = off
        off += c
    k = 0
    for t in range(nt):                 # branch-free compaction of the kept indices
        idx[k] = t
        k += bk[t] <= B
    for q in range(k):                  # counting-sort scatter
        t = idx[q]
        b = bk[t]
        p = cnt[b]
        r_out[p] = rd[t]
        i_out[p] = t
        cnt[b] = p + 1
    for q in range(1, k):               # order inside buckets
        x = r_out[q]
        if r_out[q - 1] <= x:
            continue
        t = i_out[q]
        p = q - 1
        while p >= 0 and r_out[p] > x:
            r_out[p + 1] = r_out[p]
            i_out[p + 1] = i_out[p]
            p -= 1
        r_out[p + 1] = x
        i_out[p + 1] = t
    return k


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _preselect_metric(V64, TT64, V, TT, Tnorm, P, mode, one, cand, dist, de1, flag,
                      sh0, rd, rs, sel, bk, cnt, idx, b1, b2):
    """The KD tree's preselection list for each object, and the metric along it.

    For object i: sklearn's squared distances to every training object (``d = 0;
    d += (x-y)**2`` band by band, float64; TT64 is the training set transposed, so the
    loop over training objects vectorises without changing any object's order), the
    P (+1 to check the boundary) smallest, sorted by distance (``_select_sorted``): the
    list as the tree returns it. An exact distance tie among them (the tree's order is
    then unknowable here) sets ``flag``. RAIL's zero-distance rule: if the nearest is at distance 0, the list
    is rolled by one and its last element replaced by the new first one.
    cand[i]: the list; de1[i]: its first distance; dist[i, c]: the metric to cand[i, c]
    (``_metric_row``), cast to float64 as RAIL's structured array does."""
    S, nb = V64.shape
    nt = TT64.shape[1]
    need = P + 1 if nt > P else P
    for i in range(S):
        v = V64[i, 0]
        for t in range(nt):
            tmp = v - TT64[0, t]
            rd[t] = tmp * tmp
        for j in range(1, nb):
            v = V64[i, j]
            for t in range(nt):
                tmp = v - TT64[j, t]
                rd[t] += tmp * tmp
        _select_sorted(rd, nt, need, sh0, bk, cnt, idx, rs, sel)
        f = False
        for q in range(1, need):
            if rs[q] == rs[q - 1]:
                f = True
        flag[i] = f
        if rs[0] == 0.0 and P > 1:
            for q in range(P - 1):
                cand[i, q] = sel[q + 1]
            cand[i, P - 1] = sel[1]
            de1[i] = np.sqrt(rs[1])
        else:
            for q in range(P):
                cand[i, q] = sel[q]
            de1[i] = np.sqrt(rs[0])
        _metric_row(V, i, TT, Tnorm, mode, one, b1, b2)
        for q in range(P):
            dist[i, q] = b1[cand[i, q]]


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _qp_interp_grid(y, x, nnorm, out, normalise_only=False):
    """What ``qp.Ensemble(qp.interp, xvals=x, yvals=y).pdf(x)`` returns (qp 1.1.4):
    ``nnorm`` normalisations by the trapezoid cumsum (``(dx * 0.5) * (y[j+1] + y[j])``,
    summed in order), then scipy's linear ``interp1d`` evaluated at the nodes
    (``slope * (x - x_lo) + y_lo`` with ``hi = clip(searchsorted(x, x), 1, n-1)``);
    ``normalise_only``: the normalised values themselves."""
    n, nz = y.shape
    hdx = np.empty(nz - 1)
    for j in range(nz - 1):
        hdx[j] = (x[j + 1] - x[j]) * 0.5
    lo = np.empty(nz, np.int64)
    hi = np.empty(nz, np.int64)
    pos = np.searchsorted(x, x)
    for j in range(nz):
        h = min(max(pos[j], 1), nz - 1)
        hi[j] = h
        lo[j] = h - 1
    row = np.empty(nz)
    for i in range(n):
        for j in range(nz):
            row[j] = y[i, j]
        for _ in range(nnorm):
            s = hdx[0] * (row[1] + row[0])
            for j in range(1, nz - 1):
                s = s + hdx[j] * (row[j + 1] + row[j])
            for j in range(nz):
                row[j] = row[j] / s
        if normalise_only:
            for j in range(nz):
                out[i, j] = row[j]
            continue
        for j in range(nz):
            a = lo[j]
            b = hi[j]
            slope = (row[b] - row[a]) / (x[b] - x[a])
            out[i, j] = slope * (x[j] - x[a]) + row[a]


# --------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------

def _rail_param(params: Mapping[str, Any], key: str):
    if key in params:
        return params[key]
    from rail.core.common_params import SHARED_PARAMS

    return SHARED_PARAMS[key]


class FastDNF:
    """RAIL's DNFEstimator numbers for whole chunks, computed in sub-chunks.

    Parameters
    ----------
    model : dict
        What ``DNFInformer`` writes (``train_mag``, ``train_err``, ``truez``, ``clf``,
        ``train_norm``).
    params : mapping
        RAIL parameters: ``bands``, ``err_bands``, ``nondetect_val``, ``mag_limits``,
        ``zmin``, ``zmax``, ``nzbins``, ``selection_mode`` (RAIL's defaults when absent);
        others are ignored.
    subchunk : int
        Objects per pass-2 block (fit and PDFs); pass 1 uses blocks of
        ``max(1, work_elems // 4000)`` objects (~20 bytes per object and neighbour).
        Small blocks keep the work arrays in memory the allocator reuses (blocks of
        300 objects in pass 1 cost ~20% more time in page faults than blocks of 64).
    """

    def __init__(self, model: Mapping[str, Any], params: Mapping[str, Any] | None = None,
                 subchunk: int = 512, work_elems: int = 256_000):
        params = dict(params or {})
        self.bands = list(_rail_param(params, "bands"))
        self.err_bands = list(_rail_param(params, "err_bands"))
        if len(self.bands) != len(self.err_bands):
            raise ValueError(f"DNF: {len(self.bands)} bands but {len(self.err_bands)} "
                             "err_bands; give one error column per band")
        self.nondetect_val = float(_rail_param(params, "nondetect_val"))
        self.mag_limits = dict(_rail_param(params, "mag_limits"))
        missing = [b for b in self.bands if b not in self.mag_limits]
        if missing:
            raise ValueError(f"DNF: no mag_limits entry for band(s) {missing}; add them to "
                             "the estimator's mag_limits parameter")
        self.zgrid = np.linspace(float(_rail_param(params, "zmin")),
                                 float(_rail_param(params, "zmax")),
                                 int(_rail_param(params, "nzbins")))
        mode = int(params.get("selection_mode", 1))
        if mode not in (0, 1, 2):
            raise ValueError("invalid value for config parameter selection_mode! "
                             "Valid values are 0, 1, and 2")
        self.mode = mode
        self.metric = ("ENF", "ANF", "DNF")[mode]
        self.subchunk = max(1, int(subchunk))
        self.work_elems = max(1, int(work_elems))
        # the model, as RAIL's open_model reads it
        self.T = np.asarray(model["train_mag"])
        self.Terr = np.asarray(model["train_err"])
        self.truez = np.asarray(model["truez"])
        self.clf = model["clf"]
        self.Tnorm = np.asarray(model["train_norm"])
        ntrain, nb = self.T.shape
        if nb != len(self.bands):
            raise ValueError(f"DNF model has {nb} bands, params give {len(self.bands)} "
                             f"({self.bands}): use the bands the model was trained with")
        if ntrain <= NNEIGHBORS:
            raise ValueError(f"DNF model has {ntrain} training objects; RAIL's DNF needs "
                             f"more than {NNEIGHBORS} (it keeps {NNEIGHBORS} neighbours)")
        self.ntrain = ntrain
        self.P = PRESEL if ntrain > PRESEL else ntrain
        if self.Tnorm.dtype != self.T.dtype:
            raise ValueError(f"DNF model: train_norm is {self.Tnorm.dtype} but train_mag is "
                             f"{self.T.dtype}; DNFInformer computes one from the other: "
                             "retrain the model with DNFInformer")
        # training set transposed (bands, n_train): float64 as in sklearn's KD tree, and
        # in the model's dtype for the metric
        self.TT64 = np.ascontiguousarray(self.T.T, dtype=np.float64)
        self.TTm = np.ascontiguousarray(self.T.T)
        self.Tnc = np.ascontiguousarray(self.Tnorm)
        # RAIL's design matrices: np.hstack([T, ones]) (float64)
        self.Te = np.hstack([self.T, np.ones((ntrain, 1), dtype="double")])
        # neighbour sort: logarithmic buckets, 2**(52 - sh0) per octave of distance**2
        self.sh0 = 41
        self.nbuckets = 1 << 15

    # ---------------------------------------------------------------- inputs
    def _prepare(self, data: Mapping[str, np.ndarray]):
        """RAIL's non-detection replacement, _computemagdata and manage_nan, on copies."""
        from rail.estimation.algos.dnf import _computemagdata, manage_nan

        cols = {}
        for col, err in zip(self.bands, self.err_bands):
            for c in (col, err):
                if c not in data:
                    raise KeyError(f"DNF input has no column '{c}' (bands/err_bands); "
                                   f"columns: {sorted(data)}")
            m = np.array(data[col], copy=True)
            e = np.array(data[err], copy=True)
            if np.isnan(self.nondetect_val):
                mask = np.isnan(m)
            else:
                mask = np.isclose(m, self.nondetect_val)
            m[mask] = self.mag_limits[col]
            e[mask] = 1.0
            cols[col] = m
            cols[err] = e
        V, Verr = _computemagdata(cols, self.bands, self.err_bands)
        V, Verr = manage_nan(V, Verr)
        bad = ~np.isfinite(V)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            raise ValueError(f"DNF input column '{self.bands[j]}' has infinite magnitudes "
                             f"({int(bad[:, j].sum())} rows); RAIL's neighbour search "
                             "rejects them: set them to the non-detection value")
        return V, Verr

    # ---------------------------------------------------------------- pass 1
    def _neighbours(self, V):
        """The 80 nearest neighbours of each object, sorted as RAIL sorts them.

        Returns (indices (S, 80) int32, distances (S, 80) float64, de1 (S,))."""
        S = V.shape[0]
        P = self.P
        V64 = np.ascontiguousarray(V, dtype=np.float64)
        cand = np.empty((S, P), np.int32)
        dist = np.empty((S, P), np.float64)
        de1 = np.empty(S)
        flag = np.empty(S, np.bool_)
        Vc = np.ascontiguousarray(V)
        rdt = np.result_type(Vc.dtype, self.TTm.dtype, self.Tnc.dtype)
        nt = self.ntrain
        _preselect_metric(V64, self.TT64, Vc, self.TTm, self.Tnc, P, self.mode, rdt.type(1),
                          cand, dist, de1, flag, self.sh0, np.empty(nt), np.empty(nt),
                          np.empty(nt, np.int32), np.empty(nt, np.int64),
                          np.empty(self.nbuckets, np.int64), np.empty(nt, np.int64),
                          np.empty(nt, rdt), np.empty(nt, rdt))
        # RAIL's selection, with numpy's own (tie-breaking) partition and sort
        part = np.argpartition(dist, NNEIGHBORS, axis=1)[:, :NNEIGHBORS]
        top = np.take_along_axis(dist, part, axis=1)
        order = np.argsort(top, axis=1)
        idx = np.take_along_axis(np.take_along_axis(cand, part, axis=1), order, axis=1)
        d = np.take_along_axis(top, order, axis=1)
        if flag.any():
            self._exact_neighbours(V, np.flatnonzero(flag), idx, d, de1)
        return idx, d, de1

    def _exact_neighbours(self, V, rows, idx, d, de1):
        """RAIL's own preselection + metric (sklearn KD tree) for ``rows``."""
        from rail.estimation.algos.dnf import metric_computation, preselection

        Vs = V[rows]
        NB, Ts, Tsnorm, de1s, _ = preselection(Vs, None, NNEIGHBORS, PRESEL, self.T,
                                               self.clf, self.Tnorm, self.truez)
        NB, _, _, _ = metric_computation(Vs, NB, Ts, Tsnorm, self.metric, NNEIGHBORS)
        idx[rows] = NB["index"]
        d[rows] = NB["distance"]
        de1[rows] = de1s
        self.n_exact += len(rows)

    # ---------------------------------------------------------------- pass 2
    def _fit(self, nb_idx, V):
        """RAIL's compute_photoz_fit loop for a block, objects with the same number of
        neighbours solved together. Returns (photoz, C, rss, nneighbors)."""
        from numpy.linalg import _umath_linalg

        n, cut = nb_idx.shape
        nfilters = V.shape[1]
        ncoef = nfilters + 1
        cur = np.array(nb_idx, dtype=np.int64, copy=True)
        m = np.full(n, cut, dtype=np.int64)
        nneighbors = np.full(n, float(cut))
        X = np.zeros((n, ncoef))
        rss = np.zeros(n)
        active = np.arange(n)
        for _ in range(FIT_ITERATIONS):
            if active.size == 0:
                break
            keep = []
            mact = m[active]
            for mm in np.unique(mact):
                objs = active[mact == mm]
                if mm == 0:        # no neighbours: lstsq gives 0, mean of nothing: stop
                    X[objs] = 0.0
                    rss[objs] = 0.0
                    continue
                idx = cur[objs, :mm]
                A = self.Te[idx]                    # (k, mm, ncoef)
                B = self.truez[idx]                 # (k, mm)
                with np.errstate(call=_lstsq_error, invalid="call", over="ignore",
                                 divide="ignore", under="ignore"):
                    x, resid, rank, _ = _umath_linalg.lstsq(A, B[..., None], -1.0,
                                                            signature="ddd->ddid")
                X[objs] = x[:, :, 0]
                full = (rank == ncoef) & (mm > ncoef)
                r2 = np.square(resid[:, 0])         # RAIL: np.sum(X[1] ** 2)
                rss[objs] = np.where(full, r2, 0.0)
                residuals = B - np.matmul(A, x)[:, :, 0]
                absr = np.abs(residuals)
                sigma3 = 3.0 * absr.mean(axis=1)
                sel = absr < sigma3[:, None]
                nsel = sel.sum(axis=1)
                go = nsel >= nfilters                 # RAIL: else break
                nneighbors[objs[go]] = nsel[go]
                # an object that keeps all its neighbours would solve the same problem
                # again in RAIL's remaining rounds (same X, same selection): it is done
                more = go & (nsel < mm)
                if more.any():
                    o = objs[more]
                    order = np.argsort(~sel[more], axis=1, kind="stable")
                    cur[o, :mm] = np.take_along_axis(idx[more], order, axis=1)
                    m[o] = nsel[more]
                    keep.append(o)
            active = np.concatenate(keep) if keep else np.zeros(0, np.int64)
        Ve = np.hstack([V, np.ones((n, 1), dtype="double")])
        photoz = np.matmul(X[:, None, :], Ve[:, :, None])[:, 0, 0]   # np.inner(X, Ve[i])
        return photoz, X, rss, nneighbors

    # ---------------------------------------------------------------- public
    def estimate(self, data: Mapping[str, np.ndarray]):
        """PDFs on the RAIL grid (N, nzbins) and RAIL's ancil (``DNF_Z``, ``photozerr``,
        ``photozerr_param``, ``photozerr_fit``, ``DNF_ZN``, ``nneighbors``, ``de1``,
        ``d1``, ``id1``) for ONE RAIL call on the whole of ``data``."""
        from rail.estimation.algos.dnf import compute_pdfs_fit

        first = self.bands[0]
        if first not in data:
            raise KeyError(f"DNF input has no column '{first}'; columns: {sorted(data)}")
        n = len(data[first])
        nz = len(self.zgrid)
        if n == 0:
            return np.zeros((0, nz)), {k: np.zeros(0, np.int32 if k == "id1" else np.float64)
                                       for k in _ANCIL}
        V, Verr = self._prepare(data)
        self.n_exact = 0
        # pass 1: neighbours and natural truncation, block by block
        nb_idx = np.empty((n, NNEIGHBORS), np.int32)
        counts = np.empty(n, np.int64)
        de1 = np.empty(n)
        d1 = np.empty(n)
        step1 = max(1, min(self.subchunk, self.work_elems // self.P))
        for s in range(0, n, step1):
            e = min(n, s + step1)
            idx, d, de1[s:e] = self._neighbours(V[s:e])
            nb_idx[s:e] = idx
            d1[s:e] = d[:, 0]
            with np.errstate(invalid="ignore"):
                mean = d.mean(axis=1)
                counts[s:e] = np.sum(d < mean[:, None], axis=1)
        cut = int(counts.max())
        id1 = nb_idx[:, 0].copy()
        z1 = self.truez[id1]
        # pass 2: the fit on the first `cut` neighbours, block by block
        photoz = np.empty(n)
        C = np.empty((n, V.shape[1] + 1))
        rss = np.empty(n)
        nneighbors = np.empty(n)
        for s in range(0, n, self.subchunk):
            e = min(n, s + self.subchunk)
            photoz[s:e], C[s:e], rss[s:e], nneighbors[s:e] = self._fit(nb_idx[s:e, :cut], V[s:e])
        nfilters = V.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            # RAIL's compute_photoz_fit, vectorised part (whole chunk, as RAIL)
            photozerr_param = np.sqrt(np.sum((C[:, :-1] * Verr) ** 2, axis=1))
            photozerr_fit = np.sqrt(rss / (nneighbors - nfilters))
            photozerr = np.sqrt(photozerr_param**2 + photozerr_fit**2)
        pdf = np.empty((n, nz))
        for s in range(0, n, self.subchunk):
            e = min(n, s + self.subchunk)
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                raw = compute_pdfs_fit(photoz[s:e], photozerr[s:e], self.zgrid)
            # the ensemble's node values (qp normalises twice): what the pipeline stores
            # for RAIL's own DNF (runner: RAIL's grid is the pipeline grid)
            _qp_interp_grid(raw, self.zgrid, 2, pdf[s:e], True)
        anc = dict(DNF_Z=photoz, photozerr=photozerr, photozerr_param=photozerr_param,
                   photozerr_fit=photozerr_fit, DNF_ZN=z1, nneighbors=nneighbors,
                   de1=de1, d1=d1, id1=id1)
        return pdf, anc


def _lstsq_error(err, flag):
    from numpy.linalg import LinAlgError

    raise LinAlgError("SVD did not converge in Linear Least Squares")
