"""CMNN (colour-matched nearest neighbours, one Gaussian PDF per object): RAIL's
``CMNNInformer`` / ``CMNNEstimator`` (pz-rail-cmnn).

The model is the training set's colours, colour errors and redshifts; for each object
RAIL computes the Mahalanobis distance to every training galaxy, keeps those within the
``ppf_value`` chi^2 threshold (at least ``min_n``), and returns a Gaussian centred on the
redshift of the best match (``selection_mode`` 1, default; 0 and 2 draw it at random)
with the redshift scatter of the matches as width. The cost per object is proportional to
the training set's size.

Parameters the pipeline sets: none beyond the shared ones (``seed`` is used through the
chunk's generator, see the traps).

RAIL traps (pz-rail-cmnn 2.0.2) and what the pipeline does:
  * Seeding: RAIL draws (``selection_mode`` 0 and 2 for every object; mode 1 only for
    exact ties of the best distance) from ``default_rng(seed + start)`` created per call
    (``start``: row offset of RAIL's chunk in the call) and consumed object after object.
    Cut into sub-chunks, a chunk would restart the sequence in every call, and every chunk
    of the release would repeat the same sequence. The runner gives each chunk one
    generator, ``default_rng(seed + chunk_seed(estimate.seed, chunk))`` (``before_call``),
    and every call of the chunk draws from it in order (``estimate_chunk`` hands it to
    RAIL's code in place of its own): the result for a chunk is RAIL's ``CMNNEstimator``
    called once on the whole chunk with ``seed = seed + chunk_seed(estimate.seed, chunk)``,
    whatever ``estimate.subchunk_rows`` (tests/test_algo_cmnn.py).
  * Objects without any usable colour (e.g. detected in one band only) get RAIL's
    ``bad_redshift_val``/``bad_redshift_err`` (99 +- 10), a Gaussian far off the grid
    whose tail would pass for a PDF: ``postprocess`` makes their PDF invalid (NaN: flag
    bit 17, point estimates NaN) and their ``pdf_loc``/``pdf_scale`` NaN. A zero scatter
    of the matches (scale 0) gives a NaN PDF in RAIL already (same flag).
  * The informer overwrites non-detections with NaN in the caller's arrays (the pipeline
    passes copies), and RAIL's first colour error is the quadrature sum without the
    square root (RAIL's ``_computecolordata``; kept: it is RAIL's estimator).

Fast path: ``CMNNfastEstimator``, RAIL's estimator with its per-object loop compiled for
the cases that need no random draw and no tie order (``selection_mode`` 1 with a unique
best match among >= ``min_n`` matches, or RAIL's wider search when there are fewer, with
distinct distances): the same float operations in numpy's order (``_numba.pairwise_sum``
for the standard deviations; RAIL's ``chi2.cdf`` for the wider search's width). Every
other object (exact ties, modes 0 and 2, more than 7,184 matches) runs RAIL's per-object
code, in RAIL's order with RAIL's generator, with the chi^2 thresholds looked up as an
array instead of RAIL's Python loop over the training set.

PDF: Gaussian (``qp.stats.norm``). Extras: ``pdf_loc``, ``pdf_scale`` (the Gaussian),
``n_match`` (training galaxies in the colour-matched set, RAIL ``Ncm``), ``n_colors``
(colours used, RAIL ``ncolors``).
"""

from __future__ import annotations

import numpy as np

from . import _gauss
from ._base import Algorithm, FastPath, chunk_seed, rail_default


def before_call(runner, chunk_index: int, offset: int) -> None:
    """At the start of a chunk: the chunk's generator, ``default_rng(seed +
    chunk_seed(estimate.seed, chunk))``, consumed by every call of the chunk in order."""
    if getattr(runner, "_cmnn_chunk", None) != chunk_index or offset == 0:
        base = int(runner.params.get("seed", rail_default(ALGORITHM, "estimate", "seed")))
        runner._cmnn_chunk = chunk_index
        runner._cmnn_rng = np.random.default_rng(
            base + chunk_seed(runner.cfg["estimate"]["seed"], chunk_index))


def estimate_chunk(runner, inp):
    """RAIL's estimator (or the fast one) on ``inp``, drawing from the chunk's generator
    where RAIL would create ``default_rng(seed + start)`` for the call."""
    gen = runner._cmnn_rng
    orig = np.random.default_rng
    rail_seed = int(runner.stage.config["seed"])      # RAIL: default_rng(seed=seed + start)

    def chunk_generator(*args, **kwargs):
        if not args and set(kwargs) == {"seed"} and kwargs["seed"] == rail_seed:
            return gen
        return orig(*args, **kwargs)                  # anyone else: numpy's own

    np.random.default_rng = chunk_generator
    try:
        return runner.rail_call(inp)
    finally:
        np.random.default_rng = orig


def postprocess(runner, pdf, anc):
    bad_val = runner.params.get("bad_redshift_val",
                                rail_default(ALGORITHM, "estimate", "bad_redshift_val"))
    loc = np.asarray(anc["loc"], dtype=np.float64).reshape(-1)
    bad = loc == bad_val
    if bad.any():
        pdf = pdf.copy()
        pdf[bad] = np.nan
        anc = dict(anc)
        for k in ("loc", "scale"):
            v = np.array(anc[k], dtype=np.float64).reshape(-1)
            v[bad] = np.nan
            anc[k] = v
    return pdf, anc


# ----------------------------------------------------------------------------------------
# fast path
# ----------------------------------------------------------------------------------------
def _kernel():
    from numba import njit

    from ._numba import CACHE, PAIRWISE_EXACT_MAX, pairwise_sum

    @njit(cache=CACHE, nogil=True, error_model="numpy")
    def distances(tc, te, trc_t, one, md, dof):
        """RAIL's Mahalanobis distances (``np.nansum((tc - train)**2 / te**2, axis=1,
        dtype=float)``) and colour counts (``np.nansum((tc**2 + train**2 + 1.0) / (...),
        axis=1, dtype=int)``) of one object to every training galaxy, in the arrays'
        dtypes, summed over colours in order. ``trc_t``: training colours (ncol, ntrain)."""
        ncol, ntr = trc_t.shape
        for t in range(ntr):
            md[t] = 0.0
            dof[t] = 0
        for c in range(ncol):
            x = tc[c]
            e = te[c]
            e2 = e * e
            x2 = x * x
            row = trc_t[c]
            for t in range(ntr):
                d = x - row[t]
                q = (d * d) / e2
                md[t] += q if q == q else 0.0
                a = x2 + row[t] * row[t] + one
                r = a / a
                dof[t] += 1 if r == r else 0

    @njit(cache=CACHE, nogil=True, error_model="numpy")
    def std(buf, dev, cnt):
        """np.std(buf[:cnt]) (numpy's pairwise sums; exact for cnt <= PAIRWISE_EXACT_MAX)."""
        mean = pairwise_sum(buf, 0, cnt) / cnt
        for k in range(cnt):
            v = buf[k] - mean
            dev[k] = v * v
        return np.sqrt(pairwise_sum(dev, 0, cnt) / cnt)

    @njit(cache=CACHE, nogil=True, error_model="numpy")
    def mode1(tc, te, trc_t, truez, table, scalar_thr, use_table, min_thresh, min_dist, min_n,
              one, bad_val, bad_err, pz, pze, ncm, status, last_md, last_dof):
        """selection_mode 1 for every object whose result needs no random draw and no tie
        order: status 0 (pz, pze, ncm final) or 2 (fewer than min_n matches: pz, ncm
        final, pze = std of the min_n nearest, to be scaled by chi2.cdf(last_md, last_dof)
        / ppf_value by the caller); status 1: run RAIL's own code for the object."""
        nobj = tc.shape[0]
        ntr = trc_t.shape[1]
        md = np.empty(ntr)
        dof = np.empty(ntr, np.int64)
        buf = np.empty(ntr)
        dev = np.empty(ntr)
        kk = min_n + 1
        nb_d = np.empty(kk)          # the min_n + 1 nearest of the wider search, sorted
        nb_t = np.empty(kk, np.int64)
        for i in range(nobj):
            distances(tc[i], te[i], trc_t, one, md, dof)
            cnt = 0
            best = np.inf
            nbest = 0
            ibest = -1
            nb = 0
            for t in range(ntr):
                m = md[t]
                thr = table[dof[t]] if use_table else scalar_thr
                if thr > min_thresh and m > min_dist and m <= thr:
                    buf[cnt] = truez[t]
                    cnt += 1
                    if m < best:
                        best = m
                        nbest = 1
                        ibest = t
                    elif m == best:
                        nbest += 1
                # RAIL's wider search (used if cnt < min_n): thr > 1e-4 and m > 1e-4
                if thr > 0.00010 and m > 0.00010:
                    if nb < kk or m < nb_d[nb - 1]:
                        j = nb if nb < kk else kk - 1
                        while j > 0 and nb_d[j - 1] > m:
                            if j < kk:
                                nb_d[j] = nb_d[j - 1]
                                nb_t[j] = nb_t[j - 1]
                            j -= 1
                        nb_d[j] = m
                        nb_t[j] = t
                        if nb < kk:
                            nb += 1
            if cnt >= min_n:
                if nbest != 1 or cnt > PAIRWISE_EXACT_MAX:
                    status[i] = 1
                    continue
                pz[i] = truez[ibest]
                pze[i] = std(buf, dev, cnt)
                ncm[i] = cnt
                status[i] = 0
                continue
            if nb == 0:
                pz[i] = bad_val
                pze[i] = bad_err
                ncm[i] = 0
                status[i] = 0
                continue
            k = min(min_n, nb)
            # the nearest k must be strictly ordered and strictly below the next one, or
            # their order would be that of numpy's argsort among ties
            tie = False
            for j in range(1, nb):
                if nb_d[j] == nb_d[j - 1]:
                    tie = True
            if tie:
                status[i] = 1
                continue
            for j in range(k):
                buf[j] = truez[nb_t[j]]
            pz[i] = buf[0]
            pze[i] = std(buf, dev, k)
            ncm[i] = min_n
            last_md[i] = nb_d[k - 1]
            last_dof[i] = dof[nb_t[k - 1]]
            status[i] = 2

    return distances, mode1


_MODE1 = None


def _kernels():
    global _MODE1
    if _MODE1 is None:
        _MODE1 = _kernel()
    return _MODE1


def _fast_class():
    import qp
    from rail.estimation.algos.cmnn import CMNNEstimator, _computecolordata
    from scipy.stats import chi2

    class CMNNfastEstimator(CMNNEstimator):
        """RAIL's CMNNEstimator with its per-object loop compiled for the common case."""

        name = "CMNNfastEstimator"

        def _process_chunk(self, start, end, data, first):
            # --- RAIL's code (cmnn.CMNNEstimator._process_chunk) from here ...
            for col, err in zip(self.config.bands, self.config.err_bands):
                if np.isnan(self.config.nondetect_val):  # pragma: no cover
                    mask = np.isnan(data[col])
                else:
                    mask = np.isclose(data[col], self.config.nondetect_val)
                if self.nondet_choice:
                    data[col][mask] = self.config.mag_limits[col]
                    data[err][mask] = 1.0
                else:
                    data[col][mask] = np.nan
                    data[err][mask] = np.nan
            test_color, test_err = _computecolordata(data, self.config.bands, self.config.err_bands)
            num_gals = test_color.shape[0]
            ncols = test_color.shape[1]
            thresh_table = np.zeros(ncols + 1)
            thresh_table[0] = 0.0
            for ii in range(1, ncols + 1):
                thresh_table[ii] = chi2.ppf(self.config.ppf_value, float(ii))
            chunk_pz = np.zeros(num_gals)
            chunk_pze = np.zeros(num_gals)
            chunk_ncm = np.zeros(num_gals, dtype=int)
            chunk_colused = np.zeros(num_gals, dtype=int)
            rng = np.random.default_rng(seed=self.config.seed + start)
            # --- ... except the per-object loop: compiled where no random draw is needed
            if self.nondet_choice:
                chunk_colused[:] = len(self.config.bands) - 1
            else:
                chunk_colused[:] = np.sum(~np.isnan(test_color), axis=1)
            status = np.ones(num_gals, dtype=np.int8)      # 1: RAIL's own per-object code
            if (self.config.selection_mode == 1 and np.asarray(self.truez).dtype == np.float64
                    and num_gals):
                tc = np.ascontiguousarray(test_color)
                te = np.ascontiguousarray(test_err)
                trc_t = np.ascontiguousarray(np.asarray(self.train_color).T)
                one = (tc[:1, :1] ** 2 + trc_t[:1, :1] ** 2 + 1.0).dtype.type(1.0)
                last_md = np.zeros(num_gals)
                last_dof = np.zeros(num_gals, dtype=np.int64)
                _kernels()[1](tc, te, trc_t, np.ascontiguousarray(self.truez), thresh_table,
                              float(chi2.ppf(self.config.ppf_value, len(self.config.bands) - 1)),
                              not self.nondet_choice, float(self.config.min_thresh),
                              float(self.config.min_dist), int(self.config.min_n), one,
                              float(self.config.bad_redshift_val),
                              float(self.config.bad_redshift_err),
                              chunk_pz, chunk_pze, chunk_ncm, status, last_md, last_dof)
                wide = status == 2
                if wide.any():       # RAIL: temp * (chi2.cdf(new_MD[-1], lim_DOF) / ppf_value)
                    lim_dof = (last_dof[wide].astype(float) if not self.nondet_choice
                               else len(self.config.bands) - 1)
                    new_ppf_value = chi2.cdf(last_md[wide], lim_dof)
                    chunk_pze[wide] = chunk_pze[wide] * (new_ppf_value / self.config.ppf_value)
            todo = status == 1
            # kept for tests and logs: objects per path (0 compiled, 1 RAIL's code, 2 compiled
            # wider search)
            self.path_counts = getattr(self, "path_counts", np.zeros(3, dtype=np.int64)) \
                + np.bincount(status, minlength=3)
            for ii in np.flatnonzero(todo):   # in order: RAIL's generator is consumed in order
                chunk_pz[ii], chunk_pze[ii], chunk_ncm[ii] = self._one_object(
                    ii, test_color, test_err, thresh_table, rng)
            # --- RAIL's code again
            ens = qp.Ensemble(
                qp.stats.norm,
                data=dict(loc=np.expand_dims(chunk_pz, -1), scale=np.expand_dims(chunk_pze, -1)),
            )
            ens.set_ancil(dict(ncolors=chunk_colused, zmode=chunk_pz, Ncm=chunk_ncm))
            self._do_chunk_output(ens, start, end, first, data=data)

        def _one_object(self, ii, test_color, test_err, thresh_table, rng):
            """RAIL's loop body for object ``ii`` (pz-rail-cmnn 2.0.2), thresholds looked up
            with an index array instead of a Python loop over the training set."""
            MahalanobisDistance = np.nansum(
                (test_color[ii] - self.train_color) ** 2 / test_err[ii] ** 2,
                axis=1,
                dtype="float",
            )
            if self.nondet_choice:
                deg_of_freedom = len(self.config.bands) - 1
                threshold = chi2.ppf(self.config.ppf_value, deg_of_freedom)
            else:
                deg_of_freedom = np.nansum(
                    (test_color[ii] ** 2 + self.train_color**2 + 1.0)
                    / (test_color[ii] ** 2 + self.train_color**2 + 1.0),
                    axis=1,
                    dtype="int",
                )
                threshold = thresh_table[deg_of_freedom]
            index = np.where(
                (threshold > self.config.min_thresh)
                & (MahalanobisDistance > self.config.min_dist)
                & (MahalanobisDistance <= threshold)
            )[0]
            if len(index) >= self.config.min_n:
                if self.config.selection_mode == 0:
                    rival = rng.choice(index, size=1, replace=False)[0]
                    out_pz = self.truez[rival]
                    out_pze = np.std(self.truez[index])
                if self.config.selection_mode == 1:
                    tx = np.where(
                        MahalanobisDistance[index] == np.nanmin(MahalanobisDistance[index])
                    )[0]
                    if len(tx) == 1:
                        rval = tx[0]
                    if len(tx) > 1:
                        rval = rng.choice(tx, size=1, replace=False)[0]
                    out_pz = self.truez[index[rval]]
                    out_pze = np.std(self.truez[index])
                if self.config.selection_mode == 2:
                    tweights = float(1.00) / MahalanobisDistance[index]
                    weights = tweights / np.sum(tweights)
                    rival = rng.choice(index, size=1, replace=False, p=weights)[0]
                    out_pz = self.truez[rival]
                    out_pze = np.std(self.truez[index])
                Ncm = len(index)
            else:
                index2 = np.where((threshold > 0.00010) & (MahalanobisDistance > 0.00010))[0]
                if len(index2 > self.config.min_n):     # sic (RAIL): true unless empty
                    tempMD = MahalanobisDistance[index2]
                    tempTZ = self.truez[index2]
                    sx = np.argsort(tempMD)
                    new_MD = np.asarray(tempMD[sx[0:self.config.min_n]], dtype="float")
                    new_TZ = np.asarray(tempTZ[sx[0:self.config.min_n]], dtype="float")
                    if self.nondet_choice:
                        lim_DOF = deg_of_freedom
                    else:
                        tmpDOF = deg_of_freedom[index2]
                        new_DOF = np.asarray(tmpDOF[sx[0:self.config.min_n]], dtype="float")
                        lim_DOF = new_DOF[-1]
                    new_ppf_value = chi2.cdf(new_MD[-1], lim_DOF)
                    temp = np.std(new_TZ)
                    out_pze = temp * (new_ppf_value / self.config.ppf_value)
                    if self.config.selection_mode == 0:
                        rval = rng.choice(self.config.min_n, size=1, replace=False)[0]
                        out_pz = new_TZ[rval]
                    if self.config.selection_mode == 1:
                        out_pz = new_TZ[0]
                    if self.config.selection_mode == 2:
                        tweights = float(1.00) / new_MD
                        weights = tweights / np.sum(tweights)
                        cx = rng.choice(self.config.min_n, size=1, replace=False, p=weights)[0]
                        out_pz = new_TZ[cx]
                    Ncm = self.config.min_n
                else:
                    out_pz = self.config.bad_redshift_val
                    out_pze = self.config.bad_redshift_err
                    Ncm = 0
            return out_pz, out_pze, Ncm

    return CMNNfastEstimator


def __getattr__(name):          # the RAIL subclass is built on first use (RAIL imports)
    if name == "CMNNfastEstimator":
        cls = _fast_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


FAST = FastPath(
    ref="pzpipe.algorithms.cmnn:CMNNfastEstimator",
    kind="estimator",
    verified={"pz-rail-cmnn": "2.0.2", "pz-rail-base": "2.0.11", "qp-prob": "1.1.4",
              "scipy": "1.17.1", "numpy": "2.4.6", "numba": "0.68.1", "llvmlite": "0.50.0"},
    guarantee=("bit-identical PDFs, Gaussian parameters, n_match and n_colors to RAIL's "
               "CMNNEstimator with the same seed (exact equality in all three "
               "selection modes, tests/test_algo_cmnn.py runs RAIL itself)"),
)

ALGORITHM = Algorithm(
    name="cmnn",
    title="CMNN (colour-matched nearest neighbours, RAIL CMNN)",
    module="rail.estimation.algos.cmnn",
    informer="CMNNInformer",
    estimator="CMNNEstimator",
    distribution="pz-rail-cmnn",
    extras={**_gauss.EXTRAS, "Ncm": "n_match", "ncolors": "n_colors"},
    extra_meta={
        **_gauss.extra_meta("CMNN"),
        "n_match": {"description": "CMNN: training galaxies in the colour-matched set "
                                   "(RAIL ancil Ncm)", "unit": ""},
        "n_colors": {"description": "CMNN: colours used in the Mahalanobis distance "
                                    "(RAIL ancil ncolors)", "unit": ""},
    },
    extra_dtypes={**_gauss.EXTRA_DTYPES, "n_match": "int32", "n_colors": "int32"},
    before_call=before_call,
    estimate_chunk=estimate_chunk,
    postprocess=postprocess,
    ancillaries=_gauss.norm_ancillaries,
    fast=FAST,
    pdf_family="norm",
    bench={"rows": 8000},
)
